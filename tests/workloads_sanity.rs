//! The workloads themselves, without any checkpoint: each passes its own check, exits
//! 0 on SIGUSR2, and notices state corrupted on purpose (SIGTERM -> exit 1). If one of
//! these fails, the workload or the machine is at fault, not ckpt.

mod common;

use common::*;

fn sanity(start: impl Fn(&Env) -> Workload) {
    let env = Env::new();

    let mut w = start(&env);
    env.check(&mut w);
    env.check(&mut w);
    assert!(signal(w.pid, libc::SIGUSR2));
    let st = reap(w.pid, LINE_TIMEOUT).expect("did not exit on SIGUSR2");
    env.untrack(w.pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "{} on SIGUSR2: {}; output:\n{}",
        w.name,
        describe_wait(st),
        env.output(&w)
    );

    let env = Env::new();
    let mut w = start(&env);
    env.check(&mut w);
    assert!(signal(w.pid, libc::SIGTERM));
    let st = reap(w.pid, LINE_TIMEOUT).expect("did not exit on SIGTERM");
    env.untrack(w.pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 1,
        "{} should notice its corrupted state and exit 1, it {}; output:\n{}",
        w.name,
        describe_wait(st),
        env.output(&w)
    );
    assert!(
        env.output(&w).lines().any(|l| l.starts_with("FAIL ")),
        "no FAIL line"
    );
}

#[test]
fn mem_sane() {
    sanity(|e| e.start("mem"));
}

#[test]
fn sig_sane() {
    sanity(|e| e.start("sig"));
}

#[test]
fn fpu_sane() {
    sanity(|e| e.start("fpu"));
}

#[test]
fn files_sane() {
    sanity(|e| e.start("files"));
}

#[test]
fn misc_sane() {
    sanity(|e| e.start("misc"));
}

#[test]
fn blocking_sane() {
    sanity(|e| e.start("blocking"));
}

#[test]
fn python_sane() {
    sanity(|e| e.start_python());
}

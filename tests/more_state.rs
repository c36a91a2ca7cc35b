//! State that is recorded at dump and must come back exactly: the capability state
//! beyond E/P/I (bounding set, ambient set, securebits), fds above ckpt's own soft
//! RLIMIT_NOFILE, character devices (stateless ones restore, stateful ones are refused),
//! shared memory seen through several VMAs, locked memory, and dumpable 2.

mod common;

use common::*;
use std::ffi::OsStr;

const CYCLES: usize = 2;

/// Builds and starts the C workload `name` with WORKDIR and `args`, waits for READY.
fn start_with(env: &Env, name: &str, args: &[&str]) -> Workload {
    let bin = workload_bin(name);
    let mut all: Vec<&OsStr> = vec![env.path().as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let w = env.spawn(name, &bin, &all);
    env.wait_ready(&w);
    w
}

/// SIGTERM makes a workload damage its state and check: it must notice (FAIL, exit 1),
/// so its PASS lines mean something.
fn notices_corruption(env: &Env, w: &Workload) {
    assert!(signal(w.pid, libc::SIGTERM));
    let st = reap(w.pid, LINE_TIMEOUT).expect("did not exit on SIGTERM");
    env.untrack(w.pid);
    let text = env.output(w);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 1,
        "{} should notice its corrupted state and exit 1, it {}; output:\n{text}",
        w.name,
        describe_wait(st)
    );
}

/// Checks, then CYCLES dump/restore cycles each followed by a check, then the
/// corruption control.
fn cycles(env: &Env, w: &mut Workload) {
    env.check(w);
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(w, &dir);
    }
    notices_corruption(env, w);
}

// ------------------------------------------------------------------ capabilities

/// Root that only dropped bounding caps and set securebits: its E/P/I equal ckpt's, so
/// this also catches a "same credentials, nothing to do" shortcut that ignores them.
#[test]
fn caps_root_bounding_and_securebits() {
    let env = Env::new();
    let mut w = start_with(&env, "caps", &["root"]);
    // The setup took effect (CAP_MKNOD, bit 27, is out of the bounding set).
    let bnd = status_field(w.pid, "CapBnd").expect("CapBnd");
    assert_eq!(
        u64::from_str_radix(&bnd, 16).unwrap() & (1 << 27),
        0,
        "{bnd}"
    );
    cycles(&env, &mut w);
}

/// uid 1000 with an ambient cap, a dropped bounding set and locked securebits
/// (NO_CAP_AMBIENT_RAISE among them, which the restore must set after the ambient raise).
#[test]
fn caps_user_ambient_bounding_and_securebits() {
    let env = Env::new();
    let mut w = start_with(&env, "caps", &["user"]);
    env.check(&mut w);
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(&mut w, &dir);
        assert_eq!(
            status_field(w.pid, "CapAmb").as_deref(),
            Some("0000000000000400"),
            "cycle {i}"
        );
    }
    notices_corruption(&env, &w);
}

//! Seccomp: filters (per thread, shared through TSYNC, with the LOG flag) and strict mode
//! come back and still act; the workload checks the filtered calls in every thread, the
//! counts the kernel shows, and that a later TSYNC still works (the threads share their
//! chain again). A filter ckpt cannot judge is refused by name.

mod common;

use common::tree::*;
use common::*;

/// Filters in a process of three threads (one installed with TSYNC | LOG) and in its
/// child (one of its own on top): three cycles, then --leave-running.
#[test]
fn filters_three_cycles_and_leave_running() {
    let env = Env::new();
    let mut w = env.start("seccomp");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        assert_eq!(pids.len(), 2, "the root and its child: {pids:?}");
        // The root's threads share one chain, F3 with its LOG flag (2) in it; the
        // child has F1 and its own.
        let (core, threads) = read_core(&dir, pids[0]);
        assert_eq!(threads.len(), 3);
        assert!(threads.iter().all(|t| t.seccomp_mode == 2
            && t.seccomp_chain == threads[0].seccomp_chain
            && t.seccomp_chain.len() >= 2));
        let logged: Vec<u64> = core.seccomp_filters.iter().map(|f| f.flags).collect();
        assert_eq!(logged.iter().filter(|&&f| f == 2).count(), 1, "{logged:?}");
        let (_, child) = read_core(&dir, pids[1]);
        assert_eq!(child[0].seccomp_chain.len(), 2);
    }
    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

/// A thread in strict mode, blocked in read(2) of a FIFO: still strict after three
/// cycles, and still answering.
#[test]
fn strict_thread_three_cycles() {
    let env = Env::new();
    let mut w = env.start_with("seccomp", &["strict"]);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
}

/// `ckpt check -t` lists the same filter (it stops the thread with filters just long
/// enough to read them), exits 1, and leaves the process running untraced; a process
/// whose filters a dump takes is not listed.
#[test]
fn check_lists_a_user_notification_filter() {
    let env = Env::new();
    let mut w = env.start_with("seccomp", &["notify"]);
    let pid = w.pid.to_string();
    let out = env.ckpt(&["check", "-t", &pid]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("SECCOMP_RET_USER_NOTIF"))
        .unwrap_or_else(|| panic!("no seccomp blocker listed:\n{out}"));
    assert!(line.starts_with(&format!("pid {pid} (")), "{line}");
    assert!(line.contains("seccomp filter"), "{line}");
    assert_running_untraced(w.pid);
    env.check(&mut w);
    let other = Env::new();
    let mut fine = other.start_with("seccomp", &["filters"]);
    let pid = fine.pid.to_string();
    let out = other.ckpt(&["check", "-t", &pid]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert_running_untraced(fine.pid);
    other.check(&mut fine);
}

/// A filter whose syscalls a supervisor answers (SECCOMP_RET_USER_NOTIF) is refused at
/// dump by name, the process left running.
#[test]
fn user_notification_filter_is_refused() {
    let env = Env::new();
    let mut w = env.start_with("seccomp", &["notify"]);
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming("SECCOMP_RET_USER_NOTIF");
    assert!(line.contains(&w.pid.to_string()), "{line}");
    assert_running_untraced(w.pid);
    env.check(&mut w);
}

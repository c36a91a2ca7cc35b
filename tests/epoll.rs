//! epoll instances: every watch (fd, events with EPOLLET / EPOLLONESHOT, data), nested,
//! dup'ed, and still reporting readiness after each restore; a watch whose fd number was
//! reused is refused.

mod common;

use common::*;

const CYCLES: usize = 3;

#[test]
fn epoll_sane() {
    sanity(|e| e.start("epoll"));
}

#[test]
fn epoll_three_cycles() {
    let env = Env::new();
    let mut w = env.start("epoll");
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
}

#[test]
fn epoll_leave_running_then_restore() {
    let env = Env::new();
    let mut w = env.start("epoll");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    // Restored as it was at the dump, before its first check.
    w.passes = 0;
    env.check(&mut w);
}

/// The epoll watches a file under an fd number that now names another file: the dump
/// refuses naming the epoll and the number, and the workload runs on.
#[test]
fn epoll_watching_a_reused_fd_refused() {
    let env = Env::new();
    let mut w = env.start_with("epoll", &["reuse"]);
    let check = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    assert!(check.stdout.contains("fd 20 (epoll"), "{check}");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[])
        .failed_naming("registered as fd 15, which that fd no longer is");
    assert_running_untraced(w.pid);
    env.check(&mut w);
}

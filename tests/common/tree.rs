//! Cycles of a process tree: the root's members end themselves once their parent is
//! gone, and a dump kills them all, so a cycle waits until every pid of the image is gone
//! (reaping those that come to the test, a subreaper) before it restores.

use super::*;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Every pid of the image's tree (zombies included), root first.
pub fn tree_pids(dir: &Path) -> Vec<i32> {
    let inv = read_inventory(dir);
    if inv.tree.is_empty() {
        inv.pids
    } else {
        inv.tree.iter().map(|n| n.pid).collect()
    }
}

/// Waits until none of `pids` exists: the dumped tree's processes other than the root
/// come to the test (a subreaper) once the root is gone, to be reaped.
pub fn wait_gone(pids: &[i32]) {
    let start = Instant::now();
    while pids.iter().any(|&p| exists(p)) {
        for &p in pids {
            if proc_state(p) == Some('Z') {
                reap(p, Duration::from_millis(1));
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "processes of the dumped tree still exist: {:?}",
            pids.iter()
                .filter(|&&p| exists(p))
                .map(|&p| (p, proc_state(p)))
                .collect::<Vec<_>>()
        );
        sleep(Duration::from_millis(20));
    }
}

/// One cycle of a tree: dump (killing it), reap the root, wait for the rest to be gone,
/// restore detached, every live process back running untraced, then the root's check.
pub fn tree_cycle(env: &Env, w: &mut Workload, dir: &Path) -> Vec<i32> {
    tree_cycle_with(env, w, dir, &[])
}

/// Three [`tree_cycle`]s of `w`, checked after the last; the pids of the last image.
pub fn three_tree_cycles(env: &Env, w: &mut Workload) -> Vec<i32> {
    let mut pids = Vec::new();
    for i in 1..=3 {
        pids = tree_cycle(env, w, &env.subdir(&format!("img{i}")));
    }
    env.check(w);
    pids
}

/// Starts the C workload `name` (a tree), checks it, dumps it with `--leave-running` and
/// checks it again, then [`three_tree_cycles`]; kills the tree.
pub fn leave_running_then_three_tree_cycles(env: &Env, name: &str) {
    let mut w = env.start(name);
    env.check(&mut w);
    env.dump(w.pid, &env.subdir("running"), &["--leave-running"])
        .ok();
    env.check(&mut w);
    let pids = three_tree_cycles(env, &mut w);
    finish_tree(env, &w, &pids);
}

/// [`tree_cycle`] with extra dump arguments.
pub fn tree_cycle_with(env: &Env, w: &mut Workload, dir: &Path, dump_args: &[&str]) -> Vec<i32> {
    env.dump(w.pid, dir, dump_args).ok();
    let pids = tree_pids(dir);
    env.reap_dumped(w.pid);
    wait_gone(&pids);
    env.restore_detached(dir).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    // The others run untraced too, or have already exited (forky's children do, and are
    // reaped by their restored parent, which checks their statuses).
    for &p in &read_inventory(dir).pids {
        assert!(
            !matches!(proc_state(p), Some('T' | 't')),
            "pid {p} is left stopped"
        );
        let tracer = status_field(p, "TracerPid");
        assert!(
            matches!(tracer.as_deref(), None | Some("0")),
            "pid {p} is left traced by {tracer:?}"
        );
    }
    env.check(w);
    pids
}

/// Kills the tree's root; its members end themselves once it is gone (each workload's
/// members exit when their parent changes) and come to us to be reaped.
pub fn finish_tree(env: &Env, w: &Workload, pids: &[i32]) {
    env.kill_and_reap(w.pid);
    wait_gone(pids);
}

/// The number a shell workload keeps writing to `path` (0 until it exists and parses).
pub fn read_count(path: &Path) -> u64 {
    fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Waits (up to LINE_TIMEOUT) until `read()` is above `n`; `what` names the count.
pub fn wait_count_above(read: impl Fn() -> u64, n: u64, what: &str) {
    let start = Instant::now();
    while read() <= n {
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "{what} stays at {} (want > {n})",
            read()
        );
        sleep(Duration::from_millis(10));
    }
}

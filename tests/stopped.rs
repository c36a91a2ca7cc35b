//! Stopped processes: a process in a group-stop (SIGSTOP; SIGTSTP's default action is the
//! same stop, but the test's orphaned process group would discard it) is dumped as it is and comes back stopped, every thread of it; SIGCONT lets it carry on and
//! it checks its own state. A `--leave-running` dump leaves it stopped too. (Before, a
//! stopped process was refused.)

mod common;

use common::tree::*;
use common::*;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Waits until every thread of `pid` is in a group-stop and nobody traces it.
fn wait_stopped(pid: i32) {
    let start = Instant::now();
    loop {
        let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let all_stopped = !tids.is_empty()
            && tids.iter().all(|t| {
                std::fs::read_to_string(format!("/proc/{pid}/task/{t}/stat"))
                    .ok()
                    .and_then(|s| s[s.rfind(')')? + 1..].trim_start().chars().next())
                    == Some('T')
            });
        if all_stopped && status_field(pid, "TracerPid").as_deref() == Some("0") {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "pid {pid} not stopped and untraced: state {:?}, tracer {:?}",
            proc_state(pid),
            status_field(pid, "TracerPid")
        );
        sleep(Duration::from_millis(10));
    }
}

/// Three cycles of `w` stopped by `sig`, each restored stopped, then continued and
/// checked; then a `--leave-running` dump of it stopped, which it stays.
fn stopped_cycles(env: &Env, w: &mut Workload, sig: i32) {
    for i in 1..=3 {
        assert!(signal(w.pid, sig));
        wait_stopped(w.pid);
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        wait_stopped(w.pid);
        // Stays stopped: nothing of the restore runs it on.
        sleep(Duration::from_millis(100));
        wait_stopped(w.pid);
        assert!(signal(w.pid, libc::SIGCONT));
        env.check(w);
    }
    assert!(signal(w.pid, sig));
    wait_stopped(w.pid);
    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    wait_stopped(w.pid);
    assert!(signal(w.pid, libc::SIGCONT));
    env.check(w);
}

#[test]
fn process_stopped_by_sigstop_comes_back_stopped() {
    let env = Env::new();
    let mut w = env.start("misc");
    env.check(&mut w);
    stopped_cycles(&env, &mut w, libc::SIGSTOP);
}

/// Every one of 16 threads (in condition waits and sleeps) is stopped again.
#[test]
fn stopped_threads_come_back_stopped() {
    let env = Env::new();
    let mut w = env.start_with("threads", &["16", "0"]);
    env.check(&mut w);
    stopped_cycles(&env, &mut w, libc::SIGSTOP);
}

/// One member of a tree stopped: it alone comes back stopped, the rest run.
#[test]
fn stopped_member_of_a_tree_comes_back_stopped() {
    let env = Env::new();
    let mut w = env.start("tree");
    env.check(&mut w);
    let probe = env.subdir("probe");
    env.dump(w.pid, &probe, &["--leave-running"]).ok();
    let member = read_inventory(&probe).pids[1];
    for i in 1..=2 {
        assert!(signal(member, libc::SIGSTOP));
        wait_stopped(member);
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        let pids = tree_pids(&dir);
        env.reap_dumped(w.pid);
        wait_gone(&pids);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        wait_stopped(member);
        for &p in &read_inventory(&dir).pids {
            if p != member {
                assert_running_untraced(p);
            }
        }
        assert!(signal(member, libc::SIGCONT));
        env.check(&mut w);
    }
    finish_tree(&env, &w, &tree_pids(&env.subdir("img2")));
}

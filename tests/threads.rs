//! Multi-threaded processes: every thread comes back with its tid and its own state
//! (registers, TLS, sigmask, sigaltstack, rseq, robust list, tid address, name,
//! affinity), and threads blocked in cond waits, futexes, nanosleep and poll carry on.
//! The workloads (tests/workloads/threads.c, threads.py) check all of it themselves.

mod common;

use common::*;
use std::fs;
use std::path::Path;

/// `threads WORKDIR NTHREADS MIB`, started and READY.
fn start_threads(env: &Env, n: u32, mib: u32) -> Workload {
    env.start_with("threads", &[&n.to_string(), &mib.to_string()])
}

/// The tids of a process, sorted.
fn tids(pid: i32) -> Vec<i32> {
    let mut t: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    t.sort_unstable();
    t
}

/// Three cycles of 64 threads; each restore brings back the very same tids (the joined
/// thread is replaced at every check, so the set changes between cycles).
#[test]
fn threads64_three_cycles() {
    let env = Env::new();
    let mut w = start_threads(&env, 64, 0);
    env.check(&mut w);
    for i in 1..=3 {
        let before = tids(w.pid);
        assert_eq!(before.len(), 65, "{}", env.output(&w));
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.restore_dumped(&w, &dir);
        assert_eq!(
            tids(w.pid),
            before,
            "cycle {i}: other tids after the restore"
        );
        for &t in &before {
            assert_eq!(
                status_field(t, "TracerPid").as_deref(),
                Some("0"),
                "thread {t} still traced"
            );
        }
        env.check(&mut w);
    }
}

/// --leave-running: every thread runs on untraced and passes its checks; then a
/// restore of that image (the original killed) passes too.
#[test]
fn threads64_leave_running() {
    let env = Env::new();
    let mut w = start_threads(&env, 64, 0);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    for t in tids(w.pid) {
        assert_eq!(
            status_field(t, "TracerPid").as_deref(),
            Some("0"),
            "thread {t} traced after --leave-running"
        );
    }
    env.check(&mut w);
    env.check(&mut w);
    let all = tids(w.pid);
    env.kill_and_reap(w.pid);
    // Its tids free again before they are asked for.
    wait_until("the dumped threads gone", || {
        all.iter()
            .all(|t| !Path::new(&format!("/proc/{t}")).exists())
    });
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    // Back to the state of the dump: no check had been made yet.
    w.passes = 0;
    env.check(&mut w);
}

/// 512 threads (workers sleeping 200 ms between rounds): two cycles.
#[test]
fn threads512_two_cycles() {
    let env = Env::new();
    let mut w = start_threads(&env, 512, 0);
    env.check(&mut w);
    env.cycles(&mut w, 2, &[], |_, _| {});
    assert_eq!(tids(w.pid).len(), 513);
}

/// Python threads (a counter with a threading.local, an Event waiter, a Queue consumer)
/// keep their state and go on; a new thread can be started and joined afterwards.
#[test]
fn python_threads_three_cycles() {
    let env = Env::new();
    let mut w = env.start_python_script("threads.py");
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
}

/// A restore that fails half way through creating the threads (thread 40's rseq area is
/// misaligned in the image: the kernel refuses it) leaves no task behind: neither the
/// leader nor any thread created so far.
#[test]
fn failed_threaded_restore_leaves_nothing() {
    let env = Env::new();
    let w = start_threads(&env, 64, 0);
    let all = tids(w.pid);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    edit_threads(&dir, w.pid, |t| {
        let r = t[40]
            .rseq
            .as_mut()
            .expect("glibc registers rseq in every thread");
        r.ptr += 8;
    });
    let out = env.restore_detached(&dir);
    out.failed_naming(&format!("rseq register in thread {}", all[40]));
    env.assert_gone(w.pid);
    for t in all {
        assert!(!exists(t), "thread {t} exists after the failed restore");
    }
}

/// SIGTERM to ckpt once it has seized every thread (TracerPid of each is ckpt; 256 MiB
/// of memory keep the dump going well past that point): the dump ends, nothing is
/// written, and every thread runs on untraced with its state intact.
#[test]
fn sigterm_once_all_threads_seized_leaves_them_running() {
    let env = Env::new();
    let mut w = start_threads(&env, 64, 256);
    let all = tids(w.pid);
    let dir = env.subdir("img");
    let bg = env.dump_bg(w.pid, &dir, &[]);
    let ckpt = bg.child.id().to_string();
    wait_until("ckpt to seize every thread", || {
        all.iter()
            .all(|&t| status_field(t, "TracerPid").as_deref() == Some(ckpt.as_str()))
    });
    assert!(signal(bg.child.id() as i32, libc::SIGTERM));
    let out = env.finish_bg(bg);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ckpt should fail after SIGTERM: {out}"
    );
    out.failed_naming("interrupted by SIGTERM");
    wait_until("every thread to be untraced", || {
        all.iter()
            .all(|&t| status_field(t, "TracerPid").as_deref() == Some("0"))
    });
    assert_eq!(tids(w.pid), all);
    env.check(&mut w);
}

/// Credentials are per thread: a process that dropped to uid/gid 65534 (in every
/// thread) gets them back in every thread, each checking its own by raw syscalls.
#[test]
fn nobody_threads_three_cycles() {
    let env = Env::new();
    let mut w = env.start_with("threads", &["16", "0", "nobody"]);
    env.share_output(&w);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
}

/// A thread whose credentials differ from its process's (a raw setresgid in that thread
/// alone) gets its own back, and the others the process's: every thread checks its gid.
#[test]
fn thread_with_its_own_credentials_three_cycles() {
    let env = Env::new();
    let mut w = env.start_with("threads", &["16", "0", "oddcreds"]);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
    let gids: Vec<String> = tids(w.pid)
        .into_iter()
        .filter_map(|t| status_field(t, "Gid"))
        .collect();
    assert_eq!(
        gids.iter().filter(|g| g.starts_with("65534")).count(),
        1,
        "one thread with gid 65534: {gids:?}"
    );
}

/// Per-thread state restore does not give back (here a no_new_privs set by one thread
/// alone) is refused by name, and the process runs on untouched.
#[test]
fn thread_with_its_own_no_new_privs_is_refused() {
    let env = Env::new();
    let mut w = env.start_with("threads", &["16", "0", "oddnnp"]);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[])
        .failed_naming("has a NoNewPrivs of its own");
    for t in tids(w.pid) {
        assert_eq!(status_field(t, "TracerPid").as_deref(), Some("0"));
    }
    env.check(&mut w);
}

/// Threads created and exiting all the time (one thread makes and joins short-lived ones
/// as fast as it can): dumps with --leave-running leave every thread untraced and the
/// workload well, and a dump taken in the middle of it restores.
#[test]
fn threads_created_and_exiting_during_dumps() {
    let env = Env::new();
    let mut w = env.start_with("threads", &["16", "0", "churn"]);
    env.check(&mut w);
    for i in 1..=5 {
        let dir = env.subdir(&format!("lr{i}"));
        env.dump(w.pid, &dir, &["--leave-running"]).ok();
        for t in tids(w.pid) {
            let tracer = status_field(t, "TracerPid");
            assert!(
                tracer.is_none() || tracer.as_deref() == Some("0"),
                "thread {t} traced ({tracer:?}) after --leave-running"
            );
        }
        env.check(&mut w);
    }
    env.cycles(&mut w, 2, &[], |_, _| {});
}

/// The three wake-up signals of tests/workloads/sigwake.c, one per blocked task.
const WAKE: [i32; 3] = [libc::SIGUSR1, libc::SIGUSR2, libc::SIGWINCH];

/// Waits for sigwake's verdict and reaps it: each task's blocked call ended as the
/// kernel's restart rules say for its kind and its handler.
fn sigwake_done(env: &Env, w: &Workload) {
    let line = env.wait_line(w, "DONE", |l| l.starts_with("DONE"));
    assert_eq!(line, "DONE ok", "output:\n{}", env.output(w));
}

/// Without a checkpoint, sigwake's three tasks wake as they should (the baseline the
/// restored runs are held to).
#[test]
fn sigwake_sane() {
    let env = Env::new();
    let w = env.start("sigwake");
    for s in WAKE {
        assert!(signal(w.pid, s));
    }
    sigwake_done(&env, &w);
}

/// Signals sent while the restore rebuilds the process are pending when it is released:
/// each blocked call sees its handler run and then fails with EINTR (pause, a read
/// without SA_RESTART) or runs on (a read with SA_RESTART), in the main thread and in
/// the others alike. (A restart made by rewinding the registers instead runs the handler
/// and then blocks the call again, for ever.)
#[test]
fn signals_pending_at_the_release_wake_blocked_calls() {
    signals_while_held("restore-puppet");
}

/// The same signals sent before the puppet phase, to the seed that stands in for the
/// process: they wait for its own handlers (rather than kill the seed).
#[test]
fn signals_to_a_seed_wait_for_the_restored_handlers() {
    signals_while_held("restore-seeds");
}

fn signals_while_held(point: &str) {
    let env = Env::new();
    let w = env.start("sigwake");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let hold = Hold::new(&env, point);
    let bg = env.restore_detached_held(&hold, &dir);
    env.track(w.pid);
    hold.reached();
    for s in WAKE {
        assert!(signal(w.pid, s), "signal {s} to the seed of {}", w.pid);
    }
    hold.release();
    env.finish_bg(bg).ok();
    sigwake_done(&env, &w);
}

/// The same signals sent once the restored process runs.
#[test]
fn signals_after_a_restore_wake_blocked_calls() {
    let env = Env::new();
    let w = env.start("sigwake");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    for s in WAKE {
        assert!(signal(w.pid, s));
    }
    sigwake_done(&env, &w);
}

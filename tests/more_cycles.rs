//! More dump/restore cycles: named FIFOs (unread bytes, a read() blocked on one),
//! dropped credentials with a kept capability, and oom_score_adj.

mod common;

use common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::thread::sleep;
use std::time::{Duration, Instant};

const CYCLES: usize = 3;

#[test]
fn fifo_sane() {
    sanity(|e| e.start("fifo"));
}

#[test]
fn creds_sane() {
    sanity(|e| e.start("creds"));
}

/// The fd the fifo workload blocks in read() on (WORKDIR/fifo-wake).
const WAKE_FD: u64 = 11;

// ------------------------------------------------------------------------- FIFOs

/// /proc/PID/syscall: "NR arg0 ..." while blocked in a syscall, "running" otherwise.
fn proc_syscall(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/syscall"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Is `pid` asleep inside read(WAKE_FD, ...)?
fn blocked_in_wake_read(pid: i32) -> bool {
    let sc = proc_syscall(pid);
    let mut f = sc.split_whitespace();
    proc_state(pid) == Some('S')
        && f.next() == Some("0")
        && f.next()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            == Some(WAKE_FD)
}

/// Waits until the fifo workload sits in its blocking read (seen twice in a row).
fn wait_blocked_in_read(env: &Env, w: &Workload) {
    let start = Instant::now();
    let mut seen = 0;
    while seen < 2 {
        if blocked_in_wake_read(w.pid) {
            seen += 1;
        } else {
            seen = 0;
        }
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "pid {} not blocked in read(fd {WAKE_FD}): state {:?}, syscall `{}`; output:\n{}",
            w.pid,
            proc_state(w.pid),
            proc_syscall(w.pid),
            env.output(w)
        );
        sleep(Duration::from_millis(20));
    }
}

/// The test's side of fifo-wake: writes the next byte ('a' + n) and waits for the
/// workload's "WOKE <n+1> <byte>" line.
fn wake(env: &Env, w: &Workload, sent: &mut u64) {
    let byte = b'a' + (*sent % 26) as u8;
    let path = env.path().join("fifo-wake");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {} O_WRONLY|O_NONBLOCK: {e}", path.display()));
    f.write_all(&[byte])
        .unwrap_or_else(|e| panic!("write to {}: {e}", path.display()));
    drop(f);
    *sent += 1;
    let want = format!("WOKE {} {}", *sent, byte as char);
    env.wait_line(w, &want, |l| l == want);
}

/// A named FIFO with 8 unread bytes and another one the main loop blocks in read()
/// on: three cycles. After each restore the task is still asleep in read() on the
/// same fd, a byte the test writes wakes it with exactly that byte, the unread bytes
/// (and the pipe's 128 KiB capacity) are back, and SIGUSR1 (no SA_RESTART) still
/// interrupts the read with EINTR.
#[test]
fn fifo_three_cycles() {
    let env = Env::new();
    let mut w = env.start("fifo");
    let mut sent = 0;
    env.check(&mut w);
    wake(&env, &w, &mut sent);
    env.check(&mut w);
    for i in 1..=CYCLES {
        wait_blocked_in_read(&env, &w);
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        // The pipes died with the process: their bytes can only come from the images.
        assert!(!exists(w.pid));
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        wait_blocked_in_read(&env, &w);
        env.check(&mut w);
        wake(&env, &w, &mut sent);
        env.check(&mut w);
    }
    notices_corruption(&env, &w);
}

/// After a restore, the task that was blocked in read() on an empty FIFO is blocked in
/// it again (state S, /proc/PID/syscall shows read of the same fd) and stays there (1.5 s
/// watched), printing nothing, until the test writes a byte; then it gets exactly that
/// byte.
#[test]
fn fifo_blocked_read_still_blocks_after_restore() {
    let env = Env::new();
    let mut w = env.start("fifo");
    let mut sent = 0;
    wait_blocked_in_read(&env, &w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    // Released, it runs back into read() (state R for a moment on a loaded machine);
    // from then on it must stay there.
    wait_blocked_in_read(&env, &w);
    let lines_before = env.output(&w).lines().count();
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1500) {
        assert!(
            blocked_in_wake_read(w.pid),
            "restored pid {} is not blocked in read(fd {WAKE_FD}): state {:?}, syscall `{}`, \
             wchan `{}`; output:\n{}",
            w.pid,
            proc_state(w.pid),
            proc_syscall(w.pid),
            fs::read_to_string(format!("/proc/{}/wchan", w.pid)).unwrap_or_default(),
            env.output(&w)
        );
        sleep(Duration::from_millis(50));
    }
    let text = env.output(&w);
    assert_eq!(
        text.lines().count(),
        lines_before,
        "the restored workload printed something while it should be blocked:\n{text}"
    );
    wake(&env, &w, &mut sent);
    wait_blocked_in_read(&env, &w);
    env.check(&mut w);
    wake(&env, &w, &mut sent);
    env.check(&mut w);
}

/// `dump --leave-running` reads the unread bytes of a FIFO without taking them: the
/// running workload still has them (and its read() still blocks) after three such
/// dumps; then the last images restore into a process that has them too.
#[test]
fn fifo_leave_running_keeps_unread_bytes() {
    let env = Env::new();
    let mut w = env.start("fifo");
    let mut sent = 0;
    let mut last = None;
    for i in 1..=3 {
        wait_blocked_in_read(&env, &w);
        let dir = env.subdir(&format!("lr{i}"));
        env.dump(w.pid, &dir, &["--leave-running"]).ok();
        assert_running_untraced(w.pid);
        env.check(&mut w);
        wake(&env, &w, &mut sent);
        last = Some(dir);
    }
    let lines_at_dump = env.output(&w).lines().count();
    env.kill_and_reap(w.pid);
    env.restore_detached(&last.unwrap()).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    wait_blocked_in_read(&env, &w);
    // The restored process is the one of the last dump, taken after two checks: its
    // next check prints PASS 3 again.
    assert!(signal(w.pid, libc::SIGUSR1));
    let start = Instant::now();
    loop {
        let text = env.output(&w);
        let new: Vec<&str> = text.lines().skip(lines_at_dump).collect();
        if new.contains(&"PASS 3") {
            break;
        }
        if let Some(l) = new.iter().find(|l| l.starts_with("FAIL")) {
            panic!("restored fifo: {l}\n{text}");
        }
        assert!(
            start.elapsed() < LINE_TIMEOUT && exists(w.pid),
            "restored fifo did not print PASS 3; output:\n{text}"
        );
        sleep(Duration::from_millis(10));
    }
}

// ------------------------------------------------------------------- credentials

/// A process that dropped root: uid/gid 1000 (real, effective, saved, fs), groups
/// {44, 1000}, only CAP_NET_BIND_SERVICE permitted and effective (and it still binds a
/// port below 1024, and is refused without it), keepcaps, dumpable 1, no_new_privs 0.
#[test]
fn creds_three_cycles() {
    let env = Env::new();
    let mut w = env.start("creds");
    env.share_output(&w);
    env.check(&mut w);
    let uid = status_field(w.pid, "Uid");
    assert_eq!(uid.as_deref(), Some("1000\t1000\t1000\t1000"));
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(&mut w, &dir);
        // The same from outside.
        assert_eq!(status_field(w.pid, "Uid"), uid, "cycle {i}");
        assert_eq!(
            status_field(w.pid, "Gid").as_deref(),
            Some("1000\t1000\t1000\t1000"),
            "cycle {i}"
        );
        assert_eq!(
            status_field(w.pid, "Groups").as_deref(),
            Some("44 1000"),
            "cycle {i}"
        );
        assert_eq!(
            status_field(w.pid, "CapEff").as_deref(),
            Some("0000000000000400"),
            "cycle {i}"
        );
    }
    notices_corruption(&env, &w);
}

// ----------------------------------------------------------------- oom_score_adj

fn oom_score_adj(pid: i32) -> i32 {
    let p = format!("/proc/{pid}/oom_score_adj");
    let s = fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {p}: {e}"));
    s.trim()
        .parse()
        .unwrap_or_else(|e| panic!("{p}: {s:?}: {e}"))
}

fn set_oom_score_adj(pid: i32, v: i32) {
    let p = format!("/proc/{pid}/oom_score_adj");
    fs::write(&p, v.to_string()).unwrap_or_else(|e| panic!("write {v} to {p}: {e}"));
    assert_eq!(oom_score_adj(pid), v, "{p} did not take {v}");
}

/// oom_score_adj set from outside (345, then 678) is the restored process's too, and
/// the workload still passes its own check.
#[test]
fn oom_score_adj_survives() {
    let env = Env::new();
    let mut w = env.start("misc");
    let ours = oom_score_adj(std::process::id() as i32);
    for (i, v) in [345, 678].into_iter().enumerate() {
        assert_ne!(v, ours, "pick a value other than the test's own");
        set_oom_score_adj(w.pid, v);
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(&mut w, &dir);
        assert_eq!(
            oom_score_adj(w.pid),
            v,
            "restored pid {}: oom_score_adj (the test's own is {ours})",
            w.pid
        );
    }
}

// ------------------------------------------------------------ pipes in packet mode

/// Pipes in packet mode (O_DIRECT from pipe2, or set on one end with F_SETFL) keep each
/// end's mode and their queued packets, one read() each, over three cycles.
#[test]
fn packet_mode_pipes_three_cycles() {
    let env = Env::new();
    let mut w = env.start("pktpipe");
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
    notices_corruption(&env, &w);
}

/// A FIFO holding packets: they would come back as one stream, so the dump refuses it
/// by name and the workload runs on.
#[test]
fn fifo_in_packet_mode_with_packets_is_refused() {
    let env = Env::new();
    let mut w = env.start_with("pktpipe", &["fifo"]);
    let line = env
        .dump(w.pid, &env.subdir("img"), &[])
        .failed_naming(&format!("pid {}: fd 14: a FIFO holding 2 packets", w.pid));
    assert!(line.contains("packet mode"), "{line}");
    assert_running_untraced(w.pid);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
}

//! Dump/restore cycles of the self-checking workloads: each workload is dumped
//! (and so killed), reaped, restored with `restore -d` under the same pid, and asked
//! to check all of its state; three times in a row. The workload itself judges: it
//! prints `PASS <n>` only if everything it set up is still exactly as it was.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::thread::sleep;
use std::time::Duration;

const CYCLES: usize = 3;

fn three_cycles(name: &str) {
    let env = Env::new();
    let mut w = env.start(name);
    // The workload passes its own check before any checkpoint.
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
}

/// Heap (brk and mmap'd), stack, a sparse 64 MiB anonymous mapping, private and
/// shared file mappings, a read-only region: contents and addresses. Also: the
/// never-touched pages of the sparse mapping are not in the images.
#[test]
fn mem_three_cycles() {
    let env = Env::new();
    let mut w = env.start("mem");
    env.cycles(&mut w, CYCLES, &[], |i, dir| {
        // About 7.5 MiB of the process is written memory; the 64 MiB mapping has only
        // 4 MiB written. Storing it whole would be > 64 MiB.
        let pages = image_bytes(dir, "pages-");
        assert!(
            pages > 0,
            "no pages-*.img in {}: {}",
            dir.display(),
            listing(dir)
        );
        assert!(
            pages < 16 << 20,
            "cycle {i}: pages-*.img hold {pages} bytes, far more than the ~7.5 MiB written \
             (never-touched{} pages stored?): {}",
            if i > 1 {
                " or only read (mapped to the zero page)"
            } else {
                ""
            },
            listing(dir)
        );
    });
}

/// Handlers (SA_SIGINFO, SA_RESTART, SA_ONSTACK on a sigaltstack, SA_RESETHAND),
/// sa_mask, blocked mask, a thread-pending SIGHUP and two queued process-pending
/// real-time signals with their values, SIG_IGN and SIG_DFL dispositions.
#[test]
fn sig_three_cycles() {
    three_cycles("sig");
}

/// x87, SSE, AVX and AVX-512 (zmm0-31, k1-7) registers held live across the
/// checkpoint, MXCSR and x87 rounding mode, FTZ/DAZ.
#[test]
fn fpu_three_cycles() {
    three_cycles("fpu");
}

/// Fd numbers, offsets, access modes and status flags, FD_CLOEXEC, a dup sharing its
/// offset, an O_APPEND log, a directory fd, /dev/null and /dev/zero.
#[test]
fn files_three_cycles() {
    three_cycles("files");
}

/// umask, cwd, rlimits, comm, no_new_privs, personality, nice, CPU affinity, exe,
/// cmdline, auxv, vDSO clocks, brk, rseq, pid.
#[test]
fn misc_three_cycles() {
    three_cycles("misc");
}

/// Tasks caught inside nanosleep, clock_nanosleep, poll, select and pause (woken by
/// an itimer) carry on correctly.
#[test]
fn blocking_three_cycles() {
    three_cycles("blocking");
}

/// A python3 interpreter with a 200k-entry dict, a list, a set and a 4 MiB bytearray.
#[test]
fn python_three_cycles() {
    let env = Env::new();
    let mut w = env.start_python();
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
}

/// `sleep 1000`: after the restore it is still asleep (state S) and stays alive.
#[test]
fn sleep_is_still_sleeping() {
    let env = Env::new();
    let sleep_bin = which("sleep");
    let w = env.spawn("sleep", &sleep_bin, &[OsStr::new("1000")]);
    // Wait until the exec is done and it sleeps.
    let mut tries = 0;
    while !(fs::read_link(format!("/proc/{}/exe", w.pid))
        .ok()
        .as_deref()
        == Some(sleep_bin.as_path())
        && proc_state(w.pid) == Some('S'))
    {
        tries += 1;
        assert!(
            tries < 500,
            "sleep did not start: state {:?}",
            proc_state(w.pid)
        );
        sleep(Duration::from_millis(10));
    }
    let cmdline = fs::read(format!("/proc/{}/cmdline", w.pid)).unwrap();
    for i in 1..=2 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        sleep(Duration::from_millis(300));
        assert_eq!(
            proc_state(w.pid),
            Some('S'),
            "restored sleep is not sleeping"
        );
        sleep(Duration::from_secs(1));
        assert_eq!(
            proc_state(w.pid),
            Some('S'),
            "restored sleep is not sleeping 1 s later"
        );
        assert_running_untraced(w.pid);
        assert_eq!(
            fs::read_link(format!("/proc/{}/exe", w.pid))
                .ok()
                .as_deref(),
            Some(sleep_bin.as_path())
        );
        assert_eq!(
            fs::read(format!("/proc/{}/cmdline", w.pid)).unwrap(),
            cmdline,
            "cmdline changed"
        );
        assert_eq!(
            reap(w.pid, Duration::ZERO),
            None,
            "restored sleep exited: {}",
            env.output(&w)
        );
    }
}

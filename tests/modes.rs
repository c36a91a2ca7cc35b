//! The other ways to run dump, restore and show: `--leave-running`, restore in the
//! foreground (ckpt exits with the workload's status), and `show` as JSON.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::time::Duration;

/// `dump --leave-running`: the original keeps running, untraced, and still passes;
/// then it is killed and the images restore into a process that passes too.
#[test]
fn leave_running_then_restore() {
    let env = Env::new();
    let mut w = env.start("sig");
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);
    env.check(&mut w);
    let passes_at_dump = 1;

    env.kill_and_reap(w.pid);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    // The restored process is the one of the dump: its check counter went on from
    // there, so its next line is PASS 2 (printed again, after the original's lines).
    let before = env.output(&w).lines().count();
    assert!(signal(w.pid, libc::SIGUSR1));
    let want = format!("PASS {}", passes_at_dump + 1);
    let start = std::time::Instant::now();
    loop {
        let text = env.output(&w);
        let new: Vec<&str> = text.lines().skip(before).collect();
        if new.iter().any(|l| *l == want) {
            break;
        }
        if let Some(l) = new.iter().find(|l| l.starts_with("FAIL")) {
            panic!("restored workload: {l}\n{text}");
        }
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "restored workload did not print {want}; output:\n{text}"
        );
        assert!(exists(w.pid), "restored workload died:\n{text}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `--leave-running` several times in a row (so the workload is often caught inside
/// a syscall or a register loop), a check after each round, then a plain dump cycle:
/// a dump that leaves the task running must not disturb it.
fn leave_running_repeatedly(name: &str) {
    let env = Env::new();
    let mut w = env.start(name);
    for i in 1..=3 {
        for j in 1..=3 {
            let dir = env.subdir(&format!("lr{i}-{j}"));
            env.dump(w.pid, &dir, &["--leave-running"]).ok();
            assert_running_untraced(w.pid);
        }
        env.check(&mut w);
    }
    let dir = env.subdir("final");
    env.cycle(&mut w, &dir);
}

#[test]
fn leave_running_repeatedly_misc() {
    leave_running_repeatedly("misc");
}

#[test]
fn leave_running_repeatedly_blocking() {
    leave_running_repeatedly("blocking");
}

#[test]
fn leave_running_repeatedly_fpu() {
    leave_running_repeatedly("fpu");
}

#[test]
fn leave_running_repeatedly_sig() {
    leave_running_repeatedly("sig");
}

#[test]
fn leave_running_repeatedly_files() {
    leave_running_repeatedly("files");
}

#[test]
fn leave_running_repeatedly_mem() {
    leave_running_repeatedly("mem");
}

fn restore_foreground(workload: &str, sig: i32) -> (Workload, CkptOutput) {
    let env = Env::new();
    let mut w = env.start(workload);
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let mut bg = env.ckpt_bg(&[OsStr::new("restore"), OsStr::new("-D"), dir.as_os_str()]);
    env.track(w.pid);
    env.wait_restored(&w, Some(&mut bg));
    assert!(signal(w.pid, sig), "signal {sig} to restored {}", w.pid);
    let out = env.finish_bg(bg);
    // ckpt reaped it; the pid is no longer ours to signal.
    env.untrack(w.pid);
    let text = env.output(&w);
    assert!(
        !exists(w.pid) || proc_state(w.pid) == Some('Z'),
        "restored pid {} still exists after ckpt exited:\n{text}",
        w.pid
    );
    drop(env);
    (w, out)
}

/// `restore` without -d waits for the workload and exits with its status: 0 when the
/// workload's final check passes.
#[test]
fn restore_foreground_exit_status_pass() {
    let (_w, out) = restore_foreground("files", libc::SIGUSR2);
    assert_eq!(out.status.code(), Some(0), "{out}");
}

/// ... and 1 when the workload is told to fail (SIGTERM corrupts its state first).
#[test]
fn restore_foreground_exit_status_fail() {
    let (_w, out) = restore_foreground("misc", libc::SIGTERM);
    assert_eq!(out.status.code(), Some(1), "{out}");
}

/// ... and 128+signal when the workload is killed by a signal.
#[test]
fn restore_foreground_exit_status_signal() {
    let env = Env::new();
    let sleep_bin = which("sleep");
    let w = env.spawn("sleep", &sleep_bin, &[OsStr::new("1000")]);
    let start = std::time::Instant::now();
    while !(fs::read_link(format!("/proc/{}/exe", w.pid))
        .ok()
        .as_deref()
        == Some(sleep_bin.as_path())
        && proc_state(w.pid) == Some('S'))
    {
        assert!(start.elapsed() < LINE_TIMEOUT, "sleep did not start");
        std::thread::sleep(Duration::from_millis(10));
    }
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let mut bg = env.ckpt_bg(&[OsStr::new("restore"), OsStr::new("-D"), dir.as_os_str()]);
    env.track(w.pid);
    env.wait_restored(&w, Some(&mut bg));
    assert!(signal(w.pid, libc::SIGTERM));
    let out = env.finish_bg(bg);
    env.untrack(w.pid);
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{out}");
}

/// `show -D DIR` prints valid JSON of the images, naming the pid; it changes nothing
/// (the images still restore).
#[test]
fn show_prints_json() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let before: Vec<(String, Vec<u8>)> = image_files(&dir, "")
        .into_iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    let out = env
        .ckpt(&[
            OsStr::new("show"),
            OsStr::new("--json"),
            OsStr::new("-D"),
            dir.as_os_str(),
        ])
        .ok();
    let v: serde_json::Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("show output is not JSON ({e}): {out}"));
    fn has_pid(v: &serde_json::Value, pid: i64) -> bool {
        match v {
            serde_json::Value::Number(n) => n.as_i64() == Some(pid),
            serde_json::Value::String(s) => mentions_number(s, pid),
            serde_json::Value::Array(a) => a.iter().any(|x| has_pid(x, pid)),
            serde_json::Value::Object(o) => o
                .iter()
                .any(|(k, x)| mentions_number(k, pid) || has_pid(x, pid)),
            _ => false,
        }
    }
    assert!(
        has_pid(&v, w.pid as i64),
        "show output does not mention pid {}: {}",
        w.pid,
        &out.stdout[..out.stdout.len().min(4000)]
    );
    for (name, bytes) in &before {
        assert_eq!(
            &fs::read(dir.join(name)).unwrap(),
            bytes,
            "show modified {name}"
        );
    }
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    env.check(&mut w);
}

/// The same images restore twice (restore does not consume or change them).
#[test]
fn restore_same_images_twice() {
    let env = Env::new();
    let mut w = env.start("fpu");
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    for _ in 0..2 {
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        // each restored copy starts from the dump: its next check is PASS 2
        w.passes = 1;
        let before = env.output(&w);
        assert!(signal(w.pid, libc::SIGUSR1));
        let start = std::time::Instant::now();
        while !env.output(&w)[before.len()..]
            .lines()
            .any(|l| l == "PASS 2")
        {
            let text = env.output(&w);
            assert!(
                !text[before.len()..].contains("FAIL"),
                "restored copy failed:\n{text}"
            );
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "restored copy did not print PASS 2:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        env.kill_and_reap(w.pid);
    }
}

/// A stopped (SIGSTOP) workload: `dump --leave-running` may refuse it (one line naming
/// the pid) or dump it, but either way it stays stopped and untraced, and after
/// SIGCONT it still passes.
#[test]
fn leave_running_keeps_stopped_process_stopped() {
    let env = Env::new();
    let mut w = env.start("sig");
    assert!(signal(w.pid, libc::SIGSTOP));
    let start = std::time::Instant::now();
    while proc_state(w.pid) != Some('T') {
        assert!(start.elapsed() < LINE_TIMEOUT, "did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &["--leave-running"]);
    if !out.success() {
        out.failed_naming(&w.pid.to_string());
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        proc_state(w.pid),
        Some('T'),
        "no longer stopped after the dump: {out}"
    );
    assert_eq!(status_field(w.pid, "TracerPid").as_deref(), Some("0"));
    assert!(signal(w.pid, libc::SIGCONT));
    env.check(&mut w);
}

//! State that is recorded at dump and must come back exactly: the capability state
//! beyond E/P/I (bounding set, ambient set, securebits), fds above ckpt's own soft
//! RLIMIT_NOFILE, character devices (stateless ones restore, stateful ones are refused),
//! shared memory seen through several VMAs, locked memory, and dumpable 2.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

// ------------------------------------------------------------------ RLIMIT_NOFILE

/// `ckpt restore -D DIR -d`, run by `sh -c 'ULIMIT; exec ckpt ...'`: ckpt starts with
/// the limits the ulimit commands set.
fn restore_under_ulimit(env: &Env, dir: &Path, ulimit: &str) -> CkptOutput {
    let script = format!("{ulimit} && exec \"$0\" restore -D \"$1\" -d");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .arg(CKPT)
        .arg(dir)
        .current_dir(env.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let pid = child.id() as i32;
    env.track(pid);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < CKPT_TIMEOUT,
            "`{script}` hung for {CKPT_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let out = child.wait_with_output().unwrap();
    env.untrack(pid);
    CkptOutput {
        args: vec!["(sh -c)".into(), script.into()],
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The workload holds fd 4000; ckpt restores it with a soft RLIMIT_NOFILE of 1024 (it
/// raises its soft limit for the seed), and the process gets its own limits back.
#[test]
fn high_fd_restores_under_low_soft_nofile() {
    let env = Env::new();
    let mut w = start_with(&env, "devices", &[]);
    env.check(&mut w);
    let limits = fs::read_to_string(format!("/proc/{}/limits", w.pid)).unwrap();
    let nofile = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .map(str::to_string)
    };
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        let out = restore_under_ulimit(&env, &dir, "ulimit -Sn 1024");
        assert!(out.success(), "restore under ulimit -Sn 1024: {out}");
        env.track(w.pid);
        assert_running_untraced(w.pid);
        env.check(&mut w);
        let now = fs::read_to_string(format!("/proc/{}/limits", w.pid)).unwrap();
        assert_eq!(nofile(&now), nofile(&limits), "cycle {i}");
    }
    notices_corruption(&env, &w);
}

/// With a hard limit too low for fd 4000, the restore fails with one clear line naming
/// the limit, and leaves no process behind.
#[test]
fn high_fd_under_low_hard_nofile_fails_clearly() {
    let env = Env::new();
    let w = start_with(&env, "devices", &[]);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let out = restore_under_ulimit(&env, &dir, "ulimit -n 1024");
    let line = out.failed_naming("RLIMIT_NOFILE");
    assert!(
        line.contains("4000") && line.contains("1024"),
        "should name fd 4000 and the hard limit 1024: {line}"
    );
    env.assert_gone(w.pid);
}

// ------------------------------------------------------------------ character devices

/// /dev/urandom, /dev/null, /dev/full and /dev/random come back: same device, flags and
/// close-on-exec flag, and they work.
#[test]
fn stateless_devices_restore() {
    let env = Env::new();
    let mut w = start_with(&env, "devices", &[]);
    cycles(&env, &mut w);
}

/// A pty master is refused at dump, naming pid, fd and path; the workload runs on
/// untouched (its pty still answers with the same number).
#[test]
fn pty_master_is_refused_and_left_running() {
    let env = Env::new();
    let mut w = start_with(&env, "devices", &["ptmx"]);
    env.check(&mut w);
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming("/dev/ptmx");
    assert!(
        mentions_number(&line, w.pid as i64) && line.contains("fd 8"),
        "should name pid {} and fd 8: {line}",
        w.pid
    );
    assert!(
        image_files(&dir, "").is_empty(),
        "a refused dump left images: {}",
        listing(&dir)
    );
    assert_running_untraced(w.pid);
    env.check(&mut w);
    notices_corruption(&env, &w);
}

// ------------------------------------------------------------------ shared memory

/// A MAP_SHARED|MAP_ANONYMOUS region split into 3 VMAs by mprotect, and a memfd mapped
/// twice: after a restore each is still one object (same inode through map_files, writes
/// through one mapping seen through the other).
#[test]
fn shared_memory_objects_stay_shared() {
    let env = Env::new();
    let mut w = start_with(&env, "shm", &[]);
    cycles(&env, &mut w);
}

// ------------------------------------------------------------------ locked memory

/// mlock()ed memory comes back locked and resident, MLOCK_ONFAULT memory locked with only
/// its touched pages resident; VmLck as before.
#[test]
fn locked_memory_stays_locked() {
    let env = Env::new();
    let mut w = start_with(&env, "mlock", &[]);
    cycles(&env, &mut w);
}

/// mlockall(MCL_FUTURE) leaves no trace in the current mappings; after a restore new
/// mappings are still locked.
#[test]
fn mlockall_future_survives() {
    let env = Env::new();
    let mut w = start_with(&env, "mlock", &["future"]);
    cycles(&env, &mut w);
}

/// `restore --lazy` cannot lock memory whose pages the pager has not served yet: it is
/// refused with one line naming the VMA, and nothing is left behind.
#[test]
fn lazy_restore_of_locked_memory_is_refused() {
    let env = Env::new();
    let w = start_with(&env, "mlock", &[]);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let out = env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
        OsStr::new("--lazy"),
    ]);
    out.failed_naming("mlocked");
    env.assert_gone(w.pid);
}

// ------------------------------------------------------------------ dumpable 2

/// Puts fs.suid_dumpable back as it was when dropped.
struct SuidDumpable(String);

const SUID_DUMPABLE: &str = "/proc/sys/fs/suid_dumpable";

impl Drop for SuidDumpable {
    fn drop(&mut self) {
        let _ = fs::write(SUID_DUMPABLE, &self.0);
    }
}

/// A process with dumpable 2 (the kernel's SUID_DUMP_ROOT, which prctl cannot set)
/// restores, with a value that keeps its protection. fs.suid_dumpable is 2 only while
/// the workload sets up (a few ms; it is global, so as short as possible).
#[test]
fn dumpable_2_restores() {
    let env = Env::new();
    workload_bin("dumpable"); // built before the window, not in it
    let mut w = {
        let old = fs::read_to_string(SUID_DUMPABLE).expect("read fs.suid_dumpable");
        let _back = SuidDumpable(old.trim().to_string());
        fs::write(SUID_DUMPABLE, "2").expect("set fs.suid_dumpable to 2");
        start_with(&env, "dumpable", &[])
    };
    assert_eq!(status_field(w.pid, "Uid").as_deref(), Some("0\t0\t0\t0"));
    cycles(&env, &mut w);
}

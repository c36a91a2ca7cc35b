//! Helpers shared by the integration tests: building and starting the self-checking
//! workloads of `tests/workloads/`, running `ckpt`, and cleaning up.
//!
//! Every test makes one [`Env`]: a temp directory of its own, plus the list of pids and
//! mounts it is responsible for. Dropping the `Env` (also when the test panics) kills
//! those pids with SIGKILL, reaps them, unmounts the mounts and removes the directory.
//! Only pids the test started (or restored) are ever signalled, and only by pid.
//!
//! Workload protocol (see tests/workloads/wl.h): a workload prints `READY <pid>`; on
//! SIGUSR1 it checks all its state and prints `PASS <n>` or `FAIL <reason>`; on SIGUSR2
//! it checks and exits 0 (pass) or 1 (fail); on SIGTERM it corrupts its state on
//! purpose, checks, and so exits 1.
#![allow(dead_code)]
#![forbid(unsafe_code)]

pub mod dropin;
pub mod inside;
pub mod tree;

use ckpt_images::{names, pb, ImageDir, Kind, RecordWriter};
use nix::errno::Errno;
use nix::fcntl;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// The binary under test.
pub const CKPT: &str = env!("CARGO_BIN_EXE_ckpt");

/// How long a workload may take to print READY or answer a check.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `ckpt` command may run before the test calls it hung.
pub const CKPT_TIMEOUT: Duration = Duration::from_secs(60);

pub const WORKLOAD_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads");
const CFLAGS: &[&str] = &["-O1", "-g", "-Wall"];

static INIT: Once = Once::new();

/// Once per test binary: become a child subreaper, so that processes restored with
/// `restore -d` (orphaned when ckpt exits) become our children and can be reaped; and
/// mark every inherited fd close-on-exec (cargo hands its jobserver pipe down to test
/// binaries), so workloads start with stdin, stdout and stderr only.
pub fn init() {
    INIT.call_once(|| {
        for e in fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .flatten()
        {
            if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) {
                if fd > 2 {
                    // A stale number (the read_dir's own fd, closed by now) gives EBADF.
                    let _ = fcntl::fcntl(fd, fcntl::FcntlArg::F_SETFD(fcntl::FdFlag::FD_CLOEXEC));
                }
            }
        }
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            panic!("PR_SET_CHILD_SUBREAPER: {e}");
        }
    });
}

// ---------------------------------------------------------------------------------
// Building workloads

/// Path of the compiled C workload `name` (tests/workloads/NAME.c), built with the
/// system `cc` once per test binary. The binary is cached under the target dir by a
/// hash of its sources and flags, and written by rename, so parallel builds are safe.
pub fn workload_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let src = Path::new(WORKLOAD_DIR).join(format!("{name}.c"));
    let header = Path::new(WORKLOAD_DIR).join("wl.h");
    let mut h = DefaultHasher::new();
    fs::read(&src)
        .unwrap_or_else(|e| panic!("read {}: {e}", src.display()))
        .hash(&mut h);
    fs::read(&header).unwrap_or_default().hash(&mut h);
    CFLAGS.hash(&mut h);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("workloads");
    fs::create_dir_all(&dir).unwrap();
    let bin = dir.join(format!("{name}-{:016x}", h.finish()));
    if !bin.exists() {
        let tmp = dir.join(format!("{name}.tmp.{}", std::process::id()));
        let out = Command::new("cc")
            .args(CFLAGS)
            .arg("-o")
            .arg(&tmp)
            .arg(&src)
            .arg("-lm")
            .stdin(Stdio::null())
            .output()
            .expect("run cc (install build-essential)");
        assert!(
            out.status.success(),
            "cc {} failed:\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        fs::rename(&tmp, &bin).unwrap();
    }
    map.insert(name.to_string(), bin.clone());
    bin
}

/// The real python3 interpreter (not a shim script), resolved once.
pub fn python3() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import os,sys; print(os.path.realpath(sys.executable))",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("run python3 (install python3)");
        assert!(out.status.success(), "python3 failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
    .clone()
}

/// Full path of a program found in PATH.
pub fn which(prog: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
    for d in std::env::split_paths(&path) {
        let p = d.join(prog);
        if let Ok(m) = fs::metadata(&p) {
            if m.is_file() && m.permissions().mode() & 0o111 != 0 {
                return fs::canonicalize(p).unwrap();
            }
        }
    }
    panic!("{prog} not found in PATH");
}

// ---------------------------------------------------------------------------------
// Processes

/// A process the test started (or restored): its pid and the file its stdout and
/// stderr go to.
#[derive(Debug, Clone)]
pub struct Workload {
    pub pid: i32,
    pub name: String,
    pub exe: PathBuf,
    pub out: PathBuf,
    /// `PASS <n>` lines seen so far.
    pub passes: u32,
}

/// Result of one `ckpt` run.
#[derive(Debug)]
pub struct CkptOutput {
    pub args: Vec<OsString>,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CkptOutput {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics unless ckpt succeeded.
    pub fn ok(self) -> Self {
        assert!(self.success(), "ckpt failed: {self}");
        self
    }

    /// Asserts ckpt failed with exactly one line on stderr that contains `needle`;
    /// returns that line.
    pub fn failed_naming(&self, needle: &str) -> String {
        eprintln!("{self}");
        assert!(!self.success(), "ckpt should have failed: {self}");
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(lines.len(), 1, "stderr should be one line: {self}");
        assert!(
            lines[0].contains(needle),
            "stderr should name `{needle}`: {self}"
        );
        lines[0].to_string()
    }
}

impl std::fmt::Display for CkptOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let args: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
        write!(
            f,
            "`ckpt {}` -> {}\n--- stdout ---\n{}--- stderr ---\n{}--------------",
            args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

/// Status of a reaped process, in words.
pub fn describe_wait(status: i32) -> String {
    if libc::WIFEXITED(status) {
        format!("exited {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("killed by signal {}", libc::WTERMSIG(status))
    } else {
        format!("wait status {status:#x}")
    }
}

/// Reaps `pid` (our child) within `timeout`; returns the raw wait status, or None if
/// it did not die in time. ECHILD (not ours, or already reaped) gives Some(-1).
pub fn reap(pid: i32, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    let flags = WaitPidFlag::WNOHANG | WaitPidFlag::__WALL;
    loop {
        match waitpid(Pid::from_raw(pid), Some(flags)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(st) => return Some(raw_wait_status(st)),
            Err(_) => return Some(-1),
        }
        if start.elapsed() > timeout {
            return None;
        }
        sleep(Duration::from_millis(5));
    }
}

/// The wait(2) status word nix decoded `st` from, so callers can keep using the
/// W*() macros of libc on it.
fn raw_wait_status(st: WaitStatus) -> i32 {
    let stop = |sig: i32| (sig << 8) | 0x7f;
    match st {
        WaitStatus::Exited(_, code) => (code & 0xff) << 8,
        WaitStatus::Signaled(_, sig, core) => sig as i32 | if core { 0x80 } else { 0 },
        WaitStatus::Stopped(_, sig) => stop(sig as i32),
        WaitStatus::PtraceEvent(_, sig, event) => stop(sig as i32) | (event << 16),
        WaitStatus::PtraceSyscall(_) => stop(libc::SIGTRAP | 0x80),
        WaitStatus::Continued(_) => 0xffff,
        WaitStatus::StillAlive => 0,
    }
}

/// Waits for `child` to exit, for at most `limit`; None if it still runs by then.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st);
        }
        if start.elapsed() > limit {
            return None;
        }
        sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to `pid`; returns false if that failed (e.g. ESRCH, or a signal number
/// nix does not know, such as a real-time one).
pub fn signal(pid: i32, sig: i32) -> bool {
    Signal::try_from(sig).is_ok_and(|s| kill(Pid::from_raw(pid), s).is_ok())
}

/// Polls until `cond` holds, or panics naming `what`.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "timed out waiting for {what}"
        );
        sleep(Duration::from_millis(1));
    }
}

/// Does a process with this pid exist (zombies included)?
pub fn exists(pid: i32) -> bool {
    !matches!(kill(Pid::from_raw(pid), None), Err(Errno::ESRCH))
}

/// State letter from /proc/PID/stat (R, S, D, T, t, Z, I, ...).
pub fn proc_state(pid: i32) -> Option<char> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    rest.trim_start().chars().next()
}

/// A field of /proc/PID/status, e.g. "TracerPid".
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(&format!("{field}:"))
            .map(|v| v.trim().to_string())
    })
}

/// Asserts `pid` is alive, not traced, not stopped and not a zombie.
pub fn assert_running_untraced(pid: i32) {
    let state = proc_state(pid);
    assert!(
        matches!(state, Some('R' | 'S' | 'D')),
        "pid {pid} should be running or sleeping, state is {state:?}"
    );
    let tracer = status_field(pid, "TracerPid");
    assert_eq!(
        tracer.as_deref(),
        Some("0"),
        "pid {pid} is traced: TracerPid {tracer:?}"
    );
}

/// A pid that no process has right now.
pub fn unused_pid() -> i32 {
    let max: i32 = fs::read_to_string("/proc/sys/kernel/pid_max")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(32768);
    (300..max).rev().find(|&p| !exists(p)).expect("no free pid")
}

/// Splits `s` into runs of digits and says whether `n` is one of them.
pub fn mentions_number(s: &str, n: i64) -> bool {
    s.split(|c: char| !c.is_ascii_digit())
        .any(|w| !w.is_empty() && w.parse::<i64>().ok() == Some(n))
}

// ---------------------------------------------------------------------------------
// The per-test environment

/// One test's temp directory, processes and mounts; cleans all of them up on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pids: Mutex<Vec<i32>>,
    mounts: Mutex<Vec<PathBuf>>,
}

impl Env {
    pub fn new() -> Env {
        init();
        let dir = tempfile::Builder::new()
            .prefix("ckpt-test-")
            .tempdir()
            .expect("create temp dir");
        Env {
            dir,
            pids: Mutex::new(Vec::new()),
            mounts: Mutex::new(Vec::new()),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A fresh directory inside the test's temp dir (e.g. for images).
    pub fn subdir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    /// From now on, kill and reap `pid` when the test ends.
    pub fn track(&self, pid: i32) {
        assert!(pid > 1, "refusing to track pid {pid}");
        let mut v = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        if !v.contains(&pid) {
            v.push(pid);
        }
    }

    /// `pid` is gone (reaped): never signal it again, the number may be reused.
    pub fn untrack(&self, pid: i32) {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|&p| p != pid);
    }

    /// Starts `program args...` with stdin /dev/null and stdout+stderr appended to
    /// `<tempdir>/<name>.out`, cwd the temp dir.
    pub fn spawn(&self, name: &str, program: &Path, args: &[&OsStr]) -> Workload {
        let out = self.path().join(format!("{name}.out"));
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out)
            .unwrap();
        let child = Command::new(program)
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let pid = child.id() as i32;
        self.track(pid);
        // The Child handle is dropped: we reap by pid with waitpid ourselves.
        drop(child);
        Workload {
            pid,
            name: name.to_string(),
            exe: program.to_path_buf(),
            out,
            passes: 0,
        }
    }

    /// Builds and starts the C workload `name` with the temp dir as its WORKDIR, and
    /// waits for its READY line.
    pub fn start(&self, name: &str) -> Workload {
        self.start_with(name, &[])
    }

    /// `start` with more arguments after WORKDIR.
    pub fn start_with(&self, name: &str, args: &[&str]) -> Workload {
        let bin = workload_bin(name);
        let mut all = vec![self.path().as_os_str()];
        all.extend(args.iter().map(OsStr::new));
        let w = self.spawn(name, &bin, &all);
        self.wait_ready(&w);
        w
    }

    /// Starts tests/workloads/state.py under python3 and waits for READY.
    pub fn start_python(&self) -> Workload {
        self.start_python_script("state.py")
    }

    /// Starts tests/workloads/SCRIPT under python3 and waits for READY.
    pub fn start_python_script(&self, script: &str) -> Workload {
        let path = Path::new(WORKLOAD_DIR).join(script);
        let py = python3();
        let w = self.spawn(script, &py, &[path.as_os_str(), self.path().as_os_str()]);
        self.wait_ready(&w);
        w
    }

    pub fn output(&self, w: &Workload) -> String {
        fs::read_to_string(&w.out).unwrap_or_default()
    }

    /// Waits until the workload's output has a line for which `want` is true. Fails
    /// early on a FAIL or SETUP-ERROR line, or if the process is gone.
    pub fn wait_line(&self, w: &Workload, what: &str, want: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let text = self.output(w);
            if let Some(l) = text.lines().find(|l| want(l)) {
                return l.to_string();
            }
            if let Some(l) = text
                .lines()
                .find(|l| l.starts_with("FAIL") || l.starts_with("SETUP-ERROR"))
            {
                panic!(
                    "{} (pid {}) reported `{l}` while we waited for {what}; output:\n{text}",
                    w.name, w.pid
                );
            }
            let state = proc_state(w.pid);
            if matches!(state, None | Some('Z' | 'X')) {
                // one last look: the line may have been written just before it died
                let text = self.output(w);
                if let Some(l) = text.lines().find(|l| want(l)) {
                    return l.to_string();
                }
                panic!(
                    "{} (pid {}) died (state {state:?}) while we waited for {what}; output:\n{text}",
                    w.name, w.pid
                );
            }
            if start.elapsed() > LINE_TIMEOUT {
                panic!(
                    "{} (pid {}, state {state:?}) did not print {what} within {:?}; output:\n{text}",
                    w.name, w.pid, LINE_TIMEOUT
                );
            }
            sleep(Duration::from_millis(10));
        }
    }

    pub fn wait_ready(&self, w: &Workload) {
        let want = format!("READY {}", w.pid);
        let line = self.wait_line(w, "READY", |l| l.starts_with("READY "));
        assert_eq!(line, want, "{}: READY line names another pid", w.name);
    }

    /// Asks the workload to check itself (SIGUSR1) and waits for the next PASS line.
    pub fn check(&self, w: &mut Workload) {
        assert!(signal(w.pid, libc::SIGUSR1), "SIGUSR1 to {} failed", w.pid);
        let want = format!("PASS {}", w.passes + 1);
        self.wait_line(w, &want, |l| l == want);
        w.passes += 1;
    }

    /// Runs `ckpt args...` (with a time limit), capturing status, stdout and stderr.
    pub fn ckpt<S: AsRef<OsStr>>(&self, args: &[S]) -> CkptOutput {
        self.run_captured(Path::new(CKPT), args).1
    }

    /// Runs `sh -c SCRIPT CKPT args...` like [`Env::ckpt`], for a script that ends in
    /// `exec "$0" ...` (e.g. to set limits first, or to name the shell's own pid as `$$`).
    /// Returns the shell's pid, which is ckpt's once it execs, and the output.
    pub fn ckpt_sh(&self, script: &str, args: &[&OsStr]) -> (i32, CkptOutput) {
        let mut all: Vec<&OsStr> = vec![OsStr::new("-c"), OsStr::new(script), OsStr::new(CKPT)];
        all.extend(args);
        let (pid, mut out) = self.run_captured(Path::new("sh"), &all);
        // Shown as `ckpt (sh -c) SCRIPT CKPT args...` in messages.
        out.args[0] = "(sh -c)".into();
        (pid, out)
    }

    /// Runs `program args...` as [`Env::ckpt`] runs ckpt (e.g. ckpt through a symlink
    /// under another name).
    pub fn run_program<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> CkptOutput {
        self.run_captured(program, args).1
    }

    fn run_captured<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> (i32, CkptOutput) {
        let bg = self.spawn_captured(program, args, None);
        let pid = bg.child.id() as i32;
        let files = [bg.out_path.clone(), bg.err_path.clone()];
        let out = self.finish_bg(bg);
        for f in files {
            let _ = fs::remove_file(f);
        }
        (pid, out)
    }

    /// Starts `ckpt args...` in the background (e.g. `restore` without -d); the
    /// returned child is tracked and must be finished with [`Env::finish_bg`].
    pub fn ckpt_bg<S: AsRef<OsStr>>(&self, args: &[S]) -> BgCkpt {
        self.spawn_captured(Path::new(CKPT), args, None)
    }

    /// [`Env::ckpt_bg`], told to hold at `hold`'s point (see [`Hold`]).
    pub fn ckpt_bg_held<S: AsRef<OsStr>>(&self, hold: &Hold, args: &[S]) -> BgCkpt {
        self.spawn_captured(Path::new(CKPT), args, Some(hold))
    }

    /// [`Env::ckpt`], told to hold at `hold`'s point (in a process it leaves behind,
    /// such as a lazy pager, since the command itself must return).
    pub fn ckpt_held<S: AsRef<OsStr>>(&self, hold: &Hold, args: &[S]) -> CkptOutput {
        let bg = self.spawn_captured(Path::new(CKPT), args, Some(hold));
        let files = [bg.out_path.clone(), bg.err_path.clone()];
        let out = self.finish_bg(bg);
        for f in files {
            let _ = fs::remove_file(f);
        }
        out
    }

    /// Starts `program args...` with its stdout and stderr going to files of the temp
    /// dir, and tracks it.
    fn spawn_captured<S: AsRef<OsStr>>(
        &self,
        program: &Path,
        args: &[S],
        hold: Option<&Hold>,
    ) -> BgCkpt {
        let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_os_string()).collect();
        let tag = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
        let out_path = self.path().join(format!(".ckpt-{tag}.stdout"));
        let err_path = self.path().join(format!(".ckpt-{tag}.stderr"));
        let mut cmd = Command::new(program);
        if let Some(h) = hold {
            cmd.env("CKPT_TEST_HOLD", h.var());
        }
        let child = cmd
            .args(&args)
            .current_dir(self.path())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        self.track(child.id() as i32);
        BgCkpt {
            child,
            args,
            out_path,
            err_path,
        }
    }

    /// Waits (with the time limit) for a background ckpt to exit; kills it if it hangs.
    pub fn finish_bg(&self, mut bg: BgCkpt) -> CkptOutput {
        let pid = bg.child.id() as i32;
        let Some(status) = wait_child(&mut bg.child, CKPT_TIMEOUT) else {
            let state = proc_state(pid);
            let _ = bg.child.kill();
            let _ = bg.child.wait();
            self.untrack(pid);
            panic!(
                "ckpt {:?} hung for {:?} (state {state:?}); stderr so far:\n{}",
                bg.args,
                CKPT_TIMEOUT,
                fs::read_to_string(&bg.err_path).unwrap_or_default()
            );
        };
        self.untrack(pid);
        CkptOutput {
            args: bg.args,
            status,
            stdout: fs::read_to_string(&bg.out_path).unwrap_or_default(),
            stderr: fs::read_to_string(&bg.err_path).unwrap_or_default(),
        }
    }

    /// `ckpt dump -t PID -D DIR [extra...]`.
    pub fn dump(&self, pid: i32, dir: &Path, extra: &[&str]) -> CkptOutput {
        self.ckpt(&dump_args(pid, dir, extra))
    }

    /// [`Env::dump`] started in the background (see [`Env::ckpt_bg`]).
    pub fn dump_bg(&self, pid: i32, dir: &Path, extra: &[&str]) -> BgCkpt {
        self.ckpt_bg(&dump_args(pid, dir, extra))
    }

    /// `ckpt restore -D DIR -d`.
    pub fn restore_detached(&self, dir: &Path) -> CkptOutput {
        self.ckpt(&[
            OsStr::new("restore"),
            OsStr::new("-D"),
            dir.as_os_str(),
            OsStr::new("-d"),
        ])
    }

    /// [`Env::restore_detached`] in the background, held at `hold`'s point.
    pub fn restore_detached_held(&self, hold: &Hold, dir: &Path) -> BgCkpt {
        self.ckpt_bg_held(
            hold,
            &[
                OsStr::new("restore"),
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-d"),
            ],
        )
    }

    /// Reaps a workload that a dump killed; asserts it died.
    pub fn reap_dumped(&self, pid: i32) {
        match reap(pid, Duration::from_secs(10)) {
            Some(-1) => panic!("pid {pid} after dump: not our child (waitpid: ECHILD)"),
            Some(st) => {
                assert!(
                    libc::WIFSIGNALED(st),
                    "pid {pid} should have been killed by the dump, it {}",
                    describe_wait(st)
                );
                self.untrack(pid);
            }
            None => panic!(
                "pid {pid} still alive 10 s after a dump without --leave-running (state {:?})",
                proc_state(pid)
            ),
        }
    }

    /// Kills (SIGKILL) and reaps a process of ours.
    pub fn kill_and_reap(&self, pid: i32) {
        signal(pid, libc::SIGKILL);
        let st = reap(pid, Duration::from_secs(10));
        assert!(st.is_some(), "pid {pid} did not die on SIGKILL");
        self.untrack(pid);
    }

    /// After a failed restore: reaps any leftover zombie with `pid` that came to us,
    /// then asserts no process has that pid.
    pub fn assert_gone(&self, pid: i32) {
        let start = Instant::now();
        while exists(pid) && start.elapsed() < Duration::from_secs(2) {
            if let Some(st) = reap(pid, Duration::from_millis(50)) {
                if st != -1 {
                    continue;
                }
            }
        }
        assert!(
            !exists(pid),
            "a process with the dumped pid {pid} exists after the failed restore (state {:?}, exe {:?})",
            proc_state(pid),
            fs::read_link(format!("/proc/{pid}/exe")).ok()
        );
        self.untrack(pid);
    }

    /// For a workload that drops root: a restore opens the process's files as the
    /// process itself would (a root-opened file is not handed to another uid), so its
    /// output file must be one it could open: the temp dir searchable, the file writable
    /// by everyone.
    pub fn share_output(&self, w: &Workload) {
        fs::set_permissions(self.path(), fs::Permissions::from_mode(0o711)).unwrap();
        fs::set_permissions(&w.out, fs::Permissions::from_mode(0o666)).unwrap();
    }

    /// One checkpoint cycle: dump into `dir` (killing the workload), reap it, restore
    /// detached, and let the workload check itself (waits for the next PASS).
    pub fn cycle(&self, w: &mut Workload, dir: &Path) {
        self.cycle_with(w, dir, &[], |_| {});
    }

    /// `n` checkpoint cycles, each into a fresh `<tmp>/img<i>`, the dump run with
    /// `dump_args`; `inspect(i, dir)` looks at the images of cycle `i` before the restore.
    pub fn cycles(
        &self,
        w: &mut Workload,
        n: usize,
        dump_args: &[&str],
        mut inspect: impl FnMut(usize, &Path),
    ) {
        for i in 1..=n {
            let dir = self.subdir(&format!("img{i}"));
            self.cycle_with(w, &dir, dump_args, |d| inspect(i, d));
        }
    }

    /// `cycle` with extra dump arguments and a look at the images before the restore.
    pub fn cycle_with(
        &self,
        w: &mut Workload,
        dir: &Path,
        dump_args: &[&str],
        inspect: impl FnOnce(&Path),
    ) {
        self.dump(w.pid, dir, dump_args).ok();
        inspect(dir);
        self.restore_dumped(w, dir);
        self.check(w);
    }

    /// After a dump of `w` into `dir`: reaps it, restores it detached, and sees it run
    /// untraced.
    pub fn restore_dumped(&self, w: &Workload, dir: &Path) {
        self.reap_dumped(w.pid);
        assert!(!exists(w.pid), "pid {} still exists after reaping", w.pid);
        self.restore_detached(dir).ok();
        self.track(w.pid);
        assert_running_untraced(w.pid);
    }

    /// Waits until a restored process runs the workload's own program, untraced.
    /// With `bg` (a foreground `ckpt restore`), fails at once if that ckpt exits first.
    pub fn wait_restored(&self, w: &Workload, mut bg: Option<&mut BgCkpt>) {
        let start = Instant::now();
        loop {
            let exe = fs::read_link(format!("/proc/{}/exe", w.pid)).ok();
            let tracer = status_field(w.pid, "TracerPid");
            let state = proc_state(w.pid);
            if exe.as_deref() == Some(w.exe.as_path())
                && tracer.as_deref() == Some("0")
                && matches!(state, Some('R' | 'S' | 'D'))
            {
                return;
            }
            if let Some(bg) = bg.as_deref_mut() {
                if let Some(st) = bg.child.try_wait().unwrap() {
                    panic!(
                        "`ckpt {}` exited ({st}) before pid {} ran restored; stderr:\n{}",
                        bg.args
                            .iter()
                            .map(|a| a.to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(" "),
                        w.pid,
                        fs::read_to_string(&bg.err_path).unwrap_or_default()
                    );
                }
            }
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "pid {} not restored and running in time: exe {exe:?} tracer {tracer:?} state {state:?}",
                w.pid
            );
            sleep(Duration::from_millis(10));
        }
    }

    /// Mounts a tmpfs at `at` (created) with `opts`; unmounted when the test ends.
    pub fn mount_tmpfs(&self, at: &Path, opts: &str) {
        fs::create_dir_all(at).unwrap();
        let mut flags = MsFlags::empty();
        let mut rest = Vec::new();
        for o in opts.split(',') {
            if o == "ro" {
                flags |= MsFlags::MS_RDONLY;
            } else {
                rest.push(o);
            }
        }
        let data = rest.join(",");
        if let Err(e) = mount(Some("tmpfs"), at, Some("tmpfs"), flags, Some(data.as_str())) {
            panic!("mount tmpfs on {}: {e}", at.display());
        }
        self.mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(at.to_path_buf());
    }
}

/// SIGTERM makes a workload damage its state and check: it must notice (a FAIL line,
/// exit 1), so its PASS lines mean something.
pub fn notices_corruption(env: &Env, w: &Workload) {
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
    assert!(
        text.lines().any(|l| l.starts_with("FAIL ")),
        "{}: no FAIL line:\n{text}",
        w.name
    );
}

/// Starts the C workload `name`, checks it, dumps it with `--leave-running` and checks it
/// again (a dump must leave its state as it was), then three cycles; kills it.
pub fn leave_running_then_three_cycles(name: &str) {
    let env = Env::new();
    let mut w = env.start(name);
    env.check(&mut w);
    env.dump(w.pid, &env.subdir("running"), &["--leave-running"])
        .ok();
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
    env.kill_and_reap(w.pid);
}

/// The workload alone, no checkpoint: passes twice and exits 0 on SIGUSR2; a second
/// one notices corruption. If this fails, the workload or the machine is at fault.
pub fn sanity(start: impl Fn(&Env) -> Workload) {
    let env = Env::new();
    let mut w = start(&env);
    env.check(&mut w);
    env.check(&mut w);
    assert!(signal(w.pid, libc::SIGUSR2));
    let st = reap(w.pid, LINE_TIMEOUT).expect("did not exit on SIGUSR2");
    env.untrack(w.pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "{} on SIGUSR2: {}; output:\n{}",
        w.name,
        describe_wait(st),
        env.output(&w)
    );
    // A fresh temp dir (and output file) for the second one.
    let env = Env::new();
    let mut w = start(&env);
    env.check(&mut w);
    notices_corruption(&env, &w);
}

/// The control of a test that edits images: the untouched copy `good` restores and the
/// workload passes its check, so the refusal was about the edit. Kills it afterwards.
pub fn good_copy_restores(env: &Env, w: &mut Workload, good: &Path) {
    env.restore_detached(good).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    env.check(w);
    env.kill_and_reap(w.pid);
}

impl Default for Env {
    fn default() -> Self {
        Env::new()
    }
}

/// The arguments of `ckpt dump -t PID -D DIR [extra...]`.
pub fn dump_args(pid: i32, dir: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "dump".into(),
        "-t".into(),
        pid.to_string().into(),
        "-D".into(),
        dir.into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    args
}

/// A point where ckpt is told to stop and wait (`CKPT_TEST_HOLD`, sys/src/testhold.rs),
/// so that a test interrupts it exactly there rather than racing it.
pub struct Hold {
    point: String,
    marker: PathBuf,
}

impl Hold {
    /// A hold at `point`, its marker in `env`'s temp dir.
    pub fn new(env: &Env, point: &str) -> Hold {
        let tag = RUN_SEQ.fetch_add(1, Ordering::Relaxed);
        Hold {
            point: point.into(),
            marker: env.path().join(format!(".hold-{point}-{tag}")),
        }
    }

    pub fn var(&self) -> OsString {
        let mut v = OsString::from(format!("{}:", self.point));
        v.push(&self.marker);
        v
    }

    /// Waits until ckpt holds at the point; returns the pid of the process holding.
    pub fn reached(&self) -> i32 {
        let start = std::time::Instant::now();
        loop {
            if let Some(pid) = fs::read_to_string(&self.marker)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                return pid;
            }
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "ckpt never reached the hold point {}",
                self.point
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Lets ckpt go on.
    pub fn release(&self) {
        let _ = fs::remove_file(&self.marker);
    }
}

/// Numbers the captured output files of `ckpt` runs.
static RUN_SEQ: AtomicU64 = AtomicU64::new(0);

/// A `ckpt` running in the background.
pub struct BgCkpt {
    pub child: std::process::Child,
    args: Vec<OsString>,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        let pids = std::mem::take(&mut *self.pids.lock().unwrap_or_else(|e| e.into_inner()));
        for &pid in &pids {
            signal(pid, libc::SIGKILL);
        }
        for &pid in &pids {
            // Ours: reaped here. Not ours (e.g. a child of a killed ckpt): reaped by
            // whoever is its parent now; we only wait briefly for it to vanish.
            if reap(pid, Duration::from_secs(5)) == Some(-1) {
                let start = Instant::now();
                while exists(pid) && start.elapsed() < Duration::from_secs(2) {
                    sleep(Duration::from_millis(10));
                }
            }
        }
        let mounts = std::mem::take(&mut *self.mounts.lock().unwrap_or_else(|e| e.into_inner()));
        for m in mounts.iter().rev() {
            let _ = umount2(m, MntFlags::MNT_DETACH);
        }
        // TempDir's own drop removes the directory.
    }
}

// ---------------------------------------------------------------------------------
// Images

/// Files in an image directory whose names start with `prefix` and end in `.img`.
pub fn image_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            n.starts_with(prefix) && n.ends_with(".img")
        })
        .collect();
    v.sort();
    v
}

/// Total size of the image files starting with `prefix`.
pub fn image_bytes(dir: &Path, prefix: &str) -> u64 {
    image_files(dir, prefix)
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

/// Names of all files in a directory, for messages.
pub fn listing(dir: &Path) -> String {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| {
                    let len = e.metadata().map(|m| m.len()).unwrap_or(0);
                    format!("{} ({len} B)", e.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join(", ")
}

/// Copies an image directory (flat) to a new place.
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Writes inventory.img anew as `ImageSink::finish` does: header, the Inventory, then
/// the seal (xxh3 of every byte before it).
pub fn write_inventory(dir: &Path, inv: &pb::Inventory) {
    let path = dir.join(names::INVENTORY);
    let mut w = RecordWriter::new(Vec::new(), &path, Kind::Inventory).unwrap();
    w.write(inv).unwrap();
    let seal = pb::InventorySeal { xxh3: w.digest() };
    w.write(&seal).unwrap();
    let (bytes, _, _) = w.finish().unwrap();
    fs::write(&path, bytes).unwrap();
}

pub fn read_inventory(dir: &Path) -> pb::Inventory {
    ImageDir::open_unverified(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .inventory()
        .clone()
}

/// Replaces record file `name` with `bytes` and updates its size and checksum in a
/// resealed inventory. A file packed into procs.img (a tree's) becomes a file of its own,
/// which the reader takes as well.
pub fn replace_record_file(dir: &Path, name: &str, bytes: Vec<u8>, size: u64, xxh3: u64) {
    let mut inv = read_inventory(dir);
    if let Some(at) = inv.packed.iter().position(|f| f.name == name) {
        inv.packed.remove(at);
        inv.files.push(pb::ImageFile {
            name: name.into(),
            ..Default::default()
        });
    }
    let entry = inv
        .files
        .iter_mut()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("{name} not in the inventory of {}", dir.display()));
    entry.size = size;
    entry.xxh3 = xxh3;
    assert_eq!(bytes.len() as u64, size);
    fs::write(dir.join(name), bytes).unwrap();
    write_inventory(dir, &inv);
}

/// Rewrites files-PID.img of `dir` with `edit` applied to its fd records, resealed: the
/// set still verifies, so a refusal is about the content.
pub fn edit_fds(dir: &Path, pid: i32, edit: impl FnOnce(&mut Vec<pb::Fd>)) {
    let name = names::files(pid);
    let mut fds: Vec<pb::Fd> = {
        let d = ImageDir::open(dir).unwrap();
        let mut r = d.records(&name, Kind::Files).unwrap();
        r.rest("Fd").unwrap()
    };
    edit(&mut fds);
    let mut w = RecordWriter::new(Vec::new(), dir.join(&name), Kind::Files).unwrap();
    for f in &fds {
        w.write(f).unwrap();
    }
    let (bytes, size, xxh3) = w.finish().unwrap();
    replace_record_file(dir, &name, bytes, size, xxh3);
    ImageDir::open(dir).unwrap_or_else(|e| panic!("rewritten {name} does not verify: {e}"));
}

/// Rewrites mm-PID.img of `dir` with `edit` applied to its MmInfo and VMAs, resealed.
pub fn edit_mm(dir: &Path, pid: i32, edit: impl FnOnce(&mut pb::MmInfo, &mut Vec<pb::Vma>)) {
    let name = names::mm(pid);
    let (mut mm, mut vmas): (pb::MmInfo, Vec<pb::Vma>) = {
        let d = ImageDir::open(dir).unwrap();
        let mut r = d.records(&name, Kind::Mm).unwrap();
        (r.expect("MmInfo").unwrap(), r.rest("Vma").unwrap())
    };
    edit(&mut mm, &mut vmas);
    let mut w = RecordWriter::new(Vec::new(), dir.join(&name), Kind::Mm).unwrap();
    w.write(&mm).unwrap();
    for v in &vmas {
        w.write(v).unwrap();
    }
    let (bytes, size, xxh3) = w.finish().unwrap();
    replace_record_file(dir, &name, bytes, size, xxh3);
    ImageDir::open(dir).unwrap_or_else(|e| panic!("rewritten {name} does not verify: {e}"));
}

/// core-PID.img of `dir`: the ProcessCore and every ThreadCore.
pub fn read_core(dir: &Path, pid: i32) -> (pb::ProcessCore, Vec<pb::ThreadCore>) {
    let d = ImageDir::open(dir).unwrap();
    let mut r = d.records(&names::core(pid), Kind::Core).unwrap();
    (
        r.expect("ProcessCore").unwrap(),
        r.rest("ThreadCore").unwrap(),
    )
}

/// Rewrites core-PID.img of `dir` with `edit` applied to its ThreadCore records, resealed.
pub fn edit_threads(dir: &Path, pid: i32, edit: impl FnOnce(&mut Vec<pb::ThreadCore>)) {
    let name = names::core(pid);
    let (core, mut threads) = read_core(dir, pid);
    edit(&mut threads);
    let mut w = RecordWriter::new(Vec::new(), dir.join(&name), Kind::Core).unwrap();
    w.write(&core).unwrap();
    for t in &threads {
        w.write(t).unwrap();
    }
    let (bytes, size, xxh3) = w.finish().unwrap();
    replace_record_file(dir, &name, bytes, size, xxh3);
    ImageDir::open(dir).unwrap_or_else(|e| panic!("rewritten {name} does not verify: {e}"));
}

// ---------------------------------------------------------------------------------
// Lazy restore

/// Pids of the lazy pagers (`ckpt-pager`) serving the images in `dir`.
pub fn pagers_of(dir: &Path) -> Vec<i32> {
    let want = dir.as_os_str().as_bytes();
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        let cmd = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if comm.trim() == "ckpt-pager" && cmd.split(|&b| b == 0).any(|a| a == want) {
            out.push(pid);
        }
    }
    out
}

/// Whether `pid` holds a userfaultfd.
pub fn has_userfaultfd(pid: i32) -> bool {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten().any(|e| {
                fs::read_link(e.path())
                    .map(|l| l.to_string_lossy().contains("userfaultfd"))
                    .unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

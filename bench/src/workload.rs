//! The workloads: `memfill` and `threads` (bench/workloads/*.c, compiled at run time with
//! `cc`) and `sleep 1000`. Each runs as a child of the bench with stdin = /dev/null and stdout and
//! stderr appended to a regular file, and no other fd (std passes only 0, 1 and 2, and
//! `main` marks every inherited fd above 2 close-on-exec): ckpt refuses pipes.

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits::Region;

/// The workloads' sources, built into the bench so the binary is self-contained.
pub const MEMFILL_C: &str = include_str!("../workloads/memfill.c");
pub const THREADS_C: &str = include_str!("../workloads/threads.c");
pub const RING_C: &str = include_str!("../workloads/ring.c");

/// Compile memfill into `dir` with the system `cc`; returns the binary's path.
pub fn compile_memfill(dir: &Path) -> Result<PathBuf> {
    compile(dir, "memfill", MEMFILL_C, &[])
}

/// Compile the threads workload into `dir`.
pub fn compile_threads(dir: &Path) -> Result<PathBuf> {
    compile(dir, "threads", THREADS_C, &["-pthread"])
}

/// Compile the process-tree workload into `dir`.
pub fn compile_ring(dir: &Path) -> Result<PathBuf> {
    compile(dir, "ring", RING_C, &[])
}

/// Compile another workload's source into `dir`.
pub fn compile_named(dir: &Path, name: &str, source: &str) -> Result<PathBuf> {
    compile(dir, name, source, &[])
}

fn compile(dir: &Path, name: &str, source: &str, extra: &[&str]) -> Result<PathBuf> {
    let src = dir.join(format!("{name}.c"));
    let bin = dir.join(name);
    std::fs::write(&src, source)?;
    let out = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&bin)
        .arg(&src)
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run cc (a C compiler is needed for the {name} workload)"))?;
    if !out.status.success() {
        bail!(
            "cc {name}.c failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(bin)
}

/// A process the bench must kill and reap whatever happens: the workload it started (a
/// `Child`) or the restored process (a reparented pid, reaped as subreaper).
pub struct Proc {
    pub pid: i32,
    child: Option<Child>,
    reaped: bool,
}

impl Proc {
    /// A child the bench started.
    pub fn child(c: Child) -> Proc {
        Proc {
            pid: c.id() as i32,
            child: Some(c),
            reaped: false,
        }
    }

    pub fn adopt(pid: i32) -> Proc {
        Proc {
            pid,
            child: None,
            reaped: false,
        }
    }

    /// Wait for it to exit (it was killed by ckpt dump, or by `kill`).
    pub fn reap(&mut self) -> Result<()> {
        if self.reaped {
            return Ok(());
        }
        match &mut self.child {
            Some(c) => {
                c.wait().context("wait for workload")?;
            }
            None => {
                waitpid(Pid::from_raw(self.pid), None)
                    .with_context(|| format!("waitpid {}", self.pid))?;
            }
        }
        self.reaped = true;
        Ok(())
    }

    /// SIGKILL, then reap.
    pub fn kill_reap(&mut self) -> Result<()> {
        if !self.reaped {
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        self.reap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.kill_reap();
    }
}

fn log_file(out: &Path) -> Result<(File, File)> {
    let f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(out)
        .with_context(|| format!("open {}", out.display()))?;
    let g = f.try_clone()?;
    Ok((f, g))
}

/// Start `memfill MIB SEED TICKFILE` with its output appended to `out`; wait for READY.
pub fn start_memfill(
    bin: &Path,
    mib: u64,
    seed: u64,
    tick: &Path,
    out: &Path,
    timeout: Duration,
) -> Result<(Proc, Region)> {
    let _ = std::fs::remove_file(out);
    std::fs::write(tick, [0u8; 16]).with_context(|| format!("create {}", tick.display()))?;
    let args = [
        mib.to_string(),
        seed.to_string(),
        tick.display().to_string(),
    ];
    let (p, line) = start_until_ready(bin, &args, out, timeout)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first() != Some(&"READY") || f.len() != 4 {
        bail!("memfill: {line}");
    }
    let addr = usize::from_str_radix(f[2], 16).context("memfill READY addr")?;
    let len: usize = f[3].parse().context("memfill READY len")?;
    if f[1] != p.pid.to_string() || len as u64 != mib << 20 {
        bail!("memfill: unexpected {line}");
    }
    Ok((
        p,
        Region {
            pid: f[1].parse()?,
            addr,
            len,
        },
    ))
}

/// Start `threads N` with its output appended to `out`; wait for READY.
pub fn start_threads(bin: &Path, n: usize, out: &Path, timeout: Duration) -> Result<Proc> {
    let _ = std::fs::remove_file(out);
    let (p, line) = start_until_ready(bin, &[n.to_string()], out, timeout)?;
    if line != format!("READY {} {n}", p.pid) {
        bail!("threads: {line}");
    }
    Ok(p)
}

/// Start `ring N [HEAP_MIB]` with its output appended to `out`; wait for READY. Returns
/// it and the pids of its children.
pub fn start_ring(
    bin: &Path,
    n: usize,
    heap_mib: u64,
    out: &Path,
    timeout: Duration,
) -> Result<(Proc, Vec<i32>)> {
    let _ = std::fs::remove_file(out);
    let args = [n.to_string(), heap_mib.to_string()];
    let (p, line) = start_until_ready(bin, &args, out, timeout)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != n + 2 || f[0] != "READY" || f[1] != p.pid.to_string() {
        bail!("ring: {line}");
    }
    let children = f[3..]
        .iter()
        .map(|x| x.parse().context("ring READY pid"))
        .collect::<Result<_>>()?;
    Ok((p, children))
}

/// Reaps `pids` (the members of a tree whose root died: they come to the bench, its
/// subreaper) until none is left; a pid that is not the bench's child yet (its parent
/// still exiting) is waited for.
pub fn reap_all(pids: &[i32], timeout: Duration) -> Result<()> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
    let t0 = Instant::now();
    let mut left: Vec<i32> = pids.to_vec();
    while !left.is_empty() {
        left.retain(
            |&p| match waitpid(Pid::from_raw(p), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => true,
                Ok(_) => false,
                Err(_) => alive(p),
            },
        );
        if t0.elapsed() > timeout {
            bail!("tree members {left:?} still exist after {timeout:?}");
        }
        if !left.is_empty() {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    Ok(())
}

/// The summed Pss of `pids` in KiB (/proc/PID/smaps_rollup), None if one is unreadable.
pub fn summed_pss(pids: &[i32]) -> Option<u64> {
    pids.iter()
        .map(|p| {
            let s = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok()?;
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// Starts `bin args...` with its output appended to `out`; returns it with its READY (or
/// FAIL) line.
pub fn start_until_ready(
    bin: &Path,
    args: &[String],
    out: &Path,
    timeout: Duration,
) -> Result<(Proc, String)> {
    let (o, e) = log_file(out)?;
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .with_context(|| format!("start {}", bin.display()))?;
    let mut p = Proc {
        pid: child.id() as i32,
        child: Some(child),
        reaped: false,
    };
    let line = wait_line(out, 0, timeout, &mut p, |l| {
        l.starts_with("READY") || l.starts_with("FAIL")
    })?;
    Ok((p, line))
}

/// Ask the (restored) workload to verify itself (memfill: all its pages; threads: every
/// thread wakes with its tid): SIGUSR1, then its PASS/FAIL line.
pub fn verify_pass(p: &mut Proc, out: &Path, timeout: Duration) -> Result<String> {
    let before = count_lines(out);
    kill(Pid::from_raw(p.pid), Signal::SIGUSR1).context("SIGUSR1 to the restored process")?;
    wait_line(out, before, timeout, p, |l| {
        l.starts_with("PASS") || l.starts_with("FAIL")
    })
}

/// Make memfill tick (SIGUSR2, then its TICKING line): from now on it stamps the time
/// into its tick file every 200 us, the first stamp after each `clear_first_tick` kept.
pub fn start_ticking(p: &mut Proc, out: &Path, timeout: Duration) -> Result<()> {
    let before = count_lines(out);
    kill(Pid::from_raw(p.pid), Signal::SIGUSR2).context("SIGUSR2 to memfill")?;
    wait_line(out, before, timeout, p, |l| l == "TICKING")?;
    Ok(())
}

/// Zero the tick file's first stamp: the next tick (the restored process's first) sets it.
pub fn clear_first_tick(tick: &Path) -> Result<()> {
    let f = OpenOptions::new()
        .write(true)
        .open(tick)
        .with_context(|| format!("open {}", tick.display()))?;
    f.write_all_at(&[0u8; 8], 0)
        .with_context(|| format!("write {}", tick.display()))
}

/// The first stamp (CLOCK_MONOTONIC ns) since `clear_first_tick`, waiting for it.
pub fn first_tick(tick: &Path, p: &mut Proc, timeout: Duration) -> Result<u64> {
    let f = File::open(tick).with_context(|| format!("open {}", tick.display()))?;
    let t0 = Instant::now();
    loop {
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 0)
            .with_context(|| format!("read {}", tick.display()))?;
        let v = u64::from_le_bytes(b);
        if v != 0 {
            return Ok(v);
        }
        if !alive(p.pid) {
            let _ = p.reap();
            bail!("pid {} exited before it ticked", p.pid);
        }
        if t0.elapsed() > timeout {
            bail!("pid {}: no tick in {} s", p.pid, timeout.as_secs());
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// The bench's children running `ckpt` other than `restored`: a `restore --lazy -d`'s
/// pager (orphaned when ckpt exits, it comes to the bench, the subreaper). Not by its name
/// `ckpt-pager`: it may not have set it yet.
pub fn pagers(ckpt: &Path, restored: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
        {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            if pid != restored && exe.as_deref() == Some(ckpt) {
                out.push(pid);
            }
        }
    }
    out
}

/// Wait for a pager (a child of the bench) to exit, killing it after `timeout`; Ok if it
/// exited 0.
pub fn wait_pager(pid: i32, timeout: Duration) -> Result<()> {
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(timeout) {
            // Still our unreaped child: the pid cannot have been reused.
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    });
    let st = waitpid(Pid::from_raw(pid), None).with_context(|| format!("waitpid pager {pid}"));
    let _ = tx.send(());
    let _ = watchdog.join();
    match st? {
        nix::sys::wait::WaitStatus::Exited(_, 0) => Ok(()),
        other => bail!("pager {pid} ended with {other:?}"),
    }
}

fn count_lines(out: &Path) -> usize {
    std::fs::read_to_string(out)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Poll `out` until a complete line after the first `skip` lines satisfies `want`.
fn wait_line(
    out: &Path,
    skip: usize,
    timeout: Duration,
    p: &mut Proc,
    want: impl Fn(&str) -> bool,
) -> Result<String> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(out).unwrap_or_default();
        // Only complete lines (a line is written by one write(2), but be safe).
        let complete = match text.rfind('\n') {
            Some(i) => &text[..=i],
            None => "",
        };
        if let Some(l) = complete.lines().skip(skip).find(|l| want(l)) {
            return Ok(l.to_string());
        }
        if !alive(p.pid) {
            let _ = p.reap();
            bail!(
                "pid {} exited before answering (output: {})",
                p.pid,
                text.trim()
            );
        }
        if t0.elapsed() > timeout {
            bail!("pid {}: no answer in {} s", p.pid, timeout.as_secs());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The pid exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(proc_stat(pid), Some((_, s, _)) if s != 'Z' && s != 'X')
}

/// (comm, state, ppid) from /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<(String, char, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_string();
    let mut rest = s[close + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, state, ppid))
}

/// Start `sleep 1000` with its output appended to `out`; wait until it sleeps.
pub fn start_sleep(out: &Path, timeout: Duration) -> Result<Proc> {
    let (o, e) = log_file(out)?;
    let child = Command::new("sleep")
        .arg("1000")
        .stdin(Stdio::null())
        .stdout(o)
        .stderr(e)
        .spawn()
        .context("start sleep")?;
    let mut p = Proc {
        pid: child.id() as i32,
        child: Some(child),
        reaped: false,
    };
    let t0 = Instant::now();
    loop {
        match proc_stat(p.pid) {
            Some((comm, 'S', _)) if comm == "sleep" => return Ok(p),
            Some((_, 'Z', _)) | None => {
                let _ = p.reap();
                bail!("sleep exited at once");
            }
            _ => {}
        }
        if t0.elapsed() > timeout {
            bail!("sleep did not start sleeping");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The restored `sleep` is back: same pid, a child of the bench, still sleeping a little
/// later (not exited, not spinning).
pub fn verify_sleep(pid: i32) -> Result<String> {
    std::thread::sleep(Duration::from_millis(30));
    match proc_stat(pid) {
        Some((comm, 'S', ppid)) if comm == "sleep" && ppid == std::process::id() as i32 => {
            Ok("PASS".into())
        }
        other => bail!("FAIL restored sleep: /proc/{pid}/stat (comm, state, ppid) = {other:?}"),
    }
}

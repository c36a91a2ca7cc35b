//! Running one `ckpt` command and measuring its wall time and peak RSS.
//!
//! Peak RSS comes from the kernel's accounting of waited-for children: `getrusage
//! (RUSAGE_CHILDREN).ru_maxrss` is the largest `maxrss` of all the children a process has
//! reaped. To get it per command, each command runs under a fresh copy of this binary in
//! wrapper mode (`ckpt-bench __measure ...`) whose only child is that `ckpt`: the wrapper
//! spawns it, waits, and reports `RUSAGE_CHILDREN` — exactly ckpt's peak.
//!
//! Why not spawn ckpt from the bench directly: std spawns through `posix_spawn`, i.e.
//! `clone(CLONE_VM | CLONE_VFORK)`, and at `execve` the kernel records the high-water RSS of
//! the mm being left (the *parent's*, shared by the vfork child) into the child's `maxrss`.
//! A bench that has just held 4 GiB for the pread floor would then see every ckpt peak at
//! 4 GiB. The wrapper's own mm is small (it reports its VmHWM as `wrapper_rss_kib`, a floor
//! under every figure: it is charged to ckpt the same way), so what it measures is ckpt's.
//!
//! Time is wall clock from just before the spawn to the return of `wait`, measured inside
//! the wrapper, so the wrapper's own start-up is not counted; ckpt's exec is.

use anyhow::{bail, Context, Result};
use nix::sys::resource::{getrusage, UsageWho};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The argument that puts the binary in wrapper mode (first argument, never shown in help).
pub const WRAPPER_ARG: &str = "__measure";

/// What the wrapper reports on its stdout, one JSON line.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct Measured {
    /// Exit code, if the command exited.
    pub code: Option<i32>,
    /// Signal, if the command was killed.
    pub signal: Option<i32>,
    /// Wall time from spawn to reap, ms.
    pub wall_ms: f64,
    /// CLOCK_MONOTONIC at the spawn, ns: the origin for what happens after the command
    /// returns (a lazily restored process running again, its pager finishing).
    #[serde(default)]
    pub start_mono_ns: u64,
    /// Peak RSS of the command (RUSAGE_CHILDREN.ru_maxrss), KiB.
    pub maxrss_kib: i64,
    /// High-water RSS of the wrapper's own memory (VmHWM) at spawn time: the floor of
    /// `maxrss_kib`, since the kernel charges it to the child at exec.
    pub wrapper_rss_kib: i64,
    /// The wrapper killed the command after its timeout.
    pub timed_out: bool,
}

/// Wrapper mode: `__measure TIMEOUT_MS -- PROG ARGS...`. The command's stdout and stderr go
/// to the wrapper's stderr (a log file chosen by the bench); the result goes to stdout.
pub fn wrapper_main(args: &[OsString]) -> i32 {
    match wrapper(args) {
        Ok(m) => {
            println!("{}", serde_json::to_string(&m).expect("serialize"));
            0
        }
        Err(e) => {
            eprintln!("ckpt-bench wrapper: {e:#}");
            2
        }
    }
}

fn wrapper(args: &[OsString]) -> Result<Measured> {
    let timeout_ms: u64 = args
        .first()
        .and_then(|a| a.to_str())
        .and_then(|a| a.parse().ok())
        .context("wrapper: bad timeout")?;
    if args.get(1).map(|a| a.as_os_str()) != Some("--".as_ref()) || args.len() < 3 {
        bail!("wrapper: usage: {WRAPPER_ARG} TIMEOUT_MS -- PROG ARGS...");
    }
    let prog = &args[2];
    let rest = &args[3..];
    // Not RUSAGE_SELF: that includes what the bench's mm had when it spawned the wrapper.
    let wrapper_rss_kib = vm_hwm_kib().unwrap_or(-1);
    let out = std::io::stderr().as_fd().try_clone_to_owned()?;
    let err = out.try_clone()?;

    let start_mono_ns = mono_ns();
    let t0 = Instant::now();
    let mut child = Command::new(prog)
        .args(rest)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .with_context(|| format!("spawn {}", prog.to_string_lossy()))?;
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if let Err(mpsc::RecvTimeoutError::Timeout) =
            rx.recv_timeout(Duration::from_millis(timeout_ms))
        {
            let _ = kill(pid, Signal::SIGKILL);
            true
        } else {
            false
        }
    });
    let status = child.wait()?;
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let _ = tx.send(());
    let timed_out = watchdog.join().unwrap_or(false);
    let maxrss_kib = getrusage(UsageWho::RUSAGE_CHILDREN)?.max_rss();
    Ok(Measured {
        code: status.code(),
        signal: status.signal(),
        wall_ms,
        start_mono_ns,
        maxrss_kib,
        wrapper_rss_kib,
        timed_out,
    })
}

/// CLOCK_MONOTONIC now, ns (the clock the workload stamps its ticks with).
pub fn mono_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// VmHWM of this process, KiB.
fn vm_hwm_kib() -> Option<i64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    l.split_whitespace().nth(1)?.parse().ok()
}

/// The outcome of one ckpt command as the bench sees it.
#[derive(Debug, Clone)]
pub struct CmdResult {
    pub m: Measured,
    /// `None` when the command succeeded; else its error line.
    pub error: Option<String>,
}

/// Run `ckpt ARGS` under the wrapper, its output going to `log`.
pub fn run_measured(
    ckpt: &Path,
    args: &[&str],
    log: &Path,
    timeout: Duration,
) -> Result<CmdResult> {
    let me = std::env::current_exe().context("current_exe")?;
    let logf = File::create(log).with_context(|| format!("create {}", log.display()))?;
    let out = Command::new(me)
        .arg(WRAPPER_ARG)
        .arg(timeout.as_millis().to_string())
        .arg("--")
        .arg(ckpt)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(logf))
        .output()
        .context("run the measuring wrapper")?;
    let line = String::from_utf8_lossy(&out.stdout);
    let m: Measured = serde_json::from_str(line.trim()).with_context(|| {
        format!(
            "wrapper failed ({}): {}",
            out.status,
            last_error_line(log).unwrap_or_default()
        )
    })?;
    let error = if m.timed_out {
        Some(format!("timed out after {} s", timeout.as_secs()))
    } else if m.code == Some(0) {
        None
    } else {
        let what = match (m.code, m.signal) {
            (Some(c), _) => format!("exit {c}"),
            (None, Some(s)) => format!("killed by signal {s}"),
            _ => "failed".into(),
        };
        Some(match last_error_line(log) {
            Some(l) => format!("{what}: {l}"),
            None => what,
        })
    };
    Ok(CmdResult { m, error })
}

/// The most telling line of a ckpt log: its `error:` line, else the last non-empty one.
pub fn last_error_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    let lines: Vec<String> = text
        .lines()
        .map(strip_ansi)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.contains("error"))
        .or(lines.last())
        .map(|l| l.trim().to_string())
}

/// Remove ANSI colour escapes (`ESC [ ... letter`).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Timings that ckpt logs with `-vv`: every field named `ms` or `*_ms`, keyed by the log
/// message (plus the field name when it is not plain `ms`), in log order.
pub fn phases(log: &Path) -> Vec<(String, f64)> {
    let Ok(text) = std::fs::read_to_string(log) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for line in text.lines().map(strip_ansi) {
        let mut toks = line.split_whitespace().peekable();
        // timestamp, level, then the message words up to the first key=value.
        let _ts = toks.next();
        match toks.next() {
            Some("INFO" | "DEBUG" | "TRACE" | "WARN") => {}
            _ => continue,
        }
        let mut msg = Vec::new();
        while let Some(t) = toks.peek() {
            if t.contains('=') {
                break;
            }
            msg.push(*t);
            toks.next();
        }
        for t in toks {
            let Some((k, v)) = t.split_once('=') else {
                continue;
            };
            if k != "ms" && !k.ends_with("_ms") {
                continue;
            }
            if let Ok(v) = v.parse::<f64>() {
                let name = if k == "ms" {
                    msg.join(" ")
                } else {
                    format!("{} ({k})", msg.join(" "))
                };
                out.push((name, v));
            }
        }
    }
    out
}

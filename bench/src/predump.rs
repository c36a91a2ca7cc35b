//! The pre-dump row: a workload keeps rewriting part of its memory (`rewriter`, ~50 MiB/s);
//! `ckpt dump --pre-dump` copies it while it runs, then after a second `ckpt dump
//! --prev-images-dir` freezes it only for what it wrote since. Measured per round: the
//! frozen time of both dumps (ckpt's own `frozen_ms`), what the final dump copied, and
//! the workload's time per MiB written during the pre-dump against before it (the cost
//! of write tracking and of sharing the CPUs with the copy).

use crate::measure;
use crate::stats::{series, show, verdict, Stat};
use crate::workload::{self, Proc};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const REWRITER_C: &str = include_str!("../workloads/rewriter.c");
/// MiB/s the workload rewrites.
pub const RATE: u64 = 50;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Round {
    pub pre_dump_frozen_ms: Option<f64>,
    pub pre_dump_ms: Option<f64>,
    pub final_frozen_ms: Option<f64>,
    pub final_mib: Option<f64>,
    /// MiB/s the workload rewrote during the pre-dump against before it: 1 minus their
    /// ratio, in percent (its pace is 50 MiB/s; sleeps absorb some of the cost).
    pub slowdown_pct: Option<f64>,
    /// Time spent writing a MiB during the pre-dump / before it, minus 1, in percent: the
    /// raw cost per written page (write faults on protected pages, a shared machine).
    pub write_cost_pct: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PredumpResult {
    pub bytes: u64,
    pub rounds: Vec<Round>,
}

/// The number after `key=` on the log's "dump done" line.
fn done_field(log: &Path, key: &str) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .map(measure::strip_ansi)
        .find(|l| l.contains("dump done"))?;
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

fn read_stats(path: &Path) -> Result<(u64, u64)> {
    let b = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    if b.len() < 16 {
        bail!("{}: short", path.display());
    }
    let u = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
    Ok((u(0), u(8)))
}

/// ns per MiB written between two readings.
fn per_mib(a: (u64, u64), b: (u64, u64)) -> Option<f64> {
    let mib = b.0.checked_sub(a.0)?;
    (mib > 0).then(|| (b.1 - a.1) as f64 / mib as f64)
}

pub fn bench(
    ckpt: &Path,
    work: &Path,
    bytes: u64,
    runs: usize,
    timeout: Duration,
    log_dir: Option<&Path>,
) -> Result<PredumpResult> {
    let bin = workload::compile_named(work, "rewriter", REWRITER_C)?;
    let mut res = PredumpResult {
        bytes,
        rounds: Vec::new(),
    };
    for i in 0..runs {
        let mut r = Round::default();
        if let Err(e) = round(ckpt, work, &bin, bytes, timeout, &mut r) {
            r.error = Some(format!("{e:#}"));
        }
        crate::progress(&format!(
            "pre-dump {} run {}/{runs}: pre-dump frozen {:?} ms, final frozen {:?} ms ({:?} MiB), slowdown {:?} %{}",
            crate::size_name(bytes),
            i + 1,
            r.pre_dump_frozen_ms,
            r.final_frozen_ms,
            r.final_mib.map(|m| m.round()),
            r.slowdown_pct.map(|s| (s * 10.0).round() / 10.0),
            r.error.as_deref().map(|e| format!("; error: {e}")).unwrap_or_default()
        ));
        for d in ["pre", "fin"] {
            let _ = std::fs::remove_dir_all(work.join(d));
        }
        if let Some(dir) = log_dir {
            for l in ["predump.log", "final.log"] {
                let _ = std::fs::copy(work.join(l), dir.join(format!("run{}-{l}", i + 1)));
            }
        }
        res.rounds.push(r);
    }
    Ok(res)
}

fn round(
    ckpt: &Path,
    work: &Path,
    bin: &Path,
    bytes: u64,
    timeout: Duration,
    r: &mut Round,
) -> Result<()> {
    let stats = work.join("rewriter.stats");
    std::fs::write(&stats, [0u8; 16])?;
    let args = [
        (bytes >> 20).to_string(),
        RATE.to_string(),
        stats.display().to_string(),
    ];
    let out = work.join("rewriter.out");
    let _ = std::fs::remove_file(&out);
    let (mut p, _): (Proc, String) = workload::start_until_ready(bin, &args, &out, timeout)?;
    // Baseline: as long as a pre-dump takes, roughly.
    let s0 = read_stats(&stats)?;
    std::thread::sleep(Duration::from_secs(2));
    let s1 = read_stats(&stats)?;
    let base = per_mib(s0, s1);
    let base_rate = (s1.0 - s0.0) as f64 / 2.0;
    let pid = p.pid.to_string();
    let pre: PathBuf = work.join("pre");
    let fin: PathBuf = work.join("fin");
    let log = work.join("predump.log");
    // As every timed step of the bench: memory this VM handed back to the host costs a
    // host fault per page when taken again (`limits::prefault`).
    crate::limits::prefault(bytes)?;
    let s1 = read_stats(&stats)?;
    let t_pre = Instant::now();
    let m = measure::run_measured(
        ckpt,
        &[
            "-v",
            "dump",
            "--pre-dump",
            "-t",
            &pid,
            "-D",
            pre.to_str().unwrap_or(""),
        ],
        &log,
        timeout,
    )?;
    let s2 = read_stats(&stats)?;
    if let Some(e) = m.error {
        bail!("pre-dump: {e}");
    }
    let secs = t_pre.elapsed().as_secs_f64();
    r.pre_dump_ms = Some(secs * 1e3);
    r.pre_dump_frozen_ms = done_field(&log, "frozen_ms");
    if let (Some(b), Some(d)) = (base, per_mib(s1, s2)) {
        r.write_cost_pct = Some((d / b - 1.0) * 100.0);
    }
    if base_rate > 0.0 {
        let during = (s2.0 - s1.0) as f64 / secs;
        r.slowdown_pct = Some((1.0 - during / base_rate) * 100.0);
    }
    // The workload runs on a while between the two.
    std::thread::sleep(Duration::from_millis(500));
    crate::limits::prefault(bytes / 2)?;
    let log = work.join("final.log");
    let m = measure::run_measured(
        ckpt,
        &[
            "-v",
            "dump",
            "-t",
            &pid,
            "-D",
            fin.to_str().unwrap_or(""),
            "--prev-images-dir",
            "../pre",
        ],
        &log,
        timeout,
    )?;
    if let Some(e) = m.error {
        p.kill_reap()?;
        bail!("final dump: {e}");
    }
    p.reap()?;
    r.final_frozen_ms = done_field(&log, "frozen_ms");
    r.final_mib = done_field(&log, "mib");
    Ok(())
}

/// The lines printed under the table.
pub fn render(res: &PredumpResult) -> String {
    let ser = |f: fn(&Round) -> Option<f64>| series(&res.rounds, f);
    let show = |s: Option<Stat>| show(s, 1);
    let mut o = format!(
        "\npre-dump, {} rewriting ~{RATE} MiB/s (median [min-max] of {} rounds):\n",
        crate::size_name(res.bytes),
        res.rounds.len()
    );
    let final_frozen = ser(|r| r.final_frozen_ms);
    let slow = ser(|r| r.slowdown_pct);
    o += &format!(
        "  final dump frozen ms      {:<24} target <= 60 {}\n",
        show(final_frozen),
        verdict(final_frozen.map(|s| s.median <= 60.0))
    );
    o += &format!(
        "  final dump MiB copied     {}\n",
        show(ser(|r| r.final_mib))
    );
    o += &format!(
        "  pre-dump frozen ms        {}\n",
        show(ser(|r| r.pre_dump_frozen_ms))
    );
    o += &format!(
        "  pre-dump wall ms          {}\n",
        show(ser(|r| r.pre_dump_ms))
    );
    o += &format!(
        "  workload slowdown %       {:<24} target <= 10 {} (MiB/s rewritten)\n",
        show(slow),
        verdict(slow.map(|s| s.median <= 10.0))
    );
    o += &format!(
        "  write cost per MiB %      {}\n",
        show(ser(|r| r.write_cost_pct))
    );
    for (i, r) in res.rounds.iter().enumerate() {
        if let Some(e) = &r.error {
            o += &format!("  round {}: {e}\n", i + 1);
        }
    }
    o
}

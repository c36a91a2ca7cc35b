//! The migration row: the pre-dump workload (`rewriter`, ~50 MiB/s rewritten) moved
//! with `ckpt migrate` to a `ckpt haul serve` on loopback, once stop-and-copy and once
//! with `--pre-copy --max-downtime 100` (the target), once with `--post-copy`, in the
//! same run; and a plain TCP copy of as many bytes over the
//! same loopback as the yardstick for the total time. Downtime and totals are
//! migrate's own report (from the final freeze to the copy running there).

use crate::stats::{series, show, verdict, Stat};
use crate::workload::{self, Proc};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone, Serialize)]
pub struct Run {
    pub plain_copy_ms: Option<f64>,
    pub stop_total_ms: Option<f64>,
    pub stop_downtime_ms: Option<f64>,
    pub pre_total_ms: Option<f64>,
    pub pre_downtime_ms: Option<f64>,
    pub pre_rounds: Option<f64>,
    /// `--post-copy`: the downtime is to the copy running lazily there; all-in from
    /// then to its last page there.
    pub post_total_ms: Option<f64>,
    pub post_downtime_ms: Option<f64>,
    pub post_all_in_ms: Option<f64>,
    /// MB/s of the encrypted link while sending (stop-and-copy's one round).
    pub link_mb_s: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct HaulResult {
    pub bytes: u64,
    pub runs: Vec<Run>,
}

/// `ckpt haul serve` on 127.0.0.1, killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(ckpt: &Path, work: &Path, key: &Path) -> Result<Server> {
    let dir = work.join("haul-in");
    std::fs::create_dir_all(&dir)?;
    let mut child = Command::new(ckpt)
        .args(["haul", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir)
        .arg("--key-file")
        .arg(key)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(work.join("haul-serve.out"))?)
        .stderr(std::fs::File::create(work.join("haul-serve.err"))?)
        .spawn()
        .context("start ckpt haul serve")?;
    let t = Instant::now();
    let line = loop {
        let text = std::fs::read_to_string(work.join("haul-serve.out")).unwrap_or_default();
        if let Some(l) = text.lines().find(|l| l.starts_with("listening on ")) {
            break l.to_string();
        }
        if t.elapsed() > Duration::from_secs(20) || child.try_wait()?.is_some() {
            bail!(
                "ckpt haul serve did not listen: {}",
                std::fs::read_to_string(work.join("haul-serve.err")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let port = line
        .trim()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("haul serve said {line:?}"))?;
    Ok(Server { child, port })
}

/// Sends `bytes` over a plain loopback TCP connection: ms.
fn plain_copy(bytes: u64) -> Result<f64> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        loop {
            let n = s.read(&mut buf)?;
            if n == 0 {
                return Ok(got);
            }
            got += n as u64;
        }
    });
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    let buf = vec![0x5au8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n])?;
        left -= n as u64;
    }
    drop(s);
    let got = reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    if got != bytes {
        bail!("plain copy: {got} of {bytes} bytes");
    }
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Pre-copy's downtime budget: the target's (the default, 300 ms, stops the rounds
/// sooner).
const PRE_COPY_BUDGET: &str = "100";

/// What every migration of the row uses.
struct Setup<'a> {
    ckpt: &'a Path,
    work: &'a Path,
    bin: &'a Path,
    key: &'a Path,
    server: &'a Server,
    timeout: Duration,
}

/// One migration of a fresh rewriter: migrate's JSON report.
fn migrate_once(s: &Setup, bytes: u64, mode: &[&str]) -> Result<serde_json::Value> {
    let Setup {
        ckpt,
        work,
        bin,
        key,
        server,
        timeout,
    } = *s;
    let stats = work.join("haul-rewriter.stats");
    std::fs::write(&stats, [0u8; 16])?;
    let out = work.join("haul-rewriter.out");
    let _ = std::fs::remove_file(&out);
    let args = [
        (bytes >> 20).to_string(),
        crate::predump::RATE.to_string(),
        stats.display().to_string(),
    ];
    let (mut p, _) = workload::start_until_ready(bin, &args, &out, timeout)?;
    // Let it write a while, as a running service would have.
    std::thread::sleep(Duration::from_millis(500));
    crate::limits::prefault(bytes)?;
    let mut cmd = Command::new(ckpt);
    cmd.args(["migrate", "--json", "-t", &p.pid.to_string(), "--to"])
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("--key-file")
        .arg(key);
    cmd.args(mode);
    let o = cmd
        .stdin(Stdio::null())
        .output()
        .context("run ckpt migrate")?;
    if !o.status.success() {
        p.kill_reap()?;
        bail!(
            "migrate {}: {}",
            mode.join(" "),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    p.reap()?;
    let report: serde_json::Value = serde_json::from_slice(&o.stdout)?;
    // The copy runs under ckpt's init of its pid namespace, reparented to the bench
    // (a subreaper): killing the init ends the namespace.
    if let Some(pid) = report["new_pid"].as_i64() {
        if let Some((_, _, init)) = workload::proc_stat(pid as i32) {
            Proc::adopt(init).kill_reap()?;
        }
    }
    Ok(report)
}

pub fn bench(
    ckpt: &Path,
    work: &Path,
    bytes: u64,
    runs: usize,
    timeout: Duration,
) -> Result<HaulResult> {
    let bin = workload::compile_named(work, "rewriter", crate::predump::REWRITER_C)?;
    let key = work.join("haul.key");
    std::fs::write(&key, "5a".repeat(32))?;
    let server = serve(ckpt, work, &key)?;
    let setup = Setup {
        ckpt,
        work,
        bin: &bin,
        key: &key,
        server: &server,
        timeout,
    };
    let mut res = HaulResult {
        bytes,
        runs: Vec::new(),
    };
    for i in 0..runs {
        let mut r = Run::default();
        let mut one = || -> Result<()> {
            r.plain_copy_ms = Some(plain_copy(bytes)?);
            let s = migrate_once(&setup, bytes, &[])?;
            r.stop_total_ms = s["total_ms"].as_f64();
            r.stop_downtime_ms = s["downtime_ms"].as_f64();
            r.link_mb_s = s["send_mb_s"].as_f64();
            let p = migrate_once(
                &setup,
                bytes,
                &["--pre-copy", "--max-downtime", PRE_COPY_BUDGET],
            )?;
            r.pre_total_ms = p["total_ms"].as_f64();
            r.pre_downtime_ms = p["downtime_ms"].as_f64();
            r.pre_rounds = p["rounds"].as_array().map(|a| a.len() as f64);
            let q = migrate_once(&setup, bytes, &["--post-copy"])?;
            r.post_total_ms = q["total_ms"].as_f64();
            r.post_downtime_ms = q["downtime_ms"].as_f64();
            r.post_all_in_ms = q["post_copy"]["ms"].as_f64();
            Ok(())
        };
        if let Err(e) = one() {
            r.error = Some(format!("{e:#}"));
        }
        crate::progress(&format!(
            "migrate {} run {}/{runs}: stop-and-copy downtime {:?} ms, pre-copy downtime {:?} ms ({:?} rounds), post-copy downtime {:?} ms, link {:?} MB/s{}",
            crate::size_name(bytes),
            i + 1,
            r.stop_downtime_ms.map(f64::round),
            r.pre_downtime_ms.map(f64::round),
            r.pre_rounds,
            r.post_downtime_ms.map(f64::round),
            r.link_mb_s.map(f64::round),
            r.error.as_deref().map(|e| format!("; error: {e}")).unwrap_or_default()
        ));
        res.runs.push(r);
    }
    Ok(res)
}

/// The lines printed under the table.
pub fn render(res: &HaulResult) -> String {
    let ser = |f: fn(&Run) -> Option<f64>| series(&res.runs, f);
    let show = |s: Option<Stat>| show(s, 0);
    let plain = ser(|r| r.plain_copy_ms);
    let pre_total = ser(|r| r.pre_total_ms);
    let pre_down = ser(|r| r.pre_downtime_ms);
    let link = ser(|r| r.link_mb_s);
    let mut o = format!(
        "\nmigration on loopback, {} rewriting ~{} MiB/s (median [min-max] of {} runs):\n",
        crate::size_name(res.bytes),
        crate::predump::RATE,
        res.runs.len()
    );
    o += &format!(
        "  stop-and-copy downtime ms {}\n",
        show(ser(|r| r.stop_downtime_ms))
    );
    o += &format!(
        "  stop-and-copy total ms    {}\n",
        show(ser(|r| r.stop_total_ms))
    );
    o += &format!(
        "  pre-copy downtime ms      {:<24} target <= 100 {}\n",
        show(pre_down),
        verdict(pre_down.map(|s| s.median <= 100.0))
    );
    o += &format!(
        "  pre-copy total ms         {:<24} target <= 3x plain copy {}\n",
        show(pre_total),
        verdict(
            pre_total
                .zip(plain)
                .map(|(t, p)| t.median <= 3.0 * p.median)
        )
    );
    o += &format!(
        "  pre-copy rounds           {}\n",
        show(ser(|r| r.pre_rounds))
    );
    let post_down = ser(|r| r.post_downtime_ms);
    o += &format!(
        "  post-copy downtime ms     {:<24} target <= 20 {}\n",
        show(post_down),
        verdict(post_down.map(|s| s.median <= 20.0))
    );
    o += &format!(
        "  post-copy total ms        {} (all in {} ms after running)\n",
        show(ser(|r| r.post_total_ms)),
        show(ser(|r| r.post_all_in_ms))
    );
    o += &format!("  plain TCP copy ms         {}\n", show(plain));
    o += &format!(
        "  encrypted link MB/s       {:<24} target >= 1000 {}\n",
        show(link),
        verdict(link.map(|s| s.median >= 1000.0))
    );
    for (i, r) in res.runs.iter().enumerate() {
        if let Some(e) = &r.error {
            o += &format!("  run {}: {e}\n", i + 1);
        }
    }
    o
}

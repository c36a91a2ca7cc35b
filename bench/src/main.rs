//! `ckpt-bench`: measures this machine's limits and ckpt on the same workloads, in one run,
//! and prints a table of ratios (see the README's "Benchmark" section).
//!
//! Each round of a memory workload: start `memfill` (N MiB of distinct data), measure the
//! limits on it (`process_vm_readv` alone, and with `write()` to a new file, deleted at
//! once), `ckpt dump` (which kills it), `pread` of the image's cached page data into fresh
//! memory (the restore floor), `ckpt restore -d`, and let the restored process verify every
//! page itself (see `limits` for why in this order). The `sleep`
//! workload is dumped and restored the same way. ckpt runs as a child process, timed as a
//! whole command, its peak RSS taken from the kernel (see `measure`).

#![forbid(unsafe_code)]

mod container;
mod haul;
mod limits;
mod measure;
mod predump;
mod redis;
mod report;
mod stats;
mod workload;

use anyhow::{bail, Context, Result};
use clap::Parser;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use stats::{Run, WorkloadResult};
use workload::Proc;

#[derive(Parser, Debug)]
#[command(
    name = "ckpt-bench",
    about = "Measure this machine's limits and ckpt on the same workloads; print ratios",
    long_about = "Runs each workload --runs times. Memory workloads (--sizes): a process holding \
                  N bytes of private anonymous memory with distinct data per page; the limits \
                  (process_vm_readv, the same + write() to the page cache, pread into fresh \
                  memory) are measured on it in the same round as ckpt dump and ckpt restore -d, \
                  and the restored process verifies all its pages. `sleep 1000` is dumped and \
                  restored too. Prints median [min-max] of every figure and ratios to the limits. \
                  Needs root, `cc`, and free memory of about 3x the largest size."
)]
struct Args {
    /// The ckpt binary [default: `ckpt` next to this binary].
    #[arg(long)]
    ckpt: Option<PathBuf>,
    /// Rounds per workload (median, min and max are over them).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Memory workload sizes, comma-separated (K, M, G suffixes), or `none`.
    #[arg(long, default_value = "64M,1G,4G")]
    sizes: String,
    /// Skip the `sleep` workload.
    #[arg(long)]
    no_sleep: bool,
    /// Thread counts of the multi-threaded workload, comma-separated, or `none`.
    #[arg(long, default_value = "64")]
    threads: String,
    /// Process counts of the tree workload (a ring of processes passing a token), or
    /// `none`.
    #[arg(long, default_value = "100")]
    tree: String,
    /// The copy-on-write workload, `MIB:CHILDREN` (a parent's heap its children only
    /// read; the row is the restored tree's summed Pss against the original's), or `none`.
    #[arg(long, default_value = "256:50")]
    cow: String,
    /// Keys of the redis workload (redis-server with a client connected, dumped with
    /// --tcp-established), K/M suffixes, or `none`; skipped when redis-server is missing.
    #[arg(long, default_value = "1M")]
    redis: String,
    /// The container workload, `PROCESSES:MIB` (the ring workload as pid 1 of an unshare
    /// container, and the same without one in the same round), or `none`.
    #[arg(long, default_value = "10:64")]
    container: String,
    /// Dump with `--compress` (zstd): the image MiB row then shows the compression ratio,
    /// and dump/restore times include compressing and decompressing.
    #[arg(long)]
    compress: bool,
    /// Skip the lazy restore (`restore --lazy -d`) of the memory workloads. It is skipped
    /// anyway with --compress (a compressed image cannot be restored lazily).
    #[arg(long)]
    no_lazy: bool,
    /// Smoke run: --sizes 64M, 3 runs, and sleep.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (on stdout) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also write the JSON results to this file (the table still goes to stdout).
    #[arg(long, value_name = "FILE")]
    json_file: Option<PathBuf>,
    /// Where to create the temporary work directory (images, limit files, logs); it should
    /// be on the filesystem you want the images on.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Run ckpt with -vv and report the median of each phase it logs (ms).
    #[arg(long)]
    phases: bool,
    /// Keep ckpt's logs (one per command) in this directory.
    #[arg(long)]
    log_dir: Option<PathBuf>,
    /// Size of the pre-dump workload (a pre-dump, then an incremental dump of memory
    /// being rewritten at ~50 MiB/s), or `none`.
    #[arg(long, default_value = "1G")]
    predump: String,
    /// Size of the migration workload (the pre-dump one, moved with `ckpt migrate` to a
    /// `ckpt haul serve` on loopback, stop-and-copy and --pre-copy), or `none`.
    #[arg(long, default_value = "1G")]
    migrate: String,
    /// Give up on one ckpt command (or one workload answer) after this many seconds.
    #[arg(long, default_value_t = 600)]
    timeout: u64,
}

struct Ctx {
    ckpt: PathBuf,
    work: PathBuf,
    runs: usize,
    phases: bool,
    log_dir: Option<PathBuf>,
    timeout: Duration,
    memfill: Option<PathBuf>,
    threads: Option<PathBuf>,
    ring: Option<PathBuf>,
    compress: bool,
    lazy: bool,
}

impl Ctx {
    fn log(&self, name: &str) -> PathBuf {
        match &self.log_dir {
            Some(d) => d.join(name),
            None => self.work.join(name),
        }
    }

    /// ckpt's arguments, with -vv first when phases are wanted.
    fn args<'a>(&self, a: &[&'a str]) -> Vec<&'a str> {
        let mut v = Vec::new();
        if self.phases {
            v.push("-vv");
        }
        v.extend_from_slice(a);
        v
    }
}

fn main() {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv.get(1).and_then(|a| a.to_str()) == Some(measure::WRAPPER_ARG) {
        std::process::exit(measure::wrapper_main(&argv[2..]));
    }
    let args = Args::parse();
    match run(args) {
        Ok(()) => {}
        Err(e) => {
            eprintln!("ckpt-bench: error: {e:#}");
            std::process::exit(1);
        }
    }
}

/// Mark every fd above 2 close-on-exec, so that nothing the bench inherited (a shell's stray
/// pipe, say) reaches a workload: ckpt refuses to dump a process holding a pipe.
fn cloexec_inherited_fds() -> Result<()> {
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|&fd| fd > 2) {
        // The directory's own fd is gone by now: EBADF is fine.
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
    Ok(())
}

fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    let b = n * mul;
    if b < (1 << 20) || b % (1 << 20) != 0 {
        bail!("size {s:?}: must be a whole number of MiB");
    }
    Ok(b)
}

/// A comma-separated list of counts (option `what`), or `none`.
fn numbers(list: &str, what: &str) -> Result<Vec<usize>> {
    if list.trim() == "none" {
        return Ok(Vec::new());
    }
    list.split(',')
        .map(|t| {
            t.trim()
                .parse()
                .with_context(|| format!("{what}: {t:?} is not a number"))
        })
        .collect()
}

fn size_name(b: u64) -> String {
    if b % (1 << 30) == 0 {
        format!("mem {}G", b >> 30)
    } else {
        format!("mem {}M", b >> 20)
    }
}

fn meminfo(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let l = s.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

fn progress(msg: &str) {
    eprintln!("ckpt-bench: {msg}");
}

#[derive(Serialize)]
struct Output {
    kernel: String,
    cpus: usize,
    mem_total_bytes: Option<u64>,
    ckpt: String,
    runs: usize,
    rows: Vec<report::Row>,
    workloads: Vec<WorkloadResult>,
    /// With --phases: (workload, command, phase, median ms, min, max).
    phases: Vec<PhaseRow>,
    /// The pre-dump row (`predump.rs`).
    predump: Option<predump::PredumpResult>,
    /// The migration row (`haul.rs`).
    migrate: Option<haul::HaulResult>,
}

#[derive(Serialize)]
struct PhaseRow {
    workload: String,
    command: String,
    phase: String,
    ms: stats::Stat,
}

fn run(mut args: Args) -> Result<()> {
    if args.quick {
        args.sizes = "64M".into();
        args.predump = "64M".into();
        args.migrate = "64M".into();
        args.runs = 3;
        args.no_sleep = false;
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let sizes: Vec<u64> = if args.sizes.trim() == "none" {
        Vec::new()
    } else {
        args.sizes
            .split(',')
            .map(parse_size)
            .collect::<Result<_>>()?
    };
    cloexec_inherited_fds().context("mark inherited fds close-on-exec")?;
    // Restored processes are children of `ckpt restore`, which exits: be their reaper.
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;

    let ckpt = match args.ckpt {
        Some(p) => p,
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .join("ckpt"),
    };
    if !ckpt.is_file() {
        bail!(
            "{}: no ckpt binary (build it: cargo build --release -p ckpt, or pass --ckpt)",
            ckpt.display()
        );
    }
    let ckpt = std::fs::canonicalize(&ckpt)?;
    if let Some(d) = &args.log_dir {
        std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("ckpt-bench.")
        .tempdir_in(&args.dir)
        .with_context(|| format!("temp dir in {}", args.dir.display()))?;
    let memfill = if sizes.is_empty() {
        None
    } else {
        Some(workload::compile_memfill(tmp.path())?)
    };
    let thread_counts = numbers(&args.threads, "--threads")?;
    let threads = if thread_counts.is_empty() {
        None
    } else {
        Some(workload::compile_threads(tmp.path())?)
    };
    let tree_counts = numbers(&args.tree, "--tree")?;
    let cow: Option<(u64, usize)> = if args.cow.trim() == "none" {
        None
    } else {
        let (m, c) = args
            .cow
            .split_once(':')
            .with_context(|| format!("--cow: {:?} is not MIB:CHILDREN", args.cow))?;
        Some((
            m.trim().parse().context("--cow: MIB")?,
            c.trim().parse().context("--cow: CHILDREN")?,
        ))
    };
    let container: Option<(usize, u64)> = if args.container.trim() == "none" {
        None
    } else {
        let (n, m) = args
            .container
            .split_once(':')
            .with_context(|| format!("--container: {:?} is not PROCESSES:MIB", args.container))?;
        Some((
            n.trim().parse().context("--container: PROCESSES")?,
            m.trim().parse().context("--container: MIB")?,
        ))
    };
    let ring = if tree_counts.is_empty() && cow.is_none() && container.is_none() {
        None
    } else {
        Some(workload::compile_ring(tmp.path())?)
    };
    let ctx = Ctx {
        ckpt: ckpt.clone(),
        work: tmp.path().to_path_buf(),
        runs: args.runs,
        phases: args.phases,
        log_dir: args.log_dir.clone(),
        timeout: Duration::from_secs(args.timeout),
        memfill,
        threads,
        ring,
        compress: args.compress,
        lazy: !args.no_lazy && !args.compress,
    };
    progress(&format!(
        "ckpt {}, {} runs per workload, work dir {}",
        ckpt.display(),
        ctx.runs,
        ctx.work.display()
    ));

    let mut results = Vec::new();
    for &b in &sizes {
        results.push(bench_mem(&ctx, b));
    }
    if !args.no_sleep {
        results.push(bench_sleep(&ctx));
    }
    for &n in &thread_counts {
        results.push(bench_threads(&ctx, n));
    }
    for &n in &tree_counts {
        results.push(bench_tree(&ctx, n, 0));
    }
    if let Some((mib, children)) = cow {
        results.push(bench_tree(&ctx, children + 1, mib));
    }
    if let Some((n, mib)) = container {
        results.push(container::bench_container(&ctx, n, mib));
    }
    if args.redis.trim() != "none" {
        let keys = parse_count(&args.redis)?;
        results.push(bench_redis(&ctx, keys));
    }

    let predump = if args.predump.trim() == "none" {
        None
    } else {
        let b = parse_size(&args.predump)?;
        Some(predump::bench(
            &ctx.ckpt,
            &ctx.work,
            b,
            ctx.runs,
            ctx.timeout,
            ctx.log_dir.as_deref(),
        )?)
    };
    let migrate = if args.migrate.trim() == "none" {
        None
    } else {
        let b = parse_size(&args.migrate)?;
        Some(haul::bench(&ctx.ckpt, &ctx.work, b, ctx.runs, ctx.timeout)?)
    };
    let rows: Vec<report::Row> = results.iter().flat_map(report::rows).collect();
    let phases = phase_rows(&results);
    let out = Output {
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        mem_total_bytes: meminfo("MemTotal:"),
        ckpt: ckpt.display().to_string(),
        runs: ctx.runs,
        rows,
        workloads: results,
        phases,
        predump,
        migrate,
    };
    if let Some(f) = &args.json_file {
        std::fs::write(f, serde_json::to_string_pretty(&out)?)
            .with_context(|| format!("write {}", f.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!(
            "ckpt-bench: Linux {}, {} CPUs, {:.0} GiB; {}; {} runs each\n",
            out.kernel,
            out.cpus,
            out.mem_total_bytes.unwrap_or(0) as f64 / (1u64 << 30) as f64,
            out.ckpt,
            out.runs
        );
        print!("{}", report::table(&out.rows));
        if let Some(p) = &out.predump {
            print!("{}", predump::render(p));
        }
        if let Some(m) = &out.migrate {
            print!("{}", haul::render(m));
        }
        println!("\n{}", report::LEGEND);
        if !out.phases.is_empty() {
            println!(
                "\nckpt's own phases (-vv; as logged: some are since the command's start), \
                 median [min-max] ms:"
            );
            for p in &out.phases {
                println!(
                    "  {:<10} {:<8} {:<44} {:>8.1} [{:.1}-{:.1}]",
                    p.workload, p.command, p.phase, p.ms.median, p.ms.min, p.ms.max
                );
            }
        }
    }
    drop(tmp);
    Ok(())
}

fn phase_rows(results: &[WorkloadResult]) -> Vec<PhaseRow> {
    let mut out = Vec::new();
    for wl in results {
        // Phase names in first-seen order.
        let mut names: Vec<(String, String)> = Vec::new();
        for r in &wl.runs {
            for (c, p, _) in &r.phases {
                if !names.iter().any(|(a, b)| a == c && b == p) {
                    names.push((c.clone(), p.clone()));
                }
            }
        }
        for (c, p) in names {
            let v: Vec<f64> = wl
                .runs
                .iter()
                .flat_map(|r| &r.phases)
                .filter(|(a, b, _)| *a == c && *b == p)
                .map(|(_, _, ms)| *ms)
                .collect();
            if let Some(ms) = stats::Stat::of(&v) {
                out.push(PhaseRow {
                    workload: wl.name.clone(),
                    command: c,
                    phase: p,
                    ms,
                });
            }
        }
    }
    out
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn seed(run: usize) -> u64 {
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ ((run as u64) << 48) ^ u64::from(std::process::id())
}

fn bench_mem(ctx: &Ctx, bytes: u64) -> WorkloadResult {
    let name = if ctx.compress {
        format!("{} zstd", size_name(bytes))
    } else {
        size_name(bytes)
    };
    let mut res = WorkloadResult {
        name: name.clone(),
        bytes: Some(bytes),
        runs: Vec::new(),
        skipped: None,
        compressed: ctx.compress,
    };
    // At most two copies are there at once (the workload and the limit file or the image,
    // or the image and the floor's mapping or the restored process); leave a margin.
    let need = 2 * bytes + bytes / 2 + (512 << 20);
    if let Some(avail) = meminfo("MemAvailable:") {
        if avail < need {
            res.skipped = Some(format!(
                "needs about {} MiB available, {} MiB are",
                need >> 20,
                avail >> 20
            ));
            progress(&format!(
                "{name}: skipped: {}",
                res.skipped.as_ref().unwrap()
            ));
            return res;
        }
    }
    let mut buf = limits::reused_buffer();
    for i in 0..ctx.runs {
        let mut run = Run {
            run: i + 1,
            ..Run::default()
        };
        if let Err(e) = mem_round(ctx, bytes, &name, &mut run, &mut buf) {
            run.error.get_or_insert_with(|| format!("{e:#}"));
        }
        progress(&format!(
            "{name} run {}/{}: {}",
            i + 1,
            ctx.runs,
            summary(&run)
        ));
        remove(&ctx.work.join("img"));
        let _ = std::fs::remove_file(ctx.work.join("limit.dat"));
        let _ = std::fs::remove_file(ctx.work.join("floor.dat"));
        res.runs.push(run);
    }
    res
}

/// Remove a file or a directory tree, if there.
fn remove(p: &Path) {
    let _ = std::fs::remove_dir_all(p);
    let _ = std::fs::remove_file(p);
}

fn summary(r: &Run) -> String {
    let f = |v: Option<f64>| v.map_or("-".into(), |x| format!("{x:.1}"));
    let mut s = format!(
        "readv {} readv+write {} pread {} | dump {} restore {} ms, rss {}/{} KiB, image {} B",
        f(r.readv_ms),
        f(r.readv_write_ms),
        f(r.pread_ms),
        f(r.dump_ms),
        f(r.restore_ms),
        r.dump_rss_kib.map_or("-".into(), |x| x.to_string()),
        r.restore_rss_kib.map_or("-".into(), |x| x.to_string()),
        r.image_bytes.map_or("-".into(), |x| x.to_string()),
    );
    if let Some(v) = &r.verify {
        s += &format!(", {v}");
    }
    if r.lazy_restore_ms.is_some() {
        s += &format!(
            " | lazy {} ms, running at {} ms, all in at {} ms",
            f(r.lazy_restore_ms),
            f(r.lazy_running_ms),
            f(r.lazy_all_in_ms)
        );
    }
    if let Some(v) = &r.lazy_verify {
        s += &format!(", {v}");
    }
    if let Some(e) = &r.error {
        s += &format!(", ERROR {e}");
    }
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Run one ckpt command; record its log's phases; Err(line) if it failed.
fn ckpt_cmd(
    ctx: &Ctx,
    run: &mut Run,
    cmd: &str,
    args: &[&str],
    log: &Path,
) -> Result<measure::Measured> {
    let r = measure::run_measured(&ctx.ckpt, &ctx.args(args), log, ctx.timeout)?;
    run.wrapper_rss_kib = Some(r.m.wrapper_rss_kib);
    if ctx.phases {
        for (p, v) in measure::phases(log) {
            run.phases.push((cmd.to_string(), p, v));
        }
    }
    match r.error {
        None => Ok(r.m),
        Some(e) => {
            run.error = Some(format!("ckpt {cmd}: {e}"));
            bail!("ckpt {cmd}: {e}")
        }
    }
}

/// `ckpt dump -t PID -D IMG [--compress]` of the workload `wl`, which the dump kills and
/// the bench then reaps (its pid is free again for the restore); on failure the workload is
/// killed and reaped too. Records the dump's time, peak RSS and image size.
fn dump(ctx: &Ctx, run: &mut Run, wl: &mut Proc, img: &Path, log: &Path) -> Result<()> {
    dump_with(ctx, run, wl, img, log, &[])
}

/// `dump` with more arguments.
fn dump_with(
    ctx: &Ctx,
    run: &mut Run,
    wl: &mut Proc,
    img: &Path,
    log: &Path,
    extra: &[&str],
) -> Result<()> {
    let pid = wl.pid.to_string();
    let img_s = img.to_str().context("work dir path is not UTF-8")?;
    let mut args = vec!["dump", "-t", &pid, "-D", img_s];
    args.extend_from_slice(extra);
    if ctx.compress {
        args.push("--compress");
    }
    let m = match ckpt_cmd(ctx, run, "dump", &args, log) {
        Ok(m) => m,
        Err(e) => {
            wl.kill_reap()?;
            return Err(e);
        }
    };
    wl.reap()?;
    run.dump_ms = Some(m.wall_ms);
    run.dump_rss_kib = Some(m.maxrss_kib);
    run.image_bytes = Some(dir_bytes(img));
    Ok(())
}

fn mem_round(ctx: &Ctx, bytes: u64, name: &str, run: &mut Run, buf: &mut [u8]) -> Result<()> {
    let bin = ctx.memfill.as_ref().context("memfill not built")?;
    let tag = name.replace(' ', "-");
    let out = ctx.work.join(format!("{tag}.out"));
    let tick = ctx.work.join(format!("{tag}.tick"));
    let (mut wl, region) =
        workload::start_memfill(bin, bytes >> 20, seed(run.run), &tick, &out, ctx.timeout)?;

    // The limits, on this very process. Every timed step that needs new memory comes right
    // after `limits::prefault` of that much (see `limits`).
    run.readv_ms = Some(ms(limits::readv(&region, buf)?));
    let limit_file = ctx.work.join("limit.dat");
    limits::prefault(bytes)?;
    run.readv_write_ms = Some(ms(limits::readv_write(&region, buf, &limit_file)?));
    std::fs::remove_file(&limit_file)?;
    if ctx.lazy {
        // Ticking from now on, so that the lazily restored process stamps when it runs.
        workload::start_ticking(&mut wl, &out, ctx.timeout)?;
    }

    // ckpt dump (kills the workload; the bench reaps it, so its pid is free again).
    let img = ctx.work.join("img");
    let img_s = img.to_str().context("work dir path is not UTF-8")?;
    let log = ctx.log(&format!("{tag}-r{}-dump.log", run.run));
    limits::prefault(bytes)?;
    dump(ctx, run, &mut wl, &img, &log)?;

    // The restore floor: the image's page data (a cached file: just written, and read once
    // more), or a file of the workload's size if the image has no such raw pages file.
    let pages = img.join("pages-1.img");
    let raw = std::fs::metadata(&pages).is_ok_and(|m| m.len() >= bytes + 4096);
    let (floor_file, start) = if raw {
        (pages, 4096)
    } else {
        let f = ctx.work.join("floor.dat");
        limits::write_file(&f, buf, bytes as usize)?;
        (f, 0)
    };
    limits::warm(&floor_file, buf)?;
    limits::prefault(bytes)?;
    run.pread_ms = Some(ms(limits::pread_fresh(&floor_file, start, bytes as usize)?));
    if !raw {
        std::fs::remove_file(&floor_file)?;
    }

    // ckpt restore -d, then the process checks all its pages.
    let log = ctx.log(&format!("{tag}-r{}-restore.log", run.run));
    limits::prefault(bytes)?;
    let m = ckpt_cmd(ctx, run, "restore", &["restore", "-D", img_s, "-d"], &log)?;
    run.restore_ms = Some(m.wall_ms);
    run.restore_rss_kib = Some(m.maxrss_kib);
    let mut restored = adopt_restored(wl.pid)?;
    let verdict = workload::verify_pass(&mut restored, &out, ctx.timeout)?;
    run.verify = Some(verdict);
    restored.kill_reap()?;

    // ckpt restore --lazy -d of the same image.
    if ctx.lazy {
        let log = ctx.log(&format!("{tag}-r{}-lazy.log", run.run));
        limits::prefault(bytes)?;
        lazy_restore(ctx, run, img_s, wl.pid, &tick, &out, &log)?;
    }
    Ok(())
}

/// `ckpt restore --lazy -d`, then: when the process runs again (its first tick, stamped by
/// itself), when every page is in (its pager exits, reaped by the bench on a thread of its
/// own so the moment is not missed), and its own check of every page after that.
fn lazy_restore(
    ctx: &Ctx,
    run: &mut Run,
    img: &str,
    pid: i32,
    tick: &Path,
    out: &Path,
    log: &Path,
) -> Result<()> {
    workload::clear_first_tick(tick)?;
    let args = ["restore", "--lazy", "-D", img, "-d"];
    let m = ckpt_cmd(ctx, run, "restore --lazy", &args, log)?;
    run.lazy_restore_ms = Some(m.wall_ms);
    let mut restored = adopt_restored(pid)?;
    let since = |ns: u64| ns.saturating_sub(m.start_mono_ns) as f64 / 1e6;
    let pager = match workload::pagers(&ctx.ckpt, pid).as_slice() {
        &[p] => p,
        other => bail!("restore --lazy -d: expected one ckpt-pager child, found {other:?}"),
    };
    let timeout = ctx.timeout;
    let all_in = std::thread::spawn(move || {
        workload::wait_pager(pager, timeout).map(|()| measure::mono_ns())
    });
    let first = workload::first_tick(tick, &mut restored, ctx.timeout);
    let all_in = all_in.join().expect("the pager waiter does not panic");
    let first = first?;
    if first < m.start_mono_ns {
        bail!(
            "the tick file's first stamp ({first} ns) is older than the restore ({} ns)",
            m.start_mono_ns
        );
    }
    run.lazy_running_ms = Some(since(first));
    run.lazy_all_in_ms = Some(since(all_in?));
    let verdict = workload::verify_pass(&mut restored, out, ctx.timeout)?;
    run.lazy_verify = Some(verdict);
    restored.kill_reap()?;
    Ok(())
}

/// The restored process (same pid) must now be the bench's child: ckpt restore exited and
/// the bench is the subreaper.
fn adopt_restored(pid: i32) -> Result<Proc> {
    match workload::proc_stat(pid) {
        Some((_, _, ppid)) if ppid == std::process::id() as i32 => Ok(Proc::adopt(pid)),
        Some((comm, state, ppid)) => {
            bail!("restored pid {pid} ({comm}, state {state}) has parent {ppid}, not the bench")
        }
        None => bail!("restored pid {pid} does not exist after ckpt restore -d"),
    }
}

fn bench_sleep(ctx: &Ctx) -> WorkloadResult {
    let name = if ctx.compress { "sleep zstd" } else { "sleep" };
    bench_small(ctx, name, |run| {
        let out = ctx.work.join("sleep.out");
        let wl = workload::start_sleep(&out, ctx.timeout)?;
        small_round(ctx, run, "sleep", wl, |p| workload::verify_sleep(p.pid))
    })
}

/// The multi-threaded workload with `n` threads: every thread must wake with its tid
/// after the restore.
fn bench_threads(ctx: &Ctx, n: usize) -> WorkloadResult {
    let name = format!("threads {n}{}", if ctx.compress { " zstd" } else { "" });
    let tag = format!("threads{n}");
    bench_small(ctx, &name, |run| {
        let bin = ctx.threads.as_ref().context("threads workload not built")?;
        let out = ctx.work.join("threads.out");
        let wl = workload::start_threads(bin, n, &out, ctx.timeout)?;
        small_round(ctx, run, &tag, wl, |p| {
            workload::verify_pass(p, &out, ctx.timeout)
        })
    })
}

/// The ring of `n` processes (with a `heap_mib` heap its children share copy-on-write,
/// named `cow`: its summed Pss is taken before the dump and after the restore).
fn bench_tree(ctx: &Ctx, n: usize, heap_mib: u64) -> WorkloadResult {
    let cow = heap_mib > 0;
    let name = match (cow, ctx.compress) {
        (false, false) => format!("tree {n}"),
        (false, true) => format!("tree {n} zstd"),
        (true, false) => format!("cow {heap_mib}M x {}", n - 1),
        (true, true) => format!("cow {heap_mib}M x {} zstd", n - 1),
    };
    let tag = name.replace(' ', "-");
    bench_small(ctx, &name, |run| {
        let bin = ctx.ring.as_ref().context("ring workload not built")?;
        let out = ctx.work.join("ring.out");
        let (mut wl, children) = workload::start_ring(bin, n, heap_mib, &out, ctx.timeout)?;
        let mut all = vec![wl.pid];
        all.extend(&children);
        if cow {
            run.pss_before_kib = workload::summed_pss(&all);
        }
        let img = ctx.work.join("img");
        let img_s = img.to_str().context("work dir path is not UTF-8")?;
        let log = ctx.log(&format!("{tag}-r{}-dump.log", run.run));
        let dumped = dump(ctx, run, &mut wl, &img, &log);
        // Killed with the root (by the dump) or on their own once it is gone.
        if dumped.is_err() {
            wl.kill_reap()?;
        }
        workload::reap_all(&children, ctx.timeout)?;
        dumped?;
        let log = ctx.log(&format!("{tag}-r{}-restore.log", run.run));
        let restored = ckpt_cmd(ctx, run, "restore", &["restore", "-D", img_s, "-d"], &log);
        let result = restored.and_then(|m| {
            run.restore_ms = Some(m.wall_ms);
            run.restore_rss_kib = Some(m.maxrss_kib);
            let mut root = adopt_restored(wl.pid)?;
            if cow {
                run.pss_after_kib = workload::summed_pss(&all);
            }
            run.verify = Some(match workload::verify_pass(&mut root, &out, ctx.timeout) {
                Ok(v) => v,
                Err(e) => format!("{e:#}"),
            });
            root.kill_reap()
        });
        // Whatever happened, none of the tree is left.
        for &p in &children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        workload::reap_all(&children, ctx.timeout)?;
        result
    })
}

/// `keys` in `N`, `NK` or `NM`.
fn parse_count(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1_000),
        Some('m' | 'M') => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .map(|n| n * mul)
        .with_context(|| format!("{s:?} is not a count (N, NK or NM)"))
}

/// redis-server with `keys` keys and a client connected across the dump and restore.
fn bench_redis(ctx: &Ctx, keys: u64) -> WorkloadResult {
    let name = format!("redis {}", keys);
    if !redis::available() {
        let mut res = bench_small(ctx, &name, |_| Ok(()));
        res.runs.clear();
        res.skipped = Some("redis-server is not installed".into());
        return res;
    }
    bench_small(ctx, &name, |run| {
        let out = ctx.work.join("redis.out");
        let (mut wl, port, mut client) = redis::start(keys, &out, ctx.timeout)?;
        let img = ctx.work.join("img");
        let img_s = img.to_str().context("work dir path is not UTF-8")?;
        let log = ctx.log(&format!("redis-r{}-dump.log", run.run));
        dump_with(ctx, run, &mut wl, &img, &log, &["--tcp-established"])?;
        let log = ctx.log(&format!("redis-r{}-restore.log", run.run));
        let m = ckpt_cmd(ctx, run, "restore", &["restore", "-D", img_s, "-d"], &log)?;
        run.restore_ms = Some(m.wall_ms);
        run.restore_rss_kib = Some(m.maxrss_kib);
        let mut restored = adopt_restored(wl.pid)?;
        run.verify = Some(match redis::verify(&mut client, port, keys, ctx.timeout) {
            Ok(v) => v,
            Err(e) => format!("{e:#}"),
        });
        restored.kill_reap()?;
        Ok(())
    })
}

/// `ctx.runs` rounds of a workload without a memory size (`round` fills in one `Run`).
fn bench_small(
    ctx: &Ctx,
    name: &str,
    mut round: impl FnMut(&mut Run) -> Result<()>,
) -> WorkloadResult {
    let mut res = WorkloadResult {
        name: name.into(),
        bytes: None,
        runs: Vec::new(),
        skipped: None,
        compressed: ctx.compress,
    };
    for i in 0..ctx.runs {
        let mut run = Run {
            run: i + 1,
            ..Run::default()
        };
        if let Err(e) = round(&mut run) {
            run.error.get_or_insert_with(|| format!("{e:#}"));
        }
        progress(&format!(
            "{name} run {}/{}: {}",
            i + 1,
            ctx.runs,
            summary(&run)
        ));
        let _ = std::fs::remove_dir_all(ctx.work.join("img"));
        res.runs.push(run);
    }
    res
}

/// Dump `wl` (named `tag` in the logs), restore it with -d, let `verify` judge the
/// restored process, kill it.
fn small_round(
    ctx: &Ctx,
    run: &mut Run,
    tag: &str,
    mut wl: Proc,
    verify: impl FnOnce(&mut Proc) -> Result<String>,
) -> Result<()> {
    let img = ctx.work.join("img");
    let img_s = img.to_str().context("work dir path is not UTF-8")?;
    let log = ctx.log(&format!("{tag}-r{}-dump.log", run.run));
    dump(ctx, run, &mut wl, &img, &log)?;
    let log = ctx.log(&format!("{tag}-r{}-restore.log", run.run));
    let m = ckpt_cmd(ctx, run, "restore", &["restore", "-D", img_s, "-d"], &log)?;
    run.restore_ms = Some(m.wall_ms);
    run.restore_rss_kib = Some(m.maxrss_kib);
    let mut restored = adopt_restored(wl.pid)?;
    run.verify = Some(match verify(&mut restored) {
        Ok(v) => v,
        Err(e) => format!("{e:#}"),
    });
    restored.kill_reap()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("2048k").unwrap(), 2 << 20);
        assert!(parse_size("100").is_err());
        assert!(parse_size("x").is_err());
        assert_eq!(size_name(1 << 30), "mem 1G");
        assert_eq!(size_name(64 << 20), "mem 64M");
    }

    #[test]
    fn phases_parse() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("log");
        std::fs::write(
            &p,
            "2026-11-23T11:51:03.026424Z DEBUG validated pid=1 ms=0.64\n\
             \u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m dump done pid=1 frozen_ms=3.1 total_ms=3.8\n\
             ckpt: error: nope\n",
        )
        .unwrap();
        let ph = measure::phases(&p);
        assert_eq!(
            ph,
            vec![
                ("validated".to_string(), 0.64),
                ("dump done (frozen_ms)".to_string(), 3.1),
                ("dump done (total_ms)".to_string(), 3.8),
            ]
        );
        assert_eq!(measure::last_error_line(&p).unwrap(), "ckpt: error: nope");
    }
}

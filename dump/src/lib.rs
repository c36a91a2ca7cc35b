//! Checkpoint of a process: freeze -> seize -> collect -> write images -> release.
//!
//! This stage dumps one process (all its threads) with regular files, directories and
//! character devices open. The steps, each in its own module:
//! - `validate`: refuse what cannot be dumped, before the task is touched;
//! - `seize`: PTRACE_SEIZE + INTERRUPT, and the guard that puts the task back on any error
//!   (also on SIGINT/SIGTERM/SIGHUP: `ckpt_sys::abort` is checked between steps);
//! - `threads`: the other threads seized until none is left running, checked, and asked
//!   for their own tid address and sigaltstack;
//! - `rseq`: a task stopped inside an rseq critical section resumes at its abort handler;
//! - `remote`: syscalls injected through a `syscall` of the vDSO (sigactions, itimers, ...);
//! - `cores`, `mm`, `files`: the records of core-, mm- and files-<pid>.img;
//! - `pages`: the memory, streamed from the task into pages-1.img;
//! - `release`: kill the task, or let it run on (`--leave-running`).

mod cores;
mod files;
mod mm;
mod pages;
mod release;
mod remote;
mod rseq;
mod seize;
mod threads;
mod validate;

use ckpt_images::{names, pb, ImageSink, Kind};
use ckpt_sys::{abort, proc, process, Pid};
use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub pid: i32,
    pub dir: PathBuf,
    pub leave_running: bool,
    /// zstd level for the pages (None: raw pages).
    pub compress: Option<i32>,
    /// Every image file on disk before the dump returns (`--sync`).
    pub sync: bool,
}

#[derive(Debug, Default, Clone)]
pub struct DumpStats {
    /// Pages written to pages-1.img.
    pub pages: u64,
    pub bytes: u64,
    /// From the seize to the end of the release: how long the task did not run.
    pub frozen_ms: f64,
    /// Time spent copying memory.
    pub memory_ms: f64,
    /// Number of syscalls injected into the task.
    pub injected: u64,
    /// From the call to the end, validation included.
    pub total_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error(transparent)]
    Sys(#[from] ckpt_sys::Error),
    #[error(transparent)]
    Image(#[from] ckpt_images::ImageError),
    /// Something this version cannot dump (named, with the pid).
    #[error("{0}")]
    Refused(String),
    /// The task changed or vanished under us.
    #[error("{0}")]
    Lost(String),
}

pub(crate) fn refuse(msg: impl Into<String>) -> DumpError {
    DumpError::Refused(msg.into())
}

pub(crate) fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

pub fn dump(opts: &DumpOptions) -> Result<DumpStats, DumpError> {
    dump_with_progress(opts, &ckpt_images::progress::Quiet)
}

/// `dump`, reporting the memory copy to `progress`.
pub fn dump_with_progress(
    opts: &DumpOptions,
    progress: &dyn ckpt_images::progress::Progress,
) -> Result<DumpStats, DumpError> {
    let t0 = Instant::now();
    if opts.pid <= 0 {
        return Err(refuse(format!(
            "pid {} is not a valid process id",
            opts.pid
        )));
    }
    let pid = Pid::from_raw(opts.pid);
    let identity = validate::before_seize(pid)?;
    // Create the sink before touching the task, so an unusable directory fails early.
    // Dropped unfinished (any error below), it deletes what it wrote.
    let mut sink = ImageSink::create(&opts.dir)?.with_sync(opts.sync);
    let rss = proc::status(pid)?.vmrss.unwrap_or(0) * 1024;
    let buffers = pages::Buffers::prepare(rss)?;
    tracing::debug!(pid = opts.pid, ms = ms(t0), "validated");

    let t_seize = Instant::now();
    // From here every early return drops `task`, which puts the task back as it was.
    let mut task = seize::Seized::seize(pid)?;
    tracing::info!(pid = opts.pid, ms = ms(t_seize), "seized");
    identity.verify(pid)?;
    validate::after_seize(pid)?;
    abort::check()?;

    let mut stats = DumpStats::default();
    let t = Instant::now();
    let stat = proc::stat(pid)?;
    let status = proc::status(pid)?;
    let maps = proc::smaps(pid)?;
    let mm = mm::collect(pid, &stat, &maps)?;
    let fds = files::collect(pid)?;
    let threads = cores::threads(&task)?;
    tracing::debug!(
        ms = ms(t),
        vmas = mm.vmas.len(),
        fds = fds.len(),
        threads = threads.len(),
        "collected /proc and ptrace state"
    );

    let t = Instant::now();
    let wanted_sigs = status.sigign | status.sigcgt;
    abort::check()?;
    let injected = remote::collect(&mut task, &maps, &mm.vdso, wanted_sigs)?;
    stats.injected = injected.calls;
    tracing::debug!(ms = ms(t), calls = injected.calls, "injected syscalls");

    let t = Instant::now();
    let plan = pages::plan(pid, &mm.vmas)?;
    let mut pagemap = sink.records(&names::pagemap(opts.pid), Kind::Pagemap)?;
    let mut pages_w = sink.pages(pages::PAGES_ID)?;
    let copied = pages::copy(
        pid,
        &plan,
        &mut pagemap,
        &mut pages_w,
        opts.compress,
        buffers,
        progress,
    )?;
    sink.commit_pages(pages::PAGES_ID, pages_w)?;
    sink.commit_records(&names::pagemap(opts.pid), pagemap)?;
    stats.pages = copied.pages;
    stats.bytes = copied.pages * ckpt_images::PAGE_SIZE as u64;
    stats.memory_ms = ms(t);
    tracing::info!(
        ms = stats.memory_ms,
        pages = copied.pages,
        runs = copied.runs,
        read_ms = copied.read_ms,
        write_ms = copied.write_ms,
        "memory written"
    );

    abort::check()?;
    let t = Instant::now();
    let process_core = cores::process(pid, &stat, &status, &injected, threads.len())?;
    let mut w = sink.records(&names::core(opts.pid), Kind::Core)?;
    w.write(&process_core)?;
    for t in cores::thread_records(threads, &injected)? {
        w.write(&t)?;
    }
    sink.commit_records(&names::core(opts.pid), w)?;

    let mut w = sink.records(&names::mm(opts.pid), Kind::Mm)?;
    w.write(&mm.info(&injected))?;
    for v in &mm.vmas {
        w.write(&v.vma)?;
    }
    sink.commit_records(&names::mm(opts.pid), w)?;

    let mut w = sink.records(&names::files(opts.pid), Kind::Files)?;
    for fd in &fds {
        w.write(fd)?;
    }
    sink.commit_records(&names::files(opts.pid), w)?;

    let xsave = task.xsave();
    let inventory = pb::Inventory {
        format_version: 0, // set by the sink
        ckpt_version: env!("CARGO_PKG_VERSION").into(),
        root_pid: opts.pid,
        pids: vec![opts.pid],
        kernel_release: proc::read_trimmed("/proc/sys/kernel/osrelease")?,
        vdso_xxh3: mm.vdso.xxh3,
        xsave_features: process::xsave_features(xsave),
        xsave_size: xsave.len() as u32,
        files: Vec::new(),
        dumped_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    // The last point where an abort (SIGINT/SIGTERM/SIGHUP) is honoured: past it the
    // images are complete and the release runs to its end.
    abort::check()?;
    sink.finish(inventory)?;
    tracing::debug!(ms = ms(t), "images written");

    // The images are complete: from here a failure no longer undoes the dump.
    let t = Instant::now();
    if opts.leave_running {
        task.release_running()?;
    } else {
        task.release_kill(identity.pidfd())?;
    }
    tracing::debug!(ms = ms(t), leave_running = opts.leave_running, "released");
    stats.frozen_ms = ms(t_seize);
    stats.total_ms = ms(t0);
    tracing::info!(
        pid = opts.pid,
        frozen_ms = stats.frozen_ms,
        total_ms = stats.total_ms,
        "dump done"
    );
    Ok(stats)
}

//! Checkpoint of a process: freeze -> seize -> collect -> write images -> release.
//!
//! This stage dumps a tree of processes (each with all its threads) with regular files,
//! directories and character devices open. The steps, each in its own module:
//! - `validate`: refuse what cannot be dumped, before the task is touched (every
//!   `blockers::Blocker` of the tree, also listed by `ckpt check -t`; `describe` and
//!   `sockets` say what a pipe, socket or anonymous inode fd is); `known_state`: every
//!   piece of per-task kernel state ckpt knows, and the refusal of what it does not;
//! - `tree`: find and seize every descendant, consistently; sessions and groups;
//! - `seize`: PTRACE_SEIZE + INTERRUPT, and the guard that puts the task back on any error
//!   (also on SIGINT/SIGTERM/SIGHUP: `ckpt_sys::abort` is checked between steps);
//! - `threads`: the other threads seized until none is left running, checked, and asked
//!   for their own tid address and sigaltstack;
//! - `rseq`: a task stopped inside an rseq critical section resumes at its abort handler;
//! - `remote`: syscalls injected through a `syscall` of the vDSO (sigactions, itimers, ...);
//! - `cores`, `mm`, `files`: the records of core-, mm- and files-<pid>.img;
//! - `net`: TCP and UDP sockets (`--tcp-established`: connections through TCP_REPAIR,
//!   locked with nftables until the restore);
//! - `pages`: the memory, streamed from every task into one pages-1.img (shared memory
//!   objects once);
//! - `release`: kill the tree, or let it run on (`--leave-running`).

mod blockers;
mod cores;
mod describe;
mod fdtable;
mod files;
pub mod known_state;
mod locks;
mod mm;
mod net;
mod pages;
mod release;
mod remote;
mod rseq;
mod seize;
mod sockets;
mod task_state;
mod threads;
mod timers;
mod tree;
mod validate;

pub use blockers::Blocker;

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
    /// Names of unknown kernel state (a VmFlags letter, a /proc/PID/status field) the
    /// user accepts to lose (`--allow-unknown-state`); refused otherwise.
    pub allow_unknown_state: Vec<String>,
    /// Established TCP connections are dumped (TCP_REPAIR, locked by nftables until the
    /// restore) rather than refused (`--tcp-established`).
    pub tcp_established: bool,
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

pub(crate) use ckpt_images::units::ms;

/// Everything that keeps the tree of `pid` from being dumped (empty: dumpable), found
/// without stopping or touching any process of it: the same checks a dump makes first.
pub fn check_tree(pid: i32, tcp_established: bool) -> Result<Vec<Blocker>, DumpError> {
    net::allow_established(tcp_established);
    let root = Pid::from_raw(pid);
    let mut out = validate::tree_blockers(root)?;
    validate::known_state_blockers(root, &mut out);
    Ok(out.list)
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
    net::allow_established(opts.tcp_established);
    abort::phase("checking the process");
    // The whole tree is checked before anything is stopped (and a process that appears
    // only during the seize, on its own then): a refusal touches nothing.
    let (identity, mut describer) = validate::before_seize(pid)?;
    let mut rss = proc::status(pid)?.vmrss.unwrap_or(0) * 1024;
    for c in tree::descendants(pid)? {
        rss = rss.max(proc::status(c).ok().and_then(|s| s.vmrss).unwrap_or(0) * 1024);
    }
    // Create the sink before touching the task, so an unusable directory fails early.
    // Dropped unfinished (any error below), it deletes what it wrote.
    let mut sink = ImageSink::create(&opts.dir)?.with_sync(opts.sync);
    let mut buffers = pages::Buffers::prepare(rss)?;
    tracing::debug!(pid = opts.pid, ms = ms(t0), "validated");

    let t_seize = Instant::now();
    abort::phase("seizing the process");
    // From here every early return drops the seized tasks, which puts each back as it was.
    let task = seize::Seized::seize(pid)?;
    identity.verify(pid)?;
    let mut tree = tree::seize(tree::Member { task, id: identity }, &mut describer)?;
    tracing::info!(
        pid = opts.pid,
        processes = tree.live.len(),
        zombies = tree.nodes.len() - tree.live.len(),
        ms = ms(t_seize),
        "seized"
    );
    abort::phase("collecting its state");
    ckpt_sys::testhold::hold("seized", &|| false);
    abort::check()?;

    let mut stats = DumpStats::default();
    let t = Instant::now();
    let mut pages_w = sink.pages(pages::PAGES_ID)?;
    let mut shared = TreeWide {
        memory: ckpt_images::intervals::Covered::default(),
        files: fdtable::FdTable::new(tree.live.iter().map(|m| m.task.pid())),
    };
    let mut root_vdso = 0;
    for (i, m) in tree.live.iter_mut().enumerate() {
        let one = process(
            &mut m.task,
            opts,
            &mut sink,
            &mut pages_w,
            &mut shared,
            &mut buffers,
            progress,
        )?;
        if i == 0 {
            root_vdso = one.vdso_xxh3;
        } else if one.vdso_xxh3 != root_vdso {
            return Err(refuse(format!(
                "pid {} has another vDSO than pid {}: not supported",
                m.task.pid(),
                opts.pid
            )));
        }
        stats.pages += one.pages;
        stats.injected += one.injected;
    }
    sink.commit_pages(pages::PAGES_ID, pages_w)?;
    let mut w = sink.records(names::FDTABLE, Kind::FileTable)?;
    for d in shared.files.descs() {
        w.write(d)?;
    }
    sink.commit_records(names::FDTABLE, w)?;
    tracing::info!(
        fds = shared.files.fds,
        descriptions = shared.files.descs().len(),
        kcmps = shared.files.kcmps,
        ms = ckpt_images::units::tenths(shared.files.spent.as_secs_f64() * 1e3),
        cpu_ms = ckpt_images::units::tenths(shared.files.cpu.as_secs_f64() * 1e3),
        "file table"
    );
    stats.bytes = stats.pages * ckpt_images::PAGE_SIZE as u64;
    stats.memory_ms = ms(t);

    let xsave = tree.live[0].task.xsave();
    let inventory = pb::Inventory {
        format_version: 0, // set by the sink
        ckpt_version: env!("CARGO_PKG_VERSION").into(),
        root_pid: opts.pid,
        pids: tree.live.iter().map(|m| m.task.pid().as_raw()).collect(),
        kernel_release: proc::read_trimmed("/proc/sys/kernel/osrelease")?,
        vdso_xxh3: root_vdso,
        xsave_features: process::xsave_features(xsave),
        xsave_size: xsave.len() as u32,
        files: Vec::new(),
        dumped_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
        tree: if tree.nodes.len() > 1 {
            tree.nodes.clone()
        } else {
            Vec::new()
        },
    };
    let pids_dumped = inventory.pids.len();
    // The last point where an abort (SIGINT/SIGTERM/SIGHUP) is honoured: past it the
    // images are complete and the release runs to its end.
    abort::phase("writing the images");
    abort::check()?;
    sink.finish(inventory)?;
    tracing::debug!(ms = ms(t), "images written");

    // The images are complete: from here a failure no longer undoes the dump.
    let t = Instant::now();
    // A tree left running gets its connections back before it runs (a send in repair
    // mode fails); a killed one closes them in repair mode (silently), lock kept.
    // (`shared`, declared after the tree, is dropped before it on an error: connections
    // are switched back and unlocked while their processes are still stopped.)
    if opts.leave_running {
        shared.files.net.finish(false)?;
        release(tree, true)?;
    } else {
        let released = release(tree, false);
        shared.files.net.finish(true)?;
        released?;
    }
    tracing::debug!(ms = ms(t), leave_running = opts.leave_running, "released");
    stats.frozen_ms = ms(t_seize);
    stats.total_ms = ms(t0);
    tracing::info!(
        pid = opts.pid,
        processes = pids_dumped,
        pages = stats.pages,
        mib = ckpt_images::units::mib(stats.bytes),
        injected = stats.injected,
        frozen_ms = stats.frozen_ms,
        total_ms = stats.total_ms,
        "dump done"
    );
    Ok(stats)
}

/// Lets the whole tree run on (`--leave-running`), or kills it: every task first, then
/// waits for each, so they die in parallel.
fn release(tree: tree::Tree, leave_running: bool) -> Result<(), DumpError> {
    let _finish = abort::Shield::new();
    let mut first_err = None;
    if leave_running {
        for m in tree.live.into_iter().rev() {
            if let Err(e) = m.task.release_running() {
                first_err.get_or_insert(e);
            }
        }
    } else {
        let mut dying = Vec::with_capacity(tree.live.len());
        for mut m in tree.live {
            match m.task.kill_now(m.id.pidfd()) {
                Ok(()) => dying.push(m.task),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for t in dying {
            if let Err(e) = t.wait_dead() {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// What the processes of a tree share, met process after process: shared memory objects
/// (pages stored once) and open file descriptions (one record each).
struct TreeWide {
    memory: ckpt_images::intervals::Covered,
    files: fdtable::FdTable,
}

/// What one process added to the dump.
struct OneProcess {
    pages: u64,
    injected: u64,
    vdso_xxh3: u64,
}

/// Collects one stopped process and writes its core, mm, pagemap and files images; its
/// pages go to the tree's one pages file.
fn process(
    task: &mut seize::Seized,
    opts: &DumpOptions,
    sink: &mut ImageSink,
    pages_w: &mut ckpt_images::PagesWriter,
    shared: &mut TreeWide,
    buffers: &mut pages::Buffers,
    progress: &dyn ckpt_images::progress::Progress,
) -> Result<OneProcess, DumpError> {
    let pid = task.pid();
    let raw = pid.as_raw();
    let t = Instant::now();
    let stat = proc::stat(pid)?;
    let status = proc::status(pid)?;
    let maps = proc::smaps(pid)?;
    known_state::check_task(
        pid,
        &maps,
        &known_state::Allowed(opts.allow_unknown_state.clone()),
    )?;
    let mm = mm::collect(pid, &stat, &maps)?;
    let mut fds = files::collect(pid, &mut shared.files)?;
    locks::attach(pid, &mut fds)?;
    let threads = cores::threads(task)?;
    tracing::debug!(
        %pid,
        ms = ms(t),
        vmas = mm.vmas.len(),
        fds = fds.len(),
        threads = threads.len(),
        "collected /proc and ptrace state"
    );

    let t = Instant::now();
    let wanted_sigs = status.sigign | status.sigcgt;
    abort::phase("injecting syscalls");
    abort::check()?;
    let injected = remote::collect(task, &maps, &mm.vdso, wanted_sigs)?;
    locks::set_lease_signals(&mut fds, &injected.lease_signals);
    tracing::debug!(%pid, ms = ms(t), calls = injected.calls, "injected syscalls");

    let t = Instant::now();
    abort::phase("copying memory");
    let plan = pages::plan(pid, &mm.vmas)?;
    let plan = pages::drop_stored_shared(plan, &mm.vmas, &mut shared.memory);
    let mut pagemap = sink.records(&names::pagemap(raw), Kind::Pagemap)?;
    let copied = pages::copy(
        pid,
        &plan,
        &mut pagemap,
        pages_w,
        opts.compress,
        buffers,
        progress,
    )?;
    sink.commit_records(&names::pagemap(raw), pagemap)?;
    tracing::info!(
        %pid,
        ms = ms(t),
        pages = copied.pages,
        runs = copied.runs,
        read_ms = ckpt_images::units::tenths(copied.read_ms),
        write_ms = ckpt_images::units::tenths(copied.write_ms),
        "memory written"
    );

    abort::phase("writing the images");
    abort::check()?;
    let process_core = cores::process(pid, &stat, &status, &injected, threads.len())?;
    let mut w = sink.records(&names::core(raw), Kind::Core)?;
    w.write(&process_core)?;
    for t in cores::thread_records(threads, &injected)? {
        w.write(&t)?;
    }
    sink.commit_records(&names::core(raw), w)?;

    let mut w = sink.records(&names::mm(raw), Kind::Mm)?;
    w.write(&mm.info(&injected))?;
    for v in &mm.vmas {
        w.write(&v.vma)?;
    }
    sink.commit_records(&names::mm(raw), w)?;

    let mut w = sink.records(&names::files(raw), Kind::Files)?;
    for fd in &fds {
        w.write(fd)?;
    }
    sink.commit_records(&names::files(raw), w)?;
    Ok(OneProcess {
        pages: copied.pages,
        injected: injected.calls,
        vdso_xxh3: mm.vdso.xxh3,
    })
}

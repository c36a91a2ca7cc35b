//! Checkpoint of a process: freeze -> seize -> collect -> write images -> release.
//!
//! This stage dumps a tree of processes (each with all its threads) with regular files,
//! directories and character devices open. The steps, each in its own module:
//! - `validate`: refuse what cannot be dumped, before the task is touched (every
//!   `blockers::Blocker` of the tree, also listed by `ckpt check -t`; `describe` and
//!   `sockets` say what a pipe, socket or anonymous inode fd is); `known_state`: every
//!   piece of per-task kernel state ckpt knows, and the refusal of what it does not;
//!   `ns`: namespaces a process does not share with ckpt, refused by name;
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
//! - `release`: kill the tree, or let it run on (`--leave-running`);
//! - `track`: write tracking between dumps (`--pre-dump`, `--prev-images-dir`,
//!   `--track-mem`): the tracker injected into each process, the pages taken from the
//!   previous image.

mod background;
mod blockers;
mod cgroups;
mod container;
mod cores;
mod cow;
mod crew;
mod describe;
mod fdtable;
mod files;
mod freezer;
pub mod hooks;
mod ipc;
pub mod known_state;
mod livecopy;
mod locks;
mod mm;
mod mounts;
mod net;
mod netns;
mod ns;
pub mod page_sink;
mod pages;
mod pidns;
mod preseize;
mod release;
mod remote;
mod rseq;
mod seccomp;
mod seize;
mod sharing;
mod sockets;
mod task_state;
mod threads;
mod timens;
mod timers;
mod track;
mod tree;
mod userns;
mod validate;

pub use blockers::Blocker;
pub use livecopy::LiveSink;

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
    /// A cgroup (v2, or a v1 freezer) holding the tree, frozen while the tree is seized
    /// (`--freeze-cgroup`).
    pub freeze_cgroup: Option<PathBuf>,
    /// `--pre-dump`: arm write tracking, copy the memory while the tree runs on.
    pub pre_dump: bool,
    /// `--prev-images-dir`: the image this one builds on (relative to `dir`).
    pub prev_images_dir: Option<String>,
    /// `--track-mem`: arm write tracking (and keep it armed) in a dump.
    pub track_mem: bool,
    /// Established TCP connections are dumped (TCP_REPAIR, locked by nftables until the
    /// restore) rather than refused (`--tcp-established`).
    pub tcp_established: bool,
    /// The tree is a job on the shell's terminal (`--shell-job`): a pty slave whose
    /// master is outside is recorded as the job's terminal, not refused.
    pub shell_job: bool,
    /// `--orphan-pts-master`: a pty slave of the container's own devpts whose master is
    /// outside (runc's console) is recorded, to be restored with a new master handed to
    /// the caller, not refused.
    pub orphan_pts_master: bool,
    /// The pages file's checksum chunk in bytes (None: 16 MiB): smaller for an image
    /// whose pages are fetched a chunk at a time (a post-copy migration's).
    pub pages_chunk: Option<u64>,
    /// `--external net[INODE]:KEY`: the container's network namespace was made outside
    /// it; recorded by key, not by its contents (`netns.rs`).
    pub external: Vec<String>,
}

impl DumpOptions {
    fn tracking(&self) -> bool {
        self.pre_dump || self.track_mem || self.prev_images_dir.is_some()
    }
}

#[derive(Debug, Default, Clone)]
pub struct DumpStats {
    /// Pages written to pages-1.img.
    pub pages: u64,
    pub bytes: u64,
    /// From the seize to the release (the last detach, or the last SIGKILL sent): how long
    /// the tree waited, stopped. The teardown of a killed tree is not in it.
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

pub(crate) use ckpt_images::units::{ms, ms_between};

/// Everything that keeps the tree of `pid` from being dumped (empty: dumpable), found
/// without stopping or touching any process of it: the same checks a dump makes first.
pub fn check_tree(pid: i32, tcp_established: bool) -> Result<Vec<Blocker>, DumpError> {
    net::allow_established(tcp_established);
    let root = Pid::from_raw(pid);
    let mut out = validate::tree_blockers(root)?;
    validate::known_state_blockers(root, &mut out);
    validate::seccomp_blockers(root, &mut out);
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
    dump_inner(opts, progress, false, None).map(|(stats, _)| stats)
}

/// A dump that leaves the tree stopped once its images are complete (`opts.leave_running`
/// is not looked at): the caller then [`Held::kill`]s it, or [`Held::resume`]s it as it
/// was (also what dropping it does). Live migration keeps the source this way until the
/// destination runs the copy. The tree is ptrace-stopped by this thread: the `Held` must
/// be ended on the thread that called this (ptrace answers only the tracing thread).
/// `live`, for an incremental dump, is told after each pass of the copy before the
/// freeze how far pages-2.img is written (migration sends it meanwhile).
pub fn dump_held(
    opts: &DumpOptions,
    progress: &dyn ckpt_images::progress::Progress,
    live: Option<&dyn LiveSink>,
) -> Result<(DumpStats, Held), DumpError> {
    let (stats, held) = dump_inner(opts, progress, !opts.pre_dump, live)?;
    match held {
        Some(h) => Ok((stats, h)),
        None => Err(refuse(
            "a pre-dump leaves its tree running: nothing to hold",
        )),
    }
}

/// A tree left stopped by [`dump_held`], its images complete.
pub struct Held {
    inner: Option<(tree::Tree, TreeWide, Vec<u64>)>,
    seized_at: Instant,
}

impl Held {
    /// Kills the tree (it was moved elsewhere).
    pub fn kill(mut self) -> Result<(), DumpError> {
        let (tree, mut shared, armed) = self.inner.take().expect("ended once");
        let released = release(tree, false, None);
        shared.files.net.finish(true)?;
        released?;
        track::forget(&armed);
        Ok(())
    }

    /// Lets the tree run on exactly as it was before the dump.
    pub fn resume(mut self) -> Result<(), DumpError> {
        Self::let_run(self.inner.take().expect("ended once"))
    }

    /// How long the tree has been stopped, in ms.
    pub fn stopped_ms(&self) -> f64 {
        ms(self.seized_at)
    }

    fn let_run((tree, mut shared, _): (tree::Tree, TreeWide, Vec<u64>)) -> Result<(), DumpError> {
        shared.files.net.finish(false)?;
        release(tree, true, None).map(|_thawed| ())
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            if let Err(e) = Self::let_run(inner) {
                tracing::warn!("resuming the held tree: {e}");
            }
        }
    }
}

fn dump_inner(
    opts: &DumpOptions,
    progress: &dyn ckpt_images::progress::Progress,
    hold: bool,
    live: Option<&dyn LiveSink>,
) -> Result<(DumpStats, Option<Held>), DumpError> {
    let t0 = Instant::now();
    let pages_unwritten = live.is_some_and(|l| l.pages_unwritten());
    if opts.pid <= 0 {
        return Err(refuse(format!(
            "pid {} is not a valid process id",
            opts.pid
        )));
    }
    let pid = Pid::from_raw(opts.pid);
    net::allow_established(opts.tcp_established);
    net::lock_listeners(opts.tcp_established && !hold && !opts.leave_running && !opts.pre_dump);
    let external = opts
        .external
        .iter()
        .map(|e| netns::parse_external(e))
        .collect::<Result<Vec<_>, _>>()
        .map_err(refuse)?;
    netns::set_external(external);
    abort::phase("checking the process");
    // The whole tree is checked before anything is stopped (and a process that appears
    // only during the seize, on its own then): a refusal touches nothing.
    let parent_image = track::prepare(opts)?;
    net::unkept::new_pass();
    let (identity, mut describer, validated, rss) = validate::before_seize(pid)?;
    let locks_warm = describer.lock_candidates;
    if locks_warm {
        locks::warm_up();
    }
    hooks::run(hooks::Stage::PreDump)?;
    // The copy buffers are sized by what the checks saw (`validate::Copied`); a process
    // born since gets what they hold.
    let descendants = tree::descendants(pid)?;
    // Create the sink before touching the task, so an unusable directory fails early.
    // Dropped unfinished (any error below), it deletes what it wrote.
    let mut sink = ImageSink::create(&opts.dir)?
        .with_sync(opts.sync)
        .with_chunk_size(opts.pages_chunk);
    let mut buffers = pages::Buffers::prepare(rss)?;
    // A second ptrace thread for a tree (`crew.rs`): it seizes, collects and releases
    // every other process. Not for a dump that keeps the tree stopped for its caller
    // (`dump_held`: the caller's thread must be able to end it) nor with write tracking
    // (its tracker is injected between the fds and the pages).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Nor for a tree a v1 freezer holds: its tasks are all seized on this thread
    // (`preseize.rs`), and a tracee answers only its tracer.
    let v1 = opts.freeze_cgroup.as_deref().is_some_and(freezer::is_v1);
    let crew = if cpus > 1 && !hold && !opts.tracking() && !v1 && descendants.len() + 1 >= CREW_MIN
    {
        Some(crew::Crew::start()?)
    } else {
        None
    };
    tracing::debug!(pid = opts.pid, ms = ms(t0), "validated");
    // An incremental dump copies what was written since the previous image while the
    // tree still runs (pages-2.img), so that frozen it copies only what was written
    // during that copy (livecopy.rs).
    let copied_live = match parent_image.as_ref().filter(|_| !opts.pre_dump) {
        Some(parent) => {
            abort::phase("copying memory before the freeze");
            let id = ckpt_images::chain::LIVE_PAGES_ID;
            let mut w = sink.pages(id)?;
            let pids: Vec<Pid> = std::iter::once(pid)
                .chain(descendants.iter().copied())
                .collect();
            let live = livecopy::run(&pids, parent, &mut w, &mut buffers, progress, live)?;
            sink.commit_pages(id, w)?;
            live
        }
        None => livecopy::LiveCopies::default(),
    };

    let t_seize = Instant::now();
    abort::phase("seizing the process");
    // From here every early return drops the seized tasks, which puts each back as it was.
    // Frozen, nothing in the cgroup forks or exits while the tree is walked; thawed once
    // every task is in its ptrace-stop (freezer.rs). Dropped on any error: thawed.
    let cgroup = opts
        .freeze_cgroup
        .clone()
        .or_else(|| freezer::own_cgroup(pid, &descendants));
    let mut frozen = match &cgroup {
        Some(path) => Some(freezer::Frozen::freeze(path, pid)?),
        None => None,
    };
    // A v1 freezer reports no ptrace stop until it thaws: the tree is seized whole while
    // frozen, thawed, and its stops collected by the walk below.
    let _preseized = match frozen.take_if(|f| f.is_v1()) {
        Some(f) => Some(preseize::preseize(pid, f)?),
        None => None,
    };
    let task = seize::Seized::seize(pid)?;
    identity.verify(pid)?;
    let mut tree = tree::seize(
        tree::Member {
            task: crew::Task::Own(Box::new(task)),
            id: identity,
        },
        &mut describer,
        validated,
        crew.as_ref(),
    )?;
    if let Some(f) = frozen {
        f.thaw()?;
    }
    // Sharing an fd table, fs, address space or handlers is made only by clone, never
    // joined later (unshare and exec only part): processes that shared nothing when the
    // whole tree was checked share nothing now. Checked again (n log n kcmps per kind)
    // only when a process was born meanwhile.
    if tree.met_while_seizing {
        let live: Vec<_> = tree.live.iter().map(|m| m.task.pid()).collect();
        sharing::refuse_shared(&live, pid)?;
    }
    tracing::info!(
        pid = opts.pid,
        processes = tree.live.len(),
        zombies = tree.nodes.len() - tree.live.len(),
        ms = ms(t_seize),
        "seized"
    );
    // As CRIU: the network is locked while the tree is stopped when it has a net namespace
    // of its own or connections are taken along; unlocked again if it runs on.
    let net_locked = hooks::installed() && (opts.tcp_established || hooks::own_net_namespace(pid));
    if net_locked {
        hooks::run(hooks::Stage::NetworkLock)?;
    }
    abort::phase("collecting its state");
    ckpt_sys::testhold::hold("seized", &|| false);
    net::unkept::new_pass();
    abort::check()?;

    let mut stats = DumpStats::default();
    let t = Instant::now();
    let (mut pages_w, pages_link) = page_sink::pages(&mut sink, pages::PAGES_ID)?;
    if pages_unwritten && opts.compress.is_none() && !opts.pre_dump {
        pages_w.leave_unread();
    }
    let mut shared = TreeWide {
        memory: ckpt_images::intervals::Covered::default(),
        files: fdtable::FdTable::new(tree.live.iter().map(|m| m.task.pid())),
        locks: locks::AllLocks::stopped(locks_warm)?,
        pids: container::PidMap::host(),
    };
    for n in &tree.nodes {
        if !tree.live.iter().any(|m| m.task.pid().as_raw() == n.pid) {
            shared.files.describer().add_zombie(n.pid);
        }
    }
    // The stopped tree's read of who else holds its pipes runs beside the collection,
    // started now that nothing of the tree can pass a pipe on (`HostPipes`).
    if describer.saw_pipe {
        shared.files.describer().scan_pipes_ahead();
    }
    let mut root_vdso = 0;
    // Copy-on-write pages each child shares with its parent, found before any copy
    // unshares them (cow.rs); then what each process's image holds, for its children.
    let parents: std::collections::HashMap<i32, i32> =
        tree.nodes.iter().map(|n| (n.pid, n.ppid)).collect();
    let live: std::collections::HashSet<i32> =
        tree.live.iter().map(|m| m.task.pid().as_raw()).collect();
    let mut same: std::collections::HashMap<i32, cow::Ranges> = Default::default();
    let mut frames: std::collections::HashMap<i32, Option<cow::Frames>> = Default::default();
    // Not with write tracking: a pre-dump copies while the tree runs (a parent's write
    // would then land in pages its child's image points to), and an incremental image's
    // pages may live in an earlier one.
    let cow_children = if opts.tracking() {
        &tree.live[..0]
    } else {
        &tree.live[1..]
    };
    for m in cow_children {
        let pid = m.task.pid();
        if let Some(&pp) = parents.get(&pid.as_raw()).filter(|pp| live.contains(pp)) {
            let f = match frames.entry(pp) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    e.insert(cow::frames(Pid::from_raw(pp))?)
                }
            };
            if let Some(f) = f {
                same.insert(pid.as_raw(), cow::same_pages(pid, f)?);
            }
        }
    }
    drop(frames);

    // A container (the root is pid 1 of its own pid namespace): what it owns, and the
    // pids as it sees them, which the images hold.
    let t_ns = Instant::now();
    // Pid namespaces nested below the tree's: checked again now that the tree is
    // stopped, and each process's pids there recorded (`pidns.rs`).
    let level = pidns::level(pid)?;
    let mut refused = blockers::Blockers::default();
    let live: Vec<Pid> = tree
        .nodes
        .iter()
        .filter(|n| !n.zombie)
        .map(|n| Pid::from_raw(n.pid))
        .collect();
    pidns::blockers(&live, &mut refused);
    refused.refuse_if_any(pid)?;
    pidns::record(&mut tree.nodes, level + 1)?;
    let mut inside_new_pidns = false;
    let (container, pidmap) = match container::root_namespaces(pid) {
        Some(_) => {
            let mut refused = blockers::Blockers::default();
            let record = container::record(pid, &mut refused);
            refused.refuse_if_any(pid)?;
            mounts::write_files(pid, &record.mounts, &mut sink)?;
            let mut record = record;
            if record.clone_flags & libc::CLONE_NEWIPC as u64 != 0 {
                record.ipc_objects = ipc::write(pid, &mut sink)?;
            }
            // A root of its own: the first mount recorded is "/".
            if record.mounts.first().is_some_and(|m| m.mountpoint == "/") {
                shared.files.container_mounts = Some(mounts::ids(pid));
            }
            let map = container::PidMap::of(tree.live.iter().map(|m| m.task.pid()), level)?;
            for n in &mut tree.nodes {
                container::node_inner(n, &map)?;
            }
            tracing::info!(
                flags = record.clone_flags,
                ms = ms(t_ns),
                "container namespaces recorded"
            );
            (Some(record), map)
        }
        None if container::in_ckpt_pidns(pid).is_some() => {
            let mut refused = blockers::Blockers::default();
            container::ckpt_pidns_blockers(pid, &mut refused);
            refused.refuse_if_any(pid)?;
            let map = container::PidMap::of(tree.live.iter().map(|m| m.task.pid()), level)?;
            for n in &mut tree.nodes {
                container::node_inner(n, &map)?;
            }
            inside_new_pidns = true;
            (None, map)
        }
        None => (None, container::PidMap::host()),
    };
    pidns::check_forkers(&tree.nodes)?;
    shared.pids = pidmap;
    // A tree's per-process record files go into one procs.img (`ImageSink::
    // pack_per_process`): 400 files for 100 processes cost more than all the rest of
    // writing them. One process keeps its files of its own.
    if tree.live.len() > 1 {
        sink.pack_per_process();
    }
    let cgroups = {
        let t_cg = Instant::now();
        let mut refused = blockers::Blockers::default();
        let members: Vec<Pid> = tree.live.iter().map(|m| m.task.pid()).collect();
        let record = cgroups::record(pid, &members, &|p| shared.pids.pid(p), true, &mut refused);
        refused.refuse_if_any(pid)?;
        tracing::info!(
            hierarchies = record.len(),
            ms = ms(t_cg),
            "cgroups recorded"
        );
        record
    };
    let mut held: std::collections::HashMap<i32, cow::Ranges> = Default::default();
    let mut trackers = Vec::new();
    let mut deferred = Vec::new();
    // With a crew, every process is gathered first, the crew's share on its thread while
    // this one does its own; then each is finished here in tree order.
    let mut gathered: Vec<Option<Gathering>> = Vec::new();
    if let Some(crew) = &crew {
        for m in &tree.live {
            gathered.push(match m.task {
                crew::Task::Crew(pid) => {
                    let opts = opts.clone();
                    Some(Gathering::Crew(crew.with(pid, move |task| {
                        gather(task, &opts, None, None, None)
                    })))
                }
                crew::Task::Own(_) => None,
            });
        }
        for (m, g) in tree.live.iter_mut().zip(gathered.iter_mut()) {
            if let crew::Task::Own(task) = &mut m.task {
                *g = Some(Gathering::Done(Box::new(gather(
                    task, opts, None, None, None,
                )?)));
            }
        }
    }
    for (i, m) in tree.live.iter_mut().enumerate() {
        let pid = m.task.pid().as_raw();
        let parent = (i > 0)
            .then(|| parents.get(&pid))
            .flatten()
            .and_then(|pp| held.get(pp))
            .zip(same.get(&pid));
        let g = match gathered.get_mut(i).and_then(Option::take) {
            Some(Gathering::Done(g)) => *g,
            Some(Gathering::Crew(p)) => p.wait()?,
            None => {
                let task = m.task.own().expect("gathered by the crew");
                let early = (opts.tracking()).then_some(&mut shared.files);
                let live = copied_live.get(task.pid());
                gather(task, opts, parent_image.as_ref(), live, early)?
            }
        };
        let one = finish(
            m.task.pid(),
            g,
            opts,
            &mut sink,
            &mut pages_w,
            Dedup {
                tree: &mut shared,
                parent,
                earlier: parent_image.as_ref(),
            },
            &mut buffers,
            progress,
        )?;
        held.insert(pid, one.held);
        trackers.extend(one.tracker);
        if let Some(runs) = one.deferred {
            deferred.push((m.task.pid(), shared.pids.pid(pid), runs));
        }
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
    fdtable::unix::finish(&mut shared.files, &parents, &|p| shared.pids.pid(p))?;
    fdtable::pidfd::finish(&mut shared.files, &|p| shared.pids.pid(p));
    fdtable::tty::finish(
        &mut shared.files,
        &parents,
        &|p| shared.pids.pid(p),
        opts.shell_job,
        opts.orphan_pts_master,
    )?;
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

    let xsave = match &tree.live[0].task {
        crew::Task::Own(root) => root.xsave(),
        crew::Task::Crew(_) => unreachable!("the root is seized by the dump's thread"),
    };
    let inventory = pb::Inventory {
        format_version: 0, // set by the sink
        ckpt_version: env!("CARGO_PKG_VERSION").into(),
        root_pid: shared.pids.pid(opts.pid),
        pids: tree
            .live
            .iter()
            .map(|m| shared.pids.pid(m.task.pid().as_raw()))
            .collect(),
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
        pre_dump: opts.pre_dump,
        parent: parent_image.as_ref().map(|p| p.link.clone()),
        trackers,
        container,
        new_pidns: inside_new_pidns,
        cgroups,
        packed: Vec::new(), // set by the sink
    };
    let pids_dumped = inventory.pids.len();
    let host_ends = netns::host_ends(inventory.container.as_ref());
    let armed: Vec<u64> = inventory.trackers.iter().map(|t| t.inode).collect();
    let mut tree = Some(tree);
    if opts.pre_dump {
        // Tracking is armed in every process: from here a write is seen, so the memory
        // is copied while the tree runs on.
        let t_rel = Instant::now();
        shared.files.net.finish(false)?;
        let thawed = release(tree.take().expect("released once"), true, crew.as_ref())?;
        stats.frozen_ms = ms_between(t_seize, thawed);
        tracing::debug!(ms = ms(t_rel), "released to run during the copy");
        let _background = background::Background::enter();
        for (pid, raw, runs) in deferred {
            abort::phase("copying memory");
            abort::check()?;
            let copied = write_pages(
                pid,
                raw,
                &runs,
                &[],
                opts,
                &mut sink,
                &mut pages_w,
                &mut buffers,
                progress,
            )?;
            stats.pages += copied;
        }
    }
    page_sink::commit(&mut sink, pages::PAGES_ID, pages_w, pages_link)?;
    stats.bytes = stats.pages * ckpt_images::PAGE_SIZE as u64;
    stats.memory_ms = ms(t);
    // The last point where an abort (SIGINT/SIGTERM/SIGHUP) is honoured: past it the
    // images are complete and the release runs to its end.
    abort::phase("writing the images");
    abort::check()?;
    sink.finish(inventory)?;
    tracing::debug!(ms = ms(t), "images written");
    hooks::run(hooks::Stage::PostDump)?;
    // The images are complete: from here a failure no longer undoes the dump.
    let mut held = None;
    if hold && tree.is_some() {
        stats.frozen_ms = ms(t_seize);
        held = Some(Held {
            inner: tree.take().map(|tree| (tree, shared, armed)),
            seized_at: t_seize,
        });
    } else if let Some(tree) = tree.take() {
        let t = Instant::now();
        // A tree left running gets its connections back before it runs (a send in repair
        // mode fails); a killed one closes them in repair mode (silently), lock kept.
        // (`shared`, declared after the tree, is dropped before it on an error: connections
        // are switched back and unlocked while their processes are still stopped.)
        let thawed = if opts.leave_running {
            shared.files.net.finish(false)?;
            release(tree, true, crew.as_ref())?
        } else {
            let released = release(tree, false, crew.as_ref());
            shared.files.net.finish(true)?;
            let thawed = released?;
            track::forget(&armed);
            netns::wait_gone(&host_ends);
            thawed
        };
        tracing::debug!(ms = ms(t), leave_running = opts.leave_running, "released");
        if net_locked && opts.leave_running {
            hooks::run(hooks::Stage::NetworkUnlock)?;
        }
        stats.frozen_ms = ms_between(t_seize, thawed);
    }
    stats.total_ms = ms(t0);
    tracing::info!(
        pid = opts.pid,
        processes = pids_dumped,
        pages = stats.pages,
        mib = ckpt_images::units::mib(stats.bytes),
        injected = stats.injected,
        frozen_ms = stats.frozen_ms,
        total_ms = stats.total_ms,
        pre_dump = opts.pre_dump,
        held = held.is_some(),
        "dump done"
    );
    Ok((stats, held))
}

/// Lets the whole tree run on (`--leave-running`), or kills it: every task first, then
/// waits for each, so they die in parallel. Returns when the tree stopped being frozen:
/// once every task is detached, or once every SIGKILL is sent (the teardown after it,
/// the kernel freeing the memory, is no longer time the workload waits).
fn release(
    tree: tree::Tree,
    leave_running: bool,
    crew: Option<&crew::Crew>,
) -> Result<Instant, DumpError> {
    let _finish = abort::Shield::new();
    let mut first_err = None;
    let thawed;
    // The crew's share, in tree order: released on its thread, alongside this one's.
    let theirs: Vec<Pid> = tree
        .live
        .iter()
        .filter_map(|m| match m.task {
            crew::Task::Crew(pid) => Some(pid),
            crew::Task::Own(_) => None,
        })
        .collect();
    let crew = crew.filter(|_| !theirs.is_empty());
    if leave_running {
        let detached = crew
            .map(|c| c.run(move |tasks| crew_each(tasks, &theirs, seize::Seized::release_running)));
        for m in tree.live.into_iter().rev() {
            if let crew::Task::Own(task) = m.task {
                if let Err(e) = task.release_running() {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(Err(e)) = detached.map(crew::Pending::wait) {
            first_err.get_or_insert(e);
        }
        thawed = Instant::now();
    } else {
        let killed = crew.map(|c| {
            let pids = theirs.clone();
            c.run(move |tasks| crew_kill(tasks, &pids))
        });
        let mut dying = Vec::with_capacity(tree.live.len());
        for mut m in tree.live {
            let killed = match &mut m.task {
                crew::Task::Own(task) => task.kill_now(),
                crew::Task::Crew(_) => Ok(()),
            };
            match killed {
                Ok(()) => dying.push(m),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        // The crew's kills: those it could not send left their tasks running, detached.
        let mut not_killed = Vec::new();
        if let Some(k) = killed {
            match k.wait() {
                Ok(failed) => not_killed = failed,
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        for (pid, e) in not_killed.drain(..) {
            dying.retain(|m| m.task.pid() != pid);
            first_err.get_or_insert(e);
        }
        thawed = Instant::now();
        // Most of a dying task's wait is the kernel freeing its memory, page by page:
        // ckpt frees it too, in parallel (process_mrelease), so that it takes about half
        // as long. Only a speed-up: the memory goes anyway.
        for m in &dying {
            if let Err(e) = ckpt_sys::process::release_dying_memory(m.id.pidfd()) {
                tracing::debug!(pid = %m.task.pid(), "{e}");
            }
        }
        // The crew reaps its share meanwhile: a container's init, dying, waits in the
        // kernel until every other task of its pid namespace is reaped.
        let reaped =
            crew.map(|c| c.run(move |tasks| crew_each(tasks, &theirs, seize::Seized::wait_dead)));
        // Children first: a container's init, dying, waits in the kernel until every
        // other task of its pid namespace is reaped, and those are ours to reap (we
        // trace them).
        for m in dying.into_iter().rev() {
            if let crew::Task::Own(task) = m.task {
                if let Err(e) = task.wait_dead() {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(Err(e)) = reaped.map(crew::Pending::wait) {
            first_err.get_or_insert(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(thawed),
    }
}

/// `end` (a detach, or the wait for a killed task's death) for each of the crew's tasks,
/// `pids` in tree order: children first.
fn crew_each(
    tasks: &mut crew::Tasks,
    pids: &[Pid],
    end: fn(seize::Seized) -> Result<(), DumpError>,
) -> Result<(), DumpError> {
    let mut first_err = None;
    for pid in pids.iter().rev() {
        if let Some(task) = tasks.remove(pid) {
            if let Err(e) = end(task) {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// SIGKILL to each of the crew's tasks; returns those it could not kill (dropped: put
/// back and detached, as this thread's own are).
fn crew_kill(tasks: &mut crew::Tasks, pids: &[Pid]) -> Result<Vec<(Pid, DumpError)>, DumpError> {
    let mut failed = Vec::new();
    for pid in pids {
        if let Some(task) = tasks.get_mut(pid) {
            if let Err(e) = task.kill_now() {
                tasks.remove(pid);
                failed.push((*pid, e));
            }
        }
    }
    Ok(failed)
}

/// What the processes of a tree share, met process after process: shared memory objects
/// (pages stored once), open file descriptions (one record each) and /proc/locks.
struct TreeWide {
    memory: ckpt_images::intervals::Covered,
    files: fdtable::FdTable,
    locks: locks::AllLocks,
    /// The pids the images hold (a container's own view of them).
    pids: container::PidMap,
}

/// What a process's pages may leave out: the pages of shared memory an earlier process
/// of the tree stored, and a child's pages that are its parent's (what the parent's image
/// holds, and the pages the child shares with it: `cow.rs`), and the pages an earlier
/// image of a chain holds and tracking says are unchanged (`track.rs`).
struct Dedup<'a> {
    tree: &'a mut TreeWide,
    parent: Option<(&'a cow::Ranges, &'a cow::Ranges)>,
    earlier: Option<&'a track::Parent>,
}

/// What one process added to the dump.
struct OneProcess {
    /// What its image holds (stored or its parent's), for its children.
    held: cow::Ranges,
    pages: u64,
    injected: u64,
    vdso_xxh3: u64,
    /// Its write tracker, armed (`track.rs`).
    tracker: Option<pb::Tracker>,
    /// A pre-dump's pages, copied once the tree runs again.
    deferred: Option<Vec<pages::Run>>,
}

/// Copies `runs` of `pid` into the pages file and writes its pagemap, with the runs of
/// `from_parent` (pages that are its parent's: `cow.rs`) after them.
#[allow(clippy::too_many_arguments)]
fn write_pages(
    pid: Pid,
    raw: i32,
    runs: &[pages::Run],
    from_parent: &[(u64, u64)],
    opts: &DumpOptions,
    sink: &mut ImageSink,
    pages_w: &mut ckpt_images::PagesWriter,
    buffers: &mut pages::Buffers,
    progress: &dyn ckpt_images::progress::Progress,
) -> Result<u64, DumpError> {
    let t = Instant::now();
    let mut pagemap = sink.records(&names::pagemap(raw), Kind::Pagemap)?;
    let copied = pages::copy(
        pid,
        runs,
        &mut pagemap,
        pages_w,
        opts.compress,
        buffers,
        progress,
        opts.pre_dump,
    )?;
    for &(s, e) in from_parent {
        pagemap.write(&pb::PageRun {
            vaddr: s,
            nr_pages: (e - s) / ckpt_images::PAGE_SIZE as u64,
            offset: 0,
            from_parent: true,
        })?;
    }
    sink.commit_records(&names::pagemap(raw), pagemap)?;
    tracing::info!(
        %pid,
        inherited_pages = from_parent
            .iter()
            .map(|(s, e)| (e - s) / ckpt_images::PAGE_SIZE as u64)
            .sum::<u64>(),
        ms = ms(t),
        pages = copied.pages,
        runs = copied.runs,
        read_ms = ckpt_images::units::tenths(copied.read_ms),
        write_ms = ckpt_images::units::tenths(copied.write_ms),
        "memory written"
    );
    Ok(copied.pages)
}

/// What one stopped process tells before its images are written: its /proc state, what
/// ptrace and the injected calls give (asked by the thread that traces it, which may be
/// the crew's: `crew.rs`), and its page runs.
struct Gathered {
    maps: Vec<proc::Mapping>,
    mm: mm::Mm,
    /// Its fds, when collected before the injections (a tracker injected is an fd).
    files: Option<Files>,
    process_core: pb::ProcessCore,
    thread_cores: Vec<pb::ThreadCore>,
    injected: remote::Injected,
    round: Option<track::Round>,
    plan: Vec<pages::Run>,
}

/// A process being gathered: done, or by the crew (answer to come).
enum Gathering {
    Done(Box<Gathered>),
    Crew(crew::Pending<Gathered>),
}

/// The smallest tree dumped by two ptrace threads (`crew.rs`): below it, the thread's
/// start costs more than it saves.
const CREW_MIN: usize = 8;

/// A process's fds and the locks they account for.
type Files = (Vec<pb::Fd>, locks::Accounted);

fn collect_files(pid: Pid, table: &mut fdtable::FdTable) -> Result<Files, DumpError> {
    let (mut fds, lock_texts) = files::collect(pid, table)?;
    let accounted = locks::attach(pid, &mut fds, &lock_texts)?;
    Ok((fds, accounted))
}

/// Collects one stopped process from /proc, ptrace and injected calls, on the thread
/// that traces it. With `files` (a dump whose tracking injects a tracker), its fds are
/// read first; else `finish` reads them.
fn gather(
    task: &mut seize::Seized,
    opts: &DumpOptions,
    parent_image: Option<&track::Parent>,
    live: Option<&livecopy::Live>,
    files: Option<&mut fdtable::FdTable>,
) -> Result<Gathered, DumpError> {
    let pid = task.pid();
    let t = Instant::now();
    let stat = proc::stat(pid)?;
    // Read once: parsed for the core and the injection, every field checked as text.
    let (status, status_text) = proc::status_text(pid)?;
    let mut maps = proc::smaps(pid)?;
    // As read, with the write-protect letters of a tracker of ckpt's own (`track.rs`).
    let seen_maps = maps.clone();
    track::hide_own_letters(pid, &mut maps);
    known_state::check_task(
        pid,
        &status_text,
        &maps,
        &known_state::Allowed(opts.allow_unknown_state.clone()),
    )?;
    let mm = mm::collect(pid, &stat, &maps)?;
    let files = files.map(|table| collect_files(pid, table)).transpose()?;
    let threads = cores::threads(task)?;
    let tids: Vec<Pid> = std::iter::once(pid)
        .chain(task.threads.iter().map(|t| t.tid))
        .collect();
    let seccomp = seccomp::collect(pid, &tids)?;
    tracing::debug!(
        %pid,
        ms = ms(t),
        vmas = mm.vmas.len(),
        threads = threads.len(),
        "collected /proc and ptrace state"
    );

    let t = Instant::now();
    let wanted_sigs = status.sigign | status.sigcgt;
    abort::phase("injecting syscalls");
    abort::check()?;
    let track_plan = if opts.tracking() {
        Some(track::plan(pid, parent_image, live)?)
    } else {
        None
    };
    let inject_tracker = track_plan.as_ref().is_some_and(|p| p.needs_injection());
    let locked_kb = status.vmlck.unwrap_or(0);
    let injected = remote::collect(
        task,
        &maps,
        &mm.vdso,
        (wanted_sigs, locked_kb),
        inject_tracker,
    )?;
    tracing::debug!(%pid, ms = ms(t), calls = injected.calls, "injected syscalls");

    // Protect first, then plan and copy: a write during the copy is seen by the next round.
    let round = match track_plan {
        Some(p) => Some(track::arm(
            pid,
            &seen_maps,
            &mm.vmas,
            p,
            injected.tracker_fd,
        )?),
        None => None,
    };
    abort::phase("copying memory");
    let plan = pages::plan(pid, &mm.vmas)?;
    let mut process_core = cores::process(pid, &stat, &status, &injected, threads.len())?;
    process_core.seccomp_filters = seccomp.filters;
    process_core.stop_signal = task.stop_signal;
    let mut thread_cores = cores::thread_records(threads, &injected)?;
    for (t, (mode, chain)) in thread_cores.iter_mut().zip(seccomp.threads) {
        t.seccomp_mode = mode;
        t.seccomp_chain = chain;
    }
    Ok(Gathered {
        maps,
        mm,
        files,
        process_core,
        thread_cores,
        injected,
        round,
        plan,
    })
}

/// Writes the core, mm, pagemap and files images of a gathered process; its pages go to
/// the tree's one pages file. Runs on the dump's thread, process after process in tree
/// order (what the tree shares is met in that order).
#[allow(clippy::too_many_arguments)]
fn finish(
    pid: Pid,
    g: Gathered,
    opts: &DumpOptions,
    sink: &mut ImageSink,
    pages_w: &mut ckpt_images::PagesWriter,
    dedup: Dedup,
    buffers: &mut pages::Buffers,
    progress: &dyn ckpt_images::progress::Progress,
) -> Result<OneProcess, DumpError> {
    let parent_image = dedup.earlier;
    // The pid its images are named and recorded by: as its pid namespace sees it.
    let raw = dedup.tree.pids.pid(pid.as_raw());
    let Gathered {
        maps,
        mut mm,
        files,
        mut process_core,
        mut thread_cores,
        injected,
        round,
        plan,
    } = g;
    let (fds, accounted) = match files {
        Some(f) => f,
        None => collect_files(pid, &mut dedup.tree.files)?,
    };
    let plan = pages::drop_stored_shared(plan, &mm.vmas, &mut dedup.tree.memory);
    let (plan, from_parent) = match dedup.parent {
        Some((parent_held, same)) => cow::split(plan, &mm.vmas, same, parent_held),
        None => (plan, Vec::new()),
    };
    let plan = match &round {
        Some(r) => {
            let (copy, refs) = track::split(plan, r);
            if parent_image.is_some() {
                track::write_parentmap(sink, raw, &refs)?;
            }
            copy
        }
        None => plan,
    };
    let held = cow::held(&plan, &from_parent);
    let (pages, deferred) = if opts.pre_dump {
        (0, Some(plan))
    } else {
        let n = write_pages(
            pid,
            raw,
            &plan,
            &from_parent,
            opts,
            sink,
            pages_w,
            buffers,
            progress,
        )?;
        (n, None)
    };

    let kinds: Vec<pb::FdKind> = fds
        .iter()
        .filter(|f| f.desc != 0)
        .filter_map(|f| pb::FdKind::try_from(dedup.tree.files.desc(f.desc).kind).ok())
        .collect();
    if locks::may_hold_unlisted(&maps, &kinds) {
        locks::through_mappings(pid, &accounted, &mut dedup.tree.locks, &maps, &mut mm.vmas)?;
    }
    abort::phase("writing the images");
    abort::check()?;
    pidns::record_threads(&mut thread_cores, dedup.tree.pids.level() + 1)?;
    container::core_inner(&mut process_core, &mut thread_cores, &dedup.tree.pids);
    let mut w = sink.records(&names::core(raw), Kind::Core)?;
    w.write(&process_core)?;
    for t in &thread_cores {
        w.write(t)?;
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
        held,
        pages,
        injected: injected.calls,
        vdso_xxh3: mm.vdso.xxh3,
        tracker: round.map(|r| r.tracker),
        deferred,
    })
}

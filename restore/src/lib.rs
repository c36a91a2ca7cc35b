//! Restore: verify images -> seed -> puppet -> release.
//!
//! Each restored process starts as a forked copy of ckpt (the seed, `seed.rs`) that sets up
//! what a process can do for itself and waits; ckpt then drives it over ptrace (the
//! puppet phase, `puppet.rs`) until it is the dumped process, and lets it go. A tree:
//! `tree.rs` plans who forks whom, the seeds fork each other (`seed/family.rs`), ckpt
//! waits for their reports and seizes them (`seeds.rs`), shared memory is made once
//! (`shared.rs`), and any failure before the release kills everything (`rollback.rs`).
//! Sockets and epolls are kinds of the fd table (`fdtable.rs`, `net/`); established TCP
//! connections leave repair mode and their lock just before the release (`net/resume.rs`).

mod cgroups;
mod chain;
mod container;
mod cow;
mod fdtable;
mod feed;
mod fill;
pub mod hooks;
mod image;
mod ipc;
mod lazy;
mod locks;
mod mounts;
mod nested_pidns;
mod net;
mod netns;
mod pidheld;
mod pidns;
mod puppet;
mod puppets;
mod regs;
mod rollback;
mod seed;
mod seeds;
mod shared;
mod sharing;
mod shelljob;
mod task_state;
mod timers;
mod tree;
mod userns;
mod verify;

use ckpt_images::{pb, ImageDir, PagesReader};
use ckpt_sys::ptrace;
use ckpt_sys::Pid;
use nix::sys::wait::{waitpid, WaitStatus};
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Instant;
use tracing::{debug, info};

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
    /// Run the process before its anonymous memory is back; serve it through
    /// userfaultfd (lazy.rs).
    pub lazy: bool,
    /// Compare the restored process's kernel-visible state with the image before it is
    /// let go (verify.rs); `restore --no-verify` turns it off.
    pub verify: bool,
    /// `--inherit-fd fd[N]:KEY`: ckpt's fd N stands for the external object KEY of the
    /// image (a pipe the dumped tree shared with the outside).
    pub inherit_fds: Vec<(i32, String)>,
    /// `--new-pidns`: rebuild the tree in a fresh pid namespace under an init of ckpt's
    /// (`pidns.rs`), its pids as dumped inside, whatever they are outside.
    pub new_pidns: bool,
    /// `--ext-mount-map KEY:PATH`: a container's external mount KEY is at PATH here.
    pub ext_mount_map: Vec<(String, String)>,
    /// `--veth-pair IN=OUT`: the host end of the container's veth IN is named OUT.
    pub veth_pairs: Vec<(String, String)>,
    /// `--veth-bridge OUT=BRIDGE`: host end OUT is made a port of bridge BRIDGE.
    pub veth_bridges: Vec<(String, String)>,
    /// The root forked as ckpt's sibling (CLONE_PARENT): a child of whoever started ckpt,
    /// which waits for it (CRIU's --restore-sibling, runc's rst_sibling). With `detach`.
    pub sibling: bool,
    /// `--shell-job`: the image's job terminal is the one ckpt runs in (`shelljob.rs`),
    /// and the root stays in ckpt's session, detached or not.
    pub shell_job: bool,
    /// `--page-feed SOCKET` (with `lazy`): the pages file is still arriving; the feeder
    /// at SOCKET says which chunks are in (`feed.rs`, post-copy migration).
    pub page_feed: Option<PathBuf>,
    /// `--cgroup-root [CTL:]PATH`: the tree's own cgroups are made there instead of at
    /// their dumped paths (`cgroups.rs`).
    pub cgroup_root: Vec<String>,
    /// `--console-socket PATH`: a container console's new master (`fdtable/tty.rs`) is
    /// sent there (SCM_RIGHTS over a stream connection, as runc sends a console).
    pub console_socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Detached(i32),
    Exited(i32),
    Killed(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Sys(#[from] ckpt_sys::Error),
    #[error(transparent)]
    Image(#[from] ckpt_images::ImageError),
    #[error("{0}")]
    Refused(String),
}

type R<T> = Result<T, RestoreError>;

pub fn restore(opts: &RestoreOptions) -> R<Outcome> {
    restore_with_progress(opts, &ckpt_images::progress::Quiet)
}

/// `restore`, reporting the memory copy to `progress`.
pub fn restore_with_progress(
    opts: &RestoreOptions,
    progress: &dyn ckpt_images::progress::Progress,
) -> R<Outcome> {
    let t0 = Instant::now();
    ckpt_sys::abort::phase("reading the images");
    let dir = ImageDir::open_deferring_pages(&opts.dir)?;
    let chain = chain::open(&dir, opts.lazy)?;
    let inv = dir.inventory();
    // A tree dumped inside a ckpt-init's pid namespace has only the pids it had there.
    let forced;
    let opts = if inv.new_pidns && !opts.new_pidns {
        tracing::info!("dumped inside a pid namespace of ckpt's: restored into a new one");
        forced = RestoreOptions {
            new_pidns: true,
            ..opts.clone()
        };
        &forced
    } else {
        opts
    };
    image::check_tree(&dir)?;
    let tree = tree::plan(
        inv,
        &dir.path(ckpt_images::names::INVENTORY)
            .display()
            .to_string(),
    )?;
    let pid = inv.root_pid;
    if opts.lazy && tree.processes() > 1 {
        return Err(RestoreError::Refused(format!(
            "{}: --lazy restores one process; this image holds a tree of {} (restore it \
             without --lazy)",
            dir.path(ckpt_images::names::INVENTORY).display(),
            tree.processes()
        )));
    }
    container::check(inv, opts.new_pidns, opts.lazy)?;
    let (external_net, inherit_fds) = container::external_net(inv, &opts.inherit_fds)?;
    let cgroup_plan = cgroups::plan(inv, &opts.cgroup_root)?;
    let cgroup_dirs = cgroup_plan.root_dirs();
    let t_plan = Instant::now();
    let mut ns_plan = match &inv.container {
        Some(c) => Some(container::plan(
            &dir,
            c,
            &mounts::Places {
                ext_map: opts.ext_mount_map.clone(),
            },
            &netns::Names {
                pairs: opts.veth_pairs.clone(),
                bridges: opts.veth_bridges.clone(),
            },
        )?),
        None => None,
    };
    if ns_plan.is_some() {
        debug!(
            ms = ckpt_images::units::ms(t_plan),
            "container namespaces: planned"
        );
    }
    if opts.page_feed.is_some() && !opts.lazy {
        return Err(RestoreError::Refused(
            "--page-feed serves a lazy restore: add --lazy".into(),
        ));
    }
    // The processes' pages lie back to back in one pages file, covering it.
    let mut imgs: Vec<image::ProcessImage> = Vec::with_capacity(inv.pids.len());
    for &p in &inv.pids {
        let first = imgs
            .last()
            .map_or(ckpt_images::PAGE_SIZE as u64, |i| i.pages_end);
        imgs.push(image::load(&dir, p, first)?);
    }
    let no_ipc = ipc::Plan::default();
    let ipc_plan = ns_plan.as_ref().map_or(&no_ipc, |p| &p.ipc);
    for img in &imgs {
        ipc::check_attached(ipc_plan, img.core.pid, &img.vmas)?;
    }
    let last = imgs.last().expect("at least the root");
    if last.pages_end != last.stream_len {
        return Err(RestoreError::Refused(format!(
            "{}: runs end at byte {} of the {} byte pages file",
            dir.path(&ckpt_images::names::pagemap(last.core.pid))
                .display(),
            last.pages_end,
            last.stream_len
        )));
    }
    // A child's pages that were its parent's point at the parent's bytes (cow.rs).
    let parents: Vec<Option<usize>> = tree
        .live()
        .map(|n| n.parent.and_then(|p| tree.nodes[p].live))
        .collect();
    cow::resolve(&mut imgs, &parents)?;
    if !opts.lazy {
        let mut seen = ckpt_images::intervals::Covered::default();
        for img in &mut imgs {
            img.drop_shared_duplicates(&mut seen);
            // A compressed file's frames hold every process's pages: each process
            // decompresses only those that hold some of its own.
            if let Some(frames) = img.frames.as_mut() {
                let runs = image::by_offset(&img.runs);
                frames.retain(|f| {
                    let end = f.raw_offset + f.raw_len;
                    let first = runs.partition_point(|r| {
                        r.offset + r.nr_pages * ckpt_images::PAGE_SIZE as u64 <= f.raw_offset
                    });
                    runs.get(first).is_some_and(|r| r.offset < end)
                });
            }
        }
    }
    let pages_id = imgs[0].pages_id;
    if let Some(other) = imgs.iter().find(|i| i.pages_id != pages_id) {
        return Err(RestoreError::Refused(format!(
            "{}: pid {} keeps its pages in pages-{}.img, pid {pid} in pages-{pages_id}.img: \
             a tree has one pages file",
            dir.path(&ckpt_images::names::pagemap(other.core.pid))
                .display(),
            other.core.pid,
            other.pages_id
        )));
    }
    if opts.lazy && imgs[0].frames.is_some() {
        return Err(RestoreError::Refused(format!(
            "{}: --lazy serves pages straight from the image, which was dumped with \
             --compress; restore it without --lazy",
            pages_name(&dir, pages_id)
        )));
    }
    check_vdso(inv)?;
    // A container's files are found through its mounts (`mounts::host_view`); those of
    // mounts made at restore are checked by the seed that opens them.
    let view = |p: &str| match &ns_plan {
        Some(n) => mounts::host_view(&n.mounts, p),
        None => Some(p.to_string()),
    };
    for img in &imgs {
        check_files(img, &view)?;
    }
    let (pages_file, pages_path) = dir.open_pages(pages_id)?;
    let (map, chain_files) = if chain.ancestors.is_empty() {
        (
            ckpt_sys::process::map_file(&pages_file)?,
            chain::ChainFiles::own(),
        )
    } else {
        chain::map_all(&dir, &chain, &pages_file)?
    };
    // A pages file fed by a post-copy migration whose dump did not read the memory
    // lists no chunk checksums: they come with the chunks (feed.rs).
    let fed = opts.lazy
        && opts.page_feed.is_some()
        && imgs[0].pages_entry.chunk_xxh3.is_empty()
        && imgs[0].pages_entry.size > 0;
    if fed {
        feed::placeholders(&mut imgs[0].pages_entry).map_err(RestoreError::Refused)?;
    }
    let pages_entry = &imgs[0].pages_entry.clone();
    let own_pages = &map[..(pages_entry.size as usize).min(map.len())];
    if opts.lazy {
        // The pager verifies each chunk before it serves a page of it (lazy.rs).
        ckpt_images::chunks::check_entry(&pages_path, pages_entry)?;
        if let Some(sock) = &opts.page_feed {
            feed::connect(sock, pages_entry.chunk_xxh3.len(), fed)
                .map_err(RestoreError::Refused)?;
        }
    } else {
        // Every byte is checked before any process exists, on every CPU, a chunk at a time
        // (populated in one call, hashed, then unmapped again: the fill maps the file
        // window by window too, so ckpt never holds the whole file).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ckpt_images::chunks::verify(
            &pages_path,
            own_pages,
            pages_entry,
            cpus,
            &|off, len| ckpt_sys::process::populate_read(&map, off, len),
            &|off, len| ckpt_sys::process::release_range(&map, off, len),
        )?;
        debug!(ms = ckpt_images::units::ms(t0), "pages file verified");
    }
    chain::attach(&dir, &mut imgs, &chain_files)?;
    let pages = PagesReader::new(&pages_path, &map)?;
    let mut shared = if imgs.len() > 1 {
        Some(shared::SharedObjects::create(
            &imgs,
            opts.new_pidns.then_some(1),
        )?)
    } else {
        None
    };

    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ckpt_sys::Error::sys("pipe2", e))?;
    let own: Vec<(u64, u64)> = ckpt_sys::proc::smaps(nix::unistd::getpid())?
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    // Memory the seeds share with their children copy-on-write (sharing.rs): its ranges
    // are kept free of trampolines.
    // The seeds share memory through a userfaultfd each, which a process in a
    // container's user namespace may not make (`userns.rs`).
    let mut sharing = (!opts.lazy && imgs.len() > 1 && !userns::owned(inv))
        .then(|| sharing::plan(&tree, &imgs, &own, fill::thp_mode()))
        .flatten();
    let mut busy = own.clone();
    busy.extend(sharing.iter().flat_map(|s| s.reserved.iter().copied()));
    let mut plans = Vec::with_capacity(imgs.len());
    for (node, img) in tree.live().zip(&imgs) {
        let tramp = pick_trampoline(img, &busy)?;
        plans.push(seed_plan(
            img,
            node,
            tramp,
            err_w.as_raw_fd(),
            opts.detach && !opts.shell_job,
        ));
    }
    let descs = image::load_table(&dir)?;
    // Connections into a namespace made outside: locked there before anything can make
    // their sockets (net/external.rs).
    if let (Some(plan), Some(ns)) = (ns_plan.as_mut(), external_net.as_ref()) {
        plan.external_lock = net::external::lock(ns, &descs)?;
    }
    for p in &mut plans {
        fdtable::epoll::attach(p, &descs).map_err(RestoreError::Refused)?;
        fdtable::pidfd::attach(p, &descs).map_err(RestoreError::Refused)?;
        fdtable::tty::attach(p, &descs);
    }
    // Made before the floor: the seeds inherit it below every slot.
    let consoles = fdtable::tty::orphan_channel(
        &descs,
        opts.console_socket.is_some() || hooks::master_hook().is_some(),
        inv.container.is_some(),
    )?;
    let floor = plans
        .iter()
        .map(|p| p.helper_end())
        .chain(ckpt_sys::proc::fds(nix::unistd::getpid())?)
        .max()
        .unwrap_or(0)
        + 1;
    // Held until the root's seed has its copies (`place_from_ckpt`).
    let terminal = shelljob::attach(&descs, opts.shell_job, &inherit_fds)?;
    let own: Vec<(u64, i32)> = terminal
        .iter()
        .map(|(id, f)| (*id, f.as_raw_fd()))
        .collect();
    let mut fds = fdtable::plan(&descs, &tree, &imgs, &inherit_fds, &own, floor)?;
    if let Some(ids) = userns::Ids::of(inv)? {
        userns::inside(ids, &mut plans, &mut fds, ns_plan.as_mut())?;
    }
    fdtable::make_room(&fds)?;
    let mut reset = ckpt_sys::process::own_non_default_signals();
    reset.extend([32, 33]);
    debug!(
        ms = ckpt_images::units::ms(t0),
        processes = imgs.len(),
        "images verified and loaded"
    );

    task_state::check_root(&imgs[0].core, opts.sibling && !opts.new_pidns)?;
    if opts.sibling && (!opts.detach || opts.new_pidns) {
        return Err(RestoreError::Refused(
            "the root as ckpt's sibling: only detached, and not yet for a new pid namespace".into(),
        ));
    }
    hooks::run(hooks::Stage::PreRestore)?;
    // Removed again, after the rollback killed the tasks in them, if the restore fails.
    let t_cg = Instant::now();
    let made_cgroups = cgroups::make(&cgroup_plan)?;
    if !cgroup_plan.is_empty() {
        info!(ms = ckpt_images::units::ms(t_cg), "cgroups made");
    }
    // From here any error kills everything the restore created (rollback.rs).
    let mut rollback = rollback::Rollback::arm()?;
    debug!(pid, "forking the seeds");
    let source = fill::Source {
        reader: &pages,
        map: &map,
    };
    // Placeholders over the shared regions until the root's seed is forked: nothing of
    // ckpt's may land there meanwhile. Should one be taken already, nothing is shared.
    let reservation = match sharing
        .as_ref()
        .map(|s| ckpt_sys::reserve::Reservation::new(&s.reserved))
    {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => {
            debug!("memory not shared copy-on-write: {e}");
            sharing = None;
            None
        }
        None => None,
    };
    if let Some(s) = &sharing {
        debug!(
            regions = s.reserved.len(),
            ms = ckpt_images::units::ms(t0),
            "memory shared copy-on-write"
        );
    }
    seed::set_ckpt(nix::unistd::getpid().as_raw());
    let seeds = seed::Seeds {
        // The root seed's parent as it sees it: ckpt, the new namespace's init, or none
        // (a container's root: its parent is outside its pid namespace).
        ckpt: if opts.new_pidns {
            1
        } else if inv.container.is_some() {
            0
        } else if opts.sibling {
            nix::unistd::getppid().as_raw()
        } else {
            std::process::id() as i32
        },
        sibling: opts.sibling,
        container: inv.container.as_ref(),
        ns: ns_plan.as_ref(),
        cgroups: &cgroup_dirs,
        tree: &tree,
        plans: &plans,
        fds: &fds,
        sharing: sharing
            .as_ref()
            .zip(reservation.as_ref())
            .map(|(plan, reservation)| seed::sharing::Shared {
                plan,
                reservation,
                source: &source,
            }),
    };
    fdtable::place_from_ckpt(&fds)?;
    let blocked = ckpt_sys::process::block_signals()?;
    let (child, mut init) = if opts.new_pidns {
        let keep: Vec<i32> = shared.as_ref().map_or(Vec::new(), |s| s.raw_fds());
        let t = Instant::now();
        let init = pidns::start(&seeds, err_w, opts.detach, &keep);
        fdtable::close_from_ckpt(&fds);
        let init = init?;
        info!(
            init = init.pid.as_raw(),
            ms = ckpt_images::units::ms(t),
            "pid and mount namespaces: init forked"
        );
        (None, Some(init))
    } else if let Some(c) = &inv.container {
        let t = Instant::now();
        let child = container::fork_root(
            &seeds,
            c,
            err_w,
            external_net.as_ref().map(std::os::fd::AsFd::as_fd),
        );
        fdtable::close_from_ckpt(&fds);
        if let (Ok(child), true) = (&child, opts.sibling) {
            rollback.adopt(*child);
        }
        info!(
            flags = c.clone_flags,
            ms = ckpt_images::units::ms(t),
            "container namespaces: root forked"
        );
        (Some(child?), None)
    } else {
        let child = seeds::fork_root(&seeds, err_w);
        fdtable::close_from_ckpt(&fds);
        let child = child?;
        if opts.sibling {
            rollback.adopt(child);
        }
        (Some(child), None)
    };
    // A container's own user namespace: its puppets open the shared memory through a
    // holder in it (`userns::Holder`).
    if let (Some(root), Some(s), true) = (child, shared.as_mut(), userns::owned(inv)) {
        s.hold_in_userns(root)?;
    }
    drop(blocked);
    // Every seed is forked from the root's: ckpt's placeholders can go.
    drop(reservation);
    // A plain tree's puppets start on each seed as it is ready; anything that needs the
    // whole tree first (namespaces, cgroups, hooks, a test holding there) waits for all.
    let overlap = inv.pids.len() > 1
        && init.is_none()
        && inv.container.is_none()
        && cgroup_plan.is_empty()
        && !hooks::installed()
        && !ckpt_sys::testhold::wants("restore-seeds");
    let ready = if overlap {
        puppets::Ready::Stream(err_r)
    } else {
        seeds::wait_ready(err_r, &inv.pids)?;
        ckpt_sys::testhold::hold("restore-seeds", &|| false);
        puppets::Ready::All
    };
    // The pids ckpt names the processes by: the dumped ones, or, in a new pid
    // namespace, those the kernel gave them outside it.
    let pids: Vec<Pid> = match (&init, child) {
        (None, Some(root)) if inv.container.is_some() => {
            let t = Instant::now();
            let outer = pidns::outer_pids(root, true, &inv.pids)?;
            debug!(
                ms = ckpt_images::units::ms(t),
                "container: outer pids found"
            );
            outer
        }
        (Some(init), _) => {
            let t = Instant::now();
            let outer = init.outer_pids(&inv.pids)?;
            debug!(
                init = init.pid.as_raw(),
                ms = ckpt_images::units::ms(t),
                "pid namespace: outer pids found"
            );
            outer
        }
        _ => inv.pids.iter().map(|&p| Pid::from_raw(p)).collect(),
    };
    let child = child.unwrap_or(pids[0]);
    if !cgroup_plan.is_empty() {
        cgroups::place_others(&cgroup_plan, &inv.pids, &pids)?;
    }
    hooks::run(hooks::Stage::SetupNamespaces(child.as_raw()))?;
    hooks::run(hooks::Stage::PostSetupNamespaces)?;
    if let Some((rx, count)) = &consoles {
        let masters = fdtable::tty::received(rx, *count)?;
        fdtable::tty::hand_over(&masters, opts.console_socket.as_deref())?;
        debug!(consoles = count, "console masters handed over");
    }
    let mut handoff = None;
    ckpt_sys::abort::phase("rebuilding the process");
    if pids.len() == 1 {
        seeds::seize(child)?;
        debug!(ms = ckpt_images::units::ms(t0), "every seed stopped");
        ckpt_sys::testhold::hold("restore-puppet", &|| false);
        let mut puppet =
            puppet::Puppet::new(child, &imgs[0], &plans[0], pages_path.clone(), progress)?
                .lazy(opts.lazy);
        puppet.run(&source, &reset)?;
        handoff = puppet.take_handoff();
        let threads = puppet.thread_tids();
        drop(puppet);
        if opts.verify {
            // Still stopped: a difference kills it (the rollback) before it ran an
            // instruction.
            let t = Instant::now();
            verify::check(child, &imgs[0], opts.lazy)?;
            debug!(pid, ms = ckpt_images::units::ms(t), "verified");
        }
        write_pidfile(opts, child.as_raw())?;
        hooks::before_resume(child.as_raw())?;
        if let Some(c) = &inv.container {
            container::before_release_timed(c, ns_plan.as_ref(), child)?;
        }
        net::resume_connections(&net::connections(&[child], &imgs, &descs))
            .map_err(RestoreError::Refused)?;
        stop_again(&[child], &imgs)?;
        for tid in threads {
            ptrace::detach(tid)?;
        }
        ptrace::detach(child)?;
    } else {
        debug!(
            ms = ckpt_images::units::ms(t0),
            overlap, "puppets start (overlap: while seeds are still made)"
        );
        ckpt_sys::testhold::hold("restore-puppet", &|| false);
        puppets::run_all(
            &puppets::Tree {
                pids: &pids,
                imgs: &imgs,
                plans: &plans,
                shared: shared.as_ref().map(|s| &s.paths),
                pages_path: &pages_path,
                source: &source,
                reset: &reset,
                progress,
                sharing: sharing.as_ref(),
                verify: opts.verify,
                before_release: &|| {
                    hooks::before_resume(pids[0].as_raw())?;
                    if let Some(c) = &inv.container {
                        container::before_release_timed(c, ns_plan.as_ref(), pids[0])?;
                    }
                    net::resume_connections(&net::connections(&pids, &imgs, &descs))
                        .map_err(RestoreError::Refused)?;
                    stop_again(&pids, &imgs)
                },
            },
            ready,
        )?;
        drop(shared);
        write_pidfile(opts, pids[0].as_raw())?;
    }
    if let Some(init) = init.as_mut() {
        init.release()?;
    }
    rollback.disarm();
    made_cgroups.keep();
    if let Some(p) = &ns_plan {
        p.net.keep();
    }
    // The tree runs: a failed post-resume can no longer undo the restore (CRIU only
    // reports it too).
    if let Err(e) = hooks::run(hooks::Stage::PostResume) {
        tracing::error!("{e}");
    }
    // Released: from here SIGINT/SIGTERM/SIGHUP act as they always did (ckpt armed them).
    ckpt_sys::abort::disarm();
    info!(
        pid,
        processes = pids.len(),
        ms = ckpt_images::units::ms(t0),
        "restored"
    );
    let img = &imgs[0];
    if let Some(h) = handoff {
        if opts.detach {
            // The pager: a copy of (still single-threaded) ckpt that outlives it. ckpt
            // returns once the pager has named itself (EOF on `ready`), so whoever runs
            // `restore -d` finds a `ckpt-pager` the moment it returns.
            let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| ckpt_sys::Error::sys("pipe2", e))?;
            let pager = ckpt_sys::uffd::fork_single_threaded()?;
            if let Some(p) = pager {
                info!(pid, pager = p.as_raw(), "lazy pager serving the process");
            } else {
                ckpt_sys::uffd::become_pager();
                drop(ready_r);
                drop(ready_w);
                let code = match lazy::serve(child, h, &img.runs, &map, &img.pages_entry) {
                    Ok(_) => 0,
                    Err(e) => {
                        tracing::error!("lazy pager of pid {pid}: {e}");
                        1
                    }
                };
                ckpt_sys::process::exit_now(code);
            }
            drop(ready_w);
            let _ = std::fs::File::from(ready_r).read(&mut [0u8; 1]);
            return Ok(Outcome::Detached(child.as_raw()));
        }
        if let Err(e) = lazy::serve(child, h, &img.runs, &map, &img.pages_entry) {
            tracing::error!("lazy restore of pid {pid}: {e}");
        }
    } else if opts.detach {
        return Ok(Outcome::Detached(child.as_raw()));
    }
    if let Some(init) = init {
        let status = init.wait()?;
        return Ok(if status & 0x7f == 0 {
            Outcome::Exited((status >> 8) & 0xff)
        } else {
            Outcome::Killed(status & 0x7f)
        });
    }
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Outcome::Exited(code)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Outcome::Killed(sig as i32)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ckpt_sys::Error::sys(format!("waitpid({pid})"), e).into()),
        }
    }
}

/// Refuses what cannot work on this host before anything is created: another vDSO.
fn check_vdso(inv: &pb::Inventory) -> R<()> {
    if inv.vdso_xxh3 != 0 {
        let maps = ckpt_sys::proc::smaps(nix::unistd::getpid())?;
        let own = maps
            .iter()
            .find(|m| m.name == "[vdso]")
            .ok_or_else(|| RestoreError::Refused("this process has no [vdso]".into()))?;
        let bytes = ckpt_sys::process::read_own(own.start, own.len() as usize)?;
        if ckpt_images::hash::xxh3_64(&bytes) != inv.vdso_xxh3 {
            let here = nix::sys::utsname::uname()
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default();
            let which = if here == inv.kernel_release {
                format!("another build of kernel {here}")
            } else {
                format!("kernel {}, this is {here}", inv.kernel_release)
            };
            return Err(RestoreError::Refused(format!(
                "the image was dumped with another vDSO ({which}): restore on the kernel it was dumped on"
            )));
        }
    }
    Ok(())
}

/// Refuses a missing or changed executable or mapped library of `img`.
fn check_files(img: &image::ProcessImage, view: &dyn Fn(&str) -> Option<String>) -> R<()> {
    let exe = &img.mm.exe_path;
    if let Some(here) = view(exe) {
        std::fs::metadata(&here).map_err(|e| {
            RestoreError::Refused(format!("executable {exe} of pid {}: {e}", img.core.pid))
        })?;
    }
    for v in &img.vmas {
        if v.kind != pb::VmaKind::VmaFilePrivate as i32
            && v.kind != pb::VmaKind::VmaFileShared as i32
        {
            continue;
        }
        let Some(here) = view(&v.path) else {
            continue;
        };
        let m = std::fs::metadata(&here).map_err(|e| {
            RestoreError::Refused(format!(
                "mapped file {} (VMA at {:#x}): {e}",
                v.path, v.start
            ))
        })?;
        if v.kind == pb::VmaKind::VmaFilePrivate as i32 {
            use std::os::unix::fs::MetadataExt;
            let mtime = m.mtime() * 1_000_000_000 + m.mtime_nsec();
            if m.len() != v.file_size || (v.file_mtime_ns != 0 && mtime != v.file_mtime_ns) {
                return Err(RestoreError::Refused(format!(
                    "mapped file {} changed since the dump (size or mtime differ)",
                    v.path
                )));
            }
        }
    }
    Ok(())
}

/// Two pages free in both ckpt's layout (the seed maps them before it stops) and the
/// image's (they must not collide with any restored VMA or the vDSO), with a free page on
/// each side so they never merge with a neighbour.
fn pick_trampoline(img: &image::ProcessImage, own: &[(u64, u64)]) -> R<u64> {
    let mut busy: Vec<(u64, u64)> = own.to_vec();
    busy.extend(img.vmas.iter().map(|v| (v.start, v.end)));
    if img.mm.vdso_block_start != 0 {
        busy.push((
            img.mm.vdso_block_start,
            img.mm.vdso_block_start + img.mm.vdso_block_len,
        ));
    }
    let mut cand: u64 = 0x1_0000_0000;
    while cand < image::TASK_SIZE - (1 << 30) {
        let (lo, hi) = (cand - 4096, cand + 3 * 4096);
        if busy.iter().all(|&(s, e)| e <= lo || s >= hi) {
            return Ok(cand);
        }
        cand += 1 << 30;
    }
    Err(RestoreError::Refused(
        "no address is free for the restore trampoline".into(),
    ))
}

/// A process dumped in a group-stop is sent SIGSTOP while its puppet still holds it: the
/// signal waits, queued, and stops the whole process as the detach lets it run (SIGSTOP
/// rather than the SIGTSTP or SIGTTIN it may have stopped for: those a handler may catch).
fn stop_again(pids: &[Pid], imgs: &[image::ProcessImage]) -> R<()> {
    for (&pid, img) in pids.iter().zip(imgs) {
        if img.core.stop_signal != 0 {
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP)
                .map_err(|e| ckpt_sys::Error::sys(format!("kill(pid {pid}, SIGSTOP)"), e))?;
        }
    }
    Ok(())
}

/// `detach`: a root restored with `-d` outlives ckpt, so it gets a session of its own
/// (its dumped session is gone with the dump anyway): closing the terminal ckpt ran in must
/// not SIGHUP it. (Not a shell job's: it belongs to the terminal, `--shell-job`.) In the foreground it stays in ckpt's session and process group, like any
/// child, unless it led its own. The other processes of a tree follow the plan
/// (`tree.rs`).
fn seed_plan(
    img: &image::ProcessImage,
    node: &tree::Node,
    tramp: u64,
    err_fd: i32,
    detach: bool,
) -> seed::SeedPlan {
    let max_fd = img.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(err_fd);
    let mut vma_files: Vec<(String, i32)> = Vec::new();
    let mut vma_flocks = Vec::new();
    for v in &img.vmas {
        if v.kind == pb::VmaKind::VmaFilePrivate as i32
            || v.kind == pb::VmaKind::VmaFileShared as i32
        {
            let key = (v.path.clone(), v.open_flags as i32);
            let i = match vma_files.iter().position(|k| *k == key) {
                Some(i) => i,
                None => {
                    vma_files.push(key);
                    vma_files.len() - 1
                }
            };
            if v.flock != 0 && !vma_flocks.iter().any(|&(j, _)| j == i) {
                vma_flocks.push((i, v.flock == 2));
            }
        }
    }
    let c = &img.core;
    let root = node.parent.is_none();
    seed::SeedPlan {
        pid: c.pid,
        trampoline: tramp,
        helper_base: max_fd + 16,
        err_fd,
        exe_path: img.mm.exe_path.clone(),
        vma_files,
        vma_flocks,
        fds: img.fds.clone(),
        creds: img.core.creds.clone(),
        userns: None,
        cwd: c.cwd.clone(),
        root: c.root.clone(),
        umask: c.umask,
        rlimits: c.rlimits.clone(),
        personality: c.personality,
        comm: c.comm.clone(),
        no_new_privs: c.no_new_privs,
        session_leader: if root {
            c.sid == c.pid || detach
        } else {
            node.setsid
        },
        group_leader: if root { c.pgid == c.pid } else { node.setpgid },
        nice: c.nice,
        oom_score_adj: c.oom_score_adj,
        sched_policy: c.sched_policy,
        rt_priority: c.rt_priority,
        loginuid: c.loginuid,
        timerslack_ns: c.timerslack_ns,
        autogroup_nice: c.autogroup_nice,
        cwd_removed: c.cwd_removed,
        epolls: Vec::new(),
        pidfds: Vec::new(),
        ctty: None,
        foreground: false,
    }
}

fn write_pidfile(opts: &RestoreOptions, pid: i32) -> R<()> {
    if let Some(f) = &opts.pidfile {
        std::fs::write(f, format!("{pid}\n")).map_err(|e| ckpt_sys::Error::io(f, e))?;
    }
    Ok(())
}

fn pages_name(dir: &ImageDir, id: u32) -> String {
    dir.path(&ckpt_images::names::pages(id))
        .display()
        .to_string()
}

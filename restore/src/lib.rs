//! Restore: verify images -> seed -> puppet -> release.
//!
//! Each restored process starts as a forked copy of ckpt (the seed, `seed.rs`) that sets up
//! what a process can do for itself and stops; ckpt then drives it over ptrace (the
//! puppet phase, `puppet.rs`) until it is the dumped process, and lets it go.

mod fill;
mod image;
mod lazy;
mod locks;
mod pidheld;
mod puppet;
mod regs;
mod seed;
mod task_state;
mod timers;
mod verify;

use ckpt_images::{pb, ImageDir, PagesReader};
use ckpt_sys::process::Forked;
use ckpt_sys::ptrace::{self, Stop};
use ckpt_sys::Pid;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
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

/// Kills and reaps a half-restored process unless disarmed: a failed restore leaves
/// nothing behind.
struct Cleanup(Option<Pid>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // Every thread is traced by us: each must be reaped (__WALL) before the
            // leader is reported at all.
            let tids = ckpt_sys::proc::tasks(pid).unwrap_or_default();
            let _ = kill(pid, Signal::SIGKILL);
            for tid in tids.into_iter().filter(|&t| t != pid).chain([pid]) {
                while let Ok(st) = waitpid(tid, Some(nix::sys::wait::WaitPidFlag::__WALL)) {
                    if matches!(st, WaitStatus::Exited(..) | WaitStatus::Signaled(..)) {
                        break;
                    }
                }
            }
        }
    }
}

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
    let inv = dir.inventory();
    image::check_tree(&dir)?;
    if inv.pids.len() != 1 || inv.pids[0] != inv.root_pid {
        return Err(RestoreError::Refused(format!(
            "{}: {} processes in the image; this ckpt restores one process",
            dir.path(ckpt_images::names::INVENTORY).display(),
            inv.pids.len()
        )));
    }
    let pid = inv.root_pid;
    let mut img = image::load(&dir, pid)?;
    if !opts.lazy {
        img.drop_shared_duplicates();
    }
    if opts.lazy && img.frames.is_some() {
        return Err(RestoreError::Refused(format!(
            "{}: --lazy serves pages straight from the image, which was dumped with \
             --compress; restore it without --lazy",
            pages_name(&dir, img.pages_id)
        )));
    }
    check_host(inv, &img)?;
    let (pages_file, pages_path) = dir.open_pages(img.pages_id)?;
    let map = ckpt_sys::process::map_file(&pages_file)?;
    if opts.lazy {
        // The pager verifies each chunk before it serves a page of it (lazy.rs).
        ckpt_images::chunks::check_entry(&pages_path, &img.pages_entry)?;
    } else {
        // Every byte is checked before any process exists, on every CPU, a chunk at a time
        // (populated in one call, hashed, then unmapped again: the fill maps the file
        // window by window too, so ckpt never holds the whole file).
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        ckpt_images::chunks::verify(
            &pages_path,
            &map,
            &img.pages_entry,
            cpus,
            &|off, len| ckpt_sys::process::populate_read(&map, off, len),
            &|off, len| ckpt_sys::process::release_range(&map, off, len),
        )?;
        debug!(ms = ckpt_images::units::ms(t0), "pages file verified");
    }
    let pages = PagesReader::new(&pages_path, &map)?;
    let tramp = pick_trampoline(&img)?;

    let (err_r, err_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| ckpt_sys::Error::sys("pipe2", e))?;
    let plan = seed_plan(&img, tramp, err_w.as_raw_fd(), opts.detach);
    let mut reset = ckpt_sys::process::own_non_default_signals();
    reset.extend([32, 33]);
    debug!(
        ms = ckpt_images::units::ms(t0),
        "images verified and loaded"
    );

    debug!(pid, "forking the seed");
    let child = match ckpt_sys::process::fork_with_pid(Pid::from_raw(pid)) {
        Ok(Forked::Child) => seed::run(&plan),
        Ok(Forked::Parent(p)) => p,
        Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => {
            return Err(RestoreError::Refused(pidheld::message(pid, &img.core.comm)))
        }
        Err(e) => return Err(e.into()),
    };
    let mut cleanup = Cleanup(Some(child));
    drop(err_w);
    wait_seed(child, err_r)?;
    debug!(ms = ckpt_images::units::ms(t0), "seed stopped");
    ckpt_sys::abort::phase("rebuilding the process");
    ckpt_sys::testhold::hold("restore-puppet", &|| false);

    let mut puppet =
        puppet::Puppet::new(child, &img, &plan, pages_path.clone(), progress)?.lazy(opts.lazy);
    puppet.run(
        &fill::Source {
            reader: &pages,
            map: &map,
        },
        &reset,
    )?;
    let handoff = puppet.take_handoff();
    let threads = puppet.thread_tids();
    drop(puppet);
    if opts.verify {
        // Still stopped: a difference kills it (Cleanup) before it ran an instruction.
        let t = Instant::now();
        verify::check(child, &img, opts.lazy)?;
        debug!(pid, ms = t.elapsed().as_secs_f64() * 1e3, "verified");
    }
    if let Some(f) = &opts.pidfile {
        std::fs::write(f, format!("{pid}\n")).map_err(|e| ckpt_sys::Error::io(f, e))?;
    }
    for tid in threads {
        ptrace::detach(tid)?;
    }
    ptrace::detach(child)?;
    cleanup.0 = None;
    // Released: from here SIGINT/SIGTERM/SIGHUP act as they always did (ckpt armed them).
    ckpt_sys::abort::disarm();
    info!(pid, ms = ckpt_images::units::ms(t0), "restored");
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
            return Ok(Outcome::Detached(pid));
        }
        if let Err(e) = lazy::serve(child, h, &img.runs, &map, &img.pages_entry) {
            tracing::error!("lazy restore of pid {pid}: {e}");
        }
    } else if opts.detach {
        return Ok(Outcome::Detached(pid));
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

/// Waits for the seed's SIGSTOP; if it exited instead, its reason is on the error pipe.
fn wait_seed(child: Pid, err_r: OwnedFd) -> R<()> {
    match ptrace::wait(child)? {
        Stop::Signal(libc::SIGSTOP) => Ok(()),
        Stop::Exited(_) | Stop::Killed(_) => {
            let mut msg = String::new();
            let _ = std::fs::File::from(err_r).read_to_string(&mut msg);
            if msg.is_empty() {
                msg = "seed died before stopping".into();
            }
            Err(RestoreError::Refused(format!("pid {child}: {msg}")))
        }
        other => Err(RestoreError::Refused(format!(
            "pid {child}: seed stopped unexpectedly ({other:?})"
        ))),
    }
}

/// Refuses what cannot work on this host before anything is created: another vDSO, a
/// missing or changed executable or mapped library.
fn check_host(inv: &pb::Inventory, img: &image::ProcessImage) -> R<()> {
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
    let exe = &img.mm.exe_path;
    std::fs::metadata(exe).map_err(|e| {
        RestoreError::Refused(format!("executable {exe} of pid {}: {e}", img.core.pid))
    })?;
    for v in &img.vmas {
        if v.kind != pb::VmaKind::VmaFilePrivate as i32
            && v.kind != pb::VmaKind::VmaFileShared as i32
        {
            continue;
        }
        let m = std::fs::metadata(&v.path).map_err(|e| {
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
fn pick_trampoline(img: &image::ProcessImage) -> R<u64> {
    let own = ckpt_sys::proc::smaps(nix::unistd::getpid())?;
    let mut busy: Vec<(u64, u64)> = own.iter().map(|m| (m.start, m.end)).collect();
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

/// `detach`: a process restored with `-d` outlives ckpt, so it gets a session of its own
/// (its dumped session is gone with the dump anyway): closing the terminal ckpt ran in must
/// not SIGHUP it. In the foreground it stays in ckpt's session and process group, like any
/// child, unless it led its own.
fn seed_plan(img: &image::ProcessImage, tramp: u64, err_fd: i32, detach: bool) -> seed::SeedPlan {
    let max_fd = img.fds.iter().map(|f| f.fd).max().unwrap_or(2).max(err_fd);
    let mut vma_files: Vec<(String, i32)> = Vec::new();
    for v in &img.vmas {
        if v.kind == pb::VmaKind::VmaFilePrivate as i32
            || v.kind == pb::VmaKind::VmaFileShared as i32
        {
            let key = (v.path.clone(), v.open_flags as i32);
            if !vma_files.contains(&key) {
                vma_files.push(key);
            }
        }
    }
    let c = &img.core;
    seed::SeedPlan {
        trampoline: tramp,
        helper_base: max_fd + 16,
        err_fd,
        exe_path: img.mm.exe_path.clone(),
        vma_files,
        fds: img.fds.clone(),
        creds: img.core.creds.clone(),
        cwd: c.cwd.clone(),
        root: c.root.clone(),
        umask: c.umask,
        rlimits: c.rlimits.clone(),
        personality: c.personality,
        comm: c.comm.clone(),
        no_new_privs: c.no_new_privs,
        session_leader: c.sid == c.pid || detach,
        group_leader: c.pgid == c.pid,
        nice: c.nice,
        oom_score_adj: c.oom_score_adj,
        sched_policy: c.sched_policy,
        rt_priority: c.rt_priority,
        loginuid: c.loginuid,
        timerslack_ns: c.timerslack_ns,
    }
}

fn pages_name(dir: &ImageDir, id: u32) -> String {
    dir.path(&ckpt_images::names::pages(id))
        .display()
        .to_string()
}

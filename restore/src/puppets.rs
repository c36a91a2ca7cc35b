//! The puppet phase of a whole tree: every process is seized and driven by a ptrace
//! thread of ckpt (one per CPU: a tracee belongs to the thread that seized it), and all
//! are released together once every puppet is done. A failure anywhere stops the others
//! before they release anything; the threads' tracees die with them (EXITKILL) and the
//! caller's rollback reaps everything.

use crate::image::ProcessImage;
use crate::seed::SeedPlan;
use crate::{fill, puppet, seeds, R};
use ckpt_images::progress::Progress;
use ckpt_sys::{ptrace, Pid};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

/// What every puppet of the tree shares.
pub struct Tree<'a> {
    pub pids: &'a [Pid],
    pub imgs: &'a [ProcessImage],
    pub plans: &'a [SeedPlan],
    pub shared: Option<&'a HashMap<u64, String>>,
    pub pages_path: &'a Path,
    pub source: &'a fill::Source<'a>,
    pub reset: &'a [u32],
    pub progress: &'a dyn Progress,
    /// Memory shared copy-on-write (`sharing.rs`): what each puppet keeps of its seed.
    pub sharing: Option<&'a crate::sharing::Plan>,
    /// Check each process against its image before anything is released (`verify.rs`).
    pub verify: bool,
    /// Run once every puppet is done, before any process is released (a container's
    /// /proc, net/resume.rs).
    pub before_release: &'a (dyn Fn() -> R<()> + Sync),
}

/// Seizes, rebuilds and then releases every process of `t`, on every CPU.
pub fn run_all(t: &Tree) -> R<()> {
    let n = t.pids.len();
    let cpus = std::thread::available_parallelism().map_or(1, |c| c.get());
    let workers = cpus.min(n).max(1);
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let barrier = Barrier::new(workers);
    let first_err: Mutex<Option<crate::RestoreError>> = Mutex::new(None);
    let worker = || {
        let mut mine = Vec::new();
        let mut result = Ok(());
        while !failed.load(Ordering::Acquire) {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                break;
            }
            let pid = t.pids[i];
            let r = seeds::seize(pid).and_then(|()| {
                mine.push(pid);
                // Its other threads are this ptrace thread's tracees too.
                one(t, i).map(|tids| mine.extend(tids))
            });
            if let Err(e) = r {
                failed.store(true, Ordering::Release);
                result = Err(e);
                break;
            }
        }
        // Nobody is released before every puppet is done (or one failed).
        if barrier.wait().is_leader() && !failed.load(Ordering::Acquire) {
            if let Err(e) = (t.before_release)() {
                failed.store(true, Ordering::Release);
                first_err
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
        barrier.wait();
        if result.is_ok() && !failed.load(Ordering::Acquire) {
            for p in mine {
                if let Err(e) = ptrace::detach(p) {
                    failed.store(true, Ordering::Release);
                    result = Err(e.into());
                }
            }
        }
        if let Err(e) = result {
            first_err
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_or_insert(e);
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(worker);
        }
        worker();
    });
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Rebuilds process `i` (checked against its image unless told not to); returns the
/// tids of its other threads, stopped like it until the release.
fn one(t: &Tree, i: usize) -> R<Vec<Pid>> {
    let mut p = puppet::Puppet::new(
        t.pids[i],
        &t.imgs[i],
        &t.plans[i],
        t.pages_path.to_path_buf(),
        t.progress,
    )?;
    if let Some(s) = t.shared {
        p = p.shared(s);
    }
    if let Some(s) = t.sharing {
        p = p.sharing(s.live(i));
    }
    p.run(t.source, t.reset)?;
    let tids = p.thread_tids();
    drop(p);
    if t.verify {
        crate::verify::check(t.pids[i], &t.imgs[i], false)?;
    }
    Ok(tids)
}

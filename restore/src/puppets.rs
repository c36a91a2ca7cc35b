//! The puppet phase of a whole tree: every process is seized and driven by a ptrace
//! thread of ckpt (one per CPU: a tracee belongs to the thread that seized it), and all
//! are released together once every puppet is done. A failure anywhere stops the others
//! before they release anything; the threads' tracees die with them (EXITKILL) and the
//! caller's rollback reaps everything.
//!
//! The puppets may start while seeds are still being made (`Ready::Stream`): a thread
//! reads the seeds' status pipe and queues each process as its seed says `ok` (it is
//! then done with everything it does itself and waits in pause()), so ckpt's ptrace
//! threads work beside the seeds' forks instead of after the last of them.

use crate::image::ProcessImage;
use crate::seed::SeedPlan;
use crate::{fill, puppet, seeds, R};
use ckpt_images::progress::Progress;
use ckpt_sys::{ptrace, Pid};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Condvar, Mutex};

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

/// Which seeds are ready for their puppet.
pub enum Ready {
    /// Every one (the status pipe was read to the end already).
    All,
    /// Those that say so on this status pipe, read meanwhile.
    Stream(OwnedFd),
}

/// The processes whose seeds are ready and not yet taken by a ptrace thread, shared with
/// the thread that reads the status pipe (which may outlive a failed `run_all`).
#[derive(Default)]
struct Queue {
    state: Mutex<QueueState>,
    changed: Condvar,
    failed: AtomicBool,
    first_err: Mutex<Option<crate::RestoreError>>,
}

#[derive(Default)]
struct QueueState {
    ready: VecDeque<usize>,
    /// No more will come (every seed said ok, or the reading failed).
    closed: bool,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records the restore's first error and wakes every waiting thread.
    fn fail(&self, e: crate::RestoreError) {
        self.failed.store(true, Ordering::Release);
        self.first_err
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert(e);
        self.lock().closed = true;
        self.changed.notify_all();
    }

    fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// The next ready process, waiting for one; None once none will come or the
    /// restore failed.
    fn next(&self) -> Option<usize> {
        let mut st = self.lock();
        loop {
            if self.failed() {
                return None;
            }
            if let Some(i) = st.ready.pop_front() {
                return Some(i);
            }
            if st.closed {
                return None;
            }
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Starts the thread that queues each process as its seed says `ok` on `status_r`.
fn read_status(queue: &Arc<Queue>, status_r: OwnedFd, pids: &[Pid]) {
    let live: Vec<i32> = pids.iter().map(|p| p.as_raw()).collect();
    let index: HashMap<i32, usize> = live.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let q = Arc::clone(queue);
    std::thread::spawn(move || {
        let t0 = std::time::Instant::now();
        let r = seeds::read_ready(status_r, &live, |pid| {
            q.lock().ready.push_back(index[&pid]);
            q.changed.notify_one();
        });
        match r {
            Ok(()) => {
                tracing::debug!(
                    ms = ckpt_images::units::ms(t0),
                    "every seed ready (puppets under way)"
                );
                q.lock().closed = true;
                q.changed.notify_all();
            }
            Err(e) => q.fail(e),
        }
    });
}

/// Seizes, rebuilds and then releases every process of `t`, on every CPU, each as soon
/// as `ready` says its seed is.
pub fn run_all(t: &Tree, ready: Ready) -> R<()> {
    let n = t.pids.len();
    let cpus = fill::cpus();
    let workers = cpus.min(n).max(1);
    let queue = Arc::new(Queue::default());
    match ready {
        Ready::All => {
            let mut st = queue.lock();
            st.ready.extend(0..n);
            st.closed = true;
        }
        Ready::Stream(fd) => read_status(&queue, fd, t.pids),
    }
    let barrier = Barrier::new(workers);
    let worker = || {
        let mut mine = Vec::new();
        let mut result = Ok(());
        while let Some(i) = queue.next() {
            let pid = t.pids[i];
            let r = seeds::seize(pid).and_then(|()| {
                mine.push(pid);
                // Its other threads are this ptrace thread's tracees too.
                one(t, i).map(|tids| mine.extend(tids))
            });
            if let Err(e) = r {
                queue.fail(e);
                result = Err(());
                break;
            }
        }
        // Nobody is released before every puppet is done (or one failed).
        if barrier.wait().is_leader() && !queue.failed() {
            if let Err(e) = (t.before_release)() {
                queue.fail(e);
            }
        }
        barrier.wait();
        if result.is_ok() && !queue.failed() {
            for p in mine {
                if let Err(e) = ptrace::detach(p) {
                    queue.fail(e.into());
                }
            }
        }
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(worker);
        }
        worker();
    });
    let err = queue
        .first_err
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match err {
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

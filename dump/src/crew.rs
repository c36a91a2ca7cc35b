//! A second ptrace thread for the dump of a tree, so that both CPUs work on it.
//!
//! A tracee answers only the thread that seized it (ptrace requests, the registers, the
//! injected calls), and a thread that exits detaches its tracees. So a process is seized,
//! asked and released by one thread all along: the crew's share of the tree lives on the
//! crew's thread, in a table by pid, and the dump's thread hands it jobs to run on them
//! (closures with owned inputs; each answer comes back on a channel of its own, so the
//! dump's thread can do its own share meanwhile). Waiting for a dead tracee and kill(2)
//! work from any thread of ckpt.
//!
//! Dropped (a failed dump, or the end of one), the crew skips the jobs still queued, and
//! its thread drops what it still holds: each `Seized` puts its task back as it found it
//! and detaches, on the thread that traces it. The drop waits for that.

use crate::seize::Seized;
use crate::DumpError;
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;

/// The tasks the crew's thread traces.
pub type Tasks = HashMap<Pid, Seized>;

type Job = Box<dyn FnOnce(&mut Tasks) + Send>;

pub struct Crew {
    jobs: Option<Sender<Job>>,
    /// Set when the crew is dropped: jobs still queued are skipped.
    cancelled: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A crew's answer still to come.
pub struct Pending<T>(Receiver<Result<T, DumpError>>);

impl<T> Pending<T> {
    pub fn wait(self) -> Result<T, DumpError> {
        self.0.recv().unwrap_or_else(|_| Err(gone()))
    }
}

fn gone() -> DumpError {
    DumpError::Lost("the dump's second ptrace thread stopped".into())
}

impl Crew {
    pub fn start() -> Result<Crew, DumpError> {
        let (tx, rx) = channel::<Job>();
        let cancelled = Arc::new(AtomicBool::new(false));
        let skip = cancelled.clone();
        let thread = std::thread::Builder::new()
            .name("ckpt-crew".into())
            .spawn(move || {
                let mut tasks = Tasks::new();
                for job in rx {
                    if !skip.load(Ordering::Relaxed) {
                        job(&mut tasks);
                    }
                }
                // Whatever is left is put back and detached here, by its tracer.
                drop(tasks);
            })
            .map_err(|e| DumpError::Lost(format!("starting a second ptrace thread: {e}")))?;
        Ok(Crew {
            jobs: Some(tx),
            cancelled,
            thread: Some(thread),
        })
    }

    /// Runs `f` on the crew's thread, with the tasks it traces.
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tasks) -> Result<T, DumpError> + Send + 'static,
    ) -> Pending<T> {
        let (tx, rx) = channel();
        let job: Job = Box::new(move |tasks| {
            let _ = tx.send(f(tasks));
        });
        if let Some(jobs) = &self.jobs {
            // Refused only if the thread is gone; the answer's channel then says so.
            let _ = jobs.send(job);
        }
        Pending(rx)
    }

    /// Seizes `pid` on the crew's thread (`Seized::seize`), which keeps it.
    pub fn seize(&self, pid: Pid) -> Pending<()> {
        self.run(move |tasks| {
            let s = Seized::seize(pid)?;
            tasks.insert(pid, s);
            Ok(())
        })
    }

    /// Runs `f` on the crew's task `pid`.
    pub fn with<T: Send + 'static>(
        &self,
        pid: Pid,
        f: impl FnOnce(&mut Seized) -> Result<T, DumpError> + Send + 'static,
    ) -> Pending<T> {
        self.run(move |tasks| match tasks.get_mut(&pid) {
            Some(s) => f(s),
            None => Err(DumpError::Lost(format!(
                "pid {pid} is not traced by the dump's second ptrace thread"
            ))),
        })
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        self.cancelled.store(true, Ordering::Relaxed);
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the crew takes the `turn`th process the walk finds (counted from 1): three of
/// every five. Both threads gather their share (/proc, ptrace, the injected calls), but
/// the dump's thread then also finishes every process of the tree (fds, pages, image
/// files), about a fifth of what a gather costs (a 100-process ring profiled with perf:
/// 36% of ckpt's samples in `gather`, 8% in `finish`); with half each, the crew idled
/// while the dump's thread still finished its share.
pub fn takes(turn: usize) -> bool {
    turn % 5 < 3
}

/// A process of the tree, by the thread that traces it.
pub enum Task {
    /// Traced by the dump's own thread.
    Own(Box<Seized>),
    /// Traced by the crew's thread, which holds its `Seized`.
    Crew(Pid),
}

impl Task {
    pub fn pid(&self) -> Pid {
        match self {
            Task::Own(s) => s.pid(),
            Task::Crew(pid) => *pid,
        }
    }

    /// The `Seized` of a task the dump's thread traces.
    pub fn own(&mut self) -> Option<&mut Seized> {
        match self {
            Task::Own(s) => Some(s),
            Task::Crew(_) => None,
        }
    }
}

//! The one rollback of a restore: until every process is released, any failure (a pid in
//! use, a seed that cannot open a file, a puppet error, an abort) kills every process the
//! restore created and reaps it, zombies included.
//!
//! Every seed descends from ckpt (ckpt forks the root's, seeds fork their children's), and
//! ckpt is a child subreaper meanwhile, so whatever a failure orphans comes back to it:
//! "everything the restore created" is exactly ckpt's descendants. Seeds never reap, so a
//! pid listed as a descendant stays ours until ckpt reaps it.
//!
//! A root forked as ckpt's sibling (`--restore-sibling`) is adopted: it and its
//! descendants are killed too; its zombie is its parent's to reap.

use ckpt_sys::Pid;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::time::{Duration, Instant};

/// Armed from before the first fork until the release.
pub struct Rollback {
    armed: bool,
    sibling: Option<Pid>,
}

impl Rollback {
    pub fn arm() -> Result<Rollback, ckpt_sys::Error> {
        ckpt_sys::process::set_child_subreaper(true)?;
        Ok(Rollback {
            armed: true,
            sibling: None,
        })
    }

    /// A root forked as ckpt's sibling: killed with the rest on a failure.
    pub fn adopt(&mut self, root: Pid) {
        self.sibling = Some(root);
    }

    /// Every process is released: nothing to undo; orphans go to init again.
    pub fn disarm(mut self) {
        self.armed = false;
        let _ = ckpt_sys::process::set_child_subreaper(false);
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if self.armed {
            let _shield = ckpt_sys::abort::Shield::new();
            kill_descendants(self.sibling);
            let _ = ckpt_sys::process::set_child_subreaper(false);
        }
    }
}

/// ckpt's descendants, from the children lists of all its threads down; and an adopted
/// sibling root with its own, while it is not a zombie (which its parent reaps).
fn descendants(sibling: Option<Pid>) -> Vec<Pid> {
    let me = nix::unistd::getpid();
    let mut out: Vec<Pid> = Vec::new();
    let mut todo = vec![me];
    if let Some(root) = sibling.filter(|&r| alive(r)) {
        out.push(root);
        todo.push(root);
    }
    while let Some(p) = todo.pop() {
        let Ok(tasks) = ckpt_sys::proc::tasks(p) else {
            continue;
        };
        for t in tasks {
            for c in ckpt_sys::proc::children(p, t).unwrap_or_default() {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

/// SIGKILL to every descendant, then reap (as tracer and as parent or subreaper) until
/// none is left.
fn kill_descendants(sibling: Option<Pid>) {
    let start = Instant::now();
    loop {
        let all = descendants(sibling);
        for &p in &all {
            let _ = kill(p, Signal::SIGKILL);
        }
        let mut reaped = 0;
        loop {
            match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => break,
                Ok(_) => reaped += 1,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
        if all.is_empty() && reaped == 0 {
            let left = waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG));
            if let Err(nix::errno::Errno::ECHILD) = left {
                return;
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            tracing::warn!(left = all.len(), "rollback: processes survive SIGKILL");
            return;
        }
        if reaped == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Whether `pid` exists and is no zombie (/proc/PID/stat's state).
fn alive(pid: Pid) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|c| c != 'Z' && c != 'X')
    })
}

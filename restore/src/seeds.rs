//! ckpt's side of the seed phase: fork the root's seed (which forks the rest, `seed.rs`),
//! read every seed's report, then seize each one (PTRACE_SEIZE + INTERRUPT: only the root
//! is ckpt's child, so TRACEME could not serve the others) for its puppet phase.

use crate::seed::{self, Seeds};
use crate::{RestoreError, R};
use ckpt_sys::process::Forked;
use ckpt_sys::ptrace::{self, Options, Stop};
use ckpt_sys::Pid;
use std::io::{BufRead, BufReader};
use std::os::fd::OwnedFd;

/// Forks the root's seed with its pid; the rest of the tree follows from it. `status_w`
/// is the write end of the status pipe every seed inherits: dropped here once forked.
pub fn fork_root(seeds: &Seeds, status_w: OwnedFd) -> R<Pid> {
    let root = seeds.tree.nodes[0].pid;
    let fork = if seeds.sibling {
        ckpt_sys::process::fork_sibling_with_pid
    } else {
        ckpt_sys::process::fork_with_pid
    };
    match fork(Pid::from_raw(root)) {
        Ok(Forked::Child) => seed::run(seeds, 0),
        Ok(Forked::Parent(p)) => {
            drop(status_w);
            Ok(p)
        }
        Err(e) if e.errno() == Some(nix::errno::Errno::EEXIST) => Err(RestoreError::Refused(
            crate::pidheld::message(root, &seeds.comm(0)),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Reads the status pipe until every live process's seed said `ok`; the first failure
/// reported (or a seed dying without a word) ends the restore.
pub fn wait_ready(status_r: OwnedFd, live: &[i32]) -> R<()> {
    read_ready(status_r, live, |_| {})
}

/// [`wait_ready`], calling `each` with every pid as its seed says `ok` (the puppets
/// start on it while the others are still being made).
pub fn read_ready(status_r: OwnedFd, live: &[i32], mut each: impl FnMut(i32)) -> R<()> {
    let mut ready = std::collections::HashSet::with_capacity(live.len());
    let mut lines = BufReader::new(std::fs::File::from(status_r)).lines();
    while ready.len() < live.len() {
        let Some(line) = lines.next() else {
            let missing: Vec<String> = live
                .iter()
                .filter(|p| !ready.contains(*p))
                .take(8)
                .map(|p| p.to_string())
                .collect();
            return Err(RestoreError::Refused(format!(
                "pid {}: seed died before stopping",
                missing.join(", pid ")
            )));
        };
        let line = line.map_err(|e| ckpt_sys::Error::Other(format!("seed status pipe: {e}")))?;
        let (pid, msg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let pid: i32 = pid.parse().unwrap_or(0);
        // `ok`, or from a container's root `ok MICROS`: its namespace work in the seed.
        let ok = msg
            .strip_prefix("ok")
            .filter(|rest| rest.is_empty() || rest.starts_with(' '));
        if let (Some(rest), true) = (ok, live.contains(&pid)) {
            if let Ok(us) = rest.trim().parse::<u64>() {
                tracing::debug!(
                    ms = us as f64 / 1000.0,
                    "container namespaces: set up in the root's seed"
                );
            }
            if ready.insert(pid) {
                each(pid);
            }
        } else {
            return Err(RestoreError::Refused(format!("pid {pid}: {msg}")));
        }
    }
    Ok(())
}

/// Takes a ready seed (waiting in pause()) as the puppet's tracee; ckpt dying from now on
/// kills it (EXITKILL).
pub fn seize(pid: Pid) -> R<()> {
    ptrace::seize(
        pid,
        Options::PTRACE_O_EXITKILL | Options::PTRACE_O_TRACESYSGOOD,
    )?;
    ptrace::interrupt(pid)?;
    loop {
        match ptrace::wait(pid)? {
            Stop::EventStop(_) => return Ok(()),
            // A signal on its way in (e.g. from the terminal): the seed ignores or
            // records it; the puppet phase resets its actions.
            Stop::Signal(_) => ptrace::cont(pid, None)?,
            other => {
                return Err(RestoreError::Refused(format!(
                    "pid {pid}: seed stopped unexpectedly ({other:?})"
                )))
            }
        }
    }
}

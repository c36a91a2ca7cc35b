//! What this version refuses to dump, checked before the task is touched (and the parts
//! that can change, again once it is stopped).

use crate::blockers::Blockers;
use crate::describe::Describer;
use crate::{files, mm, refuse, DumpError};
use ckpt_sys::{proc, Pid};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The working directory of `pid` was removed (rmdir: no links left; its path then
/// ends in " (deleted)", which a directory may also be named).
pub fn cwd_removed(pid: Pid) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/cwd")).is_ok_and(|m| m.is_dir() && m.nlink() == 0)
}

/// Kernel threads have this in /proc/PID/stat's flags (include/linux/sched.h).
const PF_KTHREAD: u32 = 0x0020_0000;

/// Which process the pid named when it was validated. The seize goes by number; if that
/// process exited and the number was given to another one in between, the dump would
/// stop and write out a process nobody checked (or asked for).
pub struct Identity {
    /// Refers to the process itself, not the number: its fdinfo shows the pid only while
    /// that very process holds it.
    pidfd: OwnedFd,
    /// Field 22 of /proc/PID/stat, in clock ticks since boot.
    starttime: u64,
}

impl Identity {
    pub fn take(pid: Pid) -> Result<Identity, DumpError> {
        let gone = |e: ckpt_sys::Error| DumpError::Lost(format!("pid {pid} vanished: {e}"));
        let pidfd = ckpt_sys::probe::pidfd_open(pid).map_err(gone)?;
        let starttime = proc::stat(pid).map_err(gone)?.starttime;
        Ok(Identity { pidfd, starttime })
    }

    /// The pidfd of the validated process.
    pub fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.pidfd.as_fd()
    }

    /// Refuses unless `pid` is still the process that was validated (call it once the
    /// task is stopped, when it can no longer exit under us).
    pub fn verify(&self, pid: Pid) -> Result<(), DumpError> {
        let changed = |why: String| {
            DumpError::Lost(format!(
                "pid {pid} is no longer the process that was checked ({why}): it exited and \
                 the pid was reused; not dumping another process"
            ))
        };
        let path = format!("/proc/self/fdinfo/{}", self.pidfd.as_raw_fd());
        let info = std::fs::read_to_string(&path).map_err(|e| ckpt_sys::Error::io(&path, e))?;
        let holder = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|v| v.trim().parse::<i32>().ok());
        if holder != Some(pid.as_raw()) {
            return Err(changed(format!(
                "the checked process now has pid {}",
                holder.map_or("?".into(), |h| h.to_string())
            )));
        }
        let now = proc::stat(pid)?.starttime;
        if now != self.starttime {
            return Err(changed(format!(
                "start time {now} ticks, was {}",
                self.starttime
            )));
        }
        Ok(())
    }
}

/// Refuses a pid that is not a process to look at at all (no such pid, a thread id).
fn examinable(pid: Pid) -> Result<(), DumpError> {
    if pid.as_raw() <= 0 || !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(refuse(format!("pid {pid} does not exist")));
    }
    let gone = |e: ckpt_sys::Error| DumpError::Lost(format!("pid {pid} vanished: {e}"));
    let status = proc::status(pid).map_err(gone)?;
    if status.tgid != pid.as_raw() {
        return Err(refuse(format!(
            "pid {pid} is a thread of process {}; give the process id",
            status.tgid
        )));
    }
    Ok(())
}

/// Everything that can be refused before the task is touched; returns who `pid` is, for
/// [`Identity::verify`] after the seize.
/// The describer comes back for the processes met during the seize (`before_seize_one`):
/// what it read of the host (every process's pipes) is read once per dump.
/// The descendants come back too, each with who it was when checked (`Validated`): the
/// seize checks again only a process it finds that is not among them. Last, the most
/// anonymous and shared memory one of them held (`Copied`), read from the status the
/// checks read anyway: it sizes the dump's copy buffers.
pub fn before_seize(pid: Pid) -> Result<(Identity, Describer, Validated, Copied), DumpError> {
    examinable(pid)?;
    // First, so that every check below is known to be about this one process.
    let identity = Identity::take(pid)?;
    let (blockers, describer, mut validated, copied) = tree_blockers_with(pid)?;
    blockers.refuse_if_any(pid)?;
    validated.remove(&pid);
    Ok((identity, describer, validated, copied))
}

/// The largest RssAnon + RssShmem (bytes) of the processes checked: what one process's
/// copy can hold (file pages are not stored unless copied-on-write, and then they count
/// as anonymous).
pub type Copied = u64;

/// What a process's copy can hold, from its status.
pub fn copied(s: &proc::Status) -> Copied {
    (s.rssanon.unwrap_or(0) + s.rssshmem.unwrap_or(0)) * 1024
}

/// The processes of the tree that were checked, by pid, and who each was then (a pidfd
/// opened before its checks, the start time they read).
pub type Validated = std::collections::HashMap<Pid, Identity>;

/// A process that appeared in the tree only while it was being seized (a fork of a
/// seized parent's, just before its stop): checked on its own, as `before_seize` checked
/// the others.
pub fn before_seize_one(
    pid: Pid,
    root: Pid,
    describer: &mut Describer,
) -> Result<Identity, DumpError> {
    examinable(pid)?;
    let identity = Identity::take(pid)?;
    describer.add(pid);
    let mut out = Blockers::default();
    let owned =
        crate::container::root_namespaces(root).or_else(|| crate::container::in_ckpt_pidns(root));
    process_blockers(pid, true, owned.as_ref(), describer, &mut out, &mut 0)?;

    out.refuse_if_any(pid)?;
    Ok(identity)
}

/// Every blocker of the tree of `root` (it and all its descendants), found without
/// stopping or otherwise touching any of them. An error only when `root` itself cannot
/// be looked at.
pub fn tree_blockers(root: Pid) -> Result<Blockers, DumpError> {
    Ok(tree_blockers_with(root)?.0)
}

/// `tree_blockers`, the describer that looked (it knows the tree), and who each process
/// checked was.
fn tree_blockers_with(root: Pid) -> Result<(Blockers, Describer, Validated, Copied), DumpError> {
    examinable(root)?;
    let tree = tree(root);
    let mut describer = Describer::new(tree.iter().copied());
    let mut out = Blockers::default();
    let mut owned = crate::container::root_namespaces(root);
    if owned.is_some() {
        crate::container::record(root, &mut out);
    } else if let Some(o) = crate::container::in_ckpt_pidns(root) {
        crate::container::ckpt_pidns_blockers(root, &mut out);
        owned = Some(o);
    }
    // Each process is looked at on its own: the tree is split between two threads (the
    // machine has two CPUs; /proc reads are most of a dump's time before the seize), each
    // with a describer of its own (its caches are only caches), the results kept in tree
    // order. The host's pipes, if asked about, are read once for both (`HostPipes`).
    let looked = std::thread::scope(|s| {
        let other: Vec<Pid> = tree.iter().copied().skip(1).step_by(2).collect();
        let helper = (other.len() >= 8).then(|| {
            let owned = owned.as_ref();
            let mut d = describer.sibling();
            s.spawn(move || {
                let r: Vec<_> = other
                    .iter()
                    .map(|&pid| (pid, one_process(pid, root, owned, &mut d)))
                    .collect();
                (r, d.lock_candidates, d.saw_pipe)
            })
        });
        let mine: Vec<Pid> = if helper.is_some() {
            tree.iter().copied().step_by(2).collect()
        } else {
            tree.clone()
        };
        let mut all: Vec<_> = mine
            .iter()
            .map(|&pid| (pid, one_process(pid, root, owned.as_ref(), &mut describer)))
            .collect();
        if let Some(h) = helper {
            let (r, candidates, pipes) = h.join().expect("validation thread");
            describer.lock_candidates |= candidates;
            describer.saw_pipe |= pipes;
            all.extend(r);
        }
        all
    });
    let mut looked: std::collections::HashMap<Pid, _> = looked.into_iter().collect();
    let mut validated = Validated::new();
    let mut copied_max = 0;
    for pid in &tree {
        if let Some(r) = looked.remove(pid) {
            let (mine, id, copied) = r?;
            copied_max = copied_max.max(copied);
            out.list.extend(mine.list);
            if let Some(id) = id {
                validated.insert(*pid, id);
            }
        }
    }
    // A zombie has no fd table or memory left to share (kcmp sees two as "equal").
    let alive: Vec<Pid> = tree
        .iter()
        .copied()
        .filter(|&p| !crate::tree::is_dying(p))
        .collect();
    crate::sharing::blockers(&alive, &mut out);
    crate::pidns::blockers(&alive, &mut out);
    crate::cgroups::record(root, &alive, &|p| p, false, &mut out);
    Ok((out, describer, validated, copied_max))
}

/// What the stopped-task checks of `known_state` (unknown or non-default status fields
/// and VmFlags letters) would refuse, for `ckpt check -t`: a dump makes them once the
/// tree is stopped, but they need only /proc, so the check lists them too. (The prctl
/// states a dump asks the task itself for, by injected calls, are not seen here.)
pub fn known_state_blockers(root: Pid, out: &mut Blockers) {
    for pid in tree(root) {
        let dead = crate::tree::is_dying(pid);
        let Ok(mut maps) = (if dead { continue } else { proc::smaps(pid) }) else {
            continue;
        };
        crate::track::hide_own_letters(pid, &mut maps);
        let allowed = crate::known_state::Allowed::default();
        let checked = proc::read_trimmed(&format!("/proc/{pid}/status"))
            .map_err(DumpError::from)
            .and_then(|status| crate::known_state::check_task(pid, &status, &maps, &allowed));
        if let Err(e) = checked {
            let msg = e.to_string();
            let own = format!("pid {pid}: ");
            let why = msg.strip_prefix(&own).unwrap_or(&msg).to_string();
            out.push(pid, "kernel state", why);
        }
    }
}

/// What the seccomp filters of the tree would refuse (`seccomp::check_blockers`: the
/// one check that stops a thread, briefly, since filters show only to a tracer).
pub fn seccomp_blockers(root: Pid, out: &mut Blockers) {
    for pid in tree(root) {
        if !crate::tree::is_dying(pid) {
            crate::seccomp::check_blockers(pid, out);
        }
    }
}

/// `root` and its descendants (the children of each of their threads), parents first.
fn tree(root: Pid) -> Vec<Pid> {
    let me = nix::unistd::getpid();
    let mut out = vec![root];
    let mut i = 0;
    while i < out.len() {
        let pid = out[i];
        for tid in proc::tasks(pid).unwrap_or_default() {
            for c in proc::children(pid, tid).unwrap_or_default() {
                // ckpt itself, when it checks an ancestor of its own.
                if c != me && !out.contains(&c) {
                    out.push(c);
                }
            }
        }
        i += 1;
    }
    out
}

/// The blockers of one process of the tree of `root`. A descendant that is exiting (or
/// gone) blocks nothing: what it held is being torn down under our eyes (its maps read
/// empty, its fds vanish), and the seize records it as the zombie it becomes (`tree.rs`).
/// With them, who the process was (None if its pidfd could not be had, or it is dying),
/// and what its copy can hold.
fn one_process(
    pid: Pid,
    root: Pid,
    owned: Option<&crate::ns::Owned>,
    describer: &mut Describer,
) -> Result<(Blockers, Option<Identity>, Copied), DumpError> {
    let below = pid != root;
    let mut mine = Blockers::default();
    // Before the checks: they are then about the process this refers to, or `verify`
    // tells.
    let pidfd = ckpt_sys::probe::pidfd_open(pid).ok();
    let mut copied = 0;
    let looked = process_blockers(pid, below, owned, describer, &mut mine, &mut copied);
    if below && crate::tree::is_dying(pid) {
        return Ok((Blockers::default(), None, 0));
    }
    let starttime = looked?;
    Ok((
        mine,
        pidfd.map(|pidfd| Identity { pidfd, starttime }),
        copied,
    ))
}

/// What keeps this one process from being dumped.
const SCHED_DEADLINE: u32 = 6;

fn process_blockers(
    pid: Pid,
    below_root: bool,
    container: Option<&crate::ns::Owned>,
    describer: &mut Describer,
    out: &mut Blockers,
    copied: &mut Copied,
) -> Result<u64, DumpError> {
    let gone = |e: ckpt_sys::Error| DumpError::Lost(format!("pid {pid} vanished: {e}"));
    let stat = proc::stat(pid).map_err(gone)?;
    let started = stat.starttime;
    if stat.flags & PF_KTHREAD != 0 {
        out.push(pid, "process", "a kernel thread");
        return Ok(started);
    }
    if let Some(why) = self_or_ancestor(pid) {
        out.push(pid, "process", why);
    }
    if matches!(stat.state, 'Z' | 'X') {
        // A zombie below the root is restored as one (its parent reaps it later).
        if !below_root {
            out.push(pid, "process", "a zombie (it has exited)");
        }
        return Ok(started);
    }
    crate::ns::blockers(pid, below_root, container, out);
    // SCHED_DEADLINE's runtime, deadline and period need sched_setattr and admission
    // control at restore; not done.
    if ckpt_sys::process::get_sched(pid).is_ok_and(|(policy, _)| policy == SCHED_DEADLINE) {
        out.push(
            pid,
            "scheduling policy SCHED_DEADLINE",
            "deadline scheduling is not supported yet",
        );
    }
    let status = proc::status(pid).map_err(gone)?;
    *copied = self::copied(&status);
    // Seized by this dump already (a v1 freezer's tree, `preseize.rs`).
    let ours = crate::preseize::is_pending(pid);
    if status.tracerpid != 0 && !ours {
        out.push(
            pid,
            format!("tracer pid {}", status.tracerpid),
            "already traced by another process",
        );
    }
    if stat.state == 't' && !ours {
        out.push(
            pid,
            format!("state {}", stat.state),
            "in a tracing stop (traced by another process)",
        );
    }
    let maps = proc::read_bytes(&format!("/proc/{pid}/maps")).map_err(gone)?;
    if maps.is_empty() || proc::read_link(&format!("/proc/{pid}/exe")).is_err() {
        out.push(
            pid,
            "process",
            "no memory or no executable (a kernel thread?)",
        );
        return Ok(started);
    }
    for (link, what) in [("cwd", "working directory"), ("root", "root directory")] {
        let target = proc::read_link(&format!("/proc/{pid}/{link}")).map_err(gone)?;
        let target = target.to_string_lossy();
        // A removed working directory is made again (`ProcessCore.cwd_removed`).
        if target.ends_with(" (deleted)") && !(link == "cwd" && cwd_removed(pid)) {
            out.push(
                pid,
                format!("{what} {target}"),
                "it was removed; not supported yet",
            );
        }
    }
    files::blockers(pid, describer, out)?;
    let text = String::from_utf8_lossy(&maps);
    let parsed =
        proc::parse_smaps(&text).map_err(|e| DumpError::Lost(format!("/proc/{pid}/maps: {e}")))?;
    if crate::locks::may_hold_unlisted_running(pid, &parsed) {
        describer.lock_candidates = true;
    }
    let own_ipc = container.and_then(|c| c.get("ipc"));
    for m in &parsed {
        match mm::classify(pid, m) {
            Err(b) => out.add(b),
            Ok(mm::Class::Vma(ckpt_images::pb::VmaKind::VmaSysvShm))
                if own_ipc.is_none()
                    || ckpt_sys::ns::ns_id(pid, "ipc").ok().as_ref() != own_ipc =>
            {
                if let Err(why) = mm::external_sysv(pid, m, own_ipc.is_some()) {
                    out.push(
                        pid,
                        format!("mapping {:#x}-{:#x} {}", m.start, m.end, m.name),
                        why,
                    )
                }
            }
            Ok(_) => {}
        }
    }
    Ok(started)
}

/// ckpt cannot stop itself, and stopping an ancestor (its shell, pid 1) would deadlock it
/// or make no sense.
fn self_or_ancestor(pid: Pid) -> Option<String> {
    let me = nix::unistd::getpid();
    if pid == me {
        return Some("ckpt itself".into());
    }
    ckpt_ancestors()
        .contains(&pid)
        .then(|| format!("an ancestor of ckpt (pid {me}); it cannot be dumped from inside"))
}

/// ckpt's parent, its parent, ... up to pid 1: read once per run (each is a stat read, and
/// every process of a tree is checked against them).
fn ckpt_ancestors() -> &'static [Pid] {
    static ANCESTORS: std::sync::OnceLock<Vec<Pid>> = std::sync::OnceLock::new();
    ANCESTORS.get_or_init(|| {
        let mut out = Vec::new();
        let mut p = nix::unistd::getppid();
        for _ in 0..4096 {
            out.push(p);
            if p.as_raw() <= 1 {
                break;
            }
            match proc::stat(p) {
                Ok(s) => p = Pid::from_raw(s.ppid),
                Err(_) => break,
            }
        }
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn sleeper() -> std::process::Child {
        Command::new("sleep")
            .arg("100")
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn sleep")
    }

    /// The real check on real processes: the same one passes; a forged start time, a
    /// process that exited, and another process under the pid asked about are refused.
    #[test]
    fn identity_refuses_another_process() {
        let mut a = sleeper();
        let mut b = sleeper();
        let pid_a = Pid::from_raw(a.id() as i32);
        let pid_b = Pid::from_raw(b.id() as i32);
        let id_a = Identity::take(pid_a).unwrap();
        id_a.verify(pid_a).unwrap();

        let forged = Identity {
            pidfd: ckpt_sys::probe::pidfd_open(pid_a).unwrap(),
            starttime: id_a.starttime + 1,
        };
        let e = forged.verify(pid_a).unwrap_err().to_string();
        assert!(e.contains("start time") && e.contains("reused"), "{e}");

        // The checked process (a) is gone and the pid asked about is another one (b):
        // what a reused pid looks like to the check.
        a.kill().unwrap();
        a.wait().unwrap();
        let e = id_a.verify(pid_b).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {pid_b} is no longer")), "{e}");
        let e = id_a.verify(pid_a).unwrap_err().to_string();
        assert!(e.contains("reused"), "{e}");

        b.kill().unwrap();
        b.wait().unwrap();
    }
}

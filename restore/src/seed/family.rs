//! What a seed forks: each task with its dumped pid (clone3 set_tid) once the forker is
//! in its session and group. Usually its own children, each running its own seed; with
//! CLONE_PARENT, a sibling's child that must be in the forker's group or session
//! (`tree.rs`). A zombie's seed exits with the dumped wait status once it forked its
//! own, never reaped here: its restored parent's wait gets it. A helper (a stand-in for
//! a session or group leader that had exited) joins, forks its members and exits; its
//! parent's seed reaps it.
//!
//! A parent's plain children (live, its own, forked without CLONE_PARENT) are forked as
//! a fan: the parent forks the first and hands it half of the rest, which that child
//! forks with CLONE_PARENT before anything else of its own (so each is forked from the
//! state the parent forked it in: the same memory, fds, session and group, and the
//! parent's child), and so on down. A parent of 99 forks 7 times instead of 99, and the
//! forks run on every CPU: each costs a copy of ckpt's address space (~0.5 ms).

use super::SeedPlan;
use crate::tree;
use ckpt_sys::process::Forked;
use ckpt_sys::Pid;
use nix::errno::Errno;
use std::time::{Duration, Instant};

/// Everything every seed of the tree may need, in memory before the first fork.
pub struct Seeds<'a> {
    pub tree: &'a tree::Plan,
    /// One per live process, indexed by `Node::live`.
    pub plans: &'a [SeedPlan],
    /// ckpt's pid: the root seed's parent (ckpt's own parent when `sibling`).
    pub ckpt: i32,
    /// The root is forked as ckpt's sibling (CLONE_PARENT).
    pub sibling: bool,
    /// The tree's shared files: who creates which, in which slot.
    pub fds: &'a crate::fdtable::Plan,
    /// The namespaces the root's seed sets up (a container's, `container.rs`).
    pub container: Option<&'a ckpt_images::pb::Container>,
    /// The container's own mounts and IPC objects, which its root's seed makes.
    pub ns: Option<&'a crate::container::Plan>,
    /// The cgroups the root's seed enters first (`cgroups.rs`; empty: ckpt's).
    pub cgroups: &'a [std::path::PathBuf],
    /// Memory the seeds map and fill before they fork, for their children to share
    /// copy-on-write (`sharing.rs`).
    pub sharing: Option<super::sharing::Shared<'a>>,
}

impl Seeds<'_> {
    /// The dumped name of the process at `node` (a zombie's too).
    pub fn comm(&self, node: usize) -> String {
        let n = &self.tree.nodes[node];
        match n.live {
            Some(l) => self.plans[l].comm.clone(),
            None => n.comm.clone(),
        }
    }

    /// The status pipe as every seed inherits it (the same fd in all plans).
    fn status_fd(&self) -> std::os::fd::RawFd {
        self.plans[0].err_fd
    }
}

/// How long a seed waits for a child another task forks (a sibling or a helper, with
/// CLONE_PARENT) to appear and exit: they run right after, unless the restore failed.
const OTHERS_FORK: Duration = Duration::from_secs(10);

/// Forks what node `me` is the forker of, in order; then, in a live process, reaps its
/// helpers and waits for its zombies to have exited (left unreaped), so that none is
/// still running when ckpt takes over.
pub fn fork_children(seeds: &Seeds, me: usize) -> Result<(), String> {
    let node = &seeds.tree.nodes[me];
    let nests = !node.nested.is_empty()
        || node
            .forks
            .iter()
            .any(|&c| !seeds.tree.nodes[c].nested.is_empty());
    if nests {
        fork_in_order(seeds, me)?;
    } else {
        let (plain, others): (Vec<usize>, Vec<usize>) = node
            .forks
            .iter()
            .partition(|&&c| is_plain(&seeds.tree.nodes[c], me));
        for &c in &others {
            let sibling = seeds.tree.nodes[c].clone_parent;
            if let Forked::Child = fork_one(seeds, c, sibling)? {
                start(seeds, c)
            }
        }
        fan_out(seeds, &plain, false)?;
    }
    if seeds.tree.nodes[me].live.is_none() {
        return Ok(());
    }
    let children = &seeds.tree.nodes[me].children;
    for &c in children.iter().filter(|&&c| seeds.tree.nodes[c].helper) {
        let pid = Pid::from_raw(seeds.tree.nodes[c].pid);
        until_forked(pid, || nix::sys::wait::waitpid(pid, None).map(drop))?;
    }
    for &c in children {
        if seeds.tree.nodes[c].zombie.is_some() {
            let pid = Pid::from_raw(seeds.tree.nodes[c].pid);
            until_forked(pid, || {
                use nix::sys::wait::{waitid, Id, WaitPidFlag};
                waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).map(drop)
            })?;
        }
    }
    Ok(())
}

/// Forks what `me` forks one after another, where a pid namespace is nested below `me`
/// or `me` is in one: the rest goes to a namespace nested below this one once the first
/// child of a deeper level comes (`nested_pidns.rs`), and a child in a nested namespace
/// gets one pid per level.
fn fork_in_order(seeds: &Seeds, me: usize) -> Result<(), String> {
    let depth = seeds.tree.nodes[me].nested.len();
    let mut unshared = false;
    for &c in &seeds.tree.nodes[me].forks {
        let n = &seeds.tree.nodes[c];
        let pid = Pid::from_raw(n.pid);
        if n.nested.len() > depth && !unshared {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWPID)
                .map_err(|e| format!("unshare(CLONE_NEWPID) before forking pid {pid}: {e}"))?;
            unshared = true;
        }
        let forked = if n.clone_parent {
            ckpt_sys::process::fork_sibling_with_pid(pid)
        } else if n.nested.is_empty() {
            ckpt_sys::process::fork_with_pid(pid)
        } else {
            ckpt_sys::process::fork_with_pids(&crate::nested_pidns::set_tid(seeds.tree, c))
        };
        match forked {
            Ok(Forked::Child) => start(seeds, c),
            Ok(Forked::Parent(_)) => {}
            Err(e) if e.errno() == Some(Errno::EEXIST) => {
                return Err(crate::pidheld::message(n.pid, &seeds.comm(c)))
            }
            Err(e) => return Err(format!("pid {}: {e}", n.pid)),
        }
    }
    Ok(())
}

/// A live child of `me`'s own that `me` forks without CLONE_PARENT: one its siblings may
/// fork in its stead (with CLONE_PARENT) from the state `me` forked them in.
fn is_plain(n: &tree::Node, me: usize) -> bool {
    n.parent == Some(me) && !n.clone_parent && !n.helper && n.live.is_some()
}

/// Forks the plain children `list` (`sibling`: as the caller's siblings, the caller being
/// one of them): each forked one first forks half of what is left, then runs its seed.
fn fan_out(seeds: &Seeds, mut list: &[usize], sibling: bool) -> Result<(), String> {
    while let Some((&head, rest)) = list.split_first() {
        let (keep, give) = rest.split_at(rest.len() / 2);
        if let Forked::Child = fork_one(seeds, head, sibling)? {
            if let Err(e) = fan_out(seeds, give, true) {
                fail(seeds, head, &e)
            }
            start(seeds, head)
        }
        list = keep;
    }
    Ok(())
}

/// Forks node `c` with its pid, as the caller's child or (`sibling`) sibling.
fn fork_one(seeds: &Seeds, c: usize, sibling: bool) -> Result<Forked, String> {
    let n = &seeds.tree.nodes[c];
    let pid = Pid::from_raw(n.pid);
    let forked = if sibling {
        ckpt_sys::process::fork_sibling_with_pid(pid)
    } else {
        ckpt_sys::process::fork_with_pid(pid)
    };
    forked.map_err(|e| match e.errno() {
        Some(Errno::EEXIST) => crate::pidheld::message(n.pid, &seeds.comm(c)),
        _ => format!("pid {}: {e}", n.pid),
    })
}

/// Runs `wait` on child `pid` until it succeeds; ECHILD means another task has not
/// forked it yet.
fn until_forked(pid: Pid, mut wait: impl FnMut() -> nix::Result<()>) -> Result<(), String> {
    let start = Instant::now();
    loop {
        match wait() {
            Ok(()) => return Ok(()),
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) if start.elapsed() < OTHERS_FORK => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => return Err(format!("waiting for child {pid}: {e}")),
        }
    }
}

/// The forked task at node `c`: a helper, a zombie or a live process's seed.
fn start(seeds: &Seeds, c: usize) -> ! {
    let n = &seeds.tree.nodes[c];
    if n.helper {
        run_helper(seeds, c)
    }
    match n.zombie {
        Some(status) => become_zombie(seeds, c, status),
        None => super::run(seeds, c),
    }
}

fn fail(seeds: &Seeds, c: usize, msg: &str) -> ! {
    super::report(seeds.status_fd(), seeds.tree.nodes[c].pid, msg);
    ckpt_sys::process::exit_now(1)
}

/// A helper dies with its parent (a seed) if that dies first, like a seed.
fn run_helper(seeds: &Seeds, c: usize) -> ! {
    let n = &seeds.tree.nodes[c];
    let parent = n.parent.map_or(seeds.ckpt, |i| seeds.tree.nodes[i].pid);
    let dies_with_parent =
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok();
    if !dies_with_parent || nix::unistd::getppid().as_raw() != parent {
        ckpt_sys::process::exit_now(1)
    }
    if let Err(e) = super::join(n.setsid, n.setpgid).and_then(|()| fork_children(seeds, c)) {
        fail(
            seeds,
            c,
            &format!("helper standing for an exited leader: {e}"),
        )
    }
    ckpt_sys::process::exit_now(0)
}

fn become_zombie(seeds: &Seeds, c: usize, status: i32) -> ! {
    let n = &seeds.tree.nodes[c];
    if let Ok(name) = std::ffi::CString::new(n.comm.as_bytes()) {
        let _ = nix::sys::prctl::set_name(&name);
    }
    if let Err(e) = super::join(n.setsid, n.setpgid).and_then(|()| fork_children(seeds, c)) {
        fail(seeds, c, &e)
    }
    ckpt_sys::process::die_with_status(status)
}

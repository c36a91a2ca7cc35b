//! Pid namespaces nested below the tree's own: a process of the tree that unshared
//! CLONE_NEWPID and forked (`unshare --pid --fork CMD` inside a container, or on the
//! host). Its first child after the unshare is pid 1 of the new namespace, and every
//! process forked there has a pid at each level, which /proc/PID/status lists (NSpid,
//! outermost first).
//!
//! The images name every process by its pid in the tree's namespace (ckpt's, or the
//! container's), which is unique across the tree; `TreeNode.nested_pids` adds its pids
//! below that level. The restore rebuilds such a namespace the way it was made: the seed
//! of the process whose children go there unshares CLONE_NEWPID once it forked its
//! children of its own level, then forks the namespace's init with set_tid [1, ...] and
//! its other children there; processes inside fork theirs with one pid per level.
//!
//! What that cannot rebuild is refused here by name: an init whose parent is not the
//! process whose children go to its namespace (that process exited and the init was
//! reparented), a process that moved its children's namespace without forking an init
//! into it (an unshare not followed by a fork yet, or a setns into another namespace), a
//! process entering a namespace whose init its parent did not fork (nsenter), and a
//! process whose session or group makes another task than its parent fork it. Threads of
//! a process in a nested namespace keep their tids at every level too
//! (`ThreadCore.nested_tids`, given to the restore's clone3 as its set_tid array).

use crate::blockers::Blockers;
use ckpt_images::pb;
use ckpt_sys::{ns, Pid};
use std::collections::HashMap;

/// The level of `pid`'s pid namespace (0: the initial one), from its NSpid.
pub fn level(pid: Pid) -> Result<usize, ckpt_sys::Error> {
    Ok(ns::ns_pids(pid)?.len().saturating_sub(1))
}

/// What is known of one live process of the tree for these checks.
struct Seen {
    ppid: Pid,
    nspids: Vec<i32>,
    pid_ns: String,
    /// None: the link cannot be read, which it cannot while the namespace it names has
    /// no process yet (an unshare not followed by a fork).
    for_children: Option<String>,
}

fn look(pid: Pid) -> Option<Seen> {
    let stat = ckpt_sys::proc::stat(pid).ok()?;
    if matches!(stat.state, 'Z' | 'X') {
        return None;
    }
    let seen = Seen {
        ppid: Pid::from_raw(stat.ppid),
        nspids: ns::ns_pids(pid).ok()?,
        pid_ns: ns::ns_id(pid, "pid").ok()?,
        for_children: ns::ns_id(pid, "pid_for_children").ok(),
    };
    // An exiting process loses its namespaces (exit_task_namespaces) before it is a
    // zombie: pid_for_children is unreadable then, which is no empty namespace. (A
    // fork-heavy tree's children die all the time while it is checked running.)
    if seen.for_children.is_none() {
        const PF_EXITING: u32 = 0x4;
        let now = ckpt_sys::proc::stat(pid).ok()?;
        if matches!(now.state, 'Z' | 'X') || now.flags & PF_EXITING != 0 {
            return None;
        }
    }
    Some(seen)
}

/// Pushes a blocker for every nested pid namespace of the tree (`tree`: its processes,
/// the root first) that a restore could not make again, and for every process whose
/// children go to a pid namespace that is not its own and not one it made for them.
/// A process that vanished meanwhile is skipped (the other checks say so).
pub fn blockers(tree: &[Pid], out: &mut Blockers) {
    let Some(&root) = tree.first() else {
        return;
    };
    let seen: HashMap<Pid, Seen> = tree
        .iter()
        .filter_map(|&p| look(p).map(|s| (p, s)))
        .collect();
    let Some(top) = seen.get(&root).map(|s| s.nspids.len()) else {
        return;
    };
    // The init of each nested namespace, by namespace.
    let inits: HashMap<&str, Pid> = seen
        .iter()
        .filter(|(_, s)| s.nspids.len() > top && s.nspids.last() == Some(&1))
        .map(|(&p, s)| (s.pid_ns.as_str(), p))
        .collect();
    for &pid in tree {
        let Some(s) = seen.get(&pid) else {
            continue;
        };
        if s.for_children.as_ref() != Some(&s.pid_ns) {
            let made = s.for_children.as_ref().is_some_and(|f| {
                inits
                    .get(f.as_str())
                    .is_some_and(|&i| seen.get(&i).is_some_and(|c| c.ppid == pid))
            });
            if !made {
                out.push(
                    pid,
                    format!(
                        "pid_for_children {}",
                        s.for_children.as_deref().unwrap_or("pid:[empty namespace]")
                    ),
                    format!(
                        "its next children go to a pid namespace other than its own ({}) \
                         into which it forked no init (an unshare not followed by a fork, \
                         or a setns): not restored",
                        s.pid_ns
                    ),
                );
            }
        }
        if s.nspids.len() <= top {
            continue;
        }
        let parent = seen.get(&s.ppid);
        let what = format!("namespace {}", s.pid_ns);
        // Its parent forks into its namespace, or is in it.
        let forked_by_parent = parent.is_some_and(|p| p.for_children.as_ref() == Some(&s.pid_ns));
        let parent_inside = parent.is_some_and(|p| p.pid_ns == s.pid_ns);
        // A sibling of its namespace's init: forked there by the init's parent.
        let beside_init = inits
            .get(s.pid_ns.as_str())
            .is_some_and(|i| seen.get(i).is_some_and(|c| c.ppid == s.ppid));
        if s.nspids.last() == Some(&1) {
            if !forked_by_parent {
                out.push(
                    pid,
                    what,
                    format!(
                        "the init of a nested pid namespace whose parent {} does not fork \
                         into it (the process that made the namespace exited): not \
                         restored",
                        s.ppid
                    ),
                );
                continue;
            }
        } else if !(parent_inside || beside_init) {
            out.push(
                pid,
                what,
                format!(
                    "lives in a nested pid namespace its parent {} neither is in nor forked \
                     the init of (entered with setns): not restored",
                    s.ppid
                ),
            );
            continue;
        }
    }
}

/// The pids of task `pid` past the first `top` entries of its NSpid (the tree's level and
/// those above it), outermost first. A zombie's status still lists its pids.
fn below(pid: i32, top: usize) -> Result<Vec<i32>, crate::DumpError> {
    let pids = ns::ns_pids(Pid::from_raw(pid))
        .map_err(|e| crate::DumpError::Lost(format!("pid {pid}: {e}")))?;
    Ok(pids.get(top..).unwrap_or_default().to_vec())
}

/// Fills each node's `nested_pids` (`below`). Called while the tree is stopped, before
/// the pids are rewritten as the tree's namespace sees them (`n.pid` is still ckpt's).
pub fn record(nodes: &mut [pb::TreeNode], top: usize) -> Result<(), crate::DumpError> {
    for n in nodes.iter_mut() {
        n.nested_pids = below(n.pid, top)?;
    }
    Ok(())
}

/// Fills each thread's `nested_tids` as `record` does for processes, before the tids are
/// rewritten as the tree's namespace sees them.
pub fn record_threads(threads: &mut [pb::ThreadCore], top: usize) -> Result<(), crate::DumpError> {
    for t in threads.iter_mut() {
        t.nested_tids = below(t.tid, top)?;
    }
    Ok(())
}

/// Refuses a tree in which a process of a nested pid namespace would be forked by
/// another task than its parent (a sibling leading its group, or a helper standing for
/// an exited leader): only the parent forks into the namespace it made or is in. `nodes`
/// hold the tree's view of the pids (after `record` and the container's rewrite).
pub fn check_forkers(nodes: &[pb::TreeNode]) -> Result<(), crate::DumpError> {
    if nodes.iter().all(|n| n.nested_pids.is_empty()) {
        return Ok(());
    }
    let shape = ckpt_images::shape::shape(nodes).map_err(crate::DumpError::Refused)?;
    for (n, t) in nodes.iter().zip(&shape.tasks) {
        if !n.nested_pids.is_empty() && t.clone_parent() {
            return Err(crate::DumpError::Refused(format!(
                "pid {} (pid {} in its nested pid namespace): its session or process group \
                 is one its parent {} is not in and does not lead; a restore would fork it \
                 from another task, outside the namespace: not restored",
                n.pid,
                n.nested_pids.last().copied().unwrap_or_default(),
                n.ppid
            )));
        }
    }
    Ok(())
}

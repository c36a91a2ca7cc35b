//! The tree of a dump: the root and every descendant, found through
//! /proc/PID/task/*/children, checked, and seized so that the picture is consistent.
//!
//! Each process is seized (PTRACE_SEIZE + INTERRUPT) before its children are listed: once
//! stopped it can neither fork nor reap, so its list of children is final (a child that
//! exits meanwhile stays as a zombie). The walk is repeated over every seized process until
//! a whole pass finds nothing new (orphans reparented to a subreaper of the tree show up
//! there), so no task is missing, none is added, and on any error every seized task is
//! put back (each `Seized` guard detaches on drop).

use crate::crew::{Crew, Pending, Task};
use crate::describe::Describer;
use crate::seize::Seized;
use crate::validate::{self, Identity};
use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::{proc, Pid};
use std::collections::HashSet;

/// A live process of the tree, stopped (by the dump's thread or by its crew's).
pub struct Member {
    pub task: Task,
    pub id: Identity,
}

/// Every process of the tree: `live` parents before children (the root first), `nodes`
/// the links of all of them, zombies included, in the same order.
pub struct Tree {
    pub live: Vec<Member>,
    pub nodes: Vec<pb::TreeNode>,
    /// Some process was found only during the seize (checked on its own, not with the
    /// rest of the tree before it: `validate::before_seize_one`).
    pub met_while_seizing: bool,
}

/// The children of `pid`, from every thread's list.
pub fn children(pid: Pid) -> Result<Vec<Pid>, DumpError> {
    let mut out = Vec::new();
    for tid in proc::tasks(pid)? {
        for c in proc::children(pid, tid)? {
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    Ok(out)
}

/// The descendants of `root` as they are now (the tree still runs), parents first: to
/// check them all before anything is stopped, and to size the copy buffers.
pub fn descendants(root: Pid) -> Result<Vec<Pid>, DumpError> {
    let mut out = vec![root];
    let mut seen = HashSet::from([root]);
    let mut i = 0;
    while i < out.len() {
        // A process that exited meanwhile has no children to list.
        for k in children(out[i]).unwrap_or_default() {
            if seen.insert(k) {
                out.push(k);
            }
        }
        i += 1;
    }
    out.remove(0);
    Ok(out)
}

/// PF_EXITING in /proc/PID/stat's flags (include/linux/sched.h): on its way to a zombie,
/// its memory may already be gone.
const PF_EXITING: u32 = 0x4;

fn is_zombie(pid: Pid) -> bool {
    proc::stat(pid).map_or(true, |s| matches!(s.state, 'Z' | 'X'))
}

/// A zombie, or about to be one (exiting).
pub fn is_dying(pid: Pid) -> bool {
    proc::stat(pid).map_or(true, |s| {
        matches!(s.state, 'Z' | 'X') || s.flags & PF_EXITING != 0
    })
}

/// Waits (briefly) for an exiting child to be a zombie: its parent is stopped, so it
/// stays one.
fn settle(pid: Pid) -> bool {
    for _ in 0..1000 {
        if is_zombie(pid) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    false
}

fn node(pid: Pid) -> Result<pb::TreeNode, DumpError> {
    let s = proc::stat(pid)
        .map_err(|e| DumpError::Lost(format!("pid {pid} vanished during the dump: {e}")))?;
    let zombie = matches!(s.state, 'Z' | 'X');
    if zombie && s.exit_code.unwrap_or(0) & 0x80 != 0 {
        return Err(refuse(format!(
            "pid {pid} is a zombie that dumped core (wait status {:#x}); not supported yet",
            s.exit_code.unwrap_or(0)
        )));
    }
    Ok(pb::TreeNode {
        pid: pid.as_raw(),
        ppid: s.ppid,
        pgid: s.pgrp,
        sid: s.session,
        zombie,
        exit_status: if zombie { s.exit_code.unwrap_or(0) } else { 0 },
        comm: if zombie { s.comm } else { String::new() },
        // Filled once the tree is stopped (`pidns::record`).
        nested_pids: Vec::new(),
    })
}

/// Seizes every descendant of the (seized) root, re-walking until stable.
/// A child among `validated` (checked with the rest of the tree before the seize) is
/// seized as it is, and afterwards verified to be the process that was checked; any other
/// is checked on its own first. With a `crew`, every other process found is seized by the
/// crew's thread (which then collects and releases it: `crew.rs`), the siblings of one
/// parent in parallel; a parent's children are still listed only once it is stopped.
pub fn seize(
    root: Member,
    describer: &mut Describer,
    mut validated: validate::Validated,
    crew: Option<&Crew>,
) -> Result<Tree, DumpError> {
    let root_pid = root.task.pid();
    let mut tree = Tree {
        nodes: vec![node(root_pid)?],
        live: vec![root],
        met_while_seizing: false,
    };
    let mut known: HashSet<Pid> = HashSet::from([root_pid]);
    let mut turn = 0usize;
    loop {
        let mut found = false;
        let mut i = 0;
        while i < tree.live.len() {
            ckpt_sys::abort::check()?;
            let parent = tree.live[i].task.pid();
            // Each child in the order listed: seized here, or by the crew (answer to come).
            let mut batch: Vec<(Pid, Option<Seizing>)> = Vec::new();
            for c in children(parent)? {
                if !known.insert(c) {
                    continue;
                }
                found = true;
                turn += 1;
                let by = crew.filter(|_| crate::crew::takes(turn));
                let checked = validated.remove(&c);
                tree.met_while_seizing |= checked.is_none();
                let seizing = start_child(c, root_pid, describer, checked, by)?;
                batch.push((c, seizing));
            }
            for (c, seizing) in batch {
                if let Some(m) = seizing.map(|s| s.finish(c)).transpose()?.flatten() {
                    tree.live.push(m);
                }
                tree.nodes.push(node(c)?);
            }
            i += 1;
        }
        if !found {
            break;
        }
    }
    check_groups(&tree.nodes)?;
    // Parents before children: a process found in a later pass (reparented) may sit
    // above one found earlier.
    order(&mut tree);
    Ok(tree)
}

/// A child being seized: done already, or by the crew.
enum Seizing {
    Done(Box<Member>),
    Crew(Pending<()>, validate::Identity, bool),
}

impl Seizing {
    /// The member, once seized; None if it became a zombie meanwhile.
    fn finish(self, c: Pid) -> Result<Option<Member>, DumpError> {
        match self {
            Seizing::Done(m) => Ok(Some(*m)),
            Seizing::Crew(pending, id, was_checked) => {
                match pending.wait() {
                    Ok(()) => {}
                    Err(_) if is_dying(c) && settle(c) => return Ok(None),
                    Err(e) => return Err(e),
                }
                if was_checked {
                    id.verify(c)?;
                }
                Ok(Some(Member {
                    task: Task::Crew(c),
                    id,
                }))
            }
        }
    }
}

/// Checks a child and seizes it (here, or hands it to `crew`); None if it is (or just
/// became) a zombie.
fn start_child(
    c: Pid,
    root: Pid,
    describer: &mut Describer,
    checked: Option<validate::Identity>,
    crew: Option<&Crew>,
) -> Result<Option<Seizing>, DumpError> {
    if is_dying(c) && settle(c) {
        return Ok(None);
    }
    let was_checked = checked.is_some();
    let id = match checked {
        Some(id) => id,
        None => match validate::before_seize_one(c, root, describer) {
            Ok(id) => id,
            Err(_) if is_dying(c) && settle(c) => return Ok(None),
            Err(e) => return Err(e),
        },
    };
    if let Some(crew) = crew {
        return Ok(Some(Seizing::Crew(crew.seize(c), id, was_checked)));
    }
    let task = match Seized::seize(c) {
        Ok(t) => t,
        Err(_) if is_dying(c) && settle(c) => return Ok(None),
        Err(e) => return Err(e),
    };
    // Stopped, it can no longer exit and leave its pid to another process.
    if was_checked {
        id.verify(c)?;
    }
    Ok(Some(Seizing::Done(Box::new(Member {
        task: Task::Own(Box::new(task)),
        id,
    }))))
}

/// Sorts `nodes` and `live` so that every parent comes before its children.
fn order(tree: &mut Tree) {
    let mut sorted: Vec<pb::TreeNode> = Vec::with_capacity(tree.nodes.len());
    let mut placed: HashSet<i32> = HashSet::new();
    let root = tree.nodes[0].pid;
    sorted.push(tree.nodes[0].clone());
    placed.insert(root);
    let mut i = 0;
    while i < sorted.len() {
        let p = sorted[i].pid;
        for n in tree.nodes.iter().filter(|n| n.ppid == p && n.pid != root) {
            if placed.insert(n.pid) {
                sorted.push(n.clone());
            }
        }
        i += 1;
    }
    tree.nodes = sorted;
    let rank: std::collections::HashMap<i32, usize> = tree
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.pid, i))
        .collect();
    tree.live.sort_by_key(|m| {
        rank.get(&m.task.pid().as_raw())
            .copied()
            .unwrap_or(usize::MAX)
    });
}

/// The sessions and process groups a restore can rebuild (`ckpt_images::shape`): each
/// process is forked by its parent, a sibling or a helper standing for a leader that has
/// exited. A leader that is alive outside the tree (other than the root's own session and
/// group, which the restore gives it anew) cannot be stood for: refused by name, as is
/// whatever the kernel offers no way to rebuild.
pub fn check_groups(nodes: &[pb::TreeNode]) -> Result<(), DumpError> {
    let pids: HashSet<i32> = nodes.iter().map(|n| n.pid).collect();
    for n in &nodes[1..] {
        if !pids.contains(&n.ppid) {
            return Err(DumpError::Lost(format!(
                "pid {} left the tree (its parent is now {}) during the dump",
                n.pid, n.ppid
            )));
        }
    }
    let shape = ckpt_images::shape::shape(nodes).map_err(refuse)?;
    for h in shape.helpers() {
        if std::path::Path::new(&format!("/proc/{}", h.pid)).exists() {
            let member = nodes
                .iter()
                .find(|n| n.sid == h.pid || n.pgid == h.pid)
                .map_or(0, |n| n.pid);
            let what = if nodes.iter().any(|n| n.sid == h.pid) {
                "session"
            } else {
                "process group"
            };
            return Err(refuse(format!(
                "pid {member} is in {what} {}, whose leader is alive outside the tree; not \
                 supported yet",
                h.pid
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use ckpt_images::shape::node as n;

    #[test]
    fn groups_a_restore_can_rebuild() {
        // root in the shell's group and session; children inherit, lead a group, or lead
        // a session, and their children inherit that; a child in a sibling's group.
        let ok = [
            n(10, 1, 5, 4),
            n(11, 10, 5, 4),
            n(12, 10, 12, 4),
            n(13, 10, 13, 13),
            n(14, 13, 13, 13),
            n(15, 12, 12, 4),
            n(16, 10, 12, 4),
        ];
        check_groups(&ok).unwrap();
        // A child left in its parent's old session (pid 1's) after the parent's setsid:
        // its leader is alive.
        let e = check_groups(&[n(10, 1, 10, 10), n(11, 10, 1, 1)])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("pid 11 is in session 1, whose leader is alive"),
            "{e}"
        );
    }
}

//! How the sessions and process groups of a dumped tree can be rebuilt, the one answer
//! dump (to refuse what cannot be) and restore (to do it) share.
//!
//! The kernel's rules: a process gets its session and group from whoever forks it;
//! setsid() makes it the leader of a new session (and group) with its own pid; setpgid
//! moves it into a new group of its own, or into an existing group of its session. A
//! clone with CLONE_PARENT gives the child the caller's parent but still the caller's
//! session and group. So each process is forked by a task that is, by then, in its
//! session (and group, unless it leads its own), and whose parent is the process's
//! parent: the parent itself, a sibling (with CLONE_PARENT), or a *helper*: a temporary
//! task with the pid of a session or group leader that has exited, forked by the parent,
//! which calls setsid or setpgid, forks its members with CLONE_PARENT, exits and is
//! reaped by the parent. The group or session then lives on in its members, as it did
//! after the real leader exited.
//!
//! Forkers never form a cycle: a session leader is forked by its parent; a group leader
//! by its parent, a sibling leading its session or a session helper; a process joining a
//! group by its parent, the sibling leading the group or a group helper; a helper by the
//! parent or a session leader (sibling or helper).

use crate::pb;
use std::collections::HashMap;

/// What a task does to its session and group once forked, before it forks anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    /// Keeps the forker's session and group.
    Inherit,
    /// setsid(): leads a new session and group.
    Session,
    /// setpgid(0, 0): leads a new group in the forker's session.
    Group,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    pub pid: i32,
    /// Index of its parent in `Shape::tasks` (None: the root).
    pub parent: Option<usize>,
    /// Index of the task that forks it: the parent, or (CLONE_PARENT) a task whose
    /// parent is the same. None: the root, which ckpt forks.
    pub forker: Option<usize>,
    pub join: Join,
    /// Stands for a leader that has exited: lives only while the tree is forked.
    pub helper: bool,
}

impl Task {
    /// Forked with CLONE_PARENT by a task other than its parent.
    pub fn clone_parent(&self) -> bool {
        self.forker != self.parent
    }
}

/// The tasks of a restore: the tree's nodes first, in their order (same indices), then
/// the helpers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    pub tasks: Vec<Task>,
}

impl Shape {
    /// The helpers: pids that must be free at restore and, at dump, no longer exist.
    pub fn helpers(&self) -> impl Iterator<Item = &Task> {
        self.tasks.iter().filter(|t| t.helper)
    }
}

/// A live process with these links (for tests of the trees built from them).
pub fn node(pid: i32, ppid: i32, pgid: i32, sid: i32) -> pb::TreeNode {
    pb::TreeNode {
        pid,
        ppid,
        pgid,
        sid,
        ..Default::default()
    }
}

struct Builder<'a> {
    nodes: &'a [pb::TreeNode],
    index: HashMap<i32, usize>,
    tasks: Vec<Task>,
    /// A helper's index and the session it is in.
    helpers: HashMap<i32, (usize, i32)>,
}

/// Where `nodes` (parents first, the root first) can be rebuilt: the plan of forks, or
/// why not, naming the pid. The root keeps whatever session and group the restore gives
/// it; a process in the root's session or group gets them from its parent.
pub fn shape(nodes: &[pb::TreeNode]) -> Result<Shape, String> {
    if nodes.is_empty() {
        return Err("an empty tree".into());
    }
    let mut b = Builder {
        nodes,
        index: HashMap::with_capacity(nodes.len()),
        tasks: Vec::with_capacity(nodes.len()),
        helpers: HashMap::new(),
    };
    for (i, n) in nodes.iter().enumerate() {
        let parent = if i == 0 {
            None
        } else {
            Some(*b.index.get(&n.ppid).ok_or_else(|| {
                format!(
                    "the parent {} of pid {} is not listed before it",
                    n.ppid, n.pid
                )
            })?)
        };
        if b.index.insert(n.pid, i).is_some() {
            return Err(format!("pid {} is listed twice", n.pid));
        }
        b.tasks.push(Task {
            pid: n.pid,
            parent,
            forker: parent,
            join: Join::Inherit,
            helper: false,
        });
    }
    for i in 1..nodes.len() {
        b.place(i)?;
    }
    Ok(Shape { tasks: b.tasks })
}

impl Builder<'_> {
    fn node_of(&self, i: usize) -> Option<&pb::TreeNode> {
        self.nodes.get(i).filter(|_| !self.tasks[i].helper)
    }

    /// Session and group task `i` ends in (a helper: its own pid as group).
    fn ends_in(&self, i: usize) -> (i32, i32) {
        match self.node_of(i) {
            Some(n) => (n.sid, n.pgid),
            None => {
                let pid = self.tasks[i].pid;
                (self.helpers[&pid].1, pid)
            }
        }
    }

    fn place(&mut self, i: usize) -> Result<(), String> {
        let n = &self.nodes[i];
        let q = self.tasks[i].parent.expect("not the root");
        if n.sid == n.pid {
            if n.pgid != n.pid {
                return Err(format!(
                    "pid {} leads session {} but is in process group {}; not supported yet",
                    n.pid, n.sid, n.pgid
                ));
            }
            self.tasks[i].join = Join::Session;
            return Ok(());
        }
        let own = n.pgid == n.pid;
        let (sid, pgid, pid) = (n.sid, n.pgid, n.pid);
        if own {
            self.tasks[i].join = Join::Group;
        }
        let forker = self.find(q, sid, (!own).then_some(pgid), pid)?;
        self.tasks[i].forker = Some(forker);
        Ok(())
    }

    /// A task whose parent is `q` (or `q` itself) that is in session `sid` and, if given,
    /// group `pgid`, once it has joined them; for process `who`, named in errors.
    fn find(&mut self, q: usize, sid: i32, pgid: Option<i32>, who: i32) -> Result<usize, String> {
        let (qs, qg) = self.ends_in(q);
        if qs == sid && pgid.is_none_or(|g| g == qg) {
            return Ok(q);
        }
        let qpid = self.tasks[q].pid;
        let root = &self.nodes[0];
        let (leader, what) = match pgid {
            Some(g) => (g, "process group"),
            None => (sid, "session"),
        };
        if let Some(&l) = self.index.get(&leader) {
            let ln = &self.nodes[l];
            // A sibling leading it (a pipeline's first process, a session leader whose
            // children were reparented to their grandparent).
            if ln.ppid == qpid && l != 0 && ln.sid == sid && ln.pid != who {
                return Ok(l);
            }
            return Err(format!(
                "pid {who} is in {what} {leader}, led by pid {leader} which is neither its \
                 parent's nor a sibling's (its parent {qpid} is in session {qs}, group {qg}); \
                 not supported yet"
            ));
        }
        if leader == root.sid || leader == root.pgid {
            return Err(format!(
                "pid {who} is in {what} {leader}, the tree root's, but its parent {qpid} is \
                 not (session {qs}, group {qg}); not supported yet"
            ));
        }
        self.helper(q, leader, sid, who, what)
    }

    /// The helper standing for the exited leader `pid` of a group in session `sid` (a
    /// session, if `pid == sid`), child of `q`.
    fn helper(
        &mut self,
        q: usize,
        pid: i32,
        sid: i32,
        who: i32,
        what: &str,
    ) -> Result<usize, String> {
        if let Some(&(h, hs)) = self.helpers.get(&pid) {
            if self.tasks[h].parent != Some(q) || hs != sid {
                return Err(format!(
                    "pid {who} is in {what} {pid} whose leader has exited, as are processes \
                     of another parent or session; not supported yet"
                ));
            }
            return Ok(h);
        }
        let h = self.tasks.len();
        let session = pid == sid;
        self.tasks.push(Task {
            pid,
            parent: Some(q),
            forker: Some(q),
            join: if session { Join::Session } else { Join::Group },
            helper: true,
        });
        self.helpers.insert(pid, (h, sid));
        if !session {
            let f = self.find(q, sid, None, who)?;
            self.tasks[h].forker = Some(f);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::node as n;

    fn forkers(s: &Shape) -> Vec<(i32, Option<i32>, Join, bool)> {
        s.tasks
            .iter()
            .map(|t| (t.pid, t.forker.map(|f| s.tasks[f].pid), t.join, t.helper))
            .collect()
    }

    #[test]
    fn plain_trees_fork_from_their_parents() {
        let s = shape(&[
            n(10, 1, 5, 4),
            n(11, 10, 5, 4),
            n(12, 10, 12, 4),
            n(13, 10, 13, 13),
            n(14, 13, 13, 13),
            n(15, 12, 12, 4),
        ])
        .unwrap();
        assert!(s.tasks.iter().all(|t| t.forker == t.parent && !t.helper));
        assert_eq!(s.tasks[2].join, Join::Group);
        assert_eq!(s.tasks[3].join, Join::Session);
        assert_eq!(s.tasks[4].join, Join::Inherit);
    }

    #[test]
    fn a_sibling_led_group_is_joined_through_the_sibling() {
        let s = shape(&[n(10, 1, 10, 4), n(11, 10, 11, 4), n(12, 10, 11, 4)]).unwrap();
        assert_eq!(forkers(&s)[2], (12, Some(11), Join::Inherit, false));
        assert!(s.tasks[2].clone_parent());
    }

    #[test]
    fn exited_leaders_get_helpers() {
        // A daemon: 11 set up session 11 and exited; its child 12 was reparented to 10.
        // 13 is in group 20 (of session 4, the root's), whose leader exited. 14 is in
        // group 21 of session 11.
        let s = shape(&[
            n(10, 1, 10, 4),
            n(12, 10, 11, 11),
            n(13, 10, 20, 4),
            n(14, 10, 21, 11),
            n(15, 10, 15, 11),
        ])
        .unwrap();
        let f = forkers(&s);
        assert_eq!(f[1], (12, Some(11), Join::Inherit, false));
        assert_eq!(f[2], (13, Some(20), Join::Inherit, false));
        assert_eq!(f[3], (14, Some(21), Join::Inherit, false));
        assert_eq!(f[4], (15, Some(11), Join::Group, false));
        assert_eq!(f[5], (11, Some(10), Join::Session, true));
        assert_eq!(f[6], (20, Some(10), Join::Group, true));
        assert_eq!(f[7], (21, Some(11), Join::Group, true));
        assert_eq!(s.helpers().count(), 3);
        assert!(s.tasks[7].clone_parent() && !s.tasks[5].clone_parent());
    }

    #[test]
    fn refuses_what_the_kernel_cannot_rebuild() {
        // Left in its parent's old session after the parent's setsid: helpers for the
        // session and group it is in (the dump refuses them: their leaders are alive).
        let s = shape(&[n(10, 1, 10, 10), n(11, 10, 5, 4)]).unwrap();
        let h: Vec<i32> = s.helpers().map(|t| t.pid).collect();
        assert_eq!(h, vec![5, 4]);
        // Left in the root's session under a parent that left it.
        let e = shape(&[n(10, 1, 10, 4), n(11, 10, 11, 11), n(12, 11, 10, 4)]).unwrap_err();
        assert!(e.contains("pid 12 is in process group 10"), "{e}");
        // In a group led by a nephew.
        let e = shape(&[
            n(10, 1, 10, 4),
            n(11, 10, 11, 4),
            n(12, 11, 12, 4),
            n(13, 10, 12, 4),
        ])
        .unwrap_err();
        assert!(
            e.contains("pid 13 is in process group 12, led by pid 12"),
            "{e}"
        );
        // One exited leader's session holding processes of two parents.
        let e = shape(&[
            n(10, 1, 10, 4),
            n(11, 10, 11, 4),
            n(12, 10, 30, 30),
            n(13, 11, 30, 30),
        ])
        .unwrap_err();
        assert!(e.contains("whose leader has exited"), "{e}");
    }
}

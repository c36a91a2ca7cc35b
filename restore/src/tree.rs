//! The plan of a tree restore: who forks whom, in which order, and what each seed does
//! about its session and process group.
//!
//! ckpt forks the root's seed; every seed, right after joining its session and group
//! (which what it forks then inherits), forks the seeds it is the forker of with their
//! pids (`seed/family.rs`), then prepares itself. Usually a process is forked by its
//! parent; one in a group or session its parent is not in is forked with CLONE_PARENT by
//! a sibling leading it, or by a helper standing for a leader that has exited
//! (`ckpt_images::shape` decides, the dump refused what it cannot). A zombie's seed exits
//! once it forked its own, with the dumped status, left for its restored parent to reap;
//! a helper exits with 0 and its parent's seed reaps it. The order of `nodes` is the
//! dump's (parents before children, the root first), then the helpers.

use crate::RestoreError;
use ckpt_images::pb;
use ckpt_images::shape::{self, Join};
use std::collections::HashMap;

/// Signals whose default action does not end a process: no wait status holds one.
const NOT_FATAL: [i32; 8] = [17, 18, 19, 20, 21, 22, 23, 28];

#[derive(Debug, Clone)]
pub struct Node {
    pub pid: i32,
    /// Index of the parent in `Plan::nodes` (None for the root).
    pub parent: Option<usize>,
    /// Its children, helpers included (reaped) and zombies (waited for, not reaped).
    pub children: Vec<usize>,
    /// What its seed forks (after joining its session and group), in order.
    pub forks: Vec<usize>,
    /// Forked by a task other than its parent, with CLONE_PARENT.
    pub clone_parent: bool,
    /// A helper: a stand-in for a session or group leader that had exited.
    pub helper: bool,
    /// A zombie: the wait status its seed dies with.
    pub zombie: Option<i32>,
    /// A zombie's name.
    pub comm: String,
    /// setsid() (a session leader) or else setpgid(0, 0) (a group leader); neither: it
    /// stays in its parent's session and group.
    pub setsid: bool,
    pub setpgid: bool,
    /// Index of this live process's image and seed plan (None for a zombie).
    pub live: Option<usize>,
    /// Its pids in the pid namespaces nested below the tree's, outermost first
    /// (`TreeNode.nested_pids`; `nested_pidns::nest` checks them and orders the forks).
    pub nested: Vec<i32>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes: Vec<Node>,
}

impl Plan {
    /// Live processes, in restore order.
    pub fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.live.is_some())
    }

    /// The processes of the image (zombies included, helpers not).
    pub fn processes(&self) -> usize {
        self.nodes.iter().filter(|n| !n.helper).count()
    }
}

fn bad(inventory: &str, reason: String) -> RestoreError {
    RestoreError::Refused(format!("{inventory}: tree: {reason}"))
}

/// The plan for `inv` (already checked by `image::check_tree`): the inventory's tree, or
/// the root alone for an image of one process. The root's own session and group are the
/// caller's business (`detach`); the tree is refused unless each process is in its
/// parent's session and group or leads its own, which is what the dump allows.
/// `inventory` names the file in errors.
pub fn plan(inv: &pb::Inventory, inventory: &str) -> Result<Plan, RestoreError> {
    let nodes: Vec<pb::TreeNode> = if inv.tree.is_empty() {
        if inv.pids.len() != 1 {
            return Err(bad(
                inventory,
                format!("{} processes in the image but no tree", inv.pids.len()),
            ));
        }
        vec![pb::TreeNode {
            pid: inv.root_pid,
            ..Default::default()
        }]
    } else {
        inv.tree.clone()
    };
    if nodes[0].pid != inv.root_pid || nodes[0].zombie {
        return Err(bad(
            inventory,
            format!(
                "the first process is {}, not the root {}",
                nodes[0].pid, inv.root_pid
            ),
        ));
    }
    let live_pids: Vec<i32> = nodes.iter().filter(|n| !n.zombie).map(|n| n.pid).collect();
    if live_pids != inv.pids {
        return Err(bad(
            inventory,
            "its live processes are not the inventory's pids, in order".into(),
        ));
    }
    let mut index: HashMap<i32, usize> = HashMap::with_capacity(nodes.len());
    let mut out: Vec<Node> = Vec::with_capacity(nodes.len());
    let mut live = 0;
    for (i, n) in nodes.iter().enumerate() {
        if n.pid <= 0 || index.insert(n.pid, i).is_some() {
            return Err(bad(
                inventory,
                format!("pid {} is invalid or listed twice", n.pid),
            ));
        }
        let parent = if i == 0 {
            None
        } else {
            let p = *index.get(&n.ppid).filter(|&&p| p < i).ok_or_else(|| {
                bad(
                    inventory,
                    format!(
                        "the parent {} of pid {} is not listed before it",
                        n.ppid, n.pid
                    ),
                )
            })?;
            if out[p].zombie.is_some() {
                return Err(bad(
                    inventory,
                    format!("pid {} has a zombie parent {}", n.pid, n.ppid),
                ));
            }
            Some(p)
        };
        let zombie = if n.zombie {
            let sig = n.exit_status & 0x7f;
            let valid = n.exit_status & !0xffff == 0
                && if sig == 0 {
                    n.exit_status & 0xff == 0
                } else {
                    n.exit_status & 0xff80 == 0 && sig <= 64 && !NOT_FATAL.contains(&sig)
                };
            if !valid {
                return Err(bad(
                    inventory,
                    format!(
                        "zombie {} has wait status {:#x}, not one a restore can give",
                        n.pid, n.exit_status
                    ),
                ));
            }
            Some(n.exit_status)
        } else {
            None
        };
        out.push(Node {
            pid: n.pid,
            parent,
            children: Vec::new(),
            forks: Vec::new(),
            clone_parent: false,
            helper: false,
            zombie,
            comm: n.comm.clone(),
            setsid: false,
            setpgid: false,
            live: if n.zombie {
                None
            } else {
                live += 1;
                Some(live - 1)
            },
            nested: n.nested_pids.clone(),
        });
    }
    let shape = shape::shape(&nodes).map_err(|e| bad(inventory, e))?;
    for (i, t) in shape.tasks.iter().enumerate() {
        if t.helper {
            out.push(Node {
                pid: t.pid,
                parent: t.parent,
                children: Vec::new(),
                forks: Vec::new(),
                clone_parent: false,
                helper: true,
                zombie: None,
                comm: String::new(),
                setsid: false,
                setpgid: false,
                live: None,
                nested: Vec::new(),
            });
            if index.insert(t.pid, i).is_some() {
                return Err(bad(
                    inventory,
                    format!("helper pid {} is a process of the tree", t.pid),
                ));
            }
        }
    }
    for (i, t) in shape.tasks.iter().enumerate() {
        let node = &mut out[i];
        node.setsid = t.join == Join::Session;
        node.setpgid = t.join == Join::Group;
        node.clone_parent = t.clone_parent();
        if let Some(p) = t.parent {
            out[p].children.push(i);
        }
        if let Some(f) = t.forker {
            out[f].forks.push(i);
        }
    }
    let mut plan = Plan { nodes: out };
    crate::nested_pidns::nest(&mut plan).map_err(|e| bad(inventory, e))?;
    Ok(plan)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    use ckpt_images::shape::node as n;

    /// An inventory of the tree `tree` (its first node the root).
    pub(crate) fn inv(tree: Vec<pb::TreeNode>) -> pb::Inventory {
        pb::Inventory {
            root_pid: tree[0].pid,
            pids: tree.iter().filter(|n| !n.zombie).map(|n| n.pid).collect(),
            tree,
            ..Default::default()
        }
    }

    #[test]
    fn plans_a_tree() {
        let mut z = n(14, 10, 5, 4);
        z.zombie = true;
        z.exit_status = 9;
        let p = plan(
            &inv(vec![
                n(10, 1, 5, 4),
                n(11, 10, 11, 4),
                n(12, 10, 12, 12),
                n(13, 12, 12, 12),
                z,
            ]),
            "inventory.img",
        )
        .unwrap();
        assert_eq!(p.nodes[0].children, vec![1, 2, 4]);
        assert_eq!(p.nodes[2].children, vec![3]);
        assert!(p.nodes[1].setpgid && !p.nodes[1].setsid);
        assert!(p.nodes[2].setsid);
        assert!(!p.nodes[3].setsid && !p.nodes[3].setpgid);
        assert_eq!(p.nodes[4].zombie, Some(9));
        assert_eq!(p.nodes[4].live, None);
        assert_eq!(p.live().count(), 4);
    }

    #[test]
    fn plans_helpers_and_sibling_forks() {
        // 12 in its sibling 11's group; 13 in session 30 whose leader exited.
        let p = plan(
            &inv(vec![
                n(10, 1, 5, 4),
                n(11, 10, 11, 4),
                n(12, 10, 11, 4),
                n(13, 10, 30, 30),
            ]),
            "inventory.img",
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 5);
        assert_eq!(p.processes(), 4);
        assert!(p.nodes[4].helper && p.nodes[4].setsid && p.nodes[4].pid == 30);
        assert_eq!(p.nodes[0].forks, vec![1, 4]);
        assert_eq!(p.nodes[0].children, vec![1, 2, 3, 4]);
        assert_eq!(p.nodes[1].forks, vec![2]);
        assert_eq!(p.nodes[4].forks, vec![3]);
        assert!(p.nodes[2].clone_parent && p.nodes[3].clone_parent);
        assert_eq!(p.live().count(), 4);
    }

    #[test]
    fn refuses_what_it_cannot_rebuild() {
        // A child in a nephew's group.
        assert!(plan(
            &inv(vec![
                n(10, 1, 5, 4),
                n(11, 10, 11, 4),
                n(12, 11, 12, 4),
                n(13, 10, 12, 4)
            ]),
            "inventory.img"
        )
        .is_err());
        // A parent listed after its child.
        assert!(plan(
            &inv(vec![n(10, 1, 5, 4), n(12, 11, 5, 4), n(11, 10, 5, 4)]),
            "inventory.img"
        )
        .is_err());
        // A zombie killed by SIGCHLD.
        let mut z = n(11, 10, 5, 4);
        z.zombie = true;
        z.exit_status = 17;
        assert!(plan(&inv(vec![n(10, 1, 5, 4), z]), "inventory.img").is_err());
    }
}

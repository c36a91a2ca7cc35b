//! Pid namespaces nested below the tree's (`dump/src/pidns.rs` records them): a process
//! of the tree that had unshared CLONE_NEWPID and forked. Its seed does the same: it
//! forks its children of its own level first, then unshares CLONE_NEWPID (its
//! pid_for_children becomes a fresh namespace, owned by its user namespace), forks the
//! namespace's init with set_tid [1, its pid at every level above] (the kernel wants pid
//! 1 first in a namespace without one) and then its other children there. A seed in a
//! nested namespace forks its children with one pid per level, innermost first.
//!
//! Everything ckpt itself does afterwards names the tasks by their pids in its own
//! namespace, found from the tree's level of each one's NSpid (`pidns::outer_pids`); the
//! restored process's own injected calls that name itself take its innermost pid.

use crate::tree::Plan;

/// The kernel's deepest nesting (MAX_PID_NS_LEVEL 32, the initial namespace included).
const MAX_NESTED: usize = 31;

/// Checks the nested pids of `plan` against its shape and orders every seed's forks for
/// them: its own level first, then the namespace it makes, its init first (its seed
/// unshares CLONE_NEWPID before the first of those, `seed/family.rs`).
pub fn nest(plan: &mut Plan) -> Result<(), String> {
    for (i, n) in plan.nodes.iter().enumerate() {
        if n.nested.len() > MAX_NESTED || n.nested.iter().any(|&p| p <= 0) {
            return Err(format!(
                "pid {}: nested pids {:?} are not pids at most {MAX_NESTED} levels deep",
                n.pid, n.nested
            ));
        }
        let depth = n.nested.len();
        let above = match n.parent {
            Some(p) => plan.nodes[p].nested.len(),
            None if depth == 0 => continue,
            None => return Err(format!("the root {} has nested pids", n.pid)),
        };
        if depth == 0 && above == 0 {
            continue;
        }
        if depth != above && depth != above + 1 {
            return Err(format!(
                "pid {} is {depth} pid namespaces below the tree's, its parent {above}",
                n.pid
            ));
        }
        if n.clone_parent || plan.nodes[i].helper {
            return Err(format!(
                "pid {} in a nested pid namespace is forked by another task than its parent",
                n.pid
            ));
        }
    }
    for i in 0..plan.nodes.len() {
        let depth = plan.nodes[i].nested.len();
        let forks = std::mem::take(&mut plan.nodes[i].forks);
        let (mut order, mut deeper): (Vec<usize>, Vec<usize>) = forks
            .into_iter()
            .partition(|&c| plan.nodes[c].nested.len() == depth);
        if !deeper.is_empty() {
            let first = deeper
                .iter()
                .position(|&c| plan.nodes[c].nested.last() == Some(&1))
                .ok_or_else(|| {
                    format!(
                        "pid {} forked into a nested pid namespace, but none of those \
                         children is its pid 1",
                        plan.nodes[i].pid
                    )
                })?;
            let init = deeper.remove(first);
            if plan.nodes[init].zombie.is_some() {
                return Err(format!(
                    "the init {} of a nested pid namespace is a zombie",
                    plan.nodes[init].pid
                ));
            }
            order.push(init);
            order.extend(deeper);
        }
        plan.nodes[i].forks = order;
    }
    Ok(())
}

/// The pid node `i`'s seed sees as its parent's (getppid): ckpt's for the root, 0 for
/// the init of a nested namespace (its parent is outside it), else the parent's pid in
/// their namespace.
pub fn parent_seen(plan: &Plan, i: usize, ckpt: i32) -> i32 {
    let n = &plan.nodes[i];
    match n.parent.map(|p| &plan.nodes[p]) {
        None => ckpt,
        Some(p) if n.nested.len() > p.nested.len() => 0,
        Some(p) => p.nested.last().copied().unwrap_or(p.pid),
    }
}

/// The set_tid array that forks node `i` with its pids: innermost first, down to the
/// tree's level.
pub fn set_tid(plan: &Plan, i: usize) -> Vec<i32> {
    let n = &plan.nodes[i];
    n.nested.iter().rev().copied().chain([n.pid]).collect()
}

#[cfg(test)]
mod tests {
    use crate::tree::plan;
    use crate::tree::tests::inv;
    use ckpt_images::pb;
    use ckpt_images::shape::node as n;

    fn nested(mut t: pb::TreeNode, pids: &[i32]) -> pb::TreeNode {
        t.nested_pids = pids.to_vec();
        t
    }

    #[test]
    fn the_init_is_forked_first_after_the_unshare() {
        // 10 forked 11 on its level, then unshared: 13 (pid 1) and 12 (pid 2) below.
        let p = plan(
            &inv(vec![
                n(10, 1, 10, 10),
                n(11, 10, 10, 10),
                nested(n(12, 10, 10, 10), &[2]),
                nested(n(13, 10, 10, 10), &[1]),
                nested(n(14, 13, 10, 10), &[3]),
            ]),
            "inventory.img",
        )
        .unwrap();
        assert_eq!(p.nodes[0].forks, vec![1, 3, 2]);
        assert_eq!(super::set_tid(&p, 4), vec![3, 14]);
        assert_eq!(super::parent_seen(&p, 3, 99), 0);
        assert_eq!(super::parent_seen(&p, 4, 99), 1);
        assert_eq!(super::parent_seen(&p, 1, 99), 10);
    }

    #[test]
    fn refuses_what_cannot_be_forked() {
        // No pid 1 among the children that go below.
        assert!(plan(
            &inv(vec![n(10, 1, 10, 10), nested(n(12, 10, 10, 10), &[2])]),
            "inventory.img"
        )
        .is_err());
        // Two levels down at once.
        assert!(plan(
            &inv(vec![n(10, 1, 10, 10), nested(n(12, 10, 10, 10), &[1, 1])]),
            "inventory.img"
        )
        .is_err());
        // In a group whose leader (a sibling) would fork it with CLONE_PARENT.
        assert!(plan(
            &inv(vec![
                n(10, 1, 10, 10),
                n(11, 10, 11, 10),
                nested(n(12, 10, 11, 10), &[1]),
            ]),
            "inventory.img"
        )
        .is_err());
    }
}

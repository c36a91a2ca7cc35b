//! pidfds of processes of the tree: of itself (PIDFD_NONBLOCK), of a child, of a zombie
//! child, and a child's of its parent, each opened again for the restored process
//! (tests/workloads/pidfd.c checks them itself) through a `--leave-running` dump and
//! three cycles; a pidfd of a process outside the tree is refused by name.

mod common;

use common::tree::*;
use common::*;

#[test]
fn pidfds_of_the_tree_three_cycles() {
    leave_running_then_three_tree_cycles(&Env::new(), "pidfd");
}

#[test]
fn a_pidfd_of_a_process_outside_the_tree_is_refused() {
    let env = Env::new();
    let w = env.start_with("pidfd", &["outside"]);
    let checked = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert!(
        checked.stdout.contains("outside the dumped tree"),
        "{checked}"
    );
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming("outside the dumped tree");
    assert!(line.contains("pidfd"), "{line}");
    assert!(line.contains(&format!("pid {}", w.pid)), "{line}");
    assert_running_untraced(w.pid);
    finish_tree(&env, &w, &[w.pid]);
}

/// `ckpt check -t` agrees with the dump: pidfds of the tree (the zombie's included) are
/// no blocker.
#[test]
fn pidfds_of_the_tree_are_no_blocker() {
    let env = Env::new();
    let mut w = env.start("pidfd");
    env.check(&mut w);
    let checked = env.ckpt(&["check", "-t", &w.pid.to_string()]).ok();
    assert!(!checked.stdout.contains("pidfd"), "{checked}");
    env.check(&mut w);
    finish_tree(&env, &w, &[w.pid]);
}

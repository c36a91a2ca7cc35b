//! A pid namespace nested inside a container (a process inside that unshares
//! CLONE_NEWPID and forks) is not restored: `check -t` names both the process whose
//! children go there and the child living in it, the dump refuses by name and the
//! container runs on untouched.

mod common;

use common::inside::*;
use common::*;

#[test]
fn nested_pid_namespace_in_a_container_is_refused_by_name() {
    let env = Env::new();
    let (w, init) = start_container_with(
        &env,
        "nested",
        &[],
        "unshare --pid --fork sleep 1000 & echo in; while :; do sleep 0.05; done",
    );
    env.wait_line(&w, "in", |l| l == "in");
    let unshare = wait_child_of(init, |k| {
        std::fs::read_to_string(format!("/proc/{k}/comm")).is_ok_and(|c| c.trim() == "unshare")
    });
    let sleeper = wait_child_of(unshare, |_| true);
    let check = env.ckpt(&["check", "-t", &init.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    for (pid, what) in [
        (unshare, "pid_for_children pid:["),
        (sleeper, "lives in a nested pid namespace"),
    ] {
        assert!(
            check
                .stdout
                .lines()
                .any(|l| l.starts_with(&format!("pid {pid} ")) && l.contains(what)),
            "pid {pid} {what}: {check}"
        );
    }
    let line = env
        .dump(init, &env.subdir("img"), &[])
        .failed_naming("pid_for_children pid:[");
    assert!(line.contains("nor the container's"), "{line}");
    assert_running_untraced(init);
    env.kill_and_reap(init);
}

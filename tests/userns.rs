//! A container's user namespace, as `unshare --user --map-root-user` makes it (uid and
//! gid 0 mapped to themselves, setgroups denied), owning the container's other
//! namespaces: three cycles of dump and restore; a forking workload inside checks itself,
//! and from outside the restored namespace has the same maps and owns the others. A map
//! whose ids inside differ from ckpt's is refused by name.

mod common;

use common::inside::*;
use common::*;
use std::fs;

/// The owner (a user namespace inode) of `pid`'s namespace of `kind`, by lsns.
fn owner(pid: i32, kind: &str) -> String {
    let out = std::process::Command::new(which("lsns"))
        .args(["-n", "-o", "ONS", "-t", kind, "-p", &pid.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "lsns: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn ns_inode(pid: i32, kind: &str) -> String {
    let link = fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap();
    let s = link.to_string_lossy().into_owned();
    s.trim_end_matches(']')
        .rsplit('[')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn container_user_namespace_three_cycles() {
    let env = Env::new();
    let tree = workload_bin("forky");
    let dir = env.path().display().to_string();
    let script = format!(
        "hostname in-userns; {} {dir} & while :; do n=$((n+1)); echo $n > {dir}/count; \
         sleep 0.05; done",
        tree.display()
    );
    let (w, mut init) =
        start_container_with(&env, "userns", &["--user", "--map-root-user"], &script);
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let is_tree = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&tree);
    let maps = |p: i32| {
        ["uid_map", "gid_map", "setgroups"]
            .map(|f| fs::read_to_string(format!("/proc/{p}/{f}")).unwrap())
    };
    let before = maps(init);
    let me = std::process::id() as i32;
    let mut passes = 1;
    check_inside(&env, &w, &tree, wait_child_of(init, is_tree), passes);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        assert_ne!(ns_inode(init, "user"), ns_inode(me, "user"), "cycle {i}");
        assert_eq!(maps(init), before, "cycle {i}");
        for kind in ["pid", "mnt", "uts", "ipc"] {
            assert_eq!(
                owner(init, kind),
                ns_inode(init, "user"),
                "cycle {i}: {kind}"
            );
        }
        assert_eq!(nsenter(init, &["-U", "-u", "hostname"]), "in-userns");
        let t = wait_child_of(init, is_tree);
        assert_eq!(ns_inode(t, "user"), ns_inode(init, "user"));
        passes += 1;
        check_inside(&env, &w, &tree, t, passes);
    }
    env.kill_and_reap(init);
}

/// `unshare --user --map-user=1000 --map-group=1000`: uid 1000 inside is 0 outside, which
/// a restore could not set from inside: refused by name, left running; so is memory
/// shared between the processes of a container with its own user namespace.
#[test]
fn user_namespace_with_other_ids_is_refused_by_name() {
    let env = Env::new();
    let (w, init) = start_container_with(
        &env,
        "mapped",
        &["--user", "--map-user=1000", "--map-group=1000"],
        "echo in; while :; do sleep 0.05; done",
    );
    env.wait_line(&w, "in", |l| l == "in");
    let line = env
        .dump(init, &env.subdir("img"), &[])
        .failed_naming("user namespace uid_map line \"1000          0          1\"");
    assert!(line.contains("only identity ranges"), "{line}");
    assert_running_untraced(init);
    env.kill_and_reap(init);

    // Shared memory between its processes (the tree workload's): refused by name.
    let tree = workload_bin("tree");
    let script = format!(
        "{} {} & while :; do sleep 0.05; done",
        tree.display(),
        env.path().display()
    );
    let (w, init) = start_container_with(&env, "shm", &["--user", "--map-root-user"], &script);
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    env.dump(init, &env.subdir("img-shm"), &[])
        .failed_naming("shared memory in a container with its own user namespace");
    assert_running_untraced(init);
    env.kill_and_reap(init);
}

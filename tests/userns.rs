//! A container's user namespace, as `unshare --user --map-root-user` makes it (uid and
//! gid 0 mapped to themselves, setgroups denied), owning the container's other
//! namespaces: three cycles of dump and restore; a forking workload inside checks itself,
//! and from outside the restored namespace has the same maps and owns the others. Maps
//! whose ids inside differ from ckpt's are restored through them; what cannot be set
//! from inside is refused by name.

mod common;

use common::inside::*;
use common::*;
use std::fs;

/// The owner (a user namespace inode) of `pid`'s namespace of `kind` (NS_GET_USERNS;
/// `lsns` scans every process and exits 1 when one vanishes under it).
fn owner(pid: i32, kind: &str) -> String {
    let user = ckpt_sys::ns::owner(ckpt_sys::Pid::from_raw(pid), kind)
        .unwrap_or_else(|e| panic!("owner of {kind} of {pid}: {e}"));
    user.trim_start_matches("user:[")
        .trim_end_matches(']')
        .to_string()
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

/// The ids of `pid` (real, effective, saved, fs) as /proc/PID/status shows them to a
/// reader in the user namespace of `inside` (none: ckpt's).
fn uids(pid: i32, inside: Option<i32>) -> String {
    let text = match inside {
        Some(ns) => nsenter(
            ns,
            &[
                "-U",
                "--preserve-credentials",
                "cat",
                &format!("/proc/{pid}/status"),
            ],
        ),
        None => fs::read_to_string(format!("/proc/{pid}/status")).unwrap(),
    };
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// `unshare --user --map-user=1000 --map-group=1000` (a rootless container's shape: uid
/// and gid 1000 inside are 0 outside, nothing else mapped): three cycles. The ids the
/// restore sets from inside are translated through the maps: the processes are 1000
/// inside and 0 outside again; the forking workload checks itself. (Being 1000 inside,
/// its processes have no capability there: no tmpfs of theirs to test the translation
/// of file owners with.)
#[test]
fn user_namespace_with_other_ids_three_cycles() {
    let env = Env::new();
    let forky = workload_bin("forky");
    let dir = env.path().display().to_string();
    let script = format!("{} {dir} & while :; do sleep 0.05; done", forky.display());
    let (w, mut init) = start_container_with(
        &env,
        "mapped",
        &["--user", "--map-user=1000", "--map-group=1000"],
        &script,
    );
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let is_tree = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&forky);
    let maps = |p: i32| {
        ["uid_map", "gid_map", "setgroups"]
            .map(|f| fs::read_to_string(format!("/proc/{p}/{f}")).unwrap())
    };
    let before = maps(init);
    assert_eq!(
        before[0].split_whitespace().collect::<Vec<_>>(),
        ["1000", "0", "1"]
    );
    let mut passes = 1;
    check_inside(&env, &w, &forky, wait_child_of(init, is_tree), passes);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        assert_eq!(maps(init), before, "cycle {i}");
        let tree = wait_child_of(init, is_tree);
        assert_eq!(uids(tree, None), "0 0 0 0", "cycle {i}");
        assert_eq!(uids(tree, Some(init)), "1000 1000 1000 1000", "cycle {i}");
        passes += 1;
        check_inside(&env, &w, &forky, tree, passes);
    }
    env.kill_and_reap(init);
}

/// What cannot be set from inside is refused by name, the container left running: maps
/// that leave out ckpt's own id 0 (here root inside is uid 1000 outside, nothing else
/// mapped, and the processes run as an id the map lacks).
#[test]
fn user_namespace_with_unmapped_ids_is_refused_by_name() {
    let env = Env::new();
    // The maps are written from here (no newuidmap on the test machines); the shell
    // inside goes on once they are.
    let mapped = env.path().join("mapped");
    let (w, init) = start_container_with(
        &env,
        "unmapped",
        &["--user"],
        &format!(
            "while [ ! -e {} ]; do sleep 0.01; done; echo in; while :; do sleep 0.05; done",
            mapped.display()
        ),
    );
    for (f, v) in [
        ("uid_map", "0 1000 1"),
        ("setgroups", "deny"),
        ("gid_map", "0 1000 1"),
    ] {
        fs::write(format!("/proc/{init}/{f}"), v).unwrap();
    }
    fs::write(&mapped, "").unwrap();
    env.wait_line(&w, "in", |l| l == "in");
    let line = env
        .dump(init, &env.subdir("img"), &[])
        .failed_naming("user namespace uid_map");
    assert!(line.contains("does not map ckpt's own id 0"), "{line}");
    assert_running_untraced(init);
    env.kill_and_reap(init);
}

/// Memory shared between the processes of a container with its own (mapped) user
/// namespace: the tree workload (groups, sessions, a zombie, shared memory its processes
/// check) in `unshare --user --map-user=1000 --map-group=1000`, three cycles. The
/// puppets open ckpt's memfds through a holder in the namespace.
#[test]
fn shared_memory_in_a_user_namespace_three_cycles() {
    let env = Env::new();
    let tree = workload_bin("tree");
    let script = format!(
        "{} {} & while :; do sleep 0.05; done",
        tree.display(),
        env.path().display()
    );
    let (w, mut init) = start_container_with(
        &env,
        "shm",
        &["--user", "--map-user=1000", "--map-group=1000"],
        &script,
    );
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let is_tree = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&tree);
    check_inside(&env, &w, &tree, wait_child_of(init, is_tree), 1);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        check_inside(&env, &w, &tree, wait_child_of(init, is_tree), i as u32 + 1);
    }
    env.kill_and_reap(init);
}

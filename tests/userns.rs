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

/// What cannot be set from inside is refused by name, the container left running: the
/// processes run as an id the maps lack (here root inside is uid 1000 outside, nothing
/// else mapped, and the shell is still ckpt's uid 0, which is not).
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
        .failed_naming("uid 0");
    assert!(
        line.contains("not in the container's user namespace's uid_map"),
        "{line}"
    );
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

/// The owner and mode of `path` ("UID GID MODE", octal, the file type left out).
fn owner_mode(path: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    format!("{} {} {:o}", m.uid(), m.gid(), m.mode() & 0o7777)
}

/// A rootless container's user namespace, podman's shape: root inside is uid and gid 1000
/// outside, ids 1 and up a subordinate range from 100000 (maps that leave ckpt's own id 0
/// out), held by a process outside the tree as podman's pause process holds it. Its root
/// (inside 0) mounts a tmpfs with a file owned by inside 1; the unix sockets workload runs
/// as inside 1 (host 100000), its listener's file in a directory of that id. Three cycles:
/// the maps, every process's ids, the tmpfs file's and the socket file's owner and mode
/// are as before, and the workload checks its sockets (peer credentials as seen inside).
#[test]
fn rootless_user_namespace_three_cycles() {
    let env = Env::new();
    let unixsock = workload_bin("unixsock");
    // Outside the namespace, its ids reach what the test makes only as others do.
    fs::set_permissions(
        env.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let home = env.subdir("home");
    let socks = env.subdir("socks");
    std::os::unix::fs::chown(&home, Some(1000), Some(1000)).unwrap();
    std::os::unix::fs::chown(&socks, Some(100000), Some(100000)).unwrap();
    let holder = env.spawn(
        "holder",
        &which("unshare"),
        &["--user", "sleep", "1000000"].map(std::ffi::OsStr::new),
    );
    let me = std::process::id() as i32;
    let start = std::time::Instant::now();
    while fs::read_link(format!("/proc/{}/ns/user", holder.pid)).ok()
        == fs::read_link(format!("/proc/{me}/ns/user")).ok()
    {
        assert!(
            start.elapsed().as_secs() < 10,
            "unshare --user did not unshare"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let map = "0 1000 1\n1 100000 65536\n";
    for f in ["uid_map", "gid_map"] {
        fs::write(format!("/proc/{}/{f}", holder.pid), map).unwrap();
    }
    let (home_s, socks_s) = (home.display(), socks.display());
    let script = format!(
        "cd {home_s} && mkdir t && mount -t tmpfs -o mode=755 rootless t && echo x > t/f && \
         chown 1:1 t/f && chmod 640 t/f && (setpriv --reuid=1 --regid=1 --clear-groups \
         {} {socks_s} pair listen dgram &) && while :; do sleep 0.05; done",
        unixsock.display()
    );
    let w = env.spawn(
        "rootless",
        &which("nsenter"),
        &[
            &format!("--user=/proc/{}/ns/user", holder.pid),
            "--setuid",
            "0",
            "--setgid",
            "0",
            "unshare",
            "--fork",
            "--pid",
            "--mount-proc",
            "--uts",
            "--ipc",
            "bash",
            "-c",
            &script,
        ]
        .map(std::ffi::OsStr::new),
    );
    // The container's root (inside 0) opens its stdout again at restore.
    std::os::unix::fs::chown(&w.out, Some(1000), Some(1000)).unwrap();
    let mut init = wait_child_of(w.pid, |_| true);
    env.track(init);
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let maps = |p: i32| {
        ["uid_map", "gid_map", "setgroups"]
            .map(|f| fs::read_to_string(format!("/proc/{p}/{f}")).unwrap())
    };
    let before = maps(init);
    let sock = socks.join("l.sock");
    let file = |init: i32| {
        nsenter(
            init,
            &["-m", "stat", "-c", "%u %g %a", &format!("{home_s}/t/f")],
        )
    };
    let is_sock = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&unixsock);
    assert_eq!(owner_mode(&sock), "100000 100000 640");
    assert_eq!(file(init), "100000 100000 640");
    check_inside(&env, &w, &unixsock, wait_child_of(init, is_sock), 1);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        if i == 1 {
            // The namespace is the tree's own from now on: its holder goes.
            env.kill_and_reap(holder.pid);
        }
        let root = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        assert_eq!(maps(root), before, "cycle {i}");
        init = root;
        assert_eq!(uids(init, None), "1000 1000 1000 1000", "cycle {i}");
        assert_eq!(uids(init, Some(init)), "0 0 0 0", "cycle {i}");
        let t = wait_child_of(init, is_sock);
        assert_eq!(uids(t, None), "100000 100000 100000 100000", "cycle {i}");
        assert_eq!(uids(t, Some(init)), "1 1 1 1", "cycle {i}");
        assert_eq!(owner_mode(&sock), "100000 100000 640", "cycle {i}");
        assert_eq!(file(init), "100000 100000 640", "cycle {i}");
        check_inside(&env, &w, &unixsock, t, i as u32 + 1);
    }
    env.kill_and_reap(init);
}

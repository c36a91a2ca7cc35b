//! Namespaces: `restore --new-pidns` rebuilds a tree in a fresh pid namespace under an
//! init of ckpt's, with its dumped pids inside it; the workloads check themselves (pids,
//! parents, groups, sessions, memory, a zombie's status), the tests check from outside
//! that each copy is a whole tree of its own namespace and that failures leave nothing.

mod common;

use ckpt_images::{pb, ImageDir, Kind, RecordWriter};
use common::inside::*;
use common::tree::*;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// `restore -D DIR --new-pidns EXTRA...`.
fn new_pidns_args<'a>(dir: &'a Path, extra: &[&'a OsStr]) -> Vec<&'a OsStr> {
    let mut v: Vec<&OsStr> = vec!["restore".as_ref(), "-D".as_ref(), dir.as_os_str()];
    v.push("--new-pidns".as_ref());
    v.extend_from_slice(extra);
    v
}

/// `ckpt restore -D DIR --new-pidns -d --pidfile`: the root's pid outside its namespace.
fn restore_in_new_pidns(env: &Env, dir: &Path, tag: &str) -> i32 {
    restore_detached_outer(env, dir, tag, true)
}

/// `ckpt restore -D DIR -d --pidfile` (with `--new-pidns` if `ask`): the root's pid
/// outside its namespace; its init is handed to the cleanup.
fn restore_detached_outer(env: &Env, dir: &Path, tag: &str, ask: bool) -> i32 {
    let pidfile = env.path().join(format!("{tag}.pid"));
    let extra: [&OsStr; 3] = ["-d".as_ref(), "--pidfile".as_ref(), pidfile.as_ref()];
    let mut args = new_pidns_args(dir, &extra);
    if !ask {
        args.retain(|a| *a != OsStr::new("--new-pidns"));
    }
    env.ckpt(&args).ok();
    let outer: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let init = ppid(outer);
    // Killing the init (from outside) ends the namespace: the test's cleanup.
    env.track(init);
    outer
}

fn ppid(pid: i32) -> i32 {
    status_field(pid, "PPid").unwrap().parse().unwrap()
}

/// Every process under `init` (outer pid): (outer, its pids in every namespace).
fn under(init: i32) -> Vec<(i32, Vec<i32>)> {
    let mut out = Vec::new();
    let mut todo = vec![init];
    while let Some(p) = todo.pop() {
        for t in fs::read_dir(format!("/proc/{p}/task"))
            .into_iter()
            .flatten()
        {
            let t = t.unwrap().file_name();
            let kids =
                fs::read_to_string(format!("/proc/{p}/task/{}/children", t.to_string_lossy()))
                    .unwrap_or_default();
            for k in kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()) {
                out.push((k, ns_pids(k)));
                todo.push(k);
            }
        }
    }
    out
}

/// From outside: the copy whose root is `outer` lives in a pid namespace of its own,
/// under an init that is pid 1 there, with exactly the dumped pids inside, running
/// untraced.
fn assert_whole_copy(dir: &Path, outer: i32) {
    let init = ppid(outer);
    assert_eq!(
        ns_pids(init).last(),
        Some(&1),
        "init {init} is not pid 1 inside"
    );
    let inv = read_inventory(dir);
    let mut inside: Vec<i32> = under(init)
        .iter()
        .map(|(o, ns)| {
            assert_eq!(ns.len(), 2, "pid {o}: NSpid {ns:?}");
            assert_eq!(ns[0], *o);
            ns[1]
        })
        .collect();
    inside.sort_unstable();
    let mut want = tree_pids(dir);
    want.sort_unstable();
    assert_eq!(inside, want, "the copy under init {init} holds other pids");
    for (o, _) in under(init) {
        let tracer = status_field(o, "TracerPid");
        assert!(
            matches!(tracer.as_deref(), None | Some("0")),
            "pid {o} is left traced"
        );
    }
    assert_eq!(ns_pids(outer)[1], inv.root_pid);
}

/// Asks the copy whose root is `outer` to check itself and waits for its `PASS n` line,
/// the `count`th such line in the output the copies share.
fn check_copy(env: &Env, w: &Workload, outer: i32, n: u32, count: usize) {
    assert!(signal(outer, libc::SIGUSR1));
    let want = format!("PASS {n}");
    let start = Instant::now();
    loop {
        let text = env.output(w);
        if let Some(l) = text.lines().find(|l| l.starts_with("FAIL")) {
            panic!("a copy reported `{l}`:\n{text}");
        }
        if text.lines().filter(|l| *l == want).count() >= count {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {count} `{want}` lines from copy {outer}:\n{text}"
        );
        sleep(Duration::from_millis(10));
    }
}

/// Ends a copy: its root checks itself once more and exits; the members follow, the init
/// exits once the namespace is empty, and comes to us (a subreaper) to be reaped.
fn finish_copy(env: &Env, outer: i32) {
    let init = ppid(outer);
    assert!(signal(outer, libc::SIGUSR2));
    let st = reap(init, Duration::from_secs(30));
    assert_eq!(st, Some(0), "init {init} of the copy did not end cleanly");
    env.untrack(init);
}

/// A tree (groups, sessions, shared memory, a zombie) dumped with --leave-running is
/// restored twice beside its running original, each copy in a fresh pid namespace with
/// the dumped pids; all three run and check themselves. Three such cycles.
#[test]
fn new_pidns_copies_run_beside_the_original() {
    let env = Env::new();
    let mut w = env.start("tree");
    env.check(&mut w);
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &["--leave-running"]).ok();
        let a = restore_in_new_pidns(&env, &dir, &format!("a{i}"));
        let b = restore_in_new_pidns(&env, &dir, &format!("b{i}"));
        assert!(a != w.pid && b != w.pid && a != b);
        assert_whole_copy(&dir, a);
        assert_whole_copy(&dir, b);
        // The original, then each copy: same `PASS n` (they share the output file).
        env.check(&mut w);
        let n = w.passes;
        check_copy(&env, &w, a, n, 2);
        check_copy(&env, &w, b, n, 3);
        finish_copy(&env, a);
        finish_copy(&env, b);
    }
    finish_tree(&env, &w, &[w.pid]);
}

/// A copy restored in a new pid namespace (as haul's destination does) is dumped again
/// from outside, with the pids it has inside, and restored into a fresh namespace without
/// being asked (`Inventory.new_pidns`); twice, each generation checking itself beside the
/// running original.
#[test]
fn tree_restored_in_a_new_pidns_is_dumped_again() {
    let env = Env::new();
    let mut w = env.start("tree");
    env.check(&mut w);
    let first = env.subdir("img0");
    env.dump(w.pid, &first, &["--leave-running"]).ok();
    let mut copy = restore_in_new_pidns(&env, &first, "gen0");
    for i in 1..=2 {
        env.check(&mut w);
        check_copy(&env, &w, copy, w.passes, 2);
        let dir = env.subdir(&format!("img{i}"));
        let init = ppid(copy);
        env.dump(copy, &dir, &[]).ok();
        assert!(read_inventory(&dir).new_pidns, "generation {i}");
        // Its namespace empty, the copy's init exits and comes to us.
        assert!(
            reap(init, Duration::from_secs(30)).is_some(),
            "init {init} did not end"
        );
        env.untrack(init);
        // No --new-pidns: the image asks for it.
        copy = restore_detached_outer(&env, &dir, &format!("gen{i}"), false);
        assert_whole_copy(&dir, copy);
    }
    env.check(&mut w);
    check_copy(&env, &w, copy, w.passes, 2);
    finish_copy(&env, copy);
    finish_tree(&env, &w, &[w.pid]);
}

/// Threads come back in a new pid namespace with their dumped tids (clone3 set_tid
/// inside it; ckpt follows them by the tids the kernel gives outside); a foreground
/// restore exits with the root's status once the namespace is empty.
#[test]
fn new_pidns_threads_and_foreground_status() {
    let env = Env::new();
    let mut w = env.start("threads");
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    let pidfile = env.path().join("fg.pid");
    let bg = env.ckpt_bg(&new_pidns_args(
        &dir,
        &["--pidfile".as_ref(), pidfile.as_ref()],
    ));
    let start = Instant::now();
    while fs::read_to_string(&pidfile).map_or(true, |s| s.trim().is_empty()) {
        assert!(start.elapsed() < Duration::from_secs(30), "no pidfile");
        sleep(Duration::from_millis(10));
    }
    let outer: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Cleanup kills the init (the namespace with it) should the test fail.
    env.track(ppid(outer));
    assert_eq!(ns_pids(outer), vec![outer, w.pid]);
    let tids = fs::read_dir(format!("/proc/{outer}/task")).unwrap().count();
    assert!(tids > 1, "the copy has {tids} threads");
    env.check(&mut w);
    check_copy(&env, &w, outer, w.passes, 2);
    assert!(signal(outer, libc::SIGUSR2));
    let init = ppid(outer);
    let out = env.finish_bg(bg);
    assert_eq!(out.status.code(), Some(0), "{out}");
    env.untrack(init);
    env.kill_and_reap(w.pid);
}

/// A restore into a new pid namespace that fails (a seed cannot open the workload's
/// output file) leaves no task and no namespace behind; the original runs on.
#[test]
fn failed_new_pidns_restore_leaves_nothing() {
    let env = Env::new();
    let mut w = env.start("tree");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    let moved = env.path().join("moved.out");
    fs::rename(&w.out, &moved).unwrap();
    let out = env.ckpt(&new_pidns_args(&dir, &["-d".as_ref()]));
    out.failed_naming("tree.out");
    fs::rename(&moved, &w.out).unwrap();
    // No task of any other pid namespace has one of the tree's pids inside.
    let start = Instant::now();
    loop {
        let left: Vec<i32> = fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&p| {
                let ns = ns_pids(p);
                // The original's live pids are its own: no other test's copy has them.
                ns.len() > 1 && read_inventory(&dir).pids.contains(ns.last().unwrap())
            })
            .collect();
        if left.is_empty() {
            break;
        }
        for &p in &left {
            reap(p, Duration::from_millis(1));
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "left by the failed restore: {left:?}"
        );
        sleep(Duration::from_millis(20));
    }
    env.check(&mut w);
    finish_tree(&env, &w, &tree_pids(&dir));
}

/// A process in a namespace of its own (any kind ckpt does not restore yet) is refused
/// by name, the namespace named, and left running untouched; so is one whose next
/// children go to another time namespace.
#[test]
fn own_namespaces_are_refused_by_name() {
    let env = Env::new();
    let unshare = which("unshare");
    // A pid namespace below a host tree (`unshare --pid --fork`) is restored:
    // tests/nested_pidns.rs.
    let kinds: [(&str, &[&str]); 7] = [
        ("uts", &["--uts"]),
        ("ipc", &["--ipc"]),
        ("mnt", &["--mount"]),
        ("net", &["--net"]),
        ("cgroup", &["--cgroup"]),
        ("user", &["--user"]),
        ("time", &["--time", "--fork", "--kill-child"]),
    ];
    let ours = |kind: &str| fs::read_link(format!("/proc/self/ns/{kind}")).unwrap();
    for (kind, flags) in kinds {
        let mut args: Vec<&OsStr> = flags.iter().map(OsStr::new).collect();
        args.extend(["sleep", "1000"].map(OsStr::new));
        let w = env.spawn(&format!("unshare-{kind}"), &unshare, &args);
        // Until unshare has made the namespace (and exec'd, or forked its child).
        let link = if flags.contains(&"--fork") {
            format!("{kind}_for_children")
        } else {
            kind.to_string()
        };
        let start = Instant::now();
        while fs::read_link(format!("/proc/{}/ns/{link}", w.pid)).ok() == Some(ours(kind))
            || (flags.contains(&"--fork")
                && fs::read_to_string(format!("/proc/{}/task/{}/children", w.pid, w.pid))
                    .unwrap_or_default()
                    .trim()
                    .is_empty())
        {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "unshare {kind} never started"
            );
            sleep(Duration::from_millis(10));
        }
        let dir = env.subdir(&format!("img-{kind}"));
        let line = env
            .dump(w.pid, &dir, &[])
            .failed_naming(&format!("{kind}:["));
        assert!(line.contains("not supported yet"), "{line}");
        assert_running_untraced(w.pid);
        env.kill_and_reap(w.pid);
    }
}

/// `unshare --fork --pid --mount-proc --uts --ipc bash -c SCRIPT`: the container's init
/// (bash, pid 1 inside) once it runs, by its outer pid; `w` is unshare.
fn start_container(env: &Env, name: &str, script: &str) -> (Workload, i32) {
    start_container_with(env, name, &[], script)
}

fn counter(env: &Env) -> u64 {
    fs::read_to_string(env.path().join("count"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// A container as `unshare --fork --pid --mount-proc --uts --ipc` makes it (pid, mount
/// with its own /proc, uts, ipc namespaces): bash as its pid 1 runs a shell loop counting
/// into a file and the tree workload (groups, sessions, shared memory, a zombie). Three
/// cycles of dump and restore into fresh namespaces: the tree checks itself inside
/// (its pids, parents, groups as it recorded them), and from outside the container's
/// init is pid 1 of its namespace again, with its hostname and domain name, its own
/// /proc, the tree's pid inside as before, and the counter going on.
#[test]
fn container_three_cycles() {
    let env = Env::new();
    let tree = workload_bin("tree");
    let dir = env.path().display().to_string();
    let script = format!(
        "hostname ckpt-box; domainname ckpt-dom; {} {dir} & \
         while :; do n=$((n+1)); echo $n > {dir}/count; sleep 0.05; done",
        tree.display()
    );
    let (w, mut init) = start_container(&env, "container", &script);
    let line = env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let inner: i32 = line[6..].parse().unwrap();
    let is_tree = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&tree);
    let mut t = wait_child_of(init, is_tree);
    let mut passes = 0;
    let mut check = |t: i32| {
        passes += 1;
        // Watched through the tree's root (unshare is gone after the first dump).
        check_inside(&env, &w, &tree, t, passes);
    };
    check(t);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        let before;
        (init, before) = container_cycle(&env, &w, init, &img, i);
        let inv = read_inventory(&img);
        assert_eq!(inv.root_pid, 1);
        assert!(inv.container.is_some());
        assert_eq!(ns_pids(init), vec![init, 1]);
        t = wait_child_of(init, is_tree);
        assert_eq!(ns_pids(t), vec![t, inner]);
        assert_eq!(nsenter(init, &["-u", "hostname"]), "ckpt-box");
        assert_eq!(nsenter(init, &["-u", "domainname"]), "ckpt-dom");
        // Its own /proc: pid 1 there is the container's bash, not the host's init.
        assert_eq!(nsenter(init, &["-m", "cat", "/proc/1/comm"]), "bash");
        let start = Instant::now();
        while counter(&env) <= before + 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the counter stopped at {before}"
            );
            sleep(Duration::from_millis(20));
        }
        check(t);
    }
    env.kill_and_reap(init);
}

/// IPC state that is not restored yet is refused by name and the container left
/// running: a SysV segment marked for removal while still attached (no key or id names
/// it again), a POSIX message queue a process registered for notification (the dump's
/// refill would fire it); `check -t` names both, the dump the first and how many more.
/// Outside a container, a process with a SysV segment of ckpt's ipc namespace attached
/// that was removed (IPC_RMID) is refused by name (one not removed is attached again:
/// tests/kernel_state.rs). Unsupported mounts are refused by name too.
#[test]
fn container_ipc_and_mounts_are_refused_by_name() {
    let env = Env::new();
    let py = python3().display().to_string();
    let rmid = "import ctypes, time; l = ctypes.CDLL(None, use_errno=True); \
                l.shmat.restype = ctypes.c_void_p; i = l.shmget(0, 4096, 0o1600); \
                assert l.shmat(i, None, 0) not in (None, 2**64 - 1); \
                assert l.shmctl(i, 0, None) == 0; print('made', flush=True); time.sleep(1000)";
    let notify = "import ctypes, os, struct, time; l = ctypes.CDLL(None, use_errno=True); \
                  fd = l.mq_open(b'/ckpt-q', os.O_CREAT | os.O_RDWR, 0o640, None); \
                  sev = ctypes.create_string_buffer(64); struct.pack_into('<qii', sev, 0, 0, 0, 1); \
                  assert fd >= 0 and l.mq_notify(fd, sev) == 0, ctypes.get_errno(); \
                  print('made', flush=True); time.sleep(1000)";
    let script =
        format!("{py} -c \"{rmid}\" & {py} -c \"{notify}\" & while :; do sleep 0.05; done");
    let (w, init) = start_container(&env, "ipc", &script);
    let start = Instant::now();
    while env.output(&w).lines().filter(|l| *l == "made").count() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{}",
            env.output(&w)
        );
        sleep(Duration::from_millis(20));
    }
    let check = env.ckpt(&["check", "-t", &init.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    for what in [
        "marked for removal while attached",
        "POSIX message queue /ckpt-q (its ipc namespace): a process is registered",
    ] {
        assert!(
            check.stdout.contains(what),
            "check does not name {what}: {check}"
        );
    }
    let img = env.subdir("img-ipc");
    let out = env.dump(init, &img, &[]);
    out.failed_naming("(its ipc namespace)");
    assert_running_untraced(init);
    env.kill_and_reap(init);
    reap(w.pid, Duration::from_secs(10));
    env.untrack(w.pid);

    let host = env.spawn("host-shm", &python3(), &["-c".as_ref(), OsStr::new(rmid)]);
    env.wait_line(&host, "made", |l| l == "made");
    env.dump(host.pid, &env.subdir("img-host"), &[])
        .failed_naming("removed (IPC_RMID) while attached");
    assert_running_untraced(host.pid);
    env.kill_and_reap(host.pid);

    // Mounts that are not restored yet: a shared one (propagation), and a tmpfs that a
    // host directory hides.
    let m = env.subdir("m");
    let o = env.subdir("o");
    let (m, o) = (m.display(), o.display());
    let cases = [
        (
            format!(
                "mount -t tmpfs ckpt-tmp {m} && mount --make-shared {m} && mount --bind {m} {o} \
                 && mount --make-slave {o} && mount --make-shared {o}"
            ),
            format!("mount {o} (tmpfs ckpt-tmp)"),
            "and a slave (of group",
        ),
        (
            format!("mount -t tmpfs ckpt-tmp {m} && mount --bind {o} {m}"),
            format!("mount {m} (ext4"),
            "stacked over a tmpfs",
        ),
    ];
    for (i, (setup, what, why)) in cases.iter().enumerate() {
        let script = format!("{setup} && echo made; while :; do sleep 0.05; done");
        let (w, init) = start_container(&env, &format!("mnt{i}"), &script);
        env.wait_line(&w, "made", |l| l == "made");
        let img = env.subdir(&format!("img-mnt{i}"));
        let line = env.dump(init, &img, &[]).failed_naming(what);
        assert!(line.contains(why), "{line}");
        assert_running_untraced(init);
        env.kill_and_reap(init);
        reap(w.pid, Duration::from_secs(10));
        env.untrack(w.pid);
    }
}

/// A container restore that fails (a seed cannot open the tree's output file) leaves no
/// task behind: the fresh namespaces die with their last process.
#[test]
fn failed_container_restore_leaves_nothing() {
    let env = Env::new();
    let (w, init) = start_container(&env, "failing", "echo made; while :; do sleep 0.05; done");
    env.wait_line(&w, "made", |l| l == "made");
    let img = dump_started(&env, &w, init);
    fs::rename(&w.out, env.path().join("moved.out")).unwrap();
    env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        img.as_os_str(),
        OsStr::new("-d"),
    ])
    .failed_naming("failing.out");
    // No pid 1 of a namespace is left working in this test's directory.
    let start = Instant::now();
    while !inits_in(env.path()).is_empty() {
        let left = inits_in(env.path());
        assert!(start.elapsed() < Duration::from_secs(5), "left: {left:?}");
        sleep(Duration::from_millis(20));
    }
}

/// Tasks whose cwd is `dir` and that are pid 1 of a namespace of their own.
fn inits_in(dir: &Path) -> Vec<i32> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let ns = ns_pids(p);
            ns.len() > 1
                && ns.last() == Some(&1)
                && fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c == dir)
        })
        .collect()
}

/// A container with a network namespace of its own holding only an up loopback: three
/// cycles, after each a fresh socket inside connects over 127.0.0.1; one with another
/// address on lo is refused by name, left running (veths: tests/container_net.rs).
#[test]
fn container_loopback_netns_three_cycles() {
    let env = Env::new();
    let dir = env.path().display().to_string();
    let script = format!(
        "ip link set lo up && echo made; while :; do n=$((n+1)); echo $n > {dir}/count; sleep 0.05; done"
    );
    let (w, mut init) = start_container_with(&env, "net", &["--net"], &script);
    env.wait_line(&w, "made", |l| l == "made");
    let probe = "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); \
                 c=socket.create_connection(s.getsockname()); print('connected')";
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        let before;
        (init, before) = container_cycle(&env, &w, init, &img, i);
        assert_ne!(
            fs::read_link(format!("/proc/{init}/ns/net")).unwrap(),
            fs::read_link("/proc/self/ns/net").unwrap()
        );
        let py = python3().display().to_string();
        assert_eq!(nsenter(init, &["-n", &py, "-c", probe]), "connected");
        let start = Instant::now();
        while counter(&env) <= before + 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the counter stopped"
            );
            sleep(Duration::from_millis(20));
        }
    }
    env.kill_and_reap(init);

    let (w, init) = start_container_with(
        &env,
        "dummy",
        &["--net"],
        "ip link set lo up && ip addr add 10.9.8.7/32 dev lo && echo made; \
         while :; do sleep 0.05; done",
    );
    env.wait_line(&w, "made", |l| l == "made");
    env.dump(init, &env.subdir("img-dummy"), &[])
        .failed_naming("address 10.9.8.7 on lo");
    assert_running_untraced(init);
    env.kill_and_reap(init);
    reap(w.pid, Duration::from_secs(10));
    env.untrack(w.pid);
}

/// One cycle of a container: dump its init (the first time, unshare, `w`, exits too and
/// is reaped), restore it detached; the new init's outer pid and the counter at the dump.
fn container_cycle(env: &Env, w: &Workload, init: i32, img: &Path, i: usize) -> (i32, u64) {
    dump_container(env, w, init, img, i == 1);
    let before = counter(env);
    let pidfile = env.path().join(format!("cycle{i}.pid"));
    env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        img.as_os_str(),
        OsStr::new("-d"),
        OsStr::new("--pidfile"),
        pidfile.as_os_str(),
    ])
    .ok();
    let init = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(init);
    (init, before)
}

/// A container with mounts of its own: a tmpfs (size and mode options, a directory, a
/// file, a symlink, a hard link) that its shell loop keeps its counter in (read back and
/// incremented each turn: a tmpfs restored empty would restart it), and a read-only bind
/// of a host directory (external: found again at the same path), and fresh mqueue,
/// read-only sysfs and cgroup2 mounts on directories of the tmpfs. Three cycles: after
/// each, from inside, the tmpfs holds what it held with its mode, the bind shows the host
/// directory and is read-only, the fresh mounts are there with their flags, the counter
/// goes on from where it was; the host never sees the tmpfs.
#[test]
fn container_tmpfs_and_bind_mounts_three_cycles() {
    let env = Env::new();
    let dir = env.path().display().to_string();
    let t = env.subdir("t");
    let src = env.subdir("src");
    let b = env.subdir("b");
    let own = env.subdir("own");
    let sl = env.subdir("sl");
    fs::write(src.join("from-host"), "host file\n").unwrap();
    let (t, b, own, sl) = (
        t.display().to_string(),
        b.display().to_string(),
        own.display().to_string(),
        sl.display().to_string(),
    );
    let script = format!(
        "mount -t tmpfs -o size=4m,mode=750 ckpt-tmp {t} && mkdir {t}/sub && \
         echo kept > {t}/sub/f && ln -s sub/f {t}/link && ln {t}/sub/f {t}/hard && \
         mount --bind {src} {b} && mount -o remount,bind,ro {b} && echo 0 > {t}/count && \
         mount --make-shared {t} && mount --bind {t}/sub {own} && \
         mount --bind {t} {sl} && mount --make-slave {sl} && \
         mkdir {t}/mq {t}/sys {t}/cg && mount -t mqueue ckpt-mq {t}/mq && \
         mount -t sysfs -o ro,nosuid ckpt-sys {t}/sys && mount -t cgroup2 ckpt-cg {t}/cg && \
         echo made; \
         while :; do n=$(cat {t}/count); n=$((n+1)); echo $n > {t}/count; \
         echo $n > {dir}/count; sleep 0.05; done",
        src = src.display()
    );
    let (w, mut init) = start_container(&env, "mounts", &script);
    env.wait_line(&w, "made", |l| l == "made");
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        let before;
        (init, before) = container_cycle(&env, &w, init, &img, i);
        let inside = |cmd: &str| nsenter(init, &["-m", "sh", "-c", cmd]);
        assert_eq!(
            inside(&format!("cat {t}/sub/f {t}/link {t}/hard")),
            "kept\nkept\nkept"
        );
        assert_eq!(inside(&format!("stat -c %a {t}")), "750");
        assert_eq!(
            inside(&format!("stat -c %i {t}/sub/f {t}/hard | uniq | wc -l")),
            "1"
        );
        assert_eq!(inside(&format!("cat {b}/from-host")), "host file");
        // A bind of part of its own tmpfs: the same files, not a copy.
        assert_eq!(
            inside(&format!("stat -c %i {t}/sub/f {own}/f | uniq | wc -l")),
            "1"
        );
        assert!(
            inside(&format!("grep ' {b} ' /proc/1/mountinfo")).contains(" ro,"),
            "the bind is not read-only"
        );
        assert!(
            inside(&format!("grep ' {t} ' /proc/1/mountinfo")).contains("size=4096k"),
            "the tmpfs lost its size"
        );
        assert!(
            !Path::new(&t).join("count").exists(),
            "the host sees the tmpfs"
        );
        // Fresh mounts of their kind again: an mqueue, a read-only sysfs, a cgroup2.
        let info = inside("cat /proc/1/mountinfo");
        for (at, fs, opts) in [
            ("mq", "mqueue", "rw,"),
            ("sys", "sysfs", "ro,nosuid"),
            ("cg", "cgroup2", "rw,"),
        ] {
            let line = info
                .lines()
                .find(|l| l.contains(&format!(" {t}/{at} ")))
                .unwrap_or_else(|| panic!("no mount on {t}/{at}:\n{info}"));
            assert!(
                line.contains(&format!(" - {fs} ")) && line.contains(&format!(" {opts}")),
                "{line}"
            );
        }
        assert!(inside(&format!("ls {t}/sys")).contains("kernel"));
        // Propagation: the tmpfs and its bind are peers, the other bind their slave.
        let tag = |at: &str, pre: &str| {
            let line = info
                .lines()
                .find(|l| l.split_whitespace().nth(4) == Some(at))
                .unwrap_or_else(|| panic!("no mount on {at}:\n{info}"))
                .to_string();
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(pre).map(str::to_string))
                .unwrap_or_else(|| panic!("{at} is not {pre}: {line}"))
        };
        assert_eq!(tag(&t, "shared:"), tag(&own, "shared:"));
        assert_eq!(tag(&t, "shared:"), tag(&sl, "master:"));
        let start = Instant::now();
        while counter(&env) <= before + 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the counter stopped at {before} (now {})",
                counter(&env)
            );
            sleep(Duration::from_millis(20));
        }
        assert!(counter(&env) > before, "the counter restarted");
    }
    // And it propagates: a mount on the tmpfs shows in its slave, not the other way.
    let inside = |cmd: &str| nsenter(init, &["-m", "sh", "-c", cmd]);
    inside(&format!(
        "mkdir {t}/p {t}/q && mount -t tmpfs p {t}/p && mount -t tmpfs q {sl}/q && touch {t}/p/x"
    ));
    assert_eq!(inside(&format!("ls {sl}/p")), "x");
    assert_eq!(
        inside(&format!("grep -c ' {t}/q ' /proc/1/mountinfo || true")),
        "0"
    );
    env.kill_and_reap(init);
}

/// An external mount whose host path is gone at restore is refused in one line naming
/// it (nothing is created); `--ext-mount-map KEY:PATH` finds it elsewhere.
#[test]
fn container_external_mount_missing_or_mapped() {
    let env = Env::new();
    let src = env.subdir("src");
    let b = env.subdir("b");
    fs::write(src.join("from-host"), "moved\n").unwrap();
    let script = format!(
        "mount --bind {} {} && echo made; while :; do sleep 0.05; done",
        src.display(),
        b.display()
    );
    let (w, init) = start_container(&env, "ext", &script);
    env.wait_line(&w, "made", |l| l == "made");
    let img = dump_started(&env, &w, init);
    let moved = env.path().join("moved");
    fs::rename(&src, &moved).unwrap();
    let restore = |extra: &[&OsStr]| {
        let pidfile = env.path().join("ext.pid");
        let mut args: Vec<&OsStr> = ["restore", "-D"].map(OsStr::new).to_vec();
        args.push(img.as_os_str());
        args.extend(["-d", "--pidfile"].map(OsStr::new));
        args.push(pidfile.as_os_str());
        args.extend_from_slice(extra);
        (env.ckpt(&args), pidfile)
    };
    let (out, _) = restore(&[]);
    let line = out.failed_naming(&format!("{} does not exist here", src.display()));
    assert!(line.contains("--ext-mount-map"), "{line}");
    assert!(
        inits_in(env.path()).is_empty(),
        "a failed restore left a container"
    );
    let map = format!("{}:{}", src.display(), moved.display());
    let (out, pidfile) = restore(&["--ext-mount-map".as_ref(), map.as_ref()]);
    out.ok();
    let init: i32 = fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    env.track(init);
    assert_eq!(
        nsenter(init, &["-m", "cat", &format!("{}/from-host", b.display())]),
        "moved"
    );
    env.kill_and_reap(init);
}

/// Dumps a container just started by `start_container` (its unshare, `w`, exits with
/// it and is reaped); the image directory.
fn dump_started(env: &Env, w: &Workload, init: i32) -> std::path::PathBuf {
    let img = env.subdir("img");
    env.dump(init, &img, &[]).ok();
    reap(w.pid, Duration::from_secs(10));
    env.untrack(w.pid);
    env.untrack(init);
    img
}

/// A container whose ipc namespace holds a SysV segment and a semaphore set two of its
/// processes use (the segment attached three times, once read-only), a SysV message
/// queue and a POSIX message queue no fd holds, with messages: three cycles of dump and
/// restore into fresh namespaces; after each the workload checks the same ids, keys,
/// modes, sizes, attach count, bytes, semaphore values and messages in order (the
/// segment written by both processes through it under the semaphore); `ckpt show`
/// lists the objects.
#[test]
fn container_ipc_namespace_three_cycles() {
    let env = Env::new();
    let bin = workload_bin("ipcns");
    let script = format!(
        "{} {} & while :; do sleep 0.05; done",
        bin.display(),
        env.path().display()
    );
    let (w, mut init) = start_container(&env, "ipcns", &script);
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let is_wl = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&bin);
    let mut passes = 0;
    let mut check = |root: i32| {
        passes += 1;
        check_inside(&env, &w, &bin, root, passes);
    };
    check(wait_child_of(init, is_wl));
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        (init, _) = container_cycle(&env, &w, init, &img, i);
        check(wait_child_of(init, is_wl));
        let show = env.ckpt(&[OsStr::new("show"), OsStr::new("-D"), img.as_os_str()]);
        assert!(show.status.success(), "{show}");
    }
    env.kill_and_reap(init);
}

/// A hostile mounts.img (resealed, so it verifies) cannot make the restore write
/// through a symlink of the container's tmpfs to the host's files: a file under a
/// symlink to a host directory is refused in one line, before anything is created.
#[test]
fn container_tmpfs_image_cannot_write_through_a_symlink() {
    let env = Env::new();
    let t = env.subdir("t");
    let victim = env.subdir("victim");
    let script = format!(
        "mount -t tmpfs ckpt-tmp {t} && ln -s {v} {t}/a && echo made; \
         while :; do sleep 0.05; done",
        t = t.display(),
        v = victim.display()
    );
    let (w, init) = start_container(&env, "hostile", &script);
    env.wait_line(&w, "made", |l| l == "made");
    let img = dump_started(&env, &w, init);
    let name = ckpt_images::names::MOUNTS;
    let mut files: Vec<pb::MountFile> = {
        let d = ImageDir::open(&img).unwrap();
        let mut r = d.records(name, Kind::Mounts).unwrap();
        r.rest("MountFile").unwrap()
    };
    let mount = files[0].mount;
    files.push(pb::MountFile {
        mount,
        path: "a/evil".into(),
        mode: libc::S_IFREG | 0o644,
        data: b"written through the symlink".to_vec(),
        size: 27,
        ..Default::default()
    });
    let mut wr = RecordWriter::new(Vec::new(), img.join(name), Kind::Mounts).unwrap();
    for f in &files {
        wr.write(f).unwrap();
    }
    let (bytes, size, xxh3) = wr.finish().unwrap();
    replace_record_file(&img, name, bytes, size, xxh3);
    env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        img.as_os_str(),
        OsStr::new("-d"),
    ])
    .failed_naming("\"a/evil\" is not under a directory listed before it");
    assert!(
        !victim.join("evil").exists(),
        "the restore wrote a host file"
    );
    assert!(
        inits_in(env.path()).is_empty(),
        "a failed restore left a container"
    );
}

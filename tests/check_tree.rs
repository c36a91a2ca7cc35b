//! `ckpt check -t PID`: every blocker of a live process tree, found without touching it.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;

fn check(env: &Env, pid: i32, json: bool) -> CkptOutput {
    let pid = pid.to_string();
    let mut args = vec![OsStr::new("check"), OsStr::new("-t"), OsStr::new(&pid)];
    if json {
        args.push(OsStr::new("--json"));
    }
    env.ckpt(&args)
}

/// The value printed on the workload's `NAME <value>` line.
fn announced(env: &Env, w: &Workload, name: &str) -> String {
    let prefix = format!("{name} ");
    let line = env.wait_line(w, name, |l| l.starts_with(&prefix));
    line[prefix.len()..].to_string()
}

/// A python tree holding a thread, a child, TCP, UDP, unix and netlink sockets, a pipe,
/// an eventfd, epoll and inotify: `check -t` names each blocker (sockets by what they
/// are, not inode) — but not the thread, the child, the pipe, the eventfd, the inotify
/// or the TCP, UDP and unix sockets, which are dumpable (the epoll, shared with the child, is not) — exits
/// 1, leaves every
/// process running and untraced, and the JSON says the same.
#[test]
fn check_lists_every_blocker_of_a_tree() {
    let env = Env::new();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/blockers.py");
    let mut w = env.spawn(
        "blockers",
        &python3(),
        &[script.as_os_str(), env.path().as_os_str()],
    );
    env.wait_ready(&w);
    let port = announced(&env, &w, "PORT");
    let udp = announced(&env, &w, "UDP");
    let child: i32 = announced(&env, &w, "CHILD").parse().unwrap();
    env.track(child);

    let out = check(&env, w.pid, false);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let sock = env.path().join("blockers.sock");
    let me = format!("pid {} (", w.pid);
    // Its listening TCP, bound UDP and listening unix sockets are dumpable: not listed.
    for dumpable in [
        format!("tcp 127.0.0.1:{port} LISTEN"),
        format!("udp 127.0.0.1:{udp}"),
        format!("unix stream {}", sock.display()),
    ] {
        assert!(!out.stdout.contains(&dumpable), "{dumpable} listed:\n{out}");
    }
    for want in ["netlink socket", "epoll"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(&me) && l.contains(want)),
            "no blocker of pid {} names `{want}`:\n{out}",
            w.pid
        );
    }
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&format!("pid {child} ")) && l.contains("epoll")),
        "the child's own blockers are not listed:\n{out}"
    );
    assert!(
        !out.stdout.contains("pipe:["),
        "a pipe between the processes of the tree is dumpable, not a blocker:\n{out}"
    );
    assert!(
        !out.stdout.contains("eventfd") && !out.stdout.contains("inotify"),
        "an eventfd and an inotify are dumpable, not blockers:\n{out}"
    );
    assert!(
        !out.stdout.contains("thread") && !out.stdout.contains("children"),
        "threads and children are dumpable, not blockers:\n{out}"
    );
    assert!(
        !out.stdout.contains(" (socket:["),
        "a socket described only by its inode:\n{out}"
    );
    assert!(out.stdout.contains("not dumpable"), "{out}");
    for pid in [w.pid, child] {
        assert_running_untraced(pid);
    }
    env.check(&mut w);

    let json = check(&env, w.pid, true);
    assert_eq!(json.status.code(), Some(1), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("check --json");
    assert_eq!(v["dumpable"], false);
    let list = v["blockers"].as_array().unwrap();
    assert!(
        list.iter().any(|b| b["pid"] == w.pid
            && b["what"].as_str().unwrap().contains("netlink socket")
            && b["why"].as_str().unwrap().contains("not supported")),
        "{json}"
    );
    assert_eq!(
        list.len(),
        out.stdout.lines().count() - 1,
        "the JSON and the text list differ:\n{out}\n{json}"
    );

    // The dump refuses with the first of the same blockers, naming how many more.
    let dir = env.subdir("img");
    let dumped = env.dump(w.pid, &dir, &[]);
    let line = dumped.failed_naming(&w.pid.to_string());
    let first = out.stdout.lines().next().unwrap();
    let first = first.split_once("): ").unwrap().1;
    assert!(line.contains(first), "dump: {line}\ncheck: {first}");
    assert!(line.contains("ckpt check -t"), "{line}");
    env.check(&mut w);
}

/// A plain process: "dumpable", exit 0, and `--json` agrees.
#[test]
fn check_says_dumpable() {
    let env = Env::new();
    let w = env.start("sig");
    let out = check(&env, w.pid, false).ok();
    assert_eq!(out.stdout, format!("pid {}: dumpable\n", w.pid), "{out}");
    let json = check(&env, w.pid, true).ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("check --json");
    assert_eq!(v["dumpable"], true);
    assert_eq!(v["blockers"].as_array().map(Vec::len), Some(0));
}

/// A pid nobody has: one line naming it, exit 2 (not 1: that means "blockers").
#[test]
fn check_of_a_missing_pid_is_one_line() {
    let env = Env::new();
    let pid = unused_pid();
    let out = check(&env, pid, false);
    assert_eq!(out.status.code(), Some(2), "{out}");
    let line = out.failed_naming(&format!("pid {pid} does not exist"));
    assert_eq!(out.stderr.lines().count(), 1, "{line}");
}

/// State the dump refuses only once the process is stopped (here a sealed mapping,
/// VmFlags `sl`) is listed by the check too, from /proc alone; the dump then refuses
/// it the same way and the process runs on.
#[test]
fn check_lists_refused_kernel_state() {
    let env = Env::new();
    let script = "import ctypes, os, sys, time\n\
        libc = ctypes.CDLL(None, use_errno=True)\n\
        libc.mmap.restype = ctypes.c_void_p\n\
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]\n\
        a = libc.mmap(None, 4096, 3, 0x22, -1, 0)\n\
        assert libc.syscall(462, ctypes.c_void_p(a), ctypes.c_size_t(4096), ctypes.c_ulong(0)) == 0\n\
        print('SEALED %x' % a, flush=True)\n\
        print('READY %d' % os.getpid(), flush=True)\n\
        time.sleep(600)\n";
    let w = env.spawn(
        "sealed",
        &python3(),
        &[OsStr::new("-c"), OsStr::new(script)],
    );
    env.wait_ready(&w);
    let out = check(&env, w.pid, false);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let me = format!("pid {} (", w.pid);
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with(&me) && l.contains("kernel state") && l.contains("sealed")),
        "the sealed mapping is not listed:\n{out}"
    );
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).failed_naming("sealed");
    assert_running_untraced(w.pid);
}

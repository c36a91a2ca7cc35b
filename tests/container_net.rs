//! A container's network: sockets inside its own network namespace (listening TCP and
//! UDP, and TCP connections between two of its processes over its loopback), restored
//! in the fresh namespace; the workloads check themselves (every byte of both streams,
//! the sockets' bindings, options and queued datagrams).

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A container started by `unshare --fork --pid --mount-proc --uts --ipc --net` (under
/// `wrap`, e.g. `nsenter --net=...`), running `bash -c SCRIPT`: unshare and the
/// container's init (bash, pid 1 inside, by its outer pid) once it runs.
fn start(env: &Env, name: &str, wrap: &[&str], script: &str) -> (Workload, i32) {
    let mut args: Vec<String> = wrap.iter().map(|s| s.to_string()).collect();
    args.push(which("unshare").display().to_string());
    args.extend(
        ["--fork", "--pid", "--mount-proc", "--uts", "--ipc", "--net", "bash", "-c"]
            .map(String::from),
    );
    args.push(script.to_string());
    let (prog, rest) = args.split_first().unwrap();
    let rest: Vec<&OsStr> = rest.iter().map(OsStr::new).collect();
    let w = env.spawn(name, Path::new(prog), &rest);
    let init = first_child(w.pid, &|k| {
        fs::read_link(format!("/proc/{k}/exe")).is_ok_and(|e| e.ends_with("bash"))
    });
    env.track(init);
    (w, init)
}

/// The first descendant of `parent` (depth first) for which `want` holds; waits for it.
fn first_child(parent: i32, want: &dyn Fn(i32) -> bool) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(k) = find_under(parent, want) {
            return k;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no such process under {parent}"
        );
        sleep(Duration::from_millis(10));
    }
}

fn find_under(parent: i32, want: &dyn Fn(i32) -> bool) -> Option<i32> {
    let kids =
        fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
    for k in kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()) {
        if want(k) {
            return Some(k);
        }
        if let Some(found) = find_under(k, want) {
            return Some(found);
        }
    }
    None
}

/// The process under `init` whose command line contains `needle`.
fn by_cmdline(init: i32, needle: &str) -> i32 {
    first_child(init, &|k| {
        fs::read(format!("/proc/{k}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .is_ok_and(|c| c.contains(needle))
    })
}

/// Waits until file `out` holds a line for which `want` holds; a FAIL or SETUP-ERROR
/// line fails the test.
fn wait_in(out: &Path, what: &str, want: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = fs::read_to_string(out).unwrap_or_default();
        if let Some(l) = text
            .lines()
            .find(|l| l.starts_with("FAIL") || l.starts_with("SETUP-ERROR"))
        {
            panic!("{}: `{l}`:\n{text}", out.display());
        }
        if let Some(l) = text.lines().find(|l| want(l)) {
            return l.to_string();
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{}: no {what}:\n{text}",
            out.display()
        );
        sleep(Duration::from_millis(10));
    }
}

/// Asks `pid` (a workload writing to `out`) to check itself and waits for `PASS n`.
fn check(pid: i32, out: &Path, n: usize) {
    assert!(signal(pid, libc::SIGUSR1), "pid {pid} is gone");
    let want = format!("PASS {n}");
    wait_in(out, &want, |l| l == want);
}

/// Dumps the container whose init is `init` (with `wrap` around ckpt, and `extra`
/// options), reaps it, restores it detached; the new init's outer pid.
fn cycle(env: &Env, wrap: &[&str], init: i32, img: &Path, extra: &[&str]) -> i32 {
    let mut dump = vec!["dump", "-t"];
    let pid = init.to_string();
    dump.push(&pid);
    let img_s = img.display().to_string();
    dump.extend(["-D", &img_s]);
    dump.extend(extra);
    run(env, wrap, &dump).ok();
    env.reap_dumped(init);
    restore(env, wrap, img, "cycle", &[])
}

/// `ckpt restore -D IMG -d --pidfile F EXTRA...` under `wrap`: the new init's outer pid
/// (tracked for the cleanup).
fn restore(env: &Env, wrap: &[&str], img: &Path, tag: &str, extra: &[&str]) -> i32 {
    let pidfile = env.path().join(format!("{tag}.pid"));
    let _ = fs::remove_file(&pidfile);
    let (img_s, pf) = (img.display().to_string(), pidfile.display().to_string());
    let mut args = vec!["restore", "-D", &img_s, "-d", "--pidfile", &pf];
    args.extend(extra);
    run(env, wrap, &args).ok();
    let init = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(init);
    init
}

/// ckpt with `args`, under `wrap` (a program and its arguments that end in running the
/// rest, e.g. `nsenter --net=PATH`), or directly.
fn run(env: &Env, wrap: &[&str], args: &[&str]) -> CkptOutput {
    if wrap.is_empty() {
        return env.ckpt(args);
    }
    let ckpt = env!("CARGO_BIN_EXE_ckpt");
    let mut all: Vec<&str> = wrap[1..].to_vec();
    all.push(ckpt);
    all.extend(args);
    env.run_program(Path::new(wrap[0]), &all)
}

/// Inside a container with a network namespace holding only its loopback: the inet
/// workload (TCP v4 and v6 listeners, UDP sockets with queued datagrams, a bound and an
/// unbound socket) and two TCP streams between processes of the container (over
/// 127.0.0.1 and ::1, each end checking every byte both ways). Three cycles of dump
/// (`--tcp-established`) and restore into fresh namespaces: each process checks itself
/// after each; no nftables table is made (the namespace is its own lock).
#[test]
fn container_netns_sockets_three_cycles() {
    let env = Env::new();
    let dir = env.path().display().to_string();
    let (ts, inet) = (workload_bin("tcpstream"), workload_bin("inet"));
    let (ts, inet) = (ts.display(), inet.display());
    let script = format!(
        "set -e; cd {dir}; ip link set lo up; {inet} {dir} > inet.out 2>&1 & \
         for v in 4 6; do \
           {ts} {dir} server $v 700$v > s$v.out 2>&1 & \
           until grep -q PORT s$v.out; do sleep 0.01; done; \
           {ts} {dir} client $v 700$v > c$v.out 2>&1 & \
         done; echo made; while :; do sleep 0.05; done"
    );
    let (w, mut init) = start(&env, "netns", &[], &script);
    env.wait_line(&w, "made", |l| l == "made");
    let outs = ["inet", "s4", "c4", "s6", "c6"];
    let needles = [
        format!("{inet} "),
        "server 4".into(),
        "client 4".into(),
        "server 6".into(),
        "client 6".into(),
    ];
    let out = |o: &str| env.path().join(format!("{o}.out"));
    for o in outs {
        wait_in(&out(o), "READY", |l| l.starts_with("READY"));
    }
    let tables = || {
        std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        let pid = init.to_string();
        let img_s = img.display().to_string();
        let dump = run(
            &env,
            &[],
            &["dump", "-t", &pid, "-D", &img_s, "--tcp-established"],
        )
        .ok();
        drop(dump);
        if i == 1 {
            reap(w.pid, Duration::from_secs(10));
            env.untrack(w.pid);
        } else {
            env.reap_dumped(init);
        }
        env.untrack(init);
        assert!(
            !tables().contains(&format!("ckpt_lock_{init}")),
            "a lock table for a loopback-only namespace"
        );
        init = restore(&env, &[], &img, &format!("r{i}"), &[]);
        for (o, n) in outs.iter().zip(&needles) {
            check(by_cmdline(init, n), &out(o), i);
        }
    }
    env.kill_and_reap(init);
}

/// A socket of a network namespace that is not its holder's (the container's init holds
/// a listener it inherited from the host's namespace) is refused by name, the container
/// left running.
#[test]
fn socket_of_another_netns_is_refused() {
    let env = Env::new();
    let py = python3().display().to_string();
    let code = "import socket,os; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); \
                os.set_inheritable(s.fileno(),True); print('made', flush=True); \
                os.execvp('unshare',['unshare','--fork','--pid','--mount-proc','--net',\
                'sleep','1000'])";
    let w = env.spawn("foreign", Path::new(&py), &[OsStr::new("-c"), OsStr::new(code)]);
    let init = first_child(w.pid, &|k| {
        fs::read_link(format!("/proc/{k}/exe")).is_ok_and(|e| e.ends_with("sleep"))
    });
    env.track(init);
    let line = env
        .dump(init, &env.subdir("img"), &[])
        .failed_naming("another network namespace");
    assert!(line.contains(&format!("pid {init}")), "{line}");
    assert_running_untraced(init);
    env.kill_and_reap(init);
}

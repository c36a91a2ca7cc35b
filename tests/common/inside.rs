//! Containers made by `unshare` for the tests: started, their init found, the workload
//! inside asked to check itself.

use super::*;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// `unshare --fork --pid --mount-proc --uts --ipc MORE... bash -c SCRIPT`: the
/// container's init (bash, pid 1 inside) once it runs, by its outer pid; `w` is unshare.
pub fn start_container_with(env: &Env, name: &str, more: &[&str], script: &str) -> (Workload, i32) {
    let unshare = which("unshare");
    let mut args = vec!["--fork", "--pid", "--mount-proc", "--uts", "--ipc"];
    args.extend_from_slice(more);
    args.extend(["bash", "-c", script]);
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let w = env.spawn(name, &unshare, &args);
    let init = wait_child_of(w.pid, |_| true);
    env.track(init);
    (w, init)
}

/// The pids of `pid` in every pid namespace it is in, outermost first (NSpid).
pub fn ns_pids(pid: i32) -> Vec<i32> {
    status_field(pid, "NSpid")
        .unwrap_or_default()
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect()
}

/// The first child of `parent` for which `want` holds (waits for it).
pub fn wait_child_of(parent: i32, want: impl Fn(i32) -> bool) -> i32 {
    let start = Instant::now();
    loop {
        let kids = fs::read_to_string(format!("/proc/{parent}/task/{parent}/children"))
            .unwrap_or_default();
        if let Some(k) = kids
            .split_whitespace()
            .map(|k| k.parse::<i32>().unwrap())
            .find(|&k| want(k))
        {
            return k;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no such child of {parent}"
        );
        sleep(Duration::from_millis(10));
    }
}

/// Asks the workload `exe` running inside a container as `pid` to check itself and
/// waits for its `PASS n` line in `w`'s output.
pub fn check_inside(env: &Env, w: &Workload, exe: &Path, pid: i32, n: u32) {
    assert!(signal(pid, libc::SIGUSR1));
    let want = format!("PASS {n}");
    let inside = Workload {
        pid,
        name: format!("{} in the container", exe.display()),
        exe: exe.to_path_buf(),
        out: w.out.clone(),
        passes: 0,
    };
    env.wait_line(&inside, &want, |l| l == want);
}

/// Runs `nsenter -t PID FLAGS... CMD...` and returns its output, trimmed.
pub fn nsenter(pid: i32, args: &[&str]) -> String {
    let out = std::process::Command::new(which("nsenter"))
        .arg("-t")
        .arg(pid.to_string())
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "nsenter {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `ckpt restore -D IMG -d --pidfile TAG.pid EXTRA...`: the restored root's pid, tracked.
pub fn restore_with_pidfile(env: &Env, img: &Path, tag: &str, extra: &[String]) -> i32 {
    let pidfile = env.path().join(format!("{tag}.pid"));
    let mut args: Vec<OsString> = vec![
        "restore".into(),
        "-D".into(),
        img.into(),
        "-d".into(),
        "--pidfile".into(),
        pidfile.clone().into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    env.ckpt(&args).ok();
    let pid = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(pid);
    pid
}

/// Dumps a container's init (which the dump kills) and waits until it is gone: on the
/// `first` dump its unshare (`w`), which exits with it, is reaped too.
pub fn dump_container(env: &Env, w: &Workload, init: i32, img: &Path, first: bool) {
    env.dump(init, img, &[]).ok();
    reap_dumped_container(env, w, init, first);
}

/// After a dump killed a container's init: waits until it is gone (on the `first` dump
/// its unshare, `w`, which exits with it and is the test's child, is reaped instead).
pub fn reap_dumped_container(env: &Env, w: &Workload, init: i32, first: bool) {
    if first {
        reap(w.pid, Duration::from_secs(10));
        env.untrack(w.pid);
    } else {
        env.reap_dumped(init);
    }
    env.untrack(init);
}

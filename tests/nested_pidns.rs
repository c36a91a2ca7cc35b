//! Pid namespaces nested below the tree's (`unshare --pid --fork CMD` inside a container
//! or on the host): restored with every process's pid at every level, the namespace's
//! init pid 1 again and the process that made the namespace forking into it. What cannot
//! be made again is refused by name with the tree left running.

mod common;

use common::inside::*;
use common::*;
use std::fs;

fn comm_is(pid: i32, name: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
}

/// The nspids workload's "OUTER init child child-outer" line: (init's pid in the
/// enclosing namespace, the child's in the nested one, the child's in the enclosing).
fn outer_line(env: &Env, w: &Workload) -> (i32, i32, i32) {
    let line = env.wait_line(w, "OUTER", |l| l.starts_with("OUTER "));
    let v: Vec<i32> = line[6..]
        .split_whitespace()
        .map(|t| t.parse().unwrap())
        .collect();
    (v[0], v[1], v[2])
}

/// A container (pid 1 bash) runs `unshare --pid --fork nspids`: nspids is pid 1 of a
/// namespace nested in the container's, with a child (pid 2 there). Three cycles of
/// dump and restore: after each, from outside, unshare is back with its container pid,
/// nspids and its child have their pids at all three levels' worth of NSpid (host,
/// container, nested), and inside they check their own getpid, getppid (0 for the
/// nested init), their container pids through /proc/self and each other.
#[test]
fn nested_pid_namespace_in_a_container_three_cycles() {
    let env = Env::new();
    let nspids = workload_bin("nspids");
    let dir = env.path().display().to_string();
    let script = format!(
        "unshare --pid --fork {} {dir} & while :; do sleep 0.05; done",
        nspids.display()
    );
    let (w, mut init) = start_container_with(&env, "nested", &[], &script);
    let (outer, child_inner, child_outer) = outer_line(&env, &w);
    env.wait_line(&w, "READY", |l| l == "READY 1");
    let unshare = wait_child_of(init, |k| comm_is(k, "unshare"));
    let unshare_inner = *ns_pids(unshare).last().unwrap();
    let mut ninit = wait_child_of(unshare, |_| true);
    assert_eq!(ns_pids(ninit), vec![ninit, outer, 1]);
    check_inside(&env, &w, &nspids, ninit, 1);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        let inv = read_inventory(&img);
        let nested: Vec<(i32, Vec<i32>)> = inv
            .tree
            .iter()
            .filter(|n| !n.nested_pids.is_empty())
            .map(|n| (n.pid, n.nested_pids.clone()))
            .collect();
        assert_eq!(
            nested,
            vec![(outer, vec![1]), (child_outer, vec![child_inner])]
        );
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        assert_eq!(ns_pids(init), vec![init, 1]);
        let u = wait_child_of(init, |k| comm_is(k, "unshare"));
        assert_eq!(ns_pids(u), vec![u, unshare_inner]);
        ninit = wait_child_of(u, |_| true);
        assert_eq!(ns_pids(ninit), vec![ninit, outer, 1]);
        let c = wait_child_of(ninit, |_| true);
        assert_eq!(ns_pids(c), vec![c, child_outer, child_inner]);
        check_inside(&env, &w, &nspids, ninit, i as u32 + 1);
    }
    env.kill_and_reap(init);
}

/// The same on the host: `unshare --pid --fork nspids` dumped by unshare's pid (a tree
/// in ckpt's pid namespace whose root made a nested one). Restored with the same host
/// pids, nspids pid 1 below, three times.
#[test]
fn nested_pid_namespace_below_the_host_three_cycles() {
    let env = Env::new();
    let nspids = workload_bin("nspids");
    let dir = env.path().display().to_string();
    let unshare = which("unshare");
    let args = ["--pid", "--fork", nspids.to_str().unwrap(), dir.as_str()];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let w = env.spawn("nested-host", &unshare, &args);
    let (outer, child_inner, child_outer) = outer_line(&env, &w);
    env.wait_line(&w, "READY", |l| l == "READY 1");
    let ninit = wait_child_of(w.pid, |_| true);
    assert_eq!((ninit, ns_pids(ninit)), (outer, vec![outer, 1]));
    check_inside(&env, &w, &nspids, ninit, 1);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &img, &[]).ok();
        // unshare's nested init, orphaned by the kill, came to us as a zombie.
        assert!(reap(ninit, std::time::Duration::from_secs(10)).is_some());
        env.restore_dumped(&w, &img);
        assert_eq!(ns_pids(ninit), vec![outer, 1]);
        assert_eq!(ns_pids(child_outer), vec![child_outer, child_inner]);
        check_inside(&env, &w, &nspids, ninit, i + 1);
    }
    env.kill_and_reap(w.pid);
}

/// Every thread's NSpid (outermost first) of `pid`, sorted.
fn thread_pids(pid: i32) -> Vec<Vec<i32>> {
    let mut all: Vec<Vec<i32>> = fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .map(|t| {
            let status = fs::read_to_string(t.path().join("status")).unwrap();
            let line = status.lines().find(|l| l.starts_with("NSpid:")).unwrap();
            line[6..]
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect()
        })
        .collect();
    all.sort();
    all
}

/// A multi-threaded process (the threads workload, 16 threads each checking its own tid,
/// TLS, sigmask, rseq...) as pid 1 of a namespace nested in a container's
/// (`unshare --pid --fork threads`): three cycles, after each every thread has its tid
/// at the container's level and the nested one as before, and the workload passes its
/// own checks.
#[test]
fn threads_in_a_nested_pid_namespace_three_cycles() {
    let env = Env::new();
    let threads = workload_bin("threads");
    let dir = env.path().display().to_string();
    let script = format!(
        "unshare --pid --fork {} {dir} 16 & while :; do sleep 0.05; done",
        threads.display()
    );
    let (w, mut init) = start_container_with(&env, "nested-threads", &[], &script);
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let unshare = wait_child_of(init, |k| comm_is(k, "unshare"));
    let threaded = wait_child_of(unshare, |_| true);
    // Below the host's level: the container's and the nested namespace's tids.
    let inner = |pid: i32| -> Vec<Vec<i32>> {
        thread_pids(pid)
            .into_iter()
            .map(|t| t[1..].to_vec())
            .collect()
    };
    // A check restarts one thread (the one joined): the tids are taken after it.
    check_inside(&env, &w, &threads, threaded, 1);
    let mut before = inner(threaded);
    assert_eq!(before.len(), 17, "{before:?}");
    assert!(before.iter().all(|t| t.len() == 2), "{before:?}");
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        let u = wait_child_of(init, |k| comm_is(k, "unshare"));
        let t = wait_child_of(u, |_| true);
        assert_eq!(inner(t), before);
        check_inside(&env, &w, &threads, t, i as u32 + 1);
        before = inner(t);
    }
    env.kill_and_reap(init);
}

/// What is not restored is refused by name and the container runs on: a process whose
/// children would go to a pid namespace it forked no init into (`unshare --pid` without
/// --fork: the command itself stays outside it), and a nested pid namespace with a /proc
/// of its own (`unshare --pid --fork --mount-proc`: a mount namespace below the
/// container's).
#[test]
fn nested_pid_namespaces_not_restored_are_refused_by_name() {
    let env = Env::new();
    let script = "unshare --pid sleep 1000 & unshare --pid --fork --mount-proc sleep 2000 & \
                  while :; do sleep 0.05; done";
    let (_w, init) = start_container_with(&env, "nested-refused", &[], script);
    // Not the loop's `sleep 0.05`s.
    let with_arg = |arg: &'static str| {
        move |k: i32| {
            fs::read_to_string(format!("/proc/{k}/cmdline")).is_ok_and(|c| c.contains(arg))
        }
    };
    // Once it runs sleep, unshare has unshared.
    let sleeper = wait_child_of(init, |k| comm_is(k, "sleep") && with_arg("1000")(k));
    let proc_maker = wait_child_of(init, with_arg("2000"));
    wait_child_of(proc_maker, |_| true);
    let check = env.ckpt(&["check", "-t", &init.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    for (pid, what) in [
        (sleeper, "pid_for_children pid:["),
        (proc_maker, "namespace mnt:["),
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
        .failed_naming("lists them all");
    assert!(
        line.contains("forked no init") || line.contains("namespace mnt:["),
        "{line}"
    );
    assert_running_untraced(init);
    env.kill_and_reap(init);
}

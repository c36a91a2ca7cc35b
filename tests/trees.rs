//! Process trees: `ckpt dump -t PID` takes PID and all its descendants; restore rebuilds
//! them with the same pids, parent links, process groups, sessions, shared memory and
//! zombies. The workloads check themselves (every member of the tree, through the shared
//! memory they all map); the tests check what only the outside sees: every process back,
//! running, untraced; and on failure, nothing of the restore left alive and nothing of the
//! dumped tree left stopped.

mod common;

use common::tree::*;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// No process of `pids` is alive (after a failed restore: ckpt reaped what it made).
fn assert_none_alive(pids: &[i32], except: i32) {
    let start = Instant::now();
    loop {
        let left: Vec<(i32, Option<char>)> = pids
            .iter()
            .filter(|&&p| p != except && exists(p))
            .map(|&p| (p, proc_state(p)))
            .collect();
        if left.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "processes of the failed restore are left: {left:?}"
        );
        sleep(Duration::from_millis(20));
    }
}

/// Parent, children, grandchildren; a child leading its own group, one its own session;
/// shared memory made before the forks; a zombie whose exact status the restored parent
/// reaps: three cycles, then a dump with --leave-running.
#[test]
fn tree_three_cycles_and_leave_running() {
    let env = Env::new();
    let mut w = env.start("tree");
    env.check(&mut w);
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        let pids = tree_cycle(&env, &mut w, &dir);
        let inv = read_inventory(&dir);
        assert_eq!(
            inv.tree.len(),
            8,
            "7 processes and a zombie: {:?}",
            inv.tree
        );
        assert_eq!(inv.pids.len(), 7);
        assert_eq!(inv.tree.iter().filter(|n| n.zombie).count(), 1);
        assert_eq!(pids[0], w.pid);
        assert_eq!(image_files(&dir, "pages-").len(), 1, "{}", listing(&dir));
    }
    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    for &p in &read_inventory(&dir).pids {
        assert_running_untraced(p);
    }
    env.check(&mut w);
    finish_tree(&env, &w, &tree_pids(&dir));
}

/// A compressed image of a tree (one pages file of zstd frames for all its processes)
/// restores the same, shared memory included.
#[test]
fn compressed_tree_cycle() {
    let env = Env::new();
    let mut w = env.start("tree");
    let dir = env.subdir("img");
    let pids = tree_cycle_with(&env, &mut w, &dir, &["--compress"]);
    finish_tree(&env, &w, &pids);
}

/// A ring of 101 processes passing a token through shared memory (a futex each) keeps
/// counting after a restore.
#[test]
fn ring_of_101_keeps_counting() {
    let env = Env::new();
    let mut w = env.start("ring");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=2 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        assert_eq!(pids.len(), 101);
    }
    finish_tree(&env, &w, &pids);
}

/// A process that forks and reaps as fast as it can: every dump is a consistent picture
/// (its own bookkeeping of children finds none missing and none extra after restore).
#[test]
fn fork_heavy_tree_dumps_consistently() {
    let env = Env::new();
    let mut w = env.start("forky");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
    }
    finish_tree(&env, &w, &pids);
}

/// A bash loop that runs `sleep` and counts into a file carries on counting.
#[test]
fn bash_sleep_loop_keeps_its_count() {
    let env = Env::new();
    let count = env.path().join("count");
    let script = format!(
        "n=0; while :; do sleep 0.02; n=$((n+1)); echo $n > {}.tmp; mv {}.tmp {}; done",
        count.display(),
        count.display(),
        count.display()
    );
    let bash = which("bash");
    let w = env.spawn("bash", &bash, &[OsStr::new("-c"), OsStr::new(&script)]);
    let read = || -> u64 {
        fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let wait_above = |n: u64| {
        let start = Instant::now();
        while read() <= n {
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "bash's count stays at {} (want > {n})",
                read()
            );
            sleep(Duration::from_millis(10));
        }
    };
    wait_above(3);
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        let at_dump = read();
        let pids = tree_pids(&dir);
        env.reap_dumped(w.pid);
        wait_gone(&pids);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        // Counting on from where it was, not from 0.
        wait_above(at_dump + 3);
        assert!(read() > at_dump, "cycle {i}: count went back");
        if i == 3 {
            finish_tree(&env, &w, &pids);
        }
    }
}

/// Dumps the ring, kills it, and returns (dir, pids of the image) once every pid is free.
fn dumped_ring(env: &Env) -> (std::path::PathBuf, Vec<i32>) {
    let w = env.start("ring");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    let pids = tree_pids(&dir);
    env.reap_dumped(w.pid);
    wait_gone(&pids);
    (dir, pids)
}

/// A restore of 101 processes whose 51st pid is taken fails, naming the pid, and leaves
/// none of the 50 it created before alive, not even as zombies.
#[test]
fn restore_with_a_pid_taken_midway_leaves_nothing() {
    let env = Env::new();
    let (dir, pids) = dumped_ring(&env);
    let taken = pids[50];
    let bin = workload_bin("pidhold");
    let holder = env.spawn(
        "pidhold",
        &bin,
        &[env.path().as_os_str(), OsStr::new(&taken.to_string())],
    );
    env.wait_line(&holder, "READY", |l| l == format!("READY {taken}"));
    let out = env.restore_detached(&dir);
    let line = out.failed_naming("already in use");
    assert!(mentions_number(&line, taken as i64), "{line}");
    assert_none_alive(&pids, taken);
    signal(taken, libc::SIGKILL);
    reap(holder.pid, Duration::from_secs(10)).expect("pidhold exits");
    env.untrack(holder.pid);
}

/// A restore whose 51st process cannot be rebuilt (its image names a file that is gone)
/// fails naming that process, and leaves nothing alive.
#[test]
fn restore_with_a_damaged_process_midway_leaves_nothing() {
    let env = Env::new();
    let (dir, pids) = dumped_ring(&env);
    let bad = read_inventory(&dir).pids[50];
    let gone = env.path().join("gone-file");
    edit_fds(&dir, bad, |fds| {
        fds.push(ckpt_images::pb::Fd {
            fd: 40,
            kind: ckpt_images::pb::FdKind::FdRegular as i32,
            path: gone.display().to_string(),
            flags: libc::O_RDONLY as u32,
            ..Default::default()
        });
    });
    let out = env.restore_detached(&dir);
    let line = out.failed_naming("gone-file");
    assert!(mentions_number(&line, bad as i64), "{line}");
    assert_none_alive(&pids, 0);
}

/// A restore whose 51st process fails in its puppet phase (its saved FPU state asks for a
/// feature this CPU lacks, found only once the seed is seized), while other puppets are
/// being rebuilt on the other CPU, fails naming that process and leaves nothing alive.
#[test]
fn restore_failing_in_a_puppet_midway_leaves_nothing() {
    use ckpt_images::{names, pb, ImageDir, Kind, RecordWriter};
    let env = Env::new();
    let (dir, pids) = dumped_ring(&env);
    let bad = read_inventory(&dir).pids[50];
    let name = names::core(bad);
    let (core, mut threads): (pb::ProcessCore, Vec<pb::ThreadCore>) = {
        let d = ImageDir::open(&dir).unwrap();
        let mut r = d.records(&name, Kind::Core).unwrap();
        (
            r.expect("ProcessCore").unwrap(),
            r.rest("ThreadCore").unwrap(),
        )
    };
    // XCR0 in the xsave header: a feature bit no CPU has.
    let xsave = &mut threads[0].xsave;
    let mut xcr0 = u64::from_le_bytes(xsave[464..472].try_into().unwrap());
    xcr0 |= 1 << 62;
    xsave[464..472].copy_from_slice(&xcr0.to_le_bytes());
    let mut w = RecordWriter::new(Vec::new(), dir.join(&name), Kind::Core).unwrap();
    w.write(&core).unwrap();
    for t in &threads {
        w.write(t).unwrap();
    }
    let (bytes, size, xxh3) = w.finish().unwrap();
    replace_record_file(&dir, &name, bytes, size, xxh3);
    let out = env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
        OsStr::new("-vv"),
    ]);
    assert!(!out.success(), "the restore should fail: {out}");
    // After every process was created: this covers the puppet phase's rollback.
    assert!(out.stderr.contains("every seed stopped"), "{out}");
    assert!(
        out.stderr
            .lines()
            .any(|l| l.contains("error") && mentions_number(l, bad as i64)),
        "the error does not name pid {bad}: {out}"
    );
    assert_none_alive(&pids, 0);
}

/// A dump of a tree that fails (no space left for the images) leaves every process of the
/// tree running, untraced, its state intact.
#[test]
fn failed_tree_dump_leaves_every_task_running() {
    let env = Env::new();
    let mut w = env.start("tree");
    let small = env.path().join("small");
    env.mount_tmpfs(&small, "size=256k");
    let dir = small.join("img");
    let out = env.dump(w.pid, &dir, &[]);
    assert!(!out.success(), "the dump should not fit in 256 KiB: {out}");
    let mut all = vec![w.pid];
    let mut i = 0;
    while i < all.len() {
        let p = all[i];
        for t in fs::read_dir(format!("/proc/{p}/task")).unwrap() {
            let t = t.unwrap().file_name();
            let kids =
                fs::read_to_string(format!("/proc/{p}/task/{}/children", t.to_string_lossy()))
                    .unwrap_or_default();
            all.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
        i += 1;
    }
    assert_eq!(all.len(), 8, "the tree: {all:?}");
    for &p in &all {
        if proc_state(p) != Some('Z') {
            assert_running_untraced(p);
        }
    }
    env.check(&mut w);
    finish_tree(&env, &w, &all);
}

/// A child in its sibling's process group cannot be rebuilt yet: refused by name, the
/// tree left running.
#[test]
fn sibling_process_group_is_refused() {
    let env = Env::new();
    let w = env.start("pgrp");
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming("process group");
    assert!(line.contains("not supported yet"), "{line}");
    assert_running_untraced(w.pid);
    env.kill_and_reap(w.pid);
}

/// --lazy restores one process: a tree image is refused before anything is created.
#[test]
fn lazy_restore_of_a_tree_is_refused() {
    let env = Env::new();
    let w = env.start("tree");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    let out = env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
        OsStr::new("--lazy"),
    ]);
    out.failed_naming("--lazy");
    assert_running_untraced(w.pid);
    finish_tree(&env, &w, &tree_pids(&dir));
}

/// ckpt killed (SIGKILL: no cleanup of its own) while the seeds of a 101-process ring
/// wait to be seized: every seed dies with its parent (ckpt, or its parent's seed), none
/// is left waiting for a ckpt that will never come.
#[test]
fn restore_killed_before_the_seize_leaves_nothing() {
    let env = Env::new();
    let (dir, pids) = dumped_ring(&env);
    let hold = Hold::new(&env, "restore-seeds");
    let bg = env.ckpt_bg_held(
        &hold,
        &[
            OsStr::new("restore"),
            OsStr::new("-D"),
            dir.as_os_str(),
            OsStr::new("-d"),
        ],
    );
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    assert!(
        pids.iter().all(|&p| exists(p)),
        "held before every seed was made"
    );
    assert!(signal(ckpt, libc::SIGKILL));
    let out = env.finish_bg(bg);
    assert_eq!(out.status.code(), None, "ckpt should die of SIGKILL: {out}");
    wait_gone(&pids);
}

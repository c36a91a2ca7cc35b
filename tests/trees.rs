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
    let read = || read_count(&count);
    let wait_above = |n: u64| wait_count_above(read, n, "bash's count");
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
    // In the puppet phase (the puppets may start while the last seeds are being made):
    // this covers its rollback.
    assert!(out.stderr.contains("puppets start"), "{out}");
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

/// A child left in the session its parent had before setsid() cannot be put back there
/// (that session's leader lives outside the tree): refused by name, the tree left running.
#[test]
fn session_led_from_outside_is_refused() {
    let env = Env::new();
    let w = env.start("pgrp");
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming("alive outside the tree");
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
    let bg = env.restore_detached_held(&hold, &dir);
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

/// Sessions and groups whose leader has exited (a daemon's double fork, a pipeline whose
/// first process is gone, a zombie in such a group) and a group led by a live sibling:
/// every member checks its pid, parent, group and session through three cycles (helpers
/// with the leaders' pids stand in during the restore), then --leave-running.
#[test]
fn exited_leaders_three_cycles_and_leave_running() {
    let env = Env::new();
    let mut w = env.start("leaders");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        assert_eq!(pids.len(), 8, "root, six members and a zombie: {pids:?}");
    }
    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    for &p in &read_inventory(&dir).pids {
        assert_running_untraced(p);
    }
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

/// Summed Pss (KiB) of `pids`, from smaps_rollup.
fn summed_pss(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|p| fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// A parent's 32 MiB heap shared copy-on-write with 8 children (odd ones write a page of
/// it at every check): the image holds the heap about once, not nine times, and the
/// restored tree shares it again (summed Pss within 1.5x of the original's, where a copy
/// per process would be ~9x), so the next dump finds it shared too; every child still
/// reads its inherited pages right, and its own writes, which the parent never sees,
/// through three cycles.
#[test]
fn copy_on_write_heap_is_stored_once() {
    cow_cycles("32", "8", 48 << 20);
}

/// The figure: 256 MiB of heap and 50 children that only read it (but for the
/// odd ones' page each).
#[test]
fn copy_on_write_256_mib_with_50_children() {
    cow_cycles("256", "50", 300 << 20);
}

/// Three cycles of `cow MIB CHILDREN`: after each, the pages file holds less than
/// `max_pages` bytes and the summed Pss of the restored tree is within 1.5x of the tree's
/// before the dump.
fn cow_cycles(mib: &str, children: &str, max_pages: u64) {
    let env = Env::new();
    let mut w = env.start_with("cow", &[mib, children]);
    env.check(&mut w);
    let n: usize = children.parse().unwrap();
    let mut pids = Vec::new();
    for i in 1..=3 {
        let before = summed_pss(&read_inventory_pids_of(&env, &w));
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        assert_eq!(pids.len(), n + 1);
        let stored = image_bytes(&dir, "pages-");
        let after = summed_pss(&pids);
        eprintln!(
            "cycle {i}: pages file {} KiB, summed Pss {before} KiB before, {after} KiB after",
            stored >> 10
        );
        assert!(
            stored < max_pages,
            "cycle {i}: the {mib} MiB heap of {} processes takes {stored} bytes of the pages \
             file",
            n + 1
        );
        assert!(
            after * 2 <= before * 3,
            "cycle {i}: summed Pss {after} KiB restored, {before} KiB before the dump"
        );
    }
    finish_tree(&env, &w, &pids);
}

/// The pids of `w`'s tree as it runs (the root and its children).
fn read_inventory_pids_of(_env: &Env, w: &Workload) -> Vec<i32> {
    let mut out = vec![w.pid];
    let children =
        fs::read_to_string(format!("/proc/{0}/task/{0}/children", w.pid)).unwrap_or_default();
    out.extend(
        children
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok()),
    );
    out
}

/// A cgroup v2 of the test's own under the unified hierarchy, removed when dropped (its
/// processes are the test's, killed by then).
struct TestCgroup(std::path::PathBuf);

impl TestCgroup {
    fn new(name: &str) -> Option<TestCgroup> {
        let mount = fs::read_to_string("/proc/self/mountinfo")
            .ok()?
            .lines()
            .filter(|l| l.contains(" - cgroup2 "))
            .find_map(|l| l.split(' ').nth(4).map(std::path::PathBuf::from))?;
        let path = mount.join(format!("ckpt-test-{}-{name}", std::process::id()));
        fs::create_dir(&path).ok()?;
        Some(TestCgroup(path))
    }

    /// The same in the cgroup v1 freezer hierarchy.
    fn v1(name: &str) -> Option<TestCgroup> {
        let mount = fs::read_to_string("/proc/self/mountinfo")
            .ok()?
            .lines()
            .filter(|l| {
                l.split_once(" - ").is_some_and(|(_, post)| {
                    post.starts_with("cgroup ") && post.split(',').any(|o| o == "freezer")
                })
            })
            .find_map(|l| l.split(' ').nth(4).map(std::path::PathBuf::from))?;
        let path = mount.join(format!("ckpt-test-{}-{name}", std::process::id()));
        fs::create_dir(&path).ok()?;
        Some(TestCgroup(path))
    }

    fn enter(&self, pid: i32) {
        fs::write(self.0.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for TestCgroup {
    /// Thawed, what is left in it killed (all the test's own: a failed test leaves its
    /// workload there), then removed.
    fn drop(&mut self) {
        let _ = fs::write(self.0.join("freezer.state"), "THAWED");
        let _ = fs::write(self.0.join("cgroup.freeze"), "0");
        for pid in fs::read_to_string(self.0.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<i32>().ok())
        {
            signal(pid, libc::SIGKILL);
        }
        let start = Instant::now();
        while fs::remove_dir(&self.0).is_err() && start.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(20));
        }
    }
}

/// Three cycles of `w` with `--freeze-cgroup` naming `cg`, whose `state` file must read
/// thawed after each; the pids of the last restore.
fn forky_cycles(env: &Env, w: &mut Workload, cg: &TestCgroup, state: (&str, &str)) -> Vec<i32> {
    let arg = cg.0.display().to_string();
    let mut pids = Vec::new();
    for i in 1..=3 {
        cg.enter(w.pid);
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle_with(env, w, &dir, &["--freeze-cgroup", &arg]);
        let now = fs::read_to_string(cg.0.join(state.0)).unwrap();
        assert_eq!(now.trim(), state.1, "{} is left frozen", cg.0.display());
    }
    pids
}

/// `--freeze-cgroup`: a process that forks and reaps as fast as it can, in a cgroup of
/// its own, is frozen before the seize and thawed after it: three consistent cycles (it
/// checks its own bookkeeping of children), and the cgroup is thawed after each dump.
#[test]
fn fork_heavy_tree_in_a_frozen_cgroup() {
    let env = Env::new();
    let Some(cg) = TestCgroup::new("forky") else {
        panic!("cannot create a cgroup v2 for the test");
    };
    let mut w = env.start("forky");
    env.check(&mut w);
    let arg = cg.0.display().to_string();
    let pids = forky_cycles(&env, &mut w, &cg, ("cgroup.freeze", "0"));
    cg.enter(w.pid);
    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running", "--freeze-cgroup", &arg])
        .ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

/// `--freeze-cgroup` naming a cgroup v1 freezer (LXC's): the tree is seized whole while
/// frozen (its stops only come after the thaw), so the fork-heavy process is dumped
/// consistently; three cycles, --leave-running and a failed dump, the freezer thawed
/// after each, the process running on untraced after the last two.
#[test]
fn fork_heavy_tree_in_a_v1_freezer() {
    let env = Env::new();
    let cg = TestCgroup::v1("forky").expect("a cgroup v1 freezer for the test");
    let mut w = env.start("forky");
    env.check(&mut w);
    let arg = cg.0.display().to_string();
    let pids = forky_cycles(&env, &mut w, &cg, ("freezer.state", "THAWED"));
    cg.enter(w.pid);
    let dir = env.subdir("running");
    let mut args = vec![std::ffi::OsString::from("-vv")];
    args.extend(dump_args(
        w.pid,
        &dir,
        &["--leave-running", "--freeze-cgroup", &arg],
    ));
    let out = env.ckpt(&args).ok();
    assert!(
        out.stderr.contains("v1=true")
            && out.stderr.contains("seized and interrupted while frozen"),
        "no v1 freeze logged:\n{}",
        out.stderr
    );
    assert_running_untraced(w.pid);
    env.check(&mut w);
    // A dump that fails once the tree is seized (no room for its images) leaves the
    // freezer thawed and the process running untraced.
    let small = env.path().join("small");
    env.mount_tmpfs(&small, "size=8k");
    cg.enter(w.pid);
    let out = env.dump(w.pid, &small.join("img"), &["--freeze-cgroup", &arg]);
    assert!(!out.success(), "the dump should not fit in 8 KiB: {out}");
    let state = fs::read_to_string(cg.0.join("freezer.state")).unwrap();
    assert_eq!(
        state.trim(),
        "THAWED",
        "a failed dump left the freezer frozen"
    );
    assert_running_untraced(w.pid);
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

/// A v1 freezer the user froze already: its tasks' stops would never come, so the dump
/// is refused by name, and the freezer left as it was (frozen); thawed, the tree runs on.
#[test]
fn frozen_v1_freezer_is_refused() {
    let env = Env::new();
    let cg = TestCgroup::v1("frozen").expect("a cgroup v1 freezer for the test");
    let mut w = env.start("tree");
    env.check(&mut w);
    cg.enter(w.pid);
    fs::write(cg.0.join("freezer.state"), "FROZEN").unwrap();
    let dir = env.subdir("img");
    let arg = cg.0.display().to_string();
    let out = env.dump(w.pid, &dir, &["--freeze-cgroup", &arg]);
    out.failed_naming("frozen already");
    let state = fs::read_to_string(cg.0.join("freezer.state")).unwrap();
    assert_eq!(state.trim(), "FROZEN", "the user's freeze was undone");
    fs::write(cg.0.join("freezer.state"), "THAWED").unwrap();
    assert_running_untraced(w.pid);
    env.check(&mut w);
    let all = env.subdir("all");
    env.dump(w.pid, &all, &["--leave-running"]).ok();
    finish_tree(&env, &w, &tree_pids(&all));
}

/// `--freeze-cgroup` naming a cgroup the process is not in: refused by name, nothing
/// frozen, the process left running.
#[test]
fn freeze_cgroup_without_the_process_is_refused() {
    let env = Env::new();
    let cg = TestCgroup::new("empty").expect("a cgroup v2 for the test");
    let mut w = env.start("tree");
    let dir = env.subdir("img");
    let arg = cg.0.display().to_string();
    let out = env.dump(w.pid, &dir, &["--freeze-cgroup", &arg]);
    out.failed_naming("--freeze-cgroup");
    assert_running_untraced(w.pid);
    env.check(&mut w);
    let all = env.subdir("all");
    env.dump(w.pid, &all, &["--leave-running"]).ok();
    finish_tree(&env, &w, &tree_pids(&all));
}

/// Without `--freeze-cgroup`, a tree alone in a cgroup v2 of its own is frozen all the
/// same (ckpt says so at -vv), thawed after, and restores.
#[test]
fn tree_alone_in_its_cgroup_is_frozen_automatically() {
    let env = Env::new();
    let cg = TestCgroup::new("auto").expect("a cgroup v2 for the test");
    let mut w = env.start("ring");
    cg.enter(w.pid);
    env.check(&mut w);
    let dir = env.subdir("img");
    let mut args = vec![std::ffi::OsString::from("-vv")];
    args.extend(dump_args(w.pid, &dir, &[]));
    let out = env.ckpt(&args).ok();
    assert!(
        out.stderr.contains("frozen cgroup=") && out.stderr.contains("ckpt-test-"),
        "no freeze logged:\n{}",
        out.stderr
    );
    let state = fs::read_to_string(cg.0.join("cgroup.freeze")).unwrap();
    assert_eq!(state.trim(), "0", "the cgroup is left frozen");
    let pids = tree_pids(&dir);
    env.reap_dumped(w.pid);
    wait_gone(&pids);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

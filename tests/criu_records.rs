//! ckpt as CRIU writes CRIU-format records beside its own image for the tools that read a
//! CRIU image directory themselves (podman and CRI-O: inventory.img, stats-dump,
//! stats-restore; checkpointctl and crit: pstree.img, core-PID.img). Go's checkpointctl
//! cannot be built here (no Go module proxy), so each record is decoded with CRIU's own
//! schema (criu/proto/images, as `ckpt_criu::image_pb`) after its magics are read the way
//! CRIU's readers read them, and compared with what /proc showed of the live tree.

mod common;

use ckpt_criu::image_pb as cpb;
use common::dropin::*;
use common::tree::{finish_tree, tree_pids, wait_gone};
use common::*;
use prost::Message;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

// CRIU's criu/include/magic.h.
const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
const INVENTORY_MAGIC: u32 = 0x5831_3116;
const PSTREE_MAGIC: u32 = 0x5027_3030;
const CORE_MAGIC: u32 = 0x5505_3847;
const STATS_MAGIC: u32 = 0x5709_3306;

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// The entries of CRIU image `path`, read as crit reads one: a common or service magic
/// first (except in the inventory), then the image's own, which must be `want`; then
/// sized protobuf entries to the end.
fn criu_entries(path: &Path, want: u32) -> Vec<Vec<u8>> {
    let b = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (mut magic, mut at) = (u32_at(&b, 0), 4);
    if magic == IMG_COMMON_MAGIC || magic == IMG_SERVICE_MAGIC {
        magic = u32_at(&b, 4);
        at = 8;
    }
    assert_eq!(magic, want, "{}: magic {magic:#x}", path.display());
    let mut out = Vec::new();
    while at < b.len() {
        let len = u32_at(&b, at) as usize;
        out.push(b[at + 4..at + 4 + len].to_vec());
        at += 4 + len;
    }
    out
}

fn one<M: Message + Default>(path: &Path, magic: u32) -> M {
    let e = criu_entries(path, magic);
    assert_eq!(e.len(), 1, "{}: {} entries", path.display(), e.len());
    M::decode(e[0].as_slice()).unwrap()
}

/// A process as /proc shows it.
#[derive(Debug)]
struct Seen {
    ppid: i32,
    pgid: i32,
    sid: i32,
    comm: String,
    zombie: bool,
    /// tid -> thread name.
    threads: BTreeMap<i32, String>,
}

/// Fields of /proc/PID/stat after the name (which may hold spaces and parentheses).
fn stat_of(pid: i32) -> (String, Vec<String>) {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let open = s.find('(').unwrap();
    let close = s.rfind(')').unwrap();
    let rest = s[close + 2..].split(' ').map(String::from).collect();
    (s[open + 1..close].to_string(), rest)
}

/// The tree under `root` (root included), from /proc.
fn proc_tree(root: i32) -> BTreeMap<i32, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let (comm, f) = stat_of(pid);
        let mut threads = BTreeMap::new();
        for t in fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
            let tid: i32 = t.file_name().to_string_lossy().parse().unwrap();
            let name = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            threads.insert(tid, name.trim_end().to_string());
            let kids = fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()));
        }
        out.insert(
            pid,
            Seen {
                ppid: f[1].parse().unwrap(),
                pgid: f[2].parse().unwrap(),
                sid: f[3].parse().unwrap(),
                comm,
                zombie: f[0] == "Z",
                threads,
            },
        );
    }
    out
}

#[test]
fn a_trees_pstree_and_cores_are_what_proc_shows_and_stats_hold_the_dumps_and_restores_times() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let mut w = env.start("tree");
    env.check(&mut w);

    // A dump that leaves the tree running: its records against /proc, taken while the
    // tree waits for its next check (it changes only then).
    let seen = proc_tree(w.pid);
    assert!(
        seen.len() >= 7 && seen.values().any(|s| s.zombie),
        "{seen:?}"
    );
    let dir = env.subdir("running");
    let d = dir.to_str().unwrap();
    let pid = w.pid.to_string();
    criu_ok(
        &env,
        &criu,
        &["dump", "-t", &pid, "-D", d, "-o", "dump.log", "-R"],
        &dir,
        "dump.log",
    );
    let inv: cpb::InventoryEntry = one(&dir.join("inventory.img"), INVENTORY_MAGIC);
    assert_eq!(inv.img_version, 2, "CRIU's images v1.1");
    assert!(inv.dump_uptime.is_some_and(|u| u > 0), "{inv:?}");

    let pstree: BTreeMap<u32, cpb::PstreeEntry> =
        criu_entries(&dir.join("pstree.img"), PSTREE_MAGIC)
            .iter()
            .map(|e| cpb::PstreeEntry::decode(e.as_slice()).unwrap())
            .map(|e| (e.pid, e))
            .collect();
    assert_eq!(
        pstree.keys().map(|&p| p as i32).collect::<Vec<_>>(),
        seen.keys().copied().collect::<Vec<_>>(),
        "every process, zombies too"
    );
    for (&pid, s) in &seen {
        let e = &pstree[&(pid as u32)];
        let ppid = if pid == w.pid { 0 } else { s.ppid };
        assert_eq!(
            (e.ppid as i32, e.pgid as i32, e.sid as i32),
            (ppid, s.pgid, s.sid),
            "pid {pid}"
        );
        let tids: Vec<i32> = e.threads.iter().map(|&t| t as i32).collect();
        assert_eq!(tids, s.threads.keys().copied().collect::<Vec<_>>(), "{pid}");
        for (&tid, name) in &s.threads {
            let core: cpb::CoreEntry = one(&dir.join(format!("core-{tid}.img")), CORE_MAGIC);
            assert_eq!(core.mtype, cpb::core_entry::March::X8664 as i32);
            if tid == pid {
                let tc = core.tc.as_ref().unwrap_or_else(|| panic!("{pid}: no tc"));
                assert_eq!(tc.comm, s.comm, "{pid}");
                // CRIU's TASK_ALIVE, or TASK_DEAD for a zombie with its exit status.
                assert_eq!(tc.task_state, if s.zombie { 2 } else { 1 }, "{pid}");
                assert_eq!(tc.exit_code != 0, s.zombie, "{pid}: {tc:?}");
            }
            if !s.zombie {
                let th = core.thread_core.as_ref().unwrap();
                assert_eq!(th.comm.as_deref(), Some(name.as_str()), "{tid}");
            }
        }
    }
    // The statistics go to the images directory without a work directory.
    let st: cpb::StatsEntry = one(&dir.join("stats-dump"), STATS_MAGIC);
    let dump = st.dump.unwrap();
    assert!(dump.pages_written > 0 && dump.frozen_time > 0, "{dump:?}");
    env.check(&mut w);

    // A dump that kills it, a restore with a work directory: stats-restore is there,
    // its times those of this restore.
    let dir = env.subdir("img");
    let work = env.subdir("work");
    let (d, wk) = (dir.to_str().unwrap(), work.to_str().unwrap());
    criu_ok(
        &env,
        &criu,
        &["dump", "-t", &pid, "-D", d, "-W", wk, "-o", "dump.log"],
        &work,
        "dump.log",
    );
    let pids = tree_pids(&dir.join("ckpt"));
    env.reap_dumped(w.pid);
    wait_gone(&pids);
    let started = std::time::Instant::now();
    criu_ok(
        &env,
        &criu,
        &["restore", "-d", "-D", d, "-W", wk, "-o", "restore.log"],
        &work,
        "restore.log",
    );
    let took_us = started.elapsed().as_micros() as u32;
    env.track(w.pid);
    assert_running_untraced(w.pid);
    let dumped: cpb::StatsEntry = one(&work.join("stats-dump"), STATS_MAGIC);
    let restored: cpb::StatsEntry = one(&work.join("stats-restore"), STATS_MAGIC);
    assert!(restored.dump.is_none(), "{restored:?}");
    let r = restored.restore.unwrap();
    assert!(
        0 < r.forking_time && r.forking_time <= r.restore_time && r.restore_time <= took_us,
        "{r:?}, the command took {took_us} us"
    );
    assert_eq!(r.pages_restored, Some(dumped.dump.unwrap().pages_written));
    assert!(
        !dir.join("stats-restore").exists(),
        "it goes to the work directory"
    );
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

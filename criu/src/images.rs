//! CRIU-format records beside ckpt's own image, for the tools around CRIU that read an
//! image directory themselves: podman (and CRI-O) refuse to restore from a directory
//! without `inventory.img`; checkpointctl and crit show the process tree from
//! `pstree.img` and each process's name and state from `core-PID.img`; podman's
//! `--print-stats` reads `stats-dump` and `stats-restore` from the work directory. What
//! is written is true and minimal, taken from ckpt's own image once it is complete:
//! CRIU's image version 1.1 inventory, one pstree entry per process (zombies included,
//! pids as the tree's own pid namespace sees them, the root's parent 0, a group or session
//! led from outside the tree 0, as ckpt's image has it), a core record per
//! thread (the process's name, state, personality and blocked signals on the leader's,
//! each thread's name, blocked signals and robust futex list on its own; no registers),
//! and the dump's and the restore's own measures. ckpt's image (`ckpt/`) is what a
//! restore reads; none of these is read back.
//!
//! The format, as CRIU defines it (magics from its criu/include/magic.h): a file starts
//! with IMG_COMMON_MAGIC (IMG_SERVICE_MAGIC for statistics) then the image's own magic,
//! all little-endian u32; the inventory has only its own. Then each entry is a
//! little-endian u32 length and that many bytes of protobuf, of CRIU's schemas
//! (proto/images/, compiled into [`crate::image_pb`]).

use crate::image_pb as pb;
use ckpt_images::{names, summary, ImageDir};
use std::path::Path;

pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Service images (statistics) start with this one instead.
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
pub const INVENTORY_MAGIC: u32 = 0x5831_3116;
pub const PSTREE_MAGIC: u32 = 0x5027_3030;
pub const CORE_MAGIC: u32 = 0x5505_3847;
pub const STATS_MAGIC: u32 = 0x5709_3306;
/// CRTOOLS_IMAGES_V1_1: common magics in every file but the inventory.
const IMAGES_V1_1: u32 = 2;
/// CRIU's task states (compel's task-state.h).
const TASK_ALIVE: u32 = 1;
const TASK_DEAD: u32 = 2;
const TASK_STOPPED: u32 = 3;

/// One image file: its magics, then each entry sized; written aside and renamed into place.
fn write_image(dir: &Path, name: &str, magics: &[u32], entries: &[Vec<u8>]) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    for m in magics {
        bytes.extend_from_slice(&m.to_le_bytes());
    }
    for e in entries {
        bytes.extend_from_slice(&(e.len() as u32).to_le_bytes());
        bytes.extend_from_slice(e);
    }
    let tmp = dir.join(format!(".{name}.ckpt-new"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, dir.join(name))
}

fn us(ms: f64) -> u32 {
    (ms * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32
}

/// Writes `stats-dump` (what podman's `checkpoint --print-stats` shows and `--export`
/// archives) from the dump's own measures: frozen time, memory copy time (as both memdump
/// and memwrite: ckpt copies and writes in one pipeline), pages written. ckpt freezes in
/// one step with the seize, so its freezing time is in the frozen time.
pub fn write_dump_stats(work: &Path, st: &ckpt_dump::DumpStats) -> std::io::Result<()> {
    let entry = pb::StatsEntry {
        dump: Some(pb::DumpStatsEntry {
            freezing_time: 0,
            frozen_time: us(st.frozen_ms),
            memdump_time: us(st.memory_ms),
            memwrite_time: us(st.memory_ms),
            pages_scanned: st.pages,
            pages_skipped_parent: 0,
            pages_written: st.pages,
            pages_lazy: 0,
            ..Default::default()
        }),
        restore: None,
    };
    let body = prost::Message::encode_to_vec(&entry);
    write_image(
        work,
        "stats-dump",
        &[IMG_SERVICE_MAGIC, STATS_MAGIC],
        &[body],
    )
}

/// The dump's statistics as CRIU's `--display-stats` prints them.
pub fn display_dump(st: &ckpt_dump::DumpStats) -> String {
    format!(
        "Displaying dump stats:\nFreezing time: 0 us\nFrozen time: {} us\n\
         Memory dump time: {} us\nMemory write time: {} us\n\
         Memory pages scanned: {p} ({p:#x})\nMemory pages skipped from parent: 0 (0x0)\n\
         Memory pages written: {p} ({p:#x})\nLazy memory pages: 0 (0x0)\n",
        us(st.frozen_ms),
        us(st.memory_ms),
        us(st.memory_ms),
        p = st.pages,
    )
}

/// The restore's statistics as CRIU's `--display-stats` prints them.
pub fn display_restore(st: &RestoreStats) -> String {
    format!(
        "Displaying restore stats:\nPages compared: 0 (0x0)\nPages skipped COW: 0 (0x0)\n\
         Pages restored: {p} ({p:#x})\nRestore time: {} us\nForking time: {} us\n",
        us(st.restore_ms),
        us(st.forking_ms),
        p = st.pages,
    )
}

/// A restore's measures, for `stats-restore`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreStats {
    /// From the start until every process exists (CRIU's forking time).
    pub forking_ms: f64,
    /// From the start until the tree runs.
    pub restore_ms: f64,
    /// Pages the image held for the tree's memory.
    pub pages: u64,
}

/// Writes `stats-restore` in the work directory (what podman's `restore --print-stats`
/// shows).
pub fn write_restore_stats(work: &Path, st: &RestoreStats) -> std::io::Result<()> {
    let entry = pb::StatsEntry {
        dump: None,
        restore: Some(pb::RestoreStatsEntry {
            pages_compared: 0,
            pages_skipped_cow: 0,
            forking_time: us(st.forking_ms),
            restore_time: us(st.restore_ms),
            pages_restored: Some(st.pages),
        }),
    };
    let body = prost::Message::encode_to_vec(&entry);
    write_image(
        work,
        "stats-restore",
        &[IMG_SERVICE_MAGIC, STATS_MAGIC],
        &[body],
    )
}

/// The pages ckpt's image at `ckpt_dir` stores for its processes' memory (their page
/// runs; an incremental image's pages in earlier images count too).
pub fn pages_in_image(ckpt_dir: &Path) -> u64 {
    let Ok(d) = ImageDir::open_unverified(ckpt_dir) else {
        return 0;
    };
    let index: summary::Index = d.index();
    summary::pids(d.inventory())
        .iter()
        .map(|&p| summary::pages_in_runs(&summary::load_process(&d, &index, p).runs))
        .sum()
}

/// Writes `inventory.img` in `images` (the CRIU images directory, beside ckpt's subdir).
pub fn write_inventory(images: &Path) -> std::io::Result<()> {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next()?.parse::<u64>().ok())
        .map(|s| s * 1_000_000);
    let entry = pb::InventoryEntry {
        img_version: IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        ns_per_id: Some(true),
        dump_uptime: uptime,
        ..Default::default()
    };
    let body = prost::Message::encode_to_vec(&entry);
    write_image(images, "inventory.img", &[INVENTORY_MAGIC], &[body])
}

/// Writes `pstree.img` and a `core-TID.img` for every thread of ckpt's complete image at
/// `ckpt_dir` into `images`.
pub fn write_tree(images: &Path, ckpt_dir: &Path) -> Result<(), String> {
    let d = ImageDir::open_unverified(ckpt_dir).map_err(|e| e.to_string())?;
    let inv = d.inventory();
    let index: summary::Index = d.index();
    // Images of one process from before trees have no tree: the root alone.
    let nodes: Vec<ckpt_images::pb::TreeNode> = if inv.tree.is_empty() {
        vec![ckpt_images::pb::TreeNode {
            pid: inv.root_pid,
            ..Default::default()
        }]
    } else {
        inv.tree.clone()
    };
    let mut pstree = Vec::with_capacity(nodes.len());
    for n in &nodes {
        let core_name = names::core(n.pid);
        let p = (!n.zombie).then(|| summary::load_process(&d, &index, n.pid));
        let (cores, tids) = match p {
            Some(p) => {
                let core = p
                    .core
                    .ok_or_else(|| format!("{core_name}: no ProcessCore ({:?})", p.errors))?;
                cores_of(&core, &p.threads)
            }
            None => (vec![(n.pid, zombie_core(n))], vec![n.pid]),
        };
        for (tid, core) in cores {
            write_image(
                images,
                &format!("core-{tid}.img"),
                &[IMG_COMMON_MAGIC, CORE_MAGIC],
                &[prost::Message::encode_to_vec(&core)],
            )
            .map_err(|e| format!("core-{tid}.img: {e}"))?;
        }
        let root = n.pid == inv.root_pid;
        pstree.push(prost::Message::encode_to_vec(&pb::PstreeEntry {
            pid: n.pid as u32,
            ppid: if root { 0 } else { n.ppid as u32 },
            pgid: n.pgid as u32,
            sid: n.sid as u32,
            threads: tids.iter().map(|&t| t as u32).collect(),
        }));
    }
    write_image(
        images,
        "pstree.img",
        &[IMG_COMMON_MAGIC, PSTREE_MAGIC],
        &pstree,
    )
    .map_err(|e| format!("pstree.img: {e}"))
}

fn march() -> i32 {
    if cfg!(target_arch = "x86_64") {
        pb::core_entry::March::X8664 as i32
    } else if cfg!(target_arch = "aarch64") {
        pb::core_entry::March::Aarch64 as i32
    } else {
        pb::core_entry::March::Unknown as i32
    }
}

/// A zombie's core: its name, dead, its exit status (CRIU's, from /proc's field 52).
fn zombie_core(n: &ckpt_images::pb::TreeNode) -> pb::CoreEntry {
    pb::CoreEntry {
        mtype: march(),
        tc: Some(pb::TaskCoreEntry {
            task_state: TASK_DEAD,
            exit_code: n.exit_status as u32,
            comm: n.comm.clone(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Each thread's core (the leader's first, with the process's part) and the tids.
fn cores_of(
    core: &ckpt_images::pb::ProcessCore,
    threads: &[ckpt_images::pb::ThreadCore],
) -> (Vec<(i32, pb::CoreEntry)>, Vec<i32>) {
    let mut out = Vec::with_capacity(threads.len());
    for (i, t) in threads.iter().enumerate() {
        let thread_core = pb::ThreadCoreEntry {
            futex_rla: t.robust_list,
            futex_rla_len: t.robust_list_len as u32,
            blk_sigset: Some(t.sigmask),
            comm: Some(t.name.clone()),
            ..Default::default()
        };
        let tc = (i == 0).then(|| {
            let stopped = core.stop_signal != 0;
            pb::TaskCoreEntry {
                task_state: if stopped { TASK_STOPPED } else { TASK_ALIVE },
                exit_code: 0,
                personality: core.personality,
                // PF_* flags of /proc's stat: not in ckpt's image.
                flags: 0,
                blk_sigset: t.sigmask,
                comm: core.comm.clone(),
                stop_signo: stopped.then_some(core.stop_signal as u32),
                child_subreaper: Some(core.child_subreaper),
                oom_score_adj: Some(core.oom_score_adj),
                ..Default::default()
            }
        });
        out.push((
            t.tid,
            pb::CoreEntry {
                mtype: march(),
                tc,
                thread_core: Some(thread_core),
                ..Default::default()
            },
        ));
    }
    let tids = threads.iter().map(|t| t.tid).collect();
    (out, tids)
}

#[cfg(test)]
mod tests {
    #[test]
    fn inventory_is_its_magic_and_one_sized_entry() {
        let dir = std::env::temp_dir().join(format!("ckpt-criu-inv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        super::write_inventory(&dir).unwrap();
        let b = std::fs::read(dir.join("inventory.img")).unwrap();
        // CRIU's INVENTORY_MAGIC alone, little-endian ("Veliky Novgorod").
        assert_eq!(&b[..4], &[0x16, 0x31, 0x31, 0x58]);
        let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        assert_eq!(b.len(), 8 + len);
        let e: super::pb::InventoryEntry = prost::Message::decode(&b[8..]).unwrap();
        assert_eq!(e.img_version, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

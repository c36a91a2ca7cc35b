//! A container's ipc namespace contents (ipc.img, ipcshm.img; dump/src/ipc.rs), made
//! again by the root's seed in its fresh ipc namespace before it forks the others: SysV
//! segments with their bytes, semaphore sets with their values, message queues with
//! their messages in order, each under its dumped id (`*_next_id` set before each get)
//! with its key, owner and mode; POSIX queues with their attributes, owner, mode and
//! messages (sent in receive order, so priorities and order within one hold). The
//! puppets attach the segments where they were (`Vma.sysv_shmid`, puppet.rs).

use crate::{RestoreError, R};
use ckpt_images::{names, pb, ImageDir, Kind};
use ckpt_sys::{mqueue, sysvipc};
use std::collections::HashMap;

/// Largest SysV segment an image may ask for.
const MAX_SHM: u64 = 1 << 40;

#[derive(Debug, Default)]
pub struct Plan {
    pub objects: Vec<pb::IpcObject>,
    /// Segment bytes by id.
    pub pieces: HashMap<i32, Vec<pb::ShmPiece>>,
}

impl Plan {
    /// The size of SysV segment `id`, if the image has it.
    pub fn shm_size(&self, id: i32) -> Option<u64> {
        self.objects
            .iter()
            .find(|o| o.kind == pb::IpcKind::IpcShm as i32 && o.id == id)
            .map(|o| o.size)
    }
}

fn bad(dir: &ImageDir, name: &str, why: String) -> RestoreError {
    RestoreError::Refused(format!("{}: {why}", dir.path(name).display()))
}

/// Reads and checks ipc.img and ipcshm.img (none: an empty plan).
pub fn plan(dir: &ImageDir, c: &pb::Container) -> R<Plan> {
    let mut plan = Plan::default();
    if !c.ipc_objects {
        return Ok(plan);
    }
    plan.objects = dir.records(names::IPC, Kind::Ipc)?.rest("IpcObject")?;
    let mut seen = std::collections::HashSet::new();
    for o in &plan.objects {
        let kind = pb::IpcKind::try_from(o.kind)
            .map_err(|_| bad(dir, names::IPC, format!("unknown object kind {}", o.kind)))?;
        let fresh = match kind {
            pb::IpcKind::IpcMqueue => {
                !o.name.is_empty()
                    && !o.name.contains('/')
                    && seen.insert((o.kind, o.name.clone(), 0))
            }
            _ => o.id >= 0 && seen.insert((o.kind, String::new(), o.id)),
        };
        if !fresh || (kind == pb::IpcKind::IpcShm && o.size > MAX_SHM) {
            return Err(bad(
                dir,
                names::IPC,
                format!("object {} ({}) repeated or malformed", o.id, o.name),
            ));
        }
    }
    let pieces: Vec<pb::ShmPiece> = dir
        .records(names::IPC_SHM, Kind::IpcShm)?
        .rest("ShmPiece")?;
    for p in pieces {
        match plan.shm_size(p.id) {
            Some(size)
                if p.offset
                    .checked_add(p.data.len() as u64)
                    .is_some_and(|e| e <= size) =>
            {
                plan.pieces.entry(p.id).or_default().push(p)
            }
            _ => {
                return Err(bad(
                    dir,
                    names::IPC_SHM,
                    format!(
                        "a piece of segment {} at {} lies outside it",
                        p.id, p.offset
                    ),
                ))
            }
        }
    }
    Ok(plan)
}

/// Every attached SysV segment of a process must be one the image makes, whole.
pub fn check_attached(plan: &Plan, pid: i32, vmas: &[pb::Vma]) -> R<()> {
    for v in vmas
        .iter()
        .filter(|v| v.kind == pb::VmaKind::VmaSysvShm as i32)
    {
        let fits = |size: u64| v.pgoff == 0 && v.end - v.start == size.div_ceil(4096) * 4096;
        if v.sysv_external && plan.shm_size(v.sysv_shmid).is_none() {
            external(pid, v, fits)?;
            continue;
        }
        let ok = plan.shm_size(v.sysv_shmid).is_some_and(fits);
        if !ok {
            return Err(RestoreError::Refused(format!(
                "mm-{pid}.img: VMA [{:#x}, {:#x}) attaches SysV segment {} that the \
                 container's ipc.img does not make (or not of that size)",
                v.start, v.end, v.sysv_shmid
            )));
        }
    }
    Ok(())
}

/// A host process's segment (`Vma.sysv_external`): still there, in ckpt's ipc namespace,
/// with the key and size it had, not removed. It is attached again as it is now.
fn external(pid: i32, v: &pb::Vma, fits: impl Fn(u64) -> bool) -> R<()> {
    let what = || {
        format!(
            "pid {pid}: VMA [{:#x}, {:#x}) attaches System V segment {} (key {:#x})",
            v.start, v.end, v.sysv_shmid, v.sysv_key
        )
    };
    let (perm, size, _) = sysvipc::shm_stat(v.sysv_shmid).map_err(|e| {
        RestoreError::Refused(format!(
            "{}, which is not here ({e}): it lives outside the images, in the host's ipc \
             namespace; restore where it still exists",
            what()
        ))
    })?;
    if perm.key != v.sysv_key || !fits(size) || perm.mode & sysvipc::SHM_DEST != 0 {
        return Err(RestoreError::Refused(format!(
            "{}: the segment with that id now has key {:#x}, {size} bytes{}: not the one \
             the process had",
            what(),
            perm.key,
            if perm.mode & sysvipc::SHM_DEST != 0 {
                ", removed"
            } else {
                ""
            }
        )));
    }
    Ok(())
}

/// In the root's seed (its fresh ipc namespace): every object.
pub fn create_all(plan: &Plan) -> Result<(), String> {
    for o in &plan.objects {
        let p = sysvipc::Perm {
            key: o.key,
            uid: o.uid,
            gid: o.gid,
            mode: o.mode,
        };
        let msgs = || -> Vec<(i64, Vec<u8>)> {
            o.messages
                .iter()
                .map(|m| (m.mtype, m.data.clone()))
                .collect()
        };
        let done = match pb::IpcKind::try_from(o.kind) {
            Ok(pb::IpcKind::IpcShm) => sysvipc::shm_create(o.id, &p, o.size).and_then(|()| {
                for piece in plan.pieces.get(&o.id).into_iter().flatten() {
                    sysvipc::shm_write(o.id, piece.offset, &piece.data, o.size)?;
                }
                Ok(())
            }),
            Ok(pb::IpcKind::IpcSem) => {
                let v: Vec<u16> = o.sem_values.iter().map(|&v| v as u16).collect();
                sysvipc::sem_create(o.id, &p, &v)
            }
            Ok(pb::IpcKind::IpcMsg) => sysvipc::msg_create(o.id, &p, o.qbytes, &msgs()),
            Ok(pb::IpcKind::IpcMqueue) => {
                let q = mqueue::MqInfo {
                    name: o.name.clone(),
                    mode: o.mode,
                    uid: o.uid,
                    gid: o.gid,
                    maxmsg: o.mq_maxmsg,
                    msgsize: o.mq_msgsize,
                    ..Default::default()
                };
                let m: Vec<(u32, Vec<u8>)> =
                    msgs().into_iter().map(|(t, d)| (t as u32, d)).collect();
                mqueue::create(&q, &m)
            }
            Err(_) => Ok(()),
        };
        done.map_err(|e| format!("its ipc namespace: {e}"))?;
    }
    Ok(())
}

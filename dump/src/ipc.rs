//! A container's ipc namespace: its System V objects (the ids /proc/sysvipc/* lists)
//! and its POSIX message queues (`ckpt_sys::mqueue`, held open or not), read on a ckpt
//! thread that joined the namespace. `blockers` only looks (for `check -t` and before
//! the seize); `write`, with the tree stopped, reads everything into ipc.img (objects,
//! messages) and ipcshm.img (the segments' bytes, pieces that are not all zeros).
//! Refused by name: a segment marked for removal (IPC_RMID while attached: no key or id
//! can name it again) or locked (SHM_LOCK), a POSIX queue a process asked to be
//! notified by (mq_notify: the dump's refill would fire it). Not seen by any kernel
//! interface, and so not restored: semaphore undo adjustments (SEM_UNDO) of the tasks.

use crate::blockers::Blockers;
use ckpt_images::{names, pb, ImageSink, Kind};
use ckpt_sys::{mqueue, ns, sysvipc, Pid};

/// Largest piece of a segment in one record.
const PIECE: usize = 1 << 20;

fn what(kind: &str, key: i32, id: i32) -> String {
    format!("{kind} key {key:#x} id {id} (its ipc namespace)")
}

/// What the restore cannot rebuild in `root`'s ipc namespace.
pub fn blockers(root: Pid, out: &mut Blockers) {
    let found = ns::in_namespace_of(root, "ipc", || -> ckpt_sys::Result<Vec<(String, &str)>> {
        let mut bad = Vec::new();
        for id in sysvipc::ids("shm")? {
            let (p, _, _) = sysvipc::shm_stat(id)?;
            if p.mode & sysvipc::SHM_DEST != 0 {
                bad.push((
                    what("SysV shared memory", p.key, id),
                    "marked for removal while attached; not restored",
                ));
            } else if p.mode & sysvipc::SHM_LOCKED != 0 {
                bad.push((
                    what("SysV shared memory", p.key, id),
                    "locked in memory (SHM_LOCK); not restored yet",
                ));
            }
        }
        for q in mqueue::list()? {
            if q.notify_pid != 0 {
                bad.push((
                    format!("POSIX message queue /{} (its ipc namespace)", q.name),
                    "a process is registered for its notification (mq_notify); not \
                     restored yet",
                ));
            }
        }
        Ok(bad)
    });
    match found {
        Ok(Ok(bad)) => {
            for (w, why) in bad {
                out.push(root, w, why);
            }
        }
        Ok(Err(e)) | Err(e) => out.push(root, "its ipc namespace", e.to_string()),
    }
}

/// Every object of `root`'s ipc namespace and the segments' bytes.
fn read_all(root: Pid) -> ckpt_sys::Result<(Vec<pb::IpcObject>, Vec<pb::ShmPiece>)> {
    ns::in_namespace_of(root, "ipc", || {
        let mut objects = Vec::new();
        let mut pieces = Vec::new();
        let base = |kind: pb::IpcKind, id: i32, p: sysvipc::Perm| pb::IpcObject {
            kind: kind as i32,
            id,
            key: p.key,
            uid: p.uid,
            gid: p.gid,
            mode: p.mode & 0o777,
            ..Default::default()
        };
        for id in sysvipc::ids("shm")? {
            let (p, size, _) = sysvipc::shm_stat(id)?;
            let bytes = sysvipc::shm_read(id, size)?;
            for (i, c) in bytes.chunks(PIECE).enumerate() {
                if c.iter().any(|&b| b != 0) {
                    pieces.push(pb::ShmPiece {
                        id,
                        offset: (i * PIECE) as u64,
                        data: c.to_vec(),
                    });
                }
            }
            objects.push(pb::IpcObject {
                size,
                ..base(pb::IpcKind::IpcShm, id, p)
            });
        }
        for id in sysvipc::ids("sem")? {
            let (p, values) = sysvipc::sem_stat(id)?;
            objects.push(pb::IpcObject {
                sem_values: values.into_iter().map(u32::from).collect(),
                ..base(pb::IpcKind::IpcSem, id, p)
            });
        }
        for id in sysvipc::ids("msg")? {
            let (p, qbytes, msgs) = sysvipc::msg_stat(id)?;
            objects.push(pb::IpcObject {
                qbytes,
                messages: msgs
                    .into_iter()
                    .map(|(mtype, data)| pb::IpcMessage { mtype, data })
                    .collect(),
                ..base(pb::IpcKind::IpcMsg, id, p)
            });
        }
        for q in mqueue::list()? {
            let msgs = mqueue::messages(&q)?;
            objects.push(pb::IpcObject {
                kind: pb::IpcKind::IpcMqueue as i32,
                name: q.name,
                uid: q.uid,
                gid: q.gid,
                mode: q.mode,
                mq_maxmsg: q.maxmsg,
                mq_msgsize: q.msgsize,
                messages: msgs
                    .into_iter()
                    .map(|(prio, data)| pb::IpcMessage {
                        mtype: prio as i64,
                        data,
                    })
                    .collect(),
                ..Default::default()
            });
        }
        Ok((objects, pieces))
    })?
}

/// Writes ipc.img and ipcshm.img (the tree is stopped); whether there was any object.
pub fn write(root: Pid, sink: &mut ImageSink) -> Result<bool, crate::DumpError> {
    let (objects, pieces) = read_all(root)?;
    if objects.is_empty() {
        return Ok(false);
    }
    let mut w = sink.records(names::IPC, Kind::Ipc)?;
    for o in &objects {
        w.write(o)?;
    }
    sink.commit_records(names::IPC, w)?;
    let mut w = sink.records(names::IPC_SHM, Kind::IpcShm)?;
    for p in &pieces {
        w.write(p)?;
    }
    sink.commit_records(names::IPC_SHM, w)?;
    Ok(true)
}

//! System V IPC objects of the calling thread's ipc namespace (a thread joins one with
//! setns(2) on its own, `ns::in_namespace_of`): read at dump (IPC_STAT, GETALL, a
//! segment's bytes through a read-only shmat, a queue's messages by MSG_COPY, which
//! leaves them queued), made again at restore with the same ids (the namespace's
//! `*_next_id` sysctl, set just before each get).

use crate::error::{Error, Result};
use nix::errno::Errno;

/// msgrcv(2): copy the message at index `msgtyp` without removing it (needs
/// CONFIG_CHECKPOINT_RESTORE).
const MSG_COPY: libc::c_int = 0o40000;
/// shmid_ds mode bits: marked for removal, locked in memory.
pub const SHM_DEST: u32 = 0o1000;
pub const SHM_LOCKED: u32 = 0o2000;

/// Key, owner and mode of one object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Perm {
    pub key: i32,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

fn perm(p: &libc::ipc_perm) -> Perm {
    Perm {
        key: p.__key,
        uid: p.uid,
        gid: p.gid,
        mode: p.mode as u32,
    }
}

/// The ids column of /proc/sysvipc/`table` (shm, sem, msg), as the calling thread's
/// ipc namespace has them.
pub fn ids(table: &str) -> Result<Vec<i32>> {
    let path = format!("/proc/sysvipc/{table}");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.lines()
        .skip(1)
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| Error::Other(format!("{path}: bad line {l:?}")))
        })
        .collect()
}

/// A shared memory segment: (perm, size in bytes, attach count).
pub fn shm_stat(id: i32) -> Result<(Perm, u64, u64)> {
    // SAFETY: shmid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one shmid_ds into `ds`.
    let r = unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) };
    Errno::result(r).map_err(|e| Error::sys(format!("shmctl({id}, IPC_STAT)"), e))?;
    Ok((perm(&ds.shm_perm), ds.shm_segsz as u64, ds.shm_nattch))
}

/// Runs `f` on the segment `id` attached at an address of the kernel's choice
/// (read-only unless `write`), detached afterwards.
fn with_attached<T>(id: i32, write: bool, f: impl FnOnce(*mut u8) -> T) -> Result<T> {
    let flags = if write { 0 } else { libc::SHM_RDONLY };
    // SAFETY: shmat maps a new region of `size` bytes at an address the kernel picks
    // (no fixed address: nothing of ours is replaced), or returns (void *)-1.
    let p = unsafe { libc::shmat(id, std::ptr::null(), flags) };
    if p as isize == -1 {
        return Err(Error::sys(format!("shmat({id})"), Errno::last()));
    }
    let out = f(p.cast());
    // SAFETY: `p` is the address shmat returned; nothing refers to it after `f`.
    unsafe { libc::shmdt(p) };
    Ok(out)
}

/// The bytes of segment `id` (`size` of them).
pub fn shm_read(id: i32, size: u64) -> Result<Vec<u8>> {
    with_attached(id, false, |p| {
        // SAFETY: the segment is mapped at `p` for at least `size` bytes and readable.
        unsafe { std::slice::from_raw_parts(p, size as usize) }.to_vec()
    })
}

/// Writes `data` at `offset` into segment `id`.
pub fn shm_write(id: i32, offset: u64, data: &[u8], size: u64) -> Result<()> {
    if offset + data.len() as u64 > size {
        return Err(Error::Other(format!(
            "shm {id}: {} bytes at {offset} overrun its {size}",
            data.len()
        )));
    }
    with_attached(id, true, |p| {
        // SAFETY: the segment is mapped writable at `p` for `size` bytes; the range was
        // checked above.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p.add(offset as usize), data.len()) }
    })
}

/// A semaphore set: (perm, the values).
pub fn sem_stat(id: i32) -> Result<(Perm, Vec<u16>)> {
    // SAFETY: semid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one semid_ds through the pointer passed as the union arg.
    let r = unsafe { libc::semctl(id, 0, libc::IPC_STAT, &mut ds as *mut libc::semid_ds) };
    Errno::result(r).map_err(|e| Error::sys(format!("semctl({id}, IPC_STAT)"), e))?;
    let mut values = vec![0u16; ds.sem_nsems as usize];
    // SAFETY: GETALL writes sem_nsems unsigned shorts into `values`, which has as many.
    let r = unsafe { libc::semctl(id, 0, libc::GETALL, values.as_mut_ptr()) };
    Errno::result(r).map_err(|e| Error::sys(format!("semctl({id}, GETALL)"), e))?;
    Ok((perm(&ds.sem_perm), values))
}

/// Messages as (type, bytes), in queue order.
pub type Messages = Vec<(i64, Vec<u8>)>;

/// A message queue: (perm, its byte limit, its messages).
pub fn msg_stat(id: i32) -> Result<(Perm, u64, Messages)> {
    // SAFETY: msqid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT writes one msqid_ds into `ds`.
    let r = unsafe { libc::msgctl(id, libc::IPC_STAT, &mut ds) };
    Errno::result(r).map_err(|e| Error::sys(format!("msgctl({id}, IPC_STAT)"), e))?;
    let max = ds.__msg_cbytes as usize;
    let mut buf = vec![0u8; 8 + max.max(1)];
    let mut out = Vec::with_capacity(ds.msg_qnum as usize);
    for i in 0..ds.msg_qnum {
        // SAFETY: msgrcv writes a long type and at most `max` bytes into `buf`, which
        // holds 8 + max bytes.
        let n = unsafe {
            libc::msgrcv(
                id,
                buf.as_mut_ptr().cast(),
                max,
                i as libc::c_long,
                libc::IPC_NOWAIT | MSG_COPY,
            )
        };
        let n = Errno::result(n)
            .map_err(|e| Error::sys(format!("msgrcv({id}, MSG_COPY of message {i})"), e))?;
        let mtype = i64::from_ne_bytes(buf[..8].try_into().expect("8 bytes"));
        out.push((mtype, buf[8..8 + n as usize].to_vec()));
    }
    Ok((perm(&ds.msg_perm), ds.msg_qbytes, out))
}

/// The next object of `table` (shm, sem, msg) made in the calling thread's ipc namespace
/// gets id `id`.
fn next_id(table: &str, id: i32) -> Result<()> {
    let path = format!("/proc/sys/kernel/{table}_next_id");
    std::fs::write(&path, id.to_string()).map_err(|e| Error::io(&path, e))
}

fn check_id(what: &str, want: i32, got: libc::c_int) -> Result<()> {
    let got = Errno::result(got).map_err(|e| Error::sys(format!("{what} with id {want}"), e))?;
    if got != want {
        return Err(Error::Other(format!("{what}: got id {got}, not {want}")));
    }
    Ok(())
}

fn set_perm_shm(id: i32, p: &Perm) -> Result<()> {
    // SAFETY: shmid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    ds.shm_perm.uid = p.uid;
    ds.shm_perm.gid = p.gid;
    ds.shm_perm.mode = (p.mode & 0o777) as libc::c_ushort;
    // SAFETY: IPC_SET reads uid, gid and mode from the shmid_ds we own.
    let r = unsafe { libc::shmctl(id, libc::IPC_SET, &mut ds) };
    Errno::result(r)
        .map(drop)
        .map_err(|e| Error::sys(format!("shmctl({id}, IPC_SET)"), e))
}

/// Makes segment `id` with its key, size, owner and mode.
pub fn shm_create(id: i32, p: &Perm, size: u64) -> Result<()> {
    next_id("shm", id)?;
    // SAFETY: shmget takes plain values.
    let r = unsafe {
        libc::shmget(
            p.key,
            size as usize,
            libc::IPC_CREAT | libc::IPC_EXCL | (p.mode & 0o777) as libc::c_int,
        )
    };
    check_id("shmget", id, r)?;
    set_perm_shm(id, p)
}

/// Makes semaphore set `id` with its key, owner, mode and values.
pub fn sem_create(id: i32, p: &Perm, values: &[u16]) -> Result<()> {
    next_id("sem", id)?;
    // SAFETY: semget takes plain values.
    let r = unsafe {
        libc::semget(
            p.key,
            values.len() as libc::c_int,
            libc::IPC_CREAT | libc::IPC_EXCL | (p.mode & 0o777) as libc::c_int,
        )
    };
    check_id("semget", id, r)?;
    let mut v = values.to_vec();
    // SAFETY: SETALL reads nsems unsigned shorts from `v`, which holds exactly that many.
    let r = unsafe { libc::semctl(id, 0, libc::SETALL, v.as_mut_ptr()) };
    Errno::result(r).map_err(|e| Error::sys(format!("semctl({id}, SETALL)"), e))?;
    // SAFETY: semid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
    ds.sem_perm.uid = p.uid;
    ds.sem_perm.gid = p.gid;
    ds.sem_perm.mode = (p.mode & 0o777) as libc::c_ushort;
    // SAFETY: IPC_SET reads uid, gid and mode through the pointer passed as the union arg.
    let r = unsafe { libc::semctl(id, 0, libc::IPC_SET, &mut ds as *mut libc::semid_ds) };
    Errno::result(r)
        .map(drop)
        .map_err(|e| Error::sys(format!("semctl({id}, IPC_SET)"), e))
}

/// Makes message queue `id` with its key, owner, mode and byte limit, and sends it
/// `messages` in order.
pub fn msg_create(id: i32, p: &Perm, qbytes: u64, messages: &[(i64, Vec<u8>)]) -> Result<()> {
    next_id("msg", id)?;
    // SAFETY: msgget takes plain values.
    let r = unsafe {
        libc::msgget(
            p.key,
            libc::IPC_CREAT | libc::IPC_EXCL | (p.mode & 0o777) as libc::c_int,
        )
    };
    check_id("msgget", id, r)?;
    // SAFETY: msqid_ds is plain data; zeroed is a valid value.
    let mut ds: libc::msqid_ds = unsafe { std::mem::zeroed() };
    ds.msg_perm.uid = p.uid;
    ds.msg_perm.gid = p.gid;
    ds.msg_perm.mode = (p.mode & 0o777) as libc::c_ushort;
    ds.msg_qbytes = qbytes;
    // SAFETY: IPC_SET reads uid, gid, mode and qbytes from the msqid_ds we own.
    let r = unsafe { libc::msgctl(id, libc::IPC_SET, &mut ds) };
    Errno::result(r).map_err(|e| Error::sys(format!("msgctl({id}, IPC_SET)"), e))?;
    for (mtype, data) in messages {
        let mut buf = Vec::with_capacity(8 + data.len());
        buf.extend_from_slice(&mtype.to_ne_bytes());
        buf.extend_from_slice(data);
        // SAFETY: msgsnd reads a long type and data.len() bytes from `buf`.
        let r = unsafe { libc::msgsnd(id, buf.as_ptr().cast(), data.len(), libc::IPC_NOWAIT) };
        Errno::result(r).map_err(|e| Error::sys(format!("msgsnd({id})"), e))?;
    }
    Ok(())
}

//! The address space: MmInfo, one Vma per mapping, and the vDSO block.

use crate::blockers::Blocker;
use crate::remote::Injected;
use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::proc::{self, Mapping, Stat};
use ckpt_sys::{mem, Pid};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

const MADV_RANDOM: u32 = 1;
const MADV_SEQUENTIAL: u32 = 2;
const MADV_DONTFORK: u32 = 10;
const MADV_MERGEABLE: u32 = 12;
const MADV_HUGEPAGE: u32 = 14;
const MADV_NOHUGEPAGE: u32 = 15;
const MADV_DONTDUMP: u32 = 16;
const MADV_WIPEONFORK: u32 = 18;

/// A System V segment attached by a process outside a container's own ipc namespace:
/// supported as an external object when the process shares ckpt's ipc namespace (the
/// restore attaches it again by id) and the segment is not removed already (IPC_RMID
/// while attached: it dies with the last detach, the dump's kill). The reason otherwise.
pub fn external_sysv(pid: Pid, m: &Mapping, in_container: bool) -> Result<(), String> {
    let mine = ckpt_sys::ns::ns_id(ckpt_sys::Pid::this(), "ipc").ok();
    if in_container || ckpt_sys::ns::ns_id(pid, "ipc").ok() != mine {
        return Err(
            "System V shared memory of an ipc namespace the tree does not own \
                    (nor ckpt's); not supported yet"
                .into(),
        );
    }
    let id = m.inode as i32;
    let (perm, _, _) =
        ckpt_sys::sysvipc::shm_stat(id).map_err(|e| format!("System V segment {id}: {e}"))?;
    if perm.mode & ckpt_sys::sysvipc::SHM_DEST != 0 {
        return Err(format!(
            "System V segment {id} was removed (IPC_RMID) while attached: it is destroyed \
             when its last process detaches, so it could not be attached again; not \
             supported yet"
        ));
    }
    Ok(())
}

/// VmFlags of smaps and the madvise() that sets each.
const MADVISE_FLAGS: [(&str, u32); 8] = [
    ("sr", MADV_SEQUENTIAL),
    ("rr", MADV_RANDOM),
    ("hg", MADV_HUGEPAGE),
    ("nh", MADV_NOHUGEPAGE),
    ("dc", MADV_DONTFORK),
    ("dd", MADV_DONTDUMP),
    ("wf", MADV_WIPEONFORK),
    ("mg", MADV_MERGEABLE),
];

/// VmFlags of smaps and the mmap() flag that sets each (MAP_DROPPABLE, 6.11+, is a
/// mapping type of its own: restore maps it instead of MAP_PRIVATE).
pub const MAP_NORESERVE: u32 = 0x4000;
pub const MAP_DROPPABLE: u32 = 0x08;
const MMAP_FLAGS: [(&str, u32); 2] = [("nr", MAP_NORESERVE), ("dp", MAP_DROPPABLE)];

/// The kernel's special mappings we do not dump as memory.
pub const VDSO_PARTS: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vdso]"];
const VSYSCALL: &str = "[vsyscall]";

/// What a mapping is to the dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Part of the vDSO block: recorded in MmInfo, not as a Vma.
    VdsoPart,
    /// [vsyscall]: the same on every x86-64 process, not dumped.
    Vsyscall,
    Vma(pb::VmaKind),
}

/// Sorts one mapping, or says (naming pid and mapping) why this version cannot dump it.
pub fn classify(pid: Pid, m: &Mapping) -> Result<Class, Blocker> {
    let no = |why: &str| Blocker {
        pid: pid.as_raw(),
        what: format!(
            "mapping {:#x}-{:#x} {}",
            m.start,
            m.end,
            if m.name.is_empty() {
                "(anonymous)"
            } else {
                &m.name
            }
        ),
        why: why.to_string(),
    };
    if VDSO_PARTS.contains(&m.name.as_str()) {
        return Ok(Class::VdsoPart);
    }
    if m.name == VSYSCALL {
        return Ok(Class::Vsyscall);
    }
    if m.has_flag("io") || m.has_flag("pf") {
        return Err(no("a device (I/O or PFN) mapping; not supported yet"));
    }
    let file = m.is_file();
    if m.shared {
        // A System V segment ("/SYSV<key>", "(deleted)" when its key is IPC_PRIVATE; its
        // inode is its id, 0 for the first one of a namespace, so not `file`):
        // restored by attaching it again, in a container's own ipc namespace only
        // (`validate.rs` refuses the others).
        if m.name.starts_with("/SYSV") {
            if m.offset != 0 {
                return Err(no("part of a System V segment (not from its start)"));
            }
            return Ok(Class::Vma(pb::VmaKind::VmaSysvShm));
        }
        if file && m.deleted {
            if m.name == "/dev/zero" {
                return Ok(Class::Vma(pb::VmaKind::VmaAnonShared));
            }
            // A memfd is shmem like shared anonymous memory: its pages go in the image and
            // restore gives every mapping of it one new memfd (`Vma.shm_id`).
            if m.name.starts_with("/memfd:") {
                if m.has_flag("ht") {
                    return Err(no("a hugetlb memfd; not supported yet"));
                }
                return Ok(Class::Vma(pb::VmaKind::VmaAnonShared));
            }
            if m.name == "/[aio]" {
                return Err(no(
                    "the ring of an AIO context (io_setup); not supported yet",
                ));
            }
            return Err(no("a deleted file; not supported yet"));
        }
        if file {
            return Ok(Class::Vma(pb::VmaKind::VmaFileShared));
        }
        if m.name.starts_with("[anon_shmem") {
            return Ok(Class::Vma(pb::VmaKind::VmaAnonShared));
        }
        return Err(no("a shared mapping of unknown kind; not supported yet"));
    }
    if file {
        if m.deleted {
            return Err(no("a deleted file; not supported yet"));
        }
        return Ok(Class::Vma(pb::VmaKind::VmaFilePrivate));
    }
    if m.inode == 0
        && (m.name.is_empty()
            || m.name == "[heap]"
            || m.name == "[stack]"
            || m.name.starts_with("[anon:"))
    {
        return Ok(Class::Vma(pb::VmaKind::VmaAnon));
    }
    Err(no("not supported yet"))
}

/// One Vma record, with what the memory dump needs beside it.
pub struct VmaInfo {
    pub vma: pb::Vma,
    pub readable: bool,
    /// Byte offset of the mapping in its shmem object (shared anonymous memory).
    pub shm_offset: u64,
}

impl VmaInfo {
    pub fn kind(&self) -> pb::VmaKind {
        self.vma.kind()
    }
}

/// The vDSO block as found in the task.
#[derive(Default)]
pub struct Vdso {
    pub parts: Vec<pb::SpecialMapping>,
    pub block_start: u64,
    pub block_len: u64,
    /// The [vdso] mapping itself: (start, bytes).
    pub code: Option<(u64, Vec<u8>)>,
    pub xxh3: u64,
}

pub struct Mm {
    pub vmas: Vec<VmaInfo>,
    pub vdso: Vdso,
    stat: StatMm,
    auxv: Vec<u8>,
    exe_path: String,
}

/// The MmInfo fields /proc/PID/stat gives.
struct StatMm {
    start_code: u64,
    end_code: u64,
    start_data: u64,
    end_data: u64,
    start_brk: u64,
    start_stack: u64,
    arg_start: u64,
    arg_end: u64,
    env_start: u64,
    env_end: u64,
}

impl Mm {
    /// MmInfo, with brk from the injected brk(0).
    pub fn info(&self, inj: &Injected) -> pb::MmInfo {
        let s = &self.stat;
        pb::MmInfo {
            start_code: s.start_code,
            end_code: s.end_code,
            start_data: s.start_data,
            end_data: s.end_data,
            start_brk: s.start_brk,
            brk: inj.brk,
            start_stack: s.start_stack,
            arg_start: s.arg_start,
            arg_end: s.arg_end,
            env_start: s.env_start,
            env_end: s.env_end,
            auxv: self.auxv.clone(),
            exe_path: self.exe_path.clone(),
            vdso_block_start: self.vdso.block_start,
            vdso_block_len: self.vdso.block_len,
            vdso_parts: self.vdso.parts.clone(),
            mlockall: inj.mlockall,
        }
    }
}

/// Where the paths /proc/PID/maps shows for `pid` start. The kernel writes them as seen
/// from the reader's root (ckpt's) when the file is reachable from it, which it is from
/// the same mount namespace: a chrooted process's libraries outside its root show with
/// their host paths, so its /proc/PID/root must not be put in front. A file of another
/// mount namespace (a container's) shows as seen from that namespace's root, which is the
/// process's root unless it chrooted inside the container.
fn paths_root(pid: Pid) -> String {
    let mine = ckpt_sys::ns::ns_id(Pid::this(), "mnt");
    match (mine, ckpt_sys::ns::ns_id(pid, "mnt")) {
        (Ok(a), Ok(b)) if a == b => String::new(),
        _ => format!("/proc/{pid}/root"),
    }
}

pub fn collect(pid: Pid, stat: &Stat, maps: &[Mapping]) -> Result<Mm, DumpError> {
    let mut vmas = Vec::new();
    let mut vdso = Vdso::default();
    // Identity of each mapped path, looked up once ((ino, size, mtime_ns)).
    let mut files: HashMap<&str, (u64, u64, i64)> = HashMap::new();
    let root = paths_root(pid);
    for m in maps {
        let kind = match classify(pid, m)? {
            Class::Vsyscall => continue,
            Class::VdsoPart => {
                vdso.parts.push(pb::SpecialMapping {
                    name: m.name.clone(),
                    start: m.start,
                    end: m.end,
                });
                continue;
            }
            Class::Vma(k) => k,
        };
        let mut vma = pb::Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            kind: kind as i32,
            pgoff: m.offset,
            growsdown: m.has_flag("gd"),
            madvise: MADVISE_FLAGS
                .iter()
                .filter(|(f, _)| m.has_flag(f))
                .map(|&(_, a)| a)
                .collect(),
            name: if m.deleted {
                format!("{} (deleted)", m.name)
            } else {
                m.name.clone()
            },
            anon_huge_bytes: Some(m.anon_huge_kib * 1024),
            map_flags: MMAP_FLAGS
                .iter()
                .filter(|(f, _)| m.has_flag(f))
                .fold(0, |acc, &(_, v)| acc | v),
            vm_flags: m.vm_flags.join(" "),
            ..Default::default()
        };
        if matches!(
            kind,
            pb::VmaKind::VmaFilePrivate | pb::VmaKind::VmaFileShared
        ) {
            let (ino, size, mtime_ns) = match files.get(m.name.as_str()) {
                Some(&v) => v,
                None => {
                    let at = format!("{root}{}", m.name);
                    let meta = std::fs::metadata(&at).map_err(|e| {
                        refuse(format!(
                            "pid {pid}: mapped file {} cannot be opened by path: {e}",
                            m.name
                        ))
                    })?;
                    let v = (
                        meta.ino(),
                        meta.size(),
                        meta.mtime() * 1_000_000_000 + meta.mtime_nsec(),
                    );
                    files.insert(&m.name, v);
                    v
                }
            };
            if ino != m.inode {
                return Err(refuse(format!(
                    "pid {pid}: file {} replaced since mapped (inode {} now, {} mapped)",
                    m.name, ino, m.inode
                )));
            }
            vma.path = m.name.clone();
            vma.file_size = size;
            vma.file_mtime_ns = mtime_ns;
            let writable_shared =
                kind == pb::VmaKind::VmaFileShared && (m.write || m.has_flag("mw"));
            vma.open_flags = if writable_shared {
                libc::O_RDWR as u32
            } else {
                libc::O_RDONLY as u32
            };
        }
        vma.mlock = match (m.has_flag("lo"), m.has_flag("lf")) {
            (false, _) => 0,
            (true, false) => 1,
            (true, true) => 2,
        };
        if kind == pb::VmaKind::VmaSysvShm {
            // /proc/PID/maps shows a SysV segment's id as its inode.
            vma.sysv_shmid = m.inode as i32;
            // One of ckpt's own ipc namespace (validate.rs let no other through but a
            // container's own): external, found again by id, key and size.
            if ckpt_sys::ns::ns_id(pid, "ipc").ok()
                == ckpt_sys::ns::ns_id(ckpt_sys::Pid::this(), "ipc").ok()
            {
                let (perm, _, _) = ckpt_sys::sysvipc::shm_stat(vma.sysv_shmid)?;
                vma.sysv_external = true;
                vma.sysv_key = perm.key;
            }
        }
        if kind == pb::VmaKind::VmaAnonShared {
            // One shmem object per inode: the VMAs of a split or twice mapped object
            // share it (pgoff places each in it).
            vma.shm_id = m.inode;
        }
        vmas.push(VmaInfo {
            vma,
            readable: m.read,
            shm_offset: m.offset,
        });
    }
    vdso_block(pid, maps, &mut vdso)?;

    let auxv = proc::read_bytes(&format!("/proc/{pid}/auxv"))?;
    let exe_path = proc::read_link(&format!("/proc/{pid}/exe"))?
        .to_string_lossy()
        .into_owned();
    let st = StatMm {
        start_code: stat.startcode,
        end_code: stat.endcode,
        start_data: stat.start_data.unwrap_or(0),
        end_data: stat.end_data.unwrap_or(0),
        start_brk: stat.start_brk.unwrap_or(0),
        start_stack: stat.startstack,
        arg_start: stat.arg_start.unwrap_or(0),
        arg_end: stat.arg_end.unwrap_or(0),
        env_start: stat.env_start.unwrap_or(0),
        env_end: stat.env_end.unwrap_or(0),
    };
    Ok(Mm {
        vmas,
        vdso,
        stat: st,
        auxv,
        exe_path,
    })
}

/// Reads the vDSO layout as the task has it: the parts present, back to back (refused
/// otherwise), and the bytes of [vdso] (for its checksum and a `syscall` to inject by).
fn vdso_block(pid: Pid, maps: &[Mapping], vdso: &mut Vdso) -> Result<(), DumpError> {
    vdso.parts.sort_by_key(|p| p.start);
    let Some(first) = vdso.parts.first() else {
        return Ok(());
    };
    for w in vdso.parts.windows(2) {
        if w[0].end != w[1].start {
            let list: Vec<String> = vdso
                .parts
                .iter()
                .map(|p| format!("{} {:#x}-{:#x}", p.name, p.start, p.end))
                .collect();
            return Err(refuse(format!(
                "pid {pid}: the vDSO parts are not contiguous ({}); not supported",
                list.join(", ")
            )));
        }
    }
    vdso.block_start = first.start;
    vdso.block_len = vdso.parts.last().map(|p| p.end).unwrap_or(first.end) - first.start;
    if let Some(m) = maps.iter().find(|m| m.name == "[vdso]") {
        let mut bytes = vec![0u8; m.len() as usize];
        if mem::read(pid, m.start, &mut bytes).is_err() {
            mem::peek(pid, m.start, &mut bytes)?;
        }
        vdso.xxh3 = ckpt_images::hash::xxh3_64(&bytes);
        vdso.code = Some((m.start, bytes));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(line: &str, flags: &str) -> Mapping {
        let text = format!("{line}\nVmFlags: {flags}\n");
        proc::parse_smaps(&text).unwrap().remove(0)
    }

    #[test]
    fn classifies_the_usual_mappings() {
        let pid = Pid::from_raw(1);
        let c = |l, f| classify(pid, &map(l, f)).map_err(|e| e.to_string());
        use pb::VmaKind::*;
        assert_eq!(
            c("5555-6666 rw-p 00000000 00:00 0  [heap]", "rd wr"),
            Ok(Class::Vma(VmaAnon))
        );
        assert_eq!(
            c("5555-6666 r-xp 00001000 fe:00 42  /usr/bin/x", "rd ex"),
            Ok(Class::Vma(VmaFilePrivate))
        );
        assert_eq!(
            c("5555-6666 rw-s 00000000 fe:00 42  /tmp/f", "rd wr sh"),
            Ok(Class::Vma(VmaFileShared))
        );
        assert_eq!(
            c(
                "5555-6666 rw-s 00000000 00:01 7  /dev/zero (deleted)",
                "rd wr sh"
            ),
            Ok(Class::Vma(VmaAnonShared))
        );
        assert_eq!(
            c("5555-6666 r-xp 00000000 00:00 0  [vdso]", "rd ex"),
            Ok(Class::VdsoPart)
        );
        assert_eq!(
            c(
                "5555-6666 rw-s 00002000 00:01 8  /memfd:buf (deleted)",
                "rd wr sh"
            ),
            Ok(Class::Vma(VmaAnonShared))
        );
        let e = c(
            "5555-6666 rw-s 00000000 00:10 8  /memfd:huge (deleted)",
            "rd wr sh ht",
        )
        .unwrap_err();
        assert!(e.contains("hugetlb"), "{e}");
        let e = c(
            "5555-6666 rw-p 00000000 fe:00 42  /tmp/gone (deleted)",
            "rd wr",
        )
        .unwrap_err();
        assert!(e.contains("deleted file") && e.contains("/tmp/gone"), "{e}");
        // A SysV segment is attached again (in a container's own ipc namespace only:
        // validate.rs refuses the others), whole: a part of one is refused.
        assert_eq!(
            c(
                "5555-6666 rw-s 00000000 00:01 0  /SYSV00000000 (deleted)",
                "rd wr sh"
            ),
            Ok(Class::Vma(VmaSysvShm))
        );
        let e = c("5555-6666 rw-s 00001000 00:01 9  /SYSV0000abcd", "rd wr sh").unwrap_err();
        assert!(e.contains("System V"), "{e}");
    }
}

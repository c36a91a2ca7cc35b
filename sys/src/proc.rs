//! /proc readers. The procfs crate parses stat and status; what it does not give exactly
//! (smaps with the vDSO's split names, pagemap in bulk, fdinfo) is parsed here.

use crate::error::{Error, Result};
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

pub use procfs::process::{Stat, Status};

fn read_string(path: &str) -> Result<String> {
    String::from_utf8(read_bytes(path)?).map_err(|e| {
        Error::io(
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
        )
    })
}

/// A /proc file's bytes: open, read to the end, close. (`std::fs::read` first asks fstat
/// for a size hint, which /proc files do not give: a syscall per read for nothing, and a
/// dump of 100 processes reads ~3000 of them.)
fn read_proc(path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    f.take(u64::MAX).read_to_end(&mut buf)?;
    Ok(buf)
}

fn procfs_err(what: String, e: procfs::ProcError) -> Error {
    Error::Other(format!("{what}: {e}"))
}

/// /proc/PID/stat, read by path and parsed by procfs (whose `Process` opens the /proc/PID
/// directory first and fstats it: three syscalls more per read).
pub fn stat(pid: Pid) -> Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let bytes = read_bytes(&path)?;
    <Stat as procfs::FromRead>::from_read(&bytes[..]).map_err(|e| procfs_err(path, e))
}

/// /proc/PID/status, as `stat`.
pub fn status(pid: Pid) -> Result<Status> {
    Ok(status_text(pid)?.0)
}

/// /proc/PID/status parsed, and its text as read: for a caller that checks every field
/// of it too (one read instead of two of the costliest /proc file a dump reads).
pub fn status_text(pid: Pid) -> Result<(Status, String)> {
    let path = format!("/proc/{pid}/status");
    let bytes = read_bytes(&path)?;
    let status =
        <Status as procfs::FromRead>::from_read(&bytes[..]).map_err(|e| procfs_err(path, e))?;
    Ok((status, String::from_utf8_lossy(&bytes).trim().to_string()))
}

/// Thread ids of a process, from /proc/PID/task.
pub fn tasks(pid: Pid) -> Result<Vec<Pid>> {
    let path = format!("/proc/{pid}/task");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
        let e = e.map_err(|e| Error::io(&path, e))?;
        if let Some(t) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(Pid::from_raw(t));
        }
    }
    out.sort();
    Ok(out)
}

/// Children of one thread (/proc/PID/task/TID/children).
pub fn children(pid: Pid, tid: Pid) -> Result<Vec<Pid>> {
    let s = read_string(&format!("/proc/{pid}/task/{tid}/children"))?;
    Ok(s.split_whitespace()
        .filter_map(|t| t.parse().ok())
        .map(Pid::from_raw)
        .collect())
}

/// The pipes among the fds of `pid`: (fd, pipe inode). One open of /proc/PID/fd, each
/// link read relative to it (no path walk from / per fd): the dump reads every process
/// of the host this way to find who else holds the tree's pipes.
pub fn pipe_fds(pid: i32) -> Result<Vec<(i32, u64)>> {
    use nix::fcntl::OFlag;
    let path = format!("/proc/{pid}/fd");
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::open(path.as_str(), flags, nix::sys::stat::Mode::empty())
        .map_err(|e| Error::sys(&path, e))?;
    let dfd = std::os::fd::AsRawFd::as_raw_fd(&dir);
    let mut out = Vec::new();
    for entry in dir.iter().flatten() {
        let name = entry.file_name();
        let Some(fd) = name.to_str().ok().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(target) = nix::fcntl::readlinkat(Some(dfd), name) else {
            continue;
        };
        let ino = target
            .to_str()
            .and_then(|t| t.strip_prefix("pipe:[")?.strip_suffix(']')?.parse().ok());
        if let Some(ino) = ino {
            out.push((fd, ino));
        }
    }
    Ok(out)
}

pub fn read_link(path: &str) -> Result<PathBuf> {
    std::fs::read_link(path).map_err(|e| Error::io(path, e))
}

thread_local! {
    /// The /proc/PID/fd directory of the process `fd_link` read last, held open: a dump
    /// reads every fd of a process in a row.
    static FD_DIR: std::cell::RefCell<Option<(Pid, std::os::fd::OwnedFd)>> =
        const { std::cell::RefCell::new(None) };
}

/// The target of /proc/PID/fd/FD, read relative to /proc/PID/fd, opened once per process
/// and kept for the next call: no walk of /proc and /proc/PID per fd (the kernel checks
/// the pid's and the fd's dentries at each step: a readlink by path was ~15% of a dump's
/// CPU with 909 fds). The directory belongs to that process, not to its pid: one opened
/// before the process died answers with an error, never with another process's fds, and
/// any error is asked again through a fresh open (ENOENT: the fd is closed).
pub fn fd_link(pid: Pid, fd: i32) -> Result<PathBuf> {
    let name = fd.to_string();
    let read = |dir: &std::os::fd::OwnedFd| {
        nix::fcntl::readlinkat(Some(dir.as_raw_fd()), name.as_str()).map(PathBuf::from)
    };
    let cached = FD_DIR.with(|c| match c.borrow().as_ref() {
        Some((p, dir)) if *p == pid => Some(read(dir)),
        _ => None,
    });
    if let Some(Ok(t)) = cached {
        return Ok(t);
    }
    use nix::fcntl::OFlag;
    let path = format!("/proc/{pid}/fd");
    let dir = nix::fcntl::open(
        path.as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(&path, e))?;
    let dir: std::os::fd::OwnedFd = crate::process::file_from_raw(dir).into();
    let r = read(&dir).map_err(|e| Error::sys(format!("{path}/{fd}"), e));
    FD_DIR.with(|c| *c.borrow_mut() = Some((pid, dir)));
    r
}

pub fn read_bytes(path: &str) -> Result<Vec<u8>> {
    read_proc(path).map_err(|e| Error::io(path, e))
}

pub fn read_trimmed(path: &str) -> Result<String> {
    Ok(read_string(path)?.trim().to_string())
}

/// One line of /proc/PID/smaps with the parts ckpt needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    pub shared: bool,
    pub offset: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub inode: u64,
    /// The path or the bracketed name ("[heap]", "[vdso]"), "" when anonymous.
    pub name: String,
    pub deleted: bool,
    /// Two-letter VmFlags ("rd", "wr", "gd", "hg", ...).
    pub vm_flags: Vec<String>,
    /// AnonHugePages: how much of it is in transparent huge pages, KiB.
    pub anon_huge_kib: u64,
}

impl Mapping {
    pub fn len(&self) -> u64 {
        self.end - self.start
    }
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
    pub fn has_flag(&self, f: &str) -> bool {
        self.vm_flags.iter().any(|x| x == f)
    }
    pub fn prot(&self) -> u32 {
        let mut p = 0;
        if self.read {
            p |= libc::PROT_READ as u32;
        }
        if self.write {
            p |= libc::PROT_WRITE as u32;
        }
        if self.exec {
            p |= libc::PROT_EXEC as u32;
        }
        p
    }
    /// A file-backed mapping (as opposed to anonymous memory or a kernel special one).
    pub fn is_file(&self) -> bool {
        self.inode != 0 && self.name.starts_with('/')
    }
}

/// Parses /proc/PID/smaps.
pub fn smaps(pid: Pid) -> Result<Vec<Mapping>> {
    let path = format!("/proc/{pid}/smaps");
    let text = read_string(&path)?;
    parse_smaps(&text).map_err(|r| Error::Other(format!("{path}: {r}")))
}

/// Parses /proc/PID/maps (no page counts or flags: no walk of the page tables).
pub fn maps(pid: Pid) -> Result<Vec<Mapping>> {
    let path = format!("/proc/{pid}/maps");
    let text = read_string(&path)?;
    parse_smaps(&text).map_err(|r| Error::Other(format!("{path}: {r}")))
}

pub fn parse_smaps(text: &str) -> std::result::Result<Vec<Mapping>, String> {
    let mut out: Vec<Mapping> = Vec::new();
    for line in text.lines() {
        if let Some(flags) = line.strip_prefix("VmFlags:") {
            if let Some(m) = out.last_mut() {
                m.vm_flags = flags.split_whitespace().map(String::from).collect();
            }
            continue;
        }
        if let Some(v) = line.strip_prefix("AnonHugePages:") {
            if let Some(m) = out.last_mut() {
                let kib = v.split_whitespace().next().and_then(|n| n.parse().ok());
                m.anon_huge_kib = kib.ok_or_else(|| format!("bad line {line:?}"))?;
            }
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        let Some((a, b)) = first.split_once('-') else {
            continue;
        };
        let (Ok(start), Ok(end)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) else {
            continue;
        };
        out.push(parse_map_line(line, start, end).ok_or_else(|| format!("bad line {line:?}"))?);
    }
    Ok(out)
}

fn parse_map_line(line: &str, start: u64, end: u64) -> Option<Mapping> {
    // "start-end perms offset maj:min inode    path"
    let mut rest = line;
    let mut fields = Vec::new();
    for _ in 0..5 {
        rest = rest.trim_start();
        let i = rest.find(' ').unwrap_or(rest.len());
        fields.push(&rest[..i]);
        rest = &rest[i..];
    }
    let perms = fields[1].as_bytes();
    if perms.len() < 4 {
        return None;
    }
    let (maj, min) = fields[3].split_once(':')?;
    let mut name = rest.trim_start().to_string();
    let mut deleted = false;
    if let Some(n) = name.strip_suffix(" (deleted)") {
        name = n.to_string();
        deleted = true;
    }
    Some(Mapping {
        start,
        end,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: u64::from_str_radix(fields[2], 16).ok()?,
        dev_major: u32::from_str_radix(maj, 16).ok()?,
        dev_minor: u32::from_str_radix(min, 16).ok()?,
        inode: fields[4].parse().ok()?,
        name,
        deleted,
        vm_flags: Vec::new(),
        anon_huge_kib: 0,
    })
}

pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAP: u64 = 1 << 62;
pub const PM_FILE: u64 = 1 << 61;

/// Opened /proc/PID/pagemap, read a VMA at a time with one pread.
pub struct Pagemap {
    pub(crate) file: std::fs::File,
    pub(crate) path: String,
}

impl Pagemap {
    pub fn open(pid: Pid) -> Result<Self> {
        let path = format!("/proc/{pid}/pagemap");
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Pagemap { file, path })
    }

    /// One 64-bit entry per page of [start, end).
    pub fn read(&self, start: u64, end: u64, out: &mut Vec<u64>) -> Result<()> {
        let n = ((end - start) / 4096) as usize;
        out.clear();
        out.resize(n, 0);
        let mut bytes = vec![0u8; n * 8];
        let mut got = 0;
        while got < bytes.len() {
            let r = self
                .file
                .read_at(&mut bytes[got..], (start / 4096) * 8 + got as u64)
                .map_err(|e| Error::io(&self.path, e))?;
            if r == 0 {
                return Err(Error::Other(format!("{}: short read", self.path)));
            }
            got += r;
        }
        for (i, c) in bytes.chunks_exact(8).enumerate() {
            out[i] = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        }
        Ok(())
    }
}

// linux/fs.h (6.7+): PAGEMAP_SCAN = _IOWR('f', 16, struct pm_scan_arg).
pub(crate) const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// PAGEMAP_SCAN categories: not an anonymous page (file or shmem).
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// Maps the shared zero page (4 KiB or huge): read but never written.
pub const PAGE_IS_PFNZERO: u64 = 1 << 5;
/// Regions per PAGEMAP_SCAN call (a page table holds at most 512).
const SCAN_VEC: usize = 4096;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct PageRegion {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) categories: u64,
}

/// `struct pm_scan_arg` of linux/fs.h (also used by the `ckpt check` probe).
#[repr(C)]
#[derive(Default)]
pub(crate) struct PmScanArg {
    pub(crate) size: u64,
    pub(crate) flags: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) walk_end: u64,
    pub(crate) vec: u64,
    pub(crate) vec_len: u64,
    pub(crate) max_pages: u64,
    pub(crate) category_inverted: u64,
    pub(crate) category_mask: u64,
    pub(crate) category_anyof_mask: u64,
    pub(crate) return_mask: u64,
}

impl Pagemap {
    /// The ranges of pages in [start, end) that have any of the categories `any` and none
    /// of `none`, appended to `out` (adjacent ones merged). PAGEMAP_SCAN: the kernel walks
    /// the page tables and returns ranges, where `read` returns 8 bytes per page for ckpt
    /// to look at. Ok(false) if this kernel has no PAGEMAP_SCAN (use `read`).
    pub fn scan(
        &self,
        start: u64,
        end: u64,
        any: u64,
        none: u64,
        out: &mut Vec<(u64, u64)>,
    ) -> Result<bool> {
        // At most one region per page: a small range needs no more (a 96 KiB vector
        // zeroed for every mapping was most of a small process's scan time).
        let cap = (end.saturating_sub(start).div_ceil(4096) as usize).clamp(1, SCAN_VEC);
        let mut vec = vec![PageRegion::default(); cap];
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                flags: 0,
                start: at,
                end,
                walk_end: 0,
                vec: vec.as_mut_ptr() as u64,
                vec_len: vec.len() as u64,
                max_pages: 0,
                category_inverted: none,
                category_mask: none,
                category_anyof_mask: any,
                return_mask: any,
            };
            // SAFETY: PAGEMAP_SCAN reads `arg` (its own size is in `size`) and writes at
            // most `vec_len` page_region structs into `vec`, which holds that many, plus
            // `arg.walk_end`; the addresses scanned are the target's, never dereferenced.
            let r = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
            let n = match nix::errno::Errno::result(r) {
                Ok(n) => n as usize,
                Err(nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL) if at == start => {
                    return Ok(false)
                }
                Err(e) => return Err(Error::sys(format!("PAGEMAP_SCAN of {}", self.path), e)),
            };
            // When the vector fills up, the kernel may report regions past `walk_end`
            // (up to the end of the page table it was in) and then scan them again from
            // `walk_end`: keep only what lies below it.
            let walk_end = arg.walk_end.min(end);
            for reg in &vec[..n.min(vec.len())] {
                let (s, e) = (reg.start.max(at), reg.end.min(walk_end));
                if s >= e {
                    continue;
                }
                match out.last_mut() {
                    Some(last) if last.1 == s => last.1 = e,
                    _ => out.push((s, e)),
                }
            }
            if walk_end <= at {
                return Err(Error::Other(format!(
                    "{}: PAGEMAP_SCAN made no progress at {at:#x}",
                    self.path
                )));
            }
            at = walk_end;
        }
        Ok(true)
    }
}

/// Resource limits of a process from /proc/PID/limits, indexed by RLIMIT_* number: unlike
/// prlimit(2), this works for a process of another uid without CAP_SYS_RESOURCE.
pub fn limits(pid: Pid) -> Result<Vec<(u64, u64)>> {
    let path = format!("/proc/{pid}/limits");
    let text = read_string(&path)?;
    parse_limits(&text).map_err(|r| Error::Other(format!("{path}: {r}")))
}

/// The kernel prints "%-25s %-20s %-20s %-10s": name, soft, hard, units.
pub fn parse_limits(text: &str) -> std::result::Result<Vec<(u64, u64)>, String> {
    let value = |s: &str| -> std::result::Result<u64, String> {
        let s = s.trim();
        if s == "unlimited" {
            Ok(u64::MAX)
        } else {
            s.parse().map_err(|_| format!("bad limit {s:?}"))
        }
    };
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        if line.len() < 68 {
            return Err(format!("short line {line:?}"));
        }
        out.push((value(&line[26..47])?, value(&line[47..68])?));
    }
    Ok(out)
}

/// Page frame number bits of a pagemap entry (zero without CAP_SYS_ADMIN).
pub const PM_PFN_MASK: u64 = (1 << 55) - 1;

/// The PFN of the kernel's shared zero page: an anonymous page that was only ever read
/// maps it, and pagemap reports it present, but it holds nothing worth storing. Found by
/// reading a fresh anonymous page of our own. None when PFNs are hidden from us.
pub fn zero_page_pfn() -> Option<u64> {
    let map = memmap2::MmapMut::map_anon(4096).ok()?;
    std::hint::black_box(map[0]);
    let pm = Pagemap::open(nix::unistd::getpid()).ok()?;
    let mut e = Vec::new();
    let addr = map.as_ptr() as u64;
    pm.read(addr, addr + 4096, &mut e).ok()?;
    let pfn = e.first()? & PM_PFN_MASK;
    (e[0] & PM_PRESENT != 0 && pfn != 0).then_some(pfn)
}

/// The fields of /proc/PID/fdinfo/FD that ckpt uses.
#[derive(Debug, Clone, Default)]
pub struct FdInfo {
    pub pos: u64,
    pub flags: u32,
    /// The mount and inode of the open file (0 when the kernel does not say): one open
    /// file description has one of each, so fds with different ones never share one.
    pub mnt_id: u64,
    pub ino: u64,
    /// Its `lock:` lines (kstate::fd_locks_of parses them), read in the same pass.
    pub lock_lines: String,
    /// The whole text read (the kind-specific fields of an eventfd, a signalfd, a
    /// timerfd: their dump reads them here instead of opening the file again).
    pub text: String,
}

pub fn fdinfo(pid: Pid, fd: i32) -> Result<FdInfo> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = read_string(&path)?;
    Ok(parse_fdinfo(&text))
}

/// Reads the fdinfo of many fds of one process cheaply: the directory is opened once,
/// each file with openat() and one read into a buffer kept between calls (an fd of a
/// tree of 100 processes costs three short syscalls, no path walk from /proc).
pub struct FdInfoDir {
    dir: std::os::fd::OwnedFd,
    pid: Pid,
    buf: Vec<u8>,
}

impl FdInfoDir {
    pub fn open(pid: Pid) -> Result<FdInfoDir> {
        use nix::fcntl::OFlag;
        let path = format!("/proc/{pid}/fdinfo");
        let fd = nix::fcntl::open(
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys(path, e))?;
        Ok(FdInfoDir {
            dir: crate::process::file_from_raw(fd).into(),
            pid,
            buf: vec![0; 4096],
        })
    }

    /// fdinfo of `fd`, opened in the directory (no path walk).
    fn open_info(&self, fd: i32) -> Result<std::fs::File> {
        use nix::fcntl::OFlag;
        use std::os::fd::AsRawFd;
        let f = nix::fcntl::openat(
            Some(self.dir.as_raw_fd()),
            fd.to_string().as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| Error::sys(format!("/proc/{}/fdinfo/{fd}", self.pid), e))?;
        Ok(crate::process::file_from_raw(f))
    }

    /// The fdinfo of `fd` (only its first 4 KiB: the fields ckpt reads come first).
    pub fn get(&mut self, fd: i32) -> Result<FdInfo> {
        use std::os::fd::AsRawFd;
        let f = self.open_info(fd)?;
        let n = nix::unistd::read(f.as_raw_fd(), &mut self.buf)
            .map_err(|e| Error::sys(format!("/proc/{}/fdinfo/{fd}", self.pid), e))?;
        Ok(parse_fdinfo(&String::from_utf8_lossy(&self.buf[..n])))
    }

    /// The whole fdinfo text of `fd` (openat in the directory and, for most fds, one
    /// read: no path walk, stat or read of the end as `read_to_string` does).
    pub fn text(&mut self, fd: i32) -> Result<String> {
        use std::os::fd::AsRawFd;
        let path = || format!("/proc/{}/fdinfo/{fd}", self.pid);
        let f = self.open_info(fd)?;
        let mut out = Vec::new();
        loop {
            let n = nix::unistd::read(f.as_raw_fd(), &mut self.buf)
                .map_err(|e| Error::sys(path(), e))?;
            out.extend_from_slice(&self.buf[..n]);
            // fdinfo is one single_open record: a short read is its end.
            if n < self.buf.len() {
                break;
            }
        }
        String::from_utf8(out).map_err(|e| Error::Other(format!("{}: {e}", path())))
    }
}

fn parse_fdinfo(text: &str) -> FdInfo {
    let mut info = FdInfo::default();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("pos:") {
            info.pos = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("flags:") {
            info.flags = u32::from_str_radix(v.trim(), 8).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("mnt_id:") {
            info.mnt_id = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("ino:") {
            info.ino = v.trim().parse().unwrap_or(0);
        } else if line.starts_with("lock:") {
            info.lock_lines.push_str(line);
            info.lock_lines.push('\n');
        }
    }
    info.text = text.to_string();
    info
}

/// Open fd numbers of a process.
pub fn fds(pid: Pid) -> Result<Vec<i32>> {
    let path = format!("/proc/{pid}/fd");
    let mut out = Vec::new();
    for e in std::fs::read_dir(&path).map_err(|e| Error::io(&path, e))? {
        let e = e.map_err(|e| Error::io(&path, e))?;
        if let Some(fd) = e.file_name().to_str().and_then(|s| s.parse().ok()) {
            out.push(fd);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PAGEMAP_SCAN's ranges are exactly the written pages that pagemap shows, also when
    /// they are more than one call's vector holds (every other page written, every fourth
    /// only read: the zero page).
    #[test]
    fn scan_agrees_with_pagemap() {
        let pages = 3 * SCAN_VEC + 100;
        let mut m = memmap2::MmapMut::map_anon(pages * 4096).unwrap();
        m.advise(memmap2::Advice::NoHugePage).unwrap();
        let mut sum = 0u8;
        for p in 0..pages {
            match p % 4 {
                0 | 2 => m[p * 4096] = 1,
                1 => sum = sum.wrapping_add(m[p * 4096 + 7]),
                _ => {}
            }
        }
        std::hint::black_box(sum);
        let me = nix::unistd::getpid();
        let pm = Pagemap::open(me).unwrap();
        let (start, end) = (m.as_ptr() as u64, m.as_ptr() as u64 + (pages * 4096) as u64);
        let mut ranges = Vec::new();
        let any = PAGE_IS_PRESENT | PAGE_IS_SWAPPED;
        if !pm
            .scan(start, end, any, PAGE_IS_PFNZERO, &mut ranges)
            .unwrap()
        {
            return; // no PAGEMAP_SCAN on this kernel: `plan` reads pagemap
        }
        let scanned: Vec<u64> = ranges
            .iter()
            .flat_map(|&(s, e)| (s..e).step_by(4096))
            .collect();
        let mut entries = Vec::new();
        pm.read(start, end, &mut entries).unwrap();
        let zero = zero_page_pfn();
        let read: Vec<u64> = (0..pages)
            .filter(|&p| {
                let e = entries[p];
                e & PM_PRESENT != 0 && zero.is_none_or(|z| e & PM_PFN_MASK != z)
            })
            .map(|p| start + p as u64 * 4096)
            .collect();
        assert_eq!(scanned.len(), pages.div_ceil(2));
        assert_eq!(scanned, read);
    }

    #[test]
    fn zero_page_is_found_as_root() {
        if nix::unistd::geteuid().is_root() {
            assert!(zero_page_pfn().is_some());
        }
    }

    #[test]
    fn limits_match_getrlimit() {
        let l = limits(nix::unistd::getpid()).unwrap();
        assert_eq!(l.len(), 16);
        let (cur, max) = crate::process::get_rlimit(nix::unistd::getpid(), 7).unwrap();
        assert_eq!(l[7], (cur, max));
    }

    #[test]
    fn parses_own_smaps() {
        let maps = smaps(nix::unistd::getpid()).unwrap();
        assert!(maps.iter().any(|m| m.name == "[stack]" && m.write));
        assert!(maps.iter().any(|m| m.name == "[vdso]" && m.exec));
        assert!(maps.iter().all(|m| !m.vm_flags.is_empty()));
    }

    #[test]
    fn parses_paths_with_spaces_and_deleted() {
        let t = "7f00-7f01 rw-s 00001000 08:01 1234    /tmp/a b (deleted)\nVmFlags: rd wr sh\n";
        let m = &parse_smaps(t).unwrap()[0];
        assert_eq!(m.name, "/tmp/a b");
        assert!(m.deleted && m.shared && m.offset == 0x1000 && m.inode == 1234);
        assert_eq!(m.vm_flags, ["rd", "wr", "sh"]);
    }
}

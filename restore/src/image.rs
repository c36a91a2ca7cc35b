//! Loads one process's images into memory and checks that they describe something a
//! kernel could hold, before any process is created. Images are untrusted input.

use crate::RestoreError;
use ckpt_images::{names, pb, validate, ImageDir, Kind, PAGE_SIZE};
use std::collections::HashMap;

pub use validate::TASK_SIZE;

/// The character devices a reopen gives back as they were (null, zero, full, random,
/// urandom), as `dump/src/files.rs` allows them: an image naming another is refused.
pub const STATELESS_CHARDEVS: [(u64, u64); 5] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

/// Most threads an image may ask for (each is a task of the restored process).
const MAX_THREADS: usize = 65536;

/// Largest shared memory object an image may ask for (user space is 128 TiB).
const MAX_SHM: u64 = 1 << 47;

/// A shared memory object that restore creates once, as a memfd, and maps into each of
/// its VMAs at their offsets: one mapped by several VMAs (split by mprotect, mapped twice),
/// or a memfd (which keeps its name).
pub struct ShmObject {
    pub size: u64,
    pub name: String,
}

/// Everything needed to rebuild one process.
pub struct ProcessImage {
    pub core: pb::ProcessCore,
    pub threads: Vec<pb::ThreadCore>,
    pub mm: pb::MmInfo,
    pub vmas: Vec<pb::Vma>,
    pub pages_id: u32,
    /// Checksum of the pages file, verified while its pages are copied.
    /// The pages file's inventory entry: its size and chunk checksums.
    pub pages_entry: pb::ImageFile,
    /// The zstd frames of a compressed pages file (None: raw pages).
    pub frames: Option<Vec<ckpt_images::pages::Frame>>,
    pub runs: Vec<pb::PageRun>,
    pub fds: Vec<pb::Fd>,
}

fn bad(d: &ImageDir, name: &str, reason: String) -> RestoreError {
    RestoreError::Refused(format!("{}: {reason}", d.path(name).display()))
}

/// The inventory's pids and every process's ProcessCore.ppid form one tree under
/// root_pid, each pid with its core file. Checked up front even though one process is
/// restored today: a hostile list is refused for what it is.
pub fn check_tree(d: &ImageDir) -> Result<(), RestoreError> {
    let inv = d.inventory();
    validate::pid_list(inv.root_pid, &inv.pids).map_err(|e| bad(d, names::INVENTORY, e))?;
    let index: std::collections::HashMap<&str, &pb::ImageFile> =
        inv.files.iter().map(|f| (f.name.as_str(), f)).collect();
    let mut parents = Vec::with_capacity(inv.pids.len());
    for &pid in &inv.pids {
        let name = names::core(pid);
        let entry = index.get(name.as_str()).ok_or_else(|| {
            bad(
                d,
                names::INVENTORY,
                format!("pid {pid} has no {name} in the image"),
            )
        })?;
        let core: pb::ProcessCore = d.records_of(entry, Kind::Core)?.expect("ProcessCore")?;
        if core.pid != pid {
            return Err(bad(
                d,
                &name,
                format!("holds pid {}, expected {pid}", core.pid),
            ));
        }
        parents.push((pid, core.ppid));
    }
    validate::tree(inv.root_pid, &parents).map_err(|e| bad(d, names::INVENTORY, e))
}

pub fn load(d: &ImageDir, pid: i32) -> Result<ProcessImage, RestoreError> {
    let core_name = names::core(pid);
    let mut r = d.records(&core_name, Kind::Core)?;
    let core: pb::ProcessCore = r.expect("ProcessCore")?;
    let threads: Vec<pb::ThreadCore> = r.rest("ThreadCore")?;
    if core.pid != pid {
        return Err(bad(
            d,
            &core_name,
            format!("holds pid {}, expected {pid}", core.pid),
        ));
    }
    if threads.is_empty() || threads[0].tid != pid {
        return Err(bad(
            d,
            &core_name,
            format!(
                "{} threads, the first with tid {}; the first thread must be the leader, tid {pid}",
                threads.len(),
                threads.first().map_or(0, |t| t.tid)
            ),
        ));
    }
    if threads.len() > MAX_THREADS {
        return Err(bad(
            d,
            &core_name,
            format!("{} threads (at most {MAX_THREADS})", threads.len()),
        ));
    }
    let mut tids: Vec<i32> = threads.iter().map(|t| t.tid).collect();
    tids.sort_unstable();
    if tids[0] <= 0 || tids.windows(2).any(|w| w[0] == w[1]) {
        return Err(bad(
            d,
            &core_name,
            "thread ids are not positive and distinct".into(),
        ));
    }
    for t in &threads {
        if let Some(c) = &t.creds {
            validate::creds(c).map_err(|e| bad(d, &core_name, format!("thread {}: {e}", t.tid)))?;
        }
        if t.name.len() > 15 || t.name.contains('\0') {
            return Err(bad(
                d,
                &core_name,
                format!("thread {}: name {:?} is not a thread name", t.tid, t.name),
            ));
        }
    }
    for t in &threads {
        if t.regs.is_none() {
            return Err(bad(
                d,
                &core_name,
                format!("thread {} has no registers", t.tid),
            ));
        }
        if t.xsave.len() < 576 || t.xsave.len() > ckpt_sys::ptrace::XSAVE_MAX {
            return Err(bad(
                d,
                &core_name,
                format!("thread {}: xsave area of {} bytes", t.tid, t.xsave.len()),
            ));
        }
    }
    if let Some(c) = &core.creds {
        validate::creds(c).map_err(|e| bad(d, &core_name, e))?;
    }
    for a in &core.sigactions {
        if a.signo == 0 || a.signo > 64 || a.signo == 9 || a.signo == 19 {
            return Err(bad(
                d,
                &core_name,
                format!("sigaction for signal {}", a.signo),
            ));
        }
    }

    let mm_name = names::mm(pid);
    let mut r = d.records(&mm_name, Kind::Mm)?;
    let mm: pb::MmInfo = r.expect("MmInfo")?;
    let vmas: Vec<pb::Vma> = r.rest("Vma")?;
    validate::vmas(&vmas).map_err(|e| bad(d, &mm_name, e))?;
    for v in vmas.iter().filter(|v| v.shm_id != 0) {
        let fits = v
            .pgoff
            .checked_add(v.end - v.start)
            .is_some_and(|e| e <= MAX_SHM);
        if v.kind != pb::VmaKind::VmaAnonShared as i32 || v.pgoff % PAGE_SIZE as u64 != 0 || !fits {
            return Err(bad(
                d,
                &mm_name,
                format!(
                    "VMA at {:#x}: shared memory object {} at offset {:#x} is not valid",
                    v.start, v.shm_id, v.pgoff
                ),
            ));
        }
    }
    validate::mm_info(&mm).map_err(|e| bad(d, &mm_name, e))?;
    validate::vdso_clear_of_vmas(&mm, &vmas).map_err(|e| bad(d, &mm_name, e))?;

    let pm_name = names::pagemap(pid);
    let mut r = d.records(&pm_name, Kind::Pagemap)?;
    let head: pb::PagemapHead = r.expect("PagemapHead")?;
    let runs: Vec<pb::PageRun> = r.rest("PageRun")?;
    let pages_entry = d
        .inventory()
        .files
        .iter()
        .find(|f| f.name == names::pages(head.pages_id))
        .ok_or_else(|| {
            bad(
                d,
                &pm_name,
                format!("pages-{}.img is not in the inventory", head.pages_id),
            )
        })?;
    // Runs address the uncompressed page stream; for a compressed file its length is what
    // the frame headers add up to.
    let frames = match pb::Compression::try_from(head.compression) {
        Ok(pb::Compression::None) => None,
        Ok(pb::Compression::Zstd) => {
            let (file, path) = d.open_pages(head.pages_id)?;
            Some(ckpt_images::pages::zstd_frames(
                &file,
                &path,
                pages_entry.size,
            )?)
        }
        Err(_) => {
            return Err(bad(
                d,
                &pm_name,
                format!("unknown compression {}", head.compression),
            ))
        }
    };
    let stream_len = match &frames {
        None => pages_entry.size,
        Some(f) => f
            .last()
            .map(|f| f.raw_offset + f.raw_len)
            .unwrap_or(PAGE_SIZE as u64),
    };
    validate::runs(&vmas, &runs, head.nr_pages, stream_len).map_err(|e| bad(d, &pm_name, e))?;

    let files_name = names::files(pid);
    let mut r = d.records(&files_name, Kind::Files)?;
    let fds: Vec<pb::Fd> = r.rest("Fd")?;
    let mut seen = std::collections::HashSet::new();
    for f in &fds {
        if f.fd < 0 || f.fd > 1 << 20 || !seen.insert(f.fd) {
            return Err(bad(
                d,
                &files_name,
                format!("invalid or duplicate fd {}", f.fd),
            ));
        }
        if f.is_dup && (f.dup_of >= f.fd || !fds.iter().any(|o| o.fd == f.dup_of && !o.is_dup)) {
            return Err(bad(
                d,
                &files_name,
                format!(
                    "fd {} is a dup of fd {}, which is not an earlier fd",
                    f.fd, f.dup_of
                ),
            ));
        }
        if !f.is_dup && pb::FdKind::try_from(f.kind).is_err() {
            return Err(bad(
                d,
                &files_name,
                format!("fd {} ({}) is of unknown kind {}", f.fd, f.path, f.kind),
            ));
        }
        // The recorded device must be on the allow-list; that the file at the path is
        // that device, or of the recorded kind at all, only the seed can check
        // (seed/access.rs).
        let dev = (nix::sys::stat::major(f.rdev), nix::sys::stat::minor(f.rdev));
        if f.kind == pb::FdKind::FdChardev as i32 && !STATELESS_CHARDEVS.contains(&dev) {
            return Err(bad(
                d,
                &files_name,
                format!(
                    "fd {} ({}) is character device {}:{}, not one that reopens as it was",
                    f.fd, f.path, dev.0, dev.1
                ),
            ));
        }
        if f.path.is_empty() || !f.path.starts_with('/') {
            return Err(bad(
                d,
                &files_name,
                format!("fd {}: path {:?} is not absolute", f.fd, f.path),
            ));
        }
    }
    Ok(ProcessImage {
        core,
        threads,
        mm,
        vmas,
        pages_id: head.pages_id,
        pages_entry: pages_entry.clone(),
        frames,
        runs,
        fds,
    })
}

impl ProcessImage {
    /// The shared memory objects that need a file of their own at restore, by `shm_id`.
    /// A shared anonymous VMA alone in its object is mapped MAP_ANONYMOUS as dumped.
    pub fn shm_objects(&self) -> HashMap<u64, ShmObject> {
        let mut count: HashMap<u64, (usize, u64, Option<&str>)> = HashMap::new();
        for v in self.vmas.iter().filter(|v| v.shm_id != 0) {
            let e = count.entry(v.shm_id).or_insert((0, 0, None));
            e.0 += 1;
            e.1 = e.1.max(v.pgoff + (v.end - v.start));
            if let Some(n) = v.name.strip_prefix("/memfd:") {
                e.2 = Some(n.strip_suffix(" (deleted)").unwrap_or(n));
            }
        }
        count
            .into_iter()
            .filter(|(_, (n, _, memfd))| *n > 1 || memfd.is_some())
            .map(|(id, (_, size, memfd))| {
                // memfd_create takes at most 249 bytes, no NUL.
                let mut name: String = memfd
                    .unwrap_or("shared-anon")
                    .chars()
                    .filter(|&c| c != '\0')
                    .collect();
                while name.len() > 200 {
                    name.pop();
                }
                (id, ShmObject { size, name })
            })
            .collect()
    }

    /// Keeps one copy of each page of a shared memory object: an object mapped twice at the
    /// same offsets has its pages in the image once per mapping, and filling the second
    /// mapping would find them present (UFFDIO_COPY fails with EEXIST). Not for a lazy
    /// restore: there every mapping is registered for its own faults, and the pager takes
    /// EEXIST as "already there".
    pub fn drop_shared_duplicates(&mut self) {
        let page = PAGE_SIZE as u64;
        if !self.vmas.iter().any(|v| v.shm_id != 0) {
            return;
        }
        // Object offsets already filled, per object.
        let mut seen: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
        let mut out = Vec::with_capacity(self.runs.len());
        let mut vi = 0;
        for r in &self.runs {
            while self.vmas[vi].end <= r.vaddr {
                vi += 1;
            }
            let v = &self.vmas[vi];
            if v.shm_id == 0 {
                out.push(*r);
                continue;
            }
            let lo = v.pgoff + (r.vaddr - v.start);
            let hi = lo + r.nr_pages * page;
            let covered = seen.entry(v.shm_id).or_default();
            for (a, b) in uncovered(covered, lo, hi) {
                out.push(pb::PageRun {
                    vaddr: r.vaddr + (a - lo),
                    nr_pages: (b - a) / page,
                    offset: r.offset + (a - lo),
                });
            }
            covered.push((lo, hi));
        }
        self.runs = out;
    }
}

/// The parts of [lo, hi) outside every interval of `covered`, in order.
fn uncovered(covered: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut parts = vec![(lo, hi)];
    for &(a, b) in covered {
        parts = parts
            .into_iter()
            .flat_map(|(x, y)| {
                if b <= x || a >= y {
                    vec![(x, y)]
                } else {
                    [(x, a.max(x)), (b.min(y), y)]
                        .into_iter()
                        .filter(|(s, e)| s < e)
                        .collect()
                }
            })
            .collect();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::uncovered;

    #[test]
    fn uncovered_parts() {
        assert_eq!(uncovered(&[], 0, 10), vec![(0, 10)]);
        assert_eq!(uncovered(&[(0, 10)], 0, 10), vec![]);
        assert_eq!(
            uncovered(&[(2, 4), (6, 8)], 0, 10),
            vec![(0, 2), (4, 6), (8, 10)]
        );
        assert_eq!(uncovered(&[(5, 20)], 0, 10), vec![(0, 5)]);
    }
}

//! Loads one process's images into memory and checks that they describe something a
//! kernel could hold, before any process is created. Images are untrusted input.

use crate::RestoreError;
use ckpt_images::intervals::Covered;
use ckpt_images::{names, pb, validate, ImageDir, Kind, PAGE_SIZE};
use std::collections::HashMap;

pub use validate::TASK_SIZE;

/// The character devices a reopen gives back as they were (null, zero, full, random,
/// urandom), as `dump/src/files.rs` allows them: an image naming another is refused.
pub const STATELESS_CHARDEVS: [(u64, u64); 5] = [(1, 3), (1, 5), (1, 7), (1, 8), (1, 9)];

/// Most threads an image may ask for (each is a task of the restored process).
const MAX_THREADS: usize = 65536;
/// Vma.map_flags restore knows: MAP_NORESERVE, MAP_DROPPABLE (anonymous private only).
pub const MAP_NORESERVE: u32 = 0x4000;
pub const MAP_DROPPABLE: u32 = 0x08;

/// The name an anonymous VMA was given with PR_SET_VMA_ANON_NAME, if any.
pub fn anon_name(v: &pb::Vma) -> Option<&str> {
    let prefix = match pb::VmaKind::try_from(v.kind) {
        Ok(pb::VmaKind::VmaAnon) => "[anon:",
        Ok(pb::VmaKind::VmaAnonShared) => "[anon_shmem:",
        _ => return None,
    };
    v.name.strip_prefix(prefix)?.strip_suffix(']')
}

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
    /// Page runs in address order: its own, and (once `cow::resolve` ran) those it has
    /// from its parent, pointing at the parent's bytes in the file.
    pub runs: Vec<pb::PageRun>,
    /// The runs that are its parent's pages (`PageRun.from_parent`), until resolved.
    pub from_parent: Vec<pb::PageRun>,
    /// The address ranges of `from_parent` once resolved (sorted, merged): pages the
    /// restore can give it copy-on-write from its parent (`sharing.rs`).
    pub inherited: Vec<(u64, u64)>,
    /// Where this process's pages end in the pages file.
    pub pages_end: u64,
    /// Length of the (uncompressed) page stream.
    pub stream_len: u64,
    pub fds: Vec<pb::Fd>,
}

/// `runs` in file order (a child's runs from its parent point back into the file).
pub fn by_offset(runs: &[pb::PageRun]) -> Vec<pb::PageRun> {
    let mut out = runs.to_vec();
    out.sort_unstable_by_key(|r| r.offset);
    out
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
    let index = d.index();
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

/// Loads process `pid`, whose pages start at byte `pages_first` of the pages file (the
/// header's end for the first process).
pub fn load(d: &ImageDir, pid: i32, pages_first: u64) -> Result<ProcessImage, RestoreError> {
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
    validate::seccomp_filters(&core.seccomp_filters).map_err(|e| bad(d, &core_name, e))?;
    for t in &threads {
        validate::seccomp_thread(t.seccomp_mode, &t.seccomp_chain, core.seccomp_filters.len())
            .map_err(|e| bad(d, &core_name, format!("thread {}: {e}", t.tid)))?;
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
    crate::task_state::check(&core).map_err(|e| bad(d, &core_name, e))?;
    for t in &core.posix_timers {
        let thread = t.notify & ckpt_sys::kstate::SIGEV_THREAD_ID != 0;
        if thread && !threads.iter().any(|th| th.tid == t.notify_tid) {
            return Err(bad(
                d,
                &core_name,
                format!(
                    "POSIX timer {} is directed at thread {}, not one of this process",
                    t.id, t.notify_tid
                ),
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
    for v in &vmas {
        let droppable = v.map_flags & MAP_DROPPABLE != 0;
        if v.map_flags & !(MAP_DROPPABLE | MAP_NORESERVE) != 0
            || (droppable && v.kind != pb::VmaKind::VmaAnon as i32)
        {
            return Err(bad(
                d,
                &mm_name,
                format!(
                    "VMA at {:#x}: mmap flags {:#x} are not valid",
                    v.start, v.map_flags
                ),
            ));
        }
    }
    for v in &vmas {
        let file = v.kind == pb::VmaKind::VmaFilePrivate as i32
            || v.kind == pb::VmaKind::VmaFileShared as i32;
        if v.flock > 2 || (v.flock != 0 && !file) {
            return Err(bad(
                d,
                &mm_name,
                format!("VMA at {:#x}: flock {} is not valid", v.start, v.flock),
            ));
        }
    }
    validate::mm_info(&mm).map_err(|e| bad(d, &mm_name, e))?;
    validate::vdso_clear_of_vmas(&mm, &vmas).map_err(|e| bad(d, &mm_name, e))?;

    let pm_name = names::pagemap(pid);
    let mut r = d.records(&pm_name, Kind::Pagemap)?;
    let head: pb::PagemapHead = r.expect("PagemapHead")?;
    let (from_parent, runs): (Vec<pb::PageRun>, Vec<pb::PageRun>) = r
        .rest::<pb::PageRun>("PageRun")?
        .into_iter()
        .partition(|r| r.from_parent);
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
    // A tree's processes store their pages back to back in one file: this one's start
    // where the previous one's end (`pages_first`, checked by the caller).
    let pages_end = validate::runs_from(&vmas, &runs, head.nr_pages, stream_len, pages_first)
        .map_err(|e| bad(d, &pm_name, e))?;
    validate::parent_runs(&vmas, &from_parent, &runs).map_err(|e| bad(d, &pm_name, e))?;

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
        // Neither has a slot nor a path: made by its own process's seed.
        let epoll = [pb::FdKind::FdEpoll as i32, pb::FdKind::FdPidfd as i32].contains(&f.kind);
        let path_kind = !crate::fdtable::needs_slot(f.kind) && !epoll;
        if (!path_kind || epoll) && f.desc == 0 {
            return Err(bad(
                d,
                &files_name,
                format!("fd {} of kind {} has no description", f.fd, f.kind),
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
        crate::locks::check(f).map_err(|e| bad(d, &files_name, e))?;
        if path_kind && (f.path.is_empty() || !f.path.starts_with('/')) {
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
        from_parent,
        inherited: Vec::new(),
        pages_end,
        stream_len,
        fds,
    })
}

/// The tree's open file descriptions (fdtable.img; none in an image from before it).
pub fn load_table(d: &ImageDir) -> Result<Vec<pb::FileDesc>, RestoreError> {
    if d.lookup(names::FDTABLE).is_none() {
        return Ok(Vec::new());
    }
    let mut r = d.records(names::FDTABLE, Kind::FileTable)?;
    let descs: Vec<pb::FileDesc> = r.rest("FileDesc")?;
    crate::fdtable::check(&descs).map_err(|e| bad(d, names::FDTABLE, e))?;
    Ok(descs)
}

impl ProcessImage {
    /// The shared memory objects that need a file of their own at restore, by `shm_id`.
    /// A shared anonymous VMA alone in its object is mapped MAP_ANONYMOUS as dumped.
    pub fn shm_objects(&self) -> HashMap<u64, ShmObject> {
        self.shm_objects_counted()
            .into_iter()
            .filter(|(_, (n, memfd, _))| *n > 1 || *memfd)
            .map(|(id, (_, _, o))| (id, o))
            .collect()
    }

    /// Every shared memory object this process maps, by `shm_id` (a tree's objects are
    /// shared across processes too: `shared.rs`).
    pub fn shm_objects_all(&self) -> HashMap<u64, ShmObject> {
        self.shm_objects_counted()
            .into_iter()
            .map(|(id, (_, _, o))| (id, o))
            .collect()
    }

    /// Per object: how many VMAs map it, whether it was a memfd, size and name.
    fn shm_objects_counted(&self) -> HashMap<u64, (usize, bool, ShmObject)> {
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
            .map(|(id, (n, size, memfd))| {
                // memfd_create takes at most 249 bytes, no NUL.
                let mut name: String = memfd
                    .unwrap_or("shared-anon")
                    .chars()
                    .filter(|&c| c != '\0')
                    .collect();
                while name.len() > 200 {
                    name.pop();
                }
                (id, (n, memfd.is_some(), ShmObject { size, name }))
            })
            .collect()
    }

    /// Keeps one copy of each page of a shared memory object: an object mapped twice at the
    /// same offsets has its pages in the image once per mapping, and filling the second
    /// mapping would find them present (UFFDIO_COPY fails with EEXIST). Not for a lazy
    /// restore: there every mapping is registered for its own faults, and the pager takes
    /// EEXIST as "already there".
    ///
    /// `seen` is shared by every process of a tree: an object its parent and children all
    /// map is one object again (`tree.rs`), filled through whichever maps a page first.
    pub fn drop_shared_duplicates(&mut self, seen: &mut Covered) {
        let page = PAGE_SIZE as u64;
        if !self.vmas.iter().any(|v| v.shm_id != 0) {
            return;
        }
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
            for (a, b) in seen.take(v.shm_id, lo, hi) {
                out.push(pb::PageRun {
                    vaddr: r.vaddr + (a - lo),
                    nr_pages: (b - a) / page,
                    offset: r.offset + (a - lo),
                    from_parent: false,
                });
            }
        }
        self.runs = out;
    }
}

//! Loads one process's images into memory and checks that they describe something a
//! kernel could hold, before any process is created. Images are untrusted input.

use crate::RestoreError;
use ckpt_images::{names, pb, validate, ImageDir, Kind, PAGE_SIZE};

pub use validate::TASK_SIZE;

/// Everything needed to rebuild one process.
pub struct ProcessImage {
    pub core: pb::ProcessCore,
    pub threads: Vec<pb::ThreadCore>,
    pub mm: pb::MmInfo,
    pub vmas: Vec<pb::Vma>,
    pub pages_id: u32,
    /// Checksum of the pages file, verified while its pages are copied.
    pub pages_xxh3: u64,
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
    if threads.len() != 1 || threads[0].tid != pid {
        return Err(bad(
            d,
            &core_name,
            format!(
                "{} threads; this ckpt restores single-threaded processes only",
                threads.len()
            ),
        ));
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
    validate::mm_info(&mm).map_err(|e| bad(d, &mm_name, e))?;

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
        pages_xxh3: pages_entry.xxh3,
        frames,
        runs,
        fds,
    })
}

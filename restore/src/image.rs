//! Loads one process's images into memory and checks that they describe something a
//! kernel could hold, before any process is created. Images are untrusted input.

use crate::RestoreError;
use ckpt_images::{names, pb, ImageDir, Kind, PAGE_SIZE};

/// Highest user address on x86-64 with 4-level page tables.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// Everything needed to rebuild one process.
pub struct ProcessImage {
    pub core: pb::ProcessCore,
    pub threads: Vec<pb::ThreadCore>,
    pub mm: pb::MmInfo,
    pub vmas: Vec<pb::Vma>,
    pub pages_id: u32,
    /// Checksum of the pages file, verified while its pages are copied.
    pub pages_xxh3: u64,
    pub runs: Vec<pb::PageRun>,
    pub fds: Vec<pb::Fd>,
}

fn bad(d: &ImageDir, name: &str, reason: String) -> RestoreError {
    RestoreError::Refused(format!("{}: {reason}", d.path(name).display()))
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
    check_vmas(&vmas).map_err(|e| bad(d, &mm_name, e))?;
    if mm.auxv.len() > 4096 - 256 || mm.auxv.len() % 16 != 0 {
        return Err(bad(d, &mm_name, format!("auxv of {} bytes", mm.auxv.len())));
    }

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
    check_runs(&vmas, &runs, head.nr_pages, pages_entry.size).map_err(|e| bad(d, &pm_name, e))?;

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
        runs,
        fds,
    })
}

/// VMAs must be page aligned, inside user space, sorted and disjoint.
fn check_vmas(vmas: &[pb::Vma]) -> Result<(), String> {
    let page = PAGE_SIZE as u64;
    let mut prev_end = 0u64;
    for (i, v) in vmas.iter().enumerate() {
        if v.start % page != 0 || v.end % page != 0 || v.start >= v.end || v.end > TASK_SIZE {
            return Err(format!(
                "VMA {i} [{:#x}, {:#x}) is not a valid range",
                v.start, v.end
            ));
        }
        if v.start < prev_end {
            return Err(format!("VMA {i} at {:#x} overlaps the one before", v.start));
        }
        if v.prot & !7 != 0 {
            return Err(format!(
                "VMA {i} at {:#x}: protection {:#x}",
                v.start, v.prot
            ));
        }
        let file = matches!(
            pb::VmaKind::try_from(v.kind),
            Ok(pb::VmaKind::VmaFilePrivate | pb::VmaKind::VmaFileShared)
        );
        if pb::VmaKind::try_from(v.kind).is_err() {
            return Err(format!(
                "VMA {i} at {:#x}: unknown kind {}",
                v.start, v.kind
            ));
        }
        if file && (!v.path.starts_with('/') || v.pgoff % page != 0) {
            return Err(format!(
                "VMA {i} at {:#x}: bad file {:?} or offset",
                v.start, v.path
            ));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// Every page run must lie inside one VMA that holds pages, and inside the pages file;
/// runs are stored back to back.
fn check_runs(
    vmas: &[pb::Vma],
    runs: &[pb::PageRun],
    nr_pages: u64,
    file_size: u64,
) -> Result<(), String> {
    let page = PAGE_SIZE as u64;
    let mut total = 0u64;
    let mut next_offset = page;
    let mut vi = 0usize;
    let mut prev_end = 0u64;
    for (i, r) in runs.iter().enumerate() {
        let len = r
            .nr_pages
            .checked_mul(page)
            .ok_or(format!("run {i}: size overflows"))?;
        let end = r
            .vaddr
            .checked_add(len)
            .ok_or(format!("run {i}: address overflows"))?;
        if r.vaddr % page != 0 || r.nr_pages == 0 || r.vaddr < prev_end {
            return Err(format!(
                "run {i} at {:#x} is misaligned, empty or out of order",
                r.vaddr
            ));
        }
        while vi < vmas.len() && vmas[vi].end <= r.vaddr {
            vi += 1;
        }
        let inside = vmas
            .get(vi)
            .map(|v| {
                v.start <= r.vaddr && end <= v.end && v.kind != pb::VmaKind::VmaFileShared as i32
            })
            .unwrap_or(false);
        if !inside {
            return Err(format!(
                "run {i} [{:#x}, {end:#x}) is not inside a VMA that holds pages",
                r.vaddr
            ));
        }
        let fend = r
            .offset
            .checked_add(len)
            .ok_or(format!("run {i}: offset overflows"))?;
        if r.offset != next_offset || fend > file_size {
            return Err(format!(
                "run {i} points at bytes [{}, {fend}), expected at {next_offset} and inside the {file_size} byte pages file",
                r.offset
            ));
        }
        total += r.nr_pages;
        prev_end = end;
        next_offset = fend;
    }
    if total != nr_pages {
        return Err(format!(
            "runs hold {total} pages, the header says {nr_pages}"
        ));
    }
    // Runs cover the pages file back to back, so hashing what is copied hashes the file.
    if next_offset != file_size {
        return Err(format!(
            "runs end at byte {next_offset} of the {file_size} byte pages file"
        ));
    }
    Ok(())
}

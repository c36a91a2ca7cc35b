//! Private memory a fork left shared copy-on-write: a child's page that is the very same
//! physical page as its parent's at the same address (equal PFNs in /proc/PID/pagemap,
//! which shows PFNs to CAP_SYS_ADMIN only; without it nothing matches) holds the same
//! bytes, so it is not stored again: the child's pagemap lists it as its parent's
//! (`PageRun.from_parent`), provided the parent's image holds that address (stored, or
//! its own parent's in turn). A parent with 256 MiB of heap and 50 children that only
//! read it is stored about once instead of 51 times.
//!
//! The PFNs are compared for the whole tree right after the seize, before any memory is
//! copied: process_vm_readv pins the pages it reads (FOLL_PIN), and the kernel unshares an
//! anonymous page shared copy-on-write before it lets it be pinned, so once the parent's
//! memory is copied its pages are its own and no longer the child's. (So a dump leaves a
//! parent that runs on, `--leave-running`, with its own copy of what it shared.) The tree
//! is stopped throughout: the pages compared are the pages copied.
//!
//! Only private anonymous pages (of anonymous VMAs and the written pages of private file
//! mappings) are looked at: shared memory has its own dedup (`pages::drop_stored_shared`).

use crate::mm::VmaInfo;
use crate::pages::{Coalescer, Run};
use crate::DumpError;
use ckpt_images::intervals::intersect;
use ckpt_images::{pb, PAGE_SIZE};
use ckpt_sys::proc::{
    Pagemap, PAGE_IS_FILE, PAGE_IS_PFNZERO, PAGE_IS_PRESENT, PM_PFN_MASK, PM_PRESENT,
};
use ckpt_sys::Pid;

const PAGE: u64 = PAGE_SIZE as u64;
/// Pagemap entries read per pread (256 MiB of address space).
const CHUNK: u64 = 64 << 10;
/// The end of user space with 4-level page tables (PAGEMAP_SCAN refuses an end beyond
/// the task's size; pages above it, with 5-level tables, are simply stored).
const USER_END: u64 = (1 << 47) - PAGE;

/// Address ranges, sorted and disjoint.
pub type Ranges = Vec<(u64, u64)>;

/// A process's present anonymous pages and their pagemap entries (PFNs), read once for
/// all its children.
pub struct Frames {
    ranges: Ranges,
    /// The entries of each range, back to back; `starts[i]`: where range i's begin.
    entries: Vec<u64>,
    starts: Vec<usize>,
}

impl Frames {
    /// The entry of the page at `addr`, if present and anonymous.
    fn entry(&self, addr: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|r| r.1 <= addr);
        let r = self.ranges.get(i).filter(|r| r.0 <= addr)?;
        Some(self.entries[self.starts[i] + ((addr - r.0) / PAGE) as usize])
    }
}

/// Ranges, their entries back to back, and where each range's entries begin.
type Present = (Ranges, Vec<u64>, Vec<usize>);

/// The present anonymous pages of `pid` (PAGEMAP_SCAN) and their entries; None where the
/// kernel has no PAGEMAP_SCAN.
fn present(pm: &Pagemap) -> Result<Option<Present>, DumpError> {
    let mut ranges = Vec::new();
    if !pm.scan(
        0,
        USER_END,
        PAGE_IS_PRESENT,
        PAGE_IS_FILE | PAGE_IS_PFNZERO,
        &mut ranges,
    )? {
        return Ok(None);
    }
    let mut entries = Vec::new();
    let mut starts = Vec::with_capacity(ranges.len());
    let mut chunk = Vec::new();
    for &(s, e) in &ranges {
        starts.push(entries.len());
        let mut p = s;
        while p < e {
            let to = e.min(p + CHUNK * PAGE);
            pm.read(p, to, &mut chunk)?;
            entries.extend_from_slice(&chunk);
            p = to;
        }
    }
    Ok(Some((ranges, entries, starts)))
}

/// [`Frames`] of `pid`.
pub fn frames(pid: Pid) -> Result<Option<Frames>, DumpError> {
    let pm = Pagemap::open(pid)?;
    Ok(present(&pm)?.map(|(ranges, entries, starts)| Frames {
        ranges,
        entries,
        starts,
    }))
}

/// The anonymous pages of `child` that are its parent's very pages (same PFN), as
/// ranges. Empty where the kernel hides PFNs.
pub fn same_pages(child: Pid, parent: &Frames) -> Result<Ranges, DumpError> {
    let pm = Pagemap::open(child)?;
    let Some((ranges, entries, starts)) = present(&pm)? else {
        return Ok(Vec::new());
    };
    let mut out: Ranges = Vec::new();
    for (i, &(s, e)) in ranges.iter().enumerate() {
        let n = ((e - s) / PAGE) as usize;
        for (k, &x) in entries[starts[i]..starts[i] + n].iter().enumerate() {
            let page = s + k as u64 * PAGE;
            let pfn = x & PM_PFN_MASK;
            let same = x & PM_PRESENT != 0
                && pfn != 0
                && parent
                    .entry(page)
                    .is_some_and(|y| y & PM_PRESENT != 0 && y & PM_PFN_MASK == pfn);
            if same {
                match out.last_mut() {
                    Some(last) if last.1 == page => last.1 += PAGE,
                    _ => out.push((page, page + PAGE)),
                }
            }
        }
    }
    Ok(out)
}

/// What a process's image holds: its stored runs and what it has from its parent.
pub fn held(stored: &[Run], from_parent: &[(u64, u64)]) -> Ranges {
    let mut all: Ranges = stored
        .iter()
        .map(|r| (r.vaddr, r.vaddr + r.nr_pages * PAGE))
        .chain(from_parent.iter().copied())
        .collect();
    all.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(all.len());
    for (s, e) in all {
        match out.last_mut() {
            Some(last) if last.1 == s => last.1 = e,
            _ => out.push((s, e)),
        }
    }
    out
}

/// Splits `runs` (planned) into those to store and those that are the parent's pages:
/// in a private VMA, among the `same` pages, and held by the parent's image.
pub fn split(
    runs: Vec<Run>,
    vmas: &[VmaInfo],
    same: &[(u64, u64)],
    parent_held: &[(u64, u64)],
) -> (Vec<Run>, Ranges) {
    let shared = intersect(same, parent_held);
    if shared.is_empty() {
        return (runs, Vec::new());
    }
    let mut kept = Vec::with_capacity(runs.len());
    let mut inherited: Ranges = Vec::new();
    let mut vi = 0;
    for r in runs {
        while vmas[vi].vma.end <= r.vaddr {
            vi += 1;
        }
        let end = r.vaddr + r.nr_pages * PAGE;
        let private = matches!(
            vmas[vi].kind(),
            pb::VmaKind::VmaAnon | pb::VmaKind::VmaFilePrivate
        );
        // Per run: what comes out never spans two VMAs, as the run did not.
        let mut keep = Coalescer::default();
        let mut at = r.vaddr;
        if private {
            let first = shared.partition_point(|s| s.1 <= r.vaddr);
            for &(s, e) in shared[first..].iter().take_while(|s| s.0 < end) {
                let (s, e) = (s.max(r.vaddr), e.min(end));
                keep.push(at, (s - at) / PAGE, r.unreadable);
                inherited.push((s, e));
                at = e;
            }
        }
        keep.push(at, (end - at) / PAGE, r.unreadable);
        kept.extend(keep.into_runs());
    }
    (kept, inherited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersections() {
        let a = [(0, 10), (20, 30), (40, 50)];
        let b = [(5, 25), (28, 45)];
        assert_eq!(
            intersect(&a, &b),
            vec![(5, 10), (20, 25), (28, 30), (40, 45)]
        );
        assert!(intersect(&a, &[]).is_empty());
    }
}

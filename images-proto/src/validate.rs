//! Consistency checks of decoded memory records, before anything acts on them: the VMAs a
//! restore will map and the page runs it will copy. Here rather than in restore so the
//! fuzz targets exercise them too.

use crate::{pb, PAGE_SIZE};

/// Highest user address on x86-64 with 4-level page tables.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// VMAs must be page aligned, inside user space, sorted and disjoint.
pub fn vmas(vmas: &[pb::Vma]) -> Result<(), String> {
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
pub fn runs(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64) -> pb::Vma {
        pb::Vma {
            start,
            end,
            prot: 3,
            ..Default::default()
        }
    }

    fn run(vaddr: u64, nr_pages: u64, offset: u64) -> pb::PageRun {
        pb::PageRun {
            vaddr,
            nr_pages,
            offset,
        }
    }

    #[test]
    fn overlapping_unsorted_or_kernel_vmas_are_refused() {
        assert!(vmas(&[vma(0x1000, 0x3000), vma(0x4000, 0x5000)]).is_ok());
        assert!(vmas(&[vma(0x1000, 0x3000), vma(0x2000, 0x5000)]).is_err());
        assert!(vmas(&[vma(0x4000, 0x5000), vma(0x1000, 0x3000)]).is_err());
        assert!(vmas(&[vma(0x1000, 0x1800)]).is_err());
        assert!(vmas(&[vma(TASK_SIZE, TASK_SIZE + 0x1000)]).is_err());
        assert!(vmas(&[vma(0x3000, 0x3000)]).is_err());
    }

    #[test]
    fn runs_must_sit_in_vmas_and_cover_the_file_back_to_back() {
        let v = [vma(0x10000, 0x20000)];
        let p = PAGE_SIZE as u64;
        let ok = [run(0x10000, 2, p), run(0x14000, 1, 3 * p)];
        assert!(runs(&v, &ok, 3, 4 * p).is_ok());
        // Outside every VMA, past the file, a hole in the file, a wrong total.
        assert!(runs(&v, &[run(0x30000, 1, p)], 1, 2 * p).is_err());
        assert!(runs(&v, &[run(0x10000, 2, p)], 2, 2 * p).is_err());
        assert!(runs(&v, &[run(0x10000, 1, 2 * p)], 1, 3 * p).is_err());
        assert!(runs(&v, &ok, 4, 4 * p).is_err());
        // Sizes that overflow are refused, not wrapped.
        assert!(runs(&v, &[run(0x10000, u64::MAX, p)], u64::MAX, u64::MAX).is_err());
    }
}

//! Pages a child had in common with its parent at the dump (the same physical page,
//! shared copy-on-write since a fork: `PageRun.from_parent`) are stored once, in the
//! parent's part of the pages file, or further up. Before anything is created each such
//! run of a child becomes ordinary runs pointing at the bytes its parent's image holds
//! at the same addresses, so the fill needs no notion of it; a child's page the parent's
//! image does not hold refuses the restore (it would otherwise be left zero).
//!
//! Parents come before their children (the tree's order), so a parent's runs are already
//! resolved when its children's are: a grandparent's page reaches a grandchild.

use crate::image::ProcessImage;
use crate::RestoreError;
use ckpt_images::{pb, PAGE_SIZE};

const PAGE: u64 = PAGE_SIZE as u64;

/// Resolves every process's `from_parent` runs; `parent[i]` is the index in `imgs` of
/// process i's parent (None for the root).
pub fn resolve(imgs: &mut [ProcessImage], parent: &[Option<usize>]) -> Result<(), RestoreError> {
    for i in 0..imgs.len() {
        if imgs[i].from_parent.is_empty() {
            continue;
        }
        let pid = imgs[i].core.pid;
        let p = parent[i].filter(|&p| p < i).ok_or_else(|| {
            RestoreError::Refused(format!(
                "pid {pid}: its image lists pages of its parent, but it has no parent in the tree"
            ))
        })?;
        let mut add = Vec::new();
        for r in &imgs[i].from_parent {
            pieces(&imgs[p].runs, r, &mut add).map_err(|(a, b)| {
                RestoreError::Refused(format!(
                    "pid {pid}: pages [{a:#x}, {b:#x}) are its parent's (pid {}), whose image \
                     holds none there",
                    imgs[p].core.pid
                ))
            })?;
        }
        let img = &mut imgs[i];
        let mut ranges: Vec<(u64, u64)> = img
            .from_parent
            .iter()
            .map(|r| (r.vaddr, r.vaddr + r.nr_pages * PAGE))
            .collect();
        ranges.sort_unstable();
        img.inherited = ckpt_images::intervals::merged(ranges);
        img.from_parent.clear();
        img.runs.extend(add);
        img.runs.sort_unstable_by_key(|r| r.vaddr);
    }
    Ok(())
}

/// The parts of `held` (a parent's resolved runs, by address) covering `r`, as runs at
/// the parent's offsets; Err with the first range not covered.
fn pieces(
    held: &[pb::PageRun],
    r: &pb::PageRun,
    out: &mut Vec<pb::PageRun>,
) -> Result<(), (u64, u64)> {
    let end = r.vaddr + r.nr_pages * PAGE;
    let mut at = r.vaddr;
    let first = held.partition_point(|h| h.vaddr + h.nr_pages * PAGE <= at);
    for h in &held[first..] {
        if at >= end {
            break;
        }
        let h_end = h.vaddr + h.nr_pages * PAGE;
        if h.vaddr > at {
            return Err((at, h.vaddr.min(end)));
        }
        let to = h_end.min(end);
        out.push(pb::PageRun {
            vaddr: at,
            nr_pages: (to - at) / PAGE,
            offset: h.offset + (at - h.vaddr),
            from_parent: false,
        });
        at = to;
    }
    if at < end {
        return Err((at, end));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vaddr: u64, nr_pages: u64, offset: u64) -> pb::PageRun {
        pb::PageRun {
            vaddr,
            nr_pages,
            offset,
            from_parent: false,
        }
    }

    #[test]
    fn a_childs_pages_point_at_its_parents() {
        let held = [run(0x1000, 2, 4096), run(0x3000, 3, 0x10000)];
        let mut out = Vec::new();
        pieces(&held, &run(0x2000, 3, 0), &mut out).unwrap();
        assert_eq!(out, vec![run(0x2000, 1, 8192), run(0x3000, 2, 0x10000)]);
        // A hole in what the parent holds.
        let mut out = Vec::new();
        assert_eq!(
            pieces(&held, &run(0x1000, 6, 0), &mut out),
            Err((0x6000, 0x7000))
        );
        let held = [run(0x1000, 1, 4096), run(0x3000, 1, 8192)];
        assert_eq!(
            pieces(&held, &run(0x1000, 3, 0), &mut Vec::new()),
            Err((0x2000, 0x3000))
        );
    }
}

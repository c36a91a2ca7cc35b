//! Copy-on-write sharing of private memory at restore: pages a child had in common with
//! its parent at the dump (`ProcessImage::inherited`, from `PageRun.from_parent`) are
//! given to it the way the original fork did, copy-on-write from the parent, instead of a
//! copy of its own (a parent with 32 MiB and 8 children: ~290 MiB summed Pss restored
//! otherwise, ~34 MiB with this).
//!
//! How: a seed whose children share a VMA of its (a "region") maps that VMA at its own
//! address before it forks them — ckpt reserved the address range with a placeholder
//! before it forked the first seed (`ckpt_sys::reserve`), so it is free in every seed —
//! and copies its pages in (UFFDIO_COPY from the pages file). Its children inherit the
//! region. A child that shares memory with its own children in turn writes its own pages
//! into the inherited region (only those that differ from its parent's) or maps a fresh
//! one where its VMA is not inside an inherited region. The puppet then leaves in place
//! every VMA that lies inside a region of its address space (`Task::kept`) instead of
//! mapping it anew, drops the pages of it that are not the image's (`Task::valid`), and
//! fills only those. Everything is decided here, in ckpt, before any fork, from the
//! images alone: each seed and puppet just does its part of the plan.
//!
//! In place rather than at a temporary address and mremap()ed: a VMA moved by mremap
//! keeps the page offset of where it was made, and a mapping next to it no longer merges
//! with it. A range that ckpt itself occupies is no region (that VMA is copied as
//! before); so is memory that is not plain private anonymous (MAP_NORESERVE, droppable,
//! stacks, transparent huge pages, which UFFDIO_COPY would split), and every VMA of a
//! compressed image (the seeds would have to decompress).
//!
//! Validity, page by page: the content of process X's address space at a page is X's
//! image's page if X wrote it into a region of its own, or if it was valid in X's parent
//! and X inherited that page (`inherited`) through a fork by that parent (a process
//! forked by a sibling or a helper inherits nothing valid).

use crate::fill;
use crate::image::ProcessImage;
use crate::tree;
use ckpt_images::intervals::{intersect, merged, subtract, union};
use ckpt_images::{pb, PAGE_SIZE};

const PAGE: u64 = PAGE_SIZE as u64;

/// Sorted, disjoint `[start, end)` address ranges.
pub type Ranges = Vec<(u64, u64)>;

/// One task's part of the plan.
#[derive(Debug, Default, Clone)]
pub struct Task {
    /// Seed: fresh memory mapped over these ranges (placeholders or inherited memory).
    pub fresh: Ranges,
    /// Seed: the regions its pages are written into (fresh or inherited), registered
    /// with its userfaultfd for the copy.
    pub regions: Ranges,
    /// Seed: inherited pages dropped before its own are written there.
    pub zap: Ranges,
    /// Seed: its runs copied into `regions`.
    pub write: Vec<pb::PageRun>,
    /// Puppet: VMAs (their ranges) left in place from the seed, not mapped anew.
    pub kept: Ranges,
    /// Puppet: the pages of `kept` that hold the image's bytes already.
    pub valid: Ranges,
}

impl Task {
    /// Puppet: the pages of `kept` that must be dropped (not the image's).
    pub fn stale(&self) -> Ranges {
        subtract(&self.kept, &self.valid)
    }

    /// Puppet: the runs still to be copied.
    pub fn to_fill(&self, runs: &[pb::PageRun]) -> Vec<pb::PageRun> {
        clip(runs, &self.valid, false)
    }
}

pub struct Plan {
    /// By `tree::Plan::nodes` index.
    pub tasks: Vec<Task>,
    /// By live process: its node.
    nodes_of_live: Vec<usize>,
    /// Every range some seed maps fresh: what ckpt reserves.
    pub reserved: Ranges,
}

impl Plan {
    /// The part of live process `l` (index of `imgs`).
    pub fn live(&self, l: usize) -> &Task {
        &self.tasks[self.nodes_of_live[l]]
    }
}

/// Whether VMA `v` may be a region or be kept from one (see the module doc).
fn eligible(v: &pb::Vma, thp: fill::Thp) -> bool {
    v.kind == pb::VmaKind::VmaAnon as i32
        && v.map_flags & (crate::image::MAP_DROPPABLE | crate::image::MAP_NORESERVE) == 0
        && !v.growsdown
        && !fill::wants_thp(v, thp)
}

/// The plan for the tree, or None when no memory is shared. `own`: ckpt's mappings
/// (regions must avoid them).
pub fn plan(
    tree: &tree::Plan,
    imgs: &[ProcessImage],
    own: &[(u64, u64)],
    thp: fill::Thp,
) -> Option<Plan> {
    if imgs.iter().all(|i| i.inherited.is_empty()) || imgs.iter().any(|i| i.frames.is_some()) {
        return None;
    }
    let held: Vec<Ranges> = imgs
        .iter()
        .map(|i| merged(i.runs.iter().map(|r| (r.vaddr, end(r))).collect()))
        .collect();
    let mut own = own.to_vec();
    own.sort_unstable();
    let own = merged(own);
    let mut candidates: Vec<Ranges> = vec![Vec::new(); imgs.len()];
    for (x, n) in tree.nodes.iter().enumerate() {
        let Some(l) = n.live else { continue };
        let sharers: Vec<usize> = n
            .forks
            .iter()
            .filter(|&&c| tree.nodes[c].parent == Some(x))
            .filter_map(|&c| tree.nodes[c].live)
            .filter(|&c| !imgs[c].inherited.is_empty())
            .collect();
        for v in imgs[l].vmas.iter().filter(|v| eligible(v, thp)) {
            let r = [(v.start, v.end)];
            if !intersect(&held[l], &r).is_empty()
                && sharers
                    .iter()
                    .any(|&c| !intersect(&imgs[c].inherited, &r).is_empty())
                && intersect(&own, &r).is_empty()
            {
                candidates[l].push((v.start, v.end));
            }
        }
    }
    if candidates.iter().all(|c| c.is_empty()) {
        return None;
    }
    let n = tree.nodes.len();
    let mut tasks = vec![Task::default(); n];
    let mut spaces: Vec<Ranges> = vec![Vec::new(); n];
    let mut valids: Vec<Ranges> = vec![Vec::new(); n];
    // In fork order: a task's address space is a copy of its forker's.
    let mut todo: Vec<(usize, Option<usize>)> = vec![(0, None)];
    while let Some((x, forker)) = todo.pop() {
        let node = &tree.nodes[x];
        let space = forker.map_or_else(Vec::new, |f| spaces[f].clone());
        let from_parent = match forker {
            Some(f) if node.parent == Some(f) => valids[f].clone(),
            _ => Vec::new(),
        };
        if let Some(l) = node.live {
            let (t, space, valid) =
                visit(&imgs[l], &held[l], &candidates[l], space, &from_parent, thp);
            tasks[x] = t;
            spaces[x] = space;
            valids[x] = valid;
        } else {
            spaces[x] = space;
        }
        todo.extend(node.forks.iter().map(|&c| (c, Some(x))));
    }
    let mut reserved: Ranges = tasks.iter().flat_map(|t| t.fresh.iter().copied()).collect();
    reserved.sort_unstable();
    Some(Plan {
        tasks,
        nodes_of_live: tree
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.live.is_some())
            .map(|(i, _)| i)
            .collect(),
        reserved: merged(reserved),
    })
}

/// One live task: its seed's regions and writes, its puppet's kept VMAs and valid pages;
/// returns them with its address space's regions and valid pages as its children
/// inherit them.
fn visit(
    img: &ProcessImage,
    held: &Ranges,
    candidates: &Ranges,
    mut space: Vec<(u64, u64)>,
    parents_valid: &Ranges,
    thp: fill::Thp,
) -> (Task, Vec<(u64, u64)>, Ranges) {
    let inherited = intersect(parents_valid, &img.inherited);
    let mut t = Task::default();
    let mut writes: Ranges = Vec::new();
    for &(c, d) in candidates {
        let mine = intersect(held, &[(c, d)]);
        if space.iter().any(|&(a, b)| a <= c && d <= b) {
            // Inside one inherited region: only the pages that are not its parent's.
            let w = subtract(&mine, &inherited);
            t.zap.extend(&w);
            writes.extend(w);
        } else {
            // A mapping over the range replaces whatever parts of regions were there.
            space = space
                .into_iter()
                .flat_map(|(a, b)| subtract(&[(a, b)], &[(c, d)]))
                .collect();
            space.push((c, d));
            t.fresh.push((c, d));
            writes.extend(mine);
        }
        t.regions.push((c, d));
    }
    space.sort_unstable();
    let valid = union(
        &intersect(held, &t.regions),
        &subtract(&inherited, &t.regions),
    );
    t.write = clip(&img.runs, &writes, true);
    t.kept = img
        .vmas
        .iter()
        .filter(|v| {
            eligible(v, thp)
                && !intersect(held, &[(v.start, v.end)]).is_empty()
                && space.iter().any(|&(a, b)| a <= v.start && v.end <= b)
        })
        .map(|v| (v.start, v.end))
        .collect();
    t.valid = intersect(&valid, &t.kept);
    (t, space, valid)
}

fn end(r: &pb::PageRun) -> u64 {
    r.vaddr + r.nr_pages * PAGE
}

/// The parts of `runs` (sorted by address) inside `ranges` (`inside`), or outside them,
/// with their file offsets moved along.
fn clip(runs: &[pb::PageRun], ranges: &[(u64, u64)], inside: bool) -> Vec<pb::PageRun> {
    let mut out = Vec::new();
    for r in runs {
        let span = [(r.vaddr, end(r))];
        let parts = if inside {
            intersect(&span, ranges)
        } else {
            subtract(&span, ranges)
        };
        out.extend(parts.into_iter().map(|(s, e)| pb::PageRun {
            vaddr: s,
            nr_pages: (e - s) / PAGE,
            offset: r.offset + (s - r.vaddr),
            from_parent: false,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_cut_with_their_offsets() {
        let run = |vaddr, nr_pages, offset| pb::PageRun {
            vaddr,
            nr_pages,
            offset,
            from_parent: false,
        };
        let runs = [run(0x1000, 4, 0x10000), run(0x8000, 1, 0x20000)];
        let valid = [(0x2000, 0x4000)];
        assert_eq!(
            clip(&runs, &valid, false),
            vec![
                run(0x1000, 1, 0x10000),
                run(0x4000, 1, 0x13000),
                run(0x8000, 1, 0x20000)
            ]
        );
        assert_eq!(clip(&runs, &valid, true), vec![run(0x2000, 2, 0x11000)]);
    }
}

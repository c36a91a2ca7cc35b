//! Dirty-page tracking between dumps: pre-dump, `--prev-images-dir`, `--track-mem`.
//!
//! This kernel has no soft-dirty bits, so writes are tracked with a userfaultfd in
//! write-protect async mode (`ckpt_sys::track`). The tracker must outlive the ckpt run
//! that arms it (the pre-dump and the final dump are separate runs), and a context lives
//! as long as one fd of it is open: so it is injected into the process itself, moved to a
//! high fd, close-on-exec (an exec makes a new address space anyway). In async mode the
//! kernel resolves every write fault itself: the process never blocks on ckpt and never
//! sees a fault it would not see otherwise, whether ckpt is running, done or killed.
//!
//! Only private anonymous VMAs are tracked. Shared memory is written through other
//! mappings the process's page tables never see, and a private file mapping whose written
//! page is dropped again (MADV_DONTNEED) gets a uffd-wp marker that reads as "swapped,
//! not written" while the page itself reverts to the file: both are copied whole each
//! time.
//!
//! A page of a tracked VMA is taken from the previous image only if all hold: the
//! previous image recorded this process's tracker (same pid, start time, fd and context
//! inode) and the page, and no other dump re-armed that tracker since (the round token
//! in the registry: a dump that failed after re-protecting, or a later image, makes an
//! older image unusable as a base, as its re-protected pages would read unwritten); the VMA was registered before this round (a new, moved or
//! re-mapped VMA is not: mremap without EVENT_REMAP and fork without EVENT_FORK drop the
//! registration); and the scan does not report the page written. A page the previous
//! image had that is now neither present nor swapped (munmap, MADV_DONTNEED) is not in
//! the new image at all, so it reads zero after restore.

use crate::mm::VmaInfo;
use crate::pages::{Coalescer, Run};
use crate::{refuse, DumpError};
use ckpt_images::{pb, PAGE_SIZE};
use ckpt_sys::proc::{Mapping, Pagemap};
use ckpt_sys::uffd::Uffd;
use ckpt_sys::Pid;
use std::path::Path;

const PAGE: u64 = PAGE_SIZE as u64;
/// Where ckpt records the inodes of the trackers it armed, so any later dump knows such an
/// fd for its own (and leaves it out of the image) rather than refusing it as a user's
/// userfaultfd. A tmpfs: inode numbers are reused only after a reboot clears it.
const REGISTRY: &str = "/run/ckpt/trackers";
/// VmFlags letter of a VMA registered for write-protect.
const UW: &str = "uw";
/// MAP_DROPPABLE: userfaultfd does not register such memory.
const MAP_DROPPABLE: u32 = 0x08;

/// Refuses a tracked dump where this kernel has no way to track writes.
pub fn ensure_available() -> Result<(), DumpError> {
    if ckpt_sys::track::wp_async_available() {
        tracing::info!("dirty tracking: userfaultfd write-protect (async) + PAGEMAP_SCAN");
        return Ok(());
    }
    let soft = matches!(ckpt_sys::probe::soft_dirty_works(), Ok(Some(true)));
    Err(refuse(if soft {
        "dirty tracking: this kernel has soft-dirty bits but no userfaultfd write-protect \
         async mode (6.7+), and ckpt tracks writes only the userfaultfd way: pre-dump and \
         incremental dumps are not possible here (see `ckpt check`)"
    } else {
        "dirty tracking: this kernel has neither soft-dirty bits nor userfaultfd \
         write-protect async mode + PAGEMAP_SCAN (6.7+): pre-dump and incremental dumps are \
         not possible here (see `ckpt check`)"
    }))
}

fn registered(ino: u64) -> bool {
    Path::new(REGISTRY).join(ino.to_string()).exists()
}

/// A registered tracker's record: "pid start_time round" (the process it was armed in,
/// and the token of the last dump that armed it).
fn record(ino: u64) -> Option<(i32, u64, u64)> {
    let s = std::fs::read_to_string(Path::new(REGISTRY).join(ino.to_string())).ok()?;
    let mut it = s.split_whitespace().map(|w| w.parse::<u64>().ok());
    Some((it.next()?? as i32, it.next()??, it.next()??))
}

fn owner(ino: u64) -> Option<(i32, u64)> {
    record(ino).map(|(p, s, _)| (p, s))
}

/// Records that this dump (`round`) arms the tracker, before it protects anything: from
/// then on no earlier image can be the base of the next dump (what it protects again
/// would be missed), whether or not this dump completes.
fn register(ino: u64, pid: Pid, start_time: u64, round: u64) -> Result<(), DumpError> {
    let p = Path::new(REGISTRY);
    let tmp = p.join(format!(".{ino}.{}", std::process::id()));
    std::fs::create_dir_all(p)
        .and_then(|_| std::fs::write(&tmp, format!("{pid} {start_time} {round}\n")))
        .and_then(|_| std::fs::rename(&tmp, p.join(ino.to_string())))
        .map_err(|e| refuse(format!("{REGISTRY}: {e}")))
}

/// A token for this round: never 0 (images from before the field), unlikely to repeat.
fn new_round() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    std::collections::hash_map::RandomState::new().hash_one((now, std::process::id())) | 1
}

/// Drops the registry entries of trackers whose processes the dump killed.
pub fn forget(inodes: &[u64]) {
    for ino in inodes {
        let _ = std::fs::remove_file(Path::new(REGISTRY).join(ino.to_string()));
    }
}

/// Whether fd `fd` of `pid` is a tracker a ckpt armed (also a copy a child inherited):
/// not the process's own file, never dumped.
pub fn is_ours(pid: Pid, fd: i32) -> bool {
    ckpt_sys::track::fd_uffd_inode(pid, fd).is_some_and(registered)
}

/// The tracker armed in this very process, if it holds one (a child may also hold a copy
/// of its parent's, which tracks the parent's memory, not the child's).
fn find_mine(pid: Pid, start_time: u64) -> Option<(i32, u64)> {
    ckpt_sys::proc::fds(pid)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|fd| ckpt_sys::track::fd_uffd_inode(pid, fd).map(|i| (fd, i)))
        .find(|&(_, i)| owner(i) == Some((pid.as_raw(), start_time)))
}

/// Hides the write-protect registration of the process's mappings when it is ckpt's own
/// (every userfaultfd of the process is a tracker), so the known-state check does not
/// refuse it and the image does not carry it.
pub fn hide_own_letters(pid: Pid, maps: &mut [Mapping]) {
    if !maps.iter().any(|m| m.vm_flags.iter().any(|f| f == UW)) {
        return;
    }
    let fds = ckpt_sys::proc::fds(pid).unwrap_or_default();
    let uffds: Vec<i32> = fds
        .into_iter()
        .filter(|&fd| ckpt_sys::track::fd_uffd_inode(pid, fd).is_some())
        .collect();
    if uffds.is_empty() || !uffds.iter().all(|&fd| is_ours(pid, fd)) {
        return;
    }
    for m in maps {
        m.vm_flags.retain(|f| f != UW);
    }
}

/// What the dump needs to know of the image before (`--prev-images-dir`).
pub struct Parent {
    pub link: pb::ParentLink,
    trackers: Vec<pb::Tracker>,
    /// Per pid: every page the chain holds for it, links counted from the new image.
    pages: std::collections::HashMap<i32, Vec<pb::ParentRun>>,
}

impl Parent {
    /// Opens and verifies the previous image (and its chain, link by link) before the
    /// tree is touched. `prev` is relative to `dir` unless absolute (CRIU's spelling).
    pub fn open(dir: &Path, prev: &str) -> Result<Parent, DumpError> {
        let path = ckpt_images::chain::resolve(dir, prev);
        let d = ckpt_images::ImageDir::open(&path)?;
        let ancestors = ckpt_images::chain::ancestors(&d, ckpt_images::ImageDir::open)?;
        let depth = ancestors.len() as u32 + 1;
        if depth >= ckpt_images::chain::MAX_DEPTH {
            return Err(refuse(format!(
                "{}: a chain of {depth} images is the longest ckpt follows; make a full dump",
                path.display()
            )));
        }
        let inv = d.inventory();
        let mut pages = std::collections::HashMap::new();
        for &pid in &inv.pids {
            if let Some(mut runs) = ckpt_images::chain::pages_of(&d, pid)? {
                for r in &mut runs {
                    r.link += 1;
                }
                pages.insert(pid, runs);
            }
        }
        Ok(Parent {
            link: pb::ParentLink {
                dir: prev.into(),
                inventory_xxh3: ckpt_images::chain::inventory_xxh3(&path)?,
                depth,
            },
            trackers: inv.trackers.clone(),
            pages,
        })
    }
}

/// Checks a tracked dump's options and opens the previous image, if any, before the
/// tree is touched.
pub fn prepare(opts: &crate::DumpOptions) -> Result<Option<Parent>, DumpError> {
    if !opts.tracking() {
        return Ok(None);
    }
    if opts.compress.is_some() {
        return Err(refuse(
            "--compress cannot be used with --pre-dump, --prev-images-dir or --track-mem: \
             a chain refers to raw pages",
        ));
    }
    ensure_available()?;
    let Some(prev) = &opts.prev_images_dir else {
        return Ok(None);
    };
    let here = ckpt_images::chain::resolve(&opts.dir, ".");
    if ckpt_images::chain::resolve(&opts.dir, prev) == here {
        return Err(refuse(format!(
            "--prev-images-dir {prev} is the images dir {} itself",
            opts.dir.display()
        )));
    }
    Parent::open(&opts.dir, prev).map(Some)
}

/// Writes parentmap-PID.img: the pages of `pid` an earlier image of the chain holds.
pub fn write_parentmap(
    sink: &mut ckpt_images::ImageSink,
    pid: i32,
    refs: &[pb::ParentRun],
) -> Result<(), DumpError> {
    let name = ckpt_images::names::parentmap(pid);
    let mut w = sink.records(&name, ckpt_images::Kind::ParentMap)?;
    for r in refs {
        w.write(r)?;
    }
    sink.commit_records(&name, w)?;
    Ok(())
}

/// How a process is tracked in this round.
pub struct Plan {
    /// The fd of its tracker, if it already has one (else one is injected).
    existing: Option<(i32, u64)>,
    /// The previous image's pages of this process, if its tracker is the one the
    /// previous image armed.
    parent_pages: Option<Vec<pb::ParentRun>>,
    /// What this dump copied of it before the freeze (`livecopy.rs`).
    live: Vec<pb::ParentRun>,
}

impl Plan {
    pub fn needs_injection(&self) -> bool {
        self.existing.is_none()
    }
}

/// A process whose tracker the previous image armed, not re-armed by any dump since.
pub struct Continuing {
    /// Its fd and context inode.
    pub tracker: (i32, u64),
    pub start_time: u64,
    /// Every page the chain holds for it.
    pub parent_pages: Vec<pb::ParentRun>,
}

/// Whether `pid` is tracked since `parent` (read while it runs or is stopped).
pub fn continuing(pid: Pid, parent: &Parent) -> Result<Option<Continuing>, DumpError> {
    let start_time = ckpt_sys::proc::stat(pid)?.starttime;
    let mine = find_mine(pid, start_time);
    Ok(parent
        .trackers
        .iter()
        .find(|t| {
            t.pid == pid.as_raw()
                && t.start_time == start_time
                && mine == Some((t.fd, t.inode))
                && record(t.inode).map(|r| r.2) == Some(t.round)
        })
        .map(|t| Continuing {
            tracker: (t.fd, t.inode),
            start_time,
            parent_pages: parent.pages.get(&t.pid).cloned().unwrap_or_default(),
        }))
}

/// Draws and registers a new round for the tracker `inode` of `pid` before anything of it
/// is protected again (see `register`); returns the token.
pub fn rearm(inode: u64, pid: Pid, start_time: u64) -> Result<u64, DumpError> {
    let round = new_round();
    register(inode, pid, start_time, round)?;
    Ok(round)
}

/// Decides how `pid` is tracked this round (read while it is stopped). `live`: what this
/// dump copied of it before the freeze, valid only if nothing re-armed its tracker since.
pub fn plan(
    pid: Pid,
    parent: Option<&Parent>,
    live: Option<&crate::livecopy::Live>,
) -> Result<Plan, DumpError> {
    let start_time = ckpt_sys::proc::stat(pid)?.starttime;
    let mine = find_mine(pid, start_time);
    if let Some(l) = live {
        if mine == Some(l.tracker)
            && l.start_time == start_time
            && record(l.tracker.1).map(|r| r.2) == Some(l.round)
        {
            return Ok(Plan {
                existing: mine,
                parent_pages: Some(l.parent_pages.clone()),
                live: l.copied.clone(),
            });
        }
    }
    let parent_pages = match parent {
        Some(p) => continuing(pid, p)?.map(|c| c.parent_pages),
        None => None,
    };
    if parent.is_some() && parent_pages.is_none() {
        tracing::info!(
            %pid,
            "not tracked since the previous image (a new process, its tracker gone, or re-armed \
             by another dump since): copied whole"
        );
    }
    Ok(Plan {
        existing: mine,
        parent_pages,
        live: Vec::new(),
    })
}

/// One round of tracking in a stopped process.
pub struct Round {
    pub tracker: pb::Tracker,
    /// Ranges of the VMAs that were tracked since the previous image.
    tracked: Vec<(u64, u64)>,
    /// Pages written since then (sorted, merged).
    written: Vec<(u64, u64)>,
    parent_pages: Vec<pb::ParentRun>,
    /// This dump's copies made before the freeze (sorted, disjoint).
    live: Vec<pb::ParentRun>,
}

/// Arms (or re-arms) tracking in the stopped process: its tracker is `injected` (a fresh
/// context from `remote::collect`) or the one `plan` found; every private anonymous VMA
/// not yet registered is registered, and every present page protected (the written ones
/// reported). `maps` is the process's smaps as read when it stopped (with "uw" letters).
pub fn arm(
    pid: Pid,
    maps: &[Mapping],
    vmas: &[VmaInfo],
    plan: Plan,
    injected: Option<i32>,
) -> Result<Round, DumpError> {
    let t = std::time::Instant::now();
    let (fd, first) = match (plan.existing, injected) {
        (Some((fd, _)), _) => (fd, false),
        (None, Some(fd)) => (fd, true),
        (None, None) => {
            return Err(DumpError::Lost(format!(
                "pid {pid}: no tracker to arm (none injected)"
            )))
        }
    };
    let uffd = Uffd::tracker(ckpt_sys::process::steal_fd(pid, fd)?, first)?;
    let inode = ckpt_sys::track::fd_uffd_inode(pid, fd)
        .ok_or_else(|| DumpError::Lost(format!("pid {pid}: fd {fd} is not a userfaultfd")))?;
    let start_time = ckpt_sys::proc::stat(pid)?.starttime;
    let round = rearm(inode, pid, start_time)?;
    let pagemap = Pagemap::open(pid)?;
    let continuing = plan.parent_pages.is_some();
    let mut tracked = Vec::new();
    let mut written = Vec::new();
    let mut registered_now = 0;
    for v in vmas {
        if v.kind() != pb::VmaKind::VmaAnon || v.vma.map_flags & MAP_DROPPABLE != 0 {
            continue;
        }
        let (start, end) = (v.vma.start, v.vma.end);
        let was = !first
            && maps
                .iter()
                .any(|m| m.start <= start && end <= m.end && m.vm_flags.iter().any(|f| f == UW));
        if !was {
            if let Err(e) = uffd.register_wp(start, end - start) {
                // Not trackable (a kind of memory the kernel will not register): it is
                // simply copied whole every time.
                tracing::debug!(%pid, "{e}: not tracked");
                continue;
            }
            registered_now += 1;
        } else if continuing {
            tracked.push((start, end));
        }
        pagemap.take_written(start, end, &mut written)?;
    }
    written.sort_unstable();
    tracing::debug!(
        %pid,
        fd,
        inode,
        registered_now,
        tracked = tracked.len(),
        written_ranges = written.len(),
        ms = ckpt_images::units::ms(t),
        "tracking armed"
    );
    Ok(Round {
        tracker: pb::Tracker {
            pid: pid.as_raw(),
            fd,
            inode,
            start_time,
            round,
        },
        tracked,
        written,
        parent_pages: plan.parent_pages.unwrap_or_default(),
        live: plan.live,
    })
}

/// A sorted, disjoint list of ranges walked at increasing addresses.
struct Cursor<'a, T> {
    items: &'a [T],
    at: usize,
}

impl<'a, T> Cursor<'a, T> {
    fn new(items: &'a [T]) -> Self {
        Cursor { items, at: 0 }
    }

    /// The item holding `addr`, given `span` (its [start, end)).
    fn find(&mut self, addr: u64, span: impl Fn(&T) -> (u64, u64)) -> Option<&'a T> {
        while self.at < self.items.len() && span(&self.items[self.at]).1 <= addr {
            self.at += 1;
        }
        self.items
            .get(self.at)
            .filter(|it| span(it).0 <= addr && addr < span(it).1)
    }

    /// Where what [`find`](Self::find) says of `addr` may change next: the end of the
    /// item holding it, or the start of the next one (u64::MAX past the last).
    fn boundary(&mut self, addr: u64, span: impl Fn(&T) -> (u64, u64)) -> u64 {
        while self.at < self.items.len() && span(&self.items[self.at]).1 <= addr {
            self.at += 1;
        }
        match self.items.get(self.at).map(&span) {
            Some((s, e)) if s <= addr => e,
            Some((s, _)) => s,
            None => u64::MAX,
        }
    }
}

/// Splits the pages to keep into those copied now and those the previous images hold
/// (unwritten since, in a tracked VMA, and in the chain) or this dump copied before the
/// freeze (unwritten since that copy). Without a previous image of this process,
/// everything is copied.
pub fn split(plan: Vec<Run>, round: &Round) -> (Vec<Run>, Vec<pb::ParentRun>) {
    if round.tracked.is_empty() || (round.parent_pages.is_empty() && round.live.is_empty()) {
        return (plan, Vec::new());
    }
    // Pieces never join across the plan's runs, which never span two VMAs.
    let mut copy = Vec::new();
    let mut refs: Vec<pb::ParentRun> = Vec::new();
    let mut tracked = Cursor::new(&round.tracked);
    let mut written = Cursor::new(&round.written);
    let mut parent = Cursor::new(&round.parent_pages);
    let mut live = Cursor::new(&round.live);
    let span = |p: &pb::ParentRun| (p.vaddr, p.vaddr + p.nr_pages * PAGE);
    // The plan is cut where any of the four lists changes, and each piece is decided
    // whole (a 1 GiB plan is a handful of pieces, not 262144 pages).
    for r in plan {
        let mut piece = Coalescer::default();
        let first_ref = refs.len();
        let end = r.vaddr + r.nr_pages * PAGE;
        let mut a = r.vaddr;
        while a < end {
            let b = end
                .min(tracked.boundary(a, |&t| t))
                .min(written.boundary(a, |&w| w))
                .min(live.boundary(a, span))
                .min(parent.boundary(a, span));
            let from_parent =
                if tracked.find(a, |&t| t).is_some() && written.find(a, |&w| w).is_none() {
                    live.find(a, span).or_else(|| parent.find(a, span))
                } else {
                    None
                };
            let n = (b - a) / PAGE;
            match from_parent {
                Some(p) => {
                    let offset = p.offset + (a - p.vaddr);
                    match refs[first_ref..].last_mut() {
                        Some(l)
                            if l.link == p.link
                                && l.pages_id == p.pages_id
                                && l.vaddr + l.nr_pages * PAGE == a
                                && l.offset + l.nr_pages * PAGE == offset =>
                        {
                            l.nr_pages += n
                        }
                        _ => refs.push(pb::ParentRun {
                            vaddr: a,
                            nr_pages: n,
                            link: p.link,
                            offset,
                            pages_id: p.pages_id,
                        }),
                    }
                }
                None => piece.push(a, n, r.unreadable),
            }
            a = b;
        }
        copy.extend(piece.into_runs());
    }
    (copy, refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(vaddr: u64, n: u64) -> Run {
        Run {
            vaddr,
            nr_pages: n,
            unreadable: false,
        }
    }

    #[test]
    fn unwritten_tracked_pages_come_from_the_parent() {
        let p = |v: u64| v * PAGE;
        let round = Round {
            tracker: pb::Tracker::default(),
            // Pages 0..8 tracked; 10..12 are a new VMA.
            tracked: vec![(p(0), p(8))],
            written: vec![(p(2), p(3))],
            // The parent has 0..4 in its own file at 4096, 5..6 in its parent.
            parent_pages: vec![
                pb::ParentRun {
                    vaddr: p(0),
                    nr_pages: 4,
                    link: 1,
                    offset: 4096,
                    pages_id: 1,
                },
                pb::ParentRun {
                    vaddr: p(5),
                    nr_pages: 1,
                    link: 2,
                    offset: 8192,
                    pages_id: 1,
                },
            ],
            live: Vec::new(),
        };
        let (copy, refs) = split(vec![run(p(0), 7), run(p(7), 1), run(p(10), 2)], &round);
        let c: Vec<(u64, u64)> = copy.iter().map(|r| (r.vaddr / PAGE, r.nr_pages)).collect();
        // 2 written, 4, 6 and 7 not in the parent (6 and 7 in runs of their own: two
        // VMAs), 10-11 untracked.
        assert_eq!(c, [(2, 1), (4, 1), (6, 1), (7, 1), (10, 2)]);
        let f: Vec<(u64, u64, u32, u64)> = refs
            .iter()
            .map(|r| (r.vaddr / PAGE, r.nr_pages, r.link, r.offset))
            .collect();
        assert_eq!(
            f,
            [(0, 2, 1, 4096), (3, 1, 1, 4096 + 3 * PAGE), (5, 1, 2, 8192)]
        );

        // Copied before the freeze: 1 and 3-4 (pages-2.img at 0 and 2), 6 at 8. The copy
        // made here wins over the parent's; 2, written after it, is copied frozen.
        let mut round = round;
        round.live = [(1, 1, 0), (3, 2, 2), (6, 1, 8)]
            .iter()
            .map(|&(v, n, o)| pb::ParentRun {
                vaddr: p(v),
                nr_pages: n,
                link: 0,
                offset: p(o),
                pages_id: 2,
            })
            .collect();
        let (copy, refs) = split(vec![run(p(0), 7), run(p(7), 1), run(p(10), 2)], &round);
        let c: Vec<(u64, u64)> = copy.iter().map(|r| (r.vaddr / PAGE, r.nr_pages)).collect();
        assert_eq!(c, [(2, 1), (7, 1), (10, 2)]);
        let f: Vec<(u64, u64, u32, u32, u64)> = refs
            .iter()
            .map(|r| {
                (
                    r.vaddr / PAGE,
                    r.nr_pages,
                    r.link,
                    r.pages_id,
                    r.offset / PAGE,
                )
            })
            .collect();
        assert_eq!(
            f,
            [
                (0, 1, 1, 1, 1),
                (1, 1, 0, 2, 0),
                (3, 2, 0, 2, 2),
                (5, 1, 2, 1, 2),
                (6, 1, 0, 2, 8)
            ]
        );
    }

    /// One page taken from an earlier image: (vaddr, link, pages_id, offset).
    type PageRef = (u64, u32, u32, u64);

    /// The split decided page by page, as the rule reads: the pages copied (vaddr, 1) and
    /// the pages referenced.
    fn split_by_page(plan: &[Run], round: &Round) -> (Vec<(u64, u64)>, Vec<PageRef>) {
        let within = |a: u64, s: u64, e: u64| s <= a && a < e;
        let mut copy: Vec<(u64, u64)> = Vec::new();
        let mut refs: Vec<PageRef> = Vec::new();
        for r in plan {
            for i in 0..r.nr_pages {
                let a = r.vaddr + i * PAGE;
                let tracked = round.tracked.iter().any(|&(s, e)| within(a, s, e));
                let written = round.written.iter().any(|&(s, e)| within(a, s, e));
                let hit = |v: &[pb::ParentRun]| {
                    v.iter()
                        .find(|p| within(a, p.vaddr, p.vaddr + p.nr_pages * PAGE))
                        .map(|p| (a, p.link, p.pages_id, p.offset + (a - p.vaddr)))
                };
                match (tracked && !written)
                    .then(|| hit(&round.live).or_else(|| hit(&round.parent_pages)))
                    .flatten()
                {
                    Some(f) => refs.push(f),
                    None => copy.push((a, 1)),
                }
            }
        }
        (copy, refs)
    }

    #[test]
    fn range_split_decides_as_page_by_page() {
        let mut seed = 7u64;
        let mut rnd = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        let p = |v: u64| v * PAGE;
        for _ in 0..300 {
            let mut ranges = |count: u64| {
                let mut at = 0;
                let mut out = Vec::new();
                for _ in 0..count {
                    at += rnd(6);
                    let n = 1 + rnd(6);
                    out.push((at, n));
                    at += n;
                }
                out
            };
            let runs = |v: Vec<(u64, u64)>, link: u32, id: u32, off: u64| -> Vec<pb::ParentRun> {
                v.into_iter()
                    .map(|(a, n)| pb::ParentRun {
                        vaddr: p(a),
                        nr_pages: n,
                        link,
                        offset: p(off + a * 2),
                        pages_id: id,
                    })
                    .collect()
            };
            let plan: Vec<Run> = ranges(8).into_iter().map(|(a, n)| run(p(a), n)).collect();
            let round = Round {
                tracker: pb::Tracker::default(),
                tracked: ranges(4)
                    .into_iter()
                    .map(|(a, n)| (p(a), p(a + n)))
                    .collect(),
                written: ranges(6)
                    .into_iter()
                    .map(|(a, n)| (p(a), p(a + n)))
                    .collect(),
                parent_pages: runs(ranges(8), 1, 1, 1),
                live: runs(ranges(5), 0, 2, 3),
            };
            let (copy, refs) = split(plan.clone(), &round);
            let mut pages_copied = Vec::new();
            for c in &copy {
                pages_copied.extend((0..c.nr_pages).map(|i| (c.vaddr + i * PAGE, 1)));
            }
            let mut pages_ref = Vec::new();
            for f in &refs {
                pages_ref.extend(
                    (0..f.nr_pages)
                        .map(|i| (f.vaddr + i * PAGE, f.link, f.pages_id, f.offset + i * PAGE)),
                );
            }
            let (want_copy, want_refs) = split_by_page(&plan, &round);
            assert_eq!(pages_copied, want_copy);
            assert_eq!(pages_ref, want_refs);
        }
    }
}

//! Chains of images (pre-dump, then dumps with `--prev-images-dir`): an image whose
//! inventory has a `parent` keeps only the pages written since that parent; the others
//! are listed in its parentmap-PID.img files by link (1: the parent, 2: the parent's
//! parent, ...) and offset in that image's pages-1.img, or pages-2.img: the pages a dump
//! copied while the tree still ran, just before it froze it (link 0: the image's own).
//!
//! Each link names its parent's directory (relative to its own unless absolute) and the
//! xxh3 of the parent's inventory.img bytes: a parent that is missing, replaced or
//! altered (its inventory then no longer matches, or its files no longer match its
//! inventory) is refused, naming both directories, before anything is restored.

use crate::dir::ImageDir;
use crate::error::{ImageError, Result};
use crate::{names, pb, Kind};
use std::path::{Component, Path, PathBuf};

/// Longest chain followed (a loop of links, or a hostile depth, stops here).
pub const MAX_DEPTH: u32 = 64;

/// pages-2.img: the pages an incremental dump copied before it froze the tree, referred to
/// by its own parentmap (link 0) and by later images (`ParentRun.pages_id`).
pub const LIVE_PAGES_ID: u32 = 2;

/// The pages file a ParentRun names in its image: 1 or [`LIVE_PAGES_ID`] (0 reads as 1,
/// images from before the field).
pub fn pages_id(r: &pb::ParentRun) -> u32 {
    r.pages_id.max(1)
}

/// `link` resolved against `dir` without touching the filesystem (`dir` may not exist
/// yet when a dump names its parent): `..` removes the last component.
pub fn resolve(dir: &Path, link: &str) -> PathBuf {
    let l = Path::new(link);
    if l.is_absolute() {
        return l.into();
    }
    let mut out = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(dir)
    };
    for c in l.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// xxh3-64 of a directory's inventory.img bytes (what a child's ParentLink records).
pub fn inventory_xxh3(dir: &Path) -> Result<u64> {
    let path = dir.join(names::INVENTORY);
    let bytes = std::fs::read(&path).map_err(|e| ImageError::io(&path, e))?;
    Ok(crate::hash::xxh3_64(&bytes))
}

fn broken(child: &Path, parent: &Path, why: impl std::fmt::Display) -> ImageError {
    ImageError::invalid(
        child.join(names::INVENTORY),
        format!(
            "its parent image {} (an earlier link of its chain): {why}",
            parent.display()
        ),
    )
}

/// Every image before `d` in its chain, parent first, each opened by `open` (which
/// verifies it: `ImageDir::open`, or `open_deferring_pages` for a caller that checks the
/// pages itself) and checked against the link that names it.
pub fn ancestors(d: &ImageDir, open: fn(&Path) -> Result<ImageDir>) -> Result<Vec<ImageDir>> {
    let mut out: Vec<ImageDir> = Vec::new();
    let mut child_path = d.dir().to_path_buf();
    let mut link = d.inventory().parent.clone();
    while let Some(l) = link {
        let depth_left = l.depth;
        if depth_left == 0 || depth_left > MAX_DEPTH {
            return Err(ImageError::invalid(
                child_path.join(names::INVENTORY),
                format!("chain depth {depth_left} (1 to {MAX_DEPTH})"),
            ));
        }
        let path = resolve(&child_path, &l.dir);
        let hash = inventory_xxh3(&path).map_err(|e| broken(&child_path, &path, e))?;
        if hash != l.inventory_xxh3 {
            return Err(broken(
                &child_path,
                &path,
                "its inventory.img is not the one this image was dumped against (replaced or \
                 altered)",
            ));
        }
        let p = open(&path).map_err(|e| broken(&child_path, &path, e))?;
        let below = p.inventory().parent.as_ref().map_or(0, |pl| pl.depth);
        if below + 1 != depth_left {
            return Err(broken(
                &child_path,
                &path,
                format!(
                    "the chain is {depth_left} images deep here, {} there",
                    below + 1
                ),
            ));
        }
        link = p.inventory().parent.clone();
        child_path = path;
        out.push(p);
    }
    Ok(out)
}

/// Every page of process `pid` that image `d` holds or refers to, as ParentRuns sorted by
/// address, with links counted from `d` (0: `d`'s own pages files). None if `d` does not
/// hold the process.
pub fn pages_of(d: &ImageDir, pid: i32) -> Result<Option<Vec<pb::ParentRun>>> {
    if !d.inventory().pids.contains(&pid) {
        return Ok(None);
    }
    let pm = names::pagemap(pid);
    let mut r = d.records(&pm, Kind::Pagemap)?;
    let head: pb::PagemapHead = r.expect("PagemapHead")?;
    if head.compression != pb::Compression::None as i32 {
        return Err(ImageError::invalid(
            d.path(&pm),
            "compressed pages cannot be the base of a chain (dump without --compress)",
        ));
    }
    let mut out: Vec<pb::ParentRun> = r
        .rest::<pb::PageRun>("PageRun")?
        .into_iter()
        .map(|p| pb::ParentRun {
            vaddr: p.vaddr,
            nr_pages: p.nr_pages,
            link: 0,
            offset: p.offset,
            pages_id: 1,
        })
        .collect();
    let name = names::parentmap(pid);
    if d.lookup(&name).is_some() {
        let mut r = d.records(&name, Kind::ParentMap)?;
        out.extend(r.rest::<pb::ParentRun>("ParentRun")?);
    }
    out.sort_unstable_by_key(|p| p.vaddr);
    Ok(Some(out))
}

/// `show`'s lines about the chain: pre-dump or not, write trackers, and every earlier
/// image with whether it is there and is the one this image was dumped against (read
/// only: an image is shown whatever state its chain is in).
pub fn render(o: &mut String, dir: &Path, inv: &pb::Inventory) {
    use std::fmt::Write;
    if inv.pre_dump {
        let _ = writeln!(
            o,
            "  pre-dump: memory copied while the tree ran; the base of a later dump \
             (--prev-images-dir), not restorable itself"
        );
    }
    for t in &inv.trackers {
        let _ = writeln!(
            o,
            "  write tracker: pid {} fd {} (userfaultfd WP-async, inode {})",
            t.pid, t.fd, t.inode
        );
    }
    let mut child = dir.to_path_buf();
    let mut link = inv.parent.clone();
    let mut n = 0;
    while let Some(l) = link.take() {
        n += 1;
        let path = resolve(&child, &l.dir);
        let state = match inventory_xxh3(&path) {
            Err(e) => format!("MISSING ({e})"),
            Ok(h) if h != l.inventory_xxh3 => "ALTERED: not the image this one was dumped \
                                               against"
                .to_string(),
            Ok(_) => {
                match ImageDir::open_unverified(&path) {
                    Ok(d) => link = d.inventory().parent.clone(),
                    Err(e) => {
                        let _ = writeln!(o, "  parent image {n}: {} ({e})", path.display());
                        break;
                    }
                }
                "ok".to_string()
            }
        };
        let _ = writeln!(
            o,
            "  parent image {n}: {} (as {:?}), {} image(s) before it: {state}",
            path.display(),
            l.dir,
            l.depth - 1
        );
        if n >= MAX_DEPTH {
            break;
        }
        child = path;
    }
}

//! Restoring the last image of a chain (a dump made with `--prev-images-dir`): every
//! earlier image is opened and checked link by link (`ckpt_images::chain::ancestors`)
//! before anything is created, its pages files verified like the image's own, and all the
//! pages files (with the image's own pages-2.img: what its dump copied before the freeze)
//! are mapped back to back into one mapping (`map_chain`), so the fill reads a page of the
//! parent the way it reads one of the image: by offset.

use crate::image::ProcessImage;
use crate::RestoreError;
use ckpt_images::{names, pb, ImageDir, Kind, PAGE_SIZE};
use ckpt_sys::process::Mmap;
use std::path::PathBuf;

/// The images before the restored one, parent first.
pub struct Chain {
    pub ancestors: Vec<ImageDir>,
}

fn refused(msg: String) -> RestoreError {
    RestoreError::Refused(msg)
}

/// Refuses what cannot be restored as it is, then opens the chain (empty for an image
/// without a parent).
pub fn open(dir: &ImageDir, lazy: bool) -> Result<Chain, RestoreError> {
    let inv = dir.inventory();
    if inv.pre_dump {
        return Err(refused(format!(
            "{} is a pre-dump: its memory was copied while the process ran and is no \
             snapshot; restore the dump made after it with --prev-images-dir",
            dir.dir().display()
        )));
    }
    if inv.parent.is_none() {
        return Ok(Chain {
            ancestors: Vec::new(),
        });
    }
    // Lazy: the ancestors are verified whole before anything is created, as for an
    // eager restore; only the image's own pages are served as they are asked for.
    let _ = lazy;
    let ancestors = ckpt_images::chain::ancestors(dir, ImageDir::open_deferring_pages)?;
    Ok(Chain { ancestors })
}

/// A pages file of the chain other than the image's own pages-1.img: which image (0 the
/// image itself, 1 its parent, ...), which file of it (`ParentRun.pages_id`), and its
/// path, file and inventory entry.
struct Extra {
    link: u32,
    pages_id: u32,
    path: PathBuf,
    file: std::fs::File,
    entry: pb::ImageFile,
}

/// The image's own pages-2.img (what it copied before its freeze), then each ancestor's
/// pages-1.img and pages-2.img, parent first; a pages-2.img only where its inventory
/// lists one.
fn extra_pages(dir: &ImageDir, chain: &Chain) -> Result<Vec<Extra>, RestoreError> {
    let mut out = Vec::new();
    let live = ckpt_images::chain::LIVE_PAGES_ID;
    let images = std::iter::once((0, dir)).chain((1..).zip(&chain.ancestors));
    for (link, d) in images {
        for id in [1, live] {
            if link == 0 && id == 1 {
                continue;
            }
            let name = names::pages(id);
            let entry = d.lookup(&name).cloned();
            let entry = match entry {
                Some(e) => e,
                None if id == live => continue,
                None => {
                    return Err(refused(format!(
                        "{}: no {name} in the inventory",
                        d.dir().display()
                    )))
                }
            };
            let (file, path) = d.open_pages(id)?;
            out.push(Extra {
                link,
                pages_id: id,
                path,
                file,
                entry,
            });
        }
    }
    Ok(out)
}

/// Where each pages file of a chain lies in the mapping of them all.
pub struct ChainFiles {
    /// (link, pages_id, base, size); the image's own pages-1.img is (0, 1, 0, _).
    files: Vec<(u32, u32, u64, u64)>,
}

impl ChainFiles {
    /// The image's own pages file alone.
    pub fn own() -> ChainFiles {
        ChainFiles {
            files: vec![(0, 1, 0, 0)],
        }
    }

    fn find(&self, link: u32, pages_id: u32) -> Option<(u64, u64)> {
        self.files
            .iter()
            .find(|f| f.0 == link && f.1 == pages_id)
            .map(|f| (f.2, f.3))
    }
}

/// Verifies every pages file of the chain but the image's own pages-1.img (on every CPU,
/// a chunk at a time) and maps them all back to back after it; returns the mapping and
/// where each file lies in it.
pub fn map_all(
    dir: &ImageDir,
    chain: &Chain,
    own: &std::fs::File,
) -> Result<(Mmap, ChainFiles), RestoreError> {
    let pages = extra_pages(dir, chain)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for p in &pages {
        let map = ckpt_sys::process::map_file(&p.file)?;
        ckpt_images::chunks::verify(
            &p.path,
            &map,
            &p.entry,
            cpus,
            &|off, len| ckpt_sys::process::populate_read(&map, off, len),
            &|off, len| ckpt_sys::process::release_range(&map, off, len),
        )?;
    }
    let mut files = vec![own];
    files.extend(pages.iter().map(|p| &p.file));
    let (map, bases) = ckpt_sys::process::map_chain(&files)?;
    let mut out = ChainFiles::own();
    for (p, &base) in pages.iter().zip(&bases[1..]) {
        out.files.push((p.link, p.pages_id, base, p.entry.size));
    }
    Ok((map, out))
}

/// Adds to each process the pages its image takes from earlier images (its
/// parentmap-PID.img), checked — sorted, whole pages inside an anonymous private VMA,
/// clear of the image's own pages, inside the named image's pages file — and with their
/// offsets moved to where that file lies in the chain's mapping.
pub fn attach(
    dir: &ImageDir,
    imgs: &mut [ProcessImage],
    files: &ChainFiles,
) -> Result<(), RestoreError> {
    let page = PAGE_SIZE as u64;
    for img in imgs.iter_mut() {
        let pid = img.core.pid;
        let name = names::parentmap(pid);
        if dir.lookup(&name).is_none() {
            continue;
        }
        let bad = |why: String| refused(format!("{}: {why}", dir.path(&name).display()));
        let refs: Vec<pb::ParentRun> = dir.records(&name, Kind::ParentMap)?.rest("ParentRun")?;
        let mut own = img.runs.iter().peekable();
        let mut prev_end = 0u64;
        let mut vi = 0usize;
        let mut add = Vec::with_capacity(refs.len());
        for (i, r) in refs.iter().enumerate() {
            let len = r
                .nr_pages
                .checked_mul(page)
                .ok_or_else(|| bad(format!("run {i}: size overflows")))?;
            let end = r
                .vaddr
                .checked_add(len)
                .ok_or_else(|| bad(format!("run {i}: address overflows")))?;
            if r.vaddr % page != 0 || r.nr_pages == 0 || r.vaddr < prev_end {
                return Err(bad(format!(
                    "run {i} at {:#x} is misaligned, empty or out of order",
                    r.vaddr
                )));
            }
            prev_end = end;
            while vi < img.vmas.len() && img.vmas[vi].end <= r.vaddr {
                vi += 1;
            }
            let inside = img.vmas.get(vi).is_some_and(|v| {
                v.start <= r.vaddr && end <= v.end && v.kind == pb::VmaKind::VmaAnon as i32
            });
            if !inside {
                return Err(bad(format!(
                    "run {i} [{:#x}, {end:#x}) is not inside an anonymous private VMA",
                    r.vaddr
                )));
            }
            while own
                .peek()
                .is_some_and(|o| o.vaddr + o.nr_pages * page <= r.vaddr)
            {
                own.next();
            }
            if own.peek().is_some_and(|o| o.vaddr < end) {
                return Err(bad(format!(
                    "run {i} [{:#x}, {end:#x}) overlaps pages the image holds itself",
                    r.vaddr
                )));
            }
            let id = ckpt_images::chain::pages_id(r);
            let (base, size) = match files.find(r.link, id) {
                // Its own pages-1.img is only ever listed in its pagemap.
                Some(f) if (r.link, id) != (0, 1) => f,
                _ => {
                    return Err(bad(format!(
                        "run {i} refers to pages-{id}.img of image {} of a chain of {} before \
                         this one (0: this one), which it does not have",
                        r.link,
                        dir.inventory().parent.as_ref().map_or(0, |p| p.depth)
                    )))
                }
            };
            let inside_file = r.offset >= page
                && r.offset % page == 0
                && r.offset.checked_add(len).is_some_and(|e| e <= size);
            if !inside_file {
                return Err(bad(format!(
                    "run {i} points at bytes [{}, +{len}) outside the {size} byte pages-{id}.img \
                     of image {}",
                    r.offset, r.link
                )));
            }
            add.push(pb::PageRun {
                vaddr: r.vaddr,
                nr_pages: r.nr_pages,
                offset: base + r.offset,
                from_parent: false,
            });
        }
        img.runs.extend(add);
        img.runs.sort_unstable_by_key(|r| r.vaddr);
    }
    Ok(())
}

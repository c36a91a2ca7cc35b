//! Restoring the last image of a chain (a dump made with `--prev-images-dir`): every
//! earlier image is opened and checked link by link (`ckpt_images::chain::ancestors`)
//! before anything is created, its pages file verified like the image's own, and all the
//! pages files are mapped back to back into one mapping (`map_chain`), so the fill reads
//! a page of the parent the way it reads one of the image: by offset.

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

/// The pages file of each ancestor (path, file, inventory entry), parent first.
fn ancestor_pages(
    chain: &Chain,
) -> Result<Vec<(PathBuf, std::fs::File, pb::ImageFile)>, RestoreError> {
    let mut out = Vec::new();
    for d in &chain.ancestors {
        let name = names::pages(1);
        let entry = d
            .inventory()
            .files
            .iter()
            .find(|f| f.name == name)
            .cloned()
            .ok_or_else(|| refused(format!("{}: no {name} in the inventory", d.dir().display())))?;
        let (file, path) = d.open_pages(1)?;
        out.push((path, file, entry));
    }
    Ok(out)
}

/// Verifies every ancestor's pages file (on every CPU, a chunk at a time) and maps the
/// image's own pages file and theirs back to back; returns the mapping and where each
/// file starts in it (0: the image's own).
pub fn map_all(
    chain: &Chain,
    own: &std::fs::File,
) -> Result<(Mmap, Vec<u64>, Vec<u64>), RestoreError> {
    let pages = ancestor_pages(chain)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (path, file, entry) in &pages {
        let map = ckpt_sys::process::map_file(file)?;
        ckpt_images::chunks::verify(
            path,
            &map,
            entry,
            cpus,
            &|off, len| ckpt_sys::process::populate_read(&map, off, len),
            &|off, len| ckpt_sys::process::release_range(&map, off, len),
        )?;
    }
    let mut files = vec![own];
    files.extend(pages.iter().map(|(_, f, _)| f));
    let sizes: Vec<u64> = pages.iter().map(|(_, _, e)| e.size).collect();
    let (map, bases) = ckpt_sys::process::map_chain(&files)?;
    Ok((map, bases, sizes))
}

/// Adds to each process the pages its image takes from earlier images (its
/// parentmap-PID.img), checked — sorted, whole pages inside an anonymous private VMA,
/// clear of the image's own pages, inside the named image's pages file — and with their
/// offsets moved to where that file lies in the chain's mapping.
pub fn attach(
    dir: &ImageDir,
    imgs: &mut [ProcessImage],
    bases: &[u64],
    sizes: &[u64],
) -> Result<(), RestoreError> {
    let page = PAGE_SIZE as u64;
    for img in imgs.iter_mut() {
        let pid = img.core.pid;
        let name = names::parentmap(pid);
        if !dir.inventory().files.iter().any(|f| f.name == name) {
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
            let link = r.link as usize;
            if link == 0 || link >= bases.len() {
                return Err(bad(format!(
                    "run {i} refers to image {link} of a chain of {} before this one",
                    bases.len() - 1
                )));
            }
            let size = sizes[link - 1];
            let inside_file = r.offset >= page
                && r.offset % page == 0
                && r.offset.checked_add(len).is_some_and(|e| e <= size);
            if !inside_file {
                return Err(bad(format!(
                    "run {i} points at bytes [{}, +{len}) outside the {size} byte pages file \
                     of image {link}",
                    r.offset
                )));
            }
            add.push(pb::PageRun {
                vaddr: r.vaddr,
                nr_pages: r.nr_pages,
                offset: bases[link] + r.offset,
                from_parent: false,
            });
        }
        img.runs.extend(add);
        img.runs.sort_unstable_by_key(|r| r.vaddr);
    }
    Ok(())
}

//! Where a dump's pages file goes when it is not written into the image directory: CRIU's
//! page server (`criu dump --page-server`, runc's `checkpoint --page-server`), a
//! destination that stores the pages while the rest of the image is written here. Only the
//! pages file of the frozen copy (`pages-1.img`) goes there; its size and chunk checksums
//! are in the local inventory as always, so a restore from the merged directories checks
//! the far copy like a local one. One sink per process (the criu crate sets it), none in
//! plain ckpt.

use crate::{refuse, DumpError};
use ckpt_images::{ImageSink, PagesWriter};
use std::fs::File;
use std::sync::{Arc, Mutex};

/// A destination for pages files.
pub trait PageSink: Send + Sync {
    /// Opens the far copy of pages file `name` (as named in the image directory).
    fn open(&self, name: &str) -> Result<Box<dyn PagesLink>, String>;
}

/// One pages file on its way. Dropped without [`PagesLink::finish`] (the dump failed), it
/// tells the far end that the file is incomplete.
pub trait PagesLink: Send {
    /// The file the pages are written into (a socket, say).
    fn file(&self) -> std::io::Result<File>;
    /// Every byte was written, `size` in all: returns once the far end holds them all.
    fn finish(self: Box<Self>, size: u64) -> Result<(), String>;
}

static SINK: Mutex<Option<Arc<dyn PageSink>>> = Mutex::new(None);

/// Sends the pages of this process's dumps to `sink` (None: into the image directory).
pub fn set(sink: Option<Arc<dyn PageSink>>) {
    *SINK.lock().unwrap_or_else(|e| e.into_inner()) = sink;
}

fn current() -> Option<Arc<dyn PageSink>> {
    SINK.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The writer of pages file `id`: into the image directory, or to the sink when one is
/// set, with its link.
pub(crate) fn pages(
    sink: &mut ImageSink,
    id: u32,
) -> Result<(PagesWriter, Option<Box<dyn PagesLink>>), DumpError> {
    let Some(remote) = current() else {
        return Ok((sink.pages(id)?, None));
    };
    let name = ckpt_images::names::pages(id);
    let far = |e: String| refuse(format!("page server: {name}: {e}"));
    let link = remote.open(&name).map_err(far)?;
    let file = link.file().map_err(|e| far(e.to_string()))?;
    let w = PagesWriter::new(file, format!("page server:{name}"))?;
    Ok((w, Some(link)))
}

/// Records pages file `id` in the image, once the sink (if any) holds all of it.
pub(crate) fn commit(
    sink: &mut ImageSink,
    id: u32,
    w: PagesWriter,
    link: Option<Box<dyn PagesLink>>,
) -> Result<(), DumpError> {
    let size = w.offset();
    sink.commit_pages(id, w)?;
    if let Some(link) = link {
        let name = ckpt_images::names::pages(id);
        link.finish(size)
            .map_err(|e| refuse(format!("page server: {name}: {e}")))?;
    }
    Ok(())
}

//! Image files created ahead, on a thread of their own. A tree of 100 processes has 400
//! per-process files; creating one costs ~0.1 ms on this machine's ext4 (the inode
//! allocator scans for recently deleted inodes), ~40 ms in all, which the dump's thread
//! would otherwise spend while the tree waits stopped. The thread creates the files in
//! the order the dump will want them; the sink takes a file made ahead if there is one
//! and otherwise creates it itself (`take`). Neither writes a byte to a file it did not
//! get back, so whichever opens a name first, the other's handle is the same empty file
//! or none; what was made and never taken is removed before the inventory is written
//! (`finish`), so the image holds only the files it lists.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Default)]
struct Shared {
    ready: HashMap<String, File>,
    /// Names the sink created itself: not to be made again.
    taken: HashSet<String>,
    stop: bool,
}

pub(crate) struct Precreated {
    dir: PathBuf,
    shared: Arc<Mutex<Shared>>,
    thread: Option<JoinHandle<()>>,
}

/// The sink's own way to open a new image file.
pub(crate) fn create(path: &Path, exclusive: bool) -> std::io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).mode(0o600);
    if exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    o.open(path)
}

impl Precreated {
    /// Starts creating `names` in `dir` (the staging directory, made by this dump).
    pub(crate) fn start(dir: &Path, names: Vec<String>) -> Precreated {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (d, s) = (dir.to_path_buf(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("image-files".into())
            .spawn(move || {
                for name in names {
                    {
                        let g = s.lock().unwrap_or_else(|p| p.into_inner());
                        if g.stop {
                            return;
                        }
                        if g.taken.contains(&name) {
                            continue;
                        }
                    }
                    // Exclusive: a file the sink made meanwhile is left to it.
                    let Ok(f) = create(&d.join(&name), true) else {
                        continue;
                    };
                    let mut g = s.lock().unwrap_or_else(|p| p.into_inner());
                    if !g.taken.contains(&name) {
                        g.ready.insert(name, f);
                    }
                }
            })
            .ok();
        Precreated {
            dir: dir.to_path_buf(),
            shared,
            thread,
        }
    }

    /// The file made ahead for `name`, or None after noting that the caller makes it.
    pub(crate) fn take(&self, name: &str) -> Option<File> {
        let mut g = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        let f = g.ready.remove(name);
        if f.is_none() {
            g.taken.insert(name.to_string());
        }
        f
    }

    /// Stops the thread and removes every file it made that was not taken.
    pub(crate) fn finish(mut self) -> std::io::Result<()> {
        self.stop_and_join();
        let left: Vec<String> = {
            let mut g = self.shared.lock().unwrap_or_else(|p| p.into_inner());
            g.ready.drain().map(|(n, _)| n).collect()
        };
        for n in left {
            std::fs::remove_file(self.dir.join(n))?;
        }
        Ok(())
    }

    fn stop_and_join(&mut self) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Precreated {
    /// An unfinished dump: the staging directory, and what is in it, goes anyway.
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

//! Advisory locks on an image directory, so two ckpt commands never work on one at once:
//! a dump holds it exclusively until its new image is in place, restore and show hold it
//! shared while they read (restore maps the pages file and trusts it not to change).
//!
//! flock(2) on the directory itself, never waited for: a busy directory is refused at once
//! with a message, rather than leaving a command hanging behind another one.

use crate::error::{ImageError, Result};
use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Held while it lives; the lock goes with the last descriptor of its open file (a child
/// forked meanwhile keeps it, one that execs does not: std opens with O_CLOEXEC).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
    /// Owner of the directory locked (of the open file, not of whatever the path names now).
    uid: u32,
}

/// Tries a few times when the path is renamed over between open and lock (a dump putting
/// its new image in place); more than that is not a race but something odd.
const ATTEMPTS: usize = 8;

/// Locks directory `dir`, exclusively or shared, without blocking.
pub(crate) fn lock(dir: &Path, exclusive: bool) -> Result<DirLock> {
    for _ in 0..ATTEMPTS {
        // O_NONBLOCK: a FIFO planted at the path must not block open(2).
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(crate::dir::libc_o_nonblock())
            .open(dir)
            .map_err(|e| ImageError::io(dir, e))?;
        let held = file.metadata().map_err(|e| ImageError::io(dir, e))?;
        if !held.is_dir() {
            return Err(ImageError::invalid(dir, "not a directory"));
        }
        let r = if exclusive {
            file.try_lock()
        } else {
            file.try_lock_shared()
        };
        match r {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(ImageError::invalid(
                    dir,
                    "is in use by another ckpt (a dump, restore or show of this directory \
                     is running); try again once it is done",
                ))
            }
            Err(TryLockError::Error(e)) => return Err(ImageError::io(dir, e)),
        }
        // Still the directory at that path? Otherwise the lock guards an old one.
        let now = std::fs::metadata(dir).map_err(|e| ImageError::io(dir, e))?;
        if (now.dev(), now.ino()) == (held.dev(), held.ino()) {
            return Ok(DirLock {
                _file: file,
                uid: held.uid(),
            });
        }
    }
    Err(ImageError::invalid(
        dir,
        "is being replaced over and over while ckpt tries to lock it",
    ))
}

impl DirLock {
    /// Refuses a directory that belongs to another user: whoever owns it can add, change or
    /// swap the files in it (images hold process memory, and restore believes them), even
    /// when its mode says otherwise, since an owner can chmod.
    pub(crate) fn check_owned(&self, dir: &Path) -> Result<()> {
        let me = nix::unistd::geteuid().as_raw();
        if self.uid == me {
            return Ok(());
        }
        Err(ImageError::invalid(
            dir,
            format!(
                "is owned by uid {}, not by uid {me} running ckpt; another user's directory \
                 could have been prepared or changed by them (chown it, or use one of your own)",
                self.uid
            ),
        ))
    }
}

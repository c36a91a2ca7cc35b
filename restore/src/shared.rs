//! Shared anonymous memory of a tree: an object that several processes map (a
//! MAP_SHARED region made before a fork) is one object again. ckpt creates it once, as a
//! memfd of its own; every puppet maps it by opening /proc/<ckpt>/fd/N (in a new pid
//! namespace /proc/1/fd/N: its init inherited ckpt's fds and keeps them until the
//! release, and ckpt is not in that namespace's /proc; in a container's own user
//! namespace /proc/<holder>/fd/N, `userns::Holder`), and its pages are
//! filled once, through the first process whose image holds them (the others' runs are
//! dropped, `ProcessImage::drop_shared_duplicates`).

use crate::image::{ProcessImage, ShmObject};
use crate::R;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};

/// The tree's shared objects, by `Vma.shm_id`: the path a puppet opens, and the fd that
/// keeps each alive until every puppet has mapped it.
pub struct SharedObjects {
    pub paths: HashMap<u64, String>,
    _fds: Vec<OwnedFd>,
    /// In a container's own user namespace, the task the puppets open them through
    /// (`userns::Holder`), until these are dropped.
    holder: Option<crate::userns::Holder>,
}

impl SharedObjects {
    /// The objects mapped by more than one process of the tree; `holder` is the pid the
    /// puppets see holding ckpt's fds (None: ckpt itself).
    pub fn create(imgs: &[ProcessImage], holder: Option<i32>) -> R<SharedObjects> {
        let mut users: HashMap<u64, (usize, ShmObject)> = HashMap::new();
        for img in imgs {
            for (id, o) in img.shm_objects_all() {
                let e = users.entry(id).or_insert((
                    0,
                    ShmObject {
                        size: 0,
                        name: o.name.clone(),
                    },
                ));
                e.0 += 1;
                e.1.size = e.1.size.max(o.size);
            }
        }
        let me = holder.unwrap_or_else(|| nix::unistd::getpid().as_raw());
        let mut paths = HashMap::new();
        let mut fds = Vec::new();
        for (id, (n, o)) in users {
            if n < 2 {
                continue;
            }
            let name = std::ffi::CString::new(o.name.as_bytes()).unwrap_or_default();
            let fd =
                nix::sys::memfd::memfd_create(&name, nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
                    .map_err(|e| ckpt_sys::Error::sys(format!("memfd_create({:?})", o.name), e))?;
            nix::unistd::ftruncate(&fd, o.size as i64).map_err(|e| {
                ckpt_sys::Error::sys(format!("ftruncate of memfd {:?} to {}", o.name, o.size), e)
            })?;
            paths.insert(id, format!("/proc/{me}/fd/{}", fd.as_raw_fd()));
            fds.push(fd);
        }
        Ok(SharedObjects {
            paths,
            _fds: fds,
            holder: None,
        })
    }

    /// Has the puppets of a container with its own user namespace open the objects
    /// through a holder in it (`userns::Holder`); `root`: the container's root seed.
    pub fn hold_in_userns(&mut self, root: ckpt_sys::Pid) -> R<()> {
        if self.paths.is_empty() {
            return Ok(());
        }
        let h = crate::userns::Holder::start(root)?;
        // The same fd numbers: the holder is a copy of ckpt.
        for path in self.paths.values_mut() {
            let fd = path.rsplit('/').next().unwrap_or_default().to_string();
            *path = format!("/proc/{}/fd/{fd}", h.pid);
        }
        self.holder = Some(h);
        Ok(())
    }

    /// ckpt's fds of the objects (an init of a new pid namespace keeps them open).
    pub fn raw_fds(&self) -> Vec<i32> {
        self._fds.iter().map(|f| f.as_raw_fd()).collect()
    }
}

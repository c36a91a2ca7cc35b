//! The tree's open file descriptions: one `pb::FileDesc` per description, however many
//! fds of however many processes refer to it (a file inherited across fork shares its
//! offset; a pipe end held by a parent and its child is one end). Each `pb::Fd` names its
//! description by id (`Fd.desc`); the table is written once, as fdtable.img, and restore
//! creates each description once and hands it to every holder (restore/src/fdtable.rs).
//!
//! Sharing is found with kcmp(KCMP_FILE), but only between fds of the same mount and
//! inode (`mnt_id:` and `ino:` of /proc/PID/fdinfo, which every fd is read for anyway: one
//! description has one of each): a tree of 100 processes with 100 fds each makes a
//! handful of kcmp calls per shared file, not 10^8, and an fd whose description was met
//! before costs that fdinfo read and one kcmp, no readlink or stat.
//!
//! A new kind of file plugs in with one function here and one in restore:
//! - dump: `files.rs` tells the kind from the /proc link (`inspect`); add the kind to
//!   `pb::FdKind`, its state as a message in `pb::FileDesc`, and a `dump` function in a
//!   module of `fdtable/` (see `fdtable/pipe.rs`) that fills it from the fd (a copy of it
//!   can be taken with `ckpt_sys::process::steal_fd`; /proc/PID/fdinfo is in `FdCtx`).
//!   It runs once per description, with the process stopped; it must not change the
//!   object (a `--leave-running` dump leaves the workload as it was).
//! - restore: a `create` function in `restore/src/fdtable/` that makes the object and
//!   puts each of its descriptions at the fd number it is given (see there).
//!   Sharing, the fd numbers, who creates what and the rollback are the table's business.

pub mod anon;
pub mod contents;
pub mod epoll;
pub mod fanotify;
pub mod pidfd;
pub mod pipe;
pub mod tty;
pub mod unix;

use crate::describe::Describer;
use crate::DumpError;
use ckpt_images::pb;
use ckpt_sys::Pid;
use std::collections::{HashMap, HashSet};

/// What a kind's `dump` gets to look at.
pub struct FdCtx<'a> {
    pub pid: Pid,
    pub fd: i32,
    /// /proc/PID/fdinfo/FD flags (O_CLOEXEC included) and pos.
    pub info: &'a ckpt_sys::proc::FdInfo,
    /// (mount id, inode) of the object, as fdinfo shows them: the table's key.
    pub inode: (u64, u64),
    /// A socket: ckpt's copy of it, taken by its check in the same pass.
    pub sock: Option<std::os::fd::BorrowedFd<'a>>,
}

/// A description met before: its index in `descs`, and one (pid, fd) holding it.
type Known = (usize, Pid, i32);

/// A `find` that found nothing: (pid, fd, inode) asked, the position its description
/// would take among the inode's, and how many the inode had.
type Missed = ((Pid, i32, (u64, u64)), usize, usize);

/// Every description met so far, tree-wide.
pub struct FdTable {
    descs: Vec<pb::FileDesc>,
    /// (mount id, inode) -> the descriptions of that inode.
    by_inode: HashMap<(u64, u64), Vec<Known>>,
    /// Objects whose contents are already stored (a pipe's unread bytes, once per pipe).
    stored: HashSet<(u64, u64)>,
    /// Where the last `find` that found nothing would have put its description, and how
    /// many descriptions its inode had then: `insert` of that one reuses it (when
    /// nothing of the inode was added between) instead of searching with kcmp again.
    missed: Option<Missed>,
    /// Each pipe's capacity (F_GETPIPE_SZ), read through its first end met.
    pub pipe_sizes: HashMap<(u64, u64), u32>,
    describer: Describer,
    /// kcmp calls made, and the time spent on fds (`files::collect`), for the log.
    pub kcmps: u64,
    /// The network sockets' side: connections locked and in repair mode (`net/`).
    pub net: crate::net::Session,
    /// The unix sockets' side (`unix.rs`).
    pub unix: unix::Unix,
    pub fds: u64,
    pub spent: std::time::Duration,
    /// CPU time of ckpt's thread in the same (what the load of the host does not inflate).
    pub cpu: std::time::Duration,
    /// A container on a root of its own: the ids of its mount namespace's mounts. A file
    /// on any other mount is outside its root (`FileDesc.outside_root`).
    pub container_mounts: Option<HashSet<u64>>,
    /// The mount ids seen from each (mount namespace, root) met, read once: a file's
    /// mount must be one of them for its path to name it again.
    mount_ids: HashMap<String, HashSet<u64>>,
    own_mounts: Option<HashSet<u64>>,
}

/// CPU time of the calling thread so far.
pub fn thread_cpu() -> std::time::Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(std::time::Duration::from)
        .unwrap_or_default()
}

impl FdTable {
    /// For the tree made of `pids`.
    pub fn new(pids: impl IntoIterator<Item = Pid>) -> FdTable {
        let pids: Vec<Pid> = pids.into_iter().collect();
        FdTable {
            descs: Vec::new(),
            by_inode: HashMap::new(),
            stored: HashSet::new(),
            missed: None,
            pipe_sizes: HashMap::new(),
            net: crate::net::Session::new(pids.first().copied().unwrap_or(Pid::from_raw(0))),
            describer: Describer::new(pids),
            unix: unix::Unix::default(),
            kcmps: 0,
            fds: 0,
            spent: std::time::Duration::ZERO,
            cpu: std::time::Duration::ZERO,
            container_mounts: None,
            mount_ids: HashMap::new(),
            own_mounts: None,
        }
    }

    /// Whether mount `mnt_id` (an fd's, from fdinfo) is one ckpt or `pid` sees: in ckpt's
    /// mount namespace from its root (a chrooted process's /proc/PID/mountinfo lists only
    /// what is under its root, but its fd links are read from ckpt's), or in `pid`'s own
    /// from its root (a container's). A file on neither (its filesystem lazily unmounted,
    /// or an fd from another mount namespace) has a /proc path relative to a root nobody
    /// can reach: reopened by it, it would be another file, or none.
    pub fn on_reachable_mount(&mut self, pid: Pid, mnt_id: u64) -> Result<bool, DumpError> {
        let key = |p: Pid| -> Result<String, DumpError> {
            let mut k = String::new();
            for what in ["ns/mnt", "root"] {
                let link = format!("/proc/{p}/{what}");
                let t = ckpt_sys::proc::read_link(&link)
                    .map_err(|e| DumpError::Lost(format!("{link}: {e}")))?;
                k.push_str(&t.to_string_lossy());
                k.push('\0');
            }
            Ok(k)
        };
        // ckpt's own first, read once: most files are there, and then cost nothing more.
        let own = self
            .own_mounts
            .get_or_insert_with(|| crate::mounts::ids(Pid::this()));
        if own.contains(&mnt_id) {
            return Ok(true);
        }
        Ok(self
            .mount_ids
            .entry(key(pid)?)
            .or_insert_with(|| crate::mounts::ids(pid))
            .contains(&mnt_id))
    }

    pub fn describer(&mut self) -> &mut Describer {
        &mut self.describer
    }

    /// The id of the description fd `fd` of `pid` refers to, if it was met before.
    pub fn find(&mut self, pid: Pid, fd: i32, inode: (u64, u64)) -> Result<Option<u64>, DumpError> {
        if !self.by_inode.contains_key(&inode) {
            return Ok(None);
        }
        // Kept in the kernel's order of descriptions: a binary search (one inode opened
        // 1000 times costs ~10 kcmps per fd, not 1000).
        match self.search(pid, fd, inode)? {
            Ok(k) => Ok(Some(self.descs[self.by_inode[&inode][k].0].id)),
            Err(at) => {
                self.missed = Some(((pid, fd, inode), at, self.by_inode[&inode].len()));
                Ok(None)
            }
        }
    }

    /// Where description (`pid`, `fd`) is (Ok) or would go (Err) among those of `inode`.
    fn search(
        &mut self,
        pid: Pid,
        fd: i32,
        inode: (u64, u64),
    ) -> Result<Result<usize, usize>, DumpError> {
        let n = self.by_inode.get(&inode).map_or(0, Vec::len);
        let (mut lo, mut hi) = (0, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let (_, p, f) = self.by_inode[&inode][mid];
            self.kcmps += 1;
            match ckpt_sys::process::file_order(p, f, pid, fd)? {
                std::cmp::Ordering::Equal => return Ok(Ok(mid)),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(Err(lo))
    }

    /// Adds a new description, first seen at fd `fd` of `pid`; returns its id.
    pub fn insert(
        &mut self,
        pid: Pid,
        fd: i32,
        inode: (u64, u64),
        mut desc: pb::FileDesc,
    ) -> Result<u64, DumpError> {
        desc.id = self.descs.len() as u64 + 1;
        let id = desc.id;
        let n = self.by_inode.get(&inode).map_or(0, Vec::len);
        let at = match self.missed.take() {
            Some((which, at, then)) if which == (pid, fd, inode) && then == n => at,
            _ => match self.search(pid, fd, inode)? {
                Ok(k) | Err(k) => k,
            },
        };
        self.by_inode
            .entry(inode)
            .or_default()
            .insert(at, (self.descs.len(), pid, fd));
        self.descs.push(desc);
        Ok(id)
    }

    /// True the first time it is asked for `inode`: whoever gets true stores the object's
    /// contents (a pipe's bytes belong to the pipe, not to either end).
    pub fn first_to_store(&mut self, inode: (u64, u64)) -> bool {
        self.stored.insert(inode)
    }

    /// The first (pid, fd) met holding description `id`.
    pub fn holder(&self, id: u64) -> Option<(Pid, i32)> {
        let i = id.checked_sub(1)? as usize;
        self.by_inode
            .values()
            .flatten()
            .find(|&&(idx, _, _)| idx == i)
            .map(|&(_, p, f)| (p, f))
    }

    /// The description of id `id` (from `find` or `insert`).
    pub fn desc(&self, id: u64) -> &pb::FileDesc {
        &self.descs[id as usize - 1]
    }

    /// Indexes (into `descs`) of the descriptions `which` picks; a kind's `finish` works
    /// on those.
    fn picked(&self, which: impl Fn(&pb::FileDesc) -> bool) -> Vec<usize> {
        (0..self.descs.len())
            .filter(|&i| which(&self.descs[i]))
            .collect()
    }

    pub fn descs(&self) -> &[pb::FileDesc] {
        &self.descs
    }
}

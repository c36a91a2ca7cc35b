//! Fds that are not paths (pipes, sockets, anonymous inodes, namespaces) described for a
//! blocker: what they are and, for a pipe, who else holds it, so that the user can see
//! what to change; and whether a pipe is the tree's own or also held outside it
//! (`PipeClass`).

use crate::blockers::Blocker;
use crate::sockets::SocketTables;
use ckpt_sys::Pid;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};

/// Describes the fds of the processes of one tree; what it reads for that (the socket
/// tables of a netns, every process's pipes) it reads once, and only when needed.
pub struct Describer {
    tree: BTreeSet<i32>,
    /// The tree's zombies (no fds to describe; a pidfd may name one).
    zombies: BTreeSet<i32>,
    sockets: SocketTables,
    /// Link target ("pipe:[N]") -> every (pid, fd) holding it outside the tree, on the
    /// whole host (shared with the other describers of one pass: `HostPipes`).
    pipes: HostPipes,
    /// The same for the tree's own processes, read only when a pipe is also held outside
    /// (each fd of the tree is not read twice for pipes that are the tree's alone).
    tree_pipes: Option<HashMap<String, Vec<Holder>>>,
    /// Some process of the tree could hold a lock through no fd (`locks::may_hold_unlisted`):
    /// the dump then warms up its read of /proc/locks.
    pub lock_candidates: bool,
    /// Some process of the tree holds a pipe: the stopped tree's pass starts its host scan
    /// as soon as the tree is stopped (`HostPipes::scan_ahead`).
    pub saw_pipe: bool,
}

/// Who holds which pipe among the host's processes, outside the tree: read once, on the
/// first pipe asked about, by whichever describer asks first (validation's two threads
/// share one; a scan under way is waited for, not repeated). Each pass (before the
/// seize, then on the stopped tree) has its own: what the first read may have changed
/// since (a pipe passed out of the tree before it stopped) only a read made once the
/// tree is stopped can show.
#[derive(Clone, Default)]
pub struct HostPipes {
    read: Arc<OnceLock<HashMap<String, Vec<Holder>>>>,
    /// The tree's pids as known when this was made (not read: their fds are the tree's).
    skip: Arc<BTreeSet<i32>>,
}

impl HostPipes {
    /// For the tree of `pids` (whose own fds the scan skips).
    pub fn new(pids: impl IntoIterator<Item = i32>) -> HostPipes {
        HostPipes {
            read: Arc::default(),
            skip: Arc::new(pids.into_iter().collect()),
        }
    }

    /// Starts the scan now on a thread of its own (the stopped tree's pass: its fds are
    /// collected meanwhile, and the first pipe met waits for what is left of it).
    pub fn scan_ahead(&self) {
        let me = self.clone();
        let started = std::thread::Builder::new()
            .name("ckpt-pipes".into())
            .spawn(move || {
                me.get();
            });
        // Without a thread, the first pipe asked about reads it as before.
        if let Err(e) = started {
            tracing::debug!("no thread for the host's pipes: {e}");
        }
    }

    fn get(&self) -> &HashMap<String, Vec<Holder>> {
        self.read.get_or_init(|| {
            let others = proc_pids().filter(|p| !self.skip.contains(p));
            pipe_holders(others, "every other process's")
        })
    }
}

impl Describer {
    /// For the tree made of `pids` (pipes to them are "inside").
    pub fn new(pids: impl IntoIterator<Item = Pid>) -> Describer {
        let tree: BTreeSet<i32> = pids.into_iter().map(|p| p.as_raw()).collect();
        let pipes = HostPipes::new(tree.iter().copied());
        Describer::sharing(tree, pipes)
    }

    /// For the same tree as `self`, reading the host's pipes once with it (a second
    /// thread of the same pass).
    pub fn sibling(&self) -> Describer {
        Describer::sharing(self.tree.clone(), self.pipes.clone())
    }

    fn sharing(tree: BTreeSet<i32>, pipes: HostPipes) -> Describer {
        Describer {
            tree,
            zombies: BTreeSet::new(),
            sockets: SocketTables::default(),
            pipes,
            tree_pipes: None,
            lock_candidates: false,
            saw_pipe: false,
        }
    }

    /// Starts reading the host's pipes on a thread of its own (`HostPipes::scan_ahead`).
    pub fn scan_pipes_ahead(&self) {
        self.pipes.scan_ahead();
    }

    /// `pid` is of the tree too (found while the tree is seized).
    pub fn add(&mut self, pid: Pid) {
        self.tree.insert(pid.as_raw());
        // Read again with it when asked (the outside scan drops it when asked).
        self.tree_pipes = None;
    }

    /// The blocker for fd `fd` of `pid`, whose /proc link reads `target` (not a path).
    pub fn blocker(&mut self, pid: Pid, fd: i32, target: &str) -> Blocker {
        let b = |what: String, why: String| Blocker {
            pid: pid.as_raw(),
            what,
            why,
        };
        if let Some(inode) = bracketed(target, "socket:") {
            let (what, kind) = self.socket(pid, fd, target, inode);
            let why = match kind.as_str() {
                "unix" => "unix sockets are not supported yet".to_string(),
                "netlink" => "netlink sockets are not supported yet".to_string(),
                "packet" => "packet sockets are not supported yet".to_string(),
                _ => "this kind of socket is not supported".to_string(),
            };
            return b(what, why);
        }
        if bracketed(target, "pipe:").is_some() {
            // Only the pipes `pipe_class` refuses reach here.
            return self.pipe(pid, fd, target);
        }
        if let Some(kind) = target.strip_prefix("anon_inode:") {
            let kind = kind.trim_matches(|c| c == '[' || c == ']');
            let name = match kind {
                "eventpoll" => "epoll",
                "inotify" => "inotify (file watches, as `tail -f` uses)",
                other => other,
            };
            return b(
                format!("fd {fd} ({name}, {target})"),
                format!(
                    "{} is not supported yet",
                    name.split(' ').next().unwrap_or(name)
                ),
            );
        }
        if let Some((ns, _)) = target.split_once(":[") {
            return b(
                format!("fd {fd} ({target})"),
                format!("a {ns} namespace fd is not supported yet"),
            );
        }
        b(format!("fd {fd} ({target})"), "not supported yet".into())
    }

    /// `pid` is a zombie of the tree (seized trees list only their live processes).
    pub fn add_zombie(&mut self, pid: i32) {
        self.zombies.insert(pid);
    }

    /// Whether `pid` is a process of the tree, a zombie included.
    pub fn has(&self, pid: i32) -> bool {
        self.tree.contains(&pid) || self.zombies.contains(&pid)
    }

    /// Another process of the tree holding the epoll at fd `fd` of `pid`, if any (its
    /// watches name the registering process's fd numbers: not supported shared).
    pub fn epoll_sharer(&self, pid: Pid, fd: i32) -> Option<(i32, i32)> {
        for &other in self.tree.iter().filter(|&&p| p != pid.as_raw()) {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{other}/fd")) else {
                continue;
            };
            for f in fds.flatten() {
                let Some(ofd) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                let epoll = std::fs::read_link(f.path())
                    .is_ok_and(|t| t.as_os_str() == "anon_inode:[eventpoll]");
                if epoll
                    && ckpt_sys::process::same_file_description(pid, fd, Pid::from_raw(other), ofd)
                        .unwrap_or(false)
                {
                    return Some((other, ofd));
                }
            }
        }
        None
    }

    /// The blocker for a network socket the dump refuses (`why` from net/mod.rs).
    pub fn refused_socket(&mut self, pid: Pid, fd: i32, target: &str, why: String) -> Blocker {
        let inode = bracketed(target, "socket:").unwrap_or(0);
        Blocker {
            pid: pid.as_raw(),
            what: self.socket(pid, fd, target, inode).0,
            why,
        }
    }

    /// "fd N (tcp 127.0.0.1:80 LISTEN, socket:[I])" and the first word of the description.
    fn socket(&mut self, pid: Pid, fd: i32, target: &str, inode: u64) -> (String, String) {
        match self.sockets.describe(pid, inode) {
            Some(d) => {
                let kind = d.split(' ').next().unwrap_or("").to_string();
                (format!("fd {fd} ({d}, {target})"), kind)
            }
            // Not bound (an unbound netlink socket is in no table): its family says.
            None => match family(pid, fd) {
                Some(kind) => (format!("fd {fd} ({kind} socket, {target})"), kind.into()),
                None => (
                    format!("fd {fd} ({target}, in no socket table of its netns)"),
                    String::new(),
                ),
            },
        }
    }

    /// Whether the pipe behind fd `fd` of `pid` (link `target`) is held only inside the
    /// tree (restored as it is), also outside it at one end only (external: restored from
    /// an fd the caller of the restore hands over), or refused.
    pub fn pipe_class(&mut self, pid: Pid, fd: i32, target: &str) -> Result<PipeClass, Blocker> {
        self.saw_pipe = true;
        if self.outside_holders(target).is_empty() {
            return Ok(PipeClass::Internal);
        }
        let tree = &self.tree;
        let inside = self
            .tree_pipes
            .get_or_insert_with(|| pipe_holders(tree.iter().copied(), "the tree's"))
            .get(target)
            .cloned()
            .unwrap_or_default();
        let ends: BTreeSet<Option<bool>> = inside.iter().map(|&(p, f)| pipe_end(p, f)).collect();
        if ends.contains(&Some(true)) && ends.contains(&Some(false)) {
            return Err(self.pipe(pid, fd, target));
        }
        Ok(PipeClass::External)
    }

    /// The holders of pipe `target` outside the tree (every process of the host but the
    /// tree's is read once, on the first pipe asked about: `HostPipes`).
    fn outside_holders(&mut self, target: &str) -> Vec<Holder> {
        let tree = &self.tree;
        // A process added to the tree since (`add`) is no longer outside.
        let all = self.pipes.get().get(target).map_or(&[][..], Vec::as_slice);
        all.iter()
            .copied()
            .filter(|(p, _)| !tree.contains(p))
            .collect()
    }

    fn pipe(&mut self, pid: Pid, fd: i32, target: &str) -> Blocker {
        let (end, _) = match pipe_end(pid.as_raw(), fd) {
            Some(true) => ("write end", "read end"),
            Some(false) => ("read end", "write end"),
            None => ("end unknown", "other end"),
        };
        let mut outside = self.outside_holders(target);
        outside.sort_unstable();
        let mut names: Vec<String> = outside
            .iter()
            .take(3)
            .map(|&(p, f)| format!("pid {p} ({}) fd {f}", comm(p)))
            .collect();
        if outside.len() > 3 {
            names.push(format!("{} more", outside.len() - 3));
        }
        Blocker {
            pid: pid.as_raw(),
            what: format!("fd {fd} ({target}, {end})"),
            why: format!(
                "an anonymous pipe whose both ends are held in the process tree and also \
                 outside it, by {}: the restored pipe could not be the one those hold \
                 (close it there, or dump the tree that holds them too)",
                names.join(", ")
            ),
        }
    }
}

impl Describer {
    /// A process of the tree that maps the memfd of inode `ino`, if any: a memfd that is
    /// both an fd and a mapping would come back as two objects.
    pub fn memfd_mapped_by(&self, ino: u64) -> Option<i32> {
        let ino = ino.to_string();
        self.tree.iter().copied().find(|p| {
            std::fs::read(format!("/proc/{p}/maps")).is_ok_and(|m| {
                String::from_utf8_lossy(&m).lines().any(|l| {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    f.get(4) == Some(&ino.as_str())
                        && f.get(5).is_some_and(|n| n.starts_with("/memfd:"))
                })
            })
        })
    }
}

/// What a pipe is to the dumped tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeClass {
    /// Held by processes of the tree only: restored as a new pipe, shared as it was.
    Internal,
    /// One end (at least) held outside the tree too: named `pipe:[INODE]` in the image,
    /// plugged in at restore from an fd the caller passes (`--inherit-fd`).
    External,
}

/// The family of socket `fd` of `pid` in a word, from ckpt's own copy of it.
fn family(pid: Pid, fd: i32) -> Option<&'static str> {
    let sock = ckpt_sys::process::steal_fd(pid, fd).ok()?;
    let (domain, _, _) = ckpt_sys::socket::kind(std::os::fd::AsFd::as_fd(&sock)).ok()?;
    Some(match domain {
        libc::AF_UNIX => "unix",
        libc::AF_NETLINK => "netlink",
        libc::AF_PACKET => "packet",
        libc::AF_INET => "inet",
        libc::AF_INET6 => "inet6",
        _ => return None,
    })
}

/// (pid, fd) of a process holding a pipe.
type Holder = (i32, i32);

/// Whether fd `fd` of `pid` is a write end (O_WRONLY), a read end, or unknown (gone).
fn pipe_end(pid: i32, fd: i32) -> Option<bool> {
    ckpt_sys::proc::fdinfo(Pid::from_raw(pid), fd)
        .ok()
        .map(|i| i.flags & 3 == 1)
}

/// N from `PREFIX[N]`.
fn bracketed(target: &str, prefix: &str) -> Option<u64> {
    target
        .strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse()
        .ok()
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Every pipe fd of the processes `pids` (those we may read), by link target.
fn pipe_holders(pids: impl Iterator<Item = i32>, whose: &str) -> HashMap<String, Vec<Holder>> {
    let t = std::time::Instant::now();
    let out = scan_pipes(pids);
    // (Wall time only: the scan runs on several threads.)
    tracing::debug!(
        pipes = out.len(),
        ms = ckpt_images::units::tenths(t.elapsed().as_secs_f64() * 1e3),
        "read {whose} pipes"
    );
    out
}

/// Every process of the host (/proc's numeric entries).
fn proc_pids() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|p| p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
}

/// The pipe fds of `pids`: their /proc/PID/fd lists split between a few threads (the
/// kernel instantiates each fd's inode as the list is read: tens of ms of CPU for the
/// whole host on a busy machine).
fn scan_pipes(pids: impl Iterator<Item = i32>) -> HashMap<String, Vec<Holder>> {
    // ckpt's own copies (a pipe it peeks into) are not holders.
    let me = std::process::id() as i32;
    let pids: Vec<i32> = pids.filter(|&p| p != me).collect();
    let scan = |pids: &[i32]| {
        let mut out: HashMap<String, Vec<Holder>> = HashMap::new();
        for &pid in pids {
            for (fd, ino) in ckpt_sys::proc::pipe_fds(pid).unwrap_or_default() {
                out.entry(format!("pipe:[{ino}]"))
                    .or_default()
                    .push((pid, fd));
            }
        }
        out
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || pids.len() < 64 {
        return scan(&pids);
    }
    let chunk = pids.len().div_ceil(threads);
    let parts: Vec<HashMap<String, Vec<Holder>>> = std::thread::scope(|s| {
        let handles: Vec<_> = pids
            .chunks(chunk)
            .map(|c| s.spawn(move || scan(c)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let mut out: HashMap<String, Vec<Holder>> = HashMap::new();
    for part in parts {
        for (k, mut v) in part {
            out.entry(k).or_default().append(&mut v);
        }
    }
    out
}

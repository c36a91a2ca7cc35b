//! Fds that are not paths (pipes, sockets, anonymous inodes, namespaces) described for a
//! blocker: what they are and, for a pipe, who else holds it, so that the user can see
//! what to change (a pipe inherited from a harness is not the program's own doing).

use crate::blockers::Blocker;
use crate::sockets::SocketTables;
use ckpt_sys::Pid;
use std::collections::{BTreeSet, HashMap};

/// Describes the fds of the processes of one tree; what it reads for that (the socket
/// tables of a netns, every process's pipes) it reads once, and only when needed.
pub struct Describer {
    tree: BTreeSet<i32>,
    sockets: SocketTables,
    /// Link target ("pipe:[N]") -> every (pid, fd) holding it, on the whole host.
    pipes: Option<HashMap<String, Vec<Holder>>>,
}

impl Describer {
    /// For the tree made of `pids` (pipes to them are "inside").
    pub fn new(pids: impl IntoIterator<Item = Pid>) -> Describer {
        Describer {
            tree: pids.into_iter().map(|p| p.as_raw()).collect(),
            sockets: SocketTables::default(),
            pipes: None,
        }
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

    fn pipe(&mut self, pid: Pid, fd: i32, target: &str) -> Blocker {
        let (end, other_end) = match pipe_end(pid.as_raw(), fd) {
            Some(true) => ("write end", "read end"),
            Some(false) => ("read end", "write end"),
            None => ("end unknown", "other end"),
        };
        let mine = pipe_end(pid.as_raw(), fd);
        let holders = self.pipes.get_or_insert_with(pipe_holders);
        let mut others: Vec<Holder> = holders
            .get(target)
            .map(|v| {
                v.iter()
                    .copied()
                    .filter(|&h| h != (pid.as_raw(), fd))
                    .collect()
            })
            .unwrap_or_default();
        // Other processes first: they are what the user needs to know about.
        others.sort_by_key(|&(p, f)| (p == pid.as_raw(), p, f));
        let list = |hs: Vec<&Holder>| -> String {
            let mut names: Vec<String> = hs
                .iter()
                .take(3)
                .map(|&&(p, f)| format!("pid {p} ({}) fd {f}", comm(p)))
                .collect();
            if hs.len() > 3 {
                names.push(format!("{} more", hs.len() - 3));
            }
            names.join(", ")
        };
        let (outside, inside): (Vec<&Holder>, Vec<&Holder>) =
            others.iter().partition(|(p, _)| !self.tree.contains(p));
        let (far, near): (Vec<&Holder>, Vec<&Holder>) = outside
            .iter()
            .partition(|&&&(p, f)| mine.is_some() && pipe_end(p, f) != mine);
        let advice = "inherited from whatever started it, most likely; pipes are not \
                      supported yet, so start the workload without it (e.g. `setsid CMD \
                      </dev/null >LOG 2>&1 &`, or close the fd first)";
        let why = if !far.is_empty() {
            format!(
                "an anonymous pipe whose {other_end} is held outside the process tree, by \
                 {}: {advice}",
                list(far)
            )
        } else if !near.is_empty() {
            format!(
                "an anonymous pipe also held outside the process tree, by {}: {advice}",
                list(near)
            )
        } else if !inside.is_empty() {
            format!(
                "an anonymous pipe shared with {} in the tree; pipes are not supported yet",
                list(inside)
            )
        } else {
            "an anonymous pipe no other fd holds; pipes are not supported yet".into()
        };
        Blocker {
            pid: pid.as_raw(),
            what: format!("fd {fd} ({target}, {end})"),
            why,
        }
    }
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

/// Every pipe fd of every process of the host (those we may read), by link target.
fn pipe_holders() -> HashMap<String, Vec<Holder>> {
    let mut out: HashMap<String, Vec<Holder>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for f in fds.flatten() {
            let Some(fd) = f.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(t) = std::fs::read_link(f.path()) {
                let t = t.to_string_lossy();
                if t.starts_with("pipe:[") {
                    out.entry(t.into_owned()).or_default().push((pid, fd));
                }
            }
        }
    }
    out
}

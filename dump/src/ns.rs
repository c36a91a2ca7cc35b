//! The namespaces of a process, against ckpt's own (`/proc/PID/ns/*`, compared by the
//! inode each link names). A namespace the process shares with ckpt is the host's as far
//! as the dump is concerned: external, it stays where it is and the restored process is
//! put back into it (ckpt's, at restore). One the process has of its own would be lost
//! by a restore into ckpt's namespaces (another hostname, other SysV IPC objects, other
//! mounts, another network, other pids), so it is refused by name until the dump
//! records it.

use crate::blockers::Blockers;
use ckpt_sys::Pid;

/// The namespaces a container's root owns, by /proc/PID/ns link name.
pub type Owned = std::collections::HashMap<&'static str, String>;

/// Every namespace /proc/PID/ns names on 6.18, with what a process in one of its own
/// would lose. `*_for_children` is where its next children go (set by unshare(2) without
/// a fork): compared with ckpt's namespace of that kind.
const KINDS: [(&str, &str, &str); 10] = [
    ("cgroup", "cgroup", "its cgroup paths and root"),
    (
        "ipc",
        "ipc",
        "its SysV IPC objects and POSIX message queues",
    ),
    ("mnt", "mnt", "its mounts"),
    (
        "net",
        "net",
        "its interfaces, addresses, routes and sockets",
    ),
    (
        "pid",
        "pid",
        "its pids (it lives in a nested pid namespace)",
    ),
    (
        "pid_for_children",
        "pid",
        "the pid namespace its next children go to",
    ),
    ("time", "time", "its clock offsets"),
    (
        "time_for_children",
        "time",
        "the clock offsets its next children get",
    ),
    (
        "user",
        "user",
        "its uid/gid maps and the capabilities in it",
    ),
    ("uts", "uts", "its hostname and domain name"),
];

/// ckpt's own namespaces (they do not change while it runs).
struct Host {
    ids: Vec<Option<String>>,
}

fn host() -> &'static Host {
    static HOST: std::sync::OnceLock<Host> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        let me = nix::unistd::getpid();
        Host {
            ids: KINDS
                .iter()
                .map(|(_, own, _)| ckpt_sys::ns::ns_id(me, own).ok())
                .collect(),
        }
    })
}

/// Pushes a blocker for each namespace `pid` shares neither with ckpt nor, in a container
/// (`container`: the namespaces its root owns, `container.rs`), with the container's
/// root. A link that cannot be read (a kernel without that kind, or the process gone)
/// blocks nothing here: the other checks of a vanished process say so. Pid namespaces
/// are the tree's business (`pidns.rs`) but for the root's own: a process below the root
/// is in the root's or in one nested below it, and where children go
/// (pid_for_children) depends on which of them it forked.
pub fn blockers(pid: Pid, below_root: bool, container: Option<&Owned>, out: &mut Blockers) {
    for ((link, _, loses), host) in KINDS.iter().zip(&host().ids) {
        if *link == "pid_for_children" || (below_root && *link == "pid") {
            continue;
        }
        let (Ok(id), Some(host)) = (ckpt_sys::ns::ns_id(pid, link), host) else {
            continue;
        };
        let owned = container.is_some_and(|c| c.get(link) == Some(&id));
        if &id != host && !owned {
            let what = if link.ends_with("_for_children") {
                format!("{link} {id}")
            } else {
                format!("namespace {id}")
            };
            let whose = if container.is_some() {
                format!("neither ckpt's ({host}) nor the container's")
            } else {
                format!("not ckpt's ({host})")
            };
            out.push(
                pid,
                what,
                format!(
                    "{whose}: a restore would lose {loses}; not supported yet (a \
                     container's pid 1 may own its pid, mnt, uts, ipc, net, cgroup, time \
                     and user namespaces)"
                ),
            );
        }
    }
}

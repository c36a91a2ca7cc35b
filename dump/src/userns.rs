//! A container's user namespace. Restored by forking the root's seed with CLONE_NEWUSER
//! and its other CLONE_NEW* at once (so the new user namespace owns them, as it owned
//! the dumped ones: checked here), ckpt writing the maps before the seed goes on. The
//! images hold ids as ckpt sees them (/proc/PID/status), which a restore sets from
//! inside the namespace: only identity ranges (inside id = outside id) keep them the same
//! there, so other maps are refused by name.

use crate::blockers::Blockers;
use ckpt_images::pb;
use ckpt_sys::Pid;

/// Records the maps of `root`'s user namespace into `c`, or refuses.
pub fn record(root: Pid, flags: u64, c: &mut pb::Container, out: &mut Blockers) {
    let Ok(user) = ckpt_sys::ns::ns_id(root, "user") else {
        out.push(root, "user namespace", "cannot be read");
        return;
    };
    for (kind, flag) in crate::container::OWNED {
        if flag & flags == 0 || kind == "user" {
            continue;
        }
        match ckpt_sys::ns::owner(root, kind) {
            Ok(o) if o == user => {}
            Ok(o) => out.push(
                root,
                format!("{kind} namespace (owned by {o})"),
                format!("not owned by the container's user namespace {user}: not restored yet"),
            ),
            Err(e) => out.push(root, format!("{kind} namespace"), e.to_string()),
        }
    }
    let read = |f: &str| std::fs::read_to_string(format!("/proc/{root}/{f}"));
    let (Ok(uid), Ok(gid), Ok(setgroups)) = (read("uid_map"), read("gid_map"), read("setgroups"))
    else {
        out.push(root, "user namespace", "its maps cannot be read");
        return;
    };
    for (name, map) in [("uid_map", &uid), ("gid_map", &gid)] {
        if map.trim().is_empty() {
            out.push(
                root,
                format!("user namespace {name}"),
                "empty: not restored",
            );
        }
        for line in map.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 3 || f[0] != f[1] {
                out.push(
                    root,
                    format!("user namespace {name} line {:?}", line.trim()),
                    "ids inside differ from ckpt's: only identity ranges are restored yet",
                );
            }
        }
    }
    c.uid_map = uid;
    c.gid_map = gid;
    c.setgroups_deny = setgroups.trim() == "deny";
    shared_memory(root, out);
}

/// Memory shared between the tree's processes is opened by each restored process
/// through ckpt's /proc/PID/fd, which a process in the container's user namespace may not
/// do: refused by name (one process alone shares nothing).
fn shared_memory(root: Pid, out: &mut Blockers) {
    let all = crate::tree::descendants(root).unwrap_or_default();
    if all.len() < 2 {
        return;
    }
    for p in all {
        let maps = std::fs::read_to_string(format!("/proc/{p}/maps")).unwrap_or_default();
        for line in maps.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let shared = f.get(1).is_some_and(|perms| perms.ends_with('s'));
            let path = f.get(5).copied().unwrap_or("");
            let anon = ["", "/dev/zero", "/memfd:", "/SYSV", "[anon_shmem"]
                .iter()
                .any(|k| {
                    if k.is_empty() {
                        path.is_empty()
                    } else {
                        path.starts_with(k)
                    }
                });
            if shared && anon {
                out.push(
                    p,
                    format!("shared mapping {}", f[0]),
                    "shared memory in a container with its own user namespace is not \
                     restored yet",
                );
                break;
            }
        }
    }
}

//! A container's user namespace. Restored by forking the root's seed with CLONE_NEWUSER
//! and its other CLONE_NEW* at once (so the new user namespace owns them, as it owned
//! the dumped ones: checked here), ckpt writing the maps before the seed goes on. The
//! images hold ids as ckpt sees them (/proc/PID/status, stat of the tmpfs files, IPC_STAT:
//! the parent namespace's view); the restore translates what the tree sets from inside
//! through the maps (`restore/src/userns.rs`). The seeds act inside before they become
//! the processes: as ckpt's own ids when the maps cover ckpt's uid and gid 0, else as
//! the namespace's root (a rootless container's maps, "0 1000 1" then "1 100000 65536").
//! Refused by name: maps that cover neither (the seeds would have no id to create files
//! as), a process whose ids the maps do not cover (it could not set them again from
//! inside).

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
    let mut maps = Vec::new();
    for (name, map) in [("uid_map", &uid), ("gid_map", &gid)] {
        match ckpt_sys::idmap::IdMap::parse(map) {
            Ok(m) if m.inside(0).is_none() && m.outside(0).is_none() => out.push(
                root,
                format!("user namespace {name} {:?}", map.trim()),
                "maps neither ckpt's own id 0 nor an id to the namespace's root, which \
                 the restore's seeds act as inside before they become the processes",
            ),
            Ok(m) => maps.push(m),
            Err(e) => out.push(root, format!("user namespace {name}"), e),
        }
    }
    if let [uids, gids] = &maps[..] {
        ids_blockers(root, uids, gids, out);
    }
    c.uid_map = uid;
    c.gid_map = gid;
    c.setgroups_deny = setgroups.trim() == "deny";
}

/// Every process's ids (real, effective, saved, fs; supplementary groups) must have an id
/// inside the namespace: the restore sets them from there.
fn ids_blockers(
    root: Pid,
    uids: &ckpt_sys::idmap::IdMap,
    gids: &ckpt_sys::idmap::IdMap,
    out: &mut Blockers,
) {
    for p in crate::tree::descendants(root).unwrap_or_default() {
        let Ok(st) = ckpt_sys::proc::status(p) else {
            continue;
        };
        let u = [st.ruid, st.euid, st.suid, st.fuid];
        let g = [st.rgid, st.egid, st.sgid, st.fgid];
        let groups: Vec<u32> = st.groups.iter().map(|&g| g as u32).collect();
        let bad_uid = u.iter().find(|&&id| uids.inside(id).is_none());
        let bad_gid = g
            .iter()
            .chain(&groups)
            .find(|&&id| gids.inside(id).is_none());
        for (kind, id) in [("uid", bad_uid), ("gid", bad_gid)] {
            if let Some(id) = id {
                out.push(
                    p,
                    format!("{kind} {id}"),
                    format!(
                        "not in the container's user namespace's {kind}_map: a restore \
                         could not set it from inside"
                    ),
                );
            }
        }
    }
}

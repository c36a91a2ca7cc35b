//! A container's user namespace (`dump/src/userns.rs`): the root's seed is forked with
//! CLONE_NEWUSER among its flags, so the new user namespace owns the others made with
//! it; it waits on a pipe while ckpt writes its setgroups, uid_map and gid_map (a map
//! may be written once, by a process with CAP_SETUID/CAP_SETGID over the parent
//! namespace: ckpt), then goes on with every capability there, as ckpt's ids seen
//! inside, or, when the maps leave ckpt's id 0 out (a rootless container's, "0 1000 1"
//! then "1 100000 65536"), as the namespace's root (`RootInside`): with no id inside it
//! could create no file and set no owner.
//!
//! The images hold ids as ckpt read them, from outside. What the tree's own tasks set
//! from inside the namespace takes the id inside instead (`inside`): the seeds' file
//! identity, the credentials each puppet injects, the owners of the tmpfs files and IPC
//! objects the root's seed makes. The verify reads /proc from outside again and compares
//! with the image as it is. An id the map does not cover cannot be set from inside:
//! refused by name before anything is created.

use crate::{RestoreError, R};
use ckpt_images::pb;
use ckpt_sys::idmap::IdMap;
use ckpt_sys::Pid;

/// Writes the dumped maps of `c` for the freshly forked `child`.
pub fn write_maps(child: Pid, c: &pb::Container) -> R<()> {
    for (file, value) in [
        (
            "setgroups",
            if c.setgroups_deny { "deny" } else { "allow" }.to_string(),
        ),
        ("uid_map", c.uid_map.clone()),
        ("gid_map", c.gid_map.clone()),
    ] {
        if file != "setgroups" {
            IdMap::parse(&value).map_err(|e| {
                RestoreError::Refused(format!(
                    "inventory.img: container: user namespace {file}: {e}"
                ))
            })?;
        }
        let text: String = if file == "setgroups" {
            value
        } else {
            value
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
                .collect()
        };
        let path = format!("/proc/{child}/{file}");
        std::fs::write(&path, &text)
            .map_err(|e| RestoreError::Refused(format!("writing {text:?} to {path}: {e}")))?;
    }
    Ok(())
}

/// Which of ckpt's ids the maps of a container's user namespace leave out: the seeds (and
/// the holder) then take the namespace's root id instead, right after the maps are
/// written. Taking it keeps their capabilities there: the kernel drops them on a change
/// away from the namespace's root only, and ckpt's id was not it. Worked out before the
/// fork (the child may not allocate).
#[derive(Debug, Clone, Copy, Default)]
pub struct RootInside {
    uid: bool,
    gid: bool,
}

impl RootInside {
    /// From the maps as written (`uid_map`, `gid_map` text); unreadable maps take
    /// nothing (the write of the maps refuses them).
    pub fn of_maps(uid_map: &str, gid_map: &str) -> RootInside {
        let lacks_0 = |m: &str| IdMap::parse(m).is_ok_and(|m| m.inside(0).is_none());
        RootInside {
            uid: lacks_0(uid_map),
            gid: lacks_0(gid_map),
        }
    }

    /// In the freshly forked child, its maps written: false when the kernel refused.
    /// The change of ids makes the child not dumpable, which would shut the puppets
    /// out of the holder's /proc/PID/fd (a ptrace access check): dumpable again (each
    /// seed's own flag is set from its image later, `puppet.rs`).
    pub fn take(self) -> bool {
        use nix::unistd::{setresgid, setresuid, Gid, Uid};
        let root_gid = Gid::from_raw(0);
        let root_uid = Uid::from_raw(0);
        (!self.gid || setresgid(root_gid, root_gid, root_gid).is_ok())
            && (!self.uid || setresuid(root_uid, root_uid, root_uid).is_ok())
            && (!(self.uid || self.gid) || nix::sys::prctl::set_dumpable(true).is_ok())
    }
}

/// The image is of a container with a user namespace of its own.
pub fn owned(inv: &pb::Inventory) -> bool {
    inv.container
        .as_ref()
        .is_some_and(|c| c.clone_flags & libc::CLONE_NEWUSER as u64 != 0)
}

/// Holds ckpt's memfds of shared memory (`shared.rs`) from inside a container's user
/// namespace. A puppet opens them through /proc/PID/fd/N, which needs ptrace access to
/// PID; to ckpt, in the parent namespace with capabilities a puppet has only inside its
/// own, it has none. So a child of ckpt, a copy that inherited the memfds, joins the
/// container's user namespace (setns: it gets every capability there and keeps ckpt's
/// ids, as the seeds do) and waits; the puppets open the memfds through its fd
/// directory. It is killed once every puppet has mapped them (its drop), and, were the
/// restore to fail, with the rest of ckpt's descendants.
pub struct Holder {
    pub pid: Pid,
}

impl Holder {
    /// Forks the holder into the user namespace of `root` (the container's root seed, its
    /// maps written).
    pub fn start(root: Pid) -> R<Holder> {
        let path = format!("/proc/{root}/ns/user");
        let ns = std::fs::File::open(&path).map_err(|e| ckpt_sys::Error::io(&path, e))?;
        let read = |f: &str| {
            let path = format!("/proc/{root}/{f}");
            std::fs::read_to_string(&path).map_err(|e| ckpt_sys::Error::io(&path, e))
        };
        // The seeds' ids: the puppets' ptrace access to it goes by them.
        let ids = RootInside::of_maps(&read("uid_map")?, &read("gid_map")?);
        match ckpt_sys::process::fork_with_pids(&[])? {
            ckpt_sys::process::Forked::Child => {
                // Nothing that allocates here: ckpt may have other threads.
                let ok = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).is_ok()
                    && nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWUSER).is_ok()
                    && ids.take();
                if !ok {
                    ckpt_sys::process::exit_now(1)
                }
                ckpt_sys::process::pause_forever()
            }
            ckpt_sys::process::Forked::Parent(pid) => Ok(Holder { pid }),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        // Still ckpt's child (not reaped by a rollback): its pid is still its own.
        if matches!(
            waitpid(self.pid, Some(WaitPidFlag::WNOHANG)),
            Ok(WaitStatus::StillAlive)
        ) {
            let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waitpid(self.pid, None);
        }
    }
}

/// The maps of a container's own user namespace, to translate the image's ids (ckpt's
/// view) into the namespace's.
#[derive(Debug, Clone)]
pub struct Ids {
    uid: IdMap,
    gid: IdMap,
}

fn refused(what: String) -> RestoreError {
    RestoreError::Refused(format!(
        "{what} has no id in the container's user namespace (its map does not cover it): \
         it cannot be set from inside"
    ))
}

impl Ids {
    /// The maps of `inv`'s container, when it has a user namespace of its own whose maps
    /// are not identity ranges (None: the ids inside are the image's).
    pub fn of(inv: &pb::Inventory) -> R<Option<Ids>> {
        let Some(c) = inv.container.as_ref().filter(|_| owned(inv)) else {
            return Ok(None);
        };
        let parse = |what: &str, m: &str| {
            IdMap::parse(m).map_err(|e| {
                RestoreError::Refused(format!(
                    "inventory.img: container: user namespace {what}: {e}"
                ))
            })
        };
        let ids = Ids {
            uid: parse("uid_map", &c.uid_map)?,
            gid: parse("gid_map", &c.gid_map)?,
        };
        if ids.uid.is_identity() && ids.gid.is_identity() {
            return Ok(None);
        }
        // The seeds act as ckpt's ids (root) inside, else as the namespace's root
        // (`RootInside`): one of them must be there.
        let lacks = |m: &IdMap| m.inside(0).is_none() && m.outside(0).is_none();
        if lacks(&ids.uid) || lacks(&ids.gid) {
            return Err(refused(
                "ckpt's own uid or gid 0, and the namespace's root, (what the seeds act as \
                 before they become the processes)"
                    .into(),
            ));
        }
        Ok(Some(ids))
    }

    pub fn uid(&self, outside: u32, whose: &dyn Fn() -> String) -> R<u32> {
        self.uid
            .inside(outside)
            .ok_or_else(|| refused(format!("{}: uid {outside}", whose())))
    }

    pub fn gid(&self, outside: u32, whose: &dyn Fn() -> String) -> R<u32> {
        self.gid
            .inside(outside)
            .ok_or_else(|| refused(format!("{}: gid {outside}", whose())))
    }

    /// `c` with its ids, groups included, as the namespace sees them.
    pub fn creds(&self, c: &pb::Creds, whose: &dyn Fn() -> String) -> R<pb::Creds> {
        let mut out = c.clone();
        for u in &mut out.uid {
            *u = self.uid(*u, whose)?;
        }
        for g in out.gid.iter_mut().chain(out.groups.iter_mut()) {
            *g = self.gid(*g, whose)?;
        }
        Ok(out)
    }
}

/// A mount's options with the ids in them (tmpfs and devpts `uid=`, `gid=`: the kernel
/// shows them as ids of the initial namespace, mount(2) reads them in the mounter's).
fn mount_options(ids: &Ids, options: &str, mountpoint: &str) -> R<String> {
    let whose = || format!("mounts.img: the {mountpoint} mount's options");
    let out: Vec<String> = options
        .split(',')
        .map(|o| match o.split_once('=') {
            Some(("uid", n)) => match n.parse() {
                Ok(n) => Ok(format!("uid={}", ids.uid(n, &whose)?)),
                Err(_) => Ok(o.to_string()),
            },
            Some(("gid", n)) => match n.parse() {
                Ok(n) => Ok(format!("gid={}", ids.gid(n, &whose)?)),
                Err(_) => Ok(o.to_string()),
            },
            _ => Ok(o.to_string()),
        })
        .collect::<R<_>>()?;
    Ok(out.join(","))
}

/// A unix socket's ids that its seed sets from inside: the owner of its file (chown
/// after bind), the peer credentials it is made as (the euid and egid of its maker) and
/// those of its queued messages (SCM_CREDENTIALS, checked against the sender's ids).
fn unix_socket(ids: &Ids, u: &mut pb::UnixSocket, pid: i32) -> R<()> {
    let name = String::from_utf8_lossy(&u.name).into_owned();
    let whose = || format!("pid {pid}: unix socket {:?}", name.trim_matches('\0'));
    if u.name.first().is_some_and(|&b| b != 0) {
        u.file_uid = ids.uid(u.file_uid, &|| format!("{} (its file's owner)", whose()))?;
        u.file_gid = ids.gid(u.file_gid, &|| format!("{} (its file's group)", whose()))?;
    }
    if u.peer_pid > 0 {
        u.peer_uid = ids.uid(u.peer_uid, &|| format!("{} (its maker)", whose()))?;
        u.peer_gid = ids.gid(u.peer_gid, &|| format!("{} (its maker)", whose()))?;
    }
    for c in &mut u.creds {
        c.uid = ids.uid(c.uid, &|| {
            format!("{} (a queued message's sender)", whose())
        })?;
        c.gid = ids.gid(c.gid, &|| {
            format!("{} (a queued message's sender)", whose())
        })?;
    }
    Ok(())
}

/// Rewrites what the tree sets from inside its user namespace with the ids there: each
/// seed's credentials (its file identity, `seed/access.rs`), the holders' credentials
/// of the files the seeds create, the owners of the tmpfs files and IPC objects the
/// root's seed makes. The puppets translate the credentials they inject with the same
/// maps (`SeedPlan::userns`). Nothing is made yet.
pub fn inside(
    ids: Ids,
    plans: &mut [crate::seed::SeedPlan],
    fds: &mut crate::fdtable::Plan,
    ns: Option<&mut crate::container::Plan>,
) -> R<()> {
    let ids = std::sync::Arc::new(ids);
    for p in plans.iter_mut() {
        let pid = p.pid;
        if let Some(c) = &p.creds {
            p.creds = Some(ids.creds(c, &|| format!("pid {pid}"))?);
        }
        p.userns = Some(ids.clone());
    }
    for o in fds.creates.iter_mut().flatten() {
        let pid = o.holder_pid;
        if let Some(c) = &o.holder.1 {
            o.holder.1 = Some(ids.creds(c, &|| format!("pid {pid} (a file it holds)"))?);
        }
        for (d, _) in &mut o.descs {
            if let Some(u) = &mut d.unix {
                unix_socket(&ids, u, pid)?;
            }
        }
    }
    let Some(ns) = ns else {
        return Ok(());
    };
    for m in &mut ns.mounts.mounts {
        m.options = mount_options(&ids, &m.options, &m.mountpoint)?;
    }
    for f in ns.mounts.files.values_mut().flatten() {
        let path = f.path.clone();
        let whose = || format!("mounts.img: the owner of {path}");
        f.uid = ids.uid(f.uid, &whose)?;
        f.gid = ids.gid(f.gid, &whose)?;
    }
    for o in &mut ns.ipc.objects {
        let id = o.id;
        let whose = || format!("ipc.img: the owner of IPC object {id}");
        o.uid = ids.uid(o.uid, &whose)?;
        o.gid = ids.gid(o.gid, &whose)?;
    }
    Ok(())
}

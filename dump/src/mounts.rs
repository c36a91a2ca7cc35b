//! A container's mount namespace: its mountinfo against ckpt's. The mounts it shares with
//! ckpt's (a copy made by `unshare --mount`, matched as (root, mount point, fs type,
//! source)) are the restore's copy of ckpt's again; a root of its own (pivot_root: runc,
//! LXC) is a bind of a host directory and none of ckpt's mounts is its; its /proc and
//! what stands on it are made by the restore from inside its pid namespace
//! (`ns::mount_inside`); every other mount is recorded in `Container.mounts`:
//! - a tmpfs (its root): a fresh one with the same options, its files in mounts.img;
//! - sysfs, mqueue, cgroup2, devpts, another proc (their root): fresh ones;
//! - a bind of something the host has (a mount of the same device that holds its root):
//!   external, named by its host path, bound again at restore from that path or the one
//!   `--ext-mount-map` gives;
//! - a bind of part of an earlier mount of its own (MOUNT_BIND);
//!
//! with their per-mount flags. Which of ckpt's mounts it shares is recorded too
//! (`host_mounts`): ckpt's mounts made after it started are left out of its restore.

use crate::blockers::Blockers;
use ckpt_images::{names, pb, ImageSink, Kind};
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

pub use ckpt_sys::mounts::{mountinfo, Line};

/// `lines` with every mount after the one it stands on, otherwise in their order: the
/// order a restore can mount them in. mountinfo lists a namespace's mounts by when each
/// was made, and a mount made before the one it was later put on (a tree cloned, then
/// moved there) comes first.
fn mount_order(lines: Vec<Line>) -> Vec<Line> {
    let ids: std::collections::HashSet<u64> = lines.iter().map(|l| l.id).collect();
    let mut placed: std::collections::HashSet<u64> = std::collections::HashSet::new();
    let mut left = lines;
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let next = left
            .iter()
            .position(|l| {
                !ids.contains(&l.parent) || l.parent == l.id || placed.contains(&l.parent)
            })
            .unwrap_or(0);
        let l = left.remove(next);
        placed.insert(l.id);
        out.push(l);
    }
    out
}

/// MS_* flags of a mount's own options (mountinfo field 6). No atime option shown is
/// strictatime (mount(2) would give relatime).
fn flags(opts: &str) -> u64 {
    use libc::*;
    let atime = ["relatime", "noatime", "strictatime"];
    let mut f = if opts.split(',').any(|o| atime.contains(&o)) {
        0
    } else {
        MS_STRICTATIME
    };
    for o in opts.split(',') {
        f |= match o {
            "ro" => MS_RDONLY,
            "nosuid" => MS_NOSUID,
            "nodev" => MS_NODEV,
            "noexec" => MS_NOEXEC,
            "noatime" => MS_NOATIME,
            "nodiratime" => MS_NODIRATIME,
            "relatime" => MS_RELATIME,
            "nosymfollow" => 256, // MS_NOSYMFOLLOW
            "strictatime" => MS_STRICTATIME,
            _ => 0,
        };
    }
    f
}

/// Superblock options as mount(2) data, without rw/ro (a per-mount matter here).
fn data(super_opts: &str) -> String {
    super_opts
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect::<Vec<_>>()
        .join(",")
}

const FRESH: [&str; 5] = ["sysfs", "mqueue", "cgroup2", "devpts", "proc"];

/// The ids of the mounts of `root`'s mount namespace: a file an fd holds on any other
/// mount lies outside a pivoted container's root (`Fd.outside_root`).
pub fn ids(root: Pid) -> std::collections::HashSet<u64> {
    mountinfo(root).iter().map(|m| m.id).collect()
}

/// The "/" line's (root, mount point, fs type, source).
fn top_key(lines: &[Line]) -> Option<(&str, &str, &str, &str)> {
    lines.iter().find(|m| m.mountpoint == "/").map(Line::key)
}

/// The container's own mounts, recorded, and which of ckpt's mounts it shares (none for
/// a root of its own: the restore's copy of ckpt's mounts is cut down to these); what
/// cannot be restored is pushed to `out`.
pub fn record(root: Pid, out: &mut Blockers) -> (Vec<pb::Mount>, Vec<pb::HostMount>) {
    let host_all = mountinfo(nix::unistd::getpid());
    let theirs = mount_order(mountinfo(root));
    let mut shared_with_host = Vec::new();
    let mut recorded: Vec<pb::Mount> = Vec::new();
    // (device, root, index) of each recorded mount a later one may bind from.
    let mut sources: Vec<(String, String, u32)> = Vec::new();
    let extra = if top_key(&theirs) != top_key(&host_all) {
        // pivot_root (runc, LXC): none of ckpt's mounts is theirs; their root is a bind
        // of a host directory, the first mount restored.
        let Some(t) = theirs.iter().find(|m| m.mountpoint == "/") else {
            out.push(
                root,
                "its mount namespace",
                "no mount on / in its mountinfo",
            );
            return (Vec::new(), Vec::new());
        };
        let Some(from) = host_path(&host_all, t) else {
            match device(t) {
                Ok(rec) => {
                    recorded.push(rec);
                    sources.push((t.dev.clone(), t.root.clone(), 0));
                    let rest: Vec<Line> =
                        theirs.into_iter().filter(|m| m.mountpoint != "/").collect();
                    return record_rest(root, rest, recorded, sources, &host_all, Vec::new(), out);
                }
                Err(why) => {
                    out.push(
                        root,
                        format!("its root / ({} {} {})", t.fstype, t.source, t.root),
                        format!(
                            "neither a directory of a filesystem ckpt's namespace has mounted \
                             nor {why}"
                        ),
                    );
                    return (Vec::new(), Vec::new());
                }
            }
        };
        recorded.push(pb::Mount {
            kind: pb::MountKind::MountExternal as i32,
            mountpoint: "/".into(),
            fstype: t.fstype.clone(),
            source: t.source.clone(),
            flags: flags(&t.opts),
            options: data(&t.super_opts),
            external: from,
            index: 0,
            shared_group: group(t, "shared:"),
            master_group: group(t, "master:"),
            ..Default::default()
        });
        sources.push((t.dev.clone(), t.root.clone(), 0));
        theirs.into_iter().filter(|m| m.mountpoint != "/").collect()
    } else {
        let mut host = host_all.clone();
        let mut extra = Vec::new();
        for m in theirs {
            match host.iter().position(|h| h.key() == m.key()) {
                Some(i) => {
                    let h = host.remove(i);
                    shared_with_host.push(pb::HostMount {
                        root: h.root,
                        mountpoint: h.mountpoint,
                        fstype: h.fstype,
                        source: h.source,
                    });
                }
                None => extra.push(m),
            }
        }
        // ckpt's mounts it lacks (made on the host after it started) are no state of its:
        // the restore leaves them out (`host_mounts`).
        drop(host);
        extra
    };
    record_rest(
        root,
        extra,
        recorded,
        sources,
        &host_all,
        shared_with_host,
        out,
    )
}

/// The container's mounts after its root (`extra`, in mount order), recorded after
/// `recorded`; `sources`: (device, root, index) of each recorded mount a later one may
/// bind from.
fn record_rest(
    root: Pid,
    extra: Vec<Line>,
    mut recorded: Vec<pb::Mount>,
    mut sources: Vec<(String, String, u32)>,
    host_all: &[Line],
    shared_with_host: Vec<pb::HostMount>,
    out: &mut Blockers,
) -> (Vec<pb::Mount>, Vec<pb::HostMount>) {
    let mut own_proc = false;
    let mut tmpfs_at: Vec<String> = Vec::new();
    for m in extra {
        let what = format!("mount {} ({} {})", m.mountpoint, m.fstype, m.source);
        let mut refuse = |why: &str| out.push(root, format!("{what} in its mount namespace"), why);

        if tmpfs_at.contains(&m.mountpoint) {
            refuse("stacked over a tmpfs on the same mount point: not restored yet");
            continue;
        }
        let mut rec = pb::Mount {
            mountpoint: m.mountpoint.clone(),
            fstype: m.fstype.clone(),
            source: m.source.clone(),
            flags: flags(&m.opts),
            options: data(&m.super_opts),
            index: recorded.len() as u32,
            super_ro: m.super_opts.split(',').any(|o| o == "ro"),
            shared_group: group(&m, "shared:"),
            master_group: group(&m, "master:"),
            ..Default::default()
        };
        let own = sources.iter().find_map(|(dev, r, i)| {
            let rest = if r == "/" {
                m.root.as_str()
            } else {
                m.root.strip_prefix(r.as_str())?
            };
            (*dev == m.dev && (rest.is_empty() || rest.starts_with('/') || r == "/"))
                .then(|| (*i, rest.trim_start_matches('/').to_string()))
        });
        let is_proc = m.mountpoint == "/proc" && m.fstype == "proc" && m.root == "/";
        if is_proc && !own_proc {
            // Its own /proc: made last, by a task of its pid namespace.
            own_proc = true;
            rec.kind = pb::MountKind::MountFresh as i32;
        } else if let Some((i, rest)) = own {
            // A bind of part of a mount of its own (runc: /dev/null over /proc/keys, a
            // read-only /proc/sys).
            rec.kind = pb::MountKind::MountBind as i32;
            rec.bind_of = i;
            rec.bind_root = rest;
            recorded.push(rec);
            continue;
        } else if m.fstype == "tmpfs" && m.root == "/" {
            tmpfs_at.push(m.mountpoint.clone());
            rec.kind = pb::MountKind::MountTmpfs as i32;
        } else if FRESH.contains(&m.fstype.as_str()) && m.root == "/" {
            rec.kind = pb::MountKind::MountFresh as i32;
        } else {
            match (host_path(host_all, &m), device(&m)) {
                (Some(p), _) => {
                    rec.kind = pb::MountKind::MountExternal as i32;
                    rec.external = p;
                }
                (None, Ok(dev)) => {
                    rec = pb::Mount {
                        index: rec.index,
                        ..dev
                    }
                }
                (None, Err(why)) => {
                    refuse(&format!(
                        "neither a fresh mount ckpt makes, nor a bind of a host path, nor {why}"
                    ));
                    continue;
                }
            }
        }
        sources.push((m.dev.clone(), m.root.clone(), rec.index));
        recorded.push(rec);
    }
    if !own_proc {
        out.push(
            root,
            "its mount namespace",
            "no proc of its own on /proc: not restored yet",
        );
    }
    propagation_blockers(root, &recorded, out);
    (recorded, shared_with_host)
}

/// A filesystem on a block device that ckpt's namespace has not mounted (an image file
/// loop-mounted inside the container), mounted again from its device or loop file; why
/// not, if `m` is none.
fn device(m: &Line) -> Result<pb::Mount, String> {
    if !m.source.starts_with("/dev/") || !ckpt_sys::loopdev::is_block_device(&m.dev) {
        return Err("a filesystem on a block device".into());
    }
    if m.root != "/" {
        return Err(format!(
            "the root of a block device's filesystem (it binds {} of {})",
            m.root, m.source
        ));
    }
    let mut rec = pb::Mount {
        kind: pb::MountKind::MountDevice as i32,
        mountpoint: m.mountpoint.clone(),
        fstype: m.fstype.clone(),
        source: m.source.clone(),
        flags: flags(&m.opts),
        options: data(&m.super_opts),
        super_ro: m.super_opts.split(',').any(|o| o == "ro"),
        shared_group: group(m, "shared:"),
        master_group: group(m, "master:"),
        device: m.dev.clone(),
        ..Default::default()
    };
    match ckpt_sys::loopdev::backing(&m.dev) {
        Some(b) if b.file.ends_with(" (deleted)") || !b.file.starts_with('/') => {
            return Err(format!(
                "a loop device whose file is still there ({} reads {})",
                m.source, b.file
            ))
        }
        Some(b) => {
            rec.r#loop = true;
            rec.external = b.file;
            rec.loop_offset = b.offset;
            rec.loop_sizelimit = b.sizelimit;
            rec.loop_read_only = b.read_only;
        }
        None => rec.external = m.source.clone(),
    }
    Ok(rec)
}

/// The peer group of a mountinfo optional field (`shared:N`, `master:N`), 0 if none.
fn group(m: &Line, tag: &str) -> u32 {
    m.optional
        .iter()
        .find_map(|o| o.strip_prefix(tag)?.parse().ok())
        .unwrap_or(0)
}

/// Propagation the restore cannot make again: a slave of a group that is not the
/// container's own (its master is a mount of the host's), a mount both shared and a
/// slave, and a member of a group it did not join by a bind of an earlier member (a
/// restore can only make a mount a peer of another by binding it from that one).
fn propagation_blockers(root: Pid, recorded: &[pb::Mount], out: &mut Blockers) {
    let mut seen: Vec<u32> = Vec::new();
    for m in recorded {
        let what = format!(
            "mount {} ({} {}) in its mount namespace",
            m.mountpoint, m.fstype, m.source
        );
        if m.master_group != 0 && m.shared_group != 0 {
            out.push(
                root,
                what,
                format!(
                    "shared (peer group {}) and a slave (of group {}) at once: not restored yet",
                    m.shared_group, m.master_group
                ),
            );
            continue;
        }
        if m.master_group != 0 && !recorded.iter().any(|o| o.shared_group == m.master_group) {
            out.push(
                root,
                what,
                format!(
                    "a slave of peer group {}, which is not the container's (a mount of the \
                     host's propagates to it): not restored yet",
                    m.master_group
                ),
            );
            continue;
        }
        let g = if m.shared_group != 0 {
            m.shared_group
        } else {
            m.master_group
        };
        if g == 0 {
            continue;
        }
        let first = !seen.contains(&g);
        let joined = m.kind == pb::MountKind::MountBind as i32
            && recorded
                .get(m.bind_of as usize)
                .is_some_and(|s| s.shared_group == g);
        if m.shared_group != 0 && !first && !joined {
            out.push(
                root,
                what.clone(),
                format!(
                    "in peer group {g} with an earlier mount it is not a bind of: not \
                     restored yet"
                ),
            );
        }
        if m.master_group != 0 && !joined {
            out.push(
                root,
                what,
                format!(
                    "a slave of peer group {g} but not a bind of one of its mounts: not \
                     restored yet"
                ),
            );
        }
        seen.push(g);
    }
}

/// Where the host has what `m` binds: a mount of ckpt's of the same device whose root
/// holds `m`'s root; that mount's point plus the rest of the path.
fn host_path(host: &[Line], m: &Line) -> Option<String> {
    host.iter()
        .filter(|h| h.dev == m.dev)
        .filter_map(|h| {
            let rest = if h.root == "/" {
                m.root.as_str()
            } else {
                m.root.strip_prefix(h.root.as_str())?
            };
            if !(rest.is_empty() || rest.starts_with('/')) {
                return None;
            }
            let base = h.mountpoint.trim_end_matches('/');
            let p = format!("{base}{rest}");
            Some(if p.is_empty() { "/".to_string() } else { p })
        })
        .find(|p| Path::new(p).exists())
}

/// A mount on or below /proc: made once the container's own proc is there.
pub fn under_proc(mountpoint: &str) -> bool {
    mountpoint == "/proc" || mountpoint.starts_with("/proc/")
}

/// Largest piece of a file in one record.
const PIECE: usize = 4 << 20;

/// Writes mounts.img: every file of the container's tmpfs mounts, read through
/// /proc/ROOT/root (the tree is stopped). A directory another mount covers is listed as
/// a directory (its own files are the other mount's), a file as an empty file.
pub fn write_files(
    root: Pid,
    mounts: &[pb::Mount],
    sink: &mut ImageSink,
) -> Result<(), crate::DumpError> {
    let tmpfs: Vec<&pb::Mount> = mounts
        .iter()
        .filter(|m| m.kind == pb::MountKind::MountTmpfs as i32)
        .collect();
    if tmpfs.is_empty() {
        return Ok(());
    }
    let mut w = sink.records(names::MOUNTS, Kind::Mounts)?;
    for m in tmpfs {
        let top = format!("/proc/{root}/root{}", m.mountpoint);
        let dev = std::fs::symlink_metadata(&top)
            .map_err(|e| ckpt_sys::Error::io(&top, e))?
            .dev();
        let mut links: HashMap<u64, String> = HashMap::new();
        let mut todo = vec![String::new()];
        while let Some(rel) = todo.pop() {
            let path = format!("{top}/{rel}");
            let md = std::fs::symlink_metadata(&path).map_err(|e| ckpt_sys::Error::io(&path, e))?;
            let mut f = pb::MountFile {
                mount: m.index,
                path: rel.clone(),
                mode: md.mode(),
                uid: md.uid(),
                gid: md.gid(),
                mtime_ns: md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                ..Default::default()
            };
            let ft = md.file_type();
            if !rel.is_empty() && under_proc(&m.mountpoint) {
                return Err(crate::refuse(format!(
                    "{}/{rel}: a file in a tmpfs mounted over the container's /proc is not \
                     restored (only empty ones, as runc masks paths with)",
                    m.mountpoint
                )));
            }
            if md.dev() != dev {
                // Another mount's root: only the directory (or, under a bind of a file
                // such as LXC's /dev/ptmx and /dev/console, the empty file) under it is
                // this tmpfs's.
                f.mode = if ft.is_dir() {
                    libc::S_IFDIR | 0o755
                } else {
                    libc::S_IFREG | 0o644
                };
                f.mtime_ns = 0;
                w.write(&f)?;
                continue;
            }
            if !ft.is_dir() && md.nlink() > 1 {
                if let Some(first) = links.get(&md.ino()) {
                    f.link_to = first.clone();
                    w.write(&f)?;
                    continue;
                }
                links.insert(md.ino(), rel.clone());
            }
            if ft.is_dir() {
                w.write(&f)?;
                let mut names: Vec<String> = std::fs::read_dir(&path)
                    .map_err(|e| ckpt_sys::Error::io(&path, e))?
                    .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .collect();
                names.sort_unstable_by(|a, b| b.cmp(a));
                for n in names {
                    todo.push(if rel.is_empty() {
                        n
                    } else {
                        format!("{rel}/{n}")
                    });
                }
            } else if ft.is_symlink() {
                f.symlink = std::fs::read_link(&path)
                    .map_err(|e| ckpt_sys::Error::io(&path, e))?
                    .to_string_lossy()
                    .into_owned();
                w.write(&f)?;
            } else if ft.is_file() {
                let bytes = std::fs::read(&path).map_err(|e| ckpt_sys::Error::io(&path, e))?;
                f.size = bytes.len() as u64;
                if bytes.is_empty() {
                    w.write(&f)?;
                }
                for (i, piece) in bytes.chunks(PIECE).enumerate() {
                    f.offset = (i * PIECE) as u64;
                    f.data = piece.to_vec();
                    w.write(&f)?;
                }
            } else {
                // A FIFO, a device node, or a socket file (syslogd's /dev/log: made again
                // unbound, and the restored socket bound to it takes its place).
                f.rdev = md.rdev();
                w.write(&f)?;
            }
        }
    }
    sink.commit_records(names::MOUNTS, w)?;
    Ok(())
}

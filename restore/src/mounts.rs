//! A container's own mounts (`Container.mounts`, dump/src/mounts.rs), made again by the
//! root's seed in its fresh mount namespace (a private copy of ckpt's) before it forks
//! the others, so every process and every file it opens sees them. Planned in ckpt
//! first: mounts.img read and checked, each external mount's host path found (`--root`
//! and `--ext-mount-map` applied) and missing ones refused in one line before anything
//! is created. The seed holds every external path open before it mounts anything (a
//! mount of the container's could otherwise cover one), then mounts in the dumped order:
//! fresh filesystems with their options, tmpfs filled from the image (metadata set
//! children first, so a directory's mtime is the dumped one), binds; per-mount flags
//! last (a read-only tmpfs is filled first). A failure kills the seed: the namespace and
//! its mounts die with it.

use crate::{RestoreError, R};
use ckpt_images::{names, pb, ImageDir, Kind};
use std::collections::HashMap;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where external mounts are found: `--ext-mount-map KEY:PATH` and `--root DIR`.
#[derive(Debug, Default, Clone)]
pub struct Places {
    pub ext_map: Vec<(String, String)>,
}

/// What the root's seed mounts.
#[derive(Debug, Default)]
pub struct Plan {
    pub mounts: Vec<pb::Mount>,
    /// The host path of each external mount, by its index.
    pub external: HashMap<u32, String>,
    /// mounts.img's records, by mount index, in order.
    pub files: HashMap<u32, Vec<pb::MountFile>>,
    /// The container's root is a directory of its own (runc, LXC): mount 0, on "/", binds
    /// it (`external[0]`), and the root's seed pivots into it.
    pub pivoted: bool,
    /// A container sharing ckpt's mounts: those it had (`Container.host_mounts`; empty
    /// in older images: the copy is left whole).
    pub host_mounts: Vec<pb::HostMount>,
    /// The device each MOUNT_DEVICE is mounted from, by index, and the loop device ckpt
    /// attached for it (held until the seed has mounted it; it detaches itself once the
    /// container's mount is gone).
    pub devices: HashMap<u32, (String, Option<ckpt_sys::loopdev::Attached>)>,
}

/// The filesystems a MOUNT_DEVICE may be (block-device filesystems): an image cannot
/// make the seed mount anything else from a device path.
const DEVICE_FS: [&str; 9] = [
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "squashfs", "erofs", "iso9660",
];

/// What `Mount.flags` may hold (what the dump records from mountinfo): anything else
/// (MS_MOVE, MS_REC, ...) in a hostile image would make the mount calls do other things.
const PER_MOUNT_FLAGS: u64 = libc::MS_RDONLY
    | libc::MS_NOSUID
    | libc::MS_NODEV
    | libc::MS_NOEXEC
    | libc::MS_NOATIME
    | libc::MS_NODIRATIME
    | libc::MS_RELATIME
    | libc::MS_STRICTATIME
    | 256; // MS_NOSYMFOLLOW

fn refuse(why: String) -> RestoreError {
    RestoreError::Refused(format!("inventory.img: container mounts: {why}"))
}

/// Reads and checks the mounts of `c`; the host path of every external one must exist.
pub fn plan(dir: &ImageDir, c: &pb::Container, places: &Places) -> R<Plan> {
    let mut plan = Plan {
        mounts: c.mounts.clone(),
        ..Default::default()
    };
    for (i, m) in c.mounts.iter().enumerate() {
        if m.index as usize != i || !m.mountpoint.starts_with('/') || m.mountpoint.contains("/../")
        {
            return Err(refuse(format!(
                "mount {i} ({:?}) is malformed",
                m.mountpoint
            )));
        }
        let root_kind = m.kind == pb::MountKind::MountExternal as i32
            || m.kind == pb::MountKind::MountDevice as i32;
        if m.mountpoint == "/" && (i != 0 || !root_kind) {
            return Err(refuse(format!(
                "mount {i} on / is not the first, or neither a bind of a host directory nor \
                 a device"
            )));
        }
        if m.flags & !PER_MOUNT_FLAGS != 0 {
            return Err(refuse(format!(
                "mount {i} ({}): flags {:#x} are not per-mount flags",
                m.mountpoint, m.flags
            )));
        }
        let late = under_proc(&m.mountpoint);
        match pb::MountKind::try_from(m.kind) {
            Ok(pb::MountKind::MountExternal) if late => {
                return Err(refuse(format!(
                    "mount {i} ({}): a host path bound over the container's /proc is not \
                     restored",
                    m.mountpoint
                )))
            }
            Ok(pb::MountKind::MountBind) => {
                if m.bind_of >= m.index
                    || m.bind_root.starts_with('/')
                    || m.bind_root.split('/').any(|p| p == ".." || p == ".")
                {
                    return Err(refuse(format!(
                        "mount {i} ({}) binds {:?} of mount {}: malformed",
                        m.mountpoint, m.bind_root, m.bind_of
                    )));
                }
            }
            Ok(pb::MountKind::MountDevice) if late => {
                return Err(refuse(format!(
                    "mount {i} ({}): a device mounted over the container's /proc is not \
                     restored",
                    m.mountpoint
                )))
            }
            Ok(pb::MountKind::MountDevice) => {
                let dev = device(m, places)?;
                plan.devices.insert(m.index, dev);
            }
            Ok(pb::MountKind::MountExternal) => {
                let path = places
                    .ext_map
                    .iter()
                    .find(|(k, _)| *k == m.external)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_else(|| m.external.clone());
                if std::fs::symlink_metadata(&path).is_err() {
                    return Err(RestoreError::Refused(format!(
                        "external mount {} of the container (bound from {}): {path} does \
                         not exist here (--ext-mount-map {}:PATH names another place)",
                        m.mountpoint, m.external, m.external
                    )));
                }
                plan.external.insert(m.index, path);
            }
            Ok(_) => {}
            Err(_) => return Err(refuse(format!("mount {i}: unknown kind {}", m.kind))),
        }
    }
    plan.pivoted = c.mounts.first().is_some_and(|m| m.mountpoint == "/");
    // The host mounts it had must be here: the restore's copy of ckpt's holds them.
    let here = ckpt_sys::mounts::mountinfo(nix::unistd::getpid());
    if let Some(h) = c
        .host_mounts
        .iter()
        .find(|h| !here.iter().any(|l| same(l, h)))
    {
        return Err(RestoreError::Refused(format!(
            "mount {} ({} {}) of the host, which the container had, is not mounted here",
            h.mountpoint, h.fstype, h.source
        )));
    }
    plan.host_mounts = c.host_mounts.clone();
    let tmpfs = c
        .mounts
        .iter()
        .any(|m| m.kind == pb::MountKind::MountTmpfs as i32);
    if tmpfs {
        let mut r = dir.records(names::MOUNTS, Kind::Mounts)?;
        let files: Vec<pb::MountFile> = r.rest("MountFile")?;
        for f in files {
            let ok = c
                .mounts
                .get(f.mount as usize)
                .is_some_and(|m| m.kind == pb::MountKind::MountTmpfs as i32);
            if !ok || f.path.starts_with('/') || f.path.split('/').any(|p| p == ".." || p == ".") {
                return Err(RestoreError::Refused(format!(
                    "{}: file {:?} of mount {} is malformed",
                    dir.path(names::MOUNTS).display(),
                    f.path,
                    f.mount
                )));
            }
            plan.files.entry(f.mount).or_default().push(f);
        }
        for (m, files) in &plan.files {
            if files.len() > 1 && under_proc(&c.mounts[*m as usize].mountpoint) {
                return Err(RestoreError::Refused(format!(
                    "{}: files in the tmpfs over {}: only empty ones are made over /proc",
                    dir.path(names::MOUNTS).display(),
                    c.mounts[*m as usize].mountpoint
                )));
            }
            check_tree(*m, files).map_err(|why| {
                RestoreError::Refused(format!("{}: {why}", dir.path(names::MOUNTS).display()))
            })?;
        }
    }
    Ok(plan)
}

/// Where MOUNT_DEVICE `m` is mounted from here: the device the dump saw if it still
/// reads the same loop file, else a loop device attached now to that file (or to the
/// one `--ext-mount-map FILE:COPY` names); a plain block device by its path.
fn device(m: &pb::Mount, places: &Places) -> R<(String, Option<ckpt_sys::loopdev::Attached>)> {
    if !DEVICE_FS.contains(&m.fstype.as_str()) {
        return Err(refuse(format!(
            "mount {} ({}): {:?} is no block-device filesystem ckpt mounts",
            m.index, m.mountpoint, m.fstype
        )));
    }
    let key = places
        .ext_map
        .iter()
        .find(|(k, _)| *k == m.external)
        .map_or(m.external.as_str(), |(_, p)| p.as_str());
    let gone = |what: &str| {
        RestoreError::Refused(format!(
            "the container's mount {} ({} on {}): {what} (--ext-mount-map {}:PATH names \
             another)",
            m.mountpoint, m.fstype, m.source, m.external
        ))
    };
    if !m.r#loop {
        let is_block = std::fs::metadata(key)
            .is_ok_and(|md| std::os::unix::fs::FileTypeExt::is_block_device(&md.file_type()));
        if !is_block {
            return Err(gone(&format!("{key} is no block device here")));
        }
        return Ok((key.to_string(), None));
    }
    let want = ckpt_sys::loopdev::Backing {
        file: key.to_string(),
        offset: m.loop_offset,
        sizelimit: m.loop_sizelimit,
        read_only: m.loop_read_only,
    };
    if ckpt_sys::loopdev::backing(&m.device).as_ref() == Some(&want) {
        if let Some(path) = ckpt_sys::loopdev::dev_path(&m.device) {
            return Ok((path, None));
        }
    }
    if !Path::new(key).is_file() {
        return Err(gone(&format!("its image file {key} does not exist here")));
    }
    let attached = ckpt_sys::loopdev::attach(&want).map_err(|e| gone(&e.to_string()))?;
    tracing::debug!(file = key, device = attached.path, "loop device attached");
    Ok((attached.path.clone(), Some(attached)))
}

/// Every file's parent is a directory listed before it (the mount's root first), and
/// no path is listed twice but as pieces of one file: the fill then never follows a
/// symlink, whatever the image says (a path through one could reach the host's files
/// from the namespace's copy of its mounts).
fn check_tree(m: u32, files: &[pb::MountFile]) -> Result<(), String> {
    let mut dirs = std::collections::HashSet::new();
    let mut seen = std::collections::HashSet::new();
    for f in files {
        let dir = f.mode & libc::S_IFMT == libc::S_IFDIR && f.link_to.is_empty();
        if f.path.is_empty() {
            if !dir || !dirs.is_empty() {
                return Err(format!("mount {m}: its root is not its first directory"));
            }
            dirs.insert(String::new());
            continue;
        }
        let parent = f.path.rsplit_once('/').map_or("", |(p, _)| p);
        if !dirs.contains(parent) {
            return Err(format!(
                "mount {m}: {:?} is not under a directory listed before it",
                f.path
            ));
        }
        if !f.link_to.is_empty() && (!seen.contains(&f.link_to) || dirs.contains(&f.link_to)) {
            return Err(format!(
                "mount {m}: {:?} links to {:?}, not a file listed before it",
                f.path, f.link_to
            ));
        }
        let again = !seen.insert(f.path.clone());
        if again && (f.offset == 0 || f.mode & libc::S_IFMT != libc::S_IFREG) {
            return Err(format!("mount {m}: {:?} is listed twice", f.path));
        }
        if dir {
            dirs.insert(f.path.clone());
        }
    }
    Ok(())
}

/// A mount on or below /proc: made last, once the container's own proc is mounted by a
/// task of its pid namespace (`late_steps`).
pub fn under_proc(mountpoint: &str) -> bool {
    mountpoint == "/proc" || mountpoint.starts_with("/proc/")
}

/// Where ckpt, before anything is made, finds the file a process of the container sees at
/// `path`: through the mount that holds it, when that is a host path (the pivoted root, a
/// bind of a host directory) or ckpt's own copy; None for a file of a mount the restore
/// makes (a tmpfs, a fresh filesystem, a bind of one of its own).
pub fn host_view(plan: &Plan, path: &str) -> Option<String> {
    let holder = plan
        .mounts
        .iter()
        .filter(|m| {
            let mp = m.mountpoint.trim_end_matches('/');
            path == m.mountpoint || path.strip_prefix(mp).is_some_and(|r| r.starts_with('/'))
        })
        .max_by_key(|m| m.mountpoint.len());
    let Some(m) = holder else {
        // Not below any mount of the container's: ckpt's copy.
        return (!plan.pivoted).then(|| path.to_string());
    };
    let rest = path
        .strip_prefix(m.mountpoint.trim_end_matches('/'))
        .unwrap_or("");
    match pb::MountKind::try_from(m.kind) {
        Ok(pb::MountKind::MountExternal) => plan
            .external
            .get(&m.index)
            .map(|base| format!("{}{rest}", base.trim_end_matches('/'))),
        _ => None,
    }
}

/// The propagation flag of `m`: shared (its group is made by its first member, and a bind
/// of a shared member joins it), a slave (bound from its master's group first), private.
fn propagation(m: &pb::Mount) -> u64 {
    if m.shared_group != 0 {
        libc::MS_SHARED
    } else if m.master_group != 0 {
        libc::MS_SLAVE
    } else {
        libc::MS_PRIVATE
    }
}

/// What a MOUNT_BIND binds: the path of its source mount plus its root below it.
fn bind_source(plan: &Plan, m: &pb::Mount) -> String {
    let from = plan.mounts[m.bind_of as usize]
        .mountpoint
        .trim_end_matches('/');
    if m.bind_root.is_empty() {
        if from.is_empty() {
            "/".into()
        } else {
            from.into()
        }
    } else {
        format!("{from}/{}", m.bind_root)
    }
}

fn same(l: &ckpt_sys::mounts::Line, h: &pb::HostMount) -> bool {
    l.key() == (&*h.root, &*h.mountpoint, &*h.fstype, &*h.source)
}

/// In the root's seed, in its private copy of ckpt's mounts: lets go of those the
/// container did not have (mounted on the host after it started; e.g. another tool's
/// /run/netns entries), deepest first.
fn trim_host_mounts(plan: &Plan) -> Result<(), String> {
    if plan.pivoted || plan.host_mounts.is_empty() {
        return Ok(());
    }
    let mine = ckpt_sys::mounts::mountinfo(nix::unistd::getpid());
    for l in mine.iter().rev() {
        if l.mountpoint == "/" || plan.host_mounts.iter().any(|h| same(l, h)) {
            continue;
        }
        nix::mount::umount2(l.mountpoint.as_str(), nix::mount::MntFlags::MNT_DETACH)
            .map_err(|e| format!("detaching {} (not the container's): {e}", l.mountpoint))?;
    }
    Ok(())
}

/// In the root's seed: every mount of the plan but those over /proc, in order. A
/// container on a root of its own gets it first: its directory bound (a clone of the host
/// path), pivoted into, the old root let go; until the release ckpt's /proc stands on its
/// /proc (the seeds and puppets open ckpt's shared memory and files outside the root
/// through it), and the container's own replaces it then (`late_steps`).
pub fn mount_all(plan: &Plan) -> Result<(), String> {
    let e = |e: ckpt_sys::Error| e.to_string();
    trim_host_mounts(plan)?;
    // Every host tree taken before anything is mounted: a mount of the container's could
    // cover a host path, and after the pivot no host path is reachable.
    let mut trees = HashMap::new();
    for (i, path) in &plan.external {
        trees.insert(*i, ckpt_sys::mounts::clone_tree(path).map_err(e)?);
    }
    // Devices too: their paths are ckpt's (/dev), gone after the pivot.
    for (i, (source, _)) in &plan.devices {
        let m = &plan.mounts[*i as usize];
        let tree =
            ckpt_sys::mounts::device_tree(&m.fstype, source, &m.options, m.super_ro).map_err(e)?;
        trees.insert(*i, tree);
    }
    if plan.pivoted {
        let procs = ckpt_sys::mounts::clone_tree("/proc").map_err(e)?;
        // A device root is attached over ckpt's /dev, which the private copy of ckpt's
        // mounts always has and which goes with the old root.
        let at = plan.external.get(&0).map_or("/dev", String::as_str);
        ckpt_sys::mounts::attach(&trees[&0], "the container's root", at).map_err(e)?;
        ckpt_sys::mounts::pivot_into(at).map_err(e)?;
        ckpt_sys::mounts::attach(&procs, "ckpt's /proc, until the release", "/proc")
            .map_err(|err| format!("{err} (the container's root has no /proc directory?)"))?;
    }
    for m in &plan.mounts {
        let at = m.mountpoint.as_str();
        if under_proc(at) || (plan.pivoted && m.index == 0) {
            continue;
        }
        let kind = pb::MountKind::try_from(m.kind).unwrap_or(pb::MountKind::MountFresh);
        let rw = m.flags & !(libc::MS_RDONLY);
        match kind {
            pb::MountKind::MountExternal => {
                ckpt_sys::mounts::attach(&trees[&m.index], &plan.external[&m.index], at)
                    .map_err(e)?;
            }
            pb::MountKind::MountDevice => {
                let what = format!("{} on {}", m.fstype, plan.devices[&m.index].0);
                ckpt_sys::mounts::attach(&trees[&m.index], &what, at).map_err(e)?;
            }
            pb::MountKind::MountBind => {
                let from = &plan.mounts[m.bind_of as usize];
                if let (true, Ok(n)) = (from.fstype == "devpts", m.bind_root.parse::<u32>()) {
                    // A pty slave bound elsewhere (runc's /dev/console): it must exist.
                    crate::fdtable::tty::premake(&from.mountpoint, n)?;
                }
                ckpt_sys::mounts::bind_path(&bind_source(plan, m), at).map_err(e)?;
            }
            pb::MountKind::MountTmpfs => {
                ckpt_sys::mounts::fresh("tmpfs", &m.source, at, rw, &m.options).map_err(e)?;
                let none = Vec::new();
                fill(Path::new(at), plan.files.get(&m.index).unwrap_or(&none))
                    .map_err(|e| format!("filling the tmpfs of {at}: {e}"))?;
                if m.super_ro {
                    ckpt_sys::mounts::fresh(
                        "tmpfs",
                        &m.source,
                        at,
                        rw | libc::MS_REMOUNT | libc::MS_RDONLY,
                        &m.options,
                    )
                    .map_err(e)?;
                }
            }
            pb::MountKind::MountFresh => {
                ckpt_sys::mounts::fresh(&m.fstype, &m.source, at, m.flags, &m.options)
                    .map_err(e)?;
            }
        }
        ckpt_sys::mounts::set_flags(at, m.flags).map_err(e)?;
        ckpt_sys::mounts::set_propagation(at, propagation(m)).map_err(e)?;
    }
    if plan.pivoted {
        ckpt_sys::mounts::set_flags("/", plan.mounts[0].flags).map_err(e)?;
        ckpt_sys::mounts::set_propagation("/", propagation(&plan.mounts[0])).map_err(e)?;
    }
    Ok(())
}

/// The mounts over /proc, made once every puppet is done, before anything runs, by a
/// task of the container's pid namespace (`ns::mount_inside`): ckpt's /proc let go (a
/// pivoted root), the container's own proc, then what stands on it (runc's read-only
/// /proc/sys, /dev/null over /proc/keys, an empty tmpfs over /proc/acpi).
pub fn late_steps(plan: &Plan) -> R<Vec<ckpt_sys::mounts::Step>> {
    use ckpt_sys::mounts::Step;
    let mut steps = Vec::new();
    if plan.pivoted {
        steps.push(Step::detach("/proc")?);
    }
    let late: Vec<&pb::Mount> = plan
        .mounts
        .iter()
        .filter(|m| under_proc(&m.mountpoint))
        .collect();
    if late.is_empty() {
        // An image from before /proc was recorded.
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        steps.push(Step::fresh("proc", "proc", "/proc", flags, "")?);
    }
    for m in late {
        let at = m.mountpoint.as_str();
        match pb::MountKind::try_from(m.kind).unwrap_or(pb::MountKind::MountFresh) {
            pb::MountKind::MountBind => {
                steps.push(Step::bind(&bind_source(plan, m), at)?);
                steps.push(Step::remount(at, m.flags)?);
            }
            pb::MountKind::MountTmpfs => {
                steps.push(Step::fresh("tmpfs", &m.source, at, m.flags, &m.options)?)
            }
            _ => steps.push(Step::fresh(&m.fstype, &m.source, at, m.flags, &m.options)?),
        }
        steps.push(Step::propagation(at, propagation(m))?);
    }
    Ok(steps)
}

fn io(path: &Path, e: impl std::fmt::Display) -> String {
    format!("{}: {e}", path.display())
}

/// Creates the dumped files under `top` (a fresh tmpfs), then sets their owners, modes
/// and mtimes, children before parents.
fn fill(top: &Path, files: &[pb::MountFile]) -> Result<(), String> {
    use nix::sys::stat::{Mode, SFlag};
    let mut done: Vec<(PathBuf, &pb::MountFile)> = Vec::new();
    for f in files {
        let path: PathBuf = if f.path.is_empty() {
            top.to_path_buf()
        } else {
            top.join(&f.path)
        };
        let fmt = f.mode & libc::S_IFMT;
        if !f.link_to.is_empty() {
            std::fs::hard_link(top.join(&f.link_to), &path).map_err(|e| io(&path, e))?;
            continue;
        }
        match fmt {
            libc::S_IFDIR => {
                if !f.path.is_empty() {
                    std::fs::create_dir(&path).map_err(|e| io(&path, e))?;
                }
            }
            libc::S_IFREG => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(|e| io(&path, e))?;
                file.seek(SeekFrom::Start(f.offset))
                    .and_then(|_| file.write_all(&f.data))
                    .and_then(|()| file.set_len(f.size.max(f.offset + f.data.len() as u64)))
                    .map_err(|e| io(&path, e))?;
                if f.offset != 0 {
                    continue;
                }
            }
            libc::S_IFLNK => {
                std::os::unix::fs::symlink(&f.symlink, &path).map_err(|e| io(&path, e))?;
            }
            libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK | libc::S_IFSOCK => {
                nix::sys::stat::mknod(
                    &path,
                    SFlag::from_bits_truncate(fmt),
                    Mode::from_bits_truncate(0o600),
                    f.rdev,
                )
                .map_err(|e| io(&path, e))?;
            }
            _ => return Err(io(&path, format!("unknown file type {:#o}", f.mode))),
        }
        done.push((path, f));
    }
    for (path, f) in done.iter().rev() {
        std::os::unix::fs::lchown(path, Some(f.uid), Some(f.gid)).map_err(|e| io(path, e))?;
        if f.mode & libc::S_IFMT != libc::S_IFLNK {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(f.mode & 0o7777))
                .map_err(|e| io(path, e))?;
        }
        if f.mtime_ns != 0 {
            let t = nix::sys::time::TimeSpec::new(
                f.mtime_ns.div_euclid(1_000_000_000),
                f.mtime_ns.rem_euclid(1_000_000_000),
            );
            nix::sys::stat::utimensat(
                None,
                path,
                &nix::sys::time::TimeSpec::UTIME_OMIT,
                &t,
                nix::sys::stat::UtimensatFlags::NoFollowSymlink,
            )
            .map_err(|e| io(path, e))?;
        }
    }
    Ok(())
}

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
}

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
        match pb::MountKind::try_from(m.kind) {
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
    }
    Ok(plan)
}

/// In the root's seed: every mount of the plan, in order.
pub fn mount_all(plan: &Plan) -> Result<(), String> {
    let mut held = HashMap::new();
    for (i, path) in &plan.external {
        held.insert(*i, ckpt_sys::mounts::hold(path).map_err(|e| e.to_string())?);
    }
    for m in &plan.mounts {
        let at = m.mountpoint.as_str();
        let kind = pb::MountKind::try_from(m.kind).unwrap_or(pb::MountKind::MountFresh);
        let rw = m.flags & !(libc::MS_RDONLY);
        match kind {
            pb::MountKind::MountExternal => {
                let fd = &held[&m.index];
                ckpt_sys::mounts::bind(fd, &plan.external[&m.index], at)
                    .map_err(|e| e.to_string())?;
            }
            pb::MountKind::MountTmpfs => {
                ckpt_sys::mounts::fresh("tmpfs", &m.source, at, rw, &m.options)
                    .map_err(|e| e.to_string())?;
                let none = Vec::new();
                fill(Path::new(at), plan.files.get(&m.index).unwrap_or(&none))
                    .map_err(|e| format!("filling the tmpfs of {at}: {e}"))?;
            }
            pb::MountKind::MountFresh => {
                ckpt_sys::mounts::fresh(&m.fstype, &m.source, at, m.flags, &m.options)
                    .map_err(|e| e.to_string())?;
            }
        }
        ckpt_sys::mounts::set_flags(at, m.flags).map_err(|e| e.to_string())?;
    }
    Ok(())
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
            libc::S_IFIFO | libc::S_IFCHR | libc::S_IFBLK => {
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

//! The dump and the restore a CRIU request (command line or RPC) comes down to, in ckpt's
//! own terms.

use crate::error::{invalid, unsupported, CriuError};
use std::path::PathBuf;
use tracing::info;

/// ckpt's own image inside a CRIU images directory. That directory also holds what the
/// caller put there (runc's descriptors.json, the log file, podman's files) which ckpt's
/// dump, replacing its image directory whole, must not touch; and CRIU-format records the
/// tools around CRIU read may sit beside it under CRIU's names.
pub const SUBDIR: &str = "ckpt";

/// `prev` (CRIU's parent image, relative to the images directory unless absolute) as
/// ckpt's previous image, relative to ckpt's own subdirectory.
fn prev_in_subdir(prev: &str) -> String {
    if prev.starts_with('/') {
        format!("{prev}/{SUBDIR}")
    } else {
        format!("../{prev}/{SUBDIR}")
    }
}

/// A dump (or pre-dump) as ckpt runs it.
#[derive(Debug, Default)]
pub struct Dump {
    pub pid: i32,
    pub images: PathBuf,
    pub leave_running: bool,
    pub tcp_established: bool,
    /// A cgroup v2 to freeze during the seize (a v1 freezer is not used: see opts.rs).
    pub freeze_cgroup: Option<PathBuf>,
    pub pre_dump: bool,
    /// The previous image of a chain, relative to `images` unless absolute.
    pub prev_images_dir: Option<String>,
    pub track_mem: bool,
    /// External mounts (mount point in the tree: name), CRIU's --ext-mount-map / ext_mnt.
    pub ext_mnt: Vec<(String, String)>,
}

/// A restore as ckpt runs it.
#[derive(Debug, Default)]
pub struct Restore {
    pub images: PathBuf,
    /// ckpt's fd N stands for the image's external object KEY.
    pub inherit_fds: Vec<(i32, String)>,
    pub pidfile: Option<PathBuf>,
    pub detach: bool,
    /// The root directory to restore into (CRIU's --root); None: the one dumped.
    pub root: Option<String>,
    /// The restored root a child of ckpt's parent (CRIU's --restore-sibling, rst_sibling).
    pub sibling: bool,
    pub ext_mnt: Vec<(String, String)>,
}

pub fn dump(d: &Dump) -> Result<(), CriuError> {
    for (key, val) in &d.ext_mnt {
        // A mount of the tree is refused by the dump unless ckpt records it; a key that is
        // no mount of the tree is ignored, as CRIU does (runc names every device node).
        info!(key, val, "external mount named");
    }
    let opts = ckpt_dump::DumpOptions {
        pid: d.pid,
        dir: d.images.join(SUBDIR),
        leave_running: d.leave_running || d.pre_dump || d.track_mem,
        compress: None,
        sync: false,
        allow_unknown_state: Vec::new(),
        freeze_cgroup: d.freeze_cgroup.clone(),
        pre_dump: d.pre_dump,
        prev_images_dir: d.prev_images_dir.as_deref().map(prev_in_subdir),
        track_mem: d.track_mem && !d.pre_dump && d.prev_images_dir.is_none(),
        tcp_established: d.tcp_established,
    };
    ckpt_dump::dump(&opts)?;
    Ok(())
}

/// The restored root's pid once it runs (detached), or how the tree ended (foreground).
pub fn restore(r: &Restore) -> Result<ckpt_restore::Outcome, CriuError> {
    if let Some(root) = r.root.as_deref().filter(|&p| p != "/") {
        return Err(unsupported(format!(
            "root {root}: restoring into another root directory (a container's rootfs) is \
             not supported yet"
        )));
    }
    if r.sibling {
        return Err(unsupported(
            "restore-sibling (rst_sibling): the restored root as a child of the caller is not \
             supported yet",
        ));
    }
    for (key, val) in &r.ext_mnt {
        // ckpt's images record no mount but a container's /proc yet, so no key names a
        // mount of the image: ignored, as CRIU ignores a key it has no mount for.
        info!(key, val, "external mount named");
    }
    let dir = r.images.join(SUBDIR);
    if !dir.is_dir() {
        return Err(invalid(format!(
            "{}: no {SUBDIR}/ directory, so no image ckpt dumped as CRIU",
            r.images.display()
        )));
    }
    let opts = ckpt_restore::RestoreOptions {
        dir,
        detach: r.detach,
        pidfile: r.pidfile.clone(),
        lazy: false,
        verify: true,
        inherit_fds: r.inherit_fds.clone(),
        new_pidns: false,
    };
    Ok(ckpt_restore::restore(&opts)?)
}

//! The dump and the restore a CRIU request (command line or RPC) comes down to, in ckpt's
//! own terms.

use crate::error::{invalid, unsupported, CriuError};
use std::path::{Path, PathBuf};
use std::time::Instant;
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
    /// CRIU's work directory (statistics go there; runc and podman name their container's
    /// state directory): None, the images directory.
    pub work: Option<PathBuf>,
    pub leave_running: bool,
    pub tcp_established: bool,
    /// A cgroup (v2, or a v1 freezer) to freeze during the seize.
    pub freeze_cgroup: Option<PathBuf>,
    pub pre_dump: bool,
    /// The previous image of a chain, relative to `images` unless absolute.
    pub prev_images_dir: Option<String>,
    pub track_mem: bool,
    /// External mounts (mount point in the tree: name), CRIU's --ext-mount-map / ext_mnt.
    pub ext_mnt: Vec<(String, String)>,
    /// External network namespaces, `net[INODE]:KEY` (CRIU's --external / external).
    pub external: Vec<String>,
    /// The page server the pages go to (`page_server.rs`); None: into the image.
    pub page_server: Option<std::net::SocketAddr>,
    /// The statistics also printed to the log (`--display-stats`).
    pub display_stats: bool,
    /// orphan_pts_master: a container's console (a pty of its devpts whose master the
    /// engine holds) is recorded, restored with a new master sent to the client.
    pub orphan_pts_master: bool,
}

/// A restore as ckpt runs it.
#[derive(Debug, Default)]
pub struct Restore {
    pub images: PathBuf,
    /// CRIU's work directory (stats-restore goes there): None, the images directory.
    pub work: Option<PathBuf>,
    /// ckpt's fd N stands for the image's external object KEY.
    pub inherit_fds: Vec<(i32, String)>,
    pub pidfile: Option<PathBuf>,
    pub detach: bool,
    /// The root directory to restore into (CRIU's --root); None: the one dumped.
    pub root: Option<String>,
    /// The restored root a child of ckpt's parent (CRIU's --restore-sibling, rst_sibling).
    pub sibling: bool,
    pub ext_mnt: Vec<(String, String)>,
    /// ckpt's `--cgroup-root` values: where the tree's cgroups are made.
    pub cgroup_root: Vec<String>,
    /// (IN, OUT, BRIDGE): the host end of the container's veth IN and its bridge.
    pub veths: Vec<(String, String, Option<String>)>,
    /// The statistics also printed to the log (`--display-stats`).
    pub display_stats: bool,
}

pub fn dump(d: &Dump) -> Result<(), CriuError> {
    if d.page_server.is_some() && (d.pre_dump || d.prev_images_dir.is_some()) {
        return Err(unsupported(
            "a page server with a pre-dump or a previous image is not supported by ckpt yet \
             (the chain's earlier pages would be on the page server's host)",
        ));
    }
    crate::page_server::send_pages_to(d.page_server);
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
        shell_job: false,
        orphan_pts_master: d.orphan_pts_master,
        pages_chunk: None,
        external: d.external.clone(),
    };
    let stats = ckpt_dump::dump(&opts)?;
    if d.display_stats {
        crate::log::message(&crate::images::display_dump(&stats));
    }
    crate::images::write_inventory(&d.images)
        .and_then(|()| crate::mount_names::write(&d.images, &d.ext_mnt))
        .and_then(|()| {
            crate::images::write_dump_stats(d.work.as_deref().unwrap_or(&d.images), &stats)
        })
        .map_err(|e| e.to_string())
        // A pre-dump is memory only, as CRIU's: no tree, no cores.
        .and_then(|()| match d.pre_dump {
            true => Ok(()),
            false => crate::images::write_tree(&d.images, &opts.dir),
        })
        .map_err(|e| {
            invalid(format!(
                "{}: writing CRIU's records (inventory.img, pstree.img, core-*.img, \
                 stats-dump) beside ckpt's image: {e}",
                d.images.display()
            ))
        })?;
    Ok(())
}

/// The restored root's pid once it runs (detached), or how the tree ended (foreground).
pub fn restore(r: &Restore) -> Result<ckpt_restore::Outcome, CriuError> {
    let dir = r.images.join(SUBDIR);
    if !dir.is_dir() {
        return Err(invalid(format!(
            "{}: no {SUBDIR}/ directory, so no image ckpt dumped as CRIU",
            r.images.display()
        )));
    }
    let ext_mount_map = mount_map(&dir, r)?;
    // LXC hands its console over whether or not a process held it; the dump refused one
    // that did (`console.rs`), so no image needs it.
    let inherit_fds: Vec<(i32, String)> = r
        .inherit_fds
        .iter()
        .filter(|(n, k)| {
            let tty = k.starts_with("tty[");
            if tty {
                info!(fd = n, key = %k, "--inherit-fd of a terminal no image holds: left");
            }
            !tty
        })
        .cloned()
        .collect();
    let opts = ckpt_restore::RestoreOptions {
        dir,
        // A sibling is its parent's to wait for: ckpt returns once it runs, as CRIU does.
        detach: r.detach || r.sibling,
        pidfile: r.pidfile.clone(),
        lazy: false,
        verify: true,
        inherit_fds,
        new_pidns: false,
        ext_mount_map,
        veth_pairs: r
            .veths
            .iter()
            .map(|(inner, out, _)| (inner.clone(), out.clone()))
            .collect(),
        veth_bridges: r
            .veths
            .iter()
            .filter_map(|(_, out, br)| Some((out.clone(), br.clone()?)))
            .collect(),
        sibling: r.sibling,
        shell_job: false,
        page_feed: None,
        cgroup_root: r.cgroup_root.clone(),
        // A console's master goes to the client's hook (orphan_pts_master).
        console_socket: None,
    };
    let t0 = Instant::now();
    let outcome = ckpt_restore::restore(&opts)?;
    // Foreground, the call returns when the tree ends: its start is when it ran.
    let restore_ms =
        crate::notify::running_at().map_or_else(|| ms_since(t0), |t| ms_between(t0, t));
    // The tree runs: statistics that cannot be written are logged, the restore stands.
    let stats = crate::images::RestoreStats {
        forking_ms: crate::notify::forked_at().map_or(restore_ms, |t| ms_between(t0, t)),
        restore_ms,
        pages: crate::images::pages_in_image(&opts.dir),
    };
    if r.display_stats {
        crate::log::message(&crate::images::display_restore(&stats));
    }
    let work = r.work.as_deref().unwrap_or(&r.images);
    if let Err(e) = crate::images::write_restore_stats(work, &stats) {
        tracing::warn!(dir = %work.display(), "stats-restore not written: {e}");
    }
    Ok(outcome)
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn ms_between(a: Instant, b: Instant) -> f64 {
    b.saturating_duration_since(a).as_secs_f64() * 1000.0
}

/// ckpt's `--ext-mount-map` for a CRIU restore. A container's binds of host paths are
/// named in ckpt's image by the host path they had; CRIU's callers name them by where
/// they are mounted in the container (runc: mount point -> host path now) or by the name
/// given at dump: either is mapped to ckpt's name. A key naming no external mount of the
/// image is ignored, as CRIU does (runc names every device node). `root` (CRIU's --root,
/// runc's bind of the rootfs) is where the container's `/` mount comes from.
fn mount_map(dir: &Path, r: &Restore) -> Result<Vec<(String, String)>, CriuError> {
    let image = ckpt_images::ImageDir::open_unverified(dir)?;
    let external: Vec<(String, String)> = image
        .inventory()
        .container
        .as_ref()
        .map(|c| {
            c.mounts
                .iter()
                .filter(|m| m.kind == ckpt_images::pb::MountKind::MountExternal as i32)
                .map(|m| (m.mountpoint.clone(), m.external.clone()))
                .collect()
        })
        .unwrap_or_default();
    let named = crate::mount_names::read(&r.images);
    let mut map = Vec::new();
    for (key, val) in &r.ext_mnt {
        // The name the dump's caller gave it, as its mount point.
        let by_name = named.iter().find(|(n, _)| n == key).map(|(_, at)| at);
        match external
            .iter()
            .find(|(at, name)| at == key || name == key || Some(at) == by_name)
        {
            Some((_, name)) => map.push((name.clone(), val.clone())),
            None => info!(key, val, "external mount named: no such mount in the image"),
        }
    }
    if let Some(root) = r.root.as_deref().filter(|&p| p != "/") {
        let Some((_, name)) = external.iter().find(|(at, _)| at == "/") else {
            return Err(unsupported(format!(
                "root {root}: the image has no root mount of its own to restore from there"
            )));
        };
        map.retain(|(n, _)| n != name);
        map.push((name.clone(), root.to_string()));
    }
    Ok(map)
}

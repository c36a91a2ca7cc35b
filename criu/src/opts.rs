//! CRIU's RPC options (criu_opts) in ckpt's terms. Each field is one of: mapped to what
//! ckpt does; accepted because ckpt does at least that much unasked (file locks, deleted
//! files, shell jobs, external sharing, cpu/ghost limits: ckpt takes locks and deleted
//! files along always, refuses a tree it cannot restore whatever the flag, and checks the
//! CPU's xsave features itself; force_irmap: ckpt finds every inotify watch's path itself;
//! tcp_skip_in_flight: ckpt refuses a listener with connections not accepted yet, by
//! name, where CRIU would drop them); or refused by name when set. Nothing is dropped
//! silently.

use crate::error::{invalid, unsupported, CriuError};
use crate::rpc::{CriuCgMode, CriuNetworkLockMethod, CriuOpts};
use crate::run::{Dump, Restore};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A directory of the client's, named by its fd there (opened through /proc/PID/fd/N, as
/// CRIU does), as a path of ours; refused if it is gone or no directory.
pub fn client_dir(client: i32, fd: i32) -> Result<PathBuf, CriuError> {
    let link = format!("/proc/{client}/fd/{fd}");
    let target = std::fs::read_link(&link)
        .map_err(|e| invalid(format!("fd {fd} of pid {client} ({link}): {e}")))?;
    let via = std::fs::metadata(&link).map_err(|e| invalid(format!("{link}: {e}")))?;
    let here = std::fs::metadata(&target).ok();
    match here {
        Some(m) if m.is_dir() && m.dev() == via.dev() && m.ino() == via.ino() => Ok(target),
        _ => Err(invalid(format!(
            "fd {fd} of pid {client} ({}): not a directory ckpt can reach by that path",
            target.display()
        ))),
    }
}

/// The images directory of a request: images_dir_fd, or images_dir when that is -1.
pub fn images_dir(o: &CriuOpts, client: i32) -> Result<PathBuf, CriuError> {
    if o.images_dir_fd >= 0 {
        client_dir(client, o.images_dir_fd)
    } else {
        o.images_dir
            .as_ref()
            .map(PathBuf::from)
            .ok_or_else(|| invalid("neither images_dir_fd nor images_dir is set"))
    }
}

/// The work directory of a request (work_dir_fd), if it names one.
fn work_dir(o: &CriuOpts, client: i32) -> Result<Option<PathBuf>, CriuError> {
    match o.work_dir_fd {
        Some(fd) if fd >= 0 => client_dir(client, fd).map(Some),
        _ => Ok(None),
    }
}

/// Where CRIU would write the log the client named: work_dir_fd (else the images
/// directory) joined with log_file; None when no log file is named.
pub fn log_path(o: &CriuOpts, client: i32) -> Result<Option<PathBuf>, CriuError> {
    let Some(name) = o.log_file.as_deref() else {
        return Ok(None);
    };
    if name.contains('/') {
        return Err(invalid(format!(
            "log_file {name:?}: no directories allowed (CRIU's rule; use work_dir_fd)"
        )));
    }
    let dir = match work_dir(o, client)? {
        Some(d) => d,
        None => images_dir(o, client)?,
    };
    Ok(Some(dir.join(name)))
}

/// The first option of `o` that ckpt does not implement, as the refusal names it.
fn refused(o: &CriuOpts) -> Option<String> {
    let yes = |b: Option<bool>| b == Some(true);
    let checks: [(bool, &str); 29] = [
        (
            o.ps.as_ref().is_some_and(|ps| ps.fd.is_some()),
            "ps.fd (a page server socket of the client's; ckpt connects to address:port)",
        ),
        (!o.veths.is_empty(), "veths"),
        (!o.exec_cmd.is_empty(), "exec_cmd"),
        (yes(o.auto_ext_mnt), "auto_ext_mnt"),
        (!o.skip_mnt.is_empty(), "skip_mnt"),
        (!o.unix_sk_ino.is_empty(), "unix_sk_ino"),
        (!o.irmap_scan_paths.is_empty(), "irmap_scan_paths"),
        (!o.join_ns.is_empty(), "join_ns"),
        (o.cgroup_props.is_some(), "cgroup_props"),
        (o.cgroup_props_file.is_some(), "cgroup_props_file"),
        (
            !o.cgroup_dump_controller.is_empty(),
            "cgroup_dump_controller",
        ),
        (o.timeout.is_some_and(|t| t != 0), "timeout"),
        (yes(o.weak_sysctls), "weak_sysctls"),
        (yes(o.tcp_close), "tcp_close"),
        (yes(o.lazy_pages), "lazy_pages"),
        (o.status_fd.is_some(), "status_fd"),
        (o.lsm_profile.is_some(), "lsm_profile"),
        (o.lsm_mount_context.is_some(), "lsm_mount_context"),
        (
            yes(o.tls) || o.tls_cert.is_some() || o.tls_key.is_some(),
            "tls",
        ),
        (
            o.tls_cacert.is_some() || o.tls_cacrl.is_some(),
            "tls_cacert/tls_cacrl",
        ),
        (o.cgroup_yard.is_some(), "cgroup_yard"),
        (o.pidfd_store_sk.is_some(), "pidfd_store_sk"),
        (yes(o.mntns_compat_mode), "mntns_compat_mode"),
        (yes(o.skip_file_rwx_check), "skip_file_rwx_check"),
        (yes(o.unprivileged), "unprivileged"),
        (yes(o.leave_stopped), "leave_stopped"),
        (
            yes(o.log_to_stderr),
            "log_to_stderr (stderr is the restored tree's)",
        ),
        (yes(o.auto_dedup), "auto_dedup"),
        (
            o.network_lock.is_some() && o.network_lock() == CriuNetworkLockMethod::Skip,
            "network_lock SKIP (ckpt always locks taken connections with nftables)",
        ),
    ];
    if let Some((_, name)) = checks.iter().find(|(set, _)| *set) {
        return Some(name.to_string());
    }
    if let Some(e) = o.external.iter().find(|e| !e.starts_with("net[")) {
        return Some(format!("external {e:?} (ckpt takes only net[INODE]:KEY)"));
    }
    let empty_ns = o.empty_ns.unwrap_or(0);
    if empty_ns & !(libc::CLONE_NEWNET as u32) != 0 {
        return Some(format!(
            "empty_ns {empty_ns:#x} (only CLONE_NEWNET: a net namespace of the tree's own \
             holds only lo, which ckpt restores)"
        ));
    }
    if o.manage_cgroups_mode.is_some() {
        let mode = o.manage_cgroups_mode();
        // ckpt makes a tree's cgroups and writes their dumped settings, made or found:
        // FULL (and more than SOFT, IGNORE, NONE ask), not PROPS or STRICT.
        if matches!(mode, CriuCgMode::Props | CriuCgMode::Strict) {
            return Some(format!(
                "manage_cgroups_mode {} (ckpt makes a tree's cgroups and writes their \
                 dumped settings, made or found: FULL)",
                mode.as_str_name()
            ));
        }
    }
    if let Some(r) = o
        .cg_root
        .iter()
        .find(|r| !own_cgroup(r.ctrl.as_deref(), &r.path))
    {
        return Some(format!(
            "cg_root {}:{} (ckpt restores into the cgroups it runs in, which are others)",
            r.ctrl.as_deref().unwrap_or(""),
            r.path
        ));
    }
    if let Some(cfg) = o.config_file.as_deref().filter(|p| config_has_options(p)) {
        return Some(format!(
            "config_file {cfg} (it sets options and ckpt does not read CRIU configuration \
             files)"
        ));
    }
    None
}

/// Whether ckpt is in cgroup `path` of controller `ctrl` (v1: its line naming the
/// controller; none: the v2 line).
fn own_cgroup(ctrl: Option<&str>, path: &str) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/cgroup") else {
        return false;
    };
    text.lines().any(|l| {
        let mut f = l.splitn(3, ':');
        let (_, ctrls, p) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let named = match ctrl {
            Some(c) if !c.is_empty() => ctrls.split(',').any(|x| x == c),
            _ => ctrls.is_empty(),
        };
        named && p == path
    })
}

/// A configuration file that exists and holds more than comments and blank lines.
fn config_has_options(path: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| {
        t.lines()
            .map(str::trim)
            .any(|l| !l.is_empty() && !l.starts_with('#'))
    })
}

fn refuse_for(what: &str, o: &CriuOpts) -> Result<(), CriuError> {
    match refused(o) {
        Some(name) => Err(unsupported(format!(
            "{what}: option {name} is not supported by ckpt"
        ))),
        None => Ok(()),
    }
}

/// freeze_cgroup: the cgroup (v2, or a v1 freezer, as LXC passes) is frozen during the
/// seize; a path that is neither is logged and the tree stopped by ptrace alone, which is
/// what CRIU does without one.
pub fn freeze_cgroup(path: Option<&str>) -> Option<PathBuf> {
    let p = Path::new(path?);
    if p.join("cgroup.freeze").exists() || p.join("freezer.state").exists() {
        Some(p.to_path_buf())
    } else {
        tracing::info!(
            path = %p.display(),
            "freeze_cgroup is no cgroup v2 nor a v1 freezer: the tree is stopped by ptrace alone"
        );
        None
    }
}

/// DUMP or PRE_DUMP.
pub fn dump(o: &CriuOpts, client: i32, pre_dump: bool) -> Result<Dump, CriuError> {
    let what = if pre_dump { "pre-dump" } else { "dump" };
    refuse_for(what, o)?;
    if !o.inherit_fd.is_empty() || o.rst_sibling == Some(true) {
        return Err(invalid(format!(
            "{what}: inherit_fd and rst_sibling are restore options"
        )));
    }
    let pid = o.pid.ok_or_else(|| {
        unsupported(format!(
            "{what}: no pid set (dumping the requesting process itself is not supported)"
        ))
    })?;
    if let Some(root) = o.root.as_deref() {
        same_root(pid, root)?;
    }
    Ok(Dump {
        pid,
        images: images_dir(o, client)?,
        work: work_dir(o, client)?,
        leave_running: o.leave_running(),
        tcp_established: o.tcp_established(),
        freeze_cgroup: freeze_cgroup(o.freeze_cgroup.as_deref()),
        pre_dump,
        prev_images_dir: o.parent_img.clone(),
        track_mem: o.track_mem(),
        ext_mnt: o
            .ext_mnt
            .iter()
            .map(|m| (m.key.clone(), m.val.clone()))
            .collect(),
        external: o.external.clone(),
        display_stats: o.display_stats(),
        orphan_pts_master: o.orphan_pts_master(),
        page_server: match &o.ps {
            Some(ps) => Some(crate::page_server::address(ps.address.as_deref(), ps.port)?),
            None => None,
        },
    })
}

/// A dump's `root` must be where the tree's root already is (ckpt reads it from
/// /proc/PID/root; CRIU uses the option to find the container's rootfs).
pub fn same_root(pid: i32, root: &str) -> Result<(), CriuError> {
    let theirs = std::fs::metadata(format!("/proc/{pid}/root"))
        .map_err(|e| invalid(format!("/proc/{pid}/root: {e}")))?;
    let named = std::fs::metadata(root).map_err(|e| invalid(format!("root {root}: {e}")))?;
    if theirs.dev() == named.dev() && theirs.ino() == named.ino() {
        Ok(())
    } else {
        Err(invalid(format!(
            "root {root} is not the root directory of pid {pid}"
        )))
    }
}

/// RESTORE.
pub fn restore(o: &CriuOpts, client: i32) -> Result<Restore, CriuError> {
    refuse_for("restore", o)?;
    let misplaced = [
        (o.pid.is_some(), "pid"),
        (o.leave_running(), "leave_running"),
        (o.parent_img.is_some(), "parent_img"),
        (o.track_mem(), "track_mem"),
        (o.freeze_cgroup.is_some(), "freeze_cgroup"),
        (o.ps.is_some(), "ps (page server)"),
    ];
    if let Some((_, name)) = misplaced.iter().find(|(set, _)| *set) {
        return Err(invalid(format!("restore: {name} is a dump option")));
    }
    Ok(Restore {
        images: images_dir(o, client)?,
        work: work_dir(o, client)?,
        inherit_fds: o.inherit_fd.iter().map(|f| (f.fd, f.key.clone())).collect(),
        pidfile: None,
        detach: true,
        root: o.root.clone(),
        sibling: o.rst_sibling(),
        ext_mnt: o
            .ext_mnt
            .iter()
            .map(|m| (m.key.clone(), m.val.clone()))
            .collect(),
        // cg_root may only name ckpt's own cgroups (`refused`): nothing to pass on.
        cgroup_root: Vec::new(),
        veths: Vec::new(),
        display_stats: o.display_stats(),
    })
}

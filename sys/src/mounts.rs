//! mount(2) as a container's restore needs it: fresh filesystems, binds of a directory
//! held open beforehand (so a mount made meanwhile cannot shadow it), and per-mount flags
//! changed afterwards (MS_REMOUNT | MS_BIND, which leaves the superblock alone).

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, OwnedFd};

/// Mounts a new `fstype` superblock on `target` with `flags` and `data` (its options).
pub fn fresh(fstype: &str, source: &str, target: &str, flags: u64, data: &str) -> Result<()> {
    Step::fresh(fstype, source, target, flags, data)?.call()
}

/// Opens `path` (a directory or file to bind later) as an O_PATH fd.
pub fn hold(path: &str) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(|fd| {
        // SAFETY: open returned a new fd that nothing else owns.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    })
    .map_err(|e| Error::sys(format!("open {path}"), e))
}

/// Sets the per-mount flags of the mount on `target` to `flags` (ro, nosuid, ...).
pub fn set_flags(target: &str, flags: u64) -> Result<()> {
    Step::remount(target, flags)?.call()
}

/// Sets the propagation of the mount on `target`: MS_SHARED (a peer group of its own, or
/// its source's when it was bound from a shared mount), MS_SLAVE, MS_PRIVATE.
pub fn set_propagation(target: &str, flag: u64) -> Result<()> {
    Step::propagation(target, flag)?.call()
}

/// A detached copy of the mount at `path` (open_tree with OPEN_TREE_CLONE: a bind not
/// attached anywhere yet), to `attach` later. Taken before a pivot_root, it stays usable
/// once the tree it was copied from is gone: bind(2) needs its source in the caller's
/// mount namespace, a clone does not.
pub fn clone_tree(path: &str) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let c = std::ffi::CString::new(path)
        .map_err(|_| Error::Other(format!("{path:?}: a NUL byte in a path")))?;
    // SAFETY: open_tree reads a NUL-terminated path; it returns a new fd or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(Error::sys(
            format!("open_tree({path}, OPEN_TREE_CLONE)"),
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// A new `fstype` superblock on the block device `source`, with `data` (its options, as
/// mount(2) would take them) and read-only if `read_only`, as a detached mount
/// (fsopen, fsconfig, fsmount) to `attach` later: made before a pivot_root, while
/// `source` is still reachable by its path.
pub fn device_tree(fstype: &str, source: &str, data: &str, read_only: bool) -> Result<OwnedFd> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_FLAG: libc::c_uint = 0;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    let cstr =
        |s: &str| std::ffi::CString::new(s).map_err(|_| Error::Other(format!("{s:?}: a NUL byte")));
    let what = format!("{fstype} on {source}");
    let fs = cstr(fstype)?;
    // SAFETY: fsopen reads a NUL-terminated name; it returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, fs.as_ptr(), FSOPEN_CLOEXEC) };
    if fd < 0 {
        return Err(Error::sys(
            format!("fsopen({fstype})"),
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    let ctx = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    let set = |cmd: libc::c_uint, key: Option<&str>, value: Option<&str>| -> Result<()> {
        let k = key.map(cstr).transpose()?;
        let v = value.map(cstr).transpose()?;
        // SAFETY: fsconfig reads the NUL-terminated key and value (or takes null).
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                ctx.as_raw_fd(),
                cmd,
                k.as_ref().map_or(std::ptr::null(), |k| k.as_ptr()),
                v.as_ref().map_or(std::ptr::null(), |v| v.as_ptr()),
                0,
            )
        };
        if r < 0 {
            return Err(Error::sys(
                format!(
                    "fsconfig of {what}: {} {}",
                    key.unwrap_or("create"),
                    value.unwrap_or("")
                ),
                nix::errno::Errno::last(),
            ));
        }
        Ok(())
    };
    set(FSCONFIG_SET_STRING, Some("source"), Some(source))?;
    for opt in data.split(',').filter(|o| !o.is_empty()) {
        match opt.split_once('=') {
            Some((k, v)) => set(FSCONFIG_SET_STRING, Some(k), Some(v))?,
            None => set(FSCONFIG_SET_FLAG, Some(opt), None)?,
        }
    }
    if read_only {
        set(FSCONFIG_SET_FLAG, Some("ro"), None)?;
    }
    set(FSCONFIG_CMD_CREATE, None, None)?;
    // SAFETY: fsmount takes the context fd and two flag words; it returns a new fd or -1.
    let m = unsafe { libc::syscall(libc::SYS_fsmount, ctx.as_raw_fd(), FSMOUNT_CLOEXEC, 0) };
    if m < 0 {
        return Err(Error::sys(
            format!("fsmount of {what}"),
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(m as i32) })
}

/// Attaches a detached tree (`clone_tree`) on `target` (move_mount).
pub fn attach(tree: &OwnedFd, what: &str, target: &str) -> Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
    let c = std::ffi::CString::new(target)
        .map_err(|_| Error::Other(format!("{target:?}: a NUL byte in a path")))?;
    // SAFETY: move_mount reads two NUL-terminated paths ("" and `target`).
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            c.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(Error::sys(
            format!("attach {what} on {target}"),
            nix::errno::Errno::last(),
        ));
    }
    Ok(())
}

/// Binds `source` on `target`, both paths of the caller's mount namespace.
pub fn bind_path(source: &str, target: &str) -> Result<()> {
    Step::bind(source, target)?.call()
}

/// Makes the directory `new_root` the caller's root and the root of its mount namespace,
/// and lets go of the old root (its mounts go with it): what a container runtime does.
/// pivot_root(".", ".") stacks the old root over the new one; the old root, taken as
/// the working directory, is then detached, and the working directory is the new "/".
pub fn pivot_into(new_root: &str) -> Result<()> {
    let old = hold("/")?;
    nix::unistd::chdir(new_root).map_err(|e| Error::sys(format!("chdir {new_root}"), e))?;
    // SAFETY: pivot_root reads two NUL-terminated paths.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) };
    if r < 0 {
        return Err(Error::sys(
            format!("pivot_root into {new_root}"),
            nix::errno::Errno::last(),
        ));
    }
    nix::unistd::fchdir(old.as_raw_fd()).map_err(|e| Error::sys("fchdir to the old root", e))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| Error::sys("detaching the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir / in the new root", e))
}

/// One mount(2) or umount2(2) call, its strings made beforehand: for a child forked from
/// a multi-threaded ckpt, which must not allocate (`ns::mount_inside`); the functions
/// above make one and call it at once.
#[derive(Debug)]
pub struct Step {
    source: Option<std::ffi::CString>,
    target: std::ffi::CString,
    fstype: Option<std::ffi::CString>,
    flags: libc::c_ulong,
    data: Option<std::ffi::CString>,
    detach: bool,
    what: String,
}

fn cstr(s: &str) -> Result<std::ffi::CString> {
    std::ffi::CString::new(s).map_err(|_| Error::Other(format!("{s:?}: a NUL byte in a path")))
}

impl Step {
    /// A new `fstype` superblock on `target`.
    pub fn fresh(fstype: &str, source: &str, target: &str, flags: u64, data: &str) -> Result<Step> {
        Ok(Step {
            source: Some(cstr(source)?),
            target: cstr(target)?,
            fstype: Some(cstr(fstype)?),
            flags: flags as libc::c_ulong,
            data: (!data.is_empty()).then(|| cstr(data)).transpose()?,
            detach: false,
            what: format!("mount {fstype} ({data}) on {target}"),
        })
    }

    /// A bind of `source` on `target`.
    pub fn bind(source: &str, target: &str) -> Result<Step> {
        Ok(Step {
            source: Some(cstr(source)?),
            target: cstr(target)?,
            fstype: None,
            flags: libc::MS_BIND,
            data: None,
            detach: false,
            what: format!("bind {source} on {target}"),
        })
    }

    /// The per-mount flags of the mount on `target` (MS_REMOUNT | MS_BIND).
    pub fn remount(target: &str, flags: u64) -> Result<Step> {
        Ok(Step {
            source: None,
            target: cstr(target)?,
            fstype: None,
            flags: flags as libc::c_ulong | libc::MS_REMOUNT | libc::MS_BIND,
            data: None,
            detach: false,
            what: format!("remount {target} with flags {flags:#x}"),
        })
    }

    /// The propagation of the mount on `target` (`set_propagation`).
    pub fn propagation(target: &str, flag: u64) -> Result<Step> {
        Ok(Step {
            source: None,
            target: cstr(target)?,
            fstype: None,
            flags: flag as libc::c_ulong,
            data: None,
            detach: false,
            what: format!("propagation {flag:#x} of {target}"),
        })
    }

    /// Detaches the mount on `target` (umount2 MNT_DETACH).
    pub fn detach(target: &str) -> Result<Step> {
        Ok(Step {
            source: None,
            target: cstr(target)?,
            fstype: None,
            flags: 0,
            data: None,
            detach: true,
            what: format!("detach the mount on {target}"),
        })
    }

    pub fn what(&self) -> &str {
        &self.what
    }

    /// `run`, its failure named.
    pub fn call(&self) -> Result<()> {
        self.run().map_err(|e| Error::sys(self.what.clone(), e))
    }

    /// The call itself; allocates nothing.
    pub fn run(&self) -> std::result::Result<(), nix::errno::Errno> {
        let p = |c: &Option<std::ffi::CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        let r = if self.detach {
            // SAFETY: umount2 reads a NUL-terminated path.
            unsafe { libc::umount2(self.target.as_ptr(), libc::MNT_DETACH) }
        } else {
            // SAFETY: every pointer is NUL-terminated or null, as mount(2) allows.
            unsafe {
                libc::mount(
                    p(&self.source),
                    self.target.as_ptr(),
                    p(&self.fstype),
                    self.flags,
                    p(&self.data).cast(),
                )
            }
        };
        nix::errno::Errno::result(r).map(drop)
    }
}

/// One line of /proc/PID/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The mount's id (fdinfo's `mnt_id` names it).
    pub id: u64,
    /// The id of the mount it stands on.
    pub parent: u64,
    pub dev: String,
    pub root: String,
    pub mountpoint: String,
    pub opts: String,
    pub optional: Vec<String>,
    pub fstype: String,
    pub source: String,
    pub super_opts: String,
}

impl Line {
    pub fn key(&self) -> (&str, &str, &str, &str) {
        (&self.root, &self.mountpoint, &self.fstype, &self.source)
    }

    /// The same mount as `other` sees it from another (copied) mount namespace.
    pub fn same_mount(&self, other: &Line) -> bool {
        self.key() == other.key()
    }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// /proc/PID/mountinfo, in its order.
pub fn mountinfo(pid: nix::unistd::Pid) -> Vec<Line> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(" - ")?;
            let a: Vec<&str> = a.split_whitespace().collect();
            let b: Vec<&str> = b.split_whitespace().collect();
            Some(Line {
                id: a.first()?.parse().ok()?,
                parent: a.get(1)?.parse().ok()?,
                dev: a.get(2)?.to_string(),
                root: unescape(a.get(3)?),
                mountpoint: unescape(a.get(4)?),
                opts: a.get(5)?.to_string(),
                optional: a.iter().skip(6).map(|s| s.to_string()).collect(),
                fstype: b.first()?.to_string(),
                source: unescape(b.get(1)?),
                super_opts: b.get(2).unwrap_or(&"").to_string(),
            })
        })
        .collect()
}

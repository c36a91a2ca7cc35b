//! Opening the files an image names, in the seed, without granting the restored process
//! anything its own open(2) would have been refused.
//!
//! The seed is root with ckpt's capabilities, but the process it becomes may be another
//! uid: an image (untrusted) that names /etc/shadow for an fd of a uid-65534 process must
//! not give it /etc/shadow. So the files are opened under the image's file-system identity
//! (fsuid, fsgid, supplementary groups and, as effective capabilities, those the process
//! could raise itself: its permitted set), and only ckpt's own helpers are opened as root.
//!
//! Every path is first resolved with O_PATH|O_NOFOLLOW: that opens no device, waits for no
//! FIFO peer and checks no access mode, so the file's type (and a device's number) is
//! checked before anything is really opened. The real open goes through
//! /proc/self/fd/N of that handle, so it is the very inode checked, never blocks
//! (O_NONBLOCK, taken off again unless the image has it), and the access mode is checked
//! by the kernel against the identity then in force.

use ckpt_images::pb;
use ckpt_sys::caps::{self, CapSets};
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::{fstat, major, minor, Mode, SFlag};
use nix::unistd::{close, setfsgid, setfsuid, setgroups, Gid, Uid};
use std::fs::File;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

/// What the image says a path is.
#[derive(Clone, Copy, Debug)]
pub enum Expect {
    Regular,
    Directory,
    Fifo,
    /// A character device with this number (already on the allow-list, `image.rs`).
    Chardev(u64),
    /// A file-backed VMA: a regular file, or a stateless device such as /dev/zero.
    Mapped,
}

impl Expect {
    pub fn of_fd(f: &pb::Fd) -> Result<Expect, String> {
        Ok(match pb::FdKind::try_from(f.kind) {
            Ok(pb::FdKind::FdRegular) => Expect::Regular,
            Ok(pb::FdKind::FdDirectory) => Expect::Directory,
            Ok(pb::FdKind::FdFifo) => Expect::Fifo,
            Ok(pb::FdKind::FdChardev) => Expect::Chardev(f.rdev),
            Ok(_) => {
                return Err(format!(
                    "fd {}: made from the image, not opened by path",
                    f.fd
                ))
            }
            Err(_) => return Err(format!("unknown fd kind {}", f.kind)),
        })
    }

    fn words(self) -> String {
        match self {
            Expect::Regular => "a regular file".into(),
            Expect::Directory => "a directory".into(),
            Expect::Fifo => "a FIFO".into(),
            Expect::Chardev(d) => format!("character device {}:{}", major(d), minor(d)),
            Expect::Mapped => "a regular file or a stateless device".into(),
        }
    }
}

fn kind_words(st: &nix::sys::stat::FileStat) -> String {
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    match fmt {
        SFlag::S_IFREG => "a regular file".into(),
        SFlag::S_IFDIR => "a directory".into(),
        SFlag::S_IFIFO => "a FIFO".into(),
        SFlag::S_IFCHR => format!(
            "character device {}:{}",
            major(st.st_rdev),
            minor(st.st_rdev)
        ),
        SFlag::S_IFBLK => "a block device".into(),
        SFlag::S_IFLNK => "a symbolic link".into(),
        SFlag::S_IFSOCK => "a socket".into(),
        _ => format!("of file mode {:#o}", st.st_mode),
    }
}

fn matches(st: &nix::sys::stat::FileStat, want: Expect) -> bool {
    let fmt = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let stateless =
        || crate::image::STATELESS_CHARDEVS.contains(&(major(st.st_rdev), minor(st.st_rdev)));
    match want {
        Expect::Regular => fmt == SFlag::S_IFREG,
        Expect::Directory => fmt == SFlag::S_IFDIR,
        Expect::Fifo => fmt == SFlag::S_IFIFO,
        Expect::Chardev(d) => fmt == SFlag::S_IFCHR && st.st_rdev == d && stateless(),
        Expect::Mapped => fmt == SFlag::S_IFREG || (fmt == SFlag::S_IFCHR && stateless()),
    }
}

/// Moves `fd` to the lowest free number at or above `floor`, close-on-exec: out of the
/// way of the fd numbers being placed.
pub fn above(fd: RawFd, floor: RawFd) -> Result<File, String> {
    let moved = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(floor));
    let _ = close(fd);
    let moved = moved.map_err(|e| format!("F_DUPFD_CLOEXEC to {floor} or above: {e}"))?;
    Ok(ckpt_sys::process::file_from_raw(moved))
}

/// ckpt's root as the seeds reach it (`/proc/<ckpt>/root`), set before any seed is
/// forked.
static CKPT_ROOT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Records ckpt's pid for `path_of`: call before forking the seeds.
pub fn set_ckpt(pid: i32) {
    let _ = CKPT_ROOT.set(format!("/proc/{pid}/root"));
}

/// Where a seed finds the file of `f`: its path, or for a file outside a pivoted
/// container's root (`Fd.outside_root`: runc's caller's log file as stdout) the same path
/// under ckpt's root, through ckpt's /proc, which stands on the container's /proc until
/// the release.
pub fn path_of(f: &pb::Fd) -> String {
    match CKPT_ROOT.get().filter(|_| f.outside_root) {
        Some(root) => format!("{root}{}", f.path),
        None => f.path.clone(),
    }
}

/// An O_PATH handle on `path` (its last component not followed), at or above `floor`,
/// once it is known to be what the image says.
pub fn locate(path: &str, want: Expect, floor: RawFd) -> Result<File, String> {
    let fd = open(
        path,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("{path}: {e}"))?;
    let handle = above(fd, floor).map_err(|e| format!("{path}: {e}"))?;
    let st = fstat(handle.as_raw_fd()).map_err(|e| format!("{path}: fstat: {e}"))?;
    if !matches(&st, want) {
        return Err(format!(
            "{path} is {} here, the image says {}",
            kind_words(&st),
            want.words()
        ));
    }
    Ok(handle)
}

/// Opens the file behind `handle` (from [`locate`]) with `flags`, as whoever the caller
/// currently is (see [`Identity`]), without ever blocking.
pub fn reopen(handle: &File, path: &str, flags: OFlag, who: &str) -> Result<File, String> {
    // A magic link: O_NOFOLLOW would refuse it, O_CREAT/O_TRUNC/O_EXCL and O_TMPFILE
    // have no business in a reopen of an existing file.
    let drop = OFlag::O_NOFOLLOW
        | OFlag::O_CREAT
        | OFlag::O_TRUNC
        | OFlag::O_EXCL
        | (OFlag::O_TMPFILE - OFlag::O_DIRECTORY);
    let flags = flags - drop;
    let link = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let fd = open(link.as_str(), flags | OFlag::O_NONBLOCK, Mode::empty())
        .map_err(|e| format!("open {path}{who}: {e}"))?;
    let file = ckpt_sys::process::file_from_raw(fd);
    if !flags.contains(OFlag::O_NONBLOCK) && !flags.contains(OFlag::O_PATH) {
        let now = fcntl(fd, FcntlArg::F_GETFL).map_err(|e| format!("{path}: F_GETFL: {e}"))?;
        let now = OFlag::from_bits_retain(now) - OFlag::O_NONBLOCK;
        fcntl(fd, FcntlArg::F_SETFL(now)).map_err(|e| format!("{path}: F_SETFL: {e}"))?;
    }
    Ok(file)
}

/// Puts `file` at fd number `want` (its own number if that is the one).
pub fn place(file: File, want: RawFd) -> Result<(), String> {
    let fd = file.into_raw_fd();
    if fd != want {
        let r = nix::unistd::dup2(fd, want);
        let _ = close(fd);
        r.map_err(|e| format!("dup2 to fd {want}: {e}"))?;
    }
    Ok(())
}

/// The file-system identity files are opened under: the image's, or ckpt's own (root)
/// for ckpt's helpers. Switched with setfsuid/setfsgid, setgroups and capset, which the
/// seed (root) can always undo.
pub struct Identity {
    image: Option<ImageIds>,
    /// The seed's own file-system ids (ckpt's, as its user namespace sees them).
    root_ids: (u32, u32),
    root_groups: Vec<Gid>,
    root_caps: CapSets,
    as_image: bool,
}

struct ImageIds {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<Gid>,
    /// What the process can make effective itself.
    cap_prm: u64,
}

impl Identity {
    /// `creds`: the image's (None: the process stays root, as ckpt is).
    pub fn new(creds: Option<&pb::Creds>) -> Result<Identity, String> {
        let image = match creds {
            None => None,
            Some(c) => {
                // real, effective, saved, fs; an older record may lack the last.
                let pick = |v: &[u32]| v.get(3).or(v.get(1)).copied();
                let (Some(fsuid), Some(fsgid)) = (pick(&c.uid), pick(&c.gid)) else {
                    return Err("credentials record is incomplete".into());
                };
                Some(ImageIds {
                    fsuid,
                    fsgid,
                    groups: c.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
                    cap_prm: c.cap_prm,
                })
            }
        };
        // setfsuid/setfsgid with an invalid id change nothing and return the current.
        let root_ids = (
            setfsuid(Uid::from_raw(u32::MAX)).as_raw(),
            setfsgid(Gid::from_raw(u32::MAX)).as_raw(),
        );
        Ok(Identity {
            image,
            root_ids,
            root_groups: nix::unistd::getgroups().map_err(|e| format!("getgroups: {e}"))?,
            root_caps: caps::get().map_err(|e| e.to_string())?,
            as_image: false,
        })
    }

    /// For error messages: " as uid U gid G (the image's credentials)" while they apply.
    pub fn who(&self) -> String {
        match (&self.image, self.as_image) {
            (Some(i), true) => format!(
                " as uid {} gid {} (the image's credentials)",
                i.fsuid, i.fsgid
            ),
            _ => String::new(),
        }
    }

    /// From now on, opens are checked as the image's process would be.
    pub fn image(&mut self) -> Result<(), String> {
        let Some(i) = &self.image else {
            return Ok(());
        };
        if self.as_image {
            return Ok(());
        }
        // Unchanged groups are not set again: in a user namespace whose setgroups is
        // denied (a container's) setgroups(2) fails even as its root.
        if i.groups != self.root_groups {
            setgroups(&i.groups).map_err(|e| format!("setgroups for the image's files: {e}"))?;
        }
        set_fs_ids(i.fsuid, i.fsgid)?;
        // Leaving fsuid 0 took the file-system capabilities out of the effective set;
        // the process could raise what it holds permitted, so those count.
        caps::set(CapSets {
            effective: self.root_caps.effective & i.cap_prm,
            ..self.root_caps
        })
        .map_err(|e| e.to_string())?;
        self.as_image = true;
        Ok(())
    }

    /// Back to ckpt's own identity, for its helpers and the privileged steps that follow.
    pub fn root(&mut self) -> Result<(), String> {
        if !self.as_image {
            return Ok(());
        }
        // Effective caps first: setgroups needs CAP_SETGID again.
        caps::set(self.root_caps).map_err(|e| e.to_string())?;
        if self
            .image
            .as_ref()
            .is_some_and(|i| i.groups != self.root_groups)
        {
            setgroups(&self.root_groups).map_err(|e| format!("setgroups back: {e}"))?;
        }
        set_fs_ids(self.root_ids.0, self.root_ids.1)?;
        // Back at fsuid 0 the kernel raised the permitted file-system caps: be exact.
        caps::set(self.root_caps).map_err(|e| e.to_string())?;
        self.as_image = false;
        Ok(())
    }
}

/// setfsuid/setfsgid report no error, only the previous id: ask again to be sure.
fn set_fs_ids(uid: u32, gid: u32) -> Result<(), String> {
    setfsgid(Gid::from_raw(gid));
    setfsuid(Uid::from_raw(uid));
    let now_gid = setfsgid(Gid::from_raw(u32::MAX)).as_raw();
    let now_uid = setfsuid(Uid::from_raw(u32::MAX)).as_raw();
    if (now_uid, now_gid) != (uid, gid) {
        return Err(format!(
            "setfsuid({uid})/setfsgid({gid}) left fsuid {now_uid}, fsgid {now_gid}"
        ));
    }
    Ok(())
}

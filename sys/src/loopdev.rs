//! Loop devices: which file a loop device reads (sysfs), and a new one for a file
//! (/dev/loop-control's LOOP_CTL_GET_FREE, then LOOP_CONFIGURE). For a container whose
//! root is an image file mounted through a loop device only inside it: the device went
//! with the container (LO_FLAGS_AUTOCLEAR) and its restore needs one again.

use crate::error::{Error, Result};
use linux_raw_sys::loop_device as ld;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// What a loop device is attached to, read from /sys/dev/block/MAJ:MIN/loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backing {
    pub file: String,
    pub offset: u64,
    pub sizelimit: u64,
    pub read_only: bool,
}

/// The file behind block device `dev` ("MAJ:MIN", as mountinfo shows it), if it is a
/// loop device attached to one.
pub fn backing(dev: &str) -> Option<Backing> {
    let base = Path::new("/sys/dev/block").join(dev);
    let read = |name: &str| std::fs::read_to_string(base.join(name)).ok();
    let num = |name: &str| read(name).and_then(|s| s.trim().parse::<u64>().ok());
    let file = read("loop/backing_file")?
        .trim_end_matches('\n')
        .to_string();
    Some(Backing {
        file,
        offset: num("loop/offset").unwrap_or(0),
        sizelimit: num("loop/sizelimit").unwrap_or(0),
        read_only: num("ro") == Some(1),
    })
}

/// The /dev path of block device "MAJ:MIN" (its uevent's DEVNAME), if it exists.
pub fn dev_path(dev: &str) -> Option<String> {
    let uevent =
        std::fs::read_to_string(Path::new("/sys/dev/block").join(dev).join("uevent")).ok()?;
    let name = uevent.lines().find_map(|l| l.strip_prefix("DEVNAME="))?;
    let path = format!("/dev/{name}");
    Path::new(&path).exists().then_some(path)
}

/// Whether "MAJ:MIN" names a block device of this machine.
pub fn is_block_device(dev: &str) -> bool {
    Path::new("/sys/dev/block").join(dev).exists()
}

/// A loop device ckpt attached; it detaches itself once its last user is gone (closed
/// and unmounted: LO_FLAGS_AUTOCLEAR), so a failed restore leaves none behind.
#[derive(Debug)]
pub struct Attached {
    pub path: String,
    _dev: OwnedFd,
}

/// Attaches a free loop device to `b.file` (from its offset, within its size limit,
/// read-only if it was).
pub fn attach(b: &Backing) -> Result<Attached> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(!b.read_only)
        .open(&b.file)
        .map_err(|e| Error::io(&b.file, e))?;
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| Error::io("/dev/loop-control", e))?;
    // A device found free can be taken by someone else before it is configured: EBUSY,
    // then the next free one.
    for _ in 0..8 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), ld::LOOP_CTL_GET_FREE as _) };
        if n < 0 {
            return Err(Error::sys(
                "LOOP_CTL_GET_FREE on /dev/loop-control",
                nix::errno::Errno::last(),
            ));
        }
        let path = format!("/dev/loop{n}");
        let dev = std::fs::OpenOptions::new()
            .read(true)
            .write(!b.read_only)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: all-zero is a valid loop_config (plain integers and byte arrays).
        let mut cfg: ld::loop_config = unsafe { std::mem::zeroed() };
        cfg.fd = file.as_raw_fd() as u32;
        cfg.info.lo_offset = b.offset;
        cfg.info.lo_sizelimit = b.sizelimit;
        cfg.info.lo_flags = ld::LO_FLAGS_AUTOCLEAR as u32;
        if b.read_only {
            cfg.info.lo_flags |= ld::LO_FLAGS_READ_ONLY as u32;
        }
        // SAFETY: LOOP_CONFIGURE reads one loop_config, which lives across the call.
        let r = unsafe { libc::ioctl(dev.as_raw_fd(), ld::LOOP_CONFIGURE as _, &cfg) };
        if r == 0 {
            return Ok(Attached {
                path,
                _dev: dev.into(),
            });
        }
        let e = nix::errno::Errno::last();
        if e != nix::errno::Errno::EBUSY {
            return Err(Error::sys(
                format!("LOOP_CONFIGURE of {path} with {}", b.file),
                e,
            ));
        }
    }
    Err(Error::Other(format!(
        "no free loop device for {} (each one found was taken first)",
        b.file
    )))
}

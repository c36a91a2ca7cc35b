//! The calling thread's capability sets, which nix does not wrap (capget(2), capset(2),
//! _LINUX_CAPABILITY_VERSION_3). A restore seed uses them to open files with no more
//! privilege than the process it becomes.

use crate::error::{Ctx, Result};
use nix::errno::Errno;

const VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct Header {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct Data {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Effective, permitted and inheritable sets, one bit per capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapSets {
    pub effective: u64,
    pub permitted: u64,
    pub inheritable: u64,
}

/// capget(2) of the calling thread.
pub fn get() -> Result<CapSets> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: with version 3 the kernel reads one header and writes two data structs,
    // both valid and of the layout capget(2) documents.
    let r = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) };
    Errno::result(r).ctx(|| "capget".to_string())?;
    let join = |f: fn(&Data) -> u32| u64::from(f(&d[0])) | (u64::from(f(&d[1])) << 32);
    Ok(CapSets {
        effective: join(|x| x.effective),
        permitted: join(|x| x.permitted),
        inheritable: join(|x| x.inheritable),
    })
}

/// capset(2) of the calling thread.
pub fn set(c: CapSets) -> Result<()> {
    let mut h = Header {
        version: VERSION_3,
        pid: 0,
    };
    let half = |v: u64, i: usize| (v >> (32 * i)) as u32;
    let d: [Data; 2] = std::array::from_fn(|i| Data {
        effective: half(c.effective, i),
        permitted: half(c.permitted, i),
        inheritable: half(c.inheritable, i),
    });
    // SAFETY: with version 3 the kernel reads one header and two data structs, both
    // valid and of the layout capset(2) documents; it writes nothing but may update the
    // header's version field, which is ours and mutable.
    let r = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut Header, d.as_ptr()) };
    Errno::result(r).ctx(|| {
        format!(
            "capset(E {:#x}, P {:#x}, I {:#x})",
            c.effective, c.permitted, c.inheritable
        )
    })?;
    Ok(())
}

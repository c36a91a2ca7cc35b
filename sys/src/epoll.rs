//! epoll instances (epoll(7)): what one watches, as /proc/PID/fdinfo lists it, whether a
//! watched fd number still names the file that was registered under it (kcmp(2)
//! KCMP_EPOLL_TFD), and registering again.

use crate::error::{Ctx, Error, Result};
use nix::errno::Errno;
use nix::unistd::Pid;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// One `tfd:` line of an epoll fd's fdinfo: a watched file, registered under fd number
/// `fd` of the registering process, with its event mask and user data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Watch {
    pub fd: i32,
    pub events: u32,
    pub data: u64,
}

/// The watches of epoll fd `epfd` of `pid`, in the order fdinfo lists them.
pub fn watches(pid: Pid, epfd: i32) -> Result<Vec<Watch>> {
    let path = format!("/proc/{pid}/fdinfo/{epfd}");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse(&text).map_err(|l| Error::Other(format!("{path}: unreadable line {l:?}")))
}

/// `tfd:        5 events:       19 data:                5  pos:0 ino:3c5 sdev:f`
/// (fd in decimal, events and data in hex).
fn parse(text: &str) -> std::result::Result<Vec<Watch>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| l.starts_with("tfd:")) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let field = |name: &str| {
            f.iter()
                .position(|w| *w == name)
                .and_then(|i| f.get(i + 1))
                .copied()
        };
        let w = (|| {
            Some(Watch {
                fd: field("tfd:")?.parse().ok()?,
                events: u32::from_str_radix(field("events:")?, 16).ok()?,
                data: u64::from_str_radix(field("data:")?, 16).ok()?,
            })
        })();
        out.push(w.ok_or_else(|| line.to_string())?);
    }
    Ok(out)
}

/// kcmp(2) KCMP_EPOLL_TFD: whether fd `fd` of `pid` is the file epoll fd `epfd` of `pid`
/// watches under the number `fd` (false: the number was closed and reused since).
pub fn watches_same_file(pid: Pid, epfd: i32, fd: i32) -> Result<bool> {
    const KCMP_EPOLL_TFD: libc::c_long = 7;
    #[repr(C)]
    struct Slot {
        efd: u32,
        tfd: u32,
        toff: u32,
    }
    let slot = Slot {
        efd: epfd as u32,
        tfd: fd as u32,
        toff: 0,
    };
    // SAFETY: the kernel reads one kcmp_epoll_slot from `slot`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid.as_raw(),
            pid.as_raw(),
            KCMP_EPOLL_TFD,
            fd as libc::c_ulong,
            &slot as *const Slot,
        )
    };
    match Errno::result(r) {
        Ok(r) => Ok(r == 0),
        // The fd is closed, or the epoll no longer watches that number.
        Err(Errno::EBADF | Errno::ENOENT) => Ok(false),
        Err(e) => Err(Error::sys(
            format!("kcmp(pid {pid}, KCMP_EPOLL_TFD, epoll fd {epfd}, fd {fd})"),
            e,
        )),
    }
}

/// epoll_create1(EPOLL_CLOEXEC).
pub fn create() -> Result<OwnedFd> {
    // SAFETY: epoll_create1 takes no pointers.
    let r = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    let fd = Errno::result(r).ctx(|| "epoll_create1".into())?;
    // SAFETY: epoll_create1 returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// EPOLL_CTL_ADD of `fd` to epoll fd `ep` (both fds of the caller; a bad one is EBADF).
pub fn add(ep: RawFd, fd: RawFd, w: &Watch) -> Result<()> {
    let mut ev = libc::epoll_event {
        events: w.events,
        u64: w.data,
    };
    // SAFETY: the kernel reads one epoll_event from `ev`.
    let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) };
    Errno::result(r).ctx(|| format!("epoll_ctl(ADD fd {fd}, events {:#x})", w.events))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fdinfo() {
        let t = "pos:\t0\nflags:\t02\nmnt_id:\t16\nino:\t1057\n\
                 tfd:        5 events:       19 data:                5  pos:0 ino:3c5 sdev:f\n\
                 tfd:       12 events: 80000001 data: deadbeef12345678  pos:0 ino:3c6 sdev:9\n";
        assert_eq!(
            parse(t).unwrap(),
            vec![
                Watch {
                    fd: 5,
                    events: 0x19,
                    data: 5
                },
                Watch {
                    fd: 12,
                    events: 0x8000_0001,
                    data: 0xdead_beef_1234_5678
                }
            ]
        );
    }
}

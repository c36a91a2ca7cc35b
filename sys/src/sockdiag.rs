//! NETLINK_SOCK_DIAG (sock_diag(7)), thinly: the messages, and a dump request whose
//! answers are handed over one by one. The families' own structs are their modules'
//! (`unix.rs`, `packet.rs`, `timewait.rs`).

use crate::error::{Ctx, Error, Result};
use nix::errno::Errno;
use std::os::fd::{AsRawFd, OwnedFd};

pub(crate) const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_DONE: u16 = 3;
pub(crate) const NLMSG_ERROR: u16 = 2;

/// A NETLINK_SOCK_DIAG socket of the calling thread's network namespace.
pub(crate) fn open() -> Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ctx(|| "socket(NETLINK_SOCK_DIAG)".into())
}

/// A netlink message of `ty` with `flags` carrying `payload`.
pub(crate) fn message(ty: u16, flags: i32, payload: &[u8]) -> Vec<u8> {
    let len = 16 + payload.len() as u32;
    let mut msg = Vec::with_capacity(len as usize);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(&(flags as u16).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it
    msg.extend_from_slice(payload);
    msg
}

/// A SOCK_DIAG_BY_FAMILY dump request with `payload` (the family's request struct); each
/// answer's payload goes to `each`. `what` names the family in errors.
pub(crate) fn dump(payload: &[u8], what: &str, mut each: impl FnMut(&[u8])) -> Result<()> {
    use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr};
    let sock = open()?;
    let msg = message(
        SOCK_DIAG_BY_FAMILY,
        libc::NLM_F_REQUEST | libc::NLM_F_DUMP,
        payload,
    );
    sendto(
        sock.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ctx(|| "sock_diag request".into())?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
            .ctx(|| "sock_diag answer".into())?;
        let mut at = 0;
        while at + 16 <= n {
            let mlen = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
            let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
            if mlen < 16 || at + mlen > n {
                return Err(Error::Other("sock_diag: a truncated answer".into()));
            }
            match ty {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let err = i32::from_ne_bytes(buf[at + 16..at + 20].try_into().expect("4"));
                    return Err(Error::sys(
                        format!("sock_diag ({what})"),
                        Errno::from_raw(-err),
                    ));
                }
                SOCK_DIAG_BY_FAMILY => each(&buf[at + 16..at + mlen]),
                _ => {}
            }
            at += (mlen + 3) & !3;
        }
    }
}

/// The attributes (type, value) of a message from `at` on.
pub(crate) fn attrs(b: &[u8], mut at: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while at + 4 <= b.len() {
        let alen = u16::from_ne_bytes([b[at], b[at + 1]]) as usize;
        let aty = u16::from_ne_bytes([b[at + 2], b[at + 3]]);
        if alen < 4 || at + alen > b.len() {
            break;
        }
        out.push((aty, &b[at + 4..at + alen]));
        at += (alen + 3) & !3;
    }
    out
}

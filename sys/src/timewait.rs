//! The TIME_WAIT entry of one TCP 4-tuple, found and removed through sock_diag
//! (net/ipv4/inet_diag.c: an exact SOCK_DIAG_BY_FAMILY request, then SOCK_DESTROY, which
//! tcp_abort() honours for a TIME_WAIT entry by descheduling it).
//!
//! A connection rebuilt in repair mode is connected to its own 4-tuple; the kernel
//! refuses it (EADDRNOTAVAIL) where an entry of that tuple is in TIME_WAIT without a
//! timestamp seen (tcp_twsk_unique: without PAWS a new incarnation is not safe). Such an
//! entry is the connection's own end: the one the dumped socket left when it ended, or
//! the one a restored socket left after the dump before (the dump takes connections
//! whose socket is still open, and a socket of that tuple still open in TIME_WAIT is
//! not possible). Only an entry in TIME_WAIT is removed, by its cookie, so a live socket
//! of the same tuple is never touched.

use crate::error::{Ctx, Error, Result};
use crate::sockdiag::{self, message, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY};
use nix::errno::Errno;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

const SOCK_DESTROY: u16 = 21;
const TCP_TIME_WAIT: u8 = 6;

/// Removes the TIME_WAIT entry of `local` -> `peer` in the calling thread's network
/// namespace; false if there is none (or the tuple belongs to a socket in another state).
pub fn remove(local: SocketAddr, peer: SocketAddr) -> Result<bool> {
    let sock = sockdiag::open()?;
    let Some((state, cookie)) = find(&sock, local, peer)? else {
        return Ok(false);
    };
    if state != TCP_TIME_WAIT {
        return Ok(false);
    }
    let req = request(local, peer, cookie);
    let msg = message(SOCK_DESTROY, libc::NLM_F_REQUEST | libc::NLM_F_ACK, &req);
    match answer(&sock, &msg, "SOCK_DESTROY")? {
        // Gone meanwhile (its timer ran out): as good.
        Answer::Error(0) | Answer::Error(libc::ENOENT) => Ok(true),
        Answer::Error(e) => Err(Error::sys("sock_diag SOCK_DESTROY", Errno::from_raw(e))),
        Answer::Diag(_) => Err(Error::Other("sock_diag SOCK_DESTROY: an odd answer".into())),
    }
}

/// The state and cookie of the socket (or TIME_WAIT entry) of the tuple, if any.
fn find(sock: &OwnedFd, local: SocketAddr, peer: SocketAddr) -> Result<Option<(u8, u64)>> {
    const NO_COOKIE: u64 = u64::MAX;
    let msg = message(
        SOCK_DIAG_BY_FAMILY,
        libc::NLM_F_REQUEST,
        &request(local, peer, NO_COOKIE),
    );
    match answer(sock, &msg, "SOCK_DIAG_BY_FAMILY")? {
        Answer::Error(libc::ENOENT) => Ok(None),
        Answer::Error(e) => Err(Error::sys("sock_diag (tcp)", Errno::from_raw(e))),
        // struct inet_diag_msg: family, state, timer, retrans, then the sockid whose
        // cookie is at 40.
        Answer::Diag(b) => match (b.get(1), b.get(44..52)) {
            (Some(&state), Some(c)) => Ok(Some((
                state,
                u64::from_ne_bytes(c.try_into().expect("8 bytes")),
            ))),
            _ => Err(Error::Other("sock_diag (tcp): a short answer".into())),
        },
    }
}

pub(crate) enum Answer {
    /// NLMSG_ERROR's errno (0: an acknowledgement).
    Error(i32),
    Diag(Vec<u8>),
}

/// Sends `msg` and reads the one message answering it (its payload).
pub(crate) fn answer(sock: &OwnedFd, msg: &[u8], what: &str) -> Result<Answer> {
    use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr};
    sendto(
        sock.as_raw_fd(),
        msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ctx(|| format!("sock_diag {what} request"))?;
    let mut buf = vec![0u8; 8192];
    let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
        .ctx(|| format!("sock_diag {what} answer"))?;
    let short = || Error::Other(format!("sock_diag {what}: a truncated answer"));
    let len = u32::from_ne_bytes(buf.get(0..4).ok_or_else(short)?.try_into().expect("4"));
    let len = len as usize;
    if len < 16 || len > n {
        return Err(short());
    }
    let payload = &buf[16..len];
    if u16::from_ne_bytes([buf[4], buf[5]]) == NLMSG_ERROR {
        let e = payload.get(0..4).ok_or_else(short)?;
        return Ok(Answer::Error(-i32::from_ne_bytes(e.try_into().expect("4"))));
    }
    Ok(Answer::Diag(payload.to_vec()))
}

/// struct inet_diag_req_v2 for TCP: family, protocol, ext, pad, states (any), then the
/// sockid: ports, source (local) and destination (peer) addresses, interface, cookie.
pub(crate) fn request(local: SocketAddr, peer: SocketAddr, cookie: u64) -> Vec<u8> {
    let family = if local.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let mut r = vec![family as u8, libc::IPPROTO_TCP as u8, 0, 0];
    r.extend_from_slice(&u32::MAX.to_ne_bytes());
    r.extend_from_slice(&local.port().to_be_bytes());
    r.extend_from_slice(&peer.port().to_be_bytes());
    for a in [local.ip(), peer.ip()] {
        let mut b = [0u8; 16];
        match a {
            IpAddr::V4(v4) => b[..4].copy_from_slice(&v4.octets()),
            IpAddr::V6(v6) => b = v6.octets(),
        }
        r.extend_from_slice(&b);
    }
    r.extend_from_slice(&0u32.to_ne_bytes());
    r.extend_from_slice(&cookie.to_ne_bytes());
    r
}

//! What sock_diag tells of one TCP socket that no getsockopt does: whether it holds
//! TCP-MD5 keys (RFC 2385, TCP_MD5SIG has a setter only; net/ipv4/tcp_diag.c reports the
//! keys as INET_DIAG_MD5SIG to a caller with CAP_NET_ADMIN). The socket is found by
//! its addresses and checked against its cookie, so another socket of the same port
//! (a SO_REUSEPORT group) is never taken for it.

use crate::error::{Error, Result};
use crate::sockdiag::{self, message, SOCK_DIAG_BY_FAMILY};
use crate::timewait::{answer, request, Answer};
use nix::errno::Errno;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::BorrowedFd;

const INET_DIAG_MD5SIG: u16 = 18;
const INET_DIAG_INFO: u8 = 2;
/// struct inet_diag_msg, before its attributes.
const DIAG_MSG: usize = 72;

/// Whether TCP socket `sock`, bound to `local` and connected to `peer` (None: a
/// listener), holds MD5 keys, in the calling thread's network namespace; None if the
/// kernel's table does not find it by those addresses.
pub fn md5_keys(
    sock: BorrowedFd<'_>,
    local: SocketAddr,
    peer: Option<SocketAddr>,
) -> Result<Option<bool>> {
    const SO_COOKIE: i32 = 57;
    let b = crate::socket::get_bytes(sock, libc::SOL_SOCKET, SO_COOKIE, 8)?;
    let cookie = u64::from_ne_bytes(
        b.as_slice()
            .try_into()
            .map_err(|_| Error::Other(format!("SO_COOKIE: {} bytes", b.len())))?,
    );
    let unspecified = match local.ip() {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let peer = peer.unwrap_or(SocketAddr::new(unspecified, 0));
    let diag = sockdiag::open()?;
    let mut req = request(local, peer, cookie);
    // idiag_ext asking for INET_DIAG_INFO: the kernel adds the keys only with it
    // (measured on 6.18: without it the answer has no INET_DIAG_MD5SIG).
    req[2] = 1 << (INET_DIAG_INFO - 1);
    let msg = message(SOCK_DIAG_BY_FAMILY, libc::NLM_F_REQUEST, &req);
    match answer(&diag, &msg, "SOCK_DIAG_BY_FAMILY")? {
        Answer::Error(e) if e == libc::ENOENT || e == libc::ESTALE => Ok(None),
        Answer::Error(e) => Err(Error::sys("sock_diag (tcp)", Errno::from_raw(e))),
        Answer::Diag(b) if b.len() >= DIAG_MSG => Ok(Some(
            sockdiag::attrs(&b, DIAG_MSG)
                .iter()
                .any(|&(ty, _)| ty & 0x3fff == INET_DIAG_MD5SIG),
        )),
        Answer::Diag(_) => Err(Error::Other("sock_diag (tcp): a short answer".into())),
    }
}

//! Socket options a restore sets back: those of a known list whose value differs from a
//! fresh socket of the same kind (so nothing the process left at its default is forced,
//! and a later change of a sysctl default still reaches it). Values are copied as the
//! kernel's bytes; restore passes them back to setsockopt unchanged.
//!
//! Options that depend on the connection rather than on the program (the MSS, the
//! window clamp of an established socket) are not here: TCP_REPAIR carries what matters
//! of them. Buffer sizes only when the program set them (SO_BUF_LOCK), since the kernel
//! tunes them by itself otherwise.

use ckpt_images::pb;
use ckpt_sys::socket as s;
use std::os::fd::{AsFd, BorrowedFd};

/// (level, name, buffer size): the order is the order restore sets them in.
const LIST: &[(i32, i32, usize)] = &[
    (s::SOL_SOCKET, libc::SO_REUSEADDR, 4),
    (s::SOL_SOCKET, libc::SO_REUSEPORT, 4),
    (s::SOL_SOCKET, libc::SO_KEEPALIVE, 4),
    (s::SOL_SOCKET, libc::SO_BROADCAST, 4),
    (s::SOL_SOCKET, libc::SO_OOBINLINE, 4),
    (s::SOL_SOCKET, libc::SO_PRIORITY, 4),
    (s::SOL_SOCKET, libc::SO_RCVLOWAT, 4),
    (s::SOL_SOCKET, libc::SO_MARK, 4),
    (s::SOL_SOCKET, libc::SO_LINGER, 8),
    (s::SOL_SOCKET, libc::SO_TIMESTAMP, 4),
    (s::SOL_SOCKET, libc::SO_PASSCRED, 4),
    (s::SOL_SOCKET, libc::SO_RCVTIMEO, 16),
    (s::SOL_SOCKET, libc::SO_SNDTIMEO, 16),
    (s::SOL_IP, libc::IP_TOS, 4),
    (s::SOL_IP, libc::IP_TTL, 4),
    (s::SOL_IP, libc::IP_FREEBIND, 4),
    (s::SOL_IP, libc::IP_TRANSPARENT, 4),
    (s::SOL_IP, libc::IP_PKTINFO, 4),
    (s::SOL_IP, libc::IP_RECVERR, 4),
    (s::SOL_IP, libc::IP_RECVTOS, 4),
    (s::SOL_IP, libc::IP_MULTICAST_TTL, 4),
    (s::SOL_IP, libc::IP_MULTICAST_LOOP, 4),
    (s::SOL_IP, libc::IP_BIND_ADDRESS_NO_PORT, 4),
    (s::SOL_IPV6, libc::IPV6_V6ONLY, 4),
    (s::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 4),
    (s::SOL_IPV6, libc::IPV6_TCLASS, 4),
    (s::SOL_IPV6, libc::IPV6_RECVPKTINFO, 4),
    (s::SOL_IPV6, libc::IPV6_RECVERR, 4),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_HOPS, 4),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_LOOP, 4),
    (s::SOL_TCP, libc::TCP_NODELAY, 4),
    (s::SOL_TCP, libc::TCP_CORK, 4),
    (s::SOL_TCP, libc::TCP_KEEPIDLE, 4),
    (s::SOL_TCP, libc::TCP_KEEPINTVL, 4),
    (s::SOL_TCP, libc::TCP_KEEPCNT, 4),
    (s::SOL_TCP, libc::TCP_SYNCNT, 4),
    (s::SOL_TCP, libc::TCP_LINGER2, 4),
    (s::SOL_TCP, libc::TCP_DEFER_ACCEPT, 4),
    (s::SOL_TCP, libc::TCP_USER_TIMEOUT, 4),
    (s::SOL_TCP, libc::TCP_NOTSENT_LOWAT, 4),
    (s::SOL_TCP, libc::TCP_CONGESTION, 16),
    (s::SOL_TCP, libc::TCP_FASTOPEN, 4),
    (s::SOL_UDP, libc::UDP_CORK, 4),
    (s::SOL_UDP, libc::UDP_SEGMENT, 4),
    (s::SOL_UDP, libc::UDP_GRO, 4),
];

/// Options that only mean something for datagrams.
const UDP_ONLY: &[(i32, i32)] = &[
    (s::SOL_SOCKET, libc::SO_BROADCAST),
    (s::SOL_IP, libc::IP_MULTICAST_TTL),
    (s::SOL_IP, libc::IP_MULTICAST_LOOP),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_HOPS),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_LOOP),
];

/// Whether option (level, name) applies to a socket of this family and protocol.
fn applies(level: i32, name: i32, family: i32, protocol: i32) -> bool {
    if UDP_ONLY.contains(&(level, name)) && protocol != libc::IPPROTO_UDP {
        return false;
    }
    match level {
        s::SOL_IP => family == libc::AF_INET,
        s::SOL_IPV6 => family == libc::AF_INET6,
        s::SOL_TCP => protocol == libc::IPPROTO_TCP,
        s::SOL_UDP => protocol == libc::IPPROTO_UDP,
        _ => true,
    }
}

/// The options of `sock` that differ from a fresh socket of its kind; an option the
/// kernel does not answer for either is left out.
pub fn differing(
    sock: BorrowedFd<'_>,
    family: i32,
    ty: i32,
    protocol: i32,
) -> ckpt_sys::Result<Vec<pb::SockOpt>> {
    let fresh = s::new(family, ty, protocol)?;
    let mut out = Vec::new();
    for &(level, name, size) in LIST {
        if !applies(level, name, family, protocol) {
            continue;
        }
        let (Ok(have), Ok(default)) = (
            s::get_bytes(sock, level, name, size),
            s::get_bytes(fresh.as_fd(), level, name, size),
        ) else {
            continue;
        };
        if have != default {
            out.push(pb::SockOpt {
                level,
                name,
                value: have,
            });
        }
    }
    // Buffer sizes the program chose (the lock bits say which), then the bits themselves.
    let locks = s::get_int(sock, s::SOL_SOCKET, s::SO_BUF_LOCK).unwrap_or(0);
    for (bit, name) in [(1, s::SO_SNDBUF), (2, s::SO_RCVBUF)] {
        if locks & bit != 0 {
            out.push(pb::SockOpt {
                level: s::SOL_SOCKET,
                name,
                value: s::get_bytes(sock, s::SOL_SOCKET, name, 4)?,
            });
        }
    }
    if locks != 0 {
        out.push(pb::SockOpt {
            level: s::SOL_SOCKET,
            name: s::SO_BUF_LOCK,
            value: locks.to_ne_bytes().to_vec(),
        });
    }
    Ok(out)
}

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
use std::sync::{Arc, Mutex};

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
    // struct so_timestamping: flags and the PHC index bound to. Before SO_TIMESTAMP and
    // its variants: setting it forgets which of the old and new variants was chosen.
    (s::SOL_SOCKET, libc::SO_TIMESTAMPING, 8),
    (s::SOL_SOCKET, libc::SO_TIMESTAMP, 4),
    (s::SOL_SOCKET, libc::SO_PASSCRED, 4),
    (s::SOL_SOCKET, libc::SO_RCVTIMEO, 16),
    (s::SOL_SOCKET, libc::SO_SNDTIMEO, 16),
    // The device name with its NUL (IFNAMSIZ at most); nothing when unbound.
    (s::SOL_SOCKET, libc::SO_BINDTODEVICE, 16),
    (s::SOL_SOCKET, libc::SO_DONTROUTE, 4),
    (s::SOL_SOCKET, libc::SO_NO_CHECK, 4),
    (s::SOL_SOCKET, libc::SO_TIMESTAMPNS, 4),
    (s::SOL_SOCKET, libc::SO_RXQ_OVFL, 4),
    (s::SOL_SOCKET, libc::SO_SELECT_ERR_QUEUE, 4),
    (s::SOL_SOCKET, libc::SO_BUSY_POLL, 4),
    (s::SOL_SOCKET, libc::SO_PASSSEC, 4),
    (s::SOL_SOCKET, s::SO_PEEK_OFF, 4),
    (s::SOL_SOCKET, libc::SO_MAX_PACING_RATE, 8),
    (s::SOL_SOCKET, libc::SO_ZEROCOPY, 4),
    (s::SOL_SOCKET, SO_PREFER_BUSY_POLL, 4),
    (s::SOL_SOCKET, SO_BUSY_POLL_BUDGET, 4),
    (s::SOL_SOCKET, SO_TXREHASH, 4),
    (s::SOL_SOCKET, SO_RCVMARK, 4),
    (s::SOL_SOCKET, SO_PASSPIDFD, 4),
    (s::SOL_SOCKET, SO_PASSRIGHTS, 4),
    (s::SOL_SOCKET, SO_TIMESTAMP_NEW, 4),
    (s::SOL_SOCKET, SO_TIMESTAMPNS_NEW, 4),
    // struct sock_txtime: clock and flags.
    (s::SOL_SOCKET, SO_TXTIME, 8),
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
    (s::SOL_IP, libc::IP_MTU_DISCOVER, 4),
    (s::SOL_IP, libc::IP_RECVTTL, 4),
    (s::SOL_IP, libc::IP_RECVOPTS, 4),
    (s::SOL_IP, libc::IP_RETOPTS, 4),
    (s::SOL_IP, libc::IP_PASSSEC, 4),
    (s::SOL_IP, libc::IP_MULTICAST_ALL, 4),
    (s::SOL_IP, libc::IP_RECVORIGDSTADDR, 4),
    (s::SOL_IP, IP_CHECKSUM, 4),
    (s::SOL_IP, IP_RECVFRAGSIZE, 4),
    (s::SOL_IP, IP_LOCAL_PORT_RANGE, 4),
    // The options every datagram sent carries (40 bytes at most).
    (s::SOL_IP, libc::IP_OPTIONS, 40),
    // The interface's address (a choice made by index reads back as 0.0.0.0).
    (s::SOL_IP, libc::IP_MULTICAST_IF, 4),
    (s::SOL_IPV6, libc::IPV6_V6ONLY, 4),
    (s::SOL_IPV6, libc::IPV6_UNICAST_HOPS, 4),
    (s::SOL_IPV6, libc::IPV6_TCLASS, 4),
    (s::SOL_IPV6, libc::IPV6_RECVPKTINFO, 4),
    (s::SOL_IPV6, libc::IPV6_RECVERR, 4),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_HOPS, 4),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_LOOP, 4),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_IF, 4),
    (s::SOL_IPV6, libc::IPV6_MTU_DISCOVER, 4),
    (s::SOL_IPV6, libc::IPV6_RECVHOPLIMIT, 4),
    (s::SOL_IPV6, libc::IPV6_RECVTCLASS, 4),
    (s::SOL_IPV6, libc::IPV6_RECVPATHMTU, 4),
    (s::SOL_IPV6, libc::IPV6_DONTFRAG, 4),
    (s::SOL_IPV6, IPV6_AUTOFLOWLABEL, 4),
    (s::SOL_IPV6, IPV6_FREEBIND, 4),
    (s::SOL_IPV6, libc::IPV6_TRANSPARENT, 4),
    (s::SOL_IPV6, IPV6_MULTICAST_ALL, 4),
    (s::SOL_IPV6, libc::IPV6_RECVORIGDSTADDR, 4),
    (s::SOL_IPV6, IPV6_FLOWINFO, 4),
    (s::SOL_IPV6, IPV6_FLOWINFO_SEND, 4),
    // Sticky extension headers, as the kernel keeps them ((hdrlen + 1) * 8 bytes, 2048
    // at most); the routing header's destination options before the routing header.
    (s::SOL_IPV6, IPV6_HOPOPTS, 2048),
    (s::SOL_IPV6, IPV6_RTHDRDSTOPTS, 2048),
    (s::SOL_IPV6, IPV6_RTHDR, 2048),
    (s::SOL_IPV6, IPV6_DSTOPTS, 2048),
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
    (s::SOL_TCP, libc::TCP_THIN_LINEAR_TIMEOUTS, 4),
    (s::SOL_TCP, libc::TCP_SAVE_SYN, 4),
    (s::SOL_TCP, TCP_INQ, 4),
    (s::SOL_TCP, TCP_TX_DELAY, 4),
    (s::SOL_TCP, TCP_FASTOPEN_CONNECT, 4),
    (s::SOL_TCP, TCP_FASTOPEN_NO_COOKIE, 4),
    (s::SOL_UDP, libc::UDP_CORK, 4),
    (s::SOL_UDP, libc::UDP_SEGMENT, 4),
    (s::SOL_UDP, libc::UDP_GRO, 4),
    (s::SOL_UDP, UDP_NO_CHECK6_TX, 4),
    (s::SOL_UDP, UDP_NO_CHECK6_RX, 4),
    (s::SOL_UDP, UDP_ENCAP, 4),
];

// Option names the libc crate does not carry (include/uapi/asm-generic/socket.h,
// linux/in.h, linux/in6.h, linux/tcp.h, linux/udp.h).
const SO_PREFER_BUSY_POLL: i32 = 69;
const SO_BUSY_POLL_BUDGET: i32 = 70;
const SO_TXREHASH: i32 = 74;
const SO_RCVMARK: i32 = 75;
const SO_PASSPIDFD: i32 = 76;
const SO_PASSRIGHTS: i32 = 83;
const SO_TXTIME: i32 = 61;
const SO_TIMESTAMP_NEW: i32 = 63;
const SO_TIMESTAMPNS_NEW: i32 = 64;
const IPV6_FLOWINFO: i32 = 11;
const IPV6_FLOWINFO_SEND: i32 = 33;
const IPV6_HOPOPTS: i32 = 54;
const IPV6_RTHDRDSTOPTS: i32 = 55;
const IPV6_RTHDR: i32 = 57;
const IPV6_DSTOPTS: i32 = 59;
const TCP_FASTOPEN_CONNECT: i32 = 30;
const TCP_FASTOPEN_NO_COOKIE: i32 = 34;
const UDP_ENCAP: i32 = 100;
const IP_CHECKSUM: i32 = 23;
const IP_RECVFRAGSIZE: i32 = 25;
const IP_LOCAL_PORT_RANGE: i32 = 51;
const IPV6_MULTICAST_ALL: i32 = 29;
const IPV6_AUTOFLOWLABEL: i32 = 70;
const IPV6_FREEBIND: i32 = 78;
const TCP_INQ: i32 = 36;
const TCP_TX_DELAY: i32 = 37;
const UDP_NO_CHECK6_TX: i32 = 101;
const UDP_NO_CHECK6_RX: i32 = 102;

/// Options that only mean something for datagrams. (A TCP socket answers for the
/// multicast interface, but an accepted one holds the interface its SYN came in on, and
/// setsockopt refuses it for a stream: ENOPROTOOPT.)
const UDP_ONLY: &[(i32, i32)] = &[
    (s::SOL_SOCKET, libc::SO_BROADCAST),
    (s::SOL_IP, libc::IP_MULTICAST_IF),
    (s::SOL_IP, libc::IP_MULTICAST_ALL),
    (s::SOL_IPV6, libc::IPV6_MULTICAST_IF),
    (s::SOL_IPV6, IPV6_MULTICAST_ALL),
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
    let defaults = defaults(family, ty, protocol)?;
    let mut out = Vec::new();
    for (&(level, name, size), default) in LIST.iter().zip(defaults.iter()) {
        let Some(default) = default else {
            continue;
        };
        let Ok(have) = s::get_bytes(sock, level, name, size) else {
            continue;
        };
        if have != *default {
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
    // A classic BPF filter (`look` refused an eBPF one), then its lock: once locked, no
    // filter could be attached.
    let prog = s::filter(sock)?;
    if !prog.is_empty() {
        out.push(pb::SockOpt {
            level: s::SOL_SOCKET,
            name: s::SO_ATTACH_FILTER,
            value: prog,
        });
        if s::get_int(sock, s::SOL_SOCKET, s::SO_LOCK_FILTER)? != 0 {
            out.push(pb::SockOpt {
                level: s::SOL_SOCKET,
                name: s::SO_LOCK_FILTER,
                value: 1i32.to_ne_bytes().to_vec(),
            });
        }
    }
    Ok(out)
}

/// A fresh socket's value of each option of `LIST` (None: not one of its kind, or one
/// the kernel does not answer for), by (family, type, protocol).
type Defaults = std::collections::HashMap<(i32, i32, i32), Arc<Vec<Option<Vec<u8>>>>>;
static DEFAULTS: Mutex<Option<Defaults>> = Mutex::new(None);

/// The values of a fresh socket of this kind, read once per pass (`forget_defaults`) from
/// one socket made for it: every socket of a dump compared itself with a socket of its
/// own before, ~40 getsockopts of the fresh one per socket (a unix socketpair end cost
/// ~80 syscalls in all).
fn defaults(family: i32, ty: i32, protocol: i32) -> ckpt_sys::Result<Arc<Vec<Option<Vec<u8>>>>> {
    let key = (family, ty, protocol);
    let mut cache = DEFAULTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(d) = cache.as_ref().and_then(|c| c.get(&key)) {
        return Ok(d.clone());
    }
    let fresh = s::new(family, ty, protocol)?;
    let values: Vec<Option<Vec<u8>>> = LIST
        .iter()
        .map(|&(level, name, size)| {
            applies(level, name, family, protocol)
                .then(|| s::get_bytes(fresh.as_fd(), level, name, size).ok())
                .flatten()
        })
        .collect();
    let values = Arc::new(values);
    cache
        .get_or_insert_with(Default::default)
        .insert(key, values.clone());
    Ok(values)
}

/// The next pass reads the defaults again (a sysctl may have changed them between the
/// check before the seize and the collection, or between two dumps of a migration).
pub fn forget_defaults() {
    *DEFAULTS.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// The options of unix socket `sock` (of type `ty`) that differ from a fresh one, but for
/// those its record carries in fields of their own (buffer sizes, SO_PASSCRED,
/// SO_PEEK_OFF). Only SOL_SOCKET applies to unix sockets.
pub fn unix_differing(sock: BorrowedFd<'_>, ty: i32) -> ckpt_sys::Result<Vec<pb::SockOpt>> {
    let own = [
        libc::SO_PASSCRED,
        s::SO_PEEK_OFF,
        s::SO_SNDBUF,
        s::SO_RCVBUF,
    ];
    let mut all = differing(sock, libc::AF_UNIX, ty, 0)?;
    all.retain(|o| o.level == s::SOL_SOCKET && !own.contains(&o.name));
    Ok(all)
}

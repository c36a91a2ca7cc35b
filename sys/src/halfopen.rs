//! Connections a TCP listener is in the middle of accepting: request sockets in
//! SYN_RECV (a SYN answered, the handshake's last ACK not arrived), which live in the
//! kernel's connection table rather than in the listener, so neither tcp_info nor the
//! accept queue counts them. Found through sock_diag (net/ipv4/inet_diag.c dumps them
//! when SYN_RECV is asked for), matched to the listener by its local port and address.

use crate::error::Result;
use crate::sockdiag;
use std::net::{IpAddr, SocketAddr};

const TCP_SYN_RECV: u8 = 3;

/// struct inet_diag_req_v2 dumping the TCP sockets of `family` in SYN_RECV.
fn request(family: i32) -> Vec<u8> {
    let mut r = vec![family as u8, libc::IPPROTO_TCP as u8, 0, 0];
    r.extend_from_slice(&(1u32 << TCP_SYN_RECV).to_ne_bytes());
    // The socket id (ports, addresses, interface, cookie) is not used by a dump.
    r.resize(4 + 4 + 48, 0);
    r
}

/// Whether a SYN_RECV entry whose local address is `ip` may be one of a listener bound
/// to `bound` (a wildcard one takes any address of its port; an IPv6 wildcard listener
/// also IPv4 connections, shown as IPv4 entries).
fn matches(bound: IpAddr, ip: IpAddr) -> bool {
    let plain = |a: IpAddr| match a {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(a, IpAddr::V4),
        v4 => v4,
    };
    bound.is_unspecified() || plain(bound) == plain(ip)
}

/// How many connections to a listener bound to `local` are half open, in the calling
/// thread's network namespace. Listeners sharing the port and address (SO_REUSEPORT)
/// cannot be told apart: theirs count too.
pub fn count(local: SocketAddr) -> Result<u32> {
    let mut n = 0;
    let families: &[i32] = if local.is_ipv4() {
        &[libc::AF_INET]
    } else {
        &[libc::AF_INET6, libc::AF_INET]
    };
    for &family in families {
        sockdiag::dump(&request(family), "tcp SYN_RECV", |b| {
            // struct inet_diag_msg: family, state, timer, retrans; then the id: source
            // (local) port at 4, destination port at 6, source address at 8.
            if b.len() < 24 || b[1] != TCP_SYN_RECV {
                return;
            }
            let port = u16::from_be_bytes([b[4], b[5]]);
            let ip = if b[0] == libc::AF_INET as u8 {
                IpAddr::from(<[u8; 4]>::try_from(&b[8..12]).expect("4 bytes"))
            } else {
                IpAddr::from(<[u8; 16]>::try_from(&b[8..24]).expect("16 bytes"))
            };
            if port == local.port() && matches(local.ip(), ip) {
                n += 1;
            }
        })?;
    }
    Ok(n)
}

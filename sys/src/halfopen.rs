//! Connections a TCP listener is in the middle of accepting: request sockets in
//! SYN_RECV (a SYN answered, the handshake's last ACK not arrived), which live in the
//! kernel's connection table rather than in the listener, so neither tcp_info nor the
//! accept queue counts them. Found through sock_diag (net/ipv4/inet_diag.c dumps them
//! when SYN_RECV is asked for), matched to the listener by its local port and address.

use crate::error::Result;
use crate::sockdiag;
use std::collections::HashMap;
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

/// Every half-open connection of the calling thread's network namespace, by local
/// port: their local addresses. One sock_diag dump per family walks the whole
/// connection table (1-3 ms on a quiet machine), so a dump asks once per pass and
/// namespace, not once per listener.
pub type Requests = HashMap<u16, Vec<IpAddr>>;

pub fn requests() -> Result<Requests> {
    let mut out = Requests::new();
    for family in [libc::AF_INET, libc::AF_INET6] {
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
            out.entry(port).or_default().push(ip);
        })?;
    }
    Ok(out)
}

/// How many of `requests` a listener bound to `local` may have. Listeners sharing the
/// port and address (SO_REUSEPORT) cannot be told apart: theirs count too; an IPv4
/// listener does not get IPv6 entries.
pub fn count(requests: &Requests, local: SocketAddr) -> u32 {
    requests.get(&local.port()).map_or(0, |ips| {
        ips.iter()
            .filter(|ip| (local.is_ipv6() || ip.is_ipv4()) && matches(local.ip(), **ip))
            .count() as u32
    })
}

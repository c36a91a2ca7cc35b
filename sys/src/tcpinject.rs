//! One TCP segment written by hand and handed to the calling thread's network namespace
//! as if the peer had sent it: how a rebuilt connection learns of a FIN it had received
//! (the repair interface can fill the receive queue with bytes, never with a FIN) or of
//! the acknowledgement of its own FIN.
//!
//! A raw IPPROTO_TCP socket, bound (IP_FREEBIND: the peer's address is rarely local) to
//! the peer's address, sends the header to the local address: the route to a local
//! address is the loopback, which delivers it to the socket of that 4-tuple. The segment
//! carries no options (the kernel accepts a segment without the timestamp option on a
//! connection that negotiated it; a timestamp made up here could only be wrong, and a
//! later real one below it would be dropped as old).

use crate::error::Result;
use crate::socket as s;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;

pub const FIN: u8 = 0x01;
pub const ACK: u8 = 0x10;

/// What to send: from `from` (the peer) to `to` (the local end).
#[derive(Clone, Copy, Debug)]
pub struct Segment {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    /// The window field as sent (already shifted by the peer's window scale).
    pub window: u16,
}

/// Sends `seg` (over IPv4 when both addresses are IPv4-mapped IPv6 ones: a dual-stack
/// socket talking IPv4).
pub fn send(seg: &Segment) -> Result<()> {
    let unmap = |a: SocketAddr| match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    };
    let (from, to) = match (unmap(seg.from), unmap(seg.to)) {
        (f @ SocketAddr::V4(_), t @ SocketAddr::V4(_)) => (f, t),
        _ => (seg.from, seg.to),
    };
    let v4 = from.is_ipv4();
    let (domain, level, freebind) = if v4 {
        (libc::AF_INET, s::SOL_IP, libc::IP_FREEBIND)
    } else {
        (libc::AF_INET6, s::SOL_IPV6, libc::IPV6_FREEBIND)
    };
    let raw = s::new(domain, libc::SOCK_RAW, libc::IPPROTO_TCP)?;
    let fd = raw.as_fd();
    s::set_int(fd, level, freebind, 1)?;
    s::bind(fd, SocketAddr::new(from.ip(), 0))?;
    let pkt = header(from, to, seg);
    s::send_to(fd, &pkt, SocketAddr::new(to.ip(), 0))
}

/// The header of `seg` (20 bytes), its checksum over the pseudo-header of `from` and `to`.
fn header(from: SocketAddr, to: SocketAddr, seg: &Segment) -> Vec<u8> {
    let mut h = Vec::with_capacity(20);
    h.extend_from_slice(&from.port().to_be_bytes());
    h.extend_from_slice(&to.port().to_be_bytes());
    h.extend_from_slice(&seg.seq.to_be_bytes());
    h.extend_from_slice(&seg.ack.to_be_bytes());
    h.push(5 << 4); // data offset: five words

    h.push(seg.flags);
    h.extend_from_slice(&seg.window.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent pointer
    let mut pseudo = Vec::with_capacity(40);
    match (from.ip(), to.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            pseudo.extend_from_slice(&a.octets());
            pseudo.extend_from_slice(&b.octets());
            pseudo.extend_from_slice(&[0, libc::IPPROTO_TCP as u8]);
            pseudo.extend_from_slice(&(h.len() as u16).to_be_bytes());
        }
        (a, b) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V6(v) => v.octets(),
                IpAddr::V4(v) => v.to_ipv6_mapped().octets(),
            };
            pseudo.extend_from_slice(&v6(a));
            pseudo.extend_from_slice(&v6(b));
            pseudo.extend_from_slice(&(h.len() as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, libc::IPPROTO_TCP as u8]);
        }
    }
    pseudo.extend_from_slice(&h);
    let sum = checksum(&pseudo);
    h[16..18].copy_from_slice(&sum.to_be_bytes());
    h
}

/// The Internet checksum (RFC 1071).
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_header_with_its_checksum_is_zero() {
        let seg = Segment {
            from: "10.0.0.1:80".parse().unwrap(),
            to: "10.0.0.2:4000".parse().unwrap(),
            seq: 7,
            ack: 9,
            flags: FIN | ACK,
            window: 512,
        };
        let h = header(seg.from, seg.to, &seg);
        let mut pseudo = vec![10, 0, 0, 1, 10, 0, 0, 2, 0, 6, 0, 20];
        pseudo.extend_from_slice(&h);
        assert_eq!(checksum(&pseudo), 0);
    }
}

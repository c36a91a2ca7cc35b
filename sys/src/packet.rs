//! Packet sockets (packet(7)) as the packet sock_diag table shows them
//! (net/packet/diag.c): the protocol, the interface, the version and flags, and whether
//! rings, a fanout group, memberships or a filter are attached; and the calls that make
//! one again.

use crate::error::{Ctx, Result};
use crate::socket as s;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd};

pub const SOL_PACKET: i32 = 263;
pub const PACKET_AUXDATA: i32 = 8;
pub const PACKET_ORIGDEV: i32 = 9;
pub const PACKET_VERSION: i32 = 10;
pub const PACKET_RESERVE: i32 = 12;
pub const PACKET_LOSS: i32 = 14;
pub const PACKET_VNET_HDR: i32 = 15;
pub const PACKET_TIMESTAMP: i32 = 17;

// PACKET_SHOW_* and PACKET_DIAG_* of include/uapi/linux/packet_diag.h.
const SHOW_INFO: u32 = 0x01;
const SHOW_MCLIST: u32 = 0x02;
const SHOW_RING_CFG: u32 = 0x04;
const SHOW_FANOUT: u32 = 0x08;
const SHOW_FILTER: u32 = 0x20;
const DIAG_INFO: u16 = 0;
const DIAG_MCLIST: u16 = 1;
const DIAG_RX_RING: u16 = 2;
const DIAG_TX_RING: u16 = 3;
const DIAG_FANOUT: u16 = 4;
const DIAG_FILTER: u16 = 7;
/// packet_diag_info's pdi_flags.
pub const PDI_RUNNING: u32 = 0x1;
pub const PDI_AUXDATA: u32 = 0x2;
pub const PDI_ORIGDEV: u32 = 0x4;
pub const PDI_VNETHDR: u32 = 0x8;
pub const PDI_LOSS: u32 = 0x10;

/// What the packet sock_diag table says of one socket.
#[derive(Clone, Debug, Default)]
pub struct Diag {
    /// SOCK_RAW or SOCK_DGRAM.
    pub ty: u8,
    /// The protocol (an ethertype, host order; 0: none).
    pub protocol: u16,
    /// The interface it is bound to (0: every one).
    pub ifindex: i32,
    pub version: u32,
    pub reserve: u32,
    pub tstamp: u32,
    pub flags: u32,
    /// Multicast or promiscuous memberships (PACKET_ADD_MEMBERSHIP).
    pub memberships: bool,
    pub rings: bool,
    pub fanout: bool,
    pub filter: bool,
}

/// Every packet socket of the calling thread's network namespace, by inode.
pub fn diag_all() -> Result<HashMap<u64, Diag>> {
    // struct packet_diag_req: family, protocol, pad, ino, show, cookie[2].
    let mut req = vec![0u8; 20];
    req[0] = libc::AF_PACKET as u8;
    let show = SHOW_INFO | SHOW_MCLIST | SHOW_RING_CFG | SHOW_FANOUT | SHOW_FILTER;
    req[8..12].copy_from_slice(&show.to_ne_bytes());
    let mut out = HashMap::new();
    crate::sockdiag::dump(&req, "packet", |b| {
        if let Some((ino, d)) = parse(b) {
            out.insert(ino, d);
        }
    })?;
    Ok(out)
}

/// struct packet_diag_msg (family, type, num, ino, cookie[2]) and its attributes.
fn parse(b: &[u8]) -> Option<(u64, Diag)> {
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let mut d = Diag {
        ty: *b.get(1)?,
        protocol: u16::from_ne_bytes([*b.get(2)?, *b.get(3)?]),
        ..Diag::default()
    };
    let ino = u32_at(b, 4)? as u64;
    for (aty, v) in crate::sockdiag::attrs(b, 16) {
        match aty {
            // struct packet_diag_info: index, version, reserve, copy_thresh, tstamp, flags.
            DIAG_INFO => {
                d.ifindex = u32_at(v, 0)? as i32;
                d.version = u32_at(v, 4)?;
                d.reserve = u32_at(v, 8)?;
                d.tstamp = u32_at(v, 16)?;
                d.flags = u32_at(v, 20)?;
            }
            DIAG_MCLIST => d.memberships = !v.is_empty(),
            DIAG_RX_RING | DIAG_TX_RING => d.rings = true,
            DIAG_FANOUT => d.fanout = true,
            DIAG_FILTER => d.filter = true,
            _ => {}
        }
    }
    Some((ino, d))
}

/// bind(2) to `protocol` (host order) on interface `ifindex` (0: every one).
pub fn bind(fd: BorrowedFd<'_>, protocol: u16, ifindex: i32) -> Result<()> {
    // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
    let mut a: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    a.sll_family = libc::AF_PACKET as u16;
    a.sll_protocol = protocol.to_be();
    a.sll_ifindex = ifindex;
    // SAFETY: the kernel reads size_of::<sockaddr_ll>() bytes from `a`.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&a as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    nix::errno::Errno::result(r)
        .ctx(|| format!("bind(packet {protocol:#06x}, ifindex {ifindex})"))?;
    Ok(())
}

/// Whether a packet waits to be read (poll's POLLIN), or an error.
pub fn readable(fd: BorrowedFd<'_>) -> Result<bool> {
    crate::netlink::readable(fd)
}

/// The interface names by index, of the calling thread's network namespace.
pub fn interfaces() -> Result<HashMap<i32, String>> {
    let list = nix::net::if_::if_nameindex().ctx(|| "if_nameindex".into())?;
    Ok(list
        .iter()
        .map(|i| (i.index() as i32, i.name().to_string_lossy().into_owned()))
        .collect())
}

/// A packet socket of `ty` for `protocol` (host order).
pub fn new(ty: i32, protocol: u16) -> Result<std::os::fd::OwnedFd> {
    s::new(libc::AF_PACKET, ty, i32::from(protocol.to_be()))
}

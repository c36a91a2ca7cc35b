//! Netlink sockets (netlink(7)) as a dump reads them and a restore remakes them: the
//! address (port id, first 32 groups), every group joined (NETLINK_LIST_MEMBERSHIPS), the
//! peer, the SOL_NETLINK flags, and whether a message waits to be read.

use crate::error::{Ctx, Result};
use crate::socket as s;
use nix::sys::socket::{self as ns, NetlinkAddr};
use std::os::fd::{AsRawFd, BorrowedFd};

pub const SOL_NETLINK: i32 = 270;
const NETLINK_ADD_MEMBERSHIP: i32 = 1;
const NETLINK_LIST_MEMBERSHIPS: i32 = 9;

/// The flag options of SOL_NETLINK that getsockopt answers (include/uapi/linux/netlink.h:
/// PKTINFO, BROADCAST_ERROR, NO_ENOBUFS, LISTEN_ALL_NSID, CAP_ACK, EXT_ACK,
/// GET_STRICT_CHK), all 0 on a fresh socket.
pub const FLAGS: [i32; 7] = [3, 4, 5, 8, 10, 11, 12];

/// getsockname(2): (port id, groups bitmap of the first 32).
pub fn local(fd: BorrowedFd<'_>) -> Result<(u32, u32)> {
    let a: NetlinkAddr = ns::getsockname(fd.as_raw_fd()).ctx(|| "getsockname".into())?;
    Ok((a.pid(), a.groups()))
}

/// getpeername(2): (port id, group) of the peer, (0, 0) when not connected (the kernel,
/// its default destination).
pub fn peer(fd: BorrowedFd<'_>) -> Result<(u32, u32)> {
    let a: NetlinkAddr = ns::getpeername(fd.as_raw_fd()).ctx(|| "getpeername".into())?;
    Ok((a.pid(), a.groups()))
}

/// Every group the socket is a member of, by number (1-based).
pub fn memberships(fd: BorrowedFd<'_>) -> Result<Vec<u32>> {
    let b = s::get_bytes(fd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, 1024)?;
    let mut out = Vec::new();
    for (w, word) in b.chunks_exact(4).enumerate() {
        let bits = u32::from_ne_bytes(word.try_into().expect("4 bytes"));
        out.extend(
            (0..32)
                .filter(|i| bits & (1 << i) != 0)
                .map(|i| w as u32 * 32 + i + 1),
        );
    }
    Ok(out)
}

/// bind(2) to `port_id` (0: the kernel picks one) with the first 32 `groups`.
pub fn bind(fd: BorrowedFd<'_>, port_id: u32, groups: u32) -> Result<()> {
    ns::bind(fd.as_raw_fd(), &NetlinkAddr::new(port_id, groups))
        .ctx(|| format!("bind(netlink port {port_id}, groups {groups:#x})"))
}

/// connect(2) to a port id and group.
pub fn connect(fd: BorrowedFd<'_>, port_id: u32, group: u32) -> Result<()> {
    ns::connect(fd.as_raw_fd(), &NetlinkAddr::new(port_id, group))
        .ctx(|| format!("connect(netlink port {port_id}, group {group})"))
}

/// NETLINK_ADD_MEMBERSHIP of `group`.
pub fn join(fd: BorrowedFd<'_>, group: u32) -> Result<()> {
    s::set_int(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group as i32)
}

/// Whether a message waits to be read (poll's POLLIN).
pub fn readable(fd: BorrowedFd<'_>) -> Result<bool> {
    let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::POLLIN)];
    nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO).ctx(|| "poll".into())?;
    Ok(p[0].revents().is_some_and(|r| {
        r.intersects(nix::poll::PollFlags::POLLIN | nix::poll::PollFlags::POLLERR)
    }))
}

//! Netlink sockets of the families a program talks to the kernel with (NETLINK_ROUTE,
//! NETLINK_KOBJECT_UEVENT, NETLINK_GENERIC): their address, groups, peer and flags, read
//! from ckpt's own copy (pidfd_getfd). A socket with a message (or an error) waiting is
//! refused: the kernel's answers and events cannot be put back (this covers a dump
//! request under way, whose next part the kernel queues as the last is read); so is any
//! other family (their kernel side, an audit or netfilter subscription, is state of its
//! own).

use ckpt_images::pb;
use ckpt_sys::netlink as nl;
use ckpt_sys::socket as s;
use ckpt_sys::Pid;
use std::os::fd::{AsFd, BorrowedFd};

const NETLINK_ROUTE: i32 = 0;
const NETLINK_KOBJECT_UEVENT: i32 = 15;
const NETLINK_GENERIC: i32 = 16;

/// Whether fd `fd` of `pid` is a netlink socket (Ok(false): another kind), Err(why) if it
/// is one that cannot be dumped.
pub fn check(pid: Pid, fd: i32) -> Result<bool, String> {
    let sock = ckpt_sys::process::steal_fd(pid, fd).map_err(|e| e.to_string())?;
    let sock = sock.as_fd();
    let (family, _, protocol) = s::kind(sock).map_err(|e| e.to_string())?;
    if family != libc::AF_NETLINK {
        return Ok(false);
    }
    check_at(pid, sock, protocol)?;
    Ok(true)
}

/// `check` of ckpt's copy `sock` of a netlink socket of `pid`, of `protocol`.
pub fn check_at(pid: Pid, sock: BorrowedFd<'_>, protocol: i32) -> Result<(), String> {
    if !matches!(
        protocol,
        NETLINK_ROUTE | NETLINK_KOBJECT_UEVENT | NETLINK_GENERIC
    ) {
        return Err(format!(
            "a netlink socket of protocol {protocol}; not supported yet (only \
             NETLINK_ROUTE, NETLINK_KOBJECT_UEVENT and NETLINK_GENERIC are)"
        ));
    }
    super::container_socket(pid, sock)?;
    if nl::readable(sock).map_err(|e| e.to_string())? {
        return Err(
            "a netlink socket with a message (or an error) not read yet; \
                    not supported yet"
                .into(),
        );
    }
    Ok(())
}

/// The record of netlink socket fd `fd` of the stopped process `pid`.
pub fn collect(pid: Pid, fd: i32) -> Result<pb::NetlinkSocket, String> {
    if !check(pid, fd)? {
        return Err("not a netlink socket".into());
    }
    let sock = ckpt_sys::process::steal_fd(pid, fd).map_err(|e| e.to_string())?;
    read(sock.as_fd()).map_err(|e| e.to_string())
}

fn read(sock: BorrowedFd<'_>) -> ckpt_sys::Result<pb::NetlinkSocket> {
    let (_, ty, protocol) = s::kind(sock)?;
    let (port_id, _) = nl::local(sock)?;
    let (dst_port_id, dst_group) = nl::peer(sock)?;
    let mut opts = Vec::new();
    for name in nl::FLAGS {
        let v = s::get_int(sock, nl::SOL_NETLINK, name)?;
        if v != 0 {
            opts.push(pb::SockOpt {
                level: nl::SOL_NETLINK,
                name,
                value: v.to_ne_bytes().to_vec(),
            });
        }
    }
    Ok(pb::NetlinkSocket {
        protocol,
        r#type: ty,
        port_id,
        groups: nl::memberships(sock)?,
        dst_port_id,
        dst_group,
        opts,
    })
}

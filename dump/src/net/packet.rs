//! Packet sockets (AF_PACKET) of ckpt's network namespace: type, protocol, interface and
//! flags, from the packet sock_diag table. Refused: a ring (its frames are memory shared
//! with the kernel), a fanout group, a multicast or promiscuous membership, a filter
//! (SO_ATTACH_FILTER), a packet waiting, a socket whose protocol is set but not running
//! (its interface went down), and any packet socket of a container's namespace.

use ckpt_images::pb;
use ckpt_sys::packet as p;
use ckpt_sys::socket as s;
use ckpt_sys::Pid;
use std::os::fd::{AsFd, BorrowedFd};

/// The record of packet socket fd `fd` of the stopped process `pid`.
pub fn collect(pid: Pid, fd: i32) -> Result<pb::PacketSocket, String> {
    look(pid, fd)?.ok_or_else(|| "not a packet socket".into())
}

fn look(pid: Pid, fd: i32) -> Result<Option<pb::PacketSocket>, String> {
    let err = |e: ckpt_sys::Error| e.to_string();
    let sock = ckpt_sys::process::steal_fd(pid, fd).map_err(err)?;
    let (family, ty, _) = s::kind(sock.as_fd()).map_err(err)?;
    if family != libc::AF_PACKET {
        return Ok(None);
    }
    look_at(pid, sock.as_fd(), ty)
}

/// `look` of ckpt's copy `sock` of a packet socket of `pid`, of type `ty`.
pub fn look_at(
    pid: Pid,
    sock: BorrowedFd<'_>,
    ty: i32,
) -> Result<Option<pb::PacketSocket>, String> {
    let err = |e: ckpt_sys::Error| e.to_string();
    if super::container_socket(pid, sock)? {
        return Err("a packet socket of a container's network namespace; not supported yet".into());
    }
    let ino = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&sock))
        .map_err(|e| format!("fstat: {e}"))?
        .st_ino;
    let d = p::diag_all()
        .map_err(err)?
        .remove(&ino)
        .ok_or("not in the packet sock_diag table")?;
    let attached = [
        (d.rings, "a ring (PACKET_RX_RING/PACKET_TX_RING)"),
        (d.fanout, "a fanout group"),
        (d.memberships, "a membership (PACKET_ADD_MEMBERSHIP)"),
        (d.filter, "a filter (SO_ATTACH_FILTER)"),
    ];
    if let Some((_, what)) = attached.iter().find(|(on, _)| *on) {
        return Err(format!("a packet socket with {what}; not supported yet"));
    }
    if p::readable(sock).map_err(err)? {
        return Err(
            "a packet socket with a packet (or an error) not read yet; not supported yet".into(),
        );
    }
    if d.protocol != 0 && d.flags & p::PDI_RUNNING == 0 {
        return Err(format!(
            "a packet socket of protocol {:#06x} that does not receive (its interface is \
             down); not supported yet",
            d.protocol
        ));
    }
    let ifname = if d.ifindex != 0 {
        p::interfaces()
            .map_err(err)?
            .remove(&d.ifindex)
            .ok_or_else(|| format!("interface {} not found", d.ifindex))?
    } else {
        String::new()
    };
    let mut opts = Vec::new();
    let mut put = |name: i32, v: u32| {
        if v != 0 {
            opts.push(pb::SockOpt {
                level: p::SOL_PACKET,
                name,
                value: (v as i32).to_ne_bytes().to_vec(),
            })
        }
    };
    put(p::PACKET_AUXDATA, d.flags & p::PDI_AUXDATA);
    put(p::PACKET_ORIGDEV, d.flags & p::PDI_ORIGDEV);
    put(p::PACKET_VNET_HDR, d.flags & p::PDI_VNETHDR);
    put(p::PACKET_LOSS, d.flags & p::PDI_LOSS);
    put(p::PACKET_VERSION, d.version);
    put(p::PACKET_RESERVE, d.reserve);
    put(p::PACKET_TIMESTAMP, d.tstamp);
    Ok(Some(pb::PacketSocket {
        r#type: ty,
        protocol: u32::from(d.protocol),
        ifindex: d.ifindex,
        ifname,
        opts,
    }))
}

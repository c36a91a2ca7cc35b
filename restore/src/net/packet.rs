//! A packet socket made again (`dump/src/net/packet.rs`): its options, then bound to its
//! protocol on its interface, which must still have the name it had.

use ckpt_images::pb;
use ckpt_sys::packet as p;
use ckpt_sys::socket as s;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::os::fd::{AsFd, OwnedFd, RawFd};

const OPTIONS: [i32; 7] = [
    p::PACKET_AUXDATA,
    p::PACKET_ORIGDEV,
    p::PACKET_VNET_HDR,
    p::PACKET_LOSS,
    p::PACKET_VERSION,
    p::PACKET_RESERVE,
    p::PACKET_TIMESTAMP,
];

/// An image's packet record, before anything is made.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let k = d
        .packet
        .as_ref()
        .ok_or("a packet socket without its record")?;
    if k.protocol > u32::from(u16::MAX) {
        return Err(format!("packet protocol {:#x}", k.protocol));
    }
    if k.r#type != libc::SOCK_RAW && k.r#type != libc::SOCK_DGRAM {
        return Err(format!("packet socket type {}", k.r#type));
    }
    if let Some(o) = k
        .opts
        .iter()
        .find(|o| o.level != p::SOL_PACKET || !OPTIONS.contains(&o.name))
    {
        return Err(format!(
            "packet socket option (level {}, {}) is not one a dump records",
            o.level, o.name
        ));
    }
    Ok(())
}

/// "packet 0x88b5 on lo", for messages.
pub fn name(k: &pb::PacketSocket) -> String {
    let on = if k.ifname.is_empty() {
        "every interface"
    } else {
        &k.ifname
    };
    format!("packet {:#06x} on {on}", k.protocol)
}

/// The socket of description `descs[0]` at its slot, with its status flags.
pub fn create_at(descs: &[(pb::FileDesc, RawFd)]) -> Result<(), String> {
    let [(d, slot)] = descs else {
        return Err(format!("a socket with {} descriptions", descs.len()));
    };
    let k = d.packet.as_ref().ok_or("no packet record")?;
    let sock = create(k).map_err(|e| format!("{}: {e}", name(k)))?;
    crate::seed::place_owned(sock, *slot)?;
    let flags = OFlag::from_bits_retain(d.flags as i32) - OFlag::O_ACCMODE;
    fcntl(*slot, FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL {:#o}: {e}", d.flags))?;
    Ok(())
}

fn create(k: &pb::PacketSocket) -> Result<OwnedFd, String> {
    let e = |e: ckpt_sys::Error| e.to_string();
    let protocol = k.protocol as u16;
    if k.ifindex != 0 {
        let now = p::interfaces().map_err(e)?.remove(&k.ifindex);
        if now.as_deref() != Some(k.ifname.as_str()) {
            return Err(format!(
                "interface {} is {} now (it was {} at the dump)",
                k.ifindex,
                now.as_deref().unwrap_or("gone"),
                k.ifname
            ));
        }
    }
    let sock = p::new(k.r#type, protocol).map_err(e)?;
    let fd = sock.as_fd();
    for o in &k.opts {
        s::set_bytes(fd, o.level, o.name, &o.value).map_err(e)?;
    }
    if k.ifindex != 0 {
        p::bind(fd, protocol, k.ifindex).map_err(e)?;
    }
    Ok(sock)
}

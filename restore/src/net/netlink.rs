//! A netlink socket made again (`dump/src/net/netlink.rs`): its flags, bound to its port
//! id with its first 32 groups, the other groups joined, connected to its peer. Nothing
//! was queued. The port id was the holder's (the kernel gives a process's first socket
//! its pid, which the restored process has again) or one the program chose: free again
//! once the dumped socket is gone, unless someone took it meanwhile (then the bind fails
//! and says so).

use ckpt_images::pb;
use ckpt_sys::netlink as nl;
use ckpt_sys::socket as s;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::os::fd::{AsFd, OwnedFd, RawFd};

/// An image's netlink record, before anything is made.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let n = d
        .netlink
        .as_ref()
        .ok_or("a netlink socket without its record")?;
    if let Some(o) = n
        .opts
        .iter()
        .find(|o| o.level != nl::SOL_NETLINK || !nl::FLAGS.contains(&o.name))
    {
        return Err(format!(
            "netlink socket option (level {}, {}) is not one a dump records",
            o.level, o.name
        ));
    }
    if n.groups.contains(&0) {
        return Err("netlink group 0".into());
    }
    Ok(())
}

/// "netlink 0 port 1234", for messages.
pub fn name(n: &pb::NetlinkSocket) -> String {
    format!("netlink {} port {}", n.protocol, n.port_id)
}

/// The socket of description `descs[0]` at its slot, with its status flags.
pub fn create_at(descs: &[(pb::FileDesc, RawFd)]) -> Result<(), String> {
    let [(d, slot)] = descs else {
        return Err(format!("a socket with {} descriptions", descs.len()));
    };
    let n = d.netlink.as_ref().ok_or("no netlink record")?;
    let sock = create(n).map_err(|e| format!("{}: {e}", name(n)))?;
    crate::seed::place_owned(sock, *slot)?;
    let flags = OFlag::from_bits_retain(d.flags as i32) - OFlag::O_ACCMODE;
    fcntl(*slot, FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL {:#o}: {e}", d.flags))?;
    Ok(())
}

fn create(n: &pb::NetlinkSocket) -> ckpt_sys::Result<OwnedFd> {
    let sock = s::new(libc::AF_NETLINK, n.r#type, n.protocol)?;
    let fd = sock.as_fd();
    for o in &n.opts {
        s::set_bytes(fd, o.level, o.name, &o.value)?;
    }
    let first32: u32 = n
        .groups
        .iter()
        .filter(|&&g| g <= 32)
        .fold(0, |m, g| m | 1 << (g - 1));
    if n.port_id != 0 {
        nl::bind(fd, n.port_id, first32)?;
    }
    // Without a port id it was never bound, so it had joined nothing either.
    for &g in n.groups.iter().filter(|&&g| g > 32 || n.port_id == 0) {
        nl::join(fd, g)?;
    }
    if n.dst_port_id != 0 || n.dst_group != 0 {
        nl::connect(fd, n.dst_port_id, n.dst_group)?;
    }
    Ok(sock)
}

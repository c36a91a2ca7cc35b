//! Sockets of the network, recreated by the seed in ckpt's network namespace (the one the
//! dump checked they were in): options, binding, then listening, a UDP peer and its
//! queued datagrams, or an established TCP connection through TCP_REPAIR (`tcp.rs`).
//! Connections stay in repair mode until every process is rebuilt; `resume.rs` then
//! unlocks them, just before the processes are let go. Netlink sockets: `netlink.rs`;
//! packet sockets: `packet.rs`.

pub mod external;
mod fin;
pub mod netlink;
pub mod packet;
mod resume;
mod tcp;

pub use resume::{connections, resume_connections};

use ckpt_images::pb;
use ckpt_sys::socket as s;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

fn addr(what: &str, text: &str) -> Result<SocketAddr, String> {
    text.parse()
        .map_err(|e| format!("{what} address {text:?} in the image: {e}"))
}

/// Checks an image's socket record before anything is created.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let Some(i) = &d.inet else {
        return Err("a socket without its socket record".into());
    };
    let tcp = i.r#type == libc::SOCK_STREAM && i.protocol == libc::IPPROTO_TCP;
    let udp = i.r#type == libc::SOCK_DGRAM && i.protocol == libc::IPPROTO_UDP;
    if !(i.family == libc::AF_INET || i.family == libc::AF_INET6) || !(tcp || udp) {
        return Err(format!(
            "a socket of family {} type {} protocol {}, not TCP or UDP over IP",
            i.family, i.r#type, i.protocol
        ));
    }
    if !i.local.is_empty() {
        addr("local", &i.local)?;
    }
    if !i.peer.is_empty() {
        addr("peer", &i.peer)?;
    }
    for d in &i.datagrams {
        addr("datagram sender", &d.from)?;
    }
    if let Some(c) = &i.tcp {
        if i.peer.is_empty() || i.local.is_empty() || !tcp {
            return Err("a TCP connection without both its addresses".into());
        }
        let state = i.state as u8;
        let known = s::tcp_connected(state) || state == s::TCP_CLOSE || state == s::TCP_SYN_SENT;
        if !known || pb::OwnFin::try_from(c.own_fin as i32).is_err() {
            return Err(format!(
                "a TCP connection in state {} with own_fin {}",
                i.state, c.own_fin
            ));
        }
    }
    Ok(())
}

/// Whether description `d` is an established TCP connection.
pub fn is_connection(d: &pb::FileDesc) -> bool {
    d.inet.as_ref().is_some_and(|i| i.tcp.is_some())
}

/// "tcp 127.0.0.1:80 -> 127.0.0.1:4000", for messages.
pub fn name(i: &pb::InetSocket) -> String {
    let proto = if i.protocol == libc::IPPROTO_TCP {
        "tcp"
    } else {
        "udp"
    };
    let local = if i.local.is_empty() {
        "(unbound)"
    } else {
        &i.local
    };
    if i.peer.is_empty() {
        format!("{proto} {local}")
    } else {
        format!("{proto} {local} -> {}", i.peer)
    }
}

/// The socket of description `descs[0]` (a socket has one description), made by a seed
/// (still root: TCP_REPAIR needs CAP_NET_ADMIN, a datagram put back CAP_NET_RAW), at
/// its slot with its status flags.
pub fn create_at(descs: &[(pb::FileDesc, RawFd)]) -> Result<(), String> {
    let [(d, slot)] = descs else {
        return Err(format!("a socket with {} descriptions", descs.len()));
    };
    let i = d.inet.as_ref().ok_or("no socket record")?;
    crate::seed::place_owned(create(i)?, *slot)?;
    let flags = OFlag::from_bits_retain(d.flags as i32) - OFlag::O_ACCMODE;
    fcntl(*slot, FcntlArg::F_SETFL(flags)).map_err(|e| format!("F_SETFL {:#o}: {e}", d.flags))?;
    Ok(())
}

/// The socket `i`, bound, listening or connected as it was.
fn create(i: &pb::InetSocket) -> Result<OwnedFd, String> {
    let sock = s::new(i.family, i.r#type, i.protocol).map_err(|e| e.to_string())?;
    let fd = sock.as_fd();
    let sys = |e: ckpt_sys::Error| e.to_string();
    for o in &i.opts {
        set_option(fd, o)?;
    }
    if i.tcp.is_some() {
        // Before the bind, after the options (SO_REUSEADDR would undo it): a socket in
        // repair mode may share its port with anyone (SK_FORCE_REUSE).
        s::set_int(fd, s::SOL_TCP, s::TCP_REPAIR, s::TCP_REPAIR_ON).map_err(sys)?;
    }
    if !i.local.is_empty() {
        s::bind(fd, addr("local", &i.local)?).map_err(|e| {
            let reuse = i
                .opts
                .iter()
                .any(|o| o.level == s::SOL_SOCKET && o.name == libc::SO_REUSEADDR);
            if e.errno() == Some(nix::errno::Errno::EADDRINUSE) && !reuse && i.tcp.is_none() {
                format!(
                    "{e} (the socket had no SO_REUSEADDR: connections of the old one in \
                     TIME_WAIT hold the port for up to a minute, as for any restarted server)"
                )
            } else {
                e.to_string()
            }
        })?;
    }
    if let (Some(c), true) = (&i.tcp, i.state == u32::from(s::TCP_SYN_SENT)) {
        tcp::connect_again(fd, c, fin::peer_of(i)?)?;
    } else if let Some(c) = &i.tcp {
        tcp::connect(fd, c, fin::peer_of(i)?, &i.opts)?;
    } else if i.protocol == libc::IPPROTO_TCP {
        if i.state == s::TCP_LISTEN as u32 {
            s::listen(fd, i.backlog).map_err(sys)?;
        }
    } else {
        if !i.peer.is_empty() {
            s::connect(fd, addr("peer", &i.peer)?).map_err(sys)?;
        }
        requeue(fd, &i.datagrams)?;
    }
    Ok(sock)
}

/// One option back as the dump read it; buffer sizes through the FORCE variants (the
/// kernel doubles what it is given, and the dump read the doubled value).
pub(crate) fn set_option(fd: BorrowedFd<'_>, o: &pb::SockOpt) -> Result<(), String> {
    let forced = match (o.level, o.name) {
        (s::SOL_SOCKET, s::SO_SNDBUF) => Some(s::SO_SNDBUFFORCE),
        (s::SOL_SOCKET, s::SO_RCVBUF) => Some(s::SO_RCVBUFFORCE),
        _ => None,
    };
    let r = match forced {
        Some(name) => {
            let v: [u8; 4] =
                o.value.as_slice().try_into().map_err(|_| {
                    format!("option {}/{}: {} bytes", o.level, o.name, o.value.len())
                })?;
            s::set_int(fd, s::SOL_SOCKET, name, i32::from_ne_bytes(v) / 2)
        }
        None if (o.level, o.name) == (s::SOL_SOCKET, s::SO_ATTACH_FILTER) => {
            s::attach_filter(fd, &o.value)
        }
        None => s::set_bytes(fd, o.level, o.name, &o.value),
    };
    r.map_err(|e| format!("socket option (level {}, {}): {e}", o.level, o.name))
}

/// Puts the datagrams that waited on the socket back into its queue: each sent again to
/// it from its original sender's address.
fn requeue(fd: BorrowedFd<'_>, datagrams: &[pb::Datagram]) -> Result<(), String> {
    if datagrams.is_empty() {
        return Ok(());
    }
    let me = s::local_addr(fd).map_err(|e| e.to_string())?;
    for d in datagrams {
        let mut from = addr("datagram sender", &d.from)?;
        let mut to = me;
        // A dual-stack socket's IPv4 senders show as ::ffff:a.b.c.d: send over IPv4.
        if let SocketAddr::V6(v6) = from {
            if let Some(v4) = v6.ip().to_ipv4_mapped() {
                from = SocketAddr::new(IpAddr::V4(v4), v6.port());
                to = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), me.port());
            }
        }
        if to.ip().is_unspecified() {
            let lo = match to {
                SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            };
            to.set_ip(lo);
        }
        s::send_udp_as(from, to, &d.data).map_err(|e| {
            format!(
                "putting back a queued datagram of {} bytes from {from}: {e}",
                d.data.len()
            )
        })?;
    }
    // Delivery over loopback is synchronous; check that every one arrived.
    let mut n = 0;
    let before = s::get_int(fd, s::SOL_SOCKET, s::SO_PEEK_OFF).map_err(|e| e.to_string())?;
    s::set_int(fd, s::SOL_SOCKET, s::SO_PEEK_OFF, 0).map_err(|e| e.to_string())?;
    while let Ok(Some(_)) = s::peek_datagram(fd) {
        n += 1;
    }
    s::set_int(fd, s::SOL_SOCKET, s::SO_PEEK_OFF, before).map_err(|e| e.to_string())?;
    if n != datagrams.len() {
        return Err(format!(
            "{} queued datagrams were sent back but {n} arrived",
            datagrams.len()
        ));
    }
    Ok(())
}

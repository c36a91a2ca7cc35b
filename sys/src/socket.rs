//! Sockets of the network (TCP and UDP over IPv4 and IPv6), thinly wrapped: options read
//! and written as raw bytes (the dump copies what it does not interpret), addresses as
//! `std::net::SocketAddr`, the queue-size ioctls, peeking without draining, and the
//! TCP_REPAIR family (tcp(7) does not document it; include/uapi/linux/tcp.h and
//! net/ipv4/tcp.c are the reference).

use crate::error::{Ctx, Error, Result};
use nix::errno::Errno;
use nix::sys::socket::{self as ns, SockaddrStorage};
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

pub const SOL_SOCKET: i32 = libc::SOL_SOCKET;
pub const SOL_IP: i32 = libc::SOL_IP;
pub const SOL_IPV6: i32 = libc::SOL_IPV6;
pub const SOL_TCP: i32 = libc::SOL_TCP;
pub const SOL_UDP: i32 = libc::SOL_UDP;

pub const SO_SNDBUF: i32 = libc::SO_SNDBUF;
pub const SO_RCVBUF: i32 = libc::SO_RCVBUF;
pub const SO_SNDBUFFORCE: i32 = 32;
pub const SO_RCVBUFFORCE: i32 = 33;
/// sk_userlocks' buffer bits (1: send buffer set by the user, 2: receive buffer).
pub const SO_BUF_LOCK: i32 = 72;
pub const SO_PEEK_OFF: i32 = libc::SO_PEEK_OFF;

pub const TCP_REPAIR: i32 = 19;
pub const TCP_REPAIR_QUEUE: i32 = 20;
pub const TCP_QUEUE_SEQ: i32 = 21;
pub const TCP_REPAIR_OPTIONS: i32 = 22;
pub const TCP_TIMESTAMP: i32 = 24;
pub const TCP_REPAIR_WINDOW: i32 = 29;
/// TCP_REPAIR values: on, off (sends a window probe), off without the probe.
pub const TCP_REPAIR_ON: i32 = 1;
pub const TCP_REPAIR_OFF: i32 = 0;
pub const TCP_REPAIR_OFF_NO_WP: i32 = -1;
/// TCP_REPAIR_QUEUE values.
pub const TCP_RECV_QUEUE: i32 = 1;
pub const TCP_SEND_QUEUE: i32 = 2;
/// TCP_REPAIR_OPTIONS codes (the option kinds of the TCP header).
pub const TCPOPT_MSS: u32 = 2;
pub const TCPOPT_WINDOW: u32 = 3;
pub const TCPOPT_SACK_PERM: u32 = 4;
pub const TCPOPT_TIMESTAMP: u32 = 8;

/// include/net/tcp_states.h
pub const TCP_ESTABLISHED: u8 = 1;
pub const TCP_SYN_SENT: u8 = 2;
pub const TCP_FIN_WAIT1: u8 = 4;
pub const TCP_FIN_WAIT2: u8 = 5;
pub const TCP_CLOSE: u8 = 7;
pub const TCP_CLOSE_WAIT: u8 = 8;
pub const TCP_LAST_ACK: u8 = 9;
pub const TCP_LISTEN: u8 = 10;
pub const TCP_CLOSING: u8 = 11;

/// Whether a TCP socket in `state` is a connection: established or half closed.
pub fn tcp_connected(state: u8) -> bool {
    matches!(
        state,
        TCP_ESTABLISHED
            | TCP_FIN_WAIT1
            | TCP_FIN_WAIT2
            | TCP_CLOSE_WAIT
            | TCP_LAST_ACK
            | TCP_CLOSING
    )
}

/// The name of a TCP state, for messages.
pub fn tcp_state_name(state: u8) -> String {
    match state {
        TCP_ESTABLISHED => "ESTABLISHED".into(),
        TCP_SYN_SENT => "SYN_SENT".into(),
        3 => "SYN_RECV".into(),
        TCP_FIN_WAIT1 => "FIN_WAIT1".into(),
        TCP_FIN_WAIT2 => "FIN_WAIT2".into(),
        6 => "TIME_WAIT".into(),
        TCP_CLOSE => "CLOSE".into(),
        TCP_CLOSE_WAIT => "CLOSE_WAIT".into(),
        TCP_LAST_ACK => "LAST_ACK".into(),
        TCP_LISTEN => "LISTEN".into(),
        TCP_CLOSING => "CLOSING".into(),
        n => format!("{n}"),
    }
}

/// (domain, type, protocol) of a socket: SO_DOMAIN, SO_TYPE, SO_PROTOCOL.
pub fn kind(fd: BorrowedFd<'_>) -> Result<(i32, i32, i32)> {
    Ok((
        get_int(fd, SOL_SOCKET, libc::SO_DOMAIN)?,
        get_int(fd, SOL_SOCKET, libc::SO_TYPE)?,
        get_int(fd, SOL_SOCKET, libc::SO_PROTOCOL)?,
    ))
}

/// getsockopt(2) into a buffer of at most `max` bytes; the bytes the kernel wrote.
pub fn get_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, max: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; max];
    let mut len = max as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf` and stores the length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    Errno::result(r).ctx(|| format!("getsockopt({level}, {name})"))?;
    buf.truncate(len as usize);
    Ok(buf)
}

/// setsockopt(2) with raw bytes.
pub fn set_bytes(fd: BorrowedFd<'_>, level: i32, name: i32, val: &[u8]) -> Result<()> {
    // SAFETY: the kernel reads `val.len()` bytes from `val`.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            val.as_ptr().cast(),
            val.len() as libc::socklen_t,
        )
    };
    Errno::result(r).ctx(|| format!("setsockopt({level}, {name})"))?;
    Ok(())
}

/// SO_ATTACH_FILTER, which is also SO_GET_FILTER; and SO_LOCK_FILTER.
pub const SO_ATTACH_FILTER: i32 = libc::SO_ATTACH_FILTER;
pub const SO_LOCK_FILTER: i32 = libc::SO_LOCK_FILTER;

/// One classic BPF instruction (struct sock_filter), as SO_GET_FILTER copies them.
const BPF_INSN: usize = 8;

/// The classic BPF program attached to `fd` (SO_ATTACH_FILTER) as the kernel keeps the
/// original, instructions back to back; empty without one. SO_GET_FILTER counts in
/// instructions, not bytes: asked with length 0 it says how many there are. A program
/// attached as eBPF (SO_ATTACH_BPF) has no original to give: EACCES.
pub fn filter(fd: BorrowedFd<'_>) -> Result<Vec<u8>> {
    let what = || "getsockopt(SO_GET_FILTER)".to_string();
    let mut count: libc::socklen_t = 0;
    // SAFETY: with a length of 0 the kernel only stores the instruction count in `count`
    // and writes nothing through the null value pointer.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_SOCKET,
            SO_ATTACH_FILTER,
            std::ptr::null_mut(),
            &mut count,
        )
    };
    Errno::result(r).ctx(what)?;
    if count == 0 {
        return Ok(Vec::new());
    }
    let mut buf = vec![0u8; count as usize * BPF_INSN];
    let mut len = count;
    // SAFETY: the kernel copies at most `len` instructions (8 bytes each, the size of
    // `buf`) and stores how many it copied in `len`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_SOCKET,
            SO_ATTACH_FILTER,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    Errno::result(r).ctx(what)?;
    buf.truncate(len as usize * BPF_INSN);
    Ok(buf)
}

/// Attaches the classic BPF program `prog` (instructions back to back, as `filter` reads
/// them) to `fd`.
pub fn attach_filter(fd: BorrowedFd<'_>, prog: &[u8]) -> Result<()> {
    let what = || format!("setsockopt(SO_ATTACH_FILTER, {} bytes)", prog.len());
    let len = u16::try_from(prog.len() / BPF_INSN)
        .ok()
        .filter(|_| prog.len() % BPF_INSN == 0)
        .ok_or_else(|| Error::sys(what(), Errno::EINVAL))?;
    let fprog = libc::sock_fprog {
        len,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at `len` whole instructions in `prog`, which outlives the
    // call; the kernel copies them and does not write through the pointer.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_SOCKET,
            SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    Errno::result(r).map(drop).ctx(what)
}

pub fn get_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32> {
    let b = get_bytes(fd, level, name, 4)?;
    let mut v = [0u8; 4];
    v[..b.len().min(4)].copy_from_slice(&b[..b.len().min(4)]);
    Ok(i32::from_ne_bytes(v))
}

pub fn set_int(fd: BorrowedFd<'_>, level: i32, name: i32, val: i32) -> Result<()> {
    set_bytes(fd, level, name, &val.to_ne_bytes())
}

fn to_std(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    s.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// getsockname(2).
pub fn local_addr(fd: BorrowedFd<'_>) -> Result<SocketAddr> {
    let s: SockaddrStorage = ns::getsockname(fd.as_raw_fd()).ctx(|| "getsockname".into())?;
    to_std(&s).ok_or_else(|| Error::Other("getsockname: not an inet address".into()))
}

/// getpeername(2); None when not connected.
pub fn peer_addr(fd: BorrowedFd<'_>) -> Result<Option<SocketAddr>> {
    match ns::getpeername::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(s) => Ok(to_std(&s)),
        Err(Errno::ENOTCONN) => Ok(None),
        Err(e) => Err(Error::sys("getpeername", e)),
    }
}

/// The peer's address through SO_PEERNAME, which, unlike getpeername(2), still answers
/// once the connection has ended (state CLOSE); None if the socket never had one.
pub fn peer_name(fd: BorrowedFd<'_>) -> Result<Option<SocketAddr>> {
    const SO_PEERNAME: i32 = 28;
    let v6 = get_int(fd, SOL_SOCKET, libc::SO_DOMAIN)? == libc::AF_INET6;
    // The kernel refuses a buffer longer than the address it has.
    let len = if v6 { 28 } else { 16 };
    let b = match get_bytes(fd, SOL_SOCKET, SO_PEERNAME, len) {
        Ok(b) => b,
        Err(e) if e.errno() == Some(Errno::ENOTCONN) => return Ok(None),
        Err(e) => return Err(e),
    };
    if b.len() < len {
        return Err(Error::Other(format!("SO_PEERNAME: {} bytes", b.len())));
    }
    let port = u16::from_be_bytes([b[2], b[3]]);
    let addr = if v6 {
        let ip: [u8; 16] = b[8..24].try_into().expect("16 bytes");
        let scope = u32::from_ne_bytes(b[24..28].try_into().expect("4 bytes"));
        SocketAddr::V6(SocketAddrV6::new(ip.into(), port, 0, scope))
    } else {
        let ip: [u8; 4] = b[4..8].try_into().expect("4 bytes");
        SocketAddr::V4(SocketAddrV4::new(ip.into(), port))
    };
    Ok(Some(addr))
}

/// shutdown(2) of the writing side: a TCP socket queues its FIN.
pub fn shutdown_write(fd: BorrowedFd<'_>) -> Result<()> {
    ns::shutdown(fd.as_raw_fd(), ns::Shutdown::Write).ctx(|| "shutdown(SHUT_WR)".into())
}

/// Whether the socket holds an error not read yet (poll's POLLERR), without reading it
/// (SO_ERROR would clear it).
pub fn error_pending(fd: BorrowedFd<'_>) -> Result<bool> {
    let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::empty())];
    nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO).ctx(|| "poll".into())?;
    Ok(p[0]
        .revents()
        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLERR)))
}

/// socket(2), close-on-exec.
pub fn new(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let r = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    let fd = Errno::result(r).ctx(|| format!("socket({domain}, {ty}, {protocol})"))?;
    // SAFETY: socket returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn bind(fd: BorrowedFd<'_>, addr: SocketAddr) -> Result<()> {
    ns::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).ctx(|| format!("bind {addr}"))
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<()> {
    // SAFETY: listen takes no pointers.
    let r = unsafe { libc::listen(fd.as_raw_fd(), backlog) };
    Errno::result(r).ctx(|| format!("listen({backlog})"))?;
    Ok(())
}

pub fn connect(fd: BorrowedFd<'_>, addr: SocketAddr) -> Result<()> {
    ns::connect(fd.as_raw_fd(), &SockaddrStorage::from(addr)).ctx(|| format!("connect {addr}"))
}

/// UDP: connect(2) to AF_UNSPEC, which forgets the peer.
pub fn disconnect(fd: BorrowedFd<'_>) -> Result<()> {
    let sa = libc::sockaddr {
        sa_family: libc::AF_UNSPEC as libc::sa_family_t,
        sa_data: [0; 14],
    };
    // SAFETY: the kernel reads one sockaddr from `sa`.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            &sa,
            std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
        )
    };
    Errno::result(r).ctx(|| "connect(AF_UNSPEC)".into())?;
    Ok(())
}

/// Which queue-size ioctl: bytes unread (SIOCINQ), bytes not yet acknowledged
/// (SIOCOUTQ), bytes not yet sent (SIOCOUTQNSD).
#[derive(Clone, Copy, Debug)]
pub enum Queue {
    In,
    Out,
    OutNotSent,
}

pub fn queued(fd: BorrowedFd<'_>, q: Queue) -> Result<u32> {
    let req: libc::c_ulong = match q {
        Queue::In => libc::FIONREAD,
        Queue::Out => libc::TIOCOUTQ,
        Queue::OutNotSent => 0x894B,
    };
    let mut v: libc::c_int = 0;
    // SAFETY: these ioctls write one int into `v`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req as _, &mut v) };
    Errno::result(r).ctx(|| format!("ioctl({q:?} queue)"))?;
    Ok(v as u32)
}

/// recv(2) with MSG_PEEK | MSG_DONTWAIT | `flags` into `buf`: bytes copied (with
/// MSG_TRUNC, the datagram's whole length).
pub fn peek(fd: BorrowedFd<'_>, buf: &mut [u8], flags: i32) -> Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into buf.
    let r = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_PEEK | libc::MSG_DONTWAIT | flags,
        )
    };
    Ok(Errno::result(r).ctx(|| "recv(MSG_PEEK)".into())? as usize)
}

/// The next datagram of a UDP socket's queue, without taking it off (MSG_PEEK; with
/// SO_PEEK_OFF enabled each call moves past the one before), and its sender. None once
/// the queue has no more.
pub fn peek_datagram(fd: BorrowedFd<'_>) -> Result<Option<(SocketAddr, Vec<u8>)>> {
    let mut buf = vec![0u8; 65536];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let r = ns::recvmsg::<SockaddrStorage>(
        fd.as_raw_fd(),
        &mut iov,
        None,
        ns::MsgFlags::MSG_PEEK | ns::MsgFlags::MSG_DONTWAIT,
    );
    let (len, from) = match r {
        Ok(m) => (m.bytes, m.address),
        Err(Errno::EAGAIN) => return Ok(None),
        Err(e) => return Err(Error::sys("recvmsg(MSG_PEEK)", e)),
    };
    let from = from
        .as_ref()
        .and_then(to_std)
        .ok_or_else(|| Error::Other("a queued datagram has no inet sender".into()))?;
    buf.truncate(len);
    Ok(Some((from, buf)))
}

/// send(2) with `flags`; bytes taken.
pub fn send(fd: BorrowedFd<'_>, buf: &[u8], flags: i32) -> Result<usize> {
    // SAFETY: the kernel reads at most buf.len() bytes from buf.
    let r = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
    Ok(Errno::result(r).ctx(|| format!("send({} bytes)", buf.len()))? as usize)
}

/// sendto(2) of one datagram.
pub fn send_to(fd: BorrowedFd<'_>, buf: &[u8], to: SocketAddr) -> Result<()> {
    ns::sendto(
        fd.as_raw_fd(),
        buf,
        &SockaddrStorage::from(to),
        ns::MsgFlags::empty(),
    )
    .ctx(|| format!("sendto {to} ({} bytes)", buf.len()))?;
    Ok(())
}

/// What TCP_INFO says that a dump needs.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfo {
    pub state: u8,
    /// TCPI_OPT_* bits: 1 timestamps, 2 SACK, 4 window scaling.
    pub options: u8,
    pub snd_wscale: u8,
    pub rcv_wscale: u8,
    /// Listening sockets: connections waiting in the accept queue, and the backlog.
    pub unacked: u32,
    pub sacked: u32,
    /// Segments sent and received (tcpi_segs_out + tcpi_segs_in): 0 for a socket that
    /// never had a connection.
    pub segs: u64,
    /// Bytes written but not sent (tcpi_notsent_bytes) and segments sent with data
    /// (tcpi_data_segs_out): both 0 for a connection being made that carries no data.
    pub notsent: u32,
    pub data_segs_out: u32,
}

pub fn tcp_info(fd: BorrowedFd<'_>) -> Result<TcpInfo> {
    // struct tcp_info: u8 state, ca_state, retransmits, probes, backoff, options,
    // snd_wscale:4 | rcv_wscale:4, ...; u32 rto, ato, snd_mss, rcv_mss, unacked (at 24),
    // sacked (at 28), ..., u32 segs_out (at 136), segs_in (at 140), notsent_bytes (at 144),
    // ..., data_segs_out (at 156).
    let b = get_bytes(fd, SOL_TCP, libc::TCP_INFO, 160)?;
    if b.len() < 32 {
        return Err(Error::Other(format!("TCP_INFO: {} bytes", b.len())));
    }
    let u32_at = |o: usize| u32::from_ne_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
    Ok(TcpInfo {
        state: b[0],
        options: b[5],
        snd_wscale: b[6] & 0xf,
        rcv_wscale: b[6] >> 4,
        unacked: u32_at(24),
        sacked: u32_at(28),
        segs: if b.len() >= 144 {
            u64::from(u32_at(136)) + u64::from(u32_at(140))
        } else {
            0
        },
        notsent: if b.len() >= 148 { u32_at(144) } else { 0 },
        data_segs_out: if b.len() >= 160 { u32_at(156) } else { 0 },
    })
}

/// struct tcp_repair_window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RepairWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

pub fn repair_window(fd: BorrowedFd<'_>) -> Result<RepairWindow> {
    let b = get_bytes(fd, SOL_TCP, TCP_REPAIR_WINDOW, 20)?;
    if b.len() != 20 {
        return Err(Error::Other(format!(
            "TCP_REPAIR_WINDOW: {} bytes",
            b.len()
        )));
    }
    let w = |i: usize| u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]]);
    Ok(RepairWindow {
        snd_wl1: w(0),
        snd_wnd: w(1),
        max_window: w(2),
        rcv_wnd: w(3),
        rcv_wup: w(4),
    })
}

pub fn set_repair_window(fd: BorrowedFd<'_>, w: &RepairWindow) -> Result<()> {
    let mut b = Vec::with_capacity(20);
    for v in [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup] {
        b.extend_from_slice(&v.to_ne_bytes());
    }
    set_bytes(fd, SOL_TCP, TCP_REPAIR_WINDOW, &b)
}

/// TCP_REPAIR_OPTIONS: (code, value) pairs, as struct tcp_repair_opt.
pub fn set_repair_options(fd: BorrowedFd<'_>, opts: &[(u32, u32)]) -> Result<()> {
    let mut b = Vec::with_capacity(opts.len() * 8);
    for &(code, val) in opts {
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(&val.to_ne_bytes());
    }
    set_bytes(fd, SOL_TCP, TCP_REPAIR_OPTIONS, &b)
}

/// Sends one UDP datagram to `to` as if `from` had sent it, whether or not another socket
/// holds `from` now: through a raw socket of protocol UDP bound to `from`'s address, with
/// the UDP header written here (IPv4: no checksum, which UDP over IPv4 allows; IPv6: the
/// kernel fills it in, IPV6_CHECKSUM). Needs CAP_NET_RAW.
pub fn send_udp_as(from: SocketAddr, to: SocketAddr, data: &[u8]) -> Result<()> {
    let domain = if from.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let raw = new(domain, libc::SOCK_RAW, libc::IPPROTO_UDP)?;
    let fd = raw.as_fd();
    let unported = |a: SocketAddr| {
        let mut a = a;
        a.set_port(0);
        a
    };
    bind(fd, unported(from))?;
    if domain == libc::AF_INET6 {
        const IPV6_CHECKSUM: i32 = 7;
        set_int(fd, SOL_IPV6, IPV6_CHECKSUM, 6)?;
    }
    let len = u16::try_from(data.len() + 8)
        .map_err(|_| Error::Other(format!("a datagram of {} bytes", data.len())))?;
    let mut pkt = Vec::with_capacity(data.len() + 8);
    pkt.extend_from_slice(&from.port().to_be_bytes());
    pkt.extend_from_slice(&to.port().to_be_bytes());
    pkt.extend_from_slice(&len.to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(data);
    send_to(fd, &pkt, unported(to))
}

/// The network namespace `sock` belongs to (SIOCGSKNS): the namespace it was created
/// in, whatever namespace its holder is in now.
pub fn netns(sock: BorrowedFd<'_>) -> Result<OwnedFd> {
    const SIOCGSKNS: libc::c_ulong = 0x894C;
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd we own.
    let r = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCGSKNS as _) };
    let ns = Errno::result(r).ctx(|| "ioctl(SIOCGSKNS)".into())?;
    // SAFETY: the ioctl returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(ns) })
}

/// The inode of the network namespace `sock` belongs to ([`netns`]).
pub fn netns_inode(sock: BorrowedFd<'_>) -> Result<u64> {
    let ns = netns(sock)?;
    let st = nix::sys::stat::fstat(ns.as_raw_fd()).ctx(|| "fstat(netns)".into())?;
    Ok(st.st_ino)
}

/// The inode of the calling process's network namespace.
pub fn own_netns_inode() -> Result<u64> {
    let st = nix::sys::stat::stat("/proc/self/ns/net").ctx(|| "stat /proc/self/ns/net".into())?;
    Ok(st.st_ino)
}

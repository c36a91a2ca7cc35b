//! Unix sockets (unix(7)), thinly wrapped: names as raw `sun_path` bytes (a leading NUL
//! for an abstract name, nothing for an unnamed socket), the unix sock_diag table
//! (net/unix/diag.c: peers, queued connections, queue lengths, the bound file, shutdown),
//! peeking a receive queue without draining it (SO_PEEK_OFF), and the calls a restore
//! makes a socket with (socketpair, bind, listen, connect, accept, send).

use crate::error::{Ctx, Error, Result};
use nix::errno::Errno;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// unix_sock's sk_state values (include/net/tcp_states.h).
pub const ST_CONNECTED: u8 = 1;
pub const ST_UNCONNECTED: u8 = 7;
pub const ST_LISTEN: u8 = 10;
/// sk_shutdown bits.
pub const RCV_SHUTDOWN: u8 = 1;
pub const SEND_SHUTDOWN: u8 = 2;

// UDIAG_SHOW_* and UNIX_DIAG_* of include/uapi/linux/unix_diag.h.
const SHOW_VFS: u32 = 0x02;
const SHOW_PEER: u32 = 0x04;
const SHOW_ICONS: u32 = 0x08;
const SHOW_RQLEN: u32 = 0x10;
const DIAG_VFS: u16 = 1;
const DIAG_PEER: u16 = 2;
const DIAG_ICONS: u16 = 3;
const DIAG_RQLEN: u16 = 4;
const DIAG_SHUTDOWN: u16 = 6;

/// What the kernel's unix sock_diag says of one socket.
#[derive(Clone, Debug, Default)]
pub struct Diag {
    pub ino: u64,
    /// SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET.
    pub ty: u8,
    pub state: u8,
    /// The inode of the file it is bound to (0: none).
    pub vfs_ino: u64,
    /// The peer's inode; 0 when it has none, when the peer is closed, or when it waits in
    /// a listener's queue (the embryo socket has no inode yet).
    pub peer: u64,
    /// A listener: the sockets whose connections wait to be accepted, oldest first.
    pub icons: Vec<u64>,
    /// A listener: connections queued and the backlog; else bytes readable (a datagram
    /// socket: the first datagram's) and bytes sent not yet read by the peer.
    pub rqueue: u32,
    pub wqueue: u32,
    pub shutdown: u8,
}

/// Every unix socket of ckpt's network namespace, by inode: one dump request.
pub fn diag_all() -> Result<HashMap<u64, Diag>> {
    // struct unix_diag_req: family, protocol, pad, states, ino, show, cookie[2].
    let mut req = vec![0u8; 24];
    req[0] = libc::AF_UNIX as u8;
    req[4..8].copy_from_slice(&u32::MAX.to_ne_bytes());
    req[12..16].copy_from_slice(&(SHOW_VFS | SHOW_PEER | SHOW_ICONS | SHOW_RQLEN).to_ne_bytes());
    let mut out = HashMap::new();
    crate::sockdiag::dump(&req, "unix", |b| {
        if let Some(d) = parse(b) {
            out.insert(d.ino, d);
        }
    })?;
    Ok(out)
}

/// A SOCK_DIAG_BY_FAMILY dump request (netlink header, then `payload`: the family's
/// request struct).
pub(crate) fn diag_request(payload: &[u8]) -> Vec<u8> {
    crate::sockdiag::message(
        crate::sockdiag::SOCK_DIAG_BY_FAMILY,
        libc::NLM_F_REQUEST | libc::NLM_F_DUMP,
        payload,
    )
}

/// struct unix_diag_msg (family, type, state, pad, ino, cookie[2]) and its attributes.
fn parse(b: &[u8]) -> Option<Diag> {
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(i..i + 4)?.try_into().ok()?))
    };
    let mut d = Diag {
        ty: *b.get(1)?,
        state: *b.get(2)?,
        ino: u32_at(b, 4)? as u64,
        ..Diag::default()
    };
    for (aty, v) in crate::sockdiag::attrs(b, 16) {
        match aty {
            DIAG_VFS => d.vfs_ino = u32_at(v, 0)? as u64,
            DIAG_PEER => d.peer = u32_at(v, 0)? as u64,
            DIAG_ICONS => {
                d.icons = v
                    .chunks_exact(4)
                    .map(|c| u32_at(c, 0).unwrap_or(0) as u64)
                    .collect()
            }
            DIAG_RQLEN => {
                d.rqueue = u32_at(v, 0)?;
                d.wqueue = u32_at(v, 4)?;
            }
            DIAG_SHUTDOWN => d.shutdown = *v.first()?,
            _ => {}
        }
    }
    Some(d)
}

/// The bytes of a sockaddr_un's name: a path without its NUL, an abstract name with its
/// leading NUL, or nothing.
fn name_of(sa: &libc::sockaddr_un, len: libc::socklen_t) -> Vec<u8> {
    let off = std::mem::size_of::<libc::sa_family_t>();
    let n = (len as usize).saturating_sub(off).min(sa.sun_path.len());
    let raw: Vec<u8> = sa.sun_path[..n].iter().map(|&c| c as u8).collect();
    if raw.first().is_some_and(|&c| c != 0) {
        raw.into_iter().take_while(|&c| c != 0).collect()
    } else {
        raw
    }
}

/// A sockaddr_un for `name` (as `name_of` gives it) and its length.
fn addr_of(name: &[u8]) -> Result<(libc::sockaddr_un, libc::socklen_t)> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    if name.len() >= sa.sun_path.len() {
        return Err(Error::Other(format!(
            "a unix socket name of {} bytes",
            name.len()
        )));
    }
    for (d, &s) in sa.sun_path.iter_mut().zip(name) {
        *d = s as libc::c_char;
    }
    let off = std::mem::size_of::<libc::sa_family_t>();
    let len = off + name.len() + usize::from(name.first().is_some_and(|&c| c != 0));
    Ok((sa, len as libc::socklen_t))
}

/// How a name reads in messages: a path as is, an abstract name with `@`.
pub fn display(name: &[u8]) -> String {
    match name.split_first() {
        None => "(unnamed)".into(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => String::from_utf8_lossy(name).into_owned(),
    }
}

/// getsockname(2) (`peer` false) or getpeername(2): the name; empty when unnamed or, for
/// the peer, not connected.
pub fn name(fd: BorrowedFd<'_>, peer: bool) -> Result<Vec<u8>> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut sa as *mut libc::sockaddr_un).cast::<libc::sockaddr>();
    // SAFETY: the kernel writes at most `len` bytes at `p` and stores the length.
    let r = unsafe {
        if peer {
            libc::getpeername(fd.as_raw_fd(), p, &mut len)
        } else {
            libc::getsockname(fd.as_raw_fd(), p, &mut len)
        }
    };
    match Errno::result(r) {
        Ok(_) => Ok(name_of(&sa, len)),
        Err(Errno::ENOTCONN) if peer => Ok(Vec::new()),
        Err(e) => Err(Error::sys(
            if peer { "getpeername" } else { "getsockname" },
            e,
        )),
    }
}

/// SO_PEERCRED: (pid, uid, gid) of whoever made the peer (connect, listen or socketpair).
pub fn peer_cred(fd: BorrowedFd<'_>) -> Result<(i32, u32, u32)> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `c`.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    Errno::result(r).ctx(|| "getsockopt(SO_PEERCRED)".into())?;
    Ok((c.pid, c.uid, c.gid))
}

/// One message of a receive queue, peeked: its sender's name (datagrams), bytes, and the
/// files in flight with it (SCM_RIGHTS): the peek installed new fds of ckpt's for them,
/// referring to the same open file descriptions.
#[derive(Debug, Default)]
pub struct Queued {
    pub from: Vec<u8>,
    pub data: Vec<u8>,
    pub fds: Vec<OwnedFd>,
    /// SCM_CREDENTIALS (pid, uid, gid) as the kernel shows them to a receiver with
    /// SO_PASSCRED (pid 0: none were attached, or the sender's pid is not visible here).
    pub creds: Option<(i32, u32, u32)>,
}

/// Why a queue could not be read as plain bytes.
#[derive(Debug)]
pub enum PeekProblem {
    /// More fds in flight (SCM_RIGHTS) than a peek could take (MSG_CTRUNC).
    Rights,
    /// Something else the kernel attached (credentials, security labels).
    Control(i32),
    Sys(Error),
}

impl From<Error> for PeekProblem {
    fn from(e: Error) -> Self {
        PeekProblem::Sys(e)
    }
}

/// The receive queue of a unix socket, oldest first, left in place: each MSG_PEEK moves
/// the peek offset (SO_PEEK_OFF) past what it returned, and the socket's own offset is
/// put back after. A stream comes as chunks (the kernel stops a read where the writer
/// changes), datagrams and seqpackets one message each.
pub fn peek_queue(
    fd: BorrowedFd<'_>,
    stream: bool,
) -> std::result::Result<Vec<Queued>, PeekProblem> {
    let before = crate::socket::get_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    crate::socket::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    let got = peek_all(fd, stream);
    crate::socket::set_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, before)?;
    got
}

fn peek_all(fd: BorrowedFd<'_>, stream: bool) -> std::result::Result<Vec<Queued>, PeekProblem> {
    const MAX_MESSAGES: usize = 1 << 16;
    let mut buf = vec![0u8; 1 << 20];
    let mut ctl = [0u64; 64];
    let mut out = Vec::new();
    loop {
        // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
        let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data; all zeroes is a valid value.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_name = (&mut sa as *mut libc::sockaddr_un).cast();
        m.msg_namelen = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        m.msg_control = ctl.as_mut_ptr().cast();
        m.msg_controllen = std::mem::size_of_val(&ctl);
        let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC;
        // SAFETY: every pointer in `m` points at a live buffer of the length it states.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut m, flags) };
        let n = match Errno::result(r) {
            Ok(n) => n as usize,
            Err(Errno::EAGAIN) => return Ok(out),
            Err(e) => return Err(Error::sys("recvmsg(MSG_PEEK)", e).into()),
        };
        let (fds, creds) = if m.msg_controllen > 0 || m.msg_flags & libc::MSG_CTRUNC != 0 {
            control(&m)?
        } else {
            (Vec::new(), None)
        };
        if m.msg_flags & libc::MSG_TRUNC != 0 {
            return Err(Error::Other(format!("a queued message over {} bytes", buf.len())).into());
        }
        if n == 0 {
            // A stream returns 0 only at its end (the peer closed or shut down); a zero-length datagram would be peeked
            // again and again (the offset cannot move past it).
            return if stream || out.is_empty() && m.msg_namelen == 0 {
                Ok(out)
            } else {
                Err(Error::Other("a zero-length message is queued".into()).into())
            };
        }
        out.push(Queued {
            from: name_of(&sa, m.msg_namelen),
            data: buf[..n].to_vec(),
            fds,
            creds,
        });
        if out.len() > MAX_MESSAGES {
            return Err(Error::Other(format!("more than {MAX_MESSAGES} queued messages")).into());
        }
    }
}

/// Control messages of a receive time (SCM_TIMESTAMP, SCM_TIMESTAMPNS,
/// SCM_TIMESTAMPING and their 64-bit time variants, asm-generic/socket.h).
const RECEIVE_TIME: [i32; 6] = [29, 35, 37, 63, 64, 65];

/// The fds a peek installed for the files in flight (SCM_RIGHTS) and the credentials
/// (SCM_CREDENTIALS); receive times are passed over; anything else in the control data
/// (a security label, a pidfd) or a truncated one is a problem (the fds installed are closed again).
#[allow(clippy::type_complexity)]
fn control(
    m: &libc::msghdr,
) -> std::result::Result<(Vec<OwnedFd>, Option<(i32, u32, u32)>), PeekProblem> {
    let mut fds = Vec::new();
    let mut creds = None;
    let mut problem = None;
    // SAFETY: `m` is the msghdr recvmsg filled; CMSG_FIRSTHDR/NXTHDR stay inside its
    // control buffer.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(m) };
    while !c.is_null() {
        // SAFETY: `c` is a header inside the control buffer (checked non-null).
        let h = unsafe { &*c };
        if h.cmsg_level == libc::SOL_SOCKET && h.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: CMSG_LEN(0) is a constant computation.
            let head = unsafe { libc::CMSG_LEN(0) } as usize;
            let n = (h.cmsg_len as usize).saturating_sub(head) / 4;
            for i in 0..n {
                // SAFETY: CMSG_DATA points at `n` ints inside the control buffer.
                let fd = unsafe { (libc::CMSG_DATA(c) as *const i32).add(i).read_unaligned() };
                // SAFETY: the peek installed this fd in ckpt; nothing else owns it.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        } else if h.cmsg_level == libc::SOL_SOCKET
            && h.cmsg_type == libc::SCM_CREDENTIALS
            && h.cmsg_len as usize >= CREDS_LEN
        {
            // SAFETY: CMSG_DATA points at a struct ucred inside the control buffer (its
            // length checked above).
            let c = unsafe { (libc::CMSG_DATA(c) as *const libc::ucred).read_unaligned() };
            creds = Some((c.pid, c.uid, c.gid));
        } else if h.cmsg_level == libc::SOL_SOCKET && RECEIVE_TIME.contains(&h.cmsg_type) {
            // The time the message arrived (SO_TIMESTAMP*): a property of the receipt,
            // which the restore's refill renews; nothing to keep.
        } else if problem.is_none() {
            problem = Some(PeekProblem::Control(h.cmsg_type));
        }
        // SAFETY: as above.
        c = unsafe { libc::CMSG_NXTHDR(m, c) };
    }
    if m.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(PeekProblem::Rights);
    }
    match problem {
        Some(p) => Err(p),
        None => Ok((fds, creds)),
    }
}

/// The length of an SCM_CREDENTIALS header with its struct ucred.
// SAFETY: CMSG_LEN is a constant computation.
const CREDS_LEN: usize =
    unsafe { libc::CMSG_LEN(std::mem::size_of::<libc::ucred>() as u32) } as usize;

/// Sends `data` with the files `fds` in flight (SCM_RIGHTS) as one message (to `to`, or
/// to the peer when empty; a stream may take the bytes in several writes: the fds go
/// with the first).
pub fn send_with_fds(fd: BorrowedFd<'_>, data: &[u8], to: &[u8], fds: &[i32]) -> Result<()> {
    send_message(fd, data, to, fds, None)
}

/// As `send_with_fds`, with credentials (pid, uid, gid) attached too (SCM_CREDENTIALS:
/// the pid must exist in the caller's pid namespace; another than the caller's, and
/// other ids than its own, need CAP_SYS_ADMIN, CAP_SETUID, CAP_SETGID).
pub fn send_message(
    fd: BorrowedFd<'_>,
    data: &[u8],
    to: &[u8],
    fds: &[i32],
    creds: Option<(i32, u32, u32)>,
) -> Result<()> {
    if fds.is_empty() && creds.is_none() {
        return send(fd, data, to);
    }
    let space = std::mem::size_of_val(fds) as u32;
    let cspace = std::mem::size_of::<libc::ucred>() as u32;
    // SAFETY: CMSG_SPACE is a constant computation.
    let len = unsafe {
        (if fds.is_empty() {
            0
        } else {
            libc::CMSG_SPACE(space)
        }) + if creds.is_some() {
            libc::CMSG_SPACE(cspace)
        } else {
            0
        }
    } as usize;
    let mut ctl = vec![0u64; len.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; all zeroes is a valid value.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_iov = &mut iov;
    m.msg_iovlen = 1;
    m.msg_control = ctl.as_mut_ptr().cast();
    m.msg_controllen = len;
    let mut sa = None;
    if !to.is_empty() {
        let (a, alen) = addr_of(to)?;
        let a = sa.insert(a);
        m.msg_name = (a as *mut libc::sockaddr_un).cast();
        m.msg_namelen = alen;
    }
    // SAFETY: the control buffer holds CMSG_SPACE(space) bytes for `fds` (if any) and
    // CMSG_SPACE(cspace) for the credentials (if any), in that order: each header written
    // is inside it (CMSG_FIRSTHDR/NXTHDR over msg_controllen).
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&m);
        if !fds.is_empty() {
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(space) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(c) as *mut i32, fds.len());
            c = libc::CMSG_NXTHDR(&m, c);
        }
        if let Some((pid, uid, gid)) = creds {
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_CREDENTIALS;
            (*c).cmsg_len = libc::CMSG_LEN(cspace) as usize;
            let u = libc::ucred { pid, uid, gid };
            (libc::CMSG_DATA(c) as *mut libc::ucred).write_unaligned(u);
        }
    }
    // SAFETY: every pointer in `m` points at a live buffer of the length it states; the
    // kernel only reads them.
    let r = unsafe { libc::sendmsg(fd.as_raw_fd(), &m, libc::MSG_NOSIGNAL) };
    let n = Errno::result(r).ctx(|| "sendmsg(SCM_RIGHTS/SCM_CREDENTIALS)".into())? as usize;
    if n < data.len() {
        send(fd, &data[n..], &[])?;
    }
    Ok(())
}

/// socket(AF_UNIX, ty), non-blocking and close-on-exec (a restore sets its flags later).
pub fn new(ty: i32) -> Result<OwnedFd> {
    // SAFETY: socket takes no pointers.
    let r = unsafe {
        libc::socket(
            libc::AF_UNIX,
            ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    let fd = Errno::result(r).ctx(|| format!("socket(AF_UNIX, {ty})"))?;
    // SAFETY: socket returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// socketpair(AF_UNIX, ty), both ends non-blocking and close-on-exec.
pub fn pair(ty: i32) -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: the kernel writes two ints into `fds`.
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
            fds.as_mut_ptr(),
        )
    };
    Errno::result(r).ctx(|| format!("socketpair(AF_UNIX, {ty})"))?;
    // SAFETY: socketpair returned two fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A socketpair whose ends replace fds `a` and `b` (dup3, close-on-exec; both ends stay
/// non-blocking): for a caller that must make it in another task sharing its fd table.
pub fn pair_at(ty: i32, a: i32, b: i32) -> Result<()> {
    let (x, y) = pair(ty)?;
    for (from, to) in [(&x, a), (&y, b)] {
        // SAFETY: dup3 takes no pointers; `to` is an fd the caller holds for this.
        let r = unsafe { libc::dup3(from.as_raw_fd(), to, libc::O_CLOEXEC) };
        Errno::result(r).ctx(|| format!("dup3 to fd {to}"))?;
    }
    Ok(())
}

pub fn bind(fd: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    let (sa, len) = addr_of(name)?;
    // SAFETY: the kernel reads `len` bytes of `sa`.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    Errno::result(r).ctx(|| format!("bind {}", display(name)))?;
    Ok(())
}

/// connect(2) to `name`; a non-blocking stream connect that has to wait for room in the
/// listener's queue fails (EAGAIN) rather than block.
pub fn connect(fd: BorrowedFd<'_>, name: &[u8]) -> Result<()> {
    let (sa, len) = addr_of(name)?;
    // SAFETY: the kernel reads `len` bytes of `sa`.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    Errno::result(r).ctx(|| format!("connect {}", display(name)))?;
    Ok(())
}

pub fn listen(fd: BorrowedFd<'_>, backlog: i32) -> Result<()> {
    crate::socket::listen(fd, backlog)
}

/// accept4(2), close-on-exec and non-blocking.
pub fn accept(fd: BorrowedFd<'_>) -> Result<OwnedFd> {
    // SAFETY: null address pointers: the kernel writes no address.
    let r = unsafe {
        libc::accept4(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        )
    };
    let fd = Errno::result(r).ctx(|| "accept".into())?;
    // SAFETY: accept4 returned a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends all of `data` as one message (to `to`, or to the peer when empty); a stream
/// may take it in several writes. Never blocks (the socket is non-blocking).
pub fn send(fd: BorrowedFd<'_>, data: &[u8], to: &[u8]) -> Result<()> {
    let mut at = 0;
    loop {
        let rest = &data[at..];
        let r = if to.is_empty() {
            crate::socket::send(fd, rest, libc::MSG_NOSIGNAL)?
        } else {
            let (sa, len) = addr_of(to)?;
            // SAFETY: the kernel reads rest.len() bytes of `rest` and `len` of `sa`.
            let r = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL,
                    (&sa as *const libc::sockaddr_un).cast(),
                    len,
                )
            };
            Errno::result(r).ctx(|| format!("sendto {}", display(to)))? as usize
        };
        at += r;
        if at >= data.len() {
            return Ok(());
        }
    }
}

/// shutdown(2): SHUT_RD, SHUT_WR.
pub fn shutdown(fd: BorrowedFd<'_>, how: i32) -> Result<()> {
    // SAFETY: shutdown takes no pointers.
    let r = unsafe { libc::shutdown(fd.as_raw_fd(), how) };
    Errno::result(r).ctx(|| format!("shutdown({how})"))?;
    Ok(())
}

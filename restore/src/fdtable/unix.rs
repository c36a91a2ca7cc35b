//! Unix sockets: every socket of one object (all that were connected to each other, see
//! the dump's `fdtable/unix.rs`) is made here at once, in one seed, in this order:
//! 1. each socket: a socketpair() for two ends connected to each other only (or for one
//!    whose peer is closed: with a stand-in peer, closed at the end), else socket();
//!    its buffer sizes;
//! 2. bindings (a socket file at the path that is the dumped socket's own inode, or that
//!    nothing is bound to any more, is removed first; anything else there refuses the
//!    restore), mode and owner;
//! 3. listeners listen (room for every connection about to be made), then per listener
//!    its accepted connections (the client connects, the listener accepts), its queued
//!    connections in their order (left unaccepted), the backlog set back; a datagram
//!    socket connects to its peer's name;
//! 4. every receive queue is refilled by its peer (or by the message's sender), then
//!    shutdowns, then the stand-ins are closed; then SO_PASSCRED and the other options
//!    (a filter or SO_PASSCRED set before the refill would act on the refilled messages);
//! 5. SO_PEERCRED is compared with the image (the dump refused what this seed could not
//!    give), and each socket goes to its slot with its status flags and SO_PEEK_OFF.
//!
//! Each listen(), connect() and socketpair() runs under the effective uid and gid the
//! peers recorded in SO_PEERCRED (the kernel takes them from the caller at that moment).

use ckpt_images::pb;
use ckpt_sys::unix as u;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// What an image's unix socket record may hold.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let Some(s) = &d.unix else {
        return Err(format!(
            "description {}: a unix socket without its record",
            d.id
        ));
    };
    if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&s.r#type) {
        return Err(format!(
            "description {}: unix socket type {}",
            d.id, s.r#type
        ));
    }
    if ![u::ST_CONNECTED, u::ST_UNCONNECTED, u::ST_LISTEN]
        .iter()
        .any(|&st| st as u32 == s.state)
    {
        return Err(format!(
            "description {}: unix socket state {}",
            d.id, s.state
        ));
    }
    if let Some(o) = s.opts.iter().find(|o| o.level != libc::SOL_SOCKET) {
        return Err(format!(
            "description {}: a unix socket option of level {}",
            d.id, o.level
        ));
    }
    if s.name.len() >= 108 || s.peer_name.len() >= 108 {
        return Err(format!("description {}: a unix socket name too long", d.id));
    }
    if s.queue.len() != s.senders.len() && s.r#type != libc::SOCK_STREAM {
        return Err(format!(
            "description {}: queued messages without senders",
            d.id
        ));
    }
    if s.rights.len() > s.queue.len()
        || s.rights.iter().any(|r| {
            r.message as usize >= s.queue.len() || r.descs.is_empty() || r.descs.len() > 253
        })
    {
        return Err(format!(
            "description {}: files in flight with no message, or too many",
            d.id
        ));
    }
    let bytes: usize = s.queue.iter().map(Vec::len).sum();
    if bytes > 64 << 20 {
        return Err(format!("description {}: {bytes} queued bytes", d.id));
    }
    Ok(())
}

/// The sockets of one object, by their dump-time inode.
struct Made<'a> {
    recs: HashMap<u64, &'a pb::UnixSocket>,
    socks: HashMap<u64, OwnedFd>,
    /// Stand-in peers of sockets whose peer was closed, closed once the queues are full.
    standins: HashMap<u64, OwnedFd>,
    /// Description -> the slot of a file in flight.
    in_flight: HashMap<u64, RawFd>,
    /// Description -> inode of the sockets of this object (one may be in flight in a
    /// queue of the object: sent from where it is made, its slot is not filled yet).
    own: HashMap<u64, u64>,
}

impl Made<'_> {
    fn fd(&self, ino: u64) -> Result<BorrowedFd<'_>, String> {
        self.socks
            .get(&ino)
            .map(|f| f.as_fd())
            .ok_or_else(|| format!("socket:[{ino}] is not part of this object"))
    }
}

/// Makes the object whose descriptions are `descs` and puts each at its slot.
/// `in_flight`: the slots of the files its queues send again (SCM_RIGHTS).
pub fn create(descs: &[(pb::FileDesc, RawFd)], in_flight: &[(u64, RawFd)]) -> Result<(), String> {
    let mut m = Made {
        recs: HashMap::new(),
        socks: HashMap::new(),
        standins: HashMap::new(),
        in_flight: in_flight.iter().copied().collect(),
        own: HashMap::new(),
    };
    for (d, _) in descs {
        let s = d.unix.as_ref().ok_or("no unix socket record")?;
        m.recs.insert(s.inode, s);
        m.own.insert(d.id, s.inode);
    }
    let mut order: Vec<&pb::UnixSocket> = m.recs.values().copied().collect();
    order.sort_by_key(|s| s.inode);
    // 1. The sockets.
    for s in &order {
        if m.socks.contains_key(&s.inode) {
            continue;
        }
        let mutual = (s.state == u::ST_CONNECTED as u32 && !s.accepted && s.listener == 0)
            .then(|| m.recs.get(&s.peer).copied())
            .flatten()
            .filter(|p| p.peer == s.inode && !p.accepted);
        if let Some(p) = mutual {
            let (a, b) = pair_as(s)?;
            m.socks.insert(s.inode, a);
            m.socks.insert(p.inode, b);
        } else if s.peer_closed && s.listener == 0 {
            let (a, b) = pair_as(s)?;
            m.socks.insert(s.inode, a);
            m.standins.insert(s.inode, b);
        } else if !s.accepted {
            m.socks
                .insert(s.inode, u::new(s.r#type).map_err(|e| e.to_string())?);
        }
    }
    for s in &order {
        if let Some(f) = m.socks.get(&s.inode) {
            options(f.as_fd(), s)?;
        }
    }
    // 2. Bindings (an accepted connection's name is its listener's).
    for s in order.iter().filter(|s| !s.name.is_empty() && !s.accepted) {
        bind(m.fd(s.inode)?, s)?;
    }
    // 3. Listeners and the connections through them; datagram peers.
    for l in order.iter().filter(|s| s.state == u::ST_LISTEN as u32) {
        let lfd = m.fd(l.inode)?;
        as_creds(l, || u::listen(lfd, 4096))?;
        let accepted: Vec<&pb::UnixSocket> = order
            .iter()
            .copied()
            .filter(|a| a.accepted && a.listener == l.inode)
            .collect();
        for a in accepted {
            // Its client closed (what is left to read stays): a stand-in client
            // connects, refills it and is closed at the end.
            let standin = if a.peer_closed || a.peer == 0 {
                Some(u::new(a.r#type).map_err(|e| e.to_string())?)
            } else {
                None
            };
            let c = match &standin {
                Some(s) => s.as_fd(),
                None => m.fd(a.peer)?,
            };
            as_creds(a, || u::connect(c, &l.name))?;
            let got = u::accept(m.fd(l.inode)?).map_err(|e| e.to_string())?;
            options(got.as_fd(), a)?;
            m.socks.insert(a.inode, got);
            if let Some(s) = standin {
                m.standins.insert(a.inode, s);
            }
        }
        for c in &l.queued {
            u::connect(m.fd(*c)?, &l.name).map_err(|e| e.to_string())?;
        }
        let closed: Vec<u64> = order
            .iter()
            .filter(|s| s.peer_closed && s.listener == l.inode)
            .map(|s| s.inode)
            .collect();
        for c in closed {
            u::connect(m.fd(c)?, &l.name).map_err(|e| e.to_string())?;
            let standin = u::accept(m.fd(l.inode)?).map_err(|e| e.to_string())?;
            m.standins.insert(c, standin);
        }
        let lfd = m.fd(l.inode)?;
        as_creds(l, || u::listen(lfd, l.backlog))?;
    }
    for s in order.iter().filter(|s| {
        s.r#type == libc::SOCK_DGRAM && s.state == u::ST_CONNECTED as u32 && !s.peer_name.is_empty()
    }) {
        let mutual = m.recs.get(&s.peer).is_some_and(|p| p.peer == s.inode);
        if !mutual {
            u::connect(m.fd(s.inode)?, &s.peer_name).map_err(|e| e.to_string())?;
        }
    }
    // 4. Queues, shutdowns, stand-ins.
    for s in &order {
        refill(&m, s)?;
    }
    for s in &order {
        if s.shutdown & u::SEND_SHUTDOWN as u32 != 0 && !s.peer_closed {
            u::shutdown(m.fd(s.inode)?, libc::SHUT_WR).map_err(|e| e.to_string())?;
        }
    }
    for s in &order {
        let peer_sent = m
            .recs
            .get(&s.peer)
            .is_some_and(|p| p.shutdown & u::SEND_SHUTDOWN as u32 != 0);
        if s.shutdown & u::RCV_SHUTDOWN as u32 != 0 && !s.peer_closed && !peer_sent {
            u::shutdown(m.fd(s.inode)?, libc::SHUT_RD).map_err(|e| e.to_string())?;
        }
    }
    m.standins.clear();
    for s in order.iter().filter(|s| s.passcred) {
        let on = ckpt_sys::socket::set_int(m.fd(s.inode)?, libc::SOL_SOCKET, libc::SO_PASSCRED, 1);
        on.map_err(|e| e.to_string())?;
    }
    for s in &order {
        for o in &s.opts {
            crate::net::set_option(m.fd(s.inode)?, o)?;
        }
    }
    // 5. Credentials, then the slots.
    for s in order.iter().filter(|s| s.peer_pid > 0) {
        let got = u::peer_cred(m.fd(s.inode)?).map_err(|e| e.to_string())?;
        if got != (s.peer_pid, s.peer_uid, s.peer_gid) {
            return Err(format!(
                "socket:[{}]: peer credentials pid {} uid {} gid {}, image pid {} uid {} gid {}",
                s.inode, got.0, got.1, got.2, s.peer_pid, s.peer_uid, s.peer_gid
            ));
        }
    }
    for (d, slot) in descs {
        let s = d.unix.as_ref().expect("checked above");
        let f = m.socks.remove(&s.inode).ok_or("a socket made twice")?;
        if s.peek_off >= 0 {
            ckpt_sys::socket::set_int(f.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, s.peek_off)
                .map_err(|e| e.to_string())?;
        }
        crate::seed::place_owned(f, *slot)?;
        let flags = OFlag::from_bits_retain(d.flags as i32) - OFlag::O_ACCMODE;
        fcntl(*slot, FcntlArg::F_SETFL(flags))
            .map_err(|e| format!("F_SETFL {:#o}: {e}", d.flags))?;
    }
    Ok(())
}

/// Runs `f` as the maker of the peer credentials `s` recorded (the kernel stamps the
/// caller's pid, euid and egid on the socket made): with that euid and egid and, when the
/// pid is not this seed's, in a short-lived helper forked with that pid and sharing this
/// seed's fd table (free now: the dump checked it is a descendant of this seed, forked
/// only later, or a process gone since; the kernel keeps reporting a pid after it exited).
fn as_creds(s: &pb::UnixSocket, f: impl FnOnce() -> ckpt_sys::Result<()>) -> Result<(), String> {
    let me = nix::unistd::getpid().as_raw();
    if s.peer_pid <= 0 || s.peer_pid == me {
        return as_ids(s, f);
    }
    in_helper_with_pid(s.peer_pid, || as_ids(s, f).map_err(ckpt_sys::Error::Other))
        .map_err(|e| format!("{e} (the peer credentials' pid)"))
}

/// Sends one queued message again, with its credentials if it had any: their pid exists
/// now (this seed or an ancestor's) or is a descendant's not forked yet, whose pid a
/// short-lived helper takes to send it (the dump refused any other).
fn send_with_creds(
    by: BorrowedFd<'_>,
    data: &[u8],
    to: &[u8],
    fds: &[RawFd],
    creds: Option<(i32, u32, u32)>,
) -> Result<(), String> {
    let send = || u::send_message(by, data, to, fds, creds);
    let Some((pid, _, _)) = creds else {
        return send().map_err(|e| e.to_string());
    };
    let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    if exists {
        return send().map_err(|e| e.to_string());
    }
    in_helper_with_pid(pid, send)
}

/// Runs `f` in a short-lived helper forked with pid `pid` (free now) and sharing this
/// seed's fd table.
fn in_helper_with_pid(pid: i32, f: impl FnOnce() -> ckpt_sys::Result<()>) -> Result<(), String> {
    let want = nix::unistd::Pid::from_raw(pid);
    let forked = ckpt_sys::process::fork_with_pid_sharing_files(want)
        .map_err(|e| format!("a helper with pid {pid}: {e}"))?;
    match forked {
        ckpt_sys::process::Forked::Child => {
            ckpt_sys::process::exit_now(if f().is_ok() { 0 } else { 1 })
        }
        ckpt_sys::process::Forked::Parent(p) => match nix::sys::wait::waitpid(p, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
            Ok(st) => Err(format!("the helper with pid {p} failed: {st:?}")),
            Err(e) => Err(format!("waiting for the helper with pid {p}: {e}")),
        },
    }
}

/// Runs `f` with the effective uid and gid of `s`'s peer credentials, the seed's own
/// again after (root, or in a container's user namespace its root or ckpt's ids there;
/// the peer's are the ids inside then, `userns::inside`).
fn as_ids(s: &pb::UnixSocket, f: impl FnOnce() -> ckpt_sys::Result<()>) -> Result<(), String> {
    use nix::unistd::{getegid, geteuid, setegid, seteuid, Gid, Uid};
    let (euid, egid) = (geteuid(), getegid());
    let switch = s.peer_pid > 0 && (s.peer_uid != euid.as_raw() || s.peer_gid != egid.as_raw());
    if switch {
        setegid(Gid::from_raw(s.peer_gid)).map_err(|e| format!("setegid: {e}"))?;
        seteuid(Uid::from_raw(s.peer_uid)).map_err(|e| format!("seteuid: {e}"))?;
    }
    let r = f();
    if switch {
        seteuid(euid).map_err(|e| format!("seteuid({euid}): {e}"))?;
        setegid(egid).map_err(|e| format!("setegid({egid}): {e}"))?;
    }
    r.map_err(|e| e.to_string())
}

/// A socketpair made as `s`'s peer credentials say (in a helper, its ends land on two
/// fd numbers this seed holds for them).
fn pair_as(s: &pb::UnixSocket) -> Result<(OwnedFd, OwnedFd), String> {
    let a = u::new(s.r#type).map_err(|e| e.to_string())?;
    let b = u::new(s.r#type).map_err(|e| e.to_string())?;
    let (ra, rb) = (a.as_raw_fd(), b.as_raw_fd());
    as_creds(s, || u::pair_at(s.r#type, ra, rb))?;
    Ok((a, b))
}

/// Buffer sizes the program set (through the FORCE variants: the kernel doubles what it is
/// given, and the dump read the doubled value). SO_PASSCRED comes after the queues are
/// refilled: on either end it would attach the seed's credentials to every message.
fn options(fd: BorrowedFd<'_>, s: &pb::UnixSocket) -> Result<(), String> {
    use ckpt_sys::socket::{set_int, SO_RCVBUFFORCE, SO_SNDBUFFORCE};
    let e = |e: ckpt_sys::Error| e.to_string();
    if s.sndbuf > 0 {
        set_int(fd, libc::SOL_SOCKET, SO_SNDBUFFORCE, s.sndbuf / 2).map_err(e)?;
    }
    if s.rcvbuf > 0 {
        set_int(fd, libc::SOL_SOCKET, SO_RCVBUFFORCE, s.rcvbuf / 2).map_err(e)?;
    }
    Ok(())
}

/// Binds `fd` to the name of `s`; a path is taken only if free or still the dumped
/// socket's own file (left behind when the dumped process was killed).
fn bind(fd: BorrowedFd<'_>, s: &pb::UnixSocket) -> Result<(), String> {
    let path = (s.name[0] != 0).then(|| String::from_utf8_lossy(&s.name).into_owned());
    if let Some(path) = &path {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() && (m.ino() == s.file_ino || stale(s)) => {
                std::fs::remove_file(path)
                    .map_err(|e| format!("removing the old socket file {path}: {e}"))?;
            }
            Ok(m) => {
                let what = if m.file_type().is_socket() {
                    "a socket something is bound to"
                } else {
                    "not a socket file"
                };
                return Err(format!(
                    "{path} is taken by something else ({what}, inode {}; the dumped \
                     socket's file was inode {}); remove it to restore the socket bound there",
                    m.ino(),
                    s.file_ino
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{path}: {e}")),
        }
    }
    u::bind(fd, &s.name).map_err(|e| e.to_string())?;
    if let Some(path) = &path {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(s.file_mode))
            .map_err(|e| format!("chmod {path}: {e}"))?;
        std::os::unix::fs::lchown(path, Some(s.file_uid), Some(s.file_gid))
            .map_err(|e| format!("chown {path}: {e}"))?;
    }
    Ok(())
}

/// Whether the socket file at `s`'s path is left over with nothing bound to it (a
/// connect() of a socket of the same type is refused), as a killed program or a failed
/// restore leaves it.
fn stale(s: &pb::UnixSocket) -> bool {
    let Ok(probe) = u::new(s.r#type) else {
        return false;
    };
    matches!(
        u::connect(probe.as_fd(), &s.name).map_err(|e| e.errno()),
        Err(Some(nix::errno::Errno::ECONNREFUSED))
    )
}

/// Puts the unread messages of `s` back into its receive queue, each sent again by its
/// peer or, for a datagram with a named sender, by that sender.
fn refill(m: &Made, s: &pb::UnixSocket) -> Result<(), String> {
    if s.queue.is_empty() {
        return Ok(());
    }
    let peer = m.standins.get(&s.inode).map(|f| f.as_fd()).or_else(|| {
        m.recs
            .get(&s.peer)
            .filter(|p| p.peer == s.inode || p.state == u::ST_CONNECTED as u32)
            .and_then(|p| m.socks.get(&p.inode))
            .map(|f| f.as_fd())
    });
    // An unnamed sender of datagrams to a named socket: any unnamed socket will do.
    let temp = if peer.is_none() && !s.name.is_empty() {
        Some(u::new(libc::SOCK_DGRAM).map_err(|e| e.to_string())?)
    } else {
        None
    };
    for (i, data) in s.queue.iter().enumerate() {
        let from = s.senders.get(i).map(Vec::as_slice).unwrap_or(&[]);
        let (by, to): (BorrowedFd<'_>, &[u8]) = if s.r#type != libc::SOCK_DGRAM || from.is_empty() {
            match (peer, &temp) {
                (Some(p), _) => (p, &[]),
                (None, Some(t)) => (t.as_fd(), &s.name),
                (None, None) => {
                    return Err(format!(
                        "socket:[{}]: {} queued messages and no peer to send them",
                        s.inode,
                        s.queue.len()
                    ))
                }
            }
        } else {
            let sender = m
                .recs
                .values()
                .find(|o| o.name == from && !o.accepted)
                .ok_or_else(|| {
                    format!(
                        "socket:[{}]: a queued datagram from {}, which is not in the tree",
                        s.inode,
                        u::display(from)
                    )
                })?;
            let to: &[u8] = if sender.peer == s.inode { &[] } else { &s.name };
            (m.fd(sender.inode)?, to)
        };
        let rights = s.rights.iter().find(|r| r.message as usize == i);
        let creds = s
            .creds
            .iter()
            .find(|c| c.message as usize == i)
            .map(|c| (c.pid, c.uid, c.gid));
        let sent = match rights {
            None => send_with_creds(by, data, to, &[], creds),
            Some(r) => {
                let fds = r
                    .descs
                    .iter()
                    .map(|id| {
                        if let Some(ino) = m.own.get(id) {
                            return Ok(m.fd(*ino)?.as_raw_fd());
                        }
                        m.in_flight.get(id).copied().ok_or_else(|| {
                            format!(
                                "socket:[{}]: description {id} in flight has no slot",
                                s.inode
                            )
                        })
                    })
                    .collect::<Result<Vec<RawFd>, String>>()?;
                send_with_creds(by, data, to, &fds, creds)
            }
        };
        sent.map_err(|e| {
            format!(
                "socket:[{}]: putting back {} queued bytes: {e}",
                s.inode,
                data.len()
            )
        })?;
    }
    Ok(())
}

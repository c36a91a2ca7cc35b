//! Sockets of the network: TCP (listening, unconnected, connected with
//! `--tcp-established`: established or half closed, and ended but not closed) and UDP,
//! over IPv4 and IPv6, in ckpt's own network namespace or in the container's (the
//! namespace of the process holding it, when that is not ckpt's: `container.rs` allows
//! only the root's own), and netlink and packet sockets. Looked at through ckpt's own copy of each
//! socket (pidfd_getfd), never through the process. Every other socket (raw,
//! another netns) is refused, named by `describe.rs` (unix sockets: `fdtable/unix.rs`).
//!
//! - `netlink`: netlink sockets (route, uevent, generic), with nothing queued;
//! - `packet`: packet sockets without rings, fanout or filter, with nothing queued;
//! - `options`: the options to set back;
//! - `mcast`: the multicast groups a UDP socket joined, with their source filters;
//! - `tcp`: an established connection through TCP_REPAIR;
//! - `seal`: a killed container's namespace cut off before it is dismantled;
//! - `unkept`: state the kernel does not give back (refused by name).

mod mcast;
pub mod netlink;
pub(crate) mod options;
pub mod packet;
mod seal;
mod tcp;
pub(crate) mod unkept;

use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::socket as s;
use ckpt_sys::Pid;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicBool, Ordering};

/// `--tcp-established`: whether established TCP connections are dumped (through
/// TCP_REPAIR, locked with nftables) or refused. Process-wide, set by the caller of a dump
/// or a check before it starts: every check of every fd reads it.
static TCP_ESTABLISHED: AtomicBool = AtomicBool::new(false);

pub fn allow_established(on: bool) {
    TCP_ESTABLISHED.store(on, Ordering::Relaxed);
}

fn established_allowed() -> bool {
    TCP_ESTABLISHED.load(Ordering::Relaxed)
}

/// Whether the dump locks the tree's listening ports: with `--tcp-established` (whose
/// lock already stays until the restore), for a dump that kills the tree for a restore on
/// this host; not one that leaves it running, nor a migration's (its restore is
/// elsewhere: the source's port would stay locked). Without the flag a client connecting
/// meanwhile is refused (or reset) and connects again; with it, it waits (its SYN is
/// retransmitted). Set like `allow_established`.
static LOCK_LISTENERS: AtomicBool = AtomicBool::new(false);

pub fn lock_listeners(on: bool) {
    LOCK_LISTENERS.store(on, Ordering::Relaxed);
}

/// The inode of ckpt's network namespace, read once: /proc/self/ns/net is the main
/// thread's, which only enters another one for a moment at restore (`ckpt_sys::ns`), never
/// while a dump looks at sockets.
pub fn own_netns() -> Result<u64, String> {
    static OWN: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    if let Some(&ino) = OWN.get() {
        return Ok(ino);
    }
    let ino = s::own_netns_inode().map_err(|e| e.to_string())?;
    Ok(*OWN.get_or_init(|| ino))
}

/// The inode of the network namespace of socket `ino`, ckpt's copy `sock` of it: asked
/// once per socket (SIOCGSKNS opens the namespace: three syscalls), as a unix socket was
/// asked three times per fd (the check before the seize, the one after, the record). A
/// socket never changes namespace, and socket inode numbers are not reused before the
/// kernel's 32-bit counter wraps (0: not known, not kept).
pub fn socket_netns(sock: std::os::fd::BorrowedFd<'_>, ino: u64) -> Result<u64, String> {
    thread_local! {
        static SEEN: std::cell::RefCell<std::collections::HashMap<u64, u64>> =
            Default::default();
    }
    if let Some(ns) = SEEN.with(|c| c.borrow().get(&ino).copied()) {
        return Ok(ns);
    }
    let ns = s::netns_inode(sock).map_err(|e| e.to_string())?;
    if ino != 0 {
        SEEN.with(|c| c.borrow_mut().insert(ino, ns));
    }
    Ok(ns)
}

/// A socket of the network, as ckpt saw it through its copy (`look_at`).
#[derive(Clone)]
struct Inet {
    family: i32,
    ty: i32,
    protocol: i32,
    /// TCP: tcp_info's state; UDP: 0.
    state: u8,
    info: s::TcpInfo,
    /// In the container's network namespace (the holder's), not ckpt's.
    in_container: bool,
}

/// Whether socket `sock` of `pid` lives in a container's network namespace (Ok(true):
/// restored in the container's fresh namespace) or in ckpt's (Ok(false)). It must be in
/// its holder's namespace (where the restore makes it again); one of any other (made
/// before a setns, or passed in from outside) is refused.
pub fn container_socket(pid: Pid, sock: std::os::fd::BorrowedFd<'_>) -> Result<bool, String> {
    let here = own_netns()?;
    let ns = s::netns_inode(sock).map_err(|e| e.to_string())?;
    let path = format!("/proc/{pid}/ns/net");
    let theirs = nix::sys::stat::stat(path.as_str())
        .map_err(|e| format!("{path}: {e}"))?
        .st_ino;
    if ns != theirs {
        return Err(format!(
            "a socket of another network namespace (net:[{ns}]) than its process's \
             (net:[{theirs}]); not supported yet"
        ));
    }
    Ok(ns != here)
}

/// What a socket fd of `pid` is: Ok(None) if it is not TCP or UDP over IP (describe.rs
/// names it), Err(why) if it is one that cannot be dumped.
fn look(pid: Pid, fd: i32) -> Result<Option<(OwnedFd, Inet)>, String> {
    let sock = ckpt_sys::process::steal_fd(pid, fd).map_err(|e| e.to_string())?;
    let kind = s::kind(sock.as_fd()).map_err(|e| e.to_string())?;
    Ok(look_at(pid, sock.as_fd(), kind)?.map(|i| (sock, i)))
}

/// `look`, on ckpt's copy `sock` of a socket of `pid` whose SO_DOMAIN, SO_TYPE and
/// SO_PROTOCOL are `kind`.
fn look_at(
    pid: Pid,
    sock: std::os::fd::BorrowedFd<'_>,
    kind: (i32, i32, i32),
) -> Result<Option<Inet>, String> {
    let (family, ty, protocol) = kind;
    if family != libc::AF_INET && family != libc::AF_INET6 {
        return Ok(None);
    }
    let tcp = ty == libc::SOCK_STREAM && protocol == libc::IPPROTO_TCP;
    let udp = ty == libc::SOCK_DGRAM && protocol == libc::IPPROTO_UDP;
    if !tcp && !udp {
        return Err(format!(
            "an IP socket of type {ty} protocol {protocol}; only TCP and UDP are supported"
        ));
    }
    let in_container = container_socket(pid, sock)?;
    let info = if tcp {
        s::tcp_info(sock).map_err(|e| e.to_string())?
    } else {
        s::TcpInfo::default()
    };
    if tcp {
        match info.state {
            s::TCP_CLOSE if info.segs > 0 && s::error_pending(sock).unwrap_or(true) => {
                // Reset or timed out, its error (ECONNRESET, ETIMEDOUT...) waiting for
                // the program's next call: SO_ERROR would read (and clear) it.
                return Err(
                    "a TCP connection that ended with an error the program has not read \
                     yet (state CLOSE, poll says POLLERR); not supported yet"
                        .into(),
                );
            }
            // Ended (tcp_done), not closed yet: taken as a connection ended by FINs.
            s::TCP_LISTEN | s::TCP_CLOSE => {}
            st if (s::tcp_connected(st) || st == s::TCP_SYN_SENT) && established_allowed() => {}
            st if s::tcp_connected(st) || st == s::TCP_SYN_SENT => {
                let what = if st == s::TCP_SYN_SENT {
                    "a TCP connection being made"
                } else {
                    "an established TCP connection"
                };
                return Err(format!(
                    "{what} (state {}); dump with --tcp-established to take it along (its \
                     packets are dropped by an nftables rule until the restore)",
                    s::tcp_state_name(st)
                ));
            }
            st => {
                return Err(format!(
                    "a TCP connection in state {} (include/net/tcp_states.h); only \
                     listening, unconnected, connecting (SYN_SENT), connected (established \
                     or half closed) and ended TCP sockets are supported",
                    s::tcp_state_name(st)
                ))
            }
        }
        if info.state == s::TCP_LISTEN && info.unacked > 0 {
            return Err(format!(
                "a listening socket with {} connections not accepted yet; they cannot be \
                 restored (accept them first)",
                info.unacked
            ));
        }
        if info.state == s::TCP_LISTEN {
            let half = unkept::half_open(pid, sock, in_container)?;
            if half > 0 {
                return Err(format!(
                    "a listening socket with {half} connections half open (SYN_RECV: the \
                     handshake's last ACK not arrived yet); a restored listener would answer \
                     their ACKs with a reset. Retry the dump once they are accepted"
                ));
            }
        }
    }
    unkept::classic_filter_only(sock)?;
    if tcp {
        unkept::tcp(pid, sock, info.state, in_container)?;
    } else {
        unkept::udp(sock)?;
    }
    Ok(Some(Inet {
        family,
        ty,
        protocol,
        state: info.state,
        info,
        in_container,
    }))
}

/// What a `socket:[N]` fd of `pid` is, looked at once through ckpt's copy of it (one
/// pidfd_getfd and one SO_DOMAIN/SO_TYPE/SO_PROTOCOL for every family, where each family
/// took its own copy and read its own kind before): Ok(Some(kind)) a socket the dump can
/// take, Ok(None) one of no family ckpt knows (describe.rs names it), Err(why) one that
/// is refused.
pub fn socket_kind(pid: Pid, fd: i32, ino: u64) -> Result<Option<Seen>, String> {
    let sock = ckpt_sys::process::steal_fd(pid, fd).map_err(|e| e.to_string())?;
    let kind = s::kind(sock.as_fd()).map_err(|e| e.to_string())?;
    let mut inet = None;
    let found = match kind.0 {
        libc::AF_INET | libc::AF_INET6 => {
            inet = look_at(pid, sock.as_fd(), kind)?;
            inet.as_ref().map(|_| pb::FdKind::FdInetSocket)
        }
        libc::AF_UNIX => {
            crate::fdtable::unix::check(pid, sock.as_fd(), kind.1, ino)?;
            Some(pb::FdKind::FdUnixSocket)
        }
        libc::AF_NETLINK => {
            netlink::check_at(pid, sock.as_fd(), kind.2)?;
            Some(pb::FdKind::FdNetlinkSocket)
        }
        libc::AF_PACKET => {
            packet::look_at(pid, sock.as_fd(), kind.1)?.map(|_| pb::FdKind::FdPacketSocket)
        }
        _ => None,
    };
    Ok(found.map(|kind| Seen { kind, sock, inet }))
}

/// A socket `socket_kind` found dumpable: its kind, ckpt's copy of it and, for TCP and
/// UDP, what the checks read. With the process stopped, the record is made from these
/// (the same copy for the unix record, the owner's fcntls and the inet record; the
/// checks of TCP and UDP not made twice): a unix socket of a socketpair took three
/// pidfd_getfd and two reads of its kind before.
pub struct Seen {
    pub kind: pb::FdKind,
    pub sock: OwnedFd,
    inet: Option<Inet>,
}

impl Seen {
    /// A TCP connection (being made, established, half closed or ended), said as "in
    /// state X"; None for a listening or unconnected TCP socket and for UDP.
    pub fn connection(&self) -> Option<String> {
        let i = self
            .inet
            .as_ref()
            .filter(|i| i.protocol == libc::IPPROTO_TCP)?;
        let ended = i.state == s::TCP_CLOSE && i.info.segs > 0;
        let open = i.state != s::TCP_LISTEN && i.state != s::TCP_CLOSE;
        (ended || open).then(|| format!("in state {}", s::tcp_state_name(i.state)))
    }
}

/// The network side of one dump: the connections it locked and put in repair mode,
/// switched back and unlocked unless the dump ends by killing their processes.
///
/// A connection of a container's own network namespace is locked inside that namespace:
/// the same nftables table in it, which dies with the namespace after the kill; the
/// restore keeps a veth's host end down until the connections are rebuilt
/// (`restore/src/netns.rs`).
pub struct Session {
    table: String,
    locked: bool,
    /// Network namespaces of containers (by inode) where the lock table was added, held
    /// open: after a kill, ckpt seals them (`seal.rs`) before it lets them go.
    inner: Vec<(u64, std::fs::File)>,
    /// ckpt's copies of the sockets in repair mode.
    repaired: Vec<OwnedFd>,
}

impl Session {
    /// For the dump of the tree rooted at `root`.
    pub fn new(root: Pid) -> Session {
        Session {
            table: ckpt_sys::nft::table_name(root.as_raw()),
            locked: false,
            inner: Vec::new(),
            repaired: Vec::new(),
        }
    }

    /// Locks connection `local`-`peer` of the container's network namespace `pid` is in:
    /// the nftables table inside that namespace. Even one holding only lo needs it: the
    /// two ends of a connection between processes of the container are read one after
    /// the other while the kernel's timers (retransmission, delayed ACK, window probes)
    /// still move bytes between them (measured: without it, a stream over the loopback
    /// of a loopback-only namespace stalled after a restore under load).
    fn lock_inside(
        &mut self,
        pid: Pid,
        local: SocketAddr,
        peer: SocketAddr,
    ) -> ckpt_sys::Result<()> {
        let ns = ckpt_sys::ns::open_namespace(pid, "net")?;
        let ino = ns
            .metadata()
            .map_err(|e| ckpt_sys::Error::io(format!("/proc/{pid}/ns/net"), e))?
            .ino();
        let at = match self.inner.iter().position(|(i, _)| *i == ino) {
            Some(at) => at,
            None => {
                self.inner.push((ino, ns));
                self.inner.len() - 1
            }
        };
        let table = &self.table;
        ckpt_sys::ns::in_namespace(&self.inner[at].1, &ns_name(ino), || {
            ckpt_sys::nft::lock(table, local, peer)
        })??;
        Ok(())
    }

    /// Locks listener `sock` bound to `local` (`nft::lock_listener`: its SYNs dropped
    /// until the restore has made it again), then asks again what the check before asked:
    /// a connection made between that check and the lock, accepted by the kernel and not
    /// by the stopped program, or one half open whose last ACK would still come through,
    /// would be reset by the kill. Refused then (the dump can be retried).
    fn lock_listener(
        &mut self,
        sock: std::os::fd::BorrowedFd<'_>,
        local: SocketAddr,
    ) -> Result<(), String> {
        ckpt_sys::nft::lock_listener(&self.table, local).map_err(|e| e.to_string())?;
        self.locked = true;
        let info = s::tcp_info(sock).map_err(|e| e.to_string())?;
        let requests = ckpt_sys::halfopen::requests().map_err(|e| e.to_string())?;
        let half = ckpt_sys::halfopen::count(&requests, local);
        if info.unacked > 0 || half > 0 {
            return Err(format!(
                "a listening socket with {} connections not accepted yet and {half} half                  open, made while the dump stopped the tree; they cannot be restored                  (retry the dump)",
                info.unacked
            ));
        }
        Ok(())
    }

    /// The record of socket fd `fd` of the stopped process `pid` (once per socket: the fd
    /// table shares it between every fd and process holding it).
    /// `seen`: what `socket_kind` found of it with the process stopped, if it was asked.
    pub fn collect(
        &mut self,
        pid: Pid,
        fd: i32,
        inode: u64,
        seen: Option<&Seen>,
    ) -> Result<pb::InetSocket, DumpError> {
        let named = |why: String| refuse(format!("pid {pid}: fd {fd} (socket:[{inode}]): {why}"));
        let looked;
        let (sock, inet) = match seen {
            Some(Seen {
                sock,
                inet: Some(inet),
                ..
            }) => (sock.as_fd(), inet.clone()),
            _ => {
                looked = look(pid, fd)
                    .map_err(named)?
                    .ok_or_else(|| named("not a TCP or UDP socket".into()))?;
                (looked.0.as_fd(), looked.1.clone())
            }
        };
        let sys = |e: ckpt_sys::Error| named(e.to_string());
        let local = s::local_addr(sock).map_err(sys)?;
        let peer = s::peer_addr(sock).map_err(sys)?;
        let mut out = pb::InetSocket {
            family: inet.family,
            r#type: inet.ty,
            protocol: inet.protocol,
            state: inet.state as u32,
            local: if local.port() != 0 {
                local.to_string()
            } else {
                String::new()
            },
            peer: peer.map(|p| p.to_string()).unwrap_or_default(),
            opts: options::differing(sock, inet.family, inet.ty, inet.protocol).map_err(sys)?,
            ..Default::default()
        };
        if inet.protocol == libc::IPPROTO_UDP {
            out.opts
                .extend(mcast::memberships(pid, sock, inet.family).map_err(named)?);
            out.state = if peer.is_some() {
                s::TCP_ESTABLISHED as u32
            } else {
                s::TCP_CLOSE as u32
            };
            out.datagrams = datagrams(sock).map_err(sys)?;
            return Ok(out);
        }
        match inet.state {
            s::TCP_LISTEN => {
                out.backlog = inet.info.sacked as i32;
                // Not one in flight (no process of the tree listens on it meanwhile) nor
                // a container's (its namespace is cut off from outside).
                let held = pid.as_raw() != std::process::id() as i32;
                if LOCK_LISTENERS.load(Ordering::Relaxed) && held && !inet.in_container {
                    self.lock_listener(sock, local).map_err(named)?;
                    out.lock_table = self.table.clone();
                }
            }
            st if s::tcp_connected(st)
                || st == s::TCP_SYN_SENT
                || (st == s::TCP_CLOSE && inet.info.segs > 0) =>
            {
                let ended = st == s::TCP_CLOSE;
                // getpeername answers ENOTCONN once the connection has ended, and while it
                // is being made (SYN_SENT); SO_PEERNAME still does, unless it was
                // restored (an ended one's peer is not needed then).
                let peer = if ended {
                    let unknown = SocketAddr::new(local.ip(), 0);
                    Some(s::peer_name(sock).map_err(sys)?.unwrap_or(unknown))
                } else if st == s::TCP_SYN_SENT {
                    s::peer_name(sock).map_err(sys)?
                } else {
                    peer
                };
                let peer = peer.ok_or_else(|| named("connected but has no peer".into()))?;
                out.peer = peer.to_string();
                // An ended connection sends and receives nothing: no lock.
                if !ended && inet.in_container {
                    self.lock_inside(pid, local, peer).map_err(sys)?;
                } else if !ended {
                    ckpt_sys::nft::lock(&self.table, local, peer).map_err(sys)?;
                    self.locked = true;
                    out.lock_table = self.table.clone();
                }
                s::set_int(sock, s::SOL_TCP, s::TCP_REPAIR, s::TCP_REPAIR_ON).map_err(sys)?;
                // Kept until the dump ends (a dup of the copy: one syscall).
                let kept = sock
                    .try_clone_to_owned()
                    .map_err(|e| named(format!("dup of ckpt's copy: {e}")))?;
                self.repaired.push(kept);
                let sock = self.repaired.last().expect("just pushed").as_fd();
                // Read again now that nothing moves it (locked, in repair mode): an
                // acknowledgement or a FIN may have come since (FIN_WAIT1 to FIN_WAIT2,
                // LAST_ACK to CLOSE...), and the FINs are recorded by the state.
                let now = s::tcp_info(sock).map_err(sys)?.state;
                if now == s::TCP_CLOSE && !ended && s::error_pending(sock).unwrap_or(true) {
                    return Err(named(
                        "a TCP connection reset during the dump (state CLOSE, poll says \
                         POLLERR)"
                            .into(),
                    ));
                }
                if !s::tcp_connected(now) && now != s::TCP_CLOSE && now != s::TCP_SYN_SENT {
                    return Err(named(format!(
                        "a TCP connection in state {} during the dump",
                        s::tcp_state_name(now)
                    )));
                }
                out.state = u32::from(now);
                out.tcp = Some(tcp::read(sock, now).map_err(sys)?);
                ckpt_sys::testhold::hold("tcp-repair", &|| false);
            }
            _ => {}
        }
        Ok(out)
    }

    /// The dump is over: killed processes took their connections along, silently (closed
    /// in repair mode), and the lock stays for the restore; a tree left running gets its
    /// connections back.
    pub fn finish(&mut self, killed: bool) -> Result<(), DumpError> {
        if killed {
            // The processes are dead; ckpt's copies of their connections and its fds of
            // their namespaces hold those namespaces (and the lock tables in them) until
            // the namespaces are cut off from outside.
            for (ino, ns) in self.inner.drain(..) {
                if let Err(e) = seal::seal(&ns, &ns_name(ino)) {
                    tracing::warn!("cutting off the dead container's network: {e}");
                }
            }
            self.repaired.clear();
            self.locked = false;
            return Ok(());
        }
        self.release().map_err(|e| refuse(e.to_string()))
    }

    /// Lets the connections go on: lock removed, then repair mode off (the window probe
    /// that sends reaches the peer).
    fn release(&mut self) -> ckpt_sys::Result<()> {
        let mut first = None;
        if self.locked {
            if let Err(e) = ckpt_sys::nft::unlock(&self.table) {
                first.get_or_insert(e);
            }
            self.locked = false;
        }
        for (ino, ns) in self.inner.drain(..) {
            let table = &self.table;
            let r = ckpt_sys::ns::in_namespace(&ns, &ns_name(ino), || ckpt_sys::nft::unlock(table));
            if let Err(e) = r.and_then(|r| r) {
                first.get_or_insert(e);
            }
        }
        for sock in self.repaired.drain(..) {
            if let Err(e) = s::set_int(sock.as_fd(), s::SOL_TCP, s::TCP_REPAIR, s::TCP_REPAIR_OFF) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Session {
    /// A failed dump: every connection as it was.
    fn drop(&mut self) {
        if let Err(e) = self.release() {
            tracing::warn!("putting TCP connections back: {e}");
        }
    }
}

/// `net:[INODE]`, for messages.
fn ns_name(ino: u64) -> String {
    format!("net:[{ino}]")
}

/// The datagrams queued on a UDP socket, oldest first, left in place: SO_PEEK_OFF makes
/// each MSG_PEEK move past the one before; the socket's own peek offset is put back.
fn datagrams(sock: std::os::fd::BorrowedFd<'_>) -> ckpt_sys::Result<Vec<pb::Datagram>> {
    if s::queued(sock, s::Queue::In)? == 0 {
        return Ok(Vec::new());
    }
    let before = s::get_int(sock, s::SOL_SOCKET, s::SO_PEEK_OFF)?;
    s::set_int(sock, s::SOL_SOCKET, s::SO_PEEK_OFF, 0)?;
    let mut out = Vec::new();
    let got = (|| {
        while let Some((from, data)) = s::peek_datagram(sock)? {
            out.push(pb::Datagram {
                from: from.to_string(),
                data,
            });
            if out.len() > 1 << 20 {
                return Err(ckpt_sys::Error::Other(
                    "more than a million queued datagrams".into(),
                ));
            }
        }
        Ok(())
    })();
    s::set_int(sock, s::SOL_SOCKET, s::SO_PEEK_OFF, before)?;
    got.map(|()| out)
}

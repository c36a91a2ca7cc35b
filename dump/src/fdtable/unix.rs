//! Unix sockets: each socket's own state through ckpt's copy of it (name, peer's name,
//! SO_PEERCRED, options, its receive queue peeked without draining), and how the sockets
//! hang together from the kernel's unix sock_diag table (read once per dump: peers,
//! the connections waiting in a listener's queue, queue lengths, the bound file,
//! shutdown). Once every process is read, `finish` links the tree's sockets into objects
//! (everything connected to each other is made at once by one seed), marks a socket whose
//! peer is outside the tree as external, and refuses, by name, what a restore could not
//! make again: objects carrying each other in flight round (SCM_RIGHTS; what flies is
//! described by `files::in_flight`), bytes sent on a connection not accepted yet,
//! a name no longer the socket's, peer credentials naming a pid that is alive when the
//! restore remakes the socket (an ancestor of its maker, another branch of the tree).

use super::{FdCtx, FdTable};
use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::unix as u;
use ckpt_sys::Pid;
use std::collections::{BTreeSet, HashMap};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// The unix side of one dump: the kernel's table and where each socket was met.
#[derive(Default)]
pub struct Unix {
    /// Network namespace inode -> its sock_diag table (ckpt's, a container's own).
    diag: HashMap<u64, HashMap<u64, u::Diag>>,
    /// Description id -> every pid holding it.
    pub holders: HashMap<u64, BTreeSet<i32>>,
    /// Description id -> the first (pid, fd) met holding it, for messages.
    first: HashMap<u64, (i32, i32)>,
    /// Socket inode -> bytes it sent that its peer has not read (sock_diag's wqueue).
    unsent: HashMap<u64, u32>,
    /// ckpt's copies of the files in flight (SCM_RIGHTS), open while the table is built.
    in_flight: Vec<std::os::fd::OwnedFd>,
    /// Description id of a file in flight -> ckpt's copy of it (its only holder at the
    /// dump when no process of the tree holds it: a terminal's bytes are read there).
    flying: HashMap<u64, i32>,
    /// (description in flight, the inode of the socket whose queue carries it).
    carriers: Vec<(u64, u64)>,
    /// Sockets being described (their inodes): one met in flight in its own queue, or in
    /// the queue of a socket it carries, is named once the table is complete (`pending`).
    describing: Vec<u64>,
    /// (carrier inode, index into its `rights`, position there, the socket in flight's
    /// inode), filled in by `finish`.
    pending: Vec<(u64, usize, usize, u64)>,
}

impl Unix {
    /// The first (pid, fd) met holding description `id` (a unix socket or a pty end).
    pub fn first_holder(&self, id: u64) -> Option<(i32, i32)> {
        self.first.get(&id).copied()
    }

    /// Description `id` is in flight in the queue of socket `carrier` (its inode); ckpt's
    /// copy of it is `fd`.
    pub fn flying(&mut self, id: u64, fd: i32, carrier: u64) {
        self.flying.entry(id).or_insert(fd);
        self.carriers.push((id, carrier));
    }

    /// ckpt's copy of description `id` if it is in flight.
    pub fn flying_fd(&self, id: u64) -> Option<i32> {
        self.flying.get(&id).copied()
    }

    /// Fd `fd` of `pid` holds description `id` (a unix socket or a pty end).
    pub fn held(&mut self, id: u64, pid: Pid, fd: i32) {
        self.holders.entry(id).or_default().insert(pid.as_raw());
        self.first.entry(id).or_insert((pid.as_raw(), fd));
    }
}

/// Whether ckpt's copy `sock` of unix socket `ino` of `pid`, of type `ty`, can be
/// dumped (Err: why not).
pub fn check(pid: Pid, sock: BorrowedFd<'_>, ty: i32, ino: u64) -> Result<(), String> {
    if ![libc::SOCK_STREAM, libc::SOCK_DGRAM, libc::SOCK_SEQPACKET].contains(&ty) {
        return Err(format!("a unix socket of type {ty}"));
    }
    // ckpt's network namespace, or the process's own (a container's, which the restore
    // makes again and where its seeds make the sockets).
    crate::net::unkept::classic_filter_only(sock)?;
    let ns = crate::net::socket_netns(sock, ino)?;
    if ns == crate::net::own_netns()? {
        return Ok(());
    }
    let theirs = ckpt_sys::ns::ns_id(pid, "net").map_err(|e| e.to_string())?;
    if theirs != format!("net:[{ns}]") {
        return Err(format!(
            "a unix socket of another network namespace (net:[{ns}]) than its process's; \
             not supported yet"
        ));
    }
    Ok(())
}

/// The record of the unix socket at `ctx` (once per description).
pub fn dump(ctx: &FdCtx, table: &mut FdTable) -> Result<pb::UnixSocket, DumpError> {
    table.unix.describing.push(ctx.inode.1);
    let r = dump_one(ctx, table);
    table.unix.describing.pop();
    r
}

fn dump_one(ctx: &FdCtx, table: &mut FdTable) -> Result<pb::UnixSocket, DumpError> {
    let (pid, fd, ino) = (ctx.pid, ctx.fd, ctx.inode.1);
    let named = |why: String| refuse(format!("pid {pid}: fd {fd} (socket:[{ino}]): {why}"));
    let sys = |e: ckpt_sys::Error| named(e.to_string());
    let stolen;
    let s = match ctx.sock {
        Some(s) => s,
        None => {
            stolen = ckpt_sys::process::steal_fd(pid, fd)?;
            stolen.as_fd()
        }
    };
    // The table of the socket's network namespace, read there once per dump.
    let ns = crate::net::socket_netns(s, ino).map_err(named)?;
    if let std::collections::hash_map::Entry::Vacant(e) = table.unix.diag.entry(ns) {
        e.insert(if ns == crate::net::own_netns().map_err(named)? {
            u::diag_all()?
        } else {
            ckpt_sys::ns::in_namespace_of(pid, "net", u::diag_all)??
        });
    }
    let d = table.unix.diag[&ns]
        .get(&ino)
        .cloned()
        .ok_or_else(|| named("not in the kernel's unix socket table (sock_diag)".into()))?;
    let int = |level, name| ckpt_sys::socket::get_int(s, level, name);
    let locks = int(libc::SOL_SOCKET, ckpt_sys::socket::SO_BUF_LOCK).map_err(sys)?;
    let (peer_pid, peer_uid, peer_gid) = u::peer_cred(s).map_err(sys)?;
    // A datagram socket that another connect()ed to shows as connected (for poll): only
    // its own peer makes it so here.
    let state = if d.ty == libc::SOCK_DGRAM as u8 && d.peer == 0 && d.state == u::ST_CONNECTED {
        u::ST_UNCONNECTED
    } else {
        d.state
    };
    let mut out = pb::UnixSocket {
        r#type: d.ty as i32,
        state: state as u32,
        inode: ino,
        name: u::name(s, false).map_err(sys)?,
        peer: d.peer,
        shutdown: d.shutdown as u32,
        peer_pid,
        peer_uid,
        peer_gid,
        sndbuf: if locks & 1 != 0 {
            int(libc::SOL_SOCKET, libc::SO_SNDBUF).map_err(sys)?
        } else {
            0
        },
        rcvbuf: if locks & 2 != 0 {
            int(libc::SOL_SOCKET, libc::SO_RCVBUF).map_err(sys)?
        } else {
            0
        },
        passcred: int(libc::SOL_SOCKET, libc::SO_PASSCRED).map_err(sys)? != 0,
        peek_off: int(libc::SOL_SOCKET, libc::SO_PEEK_OFF).map_err(sys)?,
        opts: crate::net::options::unix_differing(s, d.ty as i32).map_err(sys)?,
        ..Default::default()
    };
    if state == u::ST_CONNECTED {
        out.peer_name = u::name(s, true).map_err(sys)?;
    }
    if let Some(path) = out.name.first().filter(|&&c| c != 0).map(|_| &out.name) {
        let path = String::from_utf8_lossy(path).into_owned();
        if !path.starts_with('/') {
            return Err(named(format!(
                "bound to the relative path {path:?}; only absolute paths and abstract names \
                 are supported"
            )));
        }
        // As the process sees it (a container's root is not ckpt's).
        let meta = std::fs::symlink_metadata(format!("/proc/{pid}/root{path}"));
        match meta {
            Ok(m) if m.file_type().is_socket() && m.ino() == d.vfs_ino => {
                out.file_ino = m.ino();
                out.file_mode = m.mode() & 0o7777;
                out.file_uid = m.uid();
                out.file_gid = m.gid();
            }
            _ if d.vfs_ino == 0 => {}
            _ => {
                return Err(named(format!(
                    "bound to {path}, which no longer leads to it (the socket file was \
                     removed or replaced); it could not be bound there again"
                )))
            }
        }
    }
    if d.state == u::ST_LISTEN {
        out.backlog = d.wqueue as i32;
        out.queued = d.icons.clone();
        return Ok(out);
    }
    if d.rqueue > 0 || d.ty != libc::SOCK_STREAM as u8 {
        let q = u::peek_queue(s, d.ty == libc::SOCK_STREAM as u8).map_err(|p| match p {
            u::PeekProblem::Rights => named(
                "more file descriptors in flight (SCM_RIGHTS) with one message than a peek \
                 can take"
                    .into(),
            ),
            u::PeekProblem::Control(t) => named(format!(
                "messages with control data (type {t}: a security label or a pidfd, \
                 SO_PASSSEC or SO_PASSPIDFD) wait in its queue; not supported yet"
            )),
            u::PeekProblem::Sys(e) => named(e.to_string()),
        })?;
        for m in q {
            if !m.fds.is_empty() {
                let what = format!("pid {pid}: fd {fd} (socket:[{ino}])");
                let mut descs = Vec::with_capacity(m.fds.len());
                for f in m.fds {
                    use std::os::fd::AsRawFd;
                    let raw = f.as_raw_fd();
                    let at = (ino, out.rights.len(), descs.len());
                    table.unix.in_flight.push(f);
                    // Itself, or a socket whose queue carries it: named by `finish`.
                    if let Some(s) = being_described(raw, &table.unix.describing) {
                        table.unix.pending.push((at.0, at.1, at.2, s));
                        descs.push(0);
                        continue;
                    }
                    descs.push(crate::files::in_flight(raw, ino, table, &what)?);
                }
                out.rights.push(pb::InFlight {
                    message: out.queue.len() as u32,
                    descs,
                });
            }
            if let Some((pid, uid, gid)) = m.creds {
                // As ckpt sees them: `finish` checks the pid and turns it into the image's.
                out.creds.push(pb::QueuedCreds {
                    message: out.queue.len() as u32,
                    pid,
                    uid,
                    gid,
                });
            }
            out.senders.push(m.from);
            out.queue.push(m.data);
        }
    }
    if d.ty == libc::SOCK_STREAM as u8 {
        out.senders.clear();
    }
    table.unix.unsent.insert(ino, d.wqueue);
    Ok(out)
}

/// The inode of ckpt's fd `fd` if it is a socket among `describing`.
fn being_described(fd: i32, describing: &[u64]) -> Option<u64> {
    let m = std::fs::metadata(format!("/proc/self/fd/{fd}")).ok()?;
    (m.file_type().is_socket() && describing.contains(&m.ino())).then(|| m.ino())
}

/// How a socket of the tree reads in refusals.
fn what(d: &pb::FileDesc, first: &HashMap<u64, (i32, i32)>) -> String {
    let u = d.unix.as_ref().expect("a unix description");
    let ty = match u.r#type {
        libc::SOCK_STREAM => "stream",
        libc::SOCK_DGRAM => "dgram",
        _ => "seqpacket",
    };
    let name = if u.name.is_empty() {
        String::new()
    } else {
        format!(" {}", u::display(&u.name))
    };
    match first.get(&d.id) {
        Some((pid, fd)) => format!("pid {pid}: fd {fd} (unix {ty}{name}, socket:[{}])", u.inode),
        None => format!("a unix {ty} socket{name} in flight (socket:[{}])", u.inode),
    }
}

/// Once every process is read: objects, externals and the tree-wide refusals (see the
/// module doc). `parents`: pid -> parent pid, for who will make each object.
/// `image_pid`: a pid as the images hold it (a container's own view), for SO_PEERCRED.
pub fn finish(
    table: &mut FdTable,
    parents: &HashMap<i32, i32>,
    image_pid: &dyn Fn(i32) -> i32,
) -> Result<(), DumpError> {
    let ids = table.picked(|d| d.unix.is_some());
    if ids.is_empty() {
        return Ok(());
    }
    let by_ino: HashMap<u64, usize> = ids
        .iter()
        .map(|&i| (table.descs[i].unix.as_ref().expect("unix").inode, i))
        .collect();
    let sock = |t: &FdTable, i: usize| t.descs[i].unix.clone().expect("unix");
    let mut group = UnionFind::new(table.descs.len());
    let listeners: Vec<usize> = ids
        .iter()
        .copied()
        .filter(|&i| sock(table, i).state == u::ST_LISTEN as u32)
        .collect();
    for &i in &ids {
        let mut s = sock(table, i);
        let first = &table.unix.first;
        let refused = |why: String| refuse(format!("{}: {why}", what(&table.descs[i], first)));
        let unsent = table.unix.unsent.get(&s.inode).copied().unwrap_or(0);
        let stream = s.r#type != libc::SOCK_DGRAM;
        if s.state == u::ST_LISTEN as u32 {
            for c in &s.queued {
                let Some(&ci) = by_ino.get(c) else {
                    return Err(refused(format!(
                        "a connection from socket:[{c}], outside the dumped tree, waits in \
                         its queue (accept it first)"
                    )));
                };
                group.join(i, ci);
            }
        } else if !s.name.is_empty() && stream {
            // A connection's name is its listener's (accepted) or a binding of its own.
            let l = listeners
                .iter()
                .copied()
                .find(|&l| sock(table, l).name == s.name);
            match l {
                Some(l) if s.state == u::ST_CONNECTED as u32 => {
                    s.accepted = true;
                    s.listener = sock(table, l).inode;
                    group.join(i, l);
                }
                _ if s.state == u::ST_CONNECTED as u32 => {
                    return Err(refused(
                        "a connection named like a listening socket the tree no longer has \
                         open (or bound to a name of its own before connecting); not \
                         supported yet"
                            .into(),
                    ))
                }
                _ => {}
            }
        }
        // A datagram's named sender sends it again at restore: made with it.
        for from in s.senders.iter().filter(|f| !f.is_empty()) {
            let sender = ids
                .iter()
                .copied()
                .find(|&o| o != i && sock(table, o).name == *from);
            let Some(o) = sender else {
                return Err(refused(format!(
                    "a datagram from {}, which is not a socket of the dumped tree, waits \
                     in its queue (its sender's name could not be given back)",
                    u::display(from)
                )));
            };
            group.join(i, o);
        }
        if s.state == u::ST_CONNECTED as u32 && !s.accepted {
            if let Some(&pi) = by_ino.get(&s.peer).filter(|_| s.peer != 0) {
                let p = sock(table, pi);
                if !stream && p.peer != s.inode && s.peer_name.is_empty() {
                    return Err(refused(format!(
                        "connected to the unnamed datagram socket socket:[{}], which is not \
                         connected back; not supported",
                        p.inode
                    )));
                }
                group.join(i, pi);
            } else if s.peer != 0 {
                // The peer is outside the tree.
                if !stream && !s.peer_name.is_empty() {
                    // Connected to a named datagram socket (a log socket): connected
                    // again by name at restore.
                } else if !s.queue.is_empty() {
                    return Err(refused(format!(
                        "its peer socket:[{}] is outside the dumped tree, and {} bytes it \
                         sent wait unread here (they would be lost)",
                        s.peer,
                        s.queue.iter().map(Vec::len).sum::<usize>()
                    )));
                } else {
                    table.descs[i].external = format!("socket:[{}]", s.inode);
                }
            } else if let Some(&l) = listeners
                .iter()
                .find(|&&l| sock(table, l).queued.contains(&s.inode))
            {
                // Waiting in a listener's queue.
                if unsent > 0 {
                    return Err(refused(format!(
                        "{unsent} bytes sent on a connection not accepted yet; they cannot \
                         be put back (accept the connection first)"
                    )));
                }
                s.listener = sock(table, l).inode;
                group.join(i, l);
            } else if stream {
                s.peer_closed = true;
                if !s.peer_name.is_empty() {
                    let l = listeners
                        .iter()
                        .copied()
                        .find(|&l| sock(table, l).name == s.peer_name);
                    let Some(l) = l else {
                        return Err(refused(format!(
                            "its peer ({}) is closed, and no listening socket of that name \
                             is open in the tree to connect it again; not supported yet",
                            u::display(&s.peer_name)
                        )));
                    };
                    s.listener = sock(table, l).inode;
                    group.join(i, l);
                }
            } else {
                return Err(refused(
                    "a datagram socket connected to a socket that is gone; not supported yet"
                        .into(),
                ));
            }
        }
        table.descs[i].unix = Some(s);
    }
    let objects = holders_of_objects(table, &ids, &by_ino, &mut group)?;
    for (members, pids) in objects.values() {
        let object = members
            .iter()
            .map(|&i| sock(table, i).inode)
            .min()
            .unwrap_or(0);
        for &i in members {
            table.descs[i].object = object;
        }
        let pids: Vec<i32> = pids.iter().copied().collect();
        let maker = common_ancestor(&pids, parents);
        for &i in members.iter() {
            queued_creds(table, i, maker, parents, image_pid)?;
            let s = sock(table, i);
            // An external socket is the caller's at restore, credentials and all.
            let external = !table.descs[i].external.is_empty();
            if !creds_matter(&s) || external {
                continue;
            }
            // The seed of `maker` makes the socket: itself, or a helper with the pid
            // (free then: a descendant not forked yet, or a process gone since).
            let p = s.peer_pid;
            let later = p == maker || descends(p, maker, parents);
            let gone = !parents.contains_key(&p) && image_pid(p) != 0;
            if !later && !gone {
                return Err(refuse(format!(
                    "{}: its peer credentials (SO_PEERCRED) name pid {p}, which is alive \
                     when a restore remakes the socket (in pid {maker}, the common \
                     ancestor of its holders, or in a helper with the pid); not supported",
                    what(&table.descs[i], &table.unix.first),
                )));
            }
            if let Some(u) = table.descs[i].unix.as_mut() {
                u.peer_pid = image_pid(p);
            }
        }
    }
    Ok(())
}

/// Each object (by its union-find root) with its sockets and the processes a restore
/// hands it to: those holding its sockets and, for a socket in flight, those of the
/// object whose queue carries it (whose maker makes it: the common ancestor of the
/// union is the same). A socket in flight in a queue of its own object is sent by that
/// object itself; objects carrying each other round are refused (neither could be made
/// first). Sockets in flight in their own queue are named here (`Unix::pending`).
#[allow(clippy::type_complexity)]
fn holders_of_objects(
    table: &mut FdTable,
    ids: &[usize],
    by_ino: &HashMap<u64, usize>,
    group: &mut UnionFind,
) -> Result<HashMap<usize, (Vec<usize>, BTreeSet<i32>)>, DumpError> {
    for (carrier, r, at, flying) in std::mem::take(&mut table.unix.pending) {
        let id = table.descs[by_ino[&flying]].id;
        if let Some(u) = table.descs[by_ino[&carrier]].unix.as_mut() {
            u.rights[r].descs[at] = id;
        }
        table.unix.carriers.push((id, carrier));
    }
    let mut objects: HashMap<usize, (Vec<usize>, BTreeSet<i32>)> = HashMap::new();
    for &i in ids {
        let o = objects.entry(group.find(i)).or_default();
        o.0.push(i);
        let id = table.descs[i].id;
        o.1.extend(table.unix.holders.get(&id).into_iter().flatten());
    }
    // (object in flight, object carrying it), distinct objects only.
    let mut edges: Vec<(usize, usize)> = Vec::new();
    for &(id, carrier) in &table.unix.carriers {
        let f = id as usize - 1;
        if table.descs[f].unix.is_some() {
            let (a, b) = (group.find(f), group.find(by_ino[&carrier]));
            if a != b && !edges.contains(&(a, b)) {
                edges.push((a, b));
            }
        }
    }
    if let Some(&(a, _)) = edges.iter().find(|&&(a, _)| reaches(&edges, a, a)) {
        return Err(refuse(format!(
            "{}: unix sockets in flight in each other's queues (each would have to be made \
             before the other); not supported",
            what(&table.descs[a], &table.unix.first)
        )));
    }
    loop {
        let mut grew = false;
        for &(a, b) in &edges {
            let add: Vec<i32> = objects[&b].1.difference(&objects[&a].1).copied().collect();
            grew |= !add.is_empty();
            objects.get_mut(&a).expect("an object").1.extend(add);
        }
        if !grew {
            return Ok(objects);
        }
    }
}

/// The credentials of the messages queued at socket `i` (SCM_CREDENTIALS, seen with
/// SO_PASSCRED), made by `maker`'s seed at restore: the kernel takes a pid that exists
/// when the message is sent again, so it must be `maker`, an ancestor of it (alive
/// then), or a descendant (a helper with its pid sends the message before the process
/// is forked); a pid of another branch of the tree, or outside it, is refused. A
/// message with none attached (pid 0, the overflow ids) keeps none.
fn queued_creds(
    table: &mut FdTable,
    i: usize,
    maker: i32,
    parents: &HashMap<i32, i32>,
    image_pid: &dyn Fn(i32) -> i32,
) -> Result<(), DumpError> {
    const NOBODY: u32 = 65534;
    let Some(s) = table.descs[i].unix.as_ref().filter(|s| !s.creds.is_empty()) else {
        return Ok(());
    };
    let mut kept = Vec::with_capacity(s.creds.len());
    for c in &s.creds {
        let p = c.pid;
        let why = if p == 0 && c.uid == NOBODY && c.gid == NOBODY {
            continue;
        } else if p == 0 {
            "a pid not visible in ckpt's pid namespace".to_string()
        } else if !parents.contains_key(&p) {
            format!("pid {p}, outside the dumped tree")
        } else if p == maker || descends(p, maker, parents) || descends(maker, p, parents) {
            kept.push(pb::QueuedCreds {
                pid: image_pid(p),
                ..*c
            });
            continue;
        } else {
            format!(
                "pid {p}, of another branch of the tree than pid {maker}, which remakes the \
                 socket (the common ancestor of its holders)"
            )
        };
        return Err(refuse(format!(
            "{}: a queued message carries credentials (SO_PASSCRED) of {why}; they could \
             not be given again",
            what(&table.descs[i], &table.unix.first)
        )));
    }
    if let Some(s) = table.descs[i].unix.as_mut() {
        s.creds = kept;
    }
    Ok(())
}

/// Whether `to` is reachable from `from` by at least one edge.
fn reaches(edges: &[(usize, usize)], from: usize, to: usize) -> bool {
    let mut seen = vec![from];
    let mut next = vec![from];
    while let Some(n) = next.pop() {
        for &(_, b) in edges.iter().filter(|&&(a, _)| a == n) {
            if b == to {
                return true;
            }
            if !seen.contains(&b) {
                seen.push(b);
                next.push(b);
            }
        }
    }
    false
}

/// Whether `pid` is a descendant of `of` in the tree.
fn descends(mut pid: i32, of: i32, parents: &HashMap<i32, i32>) -> bool {
    let mut steps = 0;
    while let Some(&pp) = parents.get(&pid) {
        if pp == of {
            return true;
        }
        pid = pp;
        steps += 1;
        if steps > parents.len() {
            return false;
        }
    }
    false
}

/// Whether a socket's SO_PEERCRED carries a pid a restore must give back (the kernel sets
/// one by socketpair(), listen() and a stream connect(); else pid 0).
fn creds_matter(s: &pb::UnixSocket) -> bool {
    s.peer_pid > 0
}

fn common_ancestor(pids: &[i32], parents: &HashMap<i32, i32>) -> i32 {
    let chain = |mut p: i32| {
        let mut v = vec![p];
        while let Some(&pp) = parents.get(&p) {
            if v.contains(&pp) || !parents.contains_key(&pp) {
                break;
            }
            v.push(pp);
            p = pp;
        }
        v.reverse();
        v
    };
    let Some((&first, rest)) = pids.split_first() else {
        return 0;
    };
    let mut common = chain(first);
    for &p in rest {
        let c = chain(p);
        let same = common.iter().zip(&c).take_while(|(a, b)| a == b).count();
        common.truncate(same);
    }
    common.last().copied().unwrap_or(first)
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind((0..n).collect())
    }
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn join(&mut self, a: usize, b: usize) {
        let (a, b) = (self.find(a), self.find(b));
        self.0[a.max(b)] = a.min(b);
    }
}

//! The tree's open file descriptions (fdtable.img, `pb::FileDesc`): each is created once
//! and handed to every process that held it, so a file offset or a pipe shared by a
//! parent and its child is shared again.
//!
//! How one description reaches several seeds: the seed of the holders' lowest common
//! ancestor creates it before it forks its children (`seed/objects.rs`), at a fixed fd
//! number of the tree ("slot", from `base` up, above every fd ckpt or a seed holds before
//! `prepare`); every child seed forked after inherits every slot its ancestors filled.
//! Each seed then dup2()s the slots it holds to its own fd numbers and closes every slot.
//! The seeds never talk to each other, nothing waits on another seed, and the rollback is
//! unchanged: the objects live only in seeds, which die with the restore. (pidfd_getfd
//! between seeds would order them and need ptrace rights over each other; SCM_RIGHTS from
//! ckpt a socket per seed; neither is needed when the creator is an ancestor anyway.)
//! A description of the caller's (`--inherit-fd fd[N]:KEY`, an external pipe) goes into
//! its slot in ckpt itself, before the root's seed is forked.
//!
//! Descriptions held by one process only and reopened by path (regular files,
//! directories, FIFOs, devices) stay with their holder's `prepare`, as before the table:
//! only what is shared, or cannot be reopened by a path, goes through a slot.
//!
//! A new kind: a `create(descs)` in a module here (see `pipe.rs`) that makes the object
//! and puts each of its descriptions at the slot given with it (with its status flags);
//! `seed/objects.rs` calls it by kind, in the creating seed (root, single-threaded, a
//! copy of ckpt: it may allocate, it must not block). `check` says what an image's record
//! of the kind may hold, and `object_key` which descriptions make one object.

pub mod anon;
pub mod contents;
pub mod epoll;
pub mod fanotify;
pub mod pidfd;
pub mod pipe;
pub mod tty;
pub mod unix;

use crate::image::ProcessImage;
use crate::tree;
use crate::RestoreError;
use ckpt_images::pb;
use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;

/// Largest pipe capacity an image may ask for (the kernel's pipe-max-size default is 1 MiB;
/// root may set more, up to this).
const MAX_PIPE: u32 = 1 << 30;

/// One object to create: its descriptions and the slot each goes to.
#[derive(Clone, Debug)]
pub struct Object {
    pub kind: pb::FdKind,
    pub descs: Vec<(pb::FileDesc, RawFd)>,
    /// The first holder's fd record (for a kind opened by path: what to open, its FIFO
    /// bytes) and that holder's credentials, which opening or creating a file is checked
    /// against.
    pub holder: (pb::Fd, Option<pb::Creds>),
    /// That holder's pid, for errors.
    pub holder_pid: i32,
    /// The slots of the files in flight its sockets send again (SCM_RIGHTS), by
    /// description; made before it (by an ancestor's seed or earlier by this one).
    pub in_flight: Vec<(u64, RawFd)>,
}

/// Who creates what, and where each description waits.
#[derive(Default)]
pub struct Plan {
    /// The first slot; slots end at `end`.
    pub base: RawFd,
    pub end: RawFd,
    pub slots: HashMap<u64, RawFd>,
    /// Per node of the tree plan: the objects its seed creates before forking.
    pub creates: Vec<Vec<Object>>,
    /// Descriptions handed over by the caller: ckpt's fd (`--inherit-fd`), dup2()ed to
    /// its slot before the root's seed is forked, and the image's status flags.
    pub from_ckpt: Vec<(RawFd, RawFd, u32)>,
}

impl Plan {
    /// The slot of description `desc`, if it goes through one.
    pub fn slot(&self, desc: u64) -> Option<RawFd> {
        self.slots.get(&desc).copied()
    }
}

/// Checks the table's records (untrusted) on their own; `name` names the file in errors.
pub fn check(descs: &[pb::FileDesc]) -> Result<(), String> {
    for (i, d) in descs.iter().enumerate() {
        if d.id != i as u64 + 1 {
            return Err(format!("description {} is record {}", d.id, i + 1));
        }
        match pb::FdKind::try_from(d.kind) {
            Ok(pb::FdKind::FdPipe) => pipe::check(d)?,
            Ok(
                pb::FdKind::FdEventfd
                | pb::FdKind::FdSignalfd
                | pb::FdKind::FdTimerfd
                | pb::FdKind::FdInotify,
            ) => anon::check(d)?,
            Ok(pb::FdKind::FdMemfd | pb::FdKind::FdDeleted) => contents::check(d)?,
            Ok(pb::FdKind::FdEpoll) => epoll::check(d)?,
            Ok(pb::FdKind::FdFanotify) => fanotify::check(d)?,
            Ok(pb::FdKind::FdPidfd) => pidfd::check(d)?,
            Ok(pb::FdKind::FdUnixSocket) => unix::check(d)?,
            Ok(pb::FdKind::FdTty) => tty::check(d)?,
            Ok(pb::FdKind::FdInetSocket) => {
                crate::net::check(d).map_err(|e| format!("description {}: {e}", d.id))?
            }
            Ok(pb::FdKind::FdNetlinkSocket) => {
                crate::net::netlink::check(d).map_err(|e| format!("description {}: {e}", d.id))?
            }
            Ok(pb::FdKind::FdPacketSocket) => {
                crate::net::packet::check(d).map_err(|e| format!("description {}: {e}", d.id))?
            }
            Ok(k) => {
                if k != pb::FdKind::FdFifo && (!d.fifo_data.is_empty() || d.fifo_size != 0) {
                    return Err(format!(
                        "description {}: a FIFO's bytes on a {}",
                        d.id,
                        k.as_str_name()
                    ));
                }
                if d.fifo_size > MAX_PIPE || d.fifo_data.len() > d.fifo_size.max(1 << 16) as usize {
                    return Err(format!(
                        "description {}: {} FIFO bytes, capacity {}",
                        d.id,
                        d.fifo_data.len(),
                        d.fifo_size
                    ));
                }
                if k == pb::FdKind::FdMqueue && !ckpt_sys::mqueue::valid_name(&d.path) {
                    return Err(format!(
                        "description {}: {:?} is not a message queue's name",
                        d.id, d.path
                    ));
                }
                if !d.path.starts_with('/') {
                    return Err(format!(
                        "description {}: path {:?} is not absolute",
                        d.id, d.path
                    ));
                }
            }
            Err(_) => {
                return Err(format!(
                    "description {} is of unknown kind {}",
                    d.id, d.kind
                ))
            }
        }
    }
    Ok(())
}

/// Descriptions of one object are created together (a pipe's two ends, two opens of one
/// memfd).
fn object_key(d: &pb::FileDesc) -> (i32, u64) {
    match pb::FdKind::try_from(d.kind) {
        Ok(pb::FdKind::FdPipe) if d.external.is_empty() => (d.kind, d.object),
        Ok(pb::FdKind::FdMemfd | pb::FdKind::FdDeleted) => (d.kind, d.object),
        Ok(pb::FdKind::FdUnixSocket) if d.external.is_empty() => (d.kind, d.object),
        Ok(pb::FdKind::FdTty) => (d.kind, d.object),
        _ => (-1, d.id),
    }
}

/// Kinds that cannot be reopened by a path: always created through a slot.
/// (An epoll or a pidfd is neither: its own process's seed makes it once every other fd
/// is in place, `fdtable/epoll.rs`, `fdtable/pidfd.rs`.)
pub fn needs_slot(kind: i32) -> bool {
    !matches!(
        pb::FdKind::try_from(kind),
        Ok(pb::FdKind::FdRegular
            | pb::FdKind::FdDirectory
            | pb::FdKind::FdChardev
            | pb::FdKind::FdFifo
            | pb::FdKind::FdMqueue
            | pb::FdKind::FdEpoll
            | pb::FdKind::FdPidfd)
    )
}

/// The plan for `imgs` (live processes, in `tree.live()` order). `inherit`: the caller's
/// fds for external descriptions, by key; `own`: those ckpt opened itself, by
/// description (the job's terminal, `shelljob.rs`). `floor`: every fd ckpt holds is below it.
pub fn plan(
    descs: &[pb::FileDesc],
    tree: &tree::Plan,
    imgs: &[ProcessImage],
    inherit: &[(RawFd, String)],
    own: &[(u64, RawFd)],
    floor: RawFd,
) -> Result<Plan, RestoreError> {
    let refuse = |m: String| RestoreError::Refused(m);
    let nodes: Vec<usize> = tree
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.live.is_some())
        .map(|(i, _)| i)
        .collect();
    // Description -> (node, fd record) of every holder, in tree order.
    let mut holders: BTreeMap<u64, Vec<(usize, &pb::Fd)>> = BTreeMap::new();
    for (img, &node) in imgs.iter().zip(&nodes) {
        for f in img.fds.iter().filter(|f| f.desc != 0) {
            let d = descs.get(f.desc as usize - 1).ok_or_else(|| {
                refuse(format!(
                    "pid {} fd {}: description {} is not in {}",
                    img.core.pid,
                    f.fd,
                    f.desc,
                    ckpt_images::names::FDTABLE
                ))
            })?;
            // A kind opened by path may be told by the fd's own record (which the seed
            // checks against the file it finds); a made one must be the table's.
            if d.kind != f.kind && (needs_slot(d.kind) || needs_slot(f.kind)) {
                return Err(refuse(format!(
                    "pid {} fd {}: kind {} but its description {} is of kind {}",
                    img.core.pid, f.fd, f.kind, d.id, d.kind
                )));
            }
            holders.entry(f.desc).or_default().push((node, f));
        }
    }
    // A file in flight is held by the seed that makes the socket sending it again.
    let flying = in_flight(descs, &holders, tree);
    for (id, node, f) in &flying {
        if descs.get(*id as usize - 1).is_none() {
            return Err(refuse(format!(
                "a unix socket sends description {id} in flight, which is not in {}",
                ckpt_images::names::FDTABLE
            )));
        }
        holders.entry(*id).or_default().push((*node, f));
    }
    if let Some((n, k)) = inherit
        .iter()
        .find(|(_, k)| !descs.iter().any(|d| d.external == *k))
    {
        let known: Vec<&str> = descs
            .iter()
            .filter(|d| !d.external.is_empty())
            .map(|d| d.external.as_str())
            .collect();
        return Err(refuse(format!(
            "--inherit-fd fd[{n}]:{k}: the image holds nothing external by that key ({})",
            if known.is_empty() {
                "it holds nothing external".to_string()
            } else {
                format!("it holds {}", known.join(", "))
            }
        )));
    }
    let mut plan = Plan {
        creates: vec![Vec::new(); tree.nodes.len()],
        ..Plan::default()
    };
    // Object -> its descriptions and the nodes holding any of them.
    type Holders<'a> = (Vec<&'a pb::FileDesc>, Vec<usize>);
    let mut objects: BTreeMap<(i32, u64), Holders> = BTreeMap::new();
    let mut next = floor;
    for (&id, hs) in &holders {
        let d = &descs[id as usize - 1];
        let mut procs: Vec<usize> = hs.iter().map(|(n, _)| *n).collect();
        procs.sort_unstable();
        procs.dedup();
        let flies = flying.iter().any(|(i, _, _)| *i == id);
        if d.kind == pb::FdKind::FdPidfd as i32 && (procs.len() > 1 || flies) {
            // Its holder's seed opens it once its target exists (`fdtable/pidfd.rs`).
            return Err(refuse(format!(
                "description {id}: a pidfd held by several processes or in flight"
            )));
        }
        if !needs_slot(d.kind) && procs.len() < 2 && !flies {
            continue;
        }
        plan.slots.insert(id, next);
        if !d.external.is_empty() {
            let (pid, fd) = (tree.nodes[hs[0].0].pid, hs[0].1.fd);
            let mine = match own.iter().find(|(i, _)| *i == id) {
                Some(&(_, mine)) => mine,
                None => inherited(d, inherit, pid, fd)?,
            };
            plan.from_ckpt.push((mine, next, d.flags));
        } else {
            let o = objects.entry(object_key(d)).or_default();
            o.0.push(d);
            o.1.extend(procs);
        }
        next += 1;
    }
    plan.base = floor;
    plan.end = next;
    for (_, (ds, procs)) in objects {
        let creator = common_ancestor(tree, &procs);
        let kind = pb::FdKind::try_from(ds[0].kind).expect("checked");
        let (holder_node, _) = holders[&ds[0].id][0];
        let holder = {
            let (node, f) = holders[&ds[0].id][0];
            let live = tree.nodes[node].live.expect("a live holder");
            let mut f = f.clone();
            if !ds[0].fifo_data.is_empty() {
                // A FIFO met in flight first: its bytes were kept with the description.
                (f.pipe_data, f.pipe_size) = (ds[0].fifo_data.clone(), ds[0].fifo_size);
            }
            (f, imgs[live].core.creds.clone())
        };
        let holder_pid = tree.nodes[holder_node].pid;
        let in_flight = ds
            .iter()
            .filter_map(|d| d.unix.as_ref())
            .flat_map(|u| u.rights.iter().flat_map(|r| r.descs.iter()))
            .filter_map(|id| plan.slots.get(id).map(|&s| (*id, s)))
            .collect();
        plan.creates[creator].push(Object {
            kind,
            descs: ds
                .iter()
                .map(|d| ((*d).clone(), plan.slots[&d.id]))
                .collect(),
            holder,
            holder_pid,
            in_flight,
        });
    }
    Ok(plan)
}

/// The files in flight of the table's unix sockets (SCM_RIGHTS), each with the node
/// whose seed makes the socket sending it (the common ancestor of the socket object's
/// holders) and a stand-in fd record for it there (what to open, for a file reopened
/// by its path; a FIFO's bytes when they are kept with the description). A socket in
/// flight is held by that node too, and may carry more in its own queue: the nodes are
/// propagated until nothing changes (the dump refused objects carrying each other round).
fn in_flight(
    descs: &[pb::FileDesc],
    holders: &BTreeMap<u64, Vec<(usize, &pb::Fd)>>,
    tree: &tree::Plan,
) -> Vec<(u64, usize, pb::Fd)> {
    let mut nodes: HashMap<(i32, u64), Vec<usize>> = HashMap::new();
    for (id, hs) in holders {
        let d = &descs[*id as usize - 1];
        if d.unix.is_some() {
            nodes
                .entry(object_key(d))
                .or_default()
                .extend(hs.iter().map(|(n, _)| *n));
        }
    }
    let carriers: Vec<&pb::FileDesc> = descs
        .iter()
        .filter(|d| d.unix.as_ref().is_some_and(|u| !u.rights.is_empty()))
        .collect();
    let flying = |d: &pb::FileDesc| -> Vec<u64> {
        let u = d.unix.as_ref().expect("a carrier");
        u.rights
            .iter()
            .flat_map(|r| r.descs.iter().copied())
            .collect()
    };
    // The seed making a carrier's object: its holders' common ancestor, once known.
    let maker_of = |nodes: &HashMap<(i32, u64), Vec<usize>>, d: &pb::FileDesc| {
        nodes
            .get(&object_key(d))
            .filter(|p| !p.is_empty())
            .map(|p| common_ancestor(tree, p))
    };
    // A bound on the rounds: each adds at least one node to one object.
    for _ in 0..=descs.len() * tree.nodes.len().max(1) {
        let mut grew = false;
        for d in &carriers {
            let Some(maker) = maker_of(&nodes, d) else {
                continue;
            };
            for id in flying(d) {
                let Some(f) = descs.get((id as usize).wrapping_sub(1)) else {
                    continue;
                };
                if f.unix.is_some() {
                    let n = nodes.entry(object_key(f)).or_default();
                    if !n.contains(&maker) {
                        n.push(maker);
                        grew = true;
                    }
                }
            }
        }
        if !grew {
            break;
        }
    }
    let mut out = Vec::new();
    for d in &carriers {
        let Some(maker) = maker_of(&nodes, d) else {
            continue;
        };
        for id in flying(d) {
            let Some(f) = descs.get((id as usize).wrapping_sub(1)) else {
                out.push((id, maker, pb::Fd::default()));
                continue;
            };
            out.push((
                id,
                maker,
                pb::Fd {
                    fd: -1,
                    kind: f.kind,
                    path: f.path.clone(),
                    flags: f.flags,
                    pos: f.pos,
                    file_size: f.file_size,
                    rdev: f.rdev,
                    desc: id,
                    pipe_data: f.fifo_data.clone(),
                    pipe_size: f.fifo_size,
                    ..Default::default()
                },
            ));
        }
    }
    out
}

/// ckpt's own fd for external description `d` (first held at fd `fd` of `pid`), from
/// `--inherit-fd`; refused, saying how to pass it, when none was given.
fn inherited(
    d: &pb::FileDesc,
    inherit: &[(RawFd, String)],
    pid: i32,
    fd: i32,
) -> Result<RawFd, RestoreError> {
    let end = match &d.pipe {
        Some(p) if p.write_end => " (write end)",
        Some(_) => " (read end)",
        None => "",
    };
    let Some((n, _)) = inherit.iter().find(|(_, k)| *k == d.external) else {
        if let Some(t) = &d.tty {
            return Err(RestoreError::Refused(format!(
                "pid {pid} fd {fd}: /dev/pts/{} was the terminal of a job dumped with \
                 --shell-job; restore it with --shell-job from a terminal (or hand one over: \
                 --inherit-fd fd[N]:{})",
                t.index, d.external
            )));
        }
        return Err(RestoreError::Refused(format!(
            "pid {pid} fd {fd}: {}{end} was held outside the dumped tree; hand over the fd \
             to use instead: ckpt restore --inherit-fd fd[N]:{} (N: an fd of ckpt's, e.g. \
             `N>&...` in the shell)",
            d.external, d.external
        )));
    };
    let what = format!("--inherit-fd fd[{n}]:{}", d.external);
    let fl = nix::fcntl::fcntl(*n, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| RestoreError::Refused(format!("{what}: fd {n} of ckpt: {e}")))?
        as u32;
    if fl & 3 != d.flags & 3 {
        let mode = |f: u32| ["read-only", "write-only", "read-write", "?"][(f & 3) as usize];
        return Err(RestoreError::Refused(format!(
            "{what}: fd {n} is open {}, pid {pid} fd {fd} was {}",
            mode(fl),
            mode(d.flags)
        )));
    }
    Ok(*n)
}

/// The deepest node that is an ancestor of (or is) every node of `procs`.
fn common_ancestor(tree: &tree::Plan, procs: &[usize]) -> usize {
    let chain = |mut n: usize| {
        let mut v = vec![n];
        while let Some(p) = tree.nodes[n].parent {
            v.push(p);
            n = p;
        }
        v.reverse();
        v
    };
    let mut common = chain(procs[0]);
    for &p in &procs[1..] {
        let c = chain(p);
        let same = common.iter().zip(&c).take_while(|(a, b)| a == b).count();
        common.truncate(same);
    }
    *common.last().unwrap_or(&0)
}

/// Places ckpt's own descriptions (the caller's) in their slots; the root's seed inherits
/// them. ckpt's copies are closed again once it is forked (`close_from_ckpt`).
pub fn place_from_ckpt(plan: &Plan) -> Result<(), RestoreError> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    for (fd, slot, flags) in &plan.from_ckpt {
        nix::unistd::dup2(*fd, *slot)
            .map_err(|e| ckpt_sys::Error::sys(format!("dup2 to slot {slot}"), e))?;
        // The process had these (O_NONBLOCK, ...) on the description: it gets them back,
        // on the description the caller shares with it.
        let settable = OFlag::from_bits_retain(*flags as i32)
            & (OFlag::O_NONBLOCK | OFlag::O_APPEND | OFlag::O_NOATIME);
        fcntl(*slot, FcntlArg::F_SETFL(settable))
            .map_err(|e| ckpt_sys::Error::sys(format!("F_SETFL of --inherit-fd fd {fd}"), e))?;
    }
    Ok(())
}

/// Closes the slots ckpt filled itself (the root's seed has its copies).
pub fn close_from_ckpt(plan: &Plan) {
    for (_, slot, _) in &plan.from_ckpt {
        let _ = nix::unistd::close(*slot);
    }
}

/// ckpt's soft RLIMIT_NOFILE covers every slot (and the seeds', which inherit it, the
/// handles they open above them); raised up to the hard limit if needed.
pub fn make_room(plan: &Plan) -> Result<(), RestoreError> {
    const RLIMIT_NOFILE: u32 = 7;
    if plan.slots.is_empty() {
        // Nothing goes above the seeds' own helpers (whose limit `prepare` raises).
        return Ok(());
    }
    let need = plan.end as u64 + 64;
    let (cur, max) = ckpt_sys::process::get_rlimit(nix::unistd::getpid(), RLIMIT_NOFILE)?;
    if cur >= need {
        return Ok(());
    }
    if max < need {
        return Err(RestoreError::Refused(format!(
            "the tree's {} shared files above fd {} need RLIMIT_NOFILE {need}, but the hard \
             limit here is {max} (raise it, e.g. ulimit -Hn {need})",
            plan.slots.len(),
            plan.base
        )));
    }
    ckpt_sys::process::set_rlimit(RLIMIT_NOFILE, need, max)?;
    Ok(())
}

//! A tree that owns namespaces: its root is pid 1 of a pid namespace of its own (what
//! `unshare --fork --pid --mount-proc --uts --ipc` makes). The dump records the pids as
//! that namespace sees them (NSpid, NSpgid, NSsid), the hostname and domain name of its
//! uts namespace, and which namespaces it owns; what it cannot restore yet is refused by
//! name: a user, cgroup or time namespace of its own, network state `netns.rs` cannot
//! record, mounts `mounts.rs` cannot record, IPC state `ipc.rs` cannot, processes of the
//! tree in namespaces other than the root's.

use crate::blockers::Blockers;
use ckpt_images::pb;
use ckpt_sys::{ns, Pid};
use std::collections::HashMap;

/// Namespaces a container may own, with their CLONE_NEW* flag.
pub const OWNED: [(&str, u64); 8] = [
    ("pid", libc::CLONE_NEWPID as u64),
    ("mnt", libc::CLONE_NEWNS as u64),
    ("uts", libc::CLONE_NEWUTS as u64),
    ("ipc", libc::CLONE_NEWIPC as u64),
    ("net", libc::CLONE_NEWNET as u64),
    ("cgroup", libc::CLONE_NEWCGROUP as u64),
    ("time", libc::CLONE_NEWTIME as u64),
    ("user", libc::CLONE_NEWUSER as u64),
];

/// The namespaces of the root of a container: Some when `root` is pid 1 of a pid
/// namespace that is not ckpt's.
pub fn root_namespaces(root: Pid) -> Option<HashMap<&'static str, String>> {
    let me = nix::unistd::getpid();
    let own_pid = ns::ns_id(root, "pid").ok()?;
    if own_pid == ns::ns_id(me, "pid").ok()? || ns::ns_pids(root).ok()?.last() != Some(&1) {
        return None;
    }
    let mut out = HashMap::new();
    for (kind, _) in OWNED {
        out.insert(kind, ns::ns_id(root, kind).ok()?);
    }
    out.insert("pid_for_children", own_pid);
    // Its next children go where it is (a time namespace it unshared without entering
    // it is refused).
    let time = out.get("time").cloned()?;
    out.insert("time_for_children", time);
    Some(out)
}

/// The namespaces of the root of a tree restored with `restore --new-pidns` (or migrated
/// by haul): Some when `root` lives in a pid namespace that is not ckpt's, not as its
/// pid 1, and that namespace's pid 1 is a `ckpt-init` (`restore/src/pidns.rs`) whose mount
/// namespace the root shares. Such a tree is dumped with the pids it has inside and
/// restored into a fresh namespace under a new init again (`Inventory.new_pidns`); the
/// init itself is not part of it.
pub fn in_ckpt_pidns(root: Pid) -> Option<HashMap<&'static str, String>> {
    let me = nix::unistd::getpid();
    let own_pid = ns::ns_id(root, "pid").ok()?;
    if own_pid == ns::ns_id(me, "pid").ok()? || ns::ns_pids(root).ok()?.last() == Some(&1) {
        return None;
    }
    // Up the parents to the namespace's pid 1.
    let mut p = root;
    let init = loop {
        let ppid = ckpt_sys::proc::stat(p).ok()?.ppid;
        if ppid <= 0 {
            return None;
        }
        p = Pid::from_raw(ppid);
        if ns::ns_id(p, "pid").ok()? != own_pid {
            return None;
        }
        if ns::ns_pids(p).ok()?.last() == Some(&1) {
            break p;
        }
    };
    let comm = ckpt_sys::proc::read_trimmed(&format!("/proc/{init}/comm")).ok()?;
    let mnt = ns::ns_id(init, "mnt").ok()?;
    if comm != "ckpt-init" || ns::ns_id(root, "mnt").ok()? != mnt {
        return None;
    }
    let mut out = HashMap::new();
    out.insert("pid", own_pid.clone());
    out.insert("pid_for_children", own_pid);
    out.insert("mnt", mnt);
    Some(out)
}

/// What a tree in a `ckpt-init` namespace (`in_ckpt_pidns`) would lose: mounts in its
/// mount namespace other than ckpt's own and the namespace's /proc (a restore makes the
/// same again: a copy of ckpt's mounts and a /proc).
pub fn ckpt_pidns_blockers(root: Pid, out: &mut Blockers) {
    let host = crate::mounts::mountinfo(nix::unistd::getpid());
    let mut proc_seen = false;
    for m in crate::mounts::mountinfo(root) {
        if host.iter().any(|h| h.same_mount(&m)) {
            continue;
        }
        if m.mountpoint == "/proc" && m.fstype == "proc" && !proc_seen {
            proc_seen = true;
            continue;
        }
        out.push(
            root,
            format!("mount {} ({} {})", m.mountpoint, m.fstype, m.source),
            "made inside the mount namespace of the pid namespace ckpt restored it into; \
             not restored yet",
        );
    }
}

/// Pids as the container sees them, by ckpt's pid: every task of the tree.
#[derive(Default)]
pub struct PidMap {
    inner: HashMap<i32, i32>,
    active: bool,
    /// The level of the container's pid namespace: which entry of an NS* line is its
    /// view (a process in a pid namespace nested below it has more, `pidns.rs`).
    level: usize,
}

impl PidMap {
    /// Identity (a tree in ckpt's namespaces).
    pub fn host() -> PidMap {
        PidMap::default()
    }

    /// Every task (threads too) of `pids`, from each one's NSpid; `level`: the
    /// container's pid namespace's.
    pub fn of(pids: impl Iterator<Item = Pid>, level: usize) -> Result<PidMap, crate::DumpError> {
        let mut inner = HashMap::new();
        for p in pids {
            for t in ckpt_sys::proc::tasks(p)? {
                let path = format!("/proc/{p}/task/{t}/status");
                let text =
                    std::fs::read_to_string(&path).map_err(|e| ckpt_sys::Error::io(&path, e))?;
                if let Some(v) = ns_field(&text, "NSpid", level) {
                    inner.insert(t.as_raw(), v);
                }
            }
        }
        Ok(PidMap {
            inner,
            active: true,
            level,
        })
    }

    /// The pid `outer` as the container sees it (0: not in the container, e.g. the
    /// root's parent).
    pub fn pid(&self, outer: i32) -> i32 {
        if !self.active {
            return outer;
        }
        self.inner.get(&outer).copied().unwrap_or(0)
    }

    pub fn active(&self) -> bool {
        self.active
    }

    /// The level of the tree's pid namespace (0 for a tree in ckpt's).
    pub fn level(&self) -> usize {
        self.level
    }
}

/// The value at `level` of an NS* line of a status file: the view of the pid namespace
/// at that level (the innermost one but for a process in a namespace nested below it).
pub fn ns_field(status: &str, name: &str, level: usize) -> Option<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))?
        .split_whitespace()
        .nth(level)?
        .parse()
        .ok()
}

/// Rewrites a tree node's pids as the container sees them (pgid and sid from the
/// namespace's own view: a leader may have exited).
pub fn node_inner(n: &mut pb::TreeNode, map: &PidMap) -> Result<(), crate::DumpError> {
    if !map.active() {
        return Ok(());
    }
    let outer = n.pid;
    n.ppid = map.pid(n.ppid);
    let status = std::fs::read_to_string(format!("/proc/{outer}/status")).unwrap_or_default();
    // A zombie is in no map of live tasks: its own NSpid.
    n.pid = ns_field(&status, "NSpid", map.level).unwrap_or_else(|| map.pid(outer));
    if n.pid == 0 {
        return Err(crate::DumpError::Lost(format!(
            "pid {outer}: no pid in the container's namespace"
        )));
    }
    if let (Some(pg), Some(sid)) = (
        ns_field(&status, "NSpgid", map.level),
        ns_field(&status, "NSsid", map.level),
    ) {
        n.pgid = pg;
        n.sid = sid;
    } else if !n.zombie {
        return Err(crate::DumpError::Lost(format!(
            "pid {outer}: no NSpgid/NSsid in its status"
        )));
    }
    Ok(())
}

/// Rewrites a process's core (its pid, links and threads' tids, thread-directed timers)
/// as the container sees them.
pub fn core_inner(c: &mut pb::ProcessCore, threads: &mut [pb::ThreadCore], map: &PidMap) {
    if !map.active() {
        return;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", c.pid)).unwrap_or_default();
    c.pid = map.pid(c.pid);
    c.ppid = map.pid(c.ppid);
    c.pgid = ns_field(&status, "NSpgid", map.level).unwrap_or(c.pgid);
    c.sid = ns_field(&status, "NSsid", map.level).unwrap_or(c.sid);
    for t in threads {
        t.tid = map.pid(t.tid);
    }
    for t in &mut c.posix_timers {
        if t.notify_tid != 0 {
            t.notify_tid = map.pid(t.notify_tid);
        }
    }
}

/// What a container's root owns that the restore cannot rebuild yet, and the record of
/// what it can. `root` is the container's init.
pub fn record(root: Pid, out: &mut Blockers) -> pb::Container {
    let me = nix::unistd::getpid();
    let mut flags = 0;
    for (kind, flag) in OWNED {
        if ns::ns_id(root, kind).ok() != ns::ns_id(me, kind).ok() {
            flags |= flag;
        }
    }
    let mut c = pb::Container {
        clone_flags: flags,
        ..Default::default()
    };
    if flags & libc::CLONE_NEWUTS as u64 != 0 {
        match ns::in_namespace_of(root, "uts", || {
            (
                std::fs::read_to_string("/proc/sys/kernel/hostname"),
                std::fs::read_to_string("/proc/sys/kernel/domainname"),
            )
        }) {
            Ok((Ok(h), Ok(d))) => {
                c.hostname = h.trim_end_matches('\n').to_string();
                c.domainname = d.trim_end_matches('\n').to_string();
            }
            Ok((Err(e), _)) | Ok((_, Err(e))) => {
                out.push(root, "uts namespace", format!("cannot read its names: {e}"))
            }
            Err(e) => out.push(root, "uts namespace", e.to_string()),
        }
    }
    if flags & libc::CLONE_NEWIPC as u64 != 0 {
        crate::ipc::blockers(root, out);
    }
    if flags & libc::CLONE_NEWNS as u64 != 0 {
        (c.mounts, c.host_mounts) = crate::mounts::record(root, out);
    }
    if flags & libc::CLONE_NEWNET as u64 != 0 {
        match crate::netns::external_key(root) {
            Some(key) => c.net_external = key,
            None => (c.loopback_up, c.net) = crate::netns::record(root, out),
        }
    }
    if flags & libc::CLONE_NEWCGROUP as u64 != 0 {
        crate::timens::cgroupns_blockers(root, out);
    }
    if flags & libc::CLONE_NEWUSER as u64 != 0 {
        crate::userns::record(root, flags, &mut c, out);
    }
    if flags & libc::CLONE_NEWTIME as u64 != 0 {
        (c.monotonic_offset_ns, c.boottime_offset_ns) = crate::timens::offsets(root, out);
    }
    c
}

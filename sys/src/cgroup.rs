//! Cgroups as /proc shows them: which cgroup of each hierarchy a task is in
//! (/proc/PID/cgroup) and where ckpt sees each hierarchy mounted (/proc/self/mountinfo).
//! A hierarchy is named as /proc/PID/cgroup names it: "" for cgroup v2, else its v1
//! controllers ("memory", "cpu,cpuacct", "name=systemd").

use crate::error::{Error, Result};
use nix::unistd::Pid;
use std::path::PathBuf;

/// One line of /proc/PID/cgroup: (hierarchy, path from the reader's cgroup namespace
/// root).
pub type Membership = Vec<(String, String)>;

/// Parses /proc/PID/cgroup (or /proc/PID/task/TID/cgroup when `tid` is given).
pub fn membership(pid: Pid, tid: Option<Pid>) -> Result<Membership> {
    let path = match tid {
        Some(t) => format!("/proc/{pid}/task/{t}/cgroup"),
        None => format!("/proc/{pid}/cgroup"),
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok(parse(&text))
}

/// `ID:CONTROLLERS:PATH` lines; a v1 hierarchy with no controllers and no name (none on
/// a sane system) is left out.
pub fn parse(text: &str) -> Membership {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (id, ctl, path) = (it.next()?, it.next()?, it.next()?);
            (id == "0" || !ctl.is_empty()).then(|| (ctl.to_string(), path.to_string()))
        })
        .collect()
}

/// Where this process sees hierarchy `controllers` mounted: the directory of its root
/// cgroup. A v1 hierarchy is the cgroup mount whose super options hold exactly its
/// controllers; v2 the first cgroup2 mount. Mounts of a part of the hierarchy (root
/// not "/") are joined to it so that hierarchy paths still resolve below them.
pub fn mount_of(controllers: &str) -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let want: std::collections::BTreeSet<&str> = controllers.split(',').collect();
    for line in info.lines() {
        let (left, right) = line.split_once(" - ")?;
        let f: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype), Some(opts)) =
            (f.get(3), f.get(4), r.first(), r.get(2))
        else {
            continue;
        };
        if *root != "/" {
            continue;
        }
        let matches = if controllers.is_empty() {
            *fstype == "cgroup2"
        } else {
            *fstype == "cgroup"
                && want.iter().all(|c| opts.split(',').any(|o| o == *c))
                && opts
                    .split(',')
                    .filter(|o| is_controller_option(o))
                    .all(|o| want.contains(o))
        };
        if matches {
            return Some(PathBuf::from(crate::probe::unescape_octal(point)));
        }
    }
    None
}

/// A v1 super option that names a controller or a named hierarchy (not rw, relatime...).
fn is_controller_option(o: &str) -> bool {
    const NOT: [&str; 10] = [
        "rw",
        "ro",
        "relatime",
        "noatime",
        "nosuid",
        "nodev",
        "noexec",
        "xattr",
        "noprefix",
        "clone_children",
    ];
    !NOT.contains(&o) && !o.starts_with("release_agent=") && !o.starts_with("cpuset_v2")
}

/// The directory of cgroup `path` (from the hierarchy's root) under mount `mount`.
pub fn dir(mount: &std::path::Path, path: &str) -> PathBuf {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}

/// The processes in cgroup directory `dir` (its cgroup.procs), not below.
pub fn procs(dir: &std::path::Path) -> Result<Vec<i32>> {
    let path = dir.join("cgroup.procs");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    Ok(text
        .split_whitespace()
        .filter_map(|t| t.parse().ok())
        .collect())
}

/// Moves process `pid` (all its threads; 0: the caller) into cgroup directory `dir`.
pub fn enter(dir: &std::path::Path, pid: i32) -> Result<()> {
    let path = dir.join("cgroup.procs");
    std::fs::write(&path, pid.to_string()).map_err(|e| Error::io(&path, e))
}

/// The controller settings a restore writes back, in this order (a v1 cpuset needs cpus
/// and mems before a task may enter; a period before the quota it bounds; the memory
/// limit before memory+swap, which may not go below it). A cgroup's other writable
/// files must hold the defaults (what a fresh sibling holds) or the dump refuses them.
pub const SETTINGS: &[&str] = &[
    // v2
    "cgroup.subtree_control",
    "cgroup.max.depth",
    "cgroup.max.descendants",
    "cpuset.cpus",
    "cpuset.mems",
    "cpuset.cpus.exclusive",
    "cpuset.cpus.partition",
    "cpu.max",
    "cpu.max.burst",
    "cpu.weight",
    "cpu.idle",
    "cpu.uclamp.min",
    "cpu.uclamp.max",
    "memory.min",
    "memory.low",
    "memory.high",
    "memory.max",
    "memory.swap.high",
    "memory.swap.max",
    "memory.zswap.max",
    "memory.zswap.writeback",
    "memory.oom.group",
    "pids.max",
    "io.weight",
    "io.max",
    "io.latency",
    // v1
    "cpuset.cpu_exclusive",
    "cpuset.mem_exclusive",
    "cpuset.mem_hardwall",
    "cpuset.memory_migrate",
    "cpuset.memory_spread_page",
    "cpuset.memory_spread_slab",
    "cpuset.sched_load_balance",
    "cpuset.sched_relax_domain_level",
    "cpu.shares",
    "cpu.cfs_period_us",
    "cpu.cfs_quota_us",
    "cpu.cfs_burst_us",
    "cpu.rt_period_us",
    "cpu.rt_runtime_us",
    "memory.limit_in_bytes",
    "memory.soft_limit_in_bytes",
    "memory.memsw.limit_in_bytes",
    "memory.kmem.tcp.limit_in_bytes",
    "memory.swappiness",
    "memory.move_charge_at_immigrate",
    "memory.oom_control",
    "blkio.weight",
    "blkio.throttle.read_bps_device",
    "blkio.throttle.write_bps_device",
    "blkio.throttle.read_iops_device",
    "blkio.throttle.write_iops_device",
    "net_cls.classid",
    "net_prio.ifpriomap",
    "notify_on_release",
    "cgroup.clone_children",
];

/// Writable files that hold no setting: membership, triggers, counters a write resets,
/// pressure triggers, state ckpt itself drives (the freezer).
pub fn holds_no_setting(file: &str) -> bool {
    const FILES: &[&str] = &[
        "cgroup.procs",
        "cgroup.threads",
        "tasks",
        "cgroup.freeze",
        "cgroup.kill",
        "cgroup.event_control",
        "freezer.state",
        "memory.force_empty",
        "memory.reclaim",
        "memory.failcnt",
        "memory.max_usage_in_bytes",
        "memory.memsw.failcnt",
        "memory.memsw.max_usage_in_bytes",
        "memory.peak",
        "memory.swap.peak",
        "blkio.reset_stats",
        "cpuacct.usage",
        "cpu.stat.local",
        "devices.allow",
        "devices.deny",
        "release_agent",
        "cgroup.sane_behavior",
    ];
    FILES.contains(&file)
        || file.ends_with(".pressure")
        || (file.starts_with("memory.kmem.") && !file.ends_with("limit_in_bytes"))
        || (file.starts_with("hugetlb.")
            && !file.ends_with(".max")
            && !file.ends_with("limit_in_bytes"))
}

/// The lines a setting's value is written back as: a multi-line value (io.max, one
/// device a line) one write each; memory.oom_control only its oom_kill_disable flag.
pub fn writes(file: &str, value: &str) -> Vec<String> {
    if file == "memory.oom_control" {
        return value
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill_disable "))
            .map(|v| vec![v.trim().to_string()])
            .unwrap_or_default();
    }
    value
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// A setting ckpt restores: in `SETTINGS`, or a hugetlb limit.
pub fn restorable(file: &str) -> bool {
    SETTINGS.contains(&file)
        || (file.starts_with("hugetlb.")
            && (file.ends_with(".max") || file.ends_with(".limit_in_bytes")))
}

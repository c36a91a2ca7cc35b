//! A container's cgroup and time namespaces. Its cgroup namespace is restored rooted at
//! the root's cgroups (the root's seed unshares it once it is in them): anything else
//! (the namespace made before the root moved to other cgroups) would read differently in
//! /proc/self/cgroup, and is refused by name. Its time namespace is restored with the
//! same offsets of CLOCK_MONOTONIC and CLOCK_BOOTTIME (/proc/PID/timens_offsets).

use crate::blockers::Blockers;
use ckpt_sys::Pid;

/// The root's cgroups as its own cgroup namespace sees them (read on a ckpt thread that
/// joined it) must all be that namespace's root.
pub fn cgroupns_blockers(root: Pid, out: &mut Blockers) {
    let path = format!("/proc/{root}/cgroup");
    match ckpt_sys::ns::in_namespace_of(root, "cgroup", || std::fs::read_to_string(&path)) {
        Ok(Ok(text)) => {
            for (ctl, at) in ckpt_sys::cgroup::parse(&text) {
                if at != "/" {
                    let name = if ctl.is_empty() { "v2" } else { ctl.as_str() };
                    out.push(
                        root,
                        format!("cgroup namespace ({name}: the root is at {at} inside it)"),
                        "rooted elsewhere than at the root's cgroup: not restored yet",
                    );
                }
            }
        }
        Ok(Err(e)) => out.push(root, "cgroup namespace", format!("{path}: {e}")),
        Err(e) => out.push(root, "cgroup namespace", e.to_string()),
    }
}

/// The offsets (ns) of CLOCK_MONOTONIC and CLOCK_BOOTTIME of the root's time namespace.
pub fn offsets(root: Pid, out: &mut Blockers) -> (i64, i64) {
    let path = format!("/proc/{root}/timens_offsets");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            out.push(root, "time namespace", format!("{path}: {e}"));
            return (0, 0);
        }
    };
    let mut found = (None, None);
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [clock, secs, nsecs] = f[..] else {
            continue;
        };
        let (Ok(s), Ok(n)) = (secs.parse::<i64>(), nsecs.parse::<i64>()) else {
            continue;
        };
        let ns = s.saturating_mul(1_000_000_000).saturating_add(n);
        match clock {
            "monotonic" => found.0 = Some(ns),
            "boottime" => found.1 = Some(ns),
            _ => out.push(
                root,
                format!("time namespace offset of clock {clock}"),
                "not restored (only monotonic and boottime are)",
            ),
        }
    }
    match found {
        (Some(m), Some(b)) => (m, b),
        _ => {
            out.push(
                root,
                "time namespace",
                format!("{path}: no offsets in {text:?}"),
            );
            (0, 0)
        }
    }
}

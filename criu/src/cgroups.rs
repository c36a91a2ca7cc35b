//! CRIU's `--cgroup-root [CTRLS:]PATH` of the command line, as LXC passes it: one per
//! hierarchy, named by its controllers (`memory`, `name=systemd`; on cgroup v2 the
//! controllers enabled there, e.g. `hugetlb` on a hybrid host), the container's payload
//! cgroup as PATH, at the dump and at the restore alike.
//!
//! At the dump CRIU takes it as the container's cgroup root, the images holding paths
//! below it; ckpt records a tree's cgroups from its root's own cgroup in each hierarchy
//! (`dump/src/cgroups.rs`), so it checks the two are the same and refuses otherwise. At the
//! restore the payload cgroups LXC's monitor made are where ckpt makes the tree's
//! (`restore --cgroup-root`, with `v2` naming cgroup v2): ckpt writes the dumped settings
//! into them whether it made them or found them, which is CRIU's `--manage-cgroups=full`.

use crate::error::{unsupported, CriuError};
use std::collections::BTreeSet;

/// A root as (controllers, path): no controllers names every hierarchy.
fn split(root: &str) -> (&str, &str) {
    match root.split_once(':') {
        Some((c, p)) if !p.is_empty() && p.starts_with('/') => (c, p),
        _ => ("", root),
    }
}

fn set(ctrls: &str) -> BTreeSet<&str> {
    ctrls.split(',').filter(|c| !c.is_empty()).collect()
}

/// The controllers the cgroup v2 hierarchy offers (its root's cgroup.controllers).
fn v2_controllers() -> BTreeSet<String> {
    ckpt_sys::cgroup::mount_of("")
        .and_then(|m| std::fs::read_to_string(m.join("cgroup.controllers")).ok())
        .map(|t| t.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Which hierarchy `ctrls` names, as ckpt's restore names it: a mounted v1 hierarchy's
/// controllers, `v2`, or None (no hierarchy of this host: nothing of the image is there).
fn hierarchy(ctrls: &str) -> Option<String> {
    if ctrls.is_empty() {
        return None;
    }
    // With controllers named, only a v1 mount answers.
    if ckpt_sys::cgroup::mount_of(ctrls).is_some() {
        return Some(ctrls.to_string());
    }
    let v2 = v2_controllers();
    set(ctrls)
        .iter()
        .all(|c| v2.contains(*c))
        .then(|| "v2".to_string())
}

/// The dump's roots must be the tree root's own cgroups (see the module doc).
pub fn check_dump(pid: i32, roots: &[String]) -> Result<(), CriuError> {
    let member = ckpt_sys::cgroup::membership(ckpt_sys::Pid::from_raw(pid), None)?;
    for r in roots {
        let (ctrls, path) = split(r);
        let theirs: Vec<&(String, String)> = match hierarchy(ctrls).as_deref() {
            None if ctrls.is_empty() => member.iter().collect(),
            None => {
                tracing::info!(root = %r, "--cgroup-root names no hierarchy of this host");
                continue;
            }
            Some("v2") => member.iter().filter(|(c, _)| c.is_empty()).collect(),
            Some(h) => member.iter().filter(|(c, _)| set(c) == set(h)).collect(),
        };
        if let Some((c, p)) = theirs
            .iter()
            .find(|(_, p)| p.trim_end_matches('/') != path.trim_end_matches('/'))
        {
            return Err(unsupported(format!(
                "--cgroup-root {r}: pid {pid} is in cgroup {p} of hierarchy {:?}; ckpt \
                 records a tree's cgroups from its root's own, so it dumps only with that \
                 as the root",
                if c.is_empty() { "v2" } else { c.as_str() }
            )));
        }
    }
    Ok(())
}

/// The restore's roots as ckpt's `--cgroup-root` values.
pub fn for_restore(roots: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for r in roots {
        let (ctrls, path) = split(r);
        match hierarchy(ctrls) {
            Some(h) => {
                if !out.iter().any(|o: &String| o.starts_with(&format!("{h}:"))) {
                    out.push(format!("{h}:{path}"));
                }
            }
            None if ctrls.is_empty() => out.push(path.to_string()),
            None => tracing::info!(root = %r, "--cgroup-root names no hierarchy of this host"),
        }
    }
    out
}

//! The cgroups a tree owns. In each hierarchy (cgroup v2, and every v1 hierarchy this
//! machine mounts) the tree's root is either in ckpt's own cgroup, and then the whole
//! tree must be too (nothing recorded: the restore puts it back into ckpt's), or in
//! another one, its `base`: then the tree owns base and every cgroup below it. Each
//! process must be at or below base, each thread in its process's cgroup, and no process
//! but the tree's may be in any of them. Recorded per hierarchy: base, the cgroups below
//! it, which process is where, and every cgroup's settings (`ckpt_sys::cgroup::SETTINGS`
//! and hugetlb limits). Any other writable file that differs from what a fresh sibling
//! cgroup holds (made for a moment next to base) is refused by name: restored, it
//! would silently be the default again.

use crate::blockers::Blockers;
use ckpt_images::pb;
use ckpt_sys::cgroup;
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The record of the cgroups the tree of `root` (`members`: its live processes) owns;
/// what stands in the way goes to `out`. `inner` gives a process's pid as the images
/// name it; `stopped`: the tree is seized (else a running tree is checked).
pub fn record(
    root: Pid,
    members: &[Pid],
    inner: &dyn Fn(i32) -> i32,
    stopped: bool,
    out: &mut Blockers,
) -> Vec<pb::CgroupHierarchy> {
    let me = nix::unistd::getpid();
    let (mine, of_root) = match (cgroup::membership(me, None), cgroup::membership(root, None)) {
        (Ok(m), Ok(r)) => (m, r),
        (Err(e), _) | (_, Err(e)) => {
            out.push(root, "cgroups", e.to_string());
            return Vec::new();
        }
    };
    let mut wheres: HashMap<i32, cgroup::Membership> = HashMap::new();
    for &p in members {
        match cgroup::membership(p, None) {
            // A zombie (or one exiting while the running tree is checked) is in no
            // cgroup any more: /proc shows the hierarchies' roots.
            Ok(_) if ckpt_sys::proc::stat(p).map_or(true, |s| matches!(s.state, 'Z' | 'X')) => {
                continue
            }
            // A task being forked shows every hierarchy's root until the kernel puts it
            // in its parent's cgroups (cgroup_post_fork): in a running tree (the checks
            // before the seize) that is no state of its; once stopped it has its own.
            Ok(m) if !stopped && p != root && m.iter().all(|(_, at)| at == "/") => continue,
            Ok(m) => {
                threads_agree(p, &m, out);
                wheres.insert(p.as_raw(), m);
            }
            // Gone meanwhile: the other checks say so.
            Err(_) => continue,
        }
    }
    let mut record = Vec::new();
    for (ctl, base) in &of_root {
        let name = if ctl.is_empty() { "v2" } else { ctl.as_str() };
        let ckpt_at = mine.iter().find(|(c, _)| c == ctl).map(|(_, p)| p.as_str());
        if ckpt_at == Some(base.as_str()) {
            for (&p, m) in &wheres {
                if let Some((_, at)) = m.iter().find(|(c, _)| c == ctl) {
                    if at != base {
                        out.push(
                            Pid::from_raw(p),
                            format!("cgroup {name}:{at}"),
                            format!(
                                "not its root's ({base}, which is ckpt's): a restore would put \
                                 it into ckpt's cgroup"
                            ),
                        );
                    }
                }
            }
            continue;
        }
        if base == "/" {
            out.push(
                root,
                format!("cgroup {name}:/"),
                "the hierarchy's root cgroup (ckpt is elsewhere): not the tree's own",
            );
            continue;
        }
        let Some(mount) = cgroup::mount_of(ctl) else {
            out.push(
                root,
                format!("cgroup {name}:{base}"),
                "its hierarchy is not mounted where ckpt can see it",
            );
            continue;
        };
        let ckpts = ckpt_at.unwrap_or_default();
        if let Some(h) = hierarchy(root, (ctl, ckpts), base, &mount, &wheres, inner, out) {
            record.push(h);
        }
    }
    record
}

/// Each thread of `p` in the cgroups of its process (v2 threaded cgroups, v1 `tasks`
/// are not restored).
fn threads_agree(p: Pid, m: &cgroup::Membership, out: &mut Blockers) {
    for t in ckpt_sys::proc::tasks(p).unwrap_or_default() {
        if t == p {
            continue;
        }
        if let Ok(tm) = cgroup::membership(p, Some(t)) {
            if &tm != m {
                out.push(
                    p,
                    format!("thread {t}'s cgroups"),
                    "not its process's: threads in cgroups of their own are not restored",
                );
            }
        }
    }
}

/// One owned hierarchy: its cgroups, members and settings.
fn hierarchy(
    root: Pid,
    (ctl, ckpts): (&str, &str),
    base: &str,
    mount: &Path,
    wheres: &HashMap<i32, cgroup::Membership>,
    inner: &dyn Fn(i32) -> i32,
    out: &mut Blockers,
) -> Option<pb::CgroupHierarchy> {
    let name = if ctl.is_empty() { "v2" } else { ctl };
    let base_dir = cgroup::dir(mount, base);
    let mut rels = vec![String::new()];
    walk(&base_dir, "", &mut rels);
    let mut h = pb::CgroupHierarchy {
        controllers: ctl.to_string(),
        base: base.to_string(),
        ..Default::default()
    };
    let mut members: Vec<(i32, String)> = Vec::new();
    let mut in_ckpts = Vec::new();
    for (&p, m) in wheres {
        let Some((_, at)) = m.iter().find(|(c, _)| c == ctl) else {
            continue;
        };
        let rel = if at == base {
            String::new()
        } else if at == ckpts {
            // Moved into its own cgroup after it forked this one (or this one moved
            // out): back into ckpt's, as a tree without cgroups of its own is.
            in_ckpts.push(p);
            continue;
        } else if let Some(r) = at.strip_prefix(base).and_then(|r| r.strip_prefix('/')) {
            r.to_string()
        } else {
            out.push(
                Pid::from_raw(p),
                format!("cgroup {name}:{at}"),
                format!("not at or below its root's ({base})"),
            );
            continue;
        };
        if !rel.is_empty() {
            members.push((p, rel));
        }
    }
    members.sort();
    h.members = members
        .into_iter()
        .map(|(p, rel)| pb::CgroupMember {
            pid: inner(p),
            rel,
            ckpts: false,
        })
        .collect();
    in_ckpts.sort();
    h.members
        .extend(in_ckpts.into_iter().map(|p| pb::CgroupMember {
            pid: inner(p),
            rel: String::new(),
            ckpts: true,
        }));
    let probe = Probe::make(&base_dir);
    for rel in rels {
        let dir = if rel.is_empty() {
            base_dir.clone()
        } else {
            base_dir.join(&rel)
        };
        let what = format!("cgroup {name}:{}", cgroup_path(base, &rel));
        for p in cgroup::procs(&dir).unwrap_or_default() {
            if !wheres.contains_key(&p) && !descends_from(Pid::from_raw(p), root) {
                out.push(
                    root,
                    what.clone(),
                    format!("also holds pid {p}, which is not of the tree"),
                );
            }
        }
        let settings = match &probe {
            Ok(probe) => settings(&dir, probe, &what, root, out),
            Err(e) => {
                out.push(root, what.clone(), e.clone());
                Vec::new()
            }
        };
        h.dirs.push(pb::CgroupDir { rel, settings });
    }
    Some(h)
}

/// Whether `p` is (now) a descendant of `root`, or gone: a child the running tree
/// forked after it was listed (the check before the seize races with it).
fn descends_from(p: Pid, root: Pid) -> bool {
    let mut at = p;
    for _ in 0..4096 {
        let Ok(stat) = ckpt_sys::proc::stat(at) else {
            return true;
        };
        if stat.ppid == root.as_raw() {
            return true;
        }
        if stat.ppid <= 1 {
            return false;
        }
        at = Pid::from_raw(stat.ppid);
    }
    false
}

fn cgroup_path(base: &str, rel: &str) -> String {
    if rel.is_empty() {
        base.to_string()
    } else {
        format!("{base}/{rel}")
    }
}

/// The cgroups below `dir` (relative names, parents first).
fn walk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for n in names {
        let rel = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        out.push(rel.clone());
        walk(&dir.join(&n), &rel, out);
    }
}

/// A fresh sibling of the tree's cgroup, made to read what a new cgroup holds; removed
/// when dropped.
struct Probe {
    dir: PathBuf,
}

impl Probe {
    fn make(base: &Path) -> Result<Probe, String> {
        let parent = base.parent().ok_or("no parent cgroup")?;
        let dir = parent.join(format!(".ckpt-probe-{}", std::process::id()));
        let _ = std::fs::remove_dir(&dir);
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "cannot make {} to learn a fresh cgroup's defaults: {e}",
                dir.display()
            )
        })?;
        Ok(Probe { dir })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// The settings of cgroup `dir`, in the order they are written back; refuses any other
/// writable file whose value is not a fresh cgroup's.
fn settings(
    dir: &Path,
    probe: &Probe,
    what: &str,
    root: Pid,
    out: &mut Blockers,
) -> Vec<pb::CgroupSetting> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o222 != 0)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // A v1 devices cgroup's rules show only in the read-only devices.list.
    if dir.join("devices.list").exists() {
        files.push("devices.list".into());
    }
    let rank = |f: &str| {
        cgroup::SETTINGS
            .iter()
            .position(|s| *s == f)
            .unwrap_or(usize::MAX)
    };
    files.sort_by(|a, b| rank(a).cmp(&rank(b)).then(a.cmp(b)));
    let mut kept = Vec::new();
    for f in files {
        if cgroup::holds_no_setting(&f) {
            continue;
        }
        let Ok(value) = std::fs::read_to_string(dir.join(&f)) else {
            continue;
        };
        if cgroup::restorable(&f) || f == "devices.list" {
            kept.push(pb::CgroupSetting { file: f, value });
            continue;
        }
        let fresh = std::fs::read_to_string(probe.dir.join(&f)).ok();
        if fresh.as_deref() != Some(value.as_str()) {
            out.push(
                root,
                format!("{what}: {f} = {:?}", value.trim_end()),
                format!(
                    "a fresh cgroup holds {:?}: this setting is not restored yet",
                    fresh.as_deref().unwrap_or("nothing").trim_end()
                ),
            );
        }
    }
    kept
}

//! The cgroups a tree owned (`Inventory.cgroups`, `dump/src/cgroups.rs`): made again,
//! each hierarchy's at its dumped path or under `--cgroup-root [CTL:]PATH` (CRIU's
//! spelling), parents before children, each with its settings written (those that differ
//! from what it holds). The root's seed enters its cgroups itself before anything else
//! (so a cgroup namespace it makes is rooted there, and every seed it forks is born in
//! them); ckpt moves the processes that lived below base by their outer pids once the
//! seeds have reported, before any memory is filled. A cgroup that existed is used as it
//! is; those the restore made are removed again if it fails.

use crate::{RestoreError, R};
use ckpt_images::pb;
use ckpt_sys::cgroup;
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What the restore makes, checked before anything is.
#[derive(Debug, Default)]
pub struct Plan {
    hierarchies: Vec<Hierarchy>,
}

#[derive(Debug)]
struct Hierarchy {
    name: String,
    base: PathBuf,
    dirs: Vec<(PathBuf, Vec<pb::CgroupSetting>)>,
    /// Processes below base (pids as the image names them): their cgroup.
    members: HashMap<i32, PathBuf>,
}

fn refuse(why: String) -> RestoreError {
    RestoreError::Refused(format!("inventory.img: cgroups: {why}"))
}

/// A path below a cgroup: plain names only (the image is untrusted).
fn safe_rel(rel: &str) -> bool {
    rel.is_empty()
        || rel
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'))
}

/// `roots`: `--cgroup-root` values, `PATH` for every hierarchy or `CTL:PATH` for one
/// (`v2` names cgroup v2).
pub fn plan(inv: &pb::Inventory, roots: &[String]) -> R<Plan> {
    let mut out = Plan::default();
    for h in &inv.cgroups {
        let name = if h.controllers.is_empty() {
            "v2".to_string()
        } else {
            h.controllers.clone()
        };
        let chosen = roots
            .iter()
            .find_map(|r| r.strip_prefix(&format!("{name}:")))
            .or_else(|| {
                roots
                    .iter()
                    .find(|r| r.starts_with('/'))
                    .map(String::as_str)
            })
            .unwrap_or(&h.base);
        if !chosen.starts_with('/') || !safe_rel(chosen.trim_matches('/')) || chosen == "/" {
            return Err(refuse(format!(
                "cgroup root {chosen:?} of hierarchy {name}: not an absolute path below the \
                 hierarchy's root"
            )));
        }
        let mount = cgroup::mount_of(&h.controllers).ok_or_else(|| {
            refuse(format!(
                "hierarchy {name} (of cgroup {}) is not mounted here",
                h.base
            ))
        })?;
        let base = cgroup::dir(&mount, chosen);
        let mut dirs = Vec::new();
        for d in &h.dirs {
            if !safe_rel(&d.rel) {
                return Err(refuse(format!("{name}: bad cgroup name {:?}", d.rel)));
            }
            for s in &d.settings {
                if !cgroup::restorable(&s.file) && s.file != "devices.list" {
                    return Err(refuse(format!(
                        "{name}:{}: setting {:?} is not one ckpt writes",
                        d.rel, s.file
                    )));
                }
            }
            dirs.push((join(&base, &d.rel), d.settings.clone()));
        }
        if dirs.first().map(|(d, _)| d) != Some(&base) {
            return Err(refuse(format!(
                "{name}: its base cgroup is not listed first"
            )));
        }
        let mut members = HashMap::new();
        let mine = cgroup::membership(nix::unistd::getpid(), None)?;
        let ckpts = mine
            .iter()
            .find(|(c, _)| *c == h.controllers)
            .map(|(_, p)| cgroup::dir(&mount, p));
        for m in &h.members {
            if m.ckpts {
                let dir = ckpts.clone().ok_or_else(|| {
                    refuse(format!(
                        "{name}: ckpt is in no cgroup of it (pid {})",
                        m.pid
                    ))
                })?;
                members.insert(m.pid, dir);
                continue;
            }
            if !safe_rel(&m.rel) || !h.dirs.iter().any(|d| d.rel == m.rel) {
                return Err(refuse(format!(
                    "{name}: pid {} in unlisted cgroup {:?}",
                    m.pid, m.rel
                )));
            }
            members.insert(m.pid, join(&base, &m.rel));
        }
        out.hierarchies.push(Hierarchy {
            name,
            base,
            dirs,
            members,
        });
    }
    Ok(out)
}

fn join(base: &Path, rel: &str) -> PathBuf {
    if rel.is_empty() {
        base.to_path_buf()
    } else {
        base.join(rel)
    }
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.hierarchies.is_empty()
    }

    /// The cgroups the root's seed enters.
    pub fn root_dirs(&self) -> Vec<PathBuf> {
        self.hierarchies.iter().map(|h| h.base.clone()).collect()
    }
}

/// The cgroups a restore made: removed (children first) when dropped, unless kept.
#[derive(Default)]
pub struct Made {
    created: Vec<PathBuf>,
    keep: bool,
}

impl Made {
    /// The restore went through: they stay.
    pub fn keep(mut self) {
        self.keep = true;
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for d in self.created.iter().rev() {
            // The rollback has killed and reaped the tasks; a cgroup may still count
            // them for a moment.
            let start = Instant::now();
            while let Err(e) = std::fs::remove_dir(d) {
                if e.raw_os_error() != Some(libc::EBUSY) || start.elapsed() > Duration::from_secs(2)
                {
                    tracing::warn!("removing cgroup {}: {e}", d.display());
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Makes every cgroup of the plan (and the missing parents of each base) and writes the
/// settings.
pub fn make(plan: &Plan) -> R<Made> {
    let mut made = Made::default();
    for h in &plan.hierarchies {
        let mut missing = Vec::new();
        let mut p = h.base.as_path();
        while !p.exists() {
            missing.push(p.to_path_buf());
            p = match p.parent() {
                Some(q) => q,
                None => break,
            };
        }
        for d in missing.into_iter().rev() {
            mkdir(&d, &mut made)?;
        }
        for (dir, settings) in &h.dirs {
            if !dir.exists() {
                mkdir(dir, &mut made)?;
            }
            for s in settings {
                write_setting(dir, s).map_err(|e| {
                    refuse(format!(
                        "{}: {} = {:?}: {e}",
                        dir.display(),
                        s.file,
                        s.value.trim_end()
                    ))
                })?;
            }
        }
    }
    Ok(made)
}

fn mkdir(d: &Path, made: &mut Made) -> R<()> {
    std::fs::create_dir(d)
        .map_err(|e| RestoreError::Refused(format!("making cgroup {}: {e}", d.display())))?;
    made.created.push(d.to_path_buf());
    Ok(())
}

/// Writes one setting where the cgroup holds another value.
fn write_setting(dir: &Path, s: &pb::CgroupSetting) -> std::io::Result<()> {
    let path = dir.join(&s.file);
    let now = std::fs::read_to_string(&path).unwrap_or_default();
    let want = cgroup::writes(&s.file, &s.value);
    if cgroup::writes(&s.file, &now) == want {
        return Ok(());
    }
    match s.file.as_str() {
        "devices.list" => {
            std::fs::write(dir.join("devices.deny"), "a")?;
            for l in want {
                std::fs::write(dir.join("devices.allow"), l)?;
            }
        }
        "cgroup.subtree_control" => {
            let on: Vec<String> = s
                .value
                .split_whitespace()
                .map(|c| format!("+{c}"))
                .collect();
            std::fs::write(&path, on.join(" "))?;
        }
        _ => {
            for l in want {
                std::fs::write(&path, l)?;
            }
        }
    }
    Ok(())
}

/// In the root's seed, first: into its cgroups.
pub fn enter_root(dirs: &[PathBuf]) -> Result<(), String> {
    for d in dirs {
        cgroup::enter(d, 0).map_err(|e| format!("entering cgroup: {e}"))?;
    }
    Ok(())
}

/// Once the seeds have reported: the processes that lived below base go to their
/// cgroups (`pids`: as the image names them, `outer`: ckpt's pid of each).
pub fn place_others(plan: &Plan, pids: &[i32], outer: &[Pid]) -> R<()> {
    for h in &plan.hierarchies {
        for (p, o) in pids.iter().zip(outer) {
            if let Some(dir) = h.members.get(p) {
                cgroup::enter(dir, o.as_raw()).map_err(|e| {
                    RestoreError::Refused(format!("pid {p}: into cgroup {}: {e}", h.name))
                })?;
            }
        }
    }
    Ok(())
}

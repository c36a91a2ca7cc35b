//! `dump --freeze-cgroup PATH`: the tree's cgroup (v2) is frozen before the seize, so
//! nothing in it can fork or exit while the tree is walked, and thawed once every task is
//! seized and stopped (they stay in their ptrace-stops). Facts (shared notes,
//! lazy-and-freezer-facts.md): on cgroup v2, PTRACE_SEIZE + INTERRUPT of frozen tasks
//! works and the stops are reported while still frozen; on v1 they only arrive after the
//! thaw, which the seize here cannot wait for yet, so a v1 freezer is refused by name.
//! A cgroup the user had frozen already is left frozen (nothing is thawed that ckpt did
//! not freeze).
//!
//! Without the option, the root's own cgroup v2 is frozen when the tree is all it holds
//! (not the hierarchy's root, no cgroup below it, every process in it one of the tree's):
//! freezing it stops nothing else.

use crate::{refuse, DumpError};
use ckpt_sys::Pid;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the kernel gets to report the cgroup frozen.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// A cgroup ckpt froze; thawed when dropped (or by `thaw`).
pub struct Frozen {
    path: PathBuf,
    ours: bool,
}

fn read(path: &Path) -> Result<String, DumpError> {
    std::fs::read_to_string(path)
        .map_err(|e| refuse(format!("--freeze-cgroup: {}: {e}", path.display())))
}

/// The cgroup v2 path of `pid` (/proc/PID/cgroup's `0::` line).
fn cgroup_of(pid: Pid) -> Result<String, DumpError> {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .ok_or_else(|| refuse(format!("--freeze-cgroup: pid {pid} is in no cgroup v2")))
}

/// Where cgroup v2 hierarchies are mounted.
fn cgroup2_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

/// The mount point of the cgroup v2 hierarchy holding `path`.
fn mount_of(path: &Path) -> Result<PathBuf, DumpError> {
    cgroup2_mounts()
        .into_iter()
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .ok_or_else(|| {
            refuse(format!(
                "--freeze-cgroup: {} is not in a cgroup v2 hierarchy",
                path.display()
            ))
        })
}

/// The root's own cgroup v2, if the tree (`root` and `descendants`) is all it holds.
pub fn own_cgroup(root: Pid, descendants: &[Pid]) -> Option<PathBuf> {
    let rel = cgroup_of(root).ok()?;
    if rel == "/" {
        return None;
    }
    let mount = cgroup2_mounts().into_iter().next()?;
    let path = mount.join(rel.trim_start_matches('/'));
    let below = std::fs::read_dir(&path)
        .ok()?
        .filter_map(|e| e.ok())
        .any(|e| e.file_type().is_ok_and(|t| t.is_dir()));
    if below || !path.join("cgroup.freeze").exists() {
        return None;
    }
    let procs = std::fs::read_to_string(path.join("cgroup.procs")).ok()?;
    let all = procs.lines().all(|l| {
        l.trim()
            .parse::<i32>()
            .is_ok_and(|p| in_tree(Pid::from_raw(p), root, descendants))
    });
    all.then_some(path)
}

/// `pid` is the root, a listed descendant or (forked since the list was made) below one;
/// or it has exited meanwhile (nothing of it is left to freeze).
fn in_tree(pid: Pid, root: Pid, descendants: &[Pid]) -> bool {
    let mut p = pid;
    for _ in 0..64 {
        if p == root || descendants.contains(&p) {
            return true;
        }
        match ckpt_sys::proc::stat(p) {
            Ok(s) if s.ppid > 1 => p = Pid::from_raw(s.ppid),
            Ok(_) => return false,
            Err(_) => return true,
        }
    }
    false
}

impl Frozen {
    /// Freezes `path`, which must hold `root` (in it or below it), and waits until the
    /// kernel says it is frozen.
    pub fn freeze(path: &Path, root: Pid) -> Result<Frozen, DumpError> {
        let path = path
            .canonicalize()
            .map_err(|e| refuse(format!("--freeze-cgroup: {}: {e}", path.display())))?;
        if path.join("freezer.state").exists() {
            return Err(refuse(format!(
                "--freeze-cgroup: {} is a cgroup v1 freezer; not supported yet (use the \
                 process's cgroup v2)",
                path.display()
            )));
        }
        let mount = mount_of(&path)?;
        let rel = format!(
            "/{}",
            path.strip_prefix(&mount).unwrap_or(Path::new("")).display()
        );
        let rel = rel.trim_end_matches('/');
        let own = cgroup_of(root)?;
        if rel.is_empty() || !(own == rel || own.starts_with(&format!("{rel}/"))) {
            return Err(refuse(format!(
                "--freeze-cgroup: pid {root} is in cgroup {own}, not in {} (cgroup {})",
                path.display(),
                if rel.is_empty() { "/" } else { rel }
            )));
        }
        let control = path.join("cgroup.freeze");
        let was = read(&control)?;
        let ours = was.trim() == "0";
        let frozen = Frozen { path, ours };
        if ours {
            std::fs::write(&control, "1")
                .map_err(|e| refuse(format!("--freeze-cgroup: {}: {e}", control.display())))?;
        }
        let events = frozen.path.join("cgroup.events");
        let t0 = Instant::now();
        loop {
            ckpt_sys::abort::check()?;
            if read(&events)?.lines().any(|l| l.trim() == "frozen 1") {
                break;
            }
            if t0.elapsed() > FREEZE_TIMEOUT {
                return Err(refuse(format!(
                    "--freeze-cgroup: {} did not freeze within {} s (a task in \
                     uninterruptible sleep?)",
                    frozen.path.display(),
                    FREEZE_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        tracing::debug!(cgroup = %frozen.path.display(), ms = ckpt_images::units::ms(t0), "frozen");
        Ok(frozen)
    }

    /// Thaws the cgroup if ckpt froze it: the seized tasks stay in their ptrace-stops.
    pub fn thaw(mut self) -> Result<(), DumpError> {
        self.thaw_now()
    }

    fn thaw_now(&mut self) -> Result<(), DumpError> {
        if !self.ours {
            return Ok(());
        }
        self.ours = false;
        let control = self.path.join("cgroup.freeze");
        std::fs::write(&control, "0")
            .map_err(|e| DumpError::Lost(format!("thawing {}: {e}", control.display())))
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = self.thaw_now() {
            tracing::warn!("{e}");
        }
    }
}

//! `dump --freeze-cgroup PATH`: the tree's cgroup is frozen before the seize, so nothing
//! in it can fork or exit while the tree is walked, and thawed once every task is seized
//! (they stay in their ptrace-stops). Facts (shared notes, lazy-and-freezer-facts.md): on
//! cgroup v2, PTRACE_SEIZE + INTERRUPT of frozen tasks works and the stops are reported
//! while still frozen; on a v1 freezer they only arrive after the thaw, and each task
//! enters its stop before running any user code: so a v1 tree is seized and interrupted
//! whole while frozen, thawed, and its stops collected after (`preseize.rs`).
//! A v2 cgroup the user had frozen already is left frozen (nothing is thawed that ckpt
//! did not freeze); a v1 freezer frozen already is refused (its stops would never come).
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
    /// A cgroup v1 freezer (freezer.state), not a v2 cgroup.freeze.
    v1: bool,
}

/// Whether `path` is a cgroup v1 freezer.
pub fn is_v1(path: &Path) -> bool {
    path.join("freezer.state").exists()
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
        if is_v1(&path) {
            return Frozen::freeze_v1(path, root);
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
        let frozen = Frozen {
            path,
            ours,
            v1: false,
        };
        if ours {
            std::fs::write(&control, "1")
                .map_err(|e| refuse(format!("--freeze-cgroup: {}: {e}", control.display())))?;
        }
        let events = frozen.path.join("cgroup.events");
        frozen.wait_frozen(|| Ok(read(&events)?.lines().any(|l| l.trim() == "frozen 1")))?;
        Ok(frozen)
    }

    /// Waits until `is_frozen` says the kernel has frozen every task.
    fn wait_frozen(
        &self,
        is_frozen: impl Fn() -> Result<bool, DumpError>,
    ) -> Result<(), DumpError> {
        let t0 = Instant::now();
        while !is_frozen()? {
            ckpt_sys::abort::check()?;
            if t0.elapsed() > FREEZE_TIMEOUT {
                return Err(refuse(format!(
                    "--freeze-cgroup: {} did not freeze within {} s (a task in \
                     uninterruptible sleep?)",
                    self.path.display(),
                    FREEZE_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        tracing::debug!(cgroup = %self.path.display(), v1 = self.v1, ms = ckpt_images::units::ms(t0), "frozen");
        Ok(())
    }

    /// A v1 freezer holding `root` (its freezer line in /proc/PID/cgroup names `path` or
    /// a cgroup below it), frozen: FROZEN written, then freezer.state read until it says
    /// FROZEN (FREEZING meanwhile).
    fn freeze_v1(path: PathBuf, root: Pid) -> Result<Frozen, DumpError> {
        let rel = v1_relative(&path)?;
        let own = v1_cgroup_of(root)?;
        if !(own == rel || rel == "/" || own.starts_with(&format!("{rel}/"))) {
            return Err(refuse(format!(
                "--freeze-cgroup: pid {root} is in freezer cgroup {own}, not in {} \
                 (freezer cgroup {rel})",
                path.display()
            )));
        }
        let state = path.join("freezer.state");
        if read(&state)?.trim() != "THAWED" {
            return Err(refuse(format!(
                "--freeze-cgroup: {} is frozen already (a v1 freezer: the tasks' ptrace \
                 stops only come once it thaws); thaw it first",
                path.display()
            )));
        }
        let frozen = Frozen {
            path,
            ours: true,
            v1: true,
        };
        std::fs::write(&state, "FROZEN")
            .map_err(|e| refuse(format!("--freeze-cgroup: {}: {e}", state.display())))?;
        frozen.wait_frozen(|| Ok(read(&state)?.trim() == "FROZEN"))?;
        Ok(frozen)
    }

    pub fn is_v1(&self) -> bool {
        self.v1
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
        let (control, value) = if self.v1 {
            (self.path.join("freezer.state"), "THAWED")
        } else {
            (self.path.join("cgroup.freeze"), "0")
        };
        std::fs::write(&control, value)
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

/// The v1 freezer cgroup of `pid` (its /proc/PID/cgroup line `N:...freezer...:PATH`).
fn v1_cgroup_of(pid: Pid) -> Result<String, DumpError> {
    let text = read(Path::new(&format!("/proc/{pid}/cgroup")))?;
    text.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
            controllers
                .split(',')
                .any(|c| c == "freezer")
                .then(|| path.to_string())
        })
        .ok_or_else(|| {
            refuse(format!(
                "--freeze-cgroup: pid {pid} is in no v1 freezer cgroup"
            ))
        })
}

/// `path` as the v1 freezer hierarchy names it (the mount's own root in the hierarchy,
/// joined with `path` below the mount point; "/" for the hierarchy's root).
fn v1_relative(path: &Path) -> Result<String, DumpError> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (point, root) = mounts
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mut post = post.split(' ');
            let (fstype, opts) = (post.next()?, post.nth(1)?);
            let mut pre = pre.split(' ');
            let root = PathBuf::from(pre.nth(3)?);
            let point = PathBuf::from(pre.next()?);
            (fstype == "cgroup" && opts.split(',').any(|o| o == "freezer")).then_some((point, root))
        })
        .filter(|(point, _)| path.starts_with(point))
        .max_by_key(|(point, _)| point.as_os_str().len())
        .ok_or_else(|| {
            refuse(format!(
                "--freeze-cgroup: {} is not in a v1 freezer hierarchy",
                path.display()
            ))
        })?;
    let below = path.strip_prefix(&point).unwrap_or(Path::new(""));
    let rel = root.join(below).display().to_string();
    let rel = rel.trim_end_matches('/');
    Ok(if rel.is_empty() { "/" } else { rel }.to_string())
}

//! The destination's restore of a migration's last round, watched.
//!
//! The source waits for the verdict with its tree stopped; if it gives up first (SIGINT,
//! its own failure, a link that dies) it resumes its tree, and a copy restored here
//! afterwards would run the workload twice. So while `ckpt restore --new-pidns` runs,
//! the link is watched too: an abort, anything else, or the link's end stops the restore
//! and kills whatever of the copy already runs. The restore has `RESTORE_LIMIT`, which
//! the source's wait outlasts.

use crate::error::{HaulError, R};
use crate::msg::{Msg, RESTORE_LIMIT};
use crate::wire::Link;
use std::path::Path;
use std::time::Instant;

/// A copy restored and running here.
pub(crate) struct Copy {
    /// Its root's pid (outside its pid namespace).
    pub pid: i32,
    pub restore_ms: u32,
}

/// How the wait for the restore ended.
enum Ended {
    Exited(std::io::Result<std::process::ExitStatus>),
    TooLong,
    /// The peer sent something (true) or closed the link (false).
    Peer(R<bool>),
}

/// A `ckpt restore` under way.
pub(crate) struct Spawned {
    pub child: tokio::process::Child,
    pub pidfile: std::path::PathBuf,
    log: std::path::PathBuf,
    t: Instant,
}

/// Starts `ckpt restore -D r<last> -d --new-pidns --pidfile` (and `extra`), its log in
/// `dir`.
pub(crate) fn spawn(ckpt: &Path, dir: &Path, last: u16, extra: &[&std::ffi::OsStr]) -> R<Spawned> {
    let t = Instant::now();
    let pidfile = dir.join("pid");
    let log = dir.join("restore.log");
    let err =
        std::fs::File::create(&log).map_err(|e| HaulError::io(format!("{}", log.display()), e))?;
    let mut cmd = std::process::Command::new(ckpt);
    // A serve that dies mid-restore (killed, crashed) lost the session: the source
    // resumes its tree, so the restore must not finish after it (a second copy, no one
    // to kill it). Dead before the release, the restore takes its namespace with it
    // (its init exits on the EOF of ckpt's pipe).
    ckpt_sys::process::die_with_parent(&mut cmd);
    let child = tokio::process::Command::from(cmd)
        .arg("restore")
        .arg("-D")
        .arg(dir.join(format!("r{last}")))
        .args(["-d", "--new-pidns", "--pidfile"])
        .arg(&pidfile)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HaulError::io(format!("running {} restore", ckpt.display()), e))?;
    Ok(Spawned {
        child,
        pidfile,
        log,
        t,
    })
}

impl Spawned {
    /// What the restore's exit means: the copy running, or its last error line.
    pub(crate) fn outcome(&self, status: std::process::ExitStatus) -> R<Copy> {
        let restore_ms = self.t.elapsed().as_millis() as u32;
        if !status.success() {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let line = text
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no error line")
                .trim_start_matches("ckpt: error: ")
                .to_string();
            return Err(HaulError::Protocol(format!(
                "restore failed ({status}): {line}"
            )));
        }
        let pid = read_pid(&self.pidfile)
            .ok_or_else(|| HaulError::Protocol("the restore wrote no pid".into()))?;
        Ok(Copy { pid, restore_ms })
    }
}

/// Restores `dir`'s round `last` with `ckpt`, the link watched (see the module doc).
pub(crate) async fn restore(link: &mut Link, ckpt: &Path, dir: &Path, last: u16) -> R<Copy> {
    // One process, not a container: restored lazily (`restore --lazy`: it runs as soon
    // as all but its anonymous memory is back, which a pager then fills from the
    // files here): the downtime ends milliseconds into the restore.
    let lazy = lazy_restorable(&dir.join(format!("r{last}")));
    let extra: &[&std::ffi::OsStr] = if lazy { &["--lazy".as_ref()] } else { &[] };
    let mut sp = spawn(ckpt, dir, last, extra)?;
    let (child, pidfile) = (&mut sp.child, sp.pidfile.clone());
    let ended = tokio::select! {
        s = child.wait() => Ended::Exited(s),
        _ = tokio::time::sleep(RESTORE_LIMIT) => Ended::TooLong,
        spoke = link.peer_spoke() => Ended::Peer(spoke),
    };
    let status = match ended {
        Ended::Exited(s) => s.map_err(|e| HaulError::io("waiting for the restore", e))?,
        Ended::TooLong => {
            undo(child, &pidfile).await;
            return Err(HaulError::Protocol(format!(
                "the restore took over {} s: stopped, no copy runs here",
                RESTORE_LIMIT.as_secs()
            )));
        }
        Ended::Peer(spoke) => {
            let why = match spoke {
                Ok(true) => match link.recv().await.and_then(|(k, b)| Msg::decode(k, b)) {
                    Ok(Msg::Abort(w)) => format!("the source gave up during the restore: {w}"),
                    Ok(other) => format!("unexpected {other:?} during the restore"),
                    Err(e) => format!("during the restore: {e}"),
                },
                Ok(false) => "the source closed the link during the restore".to_string(),
                Err(e) => format!("during the restore: {e}"),
            };
            undo(child, &pidfile).await;
            return Err(HaulError::Protocol(format!(
                "{why}; the restore is stopped, no copy runs here"
            )));
        }
    };
    sp.outcome(status)
}

/// Whether the image in `dir` is one process outside a container (what `restore --lazy`
/// takes).
pub(crate) fn lazy_restorable(dir: &Path) -> bool {
    ckpt_images::ImageDir::open_unverified(dir)
        .is_ok_and(|d| d.inventory().pids.len() == 1 && d.inventory().container.is_none())
}

fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// Stops a restore that must not finish: SIGKILL to it (before it releases the tree, its
/// namespace's init then exits and the kernel kills the namespace), then to the copy if
/// it was released already.
pub(crate) async fn undo(child: &mut tokio::process::Child, pidfile: &Path) {
    let _ = child.start_kill();
    let _ = child.wait().await;
    if let Some(pid) = read_pid(pidfile) {
        kill_copy(pid);
    }
}

/// Kills a restored copy: its namespace's init (ckpt's `ckpt-init`, the root's parent),
/// which takes every process of the namespace with it; the root alone if that is not its
/// parent.
pub(crate) fn kill_copy(pid: i32) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let init = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|p| p.trim().parse::<i32>().ok())
        .filter(|&p| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.trim_end() == "ckpt-init")
        });
    let target = init.unwrap_or(pid);
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(target),
        nix::sys::signal::Signal::SIGKILL,
    );
}

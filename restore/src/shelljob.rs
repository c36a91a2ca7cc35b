//! `--shell-job`: a job dumped from a shell's terminal (its pty slave, whose master was
//! outside the tree: `dump/src/fdtable/tty.rs`) is attached to the terminal ckpt runs in.
//! ckpt's stdin must be that terminal and ckpt's controlling terminal (the root stays in
//! ckpt's session, which is how it gets it as its own controlling terminal); the job's
//! termios and window size are set on it, and each description the job had of its
//! terminal is opened again from it (a description of its own: the job's status flags
//! are not the shell's). The foreground group, if it was the job's, is taken by its
//! leader's seed (`fdtable/tty.rs` `take`).

use crate::RestoreError;
use ckpt_images::pb;
use ckpt_sys::tty;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Whether `d` is the job's terminal.
pub fn is_job_terminal(d: &pb::FileDesc) -> bool {
    d.kind == pb::FdKind::FdTty as i32 && !d.external.is_empty()
}

/// ckpt's own descriptions of its terminal for the job's ones (description id, file),
/// the terminal set up as the job had it. None to open without `--shell-job` (the plan
/// then refuses, saying so) or when `--inherit-fd` hands one over.
pub fn attach(
    descs: &[pb::FileDesc],
    shell_job: bool,
    inherit: &[(RawFd, String)],
) -> Result<Vec<(u64, File)>, RestoreError> {
    let job: Vec<&pb::FileDesc> = descs
        .iter()
        .filter(|d| is_job_terminal(d) && !inherit.iter().any(|(_, k)| *k == d.external))
        .collect();
    if job.is_empty() || !shell_job {
        return Ok(Vec::new());
    }
    let refuse = |m: String| RestoreError::Refused(format!("--shell-job: {m}"));
    let stdin = std::io::stdin();
    let t = job[0]
        .tty
        .as_ref()
        .ok_or_else(|| refuse("no terminal record".into()))?;
    if !nix::unistd::isatty(stdin.as_raw_fd()).unwrap_or(false) {
        return Err(refuse(format!(
            "ckpt's stdin is not a terminal; the job's terminal (/dev/pts/{} at the dump) is \
             attached to the one ckpt runs in",
            t.index
        )));
    }
    let sid = nix::sys::termios::tcgetsid(stdin.as_fd()).ok();
    if sid != Some(nix::unistd::getsid(None).map_err(|e| refuse(format!("getsid: {e}")))?) {
        return Err(refuse(
            "ckpt's stdin is a terminal but not the controlling terminal of ckpt's session \
             (the job joins that session)"
                .into(),
        ));
    }
    let path = std::fs::read_link("/proc/self/fd/0")
        .map_err(|e| refuse(format!("/proc/self/fd/0: {e}")))?;
    let e = |e: ckpt_sys::Error| refuse(format!("{}: {e}", path.display()));
    {
        // As a background job would be stopped by SIGTTOU for these: blocked meanwhile.
        let _quiet = BlockTtou::new();
        if !t.termios.is_empty() {
            tty::set_termios(stdin.as_fd(), &t.termios).map_err(e)?;
        }
        let ws = [t.rows, t.cols, t.xpixel, t.ypixel].map(|v| v as u16);
        tty::set_winsize(stdin.as_fd(), ws).map_err(e)?;
    }
    let mut out = Vec::with_capacity(job.len());
    for d in job {
        let mode = d.flags & libc::O_ACCMODE as u32;
        let f = std::fs::OpenOptions::new()
            .read(mode != libc::O_WRONLY as u32)
            .write(mode != libc::O_RDONLY as u32)
            .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| refuse(format!("{}: {e}", path.display())))?;
        tracing::debug!(desc = d.id, fd = f.as_raw_fd(), tty = %path.display(), "job terminal");
        out.push((d.id, f));
    }
    Ok(out)
}

/// SIGTTOU blocked until dropped.
struct BlockTtou(Option<nix::sys::signal::SigSet>);

impl BlockTtou {
    fn new() -> BlockTtou {
        use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
        let mut block = SigSet::empty();
        block.add(Signal::SIGTTOU);
        let mut old = SigSet::empty();
        BlockTtou(
            sigprocmask(SigmaskHow::SIG_BLOCK, Some(&block), Some(&mut old))
                .ok()
                .map(|()| old),
        )
    }
}

impl Drop for BlockTtou {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            let _ = nix::sys::signal::sigprocmask(
                nix::sys::signal::SigmaskHow::SIG_SETMASK,
                Some(&old),
                None,
            );
        }
    }
}

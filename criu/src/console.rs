//! LXC's console at a dump: `--external tty[RDEV:DEV]` (hex, CRIU's key) names the pty of
//! the host's devpts that LXC's monitor gives the container as /dev/console (its master
//! is the monitor's), and `--ext-mount-map /dev/console:console` the bind of it there.
//! The bind is an external mount like any other (its name kept, `mount_names.rs`), bound
//! at the restore from the monitor's new console pty. A process holding the terminal
//! itself would need it handed over (`--inherit-fd fd[N]:tty[...]`), which ckpt does not
//! do yet: refused by name before anything is stopped.

use crate::error::{invalid, unsupported, CriuError};
use std::os::unix::fs::MetadataExt;

/// `tty[RDEV:DEV]` as (rdev, dev).
pub fn parse(v: &str) -> Result<(u64, u64), CriuError> {
    let bad = || invalid(format!("--external {v}: expected tty[RDEV:DEV] (hex)"));
    let inner = v
        .strip_prefix("tty[")
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(bad)?;
    let (r, d) = inner.split_once(':').ok_or_else(bad)?;
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
    Ok((hex(r)?, hex(d)?))
}

/// Refuses when a process of `root`'s tree holds one of `ttys` (rdev, dev) open.
pub fn check_not_held(root: i32, ttys: &[(String, (u64, u64))]) -> Result<(), CriuError> {
    if ttys.is_empty() {
        return Ok(());
    }
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(md) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if let Some((key, _)) = ttys.iter().find(|(_, t)| *t == (md.rdev(), md.dev())) {
                return Err(unsupported(format!(
                    "--external {key}: pid {pid} holds it (fd {}): handing the console over \
                     at restore (--inherit-fd) is not supported by ckpt",
                    fd.file_name().to_string_lossy()
                )));
            }
        }
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            todo.extend(
                kids.split_whitespace()
                    .filter_map(|k| k.parse::<i32>().ok()),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_lxc_keys() {
        assert_eq!(super::parse("tty[8801:1a]").unwrap(), (0x8801, 0x1a));
        assert!(super::parse("tty[88:]").is_err());
        assert!(super::parse("veth[eth0]:x").is_err());
    }
}

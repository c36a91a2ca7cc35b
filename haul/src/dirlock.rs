//! `haul serve`'s hold on `--dir`: a shared flock for as long as it serves. A server that
//! gets the lock exclusively first is the only one on that directory: what migration
//! directories (`m<digits and dashes>`) are there were left by a server that died, and it
//! removes them before it downgrades to shared. A server starting beside a live one
//! leaves everything alone.

use crate::error::{HaulError, R};
use nix::fcntl::{Flock, FlockArg};
use std::path::Path;

/// The lock, held until dropped.
pub(crate) struct DirLock {
    _held: Flock<std::fs::File>,
}

/// Locks `dir` (shared), after removing stale migration directories if no other server
/// holds it.
pub(crate) fn take(dir: &Path) -> R<DirLock> {
    let err = |e: std::io::Error| HaulError::io(format!("locking --dir {}", dir.display()), e);
    let f = std::fs::File::open(dir).map_err(err)?;
    let lock = match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
        Ok(l) => {
            sweep(dir);
            l.relock(FlockArg::LockShared)
                .map_err(|e| err(std::io::Error::from(e)))?;
            l
        }
        // Another server serves from here: its directories are live.
        Err((f, _)) => {
            Flock::lock(f, FlockArg::LockShared).map_err(|(_, e)| err(std::io::Error::from(e)))?
        }
    };
    Ok(DirLock { _held: lock })
}

/// A name `serve` gives a migration's directory.
fn is_migration(name: &str) -> bool {
    name.strip_prefix('m')
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|c| c.is_ascii_digit() || c == b'-'))
}

fn sweep(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if is_migration(&name) && e.file_type().is_ok_and(|t| t.is_dir()) {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => tracing::warn!("removed {name}: left by a server that ended"),
                Err(err) => tracing::warn!("{name} (left by a server that ended): {err}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn migration_names() {
        assert!(super::is_migration("m123-0-1700000000000"));
        assert!(super::is_migration("m0-17"));
        for other in ["m", "mine", "music", "m1/x", "rfoo", "m-1a"] {
            assert!(!super::is_migration(other), "{other}");
        }
    }
}

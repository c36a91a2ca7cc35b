use nix::errno::Errno;
use std::path::PathBuf;

/// A failed kernel call, named by what was being done and to which task.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {errno}")]
    Sys { what: String, errno: Errno },
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn sys(what: impl Into<String>, errno: Errno) -> Self {
        Error::Sys {
            what: what.into(),
            errno,
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Sys { errno, .. } => Some(*errno),
            Error::Io { err, .. } => err.raw_os_error().map(Errno::from_raw),
            Error::Other(_) => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Adds "what" context to a nix result.
pub(crate) trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Ctx<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::sys(what(), e))
    }
}

use std::path::PathBuf;

/// Everything that can be wrong with an image set. Each variant names the file, and the
/// record where there is one, so an operator knows what to look at.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{path}: not a ckpt image (bad magic)")]
    BadMagic { path: PathBuf },
    #[error("{path}: file is {found:?}, expected {expected:?}")]
    WrongKind {
        path: PathBuf,
        expected: crate::Kind,
        found: u16,
    },
    #[error("{path}: image format version {found}, this ckpt reads version {supported}")]
    Version {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    #[error("{path}: truncated {what}")]
    Truncated { path: PathBuf, what: String },
    #[error("{path}: record {index}: length {len} exceeds the limit of {limit} bytes")]
    RecordTooLarge {
        path: PathBuf,
        index: usize,
        len: u64,
        limit: u64,
    },
    #[error("{path}: record {index}: cannot decode {message}: {reason}")]
    Decode {
        path: PathBuf,
        index: usize,
        message: &'static str,
        reason: String,
    },
    #[error("{path}: checksum mismatch (image corrupted)")]
    Checksum { path: PathBuf },
    #[error("{path}: size {found} bytes, inventory says {expected}")]
    Size {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, ImageError>;

impl ImageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io {
            path: path.into(),
            err: source,
        }
    }
    pub fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        ImageError::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

//! What can go wrong in a migration, each a line that says where.

#[derive(Debug, thiserror::Error)]
pub enum HaulError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    /// The peer sent nothing (or took nothing) for the whole timeout.
    #[error("{0}: no progress for {1} s (peer stalled, or the link is cut)")]
    Stalled(String, u64),
    /// The peer broke the protocol (garbage, a size it then exceeds, a bad name, ...).
    #[error("{0}")]
    Protocol(String),
    /// The Noise handshake failed: another key, or no ckpt at the other end.
    #[error("handshake failed ({0}): the peer does not hold the same key")]
    Handshake(String),
    #[error("{0}")]
    Key(String),
    #[error(transparent)]
    Dump(#[from] ckpt_dump::DumpError),
    #[error(transparent)]
    Image(#[from] ckpt_images::ImageError),
    /// The destination could not restore (its own line).
    #[error("destination: {0}")]
    Destination(String),
    /// SIGINT/SIGTERM/SIGHUP to `ckpt migrate`.
    #[error("interrupted by {0}")]
    Interrupted(String),
}

impl HaulError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        HaulError::Io {
            what: what.into(),
            source,
        }
    }
}

/// SIGINT/SIGTERM/SIGHUP arrived (`ckpt_sys::abort`, armed by `ckpt migrate`): the error
/// to stop with, reported (so that disarming does not raise it again).
pub(crate) fn interrupted() -> Option<HaulError> {
    let sig = ckpt_sys::abort::requested()?;
    let _ = ckpt_sys::abort::check();
    Some(HaulError::Interrupted(format!("{sig}")))
}

pub type R<T> = Result<T, HaulError>;

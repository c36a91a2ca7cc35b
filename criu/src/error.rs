//! What goes wrong when ckpt stands in for CRIU, with the errno a CRIU client gets.

/// Failures of a CRIU request, each with the errno sent back as cr_errno.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    /// An option or request ckpt does not implement (EOPNOTSUPP).
    #[error("{0}")]
    Unsupported(String),
    /// A malformed request or command line (EINVAL).
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Dump(#[from] ckpt_dump::DumpError),
    #[error(transparent)]
    Restore(#[from] ckpt_restore::RestoreError),
    #[error(transparent)]
    Sys(#[from] ckpt_sys::Error),
    #[error(transparent)]
    Image(#[from] ckpt_images::ImageError),
}

impl CriuError {
    /// The errno a client sees: the kernel's when a call failed, else what the kind means.
    pub fn errno(&self) -> i32 {
        let sys = match self {
            CriuError::Sys(e)
            | CriuError::Dump(ckpt_dump::DumpError::Sys(e))
            | CriuError::Restore(ckpt_restore::RestoreError::Sys(e)) => e.errno(),
            _ => None,
        };
        match (sys, self) {
            (Some(e), _) => e as i32,
            (None, CriuError::Invalid(_)) => libc::EINVAL,
            (None, CriuError::Dump(ckpt_dump::DumpError::Lost(_))) => libc::ESRCH,
            (None, _) => libc::EOPNOTSUPP,
        }
    }
}

pub fn unsupported(msg: impl Into<String>) -> CriuError {
    CriuError::Unsupported(msg.into())
}

pub fn invalid(msg: impl Into<String>) -> CriuError {
    CriuError::Invalid(msg.into())
}

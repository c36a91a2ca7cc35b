//! Restore: verify images -> seed -> puppet -> release.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub dir: PathBuf,
    pub detach: bool,
    pub pidfile: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Detached(i32),
    Exited(i32),
    Killed(i32),
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Sys(#[from] ckpt_sys::Error),
    #[error(transparent)]
    Image(#[from] ckpt_images::ImageError),
    #[error("{0}")]
    Refused(String),
}

pub fn restore(_opts: &RestoreOptions) -> Result<Outcome, RestoreError> {
    Err(RestoreError::Refused("not implemented yet".into()))
}

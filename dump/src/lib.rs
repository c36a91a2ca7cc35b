//! Checkpoint of a process: freeze -> seize -> collect -> write images -> release.

use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub pid: i32,
    pub dir: PathBuf,
    pub leave_running: bool,
}

#[derive(Debug, Default, Clone)]
pub struct DumpStats {
    pub pages: u64,
    pub bytes: u64,
    pub frozen_ms: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("{0}")]
    Sys(#[from] ckpt_sys::Error),
    #[error(transparent)]
    Image(#[from] ckpt_images::ImageError),
    #[error("{0}")]
    Refused(String),
}

pub fn dump(_opts: &DumpOptions) -> Result<DumpStats, DumpError> {
    Err(DumpError::Refused("not implemented yet".into()))
}

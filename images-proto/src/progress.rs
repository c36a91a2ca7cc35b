//! How long-running copies report how far they are, without the libraries knowing how it is
//! shown (a progress bar on a terminal, nothing in a pipe).

/// Receives progress of one copy at a time, in bytes. Called from the copying thread.
pub trait Progress: Sync {
    fn begin(&self, _what: &str, _total_bytes: u64) {}
    fn advance(&self, _bytes: u64) {}
    fn end(&self) {}
}

/// Reports nothing.
pub struct Quiet;

impl Progress for Quiet {}

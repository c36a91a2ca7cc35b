//! Everything that stands between a process tree and a dump, collected rather than
//! returned at the first one: `ckpt check -t` lists them all, and a dump refuses with the
//! same list (naming the first, counting the rest). Every refusal of the live state of a
//! process is a `push` here, so the check and the dump can never disagree.

use crate::DumpError;
use ckpt_sys::Pid;

/// One reason a process cannot be dumped: whose (pid), what (an fd and what it is, a
/// mapping, its threads, ...) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocker {
    pub pid: i32,
    /// e.g. "fd 4 (tcp 127.0.0.1:8765 LISTEN)", "mapping 0x7f..-0x7f.. /SYSV00000000".
    pub what: String,
    /// e.g. "sockets are not supported yet".
    pub why: String,
}

impl std::fmt::Display for Blocker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {}: {}: {}", self.pid, self.what, self.why)
    }
}

impl From<Blocker> for DumpError {
    fn from(b: Blocker) -> DumpError {
        DumpError::Refused(b.to_string())
    }
}

/// The blockers found so far, in the order found (root process first).
#[derive(Debug, Default)]
pub struct Blockers {
    pub list: Vec<Blocker>,
}

impl Blockers {
    pub fn push(&mut self, pid: Pid, what: impl Into<String>, why: impl Into<String>) {
        self.list.push(Blocker {
            pid: pid.as_raw(),
            what: what.into(),
            why: why.into(),
        });
    }

    pub fn add(&mut self, b: Blocker) {
        self.list.push(b);
    }

    /// Ok if nothing blocks a dump of the tree of `root`; otherwise one line naming the
    /// first blocker and how many more `ckpt check -t` would list.
    pub fn refuse_if_any(&self, root: Pid) -> Result<(), DumpError> {
        let Some(first) = self.list.first() else {
            return Ok(());
        };
        let more = match self.list.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more: `ckpt check -t {root}` lists them all)"),
        };
        Err(DumpError::Refused(format!("{first}{more}")))
    }
}

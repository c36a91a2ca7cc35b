//! Parsers of the /proc files that show per-task kernel state beyond the basics: the
//! `lock:` lines of /proc/PID/fdinfo/N (and /proc/locks), /proc/PID/timers. Dump reads
//! them to record the state, restore to verify it came back.

use crate::error::{Error, Result};
use nix::unistd::Pid;

/// One lock as /proc/locks or an fdinfo `lock:` line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockLine {
    /// FLOCK, POSIX, OFDLCK, LEASE, DELEG, ...
    pub class: String,
    /// ADVISORY for locks; ACTIVE, BREAKING or BREAKER for leases.
    pub mode: String,
    /// READ, WRITE or UNLCK.
    pub access: String,
    /// The pid the kernel recorded (-1 for OFD locks).
    pub pid: i64,
    /// "maj:min:ino" of the locked inode (hex device numbers).
    pub inode: String,
    pub start: u64,
    /// Inclusive end; u64::MAX for "EOF".
    pub end: u64,
}

/// Parses "1: FLOCK  ADVISORY  WRITE 11697 fe:00:10011447 0 EOF" (the part after
/// `lock:\t` in fdinfo, or a whole /proc/locks line). Blocked waiters ("1: -> ...")
/// and unparsable lines give None.
pub fn parse_lock_line(line: &str) -> Option<LockLine> {
    let mut t = line.split_whitespace();
    let _id = t.next()?.strip_suffix(':')?;
    let class = t.next()?;
    if class == "->" {
        return None;
    }
    let mode = t.next()?;
    let access = t.next()?;
    let pid = t.next()?.parse().ok()?;
    let inode = t.next()?.to_string();
    let start = t.next()?.parse().ok()?;
    let end = match t.next()? {
        "EOF" => u64::MAX,
        n => n.parse().ok()?,
    };
    Some(LockLine {
        class: class.into(),
        mode: mode.into(),
        access: access.into(),
        pid,
        inode,
        start,
        end,
    })
}

/// The locks held through the open file description of `fd` of `pid`: the kernel lists
/// in fdinfo only the locks whose file is that description (and, for POSIX locks, whose
/// owner is the task's fd table), so each line belongs to this fd for certain.
pub fn fd_locks(pid: Pid, fd: i32) -> Result<Vec<LockLine>> {
    let path = format!("/proc/{pid}/fdinfo/{fd}");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    fd_locks_of(&text).map_err(|l| Error::Other(format!("{path}: unreadable lock line {l:?}")))
}

/// The `lock:` lines of an fdinfo text; Err(line) for one that does not parse.
pub fn fd_locks_of(text: &str) -> std::result::Result<Vec<LockLine>, String> {
    let mut out = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("lock:") {
            if rest.contains("->") {
                continue;
            }
            out.push(parse_lock_line(rest).ok_or_else(|| l.to_string())?);
        }
    }
    Ok(out)
}

/// Every lock of /proc/locks (waiters left out).
pub fn all_locks() -> Result<Vec<LockLine>> {
    use std::io::Read;
    let path = "/proc/locks";
    // Every read(2) of it takes file_rwsem for writing again: a buffer large enough for
    // the whole list at once, not read_to_string's 32-byte first probe and doublings.
    let mut bytes = Vec::with_capacity(64 << 10);
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(text.lines().filter_map(parse_lock_line).collect())
}

/// One entry of /proc/PID/timers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimerLine {
    pub id: i32,
    pub signo: i32,
    pub sigev_value: u64,
    /// "signal", "none" or "thread" (the sigev_notify without SIGEV_THREAD_ID).
    pub notify: String,
    /// SIGEV_THREAD_ID: "tid"; else "pid".
    pub target_kind: String,
    pub target: i32,
    pub clock: i32,
}

pub const SIGEV_SIGNAL: i32 = 0;
pub const SIGEV_NONE: i32 = 1;
pub const SIGEV_THREAD: i32 = 2;
pub const SIGEV_THREAD_ID: i32 = 4;

impl TimerLine {
    /// sigev_notify as timer_create(2) takes it.
    pub fn sigev_notify(&self) -> Option<i32> {
        let base = match self.notify.as_str() {
            "signal" => SIGEV_SIGNAL,
            "none" => SIGEV_NONE,
            "thread" => SIGEV_THREAD,
            _ => return None,
        };
        match self.target_kind.as_str() {
            "pid" => Some(base),
            "tid" => Some(base | SIGEV_THREAD_ID),
            _ => None,
        }
    }
}

/// /proc/PID/timers of `pid` (newest first, as the kernel lists them).
pub fn timers(pid: Pid) -> Result<Vec<TimerLine>> {
    let path = format!("/proc/{pid}/timers");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    parse_timers(&text).map_err(|r| Error::Other(format!("{path}: {r}")))
}

/// Parses the text of /proc/PID/timers:
/// ```text
/// ID: 0
/// signal: 10/0000000000001234
/// notify: signal/pid.11697
/// ClockID: 1
/// ```
pub fn parse_timers(text: &str) -> std::result::Result<Vec<TimerLine>, String> {
    let mut out: Vec<TimerLine> = Vec::new();
    for line in text.lines() {
        let bad = || format!("bad line {line:?}");
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k == "ID" {
            out.push(TimerLine {
                id: v.parse().map_err(|_| bad())?,
                ..Default::default()
            });
            continue;
        }
        let Some(t) = out.last_mut() else {
            return Err(bad());
        };
        match k {
            "signal" => {
                let (s, val) = v.split_once('/').ok_or_else(bad)?;
                t.signo = s.parse().map_err(|_| bad())?;
                t.sigev_value = u64::from_str_radix(val, 16).map_err(|_| bad())?;
            }
            "notify" => {
                let (mode, target) = v.split_once('/').ok_or_else(bad)?;
                let (kind, n) = target.split_once('.').ok_or_else(bad)?;
                t.notify = mode.into();
                t.target_kind = kind.into();
                t.target = n.parse().map_err(|_| bad())?;
            }
            "ClockID" => t.clock = v.parse().map_err(|_| bad())?,
            _ => return Err(format!("unknown field {k:?}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines() {
        let l = parse_lock_line("1: POSIX  ADVISORY  WRITE 11697 fe:00:10011448 10 14").unwrap();
        assert_eq!(
            (l.class.as_str(), l.start, l.end, l.pid),
            ("POSIX", 10, 14, 11697)
        );
        let l = parse_lock_line("2: OFDLCK ADVISORY  READ -1 fe:00:10011448 100 EOF").unwrap();
        assert_eq!((l.access.as_str(), l.end, l.pid), ("READ", u64::MAX, -1));
        assert!(parse_lock_line("1: -> FLOCK  ADVISORY  WRITE 5 fe:00:1 0 EOF").is_none());
        let text = "pos:\t0\nflags:\t0120000\nlock:\t1: LEASE  ACTIVE    READ 11697 fe:00:10011449 0 EOF\n";
        let v = fd_locks_of(text).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].class.as_str(), v[0].mode.as_str()),
            ("LEASE", "ACTIVE")
        );
    }

    #[test]
    fn timers_text() {
        let t = parse_timers(
            "ID: 1\nsignal: 0/0000000000000000\nnotify: none/pid.11697\nClockID: -6\n\
             ID: 0\nsignal: 10/0000000000001234\nnotify: signal/tid.11697\nClockID: 1\n",
        )
        .unwrap();
        assert_eq!(t.len(), 2);
        assert_eq!(
            (t[0].id, t[0].clock, t[0].sigev_notify()),
            (1, -6, Some(SIGEV_NONE))
        );
        assert_eq!(t[1].sigev_value, 0x1234);
        assert_eq!(t[1].sigev_notify(), Some(SIGEV_SIGNAL | SIGEV_THREAD_ID));
        assert!(parse_timers("ID: x\n").is_err());
    }
}

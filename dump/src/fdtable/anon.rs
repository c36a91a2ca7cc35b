//! eventfd, signalfd and timerfd: their whole state is in /proc/PID/fdinfo (read, never
//! consumed: a `--leave-running` dump takes no count or expiration from the process).

use super::FdCtx;
use crate::DumpError;
use ckpt_images::pb;

/// The value of `key:` in an fdinfo text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// The fdinfo text the table read for this fd (its key) in this pass, or read again when
/// it holds none.
fn fdinfo(ctx: &FdCtx) -> Result<String, DumpError> {
    if !ctx.info.text.is_empty() {
        return Ok(ctx.info.text.clone());
    }
    Ok(ckpt_sys::proc::read_trimmed(&format!(
        "/proc/{}/fdinfo/{}",
        ctx.pid, ctx.fd
    ))?)
}

fn missing(ctx: &FdCtx, what: &str) -> DumpError {
    crate::refuse(format!(
        "pid {}: fd {}: /proc/{}/fdinfo/{} has no readable {what}",
        ctx.pid, ctx.fd, ctx.pid, ctx.fd
    ))
}

pub fn eventfd(ctx: &FdCtx) -> Result<pb::EventfdState, DumpError> {
    let text = fdinfo(ctx)?;
    let count = field(&text, "eventfd-count")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| missing(ctx, "eventfd-count"))?;
    let semaphore = field(&text, "eventfd-semaphore")
        .map(|v| v == "1")
        .ok_or_else(|| missing(ctx, "eventfd-semaphore"))?;
    Ok(pb::EventfdState { count, semaphore })
}

pub fn signalfd(ctx: &FdCtx) -> Result<pb::SignalfdState, DumpError> {
    let text = fdinfo(ctx)?;
    let sigmask = field(&text, "sigmask")
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| missing(ctx, "sigmask"))?;
    Ok(pb::SignalfdState { sigmask })
}

/// "(SEC, NSEC)".
fn pair(v: &str) -> Option<(u64, u64)> {
    let (a, b) = v.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

pub fn timerfd(ctx: &FdCtx) -> Result<pb::TimerfdState, DumpError> {
    let text = fdinfo(ctx)?;
    let get = |k: &str| field(&text, k).ok_or_else(|| missing(ctx, k));
    let clockid = get("clockid")?
        .parse()
        .map_err(|_| missing(ctx, "clockid"))?;
    let ticks = get("ticks")?.parse().map_err(|_| missing(ctx, "ticks"))?;
    let settime_flags =
        u32::from_str_radix(get("settime flags")?, 8).map_err(|_| missing(ctx, "settime flags"))?;
    let value = pair(get("it_value")?).ok_or_else(|| missing(ctx, "it_value"))?;
    let interval = pair(get("it_interval")?).ok_or_else(|| missing(ctx, "it_interval"))?;
    Ok(pb::TimerfdState {
        clockid,
        ticks,
        settime_flags,
        value_sec: value.0,
        value_nsec: value.1,
        interval_sec: interval.0,
        interval_nsec: interval.1,
    })
}

/// An inotify instance's watches, each re-found by path from its file handle. Refused:
/// watch descriptors that are not 1..n (removed watches: the restore could not give the
/// same numbers), a watched inode no path leads to, events not read yet (no interface
/// queues them again).
pub fn inotify(ctx: &FdCtx) -> Result<pb::InotifyState, DumpError> {
    inotify_watches(ctx.pid, ctx.fd)
        .map_err(|why| crate::refuse(format!("pid {}: fd {} (inotify): {why}", ctx.pid, ctx.fd)))
}

/// The watches of inotify fd `fd` of `pid`, or why they cannot be restored (also asked
/// before the seize, for `check -t`: it only reads).
pub fn inotify_watches(pid: ckpt_sys::Pid, fd: i32) -> Result<pb::InotifyState, String> {
    let text = ckpt_sys::proc::read_trimmed(&format!("/proc/{pid}/fdinfo/{fd}"))
        .map_err(|e| e.to_string())?;
    let refuse = |why: String| why;
    let mut watches = Vec::new();
    for l in text.lines().filter_map(|l| l.strip_prefix("inotify ")) {
        let kv: std::collections::HashMap<&str, &str> = l
            .split_whitespace()
            .filter_map(|t| t.split_once(':'))
            .collect();
        let hex = |k: &str| kv.get(k).and_then(|v| u64::from_str_radix(v, 16).ok());
        let (Some(wd), Some(sdev), Some(mask), Some(htype), Some(handle)) = (
            kv.get("wd").and_then(|v| v.parse::<i32>().ok()),
            hex("sdev"),
            hex("mask"),
            kv.get("fhandle-type")
                .and_then(|v| i32::from_str_radix(v, 16).ok()),
            kv.get("f_handle").and_then(|v| unhex(v)),
        ) else {
            return Err(refuse(format!("unreadable watch line {l:?}")));
        };
        let path = ckpt_sys::anonfd::path_of_handle(sdev, htype, &handle)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                refuse(format!(
                    "watch {wd} is on an inode no path leads to (deleted?)"
                ))
            })?;
        watches.push(pb::InotifyWatch {
            wd,
            path,
            mask: mask as u32,
        });
    }
    watches.sort_by_key(|w| w.wd);
    if let Some((i, w)) = watches
        .iter()
        .enumerate()
        .find(|(i, w)| w.wd != *i as i32 + 1)
    {
        return Err(refuse(format!(
            "watch descriptor {} where {} was expected: watches were removed, and a restore \
             could not give the same numbers again; not supported yet",
            w.wd,
            i + 1
        )));
    }
    no_unread_events(pid, fd)?;
    Ok(pb::InotifyState { watches })
}

/// Refuses a notification fd (inotify, fanotify) with events not read yet: no interface
/// queues an event again, so a restore would lose them. FIONREAD through a copy.
pub fn no_unread_events(pid: ckpt_sys::Pid, fd: i32) -> Result<(), String> {
    let mine = ckpt_sys::process::steal_fd(pid, fd).map_err(|e| e.to_string())?;
    match ckpt_sys::anonfd::queued_bytes(&mine).map_err(|e| e.to_string())? {
        0 => Ok(()),
        queued => Err(format!(
            "{queued} bytes of events not read yet, which a restored instance cannot be given \
             again; dump again once they are read"
        )),
    }
}

/// "a7c40300" -> bytes.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_pairs() {
        let t = "pos:\t0\nflags:\t02\nclockid: 1\nticks: 3\nsettime flags: 01\n\
                 it_value: (0, 49406829)\nit_interval: (1, 0)";
        assert_eq!(field(t, "settime flags"), Some("01"));
        assert_eq!(field(t, "clockid"), Some("1"));
        assert_eq!(pair(field(t, "it_value").unwrap()), Some((0, 49406829)));
        assert_eq!(field(t, "it"), None);
    }
}

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

fn fdinfo(ctx: &FdCtx) -> Result<String, DumpError> {
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

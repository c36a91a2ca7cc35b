//! POSIX timers (timer_create): /proc/PID/timers names each (id, signal and sigev
//! value, notification, clock); injected timer_gettime and timer_getoverrun give its
//! remaining time, interval and overrun. Restore recreates each under its id
//! (restore/src/timers.rs).

use crate::{refuse, DumpError};
use ckpt_images::pb;
use ckpt_sys::inject::Remote;
use ckpt_sys::kstate::{self, SIGEV_THREAD_ID};
use ckpt_sys::mem;

/// struct itimerspec: 4 x u64.
const SPEC: u64 = 32;

/// The clock of a CPU-time timer on another process or thread (clockid < 0 with a pid
/// in its upper bits): ckpt cannot name that process after a restore.
fn foreign_cpu_clock(clock: i32) -> bool {
    clock < 0 && (!(clock >> 3)) != 0
}

/// Every timer of the task, with its times, through `remote`; `scratch` has `len` bytes
/// of the task's scratch page free.
pub fn collect(
    remote: &mut Remote,
    scratch: u64,
    len: u64,
) -> Result<Vec<pb::PosixTimer>, DumpError> {
    let pid = remote.pid();
    let mut lines = kstate::timers(pid)?;
    lines.sort_by_key(|t| t.id);
    let tids = ckpt_sys::proc::tasks(pid)?;
    let mut out = Vec::with_capacity(lines.len());
    for t in &lines {
        let notify = t.sigev_notify().ok_or_else(|| {
            refuse(format!(
                "pid {pid}: POSIX timer {} has a notification ckpt does not know ({}/{}.{})",
                t.id, t.notify, t.target_kind, t.target
            ))
        })?;
        if notify & SIGEV_THREAD_ID != 0 && !tids.iter().any(|x| x.as_raw() == t.target) {
            return Err(refuse(format!(
                "pid {pid}: POSIX timer {} signals task {} (SIGEV_THREAD_ID), which is not \
                 a thread of this process",
                t.id, t.target
            )));
        }
        if foreign_cpu_clock(t.clock) {
            return Err(refuse(format!(
                "pid {pid}: POSIX timer {} counts the CPU time of another process or thread \
                 (clock {}); not supported",
                t.id, t.clock
            )));
        }
        out.push(pb::PosixTimer {
            id: t.id,
            clock: t.clock,
            notify,
            signo: t.signo,
            sigev_value: t.sigev_value,
            notify_tid: if notify & SIGEV_THREAD_ID != 0 {
                t.target
            } else {
                0
            },
            ..Default::default()
        });
    }
    let per_batch = (len / SPEC).max(1) as usize;
    for batch in out.chunks_mut(per_batch) {
        for (i, t) in batch.iter_mut().enumerate() {
            remote.syscall(
                || format!("timer_gettime({})", t.id),
                libc::SYS_timer_gettime,
                &[t.id as u64, scratch + i as u64 * SPEC],
            )?;
            t.overrun = remote.syscall(
                || format!("timer_getoverrun({})", t.id),
                libc::SYS_timer_getoverrun,
                &[t.id as u64],
            )? as i32;
        }
        let mut b = vec![0u8; batch.len() * SPEC as usize];
        mem::read(pid, scratch, &mut b)?;
        for (i, t) in batch.iter_mut().enumerate() {
            let w = |k: usize| {
                let o = i * SPEC as usize + k * 8;
                u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
            };
            let ns = |s: u64, n: u64| s.saturating_mul(1_000_000_000).saturating_add(n);
            t.interval_ns = ns(w(0), w(1));
            t.value_ns = ns(w(2), w(3));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_clocks_of_others_are_foreign() {
        // MAKE_PROCESS_CPUCLOCK(0, CPUCLOCK_SCHED) = -6, the thread's own = -2.
        assert!(!foreign_cpu_clock(-6));
        assert!(!foreign_cpu_clock(-2));
        assert!(!foreign_cpu_clock(1));
        // MAKE_PROCESS_CPUCLOCK(1234, CPUCLOCK_SCHED)
        assert!(foreign_cpu_clock((!1234i32 << 3) | 2));
    }
}

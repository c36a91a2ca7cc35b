//! POSIX timers recreated under their dumped ids (prctl PR_TIMER_CREATE_RESTORE_IDS,
//! Linux 6.16+: timer_create then takes the id from `*timerid`) and re-armed with the
//! remaining time and interval the dump read. The overrun count cannot be set back.
//!
//! Self-contained on purpose: it takes the injection handle of a stopped task and a
//! scratch area in it, so a multi-threaded restore can call it once its threads exist
//! (a SIGEV_THREAD_ID timer needs its thread, EINVAL otherwise).

use crate::RestoreError;
use ckpt_images::pb;
use ckpt_sys::inject::Remote;
use ckpt_sys::mem;

const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;

fn timespec(ns: u64) -> [u64; 2] {
    [ns / 1_000_000_000, ns % 1_000_000_000]
}

/// Recreates `timers` in the task behind `remote`, using `SCRATCH_LEN` bytes at
/// `scratch` in it.
pub fn restore(
    remote: &mut Remote,
    scratch: u64,
    timers: &[pb::PosixTimer],
) -> Result<(), RestoreError> {
    if timers.is_empty() {
        return Ok(());
    }
    let pid = remote.pid();
    remote
        .syscall(
            || "prctl(PR_TIMER_CREATE_RESTORE_IDS, ON) (Linux 6.16+)".into(),
            libc::SYS_prctl,
            &[PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0],
        )
        .map_err(|e| {
            RestoreError::Refused(format!(
                "pid {pid}: this kernel cannot recreate POSIX timers under their ids: {e}"
            ))
        })?;
    for t in timers {
        let mut ev = [0u8; 64];
        ev[0..8].copy_from_slice(&t.sigev_value.to_le_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_le_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_le_bytes());
        ev[16..20].copy_from_slice(&t.notify_tid.to_le_bytes());
        mem::write(pid, scratch, &ev)?;
        mem::write(pid, scratch + 64, &t.id.to_le_bytes())?;
        remote.syscall(
            || format!("timer_create(clock {}, id {})", t.clock, t.id),
            libc::SYS_timer_create,
            &[t.clock as i64 as u64, scratch, scratch + 64],
        )?;
        let mut got = [0u8; 4];
        mem::read(pid, scratch + 64, &mut got)?;
        if i32::from_le_bytes(got) != t.id {
            return Err(RestoreError::Refused(format!(
                "pid {pid}: POSIX timer {} came back as id {}",
                t.id,
                i32::from_le_bytes(got)
            )));
        }
        if t.value_ns != 0 {
            let mut spec = Vec::with_capacity(32);
            for w in timespec(t.interval_ns)
                .into_iter()
                .chain(timespec(t.value_ns))
            {
                spec.extend_from_slice(&w.to_le_bytes());
            }
            mem::write(pid, scratch + 128, &spec)?;
            remote.syscall(
                || format!("timer_settime({})", t.id),
                libc::SYS_timer_settime,
                &[t.id as u64, 0, scratch + 128, 0],
            )?;
        }
    }
    remote.syscall(
        || "prctl(PR_TIMER_CREATE_RESTORE_IDS, OFF)".into(),
        libc::SYS_prctl,
        &[PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0],
    )?;
    Ok(())
}

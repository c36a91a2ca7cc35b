//! Signal state: actions (SIGTRAP's last, after the final int3), interval timers, and
//! the signals that were pending at the dump, re-queued while everything is blocked.

use super::{Batched, Puppet, R, SIGTRAP};

impl Puppet<'_> {
    /// The calls that set every dumped sigaction and reset what the seed inherited from
    /// ckpt. SIGTRAP is set only in the last pass (`trap_only`), after the final int3.
    pub(super) fn sigactions(&self, reset: &[u32], trap_only: bool) -> Vec<Batched> {
        let acts = &self.img.core.sigactions;
        let mut out = Vec::new();
        for sig in 1..=64u32 {
            if sig == 9 || sig == 19 || (sig == SIGTRAP) != trap_only {
                continue;
            }
            let act = acts.iter().find(|a| a.signo == sig);
            if act.is_none() && !reset.contains(&sig) {
                continue;
            }
            let mut b = vec![0u8; 32];
            if let Some(a) = act {
                b[0..8].copy_from_slice(&a.handler.to_le_bytes());
                b[8..16].copy_from_slice(&a.flags.to_le_bytes());
                b[16..24].copy_from_slice(&a.restorer.to_le_bytes());
                b[24..32].copy_from_slice(&a.mask.to_le_bytes());
            }
            out.push(
                Batched::new(
                    format!("rt_sigaction({sig})"),
                    libc::SYS_rt_sigaction,
                    &[sig as u64, 0, 0, 8],
                )
                .with(1, b),
            );
        }
        out
    }

    pub(super) fn itimers(&mut self) -> R<()> {
        for it in &self.img.core.itimers {
            if it.value_us == 0 {
                continue;
            }
            let mut b = [0u8; 32];
            for (i, v) in [
                it.interval_us / 1_000_000,
                it.interval_us % 1_000_000,
                it.value_us / 1_000_000,
                it.value_us % 1_000_000,
            ]
            .into_iter()
            .enumerate()
            {
                b[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            let at = self.put(0, &b)?;
            self.call(
                &format!("setitimer({})", it.which),
                libc::SYS_setitimer,
                &[it.which as u64, at, 0],
            )?;
        }
        Ok(())
    }

    /// The calls that re-queue the signals that were pending at dump (made while
    /// everything is blocked).
    pub(super) fn pending_signals(&mut self) -> Vec<Batched> {
        // The process's own pid as it sees it (in a new pid namespace, not ckpt's; in a
        // nested one, not the image's either).
        let pid = self.remote.own_pid().unwrap_or(self.img.core.pid) as u64;
        let shared = self.img.core.shared_pending.iter().map(|s| (true, s));
        let private = self.img.threads[0].pending.iter().map(|s| (false, s));
        let others = self.thread_pending();
        // And the SIGTRAPs sent during the restore (SIGTRAP is blocked from here on): a
        // tgkill() one to the thread, any other to the process, as they came.
        let traps: Vec<Vec<u8>> = self
            .remote
            .take_external_traps()
            .iter()
            .map(|i| i.to_vec())
            .collect();
        let traps = traps.iter().map(|i| {
            let code = i32::from_le_bytes(i[8..12].try_into().expect("4 bytes"));
            (code != libc::SI_TKILL, i)
        });
        let mut all: Vec<(bool, i32, &Vec<u8>)> = shared
            .chain(private)
            .chain(traps)
            .map(|(s, i)| (s, pid as i32, i))
            .collect();
        all.extend(others.iter().map(|(tid, i)| (false, *tid, i)));
        let mut out = Vec::new();
        for (is_shared, tid, info) in all {
            if info.len() != 128 {
                continue;
            }
            let sig = u32::from_le_bytes(info[0..4].try_into().expect("4 bytes"));
            if sig == 0 || sig > 64 || sig == 9 || sig == 19 {
                continue;
            }
            out.push(if is_shared {
                Batched::new(
                    format!("rt_sigqueueinfo({sig})"),
                    libc::SYS_rt_sigqueueinfo,
                    &[pid, sig as u64, 0],
                )
                .with(2, info.clone())
            } else {
                Batched::new(
                    format!("rt_tgsigqueueinfo({sig}) to thread {tid}"),
                    libc::SYS_rt_tgsigqueueinfo,
                    &[pid, tid as u64, sig as u64, 0],
                )
                .with(3, info.clone())
            });
        }
        out
    }
}

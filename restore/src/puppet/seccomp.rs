//! Seccomp filters and strict mode, per thread (the dump's `seccomp.rs` reads them).
//!
//! The puppet is traced with PTRACE_O_SUSPEND_SECCOMP (threads cloned later inherit the
//! option), so what is installed here never judges the syscalls ckpt injects after it;
//! the suspension ends with the detach. The filters all threads' chains begin with are
//! installed in the main thread before the other threads are cloned, which inherit them:
//! they share those filter objects again, as a TSYNC'd process's threads did (and a later
//! TSYNC by the process still works). The rest of each thread's chain, and strict mode,
//! are installed in that thread, before the credentials: without no_new_privs a filter
//! needs CAP_SYS_ADMIN, which the process may be about to drop.

use super::{Puppet, R};
use ckpt_images::PAGE_SIZE;
use ckpt_sys::mem;

const SECCOMP_SET_MODE_STRICT: u64 = 0;
const SECCOMP_SET_MODE_FILTER: u64 = 1;
/// struct sock_fprog: u16 len, padding, u64 filter pointer.
const FPROG_LEN: usize = 16;

impl Puppet<'_> {
    /// Any thread has seccomp state: the puppet must be traced with SUSPEND_SECCOMP.
    pub(super) fn has_seccomp(&self) -> bool {
        self.img.threads.iter().any(|t| t.seccomp_mode != 0)
    }

    /// How many filters every thread's chain begins with (image indexes, oldest first).
    fn shared_chain(&self) -> usize {
        let first = &self.img.threads[0].seccomp_chain;
        let mut n = first.len();
        for t in &self.img.threads[1..] {
            n = n.min(
                first
                    .iter()
                    .zip(&t.seccomp_chain)
                    .take_while(|(a, b)| a == b)
                    .count(),
            );
        }
        n
    }

    /// The filters all threads share, into the main thread, before the clones.
    pub(super) fn seccomp_shared(&mut self) -> R<()> {
        let n = self.shared_chain();
        if n == 0 {
            return Ok(());
        }
        let chain = self.img.threads[0].seccomp_chain[..n].to_vec();
        self.with_filter_area(|p, area| p.install(&chain, area))
    }

    /// Each thread's own filters (after the shared ones) and strict mode, in that thread.
    pub(super) fn seccomp_own(&mut self) -> R<()> {
        if !self.has_seccomp() {
            return Ok(());
        }
        let shared = self.shared_chain();
        self.with_filter_area(|p, area| {
            let main = &p.img.threads[0];
            let (chain, mode) = (main.seccomp_chain[shared..].to_vec(), main.seccomp_mode);
            p.install(&chain, area)?;
            p.strict(mode)?;
            for i in 0..p.threads.len() {
                let t = &p.img.threads[p.threads[i].idx];
                let (chain, mode) = (t.seccomp_chain[shared..].to_vec(), t.seccomp_mode);
                p.in_thread(i, |p| {
                    p.install(&chain, area)?;
                    p.strict(mode)
                })?;
            }
            Ok(())
        })
    }

    /// Runs `f` with a scratch area big enough for the largest program (mapped by the
    /// main thread; the threads share the memory), unmapped after.
    fn with_filter_area(&mut self, f: impl FnOnce(&mut Self, u64) -> R<()>) -> R<()> {
        let largest = self
            .img
            .core
            .seccomp_filters
            .iter()
            .map(|f| f.program.len())
            .max()
            .unwrap_or(0);
        let len = (FPROG_LEN + largest).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let area = self.call(
            "mmap of an area for the seccomp filters",
            libc::SYS_mmap,
            &[
                0,
                len as u64,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        let out = f(self, area);
        let unmapped = self.call(
            "munmap of the seccomp filters' area",
            libc::SYS_munmap,
            &[area, len as u64],
        );
        out.and(unmapped.map(drop))
    }

    /// Installs `chain` (image indexes, oldest first) in the thread calls go to.
    fn install(&mut self, chain: &[u32], area: u64) -> R<()> {
        for &i in chain {
            let f = &self.img.core.seccomp_filters[i as usize];
            let insns = f.program.len() / 8;
            let mut buf = Vec::with_capacity(FPROG_LEN + f.program.len());
            buf.extend_from_slice(&(insns as u64).to_le_bytes());
            buf.extend_from_slice(&(area + FPROG_LEN as u64).to_le_bytes());
            buf.extend_from_slice(&f.program);
            mem::write(self.pid, area, &buf)?;
            self.call(
                &format!("seccomp(SET_MODE_FILTER) of filter {i} ({insns} instructions)"),
                libc::SYS_seccomp,
                &[SECCOMP_SET_MODE_FILTER, f.flags, area],
            )?;
        }
        Ok(())
    }

    fn strict(&mut self, mode: u32) -> R<()> {
        if mode == 1 {
            self.call(
                "seccomp(SET_MODE_STRICT)",
                libc::SYS_seccomp,
                &[SECCOMP_SET_MODE_STRICT, 0, 0],
            )?;
        }
        Ok(())
    }
}

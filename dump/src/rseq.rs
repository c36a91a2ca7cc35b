//! A task stopped inside an rseq critical section leaves it through its abort handler.
//!
//! The kernel aborts a critical section whenever the thread is preempted, migrated or
//! gets a signal: on the way back to user space it finds rip inside
//! [start_ip, start_ip + post_commit_offset) of the descriptor that rseq_cs points to,
//! clears rseq_cs and sets rip to abort_ip. A checkpoint must do the same with the
//! registers it keeps: restored as they were, the thread would go on in the middle of a
//! section whose assumptions (the CPU, the per-CPU data) no longer hold. The same goes for
//! a task left running: our injected syscalls return to user space at another rip, where
//! the kernel clears rseq_cs without aborting, so putting the old rip back would resume
//! the section unprotected.

use crate::DumpError;
use ckpt_sys::regs::Regs;
use ckpt_sys::{mem, ptrace, Pid};
use nix::errno::Errno;

/// Top of user space: the kernel refuses descriptors beyond it.
const TASK_SIZE: u64 = 0x7fff_ffff_f000;
/// Offset of `rseq_cs` in struct rseq (after cpu_id_start and cpu_id, both u32).
const RSEQ_CS_OFFSET: u64 = 8;

/// struct rseq_cs of include/uapi/linux/rseq.h: 32 bytes, 32-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsDescriptor {
    pub version: u32,
    pub flags: u32,
    pub start_ip: u64,
    pub post_commit_offset: u64,
    pub abort_ip: u64,
}

impl CsDescriptor {
    pub const SIZE: usize = 32;

    pub fn parse(b: &[u8; Self::SIZE]) -> CsDescriptor {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        CsDescriptor {
            version: u32_at(0),
            flags: u32_at(4),
            start_ip: u64_at(8),
            post_commit_offset: u64_at(16),
            abort_ip: u64_at(24),
        }
    }

    /// Whether the kernel would accept it (else it kills the thread with SIGSEGV, and we
    /// leave that to it): version 0, the range inside user space, the abort handler
    /// outside the range.
    pub fn valid(&self) -> bool {
        let Some(end) = self.start_ip.checked_add(self.post_commit_offset) else {
            return false;
        };
        self.version == 0 && end <= TASK_SIZE && !self.contains(self.abort_ip)
    }

    pub fn contains(&self, ip: u64) -> bool {
        ip >= self.start_ip && ip - self.start_ip < self.post_commit_offset
    }
}

/// Where a thread at `rip` goes on: `Some(abort_ip)` if it is inside the section of a
/// valid descriptor whose abort handler carries the registered signature.
pub fn abort_target(rip: u64, cs: &CsDescriptor, sig_before_abort: u32, sig: u32) -> Option<u64> {
    (cs.valid() && cs.contains(rip) && sig_before_abort == sig).then_some(cs.abort_ip)
}

/// Moves `regs.rip` to the abort handler if the stopped thread `tid` is inside an rseq
/// critical section; returns the old rip if it did.
pub fn fixup(tid: Pid, regs: &mut Regs) -> Result<Option<u64>, DumpError> {
    let conf = match ptrace::get_rseq(tid) {
        Ok(c) if c.ptr != 0 => c,
        Ok(_) => return Ok(None),
        Err(e) if e.errno() == Some(Errno::EINVAL) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // What the task's own memory says; a read that fails is a fault the kernel would
    // meet too (and answer with SIGSEGV): leave it to the kernel.
    let read = |addr: u64, buf: &mut [u8]| match mem::read(tid, addr, buf) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(%tid, "rseq: cannot read {addr:#x}: {e}");
            false
        }
    };
    let mut p = [0u8; 8];
    if !read(conf.ptr + RSEQ_CS_OFFSET, &mut p) {
        return Ok(None);
    }
    let cs_ptr = u64::from_le_bytes(p);
    if cs_ptr == 0 || cs_ptr >= TASK_SIZE {
        return Ok(None);
    }
    let mut d = [0u8; CsDescriptor::SIZE];
    if !read(cs_ptr, &mut d) {
        return Ok(None);
    }
    let cs = CsDescriptor::parse(&d);
    if !cs.valid() || !cs.contains(regs.rip) {
        return Ok(None);
    }
    let mut s = [0u8; 4];
    if cs.abort_ip < 4 || !read(cs.abort_ip - 4, &mut s) {
        return Ok(None);
    }
    let Some(abort_ip) = abort_target(regs.rip, &cs, u32::from_le_bytes(s), conf.sig) else {
        tracing::debug!(%tid, "rseq: abort handler without the signature; left to the kernel");
        return Ok(None);
    };
    let old = regs.rip;
    regs.rip = abort_ip;
    tracing::info!(
        %tid,
        "stopped inside an rseq critical section at {old:#x}: resumes at its abort handler {abort_ip:#x}"
    );
    Ok(Some(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: u32 = 0x5305_3053;

    /// The byte layout of include/uapi/linux/rseq.h, as a program lays it out.
    fn descriptor(start: u64, len: u64, abort: u64) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[8..16].copy_from_slice(&start.to_le_bytes());
        b[16..24].copy_from_slice(&len.to_le_bytes());
        b[24..32].copy_from_slice(&abort.to_le_bytes());
        b
    }

    #[test]
    fn inside_the_section_goes_to_abort() {
        let cs = CsDescriptor::parse(&descriptor(0x40_1000, 0x20, 0x40_1030));
        assert_eq!(cs.start_ip, 0x40_1000);
        assert_eq!(cs.post_commit_offset, 0x20);
        assert_eq!(cs.abort_ip, 0x40_1030);
        assert_eq!(abort_target(0x40_1000, &cs, SIG, SIG), Some(0x40_1030));
        assert_eq!(abort_target(0x40_101f, &cs, SIG, SIG), Some(0x40_1030));
        // The post-commit ip and anything outside: the section is over or not begun.
        assert_eq!(abort_target(0x40_1020, &cs, SIG, SIG), None);
        assert_eq!(abort_target(0x40_0fff, &cs, SIG, SIG), None);
        // A handler without the signature: the kernel would kill, we do not jump there.
        assert_eq!(abort_target(0x40_1010, &cs, 0, SIG), None);
    }

    #[test]
    fn descriptors_the_kernel_refuses_are_left_alone() {
        let mut b = descriptor(0x40_1000, 0x20, 0x40_1010);
        assert!(!CsDescriptor::parse(&b).valid(), "abort inside the range");
        b = descriptor(u64::MAX - 4, 0x20, 0x1000);
        assert!(!CsDescriptor::parse(&b).valid(), "range overflows");
        b = descriptor(0x40_1000, 0x20, 0x40_1030);
        b[0] = 1;
        let cs = CsDescriptor::parse(&b);
        assert!(!cs.valid(), "version 1");
        assert_eq!(abort_target(0x40_1008, &cs, SIG, SIG), None);
    }
}

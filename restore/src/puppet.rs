//! The puppet phase: ckpt drives the stopped seed over ptrace, syscall by syscall, until
//! it is the dumped process. The order matters and is explained step by step; the facts
//! behind it are in ../shared/notes/restore-facts.md.

mod seccomp;
mod threads;

use crate::fill;
use crate::image::{ProcessImage, TASK_SIZE};
use crate::seed::SeedPlan;
use crate::RestoreError;
use ckpt_images::{pb, PAGE_SIZE};
use ckpt_sys::inject::{Call, Remote, Via, BATCH_ENTRY};
use ckpt_sys::ptrace::{self, Options};
use ckpt_sys::{mem, Pid};
use std::time::Instant;
use tracing::debug;

const SIGTRAP: u32 = 5;
const RSEQ_FLAG_UNREGISTER: u64 = 1;
const ARCH_MAP_VDSO_64: u64 = 0x2003;
const PR_SET_MM: u64 = 35;
const PR_SET_MM_MAP: u64 = 14;
const PR_SET_DUMPABLE: u64 = 4;
const PR_SET_KEEPCAPS: u64 = 8;
const PR_CAPBSET_DROP: u64 = 24;
const PR_GET_SECUREBITS: u64 = 27;
const PR_SET_SECUREBITS: u64 = 28;
const PR_CAP_AMBIENT: u64 = 47;
const PR_CAP_AMBIENT_RAISE: u64 = 2;
const PR_CAP_AMBIENT_CLEAR_ALL: u64 = 4;
const MFD_CLOEXEC: u64 = 1;
const MLOCK_ONFAULT: u64 = 1;
const MCL_FUTURE: u32 = 2;
const MCL_ONFAULT: u32 = 4;

pub struct Puppet<'a> {
    pid: Pid,
    remote: Remote,
    tramp: u64,
    img: &'a ProcessImage,
    plan: &'a SeedPlan,
    pages_path: std::path::PathBuf,
    /// `restore --lazy`: register the anonymous VMAs, copy nothing into them, and leave
    /// the userfaultfd to the pager (`lazy`).
    lazy: bool,
    handoff: Option<crate::lazy::Handoff>,
    progress: &'a dyn ckpt_images::progress::Progress,
    /// The threads created besides the main one (`threads`).
    threads: Vec<threads::Thread>,
    /// ckpt and the puppet share one CPU while the threads are made (`threads`).
    pinned: Option<threads::Pinned>,
    /// Shared memory objects of the tree, made by ckpt: opened by path (`shared.rs`).
    shared: Option<&'a std::collections::HashMap<u64, String>>,
}

type R<T> = Result<T, RestoreError>;

impl<'a> Puppet<'a> {
    pub fn new(
        pid: Pid,
        img: &'a ProcessImage,
        plan: &'a SeedPlan,
        pages_path: std::path::PathBuf,
        progress: &'a dyn ckpt_images::progress::Progress,
    ) -> R<Self> {
        let remote = Remote::new(pid, Via::Trampoline(plan.trampoline))?;
        Ok(Puppet {
            pid,
            remote,
            tramp: plan.trampoline,
            img,
            plan,
            pages_path,
            lazy: false,
            handoff: None,
            progress,
            threads: Vec::new(),
            pinned: None,
            shared: None,
        })
    }

    /// The tree's shared memory objects (see `shared.rs`).
    pub fn shared(mut self, paths: &'a std::collections::HashMap<u64, String>) -> Self {
        self.shared = Some(paths);
        self
    }

    /// Lazy mode (see `lazy.rs`); after `run`, `take_handoff` gives the userfaultfd.
    pub fn lazy(mut self, on: bool) -> Self {
        self.lazy = on;
        self
    }

    pub fn take_handoff(&mut self) -> Option<crate::lazy::Handoff> {
        self.handoff.take()
    }

    fn scratch(&self) -> u64 {
        self.tramp + PAGE_SIZE as u64
    }

    fn call(&mut self, what: &str, nr: i64, args: &[u64]) -> R<u64> {
        Ok(self.remote.syscall(|| what.to_string(), nr, args)?)
    }

    /// Runs `calls` as batches (`Remote::batch`, the loop the seed put in its trampoline
    /// page, the table in the scratch page): one stop a batch instead of one a call. Each
    /// result must be `want(i, result)`; a failure names the call. The scratch page's
    /// contents are overwritten.
    fn calls(
        &mut self,
        calls: &[(String, Call)],
        want: impl Fn(usize, u64) -> Option<String>,
    ) -> R<()> {
        let per = (PAGE_SIZE as u64 / BATCH_ENTRY) as usize;
        let code = self.tramp + ckpt_sys::process::TRAMPOLINE_BATCH_AT;
        for (n, chunk) in calls.chunks(per).enumerate() {
            let list: Vec<Call> = chunk.iter().map(|(_, c)| *c).collect();
            let got = self.remote.batch(code, self.scratch(), &list)?;
            for (j, ((what, _), r)) in chunk.iter().zip(got).enumerate() {
                if (-4095..0).contains(&r) {
                    return Err(ckpt_sys::Error::sys(
                        format!("{what} (injected into pid {})", self.pid),
                        nix::errno::Errno::from_raw(-r as i32),
                    )
                    .into());
                }
                if let Some(why) = want(n * per + j, r as u64) {
                    return Err(RestoreError::Refused(format!("pid {}: {why}", self.pid)));
                }
            }
        }
        Ok(())
    }

    /// Copies `bytes` into the scratch page at `off` and returns their address there.
    fn put(&self, off: u64, bytes: &[u8]) -> R<u64> {
        let at = self.scratch() + off;
        mem::write(self.pid, at, bytes)?;
        Ok(at)
    }

    pub fn run(&mut self, pages: &fill::Source, reset_sigs: &[u32]) -> R<()> {
        let t0 = Instant::now();
        let mut opts = Options::PTRACE_O_EXITKILL | Options::PTRACE_O_TRACESYSGOOD;
        if self.img.threads.len() > 1 {
            // The threads clone3 creates are attached at once (with these options).
            opts |= Options::PTRACE_O_TRACECLONE;
        }
        if self.has_seccomp() {
            // The filters installed below must not judge the calls injected after them.
            opts |= Options::from_bits_retain(libc::PTRACE_O_SUSPEND_SECCOMP);
        }
        ptrace::set_options(self.pid, opts)?;
        // Nothing may be delivered while the puppet is half built; SIGTRAP stays open for
        // the trampoline's int3 (a blocked SIGTRAP would be reset to SIG_DFL by the kernel).
        ptrace::set_sigmask(self.pid, !(1u64 << (SIGTRAP - 1)))?;
        // The seed's own guard against a dead ckpt (seed.rs); EXITKILL guards from here.
        self.call(
            "prctl(PR_SET_PDEATHSIG, 0)",
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, 0],
        )?;
        if self.img.threads.len() > 1 {
            // Hundreds of injections to come (thread stacks, the threads themselves).
            self.pin()?;
        }
        self.check_cpu()?;
        self.drop_seed_rseq()?;
        self.unmap_seed()?;
        self.place_vdso()?;
        let t_map = Instant::now();
        self.map_vmas(pages)?;
        let t_fill = t_map.elapsed();
        self.set_mm()?;
        self.call(
            "close_range of the seed's helper fds",
            libc::SYS_close_range,
            &[
                self.plan.helper_base as u64,
                self.plan.helper_end() as u64,
                0,
            ],
        )?;
        self.set_sigactions(reset_sigs, false)?;
        self.thread_state(0)?;
        self.seccomp_shared()?;
        self.create_threads()?;
        self.itimers()?;
        // POSIX timers (after the threads: one may be directed at a thread), locks and
        // leases (a lease needs CAP_LEASE or the file's owner), prctl and membarrier
        // state: while still root, before the credentials.
        let scratch = self.scratch();
        crate::timers::restore(&mut self.remote, scratch, &self.img.core.posix_timers)?;
        crate::locks::restore(&mut self.remote, scratch, &self.img.fds)?;
        crate::task_state::restore(&mut self.remote, &self.img.core)?;
        self.seccomp_own()?;
        let changed = self.creds(self.img.core.creds.clone())?;
        // The threads were cloned with the seed's credentials, the main thread's until
        // just now: they need theirs unless nothing changed for anyone.
        if changed || self.img.threads.iter().any(|t| t.creds.is_some()) {
            self.thread_creds()?;
        }
        // As the process itself: its own RLIMIT_MEMLOCK and CAP_IPC_LOCK (or lack of it)
        // decide, not ckpt's.
        self.mlock()?;
        // From here no int3 runs: the trampoline's `syscall` is driven to its exit stop.
        self.remote.set_via(Via::SyscallInsn(self.tramp));
        self.set_sigactions(reset_sigs, true)?;
        // Pending signals last, with SIGTRAP blocked too: a re-queued SIGTRAP would
        // otherwise be delivered at the next int3 call and swallowed as its trap.
        ptrace::set_sigmask(self.pid, !0)?;
        self.pending_signals()?;
        // Every thread's last int3 is behind it: its final state goes in now.
        self.finish_threads()?;
        self.finish()?;
        debug!(
            pid = %self.pid,
            threads = self.img.threads.len(),
            injected = self.remote.calls + self.threads.iter().map(|t| t.remote.calls).sum::<u64>(),
            memory_ms = ckpt_images::units::tenths(t_fill.as_secs_f64() * 1e3),
            total_ms = ckpt_images::units::ms(t0),
            "puppet done"
        );
        Ok(())
    }

    /// The image's FPU/AVX state must fit this CPU's xsave layout, in every thread.
    fn check_cpu(&self) -> R<()> {
        let seed = ptrace::get_xstate(self.pid)?;
        let have = ckpt_sys::process::xsave_features(&seed);
        for t in &self.img.threads {
            let want = ckpt_sys::process::xsave_features(&t.xsave);
            if want & !have != 0 || t.xsave.len() != seed.len() {
                return Err(RestoreError::Refused(format!(
                    "pid {}: the image's CPU state of thread {} (xfeatures {want:#x}, {} bytes) \
                     does not fit this CPU (xfeatures {have:#x}, {} bytes)",
                    self.pid,
                    t.tid,
                    t.xsave.len(),
                    seed.len()
                )));
            }
        }
        Ok(())
    }

    /// glibc registered rseq for the seed; the area dies with the seed's memory, and the
    /// kernel would fault (SIGSEGV) on the next resume if it were still registered.
    fn drop_seed_rseq(&mut self) -> R<()> {
        let conf = ptrace::get_rseq(self.pid)?;
        if conf.ptr != 0 {
            self.call(
                "rseq unregister of the seed",
                libc::SYS_rseq,
                &[
                    conf.ptr,
                    conf.len as u64,
                    RSEQ_FLAG_UNREGISTER,
                    conf.sig as u64,
                ],
            )?;
        }
        Ok(())
    }

    /// Everything of the seed but the trampoline goes ([vsyscall] lies above TASK_SIZE).
    fn unmap_seed(&mut self) -> R<()> {
        let t = self.tramp;
        self.call("munmap below the trampoline", libc::SYS_munmap, &[0, t])?;
        let after = t + 2 * PAGE_SIZE as u64;
        self.call(
            "munmap above the trampoline",
            libc::SYS_munmap,
            &[after, TASK_SIZE - after],
        )?;
        Ok(())
    }

    /// Maps the vDSO block ([vvar], [vvar_vclock], [vdso]) at its dumped address. The
    /// address is only a hint to the kernel, so the result is checked in /proc.
    fn place_vdso(&mut self) -> R<()> {
        let mm = &self.img.mm;
        if mm.vdso_block_start == 0 {
            return Ok(());
        }
        self.call(
            "arch_prctl(ARCH_MAP_VDSO_64)",
            libc::SYS_arch_prctl,
            &[ARCH_MAP_VDSO_64, mm.vdso_block_start],
        )?;
        let maps = ckpt_sys::proc::smaps(self.pid)?;
        for part in &mm.vdso_parts {
            if !maps
                .iter()
                .any(|m| m.name == part.name && m.start == part.start && m.end == part.end)
            {
                return Err(RestoreError::Refused(format!(
                    "pid {}: {} could not be placed at [{:#x}, {:#x}) (this kernel's vDSO \
                     layout differs from the image's)",
                    self.pid, part.name, part.start, part.end
                )));
            }
        }
        Ok(())
    }

    fn map_vmas(&mut self, pages: &fill::Source) -> R<()> {
        let img = self.img;
        let mut with_pages = vec![false; img.vmas.len()];
        let mut vi = 0;
        for r in &img.runs {
            while img.vmas[vi].end <= r.vaddr {
                vi += 1;
            }
            with_pages[vi] = true;
        }
        // Before anything is mapped: what `mlock` will be asked to do must make sense.
        self.check_locks(&with_pages)?;
        let mut file_index = 0usize;
        let mut last_path: Option<(&str, i32)> = None;
        let objects = img.shm_objects();
        let mut shm_fds: std::collections::HashMap<u64, u64> = Default::default();
        let mut mmaps = Vec::with_capacity(img.vmas.len());
        for (i, v) in img.vmas.iter().enumerate() {
            let kind = pb::VmaKind::try_from(v.kind).unwrap_or(pb::VmaKind::VmaAnon);
            let mut prot = v.prot as u64;
            if with_pages[i] {
                prot |= (libc::PROT_READ | libc::PROT_WRITE) as u64;
            }
            let mut flags = libc::MAP_FIXED_NOREPLACE as u64;
            let mut fd: u64 = u64::MAX;
            let mut off = 0;
            match kind {
                // MAP_DROPPABLE is a mapping type of its own, in place of MAP_PRIVATE.
                pb::VmaKind::VmaAnon if v.map_flags & crate::image::MAP_DROPPABLE != 0 => {
                    flags |= (crate::image::MAP_DROPPABLE | libc::MAP_ANONYMOUS as u32) as u64
                }
                pb::VmaKind::VmaAnon => flags |= (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                pb::VmaKind::VmaAnonShared => match objects.get(&v.shm_id) {
                    _ if self.shared.is_some_and(|s| s.contains_key(&v.shm_id)) => {
                        flags |= libc::MAP_SHARED as u64;
                        fd = match shm_fds.get(&v.shm_id) {
                            Some(&fd) => fd,
                            None => {
                                let fd = self.open_shared(v.shm_id)?;
                                shm_fds.insert(v.shm_id, fd);
                                fd
                            }
                        };
                        off = v.pgoff;
                    }
                    Some(o) => {
                        flags |= libc::MAP_SHARED as u64;
                        fd = match shm_fds.get(&v.shm_id) {
                            Some(&fd) => fd,
                            None => {
                                let fd = self.memfd(o)?;
                                shm_fds.insert(v.shm_id, fd);
                                fd
                            }
                        };
                        off = v.pgoff;
                    }
                    None => flags |= (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64,
                },
                pb::VmaKind::VmaSysvShm => {}
                pb::VmaKind::VmaFilePrivate | pb::VmaKind::VmaFileShared => {
                    flags |= if kind == pb::VmaKind::VmaFileShared {
                        libc::MAP_SHARED
                    } else {
                        libc::MAP_PRIVATE
                    } as u64;
                    let key = (v.path.as_str(), v.open_flags as i32);
                    if last_path != Some(key) {
                        file_index = self
                            .plan
                            .vma_files
                            .iter()
                            .position(|(p, f)| p == key.0 && *f == key.1)
                            .expect("every VMA file is in the seed plan");
                        last_path = Some(key);
                    }
                    fd = self.plan.vma_fd(file_index) as u64;
                    off = v.pgoff;
                }
            }
            if kind == pb::VmaKind::VmaSysvShm {
                // Attached again (the container's ipc namespace holds the segment under
                // its dumped id, made by the root's seed).
                let mut shmflg = 0u64;
                if v.prot & libc::PROT_WRITE as u32 == 0 {
                    shmflg |= libc::SHM_RDONLY as u64;
                }
                if v.prot & libc::PROT_EXEC as u32 != 0 {
                    shmflg |= libc::SHM_EXEC as u64;
                }
                mmaps.push((
                    format!(
                        "shmat of SysV segment {} at [{:#x}, {:#x})",
                        v.sysv_shmid, v.start, v.end
                    ),
                    Call::new(libc::SYS_shmat, &[v.sysv_shmid as u64, v.start, shmflg]),
                ));
                continue;
            }
            if v.growsdown {
                flags |= libc::MAP_GROWSDOWN as u64;
            }
            if v.map_flags & crate::image::MAP_NORESERVE != 0 {
                flags |= libc::MAP_NORESERVE as u64;
            }
            mmaps.push((
                format!("mmap of VMA [{:#x}, {:#x}) {}", v.start, v.end, v.name),
                Call::new(
                    libc::SYS_mmap,
                    &[v.start, v.end - v.start, prot, flags, fd, off],
                ),
            ));
        }
        self.calls(&mmaps, |i, got| {
            let v = &img.vmas[i];
            (got != v.start)
                .then(|| format!("VMA [{:#x}, {:#x}) landed at {got:#x}", v.start, v.end))
        })?;
        for (_, fd) in shm_fds {
            self.call("close of a shared memory memfd", libc::SYS_close, &[fd])?;
        }
        self.name_anon_vmas()?;
        // Advice first: MADV_HUGEPAGE must be in place before the pages arrive.
        let advice: Vec<(String, Call)> = img
            .vmas
            .iter()
            .flat_map(|v| {
                v.madvise.iter().map(move |&a| {
                    (
                        format!("madvise({a}) of VMA [{:#x}, {:#x})", v.start, v.end),
                        Call::new(libc::SYS_madvise, &[v.start, v.end - v.start, a as u64]),
                    )
                })
            })
            .collect();
        self.calls(&advice, |_, _| None)?;
        // The fill runs on every CPU, in threads of ckpt's: not pinned meanwhile.
        let pinned = self.unpin();
        self.fill(pages, &with_pages)?;
        if pinned {
            self.pin()?;
        }
        let protect: Vec<(String, Call)> = img
            .vmas
            .iter()
            .enumerate()
            .filter(|&(i, v)| {
                with_pages[i] && v.prot != (v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32)
            })
            .map(|(_, v)| {
                (
                    format!("mprotect of VMA [{:#x}, {:#x})", v.start, v.end),
                    Call::new(
                        libc::SYS_mprotect,
                        &[v.start, v.end - v.start, v.prot as u64],
                    ),
                )
            })
            .collect();
        self.calls(&protect, |_, _| None)
    }

    /// Names of anonymous memory ("[anon:NAME]", "[anon_shmem:NAME]", PR_SET_VMA_ANON_NAME).
    fn name_anon_vmas(&mut self) -> R<()> {
        const PR_SET_VMA: u64 = 0x5356_4d41;
        const PR_SET_VMA_ANON_NAME: u64 = 0;
        for v in &self.img.vmas {
            let Some(name) = crate::image::anon_name(v) else {
                continue;
            };
            let mut b = name.as_bytes().to_vec();
            b.push(0);
            let at = self.put(0, &b)?;
            self.call(
                &format!(
                    "prctl(PR_SET_VMA_ANON_NAME, {name:?}) of VMA [{:#x}, {:#x})",
                    v.start, v.end
                ),
                libc::SYS_prctl,
                &[
                    PR_SET_VMA,
                    PR_SET_VMA_ANON_NAME,
                    v.start,
                    v.end - v.start,
                    at,
                ],
            )?;
        }
        Ok(())
    }

    /// Refuses lock states this restore cannot give back, before anything is mapped.
    fn check_locks(&self, with_pages: &[bool]) -> R<()> {
        let img = self.img;
        for (i, v) in img.vmas.iter().enumerate() {
            if v.mlock > 2 {
                return Err(RestoreError::Refused(format!(
                    "VMA [{:#x}, {:#x}): unknown mlock state {}",
                    v.start, v.end, v.mlock
                )));
            }
            let anon = v.kind == pb::VmaKind::VmaAnon as i32
                || v.kind == pb::VmaKind::VmaAnonShared as i32;
            if self.lazy && v.mlock == 1 && anon && with_pages[i] {
                // Locking populates the VMA: its missing pages would fault to a pager
                // that only starts once the puppet is released.
                return Err(RestoreError::Refused(format!(
                    "pid {}: VMA [{:#x}, {:#x}) is mlocked; --lazy cannot restore locked \
                     memory (restore without --lazy)",
                    self.pid, v.start, v.end
                )));
            }
        }
        let future = img.mm.mlockall;
        if future != 0 && (future & !(MCL_FUTURE | MCL_ONFAULT) != 0 || future & MCL_FUTURE == 0) {
            return Err(RestoreError::Refused(format!(
                "pid {}: mlockall flags {future:#x} in the image",
                self.pid
            )));
        }
        Ok(())
    }

    /// Locks the VMAs that were locked: after the fill (a locked VMA would be populated
    /// with zero pages first), with their final protections (mlock faults pages in for
    /// reading or writing accordingly), and after `creds`, so the kernel holds the process
    /// to its own RLIMIT_MEMLOCK unless it has CAP_IPC_LOCK itself: an image cannot lock
    /// more than its process could. Any failure fails the restore.
    fn mlock(&mut self) -> R<()> {
        let img = self.img;
        const RLIMIT_MEMLOCK: u32 = 8;
        let limit = match img
            .core
            .rlimits
            .iter()
            .find(|l| l.resource == RLIMIT_MEMLOCK)
        {
            Some(l) if l.cur != u64::MAX => format!("{} KiB", l.cur >> 10),
            _ => "unlimited".to_string(),
        };
        for v in img.vmas.iter().filter(|v| v.mlock != 0) {
            let flags = if v.mlock == 2 { MLOCK_ONFAULT } else { 0 };
            self.call(
                &format!(
                    "mlock2{} of VMA [{:#x}, {:#x}) ({} KiB) as the process (its \
                     RLIMIT_MEMLOCK: {limit}, unless it has CAP_IPC_LOCK)",
                    if flags == 0 { "" } else { "(MLOCK_ONFAULT)" },
                    v.start,
                    v.end,
                    (v.end - v.start) >> 10
                ),
                libc::SYS_mlock2,
                &[v.start, v.end - v.start, flags],
            )?;
        }
        let future = img.mm.mlockall;
        if future != 0 {
            // Only future mappings: the current ones were locked one by one above.
            self.call(
                &format!("mlockall({future:#x})"),
                libc::SYS_mlockall,
                &[future as u64],
            )?;
        }
        Ok(())
    }

    /// The tree's object `id`, made by ckpt, opened in the puppet through /proc; closed
    /// once its VMAs are mapped.
    fn open_shared(&mut self, id: u64) -> R<u64> {
        let path = self
            .shared
            .and_then(|s| s.get(&id))
            .expect("checked by the caller");
        let mut bytes = path.as_bytes().to_vec();
        bytes.push(0);
        let at = self.put(0, &bytes)?;
        self.call(
            &format!("open of the shared memory object {path}"),
            libc::SYS_openat,
            &[
                libc::AT_FDCWD as u64,
                at,
                (libc::O_RDWR | libc::O_CLOEXEC) as u64,
            ],
        )
    }

    /// A new memfd of the object's size in the puppet, for its VMAs to map; closed once
    /// they are mapped. Anonymous shared memory comes back as a memfd too when it was
    /// mapped by several VMAs: MAP_ANONYMOUS makes one object per mmap call.
    fn memfd(&mut self, o: &crate::image::ShmObject) -> R<u64> {
        let mut name = o.name.as_bytes().to_vec();
        name.push(0);
        let at = self.put(0, &name)?;
        let fd = self.call(
            &format!("memfd_create({:?})", o.name),
            libc::SYS_memfd_create,
            &[at, MFD_CLOEXEC],
        )?;
        self.call(
            &format!("ftruncate of memfd {:?} to {} bytes", o.name, o.size),
            libc::SYS_ftruncate,
            &[fd, o.size],
        )?;
        Ok(fd)
    }

    /// Copies every dumped page into place from the mapped pages file (verified before
    /// the seed was forked, `lib.rs`; the lazy pager verifies as it serves), on every CPU
    /// and a window of the file at a time (`fill.rs`).
    ///
    /// Anonymous memory is filled with UFFDIO_COPY (allocate + copy, no fault, no zeroing);
    /// the rest (written pages of private file mappings, huge-page memory, which
    /// UFFDIO_COPY would split into 4 KiB pages) with batched process_vm_writev.
    fn fill(&mut self, pages: &fill::Source, with_pages: &[bool]) -> R<()> {
        if self.lazy {
            return self.copy_pages(pages, with_pages);
        }
        let total: u64 = self
            .img
            .runs
            .iter()
            .map(|r| r.nr_pages * PAGE_SIZE as u64)
            .sum();
        self.progress.begin("restoring memory", total);
        let copied = self.copy_pages(pages, with_pages);
        self.progress.end();
        copied
    }

    fn copy_pages(&mut self, pages: &fill::Source, with_pages: &[bool]) -> R<()> {
        let img = self.img;
        let thp = fill::thp_mode();
        let by_uffd: Vec<bool> = img
            .vmas
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let anon = v.kind == pb::VmaKind::VmaAnon as i32
                    || v.kind == pb::VmaKind::VmaAnonShared as i32;
                // userfaultfd does not register droppable memory.
                let droppable = v.map_flags & crate::image::MAP_DROPPABLE != 0;
                with_pages[i] && anon && !droppable && !fill::wants_thp(v, thp)
            })
            .collect();
        let uffd = if by_uffd.iter().any(|&b| b) {
            let fd = self.call(
                "userfaultfd",
                libc::SYS_userfaultfd,
                &[(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64],
            )?;
            let mine = ckpt_sys::process::steal_fd(self.pid, fd as i32)?;
            let uffd = if self.lazy {
                ckpt_sys::uffd::Uffd::with_features(mine, ckpt_sys::uffd::lazy_features())?
            } else {
                ckpt_sys::uffd::Uffd::new(mine)?
            };
            for (v, _) in img.vmas.iter().zip(&by_uffd).filter(|(_, &u)| u) {
                uffd.register_missing(v.start, v.end - v.start)?;
            }
            Some((uffd, fd))
        } else {
            None
        };
        let by_uffd_now: Vec<bool> = by_uffd.iter().map(|&b| b && uffd.is_some()).collect();
        let mut verified = Vec::new();
        if let Some(frames) = img.frames.as_deref() {
            let runs = crate::image::by_offset(&img.runs);
            let dest = fill::FrameDest {
                pid: self.pid,
                runs: &runs,
                vmas: &img.vmas,
                uffd_vma: &by_uffd_now,
                uffd: uffd.as_ref().map(|(u, _)| u),
                progress: self.progress,
            };
            fill::copy_frames(&dest, pages, &self.pages_path, frames)?;
        } else {
            let jobs = fill::plan(&img.runs, &img.vmas, &by_uffd_now, self.lazy);
            if self.lazy {
                // Not verified up front in a lazy restore: the chunks of what is copied
                // now (and of the rseq area's pages, copied below) are checked here, once
                // each; the pager is told which.
                let mut want = vec![false; img.pages_entry.chunk_xxh3.len()];
                let cs = img.pages_entry.chunk_size.max(1);
                let mut mark = |off: u64, len: u64| {
                    for i in off / cs..(off + len).div_ceil(cs) {
                        if let Some(w) = want.get_mut(i as usize) {
                            *w = true;
                        }
                    }
                };
                for j in &jobs {
                    mark(j.off, j.len);
                }
                for (off, _) in self.rseq_pages() {
                    mark(off, PAGE_SIZE as u64);
                }
                verified = fill::verify_chunks(pages, &self.pages_path, &img.pages_entry, &want)?;
            }
            fill::copy(
                self.pid,
                pages,
                &jobs,
                uffd.as_ref().map(|(u, _)| u),
                self.progress,
            )?;
        }
        let page = PAGE_SIZE as u64;
        if let (true, Some(fd)) = (self.lazy, uffd.as_ref().map(|u| u.1)) {
            // The process keeps its own copy, above every restored and helper fd: while
            // it is open, a dead ckpt blocks the process instead of leaving it zeros.
            let high = self.call(
                "fcntl(F_DUPFD_CLOEXEC) of the userfaultfd",
                libc::SYS_fcntl,
                &[
                    fd,
                    libc::F_DUPFD_CLOEXEC as u64,
                    self.plan.helper_end() as u64 + 1,
                ],
            )?;
            self.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
            let ranges = img
                .vmas
                .iter()
                .zip(&by_uffd)
                .filter(|(_, &u)| u)
                .map(|(v, _)| (v.start, v.end))
                .collect();
            let (uffd, _) = uffd.expect("matched above");
            // Pages the kernel touches in the injected calls still to come (rseq
            // registration writes its area) must be there now: nobody serves faults
            // until the puppet phase is over. Their chunks were verified above.
            for (off, at) in self.rseq_pages() {
                let src = pages.reader.slice(off, page)?;
                match uffd.copy_once(at, src)? {
                    ckpt_sys::uffd::Fill::Done | ckpt_sys::uffd::Fill::Exists(_) => {}
                    other => {
                        return Err(RestoreError::Refused(format!(
                            "pid {}: prefill of the rseq page {at:#x}: {other:?}",
                            self.pid
                        )))
                    }
                }
            }
            self.handoff = Some(crate::lazy::Handoff {
                uffd,
                remote_fd: high as i32,
                ranges,
                verified,
            });
            return Ok(());
        }
        if let Some((uffd, fd)) = uffd {
            for (v, _) in img.vmas.iter().zip(&by_uffd).filter(|(_, &u)| u) {
                uffd.unregister(v.start, v.end - v.start)?;
            }
            drop(uffd);
            self.call("close of the userfaultfd", libc::SYS_close, &[fd])?;
        }
        Ok(())
    }

    /// The dumped pages (file offset, address) holding the first and last byte of every
    /// thread's rseq area: the kernel writes them at the rseq registration, while nobody
    /// serves faults.
    fn rseq_pages(&self) -> Vec<(u64, u64)> {
        let page = PAGE_SIZE as u64;
        let mut out = Vec::new();
        for r in self
            .img
            .threads
            .iter()
            .filter_map(|t| t.rseq.as_ref())
            .filter(|r| r.ptr != 0)
        {
            let first = r.ptr & !(page - 1);
            let last = (r.ptr + r.len.max(32) as u64 - 1) & !(page - 1);
            for run in &self.img.runs {
                let end = run.vaddr + run.nr_pages * page;
                for at in [first, last] {
                    if at >= run.vaddr && at < end && !out.iter().any(|&(_, a)| a == at) {
                        out.push((run.offset + (at - run.vaddr), at));
                    }
                }
            }
        }
        out
    }

    /// brk, arg/env areas, auxv and the exe link, in one PR_SET_MM_MAP (the only form
    /// that works without CAP_SYS_RESOURCE).
    fn set_mm(&mut self) -> R<()> {
        let mm = &self.img.mm;
        let auxv_at = self.put(512, &mm.auxv)?;
        let mut b = Vec::with_capacity(104);
        for v in [
            mm.start_code,
            mm.end_code,
            mm.start_data,
            mm.end_data,
            mm.start_brk,
            mm.brk,
            mm.start_stack,
            mm.arg_start,
            mm.arg_end,
            mm.env_start,
            mm.env_end,
            auxv_at,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(mm.auxv.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.plan.exe_fd() as u32).to_le_bytes());
        let at = self.put(0, &b)?;
        self.call(
            "prctl(PR_SET_MM_MAP)",
            libc::SYS_prctl,
            &[PR_SET_MM, PR_SET_MM_MAP, at, b.len() as u64, 0],
        )?;
        Ok(())
    }

    /// Sets every dumped sigaction and resets what the seed inherited from ckpt. SIGTRAP
    /// is set only in the last pass (`trap_only`), after the final int3.
    fn set_sigactions(&mut self, reset: &[u32], trap_only: bool) -> R<()> {
        let acts = &self.img.core.sigactions;
        for sig in 1..=64u32 {
            if sig == 9 || sig == 19 || (sig == SIGTRAP) != trap_only {
                continue;
            }
            let act = acts.iter().find(|a| a.signo == sig);
            if act.is_none() && !reset.contains(&sig) {
                continue;
            }
            let mut b = [0u8; 32];
            if let Some(a) = act {
                b[0..8].copy_from_slice(&a.handler.to_le_bytes());
                b[8..16].copy_from_slice(&a.flags.to_le_bytes());
                b[16..24].copy_from_slice(&a.restorer.to_le_bytes());
                b[24..32].copy_from_slice(&a.mask.to_le_bytes());
            }
            let at = self.put(0, &b)?;
            self.call(
                &format!("rt_sigaction({sig})"),
                libc::SYS_rt_sigaction,
                &[sig as u64, at, 0, 8],
            )?;
        }
        Ok(())
    }

    fn itimers(&mut self) -> R<()> {
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

    /// Re-queues the signals that were pending at dump, while everything is blocked.
    fn pending_signals(&mut self) -> R<()> {
        // The process's own pid as it sees it (in a new pid namespace, not ckpt's).
        let pid = self.img.core.pid as u64;
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
            .map(|(s, i)| (s, self.img.core.pid, i))
            .collect();
        all.extend(others.iter().map(|(tid, i)| (false, *tid, i)));
        for (is_shared, tid, info) in all {
            if info.len() != 128 {
                continue;
            }
            let sig = u32::from_le_bytes(info[0..4].try_into().expect("4 bytes"));
            if sig == 0 || sig > 64 || sig == 9 || sig == 19 {
                continue;
            }
            let at = self.put(0, info)?;
            if is_shared {
                self.call(
                    &format!("rt_sigqueueinfo({sig})"),
                    libc::SYS_rt_sigqueueinfo,
                    &[pid, sig as u64, at],
                )?;
            } else {
                self.call(
                    &format!("rt_tgsigqueueinfo({sig}) to thread {tid}"),
                    libc::SYS_rt_tgsigqueueinfo,
                    &[pid, tid as u64, sig as u64, at],
                )?;
            }
        }
        Ok(())
    }

    /// Credentials, when they differ from the seed's (ckpt's own, root with full caps).
    ///
    /// The order is forced by what each step needs:
    /// 1. keep-caps on, then groups and ids: the permitted set survives the uid change;
    /// 2. capset E = P = the seed's full set, I = the image's: CAP_SETPCAP is effective
    ///    again for what follows, and the inheritable set goes in while the bounding set
    ///    is still full (a new inheritable cap must be in the bounding set);
    /// 3. PR_CAPBSET_DROP of every cap the image's bounding set lacks;
    /// 4. ambient caps (each must be in P and I, and SECBIT_NO_CAP_AMBIENT_RAISE not yet
    ///    set);
    /// 5. PR_SET_SECUREBITS: needs CAP_SETPCAP, and after the uid change so the image's
    ///    bits (no keep-caps, locks) cannot get in its way;
    /// 6. capset of the image's E, P, I: only ever a reduction; the ambient set stays,
    ///    as it is inside P and I.
    ///
    /// `c`: the credentials of the thread the calls go to. Returns whether anything had
    /// to change.
    fn creds(&mut self, c: Option<pb::Creds>) -> R<bool> {
        let Some(c) = c else {
            return Ok(false);
        };
        // Per thread: the status of the thread the calls go to.
        let st = ckpt_sys::proc::status(self.remote.pid())?;
        let seed_bits = self.call(
            "prctl(PR_GET_SECUREBITS)",
            libc::SYS_prctl,
            &[PR_GET_SECUREBITS],
        )? as u32;
        let same_ids = c.uid.iter().all(|&u| u == st.euid && u == st.ruid)
            && c.gid.iter().all(|&g| g == st.egid && g == st.rgid);
        let mut groups: Vec<u32> = st.groups.iter().map(|&g| g as u32).collect();
        groups.sort();
        let mut want_groups = c.groups.clone();
        want_groups.sort();
        let seed_bnd = st.capbnd.unwrap_or(0);
        let seed_amb = st.capamb.unwrap_or(0);
        let same_caps = c.cap_eff == st.capeff
            && c.cap_prm == st.capprm
            && c.cap_inh == st.capinh
            && c.cap_bnd == seed_bnd
            && c.cap_amb == seed_amb
            && c.securebits == seed_bits;
        if same_ids && groups == want_groups && same_caps {
            return Ok(false);
        }
        if c.uid.len() < 3 || c.gid.len() < 3 {
            return Err(RestoreError::Refused(
                "credentials record is incomplete".into(),
            ));
        }
        let pid = self.pid;
        let refuse = |what: String| RestoreError::Refused(format!("pid {pid}: {what}"));
        if c.cap_prm & !st.capprm != 0 || c.cap_bnd & !seed_bnd != 0 {
            return Err(refuse(format!(
                "the image holds capabilities ckpt does not have (permitted {:#x}, bounding \
                 {:#x}; ckpt has {:#x}, {:#x})",
                c.cap_prm, c.cap_bnd, st.capprm, seed_bnd
            )));
        }
        if c.cap_amb & !(c.cap_prm & c.cap_inh) != 0 {
            return Err(refuse(format!(
                "ambient capabilities {:#x} are not both permitted and inheritable",
                c.cap_amb
            )));
        }
        self.call(
            "prctl(PR_SET_KEEPCAPS, 1)",
            libc::SYS_prctl,
            &[PR_SET_KEEPCAPS, 1],
        )?;
        if !(same_ids && groups == want_groups) {
            let gb: Vec<u8> = c.groups.iter().flat_map(|g| g.to_le_bytes()).collect();
            let at = self.put(0, &gb)?;
            self.call(
                "setgroups",
                libc::SYS_setgroups,
                &[c.groups.len() as u64, at],
            )?;
            self.call(
                "setresgid",
                libc::SYS_setresgid,
                &[c.gid[0] as u64, c.gid[1] as u64, c.gid[2] as u64],
            )?;
            self.call(
                "setresuid",
                libc::SYS_setresuid,
                &[c.uid[0] as u64, c.uid[1] as u64, c.uid[2] as u64],
            )?;
        }
        self.capset("capset of the full set", st.capprm, st.capprm, c.cap_inh)?;
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(40)
            .min(63);
        for cap in 0..=last_cap {
            let bit = 1u64 << cap;
            if seed_bnd & bit != 0 && c.cap_bnd & bit == 0 {
                self.call(
                    &format!("prctl(PR_CAPBSET_DROP, {cap})"),
                    libc::SYS_prctl,
                    &[PR_CAPBSET_DROP, cap as u64],
                )?;
            }
        }
        if seed_amb != 0 {
            self.call(
                "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
                libc::SYS_prctl,
                &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0],
            )?;
        }
        for cap in 0..=last_cap {
            if c.cap_amb & (1u64 << cap) != 0 {
                self.call(
                    &format!("prctl(PR_CAP_AMBIENT_RAISE, {cap})"),
                    libc::SYS_prctl,
                    &[PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap as u64, 0, 0],
                )?;
            }
        }
        self.call(
            &format!("prctl(PR_SET_SECUREBITS, {:#x})", c.securebits),
            libc::SYS_prctl,
            &[PR_SET_SECUREBITS, c.securebits as u64],
        )?;
        self.capset("capset", c.cap_eff, c.cap_prm, c.cap_inh)?;
        Ok(true)
    }

    /// capset(2), _LINUX_CAPABILITY_VERSION_3: header {version, pid}, two data words.
    fn capset(&mut self, what: &str, eff: u64, prm: u64, inh: u64) -> R<()> {
        let mut b = Vec::new();
        b.extend_from_slice(&0x2008_0522u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for shift in [0, 32] {
            for v in [eff, prm, inh] {
                b.extend_from_slice(&((v >> shift) as u32).to_le_bytes());
            }
        }
        let at = self.put(0, &b)?;
        self.call(
            &format!("{what} (E {eff:#x}, P {prm:#x}, I {inh:#x})"),
            libc::SYS_capset,
            &[at, at + 8],
        )?;
        Ok(())
    }

    /// The last steps: dumpable, then the munmap of the trampoline, stopped at its
    /// syscall exit where the final registers, FPU state and sigmask are set, so the task
    /// never runs another instruction of ours.
    fn finish(&mut self) -> R<()> {
        let core = &self.img.core;
        let t = &self.img.threads[0];
        self.call(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[PR_SET_DUMPABLE, dumpable_to_set(core.dumpable)],
        )?;
        if core.cpu_affinity != 0 {
            // Best effort: the machine may have fewer CPUs than the one dumped on.
            let _ = ckpt_sys::process::set_affinity(self.pid, core.cpu_affinity);
        }
        let r = self.remote.syscall_to_exit(
            libc::SYS_munmap,
            &[self.tramp, 2 * PAGE_SIZE as u64],
            self.tramp,
        )?;
        if r != 0 {
            return Err(RestoreError::Refused(format!(
                "pid {}: final munmap of the trampoline returned {r}",
                self.pid
            )));
        }
        let mut regs = crate::regs::from_image(t.regs.as_ref().expect("checked at load"));
        ckpt_sys::regs::fix_syscall_restart(&mut regs);
        ptrace::set_regs(self.pid, &regs)?;
        ptrace::set_xstate(self.pid, &t.xsave)?;
        // Only now: an unblocked pending signal must be delivered on top of the final
        // registers, after the detach, not stop an injected call half way.
        ptrace::set_sigmask(self.pid, t.sigmask)?;
        Ok(())
    }
}

/// The PR_SET_DUMPABLE value for a dumped one. prctl takes only 0 and 1; 2
/// (SUID_DUMP_ROOT) is set by the kernel alone, when fs.suid_dumpable is 2 and the process
/// changed credentials or exec'd a setuid program. 0 is what keeps its meaning: like 2 it
/// keeps the process's ptrace and /proc files from its own uid (only 1 opens them); only
/// the root-owned core dump is lost.
fn dumpable_to_set(dumped: i32) -> u64 {
    u64::from(dumped == 1)
}

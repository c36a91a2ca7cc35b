//! The puppet's address space: the seed's goes (but the trampoline), the vDSO is placed
//! at its dumped address, every VMA is mapped again (shared memory objects as memfds,
//! mapped files through the seed's fds), advised, filled (`pages.rs`), protected and,
//! as the process, locked.

use super::{Batched, Puppet, R};
use crate::fill;
use crate::image::TASK_SIZE;
use crate::RestoreError;
use ckpt_images::{pb, PAGE_SIZE};
use ckpt_sys::inject::Call;
use ckpt_sys::ptrace;

const MFD_CLOEXEC: u64 = 1;
const MLOCK_ONFAULT: u64 = 1;
const MCL_FUTURE: u32 = 2;
const MCL_ONFAULT: u32 = 4;
const ARCH_MAP_VDSO_64: u64 = 0x2003;
const RSEQ_FLAG_UNREGISTER: u64 = 1;

impl Puppet<'_> {
    /// The seed goes, in one batch: its guard against a dead ckpt (PR_SET_PDEATHSIG;
    /// EXITKILL guards from here), the rseq area glibc registered for it (it dies with
    /// the seed's memory, and the kernel would fault, SIGSEGV, on the next resume if it
    /// were still registered), all its memory but the trampoline ([vsyscall] lies above
    /// TASK_SIZE) and the VMAs it keeps shared copy-on-write (`sharing.rs`); then the
    /// vDSO block ([vvar], [vvar_vclock], [vdso]) is mapped at its dumped address, which
    /// is only a hint to the kernel, so the result is checked in /proc.
    pub(super) fn clear_seed(&mut self) -> R<()> {
        let mut calls = vec![Batched::new(
            "prctl(PR_SET_PDEATHSIG, 0)",
            libc::SYS_prctl,
            &[libc::PR_SET_PDEATHSIG as u64, 0],
        )];
        let conf = ptrace::get_rseq(self.pid)?;
        if conf.ptr != 0 {
            calls.push(Batched::new(
                "rseq unregister of the seed",
                libc::SYS_rseq,
                &[
                    conf.ptr,
                    conf.len as u64,
                    RSEQ_FLAG_UNREGISTER,
                    conf.sig as u64,
                ],
            ));
        }
        let mut keep = vec![(self.tramp, self.tramp + 2 * PAGE_SIZE as u64)];
        keep.extend(self.sharing.iter().flat_map(|t| t.kept.iter().copied()));
        keep.sort_unstable();
        let mut at = 0;
        for (s, e) in keep.into_iter().chain([(TASK_SIZE, TASK_SIZE)]) {
            if s > at {
                calls.push(Batched::new(
                    format!("munmap of the seed's [{at:#x}, {s:#x})"),
                    libc::SYS_munmap,
                    &[at, s - at],
                ));
            }
            at = at.max(e);
        }
        let mm = &self.img.mm;
        if mm.vdso_block_start != 0 {
            calls.push(Batched::new(
                "arch_prctl(ARCH_MAP_VDSO_64)",
                libc::SYS_arch_prctl,
                &[ARCH_MAP_VDSO_64, mm.vdso_block_start],
            ));
        }
        self.batched(&calls, |_, _| None)?;
        if mm.vdso_block_start == 0 {
            return Ok(());
        }
        let maps = ckpt_sys::proc::maps(self.pid)?;
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

    /// Maps, advises and fills every VMA; returns the calls that give them their final
    /// protections, for the caller's next batch.
    pub(super) fn map_vmas(&mut self, pages: &fill::Source) -> R<Vec<Batched>> {
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
        let mut mapped = Vec::with_capacity(img.vmas.len());
        let kept = self.sharing.map_or(&[][..], |t| &t.kept[..]);
        for (i, v) in img.vmas.iter().enumerate() {
            if kept.binary_search(&(v.start, v.end)).is_ok() {
                // In place since the seed, read-write, private and anonymous.
                continue;
            }
            mapped.push(i);
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
            let v = &img.vmas[mapped[i]];
            (got != v.start)
                .then(|| format!("VMA [{:#x}, {:#x}) landed at {got:#x}", v.start, v.end))
        })?;
        self.name_anon_vmas()?;
        // The memfds go in the same batch as the advice, which comes first: MADV_HUGEPAGE
        // must be in place before the pages arrive.
        let closes = shm_fds.into_values().map(|fd| {
            (
                "close of a shared memory memfd".to_string(),
                Call::new(libc::SYS_close, &[fd]),
            )
        });
        let advice: Vec<(String, Call)> = closes
            .chain(img.vmas.iter().flat_map(|v| {
                v.madvise.iter().map(move |&a| {
                    (
                        format!("madvise({a}) of VMA [{:#x}, {:#x})", v.start, v.end),
                        Call::new(libc::SYS_madvise, &[v.start, v.end - v.start, a as u64]),
                    )
                })
            }))
            .collect();
        self.calls(&advice, |_, _| None)?;
        self.drop_stale()?;
        // The fill runs on every CPU, in threads of ckpt's: not pinned meanwhile.
        let pinned = self.unpin();
        self.fill(pages, &with_pages)?;
        if pinned {
            self.pin()?;
        }
        Ok(img
            .vmas
            .iter()
            .enumerate()
            .filter(|&(i, v)| {
                with_pages[i] && v.prot != (v.prot | (libc::PROT_READ | libc::PROT_WRITE) as u32)
            })
            .map(|(_, v)| {
                Batched::new(
                    format!("mprotect of VMA [{:#x}, {:#x})", v.start, v.end),
                    libc::SYS_mprotect,
                    &[v.start, v.end - v.start, v.prot as u64],
                )
            })
            .collect())
    }

    /// In the VMAs kept from the seed, drops every page that is not the image's (a
    /// parent's page the process had its own of, or none at all); the fill copies only
    /// the runs that are not there already.
    fn drop_stale(&mut self) -> R<()> {
        let Some(t) = self.sharing else {
            return Ok(());
        };
        const MADV_DONTNEED: u64 = 4;
        let zaps: Vec<(String, Call)> = t
            .stale()
            .into_iter()
            .map(|(s, e)| {
                (
                    format!("madvise(MADV_DONTNEED) of [{s:#x}, {e:#x})"),
                    Call::new(libc::SYS_madvise, &[s, e - s, MADV_DONTNEED]),
                )
            })
            .collect();
        self.calls(&zaps, |_, _| None)?;
        self.fill_runs = Some(t.to_fill(&self.img.runs));
        Ok(())
    }

    /// Names of anonymous memory ("[anon:NAME]", "[anon_shmem:NAME]", PR_SET_VMA_ANON_NAME).
    pub(super) fn name_anon_vmas(&mut self) -> R<()> {
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
    pub(super) fn check_locks(&self, with_pages: &[bool]) -> R<()> {
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
    pub(super) fn mlock(&mut self) -> R<()> {
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
    pub(super) fn open_shared(&mut self, id: u64) -> R<u64> {
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
    pub(super) fn memfd(&mut self, o: &crate::image::ShmObject) -> R<u64> {
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
}

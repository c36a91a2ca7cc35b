//! Restore checks itself before it lets the process go: the restored task's
//! kernel-visible state, read back from /proc while it is still stopped, is compared with
//! the image, and the first difference fails the restore (the process is killed by
//! `Cleanup`, never run). What is compared: the mappings (ranges, protections, kind,
//! names and VmFlags), the /proc/PID/status fields restore sets, the limits, the audit
//! loginuid and timer slack, every fd (flags, offsets, locks) and the POSIX timers.
//!
//! Not compared, because they cannot be equal or do not say anything (see
//! dump/src/known_state.rs): VmFlags `ac` (overcommit accounting: a read-only VMA that
//! restore filled through a writable mapping gains it), `sd` (soft-dirty tracking, set on
//! every new VMA), `um`/`uw`/`ui` (the lazy pager's registration; the dump refuses a
//! process's own); the timers' remaining times (they run) and overrun counts; the name
//! of shared anonymous memory that comes back as a memfd (`shm_renamed`).

use crate::image::ProcessImage;
use crate::RestoreError;
use ckpt_images::pb;
use ckpt_sys::proc::{self, Mapping};
use ckpt_sys::{kstate, Pid};
use std::collections::BTreeSet;

/// VmFlags letters left out of the comparison (see the module doc).
const NOT_COMPARED: [&str; 5] = ["ac", "sd", "um", "uw", "ui"];
/// Set by every open(2) on 64-bit, never by pipe2().
const O_LARGEFILE: u32 = 0o100000;
const O_CLOEXEC: u32 = 0o2000000;

type R<T> = Result<T, String>;

/// Compares the stopped, fully restored `pid` with `img`; Err names the first difference.
/// `lazy`: the process holds the pager's userfaultfd above its own fds (lazy.rs).
pub fn check(pid: Pid, img: &ProcessImage, lazy: bool) -> Result<(), RestoreError> {
    let run = || -> Result<R<()>, ckpt_sys::Error> {
        let maps = proc::smaps(pid)?;
        let status = proc::read_trimmed(&format!("/proc/{pid}/status"))?;
        let limits = proc::limits(pid)?;
        let loginuid = proc::read_trimmed(&format!("/proc/{pid}/loginuid"))?;
        let slack = proc::read_trimmed(&format!("/proc/{pid}/timerslack_ns"))?;
        let filter = proc::read_trimmed(&format!("/proc/{pid}/coredump_filter"))?;
        let ioprio = ckpt_sys::process::get_ioprio(pid)?;
        let timers = kstate::timers(pid)?;
        let fds = proc::fds(pid)?;
        let mut infos = Vec::with_capacity(fds.len());
        let mut dir = proc::FdInfoDir::open(pid)?;
        for &fd in &fds {
            if lazy
                && proc::read_link(&format!("/proc/{pid}/fd/{fd}"))
                    .is_ok_and(|t| t.as_os_str() == "anon_inode:[userfaultfd]")
            {
                continue;
            }
            infos.push((fd, dir.text(fd)?));
        }
        Ok(mappings(&maps, img)
            .and_then(|_| status_fields(&status, img))
            .and_then(|_| rlimits(&limits, img))
            .and_then(|_| proc_values(&loginuid, &slack, img))
            .and_then(|_| per_mm(&filter, ioprio, img))
            .and_then(|_| fd_state(&infos, img))
            .and_then(|_| posix_timers(&timers, img)))
    };
    run()?.map_err(|d| {
        RestoreError::Refused(format!(
            "pid {pid}: the restored process differs from the image: {d} (restore --no-verify \
             skips this check)"
        ))
    })
}

fn flag_set(flags: &[String]) -> BTreeSet<&str> {
    flags
        .iter()
        .map(String::as_str)
        .filter(|f| !NOT_COMPARED.contains(f))
        .collect()
}

fn vma_what(v: &pb::Vma) -> String {
    format!("VMA [{:#x}, {:#x}) {}", v.start, v.end, v.name)
}

/// Every restored mapping is one image VMA, or several adjacent ones the kernel merged
/// (their flags equal); nothing else is mapped but the vDSO parts and [vsyscall].
fn mappings(maps: &[Mapping], img: &ProcessImage) -> R<()> {
    let mut vi = img.vmas.iter().peekable();
    for m in maps {
        if ["[vvar]", "[vvar_vclock]", "[vdso]", "[vsyscall]"].contains(&m.name.as_str()) {
            continue;
        }
        let Some(first) = vi.next() else {
            return Err(format!(
                "mapping [{:#x}, {:#x}) {} is not in the image",
                m.start, m.end, m.name
            ));
        };
        if first.start != m.start {
            return Err(format!(
                "{} is restored as [{:#x}, {:#x}) {}",
                vma_what(first),
                m.start,
                m.end,
                m.name
            ));
        }
        let mut covered = vec![first];
        while covered.last().is_some_and(|v| v.end < m.end) {
            match vi.next_if(|v| Some(&v.start) == covered.last().map(|l| &l.end)) {
                Some(v) => covered.push(v),
                None => {
                    return Err(format!(
                        "{} is restored as part of the larger mapping [{:#x}, {:#x})",
                        vma_what(first),
                        m.start,
                        m.end
                    ))
                }
            }
        }
        let got = flag_set(&m.vm_flags);
        for v in covered {
            if v.end > m.end {
                return Err(format!(
                    "{} is restored as [{:#x}, {:#x}) only",
                    vma_what(v),
                    m.start,
                    m.end
                ));
            }
            if m.prot() != v.prot {
                return Err(format!(
                    "{}: protection {:#x}, image {:#x}",
                    vma_what(v),
                    m.prot(),
                    v.prot
                ));
            }
            let name = if m.deleted {
                format!("{} (deleted)", m.name)
            } else {
                m.name.clone()
            };
            if name != v.name && !shm_renamed(v, &name) {
                return Err(format!("{}: restored with the name {name:?}", vma_what(v)));
            }
            if v.vm_flags.is_empty() {
                continue;
            }
            let want_v: Vec<String> = v.vm_flags.split_whitespace().map(String::from).collect();
            let want = flag_set(&want_v);
            if got != want {
                let missing: Vec<&&str> = want.difference(&got).collect();
                let extra: Vec<&&str> = got.difference(&want).collect();
                return Err(format!(
                    "{}: VmFlags lack {missing:?}, have extra {extra:?}",
                    vma_what(v)
                ));
            }
        }
    }
    if let Some(v) = vi.next() {
        return Err(format!("{} is missing", vma_what(v)));
    }
    Ok(())
}

/// Shared anonymous memory mapped by several VMAs comes back as one memfd (puppet.rs,
/// `memfd`): maps then shows "/memfd:NAME (deleted)" where it showed "/dev/zero
/// (deleted)" or "[anon_shmem...]". The one accepted difference of a name.
fn shm_renamed(v: &pb::Vma, got: &str) -> bool {
    v.kind == pb::VmaKind::VmaAnonShared as i32
        && v.shm_id != 0
        && (v.name == "/dev/zero (deleted)" || v.name.starts_with("[anon_shmem"))
        && got.starts_with("/memfd:")
}

fn hex_mask(v: u64) -> String {
    format!("{v:016x}")
}

/// The status fields restore sets, as the image says they must read.
fn status_fields(text: &str, img: &ProcessImage) -> R<()> {
    let c = &img.core;
    let mut want: Vec<(&str, String)> = vec![
        ("Umask", format!("{:04o}", c.umask)),
        ("NoNewPrivs", u32::from(c.no_new_privs).to_string()),
        ("Seccomp", img.threads[0].seccomp_mode.to_string()),
        (
            "Seccomp_filters",
            img.threads[0].seccomp_chain.len().to_string(),
        ),
        ("SigBlk", hex_mask(img.threads[0].sigmask)),
    ];
    let (mut ign, mut cgt) = (0u64, 0u64);
    for a in &c.sigactions {
        let bit = 1u64 << (a.signo - 1);
        match a.handler {
            0 => {}
            1 => ign |= bit,
            _ => cgt |= bit,
        }
    }
    want.push(("SigIgn", hex_mask(ign)));
    want.push(("SigCgt", hex_mask(cgt)));
    // THP_enabled is 0 whatever flags PR_SET_THP_DISABLE had.
    want.push(("THP_enabled", u32::from(c.thp_disable == 0).to_string()));
    if let Some(cr) = &c.creds {
        let ids = |v: &[u32]| v.iter().map(u32::to_string).collect::<Vec<_>>().join("\t");
        want.push(("Uid", ids(&cr.uid)));
        want.push(("Gid", ids(&cr.gid)));
        want.push(("CapInh", hex_mask(cr.cap_inh)));
        want.push(("CapPrm", hex_mask(cr.cap_prm)));
        want.push(("CapEff", hex_mask(cr.cap_eff)));
        want.push(("CapBnd", hex_mask(cr.cap_bnd)));
        want.push(("CapAmb", hex_mask(cr.cap_amb)));
    }
    let lines: Vec<(&str, &str)> = text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k, v.trim()))
        .collect();
    let get = |k: &str| lines.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    for (k, v) in &want {
        let got = get(k).unwrap_or("(absent)");
        if got != v {
            return Err(format!("status {k} is {got:?}, image {v:?}"));
        }
    }
    if let Some(cr) = &c.creds {
        let mut got: Vec<u32> = get("Groups")
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect();
        let mut want = cr.groups.clone();
        got.sort();
        want.sort();
        if got != want {
            return Err(format!("supplementary groups {got:?}, image {want:?}"));
        }
    }
    Ok(())
}

fn rlimits(got: &[(u64, u64)], img: &ProcessImage) -> R<()> {
    for l in &img.core.rlimits {
        let Some(&(cur, max)) = got.get(l.resource as usize) else {
            continue;
        };
        if (cur, max) != (l.cur, l.max) {
            return Err(format!(
                "rlimit {} is {cur}/{max}, image {}/{}",
                l.resource, l.cur, l.max
            ));
        }
    }
    Ok(())
}

fn proc_values(loginuid: &str, slack: &str, img: &ProcessImage) -> R<()> {
    let c = &img.core;
    if let Some(want) = c.loginuid {
        if loginuid != want.to_string() {
            return Err(format!("loginuid is {loginuid}, image {want}"));
        }
    }
    if let Some(want) = c.timerslack_ns.filter(|&n| n != 0) {
        if slack != want.to_string() {
            return Err(format!("timer slack is {slack} ns, image {want} ns"));
        }
    }
    Ok(())
}

/// The core dump filter, and the I/O priority of the leader (the other threads' are set
/// from outside too, the same way).
fn per_mm(filter: &str, ioprio: u32, img: &ProcessImage) -> R<()> {
    if let Some(want) = img.core.coredump_filter {
        if u32::from_str_radix(filter, 16).ok() != Some(want) {
            return Err(format!("coredump_filter is {filter}, image {want:08x}"));
        }
    }
    let want = img.threads.first().map_or(0, |t| t.ioprio);
    if want != 0 && ioprio != want {
        return Err(format!("I/O priority is {ioprio:#x}, image {want:#x}"));
    }
    Ok(())
}

fn fdinfo_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|v| v.strip_prefix(':')))
        .map(str::trim)
}

fn lock_matches(l: &pb::FileLock, got: &kstate::LockLine) -> bool {
    let class = match pb::FileLockKind::try_from(l.kind) {
        Ok(pb::FileLockKind::LockFlock) => "FLOCK",
        Ok(pb::FileLockKind::LockPosix) => "POSIX",
        Ok(pb::FileLockKind::LockOfd) => "OFDLCK",
        Ok(pb::FileLockKind::LockLease) => "LEASE",
        Err(_) => return false,
    };
    got.class == class
        && got.access == if l.write { "WRITE" } else { "READ" }
        && got.start == l.start
        && got.end == l.end
}

/// The same fds, each with its flags, offset (regular files) and locks.
fn fd_state(infos: &[(i32, String)], img: &ProcessImage) -> R<()> {
    let got: Vec<i32> = infos.iter().map(|(fd, _)| *fd).collect();
    let want: Vec<i32> = {
        let mut v: Vec<i32> = img.fds.iter().map(|f| f.fd).collect();
        v.sort();
        v
    };
    if got != want {
        return Err(format!("open fds {got:?}, image {want:?}"));
    }
    for (f, (_, text)) in {
        let mut fds: Vec<&pb::Fd> = img.fds.iter().collect();
        fds.sort_by_key(|f| f.fd);
        fds
    }
    .into_iter()
    .zip(infos)
    {
        let src = if f.is_dup {
            img.fds.iter().find(|o| o.fd == f.dup_of).unwrap_or(f)
        } else {
            f
        };
        let flags = fdinfo_field(text, "flags")
            .and_then(|v| u32::from_str_radix(v, 8).ok())
            .unwrap_or(u32::MAX);
        let mut want_flags = src.flags | if f.cloexec { O_CLOEXEC } else { 0 };
        let mut flags = flags;
        if src.kind == pb::FdKind::FdPipe as i32 {
            // O_LARGEFILE means nothing to a pipe, and a pipe handed over with
            // --inherit-fd was opened (by the caller) with it.
            (flags, want_flags) = (flags & !O_LARGEFILE, want_flags & !O_LARGEFILE);
        }
        if flags != want_flags {
            return Err(format!(
                "fd {} ({}): flags {flags:#o}, image {want_flags:#o}",
                f.fd, src.path
            ));
        }
        if [
            pb::FdKind::FdRegular,
            pb::FdKind::FdMemfd,
            pb::FdKind::FdDeleted,
        ]
        .iter()
        .any(|&k| src.kind == k as i32)
        {
            let pos: u64 = fdinfo_field(text, "pos")
                .and_then(|v| v.parse().ok())
                .unwrap_or(u64::MAX);
            if pos != src.pos {
                return Err(format!(
                    "fd {} ({}): offset {pos}, image {}",
                    f.fd, src.path, src.pos
                ));
            }
        }
        let locks = kstate::fd_locks_of(text)
            .map_err(|l| format!("fd {}: unreadable lock line {l:?}", f.fd))?;
        let want = &src.locks;
        if locks.len() != want.len()
            || !want
                .iter()
                .all(|w| locks.iter().any(|g| lock_matches(w, g)))
        {
            return Err(format!(
                "fd {} ({}): locks {:?}, image {:?}",
                f.fd,
                src.path,
                locks
                    .iter()
                    .map(|l| format!("{} {} {}-{}", l.class, l.access, l.start, l.end))
                    .collect::<Vec<_>>(),
                want
            ));
        }
    }
    Ok(())
}

fn posix_timers(got: &[kstate::TimerLine], img: &ProcessImage) -> R<()> {
    let want = &img.core.posix_timers;
    if got.len() != want.len() {
        return Err(format!("{} POSIX timers, image {}", got.len(), want.len()));
    }
    for w in want {
        let Some(g) = got.iter().find(|g| g.id == w.id) else {
            return Err(format!("POSIX timer {} is missing", w.id));
        };
        if g.clock != w.clock
            || g.signo != w.signo
            || g.sigev_value != w.sigev_value
            || g.sigev_notify() != Some(w.notify)
        {
            return Err(format!("POSIX timer {}: {g:?}, image {w:?}", w.id));
        }
    }
    Ok(())
}

//! Consistency checks of decoded records, before anything acts on them: the VMAs a
//! restore will map and the page runs it will copy, and every bound that would otherwise
//! only be hit once the restored process exists (auxv, groups, the vDSO block). Here
//! rather than in restore so the fuzz targets exercise them too.

use crate::{pb, PAGE_SIZE};
use std::collections::{HashMap, HashSet};

/// Highest user address on x86-64 with 4-level page tables.
pub const TASK_SIZE: u64 = 0x7fff_ffff_f000;

/// The kernel's copy of the auxiliary vector (`mm->saved_auxv`, AT_VECTOR_SIZE words):
/// PR_SET_MM_MAP refuses a longer one with EINVAL. Measured on 6.18 x86-64: 448 bytes
/// accepted, 464 refused.
pub const MAX_AUXV: usize = 448;

/// Supplementary groups a restore can set: setgroups(2) reads the list (4 bytes a group)
/// from the restore's one-page scratch area.
pub const MAX_GROUPS: usize = 4096 / 4;

/// Parts of a vDSO block ([vvar], [vvar_vclock], [vdso] today).
pub const MAX_VDSO_PARTS: usize = 8;

/// MmInfo: an auxv the kernel will take, and a vDSO block inside user space whose parts
/// tile it (the restore checks each part's placement in /proc, so an empty list would
/// skip that check).
pub fn mm_info(mm: &pb::MmInfo) -> Result<(), String> {
    let page = PAGE_SIZE as u64;
    if mm.auxv.len() > MAX_AUXV || mm.auxv.len() % 16 != 0 {
        return Err(format!(
            "MmInfo: auxv of {} bytes (whole 16-byte entries, at most {MAX_AUXV}, are \
             what the kernel keeps)",
            mm.auxv.len()
        ));
    }
    let (start, len) = (mm.vdso_block_start, mm.vdso_block_len);
    if start == 0 {
        if len != 0 || !mm.vdso_parts.is_empty() {
            return Err(format!(
                "MmInfo: no vDSO block, yet a length of {len:#x} and {} parts",
                mm.vdso_parts.len()
            ));
        }
        return Ok(());
    }
    let end = start.checked_add(len);
    if start % page != 0 || len == 0 || len % page != 0 || end.is_none_or(|e| e > TASK_SIZE) {
        return Err(format!(
            "MmInfo: vDSO block at {start:#x}, {len:#x} bytes, is not a range in user space"
        ));
    }
    let end = end.unwrap_or(TASK_SIZE);
    if mm.vdso_parts.is_empty() || mm.vdso_parts.len() > MAX_VDSO_PARTS {
        return Err(format!(
            "MmInfo: vDSO block at {start:#x} has {} parts (1 to {MAX_VDSO_PARTS})",
            mm.vdso_parts.len()
        ));
    }
    let mut at = start;
    for p in &mm.vdso_parts {
        if p.start != at || p.end <= p.start || p.end > end || p.end % page != 0 {
            return Err(format!(
                "MmInfo: vDSO part {:?} [{:#x}, {:#x}) does not follow on at {at:#x} inside \
                 the block [{start:#x}, {end:#x})",
                p.name, p.start, p.end
            ));
        }
        at = p.end;
    }
    if at != end {
        return Err(format!(
            "MmInfo: vDSO parts end at {at:#x}, the block at {end:#x}"
        ));
    }
    Ok(())
}

/// The vDSO block (already checked by `mm_info`) must not overlap any VMA: the restore
/// places it first and maps every VMA with MAP_FIXED_NOREPLACE, so an overlap would only
/// fail once the process exists. `vmas` are sorted (checked by `vmas`).
pub fn vdso_clear_of_vmas(mm: &pb::MmInfo, vmas: &[pb::Vma]) -> Result<(), String> {
    if mm.vdso_block_start == 0 {
        return Ok(());
    }
    let (start, end) = (
        mm.vdso_block_start,
        mm.vdso_block_start.saturating_add(mm.vdso_block_len),
    );
    match vmas.iter().position(|v| v.start < end && start < v.end) {
        None => Ok(()),
        Some(i) => Err(format!(
            "MmInfo: vDSO block [{start:#x}, {end:#x}) overlaps VMA {i} [{:#x}, {:#x})",
            vmas[i].start, vmas[i].end
        )),
    }
}

/// ProcessCore.creds: ids the restore can set, and a group list that fits its scratch page.
pub fn creds(c: &pb::Creds) -> Result<(), String> {
    if c.groups.len() > MAX_GROUPS {
        return Err(format!(
            "ProcessCore.creds: {} supplementary groups, more than the {MAX_GROUPS} a restore \
             can set",
            c.groups.len()
        ));
    }
    if c.uid.len() < 3 || c.gid.len() < 3 {
        return Err(format!(
            "ProcessCore.creds: {} uids and {} gids, expected real, effective and saved",
            c.uid.len(),
            c.gid.len()
        ));
    }
    Ok(())
}

/// Inventory.pids and root_pid: real pids, each once, the root among them. Checked before
/// any core file is read, so a hostile list costs no more than one pass over it.
pub fn pid_list(root: i32, pids: &[i32]) -> Result<(), String> {
    if pids.is_empty() {
        return Err("Inventory: no pids".into());
    }
    let mut seen = HashSet::with_capacity(pids.len());
    for &p in pids {
        if p <= 0 {
            return Err(format!("Inventory: {p} is not a process id"));
        }
        if !seen.insert(p) {
            return Err(format!("Inventory: pid {p} is listed twice"));
        }
    }
    if !seen.contains(&root) {
        return Err(format!("Inventory: root_pid {root} is not in the pid list"));
    }
    Ok(())
}

/// The processes of an image, `(pid, ProcessCore.ppid)` each, form one tree under `root`:
/// the root's parent is outside the image, every other process's parent inside it, and
/// following parents never goes round in a circle (so it always ends at the root).
/// Expects a list that passed `pid_list`.
pub fn tree(root: i32, parents: &[(i32, i32)]) -> Result<(), String> {
    let parent: HashMap<i32, i32> = parents.iter().copied().collect();
    if parent.len() != parents.len() {
        return Err("Inventory: a pid is listed twice".into());
    }
    match parent.get(&root) {
        None => return Err(format!("Inventory: root_pid {root} is not in the pid list")),
        Some(&pp) if parent.contains_key(&pp) => {
            return Err(format!(
                "ProcessCore.ppid: the root process {root} has a parent in the image ({pp}), \
                 so it is not the root of a tree"
            ))
        }
        Some(_) => {}
    }
    for &(pid, pp) in parents {
        if pid != root && !parent.contains_key(&pp) {
            return Err(format!(
                "ProcessCore.ppid: the parent {pp} of pid {pid} is not in the image"
            ));
        }
    }
    // Every chain is followed once: a pid seen on the current chain again is a cycle, one
    // seen on an earlier chain is known to lead to the root.
    const ON_CHAIN: u8 = 1;
    const REACHES_ROOT: u8 = 2;
    let mut state: HashMap<i32, u8> = HashMap::with_capacity(parents.len());
    state.insert(root, REACHES_ROOT);
    for &(start, _) in parents {
        let mut chain: Vec<i32> = Vec::new();
        let mut p = start;
        loop {
            match state.get(&p) {
                Some(&REACHES_ROOT) => break,
                Some(_) => {
                    let from = chain.iter().position(|&q| q == p).unwrap_or(0);
                    let shown: Vec<String> = chain[from..]
                        .iter()
                        .take(8)
                        .map(|q| q.to_string())
                        .collect();
                    return Err(format!(
                        "ProcessCore.ppid: pids {} -> {p} form a cycle of parents",
                        shown.join(" -> ")
                    ));
                }
                None => {}
            }
            state.insert(p, ON_CHAIN);
            chain.push(p);
            p = parent.get(&p).copied().unwrap_or(root);
        }
        for q in chain {
            state.insert(q, REACHES_ROOT);
        }
    }
    Ok(())
}

/// VMAs must be page aligned, inside user space, sorted and disjoint.
pub fn vmas(vmas: &[pb::Vma]) -> Result<(), String> {
    let page = PAGE_SIZE as u64;
    let mut prev_end = 0u64;
    for (i, v) in vmas.iter().enumerate() {
        if v.start % page != 0 || v.end % page != 0 || v.start >= v.end || v.end > TASK_SIZE {
            return Err(format!(
                "VMA {i} [{:#x}, {:#x}) is not a valid range",
                v.start, v.end
            ));
        }
        if v.start < prev_end {
            return Err(format!("VMA {i} at {:#x} overlaps the one before", v.start));
        }
        if v.prot & !7 != 0 {
            return Err(format!(
                "VMA {i} at {:#x}: protection {:#x}",
                v.start, v.prot
            ));
        }
        let file = matches!(
            pb::VmaKind::try_from(v.kind),
            Ok(pb::VmaKind::VmaFilePrivate | pb::VmaKind::VmaFileShared)
        );
        if pb::VmaKind::try_from(v.kind).is_err() {
            return Err(format!(
                "VMA {i} at {:#x}: unknown kind {}",
                v.start, v.kind
            ));
        }
        if file && (!v.path.starts_with('/') || v.pgoff % page != 0) {
            return Err(format!(
                "VMA {i} at {:#x}: bad file {:?} or offset",
                v.start, v.path
            ));
        }
        prev_end = v.end;
    }
    Ok(())
}

/// Every page run must lie inside one VMA that holds pages, and inside the pages file;
/// runs are stored back to back.
pub fn runs(
    vmas: &[pb::Vma],
    runs: &[pb::PageRun],
    nr_pages: u64,
    file_size: u64,
) -> Result<(), String> {
    let end = runs_from(vmas, runs, nr_pages, file_size, PAGE_SIZE as u64)?;
    // Runs cover the pages file back to back, so hashing what is copied hashes the file.
    if end != file_size {
        return Err(format!(
            "runs end at byte {end} of the {file_size} byte pages file"
        ));
    }
    Ok(())
}

/// [`runs`] for one process of a tree, whose runs start at byte `first` of the pages file
/// shared by the tree; returns where they end (where the next process's start).
pub fn runs_from(
    vmas: &[pb::Vma],
    runs: &[pb::PageRun],
    nr_pages: u64,
    file_size: u64,
    first: u64,
) -> Result<u64, String> {
    let page = PAGE_SIZE as u64;
    let mut total = 0u64;
    let mut next_offset = first;
    let mut vi = 0usize;
    let mut prev_end = 0u64;
    for (i, r) in runs.iter().enumerate() {
        let len = r
            .nr_pages
            .checked_mul(page)
            .ok_or(format!("run {i}: size overflows"))?;
        let end = r
            .vaddr
            .checked_add(len)
            .ok_or(format!("run {i}: address overflows"))?;
        if r.vaddr % page != 0 || r.nr_pages == 0 || r.vaddr < prev_end {
            return Err(format!(
                "run {i} at {:#x} is misaligned, empty or out of order",
                r.vaddr
            ));
        }
        while vi < vmas.len() && vmas[vi].end <= r.vaddr {
            vi += 1;
        }
        let inside = vmas
            .get(vi)
            .map(|v| {
                v.start <= r.vaddr && end <= v.end && v.kind != pb::VmaKind::VmaFileShared as i32
            })
            .unwrap_or(false);
        if !inside {
            return Err(format!(
                "run {i} [{:#x}, {end:#x}) is not inside a VMA that holds pages",
                r.vaddr
            ));
        }
        let fend = r
            .offset
            .checked_add(len)
            .ok_or(format!("run {i}: offset overflows"))?;
        if r.offset != next_offset || fend > file_size {
            return Err(format!(
                "run {i} points at bytes [{}, {fend}), expected at {next_offset} and inside the {file_size} byte pages file",
                r.offset
            ));
        }
        total += r.nr_pages;
        prev_end = end;
        next_offset = fend;
    }
    if total != nr_pages {
        return Err(format!(
            "runs hold {total} pages, the header says {nr_pages}"
        ));
    }
    Ok(next_offset)
}

/// The runs a process has from its parent (`PageRun.from_parent`): in address order, each
/// inside one private VMA (anonymous, or a private file mapping's written pages), none
/// overlapping `stored` (its own runs, already checked by [`runs_from`]).
pub fn parent_runs(
    vmas: &[pb::Vma],
    from_parent: &[pb::PageRun],
    stored: &[pb::PageRun],
) -> Result<(), String> {
    let page = PAGE_SIZE as u64;
    let mut prev_end = 0u64;
    let mut si = 0usize;
    for (i, r) in from_parent.iter().enumerate() {
        let end = r
            .nr_pages
            .checked_mul(page)
            .and_then(|l| r.vaddr.checked_add(l))
            .ok_or(format!("parent's run {i}: size overflows"))?;
        if r.vaddr % page != 0 || r.nr_pages == 0 || r.vaddr < prev_end || r.offset != 0 {
            return Err(format!(
                "parent's run {i} at {:#x} is misaligned, empty, out of order or has an offset",
                r.vaddr
            ));
        }
        let vi = vmas.partition_point(|v| v.end <= r.vaddr);
        let private = vmas.get(vi).is_some_and(|v| {
            v.start <= r.vaddr
                && end <= v.end
                && (v.kind == pb::VmaKind::VmaAnon as i32
                    || v.kind == pb::VmaKind::VmaFilePrivate as i32)
        });
        if !private {
            return Err(format!(
                "parent's run {i} [{:#x}, {end:#x}) is not inside a private VMA",
                r.vaddr
            ));
        }
        while si < stored.len() && stored[si].vaddr + stored[si].nr_pages * page <= r.vaddr {
            si += 1;
        }
        if stored.get(si).is_some_and(|s| s.vaddr < end) {
            return Err(format!(
                "parent's run {i} [{:#x}, {end:#x}) overlaps a stored run",
                r.vaddr
            ));
        }
        prev_end = end;
    }
    Ok(())
}

/// BPF_MAXINSNS: the kernel's limit on one classic BPF program.
const BPF_MAXINSNS: usize = 4096;
/// SECCOMP_FILTER_FLAG_LOG, the one flag a dumped filter may carry.
const SECCOMP_FLAG_LOG: u64 = 2;

/// The seccomp filters of a process: whole instructions, no more than the kernel takes,
/// known flags.
pub fn seccomp_filters(filters: &[pb::SeccompFilter]) -> Result<(), String> {
    for (i, f) in filters.iter().enumerate() {
        let n = f.program.len();
        if n == 0 || n % 8 != 0 || n / 8 > BPF_MAXINSNS {
            return Err(format!(
                "seccomp filter {i}: {n} bytes is not a program of 1 to {BPF_MAXINSNS} instructions"
            ));
        }
        if f.flags & !SECCOMP_FLAG_LOG != 0 {
            return Err(format!("seccomp filter {i}: flags {:#x}", f.flags));
        }
    }
    Ok(())
}

/// One thread's seccomp state: a known mode, a chain only in filter mode (mode 2, where
/// it may not be empty), every entry one of the process's `filters` (`count` of them).
pub fn seccomp_thread(mode: u32, chain: &[u32], count: usize) -> Result<(), String> {
    let ok = match mode {
        0 | 1 => chain.is_empty(),
        2 => !chain.is_empty() && chain.len() <= 512,
        _ => false,
    };
    if !ok {
        return Err(format!(
            "seccomp mode {mode} with a chain of {} filters",
            chain.len()
        ));
    }
    if let Some(i) = chain.iter().find(|&&i| i as usize >= count) {
        return Err(format!("seccomp chain names filter {i} of {count}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64) -> pb::Vma {
        pb::Vma {
            start,
            end,
            prot: 3,
            ..Default::default()
        }
    }

    fn run(vaddr: u64, nr_pages: u64, offset: u64) -> pb::PageRun {
        pb::PageRun {
            vaddr,
            nr_pages,
            offset,
            ..Default::default()
        }
    }

    fn mm_with_vdso(start: u64, len: u64, parts: &[(u64, u64)]) -> pb::MmInfo {
        pb::MmInfo {
            auxv: vec![0; 368],
            vdso_block_start: start,
            vdso_block_len: len,
            vdso_parts: parts
                .iter()
                .map(|&(start, end)| pb::SpecialMapping {
                    name: "[vdso]".into(),
                    start,
                    end,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn auxv_and_vdso_block_bounds() {
        let b = 0x7fff_f7fc_0000u64;
        let ok = mm_with_vdso(b, 0x6000, &[(b, b + 0x4000), (b + 0x4000, b + 0x6000)]);
        assert!(mm_info(&ok).is_ok());
        assert!(mm_info(&pb::MmInfo::default()).is_ok());
        let mut m = ok.clone();
        m.auxv = vec![0; MAX_AUXV];
        assert!(mm_info(&m).is_ok());
        m.auxv = vec![0; MAX_AUXV + 16];
        assert!(mm_info(&m).unwrap_err().contains("auxv of 464 bytes"));
        m.auxv = vec![0; 8];
        assert!(mm_info(&m).is_err());
        // Wrapping, past user space, empty, unaligned, no parts, parts not tiling it.
        assert!(mm_info(&mm_with_vdso(u64::MAX - 0xfff, 0x2000, &[(0, 1)])).is_err());
        assert!(mm_info(&mm_with_vdso(TASK_SIZE - 0x1000, 0x2000, &[])).is_err());
        assert!(mm_info(&mm_with_vdso(b, 0, &[])).is_err());
        assert!(mm_info(&mm_with_vdso(b + 1, 0x1000, &[(b + 1, b + 0x1001)])).is_err());
        let e = mm_info(&mm_with_vdso(b, 0x2000, &[])).unwrap_err();
        assert!(e.contains("0 parts"), "{e}");
        assert!(mm_info(&mm_with_vdso(b, 0x2000, &[(b, b + 0x1000)])).is_err());
        assert!(mm_info(&mm_with_vdso(b, 0x2000, &[(b + 0x1000, b + 0x2000)])).is_err());
        assert!(mm_info(&mm_with_vdso(b, 0x2000, &[(b, b + 0x3000)])).is_err());
        assert!(mm_info(&mm_with_vdso(0, 0, &[(b, b + 0x1000)])).is_err());
    }

    #[test]
    fn group_list_must_fit_the_scratch_page() {
        let mut c = pb::Creds {
            uid: vec![0; 4],
            gid: vec![0; 4],
            groups: vec![1; MAX_GROUPS],
            ..Default::default()
        };
        assert!(creds(&c).is_ok());
        c.groups.push(2);
        assert!(creds(&c).unwrap_err().contains("1025 supplementary groups"));
        c.groups.clear();
        c.uid.truncate(2);
        assert!(creds(&c).is_err());
    }

    #[test]
    fn pid_lists_and_trees() {
        assert!(pid_list(5, &[5, 6, 7]).is_ok());
        assert!(pid_list(5, &[]).is_err());
        assert!(pid_list(5, &[5, 0]).is_err());
        assert!(pid_list(5, &[5, 6, 5])
            .unwrap_err()
            .contains("listed twice"));
        assert!(pid_list(5, &[6, 7]).unwrap_err().contains("root_pid 5"));

        assert!(tree(5, &[(5, 1)]).is_ok());
        assert!(tree(5, &[(5, 1), (6, 5), (7, 6), (8, 5)]).is_ok());
        assert!(tree(5, &[(7, 6), (6, 5), (5, 1)]).is_ok());
        // The root its own parent, or with a parent in the image.
        assert!(tree(5, &[(5, 5)]).is_err());
        assert!(tree(5, &[(5, 6), (6, 5)]).is_err());
        // A parent outside the image, a cycle beside the tree.
        assert!(tree(5, &[(5, 1), (6, 9)]).unwrap_err().contains("parent 9"));
        let e = tree(5, &[(5, 1), (6, 7), (7, 8), (8, 6)]).unwrap_err();
        assert!(e.contains("cycle") && e.contains("6 -> 7 -> 8 -> 6"), "{e}");
        assert!(tree(5, &[(5, 1), (6, 6)]).unwrap_err().contains("cycle"));
        assert!(tree(5, &[(5, 1), (5, 1)]).is_err());
        // A long chain is checked in one pass.
        let long: Vec<(i32, i32)> = (1..200_000).map(|p| (p + 1, p)).collect();
        assert!(tree(2, &[&[(2, 1)], &long[1..]].concat()).is_ok());
    }

    #[test]
    fn overlapping_unsorted_or_kernel_vmas_are_refused() {
        assert!(vmas(&[vma(0x1000, 0x3000), vma(0x4000, 0x5000)]).is_ok());
        assert!(vmas(&[vma(0x1000, 0x3000), vma(0x2000, 0x5000)]).is_err());
        assert!(vmas(&[vma(0x4000, 0x5000), vma(0x1000, 0x3000)]).is_err());
        assert!(vmas(&[vma(0x1000, 0x1800)]).is_err());
        assert!(vmas(&[vma(TASK_SIZE, TASK_SIZE + 0x1000)]).is_err());
        assert!(vmas(&[vma(0x3000, 0x3000)]).is_err());
    }

    #[test]
    fn runs_must_sit_in_vmas_and_cover_the_file_back_to_back() {
        let v = [vma(0x10000, 0x20000)];
        let p = PAGE_SIZE as u64;
        let ok = [run(0x10000, 2, p), run(0x14000, 1, 3 * p)];
        assert!(runs(&v, &ok, 3, 4 * p).is_ok());
        // Outside every VMA, past the file, a hole in the file, a wrong total.
        assert!(runs(&v, &[run(0x30000, 1, p)], 1, 2 * p).is_err());
        assert!(runs(&v, &[run(0x10000, 2, p)], 2, 2 * p).is_err());
        assert!(runs(&v, &[run(0x10000, 1, 2 * p)], 1, 3 * p).is_err());
        assert!(runs(&v, &ok, 4, 4 * p).is_err());
        // Sizes that overflow are refused, not wrapped.
        assert!(runs(&v, &[run(0x10000, u64::MAX, p)], u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn seccomp_state() {
        let f = |program: Vec<u8>, flags| pb::SeccompFilter { program, flags };
        seccomp_filters(&[f(vec![0; 8], 2), f(vec![0; 32], 0)]).unwrap();
        assert!(seccomp_filters(&[f(vec![0; 7], 0)]).is_err());
        assert!(seccomp_filters(&[f(Vec::new(), 0)]).is_err());
        assert!(seccomp_filters(&[f(vec![0; 8 * 4097], 0)]).is_err());
        assert!(seccomp_filters(&[f(vec![0; 8], 4)]).is_err());
        seccomp_thread(0, &[], 0).unwrap();
        seccomp_thread(1, &[], 0).unwrap();
        seccomp_thread(2, &[0, 1, 0], 2).unwrap();
        assert!(seccomp_thread(2, &[2], 2).is_err());
        assert!(seccomp_thread(2, &[], 2).is_err());
        assert!(seccomp_thread(1, &[0], 2).is_err());
        assert!(seccomp_thread(3, &[], 2).is_err());
    }
}

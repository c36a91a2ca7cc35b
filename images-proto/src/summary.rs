//! `ckpt show`'s default output: a short human summary of an image set, and the loading
//! that `show --diff` shares with it.
//!
//! Once the inventory is read, nothing here fails: every file's checksum is checked and
//! reported on its own, and a file that cannot be read or decoded is reported in place, so
//! a damaged set still shows everything that can be shown. Every number taken from the
//! images is treated as hostile (saturating arithmetic, no indexing by image values).

use crate::dir::ImageDir;
use crate::header::Kind;
use crate::names;
use crate::pb;
use crate::record::RecordReader;
use prost::Message;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// One listed file and whether its size and checksum hold.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub name: String,
    pub size: u64,
    pub xxh3: u64,
    pub result: Result<(), String>,
}

/// What could be decoded of one process's images.
#[derive(Debug, Clone, Default)]
pub struct ProcessImages {
    pub pid: i32,
    pub core: Option<pb::ProcessCore>,
    pub threads: Vec<pb::ThreadCore>,
    pub mm: Option<pb::MmInfo>,
    pub vmas: Vec<pb::Vma>,
    pub pagemap: Option<pb::PagemapHead>,
    pub runs: Vec<pb::PageRun>,
    pub fds: Option<Vec<pb::Fd>>,
    /// Files of this process that could not be read or decoded, with the reason.
    pub errors: Vec<String>,
}

/// An image set as far as it could be read.
#[derive(Debug, Clone)]
pub struct ImageSet {
    pub dir: PathBuf,
    pub inventory: pb::Inventory,
    /// Size of inventory.img itself (it is not listed in itself).
    pub inventory_size: u64,
    pub files: Vec<FileCheck>,
    pub processes: Vec<ProcessImages>,
    /// Processes beyond `MAX_PROCESSES` that were not loaded.
    pub processes_not_loaded: usize,
}

/// A hostile inventory can name a million pids; `show` loads at most this many processes.
pub const MAX_PROCESSES: usize = 4096;

pub type Index<'a> = HashMap<&'a str, &'a pb::ImageFile>;

impl ImageSet {
    /// Verifies every listed file (reporting each result) and decodes every process.
    pub fn load(d: &ImageDir) -> ImageSet {
        let inv = d.inventory().clone();
        let files = d
            .entries()
            .map(|f| FileCheck {
                name: f.name.clone(),
                size: f.size,
                xxh3: f.xxh3,
                result: d.verify_file(f).map_err(|e| e.to_string()),
            })
            .collect();
        let index: Index = d.index();
        let all = pids(&inv);
        let processes = all
            .iter()
            .take(MAX_PROCESSES)
            .map(|&p| load_process(d, &index, p))
            .collect();
        ImageSet {
            processes_not_loaded: all.len().saturating_sub(MAX_PROCESSES),
            dir: d.dir().to_path_buf(),
            inventory: inv,
            inventory_size: std::fs::metadata(d.path(names::INVENTORY))
                .map(|m| m.len())
                .unwrap_or(0),
            files,
            processes,
        }
    }

    /// True when every listed file has its recorded size and checksum.
    pub fn checksums_ok(&self) -> bool {
        self.files.iter().all(|f| f.result.is_ok())
    }

    /// True when every file verified and every process decoded completely.
    pub fn intact(&self) -> bool {
        self.checksums_ok() && self.processes.iter().all(|p| p.errors.is_empty())
    }

    pub fn file(&self, name: &str) -> Option<&FileCheck> {
        self.files.iter().find(|f| f.name == name)
    }

    fn file_index(&self) -> HashMap<&str, &FileCheck> {
        self.files.iter().map(|f| (f.name.as_str(), f)).collect()
    }
}

/// The pids of a set: the inventory's list, the root pid, and any pid a listed file names.
pub fn pids(inv: &pb::Inventory) -> Vec<i32> {
    let mut v: Vec<i32> = inv.pids.clone();
    if inv.root_pid != 0 {
        v.push(inv.root_pid);
    }
    for f in inv.files.iter().chain(&inv.packed) {
        let stem = f.name.strip_suffix(".img").unwrap_or(&f.name);
        if let Some((kind, pid)) = stem.split_once('-') {
            if kind != "pages" {
                if let Ok(p) = pid.parse() {
                    v.push(p);
                }
            }
        }
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Decodes records of `M` until the end, keeping what decoded before an error.
fn read_rest<M: Message + Default>(
    r: &mut RecordReader,
    what: &'static str,
    out: &mut Vec<M>,
    errors: &mut Vec<String>,
) {
    loop {
        match r.next::<M>(what) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return,
            Err(e) => {
                errors.push(e.to_string());
                return;
            }
        }
    }
}

fn open_records(
    d: &ImageDir,
    index: &Index,
    name: &str,
    kind: Kind,
    errors: &mut Vec<String>,
) -> Option<RecordReader> {
    let Some(entry) = index.get(name) else {
        errors.push(format!("{name}: not listed in inventory.img"));
        return None;
    };
    match d.records_of(entry, kind) {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    }
}

fn first<M: Message + Default>(
    r: &mut RecordReader,
    what: &'static str,
    errors: &mut Vec<String>,
) -> Option<M> {
    match r.expect::<M>(what) {
        Ok(m) => Some(m),
        Err(e) => {
            errors.push(e.to_string());
            None
        }
    }
}

/// Decodes the four record files of one process, keeping whatever decodes.
pub fn load_process(d: &ImageDir, index: &Index, pid: i32) -> ProcessImages {
    let mut p = ProcessImages {
        pid,
        ..Default::default()
    };
    let mut errors = Vec::new();
    if let Some(mut r) = open_records(d, index, &names::core(pid), Kind::Core, &mut errors) {
        p.core = first(&mut r, "ProcessCore", &mut errors);
        if p.core.is_some() {
            read_rest(&mut r, "ThreadCore", &mut p.threads, &mut errors);
        }
    }
    if let Some(mut r) = open_records(d, index, &names::mm(pid), Kind::Mm, &mut errors) {
        p.mm = first(&mut r, "MmInfo", &mut errors);
        if p.mm.is_some() {
            read_rest(&mut r, "Vma", &mut p.vmas, &mut errors);
        }
    }
    if let Some(mut r) = open_records(d, index, &names::pagemap(pid), Kind::Pagemap, &mut errors) {
        p.pagemap = first(&mut r, "PagemapHead", &mut errors);
        if p.pagemap.is_some() {
            read_rest(&mut r, "PageRun", &mut p.runs, &mut errors);
        }
    }
    if let Some(mut r) = open_records(d, index, &names::files(pid), Kind::Files, &mut errors) {
        let mut fds = Vec::new();
        read_rest(&mut r, "Fd", &mut fds, &mut errors);
        p.fds = Some(fds);
    }
    p.errors = errors;
    p
}

/// `VMA_FILE_PRIVATE` -> `file-private`; unknown values by number.
pub fn vma_kind_name(kind: i32) -> String {
    match pb::VmaKind::try_from(kind) {
        Ok(k) => enum_name(k.as_str_name(), "VMA_"),
        Err(_) => format!("kind-{kind}"),
    }
}

/// `FD_CHARDEV` -> `chardev`; unknown values by number.
pub fn fd_kind_name(kind: i32) -> String {
    match pb::FdKind::try_from(kind) {
        Ok(k) => enum_name(k.as_str_name(), "FD_"),
        Err(_) => format!("kind-{kind}"),
    }
}

fn enum_name(s: &str, prefix: &str) -> String {
    s.strip_prefix(prefix)
        .unwrap_or(s)
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// `r-xp` style protection (private/shared from the VMA kind).
pub fn prot_string(prot: u32, kind: i32) -> String {
    let shared = matches!(
        pb::VmaKind::try_from(kind),
        Ok(pb::VmaKind::VmaFileShared) | Ok(pb::VmaKind::VmaAnonShared)
    );
    format!(
        "{}{}{}{}",
        if prot & 1 != 0 { 'r' } else { '-' },
        if prot & 2 != 0 { 'w' } else { '-' },
        if prot & 4 != 0 { 'x' } else { '-' },
        if shared { 's' } else { 'p' }
    )
}

/// Memory of one kind of VMA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindStat {
    pub kind: String,
    pub vmas: u64,
    pub bytes: u64,
    pub pages_stored: u64,
}

/// Memory by VMA kind (in the order kinds first appear), and the pages of runs that start
/// in no VMA at all (a valid image has none).
pub fn memory_by_kind(vmas: &[pb::Vma], runs: &[pb::PageRun]) -> (Vec<KindStat>, u64) {
    let mut stats: Vec<KindStat> = Vec::new();
    let slot = |stats: &mut Vec<KindStat>, kind: i32| -> usize {
        let name = vma_kind_name(kind);
        match stats.iter().position(|s| s.kind == name) {
            Some(i) => i,
            None => {
                stats.push(KindStat {
                    kind: name,
                    ..Default::default()
                });
                stats.len() - 1
            }
        }
    };
    let mut order: Vec<usize> = (0..vmas.len()).collect();
    order.sort_by_key(|&i| vmas[i].start);
    for v in vmas {
        let i = slot(&mut stats, v.kind);
        stats[i].vmas += 1;
        stats[i].bytes = stats[i].bytes.saturating_add(v.end.saturating_sub(v.start));
    }
    let mut outside = 0u64;
    for r in runs.iter().filter(|r| !r.from_parent) {
        // The last VMA starting at or below the run's address.
        let at = order.partition_point(|&i| vmas[i].start <= r.vaddr);
        let owner = at
            .checked_sub(1)
            .map(|k| &vmas[order[k]])
            .filter(|v| r.vaddr < v.end);
        match owner {
            Some(v) => {
                let i = slot(&mut stats, v.kind);
                stats[i].pages_stored = stats[i].pages_stored.saturating_add(r.nr_pages);
            }
            None => outside = outside.saturating_add(r.nr_pages),
        }
    }
    (stats, outside)
}

/// Pages the runs of a pagemap store, in total.
pub fn pages_in_runs(runs: &[pb::PageRun]) -> u64 {
    runs.iter()
        .filter(|r| !r.from_parent)
        .fold(0u64, |a, r| a.saturating_add(r.nr_pages))
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// open(2) access mode and the flags worth showing.
pub fn open_flags_string(flags: u32) -> String {
    let mut s = match flags & 3 {
        0 => "r".to_string(),
        1 => "w".to_string(),
        2 => "rw".to_string(),
        _ => "?".to_string(),
    };
    for (bit, name) in [
        (0o2000, "append"),
        (0o4000, "nonblock"),
        (0o40000, "direct"),
        (0o4010000, "sync"),
        (0o1000000, "noatime"),
        (0o10000000, "path"),
    ] {
        if flags & bit == bit {
            s += ",";
            s += name;
        }
    }
    s
}

const MAX_FDS_SHOWN: usize = 16;
const MAX_FILES_SHOWN: usize = 1024;

/// The human summary printed by `ckpt show -D DIR`.
pub fn render(set: &ImageSet) -> String {
    let mut o = String::new();
    let inv = &set.inventory;
    let _ = writeln!(o, "Image set {}", set.dir.display());
    let _ = writeln!(
        o,
        "  format {}, written by ckpt {}, on Linux {}{}",
        inv.format_version,
        if inv.ckpt_version.is_empty() {
            "?"
        } else {
            &inv.ckpt_version
        },
        if inv.kernel_release.is_empty() {
            "?"
        } else {
            &inv.kernel_release
        },
        if inv.dumped_at_unix_ms != 0 {
            format!(", {}", utc(inv.dumped_at_unix_ms))
        } else {
            String::new()
        }
    );
    let _ = writeln!(
        o,
        "  root pid {}, {} process{}; vDSO xxh3 {:016x}; xsave features {:#x} ({} bytes)",
        inv.root_pid,
        set.processes.len(),
        if set.processes.len() == 1 { "" } else { "es" },
        inv.vdso_xxh3,
        inv.xsave_features,
        inv.xsave_size
    );
    crate::chain::render(&mut o, &set.dir, inv);
    let files = set.file_index();
    for p in &set.processes {
        o.push('\n');
        render_process(&mut o, &files, p);
    }
    if set.processes_not_loaded > 0 {
        let _ = writeln!(
            o,
            "\n({} more processes listed, not loaded: at most {MAX_PROCESSES} are shown)",
            set.processes_not_loaded
        );
    }
    o.push('\n');
    let _ = writeln!(o, "Files:");
    let w = set
        .files
        .iter()
        .map(|f| f.name.len())
        .chain([names::INVENTORY.len()])
        .max()
        .unwrap_or(0);
    let _ = writeln!(
        o,
        "  {:w$}  {:>10}  sealed ok",
        names::INVENTORY,
        human_bytes(set.inventory_size)
    );
    let mut total = set.inventory_size;
    for (i, f) in set.files.iter().enumerate() {
        total = total.saturating_add(f.size);
        if i == MAX_FILES_SHOWN {
            let _ = writeln!(o, "  ... {} more files", set.files.len() - i);
        }
        if i >= MAX_FILES_SHOWN {
            continue;
        }
        let st = match &f.result {
            Ok(()) => "checksum ok".to_string(),
            Err(e) => format!("FAILED: {e}"),
        };
        let _ = writeln!(o, "  {:w$}  {:>10}  {st}", f.name, human_bytes(f.size));
    }
    let _ = writeln!(o, "  {:w$}  {:>10}", "total", human_bytes(total));
    let bad = set.files.iter().filter(|f| f.result.is_err()).count();
    let undecoded: usize = set.processes.iter().map(|p| p.errors.len()).sum();
    o.push('\n');
    if bad == 0 && undecoded == 0 {
        let _ = writeln!(
            o,
            "Every checksum holds (inventory.img and {} files) and every record decodes.",
            set.files.len()
        );
    } else {
        if bad > 0 {
            let _ = writeln!(
                o,
                "{bad} of {} files FAILED verification: this set will not restore.",
                set.files.len()
            );
        }
        if undecoded > 0 {
            let _ = writeln!(o, "{undecoded} problem(s) decoding records (see above).");
        }
    }
    o
}

fn render_process(o: &mut String, files: &HashMap<&str, &FileCheck>, p: &ProcessImages) {
    match &p.core {
        Some(c) => {
            let uid = c.creds.as_ref().and_then(|c| c.uid.get(1)).copied();
            let gid = c.creds.as_ref().and_then(|c| c.gid.get(1)).copied();
            let _ = writeln!(
                o,
                "Process {} {:?}: ppid {}, pgid {}, sid {}, uid {}, gid {}, {} thread{}",
                p.pid,
                c.comm,
                c.ppid,
                c.pgid,
                c.sid,
                uid.map_or("?".into(), |u| u.to_string()),
                gid.map_or("?".into(), |g| g.to_string()),
                p.threads.len(),
                if p.threads.len() == 1 { "" } else { "s" }
            );
            let exe = p.mm.as_ref().map(|m| m.exe_path.as_str()).unwrap_or("?");
            let _ = writeln!(o, "  exe {exe}, cwd {}, root {}", c.cwd, c.root);
            let handlers = c.sigactions.len();
            let pending: usize =
                c.shared_pending.len() + p.threads.iter().map(|t| t.pending.len()).sum::<usize>();
            let blocked: Vec<String> = p
                .threads
                .iter()
                .map(|t| format!("{:#x}", t.sigmask))
                .collect();
            let _ = writeln!(
                o,
                "  signals: {handlers} non-default action{}, {pending} pending, blocked {}; {} itimer{}",
                if handlers == 1 { "" } else { "s" },
                if blocked.is_empty() {
                    "?".to_string()
                } else {
                    blocked.join("/")
                },
                c.itimers.len(),
                if c.itimers.len() == 1 { "" } else { "s" },
            );
        }
        None => {
            let _ = writeln!(o, "Process {}: core image unreadable", p.pid);
        }
    }
    if p.mm.is_some() {
        let (kinds, outside) = memory_by_kind(&p.vmas, &p.runs);
        let mapped = kinds.iter().fold(0u64, |a, k| a.saturating_add(k.bytes));
        let stored = pages_in_runs(&p.runs);
        let _ = writeln!(
            o,
            "  memory: {} VMAs, {} mapped, {} pages stored ({})",
            p.vmas.len(),
            human_bytes(mapped),
            stored,
            human_bytes(stored.saturating_mul(4096))
        );
        for k in &kinds {
            let _ = writeln!(
                o,
                "    {:<13} {:>4} VMAs  {:>10}  {:>8} pages stored",
                k.kind,
                k.vmas,
                human_bytes(k.bytes),
                k.pages_stored
            );
        }
        if outside > 0 {
            let _ = writeln!(
                o,
                "    {outside} stored pages lie in no VMA (invalid image)"
            );
        }
        if let Some(mm) = &p.mm {
            if mm.vdso_block_start != 0 {
                let parts: Vec<String> = mm
                    .vdso_parts
                    .iter()
                    .map(|s| format!("{} {}", s.name, human_bytes(s.end.saturating_sub(s.start))))
                    .collect();
                let _ = writeln!(
                    o,
                    "    vDSO block at {:#x}: {}",
                    mm.vdso_block_start,
                    parts.join(", ")
                );
            }
        }
    }
    if let Some(h) = &p.pagemap {
        let stored = pages_in_runs(&p.runs);
        let file = files.get(names::pages(h.pages_id).as_str());
        let in_file = file.map(|f| f.size.saturating_sub(4096) / 4096);
        let mut line = format!(
            "  pagemap: {} runs, {} pages in pages-{}.img",
            p.runs.len(),
            stored,
            h.pages_id
        );
        if h.nr_pages != stored {
            let _ = write!(line, " (head says {}: MISMATCH)", h.nr_pages);
        }
        match in_file {
            Some(n) if n != stored => {
                let _ = write!(line, "; the pages file holds {n} pages");
            }
            Some(_) => {}
            None => line += "; the pages file is not in the inventory",
        }
        let _ = writeln!(o, "{line}");
    }
    if let Some(fds) = &p.fds {
        let mut by_kind: Vec<(String, usize)> = Vec::new();
        for f in fds {
            let k = fd_kind_name(f.kind);
            match by_kind.iter_mut().find(|(n, _)| *n == k) {
                Some(e) => e.1 += 1,
                None => by_kind.push((k, 1)),
            }
        }
        let kinds: Vec<String> = by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            o,
            "  fds: {}{}",
            fds.len(),
            if kinds.is_empty() {
                String::new()
            } else {
                format!(" ({})", kinds.join(", "))
            }
        );
        let mut sorted: Vec<&pb::Fd> = fds.iter().collect();
        sorted.sort_by_key(|f| f.fd);
        for f in sorted.iter().take(MAX_FDS_SHOWN) {
            let _ = writeln!(
                o,
                "    {:>4} {:<9} {:<12} {}{}",
                f.fd,
                fd_kind_name(f.kind),
                open_flags_string(f.flags),
                f.path,
                if f.pos != 0 {
                    format!(" @{}", f.pos)
                } else {
                    String::new()
                }
            );
        }
        if sorted.len() > MAX_FDS_SHOWN {
            let _ = writeln!(o, "    ... {} more", sorted.len() - MAX_FDS_SHOWN);
        }
    }
    for e in &p.errors {
        let _ = writeln!(o, "  ERROR: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vma(start: u64, end: u64, kind: pb::VmaKind) -> pb::Vma {
        pb::Vma {
            start,
            end,
            kind: kind as i32,
            ..Default::default()
        }
    }

    #[test]
    fn memory_attribution() {
        let vmas = vec![
            vma(0x2000, 0x4000, pb::VmaKind::VmaFilePrivate),
            vma(0x1000, 0x2000, pb::VmaKind::VmaAnon),
            vma(0x8000, 0x9000, pb::VmaKind::VmaAnon),
        ];
        let runs = vec![
            pb::PageRun {
                vaddr: 0x1000,
                nr_pages: 1,
                offset: 4096,
                from_parent: false,
            },
            pb::PageRun {
                vaddr: 0x3000,
                nr_pages: 1,
                offset: 8192,
                from_parent: false,
            },
            pb::PageRun {
                vaddr: 0x5000,
                nr_pages: 2,
                offset: 12288,
                from_parent: false,
            },
        ];
        let (k, outside) = memory_by_kind(&vmas, &runs);
        assert_eq!(outside, 2);
        let anon = k.iter().find(|s| s.kind == "anon").unwrap();
        assert_eq!((anon.vmas, anon.bytes, anon.pages_stored), (2, 0x2000, 1));
        let fp = k.iter().find(|s| s.kind == "file-private").unwrap();
        assert_eq!((fp.vmas, fp.bytes, fp.pages_stored), (1, 0x2000, 1));
    }

    #[test]
    fn hostile_numbers_do_not_panic() {
        let vmas = vec![vma(u64::MAX, 0, pb::VmaKind::VmaAnon), {
            let mut v = vma(0, u64::MAX, pb::VmaKind::VmaAnon);
            v.kind = 77;
            v
        }];
        let runs = vec![
            pb::PageRun {
                vaddr: 5,
                nr_pages: u64::MAX,
                offset: 0,
                from_parent: false,
            };
            3
        ];
        let (k, _) = memory_by_kind(&vmas, &runs);
        assert!(k.iter().any(|s| s.kind == "kind-77"));
        assert_eq!(pages_in_runs(&runs), u64::MAX);
        let _ = human_bytes(u64::MAX);
        let _ = utc(u64::MAX);
    }

    #[test]
    fn names_and_formats() {
        assert_eq!(vma_kind_name(1), "file-private");
        assert_eq!(fd_kind_name(2), "chardev");
        assert_eq!(prot_string(5, 0), "r-xp");
        assert_eq!(open_flags_string(0o2001), "w,append");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }
}

//! What each fuzz target runs, one function per image decoder of `ckpt-images`.
//!
//! Every function takes arbitrary bytes, decodes them the way ckpt reads that image file,
//! and then hands whatever decoded to the code that consumes it in `ckpt-images` (the
//! summary and diff of `ckpt show`). The only acceptable outcomes are `Ok` or `Err`: a
//! panic, an overflow (fuzz builds keep debug assertions), a hang or a huge allocation is a
//! bug. Properties that must hold are asserted.

use ckpt_images::summary::{self, ImageSet, ProcessImages};
use ckpt_images::{diff, header, pb, ImageDir, Kind, PagesReader, RecordReader, PAGE_SIZE};
use prost::Message;
use std::path::{Path, PathBuf};

fn reader(data: &[u8], kind: Kind) -> Option<RecordReader> {
    RecordReader::from_bytes(Path::new("fuzz.img"), data.to_vec(), kind).ok()
}

/// `next` until the end or the first error, as every reader in ckpt does.
fn rest<M: Message + Default>(r: &mut RecordReader, what: &'static str) -> Vec<M> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = r.next::<M>(what) {
        out.push(m);
        // Each record consumes at least its length byte: no reader can loop forever.
        assert!(out.len() <= r.bytes().len());
    }
    out
}

fn set_of(p: ProcessImages, inventory: pb::Inventory) -> ImageSet {
    ImageSet {
        dir: PathBuf::from("fuzz"),
        inventory,
        inventory_size: 0,
        files: Vec::new(),
        processes: vec![p],
        processes_not_loaded: 0,
    }
}

/// Runs the consumers of decoded records: the summary, and the diff both ways.
fn consume(p: ProcessImages) {
    let set = set_of(p, pb::Inventory::default());
    let _ = summary::render(&set);
    let empty = set_of(ProcessImages::default(), pb::Inventory::default());
    let _ = diff::render(&set, &empty, &diff::diff(&set, &empty));
    let _ = diff::render(&empty, &set, &diff::diff(&empty, &set));
    assert!(
        diff::diff(&set, &set).is_empty(),
        "a set differs from itself"
    );
}

/// inventory.img: the Inventory record, the seal over the bytes before it, nothing after,
/// plain file names. Run twice: as given, and with a valid seal appended, so the fuzzer
/// also reaches what lies behind the seal check.
pub fn inventory(data: &[u8]) {
    if let Some(r) = reader(data, Kind::Inventory) {
        if let Ok(inv) = ImageDir::decode_inventory(r) {
            check_inventory(inv);
        }
    }
    let mut sealed = data.to_vec();
    let seal = pb::InventorySeal {
        xxh3: ckpt_images::hash::xxh3_64(&sealed),
    };
    sealed.extend_from_slice(&seal.encode_length_delimited_to_vec());
    if let Some(r) = reader(&sealed, Kind::Inventory) {
        if let Ok(inv) = ImageDir::decode_inventory(r) {
            check_inventory(inv);
        }
    }
}

fn check_inventory(inv: pb::Inventory) {
    for f in &inv.files {
        assert!(
            !f.name.contains('/') && f.name != "." && f.name != "..",
            "unsafe name accepted: {:?}",
            f.name
        );
        assert!(Kind::for_name(&f.name).is_some());
    }
    let _ = summary::pids(&inv);
    // The process-tree checks, with each pid's parent taken from the list itself (the
    // next pid along, the last one's from root_pid) so chains and cycles occur.
    if ckpt_images::validate::pid_list(inv.root_pid, &inv.pids).is_ok() {
        let mut parents: Vec<(i32, i32)> = inv
            .pids
            .iter()
            .zip(inv.pids.iter().skip(1).chain([&inv.root_pid]))
            .map(|(&p, &pp)| (p, pp))
            .collect();
        let _ = ckpt_images::validate::tree(inv.root_pid, &parents);
        parents.reverse();
        let _ = ckpt_images::validate::tree(inv.root_pid, &parents);
    }
    let a = ImageSet {
        dir: PathBuf::from("a"),
        inventory: inv,
        inventory_size: 0,
        files: Vec::new(),
        processes: Vec::new(),
        processes_not_loaded: 0,
    };
    let _ = summary::render(&a);
    let b = ImageSet {
        inventory: pb::Inventory::default(),
        ..a.clone()
    };
    let _ = diff::render(&a, &b, &diff::diff(&a, &b));
}

/// core-PID.img: one ProcessCore, then ThreadCore records.
pub fn core(data: &[u8]) {
    let Some(mut r) = reader(data, Kind::Core) else {
        return;
    };
    let Ok(Some(core)) = r.next::<pb::ProcessCore>("ProcessCore") else {
        return;
    };
    let threads = rest::<pb::ThreadCore>(&mut r, "ThreadCore");
    if let Some(c) = &core.creds {
        let _ = ckpt_images::validate::creds(c);
    }
    consume(ProcessImages {
        pid: core.pid,
        core: Some(core),
        threads,
        ..Default::default()
    });
}

/// mm-PID.img: one MmInfo, then Vma records.
pub fn mm(data: &[u8]) {
    let Some(mut r) = reader(data, Kind::Mm) else {
        return;
    };
    let Ok(Some(mm)) = r.next::<pb::MmInfo>("MmInfo") else {
        return;
    };
    let vmas = rest::<pb::Vma>(&mut r, "Vma");
    // The checks restore runs before mapping anything: never a panic, whatever the input.
    let _ = ckpt_images::validate::vmas(&vmas);
    let _ = ckpt_images::validate::vdso_clear_of_vmas(&mm, &vmas);
    if ckpt_images::validate::mm_info(&mm).is_ok() && mm.vdso_block_start != 0 {
        // An accepted vDSO block is a range inside user space that its parts tile.
        let end = mm.vdso_block_start + mm.vdso_block_len;
        assert!(end <= ckpt_images::validate::TASK_SIZE && !mm.vdso_parts.is_empty());
        assert!(mm.vdso_parts.iter().all(|p| p.start >= mm.vdso_block_start && p.end <= end));
    }
    consume(ProcessImages {
        pid: 1,
        mm: Some(mm),
        vmas,
        ..Default::default()
    });
}

/// pagemap-PID.img: one PagemapHead, then PageRun records. The runs are also laid over a
/// fixed set of VMAs so the attribution of pages to VMA kinds is exercised.
pub fn pagemap(data: &[u8]) {
    let Some(mut r) = reader(data, Kind::Pagemap) else {
        return;
    };
    let Ok(Some(head)) = r.next::<pb::PagemapHead>("PagemapHead") else {
        return;
    };
    let runs = rest::<pb::PageRun>(&mut r, "PageRun");
    let vmas = vec![
        pb::Vma {
            start: 0x1000,
            end: 0x10_0000,
            ..Default::default()
        },
        pb::Vma {
            start: 0x7fff_0000_0000,
            end: 0x7fff_ffff_f000,
            kind: pb::VmaKind::VmaFilePrivate as i32,
            ..Default::default()
        },
    ];
    let _ = ckpt_images::validate::runs(&vmas, &runs, head.nr_pages, 1 << 40);
    let _ = ckpt_images::validate::runs(&vmas, &runs, head.nr_pages, u64::MAX);
    let (kinds, outside) = summary::memory_by_kind(&vmas, &runs);
    let stored = kinds
        .iter()
        .fold(outside, |a, k| a.saturating_add(k.pages_stored));
    assert_eq!(stored, summary::pages_in_runs(&runs));
    consume(ProcessImages {
        pid: 1,
        mm: Some(pb::MmInfo::default()),
        vmas,
        pagemap: Some(head),
        runs,
        ..Default::default()
    });
}

/// files-PID.img: Fd records.
pub fn files(data: &[u8]) {
    let Some(mut r) = reader(data, Kind::Files) else {
        return;
    };
    let fds = rest::<pb::Fd>(&mut r, "Fd");
    consume(ProcessImages {
        pid: 1,
        fds: Some(fds),
        ..Default::default()
    });
}

/// pages-ID.img: `PagesReader::new` on the bytes, then `slice` at fuzzed offsets. The
/// first 16 bytes are the offset and length; the rest is the file, taken as given and
/// also behind a valid header page so `slice` is reached.
pub fn pages(data: &[u8]) {
    if data.len() < 16 {
        return;
    }
    let off = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let len = u64::from_le_bytes(data[8..16].try_into().expect("8 bytes"));
    let body = &data[16..];
    check_pages(body, off, len);
    let mut file = vec![0u8; PAGE_SIZE];
    file[..header::HEADER_LEN].copy_from_slice(&header::encode(Kind::Pages));
    file.extend_from_slice(body);
    check_pages(&file, off, len);
}

fn check_pages(bytes: &[u8], off: u64, len: u64) {
    let Ok(p) = PagesReader::new(Path::new("fuzz-pages.img"), bytes) else {
        return;
    };
    assert_eq!(p.len(), bytes.len() as u64);
    let total = bytes.len() as u64;
    // The raw values, and values folded into the file so in-bounds cases are common.
    let page = PAGE_SIZE as u64;
    let near = [
        (off, len),
        (off % (total + 1), len % (total + 1)),
        (off % (total + 1) / page * page, len % (total + 1)),
        (off % (total + 1) / page * page, len % (page + 1)),
    ];
    for (o, l) in near {
        if let Ok(s) = p.slice(o, l) {
            assert_eq!(s.len() as u64, l);
            assert!(o >= page && o % page == 0, "slice at {o} accepted");
            assert!(o.checked_add(l).is_some_and(|e| e <= total));
            assert_eq!(s, &bytes[o as usize..(o + l) as usize]);
        }
    }
}

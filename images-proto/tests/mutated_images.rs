//! Bounded random-input test of every image decoder, for machines without cargo-fuzz (the
//! real fuzzing is in fuzz/, see docs/FUZZING.md). Valid image files are built in memory,
//! then mutated thousands of times with a fixed-seed xorshift generator (flipped bits,
//! random bytes, huge varints, cuts, duplicated and deleted spans); each mutant is decoded
//! the way ckpt reads it and fed to `ckpt show`'s summary and diff. The only acceptable
//! outcomes are Ok or Err: any panic (debug builds check overflow) fails the test.

use ckpt_images::summary::{self, ImageSet, ProcessImages};
use ckpt_images::{
    diff, header, pb, ImageDir, Kind, PagesReader, RecordReader, RecordWriter, PAGE_SIZE,
};
use prost::Message;
use std::path::{Path, PathBuf};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// A record file: the header, then each message as a length-delimited record.
fn records(kind: Kind, msgs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = header::encode(kind).to_vec();
    for m in msgs {
        out.extend_from_slice(m);
    }
    out
}

fn rec<M: Message>(m: M) -> Vec<u8> {
    m.encode_length_delimited_to_vec()
}

fn valid_core() -> Vec<u8> {
    let core = pb::ProcessCore {
        pid: 42,
        ppid: 1,
        comm: "victim".into(),
        creds: Some(pb::Creds {
            uid: vec![0, 0, 0, 0],
            gid: vec![0, 0, 0, 0],
            groups: vec![0, 4],
            ..Default::default()
        }),
        sigactions: vec![pb::SigAction {
            signo: 10,
            handler: 0x401000,
            ..Default::default()
        }],
        rlimits: vec![pb::Rlimit {
            resource: 7,
            cur: 1024,
            max: 4096,
        }],
        itimers: vec![pb::Itimer {
            which: 0,
            interval_us: 1000,
            value_us: 5,
        }],
        shared_pending: vec![vec![1u8; 128]],
        ..Default::default()
    };
    let thread = pb::ThreadCore {
        tid: 42,
        regs: Some(pb::GpRegs {
            rip: 0x401000,
            rsp: 0x7ffc_0000_1000,
            ..Default::default()
        }),
        xsave: vec![0u8; 832],
        rseq: Some(pb::Rseq {
            ptr: 0x7f00_0000_0000,
            len: 32,
            flags: 0,
            sig: 0x5305_3053,
        }),
        altstack: Some(pb::SigAltStack::default()),
        ..Default::default()
    };
    records(Kind::Core, &[rec(core), rec(thread)])
}

fn valid_mm() -> Vec<u8> {
    let mm = pb::MmInfo {
        start_brk: 0x60_0000,
        brk: 0x62_0000,
        auxv: vec![0u8; 64],
        exe_path: "/bin/victim".into(),
        vdso_block_start: 0x7fff_f000_0000,
        vdso_block_len: 0x8000,
        vdso_parts: vec![pb::SpecialMapping {
            name: "[vdso]".into(),
            start: 0x7fff_f000_6000,
            end: 0x7fff_f000_8000,
        }],
        ..Default::default()
    };
    let v1 = pb::Vma {
        start: 0x40_0000,
        end: 0x40_1000,
        prot: 5,
        kind: pb::VmaKind::VmaFilePrivate as i32,
        path: "/bin/victim".into(),
        madvise: vec![14],
        ..Default::default()
    };
    let v2 = pb::Vma {
        start: 0x60_0000,
        end: 0x62_0000,
        prot: 3,
        name: "[heap]".into(),
        ..Default::default()
    };
    records(Kind::Mm, &[rec(mm), rec(v1), rec(v2)])
}

fn valid_pagemap() -> Vec<u8> {
    let head = pb::PagemapHead {
        pages_id: 1,
        nr_pages: 3,
        ..Default::default()
    };
    let r1 = pb::PageRun {
        vaddr: 0x60_0000,
        nr_pages: 2,
        offset: 4096,
        from_parent: false,
    };
    let r2 = pb::PageRun {
        vaddr: 0x40_0000,
        nr_pages: 1,
        offset: 12288,
        from_parent: false,
    };
    records(Kind::Pagemap, &[rec(head), rec(r1), rec(r2)])
}

fn valid_files() -> Vec<u8> {
    let f = |fd, kind: pb::FdKind, path: &str| pb::Fd {
        fd,
        kind: kind as i32,
        path: path.into(),
        flags: 0o102001,
        pos: 17,
        ..Default::default()
    };
    records(
        Kind::Files,
        &[
            rec(f(0, pb::FdKind::FdChardev, "/dev/null")),
            rec(f(3, pb::FdKind::FdRegular, "/tmp/log")),
        ],
    )
}

fn valid_inventory() -> Vec<u8> {
    let inv = pb::Inventory {
        format_version: 1,
        ckpt_version: "0.1.0".into(),
        root_pid: 42,
        pids: vec![42],
        kernel_release: "6.18.0".into(),
        files: ["core-42.img", "mm-42.img", "pages-1.img"]
            .iter()
            .map(|n| pb::ImageFile {
                name: (*n).into(),
                size: 100,
                xxh3: 7,
                ..Default::default()
            })
            .collect(),
        dumped_at_unix_ms: 1_700_000_000_000,
        ..Default::default()
    };
    let mut w = RecordWriter::new(Vec::new(), "inventory.img", Kind::Inventory).unwrap();
    w.write(&inv).unwrap();
    let seal = pb::InventorySeal { xxh3: w.digest() };
    w.write(&seal).unwrap();
    w.finish().unwrap().0
}

fn valid_pages() -> Vec<u8> {
    let mut v = vec![0u8; PAGE_SIZE];
    v[..header::HEADER_LEN].copy_from_slice(&header::encode(Kind::Pages));
    v.extend(std::iter::repeat_n(0xab, 3 * PAGE_SIZE));
    v
}

fn mutate(rng: &mut XorShift, orig: &[u8]) -> Vec<u8> {
    let mut v = orig.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(8) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = rng.next() as u8;
            }
            // A maximal varint where a length or a field would be.
            2 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(11);
                let mut ins = vec![0xff; n];
                if rng.below(2) == 0 {
                    *ins.last_mut().unwrap() = 0x7f;
                }
                v.splice(i..i, ins);
            }
            3 => v.truncate(rng.below(len + 1)),
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let dup = v[a..b].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, dup);
            }
            5 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                v.drain(a..b);
            }
            // Interesting integers over 8 bytes.
            6 if len >= 8 => {
                let i = rng.below(len - 7);
                let vals = [0u64, 1, u64::MAX, i64::MAX as u64, 1 << 63, 4096, 4095];
                let x = vals[rng.below(vals.len())];
                v[i..i + 8].copy_from_slice(&x.to_le_bytes());
            }
            _ => {
                let i = rng.below(len + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

fn reader(data: &[u8], kind: Kind) -> Option<RecordReader> {
    RecordReader::from_bytes(Path::new("m.img"), data.to_vec(), kind).ok()
}

fn rest<M: Message + Default>(r: &mut RecordReader, what: &'static str) -> Vec<M> {
    let mut out = Vec::new();
    while let Ok(Some(m)) = r.next::<M>(what) {
        out.push(m);
    }
    out
}

fn set_of(p: ProcessImages) -> ImageSet {
    ImageSet {
        dir: PathBuf::from("m"),
        inventory: pb::Inventory::default(),
        inventory_size: 0,
        files: Vec::new(),
        processes: vec![p],
        processes_not_loaded: 0,
    }
}

fn consume(p: ProcessImages) {
    let set = set_of(p);
    let _ = summary::render(&set);
    let empty = set_of(ProcessImages::default());
    let _ = diff::render(&set, &empty, &diff::diff(&set, &empty));
    assert!(diff::diff(&set, &set).is_empty());
}

fn decode(kind: Kind, data: &[u8]) {
    let Some(mut r) = reader(data, kind) else {
        return;
    };
    match kind {
        Kind::Inventory => {
            if let Ok(inv) = ImageDir::decode_inventory(r) {
                for f in inv.files.iter().chain(&inv.packed) {
                    assert!(!f.name.contains('/'), "{:?}", f.name);
                }
                let _ = summary::pids(&inv);
            }
        }
        Kind::Core => {
            if let Ok(Some(core)) = r.next::<pb::ProcessCore>("ProcessCore") {
                let threads = rest(&mut r, "ThreadCore");
                consume(ProcessImages {
                    core: Some(core),
                    threads,
                    ..Default::default()
                });
            }
        }
        Kind::Mm => {
            if let Ok(Some(mm)) = r.next::<pb::MmInfo>("MmInfo") {
                let vmas = rest(&mut r, "Vma");
                consume(ProcessImages {
                    mm: Some(mm),
                    vmas,
                    ..Default::default()
                });
            }
        }
        Kind::Pagemap => {
            if let Ok(Some(head)) = r.next::<pb::PagemapHead>("PagemapHead") {
                let runs = rest(&mut r, "PageRun");
                consume(ProcessImages {
                    mm: Some(pb::MmInfo::default()),
                    pagemap: Some(head),
                    runs,
                    ..Default::default()
                });
            }
        }
        Kind::Files => {
            let fds = rest(&mut r, "Fd");
            consume(ProcessImages {
                fds: Some(fds),
                ..Default::default()
            });
        }
        Kind::FileTable => {
            let descs: Vec<pb::FileDesc> = rest(&mut r, "FileDesc");
            let _ = serde_json::to_string(&descs);
        }
        Kind::ParentMap => {
            let _ = rest::<pb::ParentRun>(&mut r, "ParentRun");
        }
        Kind::Mounts => {
            let _ = rest::<pb::MountFile>(&mut r, "MountFile");
        }
        Kind::Ipc => {
            let _ = rest::<pb::IpcObject>(&mut r, "IpcObject");
        }
        Kind::IpcShm => {
            let _ = rest::<pb::ShmPiece>(&mut r, "ShmPiece");
        }
        // A pack holds whole record files, each checked as what it is when read.
        Kind::Pack | Kind::Pages => unreachable!(),
    }
}

fn pages(rng: &mut XorShift, data: &[u8]) {
    let Ok(p) = PagesReader::new(Path::new("pages-1.img"), data) else {
        return;
    };
    let total = data.len() as u64;
    for _ in 0..8 {
        let off = match rng.below(3) {
            0 => rng.next(),
            1 => rng.next() % (total + 1),
            _ => (rng.next() % (total + 1)) & !4095,
        };
        let len = match rng.below(3) {
            0 => rng.next(),
            1 => rng.next() % (total + 1),
            _ => 4096 * (rng.next() % 4),
        };
        if let Ok(s) = p.slice(off, len) {
            assert_eq!(s.len() as u64, len);
            assert!(off >= 4096 && off % 4096 == 0 && off + len <= total);
        }
    }
}

#[test]
fn mutated_images_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let iterations: usize = std::env::var("CKPT_MUTATION_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let samples = [
        (Kind::Inventory, valid_inventory()),
        (Kind::Core, valid_core()),
        (Kind::Mm, valid_mm()),
        (Kind::Pagemap, valid_pagemap()),
        (Kind::Files, valid_files()),
    ];
    for (kind, valid) in &samples {
        decode(*kind, valid);
        for _ in 0..iterations {
            let m = mutate(&mut rng, valid);
            decode(*kind, &m);
        }
    }
    let valid = valid_pages();
    for _ in 0..iterations {
        let m = mutate(&mut rng, &valid);
        pages(&mut rng, &m);
    }
}

#[test]
fn valid_samples_decode() {
    let mut r = reader(&valid_core(), Kind::Core).unwrap();
    let core: pb::ProcessCore = r.expect("ProcessCore").unwrap();
    assert_eq!(core.pid, 42);
    assert_eq!(rest::<pb::ThreadCore>(&mut r, "ThreadCore").len(), 1);
    let inv =
        ImageDir::decode_inventory(reader(&valid_inventory(), Kind::Inventory).unwrap()).unwrap();
    assert_eq!(inv.root_pid, 42);
    let mut r = reader(&valid_pagemap(), Kind::Pagemap).unwrap();
    let _: pb::PagemapHead = r.expect("PagemapHead").unwrap();
    assert_eq!(rest::<pb::PageRun>(&mut r, "PageRun").len(), 2);
}

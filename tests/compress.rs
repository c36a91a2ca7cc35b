//! `dump --compress`: zstd-compressed pages restore to exactly the same memory, and a
//! damaged compressed file is refused.

mod common;

use common::*;

/// The mem workload (heap, sparse anonymous memory, private and shared file mappings,
/// read-only pages) checks all of itself after each of three compressed cycles.
#[test]
fn mem_three_compressed_cycles() {
    let env = Env::new();
    let mut w = env.start("mem");
    env.check(&mut w);
    env.cycles(&mut w, 3, &["--compress"], |i, dir| {
        // The pages really are stored as zstd frames (the mem workload's data is
        // random-looking, so no size gain is asserted here).
        let pages = std::fs::read(dir.join("pages-1.img")).unwrap();
        assert_eq!(&pages[4096..4100], b"ZFRM", "cycle {i}: {}", listing(dir));
    });
}

/// A flipped byte inside a zstd frame: the restore fails with one line naming the pages
/// file, and no process is left with the pid.
#[test]
fn corrupted_compressed_pages_are_refused() {
    let env = Env::new();
    let w = env.start("mem");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--compress", "--compress-level", "3"])
        .ok();
    env.reap_dumped(w.pid);
    let path = dir.join("pages-1.img");
    let mut bytes = std::fs::read(&path).unwrap();
    let at = 4096 + 16 + (bytes.len() - 4096 - 16) / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&path, &bytes).unwrap();
    let args: [&std::ffi::OsStr; 4] = [
        "restore".as_ref(),
        "-D".as_ref(),
        dir.as_os_str(),
        "-d".as_ref(),
    ];
    env.ckpt(&args).failed_naming("pages-1.img");
    env.assert_gone(w.pid);
}

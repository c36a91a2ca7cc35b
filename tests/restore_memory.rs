//! How restore fills memory: ckpt reads the pages file a window at a time (its own memory
//! stays small whatever the image's size), raw or compressed, and the restored process
//! checks every page itself.

mod common;

use common::*;
use std::ffi::OsStr;

/// VmHWM of a live process, in KiB (the kernel's high-water mark of its RSS, file pages
/// included: a mapped pages file counts as long as it is mapped in).
fn vm_hwm_kib(pid: i32) -> u64 {
    let v = status_field(pid, "VmHWM").unwrap_or_else(|| panic!("no VmHWM for pid {pid}"));
    v.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("VmHWM of pid {pid}: {v:?}"))
}

/// 512 MiB of distinct pages, dumped raw and compressed: a foreground `ckpt restore`
/// (still alive while the process runs, so its VmHWM can be read) peaks far below the
/// image's size, and the process passes its check of every page and exits 0.
#[test]
fn restore_holds_a_window_of_the_pages_file_not_all_of_it() {
    const MIB: u64 = 512;
    let env = Env::new();
    for (name, extra) in [("raw", &[][..]), ("compressed", &["--compress"][..])] {
        let bin = workload_bin("lazybig");
        let mut w = env.spawn(
            &format!("lazybig-{name}"),
            &bin,
            &[env.path().as_os_str(), OsStr::new(&MIB.to_string())],
        );
        env.wait_ready(&w);
        let dir = env.subdir(&format!("img-{name}"));
        env.dump(w.pid, &dir, extra).ok();
        env.reap_dumped(w.pid);
        let mut bg = env.ckpt_bg(&[OsStr::new("restore"), OsStr::new("-D"), dir.as_os_str()]);
        env.track(w.pid);
        env.wait_restored(&w, Some(&mut bg));
        let hwm_mib = vm_hwm_kib(bg.child.id() as i32) / 1024;
        eprintln!("{name}: ckpt restore of {MIB} MiB peaked at {hwm_mib} MiB");
        env.check(&mut w);
        assert!(signal(w.pid, libc::SIGUSR2), "SIGUSR2 to {}", w.pid);
        let out = env.finish_bg(bg);
        env.untrack(w.pid);
        assert_eq!(out.status.code(), Some(0), "{name}: {out}");
        assert!(
            hwm_mib < MIB / 4,
            "{name}: ckpt restore peaked at {hwm_mib} MiB for a {MIB} MiB image"
        );
    }
}

/// Transparent huge pages stay huge: the workload's 8 MiB MADV_HUGEPAGE region is backed
/// by huge pages at the dump (its setup makes sure) and, after a restore, checks its own
/// AnonHugePages along with its bytes. Restored eagerly (-d), then lazily in the
/// foreground (its huge-page memory is placed before it runs; ckpt exits with its status).
#[test]
fn huge_pages_stay_huge() {
    let env = Env::new();
    let mut w = env.start("thp");
    let huge = env.wait_line(&w, "HUGE", |l| l.starts_with("HUGE "));
    eprintln!("thp workload: {huge} kB in huge pages");
    env.check(&mut w);

    let dir = env.subdir("img-eager");
    env.cycle(&mut w, &dir);

    let dir = env.subdir("img-lazy");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let mut bg = env.ckpt_bg(&[
        OsStr::new("restore"),
        OsStr::new("--lazy"),
        OsStr::new("-D"),
        dir.as_os_str(),
    ]);
    env.track(w.pid);
    env.wait_restored(&w, Some(&mut bg));
    env.check(&mut w);
    assert!(signal(w.pid, libc::SIGUSR2), "SIGUSR2 to {}", w.pid);
    let out = env.finish_bg(bg);
    env.untrack(w.pid);
    assert_eq!(out.status.code(), Some(0), "lazy: {out}");
}

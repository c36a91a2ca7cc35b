//! Pre-dump and incremental dumps: `dump --pre-dump` copies memory while the workload
//! runs, with writes tracked by a userfaultfd in write-protect async mode; `dump
//! --prev-images-dir` copies only what was written since and refers to the earlier
//! images for the rest; restore follows the chain. The `rewrite` workload keeps
//! rewriting its memory and checks every page (and, with CHURN, a region it drops,
//! refills, moves and remaps between rounds).

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// rewrite WORKDIR MIB RATE THREADS CHILD CHURN
fn start_rewrite(env: &Env, mib: u32, threads: u32, child: bool, churn: bool) -> Workload {
    env.start_with(
        "rewrite",
        &[
            &mib.to_string(),
            "50",
            &threads.to_string(),
            if child { "1" } else { "0" },
            if churn { "1" } else { "0" },
        ],
    )
}

fn pages_size(dir: &Path) -> u64 {
    fs::metadata(dir.join("pages-1.img")).unwrap().len()
}

/// `dump --pre-dump` (with `--prev-images-dir prev` after the first), which must leave
/// the workload running and able to check itself.
fn pre_dump(env: &Env, w: &mut Workload, dir: &Path, prev: Option<&str>) {
    let mut args = vec!["--pre-dump"];
    if let Some(p) = prev {
        args.extend(["--prev-images-dir", p]);
    }
    env.dump(w.pid, dir, &args).ok();
    assert_running_untraced(w.pid);
    assert!(read_inventory(dir).pre_dump);
    env.check(w);
}

/// Waits until every pid of `pids` but those still ours to reap is gone.
fn wait_gone(pids: &[i32]) {
    let start = Instant::now();
    while pids.iter().any(|&p| exists(p)) {
        for &p in pids {
            if proc_state(p) == Some('Z') {
                reap(p, Duration::from_millis(1));
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "processes of the dumped tree still exist"
        );
        sleep(Duration::from_millis(20));
    }
}

/// The final dump on top of `prev`, then restore and check.
fn final_dump_and_restore(env: &Env, w: &mut Workload, dir: &Path, prev: &str) {
    env.dump(w.pid, dir, &["--prev-images-dir", prev]).ok();
    let inv = read_inventory(dir);
    assert!(inv.parent.is_some(), "no parent link in {}", dir.display());
    env.reap_dumped(w.pid);
    wait_gone(&inv.pids);
    env.restore_detached(dir).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    env.check(w);
}

#[test]
fn pre_dump_then_incremental_dump_restores_every_page() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 256, 1, false, false);
    for i in 1..=3 {
        let pre = env.subdir(&format!("pre{i}"));
        let fin = env.subdir(&format!("fin{i}"));
        pre_dump(&env, &mut w, &pre, None);
        // The tracker lives in the process, left out of its fds at the next dump.
        sleep(Duration::from_millis(300));
        final_dump_and_restore(&env, &mut w, &fin, &format!("../pre{i}"));
        // 256 MiB written at setup; since the pre-dump only ~a hot quarter changes.
        assert!(
            pages_size(&pre) > 200 << 20,
            "pre-dump holds {} bytes",
            pages_size(&pre)
        );
        assert!(
            pages_size(&fin) < 128 << 20,
            "the incremental dump holds {} bytes of 256 MiB",
            pages_size(&fin)
        );
        let shown = env.ckpt(&["show", "-D", fin.to_str().unwrap()]).ok();
        assert!(
            shown.stdout.contains("parent") && shown.stdout.contains("pre"),
            "show does not name the chain:\n{}",
            shown.stdout
        );
        // What was written since the pre-dump was copied before the freeze, into the
        // image's own pages-2.img.
        assert!(
            read_inventory(&fin)
                .files
                .iter()
                .any(|f| f.name == "pages-2.img" && f.size > 4096),
            "no pages copied before the freeze in {}",
            fin.display()
        );
    }
}

/// An incremental dump restored lazily: the earlier images of its chain are verified
/// whole first, the image's own pages and its parent's are served as the process asks
/// (or the pager reaches them); three cycles, every page checked each time.
#[test]
fn incremental_dump_restored_lazily_through_three_cycles() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 64, 1, false, false);
    for i in 1..=3 {
        let pre = env.subdir(&format!("pre{i}"));
        let fin = env.subdir(&format!("fin{i}"));
        pre_dump(&env, &mut w, &pre, None);
        sleep(Duration::from_millis(200));
        env.dump(w.pid, &fin, &["--prev-images-dir", &format!("../pre{i}")])
            .ok();
        let inv = read_inventory(&fin);
        assert!(inv.parent.is_some(), "no parent link in {}", fin.display());
        env.reap_dumped(w.pid);
        wait_gone(&inv.pids);
        let out = env
            .ckpt(&["-v", "restore", "-D", fin.to_str().unwrap(), "-d", "--lazy"])
            .ok();
        env.track(w.pid);
        env.check(&mut w);
        // The pager ends once every page is in (then the process is no longer lazy
        // and can be dumped again).
        let text = format!("{}{}", out.stdout, out.stderr);
        let pager: i32 = text
            .split(|c: char| c.is_whitespace() || c == '\u{1b}')
            .find_map(|t| {
                t.strip_prefix("pager=")?
                    .trim_end_matches("[0m")
                    .parse()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no pager=PID in ckpt's log:\n{text}"));
        wait_gone(&[pager]);
        assert_running_untraced(w.pid);
        env.check(&mut w);
    }
}

#[test]
fn chain_of_three_pre_dumps() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 64, 1, false, false);
    pre_dump(&env, &mut w, &env.subdir("p1"), None);
    pre_dump(&env, &mut w, &env.subdir("p2"), Some("../p1"));
    pre_dump(&env, &mut w, &env.subdir("p3"), Some("../p2"));
    assert_eq!(read_inventory(&env.subdir("p3")).parent.unwrap().depth, 2);
    let fin = env.subdir("fin");
    final_dump_and_restore(&env, &mut w, &fin, "../p3");
    assert_eq!(read_inventory(&fin).parent.unwrap().depth, 3);
}

#[test]
fn threads_and_a_child_are_tracked_each() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 64, 3, true, false);
    for i in 1..=3 {
        pre_dump(&env, &mut w, &env.subdir(&format!("pre{i}")), None);
        let inv = read_inventory(&env.subdir(&format!("pre{i}")));
        assert_eq!(inv.trackers.len(), 2, "one tracker per process: {inv:?}");
        final_dump_and_restore(
            &env,
            &mut w,
            &env.subdir(&format!("fin{i}")),
            &format!("../pre{i}"),
        );
    }
}

#[test]
fn huge_pages_are_tracked() {
    let env = Env::new();
    let mut w = env.start_with("rewrite", &["64", "50", "1", "0", "0", "1"]);
    let thp_kib = || -> u64 {
        fs::read_to_string(format!("/proc/{}/smaps_rollup", w.pid))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("AnonHugePages:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    if thp_kib() == 0 {
        eprintln!("no transparent huge pages on this host: nothing to test");
        env.kill_and_reap(w.pid);
        return;
    }
    for i in 1..=3 {
        pre_dump(&env, &mut w, &env.subdir(&format!("pre{i}")), None);
        sleep(Duration::from_millis(300));
        final_dump_and_restore(
            &env,
            &mut w,
            &env.subdir(&format!("fin{i}")),
            &format!("../pre{i}"),
        );
    }
}

#[test]
fn layout_changes_between_rounds_are_seen() {
    let env = Env::new();
    // Every ~50 ms: a MiB dropped (MADV_DONTNEED: must read zero), refilled, the region
    // moved (mremap), a MiB unmapped and mapped anew.
    let mut w = start_rewrite(&env, 64, 1, false, true);
    for i in 1..=3 {
        pre_dump(&env, &mut w, &env.subdir(&format!("pre{i}")), None);
        sleep(Duration::from_millis(700));
        pre_dump(
            &env,
            &mut w,
            &env.subdir(&format!("mid{i}")),
            Some(&format!("../pre{i}")),
        );
        sleep(Duration::from_millis(700));
        final_dump_and_restore(
            &env,
            &mut w,
            &env.subdir(&format!("fin{i}")),
            &format!("../mid{i}"),
        );
    }
}

#[test]
fn a_damaged_chain_is_refused_before_anything_is_restored() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 32, 1, false, false);
    let pre = env.subdir("pre");
    let fin = env.subdir("fin");
    pre_dump(&env, &mut w, &pre, None);
    // A pre-dump is no snapshot: refused.
    let out = env.ckpt(&["restore", "-D", pre.to_str().unwrap(), "-d"]);
    assert!(
        !out.success() && out.stderr.contains("pre-dump"),
        "{}",
        out.failed_naming("pre-dump")
    );
    env.dump(w.pid, &fin, &["--prev-images-dir", "../pre"]).ok();
    env.reap_dumped(w.pid);

    // The parent moved away: refused, naming it.
    let moved = env.subdir("moved");
    fs::rename(&pre, &moved).unwrap();
    let out = env.ckpt(&["restore", "-D", fin.to_str().unwrap(), "-d"]);
    assert!(
        !out.success() && out.stderr.contains("parent image") && out.stderr.contains("pre"),
        "{}",
        out.failed_naming("parent image")
    );
    env.assert_gone(w.pid);
    fs::rename(&moved, &pre).unwrap();

    // A page of the parent altered: refused, naming the file.
    let pages = pre.join("pages-1.img");
    let mut bytes = fs::read(&pages).unwrap();
    bytes[8192 + 100] ^= 0xff;
    fs::write(&pages, &bytes).unwrap();
    let out = env.ckpt(&["restore", "-D", fin.to_str().unwrap(), "-d"]);
    assert!(
        !out.success() && out.stderr.contains("pages-1.img"),
        "{}",
        out.failed_naming("pages-1.img")
    );
    env.assert_gone(w.pid);
    bytes[8192 + 100] ^= 0xff;
    fs::write(&pages, &bytes).unwrap();

    // A page the final dump copied before its freeze (its own pages-2.img) altered:
    // refused, naming the file. The workload writes all the time, so the copy holds pages.
    let pages = fin.join("pages-2.img");
    let mut bytes = fs::read(&pages).unwrap();
    assert!(
        bytes.len() > 8192,
        "pages-2.img holds {} bytes",
        bytes.len()
    );
    bytes[4096 + 100] ^= 0xff;
    fs::write(&pages, &bytes).unwrap();
    let out = env.ckpt(&["restore", "-D", fin.to_str().unwrap(), "-d"]);
    assert!(
        !out.success() && out.stderr.contains("pages-2.img"),
        "{}",
        out.failed_naming("pages-2.img")
    );
    env.assert_gone(w.pid);
    bytes[4096 + 100] ^= 0xff;
    fs::write(&pages, &bytes).unwrap();

    // Another image in the parent's place (same name, its own valid inventory): refused.
    let env2 = Env::new();
    let other = env2.start_with("rewrite", &["8", "50", "1", "0", "0"]);
    fs::rename(&pre, &moved).unwrap();
    env.dump(other.pid, &pre, &["--leave-running"]).ok();
    let out = env.ckpt(&["restore", "-D", fin.to_str().unwrap(), "-d"]);
    assert!(
        !out.success() && out.stderr.contains("not the one"),
        "{}",
        out.failed_naming("not the one")
    );
    env.assert_gone(w.pid);
    env2.kill_and_reap(other.pid);
    fs::remove_dir_all(&pre).unwrap();
    fs::rename(&moved, &pre).unwrap();

    // Whole again: restores.
    env.restore_detached(&fin).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    env.check(&mut w);
}

#[test]
fn ckpt_killed_during_a_pre_dump_leaves_the_workload_running() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 128, 1, false, false);
    let dir = env.subdir("pre");
    let hold = Hold::new(&env, "copying");
    let bg = env.ckpt_bg_held(&hold, &dump_args(w.pid, &dir, &["--pre-dump"]));
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    // Held mid-copy: the tree was released already and runs, tracked.
    assert_running_untraced(w.pid);
    assert!(signal(ckpt, libc::SIGKILL));
    let out = env.finish_bg(bg);
    assert!(!out.success());
    assert!(!dir.join("inventory.img").exists());
    // It goes on writing and checking, its writes resolved by the kernel (WP async).
    for _ in 0..3 {
        env.check(&mut w);
        assert_running_untraced(w.pid);
    }
    // A plain dump of it later leaves the tracker out and restores.
    let img = env.subdir("img");
    env.cycle(&mut w, &img);
}

#[test]
fn tracked_dumps_are_refused_with_compress() {
    let env = Env::new();
    let w = start_rewrite(&env, 8, 1, false, false);
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &["--pre-dump", "--compress"]);
    assert!(!out.success());
    let out = env.dump(w.pid, &dir, &["--prev-images-dir", "../nothing-here"]);
    assert!(
        !out.success() && out.stderr.contains("nothing-here"),
        "{}",
        out.failed_naming("nothing-here")
    );
    assert_running_untraced(w.pid);
    env.kill_and_reap(w.pid);
}

#[test]
fn track_mem_dumps_write_only_what_changed() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 128, 1, false, false);
    // A full dump that leaves tracking armed and the service running.
    let d1 = env.subdir("d1");
    env.dump(w.pid, &d1, &["--track-mem"]).ok();
    assert_running_untraced(w.pid);
    assert_eq!(read_inventory(&d1).trackers.len(), 1);
    env.check(&mut w);
    // The next one writes only what changed since, and stays armed.
    let d2 = env.subdir("d2");
    env.dump(w.pid, &d2, &["--track-mem", "--prev-images-dir", "../d1"])
        .ok();
    assert_running_untraced(w.pid);
    assert!(
        pages_size(&d2) < pages_size(&d1) / 2,
        "{} bytes after {}",
        pages_size(&d2),
        pages_size(&d1)
    );
    env.check(&mut w);
    final_dump_and_restore(&env, &mut w, &env.subdir("d3"), "../d2");
}

#[test]
fn ckpt_killed_while_the_tree_is_stopped_for_a_pre_dump_leaves_it_running() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 32, 1, false, false);
    let dir = env.subdir("pre");
    let hold = Hold::new(&env, "seized");
    let bg = env.ckpt_bg_held(&hold, &dump_args(w.pid, &dir, &["--pre-dump"]));
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    assert!(signal(ckpt, libc::SIGKILL));
    let out = env.finish_bg(bg);
    assert!(!out.success());
    // Its tracer gone, the kernel lets it run on; nothing was armed yet.
    for _ in 0..2 {
        env.check(&mut w);
        assert_running_untraced(w.pid);
    }
    // A pre-dump and an incremental dump of it still work.
    pre_dump(&env, &mut w, &env.subdir("pre2"), None);
    final_dump_and_restore(&env, &mut w, &env.subdir("fin"), "../pre2");
}

#[test]
fn a_failed_dump_does_not_leave_a_stale_base() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 128, 1, false, false);
    let pre = env.subdir("pre");
    pre_dump(&env, &mut w, &pre, None);
    sleep(Duration::from_millis(500));
    // A dump on top of it that re-protects what was written, then fails (interrupted
    // mid-copy): the tree runs on, and its tracker has moved past the pre-dump.
    let failed = env.subdir("failed");
    let hold = Hold::new(&env, "copying");
    let bg = env.ckpt_bg_held(
        &hold,
        &dump_args(w.pid, &failed, &["--prev-images-dir", "../pre"]),
    );
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    assert!(signal(ckpt, libc::SIGINT));
    assert!(!env.finish_bg(bg).success());
    assert_running_untraced(w.pid);
    // The same base again: the pages the failed dump protected were written after the
    // pre-dump; taken from it they would be stale. The dump copies the process whole.
    let fin = env.subdir("fin");
    final_dump_and_restore(&env, &mut w, &fin, "../pre");
    assert!(
        pages_size(&fin) > 120 << 20,
        "{} bytes: pages were taken from a base the failed dump had made stale",
        pages_size(&fin)
    );
}

#[test]
fn an_older_image_is_no_base_once_a_later_one_re_armed() {
    let env = Env::new();
    let mut w = start_rewrite(&env, 64, 1, false, false);
    pre_dump(&env, &mut w, &env.subdir("p1"), None);
    sleep(Duration::from_millis(300));
    pre_dump(&env, &mut w, &env.subdir("p2"), Some("../p1"));
    sleep(Duration::from_millis(300));
    // On top of p1 although p2 re-armed since: copied whole, and correct.
    let fin = env.subdir("fin");
    final_dump_and_restore(&env, &mut w, &fin, "../p1");
    assert!(pages_size(&fin) > 60 << 20, "{} bytes", pages_size(&fin));
}

//! `restore --lazy`: the process runs before its anonymous memory is back, its pages
//! arrive through userfaultfd from a pager that outlives `restore -d`. The workloads
//! judge their own memory (PASS); a killed pager must leave the process blocked, never
//! reading zeros; and once every page is in, the process holds no userfaultfd.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// `restore --lazy -d -v -D dir` (-v: ckpt logs its pager's pid, see `pager_of`).
fn lazy_args(dir: &Path) -> [&OsStr; 6] {
    [
        OsStr::new("-v"),
        OsStr::new("restore"),
        OsStr::new("--lazy"),
        OsStr::new("-d"),
        OsStr::new("-D"),
        dir.as_os_str(),
    ]
}

/// `restore --lazy -d -v`.
fn restore_lazy(env: &Env, dir: &Path) -> CkptOutput {
    env.ckpt(&lazy_args(dir))
}

/// [`restore_lazy`], its pager held before the background copy (faults are still
/// served): pages stay missing until the test releases `hold`. Returns the pager's pid.
fn restore_lazy_held(env: &Env, dir: &Path, hold: &Hold) -> i32 {
    let out = env.ckpt_held(hold, &lazy_args(dir)).ok();
    let pager = pager_of(&out);
    assert_eq!(hold.reached(), pager, "the pager holds");
    pager
}

/// The pager's pid, from the log of a successful `restore_lazy` (not found by name or
/// command line: it may not have renamed itself yet, or be done already, a zombie).
fn pager_of(out: &CkptOutput) -> i32 {
    let mut text = format!("{}{}", out.stdout, out.stderr);
    // Without the colours' escape sequences (ESC [ ... m).
    while let Some(at) = text.find('\u{1b}') {
        let end = text[at..].find('m').map_or(text.len(), |e| at + e + 1);
        text.replace_range(at..end, "");
    }
    text.split_whitespace()
        .find_map(|t| t.strip_prefix("pager=")?.parse().ok())
        .unwrap_or_else(|| panic!("no pager=PID in ckpt's log:\n{text}"))
}

/// The pager exits non-zero (it refused to serve a damaged chunk).
fn assert_pager_failed(pager: i32) {
    let st = reap(pager, Duration::from_secs(10)).expect("the pager did not exit");
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) != 0,
        "pager {}",
        describe_wait(st)
    );
}

/// Waits for the pager to finish (exit 0, reaped: it came to us, the subreaper), then
/// checks the process no longer holds a userfaultfd.
fn pagers_done(pager: i32, pid: i32) {
    {
        let st = reap(pager, Duration::from_secs(30));
        match st {
            Some(st) if st != -1 => assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "pager {pager} {}",
                describe_wait(st)
            ),
            // Not ours (yet): wait for it to go.
            _ => {
                let t = Instant::now();
                while exists(pager) && t.elapsed() < Duration::from_secs(30) {
                    sleep(Duration::from_millis(10));
                }
            }
        }
    }
    assert!(
        !has_userfaultfd(pid),
        "pid {pid} still holds a userfaultfd after its pager finished"
    );
}

fn start_big(env: &Env, mib: u32) -> Workload {
    let bin = workload_bin("lazybig");
    let w = env.spawn(
        "lazybig",
        &bin,
        &[env.path().as_os_str(), OsStr::new(&mib.to_string())],
    );
    env.wait_ready(&w);
    w
}

/// Three lazy cycles of `w`: each restored process checks itself while its pages come
/// in, and again once the pager is done.
fn three_lazy_cycles(env: &Env, w: &mut Workload) {
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        let pager = pager_of(&restore_lazy(env, &dir).ok());
        env.track(w.pid);
        env.check(w);
        pagers_done(pager, w.pid);
        // And still right with every page in and the pager gone.
        env.check(w);
    }
}

/// Heap, stack, a sparse 64 MiB mapping (holes must read zero), private and shared file
/// mappings, a read-only region: three lazy cycles.
#[test]
fn mem_three_lazy_cycles() {
    let env = Env::new();
    let mut w = env.start("mem");
    three_lazy_cycles(&env, &mut w);
}

/// 64 threads (and 64 MiB) restored lazily: faults from every thread are served, every
/// thread's rseq area was there before its registration; three cycles.
#[test]
fn threads_three_lazy_cycles() {
    let env = Env::new();
    let mut w = env.start_with("threads", &["64", "64"]);
    env.check(&mut w);
    three_lazy_cycles(&env, &mut w);
}

/// 512 MiB of distinct pages: `restore --lazy -d` returns far sooner than the eager
/// restore of the same image, and the process then verifies every page.
#[test]
fn big_lazy_is_fast_and_right() {
    let env = Env::new();
    let mut w = start_big(&env, 512);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);

    let t = Instant::now();
    env.restore_detached(&dir).ok();
    let eager = t.elapsed();
    env.track(w.pid);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
    // Restored from the same image again: its PASS counter starts over.
    w.passes = 0;

    let t = Instant::now();
    let pager = pager_of(&restore_lazy(&env, &dir).ok());
    let lazy = t.elapsed();
    env.track(w.pid);
    eprintln!("restore -d of 512 MiB: eager {eager:?}, lazy {lazy:?}");
    assert!(
        lazy < Duration::from_millis(100) || lazy < eager / 2,
        "lazy restore took {lazy:?}, eager {eager:?}"
    );
    env.check(&mut w);
    pagers_done(pager, w.pid);
    env.check(&mut w);
}

/// The pager dies while pages are missing: the process must block at its next missing
/// page (in handle_userfault), never go on with zeros.
#[test]
fn killed_pager_blocks_the_process() {
    let env = Env::new();
    let w = start_big(&env, 1024);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let hold = Hold::new(&env, "lazy-copy");
    let pager = restore_lazy_held(&env, &dir, &hold);
    env.track(w.pid);
    signal(pager, libc::SIGKILL);
    assert!(has_userfaultfd(w.pid), "the process must hold its own uffd");
    signal(w.pid, libc::SIGUSR1);
    let t = Instant::now();
    let mut wchan = String::new();
    while t.elapsed() < Duration::from_secs(5) {
        wchan = std::fs::read_to_string(format!("/proc/{}/wchan", w.pid)).unwrap_or_default();
        if wchan == "handle_userfault" {
            break;
        }
        sleep(Duration::from_millis(10));
    }
    assert_eq!(wchan, "handle_userfault", "pid {} is not blocked", w.pid);
    sleep(Duration::from_millis(300));
    let out = env.output(&w);
    assert!(
        !out.contains("PASS") && !out.contains("FAIL"),
        "the process went on without its pager: {out}"
    );
    env.kill_and_reap(w.pid);
    let _ = reap(pager, Duration::from_secs(5));
}

/// A damaged chunk of the pages file in a lazy restore: the pager checks each 16 MiB chunk
/// before it serves a page of it, so it kills the process (which never reports FAIL: it
/// saw no byte of the chunk) and exits non-zero instead of serving it.
#[test]
fn damaged_pages_kill_the_lazy_process_before_it_reads_them() {
    use std::io::{Read, Seek, SeekFrom, Write};
    let env = Env::new();
    let w = start_big(&env, 64);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    // The middle of the file: the workload's big region (the chunk holding the rseq area,
    // which the restore itself writes before the process runs, is checked up front).
    let pages = dir.join("pages-1.img");
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&pages)
        .unwrap();
    let at = f.metadata().unwrap().len() / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&[b[0] ^ 0x55]).unwrap();
    drop(f);

    let pager = pager_of(&restore_lazy(&env, &dir).ok());
    env.track(w.pid);
    signal(w.pid, libc::SIGUSR1);
    let st = reap(w.pid, Duration::from_secs(10)).expect("the process was not killed");
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
        "pid {} {}",
        w.pid,
        describe_wait(st)
    );
    assert!(!env.output(&w).contains("FAIL"), "{}", env.output(&w));
    assert_pager_failed(pager);
}

/// The pages a lazy restore writes itself rather than serving them (huge-page memory,
/// placed by process_vm_writev before the process runs) are checked against their chunk
/// too: damaged, the restore fails and leaves nothing behind.
#[test]
fn damaged_pages_written_by_the_restore_itself_are_refused() {
    let env = Env::new();
    let bin = workload_bin("lazybig");
    let w = env.spawn(
        "lazybig",
        &bin,
        &[env.path().as_os_str(), OsStr::new("64"), OsStr::new("huge")],
    );
    env.wait_ready(&w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    // The middle of the file: the huge-page region, chunks away from the rseq page.
    let pages = dir.join("pages-1.img");
    let mut bytes = std::fs::read(&pages).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&pages, bytes).unwrap();

    let out = env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("--lazy"),
        OsStr::new("-d"),
        OsStr::new("-D"),
        dir.as_os_str(),
    ]);
    out.failed_naming("pages-1.img");
    env.assert_gone(w.pid);
    assert!(pagers_of(&dir).is_empty(), "a pager was left behind");
}

/// Starts `lazybig WORKDIR MIB MODE` (`fork`, `fork2`, `forkexit`, `forkorphan` or
/// `forkdrop`), dumps it and damages (with
/// `damage_from_end`) one byte that far from the end of its pages file; returns the
/// workload and the image.
fn forking_big(
    env: &Env,
    mib: u32,
    mode: &str,
    damage_from_end: Option<u64>,
) -> (Workload, PathBuf) {
    let bin = workload_bin("lazybig");
    let w = env.spawn(
        "lazybig",
        &bin,
        &[
            env.path().as_os_str(),
            OsStr::new(&mib.to_string()),
            OsStr::new(mode),
        ],
    );
    env.wait_ready(&w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    if let Some(back) = damage_from_end {
        use std::io::{Read, Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(dir.join("pages-1.img"))
            .unwrap();
        let at = f.metadata().unwrap().len() - back;
        let mut b = [0u8];
        f.seek(SeekFrom::Start(at)).unwrap();
        f.read_exact(&mut b).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(&[b[0] ^ 0x55]).unwrap();
    }
    (w, dir)
}

/// The pid of the forked child, from its `CHILD <pid>` line.
fn child_pid(env: &Env, w: &Workload) -> i32 {
    let line = env.wait_line(w, "CHILD <pid>", |l| {
        l.strip_prefix("CHILD ")
            .is_some_and(|p| p.parse::<i32>().is_ok())
    });
    line["CHILD ".len()..].parse().unwrap()
}

/// A fork while most pages are still missing (the FORK event): the pager fills the
/// child's memory before letting its context go, so the child, which verifies every
/// page from the last one back, passes; and so does the parent.
#[test]
fn fork_during_lazy_restore_gets_all_pages() {
    let env = Env::new();
    let (mut w, dir) = forking_big(&env, 512, "fork", None);
    let hold = Hold::new(&env, "lazy-copy");
    let pager = restore_lazy_held(&env, &dir, &hold);
    env.track(w.pid);
    assert!(signal(w.pid, libc::SIGHUP));
    let child = child_pid(&env, &w);
    env.wait_line(&w, "CHILD PASS", |l| {
        l.starts_with("CHILD PASS") || l.starts_with("CHILD FAIL")
    });
    hold.release();
    let out = env.output(&w);
    assert!(out.contains("CHILD PASS"), "pid {child}: {out}");
    env.check(&mut w);
    pagers_done(pager, w.pid);
    env.check(&mut w);
}

/// A fork child that forks again at once, while the pager is still filling it: the
/// grandchild copied a half-filled address space, and its context reaches the pager only
/// as an event on the child's userfaultfd. The pager reads the events the child queued
/// while it was filled and fills the grandchild too before letting it go (left unread,
/// the context would be dropped when the child's closes, and the grandchild would read
/// zeros where pages were still missing).
#[test]
fn fork_in_a_fork_child_during_lazy_restore_gets_all_pages() {
    forking_child_passes("fork2", &["GRANDCHILD PASS"]);
}

/// The same, but the grandchild exits at once: its memory is gone while the pager may
/// still be filling it, which ends its fill (nothing can read it) rather than failing it;
/// the child, complete, goes on and passes.
#[test]
fn a_grandchild_that_exits_during_its_fill_is_no_failure() {
    forking_child_passes("forkexit", &[]);
}

/// A fork child that gives memory back (MADV_DONTNEED) at once, while the pager is still
/// filling it: its madvise waits until the pager reads the event, and the pager then
/// leaves that range alone, so it reads zero as it must, and the rest is complete.
#[test]
fn memory_dropped_by_a_fork_child_during_its_fill_stays_dropped() {
    forking_child_passes("forkdrop", &[]);
}

/// A fork child that forks and exits at once, and a damaged chunk the grandchild's fill
/// reaches: the fill fails, and the kill cannot find the grandchild (orphaned, it left
/// the process's tree), so the pager poisons what it still lacks before letting its
/// context go: the grandchild dies of SIGBUS at its first missing page instead of reading
/// zeros there (it verifies from the last page back, where the damage is).
#[test]
fn an_orphaned_grandchild_of_a_failed_fill_never_reads_zeros() {
    let env = Env::new();
    let (w, dir) = forking_big(&env, 1024, "forkorphan", Some(8 << 20));
    let hold = Hold::new(&env, "lazy-copy");
    let pager = restore_lazy_held(&env, &dir, &hold);
    env.track(w.pid);
    assert!(signal(w.pid, libc::SIGHUP));
    let line = env.wait_line(&w, "GRANDCHILD <pid>", |l| {
        l.strip_prefix("GRANDCHILD ")
            .is_some_and(|p| p.parse::<i32>().is_ok())
    });
    let gc: i32 = line["GRANDCHILD ".len()..].parse().unwrap();
    // Orphaned, it comes to us, the subreaper (or is reaped by init in a race).
    let st = reap(gc, Duration::from_secs(20)).expect("the grandchild did not end");
    hold.release();
    assert!(
        st == -1
            || libc::WIFSIGNALED(st) && matches!(libc::WTERMSIG(st), libc::SIGBUS | libc::SIGKILL),
        "grandchild {gc} {}",
        describe_wait(st)
    );
    let out = env.output(&w);
    assert!(
        !out.contains("GRANDCHILD PASS") && !out.contains("GRANDCHILD FAIL"),
        "the grandchild ran on memory it did not have: {out}"
    );
    let _ = reap(w.pid, Duration::from_secs(20));
    env.untrack(w.pid);
    assert_pager_failed(pager);
}

/// Lazily restores `lazybig 512 MODE`, makes it fork, and checks that the child printed
/// CHILD PASS (and every line of `also`), that the process itself still passes and that
/// its pager finishes.
fn forking_child_passes(mode: &str, also: &[&str]) {
    let env = Env::new();
    let (mut w, dir) = forking_big(&env, 512, mode, None);
    let hold = Hold::new(&env, "lazy-copy");
    let pager = restore_lazy_held(&env, &dir, &hold);
    env.track(w.pid);
    assert!(signal(w.pid, libc::SIGHUP));
    env.wait_line(&w, "CHILD PASS", |l| {
        l.starts_with("CHILD PASS") || l.starts_with("CHILD FAIL")
    });
    hold.release();
    let out = env.output(&w);
    assert!(
        out.contains("\nCHILD PASS") && also.iter().all(|l| out.contains(l)),
        "{mode}: pid {}: {out}",
        w.pid
    );
    env.check(&mut w);
    pagers_done(pager, w.pid);
    env.check(&mut w);
}

/// A fork before the background copy reaches a damaged chunk: the child's memory cannot
/// be completed, so the pager kills the child (before its userfaultfd closes: it must
/// never read the zeros it would then find) and the process; neither reports FAIL.
#[test]
fn fork_with_damaged_pages_never_runs_the_child_on_zeros() {
    let env = Env::new();
    let (w, dir) = forking_big(&env, 1024, "fork", Some(8 << 20));
    let hold = Hold::new(&env, "lazy-copy");
    let pager = restore_lazy_held(&env, &dir, &hold);
    env.track(w.pid);
    assert!(signal(w.pid, libc::SIGHUP));
    let child = child_pid(&env, &w);
    hold.release();
    let st = reap(w.pid, Duration::from_secs(20)).expect("the process was not killed");
    assert!(
        libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
        "pid {} {}",
        w.pid,
        describe_wait(st)
    );
    env.untrack(w.pid);
    // Orphaned, the child came to us (the subreaper), unless its parent reaped it first.
    let t = Instant::now();
    while exists(child) && t.elapsed() < Duration::from_secs(10) {
        if let Some(st) = reap(child, Duration::from_millis(50)) {
            assert!(
                st == -1 || libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGKILL,
                "child {child} {}",
                describe_wait(st)
            );
        }
    }
    assert!(!exists(child), "the forked child {child} is still there");
    let out = env.output(&w);
    assert!(
        !out.contains("FAIL") && !out.contains("CHILD PASS"),
        "a process ran on memory it did not have: {out}"
    );
    assert_pager_failed(pager);
}

/// A SIGTRAP sent to the process while the restore injects its syscalls (through a
/// `syscall; int3` trampoline, whose own trap is a SIGTRAP too) is told apart from the
/// int3's (si_code) and queued again: the restored process gets it once, as sent.
/// Sent while the restore has the process stopped (after the seed's SIGSTOP, during the
/// 512 MiB fill), it arrives at the next injected call.
#[test]
fn sigtrap_sent_during_the_restore_is_delivered_after_it() {
    let env = Env::new();
    let bin = workload_bin("lazybig");
    let mut w = env.spawn(
        "lazybig",
        &bin,
        &[
            env.path().as_os_str(),
            OsStr::new("512"),
            OsStr::new("trap"),
        ],
    );
    env.wait_ready(&w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let hold = Hold::new(&env, "restore-puppet");
    let bg = env.ckpt_bg_held(
        &hold,
        &[
            OsStr::new("-v"),
            OsStr::new("restore"),
            OsStr::new("-d"),
            OsStr::new("-D"),
            dir.as_os_str(),
        ],
    );
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    assert_eq!(proc_state(w.pid), Some('t'), "pid {} not stopped", w.pid);
    assert_eq!(status_field(w.pid, "TracerPid"), Some(ckpt.to_string()));
    assert!(signal(w.pid, libc::SIGTRAP));
    hold.release();
    let out = env.finish_bg(bg).ok();
    env.track(w.pid);
    let log = format!("{}{}", out.stdout, out.stderr);
    assert!(
        log.contains("SIGTRAP sent from outside"),
        "the SIGTRAP did not come during the injected calls:\n{log}"
    );
    let want = format!("TRAP 1 code 0 pid {}", std::process::id());
    env.wait_line(&w, &want, |l| l.starts_with("TRAP "));
    env.check(&mut w);
    let text = env.output(&w);
    assert!(text.contains(&want) && !text.contains("TRAP 2"), "{text}");
}

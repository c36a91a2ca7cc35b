//! A dump (or restore) that is interrupted or raced must leave the workload as it was:
//! running, untraced, with its own signal mask, answering its checks. The workload
//! (tests/workloads/safety.c) holds a large memory so the dump takes a while, a blocked
//! mask it checks itself, and a pending SIGTRAP.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::Duration;

/// Memory of the workload: enough that copying it takes far longer than our polling.
const BIG_MIB: &str = "256";

fn start_safety(env: &Env, mib: &str) -> Workload {
    let bin = workload_bin("safety");
    let w = env.spawn("safety", &bin, &[env.path().as_os_str(), OsStr::new(mib)]);
    env.wait_ready(&w);
    w
}

/// The dump's staging directories beside `dir` (where a dump writes until it is sealed).
fn staging_dirs(dir: &Path) -> Vec<PathBuf> {
    let prefix = format!("{}.ckpt-new-", dir.file_name().unwrap().to_string_lossy());
    fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// Bytes of pages written so far, in `dir` or in a staging directory beside it.
fn pages_bytes(dir: &Path) -> u64 {
    std::iter::once(dir.to_path_buf())
        .chain(staging_dirs(dir))
        .map(|d| {
            fs::metadata(d.join("pages-1.img"))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .max()
        .unwrap_or(0)
}

/// Running, untraced, the same blocked mask as before the dump, and still passing.
fn assert_untouched(env: &Env, w: &mut Workload, sigblk: &str) {
    // The kernel detaches the tracee of a dead ckpt asynchronously of our reaping it.
    wait_until("the workload to be untraced", || {
        status_field(w.pid, "TracerPid").as_deref() == Some("0")
    });
    assert_running_untraced(w.pid);
    assert_eq!(
        status_field(w.pid, "SigBlk").as_deref(),
        Some(sigblk),
        "pid {}: blocked mask changed by the interrupted dump",
        w.pid
    );
    env.check(w);
}

/// Where in the dump the signal is sent: ckpt is held there (`CKPT_TEST_HOLD`) until
/// the signal comes, so it always lands at that point, however loaded the machine.
#[derive(Debug, Clone, Copy)]
enum When {
    /// The workload is seized, nothing injected into it yet.
    Seized,
    /// The first batch of memory is written (after the injected syscalls).
    Copying,
}

impl When {
    fn point(self) -> &'static str {
        match self {
            When::Seized => "seized",
            When::Copying => "copying",
        }
    }

    /// How ckpt's error line names the phase.
    fn phase(self) -> &'static str {
        match self {
            When::Seized => "while collecting its state",
            When::Copying => "while copying memory",
        }
    }
}

/// A dump that was sent a signal part way: the workload it was dumping, that workload's
/// blocked mask from before the dump, the image directory and ckpt's output.
struct Interrupted {
    w: Workload,
    sigblk: String,
    dir: PathBuf,
    out: CkptOutput,
}

/// Starts a dump of a fresh BIG_MIB safety workload into `<tmp>/img`, sends `sig` to
/// ckpt once it holds at `when` and waits for ckpt to end.
fn signal_mid_dump(env: &Env, sig: i32, when: When) -> Interrupted {
    let w = start_safety(env, BIG_MIB);
    let sigblk = status_field(w.pid, "SigBlk").unwrap();
    let dir = env.subdir("img");
    let hold = Hold::new(env, when.point());
    let bg = env.ckpt_bg_held(&hold, &dump_args(w.pid, &dir, &[]));
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    if let When::Copying = when {
        // Held after handing its first batch to the writer thread, which goes on.
        wait_until("the first batch in the pages file", || {
            pages_bytes(&dir) > 4096
        });
    }
    assert!(signal(ckpt, sig));
    let out = env.finish_bg(bg);
    Interrupted {
        w,
        sigblk,
        dir,
        out,
    }
}

/// `sig` to ckpt mid-dump: ckpt stops in order (exit 1, one line naming the signal),
/// removes the partial image, and the workload runs on untouched (without
/// --leave-running it would otherwise have been killed).
fn interrupted_dump(sig: i32, name: &str, when: When) {
    // ckpt keeps a signal it inherited as ignored ignored (nohup), as it must.
    let ignored = status_field(std::process::id() as i32, "SigIgn")
        .and_then(|m| u64::from_str_radix(&m, 16).ok())
        .unwrap_or(0);
    assert!(
        ignored & (1 << (sig - 1)) == 0,
        "{name} is ignored in this test process (started in the background by a shell \
         without job control?): ckpt inherits that, so the test cannot interrupt it"
    );
    let env = Env::new();
    let Interrupted {
        mut w,
        sigblk,
        dir,
        out,
    } = signal_mid_dump(&env, sig, when);
    assert_eq!(
        out.status.code(),
        Some(1),
        "ckpt should exit 1 after {name} ({when:?}): {out}"
    );
    out.failed_naming(&format!("interrupted by {name} {}", when.phase()));
    assert!(
        image_files(&dir, "").is_empty(),
        "the interrupted dump left files: {}",
        listing(&dir)
    );
    assert!(
        staging_dirs(&dir).is_empty(),
        "the interrupted dump left its staging directory: {:?}",
        staging_dirs(&dir)
    );
    assert_untouched(&env, &mut w, &sigblk);
}

#[test]
fn sigterm_once_seized_leaves_workload_untouched() {
    interrupted_dump(libc::SIGTERM, "SIGTERM", When::Seized);
}

#[test]
fn sigint_during_copy_leaves_workload_untouched() {
    interrupted_dump(libc::SIGINT, "SIGINT", When::Copying);
}

#[test]
fn sighup_during_copy_leaves_workload_untouched() {
    interrupted_dump(libc::SIGHUP, "SIGHUP", When::Copying);
}

/// SIGKILL to ckpt once the memory copy runs (so after the injected syscalls): ckpt
/// cannot clean up, the kernel detaches the workload, and it must not be left with every
/// signal blocked.
#[test]
fn sigkill_after_injections_restores_mask() {
    let env = Env::new();
    let Interrupted {
        mut w, sigblk, out, ..
    } = signal_mid_dump(&env, libc::SIGKILL, When::Copying);
    assert_eq!(
        out.status.code(),
        None,
        "ckpt should have died of SIGKILL mid-copy: {out}"
    );
    assert_untouched(&env, &mut w, &sigblk);
}

/// SIGTERM to `ckpt restore` while it builds the process (held once the process exists,
/// stopped): ckpt exits 1 naming the signal, and no process with the pid is left behind.
#[test]
fn sigterm_mid_restore_leaves_no_process() {
    let env = Env::new();
    let w = start_safety(&env, BIG_MIB);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let hold = Hold::new(&env, "restore-puppet");
    let bg = env.restore_detached_held(&hold, &dir);
    let ckpt = bg.child.id() as i32;
    env.track(w.pid);
    assert_eq!(hold.reached(), ckpt);
    assert!(exists(w.pid), "held before pid {} was made", w.pid);
    assert!(signal(ckpt, libc::SIGTERM));
    let out = env.finish_bg(bg);
    assert_eq!(out.status.code(), Some(1), "ckpt should exit 1: {out}");
    out.failed_naming("interrupted by SIGTERM while rebuilding the process");
    env.assert_gone(w.pid);
}

/// Whether ckpt's log says it moved the task out of an rseq critical section.
fn caught_in_rseq(out: &CkptOutput) -> bool {
    out.stderr.contains("inside an rseq critical section")
}

/// A workload that spends nearly all its time inside an rseq critical section and fails
/// its check if a section ever commits after being resumed in its middle. Dumped with
/// --leave-running (our injected syscalls make the kernel drop the section silently) and
/// then dumped and restored: it must go on through the abort handler each time.
#[test]
fn rseq_critical_section_resumes_at_abort() {
    let env = Env::new();
    let mut w = env.start("rseq");
    let mut caught = 0;
    for i in 0..10 {
        let dir = env.subdir(&format!("lr{i}"));
        let out = env.dump(w.pid, &dir, &["--leave-running", "-v"]).ok();
        caught += caught_in_rseq(&out) as u32;
        if caught >= 3 {
            break;
        }
    }
    // Let it run a few sections on, then let it judge.
    sleep(Duration::from_millis(50));
    env.check(&mut w);
    assert!(
        caught > 0,
        "no dump caught the workload inside its critical section"
    );

    for i in 0..5 {
        let dir = env.subdir(&format!("cycle{i}"));
        let out = env.dump(w.pid, &dir, &["-v"]).ok();
        env.reap_dumped(w.pid);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        sleep(Duration::from_millis(50));
        env.check(&mut w);
        if caught_in_rseq(&out) {
            return;
        }
    }
    panic!("no dump of the cycles caught the workload inside its critical section");
}

/// SIGSTOP sent to the workload while `dump --leave-running` has it seized (ckpt is held
/// there, before its injected syscalls, which used to discard it): after the dump the
/// workload is stopped, as the sender wanted, and untraced; after SIGCONT it passes.
#[test]
fn sigstop_during_dump_is_kept() {
    let env = Env::new();
    let mut w = start_safety(&env, "16");
    for i in 0..2 {
        let dir = env.subdir(&format!("img{i}"));
        let hold = Hold::new(&env, "seized");
        let bg = env.ckpt_bg_held(&hold, &dump_args(w.pid, &dir, &["--leave-running", "-v"]));
        assert_eq!(hold.reached(), bg.child.id() as i32);
        assert!(signal(w.pid, libc::SIGSTOP));
        hold.release();
        let out = env.finish_bg(bg).ok();
        assert!(
            out.stderr
                .contains("SIGSTOP arrived during an injected syscall"),
            "the SIGSTOP did not come during the injected syscalls: {out}"
        );
        wait_until("the workload to stop", || proc_state(w.pid) == Some('T'));
        assert_eq!(status_field(w.pid, "TracerPid").as_deref(), Some("0"));
        assert!(signal(w.pid, libc::SIGCONT));
        wait_until("the workload to run again", || {
            matches!(proc_state(w.pid), Some('R' | 'S'))
        });
        env.check(&mut w);
    }
}

/// A blocked SIGTRAP pending at the thread with its own si_value (and the rest of the
/// workload's signal state) survives --leave-running and two dump/restore cycles: the
/// dump collects it without our traps interfering, and the restore re-queues it where no
/// int3 of the trampoline can take it for its own trap.
#[test]
fn pending_sigtrap_survives() {
    let env = Env::new();
    let mut w = start_safety(&env, "16");
    env.dump(w.pid, &env.subdir("lr"), &["--leave-running"])
        .ok();
    env.check(&mut w);
    for i in 1..=2 {
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(&mut w, &dir);
    }
}

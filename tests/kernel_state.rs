//! Kernel state a restore used to lose silently (issue 12): each piece is restored and
//! checked by the workload itself through three dump/restore cycles, or refused at dump.
//! Restore also verifies the restored process against the image before it lets it run:
//! an image edited so the two cannot match fails the restore, naming the difference.

mod common;

use common::*;
use std::ffi::OsStr;

const CYCLES: usize = 3;

/// Builds and starts the C workload `name` with WORKDIR and `args`, waits for READY.
fn start_with(env: &Env, name: &str, args: &[&str]) -> Workload {
    let bin = workload_bin(name);
    let mut all: Vec<&OsStr> = vec![env.path().as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let w = env.spawn(name, &bin, &all);
    env.wait_ready(&w);
    w
}

/// A check, CYCLES dump/restore cycles each followed by a check, then the corruption
/// control (the workload must notice its state undone).
fn survives(name: &str, args: &[&str]) {
    let env = Env::new();
    let mut w = start_with(&env, name, args);
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
    notices_corruption(&env, &w);
}

/// kstate MODE holds a state ckpt cannot restore: the dump is refused naming `needle`
/// and the pid, writes no image, and the workload runs on untouched.
fn refused(mode: &str, needle: &str) {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &[mode]);
    env.check(&mut w);
    let dir = env.subdir("img");
    let line = env.dump(w.pid, &dir, &[]).failed_naming(needle);
    assert!(mentions_number(&line, w.pid as i64), "{line}");
    assert!(image_files(&dir, "").is_empty(), "{}", listing(&dir));
    assert_running_untraced(w.pid);
    env.check(&mut w);
    notices_corruption(&env, &w);
}

// ------------------------------------------------------------ process-wide state

/// /proc/self/loginuid written by the process (4242) reads 4242 again (the seed writes
/// it for itself; its audit session id is a new one).
#[test]
fn loginuid_survives() {
    survives("kstate", &["loginuid"]);
}

/// MADV_SEQUENTIAL (sr), MADV_RANDOM (rr), MAP_NORESERVE (nr) and MAP_DROPPABLE (dp,
/// without ac) come back on their VMAs.
#[test]
fn vm_flags_sr_rr_nr_dp_survive() {
    survives("kstate", &["vmflags"]);
}

#[test]
fn thp_disable_survives() {
    survives("kstate", &["thp"]);
}

#[test]
fn child_subreaper_survives() {
    survives("kstate", &["subreaper"]);
}

/// GLOBAL_EXPEDITED, PRIVATE_EXPEDITED, _SYNC_CORE and _RSEQ registrations: the barriers
/// still work (EPERM once lost).
#[test]
fn membarrier_registrations_survive() {
    survives("kstate", &["membarrier"]);
}

#[test]
fn timer_slack_survives() {
    survives("kstate", &["timerslack"]);
}

/// CPUID faulting (arch_prctl ARCH_SET_CPUID 0), which record-and-replay tools and
/// sandboxes turn on, comes back in the main thread and in a thread made after it.
#[test]
fn cpuid_faulting_survives() {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    assert!(
        cpuinfo.split_whitespace().any(|w| w == "cpuid_fault"),
        "this CPU cannot fault on CPUID: the test needs one that can"
    );
    survives("kstate", &["cpuid"]);
}

/// The nice value of a session's autogroup (/proc/self/autogroup, 7) comes back on the
/// new autogroup the restored session leader gets.
#[test]
fn autogroup_nice_survives() {
    survives("kstate", &["autogroup"]);
}

/// An fd on a directory removed while open, and a working directory removed while the
/// process was in it, come back as empty removed directories at their old paths, or, in
/// the second cycle, whose names are taken again by then, beside them.
#[test]
fn removed_directories_survive() {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &["rmdir"]);
    env.check(&mut w);
    let taken = [env.path().join("rmd"), env.path().join("cwdgone")];
    env.cycles(&mut w, CYCLES, &[], |i, _| {
        for t in &taken {
            if i == 2 {
                std::fs::create_dir(t).unwrap();
            } else if i == 3 {
                std::fs::remove_dir(t).unwrap();
            }
        }
    });
    notices_corruption(&env, &w);
}

/// The owner of a socket (F_SETOWN, who gets SIGURG) without O_ASYNC comes back: a UDP
/// socket's and a socketpair end's.
#[test]
fn socket_owner_survives() {
    survives("kstate", &["sockown"]);
}

/// The id of the System V segment `pid` has attached (its inode in /proc/PID/maps).
fn attached_segment(pid: i32) -> i32 {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps
        .lines()
        .find(|l| l.contains("/SYSV"))
        .unwrap_or_else(|| panic!("no SysV segment in {maps}"));
    line.split_whitespace().nth(4).unwrap().parse().unwrap()
}

/// Removes a test's System V segment, which outlives its killed process.
struct Segment(i32);

impl Drop for Segment {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ipcrm")
            .args(["-m", &self.0.to_string()])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// kstate hostshm, started and checked, and its segment (removed when dropped).
fn with_host_segment(env: &Env) -> (Workload, Segment) {
    let mut w = start_with(env, "kstate", &["hostshm"]);
    let segment = Segment(attached_segment(w.pid));
    env.check(&mut w);
    (w, segment)
}

/// A System V segment of the host's ipc namespace (a plain process, postgres's kind) is
/// external, like a file: the dump's kill leaves it, and each restore attaches it again
/// by id, with its bytes.
#[test]
fn host_sysv_segment_is_attached_again() {
    let env = Env::new();
    let (mut w, _segment) = with_host_segment(&env);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
    notices_corruption(&env, &w);
}

/// Restored where its segment is gone (removed after the dump): refused naming the
/// segment, with nothing left behind.
#[test]
fn host_sysv_segment_gone_at_restore_is_refused() {
    let env = Env::new();
    let (w, segment) = with_host_segment(&env);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    drop(segment);
    let out = env.restore_detached(&dir);
    let line = out.failed_naming("System V segment");
    assert!(line.contains("not here"), "{line}");
    env.assert_gone(w.pid);
}

/// A segment removed (IPC_RMID) while attached dies with the dump's kill: refused.
#[test]
fn removed_host_sysv_segment_is_refused() {
    refused("shmrmid", "IPC_RMID");
}

/// Removes a test's POSIX message queue of the host's namespace, which outlives its
/// killed process (kstate names it /ckpt-kstate-PID).
struct Queue(String);

impl Queue {
    fn of(pid: i32) -> Queue {
        Queue(format!("/ckpt-kstate-{pid}"))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        let _ = ckpt_sys::mqueue::unlink(self.0.trim_start_matches('/'));
    }
}

/// A POSIX message queue of the host's ipc namespace held open is external, like a file:
/// each restore opens that very queue again by name (same inode), with its messages and
/// the fd's O_NONBLOCK.
#[test]
fn host_message_queue_is_opened_again() {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &["hostmq"]);
    let _queue = Queue::of(w.pid);
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |_, _| {});
    notices_corruption(&env, &w);
}

/// Restored where its queue was removed and made again under the same name after the
/// dump: another queue, refused naming it, nothing left behind.
#[test]
fn host_message_queue_made_again_is_refused() {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &["hostmq"]);
    let queue = Queue::of(w.pid);
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let name = queue.0.trim_start_matches('/');
    ckpt_sys::mqueue::unlink(name).unwrap();
    let again = ckpt_sys::mqueue::MqInfo {
        name: name.to_string(),
        mode: 0o600,
        maxmsg: 4,
        msgsize: 32,
        ..Default::default()
    };
    ckpt_sys::mqueue::create(&again, &[]).unwrap();
    let out = env.restore_detached(&dir);
    let line = out.failed_naming(&queue.0);
    assert!(line.contains("made again"), "{line}");
    env.assert_gone(w.pid);
}

/// A queue the process asked to be notified by (mq_notify) is refused by name: the
/// registration ends with the killed process.
#[test]
fn message_queue_notification_is_refused() {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &["mqnotify"]);
    let _queue = Queue::of(w.pid);
    env.check(&mut w);
    let dir = env.subdir("img");
    let line = env.dump(w.pid, &dir, &[]).failed_naming("mq_notify");
    assert!(mentions_number(&line, w.pid as i64), "{line}");
    assert!(image_files(&dir, "").is_empty(), "{}", listing(&dir));
    assert_running_untraced(w.pid);
    env.check(&mut w);
}

/// A file whose filesystem was unmounted lazily (umount -l) while open: its /proc path
/// ("/f") names another file, or none: refused by name, not reopened by that path.
#[test]
fn file_on_a_lazily_unmounted_filesystem_is_refused() {
    refused("lazyumount", "umount -l");
}

/// A process keyring (keys the process made for itself) is refused by name.
#[test]
fn process_keyring_is_refused() {
    refused("keyring", "process keyring");
}

/// A local descriptor table (modify_ldt) is refused by name.
#[test]
fn local_descriptor_table_is_refused() {
    refused("ldt", "local descriptor table");
}

/// A prctl state restore cannot give back (PR_SET_PDEATHSIG: the restored process has
/// another parent) is refused at dump, naming it; the workload runs on untouched.
/// /proc/self/coredump_filter (0x7b, not the default 0x33) comes back (written from
/// outside before release).
#[test]
fn coredump_filter_survives() {
    survives("kstate", &["coredump"]);
}

/// A process chrooted into a directory of its workdir, working in a subdirectory of it,
/// its executable and libraries mapped from outside its root: the root, the working
/// directory and its mappings come back.
#[test]
fn chroot_survives() {
    survives("kstate", &["chroot"]);
}

/// The I/O priority (ioprio_set: best effort, level 5) comes back.
#[test]
fn io_priority_survives() {
    survives("kstate", &["ioprio"]);
}

/// A NUMA policy of the process (set_mempolicy) is not restored: refused by name.
#[test]
fn numa_policy_of_the_process_is_refused() {
    refused("mempolicy", "set_mempolicy");
}

/// A NUMA policy of one mapping (mbind) is not restored: refused by name.
#[test]
fn numa_policy_of_a_mapping_is_refused() {
    refused("mbind", "mbind");
}

/// A single-threaded process that had a thread keeps its private futex hash (the kernel
/// made it for the thread; it was refused before).
#[test]
fn private_futex_hash_survives() {
    survives("kstate", &["futexhash"]);
}

/// An O_TMPFILE file (never linked) is refused by name (its flags cannot be given back).
#[test]
fn o_tmpfile_is_refused() {
    refused("tmpfile", "O_TMPFILE");
}

/// SCHED_DEADLINE (its runtime and period need admission at restore) is refused by name.
#[test]
fn deadline_scheduling_is_refused() {
    refused("deadline", "SCHED_DEADLINE");
}

/// A root's parent death signal (PR_SET_PDEATHSIG) is recorded; the root keeps it only
/// when restored as ckpt's sibling (tests/criu_dropin.rs, LXC's init in tests/lxc.rs): a
/// plain restore, which would make it ckpt's child, is refused naming it and the pid,
/// with nothing created.
#[test]
fn parent_death_signal_of_the_root_is_refused_at_a_plain_restore() {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &["pdeathsig"]);
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let line = env.restore_detached(&dir).failed_naming("PR_SET_PDEATHSIG");
    assert!(mentions_number(&line, w.pid as i64), "{line}");
    assert!(line.contains("sibling"), "{line}");
    env.assert_gone(w.pid);
}

// ------------------------------------------------------------ locks and leases

#[test]
fn flock_shared_survives() {
    survives("locks", &["flock_sh"]);
}

#[test]
fn flock_exclusive_survives() {
    survives("locks", &["flock_ex"]);
}

#[test]
fn posix_record_locks_survive() {
    survives("locks", &["posix"]);
}

#[test]
fn ofd_locks_survive() {
    survives("locks", &["ofd"]);
}

#[test]
fn read_lease_survives() {
    survives("locks", &["lease_rd"]);
}

#[test]
fn write_lease_survives() {
    survives("locks", &["lease_wr"]);
}

// ------------------------------------------------------------ POSIX timers

/// Memory-deny-write-execute (PR_SET_MDWE) has no restore: refused at dump, naming it.
/// Such a process cannot get ckpt's executable scratch area either, so this also runs
/// the injected queries one by one instead of as a batch.
#[test]
fn memory_deny_write_execute_is_refused() {
    refused("mdwe", "PR_SET_MDWE");
}

/// A flock held through a description only a mapping keeps (flock, mmap, close: the
/// JVM's hsperfdata file) is taken again on the description restore maps the file from.
#[test]
fn flock_held_through_a_mapping_survives() {
    survives("locks", &["flock_mapped"]);
}

/// Timers under their ids (3-6, after three deleted ones), with their clocks,
/// notifications (process- and thread-directed, none) and remaining times.
#[test]
fn posix_timers_survive() {
    survives("ptimers", &[]);
}

/// A timer on the CPU clock of another process cannot be pointed at it again: refused
/// at dump, naming the timer, and the workload runs on.
#[test]
fn timer_on_another_process_clock_is_refused() {
    let env = Env::new();
    let mut w = start_with(&env, "ptimers", &["foreign"]);
    env.check(&mut w);
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming("POSIX timer 7");
    assert!(mentions_number(&line, w.pid as i64), "{line}");
    assert!(image_files(&dir, "").is_empty(), "{}", listing(&dir));
    assert_running_untraced(w.pid);
    env.check(&mut w);
    notices_corruption(&env, &w);
}

// ------------------------------------------------------------ self-verification

/// An image whose VMA lost its MADV_SEQUENTIAL advice but still says VmFlags "sr": the
/// restore cannot match it, so it fails naming the VMA and the flag, and no process is
/// left; with --no-verify the same image restores and the workload itself finds the
/// loss (what a silent restore would have been).
#[test]
fn verification_catches_a_difference() {
    let env = Env::new();
    let mut w = start_with(&env, "kstate", &["vmflags"]);
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let mut edited = None;
    edit_mm(&dir, w.pid, |_, vmas| {
        let v = vmas
            .iter_mut()
            .find(|v| v.madvise.contains(&2))
            .expect("a VMA with MADV_SEQUENTIAL");
        v.madvise.retain(|&a| a != 2);
        assert!(v.vm_flags.contains("sr"), "{}", v.vm_flags);
        edited = Some(v.start);
    });
    let start = edited.unwrap();
    let out = env.restore_detached(&dir);
    let line = out.failed_naming("differs from the image");
    assert!(
        line.contains(&format!("{start:#x}")) && line.contains("\"sr\""),
        "should name the VMA at {start:#x} and its lost flag sr: {line}"
    );
    env.assert_gone(w.pid);

    env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
        OsStr::new("--no-verify"),
    ])
    .ok();
    env.track(w.pid);
    assert!(signal(w.pid, libc::SIGUSR1));
    let fail = env.wait_line(&w, "its FAIL line", |l| {
        l.starts_with("FAIL ") || l.starts_with("PASS 2")
    });
    assert!(
        fail.contains("sr"),
        "the workload should find sr lost: {fail}"
    );
    env.kill_and_reap(w.pid);
}

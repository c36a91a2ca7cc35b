//! State that is recorded at dump and must come back exactly: the capability state
//! beyond E/P/I (bounding set, ambient set, securebits), fds above ckpt's own soft
//! RLIMIT_NOFILE, character devices (stateless ones restore, stateful ones are refused),
//! shared memory seen through several VMAs, locked memory, and dumpable 2.

mod common;

use ckpt_images::pb;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const CYCLES: usize = 2;

/// Builds and starts the C workload `name` with WORKDIR and `args`, waits for READY.
fn start_with(env: &Env, name: &str, args: &[&str]) -> Workload {
    let bin = workload_bin(name);
    let mut all: Vec<&OsStr> = vec![env.path().as_os_str()];
    all.extend(args.iter().map(OsStr::new));
    let w = env.spawn(name, &bin, &all);
    env.wait_ready(&w);
    w
}

/// Checks, then CYCLES dump/restore cycles each followed by a check, then the
/// corruption control.
fn cycles(env: &Env, w: &mut Workload) {
    env.check(w);
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(w, &dir);
    }
    notices_corruption(env, w);
}

// ------------------------------------------------------------------ capabilities

/// Root that only dropped bounding caps and set securebits: its E/P/I equal ckpt's, so
/// this also catches a "same credentials, nothing to do" shortcut that ignores them.
#[test]
fn caps_root_bounding_and_securebits() {
    let env = Env::new();
    let mut w = start_with(&env, "caps", &["root"]);
    // The setup took effect (CAP_MKNOD, bit 27, is out of the bounding set).
    let bnd = status_field(w.pid, "CapBnd").expect("CapBnd");
    assert_eq!(
        u64::from_str_radix(&bnd, 16).unwrap() & (1 << 27),
        0,
        "{bnd}"
    );
    cycles(&env, &mut w);
}

/// uid 1000 with an ambient cap, a dropped bounding set and locked securebits
/// (NO_CAP_AMBIENT_RAISE among them, which the restore must set after the ambient raise).
#[test]
fn caps_user_ambient_bounding_and_securebits() {
    let env = Env::new();
    let mut w = start_with(&env, "caps", &["user"]);
    env.share_output(&w);
    env.check(&mut w);
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.cycle(&mut w, &dir);
        assert_eq!(
            status_field(w.pid, "CapAmb").as_deref(),
            Some("0000000000000400"),
            "cycle {i}"
        );
    }
    notices_corruption(&env, &w);
}

// ------------------------------------------------------------------ RLIMIT_NOFILE

/// `ckpt restore -D DIR -d`, run by `sh -c 'ULIMIT; exec ckpt ...'`: ckpt starts with
/// the limits the ulimit commands set.
fn restore_under_ulimit(env: &Env, dir: &Path, ulimit: &str) -> CkptOutput {
    let script = format!("{ulimit} && exec \"$0\" restore -D \"$1\" -d");
    env.ckpt_sh(&script, &[dir.as_os_str()]).1
}

/// The workload holds fd 4000; ckpt restores it with a soft RLIMIT_NOFILE of 1024 (it
/// raises its soft limit for the seed), and the process gets its own limits back.
#[test]
fn high_fd_restores_under_low_soft_nofile() {
    let env = Env::new();
    let mut w = start_with(&env, "devices", &[]);
    env.check(&mut w);
    let limits = fs::read_to_string(format!("/proc/{}/limits", w.pid)).unwrap();
    let nofile = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("Max open files"))
            .map(str::to_string)
    };
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        let out = restore_under_ulimit(&env, &dir, "ulimit -Sn 1024");
        assert!(out.success(), "restore under ulimit -Sn 1024: {out}");
        env.track(w.pid);
        assert_running_untraced(w.pid);
        env.check(&mut w);
        let now = fs::read_to_string(format!("/proc/{}/limits", w.pid)).unwrap();
        assert_eq!(nofile(&now), nofile(&limits), "cycle {i}");
    }
    notices_corruption(&env, &w);
}

/// With a hard limit too low for fd 4000, the restore fails with one clear line naming
/// the limit, and leaves no process behind.
#[test]
fn high_fd_under_low_hard_nofile_fails_clearly() {
    let env = Env::new();
    let w = start_with(&env, "devices", &[]);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let out = restore_under_ulimit(&env, &dir, "ulimit -n 1024");
    let line = out.failed_naming("RLIMIT_NOFILE");
    assert!(
        line.contains("4000") && line.contains("1024"),
        "should name fd 4000 and the hard limit 1024: {line}"
    );
    env.assert_gone(w.pid);
}

// ------------------------------------------------------------------ character devices

/// /dev/urandom, /dev/null, /dev/full and /dev/random come back: same device, flags and
/// close-on-exec flag, and they work.
#[test]
fn stateless_devices_restore() {
    let env = Env::new();
    let mut w = start_with(&env, "devices", &[]);
    cycles(&env, &mut w);
}

/// A pty master held alone (its slave unopened) comes back with the same /dev/pts
/// number (TIOCGPTN), flags and fd through the cycles (terminals.rs has a whole tmux).
#[test]
fn pty_master_keeps_its_number_three_cycles() {
    let env = Env::new();
    let mut w = start_with(&env, "devices", &["ptmx"]);
    cycles(&env, &mut w);
}

// ------------------------------------------------------------------ shared memory

/// A MAP_SHARED|MAP_ANONYMOUS region split into 3 VMAs by mprotect, and a memfd mapped
/// twice: after a restore each is still one object (same inode through map_files, writes
/// through one mapping seen through the other).
#[test]
fn shared_memory_objects_stay_shared() {
    let env = Env::new();
    let mut w = start_with(&env, "shm", &[]);
    cycles(&env, &mut w);
}

// ------------------------------------------------------------------ locked memory

/// mlock()ed memory comes back locked and resident, MLOCK_ONFAULT memory locked with only
/// its touched pages resident; VmLck as before.
#[test]
fn locked_memory_stays_locked() {
    let env = Env::new();
    let mut w = start_with(&env, "mlock", &[]);
    cycles(&env, &mut w);
}

/// mlockall(MCL_FUTURE) leaves no trace in the current mappings; after a restore new
/// mappings are still locked.
#[test]
fn mlockall_future_survives() {
    let env = Env::new();
    let mut w = start_with(&env, "mlock", &["future"]);
    cycles(&env, &mut w);
}

/// `restore --lazy` cannot lock memory whose pages the pager has not served yet: it is
/// refused with one line naming the VMA, and nothing is left behind.
#[test]
fn lazy_restore_of_locked_memory_is_refused() {
    let env = Env::new();
    let w = start_with(&env, "mlock", &[]);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let out = env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
        OsStr::new("--lazy"),
    ]);
    out.failed_naming("mlocked");
    env.assert_gone(w.pid);
}

// ------------------------------------------------------------------ dumpable 2

/// Puts fs.suid_dumpable back as it was when dropped.
struct SuidDumpable(String);

const SUID_DUMPABLE: &str = "/proc/sys/fs/suid_dumpable";

impl Drop for SuidDumpable {
    fn drop(&mut self) {
        let _ = fs::write(SUID_DUMPABLE, &self.0);
    }
}

/// A process with dumpable 2 (the kernel's SUID_DUMP_ROOT, which prctl cannot set)
/// restores, with a value that keeps its protection. fs.suid_dumpable is 2 only while
/// the workload sets up (a few ms; it is global, so as short as possible).
#[test]
fn dumpable_2_restores() {
    let env = Env::new();
    workload_bin("dumpable"); // built before the window, not in it
    let mut w = {
        let old = fs::read_to_string(SUID_DUMPABLE).expect("read fs.suid_dumpable");
        let _back = SuidDumpable(old.trim().to_string());
        fs::write(SUID_DUMPABLE, "2").expect("set fs.suid_dumpable to 2");
        start_with(&env, "dumpable", &[])
    };
    assert_eq!(status_field(w.pid, "Uid").as_deref(), Some("0\t0\t0\t0"));
    cycles(&env, &mut w);
}

// ------------------------------------------------------------------ the image's files

/// How long a restore that must be refused may take: a seed stuck in open(2) on a FIFO
/// would otherwise keep ckpt waiting for ever.
const REFUSAL_LIMIT: Duration = Duration::from_secs(20);

/// Dumps `w` into `<tmp>/img` (killing it) and keeps an untouched copy in `<tmp>/good`.
fn dumped_with_copy(env: &Env, w: &Workload) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let good = env.path().join("good");
    copy_dir(&dir, &good);
    (dir, good)
}

/// `restore -D dir -d`, expected to be refused, within REFUSAL_LIMIT. The dumped pid is
/// tracked first: whatever holds it afterwards (a seed stuck in open, a process that
/// should not exist) is killed when the test ends.
fn restore_refused_in_time(env: &Env, dir: &Path, pid: i32, naming: &str) -> String {
    env.track(pid);
    let mut bg = env.ckpt_bg(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
    ]);
    if wait_child(&mut bg.child, REFUSAL_LIMIT).is_none() {
        let state = proc_state(pid);
        let wchan = fs::read_to_string(format!("/proc/{pid}/wchan")).ok();
        // ckpt first: its seed then comes to us (the subreaper) to be reaped.
        let ckpt = bg.child.id() as i32;
        let _ = bg.child.kill();
        let _ = bg.child.wait();
        env.untrack(ckpt);
        signal(pid, libc::SIGKILL);
        if reap(pid, Duration::from_secs(5)).is_some_and(|st| st != -1) {
            env.untrack(pid);
        }
        panic!(
            "restore from {} still running after {REFUSAL_LIMIT:?}: pid {pid} was in \
             state {state:?}, wchan {wchan:?}",
            dir.display()
        );
    }
    let out = env.finish_bg(bg);
    let line = out.failed_naming(naming);
    env.assert_gone(pid);
    line
}

/// Points fd `fd` of the image at `path` as `kind`, with `flags` and device `rdev`.
fn repoint_fd(dir: &Path, pid: i32, fd: i32, kind: pb::FdKind, path: &Path, flags: i32, rdev: u64) {
    edit_fds(dir, pid, |fds| {
        let f = fds
            .iter_mut()
            .find(|f| f.fd == fd && !f.is_dup)
            .unwrap_or_else(|| panic!("no fd {fd} of its own in the image"));
        f.kind = kind as i32;
        f.path = path.to_string_lossy().into_owned();
        f.flags = flags as u32;
        f.rdev = rdev;
        f.pos = 0;
    });
}

fn mkfifo(at: &Path) {
    let st = Command::new("mkfifo").arg(at).status().expect("run mkfifo");
    assert!(st.success(), "mkfifo {}", at.display());
}

/// An image that calls /dev/ptmx a regular file for fd 0 is refused: the seed checks the
/// file type before it opens anything, so no pty is ever created for the process.
#[test]
fn device_recorded_as_regular_file_is_refused() {
    let env = Env::new();
    let mut w = env.start("sig");
    let (dir, good) = dumped_with_copy(&env, &w);
    let ptmx = Path::new("/dev/ptmx");
    repoint_fd(&dir, w.pid, 0, pb::FdKind::FdRegular, ptmx, libc::O_RDWR, 0);
    let line = restore_refused_in_time(&env, &dir, w.pid, "/dev/ptmx");
    assert!(
        line.contains("fd 0") && line.contains("character device 5:2"),
        "should name fd 0 and what /dev/ptmx really is: {line}"
    );
    good_copy_restores(&env, &mut w, &good);
}

/// A uid-65534 process whose image names a root-only file for fd 0 (read-write) is
/// refused: restore opens the process's files as the process (fsuid, fsgid, groups), so
/// it gets nothing its own open(2) would not. Its untouched image still restores.
#[test]
fn file_the_process_could_not_open_is_refused() {
    let env = Env::new();
    let mut w = start_with(&env, "nobody", &[]);
    env.share_output(&w);
    env.check(&mut w);
    let secret = env.path().join("secret");
    fs::write(&secret, "root only\n").unwrap();
    fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (dir, good) = dumped_with_copy(&env, &w);
    repoint_fd(
        &dir,
        w.pid,
        0,
        pb::FdKind::FdRegular,
        &secret,
        libc::O_RDWR,
        0,
    );
    let line = restore_refused_in_time(&env, &dir, w.pid, &secret.to_string_lossy());
    assert!(
        line.contains("uid 65534") && line.contains("EACCES"),
        "should say uid 65534 may not open it: {line}"
    );
    good_copy_restores(&env, &mut w, &good);
}

/// fd 0 recorded as /dev/null (1:3, on the allow-list) but the path is a FIFO: refused
/// at once. A plain open(2) of the FIFO would wait for a writer for ever, with the seed
/// holding the pid.
#[test]
fn fifo_recorded_as_device_is_refused_without_hanging() {
    let env = Env::new();
    let mut w = env.start("sig");
    let (dir, good) = dumped_with_copy(&env, &w);
    let fifo = env.path().join("not-a-device");
    mkfifo(&fifo);
    let null = libc::makedev(1, 3);
    repoint_fd(
        &dir,
        w.pid,
        0,
        pb::FdKind::FdChardev,
        &fifo,
        libc::O_RDONLY,
        null,
    );
    let line = restore_refused_in_time(&env, &dir, w.pid, &fifo.to_string_lossy());
    assert!(
        line.contains("a FIFO"),
        "should say what the path is: {line}"
    );
    good_copy_restores(&env, &mut w, &good);
}

/// The executable is checked the same way: an image whose exe is a FIFO is refused at
/// once instead of blocking the seed in open(2).
#[test]
fn fifo_recorded_as_executable_is_refused_without_hanging() {
    let env = Env::new();
    let mut w = env.start("sig");
    let (dir, good) = dumped_with_copy(&env, &w);
    let fifo = env.path().join("not-a-program");
    mkfifo(&fifo);
    edit_mm(&dir, w.pid, |mm, _| {
        mm.exe_path = fifo.to_string_lossy().into_owned()
    });
    let line = restore_refused_in_time(&env, &dir, w.pid, &fifo.to_string_lossy());
    assert!(
        line.contains("executable"),
        "should name the executable: {line}"
    );
    good_copy_restores(&env, &mut w, &good);
}

// ------------------------------------------------------------------ locked memory, as the process

/// A uid-65534 process that locked 4 MiB as root and now has an 8 MiB RLIMIT_MEMLOCK:
/// locked within its own limit, it comes back locked (the mlock runs as the process).
#[test]
fn locked_memory_within_the_process_limit_restores() {
    let env = Env::new();
    let mut w = start_with(&env, "nobody", &["4"]);
    env.share_output(&w);
    cycles(&env, &mut w);
}

/// The same process holding 64 MiB locked under its 8 MiB limit: ckpt (root, with
/// CAP_IPC_LOCK) must not lock for it what it could not lock itself. The restore fails
/// with one line naming the mlock, and leaves nothing behind.
#[test]
fn locked_memory_beyond_the_process_limit_is_refused() {
    let env = Env::new();
    let mut w = start_with(&env, "nobody", &["64"]);
    env.share_output(&w);
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let line = restore_refused_in_time(&env, &dir, w.pid, "mlock2");
    assert!(line.contains("ENOMEM"), "{line}");
}

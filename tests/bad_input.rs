//! Bad input: every case must fail with a non-zero exit and one line on stderr that
//! names the culprit (pid, path or file), and must not hurt anything: a workload
//! whose dump failed is still running, untraced, not stopped, and still passes its
//! own check; a failed restore leaves no process with the dumped pid behind.

mod common;

use common::*;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workload whose dump failed is unharmed.
fn assert_untouched(env: &Env, w: &mut Workload) {
    assert_running_untraced(w.pid);
    env.check(w);
    assert_running_untraced(w.pid);
}

// ------------------------------------------------------------------------ dump

#[test]
fn dump_nonexistent_pid() {
    let env = Env::new();
    let pid = unused_pid();
    let dir = env.subdir("img");
    let out = env.dump(pid, &dir, &[]);
    let line = out.failed_naming(&pid.to_string());
    assert!(mentions_number(&line, pid as i64), "{out}");
}

#[test]
fn dump_kernel_thread() {
    let env = Env::new();
    // pid 2 is kthreadd
    let comm = fs::read_to_string("/proc/2/comm").unwrap_or_default();
    assert_eq!(comm.trim(), "kthreadd", "pid 2 is not kthreadd here");
    let dir = env.subdir("img");
    let out = env.dump(2, &dir, &[]);
    let line = out.failed_naming("2");
    assert!(
        mentions_number(&line, 2),
        "stderr does not name pid 2: {out}"
    );
    assert_eq!(status_field(2, "TracerPid").as_deref(), Some("0"));
    assert!(
        !matches!(proc_state(2), Some('T' | 't')),
        "kthreadd left stopped"
    );
}

/// ckpt asked to dump its own process (`sh -c 'exec ckpt dump -t $$ ...'`).
#[test]
fn dump_self() {
    let env = Env::new();
    let dir = env.subdir("img");
    let (pid, out) = env.ckpt_sh("exec \"$0\" dump -t $$ -D \"$1\"", &[dir.as_os_str()]);
    let line = out.failed_naming(&pid.to_string());
    assert!(mentions_number(&line, pid as i64), "{out}");
}

/// -D is a path through a regular file: no directory can be made there.
#[test]
fn dump_into_path_under_regular_file() {
    let env = Env::new();
    let mut w = env.start("sig");
    let file = env.path().join("plainfile");
    fs::write(&file, b"not a directory").unwrap();
    let dir = file.join("img");
    let out = env.dump(w.pid, &dir, &[]);
    out.failed_naming(&file.to_string_lossy());
    assert_untouched(&env, &mut w);
    assert_eq!(fs::read(&file).unwrap(), b"not a directory");
}

/// -D is on a read-only filesystem.
#[test]
fn dump_into_readonly_mount() {
    let env = Env::new();
    let mut w = env.start("sig");
    let mnt = env.path().join("ro");
    env.mount_tmpfs(&mnt, "ro,size=1m,mode=0700");
    let dir = mnt.join("img");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming(&dir.to_string_lossy());
    assert!(line.contains("Read-only file system"), "{out}");
    assert_untouched(&env, &mut w);
}

/// -D is a mount point: the new image is written beside it and renamed into place, which
/// cannot cross filesystems, so this is refused up front, saying why.
#[test]
fn dump_into_mount_point_refused() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.path().join("mnt");
    env.mount_tmpfs(&dir, "size=16m,mode=0700");
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming(&dir.to_string_lossy());
    assert!(line.contains("mount point"), "{out}");
    assert_untouched(&env, &mut w);
    assert_eq!(listing(&dir), "", "the refused dump wrote into the mount");
}

/// -D is on a filesystem too small for the images (1 MiB tmpfs, ~7.5 MiB of memory).
#[test]
fn dump_onto_full_filesystem() {
    let env = Env::new();
    let mut w = env.start("mem");
    let mnt = env.path().join("full");
    env.mount_tmpfs(&mnt, "size=1m,mode=0700");
    let dir = mnt.join("img");
    let out = env.dump(w.pid, &dir, &[]);
    out.failed_naming(&dir.to_string_lossy());
    assert_untouched(&env, &mut w);
    // Neither the staged files nor the directory the dump made are left behind.
    assert_eq!(listing(&mnt), "", "the failed dump left files behind");
    // and a dump to a good place still works afterwards
    let good = env.subdir("img");
    env.cycle(&mut w, &good);
}

/// A dump that fails (here: out of space) into a directory holding a good image leaves
/// that image as it was: it still restores, and the workload passes its check.
#[test]
fn failed_redump_keeps_the_good_image() {
    let env = Env::new();
    let mut good = env.start("sig");
    env.check(&mut good);
    let mnt = env.path().join("small");
    env.mount_tmpfs(&mnt, "size=3m,mode=0700");
    let dir = mnt.join("img");
    env.dump(good.pid, &dir, &[]).ok();
    env.reap_dumped(good.pid);
    let before = listing(&dir);
    // ~7.5 MiB of memory does not fit in what is left of 3 MiB.
    let mut big = env.start("mem");
    let out = env.dump(big.pid, &dir, &[]);
    out.failed_naming("No space left on device");
    assert_untouched(&env, &mut big);
    assert_eq!(
        listing(&dir),
        before,
        "the failed dump changed the old image"
    );
    let names: Vec<_> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        names,
        ["img"],
        "the failed dump left its staging directory behind"
    );
    env.restore_detached(&dir).ok();
    env.track(good.pid);
    assert_running_untraced(good.pid);
    env.check(&mut good);
}

/// `ckpt dump -t pid -D dir [extra]` under strace: the calls that make files durable or
/// move them away, one per line, in order (fds shown with their paths).
fn traced_dump(env: &Env, pid: i32, dir: &Path, extra: &[&str]) -> Vec<String> {
    let log = env.path().join(format!("strace-{}.log", file_name(dir)));
    let out = Command::new(which("strace"))
        .args(["-f", "-qq", "-y", "-e", "signal=none", "-o"])
        .arg(&log)
        .args([
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,unlink,unlinkat",
        ])
        .arg(CKPT)
        .args(["dump", "-t", &pid.to_string(), "-D"])
        .arg(dir)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "traced dump failed: {out:?}");
    env.reap_dumped(pid);
    let log = fs::read_to_string(&log).unwrap();
    log.lines().map(str::to_owned).collect()
}

/// Index in `log` of each file of the staging directory synced (fsync or fdatasync), by
/// file name.
fn synced_files(log: &[String]) -> Vec<(usize, String)> {
    log.iter()
        .enumerate()
        .filter(|(_, l)| l.contains("sync(") && l.contains(".ckpt-new-") && l.contains(".img>"))
        .map(|(i, l)| {
            let path = &l[..l.rfind(".img>").unwrap() + 4];
            (i, path[path.rfind('/').unwrap() + 1..].to_owned())
        })
        .collect()
}

/// Names of the files in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Never lose the last good image: a dump that replaces one syncs every new file before
/// the old image is renamed aside and removed; a first dump into an empty directory leaves
/// the data to writeback (only the inventory is synced), unless `--sync` asks. The
/// workload restored from each image passes its check.
#[test]
fn redump_makes_the_new_image_durable_before_the_old_goes() {
    let env = Env::new();
    let mut w = env.start("sig");
    env.check(&mut w);
    let dir = env.subdir("img");
    let first = traced_dump(&env, w.pid, &dir, &[]);
    let synced: Vec<String> = synced_files(&first).into_iter().map(|(_, n)| n).collect();
    assert_eq!(synced, ["inventory.img"], "first dump: {first:#?}");
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    env.check(&mut w);

    let second = traced_dump(&env, w.pid, &dir, &[]);
    let synced = synced_files(&second);
    let mut names: Vec<String> = synced.iter().map(|(_, n)| n.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names,
        names_in(&dir),
        "not every new file was synced: {second:#?}"
    );
    let aside = second
        .iter()
        .position(|l| l.contains("rename") && l.contains(".ckpt-old-"))
        .unwrap_or_else(|| panic!("old image not renamed aside: {second:#?}"));
    let removed = second
        .iter()
        .position(|l| l.contains("unlink") && l.contains(".ckpt-old-"))
        .unwrap_or_else(|| panic!("old image not removed: {second:#?}"));
    let parent = format!("<{}>", env.path().display());
    let renames_synced = second
        .iter()
        .position(|l| l.contains("fsync(") && l.contains(&parent))
        .unwrap_or_else(|| panic!("the renames were not synced: {second:#?}"));
    let last_sync = synced.iter().map(|(i, _)| *i).max().unwrap();
    assert!(
        last_sync < aside && aside < renames_synced && renames_synced < removed,
        "the old image went before the new one was durable: {second:#?}"
    );
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    env.check(&mut w);

    let fresh = env.path().join("img-sync");
    let third = traced_dump(&env, w.pid, &fresh, &["--sync"]);
    let mut names: Vec<String> = synced_files(&third).into_iter().map(|(_, n)| n).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, names_in(&fresh), "--sync: {third:#?}");
    env.restore_detached(&fresh).ok();
    env.track(w.pid);
    env.check(&mut w);
}

/// A 0700 directory of ours beside `dir`, named as a dump names its staging (`new`) or
/// renamed-aside (`old`) directory, holding a copy of the image in `from` if given.
fn leftover(dir: &Path, tag: &str, pid: i32, from: Option<&Path>, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let name = format!("{}.ckpt-{tag}-{pid}-0", file_name(dir));
    let p = dir.with_file_name(name);
    match from {
        Some(from) => copy_dir(from, &p),
        None => {
            fs::create_dir(&p).unwrap();
            fs::write(p.join("pages-1.img"), b"half written").unwrap();
        }
    }
    fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// What a SIGKILLed dump leaves beside the image directory (its staging directory, an old
/// image renamed aside) is removed by the next dump into it, once the pid in its name is
/// gone; the leftovers of a live pid (this test's own: a dump still running) stay, and so
/// does a directory that is not 0700 (a dump never makes one).
#[test]
fn dump_removes_leftovers_of_killed_dumps() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.subdir("img");
    env.cycle(&mut w, &dir);
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id() as i32;
    child.wait().unwrap();
    let staged = leftover(&dir, "new", dead, None, 0o700);
    let aside = leftover(&dir, "old", dead, Some(&dir), 0o700);
    let odd_mode = dir.with_file_name(format!("img.ckpt-new-{dead}-1"));
    fs::create_dir(&odd_mode).unwrap();
    fs::set_permissions(
        &odd_mode,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let live = leftover(&dir, "new", std::process::id() as i32, None, 0o700);
    env.cycle(&mut w, &dir);
    assert!(!staged.exists(), "stale staging directory left: {staged:?}");
    assert!(!aside.exists(), "stale old image left: {aside:?}");
    assert!(
        odd_mode.exists(),
        "a directory not made by a dump was removed"
    );
    assert_eq!(
        listing(&live),
        "pages-1.img (12 B)",
        "a live dump's staging was touched"
    );

    // Killed between its two renames, a dump leaves no image directory, the old image
    // aside and the new one staged: both may be the only good image, and stay.
    let gone = env.path().join("img2");
    let aside = leftover(&gone, "old", dead, Some(&dir), 0o700);
    let sealed = leftover(&gone, "new", dead, Some(&dir), 0o700);
    env.cycle(&mut w, &gone);
    assert!(aside.join("inventory.img").exists() && sealed.join("inventory.img").exists());
}

/// While a restore reads an image directory (a foreground restore holds it until its
/// process exits), a dump into it is refused at once, naming the directory, and leaves
/// its workload untouched; `show` (another reader) still works. Once the restore is
/// done, the dump replaces the old image with its own.
#[test]
fn dump_refused_while_a_restore_holds_the_dir() {
    let env = Env::new();
    let mut first = env.start("sig");
    let dir = env.subdir("img");
    env.dump(first.pid, &dir, &[]).ok();
    env.reap_dumped(first.pid);
    let mut bg = env.ckpt_bg(&[OsStr::new("restore"), OsStr::new("-D"), dir.as_os_str()]);
    env.track(first.pid);
    env.wait_restored(&first, Some(&mut bg));

    // Another sig, with an output file of its own.
    let mut second = env.spawn("sig-2", &workload_bin("sig"), &[env.path().as_os_str()]);
    env.wait_ready(&second);
    let out = env.dump(second.pid, &dir, &[]);
    let line = out.failed_naming(&dir.to_string_lossy());
    assert!(line.contains("in use by another ckpt"), "{out}");
    assert_untouched(&env, &mut second);
    env.ckpt(&[OsStr::new("show"), OsStr::new("-D"), dir.as_os_str()])
        .ok();

    // SIGUSR2: the restored workload checks itself and exits 0; the restore returns.
    env.check(&mut first);
    assert!(signal(first.pid, libc::SIGUSR2));
    let done = env.finish_bg(bg);
    env.untrack(first.pid);
    assert_eq!(done.status.code(), Some(0), "{done}");
    env.cycle(&mut second, &dir);
    assert!(
        image_files(&dir, &format!("core-{}.", first.pid)).is_empty(),
        "the old image was not replaced: {}",
        listing(&dir)
    );
}

/// While a dump writes an image directory (here: its lock is taken by the test itself,
/// exactly as a dump takes it), a restore from it is refused before any process is made.
#[test]
fn restore_refused_while_a_dump_holds_the_dir() {
    let env = Env::new();
    let (pid, dir) = dumped(&env);
    let held = fs::File::open(&dir).unwrap();
    held.try_lock().unwrap();
    let out = restore(&env, &dir, Some(pid));
    let line = out.failed_naming(&dir.to_string_lossy());
    assert!(line.contains("in use by another ckpt"), "{out}");
    env.assert_gone(pid);
    drop(held);
    restore(&env, &dir, Some(pid)).ok();
}

/// An image directory owned by another user (uid 1000 here; the test runs as root) is
/// refused by dump, naming the directory and its owner: that user could have planted or
/// could change what is in it. Nothing is written and the workload is untouched.
#[test]
fn dump_into_dir_of_another_user_refused() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.subdir("img");
    std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
    let out = env.dump(w.pid, &dir, &[]);
    let line = out.failed_naming(&dir.to_string_lossy());
    assert!(line.contains("owned by uid 1000"), "{out}");
    assert_untouched(&env, &mut w);
    assert_eq!(
        listing(&dir),
        "",
        "the refused dump wrote into the directory"
    );
    let staged: Vec<_> = fs::read_dir(env.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("img."))
        .collect();
    assert!(staged.is_empty(), "left beside the directory: {staged:?}");
}

// --------------------------------------------------------------------- restore

/// Dumps a fresh `sig` workload into `<tmp>/img`, reaps it; returns (pid, dir).
fn dumped(env: &Env) -> (i32, PathBuf) {
    let w = env.start("sig");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    (w.pid, dir)
}

/// `restore -D dir -d`, expected to fail; if it succeeds anyway, the process it made
/// (with the dumped `pid`) is handed to the cleanup.
fn restore(env: &Env, dir: &Path, pid: Option<i32>) -> CkptOutput {
    let out = env.ckpt(&[
        OsStr::new("restore"),
        OsStr::new("-D"),
        dir.as_os_str(),
        OsStr::new("-d"),
    ]);
    if let (true, Some(pid)) = (out.success(), pid) {
        env.track(pid);
    }
    out
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

/// The largest file of `files`.
fn largest(files: Vec<PathBuf>) -> PathBuf {
    files
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .expect("no such image file")
}

#[test]
fn restore_from_empty_dir() {
    let env = Env::new();
    let dir = env.subdir("empty");
    let out = restore(&env, &dir, None);
    let line = out.failed_naming("");
    assert!(
        line.contains(&*dir.to_string_lossy()) || line.contains("inventory"),
        "stderr names neither the directory nor inventory.img: {out}"
    );
}

/// A good image whose directory belongs to another user (uid 1000) is refused before any
/// process exists, naming the directory and its owner; the same directory, given back to
/// root, restores.
#[test]
fn restore_from_dir_of_another_user_refused() {
    let env = Env::new();
    let (pid, dir) = dumped(&env);
    std::os::unix::fs::chown(&dir, Some(1000), Some(1000)).unwrap();
    let out = restore(&env, &dir, Some(pid));
    let line = out.failed_naming(&dir.to_string_lossy());
    assert!(line.contains("owned by uid 1000"), "{out}");
    env.assert_gone(pid);
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
    restore(&env, &dir, Some(pid)).ok();
}

#[test]
fn restore_from_missing_dir() {
    let env = Env::new();
    let dir = env.path().join("does-not-exist");
    let out = restore(&env, &dir, None);
    out.failed_naming(&dir.to_string_lossy());
}

fn truncate_half(p: &Path) {
    let len = fs::metadata(p).unwrap().len();
    let f = fs::OpenOptions::new().write(true).open(p).unwrap();
    f.set_len(len / 2).unwrap();
}

fn flip_middle_byte(p: &Path) {
    let len = fs::metadata(p).unwrap().len();
    assert!(len > 16, "{} too small to corrupt", p.display());
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(p)
        .unwrap();
    let at = len / 2;
    let mut b = [0u8];
    f.seek(SeekFrom::Start(at)).unwrap();
    f.read_exact(&mut b).unwrap();
    b[0] ^= 0xff;
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(&b).unwrap();
}

/// Damages one image file with `damage`, restores, and checks the refusal names it.
fn refuses_damaged(prefix: &str, damage: fn(&Path)) {
    let env = Env::new();
    let (pid, dir) = dumped(&env);
    let victim = largest(image_files(&dir, prefix));
    damage(&victim);
    let out = restore(&env, &dir, Some(pid));
    out.failed_naming(&file_name(&victim));
    env.assert_gone(pid);
}

#[test]
fn restore_truncated_pages() {
    refuses_damaged("pages-", truncate_half);
}

#[test]
fn restore_truncated_core() {
    refuses_damaged("core-", truncate_half);
}

#[test]
fn restore_corrupted_pages() {
    refuses_damaged("pages-", flip_middle_byte);
}

#[test]
fn restore_corrupted_core() {
    refuses_damaged("core-", flip_middle_byte);
}

#[test]
fn restore_corrupted_inventory() {
    refuses_damaged("inventory", flip_middle_byte);
}

/// Bytes 6..8 of every image file are its format version (u16 LE): 99 is unknown.
#[test]
fn restore_foreign_format_version() {
    let env = Env::new();
    let (pid, dir) = dumped(&env);
    let mut victims = image_files(&dir, "core-");
    victims.extend(image_files(&dir, "inventory"));
    assert!(
        victims.len() >= 2,
        "expected core-*.img and inventory.img: {}",
        listing(&dir)
    );
    for p in &victims {
        let mut bytes = fs::read(p).unwrap();
        assert_eq!(&bytes[..4], b"CKPT", "{} lacks the CKPT magic", p.display());
        bytes[6..8].copy_from_slice(&99u16.to_le_bytes());
        fs::write(p, bytes).unwrap();
    }
    let out = restore(&env, &dir, Some(pid));
    let line = out.failed_naming(".img");
    assert!(
        victims.iter().any(|v| line.contains(&file_name(v))),
        "stderr names none of the changed files: {out}"
    );
    env.assert_gone(pid);
}

/// Restore while the dumped pid is still taken (by the original, left running).
#[test]
fn restore_while_pid_taken() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    let out = restore(&env, &dir, None);
    let line = out.failed_naming(&w.pid.to_string());
    assert!(mentions_number(&line, w.pid as i64), "{out}");
    assert_untouched(&env, &mut w);
}

/// Dumps a fresh workload `name`, reaps it, deletes `file` (in the temp dir), restores:
/// the restore must fail naming the file, and leave nothing with the pid behind.
fn refuses_missing_file(name: &str, file: &str) {
    let env = Env::new();
    let w = env.start(name);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let victim = env.path().join(file);
    fs::remove_file(&victim).unwrap();
    let out = restore(&env, &dir, Some(w.pid));
    out.failed_naming(file);
    env.assert_gone(w.pid);
}

/// A file the process had open is gone at restore time.
#[test]
fn restore_with_open_file_gone() {
    refuses_missing_file("files", "files-ro.dat");
}

/// A file the process had mapped (MAP_PRIVATE, some pages written) is gone.
#[test]
fn restore_with_mapped_file_gone() {
    refuses_missing_file("mem", "mem-private.dat");
}

/// A file the process had mapped MAP_SHARED is gone.
#[test]
fn restore_with_shared_mapped_file_gone() {
    refuses_missing_file("mem", "mem-shared.dat");
}

/// The workload's executable is gone at restore time.
#[test]
fn restore_with_executable_gone() {
    let env = Env::new();
    let exe = env.path().join("sig-copy");
    fs::copy(workload_bin("sig"), &exe).unwrap();
    let w = env.spawn("sig-copy", &exe, &[env.path().as_os_str()]);
    env.wait_ready(&w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    fs::remove_file(&exe).unwrap();
    let out = restore(&env, &dir, Some(w.pid));
    out.failed_naming(&exe.to_string_lossy());
    env.assert_gone(w.pid);
}

/// A flipped byte in the pages file is found before any process is created: the pages
/// are verified (on every CPU) before the seed is forked, and the error names the damaged
/// range. The debug log shows the seed was never forked.
#[test]
fn corrupted_pages_refused_before_any_process_exists() {
    let env = Env::new();
    let (pid, dir) = dumped(&env);
    let victim = largest(image_files(&dir, "pages-"));
    flip_middle_byte(&victim);
    let log = env.path().join("restore.log");
    let restore_logged = || {
        env.ckpt(&[
            OsStr::new("-vv"),
            OsStr::new("--log-file"),
            log.as_os_str(),
            OsStr::new("restore"),
            OsStr::new("-D"),
            dir.as_os_str(),
            OsStr::new("-d"),
        ])
    };
    let out = restore_logged();
    let line = out.failed_naming(&file_name(&victim));
    assert!(line.contains("checksum mismatch in bytes"), "{out}");
    let text = fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("forking the seed"),
        "a seed was forked: {text}"
    );
    env.assert_gone(pid);
    // The same log does show the seed when the byte is put back and the restore goes on.
    flip_middle_byte(&victim);
    let out = restore_logged();
    assert!(out.success(), "{out}");
    env.track(pid);
    let text = fs::read_to_string(&log).unwrap();
    assert!(text.contains("forking the seed"), "{text}");
}

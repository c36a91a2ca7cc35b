//! A container that shares ckpt's mounts and the host's mounts that change around it.
//! Alone in its test binary: the test mounts and unmounts in the host's mount namespace,
//! which every container started meanwhile by another test of the same binary would copy
//! and then miss at its restore.

mod common;

use common::inside::*;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;

/// A container shares ckpt's mounts: the host's mounts made after it started are no
/// state of its (another tool's /run/netns entries, a test's tmpfs): it is dumped all the
/// same and its restore leaves them out. A host mount it had that is gone at restore is
/// refused in one line naming it; mounted again, the restore goes through.
#[test]
fn host_mounts_made_after_a_container_started_are_not_its() {
    let env = Env::new();
    let had = env.path().join("had");
    env.mount_tmpfs(&had, "size=1m");
    fs::write(had.join("f"), "x").unwrap();
    let (w, init) = start_container_with(
        &env,
        "hostmounts",
        &[],
        "echo made; while :; do sleep 0.05; done",
    );
    env.wait_line(&w, "made", |l| l == "made");
    let late = env.path().join("late");
    env.mount_tmpfs(&late, "size=1m");
    let img = env.subdir("img");
    dump_container(&env, &w, init, &img, true);
    // The one it had, gone: refused, nothing made.
    nix::mount::umount2(&had, nix::mount::MntFlags::MNT_DETACH).unwrap();
    let restore = || {
        let pidfile = env.path().join("hm.pid");
        let out = env.ckpt(&[
            OsStr::new("restore"),
            OsStr::new("-D"),
            img.as_os_str(),
            OsStr::new("-d"),
            OsStr::new("--pidfile"),
            pidfile.as_os_str(),
        ]);
        (out, pidfile)
    };
    let (out, _) = restore();
    let line = out.failed_naming(&format!("mount {}", had.display()));
    assert!(line.contains("is not mounted here"), "{line}");
    env.mount_tmpfs(&had, "size=1m");
    let (out, pidfile) = restore();
    out.ok();
    let init: i32 = fs::read_to_string(pidfile).unwrap().trim().parse().unwrap();
    env.track(init);
    let info = nsenter(init, &["-m", "cat", "/proc/1/mountinfo"]);
    let at = |p: &Path| format!(" {} ", p.display());
    assert!(info.contains(&at(&had)), "{info}");
    assert!(!info.contains(&at(&late)), "{info}");
    env.kill_and_reap(init);
}

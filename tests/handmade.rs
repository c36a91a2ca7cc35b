//! The classic hand-made container (tests/workloads/handmade.c): pid, mount, uts, ipc and
//! net namespaces of its own, its root an ext4 image loop-mounted only inside it, a
//! hostname, a veth with an address; a shell loop counts into a tmpfs and into the root
//! filesystem, and busybox httpd serves the count, fetched over the veth by a client in
//! the network namespace standing for the host. Three cycles of dump and restore (the
//! loop device went with the container: the restore attaches one to the image again),
//! then the last images restored beside it on a copy of the image file, in a second
//! "host" namespace.

mod common;

use common::inside::reap_dumped_container;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Counts into /tmp (a tmpfs) and /www (the ext4 root), /www served on port 8080.
const SCRIPT: &str = "ip link set lo up && ip addr add 10.78.0.2/24 dev eth0 && \
    ip link set eth0 up && httpd -p 8080 -h /www && i=0; while :; do i=$((i+1)); \
    echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; \
    echo $i > /www/count.new; mv /www/count.new /www/count; sleep 0.05; done";

/// A network namespace of the test's standing for a host: held by a `sleep` in it, with
/// a bridge br0 holding 10.78.0.1/24 and no route anywhere else.
struct Host {
    net: String,
}

impl Host {
    fn new(env: &Env, name: &str) -> Host {
        let holder = env.spawn(
            name,
            &which("unshare"),
            &["--net", "sleep", "100000"].map(OsStr::new),
        );
        let ours = fs::read_link("/proc/self/ns/net").unwrap();
        let net = format!("/proc/{}/ns/net", holder.pid);
        wait_until("the host namespace", || {
            fs::read_link(&net).is_ok_and(|n| n != ours)
        });
        let h = Host {
            net: format!("--net={net}"),
        };
        let setup = "ip link set lo up && ip link add br0 type bridge && \
            ip addr add 10.78.0.1/24 dev br0 && ip link set br0 up";
        let out = h.run(Path::new("sh"), &["-c", setup]);
        assert!(out.status.success(), "{out:?}");
        h
    }

    /// `program args...` in this namespace, to its end.
    fn run(&self, program: &Path, args: &[&str]) -> std::process::Output {
        Command::new("nsenter")
            .arg(&self.net)
            .arg(program)
            .args(args)
            .output()
            .unwrap()
    }

    /// The count the container serves over the veth, if it answers.
    fn served(&self) -> Option<u64> {
        let url = "http://10.78.0.2:8080/count";
        // (busybox's own -T timeout crashes the host's static busybox.)
        let busybox = which("busybox");
        let args = ["5", busybox.to_str().unwrap(), "wget", "-q", "-O", "-", url];
        let out = self.run(Path::new("timeout"), &args);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    }

    /// `ckpt ARGS...` in this namespace (so a veth's host end is made here).
    fn ckpt(&self, env: &Env, args: &[&str]) -> CkptOutput {
        let mut all = vec![self.net.as_str(), CKPT];
        all.extend_from_slice(args);
        env.run_program(Path::new("nsenter"), &all)
    }
}

/// An ext4 image file holding a busybox root (made from a directory by mkfs.ext4 -d).
fn image(env: &Env) -> PathBuf {
    let rootfs = env.subdir("rootfs");
    for d in ["bin", "proc", "tmp", "www", "dev", "sys", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy(which("busybox"), rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "echo", "mv", "cat", "mkdir", "httpd", "ip", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let img = env.path().join("root.ext4");
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&rootfs)
        .arg(&img)
        .arg("32M")
        .output()
        .unwrap();
    assert!(out.status.success(), "mkfs.ext4: {out:?}");
    img
}

/// `nsenter -t PID -m -u CMD...` (the container's mount and uts namespaces): its output.
fn inside(pid: i32, cmd: &[&str]) -> String {
    let out = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-m", "-u"])
        .args(cmd)
        .output()
        .unwrap();
    assert!(out.status.success(), "nsenter {cmd:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What a restored copy must show: its hostname, ext4 on /, and its count going on from
/// `before` both in the tmpfs and over the veth.
fn check_copy(host: &Host, init: i32, before: u64, what: &str) {
    assert_eq!(inside(init, &["hostname"]), "handmade", "{what}");
    let root = fs::read_to_string(format!("/proc/{init}/mountinfo")).unwrap();
    let root = root.lines().find(|l| l.split(' ').nth(4) == Some("/"));
    assert!(
        root.is_some_and(|l| l.contains(" - ext4 /dev/loop")),
        "{what}: its root: {root:?}"
    );
    let first = host
        .served()
        .unwrap_or_else(|| panic!("{what}: nothing served over the veth"));
    assert!(
        first >= before && first < before + 200,
        "{what}: {before} -> {first}: started over?"
    );
    wait_until("the count going on", || {
        host.served().is_some_and(|n| n > first)
            && inside(init, &["cat", "/tmp/count"])
                .parse::<u64>()
                .is_ok_and(|n| n > first)
    });
}

/// The container (in `host`, on `img`) once it serves: handmade's workload and the
/// container's init.
fn start(env: &Env, host: &Host, img: &Path) -> (Workload, i32) {
    let bin = workload_bin("handmade");
    let dir = env.path().display().to_string();
    let args = [
        host.net.as_str(),
        bin.to_str().unwrap(),
        &dir,
        img.to_str().unwrap(),
        SCRIPT,
    ];
    let w = env.spawn("handmade", Path::new("nsenter"), &args.map(OsStr::new));
    let line = env.wait_line(&w, "INIT", |l| l.starts_with("INIT "));
    let init: i32 = line[5..].parse().unwrap();
    env.track(init);
    wait_until("the container serving", || host.served().is_some());
    (w, init)
}

#[test]
fn handmade_container_on_a_loop_mounted_ext4_root_three_cycles_and_a_copy() {
    let env = Env::new();
    let img = image(&env);
    let host = Host::new(&env, "host1");
    let (w, mut init) = start(&env, &host, &img);
    let (mut last, mut dumped_at) = (PathBuf::new(), 0);
    for cycle in 1..=3 {
        let before = host.served().expect("served before the dump");
        dumped_at = before;
        last = env.subdir(&format!("img{cycle}"));
        let d = last.to_str().unwrap();
        host.ckpt(&env, &["dump", "-t", &init.to_string(), "-D", d])
            .ok();
        reap_dumped_container(&env, &w, init, cycle == 1);
        if cycle == 3 {
            // The copy for the restore beside it, taken while nothing has the image mounted:
            // as the dump left it (a file the images hold open, /www/count.new, may be
            // renamed a moment after the restore).
            fs::copy(&img, env.path().join("copy.ext4")).unwrap();
        }
        let pidfile = env.path().join(format!("r{cycle}.pid"));
        let p = pidfile.to_str().unwrap();
        let restore = [
            "restore",
            "-D",
            d,
            "-d",
            "--veth-bridge",
            "hv0=br0",
            "--pidfile",
            p,
        ];
        host.ckpt(&env, &restore).ok();
        init = fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        env.track(init);
        check_copy(&host, init, before, &format!("cycle {cycle}"));
    }
    // The last images again, beside it: on the copy of the image file, in another host.
    let copy = env.path().join("copy.ext4");
    let host2 = Host::new(&env, "host2");
    let before = host.served().unwrap();
    let pidfile = env.path().join("copy.pid");
    let map = format!("{}:{}", img.display(), copy.display());
    let restore = [
        "restore",
        "-D",
        last.to_str().unwrap(),
        "-d",
        "--veth-bridge",
        "hv0=br0",
        "--ext-mount-map",
        &map,
        "--pidfile",
        pidfile.to_str().unwrap(),
    ];
    host2.ckpt(&env, &restore).ok();
    let second: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(second);
    // It goes on from the last dump, not from where the first copy is now.
    check_copy(&host2, second, dumped_at, "the copy");
    check_copy(&host, init, before, "the first copy, beside the second");
    env.kill_and_reap(init);
    env.kill_and_reap(second);
}

/// The image file gone at restore: one line naming it and how to map another, nothing
/// left behind (no process, no loop device, no veth); put back, the restore works.
#[test]
fn handmade_container_whose_image_file_is_gone_is_refused_by_name() {
    let env = Env::new();
    let img = image(&env);
    let host = Host::new(&env, "host");
    let (w, init) = start(&env, &host, &img);
    let d = env.subdir("img");
    let d = d.to_str().unwrap();
    host.ckpt(&env, &["dump", "-t", &init.to_string(), "-D", d])
        .ok();
    reap_dumped_container(&env, &w, init, true);
    let away = env.path().join("away.ext4");
    fs::rename(&img, &away).unwrap();
    // Loop devices reading a file of this test's (other tests have theirs).
    let ours = env.path().display().to_string();
    let loops = || {
        let out = Command::new("losetup").arg("-a").output().unwrap().stdout;
        let text = String::from_utf8_lossy(&out).into_owned();
        text.lines().filter(|l| l.contains(&ours)).count()
    };
    // The dumped container's device detaches itself once its mounts are gone.
    wait_until("the dumped container's loop device to go", || loops() == 0);
    let restore = ["restore", "-D", d, "-d", "--veth-bridge", "hv0=br0"];
    let out = host.ckpt(&env, &restore);
    let msg = out.failed_naming(img.to_str().unwrap());
    assert!(msg.contains("--ext-mount-map"), "{msg}");
    assert!(host.served().is_none());
    assert_eq!(loops(), 0, "a loop device is left");
    let links = host.run(Path::new("ip"), &["-o", "link"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains("hv0"));
    fs::rename(&away, &img).unwrap();
    let pidfile = env.path().join("r.pid");
    let mut again = restore.to_vec();
    again.extend(["--pidfile", pidfile.to_str().unwrap()]);
    host.ckpt(&env, &again).ok();
    let init: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(init);
    wait_until("the restored container serving", || host.served().is_some());
    env.kill_and_reap(init);
}

//! A real `runc` container on a busybox rootfs built at test time (`runc spec`, no
//! terminal, a shell loop counting into a file of its rootfs and printing to its stdout,
//! a file of the host outside its root, syslogd on /dev/log and busybox httpd on its
//! loopback serving the count). Its root is a root of its own (runc
//! pivot_root()s into the bundle's rootfs, mounts /dev, /sys, cgroups, masks parts of
//! /proc): ckpt dumps it by its init's pid and restores it into fresh namespaces, three
//! times in a row, and a copy beside it on a copy of its rootfs.

mod common;

use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread::sleep;
use std::time::{Duration, Instant};

/// A runc container of this test: deleted (killed first) when dropped.
struct Runc {
    id: String,
    bundle: PathBuf,
}

impl Runc {
    /// `runc run -d` of a bundle made in `dir`: /bin/busybox (static) and its applets,
    /// `runc spec`'s config with `script` run by sh and no terminal.
    fn start(dir: &Path, tag: &str, script: &str) -> (Runc, i32) {
        let bundle = dir.join(format!("bundle-{tag}"));
        let bin = bundle.join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        for d in ["proc", "sys", "dev", "tmp", "etc"] {
            fs::create_dir_all(bundle.join("rootfs").join(d)).unwrap();
        }
        fs::copy(which("busybox"), bin.join("busybox")).unwrap();
        for applet in [
            "sh", "sleep", "cat", "echo", "mv", "syslogd", "logger", "httpd",
        ] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        // The container inherits runc's stdio: a file, not a pipe (the container would
        // hold a pipe open, and reading it to EOF would never end).
        let log = bundle.join("runc.log");
        let runc = |args: &[&str]| {
            let f = fs::File::create(&log).unwrap();
            let status = Command::new(which("runc"))
                .args(args)
                .current_dir(&bundle)
                .stdin(std::process::Stdio::null())
                .stdout(f.try_clone().unwrap())
                .stderr(f)
                .status()
                .unwrap();
            assert!(
                status.success(),
                "runc {args:?}: {status}: {}",
                fs::read_to_string(&log).unwrap_or_default()
            );
        };
        runc(&["spec"]);
        let config = bundle.join("config.json");
        let mut c: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
        c["process"]["terminal"] = false.into();
        c["process"]["args"] = serde_json::json!(["sh", "-c", script]);
        c["root"]["readonly"] = false.into();
        fs::write(&config, c.to_string()).unwrap();
        let id = format!("ckpt-test-{}-{tag}", std::process::id());
        let guard = Runc {
            id: id.clone(),
            bundle: bundle.clone(),
        };
        runc(&["run", "-d", "--pid-file", "pid", &id]);
        let pid = fs::read_to_string(bundle.join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        (guard, pid)
    }

    fn counter(&self) -> u64 {
        fs::read_to_string(self.bundle.join("rootfs/tmp/count"))
            .unwrap_or_default()
            .trim()
            .parse()
            .unwrap_or(0)
    }

    /// Waits until the container's counter passes `above`.
    fn wait_counter(&self, above: u64) {
        let start = Instant::now();
        while self.counter() <= above {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "the counter stopped at {above}"
            );
            sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Runc {
    fn drop(&mut self) {
        let _ = Command::new(which("runc"))
            .args(["delete", "-f", &self.id])
            .output();
        // The container's cgroups, which a restore by ckpt made again: runc deletes
        // only those of the container it ran.
        remove_cgroups_named(&self.id);
    }
}

/// Kills what is left in the cgroups named `id` below this test's own (runc makes them
/// there, in every hierarchy) and removes them.
fn remove_cgroups_named(id: &str) {
    let mine = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let (Some(point), mut r) = (left.split(' ').nth(4), right.split(' ')) else {
            continue;
        };
        let (fstype, opts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        let own = mine.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (n, ctl, path) = (f.next()?, f.next()?, f.next()?);
            let hit = match fstype {
                "cgroup2" => n == "0",
                "cgroup" => {
                    !ctl.is_empty() && ctl.split(',').all(|c| opts.split(',').any(|o| o == c))
                }
                _ => false,
            };
            hit.then(|| path.to_string())
        });
        let Some(own) = own else {
            continue;
        };
        let dir = Path::new(point).join(own.trim_start_matches('/')).join(id);
        if !dir.is_dir() {
            continue;
        }
        let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for p in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
            signal(p, libc::SIGKILL);
        }
        let start = Instant::now();
        while fs::remove_dir(&dir).is_err() && start.elapsed() < Duration::from_secs(5) {
            sleep(Duration::from_millis(20));
        }
    }
}

/// `ckpt restore -D DIR -d --pidfile` (and `extra`): the restored init's pid outside its
/// namespace, handed to the cleanup (killing it ends the container).
fn restore_outer(env: &Env, dir: &Path, tag: &str, extra: &[&str]) -> i32 {
    let pidfile = env.path().join(format!("{tag}.pid"));
    let mut args = vec![
        "restore".to_string(),
        "-D".into(),
        dir.display().to_string(),
        "-d".into(),
        "--pidfile".into(),
        pidfile.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    env.ckpt(&args).ok();
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(pid);
    pid
}

/// The lines the container printed to its stdout (runc.log, outside its root).
fn printed(c: &Runc) -> usize {
    fs::read_to_string(c.bundle.join("runc.log"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn mounts_of(pid: i32) -> Vec<String> {
    // Ids, parents and anonymous device numbers differ from run to run; what is mounted
    // where, how, does not.
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().skip(3).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Counts into /tmp/count (replaced whole: httpd never meets it half-written) and its
/// stdout, and logs each count through syslogd (its /dev/log, a unix datagram socket
/// bound in the container's /dev tmpfs, in its own network namespace) into
/// /tmp/messages.
const COUNTING: &str = "syslogd -n -O /tmp/messages & httpd -f -p 127.0.0.1:8080 -h /tmp & \
                        n=0; while :; do n=$((n+1)); echo $n > /tmp/count.new; mv /tmp/count.new /tmp/count; echo $n; \
                        logger tick$n; sleep 0.05; done";

/// GET /count from busybox httpd inside the container (its loopback, in its network
/// namespace: the client runs there through nsenter -n).
fn served_count(init: i32) -> u64 {
    let out = Command::new(which("nsenter"))
        .args(["-t", &init.to_string(), "-n"])
        .arg(python3())
        .args([
            "-c",
            "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/count', timeout=10).read().decode().strip())",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "GET /count inside: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The ticks syslogd wrote, in order.
fn ticks(c: &Runc) -> Vec<u64> {
    fs::read_to_string(c.bundle.join("rootfs/tmp/messages"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit_once("tick")?.1.parse().ok())
        .collect()
}

#[test]
fn runc_container_three_cycles_and_a_copy_beside_it() {
    let env = Env::new();
    let (c, mut init) = Runc::start(env.path(), "loop", COUNTING);
    c.wait_counter(2);
    assert!(served_count(init) >= 1);
    let mut mounts = mounts_of(init);
    mounts.sort();
    for cycle in 0..3 {
        let dir = env.subdir(&format!("img{cycle}"));
        env.dump(init, &dir, &[]).ok();
        let (count, lines) = (c.counter(), printed(&c));
        sleep(Duration::from_millis(200));
        assert_eq!(c.counter(), count, "the dumped container still runs");
        init = restore_outer(&env, &dir, &format!("r{cycle}"), &[]);
        assert_eq!(
            status_field(init, "NSpid")
                .unwrap()
                .split_whitespace()
                .last(),
            Some("1"),
            "the restored init is pid 1 of its namespace"
        );
        c.wait_counter(count + 3);
        // Its stdout, a file of the host outside its root, at its offset.
        let start = Instant::now();
        while printed(&c) < lines + 3 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no output after restore"
            );
            sleep(Duration::from_millis(20));
        }
        let log = fs::read_to_string(c.bundle.join("runc.log")).unwrap();
        let numbers: Vec<u64> = log.lines().filter_map(|l| l.parse().ok()).collect();
        assert!(
            numbers.windows(2).all(|w| w[1] == w[0] + 1),
            "its stdout skips or repeats after cycle {cycle}"
        );
        let mut now = mounts_of(init);
        now.sort();
        assert_eq!(now, mounts, "its mounts after cycle {cycle}");
        // Its web server, listening across the cycle, serves the count.
        assert!(served_count(init) > count, "httpd after cycle {cycle}");
        // syslogd goes on receiving on its /dev/log.
        let start = Instant::now();
        while ticks(&c).last().copied().unwrap_or(0) <= count + 1 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "syslogd got nothing after cycle {cycle}: {:?}",
                ticks(&c).last()
            );
            sleep(Duration::from_millis(20));
        }
    }
    // A second copy beside it, on a copy of its rootfs (--ext-mount-map ROOTFS:COPY),
    // copied once the dump has stopped it: a copy taken while it runs on may miss a file
    // the image holds open (its loop's /tmp/count.new, renamed a moment later). The
    // original comes back from the same image first.
    let dir = env.subdir("img-copy");
    env.dump(init, &dir, &[]).ok();
    let rootfs = c.bundle.join("rootfs");
    let copy = env.subdir("rootfs-copy");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", rootfs.display()))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    fs::remove_file(copy.join("tmp/count")).unwrap();
    init = restore_outer(&env, &dir, "back", &[]);
    let map = format!("{}:{}", rootfs.display(), copy.display());
    let twin = restore_outer(&env, &dir, "copy", &["--ext-mount-map", &map]);
    let start = Instant::now();
    let copy_count = || {
        fs::read_to_string(copy.join("tmp/count"))
            .unwrap_or_default()
            .trim()
            .parse::<u64>()
            .unwrap_or(0)
    };
    let first = loop {
        let n = copy_count();
        if n > 0 {
            break n;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the copy does not count"
        );
        sleep(Duration::from_millis(20));
    };
    while copy_count() < first + 3 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the copy stopped"
        );
        sleep(Duration::from_millis(20));
    }
    let now = c.counter();
    c.wait_counter(now + 3);
    assert_ne!(
        fs::read_link(format!("/proc/{twin}/ns/pid")).unwrap(),
        fs::read_link(format!("/proc/{init}/ns/pid")).unwrap()
    );
    // The copy's root is the copy.
    let root_line = mounts_of(twin)
        .into_iter()
        .find(|l| l.split_whitespace().nth(1) == Some("/"))
        .unwrap();
    assert!(
        root_line.contains(&copy.display().to_string()),
        "{root_line}"
    );
}

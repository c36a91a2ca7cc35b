//! podman 4.3 with runc as its runtime checkpointing and restoring its containers through
//! ckpt as CRIU (`criu` on PATH a symlink to the ckpt under test): two cycles and
//! `--export`/`--import`, overlay storage on a CNI bridge, an established TCP connection
//! from another container, a terminal container (`podman run -t`).

mod common;

use common::dropin::*;
use common::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

// podman

/// podman 4.3 with runc as its runtime, its storage (vfs: plain directories, no overlay
/// mounts) and run state under the test's temp dir, `criu` found on PATH in the test's
/// directory; the image imported from a busybox rootfs built now.
struct Podman<'a> {
    env: &'a Env,
    path: String,
    name: String,
    /// Its storage and run state: `pm-storage{store}`, `pm-run{store}` under the temp dir.
    store: &'static str,
    /// Its storage driver: vfs (plain directories) unless told otherwise.
    driver: &'static str,
    /// Its CNI network configuration directory, if it has one of its own.
    net_dir: Option<PathBuf>,
}

impl<'a> Podman<'a> {
    /// A podman of its own storage (`store`), the busybox image imported into it.
    fn new(env: &'a Env, criu: &Path, store: &'static str) -> Podman<'a> {
        Podman::with(env, criu, store, "vfs", None)
    }

    /// [`Podman::new`] with storage driver `driver` and CNI configuration `net_dir`.
    fn with(
        env: &'a Env,
        criu: &Path,
        store: &'static str,
        driver: &'static str,
        net_dir: Option<PathBuf>,
    ) -> Podman<'a> {
        let tar = env.path().join("rootfs.tar");
        if !tar.exists() {
            let rootfs = env.subdir("pm-rootfs");
            busybox_rootfs(&rootfs);
            let st = Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg(".")
                .status()
                .unwrap();
            assert!(st.success());
        }
        let p = Podman {
            env,
            path: format!(
                "{}:{}",
                criu.parent().unwrap().display(),
                std::env::var("PATH").unwrap_or_default()
            ),
            name: unique_name(),
            store,
            driver,
            net_dir,
        };
        p.import(&tar);
        p
    }

    fn import(&self, tar: &Path) {
        let out = self.podman(&["import", tar.to_str().unwrap(), "localhost/ckpt-bb:1"]);
        assert!(out.status.success(), "podman import: {out:?}");
    }

    fn start(env: &'a Env, criu: &Path, script: &str) -> Podman<'a> {
        Podman::start_with(env, criu, &[], script)
    }

    /// `start` with more `podman run` flags.
    fn start_with(env: &'a Env, criu: &Path, flags: &[&str], script: &str) -> Podman<'a> {
        let p = Podman::new(env, criu, "");
        let name = p.name.clone();
        let mut args = vec!["run", "-d", "--name", &name, "--network", "none"];
        args.extend_from_slice(flags);
        args.extend(["localhost/ckpt-bb:1", "/bin/sh", "-c", script]);
        let out = p.podman(&args);
        assert!(out.status.success(), "podman run: {out:?}");
        p
    }

    fn podman(&self, args: &[&str]) -> std::process::Output {
        let base = self.env.path();
        // In the test's own mount namespace: podman's mounts (its storage, the
        // containers' shm, network namespaces) must not show in the host's, where other
        // tests copy the host's mounts into their containers at any moment.
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &podman_mount_ns(self.env).to_string(), "-m", "podman"]);
        cmd.arg("--root")
            .arg(base.join(format!("pm-storage{}", self.store)));
        cmd.arg("--runroot")
            .arg(base.join(format!("pm-run{}", self.store)));
        cmd.args(["--storage-driver", self.driver, "--runtime", "runc"]);
        if let Some(d) = &self.net_dir {
            cmd.arg("--network-config-dir").arg(d);
        }
        cmd.args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"]);
        cmd.args(args).env("PATH", &self.path);
        run_to_files(self.env, cmd)
    }

    /// `{{.State.Status}}` and the like of the container.
    fn inspect(&self, what: &str) -> String {
        let st = self.podman(&["inspect", "-f", what, &self.name]);
        String::from_utf8_lossy(&st.stdout).trim().to_string()
    }

    /// `podman container checkpoint`, then `restore`: exited between, running after.
    fn checkpoint_and_restore(&self, cycle: u32) {
        for (verb, then) in [("checkpoint", "exited"), ("restore", "running")] {
            let out = self.podman(&["container", verb, &self.name]);
            assert!(
                out.status.success(),
                "cycle {cycle}: {verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(self.inspect("{{.State.Status}}"), then, "cycle {cycle}");
        }
    }

    fn count(&self) -> u64 {
        let start = Instant::now();
        loop {
            let out = self.podman(&["exec", &self.name, "cat", "/tmp/count"]);
            if let Ok(n) = String::from_utf8_lossy(&out.stdout).trim().parse() {
                return n;
            }
            assert!(start.elapsed() < LINE_TIMEOUT, "no count: {out:?}");
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Podman<'_> {
    /// Removes the container, then waits (10 s at most) for conmon's `podman container
    /// cleanup`, which runs after the container died and would make the run directory
    /// again after the temp dir is gone.
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-f", "-t", "0", &self.name.clone()]);
        let ours = self.env.path().display().to_string();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) && uses_path(&ours) {
            sleep(Duration::from_millis(50));
        }
    }
}

/// Whether a process other than this one has `path` on its command line.
fn uses_path(path: &str) -> bool {
    let me = std::process::id().to_string();
    fs::read_dir("/proc").unwrap().flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.bytes().all(|b| b.is_ascii_digit())
            && name != me
            && fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(path))
    })
}

/// The number after `"key":` in podman's JSON output (0 when absent: podman leaves out
/// zero statistics).
fn json_number(json: &str, key: &str) -> u64 {
    let Some(at) = json.find(&format!("\"{key}\":")) else {
        return 0;
    };
    let rest = json[at + key.len() + 3..].trim_start();
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().unwrap_or(0)
}

#[test]
fn podman_checkpoint_and_restore_with_runc_through_ckpt() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let pm = Podman::start(&env, &criu, COUNTING);
    let name = pm.name.clone();
    for cycle in 0..2 {
        let before = pm.count();
        pm.checkpoint_and_restore(cycle);
        let start = Instant::now();
        loop {
            let now = pm.count();
            assert!(now < before + 200, "{before} -> {now}: started over?");
            if now > before {
                break;
            }
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "the container stopped counting"
            );
            sleep(Duration::from_millis(50));
        }
    }
    // --export to an archive (with ckpt's statistics), --import into another storage.
    let archive = env.path().join("export.tar.gz");
    let before = pm.count();
    let out = pm.podman(&[
        "container",
        "checkpoint",
        "--print-stats",
        &format!("--export={}", archive.display()),
        &name,
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // podman read stats-dump: the pages ckpt wrote, the time the container was frozen.
    assert!(json_number(&stdout, "pages_written") > 0, "{stdout}");
    assert!(json_number(&stdout, "frozen_time") > 0, "{stdout}");
    let mut other = Podman::new(&env, &criu, "-other");
    // The imported container keeps its name.
    other.name = name.clone();
    let out = other.podman(&[
        "container",
        "restore",
        "--print-stats",
        &format!("--import={}", archive.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // podman read stats-restore: this restore's times and the pages it put back.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (forking, restore) = (
        json_number(&stdout, "forking_time"),
        json_number(&stdout, "restore_time"),
    );
    assert!(0 < forking && forking <= restore, "{stdout}");
    assert!(json_number(&stdout, "pages_restored") > 0, "{stdout}");
    let start = Instant::now();
    loop {
        let now = other.count();
        assert!(now < before + 200, "{before} -> {now}: started over?");
        if now > before + 2 {
            break;
        }
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "the imported container does not count"
        );
        sleep(Duration::from_millis(50));
    }
}

/// The pid of a process holding a mount namespace of the test's own (a private copy of
/// the host's), where its podman commands run; made at the first call.
fn podman_mount_ns(env: &Env) -> i32 {
    let marker = env.path().join("pm-mntns.pid");
    if let Some(pid) = fs::read_to_string(&marker)
        .ok()
        .and_then(|s| s.trim().parse().ok())
    {
        return pid;
    }
    let args = ["--mount", "--propagation", "private", "sleep", "1000000"];
    let holder = env.spawn(
        "pm-mntns",
        &which("unshare"),
        &args.map(std::ffi::OsStr::new),
    );
    let ours = fs::read_link("/proc/self/ns/mnt").unwrap();
    wait_until("podman's mount namespace", || {
        fs::read_link(format!("/proc/{}/ns/mnt", holder.pid)).is_ok_and(|n| n != ours)
    });
    fs::write(&marker, holder.pid.to_string()).unwrap();
    holder.pid
}

/// A CNI network of the test's own for podman: a bridge of its own with no address on
/// the host side, no firewall, NAT or port plugins (nothing of the host's network changes
/// but the bridge), its address bookkeeping in the test's directory; the bridge is
/// removed at the end.
struct CniNet {
    dir: PathBuf,
    name: String,
    bridge: String,
}

impl CniNet {
    fn new(env: &Env) -> CniNet {
        // Names and subnets no other test of this run (or of another run) takes.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = std::process::id();
        let net = CniNet {
            dir: env.subdir("cni"),
            name: format!("ckpt-{id}-{n}"),
            bridge: format!("ckb{}-{n}", id % 1_000_000),
        };
        let k = id.wrapping_mul(4).wrapping_add(n);
        let subnet = format!("10.{}.{}.0/24", 200 + (k >> 8) % 50, k % 256);
        let conf = format!(
            r#"{{"cniVersion": "0.4.0", "name": "{}", "plugins": [{{"type": "bridge",
            "bridge": "{}", "isGateway": false, "ipMasq": false, "ipam": {{"type":
            "host-local", "dataDir": "{}", "ranges": [[{{"subnet": "{subnet}"}}]]}}}}]}}"#,
            net.name,
            net.bridge,
            env.path().join("cni-ipam").display()
        );
        fs::write(net.dir.join(format!("{}.conflist", net.name)), conf).unwrap();
        net
    }
}

impl Drop for CniNet {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

/// Serves its count over HTTP on its own address (busybox httpd) besides counting.
const SERVING: &str = "mkdir -p /tmp/www && httpd -p 8080 -h /tmp/www && i=0; while true; do \
    i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; \
    echo $i > /tmp/www/count.new; mv /tmp/www/count.new /tmp/www/count; sleep 0.05; done";

/// podman's defaults but for the network's name: overlay storage and a CNI bridge network.
/// The container's network namespace is podman's (CRIU's `--external
/// net[INODE]:extRootNetNS` at dump); at restore podman makes a new one with the same
/// address and gives it (`--inherit-fd`), and the restored container joins it: its web
/// server answers on that address, its count goes on. Two cycles.
#[test]
fn podman_on_a_bridge_network_and_overlay_storage_through_ckpt() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let net = CniNet::new(&env);
    let pm = Podman::with(&env, &criu, "", "overlay", Some(net.dir.clone()));
    let name = pm.name.clone();
    let out = pm.podman(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        &net.name,
        "localhost/ckpt-bb:1",
        "/bin/sh",
        "-c",
        SERVING,
    ]);
    assert!(out.status.success(), "podman run: {out:?}");
    let inspect = |what: &str| pm.inspect(what);
    let ip_of = format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        net.name
    );
    let ip = inspect(&ip_of);
    assert!(ip.starts_with("10."), "no address on {}: {ip:?}", net.name);
    let url = format!("http://{ip}:8080/count");
    // The count as the container serves it on its own address.
    let served = || -> Option<u64> {
        let out = pm.podman(&["exec", &name, "wget", "-q", "-O", "-", &url]);
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    wait_until("the container serving its count", || served().is_some());
    for cycle in 0..2 {
        let before = pm.count();
        pm.checkpoint_and_restore(cycle);
        assert_eq!(inspect(&ip_of), ip, "cycle {cycle}: another address");
        let first = served().unwrap_or_else(|| panic!("cycle {cycle}: nothing served at {url}"));
        assert!(
            first >= before && first < before + 200,
            "cycle {cycle}: {before} -> {first}: started over?"
        );
        wait_until("the count served going on", || {
            served().is_some_and(|n| n > first)
        });
    }
}

/// An established TCP connection into a podman container (busybox nc echoing with cat)
/// from a client in another container on the same CNI bridge (outside the dumped tree)
/// survives `podman container checkpoint --tcp-established` and `restore
/// --tcp-established`, twice: the client sends a line after each restore and gets it
/// back, and everything it got is every line it sent, in order. The client is idle while
/// the server is checkpointed: a segment reaching podman's new namespace while podman
/// sets it up, before ckpt runs and locks it, would be answered with a reset (ckpt locks
/// the connections there before it makes anything, `restore/src/net/external.rs`).
#[test]
fn podman_tcp_connection_from_another_container_survives_two_cycles() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let net = CniNet::new(&env);
    let server = Podman::with(&env, &criu, "", "overlay", Some(net.dir.clone()));
    let client = Podman::with(&env, &criu, "", "overlay", Some(net.dir.clone()));
    let run = |pm: &Podman, script: &str| {
        let out = pm.podman(&[
            "run",
            "-d",
            "--name",
            &pm.name,
            "--network",
            &net.name,
            "localhost/ckpt-bb:1",
            "/bin/sh",
            "-c",
            script,
        ]);
        assert!(out.status.success(), "podman run: {out:?}");
    };
    run(&server, "nc -ll -p 9000 -e /bin/cat");
    let ip_of = format!(
        "{{{{(index .NetworkSettings.Networks \"{}\").IPAddress}}}}",
        net.name
    );
    let ip = server.inspect(&ip_of);
    // The client sends what is written to its FIFO (held open by a sleeper).
    run(
        &client,
        &format!("mkfifo /tmp/in; sleep 1000000 > /tmp/in & nc {ip} 9000 < /tmp/in > /tmp/got"),
    );
    let echoed = || -> Vec<String> {
        let out = client.podman(&["exec", &client.name, "cat", "/tmp/got"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    };
    let mut sent = Vec::new();
    let mut ping = |n: usize| {
        let line = format!("ping {n}");
        let script = format!("echo {line} > /tmp/in");
        let out = client.podman(&["exec", &client.name, "sh", "-c", &script]);
        assert!(out.status.success(), "{out:?}");
        sent.push(line);
        let want = sent.clone();
        wait_until("the echo", || echoed() == want);
    };
    ping(0);
    for cycle in 1..=2 {
        for verb in ["checkpoint", "restore"] {
            let out = server.podman(&["container", verb, "--tcp-established", &server.name]);
            assert!(
                out.status.success(),
                "cycle {cycle}: {verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert_eq!(server.inspect("{{.State.Status}}"), "running");
        ping(cycle);
    }
}

/// `podman run -t`: the container's init on a terminal of its own devpts whose master
/// conmon holds (runc sent it over the console socket). Two cycles: runc's checkpoint
/// sets orphan_pts_master, ckpt's restore makes a new pair with the same index and hands
/// the master to runc, which passes it to conmon. After each restore the shell's stdin,
/// stdout and stderr are that pty again (seen from outside and by `tty` inside), what it
/// writes there reaches conmon's log again, and it counts on from where it was.
#[test]
fn podman_terminal_container_through_ckpt_two_cycles() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let script = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; \
                  mv /tmp/count.new /tmp/count; echo \"tick $i $(busybox tty)\"; sleep 0.05; done";
    let pm = Podman::start_with(&env, &criu, &["-t"], script);
    // The last "tick N TTY" line conmon logged (a terminal ends lines with \r\n).
    let last_tick = || {
        let out = pm.podman(&["logs", &pm.name]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .find_map(|l| {
                let mut w = l.trim().strip_prefix("tick ")?.split(' ');
                Some((w.next()?.parse::<u64>().ok()?, w.next()?.to_string()))
            })
    };
    for cycle in 0..2 {
        let before = pm.count();
        pm.checkpoint_and_restore(cycle);
        let pid: i32 = pm.inspect("{{.State.Pid}}").parse().unwrap();
        for fd in 0..3 {
            let link = fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
            assert_eq!(link, Path::new("/dev/pts/0"), "cycle {cycle}: fd {fd}");
        }
        let start = Instant::now();
        loop {
            let now = pm.count();
            assert!(now < before + 200, "{before} -> {now}: started over?");
            match last_tick() {
                Some((n, tty)) if n > before + 2 => {
                    assert_eq!(tty, "/dev/pts/0", "cycle {cycle}");
                    break;
                }
                _ => {}
            }
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "cycle {cycle}: nothing new on the terminal after {before}: {:?}",
                last_tick()
            );
            sleep(Duration::from_millis(50));
        }
    }
}

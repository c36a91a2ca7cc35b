//! Live migration between "hosts" that are network namespaces made here: a source and a
//! destination joined by a veth pair (10.77.0.1 and 10.77.0.2). The workload and
//! `ckpt migrate` run in the source's network namespace, `ckpt haul serve` in the
//! destination's (both in the host's mount namespace, through `nsenter --net`), and the
//! copy is restored there into a fresh pid namespace, the source still holding the pids.
//! The workload (rewrite.c) verifies every page of its memory and counts its checks; a
//! migrated copy answers the next check with the next count. Every failure is injected at
//! a point the test is sure was reached (hold points), and the source is shown still
//! running, untraced and correct afterwards.

mod common;

use common::*;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

const SRC_ADDR: &str = "10.77.0.1";
const DST_ADDR: &str = "10.77.0.2";

static SEQ: AtomicU32 = AtomicU32::new(0);

/// Two network namespaces joined by a veth pair; deleted (by name) when dropped.
struct Hosts {
    src: String,
    dst: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Hosts {
    fn new() -> Hosts {
        let tag = format!(
            "{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let h = Hosts {
            src: format!("ckpt-haul-{tag}-src"),
            dst: format!("ckpt-haul-{tag}-dst"),
        };
        ip(&["netns", "add", &h.src]);
        ip(&["netns", "add", &h.dst]);
        // Unique names while the pair is made in this namespace, before they move.
        let short = format!("hv{}{}", std::process::id() % 100_000, tag.len() % 10);
        let (a, b) = (
            format!("{short}{}a", SEQ.load(Ordering::Relaxed)),
            format!("{short}{}b", SEQ.load(Ordering::Relaxed)),
        );
        ip(&[
            "link", "add", &a, "netns", &h.src, "type", "veth", "peer", "name", &b, "netns", &h.dst,
        ]);
        for (ns, dev, addr) in [(&h.src, &a, SRC_ADDR), (&h.dst, &b, DST_ADDR)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        h
    }

    fn net(ns: &str) -> String {
        format!("--net=/run/netns/{ns}")
    }

    /// Cuts the link: the veth pair is deleted (from the source's side).
    fn cut(&self) {
        let out = Command::new("ip")
            .args(["-n", &self.src, "-o", "link", "show", "type", "veth"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let dev = text
            .split(':')
            .nth(1)
            .and_then(|d| d.trim().split('@').next())
            .unwrap_or_else(|| panic!("no veth in {}: {text}", self.src))
            .to_string();
        ip(&["-n", &self.src, "link", "del", &dev]);
    }
}

/// A test that fails between the restore and `assert_moved` (which tracks the copy)
/// would leave the copy running at the destination: every copy the server announced is
/// killed with its namespace (its `ckpt-init` parent), by pid.
impl Drop for Server {
    fn drop(&mut self) {
        for pid in self.announced() {
            let init = status_field(pid, "PPid")
                .and_then(|p| p.parse::<i32>().ok())
                .filter(|p| {
                    fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.trim_end() == "ckpt-init")
                });
            for p in init.into_iter().chain([pid]) {
                signal(p, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in [&self.src, &self.dst] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A key file of 64 hex digits from /dev/urandom.
fn key_file(env: &Env, name: &str) -> PathBuf {
    let mut k = [0u8; 32];
    fs::File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut k)
        .unwrap();
    let hex: String = k.iter().map(|b| format!("{b:02x}")).collect();
    let p = env.path().join(name);
    fs::write(&p, hex + "\n").unwrap();
    p
}

/// `ckpt haul serve` in the destination's namespace (optionally under `wrap`, a shell
/// script ending in `exec "$@"`), with its stdout and stderr in files.
struct Server {
    addr: &'static str,
    pid: i32,
    port: u16,
    out: PathBuf,
    err: PathBuf,
}

impl Server {
    fn start(env: &Env, hosts: &Hosts, key: &Path, hold: Option<&Hold>) -> Server {
        let dir = env.subdir("serve");
        Self::start_wrapped(env, (&hosts.dst, DST_ADDR), key, hold, None, &dir)
    }

    /// At `(namespace, address)`.
    fn start_wrapped(
        env: &Env,
        (ns, addr): (&str, &'static str),
        key: &Path,
        hold: Option<&Hold>,
        wrap: Option<&str>,
        dir: &Path,
    ) -> Server {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let out = env.path().join(format!("serve-{n}.out"));
        let err = env.path().join(format!("serve-{n}.err"));
        let mut cmd = Command::new("nsenter");
        cmd.arg(Hosts::net(ns)).arg("--");
        if let Some(script) = wrap {
            cmd.args(["unshare", "-m", "sh", "-c", script, "sh"]);
        }
        cmd.arg(CKPT)
            .args(["haul", "serve", "--listen", &format!("{addr}:0"), "--dir"])
            .arg(dir)
            .arg("--key-file")
            .arg(key)
            .args(["--timeout", "5"]);
        if let Some(h) = hold {
            cmd.env("CKPT_TEST_HOLD", h.var());
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .expect("spawn nsenter");
        let pid = child.id() as i32;
        env.track(pid);
        drop(child);
        let start = Instant::now();
        let port = loop {
            let text = fs::read_to_string(&out).unwrap_or_default();
            if let Some(p) = text
                .lines()
                .find_map(|l| l.strip_prefix("listening on "))
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| p.parse().ok())
            {
                break p;
            }
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "haul serve did not listen; stderr:\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
            sleep(Duration::from_millis(10));
        };
        Server {
            addr,
            pid,
            port,
            out,
            err,
        }
    }

    /// The pids of the copies the server said run (`running as pid N` on its stdout).
    fn announced(&self) -> Vec<i32> {
        fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split("running as pid ").nth(1)?.trim().parse().ok())
            .collect()
    }

    fn to(&self) -> String {
        format!("{}:{}", self.addr, self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until the server's log has a line with `needle`; returns the lines with it.
    fn wait_log(&self, needle: &str) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines: Vec<String> = self
                .log()
                .lines()
                .filter(|l| l.contains(needle))
                .map(String::from)
                .collect();
            if !lines.is_empty() {
                return lines;
            }
            assert!(
                start.elapsed() < LINE_TIMEOUT,
                "the server never logged `{needle}`; log:\n{}",
                self.log()
            );
            sleep(Duration::from_millis(10));
        }
    }
}

/// Starts `rewrite MIB RATE` in the source's network namespace and checks it once.
fn start_workload(env: &Env, hosts: &Hosts, mib: &str, rate: &str) -> Workload {
    start_named(env, hosts, "rewrite", mib, rate)
}

/// `start_workload` with its output in `<name>.out`.
fn start_named(env: &Env, hosts: &Hosts, name: &str, mib: &str, rate: &str) -> Workload {
    start_rewrite(env, hosts, name, &[mib, rate])
}

/// `rewrite ARGS...` (after its directory) in the source's network namespace, checked once.
fn start_rewrite(env: &Env, hosts: &Hosts, name: &str, args: &[&str]) -> Workload {
    let bin = workload_bin("rewrite");
    let net = Hosts::net(&hosts.src);
    let mut argv = vec![
        OsStr::new(&net),
        OsStr::new("--"),
        bin.as_os_str(),
        env.path().as_os_str(),
    ];
    argv.extend(args.iter().map(OsStr::new));
    let mut w = env.spawn(name, Path::new("/usr/bin/nsenter"), &argv);
    w.exe = bin;
    env.wait_ready(&w);
    env.check(&mut w);
    w
}

/// One test's two hosts, key, server and workload (`rewrite MIB 50`).
/// Dropped in this order: the server first, while `env`'s directory still holds its
/// output (the copies it announced are killed), `env` (its processes) before `hosts`.
struct Scene {
    server: Server,
    w: Workload,
    env: Env,
    hosts: Hosts,
    key: PathBuf,
}

impl Scene {
    fn new(mib: &str, server_hold: Option<&str>) -> (Scene, Option<Hold>) {
        Self::with(&[mib, "50"], server_hold)
    }

    /// With `rewrite ARGS...` as the workload.
    fn with(args: &[&str], server_hold: Option<&str>) -> (Scene, Option<Hold>) {
        let env = Env::new();
        let hosts = Hosts::new();
        let key = key_file(&env, "key");
        let hold = server_hold.map(|p| Hold::new(&env, p));
        let server = Server::start(&env, &hosts, &key, hold.as_ref());
        let w = start_rewrite(&env, &hosts, "rewrite", args);
        (
            Scene {
                env,
                hosts,
                key,
                server,
                w,
            },
            hold,
        )
    }

    /// `ckpt migrate` of the workload to the server, in the background.
    fn migrate_bg(&self, extra: &[&str], hold: Option<&Hold>) -> Bg {
        migrate_bg(
            &self.env,
            &self.hosts.src,
            self.w.pid,
            &self.server.to(),
            &self.key,
            extra,
            hold,
        )
    }
}

type Bg = (std::process::Child, Vec<OsString>, PathBuf, PathBuf);

/// `ckpt migrate -t PID --to ... EXTRA` in the source's namespace, in the background.
fn migrate_bg(
    env: &Env,
    ns: &str,
    pid: i32,
    to: &str,
    key: &Path,
    extra: &[&str],
    hold: Option<&Hold>,
) -> Bg {
    migrate_bg_env(env, ns, pid, to, key, extra, hold, &[])
}

/// [`migrate_bg`] with more variables in ckpt's environment.
#[allow(clippy::too_many_arguments)]
fn migrate_bg_env(
    env: &Env,
    ns: &str,
    pid: i32,
    to: &str,
    key: &Path,
    extra: &[&str],
    hold: Option<&Hold>,
    vars: &[(&str, &str)],
) -> Bg {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let (out, err) = (
        env.path().join(format!("migrate-{n}.out")),
        env.path().join(format!("migrate-{n}.err")),
    );
    let mut args: Vec<OsString> = vec![
        "migrate".into(),
        "-t".into(),
        pid.to_string().into(),
        "--to".into(),
        to.into(),
        "--key-file".into(),
        key.into(),
        "--timeout".into(),
        "5".into(),
    ];
    args.extend(extra.iter().map(OsString::from));
    let mut cmd = Command::new("nsenter");
    cmd.arg(Hosts::net(ns)).arg("--").arg(CKPT).args(&args);
    if let Some(h) = hold {
        cmd.env("CKPT_TEST_HOLD", h.var());
    }
    cmd.envs(vars.iter().copied());
    let child = cmd
        .current_dir(env.path())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .expect("spawn nsenter");
    env.track(child.id() as i32);
    (child, args, out, err)
}

fn finish(env: &Env, (mut child, args, out, err): Bg) -> CkptOutput {
    let pid = child.id() as i32;
    let status = wait_child(&mut child, CKPT_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!(
            "ckpt migrate hung; stderr:\n{}",
            fs::read_to_string(&err).unwrap_or_default()
        )
    });
    env.untrack(pid);
    CkptOutput {
        args,
        status,
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

fn migrate(env: &Env, hosts: &Hosts, pid: i32, to: &str, key: &Path, extra: &[&str]) -> CkptOutput {
    finish(env, migrate_bg(env, &hosts.src, pid, to, key, extra, None))
}

fn ppid(pid: i32) -> i32 {
    status_field(pid, "PPid").unwrap().parse().unwrap()
}

/// After a successful migration: the source was killed (reaped here), the copy runs at
/// the destination in a pid namespace of its own, untraced, and passes its next check
/// with the next count.
fn assert_moved(env: &Env, w: &mut Workload, report: &serde_json::Value) {
    let new_pid = report["new_pid"].as_i64().expect("new_pid") as i32;
    env.reap_dumped(w.pid);
    // The copy's init (ckpt's, pid 1 of the new namespace) is the cleanup handle.
    env.track(ppid(new_pid));
    env.track(new_pid);
    // Restored lazily there: its pager seizes it a moment at the end.
    wait_filled(new_pid);
    assert_running_untraced(new_pid);
    let ns = status_field(new_pid, "NSpid").unwrap();
    assert!(
        ns.split_whitespace().nth(1) == Some(&w.pid.to_string()),
        "the copy {new_pid} should hold the dumped pid {} inside its namespace: NSpid {ns}",
        w.pid
    );
    w.pid = new_pid;
    env.check(w);
}

/// After a failed migration: the workload runs on at the source, untraced, correct.
fn assert_still_here(env: &Env, w: &mut Workload) {
    assert_running_untraced(w.pid);
    env.check(w);
}

#[test]
fn stop_and_copy_between_two_hosts_after_garbage() {
    let env = Env::new();
    let hosts = Hosts::new();
    let key = key_file(&env, "key");
    let server = Server::start(&env, &hosts, &key, None);
    // Not a ckpt peer, then a ckpt hello followed by a frame of 4 GiB: each dropped
    // with one line, the server serving on.
    let net = Hosts::net(&hosts.src);
    for (payload, needle) in [
        ("GET / HTTP/1.0\\r\\n\\r\\n", "not a ckpt haul peer"),
        (
            "CKPTHAUL\\000\\006\\377\\377\\377\\377",
            "a frame of 4294967295 bytes",
        ),
    ] {
        let st = Command::new("nsenter")
            .args([net.as_str(), "--", "bash", "-c"])
            .arg(format!(
                "printf '{payload}' >/dev/tcp/{DST_ADDR}/{}; sleep 0.2",
                server.port
            ))
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(server.wait_log(needle).len(), 1, "{}", server.log());
    }
    let mut w = start_workload(&env, &hosts, "64", "50");
    let out = migrate(&env, &hosts, w.pid, &server.to(), &key, &["--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    eprintln!("{report}");
    assert_eq!(report["mode"], "stop-and-copy");
    assert!(report["bytes"].as_u64().unwrap() > 64 << 20);
    // zstd only where it paid: never more on the wire than the images.
    assert!(report["wire_bytes"].as_u64().unwrap() <= report["bytes"].as_u64().unwrap());
    assert!(report["downtime_ms"].as_f64().unwrap() > 0.0);
    assert_moved(&env, &mut w, &report);
    // The migration's directory is gone once it ended.
    server.wait_log("restored, running");
    assert_eq!(
        fs::read_dir(env.path().join("serve")).unwrap().count(),
        0,
        "{}",
        listing(&env.path().join("serve"))
    );
}

#[test]
fn a_wrong_key_is_refused_and_the_workload_runs_on() {
    let (mut s, _) = Scene::new("16", None);
    let other = key_file(&s.env, "other");
    let out = migrate(&s.env, &s.hosts, s.w.pid, &s.server.to(), &other, &[]);
    out.failed_naming("handshake failed");
    out.failed_naming("runs on here");
    assert_eq!(s.server.wait_log("handshake failed").len(), 1);
    assert_still_here(&s.env, &mut s.w);
}

#[test]
fn sigint_while_streaming_resumes_the_workload() {
    let (mut s, _) = Scene::new("64", None);
    let hold = Hold::new(&s.env, "haul-sending");
    let bg = s.migrate_bg(&[], Some(&hold));
    let held = hold.reached();
    // The tree is stopped (traced by migrate's dump thread) while its images stream.
    assert_ne!(status_field(s.w.pid, "TracerPid").as_deref(), Some("0"));
    assert!(signal(held, libc::SIGINT));
    let out = finish(&s.env, bg);
    out.failed_naming("interrupted by SIGINT");
    s.server.wait_log("the source gave up");
    assert_still_here(&s.env, &mut s.w);
}

/// A dump that takes longer than both ends' timeout (5 s here; a pre-dump of a big tree,
/// or a loaded machine): the source keeps the link alive while it waits, and the
/// migration goes through.
#[test]
fn a_dump_longer_than_the_timeout_keeps_the_link_alive() {
    let (mut s, _) = Scene::new("16", None);
    let hold = Hold::new(&s.env, "seized");
    let bg = s.migrate_bg(&["--json"], Some(&hold));
    hold.reached();
    // Held past the server's 5 s timeout on purpose: the wait is what is tested.
    std::thread::sleep(Duration::from_secs(7));
    hold.release();
    let out = finish(&s.env, bg).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_moved(&s.env, &mut s.w, &report);
    s.server.wait_log("restored, running");
}

#[test]
fn the_destination_dying_mid_transfer_leaves_the_workload_running() {
    let (mut s, hold) = Scene::new("64", Some("haul-receiving"));
    let bg = s.migrate_bg(&[], None);
    assert_eq!(hold.unwrap().reached(), s.server.pid);
    s.env.kill_and_reap(s.server.pid);
    let out = finish(&s.env, bg);
    let line = out.failed_naming("runs on here");
    assert!(
        line.contains("closed the connection") || line.contains("reset"),
        "{line}"
    );
    assert_still_here(&s.env, &mut s.w);
}

#[test]
fn a_cut_link_times_out_and_the_workload_runs_on() {
    let (mut s, hold) = Scene::new("64", Some("haul-receiving"));
    let hold = hold.unwrap();
    let bg = s.migrate_bg(&[], None);
    hold.reached();
    s.hosts.cut();
    hold.release();
    let out = finish(&s.env, bg);
    out.failed_naming("no progress for 5 s");
    // The server gives up on its side too, with one line.
    assert_eq!(s.server.wait_log("dropped").len(), 1, "{}", s.server.log());
    assert_still_here(&s.env, &mut s.w);
}

/// Also: `--stage-dir` is a place for a fresh directory of the run's own, removed at the
/// end; what else is in it stays (a directory `rfoo` included).
#[test]
fn a_damaged_image_is_refused_by_the_destination() {
    let (mut s, _) = Scene::new("16", None);
    let stage = s.env.path().join("stage");
    fs::create_dir_all(stage.join("rfoo")).unwrap();
    fs::write(stage.join("rfoo/keep"), "mine").unwrap();
    let hold = Hold::new(&s.env, "haul-dumped");
    let stage_arg = stage.to_string_lossy().to_string();
    let bg = s.migrate_bg(&["--stage-dir", &stage_arg], Some(&hold));
    hold.reached();
    let staged: Vec<PathBuf> = fs::read_dir(&stage)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("ckpt-haul-")
        })
        .collect();
    assert_eq!(staged.len(), 1, "{}", listing(&stage));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&staged[0]).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // One byte of memory flipped in the staged image, before it is sent.
    let pages = staged[0].join("r0/pages-1.img");
    let mut bytes = fs::read(&pages).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    fs::write(&pages, bytes).unwrap();
    hold.release();
    let out = finish(&s.env, bg);
    let line = out.failed_naming("restore failed");
    assert!(line.contains("checksum"), "{line}");
    assert!(!staged[0].exists(), "the staged rounds are left behind");
    assert_eq!(
        fs::read_to_string(stage.join("rfoo/keep")).unwrap(),
        "mine",
        "{}",
        listing(&stage)
    );
    assert_still_here(&s.env, &mut s.w);
}

/// Waits until no copy of `w` runs (a killed one may take a moment to go); returns when
/// the wait began.
fn no_copy_left(env: &Env, w: &Workload) -> Instant {
    let start = Instant::now();
    while !copies(env, w).is_empty() && start.elapsed() < LINE_TIMEOUT {
        sleep(Duration::from_millis(10));
    }
    assert_eq!(copies(env, w), Vec::<i32>::new(), "a copy was left");
    start
}

/// Processes other than `w` itself running `w`'s program (its command line holds `env`'s
/// unique directory) with `w`'s pid inside a pid namespace of their own: copies of it.
fn copies(env: &Env, w: &Workload) -> Vec<i32> {
    let needle = env.path().to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let ns = status_field(p, "NSpid").unwrap_or_default();
            let ns: Vec<&str> = ns.split_whitespace().collect();
            let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            p != w.pid
                && ns.len() >= 2
                && ns.last() == Some(&w.pid.to_string().as_str())
                && status_field(p, "State").is_some_and(|s| !s.starts_with('Z'))
                && String::from_utf8_lossy(&cmd).contains(&needle)
        })
        .collect()
}

/// SIGINT to `ckpt migrate` while the destination's restore is held half-way (the
/// process exists there, its state not yet back): the source resumes its tree, and the
/// destination stops the restore: no copy is left there, its directory is gone.
#[test]
fn sigint_during_the_destinations_restore_leaves_no_copy_there() {
    let (mut s, hold) = Scene::new("16", Some("restore-puppet"));
    let hold = hold.unwrap();
    let bg = s.migrate_bg(&[], None);
    let restorer = hold.reached();
    // Held inside the restore: the copy's process exists at the destination.
    assert_eq!(copies(&s.env, &s.w).len(), 1, "no copy being restored");
    assert!(signal(bg.0.id() as i32, libc::SIGINT));
    let out = finish(&s.env, bg);
    out.failed_naming("interrupted by SIGINT");
    s.server.wait_log("the source gave up during the restore");
    let start = Instant::now();
    while (exists(restorer) || !copies(&s.env, &s.w).is_empty()) && start.elapsed() < LINE_TIMEOUT {
        sleep(Duration::from_millis(10));
    }
    assert!(!exists(restorer), "the restore {restorer} still runs");
    assert_eq!(copies(&s.env, &s.w), Vec::<i32>::new(), "a copy was left");
    let serve = s.env.path().join("serve");
    while fs::read_dir(&serve).unwrap().count() > 0 && start.elapsed() < LINE_TIMEOUT {
        sleep(Duration::from_millis(10));
    }
    assert_eq!(
        fs::read_dir(&serve).unwrap().count(),
        0,
        "{}",
        listing(&serve)
    );
    hold.release();
    assert_still_here(&s.env, &mut s.w);
}

/// Processes of ckpt restoring (or paging for) a migration of this test's server: their
/// command line names its directory under `env`.
fn restorers(env: &Env) -> Vec<i32> {
    let needle = env.path().join("serve").to_string_lossy().into_owned();
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| {
            let cmd = fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let cmd = String::from_utf8_lossy(&cmd);
            cmd.contains("restore")
                && cmd.contains(&needle)
                && status_field(p, "State").is_some_and(|s| !s.starts_with('Z'))
        })
        .collect()
}

/// Waits until none of `pids` exists (or the line timeout); those left.
fn outlived(pids: &[i32]) -> Vec<i32> {
    let start = Instant::now();
    let left = || {
        pids.iter()
            .copied()
            .filter(|&p| exists(p) && proc_state(p) != Some('Z'))
    };
    while left().next().is_some() && start.elapsed() < LINE_TIMEOUT {
        sleep(Duration::from_millis(10));
    }
    left().collect()
}

/// The destination's server is killed (SIGKILL: no cleanup of its own) while its
/// restore is held half-way: the session is lost, so the source resumes its tree, and
/// the restore must not finish there on its own: it dies with the server, and its
/// namespace (the copy being made) with it. Checked by pid: the restore, the copy.
#[test]
fn a_destination_killed_mid_restore_leaves_no_restore_and_no_copy() {
    let (mut s, hold) = Scene::new("16", Some("restore-puppet"));
    let hold = hold.unwrap();
    let bg = s.migrate_bg(&[], None);
    let restorer = hold.reached();
    let made = copies(&s.env, &s.w);
    assert_eq!(made.len(), 1, "no copy being restored");
    assert!(signal(s.server.pid, libc::SIGKILL));
    let mut watched = vec![restorer];
    watched.extend(&made);
    nothing_left_after(&mut s, bg, &watched);
    hold.release();
}

/// Post-copy: the destination's server is killed while the copy runs there with its
/// memory still at the source (held at `haul-post-copy`). The copy's pager, which can
/// no longer get a page, kills it (it never reads one that did not come) and exits;
/// the source resumes its tree. Checked by pid: the copy, its init, the pager.
#[test]
fn a_destination_killed_during_post_copy_leaves_nothing_there() {
    let (mut s, _) = Scene::new("64", None);
    let hold = Hold::new(&s.env, "haul-post-copy");
    let bg = s.migrate_bg(&["--post-copy"], Some(&hold));
    hold.reached();
    let copy = s.server.announced();
    assert_eq!(copy.len(), 1, "{}", s.server.log());
    let mut watched = restorers(&s.env);
    assert!(!watched.is_empty(), "no pager for the copy");
    watched.push(copy[0]);
    watched.push(ppid(copy[0]));
    assert!(signal(s.server.pid, libc::SIGKILL));
    hold.release();
    nothing_left_after(&mut s, bg, &watched);
}

/// The migration `bg` failed and the source runs on; none of `watched` (pids at the
/// destination) outlives the failure, and no restore, pager or copy of this test is left.
fn nothing_left_after(s: &mut Scene, bg: Bg, watched: &[i32]) {
    let out = finish(&s.env, bg);
    out.failed_naming("runs on here");
    let left = outlived(watched);
    assert_eq!(left, Vec::<i32>::new(), "left at the destination");
    let left = restorers(&s.env);
    assert_eq!(left, Vec::<i32>::new(), "a restore or pager was left");
    assert_eq!(copies(&s.env, &s.w), Vec::<i32>::new(), "a copy was left");
    assert_still_here(&s.env, &mut s.w);
}

#[test]
fn a_failed_restore_at_the_destination_leaves_the_workload_running() {
    let env = Env::new();
    let hosts = Hosts::new();
    // At the destination the workload's directory is an empty tmpfs: its output file
    // cannot be reopened there, so the restore fails.
    let elsewhere = Env::new();
    let key = key_file(&elsewhere, "key");
    let script = format!(
        "mount -t tmpfs none {} && exec \"$@\"",
        env.path().display()
    );
    let server = Server::start_wrapped(
        &env,
        (&hosts.dst, DST_ADDR),
        &key,
        None,
        Some(&script),
        &elsewhere.subdir("serve"),
    );
    let mut w = start_workload(&env, &hosts, "16", "50");
    let out = migrate(&env, &hosts, w.pid, &server.to(), &key, &[]);
    let line = out.failed_naming("restore failed");
    assert!(line.contains("runs on here"), "{line}");
    assert_eq!(server.wait_log("dropped").len(), 1, "{}", server.log());
    assert_still_here(&env, &mut w);
}

/// 256 MiB, a quarter of it rewritten at 50 MiB/s while the rounds run: the first round
/// carries all of it, the later ones only what was written since, the final one the rest
/// while the tree is stopped; the copy verifies every page.
#[test]
fn pre_copy_moves_a_busy_workload_and_every_page_arrives() {
    let (mut s, _) = Scene::new("256", None);
    let out = finish(&s.env, s.migrate_bg(&["--pre-copy", "--json"], None));
    if !out.status.success() {
        eprintln!("the server's log:\n{}", s.server.log());
    }
    let out = out.ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    eprintln!("{report:#}");
    assert_eq!(report["mode"], "pre-copy");
    let rounds = report["rounds"].as_array().unwrap();
    assert!(rounds.len() >= 2, "{report}");
    assert_eq!(rounds[0]["kind"], "pre-copy");
    assert!(rounds[0]["page_bytes"].as_u64().unwrap() >= 256 << 20);
    let last = rounds.last().unwrap();
    assert_eq!(last["kind"], "final");
    // After the freeze, the final round carries only what the tree wrote since the round
    // before (its copy made while the tree still ran went before the freeze).
    let after_freeze = last["page_bytes"].as_u64().unwrap() - last["live_bytes"].as_u64().unwrap();
    assert!(after_freeze < 128 << 20, "{report}");
    assert!(report["pre_copy_end"].is_string());
    // Each pre-copy round says what sending it again would take; from the second on, the
    // tree's write rate.
    for (i, r) in rounds
        .iter()
        .filter(|r| r["kind"] == "pre-copy")
        .enumerate()
    {
        assert!(r["est_send_ms"].is_number(), "{r}");
        assert_eq!(r["dirty_mb_s"].is_number(), i > 0, "{r}");
    }
    assert_moved(&s.env, &mut s.w, &report);
}

/// Post-copy: 256 MiB, a quarter of it rewritten at 50 MiB/s. The tree freezes, every
/// file but its pages goes, the copy is restored lazily at the destination and runs at
/// once; its memory follows (the chunks it touches first), and only then is the source
/// killed. The copy verifies every page of it.
#[test]
fn post_copy_runs_the_copy_before_its_memory_and_every_page_arrives() {
    let (mut s, _) = Scene::new("256", None);
    let out = finish(&s.env, s.migrate_bg(&["--post-copy", "--json"], None)).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    eprintln!("{report:#}\n{}", out.stderr);
    assert_eq!(report["mode"], "post-copy");
    let pc = &report["post_copy"];
    assert!(pc["page_bytes"].as_u64().unwrap() >= 256 << 20, "{report}");
    assert!(pc["ms"].as_f64().unwrap() > 0.0, "{report}");
    let rounds = report["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 1, "{report}");
    assert_eq!(rounds[0]["kind"], "final");
    assert!(report["downtime_ms"].as_f64().unwrap() > 0.0);
    assert_moved(&s.env, &mut s.w, &report);
    // Once more after every page is in: the whole memory checked again.
    s.env.check(&mut s.w);
}

/// Post-copy's frozen dump no longer reads the memory: the source hashes each chunk as
/// it sends it. A wrong checksum for one chunk (a test-only switch of the source) is
/// caught at the destination before it says everything is in: the copy is killed there,
/// the source resumes its tree, whole, and nothing is left at the destination.
#[test]
fn a_wrong_chunk_checksum_during_post_copy_kills_the_copy_and_the_source_resumes() {
    let (mut s, _) = Scene::new("64", None);
    let bg = migrate_bg_env(
        &s.env,
        &s.hosts.src,
        s.w.pid,
        &s.server.to(),
        &s.key,
        &["--post-copy"],
        None,
        &[("CKPT_TEST_BAD_CHUNK_SUM", "3")],
    );
    let out = finish(&s.env, bg);
    // The destination's reason may not reach the source (it closes while the source
    // still sends): its log has it.
    out.failed_naming("post-copy broke off");
    out.failed_naming("runs on here");
    s.server.wait_log("does not match the checksum");
    no_copy_left(&s.env, &s.w);
    assert_still_here(&s.env, &mut s.w);
}

/// The link is cut while the copy runs at the destination with most of its memory still
/// at the source (held at `haul-post-copy`: the copy runs, no page has followed yet).
/// The copy cannot go on: it is killed there (it never reads a page that did not come);
/// the source, frozen and whole all along, resumes its tree and says so.
#[test]
fn a_link_cut_during_post_copy_kills_the_copy_and_the_source_resumes() {
    let (mut s, _) = Scene::new("256", None);
    let hold = Hold::new(&s.env, "haul-post-copy");
    let bg = s.migrate_bg(&["--post-copy"], Some(&hold));
    hold.reached();
    // The copy runs at the destination (its argv, on a stack page still at the source,
    // cannot be read from outside: found by the pid the server logged); the source's
    // tree is still stopped here.
    let line = s.server.wait_log("its memory follows").remove(0);
    let copy: i32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line}"));
    let ns = status_field(copy, "NSpid").unwrap();
    assert_eq!(
        ns.split_whitespace().nth(1),
        Some(s.w.pid.to_string().as_str()),
        "{ns}"
    );
    assert_ne!(status_field(s.w.pid, "TracerPid").as_deref(), Some("0"));
    s.hosts.cut();
    hold.release();
    let out = finish(&s.env, bg);
    out.failed_naming("post-copy broke off");
    out.failed_naming("runs on here");
    s.server.wait_log("cannot go on and is killed");
    let start = no_copy_left(&s.env, &s.w);
    while exists(copy) && start.elapsed() < LINE_TIMEOUT {
        sleep(Duration::from_millis(10));
    }
    assert!(
        !exists(copy),
        "the copy {copy} still runs at the destination"
    );
    assert_still_here(&s.env, &mut s.w);
}

/// `--pre-copy --post-copy`: a writer as fast as it can (its hot quarter rewritten whole
/// every round) with a budget of 1 ms: the rounds stop shrinking, and post-copy takes
/// over: the final round (on top of the chain) has its pages sent after the copy runs.
#[test]
fn pre_copy_that_does_not_converge_ends_in_post_copy() {
    let (mut s, _) = Scene::with(&["64", "0"], None);
    let out = finish(
        &s.env,
        s.migrate_bg(
            &["--pre-copy", "--post-copy", "--max-downtime", "1", "--json"],
            None,
        ),
    )
    .ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    eprintln!("{report:#}");
    assert!(
        report["pre_copy_end"]
            .as_str()
            .is_some_and(|e| e.contains("not converging") && e.ends_with("post-copy")),
        "{report}"
    );
    assert_eq!(report["mode"], "pre-copy, post-copy", "{report}");
    assert!(report["post_copy"]["page_bytes"].as_u64().unwrap() > 0);
    assert_moved(&s.env, &mut s.w, &report);
}

/// Post-copy takes one process (the lazy restore's limit): a tree (rewrite with a child)
/// has its pages sent at once instead, said in the log, and moves whole.
#[test]
fn post_copy_of_a_tree_sends_its_pages_at_once() {
    let (mut s, _) = Scene::with(&["16", "50", "1", "1"], None);
    let out = finish(&s.env, s.migrate_bg(&["--post-copy", "--json"], None)).ok();
    assert!(
        out.stderr
            .contains("the lazy restore takes one process, this is a tree of 2"),
        "{}",
        out.stderr
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(report["mode"], "stop-and-copy", "{report}");
    assert!(report["post_copy"].is_null(), "{report}");
    assert_moved(&s.env, &mut s.w, &report);
}

/// Refused before anything is stopped or sent: a key file that is no key, a destination
/// where nobody listens, a pid that does not exist.
#[test]
fn bad_input_is_refused_in_one_line_and_the_workload_runs_on() {
    let (mut s, _) = Scene::new("16", None);
    let bad = s.env.path().join("bad.key");
    fs::write(&bad, "not a key\n").unwrap();
    let out = migrate(&s.env, &s.hosts, s.w.pid, &s.server.to(), &bad, &[]);
    out.failed_naming("expected 32 bytes, or 64 hex digits");
    // A port nobody listens on (the server's port + 1 on the same host is free: the
    // namespace is the test's own).
    let nobody = format!("{DST_ADDR}:{}", s.server.port.wrapping_add(1).max(1));
    let out = migrate(&s.env, &s.hosts, s.w.pid, &nobody, &s.key, &[]);
    out.failed_naming("connecting to");
    // No such process: refused by the dump, the destination told.
    let gone = unused_pid();
    let out = migrate(&s.env, &s.hosts, gone, &s.server.to(), &s.key, &[]);
    let line = out.failed_naming("runs on here");
    assert!(mentions_number(&line, gone as i64), "{line}");
    s.server.wait_log("the source gave up");
    assert_still_here(&s.env, &mut s.w);
}

/// Two migrations to one server at once: each in a directory of the server's naming, each
/// copy whole and correct.
#[test]
fn two_migrations_at_once_each_in_its_own_directory() {
    let (mut s, hold) = Scene::new("32", Some("haul-received"));
    let hold = hold.unwrap();
    let mut w2 = start_named(&s.env, &s.hosts, "second", "32", "50");
    // The first waits at the server with everything received, while the second runs.
    let first = s.migrate_bg(&["--json"], None);
    hold.reached();
    let second = migrate_bg(
        &s.env,
        &s.hosts.src,
        w2.pid,
        &s.server.to(),
        &s.key,
        &["--json"],
        None,
    );
    let out2 = finish(&s.env, second).ok();
    let dirs: Vec<String> = fs::read_dir(s.env.path().join("serve"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The held one's directory is still there; the second's is gone once it ended.
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    assert!(dirs[0].starts_with('m'), "{dirs:?}");
    hold.release();
    let out1 = finish(&s.env, first).ok();
    let r1: serde_json::Value = serde_json::from_str(&out1.stdout).unwrap();
    let r2: serde_json::Value = serde_json::from_str(&out2.stdout).unwrap();
    assert_ne!(r1["new_pid"], r2["new_pid"]);
    assert_moved(&s.env, &mut s.w, &r1);
    assert_moved(&s.env, &mut w2, &r2);
    let logged = s.server.wait_log("restored, running");
    assert_eq!(logged.len(), 2, "{}", s.server.log());
}

/// Back and forth three times: to the destination, back to the source (a server there),
/// and again; each copy (in a pid namespace of the restore's) is dumped by its outer pid
/// and passes its check with the next count.
/// Waits until `pid` holds no userfaultfd and is not traced: a lazy restore's pager has
/// put every page in, closed the process's copy (seized for that) and let it go.
fn wait_filled(pid: i32) {
    let start = Instant::now();
    let holds = || {
        status_field(pid, "TracerPid").is_some_and(|t| t != "0")
            || fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|d| {
                d.flatten().any(|e| {
                    fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().contains("userfaultfd"))
                })
            })
    };
    while holds() {
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "pid {pid} still holds a userfaultfd"
        );
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn three_migrations_back_and_forth() {
    let (mut s, _) = Scene::new("32", None);
    let back_dir = s.env.subdir("serve-back");
    let back = Server::start_wrapped(
        &s.env,
        (&s.hosts.src, SRC_ADDR),
        &s.key,
        None,
        None,
        &back_dir,
    );
    for (i, (from, to)) in [
        (&s.hosts.src, s.server.to()),
        (&s.hosts.dst, back.to()),
        (&s.hosts.src, s.server.to()),
    ]
    .into_iter()
    .enumerate()
    {
        let old_init = (i > 0).then(|| ppid(s.w.pid));
        // A copy restored lazily migrates again once its pager is done (its userfaultfd
        // closed): until then the dump refuses it, and it runs on.
        wait_filled(s.w.pid);
        let bg = migrate_bg(&s.env, from, s.w.pid, &to, &s.key, &["--json"], None);
        let out = finish(&s.env, bg).ok();
        let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        let new_pid = report["new_pid"].as_i64().unwrap() as i32;
        if i == 0 {
            assert_moved(&s.env, &mut s.w, &report);
        } else {
            // The copy before was under an init of a restore (ours to reap): it ends with
            // its only process.
            let old = s.w.pid;
            for p in [old, old_init.unwrap()] {
                let start = Instant::now();
                while exists(p) && start.elapsed() < LINE_TIMEOUT {
                    let _ = reap(p, Duration::from_millis(50));
                }
                assert!(
                    !exists(p),
                    "pid {p} still there after the migration of {old}"
                );
                s.env.untrack(p);
            }
            s.env.track(ppid(new_pid));
            s.env.track(new_pid);
            wait_filled(new_pid);
            assert_running_untraced(new_pid);
            s.w.pid = new_pid;
            s.env.check(&mut s.w);
        }
    }
    assert_eq!(s.w.passes, 4);
}

/// Two servers on one `--dir`: the second leaves the first's live migration directory
/// alone (and names its own differently); a server starting there alone removes what a
/// crashed one left (`m...` directories), and nothing else.
#[test]
fn servers_share_a_dir_and_a_crashed_ones_leftovers_are_removed() {
    let (mut s, hold) = Scene::new("16", Some("haul-received"));
    let hold = hold.unwrap();
    let dir = s.env.path().join("serve");
    let bg = s.migrate_bg(&["--json"], None);
    hold.reached();
    let live: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(live.len(), 1, "{}", listing(&dir));
    let second = Server::start_wrapped(&s.env, (&s.hosts.dst, DST_ADDR), &s.key, None, None, &dir);
    assert!(
        live[0].is_dir(),
        "the second server removed the first's migration"
    );
    hold.release();
    let out = finish(&s.env, bg).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_moved(&s.env, &mut s.w, &report);
    // Both servers end as a crash would; one left a migration directory behind.
    s.env.kill_and_reap(s.server.pid);
    s.env.kill_and_reap(second.pid);
    let stale = dir.join("m4242-7-1700000000000");
    fs::create_dir_all(stale.join("r0")).unwrap();
    fs::write(stale.join("r0/inventory.img"), "x").unwrap();
    fs::create_dir(dir.join("mine")).unwrap();
    let third = Server::start_wrapped(&s.env, (&s.hosts.dst, DST_ADDR), &s.key, None, None, &dir);
    assert!(!stale.exists(), "{}", listing(&dir));
    assert!(dir.join("mine").is_dir(), "{}", listing(&dir));
    third.wait_log("left by a server that ended");
}

/// A server with one migration slot, taken: the next source proves the key, hears
/// "busy" before it stops anything, and its workload runs on; the first completes.
#[test]
fn a_full_server_answers_busy_before_anything_is_stopped() {
    let env = Env::new();
    let hosts = Hosts::new();
    let key = key_file(&env, "key");
    let hold = Hold::new(&env, "haul-received");
    let server = Server::start_wrapped(
        &env,
        (&hosts.dst, DST_ADDR),
        &key,
        Some(&hold),
        Some("exec \"$@\" --max-migrations 1"),
        &env.subdir("serve"),
    );
    let mut w = start_workload(&env, &hosts, "16", "50");
    let mut w2 = start_named(&env, &hosts, "second", "16", "50");
    let first = migrate_bg(
        &env,
        &hosts.src,
        w.pid,
        &server.to(),
        &key,
        &["--json"],
        None,
    );
    hold.reached();
    let out = migrate(&env, &hosts, w2.pid, &server.to(), &key, &[]);
    let line = out.failed_naming("busy: 1 migrations already running");
    assert!(line.contains("runs on here"), "{line}");
    server.wait_log("turned away: busy");
    assert_still_here(&env, &mut w2);
    hold.release();
    let out = finish(&env, first).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_moved(&env, &mut w, &report);
}

/// A final round whose parent link leaves the migration (here: the source's own staged
/// round, by absolute path, which exists on this one machine and would restore) is
/// refused by the destination before any restore; the workload runs on.
#[test]
fn a_parent_link_outside_the_migration_is_refused() {
    let (mut s, _) = Scene::new("16", None);
    let stage = s.env.path().join("stage");
    let hold = Hold::new(&s.env, "haul-dumped");
    let stage_arg = stage.to_string_lossy().to_string();
    let bg = s.migrate_bg(&["--pre-copy", "--stage-dir", &stage_arg], Some(&hold));
    hold.reached();
    let staged = fs::read_dir(&stage)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let last = (0..16)
        .rev()
        .find(|k| staged.join(format!("r{k}")).is_dir())
        .expect("a staged round");
    assert!(last > 0, "no pre-copy round: {}", listing(&staged));
    let fin = staged.join(format!("r{last}"));
    let mut inv = read_inventory(&fin);
    let link = inv.parent.as_mut().expect("the final round's parent link");
    assert_eq!(link.dir, format!("../r{}", last - 1));
    link.dir = staged
        .join(format!("r{}", last - 1))
        .to_string_lossy()
        .into_owned();
    write_inventory(&fin, &inv);
    hold.release();
    let out = finish(&s.env, bg);
    let line = out.failed_naming("is not an earlier round of this migration");
    assert!(line.contains("runs on here"), "{line}");
    assert!(!s.server.log().contains("restored, running"));
    assert_still_here(&s.env, &mut s.w);
}

/// The staged final round's pages file copied before the freeze, and its copy at the
/// destination (in the only migration directory of `serve`), once `hold` is reached.
fn live_files(stage: &Path, serve: &Path) -> (PathBuf, PathBuf) {
    let staged = fs::read_dir(stage).unwrap().next().unwrap().unwrap().path();
    let last = (0..16)
        .rev()
        .find(|k| staged.join(format!("r{k}")).is_dir())
        .expect("a staged round");
    assert!(last > 0, "no pre-copy round: {}", listing(&staged));
    let migration = fs::read_dir(serve)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with('m'))
        .unwrap_or_else(|| panic!("no migration directory: {}", listing(serve)));
    let name = format!("r{last}/pages-2.img");
    (staged.join(&name), migration.join(&name))
}

/// Pre-copy of 16 MiB rewritten at 50 MiB/s: the final round's copy made while the tree
/// still ran (pages-2.img) is at the destination, byte for byte, once the tree is frozen
/// (hold `haul-dumped`: the final dump is done, nothing of it sent after the freeze yet),
/// and the report counts it as sent before the freeze. The copy verifies every page.
#[test]
fn pre_copy_sends_the_final_rounds_live_copy_before_the_freeze() {
    let (mut s, _) = Scene::new("16", None);
    let stage = s.env.path().join("stage");
    let hold = Hold::new(&s.env, "haul-dumped");
    let stage_arg = stage.to_string_lossy().to_string();
    let bg = s.migrate_bg(
        &["--pre-copy", "--json", "--stage-dir", &stage_arg],
        Some(&hold),
    );
    hold.reached();
    let (here, there) = live_files(&stage, &s.env.path().join("serve"));
    let staged = fs::read(&here).unwrap();
    assert!(staged.len() > 4096, "nothing copied before the freeze");
    let arrived = fs::read(&there).unwrap_or_else(|e| panic!("{}: {e}", there.display()));
    assert!(
        arrived == staged,
        "{} holds {} bytes of the {} staged, or other ones",
        there.display(),
        arrived.len(),
        staged.len()
    );
    // The tree is frozen and nothing else of the final round is there yet.
    assert_ne!(status_field(s.w.pid, "TracerPid").as_deref(), Some("0"));
    assert!(!there.with_file_name("inventory.img").exists());
    hold.release();
    let out = finish(&s.env, bg).ok();
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    let last = report["rounds"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "final");
    assert_eq!(
        last["live_bytes"].as_u64(),
        Some(staged.len() as u64),
        "{report}"
    );
    assert_moved(&s.env, &mut s.w, &report);
}

/// SIGINT while the final round's copy before the freeze is being sent (hold `haul-live`:
/// its first piece went, the tree still runs): the migration fails, the destination
/// drops it, and the workload runs on here as it was.
#[test]
fn sigint_while_sending_the_live_copy_resumes_the_workload() {
    let (mut s, _) = Scene::new("64", None);
    let hold = Hold::new(&s.env, "haul-live");
    let bg = s.migrate_bg(&["--pre-copy"], Some(&hold));
    let held = hold.reached();
    assert!(signal(held, libc::SIGINT));
    let out = finish(&s.env, bg);
    out.failed_naming("interrupted by SIGINT");
    s.server.wait_log("the source gave up");
    assert_still_here(&s.env, &mut s.w);
}

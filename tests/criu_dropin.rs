//! ckpt as a drop-in for CRIU: started as `criu` (a symlink in a PATH directory of the
//! test's) or as `ckpt criu`, it answers CRIU's command line and CRIU's RPC (`criu swrk
//! N`, spoken here by a client of the test's own, as go-criu speaks it: one protobuf per
//! SEQPACKET datagram). Self-checking workloads go through three dump/restore cycles
//! each way; refused options and refused notifications leave them running untouched; and
//! runc 1.1.5 checkpoints a busybox container through it.

mod common;

use ckpt_criu::rpc::{CriuFeatures, CriuOpts, CriuReq, CriuReqType, CriuResp};
use common::dropin::*;
use common::*;
use nix::sys::socket::{recv, send, socketpair, AddressFamily, MsgFlags, SockFlag, SockType};
use prost::Message;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------
// The command line

#[test]
fn version_and_check_answer_as_criu() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let v = env.run_program(&criu, &["--version"]).ok();
    assert_eq!(v.stdout, "Version: 3.17.1\n", "{v}");
    let v = env.ckpt(&["criu", "--version"]).ok();
    assert_eq!(v.stdout, "Version: 3.17.1\n", "{v}");
    let c = env.run_program(&criu, &["check"]).ok();
    assert_eq!(c.stdout, "Looks good.\n", "{c}");
}

#[test]
fn unknown_and_unsupported_options_are_refused_by_name() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let dir = env.subdir("img");
    let d = dir.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["dump", "-t", "1", "-D", d, "--no-such-flag"],
            "--no-such-flag",
        ),
        (&["dump", "-t", "1", "-D", d, "-Z"], "-Z"),
        (
            &["dump", "-t", "1", "-D", d, "--manage-cgroups=strict"],
            "--manage-cgroups=strict",
        ),
        (
            &["dump", "-t", "1", "-D", d, "--external", "unix[1234]"],
            "--external unix[1234]",
        ),
        (
            &["restore", "-D", d, "--external", "macvlan[eth0]:eno1"],
            "macvlan",
        ),
        (&["restore", "-D", d, "--leave-running"], "--leave-running"),
        (&["frobnicate"], "frobnicate"),
    ];
    for (args, needle) in cases {
        let out = env.run_program(&criu, args);
        assert!(!out.success(), "{out}");
        assert!(out.stdout.is_empty(), "{out}");
        assert!(out.stderr.contains(needle), "should name {needle}: {out}");
        assert_eq!(out.stderr.trim().lines().count(), 1, "one line: {out}");
    }
    // Nothing was dumped into the directory by any of them.
    assert_eq!(fs::read_dir(&dir).unwrap().count(), 0);
}

/// An action script that appends `ACTION PID` to `log` for each notification.
fn action_script(env: &Env, log: &Path) -> PathBuf {
    let script = env.path().join("action.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$CRTOOLS_SCRIPT_ACTION ${{CRTOOLS_INIT_PID:-0}}\" >> {}\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `criu dump -t PID -D DIR -o dump.log --action-script SCRIPT EXTRA...`.
fn criu_dump(
    env: &Env,
    criu: &Path,
    pid: i32,
    dir: &Path,
    script: &Path,
    extra: &[&str],
) -> CkptOutput {
    let pid = pid.to_string();
    let mut args = vec![
        "dump",
        "-t",
        &pid,
        "-D",
        dir.to_str().unwrap(),
        "-o",
        "dump.log",
    ];
    args.extend(["--action-script", script.to_str().unwrap()]);
    args.extend(extra);
    env.run_program(criu, &args)
}

#[test]
fn command_line_dump_restore_three_cycles_with_action_scripts() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let calls = env.path().join("actions.log");
    let script = action_script(&env, &calls);
    let mut w = env.start("mem");
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        let extra = ["-v4", "--shell-job", "--file-locks"];
        criu_dump(&env, &criu, w.pid, &dir, &script, &extra).ok();
        let log = fs::read_to_string(dir.join("dump.log")).unwrap();
        assert!(log.contains("dump done"), "{log}");
        assert!(dir.join("ckpt/inventory.img").is_file());
        env.reap_dumped(w.pid);
        let args = [
            "restore",
            "-D",
            dir.to_str().unwrap(),
            "-d",
            "-o",
            "restore.log",
            "--action-script",
            script.to_str().unwrap(),
        ];
        env.run_program(&criu, &args).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        env.check(&mut w);
        let seen = fs::read_to_string(&calls).unwrap();
        let p = w.pid;
        assert_eq!(
            seen,
            format!(
                "pre-dump 0\npost-dump 0\npre-restore 0\nsetup-namespaces {p}\n\
                 post-setup-namespaces 0\npost-restore {p}\nnetwork-unlock 0\npre-resume 0\n\
                 post-resume 0\n"
            ),
            "CRIU's order, cycle {i}"
        );
        fs::remove_file(&calls).unwrap();
    }
}

#[test]
fn a_failing_action_script_fails_the_dump_and_leaves_the_workload_running() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let script = env.path().join("veto.sh");
    fs::write(
        &script,
        "#!/bin/sh\n[ \"$CRTOOLS_SCRIPT_ACTION\" != post-dump ]\n",
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let mut w = env.start("mem");
    let dir = env.subdir("img");
    let out = criu_dump(&env, &criu, w.pid, &dir, &script, &[]);
    assert!(!out.success(), "{out}");
    let log = fs::read_to_string(dir.join("dump.log")).unwrap();
    let err = log
        .lines()
        .find(|l| l.starts_with("Error (ckpt):"))
        .unwrap_or("");
    assert!(err.contains("post-dump"), "{log}");
    assert_running_untraced(w.pid);
    env.check(&mut w);
}

/// A root with a parent death signal (LXC's init has SIGKILL; kstate asks for SIGWINCH)
/// keeps it when restored as a sibling of ckpt: `criu restore --restore-sibling -d` makes
/// it the test's child again, and it checks PR_GET_PDEATHSIG itself, three cycles. As
/// ckpt's own child it is refused by name, nothing made, the image kept.
#[test]
fn parent_death_signal_root_restores_as_a_sibling_three_cycles() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let script = action_script(&env, &env.path().join("actions.log"));
    let mut w = env.start_with("kstate", &["pdeathsig"]);
    env.check(&mut w);
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        criu_dump(&env, &criu, w.pid, &dir, &script, &[]).ok();
        env.reap_dumped(w.pid);
        let d = dir.to_str().unwrap();
        if i == 1 {
            let out = env.run_program(&criu, &["restore", "-D", d, "-d"]);
            let line = out.failed_naming("PR_SET_PDEATHSIG");
            assert!(line.contains("--restore-sibling"), "{line}");
            env.assert_gone(w.pid);
        }
        let args = ["restore", "-D", d, "-d", "--restore-sibling"];
        env.run_program(&criu, &args).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        let ppid = fs::read_to_string(format!("/proc/{}/stat", w.pid)).unwrap();
        let ppid = ppid.rsplit(") ").next().unwrap().split(' ').nth(1).unwrap();
        assert_eq!(ppid, std::process::id().to_string(), "the test's child");
        env.check(&mut w);
    }
}

// ---------------------------------------------------------------------------------
// RPC: `criu swrk N`

/// `criu swrk 0` with the server end of a SEQPACKET pair as its stdin (go-criu passes
/// fd 3; any fd number works), stdout and stderr captured to show nothing is written.
struct Swrk {
    child: Child,
    sock: OwnedFd,
    out: PathBuf,
    err: PathBuf,
}

impl Swrk {
    fn start(env: &Env, criu: &Path) -> Swrk {
        let (client, server) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let n = env.path().join(format!(
            "swrk-{}",
            fs::read_dir(env.path()).unwrap().count()
        ));
        let (out, err) = (n.with_extension("out"), n.with_extension("err"));
        let child = Command::new(criu)
            .args(["swrk", "0"])
            .stdin(Stdio::from(server))
            .stdout(fs::File::create(&out).unwrap())
            .stderr(fs::File::create(&err).unwrap())
            .spawn()
            .unwrap();
        env.track(child.id() as i32);
        Swrk {
            child,
            sock: client,
            out,
            err,
        }
    }

    fn send(&self, req: &CriuReq) {
        send(
            self.sock.as_raw_fd(),
            &req.encode_to_vec(),
            MsgFlags::empty(),
        )
        .unwrap();
    }

    fn recv(&self) -> CriuResp {
        let mut buf = vec![0u8; 1 << 16];
        let n = recv(self.sock.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
        assert!(n > 0, "swrk closed the socket without an answer");
        CriuResp::decode(&buf[..n]).unwrap()
    }

    /// Sends `req`, answers each NOTIFY with `answer(script)` (recording `script pid`),
    /// and returns the final response and the notifications seen.
    fn call(&self, req: &CriuReq, answer: impl Fn(&str) -> bool) -> (CriuResp, Vec<String>) {
        self.send(req);
        let mut seen = Vec::new();
        loop {
            let resp = self.recv();
            if resp.r#type != CriuReqType::Notify as i32 {
                return (resp, seen);
            }
            let n = resp.notify.clone().unwrap_or_default();
            let script = n.script.clone().unwrap_or_default();
            seen.push(format!("{script} {}", n.pid.unwrap_or(0)));
            self.send(&CriuReq {
                r#type: CriuReqType::Notify as i32,
                notify_success: Some(answer(&script)),
                ..Default::default()
            });
        }
    }

    /// Waits for swrk to exit; asserts it wrote nothing on stdout or stderr.
    fn finish(mut self, env: &Env) -> std::process::ExitStatus {
        let st = wait_child(&mut self.child, CKPT_TIMEOUT).expect("swrk did not exit");
        env.untrack(self.child.id() as i32);
        let (o, e) = (
            fs::read_to_string(&self.out).unwrap(),
            fs::read_to_string(&self.err).unwrap(),
        );
        assert!(o.is_empty() && e.is_empty(), "swrk wrote:\n{o}{e}");
        st
    }
}

fn request(ty: CriuReqType, opts: Option<CriuOpts>) -> CriuReq {
    CriuReq {
        r#type: ty as i32,
        opts,
        ..Default::default()
    }
}

#[test]
fn swrk_answers_version_and_feature_check() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let s = Swrk::start(&env, &criu);
    let (resp, _) = s.call(&request(CriuReqType::Version, None), |_| true);
    assert!(resp.success);
    let v = resp.version.expect("version");
    assert_eq!(
        (v.major_number, v.minor_number, v.sublevel),
        (3, 17, Some(1))
    );
    assert_eq!(
        v.gitid, None,
        "go-criu would count a git id as the next minor"
    );
    assert!(s.finish(&env).success());

    let s = Swrk::start(&env, &criu);
    let mut req = request(CriuReqType::FeatureCheck, None);
    req.features = Some(CriuFeatures {
        mem_track: Some(true),
        lazy_pages: Some(true),
        pidfd_store: None,
    });
    let (resp, _) = s.call(&req, |_| true);
    assert!(resp.success);
    let f = resp.features.expect("features");
    // What `ckpt check` says of dirty tracking.
    let check = env.ckpt(&["check", "--json"]);
    let tracking = check
        .stdout
        .contains("\"name\": \"dirty-tracking\",\n      \"status\": \"ok\"")
        || check
            .stdout
            .split("\"name\": \"dirty-tracking\"")
            .nth(1)
            .is_some_and(|rest| {
                rest.split('}')
                    .next()
                    .unwrap_or("")
                    .contains("\"status\": \"ok\"")
            });
    assert_eq!(f.mem_track, Some(tracking), "{}", check.stdout);
    assert_eq!(f.lazy_pages, Some(false));
    assert_eq!(f.pidfd_store, None, "not asked, not answered");
    assert!(s.finish(&env).success());
}

fn dump_opts(dir: &fs::File, pid: i32) -> CriuOpts {
    CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        pid: Some(pid),
        log_file: Some("dump.log".into()),
        log_level: Some(4),
        notify_scripts: Some(true),
        // What runc sets besides: all accepted.
        manage_cgroups: Some(true),
        shell_job: Some(false),
        file_locks: Some(false),
        ext_unix_sk: Some(false),
        orphan_pts_master: Some(true),
        empty_ns: Some(libc::CLONE_NEWNET as u32),
        ..Default::default()
    }
}

#[test]
fn swrk_dump_restore_three_cycles_as_siblings_with_notifications_in_criu_order() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let mut w = env.start("mem");
    for i in 1..=3 {
        let path = env.subdir(&format!("img{i}"));
        let dir = fs::File::open(&path).unwrap();
        let s = Swrk::start(&env, &criu);
        let (resp, seen) = s.call(
            &request(CriuReqType::Dump, Some(dump_opts(&dir, w.pid))),
            |_| true,
        );
        assert!(
            resp.success,
            "{resp:?}\n{}",
            fs::read_to_string(path.join("dump.log")).unwrap()
        );
        assert_eq!(resp.r#type, CriuReqType::Dump as i32);
        assert_eq!(seen, ["pre-dump 0", "post-dump 0"]);
        assert!(s.finish(&env).success());
        env.reap_dumped(w.pid);

        let s = Swrk::start(&env, &criu);
        let opts = CriuOpts {
            images_dir_fd: dir.as_raw_fd(),
            log_file: Some("restore.log".into()),
            log_level: Some(4),
            notify_scripts: Some(true),
            evasive_devices: Some(true),
            manage_cgroups: Some(true),
            // As runc: the restored root a child of the client, which waits for it.
            rst_sibling: Some(true),
            ..Default::default()
        };
        let (resp, seen) = s.call(&request(CriuReqType::Restore, Some(opts)), |_| true);
        assert!(
            resp.success,
            "{resp:?}\n{}",
            fs::read_to_string(path.join("restore.log")).unwrap()
        );
        assert!(s.finish(&env).success());
        env.track(w.pid);
        assert_eq!(resp.restore.map(|r| r.pid), Some(w.pid));
        let p = w.pid;
        assert_eq!(
            seen,
            [
                "pre-restore 0".to_string(),
                format!("setup-namespaces {p}"),
                "post-setup-namespaces 0".into(),
                format!("post-restore {p}"),
                "network-unlock 0".into(),
                "pre-resume 0".into(),
                "post-resume 0".into(),
            ]
        );
        assert_running_untraced(w.pid);
        assert_eq!(
            status_field(w.pid, "PPid"),
            Some(std::process::id().to_string()),
            "rst_sibling: the restored root is the client's child"
        );
        env.check(&mut w);
    }
}

/// The mem workload, and an images directory opened as a client passes it (its fd).
fn mem_and_images(env: &Env) -> (Workload, PathBuf, fs::File) {
    let w = env.start("mem");
    let path = env.subdir("img");
    let dir = fs::File::open(&path).unwrap();
    (w, path, dir)
}

#[test]
fn swrk_refusals_answer_with_errno_message_and_log_line_and_touch_nothing() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let (mut w, path, dir) = mem_and_images(&env);

    // An option ckpt does not implement: refused by name before anything is stopped.
    let s = Swrk::start(&env, &criu);
    let mut opts = dump_opts(&dir, w.pid);
    opts.lazy_pages = Some(true);
    let (resp, seen) = s.call(&request(CriuReqType::Dump, Some(opts)), |_| true);
    assert!(!resp.success);
    assert_eq!(resp.cr_errno, Some(libc::EOPNOTSUPP));
    let msg = resp.cr_errmsg.unwrap_or_default();
    assert!(msg.contains("lazy_pages"), "{msg}");
    assert!(seen.is_empty(), "{seen:?}");
    assert!(!s.finish(&env).success());
    let log = fs::read_to_string(path.join("dump.log")).unwrap();
    let line = log
        .lines()
        .find(|l| l.starts_with("Error (ckpt):"))
        .unwrap_or("");
    assert!(line.contains("lazy_pages"), "{log}");
    assert_running_untraced(w.pid);
    env.check(&mut w);

    // The client fails the post-dump notification: the workload is put back.
    let s = Swrk::start(&env, &criu);
    let (resp, seen) = s.call(
        &request(CriuReqType::Dump, Some(dump_opts(&dir, w.pid))),
        |script| script != "post-dump",
    );
    assert!(!resp.success);
    assert!(resp.cr_errmsg.unwrap_or_default().contains("post-dump"));
    assert_eq!(seen, ["pre-dump 0", "post-dump 0"]);
    assert!(!s.finish(&env).success());
    assert_running_untraced(w.pid);
    env.check(&mut w);

    // A request ckpt does not serve.
    let s = Swrk::start(&env, &criu);
    let (resp, _) = s.call(&request(CriuReqType::PageServer, None), |_| true);
    assert!(!resp.success);
    assert!(resp.cr_errmsg.unwrap_or_default().contains("PAGE_SERVER"));
    assert!(!s.finish(&env).success());
}

// ---------------------------------------------------------------------------------
// runc

#[test]
fn runc_checkpoint_and_restore_through_ckpt_three_cycles_and_leave_running() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let ctr = Runc::create(&env, COUNTING);
    ctr.count_above(2);
    for cycle in 0..3 {
        let images = env.path().join(format!("runc-img{cycle}"));
        runc_checkpoint_ok(&ctr, &criu, &images, &[]);
        // runc deleted it: gone from its list, not counting.
        assert!(!ctr.state().contains("\"running\""), "{}", ctr.state());
        let at = ctr.count();
        sleep(Duration::from_millis(200));
        assert_eq!(ctr.count(), at, "the checkpointed container still counts");
        ctr.restore_through(&criu, &images);
        assert!(
            ctr.state().contains("\"status\": \"running\""),
            "{}",
            ctr.state()
        );
        // It goes on from where it was, not from the start.
        let next = ctr.count_above(at);
        assert!(next > at && next < at + 100, "{at} -> {next}");
        ctr.count_above(next + 2);
    }
    // --leave-running: the image is taken, the container goes on.
    let images = env.path().join("runc-img-running");
    let at = ctr.count();
    let out = runc_checkpoint(&ctr, &criu, &images, &["--leave-running"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        ctr.state().contains("\"status\": \"running\""),
        "{}",
        ctr.state()
    );
    ctr.count_above(at + 3);
    assert!(images.join("ckpt/inventory.img").is_file());
}

#[test]
fn runc_checkpoint_with_an_option_ckpt_lacks_is_a_readable_runc_error() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let ctr = Runc::create(&env, COUNTING);
    let before = ctr.count();
    let images = env.path().join("runc-img");
    let out = runc_checkpoint(&ctr, &criu, &images, &["--auto-dedup"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // runc's own line, and the reason on CRIU's `Error` line of the log it points at.
    assert!(stderr.contains("criu failed: type DUMP"), "{stderr}");
    let log = fs::read_to_string(images.join("dump.log")).unwrap();
    let err = log
        .lines()
        .find(|l| l.starts_with("Error (ckpt):"))
        .unwrap_or("");
    assert!(err.contains("auto_dedup"), "{log}");
    // The container was not touched: still running, still counting.
    assert!(
        ctr.state().contains("\"status\": \"running\""),
        "{}",
        ctr.state()
    );
    ctr.count_above(before + 2);
    assert!(images.join("descriptors.json").is_file());
    assert!(!images.join("ckpt").exists());
}

// ---------------------------------------------------------------------------------
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
        let p = Podman::new(env, criu, "");
        let out = p.podman(&[
            "run",
            "-d",
            "--name",
            &p.name.clone(),
            "--network",
            "none",
            "localhost/ckpt-bb:1",
            "/bin/sh",
            "-c",
            script,
        ]);
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
        let out = self.podman(&["container", "checkpoint", &self.name]);
        assert!(
            out.status.success(),
            "cycle {cycle}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(self.inspect("{{.State.Status}}"), "exited");
        let out = self.podman(&["container", "restore", &self.name]);
        assert!(
            out.status.success(),
            "cycle {cycle}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(self.inspect("{{.State.Status}}"), "running");
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

#[test]
fn a_sibling_restore_the_client_fails_leaves_nothing_behind() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let (mut w, _, dir) = mem_and_images(&env);
    let s = Swrk::start(&env, &criu);
    let (resp, _) = s.call(
        &request(CriuReqType::Dump, Some(dump_opts(&dir, w.pid))),
        |_| true,
    );
    assert!(resp.success, "{resp:?}");
    assert!(s.finish(&env).success());
    env.reap_dumped(w.pid);
    let opts = CriuOpts {
        images_dir_fd: dir.as_raw_fd(),
        log_file: Some("restore.log".into()),
        notify_scripts: Some(true),
        rst_sibling: Some(true),
        ..Default::default()
    };
    // The root exists (our child) when setup-namespaces comes; failing it kills the root.
    let s = Swrk::start(&env, &criu);
    let (resp, seen) = s.call(
        &request(CriuReqType::Restore, Some(opts.clone())),
        |script| script != "setup-namespaces",
    );
    assert!(!resp.success);
    assert_eq!(
        seen,
        [
            "pre-restore 0".to_string(),
            format!("setup-namespaces {}", w.pid)
        ]
    );
    assert!(resp
        .cr_errmsg
        .unwrap_or_default()
        .contains("setup-namespaces"));
    assert!(!s.finish(&env).success());
    env.assert_gone(w.pid);
    // The image is intact: the next restore brings the workload back.
    let s = Swrk::start(&env, &criu);
    let (resp, _) = s.call(&request(CriuReqType::Restore, Some(opts)), |_| true);
    assert!(resp.success, "{resp:?}");
    assert!(s.finish(&env).success());
    env.track(w.pid);
    assert_running_untraced(w.pid);
    env.check(&mut w);
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

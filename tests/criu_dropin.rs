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
use std::time::Duration;

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

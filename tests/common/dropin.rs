//! ckpt as CRIU in the tests: a `criu` of the test's on PATH, and the container tools
//! that start it (runc, podman, LXC) run to their end.

use super::*;
use std::process::{Command, Stdio};

/// A directory of the test's holding `criu`, a symlink to the ckpt under test.
pub fn criu_in_path(env: &Env) -> PathBuf {
    let bin = env.subdir("bin");
    let criu = bin.join("criu");
    std::os::unix::fs::symlink(CKPT, &criu).unwrap();
    criu
}

/// Runs `cmd` (stdin /dev/null) to its end; its stdout and stderr go through files of the
/// temp dir, not pipes: a container started with `run -d` keeps its runtime's stdio, and
/// a pipe would never end.
pub fn run_to_files(env: &Env, mut cmd: Command) -> std::process::Output {
    let (out, err) = (env.path().join("cmd.out"), env.path().join("cmd.err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = wait_child(&mut child, CKPT_TIMEOUT).expect("command did not exit");
    std::process::Output {
        status,
        stdout: fs::read(&out).unwrap_or_default(),
        stderr: fs::read(&err).unwrap_or_default(),
    }
}

/// The number a container's counting loop keeps in file `f` (replaced whole each time),
/// once it holds one.
pub fn count_in(f: &Path) -> u64 {
    let start = Instant::now();
    loop {
        if let Some(n) = fs::read_to_string(f)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return n;
        }
        assert!(
            start.elapsed() < LINE_TIMEOUT,
            "no count in {}",
            f.display()
        );
        sleep(Duration::from_millis(20));
    }
}

/// The count in `f` once it is above `n`.
pub fn count_above_in(f: &Path, n: u64) -> u64 {
    let start = Instant::now();
    loop {
        let c = count_in(f);
        if c > n {
            return c;
        }
        assert!(start.elapsed() < LINE_TIMEOUT, "count stuck at {c}");
        sleep(Duration::from_millis(20));
    }
}

/// `criu ARGS...` (the test's `criu`), which must succeed; `log` in `dir` is shown if not.
pub fn criu_ok(env: &Env, criu: &Path, args: &[&str], dir: &Path, log: &str) {
    let out = env.run_program(criu, args);
    assert!(
        out.success(),
        "criu {args:?}: {out}\n{log}:\n{}",
        fs::read_to_string(dir.join(log)).unwrap_or_default()
    );
}

/// The pid a pidfile holds.
pub fn pid_in(pidfile: &Path) -> i32 {
    let text = fs::read_to_string(pidfile).unwrap();
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: {text:?}", pidfile.display()))
}

/// A container name (and so a cgroup, a runtime state directory) no other test of this
/// run uses: the tests of one binary run in parallel.
pub fn unique_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("ckpt-criu-{}-{n}", std::process::id())
}

/// A busybox root filesystem at `rootfs` (the static busybox and the applets the tests'
/// scripts use).
pub fn busybox_rootfs(rootfs: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy(which("busybox"), rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "cat", "echo", "mv", "mkdir", "httpd", "wget", "nc",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// A runc container of the test's: a busybox rootfs built now, `runc spec` with a
/// writable root and no terminal, running `args`; its state under the temp dir.
pub struct Runc<'a> {
    pub env: &'a Env,
    pub root: PathBuf,
    pub bundle: PathBuf,
    pub id: String,
}

impl<'a> Runc<'a> {
    pub fn create(env: &'a Env, script: &str) -> Runc<'a> {
        Runc::create_with(env, script, None)
    }

    /// As `create`; with `console`, a terminal (`runc spec`'s default) whose master runc
    /// sends to that socket (`--console-socket`).
    pub fn create_with(env: &'a Env, script: &str, console: Option<&Path>) -> Runc<'a> {
        let bundle = env.subdir("bundle");
        busybox_rootfs(&bundle.join("rootfs"));
        let spec = Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .unwrap();
        assert!(spec.status.success(), "runc spec: {spec:?}");
        let cfg = fs::read_to_string(bundle.join("config.json")).unwrap();
        let terminal = if console.is_some() { "true" } else { "false" };
        let cfg = cfg
            .replace("\"terminal\": true", &format!("\"terminal\": {terminal}"))
            .replace("\"readonly\": true", "\"readonly\": false")
            .replace(
                "\"sh\"\n\t\t]",
                &format!("\"/bin/sh\", \"-c\", {script:?}\n\t\t]"),
            );
        assert!(cfg.contains("\"/bin/sh\", \"-c\""), "config.json: {cfg}");
        fs::write(bundle.join("config.json"), cfg).unwrap();
        let r = Runc {
            env,
            root: env.subdir("runc-state"),
            bundle,
            id: unique_name(),
        };
        let id = r.id.clone();
        let out = match console {
            Some(c) => r.runc(&["run", "-d", "--console-socket", c.to_str().unwrap(), &id]),
            None => r.runc(&["run", "-d", &id]),
        };
        assert!(out.status.success(), "runc run: {out:?}");
        r
    }

    /// `runc --root STATE args...`.
    pub fn runc(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(&self.root).args(args);
        cmd.current_dir(&self.bundle);
        run_to_files(self.env, cmd)
    }

    /// `runc --criu CRIU restore -d --image-path IMAGES ID`, which must succeed.
    pub fn restore_through(&self, criu: &Path, images: &Path) {
        self.restore_through_with(criu, images, &[]);
    }

    /// `runc --criu CRIU restore -d [extra] --image-path IMAGES ID`, which must succeed.
    pub fn restore_through_with(&self, criu: &Path, images: &Path, extra: &[&str]) {
        let mut args = vec!["--criu", criu.to_str().unwrap(), "restore", "-d"];
        args.extend_from_slice(extra);
        args.extend(["--image-path", images.to_str().unwrap(), &self.id]);
        let out = self.runc(&args);
        assert!(
            out.status.success(),
            "{}\nrestore.log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(images.join("restore.log")).unwrap_or_default()
        );
    }

    pub fn state(&self) -> String {
        String::from_utf8_lossy(&self.runc(&["state", &self.id]).stdout).into_owned()
    }

    /// The loop's count, once the file holds a number.
    pub fn count(&self) -> u64 {
        count_in(&self.bundle.join("rootfs/tmp/count"))
    }

    pub fn count_above(&self, n: u64) -> u64 {
        count_above_in(&self.bundle.join("rootfs/tmp/count"), n)
    }
}

impl Drop for Runc<'_> {
    fn drop(&mut self) {
        let _ = self.runc(&["delete", "-f", &self.id]);
    }
}

pub const COUNTING: &str =
    "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.05; done";

/// `runc_checkpoint`, which must succeed (its dump.log shown if not).
pub fn runc_checkpoint_ok(ctr: &Runc, criu: &Path, images: &Path, extra: &[&str]) {
    let out = runc_checkpoint(ctr, criu, images, extra);
    assert!(
        out.status.success(),
        "{}\ndump.log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        fs::read_to_string(images.join("dump.log")).unwrap_or_default()
    );
}

/// `runc --criu CKPT checkpoint --image-path DIR [extra] ID`.
pub fn runc_checkpoint(
    ctr: &Runc,
    criu: &Path,
    images: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec!["--criu", criu.to_str().unwrap(), "checkpoint"];
    args.extend_from_slice(extra);
    args.extend(["--image-path", images.to_str().unwrap(), &ctr.id]);
    ctr.runc(&args)
}

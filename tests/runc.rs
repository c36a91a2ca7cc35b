//! A real `runc` container on a busybox rootfs built at test time (`runc spec`, no
//! terminal, a shell loop counting into a file of its rootfs). Its root is a root of its
//! own (runc pivot_root()s into the bundle's rootfs): not restored yet, so `check -t`
//! and the dump of its init name that in one line, and the container runs on untouched.

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
        for applet in ["sh", "sleep", "cat", "echo"] {
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
    }
}

#[test]
fn runc_container_on_its_own_root_is_refused_by_name() {
    let env = Env::new();
    let (c, init) = Runc::start(
        env.path(),
        "loop",
        "n=0; while :; do n=$((n+1)); echo $n > /tmp/count; sleep 0.05; done",
    );
    c.wait_counter(2);
    let rootfs = c.bundle.join("rootfs").display().to_string();
    let check = env.ckpt(&["check", "-t", &init.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    assert!(
        check
            .stdout
            .contains(&format!("its root / ({rootfs}) in its mount namespace")),
        "{check}"
    );
    let line = env
        .dump(init, &env.subdir("img"), &[])
        .failed_naming(&format!("its root / ({rootfs})"));
    assert!(line.contains("pivot_root"), "{line}");
    assert_running_untraced(init);
    let now = c.counter();
    c.wait_counter(now + 2);
}

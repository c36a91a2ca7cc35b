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

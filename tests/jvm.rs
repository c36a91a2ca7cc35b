//! A JVM (HotSpot, two dozen threads of its own plus four workers) checks its own heap,
//! its workers' counters and their shared total after three dump/restore cycles and
//! after --leave-running. It runs with -XX:-UsePerfData: otherwise the JVM holds a
//! flock on its mmapped /tmp/hsperfdata_USER/PID through no open fd, which a dump
//! refuses by name (a lock only a mapping holds is not supported).

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Compiles tests/workloads/java/Heap.java into `out`.
fn compile(out: &Path) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/java/Heap.java");
    let st = Command::new(which("javac"))
        .arg("-nowarn")
        .arg("-d")
        .arg(out)
        .arg(&src)
        .stdin(Stdio::null())
        .status()
        .expect("run javac (install default-jdk-headless)");
    assert!(st.success(), "javac {} failed", src.display());
}

fn start_jvm(env: &Env) -> Workload {
    let classes: PathBuf = env.subdir("classes");
    compile(&classes);
    let java = which("java");
    let w = env.spawn(
        "Heap",
        &java,
        &[
            OsStr::new("-XX:-UsePerfData"),
            OsStr::new("-Xmx64m"),
            OsStr::new("-cp"),
            classes.as_os_str(),
            OsStr::new("Heap"),
        ],
    );
    env.wait_ready(&w);
    w
}

#[test]
fn jvm_three_cycles_and_leave_running() {
    let env = Env::new();
    let mut w = start_jvm(&env);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, dir| {
        assert!(
            read_inventory(dir).pids.len() == 1,
            "the JVM is one process"
        );
    });
    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);
}

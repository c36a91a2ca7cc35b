//! A JVM (Debian's OpenJDK): a multi-threaded Java program (tests/workloads/Heap.java)
//! whose worker threads keep changing its heap, checked by the program itself after
//! each restore; three cycles, then a `--leave-running` dump, then the corruption
//! control. The JVM holds what plain C workloads do not: ~20 threads (GC, JIT
//! compilers), a flock held only through its mmapped hsperfdata file, huge reserved and
//! PROT_NONE heap ranges, signal handlers of its own.

mod common;

use common::*;
use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};

/// Compiles Heap.java into the test's directory (javac, as `java Heap.java` would run
/// the compiler inside the workload and leave its sockets behind).
fn compile(env: &Env) -> std::path::PathBuf {
    let classes = env.subdir("classes");
    let src = Path::new(WORKLOAD_DIR).join("Heap.java");
    let out = Command::new(which("javac"))
        .args([OsStr::new("-nowarn"), OsStr::new("-d"), classes.as_os_str()])
        .arg(&src)
        .stdin(Stdio::null())
        .output()
        .expect("run javac (install default-jdk-headless)");
    assert!(
        out.status.success(),
        "javac {} failed:\n{}",
        src.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    classes
}

#[test]
fn jvm_heap_survives_three_cycles_and_leave_running() {
    let env = Env::new();
    let classes = compile(&env);
    let java = which("java");
    let args: Vec<&OsStr> = vec![
        OsStr::new("-Xmx128m"),
        OsStr::new("-cp"),
        classes.as_os_str(),
        OsStr::new("Heap"),
        env.path().as_os_str(),
    ];
    let mut w = env.spawn("java", &java, &args);
    env.wait_ready(&w);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});

    let dir = env.subdir("running");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);

    notices_corruption(&env, &w);
}

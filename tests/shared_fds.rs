//! Open file descriptions shared across the processes of a tree (fdtable.img): a file
//! inherited across fork keeps one offset after restore, a pipe between two processes is
//! one pipe again, with its unread bytes.

mod common;

use common::tree::*;
use common::*;

/// A parent and its child write numbered records through one inherited O_RDWR fd: after
/// each of three restores the records still follow each other (one shared offset; two
/// reopened descriptions would write over each other, which the workload notices).
#[test]
fn inherited_file_offset_stays_shared() {
    let env = Env::new();
    let mut w = env.start("sharedfile");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        assert_eq!(pids.len(), 2);
        env.check(&mut w);
    }
    finish_tree(&env, &w, &pids);
}

/// A pipe inherited from whoever started the workload (here its stdin, whose write end
/// the test keeps) is external: `check -t` finds the process dumpable, the dump records
/// the pipe by its key, a restore without `--inherit-fd` refuses in one line naming the
/// pid, fd and key and how to pass it (leaving nothing behind), and one with
/// `--inherit-fd fd[N]:pipe:[INODE]` gives the process that very pipe again.
#[test]
fn inherited_pipe_is_external_and_plugged_in_at_restore() {
    use std::os::fd::AsRawFd;
    use std::process::{Command, Stdio};
    let env = Env::new();
    let out = env.path().join("sig.out");
    let f = std::fs::File::create(&out).unwrap();
    let mut child = Command::new(workload_bin("sig"))
        .arg(env.path())
        .current_dir(env.path())
        .stdin(Stdio::piped())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let write_end = child.stdin.take().unwrap();
    let mut w = Workload {
        pid: child.id() as i32,
        name: "sig".into(),
        exe: workload_bin("sig"),
        out,
        passes: 0,
    };
    env.track(w.pid);
    drop(child);
    env.wait_ready(&w);
    let key = std::fs::read_link(format!("/proc/{}/fd/0", w.pid))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(key.starts_with("pipe:["), "{key}");
    let checked = env.ckpt(&["check", "-t", &w.pid.to_string()]).ok();
    assert!(checked.stdout.contains("dumpable"), "{checked}");

    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let refused = env.ckpt(&["restore", "-d", "-D", dir.to_str().unwrap()]);
    let line = refused.failed_naming(&format!("pid {} fd 0: {key} (read end)", w.pid));
    assert!(
        line.contains(&format!("--inherit-fd fd[N]:{key}")),
        "{line}"
    );
    assert!(
        !exists(w.pid),
        "a refused restore left pid {} behind",
        w.pid
    );

    // ckpt gets a read end of the same pipe as its fd 5 (opened through /proc).
    let script = format!(
        "exec 5</proc/{}/fd/{}; exec \"$0\" \"$@\"",
        std::process::id(),
        write_end.as_raw_fd()
    );
    let inherit = format!("fd[5]:{key}");
    let (_, restored) = env.ckpt_sh(
        &script,
        &[
            "restore".as_ref(),
            "-d".as_ref(),
            "-D".as_ref(),
            dir.as_os_str(),
            "--inherit-fd".as_ref(),
            inherit.as_ref(),
        ],
    );
    restored.ok();
    env.track(w.pid);
    let now = std::fs::read_link(format!("/proc/{}/fd/0", w.pid)).unwrap();
    assert_eq!(now.to_string_lossy(), key, "fd 0 is not the test's pipe");
    env.check(&mut w);
    env.kill_and_reap(w.pid);
}

/// A writer and a reader verify a numbered sequence through a full pipe (bytes in flight
/// at every dump) across three cycles: the pipe comes back as one pipe, its unread bytes
/// in order, its 256 KiB capacity, the reader's O_NONBLOCK on the read end the parent
/// shares with it.
#[test]
fn pipe_sequence_survives_three_cycles() {
    let env = Env::new();
    let mut w = env.start("pipeseq");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        let descs = fdtable(&dir);
        let pipe = descs.iter().find(|d| d.pipe.is_some()).expect("a pipe");
        let stored: usize = descs
            .iter()
            .filter_map(|d| d.pipe.as_ref())
            .map(|p| p.data.len())
            .sum();
        assert!(stored > 0, "no bytes in flight were dumped: {pipe:?}");
        env.check(&mut w);
    }
    finish_tree(&env, &w, &pids);
}

/// A `--leave-running` dump reads the pipe's bytes without taking them: the reader still
/// gets every number in order (it checks), and the image restores too.
#[test]
fn leave_running_dump_does_not_drain_the_pipe() {
    let env = Env::new();
    let mut w = env.start("pipeseq");
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    env.check(&mut w);
    env.check(&mut w);
    let pids = tree_pids(&dir);
    env.kill_and_reap(w.pid);
    wait_gone(&pids);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    // Back to what it was at the dump: one check done.
    w.passes = 1;
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

/// The tree's file table of an image.
fn fdtable(dir: &std::path::Path) -> Vec<ckpt_images::pb::FileDesc> {
    let d = ckpt_images::ImageDir::open(dir).expect("image");
    let mut r = d
        .records(ckpt_images::names::FDTABLE, ckpt_images::Kind::FileTable)
        .expect("fdtable.img");
    r.rest("FileDesc").expect("FileDesc records")
}

/// `bash -c 'producer | grep | consumer'`: bash's three children pass numbered lines
/// through two pipes (bash's `read` takes a byte per read(2)); the consumer checks
/// each line is the next number and keeps counting across three cycles, never going
/// back, never seeing a line lost or twice.
#[test]
fn shell_pipeline_keeps_its_line_count() {
    use std::ffi::OsStr;
    let env = Env::new();
    let count = env.path().join("count");
    let bad = env.path().join("bad");
    let script = format!(
        "i=0; while :; do i=$((i+1)); echo $i; done | grep --line-buffered -v x | \
         {{ n=0; while read -r l; do n=$((n+1)); \
            if [ \"$l\" != \"$n\" ]; then echo \"line $n is $l\" > {bad}; exit 1; fi; \
            if [ $((n % 500)) = 0 ]; then echo $n > {count}; fi; done; }}",
        bad = bad.display(),
        count = count.display()
    );
    let bash = which("bash");
    let w = env.spawn("bash", &bash, &[OsStr::new("-c"), OsStr::new(&script)]);
    let read = || -> u64 {
        assert!(
            !bad.exists(),
            "the consumer saw {}",
            std::fs::read_to_string(&bad).unwrap_or_default()
        );
        read_count(&count)
    };
    let wait_above = |n: u64| wait_count_above(read, n, "the count");
    wait_above(1000);
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &[]).ok();
        let at_dump = read();
        let pids = tree_pids(&dir);
        assert_eq!(pids.len(), 4, "bash and its three children: {pids:?}");
        // Lines are most likely in flight (bash's `read` is the slowest of the three), but
        // nothing guarantees it: pipe_sequence_survives_three_cycles does.
        assert!(
            fdtable(&dir).iter().filter(|d| d.pipe.is_some()).count() >= 4,
            "cycle {i}: two pipes, four ends"
        );
        env.reap_dumped(w.pid);
        wait_gone(&pids);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        wait_above(at_dump + 1000);
        if i == 3 {
            // bash's children do not end with it: each is killed on its own.
            for &p in pids.iter().rev() {
                env.track(p);
                env.kill_and_reap(p);
            }
        }
    }
}

/// 99 children write into one pipe through the one write end they all inherited, and
/// hold one inherited file: after each of three cycles every child's records still reach
/// the root in sequence, and each child's fds are the one description again (kcmp).
#[test]
fn hundred_processes_share_one_pipe_end() {
    let env = Env::new();
    let mut w = env.start("fanout");
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        pids = tree_cycle(&env, &mut w, &dir);
        assert_eq!(pids.len(), 100);
        // 99 write ends, one read end, one file, the root's stdio: a handful of
        // descriptions for 500 fds.
        let descs = fdtable(&dir);
        assert!(descs.len() < 10, "{} descriptions", descs.len());
        env.check(&mut w);
    }
    finish_tree(&env, &w, &pids);
}

/// A shared file that cannot be opened again at restore (removed since the dump) fails
/// the restore in one line naming it, before any process of the tree runs; nothing is
/// left behind.
#[test]
fn restore_failing_on_a_shared_file_leaves_nothing() {
    let env = Env::new();
    let mut w = env.start("sharedfile");
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    let pids = tree_pids(&dir);
    env.reap_dumped(w.pid);
    wait_gone(&pids);
    let log = env.path().join("shared.log");
    std::fs::remove_file(&log).unwrap();
    let out = env.ckpt(&["restore", "-d", "-D", dir.to_str().unwrap()]);
    let line = out.failed_naming(&log.display().to_string());
    assert!(line.contains("shared with pid"), "{line}");
    for &p in &pids {
        assert!(!exists(p), "pid {p} is left after the failed restore");
    }
}

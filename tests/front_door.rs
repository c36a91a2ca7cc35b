//! What an operator sees: the logs of `-v` and `--log-file`, and the refusal of a restore
//! whose pid is still held by the dumped process's zombie.

mod common;

use common::*;
use std::ffi::OsStr;

/// The message of each log line (the words between the level and the first key=value).
fn messages(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let mut t = l.split_whitespace().skip(1);
            match t.next()? {
                "INFO" | "DEBUG" | "WARN" | "ERROR" | "TRACE" => {}
                _ => return None,
            }
            let words: Vec<&str> = t.take_while(|w| !w.contains('=')).collect();
            Some(words.join(" "))
        })
        .collect()
}

/// `ckpt -v` into a redirected stderr: no colour codes, one "dump done" line with the
/// numbers in ms and MiB to one decimal; `--log-file` carries the same events. The same
/// for restore.
#[test]
fn verbose_logs_are_plain_and_match_the_log_file() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, &["-v", "--leave-running"]).ok();
    assert!(
        !out.stderr.contains('\u{1b}'),
        "escape codes in a file:\n{out}"
    );
    let done: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("dump done"))
        .collect();
    assert_eq!(done.len(), 1, "{out}");
    for field in ["frozen_ms=", "total_ms=", "mib="] {
        let v = done[0]
            .split_whitespace()
            .find_map(|t| t.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {}", done[0]));
        let decimals = v.split_once('.').map_or(0, |(_, d)| d.len());
        assert!(v.parse::<f64>().is_ok() && decimals <= 1, "{field}{v}");
    }
    let log = env.path().join("dump.log");
    let log_arg = log.to_string_lossy().to_string();
    env.dump(w.pid, &dir, &["--log-file", &log_arg, "--leave-running"])
        .ok();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(messages(&logged), messages(&out.stderr), "{logged}");
    env.check(&mut w);

    // Restore: -v and --log-file, each after a dump that killed the workload.
    let mut restore_log = |extra: &[&OsStr]| {
        env.dump(w.pid, &dir, &[]).ok();
        env.reap_dumped(w.pid);
        let mut args = extra.to_vec();
        args.extend([
            OsStr::new("restore"),
            OsStr::new("-d"),
            OsStr::new("-D"),
            dir.as_os_str(),
        ]);
        let out = env.ckpt(&args).ok();
        env.track(w.pid);
        env.check(&mut w);
        out.stderr
    };
    let verbose = restore_log(&[OsStr::new("-v")]);
    assert!(
        !verbose.contains('\u{1b}'),
        "escape codes in a file:\n{verbose}"
    );
    let rlog = env.path().join("restore.log");
    let quiet = restore_log(&[OsStr::new("--log-file"), rlog.as_os_str()]);
    assert_eq!(quiet, "", "--log-file still wrote on stderr");
    let logged = std::fs::read_to_string(&rlog).unwrap();
    assert!(!messages(&verbose).is_empty(), "{verbose}");
    assert_eq!(messages(&logged), messages(&verbose), "{logged}");
}

/// The dumped process killed but not reaped by its parent (the test): its zombie holds
/// the pid, and the restore says so, naming the parent; once reaped, the restore works.
#[test]
fn restore_onto_an_unreaped_zombie_names_its_parent() {
    let env = Env::new();
    let mut w = env.start("sig");
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    let t = std::time::Instant::now();
    while proc_state(w.pid) != Some('Z') {
        assert!(
            t.elapsed() < LINE_TIMEOUT,
            "pid {} never became a zombie",
            w.pid
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let out = env.restore_detached(&dir);
    let line = out.failed_naming("zombie");
    let parent = format!("its parent, pid {} (", std::process::id());
    assert!(
        line.contains("the dumped process itself") && line.contains(&parent),
        "{line}"
    );
    env.reap_dumped(w.pid);
    env.restore_detached(&dir).ok();
    env.track(w.pid);
    env.check(&mut w);
}

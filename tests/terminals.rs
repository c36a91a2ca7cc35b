//! Pseudo-terminals held inside the tree: a `tmux` server (its own socket under the
//! test's temp dir) with a shell in a window, through three cycles: after each restore
//! `tmux send-keys` reaches the same shell (its variables kept), `capture-pane` shows
//! its output, the pane keeps its size, the shell still leads its session with the pty
//! as controlling terminal and is its foreground group; and a job whose terminal's
//! master is outside the tree is refused by name.

mod common;

use common::tree::*;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The tests of this file one at a time: each holds a pty, and a pty number freed by a
/// dump must still be free at its restore.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// `tmux -S SOCK args...`, outside any tmux; its stdout.
fn tmux(sock: &Path, args: &[&str]) -> String {
    let out = Command::new(which("tmux"))
        .arg("-S")
        .arg(sock)
        .args(args)
        .env_remove("TMUX")
        .output()
        .expect("tmux");
    assert!(
        out.status.success(),
        "tmux {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Types `line` into the shell and waits until the pane shows `want`.
fn type_and_see(sock: &Path, line: &str, want: &str) -> String {
    tmux(sock, &["send-keys", "-t", "w", line, "Enter"]);
    let start = Instant::now();
    loop {
        let pane = tmux(sock, &["capture-pane", "-p", "-t", "w"]);
        // The output, then the shell's next prompt: it waits for input again and tmux
        // has read all it wrote (a dump refuses bytes left in a pty).
        let lines: Vec<&str> = pane.lines().filter(|l| !l.trim().is_empty()).collect();
        if let Some(at) = lines.iter().rposition(|l| l.trim_end() == want) {
            if lines[at + 1..].iter().map(|l| l.trim_end()).eq(["$"]) {
                return pane;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the pane never showed {want:?}:\n{pane}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process the test did not spawn itself, as a workload.
fn adopted(pid: i32, name: &str, exe: std::path::PathBuf, out: std::path::PathBuf) -> Workload {
    Workload {
        pid,
        name: name.into(),
        exe,
        out,
        passes: 0,
    }
}

fn stat_fields(pid: i32) -> Vec<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split_whitespace().map(str::to_string).collect()
}

#[test]
fn tmux_server_with_a_shell_three_cycles() {
    let _one = one_at_a_time();
    let env = Env::new();
    let sock = env.path().join("tmux.sock");
    tmux(
        &sock,
        &[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            "91",
            "-y",
            "27",
            "env -i PS1='$ ' TERM=screen bash --norc --noprofile",
        ],
    );
    let server: i32 = tmux(&sock, &["display-message", "-p", "-t", "w", "#{pid}"])
        .trim()
        .parse()
        .unwrap();
    let shell: i32 = tmux(&sock, &["display-message", "-p", "-t", "w", "#{pane_pid}"])
        .trim()
        .parse()
        .unwrap();
    env.track(server);
    let tty = tmux(&sock, &["display-message", "-p", "-t", "w", "#{pane_tty}"]);
    let tty = tty.trim().to_string();
    type_and_see(&sock, "N=0; stty -echoctl; echo ready-$N", "ready-0");
    let mut w = adopted(server, "tmux", which("tmux"), env.path().join("tmux.out"));
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        // No tmux client of the test's is connected any more: the server holds its
        // listening socket only (a client's connection, its peer gone, is not dumped).
        wait_until("the tmux clients to disconnect", || {
            std::fs::read_dir(format!("/proc/{}/fd", w.pid))
                .unwrap()
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
                })
                .count()
                == 1
        });
        env.dump(w.pid, &dir, &[]).ok();
        let pids = tree_pids(&dir);
        assert!(
            pids.contains(&shell),
            "the shell is not in the tree: {pids:?}"
        );
        env.reap_dumped(w.pid);
        wait_gone(&pids);
        env.restore_detached(&dir).ok();
        env.track(w.pid);
        assert_running_untraced(w.pid);
        // The same shell, with its variable: it counts on.
        type_and_see(&sock, "N=$((N+1)); echo count-$N", &format!("count-{i}"));
        type_and_see(&sock, "echo size-$(stty size)", "size-27 91");
        type_and_see(&sock, "echo tty-$(tty)", &format!("tty-{tty}"));
        let st = stat_fields(shell);
        // pid ppid pgrp session tty_nr tpgid: the shell leads its session and group, the
        // pty is its controlling terminal, and its group is the foreground one.
        assert_eq!(st[2], shell.to_string(), "pgrp: {st:?}");
        assert_eq!(st[3], shell.to_string(), "session: {st:?}");
        assert_eq!(st[5], shell.to_string(), "tpgid: {st:?}");
        let n: u32 = tty.trim_start_matches("/dev/pts/").parse().unwrap();
        assert_eq!(st[4], ((136 << 8) | n).to_string(), "tty_nr: {st:?}");
        w.passes += 1;
    }
    finish_tree(&env, &w, &[server, shell]);
}

/// A process whose terminal's master is outside the tree (python's pty.openpty holds
/// it; the process runs on the slave, as a job started from a shell does): refused,
/// naming pid, fd and the terminal, and left running.
#[test]
fn a_terminal_whose_master_is_outside_is_refused() {
    let _one = one_at_a_time();
    let env = Env::new();
    let script = env.path().join("onpty.py");
    std::fs::write(
        &script,
        format!(
            "import os, pty, subprocess, sys, time\n\
             m, s = pty.openpty()\n\
             p = subprocess.Popen([{bin:?}, sys.argv[1]], stdin=s, stdout=open(sys.argv[1] + '/sig.out', 'w'), stderr=subprocess.STDOUT)\n\
             print('CHILD', p.pid, flush=True)\n\
             print('READY', os.getpid(), flush=True)\n\
             p.wait()\n",
            bin = workload_bin("sig")
        ),
    )
    .unwrap();
    let holder = env.spawn(
        "onpty",
        &python3(),
        &[script.as_os_str(), env.path().as_os_str()],
    );
    let line = env.wait_line(&holder, "CHILD", |l| l.starts_with("CHILD "));
    let child: i32 = line[6..].trim().parse().unwrap();
    env.track(child);
    let mut w = adopted(
        child,
        "sig",
        workload_bin("sig"),
        env.path().join("sig.out"),
    );
    env.wait_ready(&w);
    let dumped = env.dump(child, &env.subdir("img"), &[]);
    let line = dumped.failed_naming("outside the dumped tree");
    assert!(line.contains(&format!("pid {child}: fd 0")), "{line}");
    assert!(line.contains("/dev/pts/"), "{line}");
    assert_running_untraced(child);
    env.check(&mut w);
    env.kill_and_reap(holder.pid);
}

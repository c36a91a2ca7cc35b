//! A job started from a shell on a terminal (`--shell-job`): the test opens a pty pair
//! and a small "shell" (tests' python wrapper) takes the slave as its controlling
//! terminal and runs the job in its own, foreground, process group on it. The dump
//! records the terminal as the job's; each restore runs `ckpt restore --shell-job -d`
//! as a job of a new such shell on the same terminal, after the test scrambled the
//! terminal's termios and window size: the workload finds its termios, window size,
//! controlling terminal and foreground group as they were, and answers a line typed on
//! the terminal. Three cycles. Without the flag the restore is refused by name, and with
//! it but no terminal on ckpt's stdin too.

mod common;

use common::tree::*;
use common::*;
use nix::pty::{openpty, Winsize};
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `shell.py TTY PIDFILE ERRFILE CMD...`: a session of its own on TTY (its controlling
/// terminal), CMD forked in a process group of its own made the foreground one, with
/// TTY as stdin, stdout and stderr (stderr to ERRFILE unless `-`); writes CMD's pid to
/// PIDFILE and, once CMD exits, its wait status to PIDFILE.status; then stays, as the
/// session's leader, until killed.
const SHELL: &str = r#"
import os, sys, fcntl, termios, signal
tty, pidfile, errfile = sys.argv[1:4]
cmd = sys.argv[4:]
os.setsid()
fd = os.open(tty, os.O_RDWR | os.O_NOCTTY)
fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
signal.signal(signal.SIGTTOU, signal.SIG_IGN)
pid = os.fork()
if pid == 0:
    os.setpgid(0, 0)
    os.tcsetpgrp(fd, os.getpid())
    signal.signal(signal.SIGTTOU, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    for i in range(3):
        os.dup2(fd, i)
    if errfile != '-':
        os.dup2(os.open(errfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), 2)
    os.execv(cmd[0], cmd)
try:
    os.setpgid(pid, pid)
except OSError:
    pass
def put(path, text):
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.rename(path + '.tmp', path)
put(pidfile, str(pid))
_, st = os.waitpid(pid, 0)
put(pidfile + '.status', str(st))
while True:
    signal.pause()
"#;

struct Terminal {
    master: std::fs::File,
    slave: PathBuf,
}

impl Terminal {
    fn new() -> Terminal {
        let ws = Winsize {
            ws_row: 31,
            ws_col: 97,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&ws), None).expect("openpty");
        let slave = nix::unistd::ttyname(pty.slave.as_fd()).expect("ttyname");
        // Neither end may leak into the shells and the job (the job's terminal is
        // outside its tree). (The only test of this binary: no fork meanwhile.)
        for fd in [&pty.master, &pty.slave] {
            nix::fcntl::fcntl(
                std::os::fd::AsRawFd::as_raw_fd(fd),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            )
            .unwrap();
        }
        Terminal {
            master: std::fs::File::from(pty.master),
            slave,
        }
    }

    /// Types `ping-N` and waits for the job's `pong-N` on the terminal.
    fn ping(&mut self, n: usize) {
        self.master
            .write_all(format!("ping-{n}\n").as_bytes())
            .unwrap();
        let want = format!("pong-{n}");
        let mut seen = String::new();
        let start = Instant::now();
        let fd: &OwnedFd = &self.master.try_clone().unwrap().into();
        nix::fcntl::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(fd),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        while !seen.contains(&want) {
            let mut buf = [0u8; 512];
            match self.master.read(&mut buf) {
                Ok(k) => seen.push_str(&String::from_utf8_lossy(&buf[..k])),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("reading the terminal: {e}"),
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no {want} on the terminal; it showed {seen:?}"
            );
        }
    }

    /// What a shell would leave behind once its job is gone: echo on, a window of 0x0.
    fn scramble(&self) {
        let mut t = nix::sys::termios::tcgetattr(self.master.as_fd()).unwrap();
        t.local_flags |= nix::sys::termios::LocalFlags::ECHO;
        t.control_chars[libc::VKILL] = 0x15;
        nix::sys::termios::tcsetattr(self.master.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
            .unwrap();
        ckpt_sys::tty::set_winsize(self.master.as_fd(), [0; 4]).unwrap();
    }
}

/// Runs `cmd` as the foreground job of a new shell on `tty`; returns the shell and the
/// job's pid.
fn shell(env: &Env, tty: &Terminal, name: &str, err: &str, cmd: &[&OsStr]) -> (Workload, i32) {
    let script = env.path().join("shell.py");
    if !script.exists() {
        std::fs::write(&script, SHELL).unwrap();
    }
    let pidfile = env.path().join(format!("{name}.pid"));
    let mut args: Vec<&OsStr> = vec![
        script.as_os_str(),
        tty.slave.as_os_str(),
        pidfile.as_os_str(),
        OsStr::new(err),
    ];
    args.extend(cmd);
    let sh = env.spawn(name, &python3(), &args);
    let pid = wait_file(&pidfile, &sh);
    (sh, pid.parse().unwrap())
}

fn wait_file(path: &Path, sh: &Workload) -> String {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            return s;
        }
        assert!(
            exists(sh.pid) && start.elapsed() < Duration::from_secs(30),
            "no {} from the shell; its output: {}",
            path.display(),
            std::fs::read_to_string(&sh.out).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn shell_job_three_cycles() {
    let env = Env::new();
    let mut tty = Terminal::new();
    let bin = workload_bin("shelljob");
    let (mut sh, pid) = shell(
        &env,
        &tty,
        "shell0",
        "-",
        &[bin.as_os_str(), env.path().as_os_str()],
    );
    env.track(pid);
    let mut w = Workload {
        pid,
        name: "shelljob".into(),
        exe: bin.clone(),
        out: env.path().join("shelljob.out"),
        passes: 0,
    };
    env.wait_ready(&w);
    tty.ping(0);
    env.check(&mut w);
    for i in 1..=3 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &["--shell-job"]).ok();
        wait_gone(&[w.pid]);
        env.kill_and_reap(sh.pid);
        tty.scramble();
        if i == 1 {
            // Not a shell job's restore: refused, naming the flag; nor one with no
            // terminal on ckpt's stdin.
            let out = env.ckpt(&[
                OsStr::new("restore"),
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-d"),
            ]);
            let line = out.failed_naming("--shell-job");
            assert!(line.contains(&format!("pid {pid} fd 0")), "{line}");
            env.assert_gone(pid);
            let out = env.ckpt(&[
                OsStr::new("restore"),
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-d"),
                OsStr::new("--shell-job"),
            ]);
            out.failed_naming("stdin is not a terminal");
            env.assert_gone(pid);
        }
        let err = env.path().join(format!("restore{i}.err"));
        let name = format!("shell{i}");
        let (next, ckpt) = shell(
            &env,
            &tty,
            &name,
            err.to_str().unwrap(),
            &[
                OsStr::new(CKPT),
                OsStr::new("restore"),
                OsStr::new("-D"),
                dir.as_os_str(),
                OsStr::new("-d"),
                OsStr::new("--shell-job"),
            ],
        );
        sh = next;
        let status = wait_file(&env.path().join(format!("{name}.pid.status")), &sh);
        assert_eq!(
            status.trim(),
            "0",
            "ckpt restore (pid {ckpt}) failed: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        env.track(w.pid);
        assert_running_untraced(w.pid);
        tty.ping(i);
        env.check(&mut w);
    }
    finish_tree(&env, &w, &[w.pid]);
    env.kill_and_reap(sh.pid);
}

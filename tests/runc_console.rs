//! A runc container with `"terminal": true`: its init's stdio is the slave of a pty of
//! the container's own devpts (also bound on its /dev/console), whose master runc sent to
//! the caller's --console-socket. The test is that caller: it receives each master
//! (SCM_RIGHTS), reads what the container's shell loop prints on its terminal and types
//! lines the loop reads back. A checkpoint records the console; a restore makes a new
//! pair and hands its master over (CRIU's orphan-pts-master), through runc or through
//! `ckpt restore --console-socket`; the loop goes on from where it was on the new master
//! and still reads what is typed there.

mod common;

use common::dropin::*;
use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

/// Prints a tick on its terminal every ~0.2 s and echoes back each line typed.
const TICKING: &str =
    "i=0; while :; do i=$((i+1)); echo tick $i; if read -t 0.2 l; then echo got:$l; fi; done";

/// The test's console socket: every master received is kept (to type into) and read by a
/// thread of its own, its lines tagged with the master's number (1 for the first).
struct Console {
    path: PathBuf,
    lines: mpsc::Receiver<(usize, String)>,
    masters: Arc<Mutex<Vec<fs::File>>>,
}

/// The fd sent with a message on `conn` (SCM_RIGHTS).
fn receive_fd(conn: &UnixStream) -> Option<fs::File> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let fds = msg.cmsgs().ok()?.find_map(|c| match c {
        ControlMessageOwned::ScmRights(fds) => Some(fds),
        _ => None,
    })?;
    fds.first().map(|&fd| ckpt_sys::process::file_from_raw(fd))
}

impl Console {
    fn listen(env: &Env) -> Console {
        let path = env.path().join("console.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, lines) = mpsc::channel();
        let masters: Arc<Mutex<Vec<fs::File>>> = Arc::default();
        let kept = masters.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let Some(master) = receive_fd(&conn) else {
                    continue;
                };
                let n = {
                    let mut m = kept.lock().unwrap();
                    m.push(master.try_clone().unwrap());
                    m.len()
                };
                let tx = tx.clone();
                // Until the pair is gone (EIO once no slave is open).
                std::thread::spawn(move || {
                    for line in BufReader::new(master).lines() {
                        let Ok(l) = line else { return };
                        if tx.send((n, l.trim_end_matches('\r').to_string())).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Console {
            path,
            lines,
            masters,
        }
    }

    /// The first line of master `n` that `want` takes (lines of other masters skipped).
    fn wait<T>(&self, n: usize, what: &str, want: impl Fn(&str) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            let left = LINE_TIMEOUT.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                Ok((m, l)) if m == n => {
                    if let Some(t) = want(&l) {
                        return t;
                    }
                }
                Ok(_) => {}
                Err(e) => panic!("console master {n}: no {what} ({e})"),
            }
        }
    }

    /// The first tick above `above` printed on master `n`.
    fn tick(&self, n: usize, above: u64) -> u64 {
        self.wait(n, &format!("tick above {above}"), |l| {
            l.strip_prefix("tick ")
                .and_then(|t| t.trim().parse().ok())
                .filter(|&t| t > above)
        })
    }

    /// Types `text` and a newline at master `n`; the loop echoes it back.
    fn type_and_see(&self, n: usize, text: &str) {
        let mut m = self.masters.lock().unwrap()[n - 1].try_clone().unwrap();
        m.write_all(format!("{text}\n").as_bytes()).unwrap();
        let want = format!("got:{text}");
        self.wait(n, &want, |l| (l == want).then_some(()));
    }
}

/// The container's init pid, from `runc state`.
fn init_pid(ctr: &Runc) -> i32 {
    let state: serde_json::Value = serde_json::from_str(&ctr.state()).unwrap();
    state["pid"].as_i64().unwrap() as i32
}

/// (session, controlling terminal as tty_nr) of `pid`.
fn session_and_tty(pid: i32) -> (i32, i32) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    (f[3].parse().unwrap(), f[4].parse().unwrap())
}

/// tty_nr of pty 0 (major 136).
const PTS_0: i32 = 136 << 8;

#[test]
fn runc_terminal_container_through_ckpt_gets_a_new_console_three_cycles() {
    let env = Env::new();
    let criu = criu_in_path(&env);
    let console = Console::listen(&env);
    let ctr = Runc::create_with(&env, TICKING, Some(&console.path));
    let mut last = console.tick(1, 0);
    console.type_and_see(1, "typed-1");
    for cycle in 0..3 {
        let images = env.path().join(format!("img{cycle}"));
        runc_checkpoint_ok(&ctr, &criu, &images, &[]);
        let socket = console.path.to_str().unwrap();
        ctr.restore_through_with(&criu, &images, &["--console-socket", socket]);
        // A new master, where the loop goes on from where it was.
        let n = cycle + 2;
        let next = console.tick(n, last);
        assert!(next < last + 200, "tick {last} -> {next}");
        last = next;
        console.type_and_see(n, &format!("typed-{n}"));
        // Its terminal is still its session's controlling terminal, pty 0 of its devpts.
        let pid = init_pid(&ctr);
        assert_eq!(session_and_tty(pid), (pid, PTS_0));
    }
}

#[test]
fn ckpt_dump_names_a_containers_console_and_restores_it_with_orphan_pts_master() {
    let env = Env::new();
    let console = Console::listen(&env);
    let ctr = Runc::create_with(&env, TICKING, Some(&console.path));
    let pid = init_pid(&ctr);
    let last = console.tick(1, 0);
    let dir = env.path().join("img");
    let msg = env
        .dump(pid, &dir, &[])
        .failed_naming("--orphan-pts-master");
    assert!(msg.contains("console"), "{msg}");
    // Left running untouched: it goes on printing and reading.
    assert_running_untraced(pid);
    let last = console.tick(1, last);
    console.type_and_see(1, "still-here");
    env.dump(pid, &dir, &["--orphan-pts-master"]).ok();
    env.reap_dumped(pid);
    // Nobody to give the new master to: refused by name before anything is made.
    let d = dir.to_str().unwrap();
    env.ckpt(&["restore", "-D", d, "-d"])
        .failed_naming("--console-socket");
    let pidfile = env.path().join("restored.pid");
    env.ckpt(&[
        "restore",
        "-D",
        d,
        "-d",
        "--pidfile",
        pidfile.to_str().unwrap(),
        "--console-socket",
        console.path.to_str().unwrap(),
    ])
    .ok();
    let restored: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    env.track(restored);
    let next = console.tick(2, last);
    assert!(next < last + 200, "tick {last} -> {next}");
    console.type_and_see(2, "typed-after-restore");
    assert_eq!(session_and_tty(restored), (restored, PTS_0));
    // Gone before runc deletes its cgroups.
    env.kill_and_reap(restored);
}

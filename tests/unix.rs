//! Unix sockets: socketpairs of every type shared by a parent and its child, listeners
//! (path and abstract) with an accepted connection and connections still queued, bound
//! datagram sockets with queued datagrams from named and unnamed senders, a pair whose one
//! end is closed and one shut down, each with data in flight both ways, through three
//! cycles and a `--leave-running` dump (the workload checks everything itself); and what
//! is refused, by name, the workload left running.

mod common;

use common::tree::*;
use common::*;

fn three_cycles(modes: &[&str]) {
    let env = Env::new();
    let mut w = env.start_with("unixsock", modes);
    env.check(&mut w);
    let pids = three_tree_cycles(&env, &mut w);
    finish_tree(&env, &w, &pids);
}

/// Stream, dgram and seqpacket socketpairs, one end in the parent and one in its child,
/// data queued both ways (message boundaries kept), SO_PEERCRED naming the parent.
#[test]
fn socketpairs_three_cycles() {
    three_cycles(&["pair"]);
}

/// Listeners on a path (its file re-bound, mode kept) and an abstract name, each with
/// an accepted connection holding data both ways and two connections not accepted yet,
/// accepted after the restore in their order.
#[test]
fn listeners_three_cycles() {
    three_cycles(&["listen"]);
}

/// A datagram socket bound to a path with datagrams queued from an unnamed sender, a
/// sender bound to an abstract name (recvfrom still names it) and a connected one.
#[test]
fn datagrams_three_cycles() {
    three_cycles(&["dgram"]);
}

/// A stream whose peer was closed with bytes unread (bytes, then EOF), a listener's
/// accepted connection whose client sent bytes and closed, and a pair shut down one way.
#[test]
fn closed_and_shut_down_three_cycles() {
    three_cycles(&["closed"]);
}

/// A `--leave-running` dump drains nothing: the workload still finds every queue as it
/// left it; the image then restores (the path the original held is re-bound once it is
/// killed).
#[test]
fn leave_running_changes_nothing() {
    let env = Env::new();
    let mut w = env.start_with("unixsock", &["pair", "listen", "dgram", "closed"]);
    env.check(&mut w);
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &["--leave-running"]).ok();
    assert_running_untraced(w.pid);
    env.check(&mut w);
    // The image holds the state before that check: restore it and check again.
    let dir2 = env.subdir("img2");
    env.dump(w.pid, &dir2, &["--leave-running"]).ok();
    let pids = tree_pids(&dir2);
    env.kill_and_reap(w.pid);
    wait_gone(&pids);
    env.restore_detached(&dir2).ok();
    env.track(w.pid);
    assert_running_untraced(w.pid);
    env.check(&mut w);
    finish_tree(&env, &w, &pids);
}

/// `check -t` and the dump refuse, naming pid, fd and why; the process runs on.
fn refused(mode: &str, needle: &str) {
    let env = Env::new();
    let w = env.start_with("unixsock", &[mode]);
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming(needle);
    assert!(line.contains("pid "), "{line}");
    assert!(line.contains("socket:["), "{line}");
    assert_running_untraced(w.pid);
    let pids: Vec<i32> = vec![w.pid];
    finish_tree(&env, &w, &pids);
}

/// Files in flight (SCM_RIGHTS sent, not received) on a stream and a datagram
/// socketpair: a pipe's read end (with bytes in the pipe), a file the sender keeps open
/// too (one description: the offset shared), an eventfd; the receiver gets them after
/// the restore and uses them (tests/workloads/inflight.c); the same after a
/// `--leave-running` dump; three cycles.
#[test]
fn files_in_flight_three_cycles() {
    leave_running_then_three_cycles("inflight");
}

/// A connection a child made to its parent's listener: SO_PEERCRED of the accepted end
/// names the child (made again by a helper with the child's pid, before the child is
/// forked), the child's names the parent; the parent closed its listener (the child still
/// holds its copy).
#[test]
fn a_childs_connection_keeps_its_peer_credentials_three_cycles() {
    three_cycles(&["childconn"]);
}

/// A socketpair the parent made and only its child holds: SO_PEERCRED names the parent,
/// alive when the child's seed remakes the pair; refused by name.
#[test]
fn peer_credentials_of_a_live_ancestor_are_refused() {
    refused("oldpair", "SO_PEERCRED");
}

/// Reads one line from `conn` (the test's end of a workload's external socket).
fn line_from(conn: &mut std::os::unix::net::UnixStream) -> String {
    use std::io::BufRead;
    conn.set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(conn).read_line(&mut line).unwrap();
    line
}

/// A workload connected to a listener of the test's (outside the tree), with bytes from
/// the test unread in its socket: refused naming pid, fd and the peer, left running.
#[test]
fn external_peer_with_unread_bytes_is_refused() {
    use std::io::Write;
    let env = Env::new();
    let listener = std::os::unix::net::UnixListener::bind(env.path().join("ext.sock")).unwrap();
    let mut w = env.start_with("unixsock", &["ext"]);
    let (mut conn, _) = listener.accept().unwrap();
    env.check(&mut w);
    assert_eq!(line_from(&mut conn), "ping 1\n");
    conn.write_all(b"unread").unwrap();
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming("outside the dumped tree");
    assert!(line.contains(&format!("pid {}: fd ", w.pid)), "{line}");
    assert!(line.contains("6 bytes"), "{line}");
    assert_running_untraced(w.pid);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
}

/// The same socket with nothing unread is external: the dump records it by its key
/// (`socket:[INODE]`), a restore without `--inherit-fd` refuses in one line naming pid,
/// fd and key (leaving nothing behind), and one handed a new connection to the same
/// listener (`--inherit-fd fd[5]:socket:[INODE]`) plugs it in: the workload's next
/// "ping" arrives there.
#[test]
fn external_peer_is_plugged_in_with_inherit_fd() {
    let env = Env::new();
    let path = env.path().join("ext.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let mut w = env.start_with("unixsock", &["ext"]);
    let (mut conn, _) = listener.accept().unwrap();
    env.check(&mut w);
    assert_eq!(line_from(&mut conn), "ping 1\n");
    let fd = (3..64)
        .find(|fd| {
            std::fs::read_link(format!("/proc/{}/fd/{fd}", w.pid))
                .is_ok_and(|l| l.to_string_lossy().starts_with("socket:["))
        })
        .expect("the workload's socket");
    let key = std::fs::read_link(format!("/proc/{}/fd/{fd}", w.pid))
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let dir = env.subdir("img");
    env.dump(w.pid, &dir, &[]).ok();
    env.reap_dumped(w.pid);
    let refused = env.ckpt(&["restore", "-d", "-D", dir.to_str().unwrap()]);
    let line = refused.failed_naming(&format!("pid {} fd {fd}: {key}", w.pid));
    assert!(
        line.contains(&format!("--inherit-fd fd[N]:{key}")),
        "{line}"
    );
    assert!(
        !exists(w.pid),
        "a refused restore left pid {} behind",
        w.pid
    );

    // ckpt gets, as its fd 5, a new connection to the test's listener (made by python,
    // which then execs ckpt).
    let script = format!(
        "exec {} -c 'import os, socket, sys\n\
         s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); os.dup2(s.fileno(), 5)\n\
         os.execv(sys.argv[2], sys.argv[2:])' {} \"$0\" \"$@\"",
        python3().display(),
        path.display()
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
    let (mut conn2, _) = listener.accept().unwrap();
    env.check(&mut w);
    assert_eq!(line_from(&mut conn2), "ping 2\n");
    env.kill_and_reap(w.pid);
}

/// An fd with O_ASYNC keeps its owner (the process itself) and its signal (F_SETSIG): a
/// byte written to its peer still raises the signal after each restore.
#[test]
fn async_owner_and_signal_three_cycles() {
    three_cycles(&["async"]);
}

/// O_ASYNC signals going to another process (here the child) are refused by name.
#[test]
fn async_owner_of_another_process_is_refused() {
    let env = Env::new();
    let w = env.start_with("unixsock", &["asyncother"]);
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming("O_ASYNC signals go to pid");
    assert!(line.contains(&format!("pid {}: fd ", w.pid)), "{line}");
    assert_running_untraced(w.pid);
    finish_tree(&env, &w, &[w.pid]);
}

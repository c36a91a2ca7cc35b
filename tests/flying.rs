//! Files in flight (SCM_RIGHTS sent, not received) beyond plain files and pipes: unix
//! sockets (one carrying another in its own queue, one waiting in its own queue), a FIFO
//! with bytes, a pty master with input typed, a timerfd, a memfd; the receiver gets
//! working objects after a `--leave-running` dump and three dump/restore cycles
//! (tests/workloads/flying.c checks everything itself); an epoll in flight is refused by
//! name, the workload left running. A TCP listener and a UDP socket in flight
//! (systemd-style socket passing) come back; a TCP connection in flight is refused. Messages carrying credentials (SO_PASSCRED) in a
//! queue: the process's own, explicit ones, a child's and none, given back as they were
//! (tests/workloads/passcred.c); credentials naming a process outside the tree refused.

mod common;

use common::tree::*;
use common::*;

#[test]
fn sockets_fifo_pty_timerfd_memfd_in_flight_three_cycles() {
    leave_running_then_three_cycles("flying");
}

/// A TCP listener and a UDP socket with a datagram queued, in flight on a unix socket
/// (a supervisor handing a service its sockets, as systemd does): after a
/// `--leave-running` dump and three cycles the receiver gets them on their ports, with
/// their options, accepts a connection and reads the datagram (tests/workloads/netflight.c).
#[test]
fn a_listener_and_a_udp_socket_in_flight_three_cycles() {
    leave_running_then_three_cycles("netflight");
}

/// An established TCP connection in flight is refused by name, even with
/// `--tcp-established`; the workload runs on.
#[test]
fn a_tcp_connection_in_flight_is_refused() {
    let env = Env::new();
    let w = env.start_with("netflight", &["conn"]);
    let dumped = env.dump(w.pid, &env.subdir("img"), &["--tcp-established"]);
    let line = dumped.failed_naming("in flight");
    assert!(line.contains("a TCP socket in state ESTABLISHED"), "{line}");
    assert!(line.contains(&format!("pid {}", w.pid)), "{line}");
    assert_running_untraced(w.pid);
    env.kill_and_reap(w.pid);
}

#[test]
fn an_epoll_in_flight_is_refused() {
    let env = Env::new();
    let w = env.start_with("flying", &["epoll"]);
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming("an epoll");
    assert!(line.contains("SCM_RIGHTS"), "{line}");
    assert!(line.contains(&format!("pid {}", w.pid)), "{line}");
    assert_running_untraced(w.pid);
    env.kill_and_reap(w.pid);
}

/// Datagrams queued at a receiver with SO_PASSCRED: one sent before it was set (no
/// credentials), one with the sender's own, one with explicit uid/gid, one sent by the
/// child (sent again at restore by a helper with the child's pid, before the child is
/// forked); a `--leave-running` dump, then three cycles.
#[test]
fn queued_credentials_three_cycles() {
    leave_running_then_three_tree_cycles(&Env::new(), "passcred");
}

/// Credentials naming a process outside the tree (the workload's parent) are refused,
/// naming the pid and the socket; the workload runs on.
#[test]
fn credentials_of_a_process_outside_the_tree_are_refused() {
    let env = Env::new();
    let w = env.start_with("passcred", &["outside"]);
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming("outside the dumped tree");
    assert!(line.contains("SO_PASSCRED"), "{line}");
    assert!(line.contains("socket:["), "{line}");
    assert_running_untraced(w.pid);
    finish_tree(&env, &w, &[w.pid]);
}

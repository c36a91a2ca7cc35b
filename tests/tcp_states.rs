//! TCP connections past established, through TCP_REPAIR with `--tcp-established`: half
//! closed (CLOSE_WAIT, FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING) and ended but not closed
//! yet (CLOSE). The workload (tests/workloads/tcphalf.c) holds one connection in each
//! state and checks, at each end, that reads and writes give what the state says and
//! that data still flows where it can. A connection being made (SYN_SENT) is
//! tests/workloads/synsent.c. The refusals are in tests/net.rs.

mod common;

use common::*;
use std::ffi::OsStr;

const CYCLES: usize = 3;

/// Every end in one process: a dump that leaves it running, then three cycles.
fn both_ends_inside(family: &str) {
    let env = Env::new();
    let mut w = env.start_with("tcphalf", &["both", family]);
    leave_running_then_cycles(&env, &mut w);
    env.kill_and_reap(w.pid);
}

/// A dump with `--leave-running` (which must unlock), then three cycles, each locked
/// between its dump and its restore and unlocked after; `w` checks itself after each.
fn leave_running_then_cycles(env: &Env, w: &mut Workload) {
    env.check(w);
    let table = format!("ckpt_lock_{}", w.pid);
    let lr = env.subdir("img-lr");
    env.dump(w.pid, &lr, &["--tcp-established", "--leave-running"])
        .ok();
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left after --leave-running"
    );
    env.check(w);
    env.cycles(w, CYCLES, &["--tcp-established"], |i, img| {
        assert!(
            ckpt_sys::nft::is_locked(&table),
            "cycle {i}: no lock {table} between dump and restore ({})",
            img.display()
        );
    });
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left after the restores"
    );
}

#[test]
fn half_closed_and_ended_tcp_ipv4_three_cycles() {
    both_ends_inside("4");
}

#[test]
fn half_closed_and_ended_tcp_ipv6_three_cycles() {
    both_ends_inside("6");
}

/// The server ends in the dumped tree, the client ends in a process outside it that
/// never stops: after each restore both check (the server first: its check sends what
/// the client's then expects).
#[test]
fn half_closed_and_ended_tcp_peer_outside_three_cycles() {
    let env = Env::new();
    let bin = workload_bin("tcphalf");
    let dir = env.path().as_os_str();
    let mut server = env.spawn(
        "server",
        &bin,
        &[dir, OsStr::new("server"), OsStr::new("4")],
    );
    let line = env.wait_line(&server, "PORT", |l| l.starts_with("PORT "));
    let port = line.split_whitespace().nth(1).unwrap().to_string();
    let mut client = env.spawn(
        "client",
        &bin,
        &[dir, "client".as_ref(), "4".as_ref(), port.as_ref()],
    );
    env.wait_ready(&client);
    env.wait_ready(&server);
    env.check(&mut server);
    env.check(&mut client);
    let table = format!("ckpt_lock_{}", server.pid);
    for i in 1..=CYCLES {
        let img = env.subdir(&format!("img{i}"));
        env.dump(server.pid, &img, &["--tcp-established"]).ok();
        assert!(
            ckpt_sys::nft::is_locked(&table),
            "cycle {i}: no lock {table} between dump and restore"
        );
        env.restore_dumped(&server, &img);
        assert!(!ckpt_sys::nft::is_locked(&table), "cycle {i}: lock left");
        env.check(&mut server);
        env.check(&mut client);
    }
    env.kill_and_reap(server.pid);
    env.kill_and_reap(client.pid);
}

/// The workload's checks notice a wrong byte (SIGTERM corrupts one position).
#[test]
fn tcphalf_notices_corruption() {
    let env = Env::new();
    let w = env.start_with("tcphalf", &["both", "4"]);
    notices_corruption(&env, &w);
}

/// A connection being made (SYN_SENT): a non-blocking connect whose SYNs the listener, a
/// process outside the tree, drops while its accept queue is full. It is dumped (once
/// left running, then three cycles) and restored still being made, from the same
/// address; once the listener opens its queue, the retransmitted SYN completes it and
/// bytes go both ways (tests/workloads/synsent.c).
fn syn_sent(family: &str) {
    let env = Env::new();
    let (mut listener, port) = synsent_listener(&env, family);
    let mut w = env.start_with("synsent", &["connect", family, &port]);
    leave_running_then_cycles(&env, &mut w);
    // Opens the queue: the connection completes and echoes.
    env.check(&mut listener);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
    env.kill_and_reap(listener.pid);
}

/// synsent's listener (outside the tree), its queue full; and its port.
fn synsent_listener(env: &Env, family: &str) -> (Workload, String) {
    let bin = workload_bin("synsent");
    let dir = env.path().as_os_str();
    let listener = env.spawn(
        "listener",
        &bin,
        &[dir, OsStr::new("listen"), OsStr::new(family)],
    );
    let line = env.wait_line(&listener, "PORT", |l| l.starts_with("PORT "));
    let port = line.split_whitespace().nth(1).unwrap().to_string();
    env.wait_ready(&listener);
    (listener, port)
}

#[test]
fn syn_sent_ipv4_three_cycles() {
    syn_sent("4");
}

#[test]
fn syn_sent_ipv6_three_cycles() {
    syn_sent("6");
}

/// The workload's check notices a changed local address.
#[test]
fn synsent_notices_corruption() {
    let env = Env::new();
    let (listener, port) = synsent_listener(&env, "4");
    let w = env.start_with("synsent", &["connect", "4", &port]);
    notices_corruption(&env, &w);
    env.kill_and_reap(listener.pid);
}

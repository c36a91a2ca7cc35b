//! TCP connections past established, through TCP_REPAIR with `--tcp-established`: half
//! closed (CLOSE_WAIT, FIN_WAIT1, FIN_WAIT2, LAST_ACK, CLOSING) and ended but not closed
//! yet (CLOSE). The workload (tests/workloads/tcphalf.c) holds one connection in each
//! state and checks, at each end, that reads and writes give what the state says and
//! that data still flows where it can. The refusals are in tests/net.rs.

mod common;

use common::*;
use std::ffi::OsStr;

const CYCLES: usize = 3;

/// Every end in one process: a dump that leaves it running, then three cycles.
fn both_ends_inside(family: &str) {
    let env = Env::new();
    let mut w = env.start_with("tcphalf", &["both", family]);
    env.check(&mut w);
    let table = format!("ckpt_lock_{}", w.pid);
    let lr = env.subdir("img-lr");
    env.dump(w.pid, &lr, &["--tcp-established", "--leave-running"])
        .ok();
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left after --leave-running"
    );
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &["--tcp-established"], |_, _| {});
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left after the restores"
    );
    env.kill_and_reap(w.pid);
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

//! Kernel state of sockets that a restore must not lose silently, each in a
//! self-checking workload that asks its own sockets after every restore: multicast
//! memberships with their source filters (`mcast`), options of unix sockets (`unixopts`),
//! and a listener's half-open connections, refused.

mod common;

use common::*;

#[test]
fn mcast_sane() {
    sanity(|e| e.start("mcast"));
}

/// Every membership (plain, source-specific, filtered; IPv4, IPv6, IPv4 on an IPv6
/// socket) is there after a `--leave-running` dump and three cycles, and a group left
/// before the dump stays left.
#[test]
fn multicast_memberships_three_cycles() {
    leave_running_then_three_cycles("mcast");
}

#[test]
fn unixopts_sane() {
    sanity(|e| e.start("unixopts"));
}

/// A unix socket's filter (classic BPF, locked), timeouts, SO_RCVLOWAT, SO_PRIORITY,
/// SO_MARK, SO_TIMESTAMP, SO_PASSPIDFD, SO_PASSSEC, SO_PASSRIGHTS and SO_BUF_LOCK come
/// back, the filter still filtering, a queued message still there.
#[test]
fn unix_socket_options_three_cycles() {
    leave_running_then_three_cycles("unixopts");
}

/// IP_OPTIONS, SO_TXTIME, SO_TIMESTAMPING, SO_TIMESTAMP_NEW, UDP_ENCAP, sticky IPv6
/// extension headers, IPV6_FLOWINFO_SEND and TCP_FASTOPEN_CONNECT read back the same
/// after three cycles (tests/workloads/sockopts.py); the check notices a lost one.
#[test]
fn ip_options_three_cycles() {
    let env = Env::new();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads/sockopts.py");
    let py = python3();
    let args = [std::ffi::OsStr::new(script), env.path().as_os_str()];
    let mut w = env.spawn("sockopts", &py, &args);
    env.wait_ready(&w);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
    notices_corruption(&env, &w);
}

/// An nftables table of the test's own, deleted when dropped.
struct NftTable(String);

impl NftTable {
    /// Drops the SYN-ACKs the listener on 127.0.0.1:`port` sends: its clients' handshakes
    /// stay half open (SYN_RECV on the listener's side) until the table goes.
    fn drop_syn_acks(port: u16) -> NftTable {
        let name = format!("ckpt_test_synrecv_{}_{port}", std::process::id());
        let t = NftTable(name.clone());
        let script = format!(
            "add table ip {name}\n\
             add chain ip {name} out {{ type filter hook output priority 0; }}\n\
             add rule ip {name} out ip saddr 127.0.0.1 tcp sport {port} \
             tcp flags & (syn | ack) == syn | ack drop\n"
        );
        let out = std::process::Command::new(which("nft"))
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(script.as_bytes())?;
                c.wait_with_output()
            })
            .expect("run nft");
        assert!(out.status.success(), "nft: {out:?}");
        t
    }
}

impl Drop for NftTable {
    fn drop(&mut self) {
        let _ = std::process::Command::new(which("nft"))
            .args(["delete", "table", "ip", &self.0])
            .status();
    }
}

/// Connections to 127.0.0.1:`port` in SYN_RECV, as `ss` sees them.
fn syn_recv(port: u16) -> usize {
    let out = std::process::Command::new(which("ss"))
        .args([
            "-Htn",
            "state",
            "syn-recv",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .expect("run ss");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// A listener with a handshake half done (its SYN-ACK dropped, so the connection stays in
/// SYN_RECV) is refused by name, since a restored listener would reset that client; the
/// workload runs on untouched. Once the handshake completes, the dump goes through.
#[test]
fn half_open_connection_refused_then_retry_succeeds() {
    let env = Env::new();
    let mut w = env.start("inet");
    let line = env.wait_line(&w, "PORTS", |l| l.starts_with("PORTS "));
    let p4: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let table = NftTable::drop_syn_acks(p4);
    let client = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], p4));
        let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        s.write_all(b"half open\n").unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    wait_until("a connection in SYN_RECV", || syn_recv(p4) > 0);
    let check = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    assert!(check.stdout.contains("SYN_RECV"), "check -t: {check}");
    let dir = env.subdir("img");
    let needle = format!("pid {}: fd 10 (", w.pid);
    let line = env.dump(w.pid, &dir, &[]).failed_naming(&needle);
    assert!(
        line.contains("SYN_RECV") && line.contains("Retry"),
        "{line}"
    );
    assert!(!dir.join("inventory.img").exists());
    assert_running_untraced(w.pid);
    env.check(&mut w);
    drop(table);
    assert_eq!(client.join().unwrap(), "echo half open\n");
    wait_until("no connection in SYN_RECV", || syn_recv(p4) == 0);
    env.cycle(&mut w, &env.subdir("retried"));
    env.kill_and_reap(w.pid);
}

//! Sockets of the network: listening TCP and bound UDP sockets (IPv4, IPv6) with their
//! options and queued datagrams; established TCP connections with `--tcp-established`,
//! their peer outside the dumped tree; and the sockets that are refused (half closed
//! connections: tests/tcp_states.rs).

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const CYCLES: usize = 3;

#[test]
fn inet_sane() {
    sanity(|e| e.start("inet"));
}

/// `PORTS <tcp4> <tcp6>` of the inet workload.
fn ports(env: &Env, w: &Workload) -> (u16, u16) {
    let line = env.wait_line(w, "PORTS", |l| l.starts_with("PORTS "));
    let mut it = line.split_whitespace().skip(1).map(|p| p.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

/// A client of the inet workload's listener at `addr`: sends a line, gets it echoed.
fn echo(addr: SocketAddr, line: &str) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got)
        .unwrap_or_else(|e| panic!("read from {addr}: {e}"));
    assert_eq!(got, format!("echo {line}"), "answer of {addr}");
}

#[test]
fn listening_and_udp_sockets_three_cycles() {
    let env = Env::new();
    let mut w = env.start("inet");
    let (p4, p6) = ports(&env, &w);
    env.check(&mut w);
    env.cycles(&mut w, CYCLES, &[], |i, _| {
        // Nobody listens while the process is gone: a connection is refused, never
        // accepted by someone else.
        let refused = TcpStream::connect(("127.0.0.1", p4));
        assert!(
            refused.is_err(),
            "cycle {i}: port {p4} answered while dumped"
        );
    });
    // After the last restore both listeners still accept, and the queued datagrams are
    // read for real by the final check.
    echo(SocketAddr::from(([127, 0, 0, 1], p4)), "after restore v4\n");
    echo(
        SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], p6)),
        "after restore v6\n",
    );
    assert!(signal(w.pid, libc::SIGUSR2));
    let st = reap(w.pid, Duration::from_secs(30)).expect("exit on SIGUSR2");
    env.untrack(w.pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "final check: {}\n{}",
        describe_wait(st),
        env.output(&w)
    );
}

/// A socket filter loaded as eBPF cannot be read back (SO_GET_FILTER: EACCES): `check`
/// and the dump name it, and the workload (whose classic filters and other options the
/// three-cycle test restores) runs on untouched.
#[test]
fn ebpf_socket_filter_refused_by_name() {
    let env = Env::new();
    let mut w = env.start_with("inet", &["ebpf"]);
    env.wait_line(&w, "PORTS", |l| l.starts_with("PORTS "));
    let needle = format!("pid {}: fd 15 (udp6", w.pid);
    let check = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert_eq!(check.status.code(), Some(1), "{check}");
    assert!(check.stdout.contains("SO_ATTACH_BPF"), "check -t: {check}");
    let dir = env.subdir("img");
    let line = env.dump(w.pid, &dir, &[]).failed_naming(&needle);
    assert!(line.contains("SO_ATTACH_BPF"), "{line}");
    assert!(!dir.join("inventory.img").exists());
    assert_running_untraced(w.pid);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
}

#[test]
fn leave_running_keeps_udp_queues() {
    let env = Env::new();
    let mut w = env.start("inet");
    for i in 1..=2 {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(w.pid, &dir, &["--leave-running"]).ok();
        assert_running_untraced(w.pid);
        env.check(&mut w);
    }
    let dir = env.subdir("img3");
    env.cycle(&mut w, &dir);
}

/// A Python workload holding one socket of `kind`; the dump must refuse it naming the
/// kind, and leave the workload running and passing its check.
fn refused(kind: &str, needle: &str, extra: &[&str]) {
    let env = Env::new();
    let script = env.path().join("sock.py");
    std::fs::write(
        &script,
        format!(
            "import socket, sys\nsys.path.insert(0, {dir:?})\nimport wl\n{setup}\n\
             wl.run(lambda: None, lambda: None)\n",
            dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/workloads"),
            setup = match kind {
                // An RTM_GETLINK request of lo whose answer is not read.
                "netlink_queued" =>
                    "import struct\n\
                     a = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)\n\
                     a.send(struct.pack('=IHHII', 32, 18, 1, 1, 0) + struct.pack('=BxHiII', 0, 0, 1, 0, 0))\n\
                     import select; select.select([a], [], [], 10)",
                "netfilter" => "a = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 12)",
                // Joined to lo's all-multicast (PACKET_ADD_MEMBERSHIP, PACKET_MR_ALLMULTI).
                "packet_membership" =>
                    "import struct\n\
                     a = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x88b7))\n\
                     a.setsockopt(263, 1, struct.pack('iHH8s', socket.if_nametoindex('lo'), 2, 0, b''))",
                // In a fanout group (PACKET_FANOUT, hash).
                "packet_fanout" =>
                    "a = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b7))\n\
                     a.bind(('lo', 0x88b7)); a.setsockopt(263, 18, 77)",
                // A frame of its own protocol sent on lo, not read.
                "packet_queued" =>
                    "a = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x88b8))\n\
                     a.bind(('lo', 0x88b8)); a.sendto(b'x' * 60, ('lo', 0x88b8, 0, 0, b'\\0' * 6))\n\
                     import select; select.select([a], [], [], 10)",
                "raw" => "a = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
                "unaccepted" =>
                    "a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen(4)\n\
                     b = socket.create_connection(a.getsockname())",
                "established" =>
                    "a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen(4)\n\
                     b = socket.create_connection(a.getsockname()); c, _ = a.accept(); a.close()",
                // The client shut down (and closed): the server's end in CLOSE_WAIT.
                "close_wait" =>
                    "a = socket.socket(); a.bind(('127.0.0.1', 0)); a.listen(4)\n\
                     b = socket.create_connection(a.getsockname()); c, _ = a.accept(); a.close()\n\
                     b.shutdown(socket.SHUT_WR); assert c.recv(1) == b''; b.close()",
                // Refused by a bound socket that does not listen: ECONNREFUSED waits in
                // the socket until the program asks.
                "ended_with_error" =>
                    "a = socket.socket(); a.bind(('127.0.0.1', 0))\n\
                     b = socket.socket(); b.setblocking(False); b.connect_ex(a.getsockname())\n\
                     import select; select.select([], [b], [], 10)",
                // A listener with a TCP-MD5 key for 127.0.0.1 (struct tcp_md5sig).
                "md5" =>
                    "import struct\n\
                     a = socket.socket(); a.bind(('127.0.0.1', 0))\n\
                     peer = struct.pack('=HH4s120x', socket.AF_INET, 0, socket.inet_aton('127.0.0.1'))\n\
                     a.setsockopt(6, 14, peer + struct.pack('=BBHi80s', 0, 0, 6, 0, b'secret')); a.listen(4)",
                // Part of a datagram written under UDP_CORK, not sent yet.
                "udp_corked" =>
                    "a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.connect(('127.0.0.1', 9))\n\
                     a.setsockopt(socket.IPPROTO_UDP, 1, 1); a.send(b'part')",
                other => panic!("{other}"),
            }
        ),
    )
    .unwrap();
    let py = python3();
    let mut w = env.spawn(kind, &py, &[script.as_os_str(), env.path().as_os_str()]);
    env.wait_ready(&w);
    let check = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert_eq!(
        check.status.code(),
        Some(1),
        "check -t should list the socket: {check}"
    );
    assert!(check.stdout.contains(needle), "check -t: {check}");
    let dir = env.subdir("img");
    let out = env.dump(w.pid, &dir, extra);
    out.failed_naming(needle);
    assert!(!dir.join("inventory.img").exists());
    assert_running_untraced(w.pid);
    env.check(&mut w);
    env.kill_and_reap(w.pid);
}

/// TCP-MD5 keys have no getter (sock_diag shows them): refused, not dropped.
#[test]
fn tcp_md5_keys_refused() {
    refused("md5", "TCP-MD5 keys", &[]);
}

/// The bytes of a corked UDP datagram wait in the socket: refused, not dropped.
#[test]
fn corked_udp_datagram_refused() {
    refused("udp_corked", "a datagram being built", &[]);
}

#[test]
fn netlink_socket_with_a_message_unread_refused() {
    refused("netlink_queued", "a netlink socket with a message", &[]);
}

#[test]
fn netlink_socket_of_another_family_refused() {
    refused("netfilter", "a netlink socket of protocol 12", &[]);
}

/// Route, generic and uevent netlink sockets (tests/workloads/nlsock.c): port ids, groups
/// below and above 32, flags, and requests answered after each restore.
#[test]
fn netlink_sockets_three_cycles() {
    let env = Env::new();
    let mut w = env.start("nlsock");
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
    env.kill_and_reap(w.pid);
}

#[test]
fn nlsock_notices_corruption() {
    let env = Env::new();
    let w = env.start("nlsock");
    notices_corruption(&env, &w);
}

#[test]
fn packet_socket_with_a_membership_refused() {
    refused(
        "packet_membership",
        "a packet socket with a membership",
        &[],
    );
}

#[test]
fn packet_socket_in_a_fanout_group_refused() {
    refused("packet_fanout", "a packet socket with a fanout group", &[]);
}

#[test]
fn packet_socket_with_a_packet_unread_refused() {
    refused("packet_queued", "a packet socket with a packet", &[]);
}

/// Packet sockets bound to lo and to every interface (tests/workloads/pktsock.c): type,
/// protocol, interface, options, and a frame sent on lo that comes back after each
/// restore.
#[test]
fn packet_sockets_three_cycles() {
    let env = Env::new();
    let mut w = env.start("pktsock");
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
    env.kill_and_reap(w.pid);
}

#[test]
fn pktsock_notices_corruption() {
    let env = Env::new();
    let w = env.start("pktsock");
    notices_corruption(&env, &w);
}

#[test]
fn raw_socket_refused() {
    refused("raw", "only TCP and UDP are supported", &[]);
}

#[test]
fn listener_with_unaccepted_connection_refused() {
    refused("unaccepted", "1 connections not accepted yet", &[]);
}

#[test]
fn established_connection_refused_without_the_flag() {
    refused("established", "--tcp-established", &[]);
}

#[test]
fn half_closed_connection_refused_without_the_flag() {
    refused(
        "close_wait",
        "(state CLOSE_WAIT); dump with --tcp-established",
        &[],
    );
}

/// A connection ended by a reset (here a refused connect) whose error the program has
/// not read: SO_ERROR would clear it, so the dump cannot know which it is.
#[test]
fn ended_connection_with_its_error_unread_refused() {
    refused(
        "ended_with_error",
        "ended with an error the program has not read yet",
        &["--tcp-established"],
    );
}

// ------------------------------------------------------------- established connections

/// With `--tcp-established` the listening ports are locked too (their SYNs dropped until
/// the restore has made the listener again): a client outside the tree connecting in a
/// loop to the inet workload's listener while it is dumped, killed and restored three
/// times sees delays, never a refusal or a reset, and every answer is right. A dump that
/// meets a connection made after the tree stopped and not accepted is refused (by name)
/// and retried.
#[test]
fn clients_connecting_during_the_dump_see_no_reset() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let env = Env::new();
    let mut w = env.start("inet");
    let (p4, _) = ports(&env, &w);
    env.check(&mut w);
    let addr = SocketAddr::from(([127, 0, 0, 1], p4));
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, served) = (stop.clone(), served.clone());
        std::thread::spawn(move || -> Result<(), String> {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let line = format!("client {n}\n");
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(30))
                    .map_err(|e| format!("connect {n}: {e}"))?;
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                s.write_all(line.as_bytes())
                    .map_err(|e| format!("write {n}: {e}"))?;
                let mut got = String::new();
                s.read_to_string(&mut got)
                    .map_err(|e| format!("read {n}: {e}"))?;
                if got != format!("echo {line}") {
                    return Err(format!("answer {n}: {got:?}"));
                }
                served.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        })
    };
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        let mut tries = 0;
        loop {
            tries += 1;
            let before = served.load(Ordering::Relaxed);
            let dumped = env.dump(w.pid, &dir, &["--tcp-established"]);
            if dumped.success() {
                break;
            }
            let why = dumped.stderr.clone();
            assert!(
                why.contains("not accepted yet") || why.contains("half open"),
                "cycle {i}: {dumped}"
            );
            assert!(tries < 20, "cycle {i}: 20 dumps refused: {why}");
            assert_running_untraced(w.pid);
            // The client goes on (the refused dump let everything go).
            let t = std::time::Instant::now();
            while served.load(Ordering::Relaxed) == before && t.elapsed() < Duration::from_secs(30)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        env.restore_dumped(&w, &dir);
        let before = served.load(Ordering::Relaxed);
        let t = std::time::Instant::now();
        while served.load(Ordering::Relaxed) < before + 3 && t.elapsed() < Duration::from_secs(60) {
            if client.is_finished() {
                let r = client.join().expect("client thread");
                panic!("cycle {i}: the client stopped: {r:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(
            served.load(Ordering::Relaxed) >= before + 3,
            "cycle {i}: the client got no answers after the restore"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let r = client.join().expect("client thread");
    assert!(r.is_ok(), "the client saw {:?}", r.err());
    env.check(&mut w);
    env.kill_and_reap(w.pid);
}

/// The server (inside the tree) and its client (outside), streaming both ways.
fn stream_pair(env: &Env, family: &str) -> (Workload, Workload) {
    let bin = workload_bin("tcpstream");
    let dir = env.path().as_os_str();
    let server = env.spawn("server", &bin, &[dir, "server".as_ref(), family.as_ref()]);
    let line = env.wait_line(&server, "PORT", |l| l.starts_with("PORT "));
    let port = line.split_whitespace().nth(1).unwrap().to_string();
    let client = env.spawn(
        "client",
        &bin,
        &[dir, "client".as_ref(), family.as_ref(), port.as_ref()],
    );
    env.wait_ready(&client);
    env.wait_ready(&server);
    (server, client)
}

/// The last `COUNT sent received` of a workload.
fn counts(env: &Env, w: &Workload) -> (u64, u64) {
    let text = env.output(w);
    let l = text
        .lines()
        .rev()
        .find(|l| l.starts_with("COUNT "))
        .expect("a COUNT line");
    let mut it = l.split_whitespace().skip(1).map(|n| n.parse().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

fn established_cycles(family: &str) {
    let env = Env::new();
    let (mut server, mut client) = stream_pair(&env, family);
    env.check(&mut server);
    env.check(&mut client);
    let table = format!("ckpt_lock_{}", server.pid);
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        env.dump(server.pid, &dir, &["--tcp-established"]).ok();
        assert!(
            ckpt_sys::nft::is_locked(&table),
            "cycle {i}: no lock {table} between dump and restore"
        );
        let (_, before) = counts(&env, &client);
        env.restore_dumped(&server, &dir);
        assert!(
            !ckpt_sys::nft::is_locked(&table),
            "cycle {i}: lock {table} left after the restore"
        );
        // Both ends go on: every byte in order (each checks), both directions moving.
        env.check(&mut server);
        env.check(&mut client);
        let (_, after) = counts(&env, &client);
        assert!(after > before, "cycle {i}: the client received nothing new");
    }
    // Either end exiting resets the other (unread data): the checks above were the end.
    env.kill_and_reap(server.pid);
    env.kill_and_reap(client.pid);
}

#[test]
fn established_tcp_ipv4_three_cycles() {
    established_cycles("4");
}

#[test]
fn established_tcp_ipv6_three_cycles() {
    established_cycles("6");
}

#[test]
fn established_tcp_leave_running_unlocks() {
    let env = Env::new();
    let (mut server, mut client) = stream_pair(&env, "4");
    let table = format!("ckpt_lock_{}", server.pid);
    let dir = env.subdir("img");
    env.dump(server.pid, &dir, &["--tcp-established", "--leave-running"])
        .ok();
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left by --leave-running"
    );
    assert_running_untraced(server.pid);
    env.check(&mut server);
    env.check(&mut client);
    env.kill_and_reap(server.pid);
    env.kill_and_reap(client.pid);
}

/// A dump that fails after the connection was locked and put in repair mode (SIGTERM once it
/// read the connection): the lock is gone, the server runs on untraced, and the stream goes
/// on without a reset.
#[test]
fn failed_dump_unlocks_the_connection() {
    let env = Env::new();
    let (mut server, mut client) = stream_pair(&env, "4");
    let table = format!("ckpt_lock_{}", server.pid);
    let dir = env.subdir("img");
    let hold = Hold::new(&env, "tcp-repair");
    let bg = env.ckpt_bg_held(&hold, &dump_args(server.pid, &dir, &["--tcp-established"]));
    let ckpt = bg.child.id() as i32;
    assert_eq!(hold.reached(), ckpt);
    assert!(ckpt_sys::nft::is_locked(&table), "not locked while dumping");
    assert!(signal(ckpt, libc::SIGTERM));
    let out = env.finish_bg(bg);
    assert_eq!(out.status.code(), Some(1), "ckpt should exit 1: {out}");
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left by a failed dump"
    );
    assert_running_untraced(server.pid);
    env.check(&mut server);
    env.check(&mut client);
    env.kill_and_reap(server.pid);
    env.kill_and_reap(client.pid);
}

/// A restore that fails (SIGTERM while it rebuilds the process) leaves no process but
/// keeps the lock, so the peer still sees no reset; restoring again carries on.
#[test]
fn failed_restore_keeps_the_lock_for_a_retry() {
    let env = Env::new();
    let (mut server, mut client) = stream_pair(&env, "4");
    let table = format!("ckpt_lock_{}", server.pid);
    let dir = env.subdir("img");
    env.dump(server.pid, &dir, &["--tcp-established"]).ok();
    env.reap_dumped(server.pid);
    let hold = Hold::new(&env, "restore-puppet");
    let bg = env.restore_detached_held(&hold, &dir);
    let ckpt = bg.child.id() as i32;
    env.track(server.pid);
    assert_eq!(hold.reached(), ckpt);
    assert!(signal(ckpt, libc::SIGTERM));
    let out = env.finish_bg(bg);
    assert_eq!(out.status.code(), Some(1), "ckpt should exit 1: {out}");
    env.assert_gone(server.pid);
    assert!(
        ckpt_sys::nft::is_locked(&table),
        "a failed restore unlocked"
    );
    env.restore_detached(&dir).ok();
    assert!(
        !ckpt_sys::nft::is_locked(&table),
        "lock left after the restore"
    );
    env.check(&mut server);
    env.check(&mut client);
    env.kill_and_reap(server.pid);
    env.kill_and_reap(client.pid);
}

/// A pre-forking server: one listening socket held by a parent and its child, restored
/// once and shared again (the same socket at the same fd in both), both serving clients.
#[test]
fn prefork_server_shares_its_listener_three_cycles() {
    let env = Env::new();
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workloads/prefork.py");
    let mut w = env.spawn(
        "prefork",
        &python3(),
        &[script.as_os_str(), env.path().as_os_str()],
    );
    env.wait_ready(&w);
    let port: u16 = env
        .wait_line(&w, "PORT", |l| l.starts_with("PORT "))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let child: i32 = env
        .wait_line(&w, "CHILD", |l| l.starts_with("CHILD "))
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    env.track(child);
    env.check(&mut w);
    let mut pids = Vec::new();
    for i in 1..=CYCLES {
        let dir = env.subdir(&format!("img{i}"));
        pids = common::tree::tree_cycle(&env, &mut w, &dir);
        assert!(
            pids.contains(&child),
            "cycle {i}: the child is not in the image"
        );
        // Both processes answer, from the one socket.
        let mut served = std::collections::HashSet::new();
        for n in 0..200 {
            let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            s.write_all(format!("hello {n}\n").as_bytes()).unwrap();
            let mut got = String::new();
            s.read_to_string(&mut got).unwrap();
            let who: i32 = got.split_whitespace().nth(1).unwrap().parse().unwrap();
            served.insert(who);
            if served.len() == 2 {
                break;
            }
        }
        assert_eq!(
            served,
            [w.pid, child].into_iter().collect(),
            "cycle {i}: who served"
        );
    }
    common::tree::finish_tree(&env, &w, &pids);
}

//! What a `socket:[INODE]` fd is, in words (`tcp 127.0.0.1:8765 LISTEN`, `unix stream
//! /run/x.sock connected`), for blockers and errors: looked up by inode in the tables of
//! the process's own network namespace (/proc/PID/net/*), read without touching it.

use ckpt_sys::Pid;
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Socket descriptions by inode, one table per network namespace (several processes of a
/// tree usually share one).
#[derive(Default)]
pub struct SocketTables {
    by_netns: HashMap<String, HashMap<u64, String>>,
}

impl SocketTables {
    /// What socket `inode` of `pid` is, or None if no table of its netns lists it.
    pub fn describe(&mut self, pid: Pid, inode: u64) -> Option<String> {
        let ns = std::fs::read_link(format!("/proc/{pid}/ns/net"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_else(|_| format!("pid {pid}"));
        self.by_netns
            .entry(ns)
            .or_insert_with(|| read_tables(pid))
            .get(&inode)
            .cloned()
    }
}

fn read_tables(pid: Pid) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/net/{name}")).ok();
    for (file, proto) in [
        ("tcp", "tcp"),
        ("tcp6", "tcp6"),
        ("udp", "udp"),
        ("udp6", "udp6"),
        ("udplite", "udplite"),
        ("udplite6", "udplite6"),
        ("raw", "raw"),
        ("raw6", "raw6"),
    ] {
        if let Some(text) = read(file) {
            parse_inet(&text, proto, &mut out);
        }
    }
    if let Some(text) = read("unix") {
        parse_unix(&text, &mut out);
    }
    if let Some(text) = read("netlink") {
        parse_netlink(&text, &mut out);
    }
    if let Some(text) = read("packet") {
        parse_packet(&text, &mut out);
    }
    out
}

/// tcp/udp/raw (v4 and v6): `sl local rem st ... uid timeout inode`.
fn parse_inet(text: &str, proto: &str, out: &mut HashMap<u64, String>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(local), Some(remote), Ok(st), Ok(inode)) = (
            addr(f[1]),
            addr(f[2]),
            u8::from_str_radix(f[3], 16),
            f[9].parse::<u64>(),
        ) else {
            continue;
        };
        let mut d = format!("{proto} {local}");
        let unconnected =
            remote.ends_with(":0") && (remote.starts_with("0.0.0.0") || remote.starts_with("[::]"));
        if proto.starts_with("tcp") {
            if !unconnected {
                d += &format!(" -> {remote}");
            }
            d += " ";
            d += tcp_state(st);
        } else if !unconnected {
            d += &format!(" -> {remote}");
        }
        out.insert(inode, d);
    }
}

/// `0100007F:1F90` (v4) or 32 hex digits `:PORT` (v6), in the kernel's byte order per
/// 32-bit word.
fn addr(s: &str) -> Option<String> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    match ip.len() {
        8 => {
            let v = u32::from_str_radix(ip, 16).ok()?;
            Some(format!("{}:{port}", Ipv4Addr::from(v.to_le_bytes())))
        }
        32 => {
            let mut bytes = [0u8; 16];
            for w in 0..4 {
                let v = u32::from_str_radix(&ip[w * 8..w * 8 + 8], 16).ok()?;
                bytes[w * 4..w * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            Some(format!("[{}]:{port}", Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// include/net/tcp_states.h
fn tcp_state(st: u8) -> &'static str {
    match st {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "in an unknown state",
    }
}

/// `Num RefCount Protocol Flags Type St Inode [Path]`.
fn parse_unix(text: &str, out: &mut HashMap<u64, String>) {
    const SO_ACCEPTCON: u32 = 1 << 16;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 7 {
            continue;
        }
        let (Ok(flags), Ok(ty), Ok(st), Ok(inode)) = (
            u32::from_str_radix(f[3], 16),
            u16::from_str_radix(f[4], 16),
            u8::from_str_radix(f[5], 16),
            f[6].parse::<u64>(),
        ) else {
            continue;
        };
        let ty = match ty {
            1 => "stream",
            2 => "dgram",
            5 => "seqpacket",
            _ => "socket",
        };
        let mut d = format!("unix {ty}");
        if let Some(path) = f.get(7) {
            d += " ";
            d += path;
        }
        let state = if flags & SO_ACCEPTCON != 0 {
            "listening"
        } else {
            match st {
                2 => "connecting",
                3 => "connected",
                4 => "disconnecting",
                _ => "",
            }
        };
        if !state.is_empty() {
            d += " ";
            d += state;
        }
        out.insert(inode, d);
    }
}

/// `sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode`.
fn parse_netlink(text: &str, out: &mut HashMap<u64, String>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(proto), Some(Ok(inode))) = (
            f.get(1).and_then(|p| p.parse::<u32>().ok()),
            f.get(9).map(|i| i.parse::<u64>()),
        ) else {
            continue;
        };
        let name = match proto {
            0 => "route",
            4 => "sock_diag",
            9 => "audit",
            15 => "uevent",
            16 => "generic",
            _ => "",
        };
        let d = if name.is_empty() {
            format!("netlink protocol {proto}")
        } else {
            format!("netlink {name}")
        };
        out.insert(inode, d);
    }
}

/// `sk RefCnt Type Proto Iface R Rmem User Inode`.
fn parse_packet(text: &str, out: &mut HashMap<u64, String>) {
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if let Some(Ok(inode)) = f.get(8).map(|i| i.parse::<u64>()) {
            out.insert(inode, "packet socket".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_each_table() {
        let mut m = HashMap::new();
        parse_inet(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 0100007F:223D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 62994 1 0 100 0 0 10 0\n\
             1: 0100007F:223D 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 62995 1 0 100 0 0 10 0",
            "tcp",
            &mut m,
        );
        assert_eq!(m[&62994], "tcp 127.0.0.1:8765 LISTEN");
        assert_eq!(
            m[&62995],
            "tcp 127.0.0.1:8765 -> 127.0.0.1:40000 ESTABLISHED"
        );
        parse_inet(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
             1: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 7 2 0 0",
            "udp",
            &mut m,
        );
        assert_eq!(m[&7], "udp 0.0.0.0:53");
        parse_inet(
            "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
             0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 8 1 0",
            "tcp6",
            &mut m,
        );
        assert_eq!(m[&8], "tcp6 [::1]:8080 LISTEN");
        parse_unix(
            "Num       RefCount Protocol Flags    Type St Inode Path\n\
             0000000000000000: 00000002 00000000 00010000 0001 01 11 /run/x.sock\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 12 /run/x.sock\n\
             0000000000000000: 00000002 00000000 00000000 0002 01 13 @abstract\n\
             0000000000000000: 00000003 00000000 00000000 0001 03 14",
            &mut m,
        );
        assert_eq!(m[&11], "unix stream /run/x.sock listening");
        assert_eq!(m[&12], "unix stream /run/x.sock connected");
        assert_eq!(m[&13], "unix dgram @abstract");
        assert_eq!(m[&14], "unix stream connected");
        parse_netlink(
            "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
             0000000000000000 0   1          00000000 0        0        0     2        0        21",
            &mut m,
        );
        assert_eq!(m[&21], "netlink route");
    }
}

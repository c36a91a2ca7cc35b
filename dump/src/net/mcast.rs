//! The multicast groups a UDP socket joined, with their source filters
//! (IP_ADD_MEMBERSHIP, IP_ADD_SOURCE_MEMBERSHIP, IP_MSFILTER, MCAST_JOIN_GROUP,
//! MCAST_JOIN_SOURCE_GROUP, MCAST_MSFILTER, IPV6_ADD_MEMBERSHIP: all end in the same
//! per-socket list, read back the same way). Nothing lists a socket's groups, so each
//! group an interface of the holder's network namespace has joined (/proc/PID/net/igmp
//! and igmp6: a socket's join always joins its interface too) is asked of the socket
//! (`ckpt_sys::mcast::filter`). An IPv6 socket may hold IPv4 groups as well.
//!
//! Each membership becomes two options for the restore to set: MCAST_JOIN_GROUP, then,
//! unless it is a plain join of any source, MCAST_MSFILTER with the filter as read (a
//! source-specific join is an INCLUDE filter). The interface is kept by index: in the
//! host's namespace that is the same interface; a container's fresh namespace numbers
//! its interfaces in the order the restore makes them.

use ckpt_images::pb;
use ckpt_sys::mcast;
use ckpt_sys::Pid;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::BorrowedFd;

/// (interface index, group) pairs of the network namespace of `pid`: IPv4 groups, and
/// IPv6 ones if `v6`.
fn candidates(pid: Pid, v6: bool) -> Result<Vec<(u32, IpAddr)>, String> {
    let read = |name: &str| {
        let path = format!("/proc/{pid}/net/{name}");
        std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))
    };
    let bad =
        |name: &str, line: &str| format!("/proc/{pid}/net/{name}: a line not understood: {line:?}");
    let mut out = Vec::new();
    // igmp: an interface line ("1\tlo        :     4      V3"), then one line per
    // group, indented, the address as the hex of its network-order u32 read natively.
    let mut ifindex = None;
    for line in read("igmp")?.lines().skip(1) {
        let mut words = line.split_whitespace();
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            ifindex = words.next().and_then(|w| w.parse::<u32>().ok());
        } else if let (Some(i), Some(hex)) = (ifindex, words.next()) {
            let raw = u32::from_str_radix(hex, 16).map_err(|_| bad("igmp", line))?;
            out.push((i, IpAddr::V4(Ipv4Addr::from(raw.to_ne_bytes()))));
        } else if !line.trim().is_empty() {
            return Err(bad("igmp", line));
        }
    }
    if v6 {
        // igmp6: "1    lo   ff020000000000000000000000000001     1 0000000C 0".
        for line in read("igmp6")?.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let (Some(i), Some(hex)) = (w.first().and_then(|i| i.parse::<u32>().ok()), w.get(2))
            else {
                return Err(bad("igmp6", line));
            };
            let raw = u128::from_str_radix(hex, 16).map_err(|_| bad("igmp6", line))?;
            out.push((i, IpAddr::V6(Ipv6Addr::from(raw))));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The memberships of UDP socket `sock` (of family `family`) held by `pid`, as the
/// options that make them again.
pub fn memberships(
    pid: Pid,
    sock: BorrowedFd<'_>,
    family: i32,
) -> Result<Vec<pb::SockOpt>, String> {
    let mut out = Vec::new();
    for (ifindex, group) in candidates(pid, family == libc::AF_INET6)? {
        let Some(f) = mcast::filter(sock, ifindex, group).map_err(|e| e.to_string())? else {
            continue;
        };
        let level = mcast::level(group);
        out.push(pb::SockOpt {
            level,
            name: mcast::MCAST_JOIN_GROUP,
            value: mcast::group_req(ifindex, group),
        });
        if !f.any_source() {
            out.push(pb::SockOpt {
                level,
                name: mcast::MCAST_MSFILTER,
                value: f.0,
            });
        }
    }
    Ok(out)
}

//! A container's own network namespace: lo (up or not, with only 127.0.0.1 and ::1),
//! veth interfaces (name, MAC, MTU, up or down, the host end's name), their addresses,
//! the routes the kernel did not make itself, and the namespace's net.ipv4 / net.ipv6
//! sysctls that differ from a fresh namespace's. Read over rtnetlink and /proc/sys/net on
//! a ckpt thread that joined the namespace (`ckpt_sys::ns::in_namespace_of`); what the
//! restore cannot rebuild is refused by name: other kinds of interface, a veth bridged
//! inside or with both ends inside, addresses with a lifetime, routes of other tables or with attributes ckpt does
//! not restore, a read-only sysctl that differs, policy routing rules other than the
//! default ones, nftables tables (iptables-nft's rules too).

use crate::blockers::Blockers;
use ckpt_images::pb;
use ckpt_sys::rtnl::{self, Rtnl};
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

/// `--external net[INODE]:KEY`: network namespaces made and configured outside the tree
/// (podman's CNI, runc's configured netns path), by inode, with the key the restore is
/// given their replacement under. Process-wide, set by the caller of a dump before it
/// starts.
static EXTERNAL: Mutex<Vec<(u64, String)>> = Mutex::new(Vec::new());

pub fn set_external(v: Vec<(u64, String)>) {
    *EXTERNAL.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// The key of the container's network namespace if it is an external one.
pub fn external_key(root: Pid) -> Option<String> {
    let list = EXTERNAL.lock().unwrap_or_else(|e| e.into_inner());
    if list.is_empty() {
        return None;
    }
    let ino = std::fs::metadata(format!("/proc/{root}/ns/net"))
        .ok()?
        .ino();
    list.iter().find(|(i, _)| *i == ino).map(|(_, k)| k.clone())
}

/// `net[INODE]:KEY`, CRIU's spelling of an external network namespace; any other kind of
/// external resource is not one ckpt takes.
pub fn parse_external(s: &str) -> Result<(u64, String), String> {
    let bad = || format!("external {s:?}: ckpt takes only net[INODE]:KEY");
    let rest = s.strip_prefix("net[").ok_or_else(bad)?;
    let (ino, key) = rest.split_once("]:").ok_or_else(bad)?;
    let ino = ino.parse().map_err(|_| bad())?;
    if key.is_empty() {
        return Err(bad());
    }
    Ok((ino, key.to_string()))
}

/// What the namespace holds, read inside it.
struct Inside {
    links: Vec<rtnl::Link>,
    addrs: Vec<rtnl::Addr>,
    routes: Vec<rtnl::Route>,
    sysctls: Vec<(String, String, bool)>,
    rules: Vec<rtnl::Rule>,
    /// nf_tables tables (None: nf_tables did not answer, so it holds none: the module
    /// is not there).
    tables: Option<Vec<String>>,
}

/// Records the network namespace of the container whose init is `root`: whether lo is
/// up, and the rest (None when it holds only lo).
pub fn record(root: Pid, out: &mut Blockers) -> (bool, Option<pb::NetNs>) {
    let t = std::time::Instant::now();
    let got = record_timed(root, out);
    tracing::debug!(
        ms = ckpt_images::units::ms(t),
        links = got.1.as_ref().map_or(0, |n| n.links.len()),
        "container network recorded"
    );
    got
}

fn record_timed(root: Pid, out: &mut Blockers) -> (bool, Option<pb::NetNs>) {
    let read = || -> ckpt_sys::Result<Inside> {
        let mut nl = Rtnl::new()?;
        Ok(Inside {
            links: nl.links()?,
            addrs: nl.addrs()?,
            routes: nl.routes()?,
            sysctls: sysctls("/proc/sys/net"),
            rules: nl.rules()?,
            tables: ckpt_sys::nft::tables().ok(),
        })
    };
    let inside = match ckpt_sys::ns::in_namespace_of(root, "net", read).and_then(|r| r) {
        Ok(i) => i,
        Err(e) => {
            out.push(root, "net namespace", e.to_string());
            return (false, None);
        }
    };
    let fresh = match fresh_sysctls() {
        Ok(f) => f,
        Err(e) => {
            out.push(
                root,
                "net namespace",
                format!("a fresh one to compare: {e}"),
            );
            return (false, None);
        }
    };
    let names: HashMap<u32, String> = inside
        .links
        .iter()
        .map(|l| (l.index, l.name.clone()))
        .collect();
    let mut lo_up = false;
    let mut net = pb::NetNs::default();
    let mut host = None;
    for l in &inside.links {
        if l.name == "lo" {
            lo_up = l.up;
            continue;
        }
        let what = format!("interface {} (its net namespace)", l.name);
        if l.kind != "veth" {
            let kind = if l.kind.is_empty() { "?" } else { &l.kind };
            out.push(
                root,
                what,
                format!("a {kind} interface; only veth interfaces are restored"),
            );
            continue;
        }
        if l.master.is_some() {
            out.push(
                root,
                what,
                "a port of a bridge inside the container; not restored yet",
            );
            continue;
        }
        if let Some(peer) = l.peer_index.filter(|_| !l.peer_elsewhere) {
            // Both ends inside: the restore makes a veth's host end in its own namespace.
            let peer = names.get(&peer).map_or("?", |n| n.as_str());
            out.push(
                root,
                what,
                format!("a veth whose peer {peer} is inside the same namespace; not restored yet"),
            );
            continue;
        }
        let peer_name = match l.peer_index.filter(|_| l.peer_elsewhere) {
            Some(peer) => host_end(&mut host, peer, l.index),
            None => String::new(),
        };
        net.links.push(pb::NetLink {
            name: l.name.clone(),
            kind: l.kind.clone(),
            mac: l.mac.clone(),
            mtu: l.mtu,
            up: l.up,
            peer_name,
        });
    }
    let restored = |i: u32| {
        names
            .get(&i)
            .filter(|n| net.links.iter().any(|l| &&l.name == n))
            .cloned()
    };
    for a in &inside.addrs {
        let link = names.get(&a.index).cloned().unwrap_or_default();
        if link == "lo" {
            let defaults = [
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ];
            if !defaults.contains(&a.addr) {
                out.push(
                    root,
                    format!("address {} on lo (its net namespace)", a.addr),
                    "addresses other than 127.0.0.1 and ::1 are not restored yet",
                );
            }
            continue;
        }
        let Some(link) = restored(a.index) else {
            continue;
        };
        if a.valid_lft != u32::MAX {
            out.push(
                root,
                format!(
                    "address {}/{} on {link} (its net namespace)",
                    a.addr, a.prefix
                ),
                "an address with a limited lifetime (autoconfigured); not restored",
            );
            continue;
        }
        net.addrs.push(pb::NetAddr {
            link,
            addr: a.addr.to_string(),
            prefix: a.prefix as u32,
            peer: a.peer.map(|p| p.to_string()).unwrap_or_default(),
            broadcast: a.broadcast.map(|b| b.to_string()).unwrap_or_default(),
            label: a.label.clone().unwrap_or_default(),
            flags: a.flags,
            scope: a.scope as u32,
        });
    }
    for r in &inside.routes {
        if r.protocol == rtnl::RTPROT_KERNEL
            && (r.table == rtnl::RT_TABLE_MAIN || r.table == rtnl::RT_TABLE_LOCAL)
        {
            continue;
        }
        let dst = r
            .dst
            .map_or("default".to_string(), |d| format!("{d}/{}", r.dst_len));
        let what = format!("route {dst} (table {}, its net namespace)", r.table);
        let oif = match r.oif {
            None => String::new(),
            Some(i) => match names.get(&i) {
                Some(n) if n == "lo" || restored(i).is_some() => n.clone(),
                _ => continue,
            },
        };
        let why = if r.table != rtnl::RT_TABLE_MAIN {
            Some("a route outside the main table; policy routing is not restored yet".into())
        } else if r.protocol == rtnl::RTPROT_RA {
            Some("a route from a router advertisement; not restored".into())
        } else if !r.unknown.is_empty() {
            Some(format!("has {}; not restored yet", r.unknown.join(", ")))
        } else {
            None
        };
        if let Some(why) = why {
            out.push(root, what, why);
            continue;
        }
        net.routes.push(pb::NetRoute {
            family: r.family as u32,
            dst: r.dst.map(|d| d.to_string()).unwrap_or_default(),
            dst_len: r.dst_len as u32,
            gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
            oif,
            has_priority: r.priority.is_some(),
            priority: r.priority.unwrap_or(0),
            table: r.table,
            protocol: r.protocol as u32,
            scope: r.scope as u32,
            kind: r.kind as u32,
            flags: r.flags,
            prefsrc: r.prefsrc.map(|s| s.to_string()).unwrap_or_default(),
            has_pref: r.pref.is_some(),
            pref: r.pref.unwrap_or(0) as u32,
        });
    }
    let fresh: HashMap<&str, &str> = fresh
        .iter()
        .map(|(p, v, _)| (p.as_str(), v.as_str()))
        .collect();
    for (path, value, writable) in &inside.sysctls {
        let base = as_fresh(path, &names);
        let Some(base) = base else {
            // An interface that is not restored (refused above).
            continue;
        };
        if fresh.get(base.as_str()) == Some(&value.as_str()) {
            continue;
        }
        if !writable {
            out.push(
                root,
                format!("sysctl net.{} (its net namespace)", path.replace('/', ".")),
                "read-only, and not what a fresh namespace has",
            );
            continue;
        }
        net.sysctls.push(pb::NetSysctl {
            path: path.clone(),
            value: value.clone(),
        });
    }
    unkept(root, &inside, out);
    net.sysctls
        .sort_by_key(|s| (order(&s.path), s.path.clone()));
    let empty = net.links.is_empty() && net.routes.is_empty() && net.sysctls.is_empty();
    (lo_up, (!empty).then_some(net))
}

/// What the namespace holds that the restore does not make again, refused by name
/// rather than lost: policy routing rules other than a fresh namespace's, nf_tables
/// tables (but ckpt's own connection locks, `ckpt_lock_*`).
fn unkept(root: Pid, inside: &Inside, out: &mut Blockers) {
    for r in inside.rules.iter().filter(|r| !r.default) {
        out.push(
            root,
            format!(
                "ip -{} rule {}: {} (its net namespace)",
                r.family, r.priority, r.text
            ),
            "a policy routing rule; not restored",
        );
    }
    for t in inside.tables.iter().flatten() {
        if t.split(' ')
            .nth(1)
            .is_some_and(|n| n.starts_with("ckpt_lock_"))
        {
            continue;
        }
        out.push(
            root,
            format!("nftables table {t} (its net namespace)"),
            "firewall rules inside the container; not restored",
        );
    }
}

/// What a fresh namespace's sysctls read, once per ckpt run (making a namespace costs
/// milliseconds, and the check before the freeze already made one).
fn fresh_sysctls() -> ckpt_sys::Result<&'static [(String, String, bool)]> {
    static FRESH: std::sync::OnceLock<Vec<(String, String, bool)>> = std::sync::OnceLock::new();
    if let Some(f) = FRESH.get() {
        return Ok(f);
    }
    let f = ckpt_sys::ns::in_fresh_netns(|| sysctls("/proc/sys/net"))?;
    Ok(FRESH.get_or_init(|| f))
}

/// The host end of a veth whose peer has index `peer` in ckpt's namespace and points
/// back at `inner`: its name there, or empty (the peer is in yet another namespace).
fn host_end(cache: &mut Option<Vec<rtnl::Link>>, peer: u32, inner: u32) -> String {
    if cache.is_none() {
        *cache = Some(Rtnl::new().and_then(|mut n| n.links()).unwrap_or_default());
    }
    cache
        .as_ref()
        .and_then(|links| {
            links.iter().find(|l| {
                l.index == peer
                    && l.kind == "veth"
                    && l.peer_elsewhere
                    && l.peer_index == Some(inner)
            })
        })
        .map(|l| l.name.clone())
        .unwrap_or_default()
}

/// The file of a fresh namespace `path` compares with: an interface's own conf entry with
/// conf/default (a new interface starts from it), its neigh entry with lo's (a new
/// namespace shows no neigh/default: lo's are the table's defaults too), lo's with lo's.
/// None for an interface that is not in `names` (one that appeared meanwhile).
fn as_fresh(path: &str, names: &HashMap<u32, String>) -> Option<String> {
    let parts: Vec<&str> = path.split('/').collect();
    if let [fam, dir @ ("conf" | "neigh"), dev, rest @ ..] = parts.as_slice() {
        if ["all", "default", "lo"].contains(dev) {
            return Some(path.to_string());
        }
        if !names.values().any(|n| n == dev) {
            return None;
        }
        let like = if *dir == "conf" { "default" } else { "lo" };
        return Some(format!("{fam}/{dir}/{like}/{}", rest.join("/")));
    }
    Some(path.to_string())
}

/// Write order at restore: globals, then conf/all (which sets every interface's), then
/// conf/default, then each interface's own.
fn order(path: &str) -> u8 {
    match path.split('/').nth(2) {
        _ if !path.contains("/conf/") && !path.contains("/neigh/") => 0,
        Some("all") => 1,
        Some("default") => 2,
        _ => 3,
    }
}

/// Every readable file under `base`/ipv4 and `base`/ipv6: (path relative to base, value,
/// writable). Files that cannot be read (write-only ones such as route/flush, an unset
/// stable_secret) are not compared.
fn sysctls(base: &str) -> Vec<(String, String, bool)> {
    let mut out = Vec::new();
    let mut todo: Vec<String> = vec!["ipv4".into(), "ipv6".into()];
    while let Some(rel) = todo.pop() {
        let Ok(dir) = std::fs::read_dir(format!("{base}/{rel}")) else {
            continue;
        };
        for e in dir.flatten() {
            let name = format!("{rel}/{}", e.file_name().to_string_lossy());
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(name);
            } else if let Ok(v) = std::fs::read_to_string(e.path()) {
                use std::os::unix::fs::PermissionsExt;
                let writable = meta.permissions().mode() & 0o200 != 0;
                out.push((name, v.trim_end_matches('\n').to_string(), writable));
            }
        }
    }
    out
}

/// The host ends (in ckpt's namespace) of the veths `c` records.
pub fn host_ends(c: Option<&pb::Container>) -> Vec<String> {
    c.and_then(|c| c.net.as_ref())
        .map(|n| {
            n.links
                .iter()
                .filter(|l| !l.peer_name.is_empty())
                .map(|l| l.peer_name.clone())
                .collect()
        })
        .unwrap_or_default()
}

/// After the kill: waits (up to 5 s) until the kernel has dismantled the container's
/// namespace and its veths with it (asynchronously, once the last task and socket are
/// gone), so that a restore right after finds the host ends' names free.
pub fn wait_gone(host_ends: &[String]) {
    if host_ends.is_empty() {
        return;
    }
    let start = std::time::Instant::now();
    let Ok(mut nl) = Rtnl::new() else { return };
    loop {
        let links = nl.links().unwrap_or_default();
        let left: Vec<&String> = host_ends
            .iter()
            .filter(|h| links.iter().any(|l| &&l.name == h))
            .collect();
        if left.is_empty() {
            tracing::debug!(ms = start.elapsed().as_secs_f64() * 1e3, "veths gone");
            return;
        }
        if start.elapsed() > std::time::Duration::from_secs(5) {
            tracing::warn!("veth host ends {left:?} still exist 5 s after the container died");
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_entries_compare_with_what_a_new_interface_starts_from() {
        let names: HashMap<u32, String> = [(1, "lo".into()), (2, "eth0".into())].into();
        let fresh = |p: &str| as_fresh(p, &names);
        assert_eq!(fresh("ipv4/ip_forward").as_deref(), Some("ipv4/ip_forward"));
        assert_eq!(
            fresh("ipv4/conf/eth0/rp_filter").as_deref(),
            Some("ipv4/conf/default/rp_filter")
        );
        assert_eq!(
            fresh("ipv6/neigh/eth0/retrans_time_ms").as_deref(),
            Some("ipv6/neigh/lo/retrans_time_ms")
        );
        assert_eq!(
            fresh("ipv4/conf/all/forwarding").as_deref(),
            Some("ipv4/conf/all/forwarding")
        );
        assert_eq!(fresh("ipv4/conf/eth9/forwarding"), None);
    }

    #[test]
    fn globals_then_all_then_default_then_interfaces() {
        let mut paths = vec![
            "ipv4/conf/eth0/forwarding",
            "ipv4/conf/default/forwarding",
            "ipv4/ip_forward",
            "ipv4/conf/all/forwarding",
        ];
        paths.sort_by_key(|p| (order(p), p.to_string()));
        assert_eq!(
            paths,
            [
                "ipv4/ip_forward",
                "ipv4/conf/all/forwarding",
                "ipv4/conf/default/forwarding",
                "ipv4/conf/eth0/forwarding"
            ]
        );
    }
}

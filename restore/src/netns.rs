//! A container's network namespace beyond lo (`Container.net`), rebuilt by the root's
//! seed in its fresh namespace before it forks the others (so every socket the seeds make
//! can bind to its addresses):
//!
//! 1. each veth is created in one RTM_NEWLINK sent on a NETLINK_ROUTE socket ckpt made in
//!    its own namespace before the fork (a socket speaks for the namespace it was made
//!    in): the host end, named by `--veth-pair IN=OUT` or the name the dump recorded,
//!    in ckpt's namespace (a port of `--veth-bridge OUT=BRIDGE`), the inner end with its
//!    name, MAC and MTU straight into the seed's namespace (IFLA_NET_NS_FD). Nothing
//!    exists outside the container's namespace before the pair does, so the rollback is
//!    the namespace's death, made synchronous by deleting the host ends ckpt planned
//!    (`Plan`'s drop);
//! 2. the sysctls, globals first, then conf/all, conf/default, each interface's;
//! 3. the addresses (IPv6 ones without DAD: they were in use), the links up, the routes.
//!
//! The host ends stay down until every process is rebuilt and its TCP connections are
//! about to leave repair mode (`bring_up`, from `container::before_release`): until then
//! nothing from outside reaches a namespace whose sockets are not all there (a packet to
//! a port with no socket yet would be answered with a reset). Their addresses and
//! routes on the host side are the operator's (or the bridge's).

use crate::{RestoreError, R};
use ckpt_images::pb;
use ckpt_sys::rtnl::{self, Rtnl};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// What the command line says of the host ends: `--veth-pair IN=OUT` and
/// `--veth-bridge OUT=BRIDGE`.
#[derive(Debug, Clone, Default)]
pub struct Names {
    pub pairs: Vec<(String, String)>,
    pub bridges: Vec<(String, String)>,
}

/// One veth to create: the image's inner end, the host end's name, its bridge.
#[derive(Debug)]
struct Veth {
    inner: rtnl::Link,
    host: String,
    bridge: Option<u32>,
}

/// Everything checked before anything is created.
#[derive(Debug, Default)]
pub struct Plan {
    veths: Vec<Veth>,
    /// A NETLINK_ROUTE socket of ckpt's namespace, for the root's seed.
    host: Option<OwnedFd>,
    /// Delete the host ends when dropped (a failed restore) until `keep`.
    armed: AtomicBool,
}

fn refuse(why: String) -> RestoreError {
    RestoreError::Refused(format!("inventory.img: container network: {why}"))
}

/// Checks the image's network records and the command line's names against ckpt's
/// namespace: every veth's host end named and free, every bridge there.
pub fn plan(net: Option<&pb::NetNs>, names: &Names) -> R<Plan> {
    let t = std::time::Instant::now();
    let plan = plan_timed(net, names)?;
    if !plan.veths.is_empty() {
        tracing::debug!(ms = ckpt_images::units::ms(t), "container network checked");
    }
    Ok(plan)
}

fn plan_timed(net: Option<&pb::NetNs>, names: &Names) -> R<Plan> {
    let empty = pb::NetNs::default();
    let net = net.unwrap_or(&empty);
    for (inner, _) in &names.pairs {
        if !net.links.iter().any(|l| &l.name == inner) {
            return Err(refuse(format!(
                "--veth-pair {inner}=...: the image has no interface {inner}"
            )));
        }
    }
    for a in &net.addrs {
        a.addr
            .parse::<IpAddr>()
            .map_err(|_| refuse(format!("address {:?}", a.addr)))?;
        if !net.links.iter().any(|l| l.name == a.link) {
            return Err(refuse(format!("address {} on unknown {}", a.addr, a.link)));
        }
    }
    for r in &net.routes {
        route(r, &|_| Some(0)).map_err(refuse)?;
    }
    if net.links.is_empty() {
        return Ok(Plan::default());
    }
    let mut nl = Rtnl::new()?;
    let host_links = nl.links()?;
    let mut veths = Vec::new();
    for l in &net.links {
        if l.kind != "veth" {
            return Err(refuse(format!("interface {} of kind {:?}", l.name, l.kind)));
        }
        let host = names
            .pairs
            .iter()
            .find(|(i, _)| *i == l.name)
            .map(|(_, o)| o.clone())
            .unwrap_or_else(|| l.peer_name.clone());
        if host.is_empty() {
            return Err(refuse(format!(
                "the host end of veth {} was not in the dumping ckpt's namespace: name it \
                 with --veth-pair {}=NAME",
                l.name, l.name
            )));
        }
        if host.len() > 15 || host.contains('/') || host.contains(char::is_whitespace) {
            return Err(refuse(format!("{host:?} is not an interface name")));
        }
        if host_links.iter().any(|h| h.name == host) || veths.iter().any(|v: &Veth| v.host == host)
        {
            return Err(refuse(format!(
                "the host end of veth {} would be {host}, which exists already here (name \
                 another with --veth-pair {}=NAME)",
                l.name, l.name
            )));
        }
        let bridge = match names.bridges.iter().find(|(o, _)| *o == host) {
            None => None,
            Some((_, b)) => match host_links.iter().find(|h| &h.name == b) {
                Some(h) if h.kind == "bridge" => Some(h.index),
                Some(h) => {
                    return Err(refuse(format!(
                        "--veth-bridge {host}={b}: {b} is a {} interface, not a bridge",
                        if h.kind.is_empty() { "plain" } else { &h.kind }
                    )))
                }
                None => {
                    return Err(refuse(format!(
                        "--veth-bridge {host}={b}: there is no bridge {b} here"
                    )))
                }
            },
        };
        veths.push(Veth {
            inner: rtnl::Link {
                name: l.name.clone(),
                kind: l.kind.clone(),
                mac: l.mac.clone(),
                mtu: l.mtu,
                up: l.up,
                ..Default::default()
            },
            host,
            bridge,
        });
    }
    for (o, b) in &names.bridges {
        if !veths.iter().any(|v| &v.host == o) {
            return Err(refuse(format!(
                "--veth-bridge {o}={b}: no veth's host end is named {o}"
            )));
        }
    }
    Ok(Plan {
        veths,
        host: Some(nl.into_fd()),
        armed: AtomicBool::new(true),
    })
}

/// The image's route `r` with its output interface's index from `index`.
fn route(r: &pb::NetRoute, index: &dyn Fn(&str) -> Option<u32>) -> Result<rtnl::Route, String> {
    let ip = |what: &str, s: &str| -> Result<Option<IpAddr>, String> {
        if s.is_empty() {
            return Ok(None);
        }
        s.parse()
            .map(Some)
            .map_err(|_| format!("route {what} {s:?}"))
    };
    let oif = if r.oif.is_empty() {
        None
    } else {
        Some(index(&r.oif).ok_or_else(|| format!("route via unknown interface {}", r.oif))?)
    };
    Ok(rtnl::Route {
        family: r.family as u8,
        dst: ip("destination", &r.dst)?,
        dst_len: r.dst_len as u8,
        gateway: ip("gateway", &r.gateway)?,
        oif,
        priority: r.has_priority.then_some(r.priority),
        table: r.table,
        protocol: r.protocol as u8,
        scope: r.scope as u8,
        kind: r.kind as u8,
        flags: r.flags,
        prefsrc: ip("source", &r.prefsrc)?,
        pref: r.has_pref.then_some(r.pref as u8),
        unknown: Vec::new(),
    })
}

/// In the root's seed, in its fresh network namespace (lo is up already if it was):
/// the veths, sysctls, addresses, links up, routes.
pub fn set_up(plan: &Plan, net: &pb::NetNs) -> Result<(), String> {
    let e = |e: ckpt_sys::Error| e.to_string();
    if let Some(host) = &plan.host {
        let own = std::fs::File::open("/proc/thread-self/ns/net")
            .map_err(|e| format!("/proc/thread-self/ns/net: {e}"))?;
        let fd = host.try_clone().map_err(|e| format!("dup: {e}"))?;
        let mut host = Rtnl::from_fd(fd);
        for v in &plan.veths {
            host.new_veth(&v.host, v.bridge, &v.inner, own.as_fd())
                .map_err(e)?;
        }
    }
    for s in &net.sysctls {
        let path = format!("/proc/sys/net/{}", s.path);
        std::fs::write(&path, format!("{}\n", s.value)).map_err(|err| {
            format!(
                "sysctl net.{} = {:?}: {err}",
                s.path.replace('/', "."),
                s.value
            )
        })?;
    }
    let mut nl = Rtnl::new().map_err(e)?;
    let links = nl.links().map_err(e)?;
    let index = |name: &str| links.iter().find(|l| l.name == name).map(|l| l.index);
    for a in &net.addrs {
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        nl.add_addr(&rtnl::Addr {
            index: index(&a.link).ok_or_else(|| format!("no interface {}", a.link))?,
            addr: ip(&a.addr).ok_or_else(|| format!("address {:?}", a.addr))?,
            prefix: a.prefix as u8,
            peer: ip(&a.peer),
            broadcast: match ip(&a.broadcast) {
                Some(IpAddr::V4(b)) => Some(b),
                _ => None,
            },
            label: (!a.label.is_empty()).then(|| a.label.clone()),
            flags: a.flags,
            scope: a.scope as u8,
            valid_lft: u32::MAX,
        })
        .map_err(|err| format!("{} on {}: {err}", a.addr, a.link))?;
    }
    for l in net.links.iter().filter(|l| l.up) {
        let i = index(&l.name).ok_or_else(|| format!("no interface {}", l.name))?;
        nl.set_up(i, true).map_err(e)?;
    }
    for r in &net.routes {
        nl.add_route(&route(r, &index)?).map_err(e)?;
    }
    Ok(())
}

impl Plan {
    /// Once the processes are rebuilt, before they run: the host ends up.
    pub fn bring_up(&self) -> R<()> {
        if self.veths.is_empty() {
            return Ok(());
        }
        let t = std::time::Instant::now();
        let mut nl = Rtnl::new()?;
        for v in &self.veths {
            let l = nl.link(&v.host)?.ok_or_else(|| {
                RestoreError::Refused(format!(
                    "the host end {} of veth {} is gone",
                    v.host, v.inner.name
                ))
            })?;
            nl.set_up(l.index, true)?;
        }
        tracing::debug!(ms = ckpt_images::units::ms(t), "veth host ends up");
        Ok(())
    }

    /// The restore succeeded: the host ends stay.
    pub fn keep(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }
}

impl Drop for Plan {
    /// A failed restore: the host ends it planned (free names at `plan`) are deleted, and
    /// their container ends with them, now rather than when the namespace is reaped.
    fn drop(&mut self) {
        if !self.armed.load(Ordering::Relaxed) || self.veths.is_empty() {
            return;
        }
        let Ok(mut nl) = Rtnl::new() else { return };
        for v in &self.veths {
            if let Ok(Some(l)) = nl.link(&v.host) {
                if l.kind == "veth" {
                    if let Err(e) = nl.del_link(l.index) {
                        tracing::warn!("removing veth {}: {e}", v.host);
                    }
                }
            }
        }
    }
}

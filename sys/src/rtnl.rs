//! rtnetlink, synchronously: the links, addresses and routes of the network namespace a
//! NETLINK_ROUTE socket was made in (a socket keeps the namespace of its creator, so one
//! made by ckpt before it forks a container's root still speaks to ckpt's namespace from
//! inside the container). Messages are built and parsed by netlink-packet-route; this
//! module only sends them and collects the answers, as plain values.

use crate::error::{Error, Result};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

/// A network interface as RTM_GETLINK tells it.
#[derive(Debug, Clone, Default)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// IFLA_INFO_KIND (`veth`, `bridge`, ...); empty for lo and other kinds without one.
    pub kind: String,
    pub mac: Vec<u8>,
    pub mtu: u32,
    pub up: bool,
    /// IFLA_LINK: a veth's peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// IFLA_LINK_NETNSID: the peer lives in another namespace.
    pub peer_elsewhere: bool,
    /// IFLA_MASTER: the bridge (or bond) it is a port of.
    pub master: Option<u32>,
}

/// An address of an interface (RTM_GETADDR).
#[derive(Debug, Clone)]
pub struct Addr {
    pub index: u32,
    pub addr: IpAddr,
    pub prefix: u8,
    /// IFA_LOCAL differs from IFA_ADDRESS only on point-to-point links: the peer.
    pub peer: Option<IpAddr>,
    pub broadcast: Option<std::net::Ipv4Addr>,
    pub label: Option<String>,
    /// IFA_F_* (header and IFA_FLAGS together).
    pub flags: u32,
    pub scope: u8,
    /// The valid lifetime in seconds; u32::MAX is forever.
    pub valid_lft: u32,
}

/// A route (RTM_GETROUTE), with the attributes ckpt knows; `unknown` names the others.
#[derive(Debug, Clone, Default)]
pub struct Route {
    pub family: u8,
    pub dst: Option<IpAddr>,
    pub dst_len: u8,
    pub gateway: Option<IpAddr>,
    pub oif: Option<u32>,
    pub priority: Option<u32>,
    pub table: u32,
    pub protocol: u8,
    pub scope: u8,
    pub kind: u8,
    pub flags: u32,
    pub prefsrc: Option<IpAddr>,
    /// IPv6's router preference (RTA_PREF).
    pub pref: Option<u8>,
    /// Attributes (and header fields) ckpt does not restore, by name.
    pub unknown: Vec<String>,
}

/// A policy routing rule (RTM_GETRULE), as `ip rule` would list it.
#[derive(Debug, Clone)]
pub struct Rule {
    pub family: u8,
    pub priority: u32,
    pub table: u32,
    /// One of the rules a fresh namespace starts with: 0 lookup local, 32766 lookup
    /// main (and for IPv4 32767 lookup default), selecting every packet.
    pub default: bool,
    /// Its selectors and action, for messages.
    pub text: String,
}

pub const RT_TABLE_MAIN: u32 = 254;
pub const RT_TABLE_LOCAL: u32 = 255;
pub const RTPROT_KERNEL: u8 = 2;
/// Installed by IPv6 router advertisements.
pub const RTPROT_RA: u8 = 9;

/// A NETLINK_ROUTE socket, bound to the namespace it was made in.
pub struct Rtnl {
    sock: Socket,
    seq: u32,
}

fn nl_err(what: &str, e: std::io::Error) -> Error {
    match e.raw_os_error() {
        Some(n) => Error::sys(what.to_string(), nix::errno::Errno::from_raw(n)),
        None => Error::Other(format!("{what}: {e}")),
    }
}

impl Rtnl {
    /// A socket of the calling thread's network namespace.
    pub fn new() -> Result<Rtnl> {
        let mut sock =
            Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("socket(NETLINK_ROUTE)", e))?;
        sock.bind_auto()
            .map_err(|e| nl_err("bind(NETLINK_ROUTE)", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| nl_err("connect(NETLINK_ROUTE)", e))?;
        Ok(Rtnl { sock, seq: 0 })
    }

    /// The socket as an fd (to hand to a child that must speak to this namespace).
    pub fn into_fd(self) -> OwnedFd {
        // SAFETY: into_raw_fd gives up the socket's ownership of the fd, which nothing
        // else owns.
        unsafe { OwnedFd::from_raw_fd(self.sock.into_raw_fd()) }
    }

    /// A socket made by [`Rtnl::new`] and passed on as an fd.
    pub fn from_fd(fd: OwnedFd) -> Rtnl {
        // SAFETY: the fd is an owned NETLINK_ROUTE socket (into_fd), whose ownership
        // passes to the Socket.
        let sock = unsafe { Socket::from_raw_fd(fd.into_raw_fd()) };
        Rtnl { sock, seq: 1 << 20 }
    }

    /// Sends `msg` with `flags` and collects the answers up to the ACK or the end of a
    /// dump; an error answer becomes Err naming `what`.
    fn request(
        &mut self,
        what: &str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.sock
            .send(&buf, 0)
            .map_err(|e| nl_err(&format!("{what}: send"), e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        let mut rx = vec![0u8; 1 << 16];
        loop {
            let n = self
                .sock
                .recv(&mut &mut rx[..], 0)
                .map_err(|e| nl_err(&format!("{what}: recv"), e))?;
            let mut off = 0;
            while off < n {
                let m: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&rx[off..n])
                        .map_err(|e| Error::Other(format!("{what}: a netlink answer: {e}")))?;
                let len = m.header.length as usize;
                if m.header.sequence_number == self.seq {
                    match m.payload {
                        NetlinkPayload::Done(_) => return Ok(out),
                        NetlinkPayload::Error(e) => match e.code {
                            None => return Ok(out),
                            Some(c) => {
                                return Err(Error::sys(
                                    what.to_string(),
                                    nix::errno::Errno::from_raw(-c.get()),
                                ))
                            }
                        },
                        NetlinkPayload::InnerMessage(inner) => out.push(inner),
                        _ => {}
                    }
                }
                if len == 0 {
                    break;
                }
                off += (len + 3) & !3;
            }
            if !dump && flags & NLM_F_ACK == 0 {
                return Ok(out);
            }
        }
    }

    fn change(&mut self, what: &str, msg: RouteNetlinkMessage, flags: u16) -> Result<()> {
        self.request(what, msg, flags | NLM_F_ACK).map(drop)
    }

    /// Every interface of the namespace.
    pub fn links(&mut self) -> Result<Vec<Link>> {
        let answers = self.request(
            "RTM_GETLINK",
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_of(l)),
                _ => None,
            })
            .collect())
    }

    /// The interface named `name`, if there is one.
    pub fn link(&mut self, name: &str) -> Result<Option<Link>> {
        Ok(self.links()?.into_iter().find(|l| l.name == name))
    }

    /// Every address of the namespace (both families).
    pub fn addrs(&mut self) -> Result<Vec<Addr>> {
        let answers = self.request(
            "RTM_GETADDR",
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => addr_of(a),
                _ => None,
            })
            .collect())
    }

    /// The answers to dump request `ask(family)` for IPv4 and IPv6, those `pick` keeps.
    fn both_families<T>(
        &mut self,
        what: &str,
        ask: impl Fn(AddressFamily) -> RouteNetlinkMessage,
        pick: impl Fn(RouteNetlinkMessage) -> Option<T>,
    ) -> Result<Vec<(AddressFamily, T)>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let answers = self.request(what, ask(family), NLM_F_DUMP)?;
            out.extend(answers.into_iter().filter_map(&pick).map(|t| (family, t)));
        }
        Ok(out)
    }

    /// Every route of every table, both families.
    pub fn routes(&mut self) -> Result<Vec<Route>> {
        let ask = |family| {
            let mut m = RouteMessage::default();
            m.header.address_family = family;
            RouteNetlinkMessage::GetRoute(m)
        };
        let pick = |m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(route_of(r)),
            _ => None,
        };
        let all = self.both_families("RTM_GETROUTE", ask, pick)?;
        Ok(all.into_iter().map(|(_, r)| r).collect())
    }

    /// Every policy routing rule of the namespace, both families.
    pub fn rules(&mut self) -> Result<Vec<Rule>> {
        use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
        let ask = |family| {
            let mut m = RuleMessage::default();
            m.header.family = family;
            RouteNetlinkMessage::GetRule(m)
        };
        let pick = |m| match m {
            RouteNetlinkMessage::NewRule(r) => Some(r),
            _ => None,
        };
        let mut out = Vec::new();
        for (family, r) in self.both_families("RTM_GETRULE", ask, pick)? {
            let h = &r.header;
            let (mut priority, mut table, mut selects) = (0, u32::from(h.table), false);
            for a in &r.attributes {
                match a {
                    RuleAttribute::Priority(p) => priority = *p,
                    RuleAttribute::Table(t) => table = *t,
                    // The kernel sends these with every rule; u32::MAX is "none".
                    RuleAttribute::Protocol(_) => {}
                    RuleAttribute::SuppressPrefixLen(u32::MAX)
                    | RuleAttribute::SuppressIfGroup(u32::MAX) => {}
                    _ => selects = true,
                }
            }
            let v4 = family == AddressFamily::Inet;
            let defaults: &[(u32, u32)] = if v4 {
                &[(0, 255), (32766, 254), (32767, 253)]
            } else {
                &[(0, 255), (32766, 254)]
            };
            let plain = !selects
                && h.dst_len == 0
                && h.src_len == 0
                && h.tos == 0
                && h.action == RuleAction::ToTable
                && h.flags == RuleFlags::empty();
            out.push(Rule {
                family: if v4 { 4 } else { 6 },
                priority,
                table,
                default: plain && defaults.contains(&(priority, table)),
                text: format!(
                    "{:?} table {table}{}{}",
                    h.action,
                    if h.src_len + h.dst_len > 0 {
                        format!(" (prefixes /{} from, /{} to)", h.src_len, h.dst_len)
                    } else {
                        String::new()
                    },
                    r.attributes
                        .iter()
                        .filter(|a| !matches!(
                            a,
                            RuleAttribute::Priority(_)
                                | RuleAttribute::Table(_)
                                | RuleAttribute::Protocol(_)
                                | RuleAttribute::SuppressPrefixLen(u32::MAX)
                                | RuleAttribute::SuppressIfGroup(u32::MAX)
                        ))
                        .map(|a| format!(" {a:?}"))
                        .collect::<String>()
                ),
            });
        }
        Ok(out)
    }

    /// Creates a veth pair: `host` in this socket's namespace (a port of bridge `master`
    /// if given), its peer `inner` (with its MAC and MTU) directly in the namespace `netns`
    /// is a handle of. Both ends are left down.
    pub fn new_veth(
        &mut self,
        host: &str,
        master: Option<u32>,
        inner: &Link,
        netns: BorrowedFd<'_>,
    ) -> Result<()> {
        let mut peer = LinkMessage::default();
        peer.attributes = vec![
            LinkAttribute::IfName(inner.name.clone()),
            LinkAttribute::Mtu(inner.mtu),
            LinkAttribute::NetNsFd(netns.as_raw_fd()),
        ];
        if !inner.mac.is_empty() {
            peer.attributes
                .push(LinkAttribute::Address(inner.mac.clone()));
        }
        let mut m = LinkMessage::default();
        m.attributes = vec![
            LinkAttribute::IfName(host.to_string()),
            LinkAttribute::Mtu(inner.mtu),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
            ]),
        ];
        if let Some(b) = master {
            m.attributes.push(LinkAttribute::Controller(b));
        }
        self.change(
            &format!(
                "creating veth {host} (peer {} in the container)",
                inner.name
            ),
            RouteNetlinkMessage::NewLink(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Sets interface `index` up or down.
    pub fn set_up(&mut self, index: u32, up: bool) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.change_mask = LinkFlags::Up;
        if up {
            m.header.flags = LinkFlags::Up;
        }
        self.change(
            &format!(
                "setting interface {index} {}",
                if up { "up" } else { "down" }
            ),
            RouteNetlinkMessage::SetLink(m),
            0,
        )
    }

    /// Deletes interface `index` (a veth takes its peer along).
    pub fn del_link(&mut self, index: u32) -> Result<()> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        self.change(
            &format!("deleting interface {index}"),
            RouteNetlinkMessage::DelLink(m),
            0,
        )
    }

    /// Adds address `a` to interface `a.index` (IPv6 ones without duplicate address
    /// detection: they were in use already).
    pub fn add_addr(&mut self, a: &Addr) -> Result<()> {
        let mut m = AddressMessage::default();
        m.header.family = if a.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.prefix_len = a.prefix;
        m.header.index = a.index;
        m.header.scope = a.scope.into();
        let mut flags = a.flags;
        if a.addr.is_ipv6() {
            flags |= AddressFlags::Nodad.bits();
        }
        flags &= !(AddressFlags::Tentative.bits()
            | AddressFlags::Dadfailed.bits()
            | AddressFlags::Deprecated.bits()
            | AddressFlags::Optimistic.bits());
        m.attributes.push(AddressAttribute::Local(a.addr));
        m.attributes
            .push(AddressAttribute::Address(a.peer.unwrap_or(a.addr)));
        if let Some(b) = a.broadcast {
            m.attributes.push(AddressAttribute::Broadcast(b));
        }
        if let Some(l) = &a.label {
            m.attributes.push(AddressAttribute::Label(l.clone()));
        }
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::from_bits_retain(
                flags,
            )));
        self.change(
            &format!("adding address {}/{}", a.addr, a.prefix),
            RouteNetlinkMessage::NewAddress(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds route `r` (its `unknown` must be empty).
    pub fn add_route(&mut self, r: &Route) -> Result<()> {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::from(r.family);
        m.header.destination_prefix_length = r.dst_len;
        m.header.table = if r.table < 256 { r.table as u8 } else { 0 };
        m.header.protocol = RouteProtocol::from(r.protocol);
        m.header.scope = RouteScope::from(r.scope);
        m.header.kind = RouteType::from(r.kind);
        m.header.flags = RouteFlags::from_bits_retain(r.flags);
        m.attributes.push(RouteAttribute::Table(r.table));
        if let Some(d) = r.dst {
            m.attributes.push(RouteAttribute::Destination(d.into()));
        }
        if let Some(g) = r.gateway {
            m.attributes.push(RouteAttribute::Gateway(g.into()));
        }
        if let Some(o) = r.oif {
            m.attributes.push(RouteAttribute::Oif(o));
        }
        if let Some(p) = r.priority {
            m.attributes.push(RouteAttribute::Priority(p));
        }
        if let Some(s) = r.prefsrc {
            m.attributes.push(RouteAttribute::PrefSource(s.into()));
        }
        if let Some(p) = r.pref {
            m.attributes.push(RouteAttribute::Preference(p.into()));
        }
        let dst = r
            .dst
            .map_or("default".to_string(), |d| format!("{d}/{}", r.dst_len));
        self.change(
            &format!("adding route {dst}"),
            RouteNetlinkMessage::NewRoute(m),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }
}

fn link_of(l: LinkMessage) -> Link {
    let mut out = Link {
        index: l.header.index,
        up: l.header.flags.contains(LinkFlags::Up),
        ..Default::default()
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n,
            LinkAttribute::Address(m) => out.mac = m,
            LinkAttribute::Mtu(m) => out.mtu = m,
            LinkAttribute::Link(p) => out.peer_index = Some(p),
            LinkAttribute::LinkNetNsId(_) => out.peer_elsewhere = true,
            LinkAttribute::Controller(m) => out.master = Some(m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Kind(k) = i {
                        out.kind = k.to_string();
                    }
                }
            }
            _ => {}
        }
    }
    out
}

fn addr_of(a: AddressMessage) -> Option<Addr> {
    let mut local = None;
    let mut address = None;
    let mut out = Addr {
        index: a.header.index,
        addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix: a.header.prefix_len,
        peer: None,
        broadcast: None,
        label: None,
        flags: a.header.flags.bits() as u32,
        scope: a.header.scope.into(),
        valid_lft: u32::MAX,
    };
    for attr in a.attributes {
        match attr {
            AddressAttribute::Local(l) => local = Some(l),
            AddressAttribute::Address(l) => address = Some(l),
            AddressAttribute::Broadcast(b) => out.broadcast = Some(b),
            AddressAttribute::Label(l) => out.label = Some(l),
            AddressAttribute::Flags(f) => out.flags = f.bits(),
            AddressAttribute::CacheInfo(c) => out.valid_lft = c.ifa_valid,
            _ => {}
        }
    }
    out.addr = local.or(address)?;
    if address.is_some_and(|a| Some(a) != local) && local.is_some() {
        out.peer = address;
    }
    Some(out)
}

fn ip_of(a: RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v) => Some(IpAddr::V4(v)),
        RouteAddress::Inet6(v) => Some(IpAddr::V6(v)),
        _ => None,
    }
}

fn route_of(r: RouteMessage) -> Route {
    let mut out = Route {
        family: r.header.address_family.into(),
        dst_len: r.header.destination_prefix_length,
        table: r.header.table as u32,
        protocol: r.header.protocol.into(),
        scope: r.header.scope.into(),
        kind: r.header.kind.into(),
        flags: r.header.flags.bits(),
        ..Default::default()
    };
    if r.header.source_prefix_length != 0 {
        out.unknown.push("a source prefix (from)".into());
    }
    if r.header.tos != 0 {
        out.unknown.push(format!("tos {}", r.header.tos));
    }
    for a in r.attributes {
        match a {
            RouteAttribute::Destination(d) => out.dst = ip_of(d),
            RouteAttribute::Gateway(g) => out.gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => out.prefsrc = ip_of(s),
            RouteAttribute::Oif(o) => out.oif = Some(o),
            RouteAttribute::Priority(p) => out.priority = Some(p),
            RouteAttribute::Table(t) => out.table = t,
            RouteAttribute::Preference(p) => out.pref = Some(p.into()),
            // The kernel's bookkeeping, not part of what was added.
            RouteAttribute::CacheInfo(_) | RouteAttribute::Expires(_) => {}
            RouteAttribute::Metrics(m) if m.is_empty() => {}
            other => out.unknown.push(format!("{other:?}")),
        }
    }
    out
}

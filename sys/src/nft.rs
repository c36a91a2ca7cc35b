//! The lock of TCP connections while they are checkpointed: an nftables table of ckpt's
//! own that drops every packet of the locked connections, in both directions, on input
//! and output. While the process is dumped, killed and restored, its sockets come and go;
//! a packet of the peer reaching a port without its socket would be answered with a reset,
//! which ends the connection for good. Dropped, it is only retransmitted later.
//!
//! One table per dumped tree, named in the image, added by the dump and deleted by the
//! restore. It is written as nf_tables netlink messages of ckpt's own (NETLINK_NETFILTER,
//! one batch per change: table, chains and rules of a connection, or the deletion),
//! not through the `nft` command: running `nft` cost ~17 ms to add a connection's rules
//! and 20-30 ms to remove the table, on the frozen time of both the dump and the restore;
//! a batch is answered within the sendmsg (nfnetlink handles it synchronously) in tens of
//! microseconds. The rules are the ones `nft` makes of `ip saddr A ip daddr B tcp sport P
//! tcp dport Q drop` in an inet table, so `nft list table inet ckpt_lock_PID` shows them
//! as such.

use crate::error::{Ctx, Error, Result};
use crate::sockdiag::attrs;
use nix::errno::Errno;
use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};

/// The table a dump of the tree rooted at `root` locks its connections with.
pub fn table_name(root: i32) -> String {
    format!("ckpt_lock_{root}")
}

// include/uapi/linux/netfilter/nfnetlink.h and nf_tables.h.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const BATCH_BEGIN: u16 = 0x10;
const BATCH_END: u16 = 0x11;
const NEWTABLE: u16 = 0;
const GETTABLE: u16 = 1;
const DELTABLE: u16 = 2;
const NEWCHAIN: u16 = 3;
const NEWRULE: u16 = 6;
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NFT_META_NFPROTO: u32 = 15;
const NFT_META_L4PROTO: u32 = 16;
/// Payload bases: the network and the transport header.
const NETWORK: u32 = 1;
const TRANSPORT: u32 = 2;

const TABLE_NAME: u16 = 1;
const CHAIN_TABLE: u16 = 1;
const CHAIN_NAME: u16 = 3;
const CHAIN_HOOK: u16 = 4;
const CHAIN_POLICY: u16 = 5;
const CHAIN_TYPE: u16 = 7;
const HOOK_HOOKNUM: u16 = 1;
const HOOK_PRIORITY: u16 = 2;
const RULE_TABLE: u16 = 1;
const RULE_CHAIN: u16 = 2;
const RULE_EXPRESSIONS: u16 = 4;
const LIST_ELEM: u16 = 1;
const EXPR_NAME: u16 = 1;
const EXPR_DATA: u16 = 2;
/// NFT_REG_1 (16 bytes), where every value is loaded and compared.
const REG_1: u32 = 1;
const NF_ACCEPT: u32 = 1;
const NF_DROP: u32 = 0;
const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_LOCAL_OUT: u32 = 3;
/// Before conntrack (-200), as the `nft` script had it: no state is made for a dropped
/// packet.
const PRIORITY: i32 = -300;

/// nf_tables messages being put together: one netlink message after the other, each
/// with its nfgenmsg, attributes nested by hand.
struct Batch {
    buf: Vec<u8>,
    /// The message being written (its header's offset).
    open: usize,
    seq: u32,
    /// Sequence numbers of the messages that ask for an acknowledgement.
    acked: Vec<u32>,
}

impl Batch {
    fn new() -> Batch {
        Batch {
            buf: Vec::with_capacity(2048),
            open: 0,
            seq: 0,
            acked: Vec::new(),
        }
    }

    /// Starts a message of `ty` (NFNL_MSG_BATCH_* as they are, the others of nf_tables).
    fn message(&mut self, ty: u16, flags: i32, family: u8) {
        self.open = self.buf.len();
        self.seq += 1;
        let (ty, res_id) = if ty == BATCH_BEGIN || ty == BATCH_END {
            (ty, NFNL_SUBSYS_NFTABLES)
        } else {
            (NFNL_SUBSYS_NFTABLES << 8 | ty, 0)
        };
        let flags = libc::NLM_F_REQUEST | flags;
        if flags & libc::NLM_F_ACK != 0 {
            self.acked.push(self.seq);
        }
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `end`
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(&(flags as u16).to_ne_bytes());
        self.buf.extend_from_slice(&self.seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
                                                         // nfgenmsg: family, version 0, resource id (big-endian).
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
    }

    fn end(&mut self) {
        let len = (self.buf.len() - self.open) as u32;
        self.buf[self.open..self.open + 4].copy_from_slice(&len.to_ne_bytes());
    }

    fn attr(&mut self, ty: u16, value: &[u8]) {
        let len = 4 + value.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(self.buf.len().next_multiple_of(4), 0);
    }

    fn str(&mut self, ty: u16, s: &str) {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(ty, &v);
    }

    /// nf_tables' 32-bit attributes are big-endian.
    fn u32(&mut self, ty: u16, v: u32) {
        self.attr(ty, &v.to_be_bytes());
    }

    /// A nested attribute holding what `inner` writes.
    fn nest(&mut self, ty: u16, inner: impl FnOnce(&mut Batch)) {
        let at = self.buf.len();
        self.attr(ty | NLA_F_NESTED, &[]);
        inner(self);
        let len = (self.buf.len() - at) as u16;
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }

    /// One expression of a rule: its name and its data.
    fn expr(&mut self, name: &str, data: impl FnOnce(&mut Batch)) {
        self.nest(LIST_ELEM, |b| {
            b.str(EXPR_NAME, name);
            b.nest(EXPR_DATA, data);
        });
    }

    /// `meta KEY` into register 1, compared with `value`.
    fn meta_is(&mut self, key: u32, value: &[u8]) {
        self.expr("meta", |b| {
            b.u32(1, REG_1); // NFTA_META_DREG
            b.u32(2, key); // NFTA_META_KEY
        });
        self.cmp_eq(value);
    }

    /// `len` bytes at `offset` of header `base` (1 network, 2 transport) into register
    /// 1, compared with `value`.
    fn payload_is(&mut self, base: u32, offset: u32, value: &[u8]) {
        self.expr("payload", |b| {
            b.u32(1, REG_1); // NFTA_PAYLOAD_DREG
            b.u32(2, base); // NFTA_PAYLOAD_BASE
            b.u32(3, offset); // NFTA_PAYLOAD_OFFSET
            b.u32(4, value.len() as u32); // NFTA_PAYLOAD_LEN
        });
        self.cmp_eq(value);
    }

    fn cmp_eq(&mut self, value: &[u8]) {
        self.expr("cmp", |b| {
            b.u32(1, REG_1); // NFTA_CMP_SREG
            b.u32(2, 0); // NFTA_CMP_OP: NFT_CMP_EQ
            b.nest(3, |b| b.attr(1, value)); // NFTA_CMP_DATA { NFTA_DATA_VALUE }
        });
    }

    /// The verdict: drop.
    fn drop_it(&mut self) {
        self.expr("immediate", |b| {
            b.u32(1, 0); // NFTA_IMMEDIATE_DREG: NFT_REG_VERDICT
                         // NFTA_IMMEDIATE_DATA { NFTA_DATA_VERDICT { NFTA_VERDICT_CODE } }
            b.nest(2, |b| b.nest(2, |b| b.u32(1, NF_DROP)));
        });
    }

    /// A rule appended to `chain` of `table`, its expressions written by `exprs`.
    fn rule(&mut self, table: &str, chain: &str, exprs: impl FnOnce(&mut Batch)) {
        let create = libc::NLM_F_ACK | libc::NLM_F_CREATE;
        self.message(NEWRULE, create | libc::NLM_F_APPEND, NFPROTO_INET);
        self.str(RULE_TABLE, table);
        self.str(RULE_CHAIN, chain);
        self.nest(RULE_EXPRESSIONS, exprs);
        self.end();
    }

    /// The batch's frame: `body` between NFNL_MSG_BATCH_BEGIN and _END.
    fn framed(body: impl FnOnce(&mut Batch)) -> Batch {
        let mut b = Batch::new();
        b.message(BATCH_BEGIN, 0, 0);
        b.end();
        body(&mut b);
        b.message(BATCH_END, 0, 0);
        b.end();
        b
    }
}

/// A NETLINK_NETFILTER socket of the calling thread's network namespace.
fn open() -> nix::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )
}

/// One answer of the kernel: its type and payload (after the netlink header).
fn answers(buf: &[u8], mut each: impl FnMut(u16, u32, &[u8])) -> Result<()> {
    let mut at = 0;
    while at + 16 <= buf.len() {
        let len = u32::from_ne_bytes(buf[at..at + 4].try_into().expect("4")) as usize;
        if len < 16 || at + len > buf.len() {
            return Err(Error::Other("nf_tables: a truncated answer".into()));
        }
        let ty = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
        let seq = u32::from_ne_bytes(buf[at + 8..at + 12].try_into().expect("4"));
        each(ty, seq, &buf[at + 16..at + len]);
        at += len.next_multiple_of(4);
    }
    Ok(())
}

/// The errno of an NLMSG_ERROR payload (0: an acknowledgement).
fn errno_of(payload: &[u8]) -> i32 {
    payload.get(..4).map_or(-libc::EPROTO, |b| {
        i32::from_ne_bytes(b.try_into().expect("4"))
    })
}

/// Sends `batch` and reads the kernel's answers: nfnetlink handles a batch within the
/// sendmsg, so every answer is queued when it returns. Ok once each message that asked
/// for one is acknowledged; the first error otherwise (the kernel then applied none of
/// the batch), as an errno for the caller to judge.
fn send(batch: &Batch) -> std::result::Result<(), Errno> {
    let sock = open()?;
    sendto(
        sock.as_raw_fd(),
        &batch.buf,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut buf = vec![0u8; 1 << 15];
    let mut acked = 0;
    let mut first_err = None;
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(Errno::EAGAIN) => break,
            Err(e) => return Err(e),
        };
        answers(&buf[..n], |ty, seq, p| {
            if ty == NLMSG_ERROR {
                match errno_of(p) {
                    0 if batch.acked.contains(&seq) => acked += 1,
                    0 => {}
                    e => {
                        first_err.get_or_insert(Errno::from_raw(-e));
                    }
                }
            }
        })
        .map_err(|_| Errno::EPROTO)?;
    }
    match first_err {
        Some(e) => Err(e),
        None if acked < batch.acked.len() => Err(Errno::ENODATA),
        None => Ok(()),
    }
}

fn failed(what: &str, e: Errno) -> Error {
    Error::sys(format!("nf_tables: {what}"), e)
}

/// Drops every TCP packet between `local` and `peer` (both ways) from now on, in table
/// `table` (created if missing).
pub fn lock(table: &str, local: SocketAddr, peer: SocketAddr) -> Result<()> {
    let batch = Batch::framed(|b| {
        for (chain, _) in chains(b, table) {
            for (from, to) in [(local, peer), (peer, local)] {
                b.rule(table, chain, |b| match_drop(b, from, to));
            }
        }
    });
    send(&batch).map_err(|e| failed(&format!("locking tcp {local} -> {peer} in {table}"), e))
}

/// Drops every connection request (a TCP segment with SYN and without ACK) to the
/// listening socket bound to `local` from now on, in table `table` (created if missing):
/// a client connecting while the listener is dumped, killed and made again retransmits
/// its SYN instead of landing in an accept queue the kill then resets. Segments of
/// connections already made pass. `local` unspecified (0.0.0.0, ::) matches the port
/// on any address and family (a dual-stack listener takes IPv4 too).
pub fn lock_listener(table: &str, local: SocketAddr) -> Result<()> {
    let batch = Batch::framed(|b| {
        chains(b, table);
        b.rule(table, "input", |b| match_syn_drop(b, local));
    });
    send(&batch).map_err(|e| failed(&format!("locking tcp listener {local} in {table}"), e))
}

/// Adds `table` and its input and output chains (accepting by default) to the batch, if
/// missing; their names and hooks.
fn chains(b: &mut Batch, table: &str) -> [(&'static str, u32); 2] {
    let create = libc::NLM_F_ACK | libc::NLM_F_CREATE;
    b.message(NEWTABLE, create, NFPROTO_INET);
    b.str(TABLE_NAME, table);
    b.end();
    let chains = [("input", NF_INET_LOCAL_IN), ("output", NF_INET_LOCAL_OUT)];
    for (chain, hook) in chains {
        b.message(NEWCHAIN, create, NFPROTO_INET);
        b.str(CHAIN_TABLE, table);
        b.str(CHAIN_NAME, chain);
        b.nest(CHAIN_HOOK, |b| {
            b.u32(HOOK_HOOKNUM, hook);
            b.u32(HOOK_PRIORITY, PRIORITY as u32);
        });
        b.u32(CHAIN_POLICY, NF_ACCEPT);
        b.str(CHAIN_TYPE, "filter");
        b.end();
    }
    chains
}

/// `[ip|ip6 daddr A] tcp dport P tcp flags & (syn | ack) == syn drop`.
fn match_syn_drop(b: &mut Batch, local: SocketAddr) {
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    match local.ip().to_canonical() {
        ip if ip.is_unspecified() => {}
        IpAddr::V4(a) => {
            b.meta_is(NFT_META_NFPROTO, &[NFPROTO_IPV4]);
            b.payload_is(NETWORK, 16, &a.octets());
        }
        IpAddr::V6(a) => {
            b.meta_is(NFT_META_NFPROTO, &[NFPROTO_IPV6]);
            b.payload_is(NETWORK, 24, &a.octets());
        }
    }
    b.meta_is(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]);
    b.payload_is(TRANSPORT, 2, &local.port().to_be_bytes());
    // The flags byte (offset 13 of the TCP header), masked, compared.
    b.expr("payload", |b| {
        b.u32(1, REG_1); // NFTA_PAYLOAD_DREG
        b.u32(2, TRANSPORT); // NFTA_PAYLOAD_BASE
        b.u32(3, 13); // NFTA_PAYLOAD_OFFSET
        b.u32(4, 1); // NFTA_PAYLOAD_LEN
    });
    b.expr("bitwise", |b| {
        b.u32(1, REG_1); // NFTA_BITWISE_SREG
        b.u32(2, REG_1); // NFTA_BITWISE_DREG
        b.u32(3, 1); // NFTA_BITWISE_LEN
        b.nest(4, |b| b.attr(1, &[SYN | ACK])); // NFTA_BITWISE_MASK { NFTA_DATA_VALUE }
        b.nest(5, |b| b.attr(1, &[0])); // NFTA_BITWISE_XOR { NFTA_DATA_VALUE }
    });
    b.cmp_eq(&[SYN]);
    b.drop_it();
}

/// The expressions of `ip saddr FROM ip daddr TO tcp sport P tcp dport Q drop` (ip6 for
/// IPv6 addresses, ip for IPv4-mapped ones), as nft makes them in an inet table: the network protocol and the
/// transport protocol checked before their headers are read.
fn match_drop(b: &mut Batch, from: SocketAddr, to: SocketAddr) {
    // An IPv6 socket's IPv4-mapped addresses travel as IPv4.
    match (from.ip().to_canonical(), to.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.meta_is(NFT_META_NFPROTO, &[NFPROTO_IPV4]);
            b.meta_is(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]);
            b.payload_is(NETWORK, 12, &s.octets());
            b.payload_is(NETWORK, 16, &d.octets());
        }
        (s, d) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a.octets(),
                IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            };
            b.meta_is(NFT_META_NFPROTO, &[NFPROTO_IPV6]);
            b.meta_is(NFT_META_L4PROTO, &[libc::IPPROTO_TCP as u8]);
            b.payload_is(NETWORK, 8, &v6(s));
            b.payload_is(NETWORK, 24, &v6(d));
        }
    }
    b.payload_is(TRANSPORT, 0, &from.port().to_be_bytes());
    b.payload_is(TRANSPORT, 2, &to.port().to_be_bytes());
    b.drop_it();
}

/// Deletes `table` and so lets its connections' packets through again; a table that does
/// not exist (never made, or already removed) is not an error.
pub fn unlock(table: &str) -> Result<()> {
    delete(&[table.to_string()])
}

/// Deletes every table of `tables` in one batch, ENOENT tolerated (each is deleted alone
/// then, as the kernel applies none of a batch that failed).
fn delete(tables: &[String]) -> Result<()> {
    if tables.is_empty() {
        return Ok(());
    }
    let batch = Batch::framed(|b| {
        for t in tables {
            b.message(DELTABLE, libc::NLM_F_ACK, NFPROTO_INET);
            b.str(TABLE_NAME, t);
            b.end();
        }
    });
    match send(&batch) {
        Ok(()) => Ok(()),
        Err(Errno::ENOENT) if tables.len() == 1 => Ok(()),
        Err(Errno::ENOENT) => tables
            .iter()
            .try_for_each(|t| delete(std::slice::from_ref(t))),
        Err(e) => Err(failed(&format!("deleting {}", tables.join(", ")), e)),
    }
}

/// The names of the inet tables of the caller's network namespace.
fn inet_tables() -> Result<Vec<String>> {
    Ok(tables_of(NFPROTO_INET)?
        .into_iter()
        .map(|(_, n)| n)
        .collect())
}

/// Every nf_tables table of the caller's network namespace, as `nft list tables` names
/// them ("inet filter", "ip nat", ...): what a container's namespace holds beside its
/// interfaces and routes (iptables-nft's rules are in such tables too).
pub fn tables() -> Result<Vec<String>> {
    let family = |f: u8| match f {
        NFPROTO_INET => "inet".to_string(),
        NFPROTO_IPV4 => "ip".to_string(),
        NFPROTO_IPV6 => "ip6".to_string(),
        3 => "arp".to_string(),
        5 => "netdev".to_string(),
        7 => "bridge".to_string(),
        f => format!("family-{f}"),
    };
    Ok(tables_of(NFPROTO_UNSPEC)?
        .into_iter()
        .map(|(f, n)| format!("{} {n}", family(f)))
        .collect())
}

/// The tables of `family` (NFPROTO_UNSPEC: of every family), with their family.
fn tables_of(family: u8) -> Result<Vec<(u8, String)>> {
    let sock = open().ctx(|| "socket(NETLINK_NETFILTER)".into())?;
    let mut b = Batch::new();
    b.message(GETTABLE, libc::NLM_F_DUMP, family);
    b.end();
    sendto(
        sock.as_raw_fd(),
        &b.buf,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ctx(|| "nf_tables: listing tables".into())?;
    let mut names = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty())
            .ctx(|| "nf_tables: listing tables".into())?;
        let mut done = None;
        answers(&buf[..n], |ty, _, p| match ty {
            NLMSG_DONE => {
                done.get_or_insert(0);
            }
            NLMSG_ERROR => {
                done = Some(errno_of(p));
            }
            t if t == NFNL_SUBSYS_NFTABLES << 8 | NEWTABLE => {
                // nfgenmsg (its first byte the family), then the table's attributes.
                if let Some((_, name)) = attrs(p, 4).into_iter().find(|(a, _)| *a == TABLE_NAME) {
                    let name = name.split(|&c| c == 0).next().unwrap_or_default();
                    let f = p.first().copied().unwrap_or_default();
                    names.push((f, String::from_utf8_lossy(name).into_owned()));
                }
            }
            _ => {}
        })?;
        match done {
            Some(0) => return Ok(names),
            Some(e) => return Err(failed("listing tables", Errno::from_raw(-e))),
            None => {}
        }
    }
}

/// Deletes every lock table of ckpt's (`ckpt_lock_*`) in the caller's network namespace:
/// in a container's namespace made outside it, the dump's lock and the restore's.
pub fn unlock_all() -> Result<()> {
    let ours: Vec<String> = inet_tables()?
        .into_iter()
        .filter(|t| t.starts_with("ckpt_lock_"))
        .collect();
    delete(&ours)
}

/// Whether table `table` exists (for tests, `ckpt show` and `ckpt check`).
pub fn is_locked(table: &str) -> bool {
    inet_tables().is_ok_and(|t| t.iter().any(|n| n == table))
}

/// Whether nf_tables answers here (`ckpt check`): the inet tables listed, nothing changed.
pub fn available() -> Result<()> {
    inet_tables().map(|_| ())
}

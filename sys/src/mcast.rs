//! Multicast memberships of one IP socket (ip(7), ipv6(7), RFC 3678's protocol-independent
//! API): asked group by group with getsockopt(MCAST_MSFILTER), which answers with the
//! socket's filter mode and sources for a group it joined on an interface and
//! EADDRNOTAVAIL for one it did not. The kernel has no call that lists a socket's
//! groups; the candidates come from the interfaces' groups (/proc/net/igmp, igmp6),
//! since every group a socket joins is also joined by its interface.
//!
//! Memberships travel as the kernel's own structs (struct group_req, struct
//! group_filter, 64-bit layout): the join is given back with MCAST_JOIN_GROUP, the
//! filter with MCAST_MSFILTER.

use crate::error::{Ctx, Result};
use nix::errno::Errno;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};

pub const MCAST_JOIN_GROUP: i32 = 42;
pub const MCAST_MSFILTER: i32 = 48;
/// Filter modes (linux/in.h).
pub const MCAST_EXCLUDE: u32 = 0;
pub const MCAST_INCLUDE: u32 = 1;

/// struct sockaddr_storage.
const STORAGE: usize = 128;
/// Offsets in struct group_filter: gf_interface (u32, then 4 bytes of padding),
/// gf_group, gf_fmode, gf_numsrc, gf_slist.
const GF_GROUP: usize = 8;
const GF_FMODE: usize = GF_GROUP + STORAGE;
const GF_NUMSRC: usize = GF_FMODE + 4;
const GF_SLIST: usize = GF_NUMSRC + 4;
/// The sources asked for at first; a socket may hold more (sysctl igmp_max_msf,
/// mld_max_msf), then it is asked again with room for all.
const FIRST_ROOM: usize = 64;

/// `addr` as a struct sockaddr_storage (port 0).
fn storage(addr: IpAddr) -> [u8; STORAGE] {
    let mut b = [0u8; STORAGE];
    match addr {
        IpAddr::V4(v4) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&v6.octets());
        }
    }
    b
}

/// The level whose multicast calls handle `group`: SOL_IP for IPv4 groups (an IPv6 UDP
/// socket joins those there too), SOL_IPV6 for IPv6 ones.
pub fn level(group: IpAddr) -> i32 {
    if group.is_ipv4() {
        libc::SOL_IP
    } else {
        libc::SOL_IPV6
    }
}

/// struct group_req for MCAST_JOIN_GROUP: `group` on interface `ifindex`.
pub fn group_req(ifindex: u32, group: IpAddr) -> Vec<u8> {
    let mut b = vec![0u8; GF_GROUP + STORAGE];
    b[..4].copy_from_slice(&ifindex.to_ne_bytes());
    b[GF_GROUP..].copy_from_slice(&storage(group));
    b
}

/// A socket's filter of one group, as struct group_filter bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Filter(pub Vec<u8>);

impl Filter {
    fn u32_at(&self, at: usize) -> u32 {
        u32::from_ne_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }

    pub fn mode(&self) -> u32 {
        self.u32_at(GF_FMODE)
    }

    pub fn sources(&self) -> u32 {
        self.u32_at(GF_NUMSRC)
    }

    /// A plain join (any source): what MCAST_JOIN_GROUP alone makes.
    pub fn any_source(&self) -> bool {
        self.mode() == MCAST_EXCLUDE && self.sources() == 0
    }
}

/// The filter of socket `fd` for `group` on interface `ifindex`; None if the socket did
/// not join it there.
pub fn filter(fd: BorrowedFd<'_>, ifindex: u32, group: IpAddr) -> Result<Option<Filter>> {
    let mut room = FIRST_ROOM;
    loop {
        let mut b = vec![0u8; GF_SLIST + room * STORAGE];
        b[..4].copy_from_slice(&ifindex.to_ne_bytes());
        b[GF_GROUP..GF_FMODE].copy_from_slice(&storage(group));
        b[GF_NUMSRC..GF_SLIST].copy_from_slice(&(room as u32).to_ne_bytes());
        let mut len = b.len() as libc::socklen_t;
        // SAFETY: the kernel reads the request from `b` and writes at most `len` bytes
        // (the whole of `b`) back, storing the length it wrote.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                level(group),
                MCAST_MSFILTER,
                b.as_mut_ptr().cast(),
                &mut len,
            )
        };
        match Errno::result(r) {
            Err(Errno::EADDRNOTAVAIL) => return Ok(None),
            Err(e) => {
                return Err(e)
                    .ctx(|| format!("getsockopt(MCAST_MSFILTER, {group} on if {ifindex})"))
            }
            Ok(_) => {}
        }
        let f = Filter(b);
        let n = f.sources() as usize;
        if n > room {
            room = n;
            continue;
        }
        let mut f = f;
        f.0.truncate(GF_SLIST + n * STORAGE);
        return Ok(Some(f));
    }
}

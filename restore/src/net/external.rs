//! TCP connections restored into a network namespace made outside the container (podman's,
//! `Container.net_external`): the namespace exists, with the container's address, before
//! the restore begins, so a segment from the peer reaching it before the socket is back
//! would be answered with a reset. ckpt locks every connection inside that namespace
//! (the same nftables table the dump uses) before the root's seed is forked, and removes
//! it, with the dump's own if the namespace outlived the container, once the connections
//! are rebuilt, just before they leave repair mode.

use crate::{RestoreError, R};
use ckpt_images::pb;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};

/// The lock in the external namespace; removed by `unlock`, or when dropped (a failed
/// restore leaves no table behind).
#[derive(Debug)]
pub struct Lock {
    ns: OwnedFd,
    table: String,
    held: std::sync::atomic::AtomicBool,
}

/// Locks the container's connections (`descs` with a TCP connection of the container's
/// own namespace) inside `ns`; None when there are none.
pub fn lock(ns: &std::fs::File, descs: &[pb::FileDesc]) -> R<Option<Lock>> {
    let mut conns: Vec<(SocketAddr, SocketAddr)> = Vec::new();
    for d in descs {
        let Some(i) = d
            .inet
            .as_ref()
            .filter(|i| i.tcp.is_some() && i.lock_table.is_empty())
        else {
            continue;
        };
        let parse = |a: &str| {
            a.parse::<SocketAddr>().map_err(|_| {
                RestoreError::Refused(format!("fdtable: socket {}: {a:?} is no address", d.id))
            })
        };
        conns.push((parse(&i.local)?, parse(&i.peer)?));
    }
    if conns.is_empty() {
        return Ok(None);
    }
    let ns = ns
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| RestoreError::Refused(format!("the external network namespace: {e}")))?;
    let table = ckpt_sys::nft::table_name(std::process::id() as i32);
    let l = Lock {
        ns,
        table,
        held: std::sync::atomic::AtomicBool::new(true),
    };
    for (local, peer) in conns {
        let t = &l.table;
        ckpt_sys::ns::in_net_namespace(l.ns.as_fd(), || ckpt_sys::nft::lock(t, local, peer))?
            .map_err(|e| {
                RestoreError::Refused(format!(
                    "locking tcp {local} -> {peer} in the external network namespace: {e}"
                ))
            })?;
    }
    Ok(Some(l))
}

impl Lock {
    /// The connections are rebuilt: their packets may pass again.
    pub fn unlock(&self) -> R<()> {
        if !self.held.swap(false, std::sync::atomic::Ordering::AcqRel) {
            return Ok(());
        }
        // The dump's table too, in a namespace that outlived the container.
        ckpt_sys::ns::in_net_namespace(self.ns.as_fd(), ckpt_sys::nft::unlock_all)?.map_err(|e| {
            RestoreError::Refused(format!(
                "removing the TCP locks in the external network namespace: {e}"
            ))
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if let Err(e) = self.unlock() {
            tracing::warn!("{e}");
        }
    }
}

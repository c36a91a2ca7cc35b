//! The lock of TCP connections while they are checkpointed: an nftables table of ckpt's
//! own that drops every packet of the locked connections, in both directions, on input
//! and output. While the process is dumped, killed and restored, its sockets come and go;
//! a packet of the peer reaching a port without its socket would be answered with a reset,
//! which ends the connection for good. Dropped, it is only retransmitted later.
//!
//! Through the `nft` command (Debian's nftables package): one table per dumped tree,
//! named in the image, added by the dump and deleted by the restore.

use crate::error::{Error, Result};
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

/// The table a dump of the tree rooted at `root` locks its connections with.
pub fn table_name(root: i32) -> String {
    format!("ckpt_lock_{root}")
}

fn nft(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            Error::Other(format!(
                "running nft (the nftables package) to lock TCP connections: {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| Error::Other(format!("nft: writing its input: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| Error::Other(format!("nft: {e}")))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "nft failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Drops every TCP packet between `local` and `peer` (both ways) from now on, in table
/// `table` (created if missing).
pub fn lock(table: &str, local: SocketAddr, peer: SocketAddr) -> Result<()> {
    let mut s = format!(
        "table inet {table} {{\n\
         chain input {{ type filter hook input priority -300; policy accept; }}\n\
         chain output {{ type filter hook output priority -300; policy accept; }}\n\
         }}\n"
    );
    let ip = if local.is_ipv4() { "ip" } else { "ip6" };
    for chain in ["input", "output"] {
        for (a, b) in [(local, peer), (peer, local)] {
            s += &format!(
                "add rule inet {table} {chain} {ip} saddr {} {ip} daddr {} tcp sport {} \
                 tcp dport {} drop\n",
                a.ip(),
                b.ip(),
                a.port(),
                b.port()
            );
        }
    }
    nft(&s)
}

/// Deletes `table` and so lets its connections' packets through again; a table that does
/// not exist (never made, or already removed) is not an error.
pub fn unlock(table: &str) -> Result<()> {
    nft(&format!(
        "table inet {table} {{}}\ndelete table inet {table}\n"
    ))
}

/// Deletes every lock table of ckpt's (`ckpt_lock_*`) in the caller's network namespace:
/// in a container's namespace made outside it, the dump's lock and the restore's.
pub fn unlock_all() -> Result<()> {
    let out = Command::new("nft")
        .args(["list", "tables", "inet"])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| Error::Other(format!("running nft list tables: {e}")))?;
    let text = String::from_utf8_lossy(&out.stdout);
    for t in text
        .lines()
        .filter_map(|l| l.strip_prefix("table inet "))
        .filter(|t| t.starts_with("ckpt_lock_"))
    {
        unlock(t.trim())?;
    }
    Ok(())
}

/// Whether table `table` exists (for tests and `ckpt show`).
pub fn is_locked(table: &str) -> bool {
    Command::new("nft")
        .args(["list", "table", "inet", table])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

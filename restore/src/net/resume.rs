//! The last step of a restore with TCP connections, once every process is rebuilt and
//! before any runs: ckpt takes its own copy of each restored connection (pidfd_getfd: the
//! same socket), removes the dump's nftables lock, switches repair mode off (the kernel
//! sends a window probe, and retransmits what is unacknowledged on its timer) and sends
//! the bytes the old socket had not sent yet, in order, before the process can add its
//! own. Connections half or wholly closed get their FINs back first (`fin.rs`).

use super::fin;
use ckpt_images::pb;
use ckpt_sys::socket as s;
use ckpt_sys::Pid;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// Every established connection of the tree, and every listener the dump locked, once
/// each: one (pid, fd) holding it.
pub fn connections<'a>(
    pids: &[Pid],
    imgs: &'a [crate::image::ProcessImage],
    descs: &'a [pb::FileDesc],
) -> Vec<(Pid, i32, &'a pb::InetSocket)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (&pid, img) in pids.iter().zip(imgs) {
        for f in &img.fds {
            let Some(d) = descs.get((f.desc as usize).wrapping_sub(1)) else {
                continue;
            };
            // Listeners whose SYNs the dump locked too: their lock goes with the rest.
            if let Some(i) = d
                .inet
                .as_ref()
                .filter(|i| i.tcp.is_some() || !i.lock_table.is_empty())
            {
                if seen.insert(d.id) {
                    out.push((pid, f.fd, i));
                }
            }
        }
    }
    out
}

/// For every connection (a pid and fd holding it); Err names the pid and fd.
pub fn resume_connections(held: &[(Pid, i32, &pb::InetSocket)]) -> Result<(), String> {
    let mut conns = Vec::new();
    let mut tables: Vec<&str> = Vec::new();
    for &(pid, fd, i) in held {
        if !i.lock_table.is_empty() && !tables.contains(&i.lock_table.as_str()) {
            tables.push(&i.lock_table);
        }
        if i.tcp.is_none() {
            // A listener: made again, nothing to switch back.
            continue;
        }
        let sock =
            ckpt_sys::process::steal_fd(pid, fd).map_err(|e| format!("pid {pid}: fd {fd}: {e}"))?;
        conns.push((pid, fd, sock, i));
    }
    for t in tables {
        ckpt_sys::nft::unlock(t).map_err(|e| format!("removing the TCP lock {t}: {e}"))?;
    }
    let named = |n: usize, e: String| {
        let (pid, fd, _, i) = &conns[n];
        format!("pid {pid}: fd {fd} (tcp {} -> {}): {e}", i.local, i.peer)
    };
    // Half and wholly closed connections get their FINs back (fin.rs), all of them
    // before any leaves repair mode.
    let closed: Vec<(usize, fin::Conn<'_>)> = conns
        .iter()
        .enumerate()
        .filter_map(|(n, (_, _, sock, i))| {
            let c = i.tcp.as_ref().filter(|c| fin::closed_any(c))?;
            Some((n, fin::conn(sock, i, c)))
        })
        .collect();
    let (which, phases): (Vec<usize>, Vec<fin::Conn<'_>>) = closed.into_iter().unzip();
    fin::before_repair_off(&phases).map_err(|(k, e)| named(which[k], e))?;
    for (n, (_, _, sock, i)) in conns.iter().enumerate() {
        let c = i.tcp.as_ref().expect("filtered above");
        s::set_int(sock.as_fd(), s::SOL_TCP, s::TCP_REPAIR, s::TCP_REPAIR_OFF)
            .map_err(|e| named(n, format!("TCP_REPAIR off: {e}")))?;
        // Leaving repair mode clears sk_reuse (SK_NO_REUSE): the connection's
        // SO_REUSEADDR (an accepted one inherits its listener's), set before, is lost
        // without this. Lost, the connection's TIME_WAIT once it closes keeps its
        // listener from binding its port again for a minute (a restart, the next restore).
        if let Some(o) = i
            .opts
            .iter()
            .find(|o| o.level == s::SOL_SOCKET && o.name == libc::SO_REUSEADDR)
        {
            s::set_bytes(sock.as_fd(), o.level, o.name, &o.value)
                .map_err(|e| named(n, format!("SO_REUSEADDR again: {e}")))?;
        }
        let unsent = c.send_queue.len().saturating_sub(c.unsent as usize);
        send_all(sock.as_fd(), &c.send_queue[unsent..]).map_err(|e| named(n, e))?;
        fin::after_unsent(&fin::conn(sock, i, c)).map_err(|e| named(n, e))?;
    }
    Ok(())
}

/// Every byte, waiting (up to 10 s) for room in the send buffer.
fn send_all(fd: std::os::fd::BorrowedFd<'_>, data: &[u8]) -> Result<(), String> {
    let mut off = 0;
    let start = Instant::now();
    while off < data.len() {
        match s::send(fd, &data[off..], libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) => off += n,
            Err(e) if e.errno() == Some(nix::errno::Errno::EAGAIN) => {
                if start.elapsed() > Duration::from_secs(10) {
                    return Err(format!(
                        "sending the {} bytes not sent before the dump: stuck at {off}",
                        data.len()
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                return Err(format!(
                    "sending the {} bytes not sent before the dump: {e}",
                    data.len()
                ))
            }
        }
    }
    Ok(())
}

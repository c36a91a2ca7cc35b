//! The last step of a restore with TCP connections, once every process is rebuilt and
//! before any runs: ckpt takes its own copy of each restored connection (pidfd_getfd: the
//! same socket), removes the dump's nftables lock, switches repair mode off (the kernel
//! sends a window probe, and retransmits what is unacknowledged on its timer) and sends
//! the bytes the old socket had not sent yet, in order, before the process can add its
//! own.

use ckpt_images::pb;
use ckpt_sys::socket as s;
use ckpt_sys::Pid;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// For every process (pid and its fds), in any order; Err names the pid and fd.
pub fn resume_connections(procs: &[(Pid, &[pb::Fd])]) -> Result<(), String> {
    let mut conns = Vec::new();
    let mut tables: Vec<&str> = Vec::new();
    for &(pid, fds) in procs {
        for f in fds {
            let Some(i) = f.inet.as_ref().filter(|i| i.tcp.is_some()) else {
                continue;
            };
            let sock = ckpt_sys::process::steal_fd(pid, f.fd)
                .map_err(|e| format!("pid {pid}: fd {}: {e}", f.fd))?;
            if !i.lock_table.is_empty() && !tables.contains(&i.lock_table.as_str()) {
                tables.push(&i.lock_table);
            }
            conns.push((pid, f.fd, sock, i));
        }
    }
    for t in tables {
        ckpt_sys::nft::unlock(t).map_err(|e| format!("removing the TCP lock {t}: {e}"))?;
    }
    for (pid, fd, sock, i) in &conns {
        let c = i.tcp.as_ref().expect("filtered above");
        let named = |e: String| format!("pid {pid}: fd {fd} (tcp {} -> {}): {e}", i.local, i.peer);
        s::set_int(sock.as_fd(), s::SOL_TCP, s::TCP_REPAIR, s::TCP_REPAIR_OFF)
            .map_err(|e| named(format!("TCP_REPAIR off: {e}")))?;
        let unsent = c.send_queue.len().saturating_sub(c.unsent as usize);
        send_all(sock.as_fd(), &c.send_queue[unsent..]).map_err(named)?;
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

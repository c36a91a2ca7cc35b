//! An established TCP connection rebuilt in repair mode (net/ipv4/tcp.c): sequence
//! numbers, then connect (no SYN in repair mode: the socket is established at once), the
//! options the two ends negotiated, the timestamp clock, both queues, the window. What
//! the peer had not been sent yet is sent for real once repair mode is off (`resume.rs`);
//! what it had been sent but not acknowledged goes into the send queue as sent, and is
//! retransmitted as the kernel sees fit. A connection half or wholly closed is rebuilt
//! established, its FINs put back just before repair mode ends (`fin.rs`).

use ckpt_images::pb;
use ckpt_sys::socket as s;
use std::net::SocketAddr;
use std::os::fd::BorrowedFd;

/// connect(2) in repair mode, taking over the TIME_WAIT entry the connection's own end
/// left where the kernel will not let it be reused (`ckpt_sys::timewait`).
fn connect_over_time_wait(fd: BorrowedFd<'_>, peer: SocketAddr) -> ckpt_sys::Result<()> {
    match s::connect(fd, peer) {
        Err(e) if e.errno() == Some(nix::errno::Errno::EADDRNOTAVAIL) => {
            if ckpt_sys::timewait::remove(s::local_addr(fd)?, peer)? {
                s::connect(fd, peer)
            } else {
                Err(e)
            }
        }
        r => r,
    }
}

pub fn connect(
    fd: BorrowedFd<'_>,
    c: &pb::TcpConnection,
    peer: SocketAddr,
    opts: &[pb::SockOpt],
) -> Result<(), String> {
    let sys = |what: &'static str| move |e: ckpt_sys::Error| format!("{what}: {e}");
    let set = |name: i32, val: i32, what: &'static str| {
        s::set_int(fd, s::SOL_TCP, name, val).map_err(sys(what))
    };
    // An acknowledged FIN of ours is counted in send_seq: it goes back in (`fin.rs`)
    // at the sequence number before.
    let acked_fin = c.own_fin == pb::OwnFin::Acked as u32;
    let send_seq = c.send_seq.wrapping_sub(u32::from(acked_fin));
    set(s::TCP_REPAIR_QUEUE, s::TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    set(s::TCP_QUEUE_SEQ, send_seq as i32, "send sequence")?;
    set(s::TCP_REPAIR_QUEUE, s::TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    set(s::TCP_QUEUE_SEQ, c.recv_seq as i32, "receive sequence")?;
    connect_over_time_wait(fd, peer).map_err(sys("connect in repair mode"))?;
    let mut o = vec![(s::TCPOPT_MSS, c.mss)];
    if c.wscale {
        o.push((s::TCPOPT_WINDOW, c.snd_wscale | (c.rcv_wscale << 16)));
    }
    if c.sack {
        o.push((s::TCPOPT_SACK_PERM, 0));
    }
    if c.timestamps {
        o.push((s::TCPOPT_TIMESTAMP, 0));
    }
    s::set_repair_options(fd, &o).map_err(sys("TCP_REPAIR_OPTIONS"))?;
    if c.timestamps {
        set(s::TCP_TIMESTAMP, c.timestamp as i32, "TCP_TIMESTAMP")?;
    }
    let sent = c.send_queue.len().saturating_sub(c.unsent as usize);
    let (sent_part, recv) = (&c.send_queue[..sent], &c.recv_queue[..]);
    // The queues must fit in the buffers: raised for the fill, then the locks the
    // program had (none: the kernel tunes them again) put back.
    let locks = opts
        .iter()
        .find(|o| o.level == s::SOL_SOCKET && o.name == s::SO_BUF_LOCK)
        .and_then(|o| o.value.as_slice().try_into().ok().map(i32::from_ne_bytes))
        .unwrap_or(0);
    grow(fd, s::SO_SNDBUF, s::SO_SNDBUFFORCE, c.send_queue.len())?;
    grow(fd, s::SO_RCVBUF, s::SO_RCVBUFFORCE, recv.len())?;
    set(s::TCP_REPAIR_QUEUE, s::TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    fill(fd, sent_part, "send")?;
    set(s::TCP_REPAIR_QUEUE, s::TCP_RECV_QUEUE, "TCP_REPAIR_QUEUE")?;
    fill(fd, recv, "receive")?;
    set(s::TCP_REPAIR_QUEUE, 0, "TCP_REPAIR_QUEUE")?;
    // The sizes the program set, again: the window the socket announces from now on is
    // the one its buffer gave (a bigger one would let the peer send what it could not).
    for o in opts
        .iter()
        .filter(|o| o.level == s::SOL_SOCKET && (o.name == s::SO_SNDBUF || o.name == s::SO_RCVBUF))
    {
        super::set_option(fd, o)?;
    }
    s::set_int(fd, s::SOL_SOCKET, s::SO_BUF_LOCK, locks).map_err(sys("SO_BUF_LOCK"))?;
    let mut w = s::RepairWindow {
        snd_wl1: c.snd_wl1,
        snd_wnd: c.snd_wnd,
        max_window: c.max_window,
        rcv_wnd: c.rcv_wnd,
        rcv_wup: c.rcv_wup,
    };
    if c.peer_fin {
        // The window was read with the peer's FIN received (rcv_nxt past it), which the
        // socket has not yet: the same right edge, one sequence number earlier.
        w.rcv_wup = w.rcv_wup.wrapping_sub(1);
        w.rcv_wnd = w.rcv_wnd.wrapping_add(1);
    }
    s::set_repair_window(fd, &w).map_err(sys("TCP_REPAIR_WINDOW"))?;
    Ok(())
}

/// A connection that was being made (SYN_SENT), made again as CRIU does: its initial
/// sequence number set in repair mode, then a real connect (repair off, non-blocking: it
/// returns EINPROGRESS) sends a SYN with it, which the lock drops; repair goes on again
/// so that the resume (`resume.rs`) treats it as every connection, and the SYN's
/// retransmission, once the lock is gone, reaches the peer (measured on 6.18: connected
/// ~1 s after the lock went, the first retransmission timeout). A peer that answered the
/// first SYN (its SYN-ACK dropped by the lock) sees the same SYN again and answers again.
pub fn connect_again(
    fd: BorrowedFd<'_>,
    c: &pb::TcpConnection,
    peer: SocketAddr,
) -> Result<(), String> {
    let sys = |what: &'static str| move |e: ckpt_sys::Error| format!("{what}: {e}");
    let set = |name: i32, val: i32, what: &'static str| {
        s::set_int(fd, s::SOL_TCP, name, val).map_err(sys(what))
    };
    set(s::TCP_REPAIR_QUEUE, s::TCP_SEND_QUEUE, "TCP_REPAIR_QUEUE")?;
    set(
        s::TCP_QUEUE_SEQ,
        c.send_seq as i32,
        "initial sequence number",
    )?;
    set(s::TCP_REPAIR_QUEUE, 0, "TCP_REPAIR_QUEUE")?;
    set(s::TCP_REPAIR, s::TCP_REPAIR_OFF, "TCP_REPAIR off")?;
    // The image's status flags are set once the socket is at its slot (`create_at`).
    let nonblock = nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), nonblock)
        .map_err(|e| format!("O_NONBLOCK: {e}"))?;
    match s::connect(fd, peer) {
        Ok(()) => {}
        Err(e) if e.errno() == Some(nix::errno::Errno::EINPROGRESS) => {}
        Err(e) => return Err(format!("connect (SYN_SENT): {e}")),
    }
    set(s::TCP_REPAIR, s::TCP_REPAIR_ON, "TCP_REPAIR on")
}

/// Raises buffer `name` so that `need` bytes fit, if they do not already.
fn grow(fd: BorrowedFd<'_>, name: i32, force: i32, need: usize) -> Result<(), String> {
    if need == 0 {
        return Ok(());
    }
    let have = s::get_int(fd, s::SOL_SOCKET, name).map_err(|e| e.to_string())? as usize;
    let want = need * 2 + (256 << 10);
    if have < want {
        s::set_int(fd, s::SOL_SOCKET, force, (want / 2) as i32)
            .map_err(|e| format!("raising a socket buffer to {want}: {e}"))?;
    }
    Ok(())
}

/// Writes `data` into the queue TCP_REPAIR_QUEUE selects, in pieces the kernel accepts.
fn fill(fd: BorrowedFd<'_>, data: &[u8], which: &str) -> Result<(), String> {
    let mut off = 0;
    let mut chunk = 256 << 10;
    while off < data.len() {
        let end = (off + chunk).min(data.len());
        match s::send(fd, &data[off..end], libc::MSG_DONTWAIT) {
            Ok(n) if n > 0 => off += n,
            Ok(_) => return Err(format!("the {which} queue took no more bytes at {off}")),
            Err(e)
                if chunk > 4096
                    && matches!(
                        e.errno(),
                        Some(nix::errno::Errno::ENOMEM | nix::errno::Errno::EAGAIN)
                    ) =>
            {
                chunk /= 2
            }
            Err(e) => {
                return Err(format!(
                    "refilling the {which} queue ({} of {} bytes in): {e}",
                    off,
                    data.len()
                ))
            }
        }
    }
    Ok(())
}

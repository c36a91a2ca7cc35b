//! A TCP connection read through TCP_REPAIR (net/ipv4/tcp.c): on ckpt's own copy of the
//! socket (pidfd_getfd: the same socket the process holds), repair mode on, then both
//! queues peeked (the send queue through TCP_REPAIR_QUEUE, which makes a MSG_PEEK read
//! it), the sequence numbers, the negotiated options and the window.
//!
//! Besides established, the states of a connection half or wholly closed (a FIN sent, a
//! FIN received, or both): each FIN takes one sequence number the queues do not hold,
//! recorded apart (`peer_fin`, `own_fin`) so that the queues and `send_seq` / `recv_seq`
//! are the data's, and the restore can put the FINs back where they were. A connection
//! that has ended (CLOSE) keeps what the program has not read, and nothing it may send.
//!
//! Repair mode stays on until the dump ends: a socket closed in repair mode disappears
//! without a FIN or a reset (the kill), and one let go (`--leave-running`, a failed dump)
//! is switched back. The connection's packets are dropped meanwhile (`ckpt_sys::nft`).

use ckpt_images::pb;
use ckpt_sys::socket as s;
use std::os::fd::BorrowedFd;

/// Everything of the connection TCP_REPAIR can give back; `sock` is in repair mode, in
/// `state` (tcp_info's, read before repair mode).
pub fn read(sock: BorrowedFd<'_>, state: u8) -> ckpt_sys::Result<pb::TcpConnection> {
    if state == s::TCP_SYN_SENT {
        return connecting(sock);
    }
    let info = s::tcp_info(sock)?;
    let peer_fin = matches!(
        state,
        s::TCP_CLOSE_WAIT | s::TCP_LAST_ACK | s::TCP_CLOSING | s::TCP_CLOSE
    );
    s::set_int(sock, s::SOL_TCP, s::TCP_REPAIR_QUEUE, s::TCP_SEND_QUEUE)?;
    let write_seq = s::get_int(sock, s::SOL_TCP, s::TCP_QUEUE_SEQ)? as u32;
    // write_seq - snd_una, and write_seq - snd_nxt: our FIN counts in both until the
    // peer acknowledged it, in the second until it went out.
    let mut outq = s::queued(sock, s::Queue::Out)?;
    let mut unsent = s::queued(sock, s::Queue::OutNotSent)?;
    // snd_una (past our FIN once the peer acknowledged it).
    let send_seq = write_seq.wrapping_sub(if state == s::TCP_CLOSE { 0 } else { outq });
    let own_fin = match state {
        // Ended: what is left to send can never go; the FIN is made acknowledged.
        s::TCP_CLOSE => {
            outq = 0;
            unsent = 0;
            pb::OwnFin::Acked
        }
        s::TCP_FIN_WAIT2 => pb::OwnFin::Acked,
        s::TCP_FIN_WAIT1 | s::TCP_CLOSING | s::TCP_LAST_ACK => {
            outq = outq.saturating_sub(1);
            if unsent > 0 {
                unsent -= 1;
                pb::OwnFin::Unsent
            } else {
                pb::OwnFin::Sent
            }
        }
        _ => pb::OwnFin::None,
    };
    let send_queue = peek_all(sock, outq, "send")?;
    s::set_int(sock, s::SOL_TCP, s::TCP_REPAIR_QUEUE, s::TCP_RECV_QUEUE)?;
    let rcv_nxt = s::get_int(sock, s::SOL_TCP, s::TCP_QUEUE_SEQ)? as u32;
    // Unread bytes, the FIN not counted.
    let inq = s::queued(sock, s::Queue::In)?;
    let recv_queue = peek_all(sock, inq, "receive")?;
    s::set_int(sock, s::SOL_TCP, s::TCP_REPAIR_QUEUE, 0)?;
    // In repair mode TCP_MAXSEG is the MSS the peer announced (mss_clamp).
    let mss = s::get_int(sock, s::SOL_TCP, libc::TCP_MAXSEG)? as u32;
    let timestamps = info.options & 1 != 0;
    let timestamp = if timestamps {
        s::get_int(sock, s::SOL_TCP, s::TCP_TIMESTAMP)? as u32
    } else {
        0
    };
    let w = s::repair_window(sock)?;
    Ok(pb::TcpConnection {
        send_seq,
        // An ended connection is rebuilt with a FIN after its unread bytes, whatever
        // ended it (a reset leaves no FIN: nothing reads these numbers again).
        recv_seq: rcv_nxt.wrapping_sub(inq).wrapping_sub(u32::from(peer_fin)),
        send_queue,
        unsent,
        recv_queue,
        mss,
        timestamps,
        sack: info.options & 2 != 0,
        wscale: info.options & 4 != 0,
        snd_wscale: info.snd_wscale as u32,
        rcv_wscale: info.rcv_wscale as u32,
        timestamp,
        snd_wl1: w.snd_wl1,
        snd_wnd: w.snd_wnd,
        max_window: w.max_window,
        rcv_wnd: w.rcv_wnd,
        rcv_wup: w.rcv_wup,
        peer_fin,
        own_fin: own_fin as u32,
    })
}

/// A connection being made (SYN_SENT: a non-blocking connect in progress, or a blocking
/// one the process waits in), whose SYN is unanswered: only its initial sequence number
/// matters (the restore's connect sends its SYN again with it, as CRIU does), the one
/// before write_seq (the SYN took one). Nothing is queued, as a write waits for the
/// connection; data a TCP Fast Open connect sent with its SYN is refused.
fn connecting(sock: BorrowedFd<'_>) -> ckpt_sys::Result<pb::TcpConnection> {
    s::set_int(sock, s::SOL_TCP, s::TCP_REPAIR_QUEUE, s::TCP_SEND_QUEUE)?;
    let write_seq = s::get_int(sock, s::SOL_TCP, s::TCP_QUEUE_SEQ)? as u32;
    s::set_int(sock, s::SOL_TCP, s::TCP_REPAIR_QUEUE, 0)?;
    let info = s::tcp_info(sock)?;
    if info.notsent > 0 || info.data_segs_out > 0 {
        return Err(ckpt_sys::Error::Other(
            "a TCP connection being made with data already written (TCP Fast Open); not \
             supported yet"
                .into(),
        ));
    }
    Ok(pb::TcpConnection {
        send_seq: write_seq.wrapping_sub(1),
        own_fin: pb::OwnFin::None as u32,
        ..Default::default()
    })
}

/// The `len` bytes of the queue TCP_REPAIR_QUEUE selects, left where they are.
fn peek_all(sock: BorrowedFd<'_>, len: u32, which: &str) -> ckpt_sys::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    if len == 0 {
        return Ok(buf);
    }
    let got = s::peek(sock, &mut buf, 0)?;
    if got != buf.len() {
        return Err(ckpt_sys::Error::Other(format!(
            "the {which} queue holds {len} bytes but a peek read {got}"
        )));
    }
    Ok(buf)
}

//! The FINs of a connection that was half or wholly closed at the dump, put back on the
//! connection rebuilt established (`tcp.rs`), in the order the two ends exchanged them, so
//! it reaches its state by the kernel's own transitions:
//!
//! - our FIN (the program's shutdown of its writing side): shutdown(SHUT_WR) in repair
//!   mode with TCP_REPAIR_QUEUE on the send queue, which queues it as sent (no packet;
//!   retransmitted on the timer like the other unacknowledged bytes): FIN_WAIT1, or
//!   LAST_ACK after the peer's;
//! - the peer's FIN, and the peer's acknowledgement of ours: the repair interface has no
//!   way to queue them, so the segment the peer sent is written by hand and handed to
//!   the socket's namespace (`ckpt_sys::tcpinject`): CLOSE_WAIT, CLOSING, FIN_WAIT2;
//! - our FIN that had not gone out yet (bytes before it were waiting for the peer's
//!   window): nothing in repair mode; the shutdown is made again once the unsent bytes
//!   are sent for real (`after_unsent`), so it follows them.
//!
//! An ended connection (CLOSE) goes our FIN, its acknowledgement, then the peer's FIN:
//! FIN_WAIT1, FIN_WAIT2, then TIME_WAIT, which leaves the socket closed with its unread
//! bytes and the end of file after them, having sent nothing but its last ACK (the
//! kernel moves the 4-tuple to a TIME_WAIT entry of its own, as the real connection's
//! active closer had, which the next restore takes over: `tcp.rs`; the other order,
//! through LAST_ACK, would answer the peer's FIN while still open, and a reset from a
//! peer long gone would end it with an error).
//!
//! Every step runs once every connection of the tree exists and the locks are gone
//! (`resume.rs`), phase by phase across connections: a segment one end sends in answer
//! then reaches the other end in the state it has at that phase, never a port without a
//! socket (which would answer with a reset).

use ckpt_images::pb;
use ckpt_sys::socket as s;
use ckpt_sys::tcpinject::{self, Segment, ACK, FIN};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};

/// One restored connection, as resume.rs holds it.
pub struct Conn<'a> {
    pub sock: BorrowedFd<'a>,
    pub i: &'a pb::InetSocket,
    pub c: &'a pb::TcpConnection,
}

impl Conn<'_> {
    fn state(&self) -> u8 {
        self.i.state as u8
    }

    fn own_fin(&self) -> pb::OwnFin {
        pb::OwnFin::try_from(self.c.own_fin as i32).unwrap_or(pb::OwnFin::None)
    }

    /// Our FIN is in the state's history as sent (now or after the peer's).
    fn own_fin_sent(&self) -> bool {
        matches!(self.own_fin(), pb::OwnFin::Sent | pb::OwnFin::Acked)
    }

    /// The sequence number after the data we received (where the peer's FIN goes).
    fn recv_end(&self) -> u32 {
        self.c.recv_seq.wrapping_add(self.c.recv_queue.len() as u32)
    }

    /// What the peer acknowledged: snd_una (past our FIN once it is acknowledged).
    fn acked(&self) -> u32 {
        self.c.send_seq
    }

    /// The window the peer last announced, as its segments carry it.
    fn window(&self) -> u16 {
        let shift = if self.c.wscale { self.c.snd_wscale } else { 0 };
        (self.c.snd_wnd >> shift.min(14)).min(0xffff) as u16
    }

    /// A segment from the peer to this socket.
    fn inject_from_peer(&self, seq: u32, flags: u8) -> Result<(), String> {
        let seg = Segment {
            from: peer_of(self.i)?,
            to: addr("local", &self.i.local)?,
            seq,
            ack: self.acked(),
            flags,
            window: self.window(),
        };
        send_in_netns(self.sock, &seg).map_err(|e| {
            let what = if flags & FIN != 0 { "FIN" } else { "ACK" };
            format!("handing the peer's {what} to the socket: {e}")
        })
    }

    /// shutdown(SHUT_WR) in repair mode, the FIN queued as sent.
    fn queue_own_fin(&self) -> Result<(), String> {
        let set = |q| s::set_int(self.sock, s::SOL_TCP, s::TCP_REPAIR_QUEUE, q);
        set(s::TCP_SEND_QUEUE)
            .and_then(|()| s::shutdown_write(self.sock))
            .and_then(|()| set(0))
            .map_err(|e| format!("putting back our FIN: {e}"))
    }
}

fn addr(what: &str, t: &str) -> Result<SocketAddr, String> {
    t.parse()
        .map_err(|e| format!("{what} address {t:?} in the image: {e}"))
}

/// The peer the connection is rebuilt with.
pub fn peer_of(i: &pb::InetSocket) -> Result<SocketAddr, String> {
    addr("peer", &i.peer)
}

/// Sends `seg` from a thread in the socket's network namespace (a container's: the
/// segment must reach the socket through its namespace's loopback).
fn send_in_netns(sock: BorrowedFd<'_>, seg: &Segment) -> ckpt_sys::Result<()> {
    let ns = s::netns(sock)?;
    let ino = nix::sys::stat::fstat(std::os::fd::AsRawFd::as_raw_fd(&ns))
        .map_err(|e| ckpt_sys::Error::sys("fstat(netns)", e))?
        .st_ino;
    if ino == s::own_netns_inode()? {
        return tcpinject::send(seg);
    }
    let ns = std::fs::File::from(ns);
    ckpt_sys::ns::in_namespace(&ns, &format!("net:[{ino}]"), || tcpinject::send(seg))?
}

/// Every step before repair mode ends, phase by phase over all `conns`; Err names the
/// connection's index.
pub fn before_repair_off(conns: &[Conn<'_>]) -> Result<(), (usize, String)> {
    let each = |f: &dyn Fn(&Conn<'_>) -> Result<(), String>| {
        conns
            .iter()
            .enumerate()
            .try_for_each(|(n, c)| f(c).map_err(|e| (n, e)))
    };
    // Our FIN first where it was first: everything but LAST_ACK.
    each(&|c| {
        if c.own_fin_sent() && c.state() != s::TCP_LAST_ACK {
            c.queue_own_fin()?;
        }
        Ok(())
    })?;
    // The peer acknowledged it: FIN_WAIT2 (and CLOSE, before the peer's FIN).
    each(&|c| {
        if c.own_fin() == pb::OwnFin::Acked {
            c.inject_from_peer(c.recv_end(), ACK)?;
        }
        Ok(())
    })?;
    // The peer's FIN, unless ours was still waiting to go out in CLOSING (then it came
    // after ours: `after_unsent`).
    each(&|c| {
        if c.c.peer_fin && !closing_unsent(c) {
            c.inject_from_peer(c.recv_end(), FIN | ACK)?;
        }
        Ok(())
    })?;
    // LAST_ACK: ours after the peer's.
    each(&|c| {
        if c.own_fin_sent() && c.state() == s::TCP_LAST_ACK {
            c.queue_own_fin()?;
        }
        Ok(())
    })
}

fn closing_unsent(c: &Conn<'_>) -> bool {
    c.state() == s::TCP_CLOSING && c.own_fin() == pb::OwnFin::Unsent
}

/// Repair mode is off and the bytes never sent are sent: a FIN that waited behind them
/// follows them now (and in CLOSING the peer's FIN after it).
pub fn after_unsent(c: &Conn<'_>) -> Result<(), String> {
    if c.own_fin() != pb::OwnFin::Unsent {
        return Ok(());
    }
    s::shutdown_write(c.sock).map_err(|e| format!("shutting down again: {e}"))?;
    if closing_unsent(c) {
        c.inject_from_peer(c.recv_end(), FIN | ACK)?;
    }
    Ok(())
}

/// Whether `c` needs any of this (an established connection does not).
pub fn closed_any(c: &pb::TcpConnection) -> bool {
    c.peer_fin || c.own_fin != pb::OwnFin::None as u32
}

/// For the borrow checker: a `Conn` of an owned socket.
pub fn conn<'a>(
    sock: &'a std::os::fd::OwnedFd,
    i: &'a pb::InetSocket,
    c: &'a pb::TcpConnection,
) -> Conn<'a> {
    Conn {
        sock: sock.as_fd(),
        i,
        c,
    }
}

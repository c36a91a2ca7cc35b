//! The SOCK_SEQPACKET unix socket a client of CRIU's RPC (`criu swrk N`) hands over as
//! fd N: adopted once, then one message per datagram each way, fds passed with
//! SCM_RIGHTS, and the client's pid from SO_PEERCRED (whose /proc/PID/fd the request's
//! directory fds are opened through).

use crate::error::{Ctx, Error, Result};
use nix::sys::socket::{self as ns, sockopt, ControlMessage, MsgFlags};
use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The connected end of a SEQPACKET socket pair.
pub struct Endpoint(OwnedFd);

impl Endpoint {
    /// Takes ownership of `fd`, inherited through exec and named on the command line;
    /// refuses one that is not open or not a unix SEQPACKET socket.
    pub fn adopt_inherited(fd: RawFd) -> Result<Self> {
        if fd < 0 {
            return Err(Error::Other(format!("fd {fd}: not a file descriptor")));
        }
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)
            .ctx(|| format!("fd {fd} (the RPC socket)"))?;
        // SAFETY: fd is open (F_GETFD succeeded) and no other object of this process owns
        // it: it was inherited through exec and is adopted once, here, by its number.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let ty = ns::getsockopt(&owned, sockopt::SockType)
            .ctx(|| format!("fd {fd}: SO_TYPE (the RPC socket must be a socket)"))?;
        if ty != ns::SockType::SeqPacket {
            return Err(Error::Other(format!(
                "fd {fd}: a {ty:?} socket, the RPC needs a SOCK_SEQPACKET one"
            )));
        }
        // Nothing started from here (a restored tree) keeps the client's socket.
        nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .ctx(|| format!("fd {fd}: FD_CLOEXEC"))?;
        Ok(Endpoint(owned))
    }

    /// The pid of the process at the other end (as this pid namespace sees it).
    pub fn peer_pid(&self) -> Result<i32> {
        let cred =
            ns::getsockopt(&self.0, sockopt::PeerCredentials).ctx(|| "SO_PEERCRED".into())?;
        Ok(cred.pid())
    }

    /// One datagram; None when the peer closed its end.
    pub fn recv(&self) -> Result<Option<Vec<u8>>> {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            match ns::recv(self.0.as_raw_fd(), &mut buf, MsgFlags::MSG_TRUNC) {
                Ok(0) => return Ok(None),
                Ok(n) if n > buf.len() => {
                    return Err(Error::Other(format!(
                        "RPC message of {n} bytes: larger than {} bytes",
                        buf.len()
                    )))
                }
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("recv on the RPC socket", e)),
            }
        }
    }

    /// One datagram, with `fds` attached (SCM_RIGHTS) when not empty.
    pub fn send(&self, msg: &[u8], fds: &[RawFd]) -> Result<()> {
        let iov = [IoSlice::new(msg)];
        let cmsg = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
        loop {
            match ns::sendmsg::<()>(
                self.0.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("send on the RPC socket", e)),
            }
        }
    }
}

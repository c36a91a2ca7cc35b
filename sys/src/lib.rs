//! The kernel, thinly wrapped. Every raw syscall and every `unsafe` block of ckpt lives in
//! this crate, behind small safe functions; the man page each one follows is named in its
//! doc comment.

pub mod abort;
pub mod anonfd;
pub mod caps;
pub mod cgroup;
pub mod epoll;
pub mod error;
pub mod halfopen;
pub mod idmap;
pub mod inject;
pub mod kstate;
pub mod loopdev;
pub mod mcast;
pub mod mem;
pub mod mounts;
pub mod mqueue;
pub mod netlink;
pub mod nft;
pub mod ns;
pub mod packet;
pub mod pipe;
pub mod probe;
pub mod proc;
pub mod process;
pub mod ptrace;
pub mod regs;
pub mod reserve;
pub mod rtnl;
pub mod seqpacket;
mod sockdiag;
pub mod socket;
pub mod sysvipc;
pub mod tcpdiag;
pub mod tcpinject;
pub mod testhold;
pub mod timewait;
pub mod track;
pub mod tty;
pub mod uffd;
pub mod unix;

pub use error::{Error, Result};
pub use nix::unistd::Pid;

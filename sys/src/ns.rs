//! Namespaces: a child forked into a fresh pid namespace, the pids a task has in each
//! pid namespace it is in, and which namespaces a task shares with another.

use crate::error::{Error, Result};
use crate::process::Forked;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;

/// Forks (clone3(2) with CLONE_NEWPID and CLONE_NEWNS, no CLONE_VM) a child that is pid 1
/// of a fresh pid namespace, in a mount namespace that is a copy of the caller's; the
/// parent gets its pid in the caller's namespace, whatever the kernel gives. The pid
/// namespace lives as long as that child: when it exits, the kernel kills every other
/// task of the namespace.
///
/// The caller must be single-threaded (the child runs on a copy of its memory).
pub fn fork_into_new_pidns() -> Result<Forked> {
    crate::process::fork3(
        (libc::CLONE_NEWPID | libc::CLONE_NEWNS) as u64,
        libc::SIGCHLD as u64,
        &[],
    )
    .map_err(|e| Error::sys("clone3(CLONE_NEWPID | CLONE_NEWNS)", e))
}

/// The pids of `pid` (as /proc names it) in every pid namespace it is in, outermost
/// first: /proc/PID/status's NSpid line.
pub fn ns_pids(pid: Pid) -> Result<Vec<i32>> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .ok_or_else(|| Error::Other(format!("{path}: no NSpid line")))?;
    line.split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| Error::Other(format!("{path}: bad NSpid {line:?}")))
        })
        .collect()
}

/// The namespace `/proc/PID/ns/NAME` names, as the link reads (`uts:[4026531838]`).
pub fn ns_id(pid: Pid, name: &str) -> Result<String> {
    let path = format!("/proc/{pid}/ns/{name}");
    std::fs::read_link(&path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| Error::io(&path, e))
}

/// In a fresh mount namespace: makes every mount private (nothing mounted here reaches
/// the namespace it was copied from, nor the other way), then mounts a proc of the
/// caller's pid namespace at /proc, over the one it inherited (what `unshare
/// --mount-proc` does).
pub fn mount_own_proc() -> Result<()> {
    use nix::mount::{mount, MsFlags};
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount --make-rprivate /", e))?;
    mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount proc on /proc", e))
}

/// Runs `f` on a thread of ckpt that first joined `pid`'s namespace of `kind` (`uts`,
/// `ipc`: namespaces a thread may join on its own, setns(2)), so that what it reads from
/// /proc/sys or /proc/sysvipc is that namespace's. ckpt's other threads stay where they
/// are.
pub fn in_namespace_of<T: Send>(pid: Pid, kind: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    let ns = open_namespace(pid, kind)?;
    in_namespace(&ns, &format!("/proc/{pid}/ns/{kind}"), f)
}

/// `pid`'s namespace of `kind`, held open: the namespace lives at least as long as the
/// fd, whatever becomes of its processes.
pub fn open_namespace(pid: Pid, kind: &str) -> Result<std::fs::File> {
    let path = format!("/proc/{pid}/ns/{kind}");
    std::fs::File::open(&path).map_err(|e| Error::io(&path, e))
}

/// Runs `f` on a thread of ckpt that first joined namespace `ns` (named `what` in
/// errors), as [`in_namespace_of`] does.
pub fn in_namespace<T: Send>(
    ns: &std::fs::File,
    what: &str,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::empty())
                .map_err(|e| Error::sys(format!("setns({what})"), e))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Other(format!("thread in {what} panicked"))))
    })
}

/// [`in_namespace_of`] for the network namespace `ns` (an fd of one, e.g. given by
/// `--inherit-fd`).
pub fn in_net_namespace<T: Send>(
    ns: std::os::fd::BorrowedFd<'_>,
    f: impl FnOnce() -> T + Send,
) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("setns into the network namespace given", e))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::Other(
                "thread in a network namespace panicked".into(),
            ))
        })
    })
}

/// Runs `f` on a ckpt thread in a network namespace of its own, fresh (unshare(2) of
/// CLONE_NEWNET, which a thread may do alone), to see what a new namespace starts with.
pub fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::sys("unshare(CLONE_NEWNET)", e))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(Error::Other("thread in a fresh netns panicked".into())))
    })
}

/// Forks the root of a container: clone3 with `flags` (CLONE_NEWPID and the other
/// CLONE_NEW* the container owns), so the child is pid 1 of a fresh pid namespace, in
/// fresh namespaces of the other kinds; with `sibling`, the caller's sibling
/// (CLONE_PARENT, whose exit signal is the caller's own). The caller must be
/// single-threaded.
pub fn fork_container_root(flags: u64, sibling: bool) -> Result<Forked> {
    let (flags, exit_signal) = if sibling {
        (flags | libc::CLONE_PARENT as u64, 0)
    } else {
        (flags, libc::SIGCHLD as u64)
    };
    crate::process::fork3(flags | libc::CLONE_NEWPID as u64, exit_signal, &[]).map_err(|e| {
        Error::sys(
            format!("clone3 of a container's root (flags {flags:#x})"),
            e,
        )
    })
}

/// [`fork_container_root`], the root joining the network namespace `net` (an fd of one
/// made outside, e.g. by podman) rather than a fresh one: the calling thread enters it
/// for the clone and goes back to its own in the parent. (Joined from the child, a
/// namespace of the host's user namespace would be out of reach once the child is in a
/// user namespace of its own.)
pub fn fork_container_root_in(
    flags: u64,
    sibling: bool,
    net: std::os::fd::BorrowedFd<'_>,
) -> Result<Forked> {
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .map_err(|e| Error::io("/proc/thread-self/ns/net", e))?;
    nix::sched::setns(net, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
        Error::sys(
            format!(
                "setns into the network namespace given (fd {})",
                net.as_raw_fd()
            ),
            e,
        )
    })?;
    let forked = fork_container_root(flags & !(libc::CLONE_NEWNET as u64), sibling);
    if let Ok(Forked::Child) = forked {
        return forked;
    }
    nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| Error::sys("setns back to ckpt's network namespace", e))?;
    forked
}

/// In a fresh mount namespace: makes every mount private, so that nothing mounted in it
/// reaches the namespace it was copied from (nor the other way).
pub fn make_mounts_private() -> Result<()> {
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("mount --make-rprivate /", e))
}

/// sethostname(2) and setdomainname(2) of the caller's uts namespace.
pub fn set_names(hostname: &str, domainname: &str) -> Result<()> {
    nix::unistd::sethostname(hostname)
        .map_err(|e| Error::sys(format!("sethostname({hostname:?})"), e))?;
    // SAFETY: setdomainname reads `len` bytes from a valid buffer.
    let r = unsafe { libc::setdomainname(domainname.as_ptr().cast(), domainname.len()) };
    nix::errno::Errno::result(r)
        .map(drop)
        .map_err(|e| Error::sys(format!("setdomainname({domainname:?})"), e))
}

/// Runs `steps` (mounts, binds, remounts, detaches) in `pid`'s mount namespace as a
/// task of its pid namespace, from outside: proc shows the pid namespace of the task that
/// mounts it, so a child is forked into that pid namespace (setns of this thread's
/// pid_for_children, put back right after), joins the mount namespace (a fresh,
/// single-threaded process may) and makes the calls, whose strings were made before the
/// fork (the parent may be multi-threaded: the child allocates nothing). The child has a
/// pid of the namespace for as long as it takes and its parent is ckpt: the namespace's
/// init sees nothing of it. A failed step is reported on a pipe: its index and errno.
pub fn mount_inside(pid: Pid, steps: &[crate::mounts::Step]) -> Result<()> {
    let open = |what: String| std::fs::File::open(&what).map_err(|e| Error::io(&what, e));
    let own = open("/proc/thread-self/ns/pid_for_children".into())?;
    let their_pid = open(format!("/proc/{pid}/ns/pid"))?;
    let their_mnt = open(format!("/proc/{pid}/ns/mnt"))?;
    let (rd, wr) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::sys("pipe for the mounter", e))?;
    nix::sched::setns(&their_pid, nix::sched::CloneFlags::CLONE_NEWPID)
        .map_err(|e| Error::sys(format!("setns(/proc/{pid}/ns/pid)"), e))?;
    let forked = crate::process::fork3(0, libc::SIGCHLD as u64, &[]);
    if let Ok(Forked::Child) = forked {
        // Only raw calls from here: the parent may be multi-threaded.
        let failed = match nix::sched::setns(&their_mnt, nix::sched::CloneFlags::CLONE_NEWNS) {
            Err(e) => Some((u32::MAX, e as i32)),
            Ok(()) => steps
                .iter()
                .enumerate()
                .find_map(|(i, s)| s.run().err().map(|e| (i as u32, e as i32))),
        };
        if let Some((i, e)) = failed {
            let mut msg = [0u8; 8];
            msg[..4].copy_from_slice(&i.to_ne_bytes());
            msg[4..].copy_from_slice(&e.to_ne_bytes());
            let _ = nix::unistd::write(&wr, &msg);
            crate::process::exit_now(1)
        }
        crate::process::exit_now(0)
    }
    drop(wr);
    let back = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWPID);
    let child = match forked {
        Ok(Forked::Parent(c)) => c,
        Ok(Forked::Child) => unreachable!("the child exited above"),
        Err(e) => return Err(Error::sys("fork into the container's pid namespace", e)),
    };
    let mut msg = [0u8; 8];
    let got = loop {
        match nix::unistd::read(rd.as_raw_fd(), &mut msg) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.unwrap_or(0),
        }
    };
    let status = loop {
        match nix::sys::wait::waitpid(child, None) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other,
        }
    };
    back.map_err(|e| Error::sys("setns back to ckpt's pid namespace", e))?;
    if got == 8 {
        let i = u32::from_ne_bytes(msg[..4].try_into().unwrap_or_default());
        let e = nix::errno::Errno::from_raw(i32::from_ne_bytes(
            msg[4..].try_into().unwrap_or_default(),
        ));
        let what = match steps.get(i as usize) {
            Some(s) => format!("{} in the mount namespace of pid {pid}", s.what()),
            None => format!("joining the mount namespace of pid {pid}"),
        };
        return Err(Error::sys(what, e));
    }
    match status {
        Ok(nix::sys::wait::WaitStatus::Exited(_, 0)) => Ok(()),
        other => Err(Error::Other(format!(
            "mounter in the namespaces of pid {pid}: {other:?}"
        ))),
    }
}

/// The network interfaces of the calling thread's network namespace (getifaddrs(3),
/// netlink): (name, up, address if any), one entry per address.
pub fn interfaces() -> Result<Vec<(String, bool, Option<std::net::IpAddr>)>> {
    let all = nix::ifaddrs::getifaddrs().map_err(|e| Error::sys("getifaddrs", e))?;
    Ok(all
        .map(|i| {
            let up = i.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP);
            let addr = i.address.as_ref().and_then(|a| {
                a.as_sockaddr_in()
                    .map(|v4| std::net::IpAddr::V4(v4.ip()))
                    .or_else(|| a.as_sockaddr_in6().map(|v6| std::net::IpAddr::V6(v6.ip())))
            });
            (i.interface_name, up, addr)
        })
        .collect())
}

/// Brings `lo` of the caller's network namespace up (SIOCSIFFLAGS), which gives it
/// 127.0.0.1/8 and ::1 as in any fresh namespace.
pub fn loopback_up() -> Result<()> {
    use std::os::fd::AsRawFd;
    let sock = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| Error::sys("socket for SIOCSIFFLAGS", e))?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own; the flags union
    // member is the one these requests use.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(Error::sys("SIOCGIFFLAGS lo", nix::errno::Errno::last()));
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(Error::sys("SIOCSIFFLAGS lo up", nix::errno::Errno::last()));
        }
    }
    Ok(())
}

/// unshare(CLONE_NEWCGROUP): a cgroup namespace rooted at the caller's cgroups.
pub fn unshare_cgroupns() -> Result<()> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP)
        .map_err(|e| Error::sys("unshare(CLONE_NEWCGROUP)", e))
}

/// Puts the caller (single-threaded) into a fresh time namespace whose CLOCK_MONOTONIC
/// and CLOCK_BOOTTIME run `monotonic_ns` and `boottime_ns` ahead of the host's:
/// unshare(CLONE_NEWTIME) makes it the namespace of the caller's next children, its
/// offsets are written while no task is in it yet (time_namespaces(7): only then may
/// they be), and setns() to /proc/self/ns/time_for_children enters it.
pub fn enter_new_timens(monotonic_ns: i64, boottime_ns: i64) -> Result<()> {
    const NEWTIME: nix::sched::CloneFlags =
        nix::sched::CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
    nix::sched::unshare(NEWTIME).map_err(|e| Error::sys("unshare(CLONE_NEWTIME)", e))?;
    let line = |clock: &str, ns: i64| {
        format!(
            "{clock} {} {}\n",
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000)
        )
    };
    let text = line("monotonic", monotonic_ns) + &line("boottime", boottime_ns);
    let path = "/proc/self/timens_offsets";
    std::fs::write(path, &text).map_err(|e| Error::io(format!("{path} ({text:?})"), e))?;
    let path = "/proc/self/ns/time_for_children";
    let ns = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    nix::sched::setns(&ns, NEWTIME).map_err(|e| Error::sys(format!("setns({path})"), e))
}

/// The user namespace that owns `pid`'s namespace of `kind` (ioctl NS_GET_USERNS on
/// /proc/PID/ns/KIND), as `user:[INODE]` like the links read.
pub fn owner(pid: Pid, kind: &str) -> Result<String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let path = format!("/proc/{pid}/ns/{kind}");
    let ns = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
    // SAFETY: NS_GET_USERNS takes no argument and returns a new fd or -1.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    let fd = nix::errno::Errno::result(fd)
        .map_err(|e| Error::sys(format!("NS_GET_USERNS {path}"), e))?;
    // SAFETY: the kernel just returned this fd: it is open and ours alone.
    let owner = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let meta = owner
        .metadata()
        .map_err(|e| Error::io(format!("owner of {path}"), e))?;
    Ok(format!("user:[{}]", meta.ino()))
}

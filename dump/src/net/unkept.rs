//! Socket state that the kernel does not give back, or that a restored socket could not
//! take over, found at the dump and refused by name (the workload left running):
//! an eBPF filter; a listener's half-open connections; an upper layer protocol on TCP
//! (TCP_ULP: kernel TLS), TCP-AO and TCP-MD5 keys (set-only options: MD5 keys are seen
//! through sock_diag, AO ones through TCP_AO_INFO); a UDP datagram being corked.

use ckpt_sys::socket as s;
use ckpt_sys::Pid;
use std::collections::HashMap;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Refuses a socket whose filter was attached as eBPF (inet and unix sockets alike).
pub fn classic_filter_only(sock: BorrowedFd<'_>) -> Result<(), String> {
    match s::filter(sock) {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Some(nix::errno::Errno::EACCES) => Err(
            "a socket filter attached as eBPF (SO_ATTACH_BPF), which the kernel cannot give \
             back; only classic BPF filters are restored"
                .into(),
        ),
        Err(e) => Err(e.to_string()),
    }
}

/// How many connections the listening socket `sock` of `pid` has half open: asked in
/// the socket's network namespace (the holder's, in a container).
pub fn half_open(pid: Pid, sock: BorrowedFd<'_>, in_container: bool) -> Result<u32, String> {
    let local = s::local_addr(sock).map_err(|e| e.to_string())?;
    let requests = requests_of(pid, in_container)?;
    Ok(ckpt_sys::halfopen::count(&requests, local))
}

/// The pass the half-open table was read in: `new_pass` starts another (the check
/// before the seize, the frozen collection), so each pass asks each namespace once.
static PASS: AtomicU64 = AtomicU64::new(0);
type Cached = HashMap<u64, (u64, Arc<ckpt_sys::halfopen::Requests>)>;
static REQUESTS: Mutex<Option<Cached>> = Mutex::new(None);

/// The next looks at listeners read the kernel's half-open connections again.
pub fn new_pass() {
    PASS.fetch_add(1, Ordering::Relaxed);
    super::options::forget_defaults();
}

/// The half-open connections of the socket's network namespace (the holder's, in a
/// container), read once in this pass.
fn requests_of(pid: Pid, in_container: bool) -> Result<Arc<ckpt_sys::halfopen::Requests>, String> {
    use std::os::unix::fs::MetadataExt;
    let whose = if in_container {
        pid.to_string()
    } else {
        "self".into()
    };
    let path = format!("/proc/{whose}/ns/net");
    let ns = std::fs::metadata(&path)
        .map_err(|e| format!("{path}: {e}"))?
        .ino();
    let pass = PASS.load(Ordering::Relaxed);
    let mut cache = REQUESTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((p, r)) = cache.get_or_insert_with(HashMap::new).get(&ns) {
        if *p == pass {
            return Ok(r.clone());
        }
    }
    let r = Arc::new(in_socket_ns(
        pid,
        in_container,
        ckpt_sys::halfopen::requests,
    )?);
    cache
        .get_or_insert_with(HashMap::new)
        .insert(ns, (pass, r.clone()));
    Ok(r)
}

/// Runs `f` in the network namespace of the socket: the holder's, in a container.
fn in_socket_ns<T: Send>(
    pid: Pid,
    in_container: bool,
    f: impl FnOnce() -> ckpt_sys::Result<T> + Send,
) -> Result<T, String> {
    let r = if in_container {
        ckpt_sys::ns::in_namespace_of(pid, "net", f).and_then(|r| r)
    } else {
        f()
    };
    r.map_err(|e| e.to_string())
}

/// TCP socket `sock` (in `state`): no upper layer protocol, no TCP-AO or TCP-MD5 keys.
pub fn tcp(pid: Pid, sock: BorrowedFd<'_>, state: u8, in_container: bool) -> Result<(), String> {
    const TCP_ULP: i32 = 31;
    const TCP_AO_INFO: i32 = 40;
    if let Ok(name) = s::get_bytes(sock, s::SOL_TCP, TCP_ULP, 16) {
        let name = String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_string();
        if !name.is_empty() {
            return Err(format!(
                "a TCP socket with the upper layer protocol {name:?} (TCP_ULP; \"tls\" is \
                 kernel TLS), whose state the kernel does not give back"
            ));
        }
    }
    // struct tcp_ao_info_opt (48 bytes), all zero: a plain question. ENOENT: no keys.
    if s::get_bytes(sock, s::SOL_TCP, TCP_AO_INFO, 48).is_ok() {
        return Err(
            "a TCP socket with TCP-AO keys (TCP_AO_ADD_KEY), which are not \
                    dumped yet"
                .into(),
        );
    }
    let listening = state == s::TCP_LISTEN;
    if !listening && !s::tcp_connected(state) {
        // Not in the kernel's tables (unbound, or not listening yet): sock_diag does not
        // find it.
        return Ok(());
    }
    let local = s::local_addr(sock).map_err(|e| e.to_string())?;
    let peer = if listening {
        None
    } else {
        s::peer_addr(sock).map_err(|e| e.to_string())?
    };
    let md5 = in_socket_ns(pid, in_container, || {
        ckpt_sys::tcpdiag::md5_keys(sock, local, peer)
    })?;
    if md5 == Some(true) {
        return Err(
            "a TCP socket with TCP-MD5 keys (TCP_MD5SIG), which the kernel does not \
                    give back"
                .into(),
        );
    }
    Ok(())
}

/// UDP socket `sock`: no datagram being built (UDP_CORK, MSG_MORE), whose bytes wait in
/// the socket until the last part comes.
pub fn udp(sock: BorrowedFd<'_>) -> Result<(), String> {
    let pending = s::queued(sock, s::Queue::Out).map_err(|e| e.to_string())?;
    if pending > 0 {
        return Err(format!(
            "a UDP socket holding a datagram being built (UDP_CORK or MSG_MORE; {pending} \
             bytes of send buffer in use), not sent yet; not supported"
        ));
    }
    Ok(())
}

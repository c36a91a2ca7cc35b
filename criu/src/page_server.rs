//! CRIU's page server: `criu page-server -D DIR --port P [--address A]` on a destination
//! and `criu dump --page-server --address A --port P` (RPC: `ps`, what runc's `checkpoint
//! --page-server` sets) on the source. The dump sends its pages over TCP to the page
//! server, which writes them into its images directory; the rest of the image is written
//! locally. Copying one directory onto the other gives a complete image (`ckpt/` of each
//! merged), whose inventory checks the pages as if they had been written locally.
//!
//! Both ends are ckpt, so the wire format is ckpt's own (CRIU's page server protocol is
//! not spoken). One TCP connection carries one pages file:
//!
//! ```text
//! dump -> server   "CKPTPGS1"                    8 bytes
//!                  name length                   u16 LE, 1..=255
//!                  name                          `ckpt/pages-N.img`, N decimal
//!                  the file's bytes              until the dump shuts its side (SHUT_WR)
//! server -> dump   "CKPTPGOK" + u64 LE           bytes stored (written, fsynced, renamed
//!                                                into place, the directory fsynced)
//!               or "CKPTPGER" + u16 LE + text    why not
//! ```
//!
//! A dump that fails midway resets the connection (SO_LINGER 0): the server discards what
//! it received and fails. As CRIU's, the server serves one dump, then exits. Lazy pages
//! (`--lazy-pages`: the restore fetching pages from a page server) are not supported; a
//! page server together with a pre-dump or a previous image is not yet either (a chain's
//! earlier pages would be on the other host).

use crate::error::{invalid, unsupported, CriuError};
use crate::run::SUBDIR;
use ckpt_dump::page_sink::{PageSink, PagesLink};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const HELLO: &[u8; 8] = b"CKPTPGS1";
const OK: &[u8; 8] = b"CKPTPGOK";
const ERR: &[u8; 8] = b"CKPTPGER";
/// How long a dump waits to connect, and for the server's word once every byte was sent
/// (its fsync of a large file included).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REPLY_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server waits for a name once a dump connected.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);

/// The address of a page server from CRIU's address and port.
pub fn address(addr: Option<&str>, port: Option<i32>) -> Result<SocketAddr, CriuError> {
    let addr = addr.ok_or_else(|| invalid("page server: no address (--address)"))?;
    let port = port
        .filter(|p| (1..=65535).contains(p))
        .ok_or_else(|| invalid("page server: no port, or one out of 1-65535 (--port)"))?;
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| invalid(format!("page server: address {addr:?} is no IP address")))?;
    Ok(SocketAddr::new(ip, port as u16))
}

/// The dump's end: each pages file to the page server at `addr`.
pub fn send_pages_to(addr: Option<SocketAddr>) {
    let sink = addr.map(|addr| Arc::new(Remote { addr }) as Arc<dyn PageSink>);
    ckpt_dump::page_sink::set(sink);
}

struct Remote {
    addr: SocketAddr,
}

impl PageSink for Remote {
    fn open(&self, name: &str) -> Result<Box<dyn PagesLink>, String> {
        let at = |e: std::io::Error| format!("{}: {e}", self.addr);
        let stream = TcpStream::connect_timeout(&self.addr, CONNECT_TIMEOUT).map_err(at)?;
        let full = format!("{SUBDIR}/{name}");
        let mut head = HELLO.to_vec();
        head.extend_from_slice(&(full.len() as u16).to_le_bytes());
        head.extend_from_slice(full.as_bytes());
        (&stream).write_all(&head).map_err(at)?;
        tracing::info!(addr = %self.addr, name = %full, "pages go to the page server");
        Ok(Box::new(Link {
            stream,
            addr: self.addr,
            finished: false,
        }))
    }
}

struct Link {
    stream: TcpStream,
    addr: SocketAddr,
    finished: bool,
}

impl PagesLink for Link {
    fn file(&self) -> std::io::Result<File> {
        Ok(File::from(OwnedFd::from(self.stream.try_clone()?)))
    }

    fn finish(mut self: Box<Self>, size: u64) -> Result<(), String> {
        let addr = self.addr;
        let at = |e: std::io::Error| format!("{addr}: {e}");
        self.stream.shutdown(Shutdown::Write).map_err(at)?;
        self.stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(at)?;
        let mut tag = [0u8; 8];
        (&self.stream).read_exact(&mut tag).map_err(at)?;
        if &tag == OK {
            let mut n = [0u8; 8];
            (&self.stream).read_exact(&mut n).map_err(at)?;
            let stored = u64::from_le_bytes(n);
            if stored != size {
                return Err(format!("{addr} stored {stored} bytes of {size}"));
            }
            self.finished = true;
            return Ok(());
        }
        if &tag == ERR {
            let mut n = [0u8; 2];
            (&self.stream).read_exact(&mut n).map_err(at)?;
            let mut msg = vec![0u8; u16::from_le_bytes(n) as usize];
            (&self.stream).read_exact(&mut msg).map_err(at)?;
            return Err(format!("{addr}: {}", String::from_utf8_lossy(&msg)));
        }
        Err(format!("{addr} answered {tag:?}: no ckpt page server"))
    }
}

impl Drop for Link {
    /// An unfinished file: the connection is reset, not closed, so that the server does
    /// not take the part it received for the whole file.
    fn drop(&mut self) {
        if !self.finished {
            let reset = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            let _ = nix::sys::socket::setsockopt(
                &self.stream,
                nix::sys::socket::sockopt::Linger,
                &reset,
            );
        }
    }
}

/// `criu page-server`'s options.
#[derive(Debug)]
pub struct Serve {
    pub images: PathBuf,
    pub addr: SocketAddr,
    /// Return once listening, the server going on in the background (`-d`).
    pub daemon: bool,
    pub pidfile: Option<PathBuf>,
    /// The log options the background copy is given (`-o PATH`, `-vN`).
    pub log_args: Vec<String>,
}

/// Serves `s`: listens, then (`daemon`) hands the listening socket to a copy of ckpt in
/// the background and returns, or serves one dump here.
pub fn serve(s: &Serve) -> Result<(), CriuError> {
    let listener = TcpListener::bind(s.addr)
        .map_err(|e| invalid(format!("page server: listening on {}: {e}", s.addr)))?;
    tracing::info!(addr = %s.addr, dir = %s.images.display(), "page server listening");
    if !s.daemon {
        write_pidfile(s.pidfile.as_deref(), std::process::id())?;
        return serve_one(&s.images, &listener);
    }
    // The copy gets the listening socket as its stdin: listening is proven before this
    // returns, and no descriptor needs its close-on-exec flag cleared.
    let exe = std::env::current_exe().map_err(|e| invalid(format!("page server: {e}")))?;
    let child = std::process::Command::new(exe)
        .args(["criu", "page-server", "--serve-stdin", "-D"])
        .arg(&s.images)
        .args(&s.log_args)
        .stdin(std::process::Stdio::from(OwnedFd::from(listener)))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| invalid(format!("page server: starting it in the background: {e}")))?;
    write_pidfile(s.pidfile.as_deref(), child.id())
}

/// The daemon's side: the listening socket is stdin.
pub fn serve_stdin(images: &Path) -> Result<(), CriuError> {
    let fd = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| invalid(format!("page server: stdin: {e}")))?;
    serve_one(images, &TcpListener::from(fd))
}

fn write_pidfile(path: Option<&Path>, pid: u32) -> Result<(), CriuError> {
    match path {
        Some(p) => std::fs::write(p, format!("{pid}\n"))
            .map_err(|e| invalid(format!("pidfile {}: {e}", p.display()))),
        None => Ok(()),
    }
}

/// Accepts one dump and stores the file it sends.
fn serve_one(images: &Path, listener: &TcpListener) -> Result<(), CriuError> {
    let (mut stream, peer) = listener
        .accept()
        .map_err(|e| invalid(format!("page server: accept: {e}")))?;
    tracing::info!(%peer, "page server: a dump connected");
    match receive(images, &mut stream) {
        Ok(n) => {
            let mut answer = OK.to_vec();
            answer.extend_from_slice(&n.to_le_bytes());
            stream
                .write_all(&answer)
                .map_err(|e| invalid(format!("page server: answering {peer}: {e}")))?;
            tracing::info!(%peer, bytes = n, "page server: pages stored");
            Ok(())
        }
        Err(e) => {
            let msg = e.to_string();
            let msg = &msg.as_bytes()[..msg.len().min(4096)];
            let mut answer = ERR.to_vec();
            answer.extend_from_slice(&(msg.len() as u16).to_le_bytes());
            answer.extend_from_slice(msg);
            let _ = stream.write_all(&answer);
            Err(e)
        }
    }
}

/// The name a dump sends: `ckpt/pages-N.img` and nothing else (no other path is written).
fn checked_name(name: &str) -> Result<&str, CriuError> {
    let file = name
        .strip_prefix(SUBDIR)
        .and_then(|r| r.strip_prefix('/'))
        .filter(|f| {
            f.strip_prefix("pages-")
                .and_then(|r| r.strip_suffix(".img"))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        });
    file.ok_or_else(|| {
        unsupported(format!(
            "page server: file {name:?} refused (only {SUBDIR}/pages-N.img)"
        ))
    })
}

/// Reads one file from `stream` into `images/ckpt/`: written aside, fsynced and renamed
/// into place once the dump shut its side; discarded if the connection breaks.
fn receive(images: &Path, stream: &mut TcpStream) -> Result<u64, CriuError> {
    let io = |what: &str, e: std::io::Error| invalid(format!("page server: {what}: {e}"));
    stream
        .set_read_timeout(Some(HELLO_TIMEOUT))
        .map_err(|e| io("socket", e))?;
    let mut hello = [0u8; 10];
    stream
        .read_exact(&mut hello)
        .map_err(|e| io("reading the dump's name", e))?;
    if &hello[..8] != HELLO {
        return Err(invalid("page server: not a ckpt dump (no CKPTPGS1)"));
    }
    let len = u16::from_le_bytes([hello[8], hello[9]]) as usize;
    if len == 0 || len > 255 {
        return Err(invalid(format!("page server: a name of {len} bytes")));
    }
    let mut name = vec![0u8; len];
    stream
        .read_exact(&mut name)
        .map_err(|e| io("reading the dump's name", e))?;
    let name = String::from_utf8(name).map_err(|_| invalid("page server: a name not UTF-8"))?;
    let file = checked_name(&name)?;
    // The pages come while the dump copies memory: no time limit between them.
    stream.set_read_timeout(None).map_err(|e| io("socket", e))?;
    let dir = images.join(SUBDIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| io(&dir.display().to_string(), e))?;
    let part = dir.join(format!(".{file}.part"));
    let result = (|| {
        let mut out = File::create(&part).map_err(|e| io(&part.display().to_string(), e))?;
        let n = std::io::copy(stream, &mut out).map_err(|e| io("receiving pages", e))?;
        out.sync_all()
            .map_err(|e| io(&part.display().to_string(), e))?;
        std::fs::rename(&part, dir.join(file))
            .map_err(|e| io(&dir.join(file).display().to_string(), e))?;
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&dir.display().to_string(), e))?;
        Ok(n)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&part);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_pages_files_of_ckpts_subdirectory_are_taken() {
        assert_eq!(
            super::checked_name("ckpt/pages-1.img").unwrap(),
            "pages-1.img"
        );
        for bad in [
            "pages-1.img",
            "ckpt/../pages-1.img",
            "ckpt/pages-.img",
            "ckpt/pages-1.img/x",
            "/ckpt/pages-1.img",
            "ckpt/inventory.img",
            "ckpt/pages-1x.img",
        ] {
            assert!(super::checked_name(bad).is_err(), "{bad}");
        }
    }
}

//! The link between source and destination.
//!
//! First, in clear, each end sends `CKPTHAUL` and its protocol version (10 bytes) and
//! checks the other's: a peer of another version, or no ckpt at all, is told apart from a
//! wrong key. Then a Noise handshake, `Noise_NNpsk0_25519_AESGCM_BLAKE2s`, with the
//! key file's 32 bytes as the PSK and the hello as the prologue: the initiator's first
//! message is sealed with a key derived from the PSK (the responder learns that the
//! initiator holds it) and the responder's answer likewise (the initiator learns it back);
//! fresh ephemeral keys make every session's keys new. From then on every frame is a u32
//! length (at most 65535: Noise's own limit) and that many encrypted bytes, authenticated:
//! a flipped bit, a replayed or a reordered frame fails decryption and ends the session.
//! Every read and write must progress within the timeout, or the peer counts as gone.

use crate::error::{HaulError, R};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const MAGIC: &[u8; 8] = b"CKPTHAUL";
/// 2: the opening `Begin`/`Ready` exchange (`msg`); 3: post-copy; 4: growing files;
/// 5: keepalives; 6: post-copy chunk checksums computed by the source as it sends
/// (`CHUNK_SUM`), its frozen dump no longer reading the memory.
pub const VERSION: u16 = 6;
/// A message of this kind and no body says only that the sender is alive: the source
/// sends one every third of its timeout while it waits for a dump (a pre-dump of a big
/// tree may take longer than the destination's timeout) and `recv` drops them.
pub const ALIVE: u8 = 0x03;
const NOISE: &str = "Noise_NNpsk0_25519_AESGCM_BLAKE2s";
/// The largest frame, ciphertext and tag (Noise's limit).
pub const MAX_FRAME: usize = 65535;
const TAG: usize = 16;
/// The largest plaintext of a frame.
pub const MAX_PLAIN: usize = MAX_FRAME - TAG;

fn hello() -> [u8; 10] {
    let mut h = [0u8; 10];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&VERSION.to_be_bytes());
    h
}

/// Runs `fut`, or fails as stalled after `t`.
async fn within<T>(
    t: Duration,
    what: &str,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> R<T> {
    match tokio::time::timeout(t, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(HaulError::Protocol(
            format!("{what}: the peer closed the connection"),
        )),
        Ok(Err(e)) => Err(HaulError::io(what, e)),
        Err(_) => Err(HaulError::Stalled(what.into(), t.as_secs())),
    }
}

async fn exchange_hello(stream: &mut TcpStream, t: Duration) -> R<()> {
    within(t, "sending the hello", stream.write_all(&hello())).await?;
    let mut theirs = [0u8; 10];
    within(t, "reading the hello", stream.read_exact(&mut theirs)).await?;
    if &theirs[..8] != MAGIC {
        return Err(HaulError::Protocol(format!(
            "not a ckpt haul peer (first bytes {:02x?})",
            &theirs[..8]
        )));
    }
    let v = u16::from_be_bytes([theirs[8], theirs[9]]);
    if v != VERSION {
        return Err(HaulError::Protocol(format!(
            "the peer speaks haul protocol version {v}, this ckpt version {VERSION}"
        )));
    }
    Ok(())
}

/// The byte stream (buffered both ways: a frame's length and bytes go out in one write,
/// and reads take whatever the socket holds) with its frame buffers (reused for every
/// frame) and its timeout.
struct Framed {
    stream: tokio::io::BufStream<TcpStream>,
    timeout: Duration,
    cipher: Vec<u8>,
    plain: Vec<u8>,
}

impl Framed {
    async fn write_frame(&mut self, n: usize) -> R<()> {
        let len = (n as u32).to_be_bytes();
        let (stream, cipher) = (&mut self.stream, &self.cipher);
        within(self.timeout, "sending", async {
            stream.write_all(&len).await?;
            stream.write_all(&cipher[..n]).await?;
            stream.flush().await
        })
        .await
    }

    /// Reads one frame's ciphertext into `cipher`; a length over the limit ends the
    /// session before anything is read.
    async fn read_frame(&mut self) -> R<usize> {
        let mut len = [0u8; 4];
        within(self.timeout, "receiving", self.stream.read_exact(&mut len)).await?;
        let n = u32::from_be_bytes(len) as usize;
        if n == 0 || n > MAX_FRAME {
            return Err(HaulError::Protocol(format!(
                "a frame of {n} bytes (the limit is {MAX_FRAME}): garbage"
            )));
        }
        within(
            self.timeout,
            "receiving",
            self.stream.read_exact(&mut self.cipher[..n]),
        )
        .await?;
        Ok(n)
    }
}

/// An authenticated, encrypted session.
pub struct Link {
    io: Framed,
    noise: snow::TransportState,
    /// What the peer is, for messages.
    pub peer: String,
}

impl Link {
    /// The client's side: hello, then the handshake as initiator.
    pub async fn connect(stream: TcpStream, psk: &[u8; 32], timeout: Duration) -> R<Link> {
        Self::handshake(stream, psk, timeout, true).await
    }

    /// The server's side: hello, then the handshake as responder.
    pub async fn accept(stream: TcpStream, psk: &[u8; 32], timeout: Duration) -> R<Link> {
        Self::handshake(stream, psk, timeout, false).await
    }

    async fn handshake(
        mut stream: TcpStream,
        psk: &[u8; 32],
        timeout: Duration,
        initiator: bool,
    ) -> R<Link> {
        let peer = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "peer".into());
        stream.set_nodelay(true).ok();
        exchange_hello(&mut stream, timeout).await?;
        let prologue = hello();
        let bad = |e: snow::Error| HaulError::Handshake(format!("{e}"));
        let params: snow::params::NoiseParams = NOISE.parse().map_err(bad)?;
        let b = snow::Builder::new(params)
            .psk(0, psk)
            .and_then(|b| b.prologue(&prologue))
            .map_err(bad)?;
        let mut hs = if initiator {
            b.build_initiator()
        } else {
            b.build_responder()
        }
        .map_err(bad)?;
        let mut io = Framed {
            stream: tokio::io::BufStream::with_capacity(256 << 10, MAX_FRAME + 4, stream),
            timeout,
            cipher: vec![0; MAX_FRAME],
            plain: vec![0; MAX_FRAME],
        };
        if initiator {
            let n = hs.write_message(&[], &mut io.cipher).map_err(bad)?;
            io.write_frame(n).await?;
            // A responder that cannot open the first message (another key) hangs up.
            let n = io.read_frame().await.map_err(|e| match e {
                HaulError::Protocol(m) => HaulError::Handshake(m),
                e => e,
            })?;
            hs.read_message(&io.cipher[..n], &mut io.plain)
                .map_err(bad)?;
        } else {
            let n = io.read_frame().await?;
            hs.read_message(&io.cipher[..n], &mut io.plain)
                .map_err(bad)?;
            let n = hs.write_message(&[], &mut io.cipher).map_err(bad)?;
            io.write_frame(n).await?;
        }
        let noise = hs.into_transport_mode().map_err(bad)?;
        Ok(Link { io, noise, peer })
    }

    /// Sends one message: `kind`, then `body` (at most `MAX_PLAIN - 1` bytes).
    /// An interruption (SIGINT to `ckpt migrate`) is honoured here, between frames, so
    /// that the link stays whole for the abort message.
    pub async fn send(&mut self, kind: u8, body: &[u8]) -> R<()> {
        if let Some(e) = crate::error::interrupted() {
            return Err(e);
        }
        self.send_anyway(kind, body).await
    }

    /// `send`, also once interrupted: the last word (abort, commit).
    pub async fn send_anyway(&mut self, kind: u8, body: &[u8]) -> R<()> {
        if body.len() + 1 > MAX_PLAIN {
            return Err(HaulError::Protocol(format!(
                "a message of {} bytes is over the frame limit",
                body.len()
            )));
        }
        let io = &mut self.io;
        io.plain[0] = kind;
        io.plain[1..=body.len()].copy_from_slice(body);
        let n = self
            .noise
            .write_message(&io.plain[..=body.len()], &mut io.cipher)
            .map_err(|e| HaulError::Protocol(format!("encrypting: {e}")))?;
        io.write_frame(n).await
    }

    /// Receives one message: its kind and body (valid until the next call). Keepalives
    /// (`ALIVE`) are dropped here: each one restarts the wait.
    pub async fn recv(&mut self) -> R<(u8, &[u8])> {
        loop {
            let n = self.io.read_frame().await?;
            let io = &mut self.io;
            let m = self
                .noise
                .read_message(&io.cipher[..n], &mut io.plain)
                .map_err(|e| {
                    HaulError::Protocol(format!(
                        "a frame that does not decrypt ({e}): damaged or forged"
                    ))
                })?;
            if m == 0 {
                return Err(HaulError::Protocol("an empty message".into()));
            }
            if m == 1 && io.plain[0] == ALIVE {
                continue;
            }
            return Ok((self.io.plain[0], &self.io.plain[1..m]));
        }
    }

    /// Tells the peer this end is alive (see `ALIVE`).
    pub async fn alive(&mut self) -> R<()> {
        self.send(ALIVE, &[]).await
    }

    /// Waits, with no timeout and consuming nothing, until the peer sent something
    /// (true) or closed the link (false). Cancel-safe (what arrived stays buffered for
    /// `recv`): for waits that something else may end first.
    pub async fn peer_spoke(&mut self) -> R<bool> {
        use tokio::io::AsyncBufReadExt;
        let b = self
            .io
            .stream
            .fill_buf()
            .await
            .map_err(|e| HaulError::io("receiving", e))?;
        Ok(!b.is_empty())
    }

    /// Waits up to `t` (instead of the link's timeout) for the next message.
    pub async fn recv_within(&mut self, t: Duration) -> R<(u8, &[u8])> {
        let saved = self.io.timeout;
        self.io.timeout = t;
        let r = self.recv().await.map(|(k, b)| (k, b.len()));
        self.io.timeout = saved;
        let (k, len) = r?;
        Ok((k, &self.io.plain[1..=len]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's user and system CPU time, in seconds (/proc/self/stat, in ticks
    /// of 1/100 s).
    fn cpu_seconds() -> f64 {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
    }

    /// Encrypted throughput over loopback (run with --ignored --nocapture).
    #[test]
    #[ignore]
    fn loopback_throughput() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            let key = [7u8; 32];
            let t = Duration::from_secs(10);
            const N: usize = 32768;
            let server = tokio::spawn(async move {
                let (s, _) = l.accept().await.unwrap();
                let mut link = Link::accept(s, &key, t).await.unwrap();
                let mut got = 0;
                for _ in 0..N {
                    got += link.recv().await.unwrap().1.len();
                }
                got
            });
            let s = TcpStream::connect(addr).await.unwrap();
            let mut link = Link::connect(s, &key, t).await.unwrap();
            let buf = vec![0x5au8; MAX_PLAIN - 1];
            let cpu0 = cpu_seconds();
            let t0 = std::time::Instant::now();
            for _ in 0..N {
                link.send(0x11, &buf).await.unwrap();
            }
            let got = server.await.unwrap();
            let s = t0.elapsed().as_secs_f64();
            // On a loaded machine the wall clock says little: what both ends cost in CPU
            // time, and the rate that makes on two CPUs of their own.
            let cpu = cpu_seconds() - cpu0;
            eprintln!(
                "{} MB in {s:.3} s: {:.0} MB/s; {cpu:.2} CPU s in all: {:.0} MB/s on two idle CPUs",
                got / 1_000_000,
                got as f64 / 1e6 / s,
                got as f64 / 1e6 / (cpu / 2.0).max(s.min(cpu))
            );
        });
    }
}

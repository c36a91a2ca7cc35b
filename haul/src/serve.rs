//! `ckpt haul serve`: the destination.
//!
//! Each connection must first prove the key (`wire`, then an opening frame that decrypts:
//! a replayed handshake message gets no further), all within `HANDSHAKE_LIMIT`, with at
//! most `MAX_UNPROVEN` such connections at once; only then does it take a migration slot
//! (none free: "busy"). It is then a migration of its own, in a directory this side
//! creates and names (`m<server pid>-<seq>-<unix ms>` under `--dir`, mode 0700): the peer
//! only names files inside a round's directory, plain names checked by `msg`, created
//! new (never through a link, never over another file). Sizes are declared before the
//! bytes and held to, the total is capped, every file's xxh3 is checked on arrival, and
//! the restore (`ckpt restore --new-pidns`) verifies every image checksum again before it
//! creates anything. Memory per session is two frame buffers and one write buffer. A
//! peer that stalls, sends garbage or lies is dropped with one log line, its directory
//! removed.

use crate::error::{HaulError, R};
use crate::msg::{self, Msg};
use crate::wire::Link;
use std::hash::Hasher;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: String,
    pub dir: PathBuf,
    pub key_file: PathBuf,
    pub timeout: Duration,
    /// Migrations received at once; more are turned away.
    pub max_migrations: usize,
    /// Bytes one migration may send in all.
    pub max_bytes: u64,
    /// The ckpt binary that restores.
    pub ckpt: PathBuf,
}

/// Files in one round, at most.
const MAX_FILES: usize = 4096;
/// How long a connection may take to prove the key (handshake and opening frame).
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// Connections not past the handshake at once; more are turned away.
const MAX_UNPROVEN: usize = 16;

/// Serves until killed; `ready` hears the address once it listens.
pub fn serve(opts: &ServeOptions, ready: &dyn Fn(std::net::SocketAddr)) -> R<()> {
    let psk = crate::key::load(&opts.key_file)?;
    if !opts.dir.is_dir() {
        return Err(HaulError::Protocol(format!(
            "--dir {}: not a directory",
            opts.dir.display()
        )));
    }
    let _lock = crate::dirlock::take(&opts.dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HaulError::io("starting the runtime", e))?;
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&opts.listen)
            .await
            .map_err(|e| HaulError::io(format!("listening on {}", opts.listen), e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HaulError::io("local address", e))?;
        ready(addr);
        let slots = Arc::new(tokio::sync::Semaphore::new(opts.max_migrations));
        let unproven = Arc::new(tokio::sync::Semaphore::new(MAX_UNPROVEN));
        let seq = Arc::new(AtomicU64::new(0));
        let opts = Arc::new(opts.clone());
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(pass) = unproven.clone().try_acquire_owned() else {
                tracing::warn!(
                    "{peer}: turned away: {MAX_UNPROVEN} connections are proving the key already"
                );
                continue;
            };
            let (opts, seq, slots) = (opts.clone(), seq.clone(), slots.clone());
            tokio::spawn(async move {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = session(stream, &opts, &psk, n, pass, slots).await {
                    tracing::warn!("{peer}: dropped: {e}");
                }
            });
        }
    })
}

/// A migration's directory, removed when it ends (a restored tree no longer needs it).
struct MigrationDir(PathBuf);

impl Drop for MigrationDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The file being received.
struct Incoming {
    name: String,
    out: std::io::BufWriter<std::fs::File>,
    left: u64,
    hash: twox_hash::XxHash3_64,
}

impl Incoming {
    /// A new file `name` in the round's directory `rdir`, `left` bytes expected.
    fn create(rdir: &Path, name: String, left: u64) -> R<Incoming> {
        let f = open_new(&rdir.join(&name))?;
        Ok(Incoming {
            name,
            out: std::io::BufWriter::with_capacity(1 << 20, f),
            left,
            hash: twox_hash::XxHash3_64::new(),
        })
    }

    /// Every declared byte came and `xxh3` is theirs: written out.
    fn end(mut self, xxh3: u64) -> R<()> {
        if self.left != 0 {
            return Err(HaulError::Protocol(format!(
                "{}: {} bytes short of its declared size",
                self.name, self.left
            )));
        }
        if self.hash.finish() != xxh3 {
            return Err(HaulError::Protocol(format!(
                "{}: checksum mismatch on the wire",
                self.name
            )));
        }
        self.out
            .flush()
            .map_err(|e| HaulError::io(format!("writing {}", self.name), e))
    }
}

async fn session(
    stream: tokio::net::TcpStream,
    opts: &ServeOptions,
    psk: &[u8; 32],
    n: u64,
    pass: tokio::sync::OwnedSemaphorePermit,
    slots: Arc<tokio::sync::Semaphore>,
) -> R<()> {
    // One deadline for the whole proof: a peer that drips bytes holds a pass this long.
    let opened = tokio::time::timeout(HANDSHAKE_LIMIT, open(stream, psk, opts.timeout)).await;
    drop(pass);
    let mut link = opened.map_err(|_| {
        HaulError::Protocol(format!(
            "the key was not proven within {} s",
            HANDSHAKE_LIMIT.as_secs()
        ))
    })??;
    let Ok(_slot) = slots.try_acquire_owned() else {
        let why = format!("busy: {} migrations already running", opts.max_migrations);
        let (k, b) = Msg::Failed(why.clone()).encode();
        let _ = tokio::time::timeout(Duration::from_secs(1), link.send(k, &b)).await;
        return Err(HaulError::Protocol(format!("turned away: {why}")));
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // The server's pid in the name: another server on the same --dir never names the same.
    let name = format!("m{}-{n}-{stamp}", std::process::id());
    let path = opts.dir.join(&name);
    make_dir(&path)?;
    // Only now ours to remove (a directory that existed is someone else's).
    let dir = MigrationDir(path);
    tracing::info!(peer = %link.peer, migration = %name, "key proven, receiving");
    let (k, b) = Msg::Ready.encode();
    let r = match link.send(k, &b).await {
        Ok(()) => receive(&mut link, opts, &dir.0, &name).await,
        Err(e) => Err(e),
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) => {
            let (k, b) = Msg::Failed(format!("migration {name}: {e}")).encode();
            let _ = tokio::time::timeout(Duration::from_secs(1), link.send(k, &b)).await;
            Err(HaulError::Protocol(format!("migration {name}: {e}")))
        }
    }
}

/// The handshake, then the opening frame: the first that must decrypt (a replayed
/// handshake message passes the handshake, never this).
async fn open(stream: tokio::net::TcpStream, psk: &[u8; 32], timeout: Duration) -> R<Link> {
    let mut link = Link::accept(stream, psk, timeout).await?;
    let (k, b) = link.recv().await?;
    match Msg::decode(k, b)? {
        Msg::Begin => Ok(link),
        other => Err(HaulError::Protocol(format!(
            "opened with {other:?} instead of a beginning"
        ))),
    }
}

fn make_dir(p: &Path) -> R<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(p)
        .map_err(|e| HaulError::io(format!("{}", p.display()), e))
}

async fn receive(link: &mut Link, opts: &ServeOptions, dir: &Path, name: &str) -> R<()> {
    let mut round: u16 = 0;
    let mut files = 0usize;
    let mut total: u64 = 0;
    let mut file: Option<Incoming> = None;
    // The round's growing file (`msg`: GROW), open until GROWN.
    let mut growing: Option<Incoming> = None;
    let mut first_data = true;
    let mut unz = crate::squeeze::Unsqueezer::new();
    let mut deferred: Option<crate::postcopy::Deferred> = None;
    loop {
        let (kind, body) = link.recv().await?;
        if kind == msg::DATA || kind == msg::DATA_ZSTD {
            // Into the file begun, else into the growing file while it expects bytes.
            let piece = file.is_none();
            let f = file
                .as_mut()
                .or(growing.as_mut().filter(|g| g.left > 0))
                .ok_or_else(|| HaulError::Protocol("data outside a file: garbage".into()))?;
            let body = if kind == msg::DATA_ZSTD {
                unz.unpack(body, f.left)?
            } else {
                body
            };
            if body.len() as u64 > f.left {
                return Err(HaulError::Protocol(format!(
                    "{}: more bytes than its declared size",
                    f.name
                )));
            }
            f.left -= body.len() as u64;
            f.hash.write(body);
            f.out
                .write_all(body)
                .map_err(|e| HaulError::io(format!("writing {}", f.name), e))?;
            if f.left == 0 && piece {
                // A piece of the growing file is complete: on disk while the rest waits.
                f.out
                    .flush()
                    .map_err(|e| HaulError::io(format!("writing {}", f.name), e))?;
            }
            if first_data {
                first_data = false;
                crate::migrate::hold("haul-receiving");
            }
            continue;
        }
        match Msg::decode(kind, body)? {
            Msg::FileBegin {
                round: r,
                name: fname,
                size,
            } => {
                if file.is_some() || r != round || growing.as_ref().is_some_and(|g| g.left > 0) {
                    return Err(HaulError::Protocol(format!(
                        "file {fname} of round {r} out of order (round {round})"
                    )));
                }
                let path = admit(&mut files, &mut total, size, opts.max_bytes, dir, round)?;
                file = Some(Incoming::create(&path, fname, size)?);
            }
            Msg::Deferred {
                round: r,
                name: fname,
                size,
                chunk_size,
                head,
            } => {
                // Post-copy: the pages file comes after the copy runs (`postcopy`).
                let pages = ckpt_images::Kind::for_name(&fname) == Some(ckpt_images::Kind::Pages);
                if file.is_some() || r != round || deferred.is_some() || !pages {
                    return Err(HaulError::Protocol(format!(
                        "deferred file {fname} of round {r} out of order (round {round})"
                    )));
                }
                let path = admit(&mut files, &mut total, size, opts.max_bytes, dir, round)?;
                deferred = Some(crate::postcopy::Deferred::create(
                    &path.join(&fname),
                    size,
                    chunk_size,
                    &head,
                )?);
            }
            Msg::Grow {
                round: r,
                name: fname,
                more,
            } => {
                let busy = file.is_some() || growing.as_ref().is_some_and(|g| g.left > 0);
                let other = growing.as_ref().is_some_and(|g| g.name != fname);
                if busy || other || r != round {
                    return Err(HaulError::Protocol(format!(
                        "growing file {fname} of round {r} out of order (round {round})"
                    )));
                }
                match growing.as_mut() {
                    Some(g) => {
                        count(&mut total, more, opts.max_bytes, files)?;
                        g.left = more;
                    }
                    None => {
                        let path = admit(&mut files, &mut total, more, opts.max_bytes, dir, round)?;
                        growing = Some(Incoming::create(&path, fname, more)?);
                    }
                }
            }
            Msg::Grown { xxh3 } => {
                let f = growing.take().ok_or_else(|| {
                    HaulError::Protocol("the end of a growing file that is not there".into())
                })?;
                if file.is_some() {
                    return Err(HaulError::Protocol(format!(
                        "{} ended inside another file",
                        f.name
                    )));
                }
                f.end(xxh3)?;
            }
            Msg::FileEnd { xxh3 } => {
                file.take()
                    .ok_or_else(|| HaulError::Protocol("a file end outside a file".into()))?
                    .end(xxh3)?;
            }
            Msg::RoundEnd { round: r, last } => {
                if file.is_some() || growing.is_some() || r != round || files == 0 {
                    return Err(HaulError::Protocol(format!(
                        "round {r} ended out of order (round {round}, {files} files)"
                    )));
                }
                tracing::info!(migration = name, round, files, last, "round received");
                if last {
                    if let Some(d) = deferred.take() {
                        crate::migrate::hold("haul-received");
                        crate::chain::check(dir, round)?;
                        return crate::postcopy::finish(
                            link,
                            &opts.ckpt,
                            dir,
                            name,
                            round,
                            d,
                            opts.timeout,
                        )
                        .await;
                    }
                    return finish(link, opts, dir, name, round).await;
                }
                if deferred.is_some() {
                    return Err(HaulError::Protocol(
                        "a deferred file in a round that is not the last".into(),
                    ));
                }
                let (k, b) = Msg::Ack { round }.encode();
                link.send(k, &b).await?;
                round += 1;
                files = 0;
                if round >= msg::MAX_ROUNDS {
                    return Err(HaulError::Protocol(format!("more than {round} rounds")));
                }
            }
            Msg::Abort(why) => {
                return Err(HaulError::Protocol(format!("the source gave up: {why}")));
            }
            other => {
                return Err(HaulError::Protocol(format!(
                    "unexpected {other:?} while receiving"
                )))
            }
        }
    }
}

/// Counts one more file of `size` bytes of `round` against the limits; the round's
/// directory (made with its first file).
fn admit(
    files: &mut usize,
    total: &mut u64,
    size: u64,
    max_bytes: u64,
    dir: &Path,
    round: u16,
) -> R<PathBuf> {
    *files += 1;
    count(total, size, max_bytes, *files)?;
    let rdir = dir.join(format!("r{round}"));
    if *files == 1 {
        make_dir(&rdir)?;
    }
    Ok(rdir)
}

/// Counts `size` more bytes against the limit (`files` of the round so far).
fn count(total: &mut u64, size: u64, max_bytes: u64, files: usize) -> R<()> {
    *total = total.saturating_add(size);
    if files > MAX_FILES || *total > max_bytes {
        return Err(HaulError::Protocol(format!(
            "over the limits ({files} files, {total} bytes; at most {MAX_FILES} files a round, {max_bytes} bytes)"
        )));
    }
    Ok(())
}

/// Creates a file that did not exist, never through a symbolic link.
pub(crate) fn open_new(path: &Path) -> R<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(|e| HaulError::io(format!("{}", path.display()), e))
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Says on stdout that migration `name` runs as `pid`.
pub(crate) fn announce(name: &str, pid: i32) {
    // Not println!: a closed stdout must not end the session (it panics).
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "migration {name}: running as pid {pid}");
    let _ = out.flush();
}

/// Restores the last round, tells the source, waits for its commit.
async fn finish(link: &mut Link, opts: &ServeOptions, dir: &Path, name: &str, last: u16) -> R<()> {
    crate::migrate::hold("haul-received");
    crate::chain::check(dir, last)?;
    let crate::restore::Copy { pid, restore_ms } =
        crate::restore::restore(link, &opts.ckpt, dir, last).await?;
    tracing::warn!(migration = name, pid, restore_ms, "restored, running");
    announce(name, pid);
    let (k, b) = Msg::Running { pid, restore_ms }.encode();
    // From here the copy runs whatever the link does: a source that never hears of it
    // resumes its own tree (two copies run; the alternative, killing this one without
    // knowing, could leave none). Only an explicit abort says the source resumed.
    if let Err(e) = link.send(k, &b).await {
        tracing::warn!(
            migration = name,
            pid,
            "the source did not hear that the copy runs: {e}"
        );
        return Ok(());
    }
    match link.recv().await.and_then(|(k, b)| Msg::decode(k, b)) {
        Ok(Msg::Commit) => {
            tracing::info!(migration = name, pid, "committed: the source tree is gone")
        }
        Ok(Msg::Abort(why)) => {
            crate::restore::kill_copy(pid);
            return Err(HaulError::Protocol(format!(
                "the source resumed its tree ({why}): the copy (pid {pid}) is killed"
            )));
        }
        Ok(other) => tracing::warn!(
            migration = name,
            pid,
            "after the restore the source sent {other:?}"
        ),
        Err(e) => tracing::warn!(migration = name, pid, "no commit from the source: {e}"),
    }
    Ok(())
}

//! `ckpt migrate`: the source's side.
//!
//! Rounds are dumped into a fresh staging directory (in `/dev/shm` unless `--stage-dir`
//! names another place; mode 0700, removed at the end: by default the images never touch
//! a disk here) and streamed file by file; a pre-copy
//! round is a pre-dump (the tree runs on, its writes tracked), the final round a dump
//! that leaves the tree stopped. The destination restores the last round (following the
//! chain of the earlier ones) and answers with the copy's pid; only then is the tree
//! killed here. Any failure before — the link, the peer, the key, a checksum, the
//! destination's restore, SIGINT — lets the tree run on here as it was.

use crate::error::{HaulError, R};
use crate::msg::{self, Msg};
use crate::report::{Report, Round};
use crate::source::{Cmd, Reply, Source};
use crate::squeeze::{Packed, Squeezer};
use crate::wire::{Link, MAX_PLAIN};
use ckpt_dump::DumpStats;
use ckpt_images::units::ms;
use std::hash::Hasher;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct MigrateOptions {
    pub pid: i32,
    /// HOST:PORT of `ckpt haul serve`.
    pub to: String,
    pub key_file: PathBuf,
    /// Rounds of copying while the tree runs before the final, frozen one.
    pub pre_copy: bool,
    /// Resume at the destination before the memory is there (at once, or when pre-copy
    /// rounds do not converge) and send the pages after (`push`).
    pub post_copy: bool,
    /// Pre-copy goes on until the rest is expected to fit this.
    pub max_downtime_ms: u64,
    /// How long the link may make no progress.
    pub timeout: Duration,
    /// Where the rounds are staged (default: a fresh directory in /dev/shm).
    pub stage_dir: Option<PathBuf>,
    pub tcp_established: bool,
    /// zstd on the wire where it pays (`squeeze`).
    pub zstd: bool,
}

/// Most pre-copy rounds before the final one.
const MAX_PRE_ROUNDS: u16 = 8;
/// A round that is not below this share of the one before does not converge.
const SHRINK: f64 = 0.8;

/// Migrates, reporting each round to `progress` (one line each).
pub fn migrate(opts: &MigrateOptions, progress: &(dyn Fn(&str) + Sync)) -> R<Report> {
    let psk = crate::key::load(&opts.key_file)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| HaulError::io("starting the runtime", e))?;
    let stage = Stage::make(opts)?;
    rt.block_on(run(opts, &psk, &stage.dir, progress))
}

/// The staging directory: a fresh one this run makes (mode 0700, in `--stage-dir` or in
/// /dev/shm), removed whole whatever happens; nothing else in `--stage-dir` is touched.
struct Stage {
    dir: PathBuf,
}

impl Stage {
    fn make(opts: &MigrateOptions) -> R<Stage> {
        use std::os::unix::fs::DirBuilderExt;
        let base = match &opts.stage_dir {
            Some(d) => {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(d)
                    .map_err(|e| HaulError::io(format!("staging directory {}", d.display()), e))?;
                d.clone()
            }
            None => PathBuf::from("/dev/shm"),
        };
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "ckpt-haul-{}-{}-{stamp}",
            std::process::id(),
            opts.pid
        ));
        // Not recursive: a name that exists is not ours (EEXIST).
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| HaulError::io(format!("staging directory {}", dir.display()), e))?;
        Ok(Stage { dir })
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `fut` unless SIGINT/SIGTERM/SIGHUP arrives first. Only for waits (a dump, an
/// answer): a send is never cut in the middle of a frame (it checks by itself).
async fn guarded<T>(fut: impl std::future::Future<Output = R<T>>) -> R<T> {
    let abort = async {
        loop {
            if let Some(e) = crate::error::interrupted() {
                return e;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        r = fut => r,
        e = abort => Err(e),
    }
}

/// Blocks at a test hold point (`CKPT_TEST_HOLD`) without stalling the runtime.
pub(crate) fn hold(point: &str) {
    tokio::task::block_in_place(|| ckpt_sys::testhold::hold(point, &|| false));
}

async fn run(
    opts: &MigrateOptions,
    psk: &[u8; 32],
    stage: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> R<Report> {
    let t0 = Instant::now();
    let mut src = Source::start(opts.pid, opts.tcp_established);
    let mut link = None;
    let outcome = transfer(opts, psk, stage, &mut src, &mut link, progress).await;

    match outcome {
        Ok(mut report) => {
            src.ask(Cmd::Kill);
            let ended = ended(&mut src).await;
            if let Some(l) = link.as_mut() {
                let (k, b) = Msg::Commit.encode();
                let _ = l.send_anyway(k, &b).await;
            }
            match ended {
                Some(Reply::Ended(Ok(()))) => {}
                Some(Reply::Ended(Err(e))) => {
                    return Err(HaulError::Protocol(format!(
                        "the copy runs at {} as pid {}, but killing pid {} here failed: {e}",
                        opts.to, report.new_pid, opts.pid
                    )))
                }
                _ => {
                    return Err(HaulError::Protocol(format!(
                        "the copy runs at {} as pid {}, but the source thread of pid {} is gone",
                        opts.to, report.new_pid, opts.pid
                    )))
                }
            }
            report.total_ms = ms(t0);
            Ok(report)
        }
        Err(e) => {
            if let Some(l) = link.as_mut() {
                let (k, b) = Msg::Abort(e.to_string()).encode();
                let _ = tokio::time::timeout(Duration::from_secs(1), l.send_anyway(k, &b)).await;
            }
            src.ask(Cmd::Resume);
            let resumed = match ended(&mut src).await {
                Some(Reply::Ended(Err(r))) => format!("resuming the tree here failed too: {r}"),
                _ => "the tree runs on here as it was".to_string(),
            };
            Err(HaulError::Protocol(format!("{e}; {resumed}")))
        }
    }
}

/// What was sent of one round.
struct Sent {
    bytes: u64,
    /// What went over the link for the files' data (compressed where it paid).
    wire_bytes: u64,
    page_bytes: u64,
    /// Of `bytes`, those sent before the freeze (the final round's growing file).
    live_bytes: u64,
    ms: f64,
    /// Post-copy: the pages file not sent (name, size, chunk size).
    deferred: Option<(String, u64, u64)>,
}

impl Sent {
    /// The round's report, told to `progress` as it ends.
    fn round(
        &self,
        round: u16,
        kind: &'static str,
        dump_ms: f64,
        began: Instant,
        stats: &DumpStats,
        progress: &(dyn Fn(&str) + Sync),
    ) -> Round {
        let r = Round {
            round,
            kind,
            bytes: self.bytes,
            wire_bytes: self.wire_bytes,
            page_bytes: self.page_bytes,
            dump_ms,
            send_ms: self.ms,
            ms: ms(began),
            dirty_mb_s: None,
            est_send_ms: None,
            live_bytes: self.live_bytes,
        };
        progress(&round_line(&r, stats));
        r
    }
}

async fn transfer(
    opts: &MigrateOptions,
    psk: &[u8; 32],
    stage: &Path,
    src: &mut Source,
    link_slot: &mut Option<Link>,
    progress: &(dyn Fn(&str) + Sync),
) -> R<Report> {
    let t0 = Instant::now();
    let stream = guarded(async {
        tokio::time::timeout(
            opts.timeout,
            tokio::net::TcpStream::connect(opts.to.as_str()),
        )
        .await
        .map_err(|_| {
            HaulError::Stalled(format!("connecting to {}", opts.to), opts.timeout.as_secs())
        })?
        .map_err(|e| HaulError::io(format!("connecting to {}", opts.to), e))
    })
    .await?;
    let link = link_slot.insert(guarded(Link::connect(stream, psk, opts.timeout)).await?);
    // Nothing is stopped before the destination has a slot for this migration.
    let (k, b) = Msg::Begin.encode();
    link.send(k, &b).await?;
    guarded(expect_ready(link)).await?;
    let mut squeeze = Squeezer::new(opts.zstd);
    let mut rounds = Vec::new();
    let mut wire_bytes = 0u64;
    let mut sent_bytes = 0u64;
    let mut sent_ms = 0f64;
    let mut prev: Option<String> = None;
    let mut round: u16 = 0;
    let mut pre_copy_end = None;
    let mut mode = "stop-and-copy";
    // Without pre-copy, post-copy at once; with it, only if the rounds do not converge.
    let mut post = opts.post_copy && !opts.pre_copy;
    if opts.pre_copy {
        let mut last_pages: Option<u64> = None;
        let mut last_round_ms: Option<f64> = None;
        loop {
            let t = Instant::now();
            let dir = stage.join(format!("r{round}"));
            src.ask(Cmd::PreDump {
                dir: dir.clone(),
                prev: prev.clone(),
            });
            let stats = match guarded(dumped(src, link, opts.timeout)).await {
                Ok(s) => s,
                Err(e) if round == 0 => {
                    tracing::warn!("pre-copy is not possible here ({e}): stop-and-copy");
                    pre_copy_end = Some(format!("unavailable: {e}"));
                    break;
                }
                Err(e) => return Err(e),
            };
            let dump_ms = ms(t);
            let sent = send_round(link, &mut squeeze, &dir, round, false, false, None).await?;
            guarded(expect_ack(link, round)).await?;
            mode = "pre-copy";
            sent_bytes += sent.bytes;
            wire_bytes += sent.wire_bytes;
            sent_ms += sent.ms;
            rounds.push(sent.round(round, "pre-copy", dump_ms, t, &stats, progress));
            prev = Some(format!("../r{round}"));
            round += 1;
            // What the link carries per ms, and how much of the budget it may use (the
            // freeze and the restore take the rest).
            let per_ms = sent_bytes as f64 / sent_ms.max(0.1);
            let budget = per_ms * opts.max_downtime_ms as f64 / 2.0;
            if let Some(r) = rounds.last_mut() {
                // This round copied what the tree wrote during the one before.
                if let Some(before) = last_round_ms {
                    r.dirty_mb_s = Some(sent.page_bytes as f64 / 1e3 / before);
                }
                r.est_send_ms = Some(sent.page_bytes as f64 / per_ms);
                progress(&format!(
                    "  dirty rate {} MB/s, sending the same again would take {:.0} ms (budget {} ms)",
                    r.dirty_mb_s.map_or("-".into(), |d| format!("{d:.0}")),
                    sent.page_bytes as f64 / per_ms,
                    opts.max_downtime_ms
                ));
                last_round_ms = Some(r.ms);
            }
            if round > 1 && (sent.page_bytes as f64) <= budget {
                pre_copy_end = Some(format!(
                    "converged: the last round's {} KiB fit the budget",
                    sent.page_bytes >> 10
                ));
                break;
            }
            if let Some(l) = last_pages.filter(|&l| sent.page_bytes as f64 > l as f64 * SHRINK) {
                pre_copy_end = Some(format!(
                    "not converging: {} KiB after {} KiB; the tree writes faster than the link copies{}",
                    sent.page_bytes >> 10,
                    l >> 10,
                    if opts.post_copy { ": post-copy" } else { "" }
                ));
                post = opts.post_copy;
                break;
            }
            if round >= MAX_PRE_ROUNDS {
                pre_copy_end = Some(format!("{MAX_PRE_ROUNDS} rounds"));
                break;
            }
            last_pages = Some(sent.page_bytes);
        }
        if let Some(end) = &pre_copy_end {
            tracing::info!("pre-copy rounds end: {end}");
        }
    }

    // The final round: the tree stops here and stays stopped until the verdict.
    let t = Instant::now();
    let dir = stage.join(format!("r{round}"));
    // Post-copy of one process (what the lazy restore takes): its pages are not written
    // while it is frozen, only hashed; `push` reads them from the stopped tree.
    let unwritten = post && alone(opts.pid);
    src.ask(Cmd::Final {
        dir: dir.clone(),
        prev,
        post_copy: post,
        unwritten,
    });
    // Its copy before the freeze goes over the link pass by pass meanwhile.
    let mut growing = None;
    let stats = loop {
        match guarded(reply_alive(src, link, opts.timeout)).await? {
            Some(Reply::Live { path, len, sent }) => {
                let r =
                    crate::live::send(&mut growing, link, &mut squeeze, round, &path, len).await;
                let _ = sent.send(r.is_ok());
                r?;
            }
            Some(Reply::Dumped(r)) => break r?,
            _ => return Err(HaulError::Protocol("the source thread went away".into())),
        }
    };
    let dump_ms = ms(t);
    // From the seize: the dump's time before it is not downtime.
    let frozen_from = t + Duration::from_secs_f64(((dump_ms - stats.frozen_ms).max(0.0)) / 1e3);
    hold("haul-dumped");
    let post = post && deferrable(&dir, progress)?;
    if unwritten && !post {
        return Err(HaulError::Protocol(format!(
            "pid {} forked or is a container's root after all: its pages were left to be sent from memory, which post-copy of a tree cannot",
            opts.pid
        )));
    }
    let sent = send_round(link, &mut squeeze, &dir, round, true, post, growing).await?;
    sent_bytes += sent.bytes;
    wire_bytes += sent.wire_bytes;
    sent_ms += sent.ms;
    if let Some(d) = &sent.deferred {
        mode = if mode == "pre-copy" {
            "pre-copy, post-copy"
        } else {
            "post-copy"
        };
        let path = dir.join(&d.0);
        let pages = crate::push::Pages {
            path: &path,
            size: d.1,
            chunk_size: d.2,
            tree: if unwritten {
                Some(crate::push::TreePages::read(&dir, opts.pid)?)
            } else {
                None
            },
        };
        let t_push = Instant::now();
        let pushed = guarded(crate::push::push(
            link,
            &pages,
            msg::RESTORE_LIMIT + (opts.timeout * 2),
        ))
        .await
        .map_err(|e| {
            HaulError::Protocol(format!(
                "post-copy broke off ({e}): the copy at the destination cannot go on without \
                 its memory and is killed there; the tree here was held frozen and intact"
            ))
        })?;
        let downtime_ms = pushed
            .running_at
            .saturating_duration_since(frozen_from)
            .as_secs_f64()
            * 1e3;
        progress(&format!(
            "post-copy: running at the destination {downtime_ms:.0} ms after the freeze; its {:.1} MiB of memory followed in {:.0} ms ({} chunks asked for, {} before it ran){}",
            d.1 as f64 / (1 << 20) as f64,
            pushed.ms,
            pushed.asked,
            pushed.asked_before_running,
            if unwritten {
                ", read from the stopped process (never written here)"
            } else {
                ""
            }
        ));
        let push_ms = ms(t_push);
        sent_bytes += d.1;
        wire_bytes += d.1;
        sent_ms += push_ms;
        let mut r = sent.round(round, "final", dump_ms, t, &stats, progress);
        r.bytes += d.1;
        r.wire_bytes += d.1;
        r.page_bytes += d.1;
        r.send_ms += push_ms;
        rounds.push(r);
        return Ok(Report {
            pid: opts.pid,
            to: opts.to.clone(),
            mode,
            total_ms: ms(t0),
            downtime_ms,
            restore_ms: pushed.restore_ms as f64,
            bytes: sent_bytes,
            wire_bytes,
            send_mb_s: ((sent_bytes - sent.live_bytes) as f64 / 1e6) / (sent_ms.max(0.001) / 1e3),
            new_pid: pushed.pid,
            rounds,
            pre_copy_end,
            post_copy: Some(crate::report::PostCopy {
                ms: pushed.ms,
                page_bytes: d.1,
                asked: pushed.asked,
                asked_before_running: pushed.asked_before_running,
            }),
        });
    }
    // Longer than the destination's restore may take: giving up earlier would resume the
    // tree here while the copy may still start there (it would be killed on our abort,
    // but only if the link still carries it).
    let verdict_wait = msg::RESTORE_LIMIT + (opts.timeout * 2);
    let verdict = guarded(async {
        let (k, body) = link.recv_within(verdict_wait).await?;
        Msg::decode(k, body)
    })
    .await?;
    let (new_pid, restore_ms) = match verdict {
        Msg::Running { pid, restore_ms } => (pid, restore_ms),
        Msg::Failed(why) => return Err(HaulError::Destination(why)),
        other => {
            return Err(HaulError::Protocol(format!(
                "the destination answered {other:?} instead of a verdict"
            )))
        }
    };
    let downtime_ms = ms(frozen_from);
    rounds.push(sent.round(round, "final", dump_ms, t, &stats, progress));
    Ok(Report {
        pid: opts.pid,
        to: opts.to.clone(),
        mode,
        total_ms: ms(t0),
        downtime_ms,
        restore_ms: restore_ms as f64,
        bytes: sent_bytes,
        wire_bytes,
        send_mb_s: ((sent_bytes - sent.live_bytes) as f64 / 1e6) / (sent_ms.max(0.001) / 1e3),
        new_pid,
        rounds,
        pre_copy_end,
        post_copy: None,
    })
}

/// Whether the final image in `dir` can be restored lazily at the destination: one
/// process, not a container; else its pages go now (said in the log).
/// Whether `pid` looks like one process outside a container (no child in any of its
/// threads; not pid 1 of a pid namespace): what post-copy restores lazily. Looked at
/// before the final dump; `deferrable` says after it.
fn alone(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let ns_root = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .is_none_or(|p| p == "1");
    let childless = std::fs::read_dir(format!("/proc/{pid}/task")).is_ok_and(|d| {
        d.flatten().all(|t| {
            std::fs::read_to_string(t.path().join("children")).is_ok_and(|c| c.trim().is_empty())
        })
    });
    childless && !ns_root
}

fn deferrable(dir: &Path, progress: &(dyn Fn(&str) + Sync)) -> R<bool> {
    let d = ckpt_images::ImageDir::open_unverified(dir)?;
    let inv = d.inventory();
    let why = if inv.pids.len() != 1 {
        format!("a tree of {} processes", inv.pids.len())
    } else if inv.container.is_some() {
        "a container".to_string()
    } else {
        return Ok(true);
    };
    let line = format!(
        "post-copy: the lazy restore takes one process, this is {why}: its memory goes now"
    );
    tracing::warn!("{line}");
    progress(&line);
    Ok(false)
}

fn round_line(r: &Round, stats: &DumpStats) -> String {
    format!(
        "round {} ({}): {:.1} MiB ({:.1} MiB of pages) dumped in {:.0} ms (frozen {:.0} ms), sent in {:.0} ms",
        r.round,
        r.kind,
        r.bytes as f64 / (1 << 20) as f64,
        r.page_bytes as f64 / (1 << 20) as f64,
        r.dump_ms,
        stats.frozen_ms,
        r.send_ms
    )
}

/// The source thread's answer to the kill or the resume (a dump that an interruption
/// overtook answers first: skipped).
async fn ended(src: &mut Source) -> Option<Reply> {
    loop {
        match src.reply().await {
            // Unanswered, a pass waiting on it fails its dump.
            Some(Reply::Dumped(_) | Reply::Live { .. }) => continue,
            other => return other,
        }
    }
}

async fn dumped(src: &mut Source, link: &mut Link, timeout: Duration) -> R<DumpStats> {
    match reply_alive(src, link, timeout).await? {
        Some(Reply::Dumped(r)) => Ok(r?),
        _ => Err(HaulError::Protocol("the source thread went away".into())),
    }
}

/// The source thread's next reply; meanwhile a keepalive goes to the destination every
/// third of `timeout`, whose own timeout a long dump would otherwise run out.
async fn reply_alive(src: &mut Source, link: &mut Link, timeout: Duration) -> R<Option<Reply>> {
    let mut tick = tokio::time::interval((timeout / 3).max(Duration::from_millis(100)));
    tick.tick().await;
    loop {
        tokio::select! {
            r = src.reply() => return Ok(r),
            _ = tick.tick() => link.alive().await?,
        }
    }
}

async fn expect_ready(link: &mut Link) -> R<()> {
    let (k, body) = link.recv().await?;
    match Msg::decode(k, body)? {
        Msg::Ready => Ok(()),
        Msg::Failed(why) => Err(HaulError::Destination(why)),
        other => Err(HaulError::Protocol(format!(
            "the destination answered {other:?} to the beginning"
        ))),
    }
}

async fn expect_ack(link: &mut Link, round: u16) -> R<()> {
    let (k, body) = link.recv().await?;
    match Msg::decode(k, body)? {
        Msg::Ack { round: r } if r == round => Ok(()),
        Msg::Failed(why) => Err(HaulError::Destination(why)),
        other => Err(HaulError::Protocol(format!(
            "the destination answered {other:?} to round {round}"
        ))),
    }
}

/// Streams the files of the image in `dir` (those its inventory lists, then the
/// inventory), each with the xxh3 of its bytes, then the round's end.
/// `growing`: the file of the round sent while the dump wrote it (`live`), of which
/// only the rest goes now.
async fn send_round(
    link: &mut Link,
    squeeze: &mut Squeezer,
    dir: &Path,
    round: u16,
    last: bool,
    defer_pages: bool,
    mut growing: Option<crate::live::Growing>,
) -> R<Sent> {
    let t = Instant::now();
    let mut names: Vec<(String, u64)> = {
        let d = ckpt_images::ImageDir::open_unverified(dir)?;
        d.inventory()
            .files
            .iter()
            .map(|f| (f.name.clone(), f.chunk_size))
            .collect()
    };
    names.push((ckpt_images::names::INVENTORY.to_string(), 0));
    let mut deferred = None;
    let mut bytes = 0;
    let mut wire_bytes = 0;
    let mut page_bytes = 0;
    let mut first = true;
    let mut live_bytes = 0;
    for (name, chunk_size) in names {
        let path = dir.join(&name);
        if let Some(g) = growing.take_if(|g| g.name == name) {
            // Sent while the dump wrote it: only its rest now.
            live_bytes += g.sent;
            let (size, wire) = g.close(link, squeeze, round, &path).await?;
            wire_bytes += wire;
            bytes += size;
            page_bytes += size;
            continue;
        }
        let mut f = std::fs::File::open(&path)
            .map_err(|e| HaulError::io(format!("{}", path.display()), e))?;
        let size = f
            .metadata()
            .map_err(|e| HaulError::io(format!("{}", path.display()), e))?
            .len();
        let pages = ckpt_images::Kind::for_name(&name) == Some(ckpt_images::Kind::Pages);
        // Only pages-1.img: a pages-2.img (copied before the freeze) goes whole now.
        if defer_pages && pages && chunk_size > 0 && name == ckpt_images::names::pages(1) {
            // Post-copy: its bytes follow once the copy runs (`push`).
            let mut head = vec![0u8; (size as usize).min(ckpt_images::PAGE_SIZE)];
            f.read_exact(&mut head)
                .map_err(|e| HaulError::io(format!("{}", path.display()), e))?;
            let (k, b) = Msg::Deferred {
                round,
                name: name.clone(),
                size,
                chunk_size,
                head,
            }
            .encode();
            link.send(k, &b).await?;
            deferred = Some((name, size, chunk_size));
            continue;
        }
        let (k, b) = Msg::FileBegin {
            round,
            name: name.clone(),
            size,
        }
        .encode();
        link.send(k, &b).await?;
        let mut h = twox_hash::XxHash3_64::new();
        let mut first_frame = || {
            if first && last {
                first = false;
                hold("haul-sending");
            }
        };
        wire_bytes += send_data(
            link,
            squeeze,
            &mut f,
            &path.display().to_string(),
            size,
            &mut h,
            &mut first_frame,
        )
        .await?;
        let (k, b) = Msg::FileEnd { xxh3: h.finish() }.encode();
        link.send(k, &b).await?;
        bytes += size;
        if pages {
            page_bytes += size;
        }
    }
    if let Some(g) = growing {
        return Err(HaulError::Protocol(format!(
            "{} was sent before the freeze but is not in the final image",
            g.name
        )));
    }
    let (k, b) = Msg::RoundEnd { round, last }.encode();
    link.send(k, &b).await?;
    Ok(Sent {
        bytes,
        wire_bytes,
        page_bytes,
        live_bytes,
        ms: ms(t),
        deferred,
    })
}

/// Sends `n` bytes read from `f` (named `what` in errors) as data frames, zstd where it
/// pays, hashing them into `h`; `each` runs after every frame. Returns the bytes that
/// went over the link.
pub(crate) async fn send_data(
    link: &mut Link,
    squeeze: &mut Squeezer,
    f: &mut impl Read,
    what: &str,
    n: u64,
    h: &mut twox_hash::XxHash3_64,
    each: &mut (dyn FnMut() + Send),
) -> R<u64> {
    let mut buf = vec![0u8; MAX_PLAIN - 1];
    let mut wire = 0;
    let mut left = n;
    while left > 0 {
        let want = (left as usize).min(buf.len());
        f.read_exact(&mut buf[..want])
            .map_err(|e| HaulError::io(what.to_string(), e))?;
        h.write(&buf[..want]);
        let (kind, data) = match squeeze.pack(&buf[..want]) {
            Packed::Raw(d) => (msg::DATA, d),
            Packed::Zstd(d) => (msg::DATA_ZSTD, d),
        };
        wire += data.len() as u64;
        link.send(kind, data).await?;
        left -= want as u64;
        each();
    }
    Ok(wire)
}

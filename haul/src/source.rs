//! The source's dumps run on a thread of their own: the tree is ptrace-stopped by the
//! thread that seized it, and only that thread can let it go or kill it. The migration
//! asks for rounds and, at the end, for the kill or the resume; if it goes away (any
//! error, a panic), the thread's channel closes and the held tree is resumed.

use ckpt_dump::{DumpError, DumpOptions, DumpStats, Held};
use std::path::PathBuf;
use std::sync::mpsc;
use tokio::sync::mpsc as amp;

pub enum Cmd {
    /// A pre-copy round: copy while the tree runs, tracking writes from here on.
    PreDump { dir: PathBuf, prev: Option<String> },
    /// The final round: the tree stays stopped (held). `post_copy`: its pages file in
    /// small checksum chunks (`POST_COPY_CHUNK`), fetched one at a time as the copy asks.
    /// `unwritten`: that file's pages hashed but left unwritten (`push` sends them from
    /// the stopped tree).
    Final {
        dir: PathBuf,
        prev: Option<String>,
        post_copy: bool,
        unwritten: bool,
    },
    /// The copy runs at the destination: kill the held tree.
    Kill,
    /// Anything failed: let the held tree run on.
    Resume,
}

/// The pages file's checksum chunk in a post-copy final round: what the copy waits for
/// at a fault it cannot be served locally (16 MiB, the default, took ~60 ms here).
pub const POST_COPY_CHUNK: u64 = 1 << 20;

pub enum Reply {
    Dumped(Result<DumpStats, DumpError>),
    Ended(Result<(), DumpError>),
    /// The final round's copy before the freeze wrote the first `len` bytes of the
    /// pages file at `path`; its pass waits for the answer on `sent` (true: they went
    /// over the link). Dropping it unanswered fails the dump, the tree left running.
    Live {
        path: PathBuf,
        len: u64,
        sent: mpsc::SyncSender<bool>,
    },
}

/// Hands the final round's copy before the freeze to the migration, pass by pass, and
/// waits until it is sent: after the freeze only what the last pass missed is left.
/// The channel, and whether the frozen copy's pages are left unwritten.
struct ToLink<'a>(&'a amp::UnboundedSender<Reply>, bool);

impl ckpt_dump::LiveSink for ToLink<'_> {
    fn written(&self, path: &std::path::Path, len: u64) -> Result<(), DumpError> {
        let (sent, answer) = mpsc::sync_channel(1);
        let gone = || DumpError::Lost("the migration stopped sending the copy".into());
        self.0
            .send(Reply::Live {
                path: path.to_path_buf(),
                len,
                sent,
            })
            .map_err(|_| gone())?;
        match answer.recv() {
            Ok(true) => Ok(()),
            _ => Err(gone()),
        }
    }

    fn pages_unwritten(&self) -> bool {
        self.1
    }
}

pub struct Source {
    cmds: mpsc::Sender<Cmd>,
    pub replies: amp::UnboundedReceiver<Reply>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Source {
    pub fn start(pid: i32, tcp_established: bool) -> Source {
        let (cmds, rx) = mpsc::channel();
        let (tx, replies) = amp::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("ckpt-source".into())
            .spawn(move || run(pid, tcp_established, rx, tx))
            .expect("spawn the source thread");
        Source {
            cmds,
            replies,
            thread: Some(thread),
        }
    }

    pub fn ask(&self, c: Cmd) {
        // The thread only stops once told to end: a send cannot fail before.
        let _ = self.cmds.send(c);
    }

    pub async fn reply(&mut self) -> Option<Reply> {
        self.replies.recv().await
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // Closing the channel makes the thread resume a tree it still holds.
        let (dead, _) = mpsc::channel();
        self.cmds = dead;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn options(pid: i32, tcp_established: bool, dir: PathBuf, prev: Option<String>) -> DumpOptions {
    DumpOptions {
        pid,
        dir,
        leave_running: false,
        compress: None,
        sync: false,
        allow_unknown_state: Vec::new(),
        freeze_cgroup: None,
        pre_dump: false,
        prev_images_dir: prev,
        track_mem: false,
        tcp_established,
        shell_job: false,
        orphan_pts_master: false,
        pages_chunk: None,
        external: Vec::new(),
    }
}

fn run(
    pid: i32,
    tcp_established: bool,
    cmds: mpsc::Receiver<Cmd>,
    replies: amp::UnboundedSender<Reply>,
) {
    let quiet = ckpt_images::progress::Quiet;
    let mut held: Option<Held> = None;
    while let Ok(c) = cmds.recv() {
        match c {
            Cmd::PreDump { dir, prev } => {
                let mut o = options(pid, tcp_established, dir, prev);
                o.pre_dump = true;
                o.leave_running = true;
                let _ = replies.send(Reply::Dumped(ckpt_dump::dump_with_progress(&o, &quiet)));
            }
            Cmd::Final {
                dir,
                prev,
                post_copy,
                unwritten,
            } => {
                let mut o = options(pid, tcp_established, dir, prev);
                if post_copy {
                    o.pages_chunk = Some(POST_COPY_CHUNK);
                }
                let live = ToLink(&replies, unwritten);
                let r = ckpt_dump::dump_held(&o, &quiet, Some(&live)).map(|(stats, h)| {
                    held = Some(h);
                    stats
                });
                let _ = replies.send(Reply::Dumped(r));
            }
            Cmd::Kill => {
                let r = held.take().map_or(Ok(()), Held::kill);
                let _ = replies.send(Reply::Ended(r));
                return;
            }
            Cmd::Resume => {
                let r = held.take().map_or(Ok(()), Held::resume);
                let _ = replies.send(Reply::Ended(r));
                return;
            }
        }
    }
    // The migration went away: `held`, dropped here, resumes the tree.
}

//! `ckpt haul serve` and `ckpt migrate`: the CLI's side of the haul crate.

use anyhow::{Context, Result};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum HaulCmd {
    /// Receive migrations (`ckpt migrate ... --to` this address) and restore them here,
    /// each in a fresh pid namespace. Prints `listening on ADDR` once it accepts.
    ///
    /// Whoever holds the key can make this host restore any image they like, as the user
    /// serve runs as (root): guard the key file as you would root's password.
    Serve {
        /// Address to listen on (port 0: any free port, printed).
        #[arg(long, value_name = "ADDR")]
        listen: String,
        /// Directory for the incoming images (one subdirectory per migration, removed
        /// once it ends).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The pre-shared key (32 bytes, or 64 hex digits): peers must prove they hold it.
        /// Holding it is as good as root here (it restores any image).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
        /// Seconds a peer may make no progress before it is dropped.
        #[arg(long, default_value_t = 30, value_name = "S")]
        timeout: u64,
        /// Migrations received at once.
        #[arg(long, default_value_t = 4)]
        max_migrations: usize,
        /// GiB one migration may send.
        #[arg(long, default_value_t = 256, value_name = "GIB")]
        max_gib: u64,
    },
}

pub fn serve(cmd: HaulCmd) -> Result<i32> {
    let HaulCmd::Serve {
        listen,
        dir,
        key_file,
        timeout,
        max_migrations,
        max_gib,
    } = cmd;
    let opts = ckpt_haul::ServeOptions {
        listen,
        dir,
        key_file,
        timeout: Duration::from_secs(timeout.max(1)),
        max_migrations: max_migrations.max(1),
        max_bytes: max_gib.saturating_mul(1 << 30),
        ckpt: std::env::current_exe().context("finding ckpt's own binary")?,
    };
    ckpt_haul::serve(&opts, &|addr| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on {addr}");
        let _ = out.flush();
    })
    .context("haul serve")?;
    Ok(0)
}

#[derive(clap::Args)]
pub struct MigrateArgs {
    /// Pid of the tree's root.
    #[arg(short = 't', long = "tree")]
    pid: i32,
    /// HOST:PORT of `ckpt haul serve` at the destination.
    #[arg(long, value_name = "HOST:PORT")]
    to: String,
    /// The pre-shared key (the same file as the destination's).
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// Copy the memory in rounds while the tree runs, then freeze it for the rest only.
    #[arg(long)]
    pre_copy: bool,
    /// Resume the tree at the destination before its memory is there and send the
    /// pages after, those it touches first (at once; with --pre-copy only when the
    /// rounds do not converge). One process, not a container.
    #[arg(long)]
    post_copy: bool,
    /// Downtime budget for --pre-copy: rounds go on until the rest fits it.
    #[arg(long, default_value_t = 300, value_name = "MS")]
    max_downtime: u64,
    /// Seconds the link may make no progress before the migration gives up.
    #[arg(long, default_value_t = 30, value_name = "S")]
    timeout: u64,
    /// Stage the rounds' images in a fresh subdirectory of DIR made by this run and
    /// removed at its end, nothing else in DIR touched (default: in /dev/shm).
    #[arg(long, value_name = "DIR")]
    stage_dir: Option<PathBuf>,
    /// Take established TCP connections along (as `dump --tcp-established`).
    #[arg(long)]
    tcp_established: bool,
    /// Send every chunk raw (by default a chunk goes zstd-compressed when that saves an
    /// eighth of it).
    #[arg(long)]
    no_zstd: bool,
    /// Print the report as JSON (total time, downtime, bytes and time per round).
    #[arg(long)]
    json: bool,
}

pub fn migrate(a: MigrateArgs) -> Result<i32> {
    let opts = ckpt_haul::MigrateOptions {
        pid: a.pid,
        to: a.to.clone(),
        key_file: a.key_file,
        pre_copy: a.pre_copy,
        post_copy: a.post_copy,
        max_downtime_ms: a.max_downtime,
        timeout: Duration::from_secs(a.timeout.max(1)),
        stage_dir: a.stage_dir,
        tcp_established: a.tcp_established,
        zstd: !a.no_zstd,
    };
    // SIGINT/SIGTERM/SIGHUP: the migration gives up, the tree runs on here.
    let _armed = ckpt_sys::abort::arm().context("signal handlers")?;
    let tty = std::io::stderr().is_terminal();
    let report = ckpt_haul::migrate(&opts, &|line| {
        if tty {
            eprintln!("{line}");
        } else {
            tracing::info!("{line}");
        }
    })
    .with_context(|| format!("migration of pid {} to {}", a.pid, a.to))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(0)
}

//! `ckpt`: argument parsing and wiring only; the work is in the crates.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Checkpoint and restore Linux processes",
    long_about = "ckpt freezes a process, writes everything that makes it alive into image \
                  files, and rebuilds it later from them, with the same pid, memory, registers \
                  and open files."
)]
struct Cli {
    /// More logging on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Checkpoint a process into an image directory (the process is killed afterwards
    /// unless --leave-running).
    Dump {
        /// Pid of the process to checkpoint.
        #[arg(short = 't', long = "tree")]
        pid: i32,
        /// Image directory (created 0700 if missing).
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// Leave the process running after the dump.
        #[arg(long)]
        leave_running: bool,
    },
    /// Restore a process from an image directory.
    Restore {
        /// Image directory.
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
        /// Return once the process runs, instead of waiting for it to exit.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Write the restored pid into this file.
        #[arg(long)]
        pidfile: Option<PathBuf>,
    },
    /// Decode every image of a directory to JSON.
    Show {
        /// Image directory.
        #[arg(short = 'D', long = "images-dir")]
        dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            // One line: every cause, outermost first.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("ckpt: error: {}", msg.join(": "));
            std::process::exit(1);
        }
    }
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Dump {
            pid,
            dir,
            leave_running,
        } => {
            let opts = ckpt_dump::DumpOptions {
                pid,
                dir: dir.clone(),
                leave_running,
            };
            let stats = ckpt_dump::dump(&opts)
                .with_context(|| format!("dump of pid {pid} into {}", dir.display()))?;
            tracing::info!(?stats, "dump done");
            Ok(0)
        }
        Cmd::Restore {
            dir,
            detach,
            pidfile,
        } => {
            let opts = ckpt_restore::RestoreOptions {
                dir: dir.clone(),
                detach,
                pidfile,
            };
            let outcome = ckpt_restore::restore(&opts)
                .with_context(|| format!("restore from {}", dir.display()))?;
            Ok(match outcome {
                ckpt_restore::Outcome::Detached(_) => 0,
                ckpt_restore::Outcome::Exited(code) => code,
                ckpt_restore::Outcome::Killed(sig) => 128 + sig,
            })
        }
        Cmd::Show { dir } => {
            let d = ckpt_images::ImageDir::open_unverified(&dir)
                .with_context(|| format!("show {}", dir.display()))?;
            let v = ckpt_images::show::to_json(&d)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(0)
        }
    }
}

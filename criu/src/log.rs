//! CRIU's log file: where ckpt's events go when it stands in for CRIU, and where a failure
//! is written on a line starting `Error`, which is what runc, podman and LXC point their
//! users at ("log file: .../dump.log") and what scripts grep for.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// CRIU's -v levels (0 messages only .. 4 debug) as a tracing filter.
fn filter(level: i32) -> &'static str {
    match level {
        i32::MIN..=1 => "error",
        2 => "warn",
        3 => "info",
        _ => "debug",
    }
}

/// Sends ckpt's events to `path` (appended) at CRIU's level; without a path, to stderr
/// unless `quiet` (RPC mode: stderr is the restored tree's). Once per process.
pub fn init(path: Option<&Path>, level: i32, quiet: bool) -> Result<(), String> {
    let _ = DEST.set((path.map(Path::to_path_buf), quiet));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter(level)))
        .with_target(false)
        .with_ansi(false);
    let done = match path {
        Some(p) => {
            let f = open(p)?;
            builder.with_writer(std::sync::Mutex::new(f)).try_init()
        }
        None if quiet => return Ok(()),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    done.map_err(|e| e.to_string())
}

fn open(p: &Path) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| format!("log file {}: {e}", p.display()))
}

/// Where [`init`] sent the log: its file, and whether stderr is left alone without one.
static DEST: OnceLock<(Option<PathBuf>, bool)> = OnceLock::new();

/// Lines CRIU prints whatever the level (its pr_msg: `--display-stats`), to the log file,
/// or to stderr when there is none and stderr is ours.
pub fn message(text: &str) {
    match DEST.get() {
        Some((Some(p), _)) => {
            if let Ok(mut f) = open(p) {
                let _ = f.write_all(text.as_bytes());
            }
        }
        Some((None, true)) => {}
        _ => eprint!("{text}"),
    }
}

/// The failure, on its own `Error (ckpt): ...` line of the log file.
pub fn error_line(path: Option<&Path>, msg: &str) {
    if let Some(p) = path {
        if let Ok(mut f) = open(p) {
            let _ = writeln!(f, "Error (ckpt): {msg}");
        }
    }
}

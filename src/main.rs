//! `ckpt`: argument parsing and wiring only; the work is in the crates.

mod check;
mod completions;
mod haul;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
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
    /// Write the log to this file instead of stderr (appended).
    #[arg(long, global = true, value_name = "FILE")]
    log_file: Option<PathBuf>,
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
        /// Compress the memory pages with zstd (smaller images, slower dump).
        #[arg(long)]
        compress: bool,
        /// zstd level for --compress (1 fastest .. 19 smallest).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=19))]
        compress_level: i32,
        /// Return only once the images are on disk (fsync). A dump that replaces an older
        /// image always makes the new one durable before removing the old one.
        #[arg(long)]
        sync: bool,
        /// Accept losing a piece of kernel state this ckpt does not know (a VmFlags letter
        /// or /proc/PID/status field of a newer kernel, as the refusal names it); may be
        /// given several times.
        #[arg(long = "allow-unknown-state", value_name = "NAME")]
        allow_unknown_state: Vec<String>,
        /// Freeze this cgroup (v2: its cgroup.freeze; a v1 freezer: its freezer.state)
        /// while the tree is seized, so that nothing in it forks or exits meanwhile; the
        /// tree's root must be in it.
        #[arg(long = "freeze-cgroup", value_name = "PATH")]
        freeze_cgroup: Option<PathBuf>,
        /// Copy the memory while the tree runs (stopped only to read its state and arm
        /// write tracking), and leave it running: the base of a later dump with
        /// --prev-images-dir. Not restorable itself.
        #[arg(long, conflicts_with_all = ["compress"])]
        pre_dump: bool,
        /// The previous image of a chain (a pre-dump, or a dump with --track-mem),
        /// relative to the images dir unless absolute: only the pages written since are
        /// copied, the image refers to that one for the rest.
        #[arg(long, value_name = "DIR", conflicts_with = "compress")]
        prev_images_dir: Option<String>,
        /// Arm write tracking and leave it armed (the tree keeps running), so that the next
        /// dump with --prev-images-dir pointing here writes only what changed.
        #[arg(long, conflicts_with = "compress")]
        track_mem: bool,
        /// Take established TCP connections along (TCP_REPAIR). Their packets are dropped
        /// by an nftables table (`ckpt_lock_PID`) from the dump until the restore removes
        /// it, so the peer sees a pause, never a reset.
        #[arg(long)]
        tcp_established: bool,
        /// The tree is a job started from a shell: its terminal (a pty whose master is
        /// outside the tree, its controlling terminal) is recorded as the job's terminal,
        /// to be attached at restore to the terminal `ckpt restore --shell-job` runs in.
        /// CRIU's spelling.
        #[arg(short = 'j', long)]
        shell_job: bool,
        /// A container's console (a pty of its own devpts whose master its engine holds,
        /// runc's `terminal: true`) is recorded; the restore makes a new pair and hands
        /// the master over (`restore --console-socket`). CRIU's spelling.
        #[arg(long)]
        orphan_pts_master: bool,
        /// A container's network namespace made outside it (podman's CNI, a netns path
        /// in runc's config), by inode: recorded as KEY, not by its contents; the restore
        /// joins the namespace `--inherit-fd fd[N]:KEY` gives. CRIU's spelling.
        #[arg(long, value_name = "net[INODE]:KEY")]
        external: Vec<String>,
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
        /// Run the process at once and bring its anonymous memory in through
        /// userfaultfd while it runs (a pager keeps serving after `-d` returns).
        #[arg(long)]
        lazy: bool,
        /// Skip the check that the restored process's kernel-visible state (mappings and
        /// their flags, status, limits, fds, locks, timers) matches the image before it
        /// is let go.
        #[arg(long)]
        no_verify: bool,
        /// Use ckpt's open fd N for the object KEY that the dumped tree shared with
        /// the outside (a pipe from the shell that started it: the restore names the
        /// KEY, e.g. `pipe:[1234]`, when it needs one). CRIU's spelling; repeatable.
        #[arg(long = "inherit-fd", value_name = "fd[N]:KEY", value_parser = parse_inherit_fd)]
        inherit_fd: Vec<(i32, String)>,
        /// Restore into a fresh pid namespace, under a minimal init of ckpt's: the
        /// processes keep their dumped pids inside it (so the image restores even while
        /// those pids are taken here); the pidfile gets the root's pid outside it.
        #[arg(long)]
        new_pidns: bool,
        /// A container's external mount KEY (the host path it was bound from, as the
        /// image names it) is found at PATH here; by default at KEY itself. CRIU's
        /// spelling; repeatable.
        #[arg(long = "ext-mount-map", value_name = "KEY:PATH", value_parser = parse_ext_mount)]
        ext_mount_map: Vec<(String, String)>,
        /// A job dumped with --shell-job: attach it to the terminal ckpt runs in (its
        /// stdin, which must be ckpt's controlling terminal), with the job's termios and
        /// window size, in ckpt's session, in the foreground if it was. CRIU's spelling.
        #[arg(short = 'j', long)]
        shell_job: bool,
        /// The host end of the container's veth IN is created as OUT (by default the
        /// name it had at the dump), optionally a port of bridge BRIDGE
        /// (`IN=OUT@BRIDGE`). CRIU's spelling; repeatable.
        #[arg(long = "veth-pair", value_name = "IN=OUT[@BRIDGE]", value_parser = parse_veth_pair)]
        veth_pair: Vec<(String, String, Option<String>)>,
        /// Makes the veth host end OUT a port of the existing bridge BRIDGE; its
        /// addresses and routes on the host side stay the operator's. Repeatable.
        #[arg(long = "veth-bridge", value_name = "OUT=BRIDGE", value_parser = parse_pair)]
        veth_bridge: Vec<(String, String)>,
        /// With --lazy: the pages file is still arriving; the unix socket SOCKET says
        /// which chunks are in (post-copy migration: `ckpt haul serve` is the feeder).
        #[arg(long, value_name = "SOCKET", hide = true, requires = "lazy")]
        page_feed: Option<PathBuf>,
        /// Make the tree's own cgroups at PATH (from each hierarchy's root) instead of
        /// at their dumped paths; `CTL:PATH` for one hierarchy (`v2`, or v1 controllers
        /// such as `memory`). CRIU's spelling; repeatable.
        #[arg(long = "cgroup-root", value_name = "[CTL:]PATH")]
        cgroup_root: Vec<String>,
        /// A container's console dumped with --orphan-pts-master gets a new pty pair; its
        /// master is sent to the unix socket PATH (SCM_RIGHTS on a stream connection, as
        /// runc sends a console to its --console-socket).
        #[arg(long, value_name = "PATH")]
        console_socket: Option<PathBuf>,
    },
    /// Summarise an image directory (processes, memory, fds, files, checksums), print it
    /// whole as JSON (--json), or compare two directories (--diff A B).
    ///
    /// With -D: exits 1 if a file is missing, truncated, fails its checksum or does not
    /// decode (every file is still reported, each with its own status).
    ///
    /// With --diff, like diff(1): exits 0 when the two sets are equivalent, 1 when they
    /// differ, 2 when either cannot be read or holds a damaged file.
    Show {
        /// Image directory.
        #[arg(
            short = 'D',
            long = "images-dir",
            required_unless_present = "diff",
            conflicts_with = "diff"
        )]
        dir: Option<PathBuf>,
        /// Print every record of every image as JSON instead (with --diff: the differences).
        #[arg(long)]
        json: bool,
        /// Print what differs between image directories A and B.
        #[arg(long, num_args = 2, value_names = ["A", "B"])]
        diff: Option<Vec<PathBuf>>,
    },
    /// Probe this kernel and these privileges: what ckpt can do here, feature by feature;
    /// or, with -t PID, list everything that keeps that process tree from being dumped.
    ///
    /// Without -t: exits 1 if ckpt cannot work on this host at all. With -t: looks at the
    /// process and all its descendants without stopping or touching them, prints every
    /// blocker (pid, fd or mapping, what it is, why) or "dumpable"; exits 0 if dumpable,
    /// 1 if anything blocks a dump, 2 if the pid cannot be looked at.
    Check {
        /// Check this process tree instead of the host.
        #[arg(short = 't', long = "tree")]
        pid: Option<i32>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
        /// With -t: as a dump with --tcp-established would see it (established TCP
        /// connections are no blockers then).
        #[arg(long)]
        tcp_established: bool,
    },
    /// Act as CRIU (also when started through a symlink named `criu`): `ckpt criu
    /// dump|pre-dump|restore|check|swrk N|--version` with CRIU's options, for runc, podman
    /// and LXC.
    Criu {
        /// CRIU's command and options.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Live migration, the receiving end (`ckpt haul serve`).
    Haul {
        #[command(subcommand)]
        cmd: haul::HaulCmd,
    },
    /// Move a running process tree to another host running `ckpt haul serve`: dumped
    /// (with --pre-copy: in rounds while it runs), streamed encrypted, restored there;
    /// killed here only once it runs there. On any failure it runs on here.
    Migrate(haul::MigrateArgs),
    /// Print a shell completion script (e.g. `ckpt completions bash > /etc/bash_completion.d/ckpt`).
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
    /// Print the man page in roff (`ckpt man | man -l -`), or write one page per command.
    Man {
        /// Write ckpt.1, ckpt-dump.1, ... into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

fn main() {
    // Started as `criu` (a symlink named so), or `ckpt criu ...`: CRIU's command line and
    // RPC (ckpt-criu), before clap and ckpt's own logging see anything.
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if args.first().is_some_and(|a| ckpt_criu::started_as_criu(a)) {
        std::process::exit(ckpt_criu::main(&args[1..]));
    }
    if args.get(1).is_some_and(|a| a == "criu") {
        std::process::exit(ckpt_criu::main(&args[2..]));
    }
    let cli = Cli::parse();
    if let Err(e) = init_logging(cli.verbose, cli.log_file.as_deref()) {
        eprintln!("ckpt: error: {e}");
        std::process::exit(1);
    }
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            report(&e);
            std::process::exit(1);
        }
    }
}

/// Whether the log goes to a file (then errors are logged there too, as on stderr).
static LOG_TO_FILE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// One line: every cause, outermost first. On stderr always; in the log file as well when
/// there is one, so that it tells the whole story as `-v` does.
fn report(e: &anyhow::Error) {
    let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
    let line = msg.join(": ");
    if LOG_TO_FILE.load(std::sync::atomic::Ordering::Relaxed) {
        tracing::error!("{line}");
    }
    eprintln!("ckpt: error: {line}");
}

fn init_logging(verbose: u8, file: Option<&std::path::Path>) -> Result<()> {
    let level = match (verbose, file.is_some()) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        (2, _) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CKPT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("log file {}", path.display()))?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
            LOG_TO_FILE.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        None => {
            // Colour only for a terminal: a redirected stderr gets plain text.
            use std::io::IsTerminal;
            builder
                .with_ansi(std::io::stderr().is_terminal())
                .with_writer(std::io::stderr)
                .init()
        }
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal; nothing otherwise (pipes, CI, logs).
struct Bar(Option<indicatif::ProgressBar>);

impl Bar {
    fn new() -> Self {
        use std::io::IsTerminal;
        Bar(std::io::stderr()
            .is_terminal()
            .then(indicatif::ProgressBar::hidden))
    }
}

impl ckpt_images::progress::Progress for Bar {
    fn begin(&self, what: &str, total: u64) {
        if let Some(b) = &self.0 {
            // Small copies finish before a bar would be seen.
            if total < 64 << 20 {
                return;
            }
            b.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            b.set_length(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:16} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(what.to_string());
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = &self.0 {
            b.inc(n);
        }
    }
    fn end(&self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Dump {
            pid,
            dir,
            leave_running,
            compress,
            compress_level,
            sync,
            allow_unknown_state,
            freeze_cgroup,
            pre_dump,
            prev_images_dir,
            track_mem,
            tcp_established,
            shell_job,
            orphan_pts_master,
            external,
        } => {
            let opts = ckpt_dump::DumpOptions {
                pid,
                dir: dir.clone(),
                leave_running: leave_running || track_mem,
                compress: compress.then_some(compress_level),
                sync,
                allow_unknown_state,
                freeze_cgroup,
                pre_dump,
                prev_images_dir,
                track_mem,
                tcp_established,
                shell_job,
                orphan_pts_master,
                pages_chunk: None,
                external,
            };
            // SIGINT/SIGTERM/SIGHUP: abort in order, the workload put back untouched.
            let _armed = ckpt_sys::abort::arm().context("signal handlers")?;
            // Its "dump done" line (pages, MiB, frozen and total ms) is logged by the dump.
            ckpt_dump::dump_with_progress(&opts, &Bar::new())
                .with_context(|| format!("dump of pid {pid} into {}", dir.display()))?;
            Ok(0)
        }
        Cmd::Restore {
            dir,
            detach,
            pidfile,
            lazy,
            no_verify,
            inherit_fd,
            new_pidns,
            ext_mount_map,
            shell_job,
            veth_pair,
            mut veth_bridge,
            page_feed,
            cgroup_root,
            console_socket,
        } => {
            for (_, out, bridge) in &veth_pair {
                if let Some(b) = bridge {
                    veth_bridge.push((out.clone(), b.clone()));
                }
            }
            let opts = ckpt_restore::RestoreOptions {
                dir: dir.clone(),
                detach,
                pidfile,
                lazy,
                verify: !no_verify,
                inherit_fds: inherit_fd,
                new_pidns,
                ext_mount_map,
                veth_pairs: veth_pair.into_iter().map(|(i, o, _)| (i, o)).collect(),
                veth_bridges: veth_bridge,
                sibling: false,
                shell_job,
                page_feed,
                cgroup_root,
                console_socket,
            };
            // Until the process is released (restore disarms then): abort in order, the
            // half-built process killed and reaped.
            let _armed = ckpt_sys::abort::arm().context("signal handlers")?;
            let outcome = ckpt_restore::restore_with_progress(&opts, &Bar::new())
                .with_context(|| format!("restore from {}", dir.display()))?;
            Ok(match outcome {
                ckpt_restore::Outcome::Detached(_) => 0,
                ckpt_restore::Outcome::Exited(code) => code,
                ckpt_restore::Outcome::Killed(sig) => 128 + sig,
            })
        }
        Cmd::Show { dir, json, diff } => show(dir, json, diff),
        Cmd::Check {
            pid: None, json, ..
        } => check::run(json),
        Cmd::Check {
            pid: Some(pid),
            json,
            tcp_established,
        } => Ok(match check::tree(pid, json, tcp_established) {
            Ok(code) => code,
            Err(e) => {
                report(&e);
                2
            }
        }),
        // Reached only when argv was not what main() recognised (e.g. `ckpt -v criu`).
        Cmd::Criu { args } => Ok(ckpt_criu::main(&args)),
        Cmd::Haul { cmd } => haul::serve(cmd),
        Cmd::Migrate(args) => haul::migrate(args),
        Cmd::Completions { shell } => {
            emit_bytes(&completions::completions(Cli::command(), shell))?;
            Ok(0)
        }
        Cmd::Man { dir } => {
            emit_bytes(&completions::man(Cli::command(), dir.as_deref())?)?;
            Ok(0)
        }
    }
}

fn show(dir: Option<PathBuf>, json: bool, diff: Option<Vec<PathBuf>>) -> Result<i32> {
    use ckpt_images::{summary, ImageDir};
    let open =
        |p: &PathBuf| ImageDir::open_unverified(p).with_context(|| format!("show {}", p.display()));
    if let Some([a, b]) = diff.as_deref() {
        return Ok(match show_diff(open(a), open(b), json) {
            Ok(code) => code,
            Err(e) => {
                report(&e);
                2
            }
        });
    }
    let dir = dir.context("show: -D DIR or --diff A B is required")?;
    let d = open(&dir)?;
    if json {
        let shown = ckpt_images::show::to_json(&d);
        emit(&(serde_json::to_string_pretty(&shown.json)? + "\n"))?;
        return Ok(if shown.intact { 0 } else { 1 });
    }
    let set = summary::ImageSet::load(&d);
    emit(&summary::render(&set))?;
    Ok(if set.intact() { 0 } else { 1 })
}

/// `show --diff`: 0 equivalent, 1 different, 2 (an error, or a set with a damaged file,
/// whose comparison cannot be trusted) as diff(1) does.
fn show_diff(
    a: Result<ckpt_images::ImageDir>,
    b: Result<ckpt_images::ImageDir>,
    json: bool,
) -> Result<i32> {
    use ckpt_images::{diff as idiff, summary::ImageSet};
    let (a, b) = (ImageSet::load(&a?), ImageSet::load(&b?));
    let changes = idiff::diff(&a, &b);
    if json {
        let v = idiff::to_json(&a, &b, &changes);
        emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        emit(&idiff::render(&a, &b, &changes))?;
    }
    let damaged: Vec<String> = [&a, &b]
        .iter()
        .filter(|s| !s.intact())
        .map(|s| s.dir.display().to_string())
        .collect();
    if !damaged.is_empty() {
        anyhow::bail!(
            "show --diff: {} holds damaged files, so the comparison is incomplete (`ckpt show -D` says which)",
            damaged.join(" and ")
        );
    }
    Ok(if changes.is_empty() { 0 } else { 1 })
}

/// Writes to stdout; a reader that went away (`ckpt show | head`) is not an error.
fn emit(text: &str) -> Result<()> {
    emit_bytes(text.as_bytes())
}

fn emit_bytes(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|_| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// `fd[N]:KEY` of `--inherit-fd`.
fn parse_ext_mount(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((k, p)) if k.starts_with('/') && p.starts_with('/') => Ok((k.into(), p.into())),
        _ => Err(format!("{s:?}: want KEY:PATH, both absolute paths")),
    }
}

/// `A=B`, both non-empty.
fn parse_pair(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.into(), b.into())),
        _ => Err(format!("{s:?}: want NAME=NAME")),
    }
}

/// `IN=OUT` or `IN=OUT@BRIDGE`.
fn parse_veth_pair(s: &str) -> Result<(String, String, Option<String>), String> {
    let (inner, out) = parse_pair(s)?;
    match out.split_once('@') {
        Some((o, b)) if !o.is_empty() && !b.is_empty() => Ok((inner, o.into(), Some(b.into()))),
        Some(_) => Err(format!("{s:?}: want IN=OUT or IN=OUT@BRIDGE")),
        None => Ok((inner, out, None)),
    }
}

fn parse_inherit_fd(s: &str) -> Result<(i32, String), String> {
    let bad = || format!("{s:?}: expected fd[N]:KEY, e.g. fd[3]:pipe:[1234]");
    let rest = s.strip_prefix("fd[").ok_or_else(bad)?;
    let (n, key) = rest.split_once("]:").ok_or_else(bad)?;
    let n: i32 = n.parse().map_err(|_| bad())?;
    if n < 0 || key.is_empty() {
        return Err(bad());
    }
    Ok((n, key.to_string()))
}

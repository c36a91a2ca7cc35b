//! CRIU's command line, the subset LXC's lxc-checkpoint and scripts use: `dump`,
//! `pre-dump`, `restore`, `check`, `swrk N`, `--version`. Options as getopt_long takes
//! them (`-t 1`, `-t1`, `--tree 1`, `--tree=1`, `-v4`, `-vvv`); an option ckpt does not
//! know is refused by name, never skipped.

use crate::error::{invalid, unsupported, CriuError};
use crate::notify::Listener;
use crate::run::{Dump, Restore};
use crate::{log, opts, run};
use std::path::{Path, PathBuf};

/// Everything the command line said, before it is checked against the command.
#[derive(Default)]
struct Parsed {
    pid: Option<i32>,
    images: Option<PathBuf>,
    work: Option<PathBuf>,
    log_file: Option<String>,
    verbosity: Option<i32>,
    leave_running: bool,
    tcp_established: bool,
    root: Option<String>,
    pidfile: Option<String>,
    detach: bool,
    sibling: bool,
    ext_mnt: Vec<(String, String)>,
    scripts: Vec<String>,
    freeze_cgroup: Option<String>,
    inherit_fds: Vec<(i32, String)>,
    prev_images_dir: Option<String>,
    track_mem: bool,
    cg_roots: Vec<String>,
    externals: Vec<String>,
    /// `dump --page-server`: the pages go to `--address`:`--port`.
    page_server: bool,
    address: Option<String>,
    port: Option<i32>,
    /// `page-server` started by `page-server -d`: the listening socket is stdin.
    serve_stdin: bool,
    display_stats: bool,
}

/// Options that take a value: (long name, short letter).
const WITH_VALUE: &[(&str, Option<char>)] = &[
    ("tree", Some('t')),
    ("images-dir", Some('D')),
    ("work-dir", Some('W')),
    ("log-file", Some('o')),
    ("root", None),
    ("pidfile", None),
    ("ext-mount-map", Some('M')),
    ("action-script", None),
    ("enable-fs", None),
    ("freeze-cgroup", None),
    ("inherit-fd", None),
    ("prev-images-dir", None),
    ("cgroup-root", None),
    ("external", None),
    ("address", None),
    ("port", None),
    ("ghost-limit", None),
];

/// Options that take none: (long name, short letter).
const FLAGS: &[(&str, Option<char>)] = &[
    ("leave-running", Some('R')),
    ("tcp-established", None),
    ("file-locks", Some('l')),
    ("link-remap", None),
    ("shell-job", Some('j')),
    ("restore-detached", Some('d')),
    ("restore-sibling", None),
    ("enable-external-masters", None),
    ("enable-external-sharing", None),
    ("evasive-devices", None),
    ("ext-unix-sk", Some('x')),
    ("track-mem", None),
    ("manage-cgroups", None),
    ("skip-in-flight", None),
    ("force-irmap", None),
    ("page-server", None),
    ("daemon", None),
    ("serve-stdin", None),
    ("display-stats", None),
];

/// Long options handled before the tables: their value is optional or they are refused
/// with a reason.
const SPECIAL: &[&str] = &["verbosity", "manage-cgroups", "lazy-pages"];

/// A long option as getopt_long takes it: the whole name, or an unambiguous prefix of one.
fn long_name(given: &str) -> Result<String, CriuError> {
    let all = || {
        WITH_VALUE
            .iter()
            .chain(FLAGS)
            .map(|(l, _)| *l)
            .chain(SPECIAL.iter().copied())
    };
    if all().any(|l| l == given) {
        return Ok(given.to_string());
    }
    let matching: Vec<&str> = all().filter(|l| l.starts_with(given)).collect();
    match matching[..] {
        [one] => Ok(one.to_string()),
        [] => Err(unsupported(format!(
            "option --{given} is not supported by ckpt"
        ))),
        _ => Err(invalid(format!(
            "option --{given} is ambiguous ({})",
            matching.join(", ")
        ))),
    }
}

pub fn main(args: &[String]) -> i32 {
    let Some(cmd) = args.first() else {
        eprintln!("criu: usage: criu dump|pre-dump|restore|check|swrk [options] (ckpt as CRIU)");
        return 1;
    };
    match cmd.as_str() {
        "--version" | "-V" => {
            print!("{}", crate::VERSION_TEXT);
            0
        }
        "swrk" => match args.get(1) {
            Some(fd) if args.len() == 2 => crate::swrk::serve(fd),
            _ => {
                eprintln!("criu: usage: criu swrk FD");
                1
            }
        },
        "check" => check(&args[1..]),
        "dump" | "pre-dump" | "restore" | "page-server" => match parse(&args[1..]) {
            Ok(p) => act(cmd, p),
            Err(e) => {
                eprintln!("criu: {e}");
                1
            }
        },
        other => {
            eprintln!("criu: command {other:?} is not supported by ckpt (dump, pre-dump, restore, page-server, check, swrk, --version)");
            1
        }
    }
}

/// `criu check`: "Looks good." when ckpt can dump and restore here, as CRIU says it.
fn check(args: &[String]) -> i32 {
    if let Some(a) = args
        .iter()
        .find(|a| !matches!(a.as_str(), "--all" | "--extra"))
    {
        eprintln!("criu: check: option {a} is not supported by ckpt (--all, --extra)");
        return 1;
    }
    let features = ckpt_sys::probe::probe_all();
    if ckpt_sys::probe::unusable(&features) {
        for f in features
            .iter()
            .filter(|f| f.required && f.status == ckpt_sys::probe::Status::Missing)
        {
            eprintln!("Error (ckpt): {}: {} ({})", f.name, f.detail, f.meaning);
        }
        1
    } else {
        println!("Looks good.");
        0
    }
}

fn parse(args: &[String]) -> Result<Parsed, CriuError> {
    let mut p = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        // -v, -vvv, -v4, --verbosity=N
        if let Some(v) = a.strip_prefix("-v").filter(|_| !a.starts_with("--")) {
            let level = if v.chars().all(|c| c == 'v') {
                2 + 1 + v.len() as i32
            } else {
                v.parse()
                    .map_err(|_| invalid(format!("-v{v}: expected a level 0-4")))?
            };
            p.verbosity = Some(level);
            continue;
        }
        let (name, inline) = if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => (long_name(n)?, Some(v.to_string())),
                None => (long_name(long)?, None),
            }
        } else if let Some(short) = a.strip_prefix('-').and_then(|s| s.chars().next()) {
            let known = WITH_VALUE
                .iter()
                .chain(FLAGS)
                .find(|(_, s)| *s == Some(short));
            let Some((long, _)) = known else {
                return Err(unsupported(format!("option {a} is not supported by ckpt")));
            };
            let rest = &a[1 + short.len_utf8()..];
            (
                long.to_string(),
                (!rest.is_empty()).then(|| rest.to_string()),
            )
        } else {
            return Err(invalid(format!("unexpected argument {a:?}")));
        };
        if name == "verbosity" {
            let v = inline.ok_or_else(|| invalid("--verbosity needs =N"))?;
            p.verbosity = Some(v.parse().map_err(|_| invalid(format!("--verbosity={v}")))?);
            continue;
        }
        if name == "lazy-pages" {
            return Err(unsupported(
                "option --lazy-pages is not supported by ckpt (a restore fetching pages from \
                 a page server; ckpt's own lazy restore, `ckpt restore --lazy`, reads a local \
                 image)",
            ));
        }
        if name == "manage-cgroups" {
            // --manage-cgroups[=MODE]: ckpt records a tree's own cgroups with their
            // settings and, at restore, makes the missing ones and writes the settings
            // into each, made or found (`restore/src/cgroups.rs`): CRIU's `full`, which
            // does at least what soft, ignore and none ask. `props` (settings only, no
            // cgroup made) and `strict` (refuse an existing cgroup) are not mapped.
            let mode = inline.as_deref().unwrap_or("soft");
            if !matches!(mode, "full" | "soft" | "ignore" | "none") {
                return Err(unsupported(format!(
                    "--manage-cgroups={mode}: not supported by ckpt (it makes a tree's \
                     cgroups and writes their dumped settings, made or found: full, which \
                     covers soft, ignore and none)"
                )));
            }
            continue;
        }
        if WITH_VALUE.iter().any(|(l, _)| *l == name) {
            let value = match inline {
                Some(v) => v,
                None => {
                    let v = args
                        .get(i)
                        .ok_or_else(|| invalid(format!("option --{name} needs a value")))?;
                    i += 1;
                    v.clone()
                }
            };
            set_value(&mut p, &name, value)?;
        } else if FLAGS.iter().any(|(l, _)| *l == name) {
            if inline.is_some() {
                return Err(invalid(format!("option --{name} takes no value")));
            }
            match name.as_str() {
                "leave-running" => p.leave_running = true,
                "tcp-established" => p.tcp_established = true,
                "restore-detached" => p.detach = true,
                "restore-sibling" => p.sibling = true,
                "track-mem" => p.track_mem = true,
                "page-server" => p.page_server = true,
                // page-server's -d: the same letter as restore's.
                "daemon" => p.detach = true,
                "serve-stdin" => p.serve_stdin = true,
                "display-stats" => p.display_stats = true,
                // Accepted: ckpt takes file locks and deleted files along always, lets a
                // shell job's session go, reopens devices by path, and refuses an external
                // unix socket or a mount sharing peers outside the tree whatever is said;
                // it finds every inotify watch's path itself (--force-irmap), and never
                // drops a TCP connection not accepted yet: it refuses such a listener by
                // name where CRIU would drop them (--skip-in-flight).
                _ => {}
            }
        } else {
            return Err(unsupported(format!(
                "option --{name} is not supported by ckpt"
            )));
        }
    }
    Ok(p)
}

fn set_value(p: &mut Parsed, name: &str, v: String) -> Result<(), CriuError> {
    match name {
        "tree" => {
            p.pid = Some(
                v.parse()
                    .map_err(|_| invalid(format!("--tree {v}: not a pid")))?,
            )
        }
        "images-dir" => p.images = Some(v.into()),
        "work-dir" => p.work = Some(v.into()),
        "log-file" => p.log_file = Some(v),
        "root" => p.root = Some(v),
        "pidfile" => p.pidfile = Some(v),
        "ext-mount-map" => {
            if v == "auto" {
                // ckpt names a bind of a host path by that path and binds it again from
                // there (or where a KEY:PATH says): what CRIU's auto does.
                return Ok(());
            }
            let (k, val) = v
                .split_once(':')
                .ok_or_else(|| invalid(format!("--ext-mount-map {v}: expected KEY:VAL")))?;
            p.ext_mnt.push((k.into(), val.into()));
        }
        "action-script" => p.scripts.push(v),
        // Which filesystems CRIU may dump: ckpt refuses a mount it cannot restore, named.
        "enable-fs" => {}
        "freeze-cgroup" => p.freeze_cgroup = Some(v),
        "inherit-fd" => {
            let bad = || invalid(format!("--inherit-fd {v}: expected fd[N]:KEY"));
            let rest = v.strip_prefix("fd[").ok_or_else(bad)?;
            let (n, key) = rest.split_once("]:").ok_or_else(bad)?;
            p.inherit_fds
                .push((n.parse().map_err(|_| bad())?, key.to_string()));
        }
        "prev-images-dir" => p.prev_images_dir = Some(v),
        "cgroup-root" => p.cg_roots.push(v),
        "external" => p.externals.push(v),
        "address" => p.address = Some(v),
        // The largest deleted file CRIU keeps in the image: ckpt keeps every one,
        // whatever its size (more than asked, never less). Checked as CRIU reads it.
        "ghost-limit" => {
            let digits = v.trim_end_matches(['K', 'M', 'G', 'k', 'm', 'g']);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(invalid(format!(
                    "--ghost-limit {v}: expected a size (N[KMG])"
                )));
            }
        }
        "port" => {
            p.port = Some(
                v.parse()
                    .map_err(|_| invalid(format!("--port {v}: not a port number")))?,
            )
        }
        _ => unreachable!("every option WITH_VALUE is handled"),
    }
    Ok(())
}

/// A path CRIU takes relative to the work directory.
fn in_work(work: &Path, name: &str) -> PathBuf {
    work.join(name)
}

fn act(cmd: &str, p: Parsed) -> i32 {
    let images = p.images.clone().unwrap_or_else(|| PathBuf::from("."));
    let work = p.work.clone().unwrap_or_else(|| images.clone());
    let log_path = p.log_file.as_deref().map(|f| in_work(&work, f));
    if let Err(e) = log::init(log_path.as_deref(), p.verbosity.unwrap_or(2), false) {
        eprintln!("criu: {e}");
        return 1;
    }
    crate::notify::install((!p.scripts.is_empty()).then(|| Listener::Scripts(p.scripts.clone())));
    match act_inner(cmd, p, images, &work) {
        Ok(code) => code,
        Err(e) => {
            let msg = format!("{cmd}: {e}");
            log::error_line(log_path.as_deref(), &msg);
            if log_path.is_none() {
                eprintln!("Error (ckpt): {msg}");
            }
            1
        }
    }
}

fn act_inner(cmd: &str, p: Parsed, images: PathBuf, work: &Path) -> Result<i32, CriuError> {
    if cmd == "page-server" {
        return page_server(p, images, work).map(|()| 0);
    }
    if (p.address.is_some() || p.port.is_some()) && !p.page_server {
        return Err(invalid(
            "--address and --port name a page server: with --page-server (dump) or the \
             page-server command",
        ));
    }
    if cmd == "restore" {
        let dump_only = [
            (p.pid.is_some(), "--tree"),
            (p.leave_running, "--leave-running"),
            (p.freeze_cgroup.is_some(), "--freeze-cgroup"),
            (p.prev_images_dir.is_some(), "--prev-images-dir"),
            (p.track_mem, "--track-mem"),
            (p.page_server, "--page-server"),
        ];
        if let Some((_, n)) = dump_only.iter().find(|(s, _)| *s) {
            return Err(invalid(format!("{n} is a dump option")));
        }
        let veths = crate::external::restore(&p.externals)?.veths;
        let r = Restore {
            cgroup_root: crate::cgroups::for_restore(&p.cg_roots),
            veths,
            images,
            work: p.work.clone(),
            inherit_fds: p.inherit_fds,
            pidfile: p.pidfile.as_deref().map(|f| in_work(work, f)),
            detach: p.detach,
            root: p.root,
            sibling: p.sibling,
            ext_mnt: p.ext_mnt,
            display_stats: p.display_stats,
        };
        return Ok(match run::restore(&r)? {
            ckpt_restore::Outcome::Detached(_) => 0,
            ckpt_restore::Outcome::Exited(code) => code,
            ckpt_restore::Outcome::Killed(sig) => 128 + sig,
        });
    }
    let restore_only = [
        (p.detach, "--restore-detached"),
        (p.sibling, "--restore-sibling"),
        (!p.inherit_fds.is_empty(), "--inherit-fd"),
        (p.pidfile.is_some(), "--pidfile"),
    ];
    if let Some((_, n)) = restore_only.iter().find(|(s, _)| *s) {
        return Err(invalid(format!("{n} is a restore option")));
    }
    let pid = p.pid.ok_or_else(|| invalid("-t/--tree PID is required"))?;
    let mut ttys = Vec::new();
    for e in &p.externals {
        if !e.starts_with("tty[") {
            return Err(unsupported(format!(
                "--external {e}: not supported by ckpt at a dump (tty[RDEV:DEV] only)"
            )));
        }
        ttys.push((e.clone(), crate::console::parse(e)?));
    }
    crate::console::check_not_held(pid, &ttys)?;
    crate::cgroups::check_dump(pid, &p.cg_roots)?;
    if let Some(root) = p.root.as_deref() {
        opts::same_root(pid, root)?;
    }
    let d = Dump {
        pid,
        images,
        work: p.work.clone(),
        leave_running: p.leave_running,
        tcp_established: p.tcp_established,
        freeze_cgroup: opts::freeze_cgroup(p.freeze_cgroup.as_deref()),
        pre_dump: cmd == "pre-dump",
        prev_images_dir: p.prev_images_dir,
        track_mem: p.track_mem,
        ext_mnt: p.ext_mnt,
        external: Vec::new(),
        display_stats: p.display_stats,
        // CRIU 3.17's command line has no --orphan-pts-master (only its RPC).
        orphan_pts_master: false,
        page_server: match p.page_server {
            true => Some(crate::page_server::address(p.address.as_deref(), p.port)?),
            false => None,
        },
    };
    run::dump(&d)?;
    Ok(0)
}

/// `criu page-server -D DIR --port P [--address A] [-d] [--pidfile F]`: receives a dump's
/// pages into DIR (`page_server.rs`). Without an address it listens on every one, as CRIU.
fn page_server(p: Parsed, images: PathBuf, work: &Path) -> Result<(), CriuError> {
    if p.serve_stdin {
        return crate::page_server::serve_stdin(&images);
    }
    let misplaced = [
        (p.pid.is_some(), "--tree"),
        (p.leave_running, "--leave-running"),
        (p.sibling, "--restore-sibling"),
        (p.page_server, "--page-server"),
        (p.prev_images_dir.is_some(), "--prev-images-dir"),
        (!p.inherit_fds.is_empty(), "--inherit-fd"),
    ];
    if let Some((_, n)) = misplaced.iter().find(|(s, _)| *s) {
        return Err(invalid(format!("{n} is no page-server option")));
    }
    let addr =
        crate::page_server::address(Some(p.address.as_deref().unwrap_or("0.0.0.0")), p.port)?;
    let mut log_args = Vec::new();
    if let Some(f) = p.log_file.as_deref() {
        log_args.push("-o".to_string());
        log_args.push(in_work(work, f).display().to_string());
    }
    if let Some(v) = p.verbosity {
        log_args.push(format!("-v{v}"));
    }
    crate::page_server::serve(&crate::page_server::Serve {
        images,
        addr,
        daemon: p.detach,
        pidfile: p.pidfile.as_deref().map(|f| in_work(work, f)),
        log_args,
    })
}

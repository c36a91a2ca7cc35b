//! The container row: the ring workload (`n` processes, a `heap_mib` heap its children
//! share) as pid 1 of an `unshare --fork --pid --mount-proc --mount --uts --ipc --net`
//! container, dumped by its init and restored into fresh namespaces (its outer pid from
//! `--pidfile`), then asked to verify itself. In the same round the same ring runs
//! without a container, so the rows show what the namespaces cost on top of the tree's
//! own figures (the bound: 20 ms). `--phases` breaks the container's restore
//! down (its namespace and mount steps are among ckpt's -vv timings).

use crate::stats::{Run, WorkloadResult};
use crate::workload::{self, Proc};
use crate::Ctx;
use anyhow::{bail, Context, Result};
use std::path::Path;

pub fn bench_container(ctx: &Ctx, n: usize, heap_mib: u64) -> WorkloadResult {
    let name = format!("container {n} x {heap_mib}M");
    crate::bench_small(ctx, &name, |run| {
        round(ctx, run, n, heap_mib, true)?;
        let mut plain = Run::default();
        round(ctx, &mut plain, n, heap_mib, false)?;
        run.plain_dump_ms = plain.dump_ms;
        run.plain_restore_ms = plain.restore_ms;
        Ok(())
    })
}

/// One dump and restore of the ring, in a container or not; its figures go to `run`.
fn round(ctx: &Ctx, run: &mut Run, n: usize, heap_mib: u64, contained: bool) -> Result<()> {
    let ring = ctx.ring.as_ref().context("ring workload not built")?;
    let out = ctx.work.join("container.out");
    let tag = if contained { "container" } else { "plain" };
    let mut args: Vec<String> = Vec::new();
    let bin: &Path = if contained {
        args.extend(
            [
                "--fork",
                "--pid",
                "--mount-proc",
                "--mount",
                "--uts",
                "--ipc",
                "--net",
            ]
            .map(String::from),
        );
        args.push(ring.display().to_string());
        Path::new("unshare")
    } else {
        ring
    };
    args.extend([n.to_string(), heap_mib.to_string()]);
    let _ = std::fs::remove_file(&out);
    // Without a container, the ring's members come to the bench (its subreaper) when the
    // dump kills their root: reaped by pid (`start_ring` names them).
    let (mut outer, members) = if contained {
        let (p, line) = workload::start_until_ready(bin, &args, &out, ctx.timeout)?;
        if !line.starts_with("READY") {
            let mut p = p;
            p.kill_reap()?;
            bail!("ring in a container: {line}");
        }
        (p, Vec::new())
    } else {
        workload::start_ring(ring, n, heap_mib, &out, ctx.timeout)?
    };
    // The container's init: unshare's child.
    let init = if contained {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", outer.pid))
            .unwrap_or_default();
        match kids.split_whitespace().next().and_then(|p| p.parse().ok()) {
            Some(p) => p,
            None => {
                outer.kill_reap()?;
                bail!("unshare {} has no child", outer.pid);
            }
        }
    } else {
        outer.pid
    };
    let img = ctx.work.join("img");
    let _ = std::fs::remove_dir_all(&img);
    let img_s = img.to_str().context("work dir path is not UTF-8")?;
    let log = ctx.log(&format!("{tag}-r{}-dump.log", run.run));
    let pid = init.to_string();
    let dumped = crate::ckpt_cmd(ctx, run, "dump", &["dump", "-t", &pid, "-D", img_s], &log);
    if let Err(e) = dumped {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(init),
            nix::sys::signal::Signal::SIGKILL,
        );
        outer.kill_reap()?;
        return Err(e);
    }
    if let Ok(m) = &dumped {
        run.dump_ms = Some(m.wall_ms);
        run.dump_rss_kib = Some(m.maxrss_kib);
        run.image_bytes = Some(crate::dir_bytes(&img));
    }
    // The dump killed the init: the namespace and unshare go with it.
    outer.reap()?;
    workload::reap_all(&members, ctx.timeout)?;
    let pidfile = ctx.work.join("container.pid");
    let pf = pidfile.to_str().context("work dir path is not UTF-8")?;
    let log = ctx.log(&format!("{tag}-r{}-restore.log", run.run));
    let restore = ["restore", "-D", img_s, "-d", "--pidfile", pf];
    let m = crate::ckpt_cmd(ctx, run, "restore", &restore, &log)?;
    run.restore_ms = Some(m.wall_ms);
    run.restore_rss_kib = Some(m.maxrss_kib);
    let root: i32 = std::fs::read_to_string(&pidfile)
        .context("the restore's pidfile")?
        .trim()
        .parse()
        .context("the restore's pidfile")?;
    let mut root = Proc::adopt(root);
    let verdict = workload::verify_pass(&mut root, &out, ctx.timeout);
    root.kill_reap()?;
    for &p in &members {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(p),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    workload::reap_all(&members, ctx.timeout)?;
    if contained {
        run.verify = Some(match verdict {
            Ok(v) => v,
            Err(e) => format!("{e:#}"),
        });
    } else if !verdict.as_ref().is_ok_and(|v| v.starts_with("PASS")) {
        bail!("the ring without a container: {verdict:?}");
    }
    Ok(())
}

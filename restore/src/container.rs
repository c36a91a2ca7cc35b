//! A container's restore (`Inventory.container`: the tree's root was pid 1 of a pid
//! namespace of its own). ckpt forks the root's seed with clone3(CLONE_NEWPID and the
//! other CLONE_NEW* the container owned): it is pid 1 again, of fresh namespaces. The root
//! seed makes the mount namespace's mounts private, sets the hostname and domain name and
//! brings the network namespace's lo up (if it was) and makes its veths (`netns.rs`)
//! before it forks the others (with set_tid of their pids inside, as on the host). A container on a root of
//! its own (runc, LXC) gets it there too: the seed pivots into it (`mounts.rs`). The
//! container's own /proc, and what it mounted over it, come last, by
//! `ckpt_sys::ns::mount_inside` once every puppet is done and before any process runs:
//! until then the seeds and puppets see ckpt's /proc, through which they open ckpt's
//! shared memory objects (/proc/<ckpt>/fd/N) and files outside a pivoted root
//! (/proc/<ckpt>/root/PATH). ckpt drives the processes by their outer pids, as for
//! `--new-pidns` (`pidns.rs`).

use crate::{RestoreError, R};
use ckpt_images::pb;
use ckpt_sys::process::Forked;
use ckpt_sys::Pid;
use std::os::fd::AsRawFd;

/// The refusals of an image's container before anything is created.
pub fn check(inv: &pb::Inventory, new_pidns: bool, lazy: bool) -> R<()> {
    let Some(c) = &inv.container else {
        return Ok(());
    };
    let known = (libc::CLONE_NEWPID
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWCGROUP
        | libc::CLONE_NEWTIME
        | libc::CLONE_NEWUSER) as u64;
    let refuse = |why: String| {
        Err(RestoreError::Refused(format!(
            "inventory.img: container: {why}"
        )))
    };
    if inv.root_pid != 1 {
        return refuse(format!("its root is pid {}, not 1", inv.root_pid));
    }
    if c.clone_flags & !known != 0 || c.clone_flags & libc::CLONE_NEWPID as u64 == 0 {
        return refuse(format!("namespaces {:#x} are not restored", c.clone_flags));
    }
    if new_pidns {
        return refuse("it gets fresh namespaces of its own: --new-pidns does not apply".into());
    }
    if lazy {
        return refuse("--lazy does not restore containers yet".into());
    }
    Ok(())
}

/// `--inherit-fd`s: ckpt's fd N for the image's external object KEY.
pub type InheritFds = Vec<(i32, String)>;

/// The network namespace an external one is replaced by (reopened from ckpt's fd), and
/// the caller's other `--inherit-fd`s; refused when the image names an external
/// namespace and no open fd is given for its key.
pub fn external_net(
    inv: &pb::Inventory,
    inherit: &[(i32, String)],
) -> R<(Option<std::fs::File>, InheritFds)> {
    let key = inv
        .container
        .as_ref()
        .map(|c| c.net_external.as_str())
        .filter(|k| !k.is_empty());
    let Some(key) = key else {
        return Ok((None, inherit.to_vec()));
    };
    let Some((fd, _)) = inherit.iter().find(|(_, k)| k == key) else {
        return Err(RestoreError::Refused(format!(
            "inventory.img: the container's network namespace was made outside it ({key}): \
             give the one to join with --inherit-fd fd[N]:{key}"
        )));
    };
    let path = format!("/proc/self/fd/{fd}");
    let ns = std::fs::File::open(&path)
        .map_err(|e| RestoreError::Refused(format!("--inherit-fd fd[{fd}]:{key}: {path}: {e}")))?;
    let rest = inherit.iter().filter(|(_, k)| k != key).cloned().collect();
    Ok((Some(ns), rest))
}

/// What the root's seed makes in its fresh namespaces besides the names: mounts, IPC
/// objects, network interfaces.
#[derive(Debug, Default)]
pub struct Plan {
    pub mounts: crate::mounts::Plan,
    pub ipc: crate::ipc::Plan,
    pub net: crate::netns::Plan,
    /// Its connections locked in the network namespace made outside it (`net/external.rs`).
    pub external_lock: Option<crate::net::external::Lock>,
}

/// Reads and checks what the root's seed will make (nothing is created yet).
pub fn plan(
    dir: &ckpt_images::ImageDir,
    c: &pb::Container,
    places: &crate::mounts::Places,
    veths: &crate::netns::Names,
) -> R<Plan> {
    Ok(Plan {
        mounts: crate::mounts::plan(dir, c, places)?,
        ipc: crate::ipc::plan(dir, c)?,
        net: crate::netns::plan(c.net.as_ref(), veths)?,
        external_lock: None,
    })
}

/// Forks the root's seed into fresh namespaces (as ckpt's sibling with `--restore-sibling`:
/// runc waits for its container's init); ckpt gets its outer pid.
pub fn fork_root(
    seeds: &crate::seed::Seeds,
    c: &pb::Container,
    status_w: std::os::fd::OwnedFd,
    external_net: Option<std::os::fd::BorrowedFd<'_>>,
) -> R<Pid> {
    // Made by the root's seed itself (`set_up_root`): a cgroup namespace once it is in
    // its cgroups, a time namespace once its offsets are written.
    let later = (libc::CLONE_NEWCGROUP | libc::CLONE_NEWTIME) as u64;
    // In a user namespace of its own, the seed waits for ckpt to write its maps.
    let gate = (c.clone_flags & libc::CLONE_NEWUSER as u64 != 0)
        .then(|| nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC))
        .transpose()
        .map_err(|e| ckpt_sys::Error::sys("pipe2 for the user namespace's maps", e))?;
    let root_inside = crate::userns::RootInside::of_maps(&c.uid_map, &c.gid_map);
    let forked = match external_net {
        Some(net) => {
            ckpt_sys::ns::fork_container_root_in(c.clone_flags & !later, seeds.sibling, net)
        }
        None => ckpt_sys::ns::fork_container_root(c.clone_flags & !later, seeds.sibling),
    };
    match forked? {
        Forked::Child => {
            if let Some((r, w)) = gate {
                drop(w);
                let mut byte = [0u8; 1];
                if !matches!(nix::unistd::read(r.as_raw_fd(), &mut byte), Ok(1))
                    || !root_inside.take()
                {
                    ckpt_sys::process::exit_now(1)
                }
            }
            crate::seed::run(seeds, 0)
        }
        Forked::Parent(p) => {
            drop(status_w);
            if let Some((r, w)) = gate {
                drop(r);
                crate::userns::write_maps(p, c)?;
                nix::unistd::write(&w, b"1")
                    .map_err(|e| ckpt_sys::Error::sys("releasing the container's root", e))?;
            }
            Ok(p)
        }
    }
}

/// In the root's seed, before it forks the others: its IPC objects (`ipc.rs`), its
/// mounts private, its own mounts (`mounts.rs`), its names.
pub fn set_up_root(c: &pb::Container, plan: Option<&Plan>) -> Result<(), String> {
    if c.clone_flags & libc::CLONE_NEWCGROUP as u64 != 0 {
        // In its cgroups already (`cgroups::enter_root`): they are the namespace's root.
        ckpt_sys::ns::unshare_cgroupns().map_err(|e| e.to_string())?;
    }
    if c.clone_flags & libc::CLONE_NEWTIME as u64 != 0 {
        ckpt_sys::ns::enter_new_timens(c.monotonic_offset_ns, c.boottime_offset_ns)
            .map_err(|e| e.to_string())?;
    }
    if c.clone_flags & libc::CLONE_NEWIPC as u64 != 0 {
        if let Some(plan) = plan {
            crate::ipc::create_all(&plan.ipc)?;
        }
    }
    if c.clone_flags & libc::CLONE_NEWNS as u64 != 0 {
        ckpt_sys::ns::make_mounts_private().map_err(|e| e.to_string())?;
        if let Some(plan) = plan {
            crate::mounts::mount_all(&plan.mounts)?;
        }
    }
    if c.clone_flags & libc::CLONE_NEWUTS as u64 != 0 {
        ckpt_sys::ns::set_names(&c.hostname, &c.domainname).map_err(|e| e.to_string())?;
    }
    if c.clone_flags & libc::CLONE_NEWNET as u64 != 0 && c.loopback_up {
        ckpt_sys::ns::loopback_up().map_err(|e| e.to_string())?;
    }
    if let (Some(net), Some(plan)) = (&c.net, plan) {
        crate::netns::set_up(&plan.net, net)?;
    }
    Ok(())
}

/// `before_release`, its time in the -v timings (the namespace work shown apart).
pub fn before_release_timed(c: &pb::Container, plan: Option<&Plan>, root: Pid) -> R<()> {
    let t = std::time::Instant::now();
    before_release(c, plan, root)?;
    tracing::debug!(
        ms = ckpt_images::units::ms(t),
        "container namespaces: mounts and links finished"
    );
    Ok(())
}

/// Once every puppet is done, before anything runs: the container's own /proc and the
/// mounts over it (`mounts::late_steps`), its veths' host ends up (before the TCP
/// connections leave repair mode).
pub fn before_release(c: &pb::Container, plan: Option<&Plan>, root: Pid) -> R<()> {
    if c.clone_flags & libc::CLONE_NEWNS as u64 != 0 {
        let none = crate::mounts::Plan::default();
        let steps = crate::mounts::late_steps(plan.map_or(&none, |p| &p.mounts))?;
        ckpt_sys::ns::mount_inside(root, &steps)?;
    }
    if let Some(plan) = plan {
        plan.net.bring_up()?;
        if let Some(l) = &plan.external_lock {
            l.unlock()?;
        }
    }
    Ok(())
}

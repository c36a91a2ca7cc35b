//! A container's user namespace (`dump/src/userns.rs`): the root's seed is forked with
//! CLONE_NEWUSER among its flags, so the new user namespace owns the others made with
//! it; it waits on a pipe while ckpt writes its setgroups, uid_map and gid_map (a map
//! may be written once, by a process with CAP_SETUID/CAP_SETGID over the parent
//! namespace: ckpt), then goes on as root inside with every capability there.

use crate::{RestoreError, R};
use ckpt_images::pb;
use ckpt_sys::Pid;

/// Writes the dumped maps of `c` for the freshly forked `child`.
pub fn write_maps(child: Pid, c: &pb::Container) -> R<()> {
    for (file, value) in [
        (
            "setgroups",
            if c.setgroups_deny { "deny" } else { "allow" }.to_string(),
        ),
        ("uid_map", c.uid_map.clone()),
        ("gid_map", c.gid_map.clone()),
    ] {
        for line in value.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if file != "setgroups" && (f.len() != 3 || f[0] != f[1]) {
                return Err(RestoreError::Refused(format!(
                    "inventory.img: container: user namespace {file} line {line:?}: only \
                     identity ranges are restored"
                )));
            }
        }
        let text: String = if file == "setgroups" {
            value
        } else {
            value
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
                .collect()
        };
        let path = format!("/proc/{child}/{file}");
        std::fs::write(&path, &text)
            .map_err(|e| RestoreError::Refused(format!("writing {text:?} to {path}: {e}")))?;
    }
    Ok(())
}

/// The image is of a container with a user namespace of its own.
pub fn owned(inv: &pb::Inventory) -> bool {
    inv.container
        .as_ref()
        .is_some_and(|c| c.clone_flags & libc::CLONE_NEWUSER as u64 != 0)
}

/// Memory shared between processes is opened by each puppet through ckpt's /proc/PID/fd
/// (`shared.rs`), which a process in the container's user namespace may not do (no
/// ptrace access to ckpt): refused before anything is created.
pub fn check_shared(inv: &pb::Inventory, shared: Option<&crate::shared::SharedObjects>) -> R<()> {
    match shared {
        Some(s) if owned(inv) && !s.paths.is_empty() => Err(RestoreError::Refused(format!(
            "inventory.img: container: {} shared memory object(s) between its processes in \
             its own user namespace: not restored yet",
            s.paths.len()
        ))),
        _ => Ok(()),
    }
}

//! Anonymous pipes: one pipe2() per pipe, its capacity set (F_SETPIPE_SZ) and its unread
//! bytes written back before anyone holds it, then each end's description at its slot
//! with its own status flags. A second description of the same end (a reopen through
//! /proc/PID/fd) is opened again through /proc/self/fd, as it was made.

use ckpt_images::pb;
use ckpt_images::pb::PipeState;
use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{close, dup2};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// What an image's pipe description may hold.
pub fn check(d: &pb::FileDesc) -> Result<(), String> {
    let Some(p) = &d.pipe else {
        return Err(format!("description {}: a pipe without its state", d.id));
    };
    if p.size > super::MAX_PIPE || p.data.len() as u64 > p.size.max(65536) as u64 {
        return Err(format!(
            "description {}: pipe of {} bytes holding {}",
            d.id,
            p.size,
            p.data.len()
        ));
    }
    if !p.packets.is_empty()
        && (p.packets.contains(&0)
            || p.packets.iter().map(|&n| n as u64).sum::<u64>() != p.data.len() as u64)
    {
        return Err(format!(
            "description {}: {} packets that do not add up to its {} bytes",
            d.id,
            p.packets.len(),
            p.data.len()
        ));
    }
    if p.write_end != (d.flags & 3 == 1) {
        return Err(format!(
            "description {}: access mode {:#o} is not the pipe end it says",
            d.id,
            d.flags & 3
        ));
    }
    Ok(())
}

/// Creates the pipe whose descriptions are `descs` and puts each at its slot.
pub fn create(descs: &[(pb::FileDesc, RawFd)]) -> Result<(), String> {
    let pipe = |d: &pb::FileDesc| d.pipe.clone().unwrap_or_default();
    // Packet mode (O_DIRECT) is a property of the pipe: only pipe2() gives it.
    let direct = descs
        .iter()
        .any(|(d, _)| d.flags & OFlag::O_DIRECT.bits() as u32 != 0);
    let mut flags = OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
    if direct {
        flags |= OFlag::O_DIRECT;
    }
    let (r, w) = nix::unistd::pipe2(flags).map_err(|e| format!("pipe2: {e}"))?;
    let size = descs.iter().map(|(d, _)| pipe(d).size).max().unwrap_or(0);
    if size != 0 && ckpt_sys::pipe::capacity(&w).map_err(|e| e.to_string())? != size {
        ckpt_sys::pipe::set_capacity(&w, size).map_err(|e| e.to_string())?;
    }
    for (d, _) in descs {
        let PipeState { data, packets, .. } = pipe(d);
        if data.is_empty() {
            continue;
        }
        let mut f = std::fs::File::from(w.try_clone().map_err(|e| format!("dup: {e}"))?);
        let refill = |e| format!("refilling {} unread bytes: {e}", data.len());
        if packets.is_empty() {
            f.write_all(&data).map_err(refill)?;
            continue;
        }
        // One write each in packet mode (the slots' own flags are set below).
        fcntl(
            w.as_raw_fd(),
            FcntlArg::F_SETFL(OFlag::O_DIRECT | OFlag::O_NONBLOCK),
        )
        .map_err(|e| format!("F_SETFL O_DIRECT: {e}"))?;
        let mut at = 0;
        for n in packets {
            let chunk = &data[at..at + n as usize];
            if f.write(chunk).map_err(refill)? != chunk.len() {
                return Err(format!("refilling a packet of {n} bytes: a short write"));
            }
            at += n as usize;
        }
    }
    let (mut r_used, mut w_used) = (false, false);
    for (d, slot) in descs {
        let (end, used) = if pipe(d).write_end {
            (&w, &mut w_used)
        } else {
            (&r, &mut r_used)
        };
        let status = OFlag::from_bits_retain(d.flags as i32);
        if *used {
            reopen(end, status, *slot)?;
        } else {
            dup2(end.as_raw_fd(), *slot).map_err(|e| format!("dup2 to slot {slot}: {e}"))?;
            *used = true;
        }
        // The access mode is the end's; packet mode (O_DIRECT, which F_SETFL sets and
        // clears on a pipe) and the rest are the description's.
        let settable =
            status & (OFlag::O_NONBLOCK | OFlag::O_APPEND | OFlag::O_NOATIME | OFlag::O_DIRECT);
        fcntl(*slot, FcntlArg::F_SETFL(settable)).map_err(|e| format!("F_SETFL: {e}"))?;
    }
    Ok(())
}

/// Another description of the same pipe end, at `slot`.
fn reopen(end: &OwnedFd, status: OFlag, slot: RawFd) -> Result<(), String> {
    let link = format!("/proc/self/fd/{}", end.as_raw_fd());
    let fd = open(
        link.as_str(),
        (status & OFlag::O_ACCMODE) | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("reopening a pipe end: {e}"))?;
    let r = dup2(fd, slot);
    let _ = close(fd);
    r.map_err(|e| format!("dup2 to slot {slot}: {e}"))?;
    Ok(())
}

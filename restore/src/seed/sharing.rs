//! A seed's part of copy-on-write sharing (`crate::sharing`): before it forks its
//! children, it maps the regions they share with it at their addresses (inside ckpt's
//! reservation) and copies its pages into them from the pages file, which it maps as ckpt
//! did (it is a copy of ckpt).

use crate::fill;
use crate::sharing::Plan;
use ckpt_sys::reserve::Reservation;

/// Bytes copied per UFFDIO_COPY, each populated in the file's mapping first (a copy that
/// faults on its source takes the kernel's slow path).
const PIECE: u64 = 4 << 20;

/// What every seed needs for it.
pub struct Shared<'a> {
    pub plan: &'a Plan,
    pub reservation: &'a Reservation,
    pub source: &'a fill::Source<'a>,
}

/// Maps, drops and fills what the plan says for node `me`.
pub fn prepare(shared: Option<&Shared>, me: usize) -> Result<(), String> {
    let Some(s) = shared else {
        return Ok(());
    };
    let t = &s.plan.tasks[me];
    if t.regions.is_empty() {
        return Ok(());
    }
    let err = |e: ckpt_sys::Error| format!("memory shared with its children: {e}");
    for &(a, b) in &t.fresh {
        s.reservation.map_fresh(a, b).map_err(err)?;
    }
    for &(a, b) in &t.zap {
        s.reservation.zap(a, b).map_err(err)?;
    }
    let mut pieces = Vec::new();
    for r in &t.write {
        let len = r.nr_pages * ckpt_images::PAGE_SIZE as u64;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(PIECE);
            pieces.push((r.vaddr + done, r.offset + done, n));
            done += n;
        }
    }
    let mut bad = None;
    let copies = pieces
        .iter()
        .map_while(|&(at, off, n)| match s.source.reader.slice(off, n) {
            Ok(bytes) => {
                ckpt_sys::process::populate_read(s.source.map, off as usize, n as usize);
                Some((at, bytes))
            }
            Err(e) => {
                bad = Some(e.to_string());
                None
            }
        });
    s.reservation.fill(&t.regions, copies).map_err(err)?;
    match bad {
        Some(e) => Err(format!("memory shared with its children: {e}")),
        None => Ok(()),
    }
}

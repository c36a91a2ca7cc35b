//! The chain of rounds the destination restores: every parent link must name an earlier
//! round of the same migration (`../r<k>`, k below the round's own), never a path of the
//! peer's choosing (absolute, or `..` out of the migration's directory).

use crate::error::{HaulError, R};
use std::path::Path;

/// Refuses a chain from round `last` in `dir` with a link that leaves the migration.
pub(crate) fn check(dir: &Path, last: u16) -> R<()> {
    let mut round = last;
    loop {
        let d = ckpt_images::ImageDir::open_unverified(&dir.join(format!("r{round}")))?;
        let Some(link) = &d.inventory().parent else {
            return Ok(());
        };
        let k = link
            .dir
            .strip_prefix("../r")
            .and_then(|k| k.parse::<u16>().ok())
            .filter(|&k| k < round && link.dir == format!("../r{k}"));
        match k {
            // Strictly decreasing: ends.
            Some(k) => round = k,
            None => {
                return Err(HaulError::Protocol(format!(
                    "round {round}'s parent link {:?} is not an earlier round of this migration: refused",
                    link.dir
                )))
            }
        }
    }
}

//! The source's side of a growing file (protocol 4, `msg`): the final round's pages file
//! copied while the tree still runs (pages-2.img, `ckpt_dump::LiveSink`) goes over the
//! link pass by pass while the dump writes it, each pass's bytes sent before the next
//! pass begins. After the freeze only what the last pass left is sent with the rest of
//! the round: before, the whole file went then, and for a process writing 200 MiB/s that
//! was most of the downtime.
//!
//! The file is opened once and read through that descriptor: the dump writes it in its
//! staging directory, which is renamed into place when the image is finished.

use crate::error::{HaulError, R};
use crate::msg::Msg;
use crate::squeeze::Squeezer;
use crate::wire::Link;
use std::hash::Hasher;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The growing file of the final round, as far as it was sent.
pub(crate) struct Growing {
    pub name: String,
    file: std::fs::File,
    /// Bytes sent (the descriptor's position).
    pub sent: u64,
    hash: twox_hash::XxHash3_64,
    /// What went over the link for them.
    pub wire_bytes: u64,
}

/// Sends bytes `[sent, len)` of the pages file at `path` as one GROW (the first call
/// opens it).
pub(crate) async fn send(
    slot: &mut Option<Growing>,
    link: &mut Link,
    squeeze: &mut Squeezer,
    round: u16,
    path: &Path,
    len: u64,
) -> R<()> {
    let g = match slot {
        Some(g) => g,
        None => {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .filter(|n| crate::msg::plain_name(n))
                .ok_or_else(|| {
                    HaulError::Protocol(format!("{}: not an image name", path.display()))
                })?
                .to_string();
            let file = std::fs::File::open(path)
                .map_err(|e| HaulError::io(format!("{}", path.display()), e))?;
            slot.insert(Growing {
                name,
                file,
                sent: 0,
                hash: twox_hash::XxHash3_64::new(),
                wire_bytes: 0,
            })
        }
    };
    let first = g.sent == 0;
    g.append(link, squeeze, round, len).await?;
    if first {
        crate::migrate::hold("haul-live");
    }
    Ok(())
}

impl Growing {
    /// Sends what the file holds beyond what was sent, up to `len`.
    async fn append(
        &mut self,
        link: &mut Link,
        squeeze: &mut Squeezer,
        round: u16,
        len: u64,
    ) -> R<()> {
        if len < self.sent {
            return Err(HaulError::Protocol(format!(
                "{} shrank from {} to {len} bytes while sent",
                self.name, self.sent
            )));
        }
        if len == self.sent {
            return Ok(());
        }
        let (k, b) = Msg::Grow {
            round,
            name: self.name.clone(),
            more: len - self.sent,
        }
        .encode();
        link.send(k, &b).await?;
        self.wire_bytes += crate::migrate::send_data(
            link,
            squeeze,
            &mut self.file,
            &self.name,
            len - self.sent,
            &mut self.hash,
            &mut || {},
        )
        .await?;
        self.sent = len;
        Ok(())
    }

    /// At the final round's send, the file now at `path` (the same one, moved into the
    /// finished image): the rest of it, then GROWN with the xxh3 of all of it. Returns
    /// its size and what went over the link for it in all.
    pub(crate) async fn close(
        mut self,
        link: &mut Link,
        squeeze: &mut Squeezer,
        round: u16,
        path: &Path,
    ) -> R<(u64, u64)> {
        let io = |e| HaulError::io(format!("{}", path.display()), e);
        let here = self.file.metadata().map_err(io)?;
        let there = std::fs::metadata(path).map_err(io)?;
        if (here.dev(), here.ino()) != (there.dev(), there.ino()) {
            return Err(HaulError::Protocol(format!(
                "{}: not the file sent before the freeze",
                path.display()
            )));
        }
        self.append(link, squeeze, round, here.len()).await?;
        let (k, b) = Msg::Grown {
            xxh3: self.hash.finish(),
        }
        .encode();
        link.send(k, &b).await?;
        Ok((here.len(), self.wire_bytes))
    }
}

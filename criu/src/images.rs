//! CRIU-format records beside ckpt's own image, for the tools around CRIU that read an
//! image directory themselves: podman (and CRI-O) refuse to restore from a directory
//! without `inventory.img`. What is written is true and minimal: an inventory of CRIU's
//! image version 1.1, whose `fdinfo_per_id` and `ns_per_id` say how CRIU itself would
//! lay out the rest; and `stats-dump`, the dump's times and pages (podman's `checkpoint
//! --export` archives it). ckpt's own image (`ckpt/`) is what a restore reads.
//!
//! The format, as CRIU defines it: a file starts with two little-endian u32 magics
//! (IMG_COMMON_MAGIC, or IMG_SERVICE_MAGIC for statistics, then the image's own), then
//! each entry is a little-endian u32 length and that many bytes of protobuf
//! (`InventoryEntry`, `StatsEntry`: field numbers and types taken from CRIU's
//! images/inventory.proto and stats.proto).

use std::path::Path;

const IMG_COMMON_MAGIC: u32 = 0x5476_4319;
/// Service images (statistics) start with this one instead.
const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
const INVENTORY_MAGIC: u32 = 0x5831_3116;
const STATS_MAGIC: u32 = 0x5709_3306;
/// CRIU_IMAGES_V1_1.
const IMAGES_V1_1: u32 = 2;

#[derive(Clone, PartialEq, prost::Message)]
struct InventoryEntry {
    #[prost(uint32, required, tag = "1")]
    img_version: u32,
    #[prost(bool, optional, tag = "2")]
    fdinfo_per_id: Option<bool>,
    #[prost(bool, optional, tag = "4")]
    ns_per_id: Option<bool>,
    /// Seconds since boot, as CRIU records it (podman shows how old a checkpoint is).
    #[prost(uint64, optional, tag = "8")]
    dump_uptime: Option<u64>,
}

/// CRIU's stats.proto `dump_stats_entry`: every field the schema requires (readers in Go
/// refuse a record without them). Times in microseconds.
#[derive(Clone, PartialEq, prost::Message)]
struct DumpStatsEntry {
    #[prost(uint32, required, tag = "1")]
    freezing_time: u32,
    #[prost(uint32, required, tag = "2")]
    frozen_time: u32,
    #[prost(uint32, required, tag = "3")]
    memdump_time: u32,
    #[prost(uint32, required, tag = "4")]
    memwrite_time: u32,
    #[prost(uint64, required, tag = "5")]
    pages_scanned: u64,
    #[prost(uint64, required, tag = "6")]
    pages_skipped_parent: u64,
    #[prost(uint64, required, tag = "7")]
    pages_written: u64,
    /// Required too (in the schema podman reads): pages left for a lazy restore, none.
    #[prost(uint64, required, tag = "9")]
    pages_lazy: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    dump: Option<DumpStatsEntry>,
}

/// One image file: two magics, one sized entry; written aside and renamed into place.
fn write_image(images: &Path, name: &str, magics: [u32; 2], body: &[u8]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(12 + body.len());
    bytes.extend_from_slice(&magics[0].to_le_bytes());
    bytes.extend_from_slice(&magics[1].to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(body);
    let tmp = images.join(format!(".{name}.ckpt-new"));
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, images.join(name))
}

/// Writes `stats-dump` (what podman's `checkpoint --export` archives and checkpointctl
/// shows) from the dump's own measures: frozen time, memory copy time, pages written.
pub fn write_dump_stats(images: &Path, st: &ckpt_dump::DumpStats) -> std::io::Result<()> {
    let us = |ms: f64| (ms * 1000.0).round().clamp(0.0, u32::MAX as f64) as u32;
    let entry = StatsEntry {
        dump: Some(DumpStatsEntry {
            freezing_time: 0,
            frozen_time: us(st.frozen_ms),
            memdump_time: us(st.memory_ms),
            memwrite_time: us(st.memory_ms),
            pages_scanned: st.pages,
            pages_skipped_parent: 0,
            pages_written: st.pages,
            pages_lazy: 0,
        }),
    };
    let body = prost::Message::encode_to_vec(&entry);
    write_image(
        images,
        "stats-dump",
        [IMG_SERVICE_MAGIC, STATS_MAGIC],
        &body,
    )
}

/// Writes `inventory.img` in `images` (the CRIU images directory, beside ckpt's subdir).
pub fn write_inventory(images: &Path) -> std::io::Result<()> {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next()?.parse::<u64>().ok())
        .map(|s| s * 1_000_000);
    let entry = InventoryEntry {
        img_version: IMAGES_V1_1,
        fdinfo_per_id: Some(true),
        ns_per_id: Some(true),
        dump_uptime: uptime,
    };
    let body = prost::Message::encode_to_vec(&entry);
    write_image(
        images,
        "inventory.img",
        [IMG_COMMON_MAGIC, INVENTORY_MAGIC],
        &body,
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn inventory_is_two_magics_and_one_sized_entry() {
        let dir = std::env::temp_dir().join(format!("ckpt-criu-inv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        super::write_inventory(&dir).unwrap();
        let b = std::fs::read(dir.join("inventory.img")).unwrap();
        assert_eq!(&b[..8], &[0x19, 0x43, 0x76, 0x54, 0x16, 0x31, 0x31, 0x58]);
        let len = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        assert_eq!(b.len(), 12 + len);
        let e: super::InventoryEntry = prost::Message::decode(&b[12..]).unwrap();
        assert_eq!(e.img_version, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

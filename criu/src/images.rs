//! CRIU-format records beside ckpt's own image, for the tools around CRIU that read an
//! image directory themselves: podman (and CRI-O) refuse to restore from a directory
//! without `inventory.img`. What is written is true and minimal: an inventory of CRIU's
//! image version 1.1, whose `fdinfo_per_id` and `ns_per_id` say how CRIU itself would
//! lay out the rest; ckpt's own image (`ckpt/`) is what a restore reads.
//!
//! The format, as CRIU defines it: a file starts with two little-endian u32 magics
//! (IMG_COMMON_MAGIC, then the image's own: INVENTORY_MAGIC), then each entry is a
//! little-endian u32 length and that many bytes of protobuf (`InventoryEntry`, CRIU's
//! images/inventory.proto: field numbers and types taken from it).

use std::path::Path;

const IMG_COMMON_MAGIC: u32 = 0x5476_4319;
const INVENTORY_MAGIC: u32 = 0x5831_3116;
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
    let mut bytes = Vec::with_capacity(12 + body.len());
    bytes.extend_from_slice(&IMG_COMMON_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&INVENTORY_MAGIC.to_le_bytes());
    bytes.extend_from_slice(&(body.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&body);
    let path = images.join("inventory.img");
    let tmp = images.join(".inventory.img.ckpt-new");
    std::fs::write(&tmp, &bytes)?;
    std::fs::rename(&tmp, &path)
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

//! The 8-byte header every image file starts with: magic, kind, format version.

use crate::error::{ImageError, Result};
use std::path::Path;

pub const MAGIC: [u8; 4] = *b"CKPT";
pub const HEADER_LEN: usize = 8;
/// Bumped whenever old code would misread new images. 3: a tree's per-process record
/// files packed into procs.img (`Inventory.packed`).
pub const FORMAT_VERSION: u16 = 3;
/// The oldest format this code reads: a version 2 image is a version 3 one without packs.
pub const OLDEST_READ_VERSION: u16 = 2;

/// What an image file holds; stored in the header so a file renamed by mistake is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum Kind {
    Inventory = 1,
    Core = 2,
    Mm = 3,
    Pagemap = 4,
    Pages = 5,
    Files = 6,
    FileTable = 7,
    ParentMap = 8,
    /// The per-process record files of a tree, back to back (`procs.img`).
    Pack = 9,
    /// A container's tmpfs files (`mounts.img`).
    Mounts = 24,
    /// A container's IPC objects (`ipc.img`).
    Ipc = 25,
    /// The bytes of its SysV shared memory (`ipcshm.img`).
    IpcShm = 26,
}

impl Kind {
    pub fn from_u16(v: u16) -> Option<Kind> {
        Some(match v {
            1 => Kind::Inventory,
            2 => Kind::Core,
            3 => Kind::Mm,
            4 => Kind::Pagemap,
            5 => Kind::Pages,
            6 => Kind::Files,
            7 => Kind::FileTable,
            8 => Kind::ParentMap,
            9 => Kind::Pack,
            24 => Kind::Mounts,
            25 => Kind::Ipc,
            26 => Kind::IpcShm,
            _ => return None,
        })
    }

    /// The kind a file name implies (`core-12.img` is Core).
    pub fn for_name(name: &str) -> Option<Kind> {
        let stem = name.strip_suffix(".img")?;
        let prefix = stem.split('-').next()?;
        Some(match prefix {
            "inventory" => Kind::Inventory,
            "core" => Kind::Core,
            "mm" => Kind::Mm,
            "pagemap" => Kind::Pagemap,
            "pages" => Kind::Pages,
            "files" => Kind::Files,
            "fdtable" => Kind::FileTable,
            "parentmap" => Kind::ParentMap,
            "procs" => Kind::Pack,
            "mounts" => Kind::Mounts,
            "ipc" => Kind::Ipc,
            "ipcshm" => Kind::IpcShm,
            _ => return None,
        })
    }
}

impl Kind {
    /// A kind of which each process has a file of its own: packed into procs.img in a
    /// tree's image.
    pub fn per_process(self) -> bool {
        matches!(
            self,
            Kind::Core | Kind::Mm | Kind::Files | Kind::Pagemap | Kind::ParentMap
        )
    }
}

pub fn encode(kind: Kind) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4..6].copy_from_slice(&(kind as u16).to_le_bytes());
    h[6..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Checks magic, kind and version, in that order, so the message says the most useful thing.
pub fn check(path: &Path, bytes: &[u8], expected: Kind) -> Result<()> {
    if bytes.len() < HEADER_LEN {
        if bytes.len() >= 4 && bytes[..4] != MAGIC {
            return Err(ImageError::BadMagic { path: path.into() });
        }
        return Err(ImageError::Truncated {
            path: path.into(),
            what: "header".into(),
        });
    }
    if bytes[..4] != MAGIC {
        return Err(ImageError::BadMagic { path: path.into() });
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if !(OLDEST_READ_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(ImageError::Version {
            path: path.into(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let kind = u16::from_le_bytes([bytes[4], bytes[5]]);
    if kind != expected as u16 {
        return Err(ImageError::WrongKind {
            path: path.into(),
            expected,
            found: kind,
        });
    }
    Ok(())
}

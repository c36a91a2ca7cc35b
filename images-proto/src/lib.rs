//! The ckpt image format: the protobuf schema, the framing of image files, per-file
//! checksums and the raw page store. This crate knows nothing about processes; it only
//! turns records into files and back, and refuses anything it cannot trust.

pub mod chain;
pub mod chunks;
pub mod diff;
pub mod dir;
mod dirlock;
pub mod error;
pub mod hash;
pub mod header;
pub mod intervals;
pub mod pages;
pub mod progress;
pub mod record;
pub mod shape;
pub mod show;
mod staging;
pub mod summary;
pub mod units;
pub mod validate;

/// Generated from `proto/ckpt.proto`.
pub mod pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/ckpt.rs"));
}

pub use dir::{ImageDir, ImageSink};
pub use error::{ImageError, Result};
pub use header::{Kind, FORMAT_VERSION, HEADER_LEN, MAGIC};
pub use pages::{PagesHasher, PagesReader, PagesWriter, PAGE_SIZE};
pub use record::{RecordReader, RecordWriter};

/// Names of the image files, in one place so dump, restore and show agree.
pub mod names {
    pub const INVENTORY: &str = "inventory.img";
    pub fn core(pid: i32) -> String {
        format!("core-{pid}.img")
    }
    pub fn mm(pid: i32) -> String {
        format!("mm-{pid}.img")
    }
    pub fn pagemap(pid: i32) -> String {
        format!("pagemap-{pid}.img")
    }
    pub fn parentmap(pid: i32) -> String {
        format!("parentmap-{pid}.img")
    }
    pub fn files(pid: i32) -> String {
        format!("files-{pid}.img")
    }
    /// The per-process record files of a tree, packed (`Inventory.packed`).
    pub const PROCS: &str = "procs.img";
    /// The tree's open file descriptions (one file for the whole tree).
    pub const FDTABLE: &str = "fdtable.img";
    /// A container's tmpfs files.
    pub const MOUNTS: &str = "mounts.img";
    /// A container's IPC objects, and its SysV segments' bytes.
    pub const IPC: &str = "ipc.img";
    pub const IPC_SHM: &str = "ipcshm.img";
    pub fn pages(id: u32) -> String {
        format!("pages-{id}.img")
    }
}

//! ckpt as a drop-in for CRIU. Container engines do not call a checkpoint tool by hand:
//! runc, podman and CRI-O start `criu swrk N` and speak CRIU's RPC over a SEQPACKET socket;
//! LXC runs the `criu dump|restore` command line. Started as `criu` (argv[0], e.g. a
//! symlink in a PATH directory) or as `ckpt criu ...`, ckpt answers both with its own dump
//! and restore. Every option is either mapped to what ckpt does, accepted because ckpt
//! does at least as much without being asked (named in `opts.rs`), or refused by name:
//! none is dropped silently.

#![forbid(unsafe_code)]

mod cgroups;
mod cli;
mod console;
mod error;
mod external;
mod images;
mod log;
mod mount_names;
mod notify;
mod opts;
mod page_server;
mod run;
mod swrk;
mod version;

/// CRIU's RPC messages (proto/rpc.proto, MIT, see proto/ORIGIN.md).
pub mod rpc {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// CRIU's image records (proto/images/, MIT, see proto/ORIGIN.md): what ckpt writes
/// beside its own image for the tools that read a CRIU image directory.
pub mod image_pb {
    #![allow(clippy::all)]
    include!(concat!(env!("OUT_DIR"), "/images/_.rs"));
}

pub use error::CriuError;
pub use version::{VERSION, VERSION_TEXT};

/// Whether ckpt was started under CRIU's name (argv[0]'s last component is `criu`).
pub fn started_as_criu(argv0: &str) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == "criu")
}

/// Runs CRIU's command line (`args` without the program name); the exit code.
pub fn main(args: &[String]) -> i32 {
    cli::main(args)
}

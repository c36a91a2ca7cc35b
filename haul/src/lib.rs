//! Live migration (`ckpt haul serve`, `ckpt migrate`): a process tree's images streamed
//! to another host over an authenticated, encrypted link, restored there, and only then
//! killed here.
//!
//! - `key`: the pre-shared key file both ends must hold;
//! - `wire`: the link: a version hello in clear, a Noise handshake that proves the key
//!   both ways, then length-prefixed encrypted frames with hard size limits and a stall
//!   timeout on every read and write;
//! - `msg`: what the frames carry (files of a round, round ends, the verdict);
//! - `serve`: the destination: the key proven within a deadline before a migration slot
//!   is taken, one directory per migration, named here, files checked against their size
//!   and hash;
//! - `dirlock`: the server's lock on `--dir`; a crashed server's leftovers removed;
//! - `chain`: the rounds' parent links, held inside the migration;
//! - `restore`: the last round restored with `restore --new-pidns`, the link watched
//!   meanwhile (an abort stops it and kills the copy);
//! - `postcopy`: the destination's side of post-copy: the copy restored lazily, its
//!   pages written as they come, the chunks it waits for asked first;
//! - `live`: the final round's pages copied before the freeze, sent pass by pass while
//!   the dump writes them;
//! - `push`: the source's side of post-copy: the chunks asked for first, then the rest;
//! - `squeeze`: zstd on the wire, for the chunks where it pays;
//! - `source`: the thread that dumps and holds the tree (ptrace answers only it);
//! - `migrate`: the source's side of the protocol: rounds, verdict, kill or resume;
//! - `report`: what a migration measured (`--json`).
#![forbid(unsafe_code)]

mod chain;
mod dirlock;
mod error;
pub mod key;
mod live;
mod migrate;
mod msg;
mod postcopy;
mod push;
pub mod report;
mod restore;
mod serve;
mod source;
mod squeeze;
mod wire;

pub use error::HaulError;
pub use migrate::{migrate, MigrateOptions};
pub use report::{Report, Round};
pub use serve::{serve, ServeOptions};

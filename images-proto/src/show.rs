//! Decoding a whole image directory to JSON (what `crit` is to CRIU).
//!
//! Once the inventory is read, a damaged file does not stop the output: every listed file
//! gets its own `status` (and the error, if any), so one look shows everything that is
//! wrong with a set, not just the first thing.

use crate::dir::ImageDir;
use crate::error::{ImageError, Result};
use crate::header::Kind;
use crate::pb;
use serde_json::{json, Value};

/// The JSON of a set, and whether every file in it verified and decoded.
pub struct Shown {
    pub json: Value,
    pub intact: bool,
}

/// Every record of every file, as JSON; pages files are summarised, not dumped. Each file
/// is verified against the inventory first and decoded only if it holds.
pub fn to_json(d: &ImageDir) -> Shown {
    let mut files = serde_json::Map::new();
    let mut intact = true;
    for f in d.entries() {
        let v = match d.verify_file(f).and_then(|()| decode(d, f)) {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.insert("status".into(), json!("ok"));
                }
                v
            }
            Err(e) => {
                intact = false;
                json!({ "status": status(&e), "error": e.to_string() })
            }
        };
        files.insert(f.name.clone(), v);
    }
    Shown {
        json: json!({ "inventory": d.inventory(), "intact": intact, "files": files }),
        intact,
    }
}

/// One word for what is wrong with a file.
pub fn status(e: &ImageError) -> &'static str {
    match e {
        ImageError::Io { err, .. } if err.kind() == std::io::ErrorKind::NotFound => "missing",
        ImageError::Size {
            found, expected, ..
        } if found < expected => "truncated",
        ImageError::Size { .. } => "size mismatch",
        ImageError::Truncated { .. } => "truncated",
        ImageError::Checksum { .. } => "checksum mismatch",
        _ => "invalid",
    }
}

fn decode(d: &ImageDir, f: &pb::ImageFile) -> Result<Value> {
    Ok(match Kind::for_name(&f.name) {
        Some(Kind::Core) => {
            let mut r = d.records_of(f, Kind::Core)?;
            let process: pb::ProcessCore = r.expect("ProcessCore")?;
            let threads: Vec<pb::ThreadCore> = r.rest("ThreadCore")?;
            json!({ "process": process, "threads": threads.iter().map(thread_json).collect::<Vec<_>>() })
        }
        Some(Kind::Mm) => {
            let mut r = d.records_of(f, Kind::Mm)?;
            let mm: pb::MmInfo = r.expect("MmInfo")?;
            let vmas: Vec<pb::Vma> = r.rest("Vma")?;
            json!({ "mm": mm, "vmas": vmas })
        }
        Some(Kind::Pagemap) => {
            let mut r = d.records_of(f, Kind::Pagemap)?;
            let head: pb::PagemapHead = r.expect("PagemapHead")?;
            let runs: Vec<pb::PageRun> = r.rest("PageRun")?;
            json!({ "head": head, "runs": runs })
        }
        Some(Kind::ParentMap) => {
            let mut r = d.records_of(f, Kind::ParentMap)?;
            let runs: Vec<pb::ParentRun> = r.rest("ParentRun")?;
            json!({ "parent_runs": runs })
        }
        Some(Kind::Files) => {
            let mut r = d.records_of(f, Kind::Files)?;
            let fds: Vec<pb::Fd> = r.rest("Fd")?;
            json!({ "fds": fds })
        }
        Some(Kind::FileTable) => {
            let mut r = d.records_of(f, Kind::FileTable)?;
            let descs: Vec<pb::FileDesc> = r.rest("FileDesc")?;
            json!({ "descs": descs })
        }
        Some(Kind::Mounts) => {
            let mut r = d.records_of(f, Kind::Mounts)?;
            let files: Vec<pb::MountFile> = r.rest("MountFile")?;
            let files: Vec<Value> = files
                .iter()
                .map(|m| {
                    json!({ "mount": m.mount, "path": m.path, "mode": m.mode,
                    "bytes": m.data.len(), "offset": m.offset, "symlink": m.symlink,
                    "link_to": m.link_to })
                })
                .collect();
            json!({ "files": files })
        }
        Some(Kind::Ipc) => {
            let mut r = d.records_of(f, Kind::Ipc)?;
            let objects: Vec<pb::IpcObject> = r.rest("IpcObject")?;
            json!({ "objects": objects.iter().map(|o| json!({ "kind": o.kind, "id": o.id,
                "key": o.key, "name": o.name, "size": o.size, "sem_values": o.sem_values,
                "messages": o.messages.len() })).collect::<Vec<_>>() })
        }
        Some(Kind::IpcShm) => {
            let mut r = d.records_of(f, Kind::IpcShm)?;
            let pieces: Vec<pb::ShmPiece> = r.rest("ShmPiece")?;
            json!({ "pieces": pieces.iter().map(|p| json!({ "id": p.id, "offset": p.offset,
                "bytes": p.data.len() })).collect::<Vec<_>>() })
        }
        Some(Kind::Pages) => json!({ "pages": (f.size.saturating_sub(4096)) / 4096 }),
        _ => json!({}),
    })
}

/// xsave areas are kilobytes of mostly zeros: show their size, not every byte.
fn thread_json(t: &pb::ThreadCore) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("xsave".into(), json!({ "bytes": t.xsave.len() }));
    }
    v
}

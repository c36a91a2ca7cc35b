//! Decoding a whole image directory to JSON (what `crit` is to CRIU).

use crate::dir::ImageDir;
use crate::error::Result;
use crate::header::Kind;
use crate::pb;
use serde_json::{json, Value};

/// Every record of every file, as JSON. Pages files are summarised, not dumped.
pub fn to_json(d: &ImageDir) -> Result<Value> {
    let mut files = serde_json::Map::new();
    for f in &d.inventory().files {
        let kind = Kind::for_name(&f.name);
        let v = match kind {
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
            Some(Kind::Files) => {
                let mut r = d.records_of(f, Kind::Files)?;
                let fds: Vec<pb::Fd> = r.rest("Fd")?;
                json!({ "fds": fds })
            }
            Some(Kind::Pages) => json!({ "pages": (f.size.saturating_sub(4096)) / 4096 }),
            _ => json!(null),
        };
        files.insert(f.name.clone(), v);
    }
    Ok(json!({ "inventory": d.inventory(), "files": files }))
}

/// xsave areas are kilobytes of mostly zeros: show their size, not every byte.
fn thread_json(t: &pb::ThreadCore) -> Value {
    let mut v = serde_json::to_value(t).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("xsave".into(), json!({ "bytes": t.xsave.len() }));
    }
    v
}

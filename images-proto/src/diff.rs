//! `ckpt show --diff A B`: what differs between two image sets.
//!
//! Records are compared field by field through their JSON form (so a field added to the
//! schema is compared without code here); collections are matched by identity, not by
//! position: processes by pid, threads by tid, VMAs by start address, fds by number,
//! signal actions by signal, rlimits by resource, files by name.

use crate::pb;
use crate::summary::{
    fd_kind_name, human_bytes, memory_by_kind, open_flags_string, pages_in_runs, prot_string, utc,
    vma_kind_name, ImageSet, ProcessImages,
};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

/// One difference: `a` is the value in the first set, `b` in the second; `None` where the
/// thing is absent from that set.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Change {
    pub path: String,
    pub a: Option<Value>,
    pub b: Option<Value>,
}

fn change(out: &mut Vec<Change>, path: impl Into<String>, a: Option<Value>, b: Option<Value>) {
    out.push(Change {
        path: path.into(),
        a,
        b,
    });
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// Arrays of scalars longer than this (byte fields: xsave, auxv, siginfo) are summarised.
const LONG_ARRAY: usize = 8;

/// Field-by-field comparison of two JSON values.
pub fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<Change>) {
    if a == b {
        return;
    }
    match (a, b) {
        (Value::Object(ma), Value::Object(mb)) => {
            for (k, va) in ma {
                match mb.get(k) {
                    Some(vb) => walk(&join(path, k), va, vb, out),
                    None => change(out, join(path, k), Some(va.clone()), None),
                }
            }
            for (k, vb) in mb {
                if !ma.contains_key(k) {
                    change(out, join(path, k), None, Some(vb.clone()));
                }
            }
        }
        (Value::Array(xa), Value::Array(xb))
            if xa.iter().all(is_scalar) && xb.iter().all(is_scalar) =>
        {
            if xa.len() <= LONG_ARRAY && xb.len() <= LONG_ARRAY {
                change(out, path, Some(a.clone()), Some(b.clone()));
            } else {
                let differ =
                    xa.iter().zip(xb).filter(|(x, y)| x != y).count() + xa.len().abs_diff(xb.len());
                change(
                    out,
                    path,
                    Some(json!(format!("{} items", xa.len()))),
                    Some(json!(format!("{} items, {differ} differ", xb.len()))),
                );
            }
        }
        (Value::Array(xa), Value::Array(xb)) => {
            for (i, (x, y)) in xa.iter().zip(xb).enumerate() {
                walk(&format!("{path}[{i}]"), x, y, out);
            }
            for (i, x) in xa.iter().enumerate().skip(xb.len()) {
                change(out, format!("{path}[{i}]"), Some(x.clone()), None);
            }
            for (i, y) in xb.iter().enumerate().skip(xa.len()) {
                change(out, format!("{path}[{i}]"), None, Some(y.clone()));
            }
        }
        _ => change(out, path, Some(a.clone()), Some(b.clone())),
    }
}

/// The first item of each key (a valid image has one per key), in key order.
fn index_by<'a, T, K: Ord>(items: &'a [T], key: &impl Fn(&T) -> K) -> BTreeMap<K, &'a T> {
    let mut m = BTreeMap::new();
    for t in items.iter().rev() {
        m.insert(key(t), t);
    }
    m
}

fn by_pid(s: &ImageSet) -> HashMap<i32, &ProcessImages> {
    s.processes.iter().map(|p| (p.pid, p)).collect()
}

/// Compares two collections matched by a key: present in one only -> one change holding
/// `line` of the item; in both -> field by field.
#[allow(clippy::too_many_arguments)]
fn keyed<T, K: Ord + Clone>(
    path: &str,
    a: &[T],
    b: &[T],
    key: impl Fn(&T) -> K,
    label: impl Fn(&K) -> String,
    line: impl Fn(&T) -> Value,
    to_json: impl Fn(&T) -> Value,
    out: &mut Vec<Change>,
) {
    let (ia, ib) = (index_by(a, &key), index_by(b, &key));
    let mut keys: Vec<&K> = ia.keys().chain(ib.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        let p = join(path, &label(k));
        match (ia.get(k), ib.get(k)) {
            (Some(x), Some(y)) => walk(&p, &to_json(x), &to_json(y), out),
            (Some(x), None) => change(out, p, Some(line(x)), None),
            (None, Some(y)) => change(out, p, None, Some(line(y))),
            (None, None) => {}
        }
    }
}

fn value<T: serde::Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

/// An object field that is an array of objects, re-keyed by one of their fields.
fn rekey(v: &mut Value, field: &str, by: &str, prefix: &str) {
    if let Some(Value::Array(items)) = v.get(field) {
        let mut m = Map::new();
        for (i, it) in items.iter().enumerate() {
            let k = match it.get(by) {
                Some(Value::Number(n)) => format!("{prefix}{n}"),
                Some(Value::String(s)) => format!("{prefix}{s}"),
                _ => format!("{prefix}#{i}"),
            };
            m.insert(k, it.clone());
        }
        v[field] = Value::Object(m);
    }
}

fn core_json(c: &pb::ProcessCore) -> Value {
    let mut v = value(c);
    rekey(&mut v, "sigactions", "signo", "signal ");
    rekey(&mut v, "rlimits", "resource", "resource ");
    rekey(&mut v, "itimers", "which", "which ");
    v
}

fn mm_json(m: &pb::MmInfo) -> Value {
    let mut v = value(m);
    rekey(&mut v, "vdso_parts", "name", "");
    v
}

fn vma_json(v: &pb::Vma) -> Value {
    let mut j = value(v);
    j["kind"] = json!(vma_kind_name(v.kind));
    j["prot"] = json!(prot_string(v.prot, v.kind));
    j
}

fn vma_line(v: &pb::Vma) -> Value {
    json!(format!(
        "{:#x}-{:#x} {} {} {}{}",
        v.start,
        v.end,
        prot_string(v.prot, v.kind),
        vma_kind_name(v.kind),
        human_bytes(v.end.saturating_sub(v.start)),
        if v.name.is_empty() {
            String::new()
        } else {
            format!(" {}", v.name)
        }
    ))
}

fn fd_json(f: &pb::Fd) -> Value {
    let mut j = value(f);
    j["kind"] = json!(fd_kind_name(f.kind));
    j["flags"] = json!(open_flags_string(f.flags));
    j
}

fn fd_line(f: &pb::Fd) -> Value {
    json!(format!(
        "{} {} {}",
        fd_kind_name(f.kind),
        open_flags_string(f.flags),
        f.path
    ))
}

/// Every difference between set `a` and set `b`.
pub fn diff(a: &ImageSet, b: &ImageSet) -> Vec<Change> {
    let mut out = Vec::new();
    let strip = |inv: &pb::Inventory| {
        let mut v = value(inv);
        if let Some(o) = v.as_object_mut() {
            o.remove("files");
        }
        v
    };
    walk(
        "inventory",
        &strip(&a.inventory),
        &strip(&b.inventory),
        &mut out,
    );

    // Files by name: presence, size, content, verification.
    keyed(
        "",
        &a.files,
        &b.files,
        |f| f.name.clone(),
        |k| format!("file {k}"),
        |f| json!(human_bytes(f.size)),
        |f| {
            json!({
                "size": f.size,
                "xxh3": format!("{:016x}", f.xxh3),
                "verified": match &f.result { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
            })
        },
        &mut out,
    );

    // Processes by pid; a set of one process is compared with a set of one process even
    // when the pids differ (two dumps of different runs of the same program).
    let (pa_by, pb_by) = (by_pid(a), by_pid(b));
    let only_a: Vec<&ProcessImages> = a
        .processes
        .iter()
        .filter(|p| !pb_by.contains_key(&p.pid))
        .collect();
    let only_b: Vec<&ProcessImages> = b
        .processes
        .iter()
        .filter(|p| !pa_by.contains_key(&p.pid))
        .collect();
    for pa in &a.processes {
        if let Some(pb_) = pb_by.get(&pa.pid) {
            process(&format!("pid {}", pa.pid), pa, pb_, &mut out);
        }
    }
    if let ([pa], [pb_]) = (only_a.as_slice(), only_b.as_slice()) {
        process(&format!("pid {}->{}", pa.pid, pb_.pid), pa, pb_, &mut out);
    } else {
        for pa in &only_a {
            let p = format!("pid {}", pa.pid);
            change(&mut out, p, Some(json!("present")), None);
        }
        for pb_ in &only_b {
            let p = format!("pid {}", pb_.pid);
            change(&mut out, p, None, Some(json!("present")));
        }
    }
    out
}

fn opt<T>(
    path: &str,
    a: &Option<T>,
    b: &Option<T>,
    f: impl Fn(&T) -> Value,
    out: &mut Vec<Change>,
) {
    match (a, b) {
        (Some(x), Some(y)) => walk(path, &f(x), &f(y), out),
        (Some(_), None) => change(out, path, Some(json!("decoded")), Some(json!("unreadable"))),
        (None, Some(_)) => change(out, path, Some(json!("unreadable")), Some(json!("decoded"))),
        (None, None) => {}
    }
}

fn process(base: &str, a: &ProcessImages, b: &ProcessImages, out: &mut Vec<Change>) {
    opt(&join(base, "process"), &a.core, &b.core, core_json, out);
    match (a.threads.as_slice(), b.threads.as_slice()) {
        ([ta], [tb]) if ta.tid != tb.tid => walk(
            &join(base, &format!("thread {}->{}", ta.tid, tb.tid)),
            &value(ta),
            &value(tb),
            out,
        ),
        _ => keyed(
            base,
            &a.threads,
            &b.threads,
            |t| t.tid,
            |k| format!("thread {k}"),
            |_| json!("present"),
            value,
            out,
        ),
    }
    opt(&join(base, "mm"), &a.mm, &b.mm, mm_json, out);
    keyed(
        base,
        &a.vmas,
        &b.vmas,
        |v| v.start,
        |k| format!("vma {k:#x}"),
        vma_line,
        vma_json,
        out,
    );
    // Memory totals by kind, then the page store.
    let (ka, oa) = memory_by_kind(&a.vmas, &a.runs);
    let (kb, ob) = memory_by_kind(&b.vmas, &b.runs);
    let stats = |k: &[crate::summary::KindStat], outside: u64| {
        let mut m = Map::new();
        for s in k {
            m.insert(
                s.kind.clone(),
                json!({ "vmas": s.vmas, "bytes": s.bytes, "pages_stored": s.pages_stored }),
            );
        }
        if outside > 0 {
            m.insert("outside any vma".into(), json!({ "pages_stored": outside }));
        }
        Value::Object(m)
    };
    walk(&join(base, "memory"), &stats(&ka, oa), &stats(&kb, ob), out);
    opt(&join(base, "pagemap"), &a.pagemap, &b.pagemap, value, out);
    let summary =
        |p: &ProcessImages| json!({ "runs": p.runs.len(), "pages stored": pages_in_runs(&p.runs) });
    walk(&join(base, "pagemap"), &summary(a), &summary(b), out);
    match (&a.fds, &b.fds) {
        (Some(fa), Some(fb)) => keyed(
            base,
            fa,
            fb,
            |f| f.fd,
            |k| format!("fd {k}"),
            fd_line,
            fd_json,
            out,
        ),
        (x, y) => opt(&join(base, "fds"), x, y, |_| Value::Null, out),
    }
    if a.errors != b.errors {
        change(
            out,
            join(base, "errors"),
            Some(json!(a.errors)),
            Some(json!(b.errors)),
        );
    }
}

/// Fields shown in hex in the human form.
fn hex_field(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    path.contains(".regs.")
        || matches!(
            last,
            "start"
                | "end"
                | "start_code"
                | "end_code"
                | "start_data"
                | "end_data"
                | "start_brk"
                | "brk"
                | "start_stack"
                | "arg_start"
                | "arg_end"
                | "env_start"
                | "env_end"
                | "vdso_block_start"
                | "vdso_block_len"
                | "sigmask"
                | "robust_list"
                | "tid_address"
                | "ptr"
                | "sp"
                | "handler"
                | "restorer"
                | "mask"
                | "vaddr"
                | "xsave_features"
                | "vdso_xxh3"
                | "cpu_affinity"
                | "cap_inh"
                | "cap_prm"
                | "cap_eff"
                | "cap_bnd"
                | "cap_amb"
        )
}

fn show(path: &str, v: &Value) -> String {
    match v {
        Value::Number(n) if path.ends_with("dumped_at_unix_ms") => {
            n.as_u64().map(utc).unwrap_or_else(|| n.to_string())
        }
        Value::Number(n) if hex_field(path) => match n.as_u64() {
            Some(u) => format!("{u:#x}"),
            None => n.to_string(),
        },
        Value::String(s) => s.clone(),
        other => {
            let s = other.to_string();
            if s.len() > 160 {
                format!("{}...", &s[..s.floor_char_boundary(157)])
            } else {
                s
            }
        }
    }
}

/// The human form: one line per difference, `~` changed, `+` only in B, `-` only in A.
pub fn render(a: &ImageSet, b: &ImageSet, changes: &[Change]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "--- A {}", a.dir.display());
    let _ = writeln!(o, "+++ B {}", b.dir.display());
    if changes.is_empty() {
        let _ = writeln!(o, "no differences");
        return o;
    }
    for c in changes {
        let _ = match (&c.a, &c.b) {
            (Some(x), Some(y)) => {
                let mut line =
                    format!("~ {}: {} -> {}", c.path, show(&c.path, x), show(&c.path, y));
                if let (Some(p), Some(q)) = (x.as_u64(), y.as_u64()) {
                    if c.path.ends_with(".size") {
                        let d = q as i128 - p as i128;
                        let _ = write!(
                            line,
                            " ({}{})",
                            if d < 0 { "-" } else { "+" },
                            human_bytes(d.unsigned_abs().min(u64::MAX as u128) as u64)
                        );
                    }
                }
                writeln!(o, "{line}")
            }
            (Some(x), None) => writeln!(o, "- {}: {}", c.path, show(&c.path, x)),
            (None, Some(y)) => writeln!(o, "+ {}: {}", c.path, show(&c.path, y)),
            (None, None) => Ok(()),
        };
    }
    let _ = writeln!(o, "{} difference(s)", changes.len());
    o
}

pub fn to_json(a: &ImageSet, b: &ImageSet, changes: &[Change]) -> Value {
    json!({
        "a": a.dir.display().to_string(),
        "b": b.dir.display().to_string(),
        "changes": changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_objects_and_arrays() {
        let a = json!({"x": 1, "y": [1, 2], "z": {"k": "v"}, "gone": true, "b": vec![0u8; 20]});
        let b = json!({"x": 2, "y": [1, 2], "z": {"k": "w"}, "new": 5, "b": vec![1u8; 20]});
        let mut out = Vec::new();
        walk("", &a, &b, &mut out);
        let paths: Vec<&str> = out.iter().map(|c| c.path.as_str()).collect();
        // serde_json maps are sorted by key; keys only in B come last.
        assert_eq!(paths, ["b", "gone", "x", "z.k", "new"]);
        assert_eq!(out[0].b, Some(json!("20 items, 20 differ")));
    }

    #[test]
    fn keyed_matches_by_identity() {
        let a = vec![
            pb::Vma {
                start: 0x1000,
                end: 0x2000,
                ..Default::default()
            },
            pb::Vma {
                start: 0x5000,
                end: 0x6000,
                ..Default::default()
            },
        ];
        let b = vec![
            pb::Vma {
                start: 0x5000,
                end: 0x7000,
                ..Default::default()
            },
            pb::Vma {
                start: 0x9000,
                end: 0xa000,
                ..Default::default()
            },
        ];
        let mut out = Vec::new();
        keyed(
            "",
            &a,
            &b,
            |v| v.start,
            |k| format!("vma {k:#x}"),
            vma_line,
            vma_json,
            &mut out,
        );
        let paths: Vec<&str> = out.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["vma 0x1000", "vma 0x5000.end", "vma 0x9000"]);
        assert!(out[0].b.is_none() && out[2].a.is_none());
    }
}

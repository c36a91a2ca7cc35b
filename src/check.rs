//! `ckpt check`: prints what `ckpt_sys::probe` found, feature by feature; `ckpt check -t
//! PID`: what keeps a process tree from being dumped (`ckpt_dump::check_tree`, the checks
//! a dump makes first).

use ckpt_sys::probe::{self, Feature, Status};
use serde_json::json;

/// Runs the probes and prints them; the exit code is 1 when ckpt cannot work here.
pub fn run(as_json: bool) -> anyhow::Result<i32> {
    let features = probe::probe_all();
    let unusable = probe::unusable(&features);
    if as_json {
        crate::emit(&(serde_json::to_string_pretty(&to_json(&features))? + "\n"))?;
    } else {
        crate::emit(&render(&features))?;
    }
    Ok(if unusable { 1 } else { 0 })
}

/// `check -t PID`: 0 dumpable, 1 blockers (each printed), an error if `pid` cannot be
/// looked at.
pub fn tree(pid: i32, as_json: bool, tcp_established: bool) -> anyhow::Result<i32> {
    use anyhow::Context;
    let blockers =
        ckpt_dump::check_tree(pid, tcp_established).with_context(|| format!("check -t {pid}"))?;
    if as_json {
        let v = json!({
            "pid": pid,
            "dumpable": blockers.is_empty(),
            "blockers": blockers.iter().map(|b| json!({
                "pid": b.pid,
                "comm": comm(b.pid),
                "what": b.what,
                "why": b.why,
            })).collect::<Vec<_>>(),
        });
        crate::emit(&(serde_json::to_string_pretty(&v)? + "\n"))?;
    } else {
        let mut out = String::new();
        for b in &blockers {
            out += &format!("pid {} ({}): {}: {}\n", b.pid, comm(b.pid), b.what, b.why);
        }
        if blockers.is_empty() {
            out += &format!("pid {pid}: dumpable\n");
        } else {
            let procs: std::collections::BTreeSet<i32> = blockers.iter().map(|b| b.pid).collect();
            out += &format!(
                "pid {pid}: not dumpable: {} blocker{} in {} process{}\n",
                blockers.len(),
                if blockers.len() == 1 { "" } else { "s" },
                procs.len(),
                if procs.len() == 1 { "" } else { "es" },
            );
        }
        crate::emit(&out)?;
    }
    Ok(if blockers.is_empty() { 0 } else { 1 })
}

fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

pub fn to_json(features: &[Feature]) -> serde_json::Value {
    json!({
        "usable": !probe::unusable(features),
        "features": features.iter().map(|f| json!({
            "name": f.name,
            "status": f.status.as_str(),
            "required": f.required,
            "detail": f.detail,
            "meaning": f.meaning,
        })).collect::<Vec<_>>(),
    })
}

pub fn render(features: &[Feature]) -> String {
    let mut out = String::new();
    let width = features.iter().map(|f| f.name.len()).max().unwrap_or(0);
    for f in features {
        let tag = match f.status {
            Status::Ok => "ok     ",
            Status::Limited => "limited",
            Status::Missing => "MISSING",
        };
        out += &format!("{tag}  {:width$}  {}\n", f.name, f.detail);
        out += &format!(
            "{:pad$}{}{}\n",
            "",
            if f.required && f.status == Status::Missing {
                "required: "
            } else {
                "-> "
            },
            f.meaning,
            pad = 7 + 2 + width + 2
        );
    }
    let missing: Vec<&str> = features
        .iter()
        .filter(|f| f.required && f.status == Status::Missing)
        .map(|f| f.name)
        .collect();
    let others = features
        .iter()
        .filter(|f| f.status != Status::Ok && !(f.required && f.status == Status::Missing))
        .count();
    out += "\n";
    if missing.is_empty() {
        out += "ckpt can dump and restore processes on this host";
        if others > 0 {
            out += &format!(" ({others} optional features limited or missing, see above)");
        }
        out += ".\n";
    } else {
        out += &format!(
            "ckpt cannot work on this host: {} missing.\n",
            missing.join(", ")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &'static str, status: Status, required: bool) -> Feature {
        Feature {
            name,
            status,
            detail: format!("{name} detail"),
            meaning: format!("{name} meaning"),
            required,
        }
    }

    #[test]
    fn verdict_names_missing_required_features() {
        let all = [
            f("ptrace", Status::Ok, true),
            f("soft-dirty", Status::Missing, false),
            f("clone3-set-tid", Status::Missing, true),
        ];
        let text = render(&all);
        assert!(text.contains("MISSING  clone3-set-tid"), "{text}");
        assert!(text.contains("required: clone3-set-tid meaning"), "{text}");
        assert!(text.contains("cannot work on this host: clone3-set-tid missing"));
        assert_eq!(to_json(&all)["usable"], false);
        let ok = render(&all[..2]);
        assert!(ok.contains("can dump and restore") && ok.contains("1 optional"));
        assert_eq!(to_json(&all[..2])["features"][1]["status"], "missing");
    }
}

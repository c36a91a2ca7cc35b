//! The names a dump's `--ext-mount-map MOUNTPOINT:NAME` gave external mounts (LXC:
//! `/dev/console:console`, `/lib:lib`), kept beside ckpt's image for the restore, whose
//! `--ext-mount-map NAME:PATH` names them so. ckpt's image names such a mount by the host
//! path it had; this file only maps a caller's name to a mount point of the image (read
//! bounded: it is input like the rest of the directory).

use std::path::Path;

/// File name, in the CRIU images directory.
const FILE: &str = "ckpt-ext-mount-names";
const MAX: u64 = 64 << 10;

/// Writes (mount point, name) pairs, one `NAME\tMOUNTPOINT` line each.
pub fn write(dir: &Path, pairs: &[(String, String)]) -> std::io::Result<()> {
    let text: String = pairs
        .iter()
        .filter(|(at, name)| !at.contains(['\t', '\n']) && !name.contains(['\t', '\n']))
        .map(|(at, name)| format!("{name}\t{at}\n"))
        .collect();
    std::fs::write(dir.join(FILE), text)
}

/// (name, mount point) pairs a dump kept; none if there is no such file.
pub fn read(dir: &Path) -> Vec<(String, String)> {
    let path = dir.join(FILE);
    if std::fs::metadata(&path).map_or(true, |m| m.len() > MAX) {
        return Vec::new();
    }
    std::fs::read_to_string(&path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, at)| (n.to_string(), at.to_string()))
        .collect()
}

//! A user namespace's uid_map or gid_map ("INSIDE OUTSIDE COUNT" lines, as
//! /proc/PID/uid_map reads from the parent namespace): translating ids between the
//! namespace and its parent. The images hold ids as ckpt (in the parent) reads them; what
//! the restored tree sets itself from inside the namespace (its credentials, the owners
//! of the files and IPC objects its root's seed makes) is that id inside.

/// The ranges of one map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    ranges: Vec<(u32, u32, u32)>,
}

impl IdMap {
    /// Parses a map as the kernel shows it (or as it is written): at most 340 lines of
    /// three numbers, none empty, no range wrapping past u32::MAX.
    pub fn parse(text: &str) -> Result<IdMap, String> {
        let mut ranges = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let f: Vec<u32> = line
                .split_whitespace()
                .map(|t| t.parse::<u32>())
                .collect::<Result<_, _>>()
                .map_err(|_| format!("map line {line:?} is not three numbers"))?;
            let [inside, outside, count] = f[..] else {
                return Err(format!("map line {line:?} is not three numbers"));
            };
            if count == 0
                || inside.checked_add(count - 1).is_none()
                || outside.checked_add(count - 1).is_none()
            {
                return Err(format!("map line {line:?} is not a range of ids"));
            }
            ranges.push((inside, outside, count));
        }
        if ranges.len() > 340 {
            return Err(format!("{} map lines (the kernel takes 340)", ranges.len()));
        }
        Ok(IdMap { ranges })
    }

    /// Every id is itself inside (no map: ckpt's own namespace, or identity ranges).
    pub fn is_identity(&self) -> bool {
        self.ranges.iter().all(|&(i, o, _)| i == o)
    }

    /// The id inside the namespace of `outside` (an id of the parent), None when the
    /// map does not cover it (the kernel shows such an id inside as the overflow id).
    pub fn inside(&self, outside: u32) -> Option<u32> {
        self.ranges
            .iter()
            .find(|&&(_, o, c)| outside >= o && outside - o < c)
            .map(|&(i, o, _)| i + (outside - o))
    }

    /// The id in the parent of `inside`.
    pub fn outside(&self, inside: u32) -> Option<u32> {
        self.ranges
            .iter()
            .find(|&&(i, _, c)| inside >= i && inside - i < c)
            .map(|&(i, o, _)| o + (inside - i))
    }
}

#[cfg(test)]
mod tests {
    use super::IdMap;

    #[test]
    fn translates_both_ways() {
        // podman rootless: root inside is 1000 outside, the rest a subordinate range.
        let m =
            IdMap::parse("         0       1000          1\n         1     100000      65536\n")
                .unwrap();
        assert!(!m.is_identity());
        assert_eq!(m.inside(1000), Some(0));
        assert_eq!(m.inside(100000), Some(1));
        assert_eq!(m.inside(165535), Some(65536));
        assert_eq!(m.inside(0), None);
        assert_eq!(m.outside(0), Some(1000));
        assert_eq!(m.outside(65537), None);
        let id = IdMap::parse("0 0 4294967295\n").unwrap();
        assert!(id.is_identity());
        assert_eq!(id.inside(12), Some(12));
        assert!(IdMap::parse("1 2\n").is_err());
        assert!(IdMap::parse("1 2 0\n").is_err());
        assert!(IdMap::parse("4294967295 0 2\n").is_err());
    }
}

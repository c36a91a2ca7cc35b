//! Byte ranges of a shared memory object already accounted for: dump stores each page of
//! an object once however many VMAs (of however many processes) map it, and restore fills
//! each once.

use std::collections::HashMap;

/// Per object id, the `[lo, hi)` offsets seen so far.
#[derive(Default, Debug)]
pub struct Covered(HashMap<u64, Vec<(u64, u64)>>);

impl Covered {
    /// The parts of `[lo, hi)` of object `id` not seen before, in order; marks all of
    /// `[lo, hi)` seen.
    pub fn take(&mut self, id: u64, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        let parts = self.missing(id, lo, hi);
        self.mark(id, lo, hi);
        parts
    }

    /// The parts of `[lo, hi)` of object `id` not seen before, in order.
    pub fn missing(&self, id: u64, lo: u64, hi: u64) -> Vec<(u64, u64)> {
        uncovered(self.0.get(&id).map_or(&[][..], |v| v), lo, hi)
    }

    pub fn mark(&mut self, id: u64, lo: u64, hi: u64) {
        self.0.entry(id).or_default().push((lo, hi));
    }
}

/// The parts of [lo, hi) outside every interval of `covered`, in order.
pub fn uncovered(covered: &[(u64, u64)], lo: u64, hi: u64) -> Vec<(u64, u64)> {
    let mut parts = vec![(lo, hi)];
    for &(a, b) in covered {
        parts = parts
            .into_iter()
            .flat_map(|(x, y)| {
                if b <= x || a >= y {
                    vec![(x, y)]
                } else {
                    [(x, a.max(x)), (b.min(y), y)]
                        .into_iter()
                        .filter(|(s, e)| s < e)
                        .collect()
                }
            })
            .collect();
    }
    parts
}

// Sets of addresses as sorted, disjoint `[start, end)` ranges (page runs, VMAs).

/// Sorted ranges with overlapping and touching ones joined.
pub fn merged(sorted: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(sorted.len());
    for (s, e) in sorted {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

pub fn union(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    merged(all)
}

pub fn intersect(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() && j < b.len() {
        let (s, e) = (a[i].0.max(b[j].0), a[i].1.min(b[j].1));
        if s < e {
            out.push((s, e));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

pub fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(s, e) in a {
        let mut at = s;
        while j < b.len() && b[j].1 <= at {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].0 < e {
            if b[k].0 > at {
                out.push((at, b[k].0));
            }
            at = at.max(b[k].1);
            k += 1;
        }
        if at < e {
            out.push((at, e));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_arithmetic() {
        let a = vec![(0, 10), (20, 30)];
        let b = vec![(5, 25)];
        assert_eq!(intersect(&a, &b), vec![(5, 10), (20, 25)]);
        assert_eq!(subtract(&a, &b), vec![(0, 5), (25, 30)]);
        assert_eq!(subtract(&b, &a), vec![(10, 20)]);
        assert_eq!(union(&a, &b), vec![(0, 30)]);
        assert_eq!(subtract(&a, &[]), a);
        assert_eq!(
            subtract(&[(0, 10)], &[(0, 2), (4, 6), (8, 12)]),
            vec![(2, 4), (6, 8)]
        );
        assert_eq!(merged(vec![(0, 4), (4, 6), (8, 9)]), vec![(0, 6), (8, 9)]);
    }

    #[test]
    fn uncovered_parts() {
        assert_eq!(uncovered(&[], 0, 10), vec![(0, 10)]);
        assert_eq!(uncovered(&[(0, 10)], 0, 10), vec![]);
        assert_eq!(
            uncovered(&[(2, 4), (6, 8)], 0, 10),
            vec![(0, 2), (4, 6), (8, 10)]
        );
        assert_eq!(uncovered(&[(5, 20)], 0, 10), vec![(0, 5)]);
    }

    #[test]
    fn covered_per_object() {
        let mut c = Covered::default();
        assert_eq!(c.take(1, 0, 8), vec![(0, 8)]);
        assert_eq!(c.take(2, 0, 8), vec![(0, 8)]);
        assert_eq!(c.take(1, 4, 12), vec![(8, 12)]);
        assert_eq!(c.take(1, 0, 12), vec![]);
    }
}

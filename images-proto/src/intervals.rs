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

#[cfg(test)]
mod tests {
    use super::*;

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

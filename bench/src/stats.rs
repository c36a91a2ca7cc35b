//! Median, min and max of a series, and the records of one benchmark run.

use serde::Serialize;

/// Median [min-max] of the successful runs of one figure.
#[derive(Serialize, Debug, Clone, Copy)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    pub fn of(values: &[f64]) -> Option<Stat> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// Median [min-max] of `f` over the runs that have it.
pub fn series<T>(runs: &[T], f: impl Fn(&T) -> Option<f64>) -> Option<Stat> {
    let v: Vec<f64> = runs.iter().filter_map(f).collect();
    Stat::of(&v)
}

/// `median [min-max]` with `decimals`, or `-`.
pub fn show(s: Option<Stat>, decimals: usize) -> String {
    s.map_or("-".into(), |s| {
        format!(
            "{:.d$} [{:.d$}-{:.d$}]",
            s.median,
            s.min,
            s.max,
            d = decimals
        )
    })
}

/// A target's verdict: met, NOT MET, or nothing (no figure).
pub fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "",
    }
}

/// One round on one workload: the limits, then ckpt dump and restore, then the check.
#[derive(Serialize, Debug, Default, Clone)]
pub struct Run {
    pub run: usize,
    pub readv_ms: Option<f64>,
    pub readv_write_ms: Option<f64>,
    pub pread_ms: Option<f64>,
    pub dump_ms: Option<f64>,
    pub dump_rss_kib: Option<i64>,
    pub restore_ms: Option<f64>,
    pub restore_rss_kib: Option<i64>,
    /// Peak RSS of the measuring wrapper itself: a floor under the RSS figures.
    pub wrapper_rss_kib: Option<i64>,
    pub image_bytes: Option<u64>,
    /// `ckpt restore --lazy -d`, the command alone.
    pub lazy_restore_ms: Option<f64>,
    /// From the spawn of `ckpt restore --lazy -d` to the restored process's first tick.
    pub lazy_running_ms: Option<f64>,
    /// From the same spawn to the exit of the pager (every page in, its uffd gone).
    pub lazy_all_in_ms: Option<f64>,
    /// The workload's own verdict after the lazy restore, once every page was in.
    pub lazy_verify: Option<String>,
    /// A tree's summed Pss (KiB) before the dump and after the restore.
    pub pss_before_kib: Option<u64>,
    pub pss_after_kib: Option<u64>,
    /// The workload's own verdict after restore ("PASS ..." or "FAIL ...").
    pub verify: Option<String>,
    /// What went wrong in this round, if anything (ckpt's error line, or the bench's).
    pub error: Option<String>,
    /// The container row: the same ring dumped and restored without a container in the
    /// same round.
    pub plain_dump_ms: Option<f64>,
    pub plain_restore_ms: Option<f64>,
    /// With --phases: (command, phase, ms) from ckpt's -vv log.
    pub phases: Vec<(String, String, f64)>,
}

/// All rounds of one workload.
#[derive(Serialize, Debug, Clone)]
pub struct WorkloadResult {
    pub name: String,
    /// Size of the memory workload; None for `sleep`.
    pub bytes: Option<u64>,
    pub runs: Vec<Run>,
    /// Why the workload was not run at all.
    pub skipped: Option<String>,
    /// Dumped with --compress: the speed targets are for plain dumps, so its rows
    /// show figures and ratios but are not judged.
    pub compressed: bool,
}

impl WorkloadResult {
    pub fn series(&self, f: impl Fn(&Run) -> Option<f64>) -> Option<Stat> {
        let v: Vec<f64> = self.runs.iter().filter_map(f).collect();
        Stat::of(&v)
    }

    /// Per-run ratios of two figures taken in the same round.
    pub fn ratios(
        &self,
        num: impl Fn(&Run) -> Option<f64>,
        den: impl Fn(&Run) -> Option<f64>,
    ) -> Option<Stat> {
        let v: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|r| Some(num(r)? / den(r)?))
            .collect();
        Stat::of(&v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even() {
        let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Stat::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Stat::of(&[]).is_none());
    }
}

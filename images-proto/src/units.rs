//! Numbers as the logs show them: milliseconds and MiB to one decimal (`frozen_ms=32.7`,
//! not `0.032688999999999996` s), still plain numbers so that `ckpt-bench` parses them.

use std::time::Instant;

/// `x` to one decimal (the nearest f64 to k/10 prints as k/10).
pub fn tenths(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Milliseconds since `t`, to 0.1 ms.
pub fn ms(t: Instant) -> f64 {
    tenths(t.elapsed().as_secs_f64() * 1e3)
}

/// Milliseconds from `a` to `b`, to 0.1 ms.
pub fn ms_between(a: Instant, b: Instant) -> f64 {
    tenths(b.saturating_duration_since(a).as_secs_f64() * 1e3)
}

/// `bytes` in MiB, to 0.1 MiB.
pub fn mib(bytes: u64) -> f64 {
    tenths(bytes as f64 / (1u64 << 20) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_decimal() {
        assert_eq!(format!("{:?}", tenths(32.688_999_999_999_99)), "32.7");
        assert_eq!(format!("{:?}", tenths(0.30000000000000004)), "0.3");
        assert_eq!(format!("{:?}", mib(256 << 20)), "256.0");
        assert_eq!(format!("{}", mib(3 << 19)), "1.5");
    }
}

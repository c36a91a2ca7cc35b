//! TEST ONLY: holds ckpt at a named point so that a test can interrupt it exactly there.
//!
//! A test that signals ckpt "during the copy" cannot win a race against a fast machine
//! (or lose one on a loaded one). With `CKPT_TEST_HOLD=<point>:<marker path>` in its
//! environment, ckpt creates the marker file (holding its pid) when it reaches `<point>`
//! and waits there (once per process) until the test removes the marker, or until an abort signal
//! (SIGINT/SIGTERM/SIGHUP, see [`crate::abort`]) arrives, or `give_up` says so. Unset,
//! [`hold`] costs one look at a cached `Option`.
//!
//! Points: `seized` (dump: the task is stopped, nothing injected yet), `copying` (dump:
//! the first batch of memory is written), `tcp-repair` (dump: a TCP connection is
//! locked and in repair mode), `restore-seeds` (restore: every seed is made
//! and waits, not yet seized), `restore-puppet` (restore: the process exists, before its
//! state is put back), `lazy-copy` (lazy pager: before the background
//! copy starts; faults are still served).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The variable that names the point and the marker.
pub const VAR: &str = "CKPT_TEST_HOLD";

fn wanted() -> Option<&'static (String, String)> {
    static WANTED: OnceLock<Option<(String, String)>> = OnceLock::new();
    WANTED
        .get_or_init(|| {
            let v = std::env::var(VAR).ok()?;
            let (point, marker) = v.split_once(':')?;
            Some((point.to_string(), marker.to_string()))
        })
        .as_ref()
}

/// Whether a test asked to hold at `point` (a restore then keeps the order the point
/// names: every seed made before any is seized).
pub fn wants(point: &str) -> bool {
    wanted().is_some_and(|(want, _)| want == point)
}

/// At `point`: if the test asked to hold here, marks it and waits (see the module doc).
pub fn hold(point: &str, give_up: &dyn Fn() -> bool) {
    let Some((want, marker)) = wanted() else {
        return;
    };
    // Once per process: a point passed in a loop (each batch) holds at its first pass.
    static DONE: AtomicBool = AtomicBool::new(false);
    if want != point || DONE.swap(true, Ordering::SeqCst) {
        return;
    }
    // Written whole under another name first: the test never reads a half-written pid.
    let tmp = format!("{marker}.tmp");
    if std::fs::write(&tmp, format!("{}\n", std::process::id())).is_err()
        || std::fs::rename(&tmp, marker).is_err()
    {
        return;
    }
    while std::path::Path::new(marker).exists() && crate::abort::requested().is_none() && !give_up()
    {
        std::thread::sleep(Duration::from_millis(1));
    }
}

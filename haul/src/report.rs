//! What a migration measured: printed as a summary, or whole with `--json`.

use serde::Serialize;

/// One round: a pre-copy round (the tree ran meanwhile) or the final one (frozen).
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    pub round: u16,
    /// "pre-copy" or "final".
    pub kind: &'static str,
    /// Bytes of image files sent (pages and records).
    pub bytes: u64,
    /// Of those, what went over the link (zstd where it paid).
    pub wire_bytes: u64,
    /// Of those, memory pages.
    pub page_bytes: u64,
    /// The dump of this round (for a pre-copy round: with its copy while the tree ran).
    pub dump_ms: f64,
    /// Sending its files.
    pub send_ms: f64,
    /// The whole round, dump, send and the destination's answer.
    pub ms: f64,
    /// Pre-copy: what this round copied over the time of the round before (MB/s the
    /// tree wrote).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dirty_mb_s: Option<f64>,
    /// Pre-copy: sending this round's pages again at the measured link speed (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub est_send_ms: Option<f64>,
    /// The final round after pre-copy: of `bytes`, those sent before the freeze (its
    /// copy while the tree still ran, pass by pass; their time is in `dump_ms`).
    pub live_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub pid: i32,
    pub to: String,
    /// "stop-and-copy", "pre-copy", "post-copy" or "pre-copy, post-copy".
    pub mode: &'static str,
    /// From the call to the source's tree killed.
    pub total_ms: f64,
    /// From the final freeze on the source to the copy running at the destination.
    pub downtime_ms: f64,
    /// The destination's restore alone.
    pub restore_ms: f64,
    pub bytes: u64,
    pub wire_bytes: u64,
    /// Image bytes over send time (all rounds), MB/s.
    pub send_mb_s: f64,
    /// The copy's root pid at the destination (outside its pid namespace).
    pub new_pid: i32,
    pub rounds: Vec<Round>,
    /// Why pre-copy stopped its rounds (converged, not shrinking, round limit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pre_copy_end: Option<String>,
    /// Post-copy: the memory sent after the copy ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub post_copy: Option<PostCopy>,
}

/// What post-copy did.
#[derive(Debug, Clone, Serialize)]
pub struct PostCopy {
    /// From the copy running to every page there.
    pub ms: f64,
    pub page_bytes: u64,
    /// Chunks (16 MiB) the destination asked for, and of those before it ran.
    pub asked: u32,
    pub asked_before_running: u32,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "pid {} migrated to {} ({}): running there as pid {}; {} rounds, {:.1} MiB, total {:.0} ms, downtime {:.0} ms (restore {:.0} ms), {:.0} MB/s on the link",
            self.pid,
            self.to,
            self.mode,
            self.new_pid,
            self.rounds.len(),
            self.bytes as f64 / (1 << 20) as f64,
            self.total_ms,
            self.downtime_ms,
            self.restore_ms,
            self.send_mb_s
        )
    }
}

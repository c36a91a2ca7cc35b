//! A container's time namespace: `unshare --time --monotonic M --boottime B` made it, a
//! workload inside watches CLOCK_MONOTONIC and CLOCK_BOOTTIME across three dump/restore
//! cycles (no step backwards, none of a minute forwards, both still past their offsets),
//! and the restored namespace has the same offsets.

mod common;

use common::inside::*;
use common::*;
use std::fs;

const MONOTONIC_S: i64 = 864_000;
const BOOTTIME_S: i64 = 1_728_000;

/// /proc/PID/timens_offsets as (clock, seconds) pairs.
fn offsets(pid: i32) -> Vec<(String, i64)> {
    fs::read_to_string(format!("/proc/{pid}/timens_offsets"))
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].parse().unwrap())
        })
        .collect()
}

#[test]
fn container_time_namespace_three_cycles() {
    let env = Env::new();
    let bin = workload_bin("timens");
    let script = format!(
        "{} {} {MONOTONIC_S} {BOOTTIME_S} & while :; do sleep 0.05; done",
        bin.display(),
        env.path().display()
    );
    let mono = MONOTONIC_S.to_string();
    let boot = BOOTTIME_S.to_string();
    let (w, mut init) = start_container_with(
        &env,
        "timens",
        &["--time", "--monotonic", &mono, "--boottime", &boot],
        &script,
    );
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let is_wl = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&bin);
    let want = vec![
        ("monotonic".to_string(), MONOTONIC_S),
        ("boottime".to_string(), BOOTTIME_S),
    ];
    let mut passes = 1;
    check_inside(&env, &w, &bin, wait_child_of(init, is_wl), passes);
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &[]);
        let ns = |p: i32, k: &str| fs::read_link(format!("/proc/{p}/ns/{k}")).unwrap();
        let me = std::process::id() as i32;
        assert_ne!(ns(init, "time"), ns(me, "time"), "cycle {i}");
        assert_eq!(ns(init, "time"), ns(init, "time_for_children"), "cycle {i}");
        assert_eq!(offsets(init), want, "cycle {i}");
        let wl = wait_child_of(init, is_wl);
        assert_eq!(ns(wl, "time"), ns(init, "time"), "cycle {i}");
        passes += 1;
        check_inside(&env, &w, &bin, wl, passes);
    }
    env.kill_and_reap(init);
}

//! Cgroups a tree owns: a container made by unshare whose init moves itself into cgroups
//! of this test (memory and pids limits, a cgroup v2 setting, a sub-cgroup for one of its
//! processes) is dumped, its cgroups removed, and restored: the cgroups are made again
//! (at their paths, or under `--cgroup-root`) with their settings, every process in the
//! one it was in. What cannot be restored is refused by name, and a failed restore
//! removes the cgroups it made.

mod common;

use common::inside::*;
use common::*;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// One hierarchy of this machine the tests use: v1 `memory` and `pids` (this kernel's
/// layout is hybrid: the v2 hierarchy has no controllers) and v2 itself.
struct Hier {
    /// As /proc/PID/cgroup names it ("" for v2); `--cgroup-root` calls v2 "v2".
    ctl: &'static str,
    /// The mount point of the hierarchy.
    mount: PathBuf,
    /// This test's own cgroup in it.
    own: String,
    /// A setting and the values the test gives the base cgroup and the sub-cgroup.
    file: &'static str,
    values: [&'static str; 2],
}

impl Hier {
    fn all() -> Vec<Hier> {
        let want: [(&str, &str, [&str; 2]); 3] = [
            (
                "memory",
                "memory.limit_in_bytes",
                ["268435456", "134217728"],
            ),
            ("pids", "pids.max", ["64", "20"]),
            ("", "cgroup.max.descendants", ["5", "2"]),
        ];
        let mine = fs::read_to_string("/proc/self/cgroup").unwrap();
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        want.iter()
            .map(|&(ctl, file, values)| {
                let own = mine
                    .lines()
                    .find_map(|l| {
                        let mut it = l.splitn(3, ':');
                        let (id, c, p) = (it.next()?, it.next()?, it.next()?);
                        let hit = if ctl.is_empty() { id == "0" } else { c == ctl };
                        hit.then(|| p.to_string())
                    })
                    .unwrap_or_else(|| panic!("no cgroup hierarchy {ctl:?} here"));
                let mount = info
                    .lines()
                    .find_map(|l| {
                        let (left, right) = l.split_once(" - ")?;
                        let point = left.split(' ').nth(4)?;
                        let mut r = right.split(' ');
                        let (fstype, opts) = (r.next()?, r.nth(1)?);
                        let hit = if ctl.is_empty() {
                            fstype == "cgroup2"
                        } else {
                            fstype == "cgroup" && opts.split(',').any(|o| o == ctl)
                        };
                        hit.then(|| PathBuf::from(point))
                    })
                    .unwrap_or_else(|| panic!("hierarchy {ctl:?} is not mounted"));
                Hier {
                    ctl,
                    mount,
                    own,
                    file,
                    values,
                }
            })
            .collect()
    }

    fn name(&self) -> &'static str {
        if self.ctl.is_empty() {
            "v2"
        } else {
            self.ctl
        }
    }

    /// The cgroup `tag` below this test's own, as a path in the hierarchy.
    fn path(&self, tag: &str) -> String {
        format!("{}/{tag}", self.own.trim_end_matches('/'))
    }

    fn dir(&self, path: &str) -> PathBuf {
        self.mount.join(path.trim_start_matches('/'))
    }

    /// Where `pid` is in this hierarchy.
    fn of(&self, pid: i32) -> String {
        fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                let mut it = l.splitn(3, ':');
                let (id, c, p) = (it.next()?, it.next()?, it.next()?);
                let hit = if self.ctl.is_empty() {
                    id == "0"
                } else {
                    c == self.ctl
                };
                hit.then(|| p.to_string())
            })
            .unwrap_or_default()
    }
}

/// The cgroups a test made (or had ckpt make): whatever is in them is killed and they are
/// removed, children first, when dropped.
struct Made {
    dirs: Vec<PathBuf>,
}

impl Made {
    /// Makes `dir` with `file` = `value` (and remembers it).
    fn make(&mut self, dir: &Path, file: &str, value: &str) {
        fs::create_dir(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        self.dirs.push(dir.to_path_buf());
        fs::write(dir.join(file), value)
            .unwrap_or_else(|e| panic!("{}/{file} = {value}: {e}", dir.display()));
    }

    /// Removes them all (their tasks gone already), children first.
    fn remove(&self) {
        let mut dirs = self.dirs.clone();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs.iter().filter(|d| d.exists()) {
            let start = Instant::now();
            while let Err(e) = fs::remove_dir(d) {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "rmdir {}: {e}",
                    d.display()
                );
                sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for d in &self.dirs {
            let procs = fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            for p in procs.split_whitespace().filter_map(|p| p.parse().ok()) {
                signal(p, libc::SIGKILL);
            }
        }
        let mut dirs = self.dirs.clone();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in dirs {
            let start = Instant::now();
            while d.exists() && fs::remove_dir(&d).is_err() {
                if start.elapsed() > Duration::from_secs(5) {
                    break;
                }
                sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Every process below `pid`.
fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let kids = fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        for k in kids.split_whitespace().map(|k| k.parse::<i32>().unwrap()) {
            out.push(k);
            todo.push(k);
        }
    }
    out
}

fn counter(env: &Env) -> u64 {
    fs::read_to_string(env.path().join("count"))
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// `for d in DIRS; do echo 0 > $d/cgroup.procs; done; `: a shell moves itself.
fn enter_script(dirs: &[PathBuf]) -> String {
    let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    format!(
        "for d in {}; do echo 0 > $d/cgroup.procs || exit 1; done; ",
        list.join(" ")
    )
}

/// A container in cgroups of the test (memory.limit_in_bytes and pids.max in v1, a cgroup
/// v2 limit), one of its processes (the tree workload's root) in a sub-cgroup of each
/// with lower limits. Three cycles: dump, kill, remove every cgroup, restore (the second
/// time under other paths, `--cgroup-root CTL:PATH`, the third at those): the init and
/// the tree's other processes are in the base cgroups, the tree's root in the
/// sub-cgroups, every limit as set, the counter goes on and the tree checks itself.
#[test]
fn container_cgroups_three_cycles() {
    cgroup_cycles("cycles", false);
}

/// The same with a cgroup namespace of the container's own (`unshare --cgroup` run once
/// in its cgroups): restored rooted at the restored cgroups, so /proc/PID/cgroup read
/// inside it is the same after each cycle as before the first (the init at `/`, the
/// tree's root at `/sub`), wherever `--cgroup-root` put them outside.
#[test]
fn container_cgroupns_three_cycles() {
    cgroup_cycles("cgns", true);
}

/// /proc/PID/cgroup of `pid` as the cgroup namespace of `init` sees it.
fn inside_view(init: i32, pid: i32) -> String {
    nsenter(init, &["-C", "cat", &format!("/proc/{pid}/cgroup")])
}

fn cgroup_cycles(name: &str, cgroupns: bool) {
    let env = Env::new();
    let hiers = Hier::all();
    let tag = format!("ckpt-test-{}-{name}", std::process::id());
    let alt = format!("{tag}-alt");
    let mut made = Made { dirs: Vec::new() };
    for h in &hiers {
        let base = h.dir(&h.path(&tag));
        made.make(&base, h.file, h.values[0]);
        made.make(&base.join("sub"), h.file, h.values[1]);
        made.dirs.push(h.dir(&h.path(&alt)));
        made.dirs.push(h.dir(&h.path(&alt)).join("sub"));
    }
    let tree = workload_bin("tree");
    let dir = env.path().display().to_string();
    let bases: Vec<PathBuf> = hiers.iter().map(|h| h.dir(&h.path(&tag))).collect();
    let inner = format!(
        "{} {dir} & while :; do n=$((n+1)); echo $n > {dir}/count; sleep 0.05; done",
        tree.display()
    );
    let (w, mut init) = if cgroupns {
        // unshare itself enters the cgroups (its cgroup namespace is rooted where it
        // is), and is moved back to the test's once the init runs: it is not the tree's.
        let script = format!(
            "{}exec unshare --cgroup --fork --pid --mount-proc --uts --ipc bash -c '{inner}'",
            enter_script(&bases)
        );
        let w = env.spawn(
            name,
            &which("bash"),
            &[OsStr::new("-c"), OsStr::new(&script)],
        );
        let init = wait_child_of(w.pid, |_| true);
        env.track(init);
        for h in &hiers {
            fs::write(h.dir(&h.own).join("cgroup.procs"), w.pid.to_string()).unwrap();
        }
        (w, init)
    } else {
        let script = format!("{}{inner}", enter_script(&bases));
        start_container_with(&env, name, &[], &script)
    };
    env.wait_line(&w, "READY", |l| l.starts_with("READY "));
    let is_tree = |k: i32| fs::read_link(format!("/proc/{k}/exe")).ok().as_ref() == Some(&tree);
    let t = wait_child_of(init, is_tree);
    for b in &bases {
        fs::write(b.join("sub/cgroup.procs"), t.to_string()).unwrap();
    }
    let views = cgroupns.then(|| (inside_view(init, init), inside_view(init, t)));
    if let Some((of_init, of_t)) = &views {
        assert!(of_init.lines().all(|l| l.ends_with(":/")), "{of_init}");
        assert!(of_t.contains("pids:/sub"), "{of_t}");
    }
    let mut passes = 0;
    let mut at = tag.clone();
    for i in 1..=3 {
        let img = env.subdir(&format!("img{i}"));
        dump_container(&env, &w, init, &img, i == 1);
        made.remove();
        let before = counter(&env);
        let mut extra: Vec<String> = Vec::new();
        if i == 2 {
            at = alt.clone();
            for h in &hiers {
                extra.push("--cgroup-root".into());
                extra.push(format!("{}:{}", h.name(), h.path(&alt)));
            }
        }
        init = restore_with_pidfile(&env, &img, &format!("cycle{i}"), &extra);
        let t = wait_child_of(init, is_tree);
        // A zombie (the tree has one) is in no cgroup any more.
        let others: Vec<i32> = descendants(init)
            .into_iter()
            .filter(|&p| p != t && proc_state(p) != Some('Z'))
            .collect();
        for h in &hiers {
            let base = h.path(&at);
            assert_eq!(h.of(init), base, "cycle {i}: init in {}", h.name());
            assert_eq!(h.of(t), format!("{base}/sub"), "cycle {i}: tree root");
            for &p in &others {
                // A shell loop's `sleep` may just have exited; one being forked shows every
                // hierarchy's root until the kernel's cgroup_post_fork: asked again then.
                let mut now = h.of(p);
                let start = Instant::now();
                while !(now == base || now.is_empty()) && start.elapsed() < Duration::from_secs(2) {
                    sleep(Duration::from_millis(10));
                    now = h.of(p);
                }
                assert!(
                    now == base || now.is_empty(),
                    "cycle {i}: pid {p} ({}) in {}:{now}",
                    fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default(),
                    h.name()
                );
            }
            let read = |d: &Path| fs::read_to_string(d.join(h.file)).unwrap();
            assert_eq!(read(&h.dir(&base)).trim(), h.values[0], "{}", h.file);
            assert_eq!(read(&h.dir(&base).join("sub")).trim(), h.values[1]);
        }
        if let Some((of_init, of_t)) = &views {
            let ns = |p: i32| fs::read_link(format!("/proc/{p}/ns/cgroup")).unwrap();
            assert_ne!(ns(init), ns(std::process::id() as i32), "cycle {i}");
            assert_eq!(&inside_view(init, init), of_init, "cycle {i}: init inside");
            assert_eq!(&inside_view(init, t), of_t, "cycle {i}: tree root inside");
        }
        let start = Instant::now();
        while counter(&env) <= before + 2 {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "cycle {i}: the counter stopped at {before}"
            );
            sleep(Duration::from_millis(20));
        }
        passes += 1;
        check_inside(&env, &w, &tree, t, passes);
    }
    env.kill_and_reap(init);
}

/// What the restore cannot make the same is refused by name at dump, the tree left
/// running: a process of the tree outside its root's cgroup (and not in ckpt's), a cgroup
/// holding a process that is not the tree's, a cgroup namespace not rooted at the root's
/// cgroups, a non-default setting ckpt does not write
/// back (this kernel's memory.shown_ram_in_bytes). A restore that fails (its output
/// file gone) removes the cgroups it made.
#[test]
fn cgroup_refusals_and_failed_restore() {
    let env = Env::new();
    let hiers = Hier::all();
    let pids = hiers.iter().find(|h| h.ctl == "pids").unwrap();
    let tag = format!("ckpt-test-{}-refusals", std::process::id());
    let base = pids.dir(&pids.path(&tag));
    let mut made = Made { dirs: Vec::new() };
    made.make(&base, "pids.max", "30");

    // The root in the test's cgroup, a child of it in another one, neither below the
    // root's nor ckpt's.
    let other = pids.dir(&pids.path(&format!("{tag}-other")));
    made.make(&other, "pids.max", "10");
    let script = format!(
        "(echo 0 > {}/cgroup.procs && echo moved && exec sleep 1000) & {}echo in; while :; do sleep 0.05; done",
        other.display(),
        enter_script(std::slice::from_ref(&base))
    );
    let (w, init) = start_container_with(&env, "split", &[], &script);
    env.wait_line(&w, "in", |l| l == "in");
    env.wait_line(&w, "moved", |l| l == "moved");
    env.dump(init, &env.subdir("img-split"), &[])
        .failed_naming(&format!(
            "cgroup pids:{}: not at or below its root's",
            pids.path(&format!("{tag}-other"))
        ));
    assert_running_untraced(init);
    env.kill_and_reap(init);

    // Another process (not of the tree) in the tree's cgroup.
    let stranger = env.spawn("stranger", &which("sleep"), &[OsStr::new("1000")]);
    fs::write(base.join("cgroup.procs"), stranger.pid.to_string()).unwrap();
    let script = format!(
        "{}echo in; while :; do sleep 0.05; done",
        enter_script(std::slice::from_ref(&base))
    );
    let (w, init) = start_container_with(&env, "shared", &[], &script);
    env.wait_line(&w, "in", |l| l == "in");
    env.dump(init, &env.subdir("img-shared"), &[])
        .failed_naming(&format!("also holds pid {}", stranger.pid));
    assert_running_untraced(init);
    env.kill_and_reap(init);
    env.kill_and_reap(stranger.pid);

    // A cgroup namespace made before the root moved into its cgroups: inside, the root
    // is not at `/`.
    let script = format!(
        "{}echo in; while :; do sleep 0.05; done",
        enter_script(std::slice::from_ref(&base))
    );
    let (w, init) = start_container_with(&env, "late", &["--cgroup"], &script);
    env.wait_line(&w, "in", |l| l == "in");
    env.dump(init, &env.subdir("img-late"), &[])
        .failed_naming(&format!(
            "cgroup namespace (pids: the root is at {} inside it)",
            pids.path(&tag)
        ));
    assert_running_untraced(init);
    env.kill_and_reap(init);

    let memory = hiers.iter().find(|h| h.ctl == "memory").unwrap();
    let odd = memory.dir(&memory.path(&tag));
    made.make(&odd, "memory.limit_in_bytes", "268435456");
    if odd.join("memory.shown_ram_in_bytes").exists() {
        fs::write(odd.join("memory.shown_ram_in_bytes"), "1073741824").unwrap();
        let script = format!(
            "{}echo in; while :; do sleep 0.05; done",
            enter_script(std::slice::from_ref(&odd))
        );
        let (w, init) = start_container_with(&env, "odd", &[], &script);
        env.wait_line(&w, "in", |l| l == "in");
        let line = env
            .dump(init, &env.subdir("img-odd"), &[])
            .failed_naming("memory.shown_ram_in_bytes = \"1073741824\"");
        assert!(line.contains("not restored yet"), "{line}");
        assert_running_untraced(init);
        env.kill_and_reap(init);
    }

    // A restore that fails once the cgroups are made leaves none of them behind.
    let dirs = [base.clone(), odd.clone()];
    let script = format!(
        "{}echo in; while :; do sleep 0.05; done",
        enter_script(&dirs)
    );
    let (w, init) = start_container_with(&env, "failing", &[], &script);
    env.wait_line(&w, "in", |l| l == "in");
    fs::write(odd.join("memory.shown_ram_in_bytes"), "0").ok();
    let img = env.subdir("img-failing");
    env.dump(init, &img, &[]).ok();
    reap(w.pid, Duration::from_secs(10));
    env.untrack(w.pid);
    env.untrack(init);
    made.remove();
    fs::rename(&w.out, env.path().join("moved.out")).unwrap();
    env.restore_detached(&img).failed_naming("failing.out");
    for d in &dirs {
        assert!(!d.exists(), "{} left behind", d.display());
    }
}

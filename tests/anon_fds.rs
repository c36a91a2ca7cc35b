//! Fds that are kernel objects rather than paths: eventfd, signalfd, timerfd, memfd,
//! files deleted while open and inotify, each with its state in flight, through three cycles (the
//! workload checks them); and what is still refused, by name, the workload left running.

mod common;

use common::*;

fn three_cycles(kind: &str) {
    let env = Env::new();
    let mut w = env.start_with("anonfds", &[kind]);
    env.check(&mut w);
    env.cycles(&mut w, 3, &[], |_, _| {});
    env.check(&mut w);
}

/// A counting eventfd (non-blocking) and a semaphore one keep counts, modes and flags.
#[test]
fn eventfd_three_cycles() {
    three_cycles("eventfd");
}

/// A signalfd keeps its mask and reads the signal queued before the dump.
#[test]
fn signalfd_three_cycles() {
    three_cycles("signalfd");
}

/// Timers keep their clocks, time left, intervals, absolute flag and unread expirations.
#[test]
fn timerfd_three_cycles() {
    three_cycles("timerfd");
}

/// A memfd keeps its name, contents, seals and offset.
#[test]
fn memfd_three_cycles() {
    three_cycles("memfd");
}

/// A file unlinked while open keeps its contents, mode and offset, still unlinked.
#[test]
fn deleted_file_three_cycles() {
    three_cycles("deleted");
}

/// An inotify instance keeps its watches (same descriptors, masks, paths); the events
/// queued at the dump are dropped (the workload expects so), new ones arrive.
#[test]
fn inotify_three_cycles() {
    three_cycles("inotify");
}

/// Watches removed leave a gap in the descriptors a restore could not reproduce: refused.
#[test]
fn inotify_with_a_removed_watch_is_refused() {
    refused("inotifygap", "watches were removed");
}

/// All of them in one process, once.
#[test]
fn all_kinds_at_once() {
    let env = Env::new();
    let mut w = env.start_with(
        "anonfds",
        &[
            "eventfd", "signalfd", "timerfd", "memfd", "deleted", "inotify",
        ],
    );
    env.check(&mut w);
    env.cycles(&mut w, 1, &[], |_, _| {});
    env.check(&mut w);
}

/// `check -t` and the dump refuse what is not supported, naming pid, fd and why; the
/// process runs on.
fn refused(kind: &str, needle: &str) {
    let env = Env::new();
    let w = env.start_with("anonfds", &[kind]);
    let checked = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert_eq!(checked.status.code(), Some(1), "{checked}");
    assert!(checked.stdout.contains(needle), "{checked}");
    let dumped = env.dump(w.pid, &env.subdir("img"), &[]);
    let line = dumped.failed_naming(needle);
    assert!(line.contains(&format!("pid {}", w.pid)), "{line}");
    assert_running_untraced(w.pid);
}

/// An inotify with an event not read yet is refused: no interface queues it again.
#[test]
fn inotify_with_an_unread_event_is_refused() {
    refused("inotifyq", "not read yet");
}

/// A memfd that is also mapped MAP_SHARED would come back as two objects: refused.
#[test]
fn memfd_also_mapped_is_refused() {
    refused("memfdmap", "also mapped");
}

/// A deleted file above the size ckpt stores is refused, saying the cap.
#[test]
fn big_deleted_file_is_refused() {
    refused("bigdeleted", "more than the 8 MiB");
}

/// A fanotify group keeps its marks: an inode mark on a directory (its children's
/// close-after-write events) and an ignore mask on one file in it, through three cycles.
#[test]
fn fanotify_three_cycles() {
    three_cycles("fanotify");
}

/// A fanotify group with an event not read yet, or of the content class (permission
/// events a process may wait on), is refused by name, by `check -t` and the dump.
#[test]
fn fanotify_with_queued_events_or_permission_class_is_refused() {
    refused("fanotifyq", "not read yet");
    refused("fanotifyperm", "content class");
}

/// An io_uring instance and a userfaultfd of the process's own are refused by name.
#[test]
fn io_uring_and_userfaultfd_are_refused() {
    refused("uring", "io_uring is not supported yet");
    refused("uffd", "userfaultfd is not supported yet");
}

//! Processes sharing what fork copies (an fd table, a cwd/root/umask, an address space)
//! without being threads of one process: restore would give each its own, so a dump
//! refuses them by name (the child's pid and the kind), writes nothing, and leaves the
//! workload running; `ckpt check -t` lists the same.

mod common;

use common::*;

fn refused(mode: &str, needle: &str) {
    let env = Env::new();
    let mut w = env.start_with("clones", &[mode]);
    env.check(&mut w);
    let dir = env.subdir("img");
    let line = env.dump(w.pid, &dir, &[]).failed_naming(needle);
    assert!(line.contains(&format!("with pid {}", w.pid)), "{line}");
    assert!(image_files(&dir, "").is_empty(), "{}", listing(&dir));
    assert_running_untraced(w.pid);
    let check = env.ckpt(&["check", "-t", &w.pid.to_string()]);
    assert!(check.stdout.contains(needle), "check -t: {check}");
    env.check(&mut w);
    notices_corruption(&env, &w);
}

#[test]
fn shared_fd_table_is_refused() {
    refused("files", "CLONE_FILES");
}

#[test]
fn shared_cwd_and_umask_are_refused() {
    refused("fs", "CLONE_FS");
}

#[test]
fn shared_address_space_is_refused() {
    refused("vm", "CLONE_VM");
}

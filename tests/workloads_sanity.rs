//! The workloads themselves, without any checkpoint: each passes its own check, exits
//! 0 on SIGUSR2, and notices state corrupted on purpose (SIGTERM -> exit 1). If one of
//! these fails, the workload or the machine is at fault, not ckpt.

mod common;

use common::*;

#[test]
fn mem_sane() {
    sanity(|e| e.start("mem"));
}

#[test]
fn sig_sane() {
    sanity(|e| e.start("sig"));
}

#[test]
fn fpu_sane() {
    sanity(|e| e.start("fpu"));
}

#[test]
fn files_sane() {
    sanity(|e| e.start("files"));
}

#[test]
fn misc_sane() {
    sanity(|e| e.start("misc"));
}

#[test]
fn blocking_sane() {
    sanity(|e| e.start("blocking"));
}

#[test]
fn python_sane() {
    sanity(|e| e.start_python());
}

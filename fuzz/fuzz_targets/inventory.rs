#![no_main]
//! Fuzz target: see ckpt_fuzz::inventory.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ckpt_fuzz::inventory(data));

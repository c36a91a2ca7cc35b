#![no_main]
//! Fuzz target: see ckpt_fuzz::files.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ckpt_fuzz::files(data));

#![no_main]
//! Fuzz target: see ckpt_fuzz::pagemap.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ckpt_fuzz::pagemap(data));

#![no_main]
//! Fuzz target: see ckpt_fuzz::core.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ckpt_fuzz::core(data));

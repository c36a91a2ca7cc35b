#![no_main]
//! Fuzz target: see ckpt_fuzz::mm.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ckpt_fuzz::mm(data));

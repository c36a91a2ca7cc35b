#![no_main]
//! Fuzz target: see ckpt_fuzz::pages.
libfuzzer_sys::fuzz_target!(|data: &[u8]| ckpt_fuzz::pages(data));

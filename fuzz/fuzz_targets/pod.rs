//! Fuzz target `pod`: see `wasmpod_fuzz::pod` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::pod(data));

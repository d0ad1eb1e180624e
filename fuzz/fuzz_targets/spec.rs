//! Fuzz target `spec`: see `wasmpod_fuzz::spec` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::spec(data));

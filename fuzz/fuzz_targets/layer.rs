//! Fuzz target `layer`: see `wasmpod_fuzz::layer` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::layer(data));

//! Fuzz target `reference`: see `wasmpod_fuzz::reference` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::reference(data));

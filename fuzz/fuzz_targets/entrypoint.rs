//! Fuzz target `entrypoint`: see `wasmpod_fuzz::entrypoint` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::entrypoint(data));

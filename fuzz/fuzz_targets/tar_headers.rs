//! Fuzz target `tar-headers`: see `wasmpod_fuzz::tar_headers` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::tar_headers(data));

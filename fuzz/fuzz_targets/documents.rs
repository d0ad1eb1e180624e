//! Fuzz target `documents`: see `wasmpod_fuzz::documents` for what it checks.

#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| wasmpod_fuzz::documents(data));

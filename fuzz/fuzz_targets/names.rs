//! See `ferry_server::testing::fuzz::names` for what this checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_server::testing::fuzz::names(data));

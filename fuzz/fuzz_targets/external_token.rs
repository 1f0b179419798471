//! See `ferry_server::testing::fuzz::external_token` for what this checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ferry_server::testing::fuzz::external_token(data));

//! libFuzzer entry point for `targets::identity_token` (see ../README.md).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::identity_token(data));

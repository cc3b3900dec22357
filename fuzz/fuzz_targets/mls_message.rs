//! libFuzzer entry point for `targets::mls_message` (see ../README.md).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::mls_message(data));

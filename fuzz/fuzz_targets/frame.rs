//! libFuzzer entry point for `targets::frame` (see ../README.md).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::frame(data));

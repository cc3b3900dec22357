//! libFuzzer entry point for `targets::control_payload` (see ../README.md).
#![no_main]

#[path = "../targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::control_payload(data));

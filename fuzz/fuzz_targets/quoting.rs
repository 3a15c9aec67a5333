//! Fuzz target: see `asr_bridge::agi::invariants::quoting`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| asr_bridge::agi::invariants::quoting(data));

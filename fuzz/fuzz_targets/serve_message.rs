//! Fuzz target: see `asr_bridge::serve::invariants::message`.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| asr_bridge::serve::invariants::message(data));

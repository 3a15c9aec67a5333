//! What must hold for any text message a client sends the server (fuzzed by
//! `fuzz/fuzz_targets/serve_message.rs`, replayed by `tests/fuzz_regressions.rs`): it is
//! parsed without panicking, and a config it carries is either refused or leaves settings
//! libvosk can take: a rate in range, and a phrase list that is normalized, free of empty and
//! repeated phrases, and whose grammar JSON round-trips (libvosk segfaults on malformed JSON).

use super::call::CallConfig;
use crate::asr::grammar::{normalize, vosk_grammar_args};
use crate::protocol::ClientMessage;

/// Panics when an invariant breaks.
pub fn message(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(ClientMessage::Config(c)) = ClientMessage::parse(&text) else { return };
    let mut cfg = CallConfig::new(8000);
    if cfg.apply(&c).is_err() {
        return;
    }
    assert!((4000..=48000).contains(&cfg.sample_rate), "rate {}", cfg.sample_rate);
    assert!(cfg.max_alternatives <= 100);
    if let Some(list) = &cfg.phrase_list {
        for (i, p) in list.iter().enumerate() {
            assert!(!p.is_empty(), "empty phrase kept");
            assert_eq!(&normalize(p), p, "phrase not normalized");
            assert!(!list[..i].contains(p), "phrase repeated");
        }
        if !list.is_empty() {
            vosk_grammar_args(list).expect("a normalized phrase list always makes valid grammar JSON");
        }
    }
}

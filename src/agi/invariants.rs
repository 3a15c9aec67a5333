//! Invariants of the protocol code on arbitrary input, shared by the fuzz targets
//! (`fuzz/fuzz_targets/`) and the replay of their saved inputs (`tests/fuzz_regressions.rs`).
//! Each function panics when an invariant breaks.

use super::command::{parse_args, MAX_LINE};
use super::reply::ReplyParser;
use super::{AgiHeader, Command, Reply};

/// The header parser never panics, and keys it accepts are plain words.
pub fn header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(h) = AgiHeader::parse(&text) {
        for (k, _) in h.vars() {
            assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
        }
        let _ = h.args();
        let _ = h.enhanced();
    }
}

/// The reply parser never panics; a `200` reply's result is the number in the line.
pub fn reply(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut p = ReplyParser::default();
    for line in text.split('\n') {
        let _ = p.feed(line);
        if let Some(Reply::Success { result: Some(r), .. }) = Reply::parse_line(line) {
            let token: String = line.split_once("result=").map(|(_, t)| t).unwrap_or("").chars().take_while(|c| c.is_ascii_digit() || *c == '-').collect();
            assert_eq!(token.parse::<i64>().ok(), Some(r), "{line:?} gave result {r}");
        }
    }
}

/// Quoting round trip: encode any value, split the line with `parse_args` as res_agi.c does,
/// and get the value back (control characters but tab as spaces; cut to fit 8 KiB).
pub fn quoting(data: &[u8]) {
    let value = String::from_utf8_lossy(data).into_owned();
    let wire = Command::SetVariable { name: "ASR_TEXT".into(), value: value.clone() }.to_string();
    assert!(wire.len() <= MAX_LINE);
    assert_eq!(wire.matches('\n').count(), 1);
    let args = parse_args(wire.strip_suffix('\n').unwrap_or(&wire));
    assert_eq!(args.len(), 4, "{wire:?}");
    let expected: String = value.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect();
    assert!(expected.starts_with(args[3].as_str()), "{value:?} came back as {:?}", args[3]);
}

//! Property tests for the protocol code: quoting survives `parse_args` for any value, the
//! parsers never panic on any input, and lines stay under Asterisk's 8 KiB buffer.

use asr_bridge::agi::command::{parse_args, MAX_LINE};
use asr_bridge::agi::reply::ReplyParser;
use asr_bridge::agi::{AgiHeader, Command, Reply};
use proptest::prelude::*;

/// What the quoting promises: control characters (but tab) become spaces, and a value too
/// long for one line is cut; everything else arrives unchanged.
fn expected(v: &str, got_len: usize) -> String {
    let cleaned: String = v.chars().map(|c| if c.is_control() && c != '\t' { ' ' } else { c }).collect();
    cleaned.chars().take(got_len).collect()
}

proptest! {
    #[test]
    fn set_variable_round_trips(v in any::<String>()) {
        let wire = Command::SetVariable { name: "ASR_TEXT".into(), value: v.clone() }.to_string();
        prop_assert!(wire.len() <= MAX_LINE);
        prop_assert_eq!(wire.matches('\n').count(), 1);
        let args = parse_args(wire.strip_suffix('\n').unwrap());
        prop_assert_eq!(args.len(), 4);
        let got = &args[3];
        prop_assert_eq!(got, &expected(&v, got.chars().count()));
    }

    #[test]
    fn quoting_of_text_like_values(v in "[ a-z\"\\\\가-힣\n\r\t]{0,200}") {
        let wire = Command::SetVariable { name: "X".into(), value: v.clone() }.to_string();
        let args = parse_args(wire.trim_end_matches('\n'));
        prop_assert_eq!(&args[3], &expected(&v, usize::MAX));
    }

    #[test]
    fn reply_parser_never_panics(lines in proptest::collection::vec(any::<String>(), 0..20)) {
        let mut p = ReplyParser::default();
        for l in &lines {
            let _ = p.feed(l);
            let _ = Reply::parse_line(l);
        }
    }

    #[test]
    fn reply_200_forms_parse(result in -1i64..300, data in "[a-z()0-9 ]{0,20}", endpos in proptest::option::of(0u64..1_000_000)) {
        let mut line = format!("200 result={result}");
        if !data.is_empty() { line.push_str(&format!(" ({data})")); }
        if let Some(e) = endpos { line.push_str(&format!(" endpos={e}")); }
        match Reply::parse_line(&line) {
            Some(Reply::Success { result: r, endpos: e, .. }) => {
                prop_assert_eq!(r, Some(result));
                prop_assert_eq!(e, endpos);
            }
            other => prop_assert!(false, "{line:?} -> {other:?}"),
        }
    }

    #[test]
    fn header_parser_never_panics(text in any::<String>()) {
        let _ = AgiHeader::parse(&text);
    }
}

//! Phrase grammars for libvosk, kept on the safe side of its crashes: libvosk 0.3.45 segfaults
//! on an empty list or malformed JSON (`research/vosk-0.3.45.md` §6), so phrases are
//! normalized, empty ones dropped, words outside the model's vocabulary reported, and the
//! JSON is built and re-parsed with serde_json before libvosk ever sees it. Runs on the
//! controller (parsing) and the recognizer thread (vocabulary checks).

use super::{vosk_raw, AsrError};

/// Lowercases, turns punctuation (quotes and backslashes included) into spaces, and
/// collapses whitespace. Letters of every script are kept.
///
/// ```
/// use asr_bridge::asr::grammar::normalize;
/// assert_eq!(normalize("  Customer-Service, \"please\"! "), "customer service please");
/// assert_eq!(normalize("안녕하세요, 반갑습니다."), "안녕하세요 반갑습니다");
/// ```
pub fn normalize(text: &str) -> String {
    let mapped: String =
        text.chars().map(|c| if c.is_alphanumeric() || c == '\'' || c == '[' || c == ']' { c } else { ' ' }).flat_map(char::to_lowercase).collect();
    mapped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Splits `a|b|c` into normalized, non-empty, distinct phrases.
pub fn parse_phrases(spec: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in spec.split(['|', '\n']) {
        let n = normalize(p);
        if !n.is_empty() && !out.contains(&n) {
            out.push(n);
        }
    }
    out
}

/// The phrases as the `vosk` crate must receive them: it wraps each in quotes without
/// escaping, so each is passed JSON-escaped already; the whole array is then re-parsed here
/// and must give back exactly the phrases. An empty list is refused (libvosk would crash).
pub fn vosk_grammar_args(phrases: &[String]) -> Result<Vec<String>, AsrError> {
    if phrases.is_empty() {
        return Err(AsrError::Grammar("the grammar has no phrases left (empty, or no word of it is in the model's vocabulary)".into()));
    }
    let escaped: Vec<String> = phrases
        .iter()
        .map(|p| {
            let q = serde_json::to_string(p).unwrap_or_default();
            q[1..q.len() - 1].to_string()
        })
        .collect();
    // Exactly what vosk 0.3.1's new_with_grammar assembles.
    let assembled = format!("[{}]", escaped.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", "));
    match serde_json::from_str::<Vec<String>>(&assembled) {
        Ok(back) if back == phrases => Ok(escaped),
        _ => Err(AsrError::Grammar(format!("grammar JSON did not round-trip: {assembled}"))),
    }
}

/// Keeps the phrases with at least one word the model knows (libvosk drops unknown words)
/// and lists the unknown words. Adds `[unk]` for rejection when the model has that word.
/// Linear in the words: a list of unknown words is checked without a quadratic scan, and
/// without holding anything shared with other calls ([`vosk_raw::knows`] takes `&Model`).
pub fn check_vocabulary(model: &vosk::Model, phrases: &[String]) -> (Vec<String>, Vec<String>) {
    let mut kept = Vec::new();
    let mut oov = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for p in phrases {
        let mut known = false;
        for w in p.split(' ') {
            if vosk_raw::knows(model, w) {
                known = true;
            } else if seen.insert(w) {
                oov.push(w.to_string());
            }
        }
        if known {
            kept.push(p.clone());
        }
    }
    if !kept.is_empty() && vosk_raw::knows(model, "[unk]") && !kept.iter().any(|k| k == "[unk]") {
        kept.push("[unk]".to_string());
    }
    (kept, oov)
}

/// Drops the rejection token from a transcript.
pub fn strip_unk(text: &str) -> String {
    text.split_whitespace().filter(|w| *w != "[unk]").collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases() {
        assert_eq!(parse_phrases("Sales| support ||HELP desk|sales"), vec!["sales", "support", "help desk"]);
        assert!(parse_phrases(" | ,, |").is_empty());
    }

    #[test]
    fn json_is_safe_for_any_phrase() {
        assert!(vosk_grammar_args(&[]).is_err());
        let tricky = vec!["a\"b".to_string(), "c\\d".to_string(), "한국어".to_string(), "[unk]".into()];
        let args = vosk_grammar_args(&tricky).unwrap();
        assert_eq!(args[0], "a\\\"b");
        assert_eq!(args[1], "c\\\\d");
        assert_eq!(args[2], "한국어");
    }
}

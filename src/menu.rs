//! Voice menus: `--choice=VALUE:phrase|phrase` options and matching a transcript to them.
//! Matching normalizes case and punctuation and tolerates small recognition errors with a
//! character edit distance, refusing anything below a threshold. Pure code, controller thread.

use crate::asr::grammar::normalize;

/// One menu entry: the value for `ASR_CHOICE` and the phrases that select it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub value: String,
    pub phrases: Vec<String>,
}

/// Parses one `--choice` option: `VALUE:phrase|phrase`, or just `phrase` (the value is the
/// phrase itself). One choice per EAGI argument, since commas separate EAGI arguments.
///
/// ```
/// use asr_bridge::menu::parse_choice;
/// let c = parse_choice("200:Support|customer service|help desk").unwrap();
/// assert_eq!(c.value, "200");
/// assert_eq!(c.phrases, ["support", "customer service", "help desk"]);
/// assert_eq!(parse_choice("sales").unwrap().value, "sales");
/// assert!(parse_choice("100:").is_err());
/// ```
pub fn parse_choice(spec: &str) -> Result<Choice, String> {
    let (value, phrases) = match spec.split_once(':') {
        Some((v, p)) => (v.trim().to_string(), p),
        None => (normalize(spec), spec),
    };
    let phrases = crate::asr::grammar::parse_phrases(phrases);
    if value.is_empty() || phrases.is_empty() {
        return Err(format!("--choice={spec:?}: use VALUE:phrase|phrase"));
    }
    Ok(Choice { value, phrases })
}

/// Levenshtein distance over characters.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// How well `phrase` is found in `text` (both normalized), 0-1: 1 for the whole text, 0.95
/// when the phrase's words appear in a row inside a longer text, otherwise the best
/// character similarity of the phrase to any run of as many words of the text.
pub fn phrase_score(phrase: &str, text: &str) -> f64 {
    if phrase.is_empty() || text.is_empty() {
        return 0.0;
    }
    if phrase == text {
        return 1.0;
    }
    let p: Vec<&str> = phrase.split(' ').collect();
    let t: Vec<&str> = text.split(' ').collect();
    if t.windows(p.len()).any(|w| w == p.as_slice()) {
        return 0.95;
    }
    let mut best = 0.0f64;
    for n in [p.len().saturating_sub(1).max(1), p.len(), p.len() + 1] {
        for w in t.windows(n.min(t.len())) {
            let cand = w.join(" ");
            let len = cand.chars().count().max(phrase.chars().count()) as f64;
            let sim = 1.0 - edit_distance(&cand, phrase) as f64 / len;
            best = best.max(sim * 0.9); // a fuzzy match never ranks above an exact one
        }
    }
    best
}

/// The best choice for `transcript`, if its score reaches `threshold`.
pub fn best_match<'a>(choices: &'a [Choice], transcript: &str, threshold: f64) -> Option<(&'a Choice, f64)> {
    let text = normalize(transcript);
    let mut best: Option<(&Choice, f64)> = None;
    for c in choices {
        for p in &c.phrases {
            let s = phrase_score(p, &text);
            if best.is_none_or(|(_, b)| s > b) {
                best = Some((c, s));
            }
        }
    }
    best.filter(|(_, s)| *s >= threshold)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn menu() -> Vec<Choice> {
        ["100:sales", "200:support|customer service|help desk", "300:billing"].iter().map(|s| parse_choice(s).unwrap()).collect()
    }

    #[test]
    fn exact_contained_and_fuzzy() {
        let m = menu();
        assert_eq!(best_match(&m, "Sales.", 0.7).unwrap().0.value, "100");
        assert_eq!(best_match(&m, "I need customer service please", 0.7).unwrap().0.value, "200");
        assert_eq!(best_match(&m, "biling", 0.7).unwrap().0.value, "300");
        assert_eq!(best_match(&m, "help des", 0.7).unwrap().0.value, "200");
    }

    #[test]
    fn nothing_close_is_no_match() {
        let m = menu();
        assert!(best_match(&m, "what is the weather", 0.7).is_none());
        assert!(best_match(&m, "", 0.7).is_none());
    }

    #[test]
    fn korean_phrases() {
        let m = vec![parse_choice("1:안녕하세요").unwrap(), parse_choice("2:감사합니다").unwrap()];
        assert_eq!(best_match(&m, "안녕하세요 반갑습니다", 0.7).unwrap().0.value, "1");
        assert_eq!(best_match(&m, "안녕하세오", 0.7).unwrap().0.value, "1");
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("가나", "가나"), 0);
    }
}

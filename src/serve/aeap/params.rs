//! The engine parameters of one speech object, typed where they enter: from the client
//! section's `@name=value` lines (sent in `setup`) and from the dialplan's
//! `Set(SPEECH_ENGINE(name)=value)` and `Set(SPEECH_RESULTS_TYPE()=nbest)` (each sent as a
//! `set`). Durations take the bridge's forms (`800ms`, `5s`, a bare number is milliseconds).
//! A change applies from the next utterance on.

use std::time::Duration;

use crate::asr::endpoint::Timers;
use crate::serve::call::{CallConfig, MAX_PHRASES, MAX_PHRASE_BYTES};
use crate::value::parse_duration;

/// Most n-best alternatives asked of libvosk.
pub(crate) const MAX_NBEST: u16 = 10;

/// `results_type` as res_speech names it (`ast_speech_results_type_to_string`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResultsType {
    Normal,
    NBest,
}

/// What one speech object is set to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Params {
    pub timers: Timers,
    pub vad_mode: u8,
    pub results_type: ResultsType,
    /// Alternatives asked for when `results_type` is `nbest`.
    pub nbest: u16,
    /// A phrase grammar (`phrases=yes|no|maybe`), normalized; None is free speech.
    pub phrases: Option<Vec<String>>,
    /// The name results carry in `grammar`.
    pub grammar_name: String,
}

/// The grammar name of free speech.
pub(crate) const FREE_GRAMMAR: &str = "free";

impl Default for Params {
    fn default() -> Params {
        Params { timers: Timers::default(), vad_mode: 2, results_type: ResultsType::Normal, nbest: 3, phrases: None, grammar_name: FREE_GRAMMAR.into() }
    }
}

impl Params {
    /// Applies one `name=value`; a bad value or an unknown name is refused with the reason and
    /// changes nothing. `dtmf` is not a parameter (the session handles it).
    pub(crate) fn apply(&mut self, name: &str, value: &str) -> Result<(), String> {
        let duration = |what: &str| parse_duration(value).filter(|d| !d.is_zero()).ok_or_else(|| format!("{what} {value:?}: not a duration (e.g. 800ms, 5s)"));
        match name {
            "no_input_timeout" => self.timers.no_input = duration(name)?,
            "end_silence" => {
                let d = duration(name)?;
                if d < Duration::from_millis(100) {
                    return Err(format!("end_silence {value:?}: at least 100ms"));
                }
                self.timers.end_silence = d;
            }
            "max_duration" => self.timers.max_duration = duration(name)?,
            "min_speech" => self.timers.min_speech = duration(name)?,
            "vad_mode" => self.vad_mode = value.trim().parse().ok().filter(|m| *m <= 3).ok_or_else(|| format!("vad_mode {value:?}: 0-3"))?,
            "results_type" => {
                self.results_type = match value {
                    "normal" => ResultsType::Normal,
                    "nbest" => ResultsType::NBest,
                    _ => return Err(format!("results_type {value:?}: normal or nbest")),
                }
            }
            "nbest" => {
                self.nbest = value.trim().parse().ok().filter(|n| (1..=MAX_NBEST).contains(n)).ok_or_else(|| format!("nbest {value:?}: 1-{MAX_NBEST}"))?
            }
            "phrases" => self.phrases = phrases(value)?,
            "grammar_name" => {
                let v = value.trim();
                if v.is_empty() || v.len() > 64 {
                    return Err(format!("grammar_name {value:?}: 1-64 characters"));
                }
                self.grammar_name = v.to_string();
            }
            // One model serves one language; the sample engine's `@language` is taken and ignored.
            "language" => {}
            _ => return Err(format!("unknown parameter {name:?}")),
        }
        Ok(())
    }

    /// The value `get` reports for `name` (as a string, which res_speech_aeap requires).
    pub(crate) fn get(&self, name: &str) -> Option<String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        Some(match name {
            "no_input_timeout" => ms(self.timers.no_input),
            "end_silence" => ms(self.timers.end_silence),
            "max_duration" => ms(self.timers.max_duration),
            "min_speech" => ms(self.timers.min_speech),
            "vad_mode" => self.vad_mode.to_string(),
            "results_type" => match self.results_type {
                ResultsType::Normal => "normal".into(),
                ResultsType::NBest => "nbest".into(),
            },
            "nbest" => self.nbest.to_string(),
            "phrases" => self.phrases.as_ref().map(|p| p.join("|")).unwrap_or_default(),
            "grammar_name" => self.grammar_name(),
            _ => return None,
        })
    }

    /// The grammar name results carry: `grammar_name` with phrases, `free` without.
    pub(crate) fn grammar_name(&self) -> String {
        if self.phrases.is_some() && self.grammar_name == FREE_GRAMMAR {
            "phrases".into()
        } else {
            self.grammar_name.clone()
        }
    }

    /// The recognizer the next utterance needs (its key in the warm pool).
    pub(crate) fn call_config(&self, rate: u32) -> CallConfig {
        let mut c = CallConfig::new(rate);
        c.phrase_list = self.phrases.clone();
        c.partials = false;
        c.max_alternatives = match self.results_type {
            ResultsType::Normal => 0,
            ResultsType::NBest => self.nbest,
        };
        c
    }
}

/// `phrases=yes|no|maybe`: `|`-separated (a dialplan value cannot hold bare commas), within
/// the served protocol's caps; empty clears the grammar.
fn phrases(value: &str) -> Result<Option<Vec<String>>, String> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let list: Vec<&str> = value.split('|').collect();
    if list.len() > MAX_PHRASES {
        return Err(format!("phrases: {} phrases; at most {MAX_PHRASES}", list.len()));
    }
    if let Some(p) = list.iter().find(|p| p.len() > MAX_PHRASE_BYTES) {
        return Err(format!("phrases: a phrase of {} bytes; at most {MAX_PHRASE_BYTES}", p.len()));
    }
    let mut seen = std::collections::HashSet::new();
    let kept: Vec<String> = list.iter().map(|p| crate::asr::grammar::normalize(p)).filter(|p| !p.is_empty() && seen.insert(p.clone())).collect();
    if kept.is_empty() {
        return Err("phrases: no phrase left after normalizing".into());
    }
    Ok(Some(kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_and_checked() {
        let mut p = Params::default();
        p.apply("end_silence", "700ms").unwrap();
        p.apply("no_input_timeout", "3s").unwrap();
        p.apply("max_duration", "2000").unwrap();
        assert_eq!(p.timers.end_silence, Duration::from_millis(700));
        assert_eq!(p.timers.no_input, Duration::from_secs(3));
        assert_eq!(p.timers.max_duration, Duration::from_secs(2));
        assert_eq!(p.get("end_silence").as_deref(), Some("700ms"));
        let before = p.clone();
        assert!(p.apply("end_silence", "50ms").unwrap_err().contains("100ms"));
        assert!(p.apply("no_input_timeout", "soon").is_err());
        assert!(p.apply("results_type", "best").is_err());
        assert!(p.apply("vad_mode", "4").is_err());
        assert!(p.apply("frobnicate", "1").unwrap_err().contains("unknown"));
        assert_eq!(p, before, "a refused value changes nothing");
        p.apply("language", "en-US").unwrap();
        p.apply("results_type", "nbest").unwrap();
        assert_eq!(p.call_config(8000).max_alternatives, 3);
    }

    #[test]
    fn phrase_grammars() {
        let mut p = Params::default();
        assert_eq!(p.grammar_name(), "free");
        p.apply("phrases", "Yes|no| yes |").unwrap();
        assert_eq!(p.phrases, Some(vec!["yes".to_string(), "no".to_string()]));
        assert_eq!(p.grammar_name(), "phrases");
        p.apply("grammar_name", "menu").unwrap();
        assert_eq!(p.grammar_name(), "menu");
        assert_eq!(p.call_config(16000).phrase_list, p.phrases);
        assert!(p.apply("phrases", "|||").is_err());
        p.apply("phrases", "").unwrap();
        assert_eq!(p.phrases, None);
        assert!(p.apply("phrases", &"x".repeat(MAX_PHRASE_BYTES + 1)).is_err());
    }
}

//! What the dialplan is told: the status, the MRCP cause, the text and the rest of the
//! `ASR_*` variables, mapped from an attempt's outcome and the menu's rules.

use serde::{Deserialize, Serialize};

use crate::asr::endpoint::EndReason;
use crate::asr::recognizer::Outcome;
use crate::config::MenuConfig;
use crate::log_line;
use crate::menu::best_match;
use crate::session::record::Cause;
use crate::session::CallError;

/// The dialplan outcome (`ASR_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "NOMATCH")]
    NoMatch,
    #[serde(rename = "NOINPUT")]
    NoInput,
    #[serde(rename = "DTMF")]
    Dtmf,
    #[serde(rename = "HANGUP")]
    Hangup,
    #[serde(rename = "ERROR")]
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NoMatch => "NOMATCH",
            Status::NoInput => "NOINPUT",
            Status::Dtmf => "DTMF",
            Status::Hangup => "HANGUP",
            Status::Error => "ERROR",
        }
    }
}

/// What the dialplan will be told.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: Status,
    pub text: String,
    pub confidence: Option<f32>,
    pub cause: Cause,
    pub error: String,
    /// The matched menu choice's value.
    pub choice: String,
    /// Keys pressed instead of speaking.
    pub dtmf: String,
    /// N-best texts with their shares, best first.
    pub alternatives: Vec<(String, f32)>,
}

impl Verdict {
    /// An error's verdict: only [`crate::session::CallError::verdict`] makes one.
    pub(super) fn error(cause: Cause, msg: String) -> Verdict {
        Verdict {
            status: Status::Error,
            text: String::new(),
            confidence: None,
            cause,
            error: msg,
            choice: String::new(),
            dtmf: String::new(),
            alternatives: Vec::new(),
        }
    }

    pub fn hangup() -> Verdict {
        Verdict {
            status: Status::Hangup,
            text: String::new(),
            confidence: None,
            cause: Cause::None,
            error: String::new(),
            choice: String::new(),
            dtmf: String::new(),
            alternatives: Vec::new(),
        }
    }

    pub fn dtmf(digits: String) -> Verdict {
        Verdict {
            status: Status::Dtmf,
            text: String::new(),
            confidence: None,
            cause: Cause::Success,
            error: String::new(),
            choice: String::new(),
            dtmf: digits,
            alternatives: Vec::new(),
        }
    }

    /// Maps the recognizer's outcome to the dialplan contract.
    pub fn from_outcome(o: &Outcome) -> Verdict {
        let text = crate::asr::grammar::strip_unk(&o.transcript.text);
        let heard = o.endpoint.speech_start_ms.is_some();
        let (status, cause) = match (o.reason(), text.is_empty(), heard) {
            (EndReason::NoInput, _, _) => (Status::NoInput, Cause::NoInputTimeout),
            (EndReason::MaxDuration, false, _) => (Status::Ok, Cause::SuccessMaxTime),
            (_, false, _) => (Status::Ok, Cause::Success),
            (EndReason::AudioClosed, true, false) => return CallError::AudioClosedBeforeSpeech.verdict(),
            (_, true, _) => (Status::NoMatch, Cause::NoMatch),
        };
        let keep_text = matches!(status, Status::Ok);
        Verdict {
            status,
            confidence: if keep_text { o.transcript.confidence() } else { None },
            text: if keep_text { text } else { String::new() },
            cause,
            error: String::new(),
            choice: String::new(),
            dtmf: String::new(),
            alternatives: if keep_text {
                o.transcript.alternatives.iter().map(|a| (crate::asr::grammar::strip_unk(&a.text), a.share)).collect()
            } else {
                Vec::new()
            },
        }
    }

    /// Applies the menu: a confidence floor, then the choices. Either can turn OK into NOMATCH.
    pub fn apply_menu(mut self, menu: &MenuConfig) -> Verdict {
        if self.status != Status::Ok {
            return self;
        }
        let nomatch = |mut v: Verdict| {
            v.status = Status::NoMatch;
            v.cause = Cause::NoMatch;
            v
        };
        if self.confidence.unwrap_or(0.0) < menu.min_confidence as f32 {
            return nomatch(self);
        }
        if menu.choices.is_empty() {
            return self;
        }
        // The best transcript first, then the alternatives, as the source of a match.
        let candidates: Vec<String> = std::iter::once(self.text.clone()).chain(self.alternatives.iter().map(|a| a.0.clone())).collect();
        for c in candidates {
            if let Some((choice, score)) = best_match(&menu.choices, &c, menu.match_threshold) {
                log_line!("choice {} matched {c:?} with score {score:.2}", choice.value);
                self.choice = choice.value.clone();
                return self;
            }
        }
        nomatch(self)
    }
}

/// How one attempt ended.
#[derive(Debug)]
pub enum AttemptEnd {
    Outcome(Box<Outcome>),
    Dtmf(String),
    Verdict(Verdict),
}

//! The per-call JSON line (`--json-log`): one [`CallRecord`] per call, written by the session
//! and read back, typed, by the bench and the tests. A renamed field is a compile error on
//! both sides, not a `null`.

use serde::{Deserialize, Serialize};

use crate::asr::endpoint::EndReason;
use crate::asr::Backend;
use crate::session::verdict::Status;

/// `ASR_CAUSE`: the MRCP completion cause, or one of the bridge's own codes. Its `Display` is
/// the dialplan's code, and the JSON line holds the same string ([`Cause::code`], the one map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Cause {
    /// `000` success.
    Success,
    /// `001` no-match.
    NoMatch,
    /// `002` no-input-timeout.
    NoInputTimeout,
    /// `006` recognizer-error.
    RecognizerError,
    /// `008` success-maxtime: speech went on past `--max-duration` and was cut.
    SuccessMaxTime,
    /// `100` the recognition server is busy (the dialplan can offer DTMF).
    ServerBusy,
    /// `101` the recognition server cannot be reached.
    ServerUnreachable,
    /// `102` the recognition server was lost mid-call or missed its reply deadline.
    ServerLost,
    /// Empty: the caller hung up, nothing was decided.
    None,
}

impl Cause {
    const ALL: [Cause; 9] = [
        Cause::Success,
        Cause::NoMatch,
        Cause::NoInputTimeout,
        Cause::RecognizerError,
        Cause::SuccessMaxTime,
        Cause::ServerBusy,
        Cause::ServerUnreachable,
        Cause::ServerLost,
        Cause::None,
    ];

    /// The code the dialplan reads.
    pub fn code(self) -> &'static str {
        match self {
            Cause::Success => "000",
            Cause::NoMatch => "001",
            Cause::NoInputTimeout => "002",
            Cause::RecognizerError => "006",
            Cause::SuccessMaxTime => "008",
            Cause::ServerBusy => "100",
            Cause::ServerUnreachable => "101",
            Cause::ServerLost => "102",
            Cause::None => "",
        }
    }
}

impl From<Cause> for &'static str {
    fn from(c: Cause) -> &'static str {
        c.code()
    }
}

impl TryFrom<String> for Cause {
    type Error = String;

    fn try_from(code: String) -> Result<Cause, String> {
        Cause::ALL.into_iter().find(|c| c.code() == code).ok_or_else(|| format!("{code:?} is not an ASR_CAUSE code"))
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// One call, as its JSON line. Times are ms from the process start unless named otherwise;
/// `None` is "did not happen" (written as `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Unix time of the line, seconds.
    pub ts: f64,
    pub uniqueid: String,
    pub channel: String,
    pub status: Status,
    pub cause: Cause,
    pub text: String,
    pub confidence: Option<f32>,
    pub error: String,
    /// The audio rate on fd 3.
    pub rate: Option<u32>,
    /// The bridge resampled to the model's rate.
    pub resampling: bool,
    /// Loading the model (or connecting to the server).
    pub model_load_ms: Option<f64>,
    pub backend: Backend,
    /// Loading the in-process model after the server was lost mid-attempt.
    pub fallback_ms: Option<f64>,
    /// When decoding could start.
    pub ready_ms: Option<f64>,
    /// When the fd 3 reader was ready, and when the first audio came.
    pub fd3_ready_ms: Option<f64>,
    pub first_audio_ms: Option<f64>,
    /// Samples read from fd 3, and in how many reads.
    pub audio_samples_in: u64,
    pub audio_reads: u64,
    /// Samples that did not fit in the ring.
    pub samples_dropped: u64,
    /// fd 3's pipe size (0 when unknown).
    pub pipe_size: u64,
    /// Stream position up to which the last attempt listened.
    pub samples_consumed: Option<u64>,
    pub end_reason: Option<EndReason>,
    /// Media ms where speech started and ended in the last attempt.
    pub speech_start_ms: Option<f64>,
    pub speech_end_ms: Option<f64>,
    /// Wall time without audio (DTX) inside the last attempt.
    pub dtx_ms: Option<f64>,
    /// libvosk's (or the server's) final step.
    pub finalize_ms: Option<f64>,
    /// How long the caller waited for decoding after the endpointer decided.
    pub decode_wait_ms: Option<f64>,
    pub samples_decoded: u64,
    /// Samples dropped before the decoder (it fell more than the ring behind).
    pub decoder_dropped: u64,
    /// From the arrival of the audio where speech ended to the first variable set.
    pub result_latency_ms: Option<f64>,
    /// When the first variable was sent.
    pub status_set_ms: Option<f64>,
    /// The signal that ended the call (SIGHUP at a hangup).
    pub signal: Option<i32>,
    pub attempts: u32,
    /// When the prompt was stopped by speech.
    pub barge_in_ms: Option<f64>,
    pub choice: String,
    pub dtmf: String,
    /// CPU seconds of the whole process, and at the end of the model load.
    pub cpu_s: f64,
    pub cpu_at_load_s: Option<f64>,
    /// The process start, Unix ms.
    pub t0_unix_ms: f64,
    pub peak_rss_kb: u64,
    pub wall_ms: f64,
    /// The servers that served the call, in the order they first did.
    pub servers: Vec<String>,
    /// Servers lost mid-attempt and replaced by another (or the same address again).
    pub failovers: u32,
}

impl CallRecord {
    /// The last line of a JSON log file, if it has one that parses.
    pub fn last_in(path: &std::path::Path) -> Result<CallRecord, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).ok_or_else(|| format!("{}: no line", path.display()))?;
        serde_json::from_str(line).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// The JSON line itself (for messages).
impl std::fmt::Display for CallRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cause_codes_are_the_dialplan_contract() {
        for (c, code) in [
            (Cause::Success, "000"),
            (Cause::NoMatch, "001"),
            (Cause::NoInputTimeout, "002"),
            (Cause::RecognizerError, "006"),
            (Cause::SuccessMaxTime, "008"),
            (Cause::ServerBusy, "100"),
            (Cause::ServerUnreachable, "101"),
            (Cause::ServerLost, "102"),
            (Cause::None, ""),
        ] {
            assert_eq!(c.to_string(), code);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{code}\""));
            assert_eq!(serde_json::from_str::<Cause>(&format!("\"{code}\"")).unwrap(), c);
        }
        assert!(serde_json::from_str::<Cause>("\"007\"").is_err(), "not a code");
    }

    #[test]
    fn backend_names_round_trip() {
        for b in [Backend::None, Backend::InProcess, Backend::Server, Backend::Fallback] {
            assert_eq!(serde_json::from_str::<Backend>(&serde_json::to_string(&b).unwrap()).unwrap(), b);
            assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{b}\""));
        }
    }
}

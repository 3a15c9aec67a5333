//! Options: the raw clap flags ([`CallArgs`], from argv with environment defaults) and the
//! validated [`Config`] with `Duration`s and paths. Parsed on the controller thread, before
//! anything else that can fail; a bad option is reported to the dialplan as ERROR.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::agi::command::valid_variable_name;
use crate::asr::endpoint::Timers;

/// Where the model is looked for when neither `--model` nor `ASR_BRIDGE_MODEL` says.
pub const DEFAULT_MODEL: &str = "/var/lib/asr_bridge/model";

/// Errors in the options.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// clap rejected the arguments.
    #[error("bad option: {0}")]
    Args(String),
    /// A duration did not parse.
    #[error("--{option}={value:?} is not a duration (use e.g. 700ms, 5s, 1.5s, 2m; a bare number is milliseconds)")]
    Duration { option: &'static str, value: String },
    /// A value is out of range.
    #[error("--{option}={value:?}: {why}")]
    Range {
        option: &'static str,
        value: String,
        why: &'static str,
    },
}

/// The raw flags, exactly as the dialplan passes them: `EAGI(asr_bridge,--end-silence=700ms)`.
#[derive(Debug, Clone, Parser)]
#[command(name = "asr_bridge", version, about = "Offline speech recognition for the Asterisk dialplan (EAGI + Vosk)")]
pub struct CallArgs {
    /// Vosk model directory.
    #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = DEFAULT_MODEL)]
    pub model: PathBuf,
    /// No speech this long after listening starts ends with NOINPUT.
    #[arg(long, env = "ASR_BRIDGE_NO_INPUT_TIMEOUT", default_value = "5s")]
    pub no_input_timeout: String,
    /// Trailing silence that ends the utterance.
    #[arg(long, env = "ASR_BRIDGE_END_SILENCE", default_value = "800ms")]
    pub end_silence: String,
    /// Longest utterance; longer speech is cut off (ASR_CAUSE=008).
    #[arg(long, env = "ASR_BRIDGE_MAX_DURATION", default_value = "15s")]
    pub max_duration: String,
    /// Voiced audio needed before speech counts as started.
    #[arg(long, default_value = "100ms")]
    pub min_speech: String,
    /// Audio sample rate on fd 3; by default read from EAGI_AUDIO_FORMAT (slin = 8000).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Prefix of the dialplan variables set.
    #[arg(long, env = "ASR_BRIDGE_PREFIX", default_value = "ASR_")]
    pub prefix: String,
    /// Send ANSWER first (EAGI never answers for you).
    #[arg(long)]
    pub answer: bool,
    /// Write the samples the recognizer consumed to this WAV file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Human-readable log file; the process's stderr (and so libvosk's) goes there too.
    #[arg(long, env = "ASR_BRIDGE_LOG")]
    pub log: Option<PathBuf>,
    /// Append one JSON line per call with timings and the outcome.
    #[arg(long, env = "ASR_BRIDGE_JSON_LOG")]
    pub json_log: Option<PathBuf>,
    /// WebRTC VAD aggressiveness, 0 (keeps most audio as speech) to 3.
    #[arg(long, default_value_t = 2)]
    pub vad_mode: u8,
    /// Longest wait for the model to load.
    #[arg(long, default_value = "60s")]
    pub load_timeout: String,
    /// Longest wait for any AGI reply.
    #[arg(long, default_value = "10s")]
    pub reply_timeout: String,
}

/// The validated options of one call.
#[derive(Debug, Clone)]
pub struct Config {
    pub model: PathBuf,
    pub timers: Timers,
    pub rate: Option<u32>,
    pub prefix: String,
    pub answer: bool,
    pub record: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub json_log: Option<PathBuf>,
    pub vad_mode: u8,
    pub load_timeout: Duration,
    pub reply_timeout: Duration,
}

/// Parses `700ms`, `5s`, `1.5s`, `2m`, or a bare number of milliseconds.
///
/// ```
/// use asr_bridge::config::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("700ms"), Some(Duration::from_millis(700)));
/// assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("-1s"), None);
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 0.001)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(v * scale))
}

fn duration(option: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).ok_or_else(|| ConfigError::Duration {
        option,
        value: value.to_string(),
    })
}

impl CallArgs {
    /// Parses argv elements (without the program name). Empty elements, which
    /// `EAGI(asr_bridge,)` produces, are skipped.
    pub fn parse_from_args<I: IntoIterator<Item = String>>(args: I) -> Result<CallArgs, clap::Error> {
        let argv = std::iter::once("asr_bridge".to_string()).chain(args.into_iter().filter(|a| !a.trim().is_empty()));
        CallArgs::try_parse_from(argv)
    }

    /// Validates the raw flags into a [`Config`].
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let timers = Timers {
            no_input: duration("no-input-timeout", &self.no_input_timeout)?,
            end_silence: duration("end-silence", &self.end_silence)?,
            max_duration: duration("max-duration", &self.max_duration)?,
            min_speech: duration("min-speech", &self.min_speech)?,
        };
        if timers.end_silence < Duration::from_millis(100) {
            return Err(ConfigError::Range {
                option: "end-silence",
                value: self.end_silence.clone(),
                why: "must be at least 100ms",
            });
        }
        if timers.max_duration.is_zero() || timers.no_input.is_zero() {
            return Err(ConfigError::Range {
                option: if timers.no_input.is_zero() { "no-input-timeout" } else { "max-duration" },
                value: if timers.no_input.is_zero() { self.no_input_timeout.clone() } else { self.max_duration.clone() },
                why: "must be more than zero",
            });
        }
        if let Some(r) = self.rate {
            if ![8000, 16000, 32000, 48000].contains(&r) {
                return Err(ConfigError::Range {
                    option: "rate",
                    value: r.to_string(),
                    why: "must be 8000, 16000, 32000 or 48000",
                });
            }
        }
        if !valid_variable_name(&format!("{}STATUS", self.prefix)) || self.prefix.contains(['(', ')']) {
            return Err(ConfigError::Range {
                option: "prefix",
                value: self.prefix.clone(),
                why: "must be letters, digits and _ only",
            });
        }
        if self.vad_mode > 3 {
            return Err(ConfigError::Range {
                option: "vad-mode",
                value: self.vad_mode.to_string(),
                why: "must be 0, 1, 2 or 3",
            });
        }
        Ok(Config {
            model: self.model.clone(),
            timers,
            rate: self.rate,
            prefix: self.prefix.clone(),
            answer: self.answer,
            record: self.record.clone(),
            log: self.log.clone(),
            json_log: self.json_log.clone(),
            vad_mode: self.vad_mode,
            load_timeout: duration("load-timeout", &self.load_timeout)?,
            reply_timeout: duration("reply-timeout", &self.reply_timeout)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Config, String> {
        CallArgs::parse_from_args(a.iter().map(|s| s.to_string()))
            .map_err(|e| e.to_string())
            .and_then(|c| c.validate().map_err(|e| e.to_string()))
    }

    #[test]
    fn dialplan_style_arguments() {
        let c = args(&["--end-silence=700ms", "", "--no-input-timeout=3s", "--model=/m", "--answer"]).unwrap();
        assert_eq!(c.timers.end_silence, Duration::from_millis(700));
        assert_eq!(c.timers.no_input, Duration::from_secs(3));
        assert_eq!(c.model, PathBuf::from("/m"));
        assert!(c.answer);
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        assert!(args(&["--end-silence=soon"]).unwrap_err().contains("--end-silence=\"soon\" is not a duration"));
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(args(&["--prefix=A B"]).unwrap_err().contains("prefix"));
        assert!(args(&["--rate=11025"]).unwrap_err().contains("rate"));
    }
}

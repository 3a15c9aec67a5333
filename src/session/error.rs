//! Everything that can end a call with `ASR_STATUS=ERROR`, joined from the boundaries' own
//! errors with their sources kept. [`CallError::verdict`] is the one place an error becomes
//! what the dialplan is told (status, cause, `ASR_ERROR`).

use crate::agi::AgiError;
use crate::asr::model::NoModel;
use crate::asr::AsrError;
use crate::audio::AudioError;
use crate::config::ConfigError;
use crate::profile::ProfileError;
use crate::session::record::Cause;
use crate::session::verdict::Verdict;

/// Why a call ended in error.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The config file or a profile is wrong.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// clap refused the options (its first line is kept).
    #[error("bad option: {0}")]
    Options(String),
    /// The options parsed but are not valid together.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No model for the call's language under `--models-root`.
    #[error(transparent)]
    NoModel(#[from] NoModel),
    /// fd 3, the audio format.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The AGI channel failed (write, EOF, a missed deadline).
    #[error(transparent)]
    Agi(#[from] AgiError),
    /// Asterisk answered a command with something other than success.
    #[error("Asterisk refused `{command}`: {reply}")]
    Refused { command: String, reply: String },
    /// The model, the recognizer or the server.
    #[error(transparent)]
    Asr(#[from] AsrError),
    /// The recognizer threads could not be started.
    #[error("cannot start the recognizer threads: {0}")]
    Threads(#[source] std::io::Error),
    /// The recognizer threads went away without a result.
    #[error("recognizer threads ended without a result")]
    RecognizerGone,
    /// The decoder loaded but gave no text before the attempt's internal deadline.
    #[error("recognizer gave no result in time (internal deadline)")]
    NoResultInTime,
    /// fd 3 closed before the caller said anything (the host stopped the audio).
    #[error("the audio stream (fd 3) closed before any speech")]
    AudioClosedBeforeSpeech,
    /// SIGTERM or SIGINT (a SIGHUP is a hangup, not an error).
    #[error("{}", signal_words(*.0))]
    Signal(i32),
}

fn signal_words(sig: i32) -> String {
    match sig {
        libc::SIGTERM => "terminated by SIGTERM".to_string(),
        libc::SIGINT => "interrupted by SIGINT".to_string(),
        s => format!("ended by signal {s}"),
    }
}

impl CallError {
    /// `clap`'s refusal, as the dialplan reads it (the first line of clap's message).
    pub fn options(e: &clap::Error) -> CallError {
        let text = e.to_string();
        CallError::Options(text.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string())
    }

    /// What the dialplan is told: ERROR with the MRCP recognizer-error `006`, or one of the
    /// bridge's own causes the dialplan can branch on (e.g. to DTMF): `100` server busy, `101`
    /// server unreachable, `102` server lost mid-call or past its reply deadline.
    pub fn verdict(&self) -> Verdict {
        let cause = match self {
            CallError::Asr(AsrError::ServerBusy { .. }) => Cause::ServerBusy,
            CallError::Asr(AsrError::ServerUnreachable { .. }) => Cause::ServerUnreachable,
            CallError::Asr(AsrError::ServerLost { .. }) => Cause::ServerLost,
            _ => Cause::RecognizerError,
        };
        Verdict::error(cause, self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::Status;

    fn asr(e: AsrError) -> (Status, Cause) {
        let v = CallError::from(e).verdict();
        (v.status, v.cause)
    }

    #[test]
    fn server_errors_have_their_own_causes() {
        let at = || ("unix:/x".to_string(), "why".to_string());
        let (addr, reason) = at();
        assert_eq!(asr(AsrError::ServerBusy { addr, reason }), (Status::Error, Cause::ServerBusy));
        let (addr, reason) = at();
        assert_eq!(asr(AsrError::ServerUnreachable { addr, reason }), (Status::Error, Cause::ServerUnreachable));
        let (addr, reason) = at();
        assert_eq!(asr(AsrError::ServerLost { addr, reason }), (Status::Error, Cause::ServerLost));
        let (addr, reason) = at();
        assert_eq!(asr(AsrError::ServerRefused { addr, reason }), (Status::Error, Cause::RecognizerError));
        assert_eq!(asr(AsrError::ModelMissing("/m".into())), (Status::Error, Cause::RecognizerError));
    }

    #[test]
    fn the_message_is_the_errors_own() {
        let v = CallError::Signal(libc::SIGTERM).verdict();
        assert_eq!((v.status, v.cause, v.error.as_str()), (Status::Error, Cause::RecognizerError, "terminated by SIGTERM"));
        let v = CallError::from(AsrError::ModelMissing("/m".into())).verdict();
        assert!(v.error.starts_with("model directory /m does not exist"), "{}", v.error);
    }
}

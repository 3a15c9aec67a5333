//! Caller audio: the fd 3 reader thread and its lock-free ring, the EAGI audio formats, the
//! resampler for models that need a higher rate, and WAV helpers.

pub(crate) mod format;
pub(crate) mod g711;
pub mod reader;
pub(crate) mod resample;
pub mod synth;
pub mod wav;

pub use format::rate_for_eagi_format;
pub use reader::{AudioReader, AudioStats, StreamPos, EAGI_AUDIO_FD};

/// Errors at the audio boundary.
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// fd 3 is not open: the program was started with AGI(), not EAGI().
    #[error("no audio on fd 3 (fd 3 is not open): start the bridge with EAGI(), not AGI()")]
    NoFd3,
    /// fd 3 is open but not a pipe.
    #[error("fd 3 is not a pipe (it is {0}): start the bridge with EAGI(), not AGI()")]
    NotAFifo(&'static str),
    /// fstat or fcntl on fd 3 failed.
    #[error("fd 3: {op} failed: {source}")]
    Fd {
        op: &'static str,
        #[source]
        source: nix::Error,
    },
    /// EAGI_AUDIO_FORMAT names a format the bridge cannot take.
    #[error("EAGI_AUDIO_FORMAT={0:?} is not supported: use slin (8 kHz) or slin16 (16 kHz)")]
    UnsupportedFormat(String),
    /// The resampler could not be built.
    #[error("resampling {from} Hz to {to} Hz: {reason}")]
    Resample { from: u32, to: u32, reason: String },
    /// A WAV file could not be read or written.
    #[error("wav {path}: {source}")]
    Wav {
        path: String,
        #[source]
        source: hound::Error,
    },
    /// A WAV file has a format the bridge does not handle.
    #[error("wav {path}: {reason}")]
    WavFormat { path: String, reason: String },
}

//! Recognition: model checks before loading, the Vosk engine, end-of-speech logic, the noise
//! gate, and the two stages that join them to the audio ring: the endpointer (decisions on
//! arrival) and the decoder (text at its own pace), wired in [`recognizer`].

pub(crate) mod decoder;
pub mod endpoint;
pub(crate) mod endpointer;
pub mod engine;
pub mod grammar;
pub mod model;
pub(crate) mod noise;
pub(crate) mod recognizer;
pub mod remote;
pub(crate) mod resident;
pub(crate) mod vosk_raw;

pub use engine::{Engine, Transcript};
pub use model::ModelInfo;
pub use recognizer::{Fault, ServerConfig};

use serde::{Deserialize, Serialize};

/// Where the call's audio was decoded. The JSON line holds its [`Backend::name`] (the one map).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(into = "&'static str", try_from = "String")]
pub enum Backend {
    /// Nothing was loaded or connected (the call ended first).
    #[default]
    None,
    /// A model loaded in this process.
    InProcess,
    /// A recognition server (`--server`, or the resident one).
    Server,
    /// In-process after the server could not be reached, or was lost mid-call.
    Fallback,
}

impl Backend {
    const ALL: [Backend; 4] = [Backend::None, Backend::InProcess, Backend::Server, Backend::Fallback];

    /// The name in the JSON line and the log.
    pub fn name(self) -> &'static str {
        match self {
            Backend::None => "",
            Backend::InProcess => "in-process",
            Backend::Server => "server",
            Backend::Fallback => "fallback",
        }
    }
}

impl From<Backend> for &'static str {
    fn from(b: Backend) -> &'static str {
        b.name()
    }
}

impl TryFrom<String> for Backend {
    type Error = String;

    fn try_from(name: String) -> Result<Backend, String> {
        Backend::ALL.into_iter().find(|b| b.name() == name).ok_or_else(|| format!("{name:?} is not a backend"))
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors at the recognizer boundary.
#[derive(Debug, thiserror::Error)]
pub enum AsrError {
    /// The model directory does not exist.
    #[error("model directory {0} does not exist (set --model or ASR_BRIDGE_MODEL)")]
    ModelMissing(String),
    /// The path is not a directory.
    #[error("model path {0} is not a directory")]
    ModelNotDir(String),
    /// A file the model needs is missing, empty or unreadable.
    #[error("model {dir} is incomplete: {what}")]
    ModelIncomplete { dir: String, what: String },
    /// libvosk refused to load the model.
    #[error("libvosk could not load the model in {0} (files present but unreadable by Kaldi: truncated or corrupt?)")]
    ModelLoad(String),
    /// The model took too long to load.
    #[error("model did not load within {0:?}")]
    LoadTimeout(std::time::Duration),
    /// libvosk refused to create a recognizer.
    #[error("libvosk could not create a recognizer at {rate} Hz for {dir}")]
    Recognizer { dir: String, rate: u32 },
    /// libvosk rejected audio (a sample-rate mismatch makes every chunk fail).
    #[error("libvosk rejected audio at {rate} Hz: {reason}")]
    Decode { rate: u32, reason: String },
    /// The grammar cannot be given to libvosk.
    #[error("grammar: {0}")]
    Grammar(String),
    /// Writing the `--record` file failed.
    #[error("recording to {path}: {reason}")]
    Record { path: String, reason: String },
    /// The recognizer thread panicked; the message is kept.
    #[error("recognizer thread panicked: {0}")]
    Panic(String),
    /// The recognition server is at capacity and refused the call at once.
    #[error("recognition server {addr} is busy: {reason}")]
    ServerBusy { addr: String, reason: String },
    /// The recognition server cannot be reached (no socket, refused, connect deadline).
    #[error("recognition server {addr} unreachable: {reason}")]
    ServerUnreachable { addr: String, reason: String },
    /// The server went away or missed the reply deadline mid-call.
    #[error("recognition server {addr} lost: {reason}")]
    ServerLost { addr: String, reason: String },
    /// The server refused the call's settings (it says why).
    #[error("recognition server {addr} refused the call: {reason}")]
    ServerRefused { addr: String, reason: String },
    /// Audio setup failed inside the recognizer.
    #[error(transparent)]
    Audio(#[from] crate::audio::AudioError),
}

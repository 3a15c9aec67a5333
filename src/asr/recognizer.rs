//! The recognizer: two stages on two threads, joined by a lock-free ring.
//!
//! ```text
//! fd 3 ring --> [endpointer] --same samples--> decoder ring --> [decoder]
//!                   |  VAD, timers, barge-in on arrival          |  libvosk or a server
//!                   v                                            v
//!               Event::SpeechStarted / BargeIn / Ended     Event::ModelLoaded / Transcript
//! ```
//!
//! The endpointer ([`super::endpointer`]) starts at once and decides everything the caller
//! feels on the arrival of audio and the wall clock; the decoder ([`super::decoder`]) loads
//! the model or connects meanwhile and supplies the text for each span the endpointer closed.
//! Both report to the controller on one channel. A panic in either is caught and reported as
//! [`Event::Failed`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};

use super::decoder::{self, DecoderConfig, DecoderInput};
use super::endpoint::{EndReason, Timers};
use super::endpointer::{Controls, DecoderFeed, Endpoint, Endpointer, EndpointerConfig};
use super::engine::EngineOptions;
use super::{AsrError, ModelInfo, Transcript};
use crate::audio::reader::RING_CAPACITY;
use crate::audio::{AudioReader, StreamPos};
use crate::net::ServerAddr;
use crate::protocol::Token;

/// The served mode's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Where the servers listen, in the order a call tries them; empty (`--server=auto`): the
    /// resident server of the call's model, found or started on demand
    /// ([`crate::asr::resident`]).
    pub servers: Vec<ServerAddr>,
    pub timeout: Duration,
    pub fallback: bool,
    /// Sent in every handshake when set.
    pub token: Option<Token>,
}

impl ServerConfig {
    /// `--server=auto`: the resident server of the call's model.
    pub fn resident(&self) -> bool {
        self.servers.is_empty()
    }
}

/// Where decoding happens.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    /// The model loads in this process (checked already).
    Local(ModelInfo),
    /// A resident server; `fallback` is the local model to load when it cannot be reached
    /// and `--server-fallback` is on (its resolution error otherwise).
    Server { server: ServerConfig, fallback: Result<std::path::PathBuf, super::model::NoModel> },
}

/// A failure injected through the test seam (feature `faults`, option `--fault`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// The decoder thread panics right after loading.
    RecognizerPanic,
}

/// What the recognizer needs to start.
#[derive(Debug, Clone)]
pub(crate) struct RecognizerConfig {
    pub backend: Plan,
    pub audio_rate: u32,
    pub timers: Timers,
    pub vad_mode: u8,
    pub record: Option<PathBuf>,
    /// Grammar phrases (normalized) and n-best size.
    pub engine: EngineOptions,
    /// Voiced audio that counts as barge-in (stops a prompt).
    pub barge_min: Duration,
    /// Always None outside the tests (feature `faults`).
    pub fault: Option<Fault>,
}

/// Reports to the controller.
#[derive(Debug)]
pub(crate) enum Event {
    /// The model is loaded (or the server connected) and decoding starts. `load` is the time
    /// it took; `backend` says where decoding happens.
    ModelLoaded { load: Duration, resampling: bool, cpu_s: f64, backend: super::Backend, ready: Instant },
    /// The server was lost mid-attempt and `--server-fallback` is on: the in-process model
    /// took over (loading it took `load`) and was given the attempt's audio so far.
    FellBack { load: Duration, replayed_ms: f64, reason: String },
    /// An attempt connected to this server (at its start, or taking over from a lost one).
    Server { addr: String },
    /// The attempt's server was lost (`lost`, the error) and server `to` took over, given the
    /// attempt's audio so far; connecting and replaying took `took`.
    FailedOver { lost: String, to: String, replayed_ms: f64, took: Duration },
    /// Speech onset confirmed, at this media time (ms).
    SpeechStarted { at_ms: f64 },
    /// Speech has lasted the barge-in minimum: time to stop the prompt.
    BargeIn { at_ms: f64 },
    /// The endpointer ended the attempt (its transcript follows unless it is a no-input).
    Ended(Box<Endpoint>),
    /// The decoder's text for the attempt the endpointer ended; `finalize_ms` is libvosk's
    /// (or the server's) final step, `at` when it was ready.
    Transcript { transcript: Transcript, finalize_ms: f64, at: Instant },
    /// Grammar words the model does not know (logged by the controller).
    OutOfVocabulary(Vec<String>),
    /// Something failed; the call ends with ERROR.
    Failed(AsrError),
}

/// Messages from the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Start a listening attempt. `drain_to` drops audio up to that stream position (in
    /// samples, as counted by the fd 3 reader when the controller decided): prompt-time audio
    /// with barge-in off, or audio between attempts. `timers_at` starts the no-input timer at
    /// that stream position, where listening began (None: at [`Control::StartTimers`], when
    /// the prompt ends). Positions, not "now": audio that arrived before the decision may
    /// still be in the ring.
    Start { drain_to: Option<StreamPos>, timers_at: Option<StreamPos> },
    /// The prompt finished at this stream position: the no-input timer starts there.
    StartTimers { at: StreamPos },
    /// Abandon the attempt (DTMF won, or a hangup) without a result.
    Abandon,
    /// Stop for good: finish the recording and end the thread.
    Stop,
}

/// The end of one listening period: the endpointer's verdict and the decoder's text.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub endpoint: Endpoint,
    pub transcript: Transcript,
    /// Time libvosk (or the server) took to finalize, ms.
    pub finalize_ms: f64,
    /// When the text was ready; None when nothing was decoded (no input).
    pub text_at: Option<Instant>,
}

impl Outcome {
    /// An attempt that needs no text: no input.
    pub fn without_text(endpoint: Endpoint) -> Outcome {
        Outcome { endpoint, transcript: Transcript::default(), finalize_ms: 0.0, text_at: None }
    }

    pub fn reason(&self) -> EndReason {
        self.endpoint.reason
    }

    /// How long the caller waited for decoding after the endpointer decided, ms.
    pub fn decode_wait_ms(&self) -> f64 {
        self.text_at.map_or(0.0, |t| t.saturating_duration_since(self.endpoint.decided_at).as_secs_f64() * 1000.0)
    }
}

/// Starts both stages. `control` reaches the endpointer; both report on `events`.
pub(crate) fn spawn(cfg: RecognizerConfig, audio: AudioReader, events: Sender<Event>) -> std::io::Result<Controls> {
    let (ring_tx, ring_rx) = rtrb::RingBuffer::new(RING_CAPACITY);
    let (span_tx, span_rx) = unbounded();
    let (ctl_tx, ctl_rx) = bounded(8);
    let decoder_thread = Arc::new(OnceLock::new());
    let endpointer_thread = Arc::new(OnceLock::new());
    let input = DecoderInput { ring: ring_rx, spans: span_rx, stats: audio.stats.clone(), thread: decoder_thread.clone() };
    let feed = DecoderFeed { ring: ring_tx, spans: span_tx, thread: decoder_thread };
    let dcfg = DecoderConfig { backend: cfg.backend, rate: cfg.audio_rate, record: cfg.record, engine: cfg.engine, fault: cfg.fault };
    let ecfg = EndpointerConfig { rate: cfg.audio_rate, timers: cfg.timers, vad_mode: cfg.vad_mode, barge_min: cfg.barge_min };
    let ev = events.clone();
    let et = endpointer_thread.clone();
    std::thread::Builder::new().name("endpointer".into()).spawn(move || {
        let _ = et.set(std::thread::current());
        guarded(&ev, || {
            Endpointer::new(ecfg, audio, feed)?.run(&ev, &ctl_rx);
            Ok(())
        })
    })?;
    std::thread::Builder::new().name("decoder".into()).spawn(move || guarded(&events, || decoder::run(&dcfg, input, &events)))?;
    Ok(Controls::new(ctl_tx, endpointer_thread))
}

/// Runs a stage; its error or panic becomes [`Event::Failed`].
fn guarded(events: &Sender<Event>, f: impl FnOnce() -> Result<(), AsrError>) {
    let msg = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return,
        Ok(Err(e)) => Event::Failed(e),
        Err(p) => Event::Failed(AsrError::Panic(panic_message(&p))),
    };
    let _ = events.send(msg);
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

//! The recognizer thread: loads the model, then consumes the audio ring block by block,
//! runs the VAD and timers, feeds libvosk, and reports to the controller over a crossbeam
//! channel. It sleeps with `park_timeout` when the ring is empty (the fd 3 reader unparks it),
//! never spins, and every sleep is bounded by the next timer. A panic inside is caught and
//! reported as [`Event::Failed`].

use std::io::BufWriter;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::endpoint::{EndReason, SpeechTracker, Timers, VoiceDetector};
use super::engine::{block_len, load_model, Engine, EngineOptions};
use super::remote::RemoteEngine;
use super::{AsrError, ModelInfo, Transcript};
use crate::config::ServerConfig;
use crate::audio::wav::mono16_spec;
use crate::audio::AudioReader;

/// A wait for audio longer than this, with the ring empty, counts as silence (DTX).
pub const DTX_GRACE: Duration = Duration::from_millis(60);

/// Where decoding happens.
#[derive(Debug, Clone)]
pub enum Backend {
    /// The model loads in this process (checked already).
    Local(ModelInfo),
    /// A resident server; `fallback` is the local model to load when it cannot be reached
    /// and `--server-fallback` is on (its resolution error otherwise).
    Server { server: ServerConfig, fallback: Result<std::path::PathBuf, String> },
}

/// What the recognizer needs to start.
#[derive(Debug, Clone)]
pub struct RecognizerConfig {
    pub backend: Backend,
    pub audio_rate: u32,
    pub timers: Timers,
    pub vad_mode: u8,
    pub record: Option<PathBuf>,
    /// Grammar phrases (normalized) and n-best size.
    pub engine: EngineOptions,
    /// Voiced audio that counts as barge-in (stops a prompt).
    pub barge_min: Duration,
}

/// Reports to the controller.
#[derive(Debug)]
pub enum Event {
    /// The model is loaded (or the server connected) and decoding starts. `load` is the time
    /// it took; `backend` is "in-process", "server" or "fallback" (in-process after the server
    /// could not be reached).
    ModelLoaded { load: Duration, resampling: bool, cpu_s: f64, backend: &'static str, ready: Instant },
    /// The server was lost mid-attempt and `--server-fallback` is on: the in-process model
    /// took over (loading it took `load`) and was given the attempt's audio so far.
    FellBack { load: Duration, replayed_ms: f64, reason: String },
    /// Speech onset confirmed, at this media time (ms).
    SpeechStarted { at_ms: f64 },
    /// Speech has lasted the barge-in minimum: time to stop the prompt.
    BargeIn { at_ms: f64 },
    /// Grammar words the model does not know (logged by the controller).
    OutOfVocabulary(Vec<String>),
    /// Listening ended.
    Done(Box<Outcome>),
    /// Something failed; the call ends with ERROR.
    Failed(AsrError),
}

/// Messages from the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Start a listening attempt. `drain_to` drops audio up to that stream position (in
    /// samples, as counted by the fd 3 reader when the controller decided): prompt-time audio
    /// with barge-in off, or audio between attempts. `timers` starts the no-input timer at
    /// the attempt's start (otherwise at [`Control::StartTimers`], when the prompt ends).
    /// Positions, not "now", because the recognizer may still be working through a backlog.
    Start { drain_to: Option<u64>, timers: bool },
    /// The prompt finished at this stream position: the no-input timer starts there.
    StartTimers { at: u64 },
    /// Abandon the attempt (DTMF won, or a hangup) without a result.
    Abandon,
    /// Stop for good: finish the recording and end the thread.
    Stop,
}

/// The end of one listening period.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub reason: EndReason,
    pub transcript: Transcript,
    /// Media ms where speech started / where the last voiced frame ended.
    pub speech_start_ms: Option<f64>,
    pub speech_end_ms: Option<f64>,
    /// Samples consumed from the ring (and recorded).
    pub samples: u64,
    /// Media clock at the decision (ms), and how much of it was DTX wall time.
    pub media_ms: f64,
    pub dtx_ms: f64,
    /// Time libvosk took to finalize, ms.
    pub finalize_ms: f64,
    #[serde(skip)]
    pub decided_at: Option<Instant>,
}

/// Starts the recognizer thread.
pub fn spawn(
    cfg: RecognizerConfig,
    audio: AudioReader,
    events: Sender<Event>,
    control: Receiver<Control>,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("recognizer".into())
        .spawn(move || {
            let ev = events.clone();
            let res = catch_unwind(AssertUnwindSafe(move || run(cfg, audio, &ev, &control)));
            let msg = match res {
                Ok(Ok(())) => return,
                Ok(Err(e)) => Event::Failed(e),
                Err(p) => Event::Failed(AsrError::Panic(panic_message(&p))),
            };
            let _ = events.send(msg);
        })
        .map(|_| ())
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

type Recorder = hound::WavWriter<BufWriter<std::fs::File>>;

/// Test hook: `ASR_BRIDGE_FAULT=recognizer-panic` makes the thread panic after loading, so the
/// tests can prove a panic ends the call cleanly. Read once, at thread start.
fn fault_injected() -> bool {
    std::env::var("ASR_BRIDGE_FAULT").is_ok_and(|v| v == "recognizer-panic")
}

struct Stream {
    audio: AudioReader,
    vad: VoiceDetector,
    recorder: Option<Recorder>,
    record_path: String,
    rate: u32,
    block: usize,
    frame: usize,
    frame_buf: Vec<i16>,
    chunk: Vec<i16>,
    /// Samples taken from the ring (fed or drained), the media clock's audio part.
    samples: u64,
    // DTX accounting: wall time with no audio arriving, beyond DTX_GRACE, counts as silence.
    dtx_total: f64,
    gap_extra: f64,
    gap_anchor: u64,
}

impl Stream {
    fn ms_per_sample(&self) -> f64 {
        1000.0 / self.rate as f64
    }

    fn media(&self) -> f64 {
        self.samples as f64 * self.ms_per_sample() + self.dtx_total + self.gap_extra
    }

    /// Accounts DTX time while the ring is empty; true when fd 3 is gone for good.
    fn starved(&mut self) -> bool {
        let last = self.audio.stats.last_data_ns.load(Ordering::Acquire);
        if last != self.gap_anchor {
            self.dtx_total += self.gap_extra;
            self.gap_anchor = last;
        }
        let now_ns = self.audio.t0.elapsed().as_nanos() as u64;
        let idle_ms = (now_ns.saturating_sub(last) as f64) / 1e6;
        self.gap_extra = (idle_ms - DTX_GRACE.as_secs_f64() * 1000.0).max(0.0);
        let gone = self.audio.stats.eof.load(Ordering::Acquire) || self.audio.stats.failed.load(Ordering::Acquire);
        gone && self.audio.consumer.slots() == 0
    }

    /// Drops audio up to stream position `to` (it still counts on the media clock).
    fn drain_to(&mut self, to: u64) {
        let partial = self.frame_buf.len() as u64;
        self.samples += partial;
        self.frame_buf.clear();
        let want = to.saturating_sub(self.samples).min(self.audio.consumer.slots() as u64) as usize;
        if let Ok(c) = self.audio.consumer.read_chunk(want) {
            c.commit_all();
        }
        self.samples += want as u64;
        self.publish();
    }

    /// Media time (ms) of stream position `pos`, on this stream's clock.
    fn media_at(&self, pos: u64) -> f64 {
        self.media() + (pos as f64 - self.samples as f64) * self.ms_per_sample()
    }

    /// Tells the controller how far decoding has got.
    fn publish(&self) {
        self.audio.stats.consumed.store(self.samples, Ordering::Release);
    }

    /// Moves samples from the ring into the frame buffer; true when a whole frame is ready.
    fn fill_frame(&mut self) -> bool {
        let avail = self.audio.consumer.slots();
        if avail == 0 {
            return false;
        }
        let want = avail.min(self.frame - self.frame_buf.len());
        if let Ok(c) = self.audio.consumer.read_chunk(want) {
            let (a, b) = c.as_slices();
            self.chunk[..a.len()].copy_from_slice(a);
            self.chunk[a.len()..a.len() + b.len()].copy_from_slice(b);
            c.commit_all();
            self.frame_buf.extend_from_slice(&self.chunk[..want]);
        }
        self.frame_buf.len() >= self.frame
    }

    /// Records `block` (with `--record`) and hands it to the decoder.
    fn feed(&mut self, engine: &mut Decoder, rescue: &mut Rescue, block: &[i16]) -> Result<(), AsrError> {
        if let Some(r) = self.recorder.as_mut() {
            for s in block {
                r.write_sample(*s).map_err(|e| AsrError::Record {
                    path: self.record_path.clone(),
                    reason: e.to_string(),
                })?;
            }
        }
        if let Err(e) = engine.accept(block) {
            *engine = rescue.take_over(e, self.rate)?;
            engine.accept(block)?;
        }
        rescue.sent(block);
        Ok(())
    }

    fn finish_recording(&mut self) -> Result<(), AsrError> {
        if let Some(r) = self.recorder.take() {
            r.finalize().map_err(|e| AsrError::Record {
                path: self.record_path.clone(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    }
}

/// One attempt's decoder: libvosk in this process, or a recognizer on the server.
enum Decoder {
    Local(Box<Engine>),
    Remote(Box<RemoteEngine>),
}

impl Decoder {
    fn accept(&mut self, block: &[i16]) -> Result<(), AsrError> {
        match self {
            Decoder::Local(e) => e.accept(block),
            Decoder::Remote(r) => r.accept(block),
        }
    }

    fn finish(self) -> Result<Transcript, AsrError> {
        match self {
            Decoder::Local(e) => Ok(e.finish()),
            Decoder::Remote(r) => r.finish(),
        }
    }

    /// Keeps a served connection from the server's idle timeout while no audio flows (a long
    /// prompt without barge-in, DTX); nothing in-process.
    fn keepalive(&mut self) -> Result<(), AsrError> {
        match self {
            Decoder::Local(_) => Ok(()),
            Decoder::Remote(r) => r.keepalive(),
        }
    }
}

/// With `--server-fallback`, a server lost in the middle of an attempt (killed, frozen past
/// the reply deadline, the connection cut) is replaced by the in-process model: the audio
/// this attempt sent so far is kept and replayed into it, so the caller's words are not
/// lost. Without the option, or in-process, the error passes through (`ASR_CAUSE=102`).
struct Rescue<'a> {
    source: &'a mut Source,
    cfg: &'a RecognizerConfig,
    events: &'a Sender<Event>,
    /// The attempt's audio as sent to the server; None when there is nothing to rescue.
    sent: Option<Vec<i16>>,
}

impl<'a> Rescue<'a> {
    fn new(source: &'a mut Source, cfg: &'a RecognizerConfig, events: &'a Sender<Event>, engine: &Decoder) -> Self {
        let armed = matches!(engine, Decoder::Remote(_)) && matches!(&*source, Source::Remote { server, .. } if server.fallback);
        Rescue { source, cfg, events, sent: armed.then(Vec::new) }
    }

    fn sent(&mut self, block: &[i16]) {
        if let Some(v) = self.sent.as_mut() {
            v.extend_from_slice(block);
        }
    }

    /// An in-process decoder that has heard what the lost server heard, or `e` back.
    fn take_over(&mut self, e: AsrError, rate: u32) -> Result<Decoder, AsrError> {
        let (AsrError::ServerLost { addr, .. }, Some(sent)) = (&e, self.sent.take()) else { return Err(e) };
        let replayed_ms = sent.len() as f64 * 1000.0 / rate as f64;
        let t = Instant::now();
        let info = match &self.cfg.backend {
            Backend::Server { fallback: Err(why), .. } => {
                return Err(AsrError::ServerLost { addr: addr.clone(), reason: format!("{e}; no fallback model: {why}") })
            }
            Backend::Server { fallback: Ok(dir), .. } => super::model::inspect(dir)?,
            Backend::Local(info) => info.clone(), // not armed in-process; here for completeness
        };
        crate::log_line!("{e}; falling back to the in-process model ({replayed_ms:.0} ms of this attempt's audio to replay)");
        *self.source = local_source(&info, self.cfg, self.events)?;
        let mut engine = self.source.decoder(rate)?;
        for block in sent.chunks(block_len(rate)) {
            engine.accept(block)?;
        }
        let _ = self.events.send(Event::FellBack { load: t.elapsed(), replayed_ms, reason: e.to_string() });
        Ok(engine)
    }
}

/// Makes a decoder per attempt.
enum Source {
    Local { model: vosk::Model, info: ModelInfo, opts: EngineOptions },
    Remote { server: ServerConfig, opts: EngineOptions },
}

impl Source {
    fn decoder(&self, rate: u32) -> Result<Decoder, AsrError> {
        match self {
            Source::Local { model, info, opts } => Ok(Decoder::Local(Box::new(Engine::new(model, info, rate, opts)?))),
            Source::Remote { server, opts } => Ok(Decoder::Remote(Box::new(RemoteEngine::start(&server.addr, server.timeout, rate, opts)?))),
        }
    }

    /// A decoder for the next attempt; a server that cannot be reached (at the call's start,
    /// or restarted between attempts) is replaced by the in-process model with
    /// `--server-fallback`. Also says which backend it used.
    fn decoder_or_fallback(&mut self, cfg: &RecognizerConfig, events: &Sender<Event>) -> Result<(Decoder, &'static str), AsrError> {
        let fallback = match (&*self, &cfg.backend) {
            (Source::Remote { server, .. }, Backend::Server { fallback, .. }) if server.fallback => Some((server.addr.to_string(), fallback.clone())),
            _ => None,
        };
        match self.decoder(cfg.audio_rate) {
            Err(e @ AsrError::ServerUnreachable { .. }) => {
                let Some((addr, dir)) = fallback else { return Err(e) };
                crate::log_line!("{e}; falling back to the in-process model");
                let dir = dir.map_err(|why| AsrError::ServerUnreachable { addr, reason: format!("no fallback model: {why}") })?;
                let info = super::model::inspect(&dir)?;
                *self = local_source(&info, cfg, events)?;
                Ok((self.decoder(cfg.audio_rate)?, "fallback"))
            }
            Err(e) => Err(e),
            Ok(d) => Ok((d, if matches!(self, Source::Remote { .. }) { "server" } else { "in-process" })),
        }
    }
}

/// Loads the model in-process and checks the grammar against its vocabulary.
fn local_source(info: &ModelInfo, cfg: &RecognizerConfig, events: &Sender<Event>) -> Result<Source, AsrError> {
    let (mut model, _) = load_model(info)?;
    let mut engine_opts = cfg.engine.clone();
    if let Some(phrases) = engine_opts.grammar.take() {
        let (kept, oov) = super::grammar::check_vocabulary(&mut model, &phrases);
        if !oov.is_empty() {
            let _ = events.send(Event::OutOfVocabulary(oov));
        }
        if info.runtime_grammar {
            // Never hand libvosk an empty list (it segfaults): refuse it here instead.
            super::grammar::vosk_grammar_args(&kept)?;
        }
        engine_opts.grammar = Some(kept);
    }
    Ok(Source::Local { model, info: info.clone(), opts: engine_opts })
}

fn run(cfg: RecognizerConfig, audio: AudioReader, events: &Sender<Event>, control: &Receiver<Control>) -> Result<(), AsrError> {
    let rate = cfg.audio_rate;
    let t = Instant::now();
    let mut source = match &cfg.backend {
        Backend::Local(info) => local_source(info, &cfg, events)?,
        // The grammar goes to the server as normalized phrases; the server checks them
        // against its model's vocabulary exactly as the in-process path does.
        Backend::Server { server, .. } => Source::Remote { server: server.clone(), opts: cfg.engine.clone() },
    };
    let (first, backend) = source.decoder_or_fallback(&cfg, events)?;
    let load = t.elapsed();
    let mut first = Some(first);
    let cpu_s = crate::log::rusage().0;
    let resampling = matches!(&first, Some(Decoder::Local(e)) if e.resampling());
    let _ = events.send(Event::ModelLoaded { load, resampling, cpu_s, backend, ready: Instant::now() });
    if fault_injected() {
        panic!("fault injected by ASR_BRIDGE_FAULT");
    }
    let vad = VoiceDetector::new(rate, cfg.vad_mode).ok_or_else(|| AsrError::Decode {
        rate,
        reason: "the VAD takes 8, 16, 32 or 48 kHz audio only".into(),
    })?;
    let record_path = cfg.record.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    let recorder: Option<Recorder> = match &cfg.record {
        Some(p) => Some(hound::WavWriter::create(p, mono16_spec(rate)).map_err(|e| AsrError::Record {
            path: record_path.clone(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let _ = audio.waker.set(std::thread::current());
    let block = block_len(rate);
    let frame = vad.frame_len();
    let mut st = Stream {
        audio,
        vad,
        recorder,
        record_path,
        rate,
        block,
        frame,
        frame_buf: Vec::with_capacity(frame),
        chunk: vec![0i16; frame],
        samples: 0,
        dtx_total: 0.0,
        gap_extra: 0.0,
        gap_anchor: 0,
    };
    loop {
        // Wait for the next attempt; audio keeps arriving in the ring meanwhile.
        let (drain_to, timers) = match control.recv_timeout(Duration::from_millis(50)) {
            Ok(Control::Start { drain_to, timers }) => (drain_to, timers),
            Ok(Control::StartTimers { .. } | Control::Abandon) => continue,
            Ok(Control::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return st.finish_recording(),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                // A connection that cannot be kept is dropped: the attempt opens a new one.
                if first.as_mut().is_some_and(|d| d.keepalive().is_err()) {
                    first = None;
                }
                continue;
            }
        };
        if let Some(to) = drain_to {
            st.drain_to(to);
        }
        // A connection opened at the start may have been closed meanwhile (server restarted).
        let stale = match first.as_mut() {
            Some(Decoder::Remote(r)) => r.stale(),
            _ => false,
        };
        if stale {
            crate::log_line!("the server closed the waiting connection; opening a new one");
            first = None;
        }
        let engine = match first.take() {
            Some(e) => e,
            None => source.decoder_or_fallback(&cfg, events)?.0,
        };
        let rescue = Rescue::new(&mut source, &cfg, events, &engine);
        match attempt(&cfg, &mut st, engine, rescue, timers, events, control)? {
            AttemptEnd::Outcome(o) => {
                let _ = events.send(Event::Done(o));
            }
            AttemptEnd::Abandoned => {}
            AttemptEnd::Stopped => return st.finish_recording(),
        }
    }
}

enum AttemptEnd {
    Outcome(Box<Outcome>),
    Abandoned,
    Stopped,
}

fn attempt(
    cfg: &RecognizerConfig,
    st: &mut Stream,
    mut engine: Decoder,
    mut rescue: Rescue,
    timers_now: bool,
    events: &Sender<Event>,
    control: &Receiver<Control>,
) -> Result<AttemptEnd, AsrError> {
    let mut pending: Vec<i16> = Vec::with_capacity(st.block);
    // Until the timers start (the prompt is playing), the no-input timer is held back.
    let far = f64::INFINITY;
    let mut tracker = SpeechTracker::new(cfg.timers, if timers_now { st.media() } else { far });
    // While the prompt plays, speech must last the barge-in minimum to count at all, so a
    // cough does not start (and then end) an utterance over the prompt.
    let barge_min = cfg.barge_min + VoiceDetector::hangover(cfg.vad_mode);
    tracker.set_prompt_min_speech(barge_min);
    tracker.set_vad_hangover(VoiceDetector::hangover(cfg.vad_mode));
    let mut barged = false;
    let reason = loop {
        match control.try_recv() {
            Ok(Control::Stop) => return Ok(AttemptEnd::Stopped),
            Ok(Control::Abandon) => return Ok(AttemptEnd::Abandoned),
            Ok(Control::StartTimers { at }) => tracker.start_timers(st.media_at(at)),
            _ => {}
        }
        if st.fill_frame() {
            let start = st.media();
            let len = st.frame as f64 * st.ms_per_sample();
            let voiced = st.vad.is_voice(&st.frame_buf);
            if tracker.frame(start, len, voiced) {
                let _ = events.send(Event::SpeechStarted {
                    at_ms: tracker.speech_start().unwrap_or(start),
                });
            }
            if !barged && tracker.speech_start().is_some() && tracker.voiced_ms() >= barge_min.as_secs_f64() * 1000.0 {
                barged = true;
                let _ = events.send(Event::BargeIn { at_ms: start + len });
            }
            st.samples += st.frame as u64;
            st.publish();
            pending.extend_from_slice(&st.frame_buf);
            st.frame_buf.clear();
            if pending.len() >= st.block {
                st.feed(&mut engine, &mut rescue, &pending[..st.block])?;
                pending.drain(..st.block);
            }
        } else if st.audio.consumer.slots() == 0 && st.starved() {
            break EndReason::AudioClosed;
        }
        let media = st.media();
        if let Some(r) = tracker.check(media) {
            break r;
        }
        if let Err(e) = engine.keepalive() {
            engine = rescue.take_over(e, st.rate)?;
        }
        if st.audio.consumer.slots() == 0 {
            let wait = tracker.until_next(media).clamp(1.0, 20.0);
            std::thread::park_timeout(Duration::from_micros((wait * 1000.0) as u64));
        }
    };
    let decided_at = Instant::now();
    // The partial frame and block left over are the last audio consumed.
    st.samples += st.frame_buf.len() as u64;
    pending.extend_from_slice(&st.frame_buf);
    st.frame_buf.clear();
    let mut left = &pending[..];
    while !left.is_empty() {
        let n = left.len().min(st.block);
        st.feed(&mut engine, &mut rescue, &left[..n])?;
        left = &left[n..];
    }
    if let Some(r) = st.recorder.as_mut() {
        let _ = r.flush();
    }
    let t = Instant::now();
    let transcript = match engine.finish() {
        Ok(t) => t,
        Err(e) => rescue.take_over(e, st.rate)?.finish()?,
    };
    let finalize_ms = t.elapsed().as_secs_f64() * 1000.0;
    Ok(AttemptEnd::Outcome(Box::new(Outcome {
        reason,
        transcript,
        speech_start_ms: tracker.speech_start(),
        speech_end_ms: tracker.speech_start().map(|_| tracker.last_voiced_end()),
        samples: st.samples,
        media_ms: st.media(),
        dtx_ms: st.dtx_total + st.gap_extra,
        finalize_ms,
        decided_at: Some(decided_at),
    })))
}


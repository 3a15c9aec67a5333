//! The decoder stage: text for the spans the endpointer closes, at the decoder's own pace.
//!
//! Its thread loads the model (or connects to the server) while the endpointer already
//! listens, then takes the samples the endpointer hands on through a lock-free ring, in
//! fixed 100 ms blocks from each attempt's start (so results do not depend on timing), and
//! reports one transcript per [`Span::End`] that asks for text. Nothing the caller feels
//! waits on it: a model still loading, a slow server or a backlog only delays the text.
//!
//! Every backend sits behind one trait, [`Decoder`]; where the decoders come from (the first
//! of the servers that takes the call), the failover to another server when one is lost
//! mid-attempt, and the fallback to the in-process model when no server can be reached at the
//! start or take over mid-attempt (`--server-fallback`), is one place: [`Source`].

use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};

use super::endpointer::Span;
use super::engine::{block_len, load_model, Engine, EngineOptions};
use super::model::NoModel;
use super::recognizer::{Event, Fault, Plan, ServerConfig};
use super::remote::{pool_error, Pool, RemoteEngine};
use super::Backend;
use super::{AsrError, ModelInfo, Transcript};
use crate::audio::wav::mono16_spec;
use crate::audio::AudioStats;
use crate::net::ServerAddr;

/// How often an idle decoder wakes to keep a served connection alive.
const IDLE_TICK: Duration = Duration::from_millis(200);

/// One attempt's recognizer: libvosk in this process, a recognizer on a server, or any
/// later backend. Fed blocks in order; `finish` gives the transcript of all of them.
pub(crate) trait Decoder {
    fn accept(&mut self, block: &[i16]) -> Result<(), AsrError>;
    fn finish(self: Box<Self>) -> Result<Transcript, AsrError>;
    /// Keeps a connection from the server's idle timeout while no audio flows.
    fn keepalive(&mut self) -> Result<(), AsrError> {
        Ok(())
    }
    /// True when a connection opened ahead of time was closed meanwhile.
    fn stale(&mut self) -> bool {
        false
    }
    /// True when the bridge resamples for the model.
    fn resampling(&self) -> bool {
        false
    }
    /// Ends an attempt whose text nobody needs (no input, DTMF won).
    fn abandon(self: Box<Self>) {}
}

impl Decoder for Engine {
    fn accept(&mut self, block: &[i16]) -> Result<(), AsrError> {
        Engine::accept(self, block)
    }
    fn finish(self: Box<Self>) -> Result<Transcript, AsrError> {
        Ok(Engine::finish(*self))
    }
    fn resampling(&self) -> bool {
        Engine::resampling(self)
    }
}

impl Decoder for RemoteEngine {
    fn accept(&mut self, block: &[i16]) -> Result<(), AsrError> {
        RemoteEngine::accept(self, block)
    }
    fn finish(self: Box<Self>) -> Result<Transcript, AsrError> {
        RemoteEngine::finish(*self)
    }
    fn keepalive(&mut self) -> Result<(), AsrError> {
        RemoteEngine::keepalive(self)
    }
    fn stale(&mut self) -> bool {
        RemoteEngine::stale(self)
    }
    /// Ends the server's call properly (eof, final result, close), so the server counts it
    /// completed rather than cut off; off the caller's path, on this thread.
    fn abandon(self: Box<Self>) {
        let _ = RemoteEngine::finish(*self);
    }
}

/// What the decoder stage needs.
#[derive(Debug, Clone)]
pub(crate) struct DecoderConfig {
    pub backend: Plan,
    pub rate: u32,
    pub record: Option<PathBuf>,
    /// Grammar phrases (normalized) and n-best size.
    pub engine: EngineOptions,
    pub fault: Option<Fault>,
}

/// The endpointer's side of the stage, as the decoder sees it.
pub(crate) struct DecoderInput {
    pub ring: rtrb::Consumer<i16>,
    pub spans: Receiver<Span>,
    pub stats: Arc<AudioStats>,
    /// Set to this thread, so the endpointer can wake it.
    pub thread: Arc<OnceLock<Thread>>,
}

/// Makes a decoder per attempt, and falls back to the in-process model where asked.
pub(crate) enum Source {
    Local { model: vosk::Model, info: ModelInfo, opts: EngineOptions },
    Remote { pool: Pool, server: ServerConfig, opts: EngineOptions },
}

/// How many times one attempt may lose its server and carry on on another (each loss tries
/// every server once); past that, the in-process fallback or the error.
const FAILOVERS_PER_ATTEMPT: u32 = 3;

impl Source {
    /// The source for `cfg`: the model loaded in-process, or the servers (not yet contacted).
    fn open(cfg: &DecoderConfig, events: &Sender<Event>) -> Result<Source, AsrError> {
        match &cfg.backend {
            Plan::Local(info) => local_source(info, &cfg.engine, events),
            // The grammar goes to the server as normalized phrases; the server checks them
            // against its model's vocabulary exactly as the in-process path does.
            Plan::Server { server, fallback } => {
                let addrs = if server.resident() {
                    match resident(fallback) {
                        Ok(a) => vec![a],
                        Err(why) => {
                            crate::log_line!("resident server: {why}; recognizing in-process");
                            let dir = fallback.clone().map_err(|e| AsrError::ModelMissing(e.to_string()))?;
                            return local_source(&super::model::inspect(&dir)?, &cfg.engine, events);
                        }
                    }
                } else {
                    server.servers.clone()
                };
                let mut server = server.clone();
                if server.resident() {
                    // The resident server is on this box: a reply that is late means the box is
                    // busy, not that the server is gone (its exit resets the connection at
                    // once). Falling back would load a model exactly then; wait instead.
                    server.timeout = server.timeout.max(super::resident::REPLY_DEADLINE);
                }
                Ok(Source::Remote { pool: Pool::new(addrs), server, opts: cfg.engine.clone() })
            }
        }
    }

    /// A decoder for an attempt: in-process, or on the first server that takes the call
    /// ([`Pool::for_attempt`]; a server busy or unreachable is skipped, see [`pool_error`]).
    fn decoder(&mut self, rate: u32, events: &Sender<Event>) -> Result<Box<dyn Decoder>, AsrError> {
        match self {
            Source::Local { model, info, opts } => Ok(Box::new(Engine::new(model, info, rate, opts)?)),
            Source::Remote { pool, server, opts } => {
                let order = pool.for_attempt();
                Ok(Box::new(connect(pool, server, opts, &order, rate, &[], events)?))
            }
        }
    }

    fn fallback_armed(&self) -> bool {
        matches!(self, Source::Remote { server, .. } if server.fallback)
    }

    /// The resident server of the call's model (`--server=auto`).
    fn resident(&self) -> bool {
        matches!(self, Source::Remote { server, .. } if server.resident())
    }

    /// Replaces a served source by the in-process model (`--server-fallback`).
    fn fall_back(&mut self, cfg: &DecoderConfig, events: &Sender<Event>, e: AsrError) -> Result<(), AsrError> {
        let addr = match &e {
            AsrError::ServerUnreachable { addr, .. } | AsrError::ServerLost { addr, .. } | AsrError::ServerBusy { addr, .. } => addr.clone(),
            _ => return Err(e),
        };
        let dir = match &cfg.backend {
            Plan::Server { fallback: Ok(dir), .. } => dir.clone(),
            Plan::Server { fallback: Err(why), .. } => {
                let reason = format!("{}; no fallback model: {why}", reason_of(&e));
                return Err(match e {
                    AsrError::ServerUnreachable { .. } => AsrError::ServerUnreachable { addr, reason },
                    _ => AsrError::ServerLost { addr, reason },
                });
            }
            Plan::Local(_) => return Err(e),
        };
        let info = super::model::inspect(&dir)?;
        *self = local_source(&info, &cfg.engine, events)?;
        Ok(())
    }

    /// A decoder for the next attempt, and which backend it is; servers that cannot be
    /// reached (at the call's start, or restarted between attempts) are replaced by the
    /// in-process model with `--server-fallback`.
    fn decoder_or_fallback(&mut self, cfg: &DecoderConfig, events: &Sender<Event>) -> Result<(Box<dyn Decoder>, Backend), AsrError> {
        match self.decoder(cfg.rate, events) {
            Ok(d) => Ok((d, if matches!(self, Source::Remote { .. }) { Backend::Server } else { Backend::InProcess })),
            Err(e) if self.falls_back_from(&e) => {
                crate::log_line!("{e}; falling back to the in-process model (recognizing in-process)");
                self.fall_back(cfg, events, e)?;
                Ok((self.decoder(cfg.rate, events)?, Backend::Fallback))
            }
            Err(e) => Err(e),
        }
    }

    /// Whether this error at the start of an attempt hands the call to the in-process model. A
    /// busy server is never fallen back from when the dialplan chose it (a model per call
    /// exactly when the box is busiest); the resident one is ours, and a call without it would
    /// have recognized in-process anyway. An unreachable one is, with `--server-fallback`.
    fn falls_back_from(&self, e: &AsrError) -> bool {
        match e {
            AsrError::ServerBusy { .. } => self.resident(),
            AsrError::ServerUnreachable { .. } => self.fallback_armed(),
            _ => false,
        }
    }
}

/// A recognizer on the first server of `order` that takes the call and is given `replay` (the
/// attempt's audio so far, in 100 ms blocks); why each one did not, otherwise ([`pool_error`]).
fn connect(
    pool: &mut Pool,
    server: &ServerConfig,
    opts: &EngineOptions,
    order: &[usize],
    rate: u32,
    replay: &[i16],
    events: &Sender<Event>,
) -> Result<RemoteEngine, AsrError> {
    let mut errors = Vec::new();
    for &i in order {
        let started = RemoteEngine::start(pool.addr(i), server.timeout, rate, opts, server.token.as_ref());
        match started.and_then(|mut d| replay.chunks(block_len(rate)).try_for_each(|b| d.accept(b)).map(|()| d)) {
            Ok(d) => {
                pool.served_by(i);
                let _ = events.send(Event::Server { addr: d.addr().to_string() });
                return Ok(d);
            }
            Err(e) => {
                if order.len() > 1 {
                    crate::log_line!("{e}; trying the next server");
                }
                errors.push(e);
            }
        }
    }
    Err(pool_error(errors))
}

/// The resident server of the call's model (`--server=auto`), started here if none answers.
fn resident(model: &Result<std::path::PathBuf, NoModel>) -> Result<ServerAddr, String> {
    let dir = model.as_ref().map_err(NoModel::to_string)?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    super::resident::find_or_start(dir, &exe, super::resident::START_TIMEOUT)
}

fn reason_of(e: &AsrError) -> String {
    match e {
        AsrError::ServerUnreachable { reason, .. } | AsrError::ServerLost { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Loads the model in-process and checks the grammar against its vocabulary.
fn local_source(info: &ModelInfo, opts: &EngineOptions, events: &Sender<Event>) -> Result<Source, AsrError> {
    let (model, _) = load_model(info)?;
    let mut engine_opts = opts.clone();
    if let Some(phrases) = engine_opts.grammar.take() {
        let (kept, oov) = super::grammar::check_vocabulary(&model, &phrases);
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

type Recorder = hound::WavWriter<BufWriter<std::fs::File>>;

/// Writing the `--record` file failed.
fn record_error(cfg: &DecoderConfig, e: impl std::fmt::Display) -> AsrError {
    let path = cfg.record.as_ref().map(|p| p.display().to_string()).unwrap_or_default();
    AsrError::Record { path, reason: e.to_string() }
}

/// The running stage.
struct Stage<'a> {
    cfg: &'a DecoderConfig,
    input: DecoderInput,
    events: &'a Sender<Event>,
    source: Source,
    recorder: Option<Recorder>,
    /// Samples taken from the ring since the call began.
    taken: u64,
    block: usize,
    buf: Vec<i16>,
}

/// How one span ended on the decoder's side.
enum SpanEnd {
    Done,
    Stopped,
}

/// One span's decoder, with what a lost server heard (to replay into its replacement).
struct Live {
    decoder: Option<Box<dyn Decoder>>,
    /// The span's audio as sent to the server; None when there is nothing to rescue.
    sent: Option<Vec<i16>>,
    /// Servers lost and replaced in this span.
    failovers: u32,
}

/// Runs the stage until the call ends.
pub(crate) fn run(cfg: &DecoderConfig, input: DecoderInput, events: &Sender<Event>) -> Result<(), AsrError> {
    let _ = input.thread.set(std::thread::current());
    let t = Instant::now();
    let mut source = Source::open(cfg, events)?;
    let (first, backend) = source.decoder_or_fallback(cfg, events)?;
    let load = t.elapsed();
    let cpu_s = crate::procfs::rusage().0;
    let resampling = first.resampling();
    let _ = events.send(Event::ModelLoaded { load, resampling, cpu_s, backend, ready: Instant::now() });
    if cfg.fault == Some(Fault::RecognizerPanic) {
        panic!("fault injected (--fault=recognizer-panic)");
    }
    let recorder = match &cfg.record {
        Some(p) => Some(hound::WavWriter::create(p, mono16_spec(cfg.rate)).map_err(|e| record_error(cfg, e))?),
        None => None,
    };
    let block = block_len(cfg.rate);
    let mut stage = Stage { cfg, input, events, source, recorder, taken: 0, block, buf: Vec::with_capacity(block) };
    let result = stage.serve(Some(first));
    let finished = stage.finish_recording();
    result.and(finished)
}

impl Stage<'_> {
    fn record_err(&self, e: impl std::fmt::Display) -> AsrError {
        record_error(self.cfg, e)
    }

    fn finish_recording(&mut self) -> Result<(), AsrError> {
        match self.recorder.take() {
            Some(r) => r.finalize().map_err(|e| self.record_err(e)),
            None => Ok(()),
        }
    }

    /// Waits for spans; between them keeps the connection made ahead of time alive.
    fn serve(&mut self, mut first: Option<Box<dyn Decoder>>) -> Result<(), AsrError> {
        loop {
            match self.input.spans.recv_timeout(IDLE_TICK) {
                Ok(Span::Begin) => {}
                // The endpointer sends every End after its Begin, and `span` takes it.
                Ok(Span::End { .. }) => continue,
                Ok(Span::Stop) | Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return Ok(()),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // A connection that cannot be kept is dropped: the span opens a new one.
                    if first.as_mut().is_some_and(|d| d.keepalive().is_err()) {
                        first = None;
                    }
                    continue;
                }
            }
            if first.as_mut().is_some_and(|d| d.stale()) {
                crate::log_line!("the server closed the waiting connection; opening a new one");
                first = None;
            }
            let decoder = match first.take() {
                Some(d) => d,
                None => self.source.decoder_or_fallback(self.cfg, self.events)?.0,
            };
            if let SpanEnd::Stopped = self.span(decoder)? {
                return Ok(());
            }
        }
    }

    /// One attempt: feed blocks as they come until the span's end, then report the text.
    fn span(&mut self, decoder: Box<dyn Decoder>) -> Result<SpanEnd, AsrError> {
        let served = matches!(self.source, Source::Remote { .. });
        let mut live = Live { sent: served.then(Vec::new), decoder: Some(decoder), failovers: 0 };
        self.buf.clear();
        let mut end: Option<(u64, bool)> = None;
        loop {
            // Once the end is known, the next span's messages stay queued for `serve`.
            if end.is_none() {
                match self.input.spans.try_recv() {
                    Ok(Span::End { upto, text }) => end = Some((upto, text)),
                    Ok(Span::Stop) | Err(TryRecvError::Disconnected) => return Ok(SpanEnd::Stopped),
                    Ok(Span::Begin) | Err(TryRecvError::Empty) => {}
                }
            }
            let want = match end {
                Some((upto, _)) => (upto - self.taken) as usize,
                None => usize::MAX,
            };
            let took = self.take(want.min(self.block - self.buf.len()))?;
            let at_end = end.is_some_and(|(upto, _)| self.taken == upto);
            // A whole block, or the span's last (shorter) one.
            if self.buf.len() == self.block || (at_end && !self.buf.is_empty()) {
                if end.is_none_or(|(_, text)| text) {
                    self.feed(&mut live)?;
                }
                self.buf.clear();
            }
            if let (true, Some((_, text))) = (at_end, end) {
                if let Some(r) = self.recorder.as_mut() {
                    let _ = r.flush(); // a valid WAV up to here, whatever comes next
                }
                if text {
                    self.report(live)?;
                } else if let Some(d) = live.decoder.take() {
                    d.abandon();
                }
                return Ok(SpanEnd::Done);
            }
            if took == 0 {
                if let Some(d) = live.decoder.as_mut() {
                    if let Err(e) = d.keepalive() {
                        self.take_over(&mut live, e)?;
                    }
                }
                std::thread::park_timeout(IDLE_TICK);
            }
        }
    }

    /// Moves up to `n` samples from the ring into the block buffer (and the recording).
    fn take(&mut self, n: usize) -> Result<usize, AsrError> {
        let n = n.min(self.input.ring.slots());
        if n == 0 {
            return Ok(0);
        }
        let Ok(chunk) = self.input.ring.read_chunk(n) else { return Ok(0) }; // n <= slots: never fails
        let (a, b) = chunk.as_slices();
        self.buf.extend_from_slice(a);
        self.buf.extend_from_slice(b);
        chunk.commit_all();
        if let Some(r) = self.recorder.as_mut() {
            let start = self.buf.len() - n;
            let mut err = None;
            for s in &self.buf[start..] {
                if let Err(e) = r.write_sample(*s) {
                    err = Some(e);
                    break;
                }
            }
            if let Some(e) = err {
                return Err(self.record_err(e));
            }
        }
        self.taken += n as u64;
        self.input.stats.decoded.store(self.taken, std::sync::atomic::Ordering::Release);
        Ok(n)
    }

    /// Hands the block buffer to the decoder; a lost server is rescued where armed.
    fn feed(&mut self, live: &mut Live) -> Result<(), AsrError> {
        let block = std::mem::take(&mut self.buf);
        let accept = |live: &mut Live| live.decoder.as_mut().map_or(Ok(()), |d| d.accept(&block));
        let mut r = accept(live);
        // Ends: each round replaces the server (at most FAILOVERS_PER_ATTEMPT times), falls
        // back once, or returns the error.
        while let Err(e) = r {
            self.take_over(live, e)?;
            r = accept(live);
        }
        if let Some(v) = live.sent.as_mut() {
            v.extend_from_slice(&block);
        }
        self.buf = block;
        Ok(())
    }

    /// A server lost mid-attempt (killed, frozen past the reply deadline, the connection cut)
    /// is replaced by the next server of the list ([`Pool::after_loss`]: for one address, the
    /// same address again, which a load balancer routes to a healthy backend), given the
    /// attempt's audio so far, so the caller's words are not lost. When none takes over, with
    /// `--server-fallback` the in-process model does, given the same audio. Otherwise `e`
    /// passes through (`ASR_CAUSE=102`). The resident server is not reconnected to (on this
    /// box, gone means gone): it falls back at once.
    fn take_over(&mut self, live: &mut Live, e: AsrError) -> Result<(), AsrError> {
        let (AsrError::ServerLost { addr, reason }, Some(sent)) = (&e, live.sent.as_ref()) else { return Err(e) };
        let e = if self.source.resident() {
            e
        } else if live.failovers >= FAILOVERS_PER_ATTEMPT {
            AsrError::ServerLost { addr: addr.clone(), reason: format!("{reason}; gave up after {} failovers in this attempt", live.failovers) }
        } else {
            match self.fail_over(sent, &e) {
                Ok(d) => {
                    live.decoder = Some(d);
                    live.failovers += 1;
                    return Ok(());
                }
                Err(why) => AsrError::ServerLost { addr: addr.clone(), reason: format!("{reason}; no server took over ({})", reason_of(&why)) },
            }
        };
        if !self.source.fallback_armed() {
            return Err(e);
        }
        let sent = live.sent.take().unwrap_or_default();
        let replayed_ms = sent.len() as f64 * 1000.0 / self.cfg.rate as f64;
        let t = Instant::now();
        crate::log_line!("{e}; falling back to the in-process model ({replayed_ms:.0} ms of this attempt's audio to replay)");
        let reason = e.to_string();
        self.source.fall_back(self.cfg, self.events, e)?;
        let mut d = self.source.decoder(self.cfg.rate, self.events)?;
        for block in sent.chunks(self.block) {
            d.accept(block)?;
        }
        live.decoder = Some(d);
        let _ = self.events.send(Event::FellBack { load: t.elapsed(), replayed_ms, reason });
        Ok(())
    }

    /// Another server for the attempt whose server `lost` went away, given `sent`.
    fn fail_over(&mut self, sent: &[i16], lost: &AsrError) -> Result<Box<dyn Decoder>, AsrError> {
        let Source::Remote { pool, server, opts } = &mut self.source else {
            return Err(AsrError::ServerLost { addr: String::new(), reason: "no server to fail over to (in-process already)".into() });
        };
        let order = pool.after_loss();
        let replayed_ms = sent.len() as f64 * 1000.0 / self.cfg.rate as f64;
        crate::log_line!("{lost}; reconnecting ({replayed_ms:.0} ms of this attempt's audio to replay)");
        let t = Instant::now();
        let d = connect(pool, server, opts, &order, self.cfg.rate, sent, self.events)?;
        let to = d.addr().to_string();
        let _ = self.events.send(Event::FailedOver { lost: lost.to_string(), to, replayed_ms, took: t.elapsed() });
        Ok(Box::new(d))
    }

    /// Finishes the span's decoder and sends the transcript.
    fn report(&mut self, mut live: Live) -> Result<(), AsrError> {
        let t = Instant::now();
        let Some(mut d) = live.decoder.take() else { return Ok(()) };
        // Ends as `feed` does: each failure replaces the server, falls back, or returns.
        let transcript = loop {
            match d.finish() {
                Ok(t) => break t,
                Err(e) => {
                    self.take_over(&mut live, e)?;
                    match live.decoder.take() {
                        Some(next) => d = next,
                        None => break Transcript::default(),
                    }
                }
            }
        };
        let finalize_ms = t.elapsed().as_secs_f64() * 1000.0;
        let _ = self.events.send(Event::Transcript { transcript, finalize_ms, at: Instant::now() });
        Ok(())
    }
}

//! The endpointer stage: everything the caller feels, decided on the *arrival* of audio.
//!
//! Its thread starts with the call, before any model loads or any server answers. It takes
//! the samples the fd 3 reader puts in the ring as they arrive (the reader unparks it after
//! each read), runs the VAD and the [`SpeechTracker`] over them on a media clock that is the
//! arrival position plus wall-clock time without frames (DTX), and tells the controller:
//! speech started, barge-in, and the end of an attempt (end of speech, no input, max
//! duration, audio closed) at a stream position. It hands the same samples on, untouched, to
//! the decoder stage through a second lock-free ring and tells it where each attempt's audio
//! begins and ends ([`Span`]); the decoder works at its own pace and never holds a decision
//! back. Per frame it never allocates, locks or blocks.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::endpoint::{EndReason, SpeechTracker, Timers, VoiceDetector};
use super::noise::NoiseGate;
use super::recognizer::{Control, Event};
use super::AsrError;
use crate::audio::{AudioReader, StreamPos};

/// A wait for audio longer than this, with the ring empty, counts as silence (DTX).
pub(crate) const DTX_GRACE: Duration = Duration::from_millis(60);

/// The longest sleep between checks while listening (the reader wakes the thread sooner).
const MAX_NAP_MS: f64 = 20.0;

/// How often audio that arrives between attempts is dropped (the ring holds 32-64 s).
const IDLE_DRAIN: Duration = Duration::from_millis(100);

/// What the endpointer needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EndpointerConfig {
    pub rate: u32,
    pub timers: Timers,
    pub vad_mode: u8,
    /// Voiced audio that counts as barge-in (stops a prompt).
    pub barge_min: Duration,
}

/// Where an attempt's audio lies in the decoder ring, in samples handed on since the call
/// began. Sent by the endpointer to the decoder stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Span {
    /// An attempt starts: the samples that follow are its audio.
    Begin,
    /// The attempt's audio ends at position `upto`. `text`: decode it and report the
    /// transcript; otherwise (no input, DTMF won, a hangup) drop it undecoded.
    End { upto: u64, text: bool },
    /// The call is over.
    Stop,
}

/// The endpointer's verdict on one attempt, on its own clock.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub reason: EndReason,
    /// Media ms where speech started / where it ended (the VAD's hangover taken off).
    pub speech_start_ms: Option<f64>,
    pub speech_end_ms: Option<f64>,
    /// Stream position (samples read from fd 3) up to which this attempt listened.
    pub samples: u64,
    /// Media clock at the decision (ms), and how much of it was DTX wall time.
    pub media_ms: f64,
    pub dtx_ms: f64,
    /// When the decision was taken, and when the audio at the end of speech arrived.
    pub decided_at: Instant,
    pub speech_end_arrived: Option<Instant>,
}

/// The decoder stage as the endpointer sees it: its ring and its span channel.
pub(crate) struct DecoderFeed {
    pub ring: rtrb::Producer<i16>,
    pub spans: Sender<Span>,
    /// The decoder thread, woken when samples or spans are handed on.
    pub thread: Arc<OnceLock<Thread>>,
}

impl DecoderFeed {
    fn span(&self, s: Span) {
        let _ = self.spans.send(s);
        self.wake();
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The controller's handle on the endpointer: messages wake its thread at once.
#[derive(Clone)]
pub(crate) struct Controls {
    tx: Sender<Control>,
    thread: Arc<OnceLock<Thread>>,
}

impl Controls {
    pub(crate) fn new(tx: Sender<Control>, thread: Arc<OnceLock<Thread>>) -> Controls {
        Controls { tx, thread }
    }

    pub(crate) fn send(&self, c: Control) -> Result<(), crossbeam_channel::SendError<Control>> {
        let r = self.tx.send(c);
        self.wake();
        r
    }

    pub(crate) fn try_send(&self, c: Control) -> Result<(), crossbeam_channel::TrySendError<Control>> {
        let r = self.tx.try_send(c);
        self.wake();
        r
    }

    fn wake(&self) {
        if let Some(t) = self.thread.get() {
            t.unpark();
        }
    }
}

/// The running stage.
pub(crate) struct Endpointer {
    cfg: EndpointerConfig,
    audio: AudioReader,
    out: DecoderFeed,
    vad: VoiceDetector,
    /// Steady noise is not speech: the VAD's "voice" must also stand out from the floor.
    gate: NoiseGate,
    frame: usize,
    frame_buf: Vec<i16>,
    chunk: Vec<i16>,
    /// Samples taken from the fd 3 ring (listened to or drained): the media clock's audio part.
    samples: u64,
    /// Samples handed on to the decoder since the call began.
    forwarded: u64,
    // DTX accounting: wall time with no audio arriving, beyond DTX_GRACE, counts as silence.
    dtx_total: f64,
    gap_extra: f64,
    gap_anchor: u64,
}

enum AttemptEnd {
    Ended(Box<Endpoint>),
    Abandoned,
    Stopped,
}

impl Endpointer {
    /// Builds the stage (on its own thread: the VAD is not `Send`).
    pub(crate) fn new(cfg: EndpointerConfig, audio: AudioReader, out: DecoderFeed) -> Result<Endpointer, AsrError> {
        let vad = VoiceDetector::new(cfg.rate, cfg.vad_mode)
            .ok_or_else(|| AsrError::Decode { rate: cfg.rate, reason: "the VAD takes 8, 16, 32 or 48 kHz audio only".into() })?;
        let frame = vad.frame_len();
        Ok(Endpointer {
            cfg,
            audio,
            out,
            vad,
            gate: NoiseGate::new(cfg.rate),
            frame,
            frame_buf: Vec::with_capacity(frame),
            chunk: vec![0i16; frame],
            samples: 0,
            forwarded: 0,
            dtx_total: 0.0,
            gap_extra: 0.0,
            gap_anchor: 0,
        })
    }

    /// Serves attempts until told to stop.
    pub(crate) fn run(mut self, events: &Sender<Event>, control: &Receiver<Control>) {
        let _ = self.audio.waker.set(std::thread::current());
        let mut listened = false;
        loop {
            let (drain_to, timers_at) = match control.recv_timeout(IDLE_DRAIN) {
                Ok(Control::Start { drain_to, timers_at }) => (drain_to, timers_at),
                Ok(Control::StartTimers { .. } | Control::Abandon) => continue,
                Ok(Control::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    // Between attempts nobody listens, and every later attempt starts by
                    // dropping what came meanwhile: drop it as it comes, so a decoder that
                    // takes long over the last text cannot make the fd 3 ring overflow. Before
                    // the first attempt the audio is kept (the caller may speak at once).
                    if listened {
                        self.drain_to(StreamPos::END);
                    }
                    continue;
                }
            };
            listened = true;
            if let Some(to) = drain_to {
                self.drain_to(to);
            }
            self.out.span(Span::Begin);
            match self.attempt(timers_at, events, control) {
                AttemptEnd::Ended(e) => {
                    // The controller hears of the end before the decoder can give its text.
                    let text = e.reason != EndReason::NoInput;
                    let _ = events.send(Event::Ended(e));
                    self.out.span(Span::End { upto: self.forwarded, text });
                }
                AttemptEnd::Abandoned => self.out.span(Span::End { upto: self.forwarded, text: false }),
                AttemptEnd::Stopped => {
                    self.out.span(Span::End { upto: self.forwarded, text: false });
                    break;
                }
            }
        }
        self.out.span(Span::Stop);
    }

    fn ms_per_sample(&self) -> f64 {
        1000.0 / self.cfg.rate as f64
    }

    fn media(&self) -> f64 {
        self.samples as f64 * self.ms_per_sample() + self.dtx_total + self.gap_extra
    }

    /// Media time (ms) of stream position `pos`, on this clock.
    fn media_at(&self, pos: StreamPos) -> f64 {
        self.media() + (pos.0 as f64 - self.samples as f64) * self.ms_per_sample()
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
        let stats = &self.audio.stats;
        let gone = stats.eof.load(Ordering::Acquire) || stats.failed.load(Ordering::Acquire);
        gone && self.audio.consumer.slots() == 0
    }

    /// Drops audio up to stream position `to` (it still counts on the media clock).
    fn drain_to(&mut self, to: StreamPos) {
        self.samples += self.frame_buf.len() as u64;
        self.frame_buf.clear();
        let want = to.0.saturating_sub(self.samples).min(self.audio.consumer.slots() as u64) as usize;
        if let Ok(c) = self.audio.consumer.read_chunk(want) {
            c.commit_all();
        }
        self.samples += want as u64;
        self.publish();
    }

    /// Tells the controller how far the endpointer has listened.
    fn publish(&self) {
        self.audio.stats.consumed.store(self.samples, Ordering::Release);
    }

    /// Moves samples from the fd 3 ring into the frame buffer; true when a frame is ready.
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

    /// Hands the frame buffer on to the decoder and empties it.
    fn forward(&mut self) {
        let n = self.frame_buf.len();
        let fit = self.out.ring.slots().min(n);
        if let Ok(chunk) = self.out.ring.write_chunk_uninit(fit) {
            chunk.fill_from_iter(self.frame_buf[..fit].iter().copied());
        }
        self.audio.stats.decoder_dropped.fetch_add((n - fit) as u64, Ordering::Relaxed);
        self.forwarded += fit as u64;
        self.samples += n as u64;
        self.frame_buf.clear();
        self.publish();
        self.out.wake();
    }

    /// Arrival instant of the newest audio in the ring (close to the frame just taken when
    /// the stage keeps up, which it does: a frame costs microseconds).
    fn arrival(&self) -> Instant {
        let ns = self.audio.stats.last_data_ns.load(Ordering::Acquire);
        self.audio.t0 + Duration::from_nanos(ns)
    }

    fn attempt(&mut self, timers_at: Option<StreamPos>, events: &Sender<Event>, control: &Receiver<Control>) -> AttemptEnd {
        // Until the timers start (the prompt is playing), the no-input timer is held back.
        let listen_start = timers_at.map_or(f64::INFINITY, |at| self.media_at(at));
        let mut tracker = SpeechTracker::new(self.cfg.timers, listen_start);
        // While the prompt plays, speech must last the barge-in minimum to count at all, so a
        // cough does not start (and then end) an utterance over the prompt.
        let hangover = VoiceDetector::hangover(self.cfg.vad_mode);
        let barge_min = self.cfg.barge_min + hangover;
        tracker.set_prompt_min_speech(barge_min);
        tracker.set_vad_hangover(hangover);
        let mut barged = false;
        let mut last_voiced_arrival: Option<(Instant, f64)> = None;
        let reason = loop {
            match control.try_recv() {
                Ok(Control::Stop) => return AttemptEnd::Stopped,
                Ok(Control::Abandon) => return AttemptEnd::Abandoned,
                Ok(Control::StartTimers { at }) => tracker.start_timers(self.media_at(at)),
                _ => {}
            }
            let framed = self.fill_frame();
            if framed {
                let start = self.media();
                let len = self.frame as f64 * self.ms_per_sample();
                let vad = self.vad.is_voice(&self.frame_buf);
                let voiced = self.gate.is_speech(&self.frame_buf, vad);
                if voiced {
                    last_voiced_arrival = Some((self.arrival(), start + len));
                }
                if tracker.frame(start, len, voiced) {
                    let _ = events.send(Event::SpeechStarted { at_ms: tracker.speech_start().unwrap_or(start) });
                }
                if !barged && tracker.speech_start().is_some() && tracker.voiced_ms() >= barge_min.as_secs_f64() * 1000.0 {
                    barged = true;
                    let _ = events.send(Event::BargeIn { at_ms: start + len });
                }
                self.forward();
            } else if self.audio.consumer.slots() == 0 && self.starved() {
                break EndReason::AudioClosed;
            }
            let media = self.media();
            if let Some(r) = tracker.check(media) {
                break r;
            }
            if !framed && self.audio.consumer.slots() == 0 {
                let nap = tracker.until_next(media).clamp(1.0, MAX_NAP_MS);
                std::thread::park_timeout(Duration::from_micros((nap * 1000.0) as u64));
            }
        };
        let decided_at = Instant::now();
        // The partial frame left over is the last audio of the attempt.
        self.forward();
        let speech_end_ms = tracker.speech_start().map(|_| tracker.last_voiced_end());
        let speech_end_arrived = match (last_voiced_arrival, speech_end_ms) {
            (Some((at, voiced_end)), Some(end)) => at.checked_sub(Duration::from_secs_f64(((voiced_end - end) / 1000.0).max(0.0))),
            _ => None,
        };
        crate::log_line!("endpointer: {reason:?} at {:.0} ms (noise floor {:.1} dBFS)", self.media(), self.gate.floor_dbfs());
        AttemptEnd::Ended(Box::new(Endpoint {
            reason,
            speech_start_ms: tracker.speech_start(),
            speech_end_ms,
            samples: self.samples,
            media_ms: self.media(),
            dtx_ms: self.dtx_total + self.gap_extra,
            decided_at,
            speech_end_arrived,
        }))
    }
}

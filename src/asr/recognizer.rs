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
use super::engine::{block_len, load_model, Engine};
use super::{AsrError, ModelInfo, Transcript};
use crate::audio::wav::mono16_spec;
use crate::audio::AudioReader;

/// A wait for audio longer than this, with the ring empty, counts as silence (DTX).
pub const DTX_GRACE: Duration = Duration::from_millis(60);

/// What the recognizer needs to start.
#[derive(Debug, Clone)]
pub struct RecognizerConfig {
    pub model: ModelInfo,
    pub audio_rate: u32,
    pub timers: Timers,
    pub vad_mode: u8,
    pub record: Option<PathBuf>,
}

/// Reports to the controller.
#[derive(Debug)]
pub enum Event {
    /// The model is loaded and decoding starts.
    ModelLoaded { load: Duration, resampling: bool },
    /// Speech onset confirmed, at this media time (ms).
    SpeechStarted { at_ms: f64 },
    /// Listening ended.
    Done(Box<Outcome>),
    /// Something failed; the call ends with ERROR.
    Failed(AsrError),
}

/// Messages from the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Stop now (hangup): finish the recording and return without a result.
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

fn run(cfg: RecognizerConfig, mut audio: AudioReader, events: &Sender<Event>, control: &Receiver<Control>) -> Result<(), AsrError> {
    let (model, load) = load_model(&cfg.model)?;
    let rate = cfg.audio_rate;
    let mut engine = Engine::new(&model, &cfg.model, rate)?;
    let _ = events.send(Event::ModelLoaded {
        load,
        resampling: engine.resampling(),
    });
    if fault_injected() {
        panic!("fault injected by ASR_BRIDGE_FAULT");
    }
    let mut vad = VoiceDetector::new(rate, cfg.vad_mode).ok_or_else(|| AsrError::Decode {
        rate,
        reason: "the VAD takes 8, 16, 32 or 48 kHz audio only".into(),
    })?;
    let mut recorder: Option<Recorder> = match &cfg.record {
        Some(p) => Some(hound::WavWriter::create(p, mono16_spec(rate)).map_err(|e| AsrError::Record {
            path: p.display().to_string(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let _ = audio.waker.set(std::thread::current());

    let block = block_len(rate);
    let frame = vad.frame_len();
    let ms_per_sample = 1000.0 / rate as f64;
    let mut pending: Vec<i16> = Vec::with_capacity(block);
    let mut frame_buf: Vec<i16> = Vec::with_capacity(frame);
    let mut tracker = SpeechTracker::new(cfg.timers, 0.0);
    let mut samples: u64 = 0;
    // DTX accounting: wall time with no audio arriving, beyond DTX_GRACE, counts as silence.
    let mut dtx_total = 0.0f64;
    let mut gap_extra = 0.0f64;
    let mut gap_anchor = 0u64;
    let mut chunk = vec![0i16; block];

    let reason = loop {
        if let Ok(Control::Stop) = control.try_recv() {
            if let Some(r) = recorder.take() {
                let _ = r.finalize();
            }
            return Ok(());
        }
        let avail = audio.consumer.slots();
        if avail > 0 {
            let want = avail.min(frame - frame_buf.len()).min(chunk.len());
            let got = match audio.consumer.read_chunk(want) {
                Ok(c) => {
                    let (a, b) = c.as_slices();
                    chunk[..a.len()].copy_from_slice(a);
                    chunk[a.len()..a.len() + b.len()].copy_from_slice(b);
                    c.commit_all();
                    want
                }
                Err(_) => 0,
            };
            frame_buf.extend_from_slice(&chunk[..got]);
            if frame_buf.len() < frame {
                continue;
            }
            // One full VAD frame.
            let start = samples as f64 * ms_per_sample + dtx_total + gap_extra;
            let voiced = vad.is_voice(&frame_buf);
            if tracker.frame(start, frame as f64 * ms_per_sample, voiced) {
                let _ = events.send(Event::SpeechStarted {
                    at_ms: tracker.speech_start().unwrap_or(start),
                });
            }
            samples += frame as u64;
            pending.extend_from_slice(&frame_buf);
            frame_buf.clear();
            if pending.len() >= block {
                feed(&mut engine, &mut recorder, &pending[..block], &cfg)?;
                pending.drain(..block);
            }
        } else {
            // Ring empty: account DTX time, then sleep until audio or the next timer.
            let last = audio.stats.last_data_ns.load(Ordering::Acquire);
            if last != gap_anchor {
                dtx_total += gap_extra;
                gap_anchor = last;
            }
            let now_ns = audio.t0.elapsed().as_nanos() as u64;
            let idle_ms = (now_ns.saturating_sub(last) as f64) / 1e6;
            gap_extra = (idle_ms - DTX_GRACE.as_secs_f64() * 1000.0).max(0.0);
            if audio.stats.eof.load(Ordering::Acquire) || audio.stats.failed.load(Ordering::Acquire) {
                if audio.consumer.slots() == 0 {
                    break EndReason::AudioClosed;
                }
                continue;
            }
        }
        let media = samples as f64 * ms_per_sample + dtx_total + gap_extra;
        if let Some(r) = tracker.check(media) {
            break r;
        }
        if audio.consumer.slots() == 0 {
            let wait = tracker.until_next(media).clamp(1.0, 20.0);
            std::thread::park_timeout(Duration::from_micros((wait * 1000.0) as u64));
        }
    };
    let decided_at = Instant::now();
    // The partial frame and block left over are the last audio consumed.
    samples += frame_buf.len() as u64;
    pending.extend_from_slice(&frame_buf);
    let mut left = &pending[..];
    while !left.is_empty() {
        let n = left.len().min(block);
        feed(&mut engine, &mut recorder, &left[..n], &cfg)?;
        left = &left[n..];
    }
    if let Some(r) = recorder.take() {
        r.finalize().map_err(|e| AsrError::Record {
            path: cfg.record.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
            reason: e.to_string(),
        })?;
    }
    let t = Instant::now();
    let transcript = engine.finish();
    let finalize_ms = t.elapsed().as_secs_f64() * 1000.0;
    let media = samples as f64 * ms_per_sample + dtx_total + gap_extra;
    let outcome = Outcome {
        reason,
        transcript,
        speech_start_ms: tracker.speech_start(),
        speech_end_ms: tracker.speech_start().map(|_| tracker.last_voiced_end()),
        samples,
        media_ms: media,
        dtx_ms: dtx_total + gap_extra,
        finalize_ms,
        decided_at: Some(decided_at),
    };
    let _ = events.send(Event::Done(Box::new(outcome)));
    Ok(())
}

fn feed(engine: &mut Engine, recorder: &mut Option<Recorder>, block: &[i16], cfg: &RecognizerConfig) -> Result<(), AsrError> {
    if let Some(r) = recorder.as_mut() {
        for s in block {
            r.write_sample(*s).map_err(|e| AsrError::Record {
                path: cfg.record.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                reason: e.to_string(),
            })?;
        }
    }
    engine.accept(block)
}

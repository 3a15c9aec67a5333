//! The controller: one call from header to exit, on the main thread.
//!
//! Order matters: signals are caught before anything else (in `main`), the fd 3 reader starts
//! before the model loads, the header is read, options are checked, the audio rate is asked
//! for, the recognizer thread loads the model and listens, and the controller waits on its
//! events, signals and stray stdin lines with a deadline. Every handled outcome sets the
//! `ASR_*` variables (SET VARIABLE works on a dead channel too) and exits 0.

use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, bounded, select, unbounded, Receiver};
use serde::Serialize;
use serde_json::json;

use crate::agi::channel::{Agi, LineEvent};
use crate::agi::{Command, Reply};
use crate::asr::endpoint::EndReason;
use crate::asr::recognizer::{self, Control, Event, Outcome, RecognizerConfig};
use crate::asr::model;
use crate::audio::{self, rate_for_eagi_format, EAGI_AUDIO_FD};
use crate::config::{CallArgs, Config};
use crate::log::{append_json, redirect_stderr, rusage};
use crate::log_line;

/// Longest wait for the AGI header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// After a hangup, setting the variables may take this long in all.
pub const HANGUP_BUDGET: Duration = Duration::from_millis(150);

/// The dialplan outcome (`ASR_STATUS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    #[serde(rename = "OK")]
    Ok,
    #[serde(rename = "NOMATCH")]
    NoMatch,
    #[serde(rename = "NOINPUT")]
    NoInput,
    #[serde(rename = "DTMF")]
    Dtmf,
    #[serde(rename = "HANGUP")]
    Hangup,
    #[serde(rename = "ERROR")]
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::NoMatch => "NOMATCH",
            Status::NoInput => "NOINPUT",
            Status::Dtmf => "DTMF",
            Status::Hangup => "HANGUP",
            Status::Error => "ERROR",
        }
    }
}

/// What the dialplan will be told.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub status: Status,
    pub text: String,
    pub confidence: Option<f32>,
    /// MRCP completion cause: 000, 001, 002, 006, 008.
    pub cause: &'static str,
    pub error: String,
}

impl Verdict {
    pub fn error(msg: impl Into<String>) -> Verdict {
        Verdict {
            status: Status::Error,
            text: String::new(),
            confidence: None,
            cause: "006",
            error: msg.into(),
        }
    }

    pub fn hangup() -> Verdict {
        Verdict {
            status: Status::Hangup,
            text: String::new(),
            confidence: None,
            cause: "",
            error: String::new(),
        }
    }

    /// Maps the recognizer's outcome to the dialplan contract.
    pub fn from_outcome(o: &Outcome) -> Verdict {
        let text = o.transcript.text.trim().to_string();
        let heard = o.speech_start_ms.is_some();
        let (status, cause, error) = match (o.reason, text.is_empty(), heard) {
            (EndReason::NoInput, _, _) => (Status::NoInput, "002", String::new()),
            (EndReason::MaxDuration, false, _) => (Status::Ok, "008", String::new()),
            (_, false, _) => (Status::Ok, "000", String::new()),
            (EndReason::AudioClosed, true, false) => (
                Status::Error,
                "006",
                "the audio stream (fd 3) closed before any speech".to_string(),
            ),
            (_, true, _) => (Status::NoMatch, "001", String::new()),
        };
        let keep_text = matches!(status, Status::Ok);
        Verdict {
            status,
            confidence: if keep_text { o.transcript.confidence() } else { None },
            text: if keep_text { text } else { String::new() },
            cause,
            error,
        }
    }
}

/// Timings and counters for the per-call JSON line.
#[derive(Debug, Default)]
struct Report {
    uniqueid: String,
    channel: String,
    model_load_ms: Option<f64>,
    resampling: bool,
    rate: Option<u32>,
    outcome: Option<Outcome>,
    status_set_ms: Option<f64>,
    result_latency_ms: Option<f64>,
    signal: Option<i32>,
}

struct Call<W: Write> {
    agi: Agi<W>,
    t0: Instant,
    prefix: String,
    report: Report,
    audio_stats: Option<std::sync::Arc<audio::AudioStats>>,
}

/// Runs one EAGI call. `fd3` is what `main` found at fd 3 before opening anything. Returns the process exit code (0 for every handled outcome).
pub fn run_eagi<W: Write>(
    argv: Vec<String>,
    t0: Instant,
    fd3: Result<(), audio::AudioError>,
    out: W, lines: Receiver<LineEvent>, signals: Receiver<i32>) -> i32 {
    // Options first (pure parsing): they say where stderr goes.
    let parsed = CallArgs::parse_from_args(argv);
    let config = match &parsed {
        Ok(a) => a.validate().map_err(|e| e.to_string()),
        Err(e) => Err(format!("bad option: {}", first_line(&e.to_string()))),
    };
    let log_path = config.as_ref().ok().and_then(|c| c.log.clone());
    if let Err(e) = redirect_stderr(log_path.as_deref()) {
        log_line!("cannot open log {:?}: {e}", log_path);
    }
    // The fd 3 reader starts before anything slow, so no audio is lost while the model loads.
    let audio = fd3.and_then(|()| audio::reader::start(EAGI_AUDIO_FD, t0));
    let mut call = Call {
        agi: Agi::new(out, lines, signals),
        t0,
        prefix: config.as_ref().map(|c| c.prefix.clone()).unwrap_or_else(|_| "ASR_".into()),
        report: Report::default(),
        audio_stats: audio.as_ref().ok().map(|a| a.stats.clone()),
    };
    let header = match call.agi.read_header(HEADER_TIMEOUT) {
        Ok((h, err)) => {
            if let Some(e) = err {
                log_line!("warning: {e}");
            }
            h
        }
        Err(e) => {
            // Nobody to talk to: the host closed stdin or never sent a header.
            log_line!("{e}; exiting");
            return 0;
        }
    };
    call.report.uniqueid = header.get("agi_uniqueid").unwrap_or("").to_string();
    call.report.channel = header.get("agi_channel").unwrap_or("").to_string();
    log_line!("call {} on {} args {:?}", call.report.uniqueid, call.report.channel, header.args());
    if call.agi.hung_up() {
        return call.finish(Verdict::hangup(), None);
    }
    let config = match config {
        Ok(c) => c,
        Err(e) => return call.finish(Verdict::error(e), None),
    };
    let audio = match audio {
        Ok(a) => a,
        Err(e) => return call.finish(Verdict::error(e.to_string()), Some(&config)),
    };
    if !header.enhanced() {
        log_line!("warning: agi_enhanced is {:?}, but fd 3 is a pipe; going on", header.get("agi_enhanced"));
    }
    let model = match model::inspect(&config.model) {
        Ok(m) => m,
        Err(e) => return call.finish(Verdict::error(e.to_string()), Some(&config)),
    };
    if config.answer {
        match call.command(&Command::Answer, config.reply_timeout) {
            Ok(_) => {}
            Err(v) => return call.finish(v, Some(&config)),
        }
    }
    let rate = match config.rate {
        Some(r) => r,
        None => {
            let reply = match call.command(&Command::GetVariable { name: "EAGI_AUDIO_FORMAT".into() }, config.reply_timeout) {
                Ok(r) => r,
                Err(v) => return call.finish(v, Some(&config)),
            };
            let name = if reply.result() == Some(1) { reply.data().map(str::to_string) } else { None };
            match rate_for_eagi_format(name.as_deref()) {
                Ok(r) => r,
                Err(e) => return call.finish(Verdict::error(e.to_string()), Some(&config)),
            }
        }
    };
    call.report.rate = Some(rate);
    let (ev_tx, ev_rx) = unbounded();
    let (ctl_tx, ctl_rx) = bounded(1);
    let rc = RecognizerConfig {
        model,
        audio_rate: rate,
        timers: config.timers,
        vad_mode: config.vad_mode,
        record: config.record.clone(),
    };
    if let Err(e) = recognizer::spawn(rc, audio, ev_tx, ctl_rx) {
        return call.finish(Verdict::error(format!("cannot start the recognizer thread: {e}")), Some(&config));
    }
    let verdict = call.listen(&config, &ev_rx);
    if matches!(verdict.status, Status::Hangup | Status::Error) {
        let _ = ctl_tx.try_send(Control::Stop);
    }
    call.finish(verdict, Some(&config))
}

fn first_line(s: &str) -> String {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

impl<W: Write> Call<W> {
    fn ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// One command and its reply; a failure becomes the verdict to finish with.
    fn command(&mut self, cmd: &Command, timeout: Duration) -> Result<Reply, Verdict> {
        match self.agi.call(cmd, timeout) {
            Ok(Reply::DeadChannel) => Err(Verdict::hangup()),
            Ok(r) if self.agi.hung_up() => {
                log_line!("{} -> {:?} after a signal", cmd.name(), r);
                Err(self.signal_verdict())
            }
            Ok(r @ Reply::Success { .. }) => Ok(r),
            Ok(r) => Err(Verdict::error(format!("Asterisk refused `{}`: {r:?}", cmd.to_string().trim_end()))),
            Err(e) if self.agi.hung_up() => {
                log_line!("{e} after a signal");
                Err(self.signal_verdict())
            }
            Err(e) => Err(Verdict::error(e.to_string())),
        }
    }

    fn signal_verdict(&self) -> Verdict {
        match self.agi.signal() {
            Some(libc::SIGTERM) => Verdict::error("terminated by SIGTERM"),
            Some(libc::SIGINT) => Verdict::error("interrupted by SIGINT"),
            _ => Verdict::hangup(),
        }
    }

    /// Waits for the recognizer's outcome, a signal, or a deadline.
    fn listen(&mut self, config: &Config, events: &Receiver<Event>) -> Verdict {
        let mut deadline = Instant::now() + config.load_timeout;
        let mut loaded = false;
        let signals = self.agi.hangups().clone();
        let lines = self.agi.lines().clone();
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            select! {
                recv(events) -> ev => match ev {
                    Ok(Event::ModelLoaded { load, resampling }) => {
                        loaded = true;
                        self.report.model_load_ms = Some(load.as_secs_f64() * 1000.0);
                        self.report.resampling = resampling;
                        log_line!("model loaded in {:.0} ms{}", load.as_secs_f64() * 1000.0, if resampling { " (resampling in the bridge)" } else { "" });
                        let t = &config.timers;
                        deadline = Instant::now() + t.no_input + t.max_duration + t.end_silence + Duration::from_secs(30);
                    }
                    Ok(Event::SpeechStarted { at_ms }) => log_line!("speech started at {at_ms:.0} ms"),
                    Ok(Event::Done(outcome)) => {
                        let v = Verdict::from_outcome(&outcome);
                        self.report.outcome = Some(*outcome);
                        return v;
                    }
                    Ok(Event::Failed(e)) => return Verdict::error(e.to_string()),
                    Err(_) => return Verdict::error("recognizer thread ended without a result"),
                },
                recv(signals) -> sig => {
                    self.agi.on_signal(sig.ok());
                    return self.signal_verdict();
                }
                recv(lines) -> l => match l {
                    Ok(LineEvent::Line(l)) => {
                        if let Some(r) = self.agi.feed_line(&l) {
                            log_line!("unexpected reply while listening: {r:?}");
                            if r.is_hangup() {
                                return Verdict::hangup();
                            }
                        } else if let Some(s) = self.agi.stray.pop() {
                            log_line!("unexpected line while listening: {s:?}");
                        }
                    }
                    _ => {
                        log_line!("stdin closed while listening: treating as hangup");
                        self.agi.on_signal(None);
                        return Verdict::hangup();
                    }
                },
                recv(after(wait)) -> _ => {
                    return Verdict::error(if loaded {
                        "recognizer gave no result in time (internal deadline)".to_string()
                    } else {
                        format!("model did not load within {:?}", config.load_timeout)
                    });
                }
            }
        }
    }

    /// Sets the variables, writes the JSON line, returns the exit code (always 0).
    fn finish(mut self, verdict: Verdict, config: Option<&Config>) -> i32 {
        if verdict.status == Status::Error {
            log_line!("ERROR: {}", verdict.error);
        }
        let conf = verdict.confidence.map(|c| format!("{:.2}", c.clamp(0.0, 1.0))).unwrap_or_default();
        let vars = [
            ("STATUS", verdict.status.as_str().to_string()),
            ("TEXT", verdict.text.clone()),
            ("CONFIDENCE", conf),
            ("CAUSE", verdict.cause.to_string()),
            ("ERROR", verdict.error.clone()),
        ];
        let budget_end = Instant::now() + HANGUP_BUDGET;
        for (i, (name, value)) in vars.iter().enumerate() {
            let cmd = Command::SetVariable {
                name: format!("{}{}", self.prefix, name),
                value: value.clone(),
            };
            let timeout = if self.agi.hung_up() {
                budget_end.saturating_duration_since(Instant::now())
            } else {
                config.map(|c| c.reply_timeout).unwrap_or(Duration::from_secs(10))
            };
            if timeout.is_zero() {
                log_line!("hangup budget spent; {} variable(s) not set", vars.len() - i);
                break;
            }
            let sent_at = self.ms();
            match self.agi.call(&cmd, timeout) {
                Ok(_) => {}
                Err(e) => {
                    log_line!("setting {}{}: {e}", self.prefix, name);
                    if matches!(e, crate::agi::AgiError::Write { .. } | crate::agi::AgiError::Eof(_)) {
                        break;
                    }
                }
            }
            if i == 0 {
                self.report.status_set_ms = Some(sent_at);
                if let Some(o) = &self.report.outcome {
                    if let (Some(end), Some(at)) = (o.speech_end_ms, o.decided_at) {
                        // Trailing silence waited (media time) plus finalize and SET VARIABLE.
                        let waited = o.media_ms - end;
                        let after = at.elapsed().as_secs_f64() * 1000.0;
                        self.report.result_latency_ms = Some(waited + after);
                    }
                }
            }
        }
        self.report.signal = self.agi.signal();
        log_line!("{}STATUS={} text={:?} cause={}", self.prefix, verdict.status.as_str(), verdict.text, verdict.cause);
        if let Some(path) = config.and_then(|c| c.json_log.as_ref()) {
            if let Err(e) = append_json(path, &self.json(&verdict)) {
                log_line!("cannot write the JSON log {}: {e}", path.display());
            }
        }
        0
    }

    fn json(&self, v: &Verdict) -> serde_json::Value {
        let (cpu_s, rss_kb) = rusage();
        let ms = |ns: u64| if ns == 0 { None } else { Some(ns as f64 / 1e6) };
        let st = self.audio_stats.as_ref();
        let load = |f: fn(&audio::AudioStats) -> &std::sync::atomic::AtomicU64| {
            st.map(|s| f(s).load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0)
        };
        let o = self.report.outcome.as_ref();
        json!({
            "ts": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            "uniqueid": self.report.uniqueid,
            "channel": self.report.channel,
            "status": v.status,
            "cause": v.cause,
            "text": v.text,
            "confidence": v.confidence,
            "error": v.error,
            "rate": self.report.rate,
            "resampling": self.report.resampling,
            "model_load_ms": self.report.model_load_ms,
            "fd3_ready_ms": ms(load(|s| &s.ready_ns)),
            "first_audio_ms": ms(load(|s| &s.first_data_ns)),
            "audio_samples_in": load(|s| &s.samples_in),
            "audio_reads": load(|s| &s.reads),
            "samples_dropped": load(|s| &s.dropped),
            "pipe_size": load(|s| &s.pipe_size),
            "samples_consumed": o.map(|o| o.samples),
            "end_reason": o.map(|o| o.reason),
            "speech_start_ms": o.and_then(|o| o.speech_start_ms),
            "speech_end_ms": o.and_then(|o| o.speech_end_ms),
            "dtx_ms": o.map(|o| o.dtx_ms),
            "finalize_ms": o.map(|o| o.finalize_ms),
            "result_latency_ms": self.report.result_latency_ms,
            "status_set_ms": self.report.status_set_ms,
            "signal": self.report.signal,
            "cpu_s": cpu_s,
            "peak_rss_kb": rss_kb,
            "wall_ms": self.ms(),
        })
    }
}

//! The controller: one call from header to exit, on the main thread.
//!
//! Order matters: signals are caught before anything else (in `main`), the fd 3 reader starts
//! before the model loads, the header is read, options are checked, the audio rate is asked
//! for, then the endpointer starts listening at once while the decoder loads the model (or
//! connects). Each attempt is an [`attempt::Attempt`] state machine; the loop here moves the
//! stages' events, AGI replies, signals and its deadline into it and carries out its actions.
//! Every handled outcome sets the `ASR_*` variables (SET VARIABLE works on a dead channel too)
//! and exits 0.

use std::io::Write;
use std::time::{Duration, Instant};

use crossbeam_channel::{after, select, unbounded, Receiver};

use crate::agi::channel::{Agi, LineEvent};
use crate::agi::{Command, Reply};
use crate::asr::endpointer::Controls;
use crate::asr::engine::EngineOptions;
use crate::asr::model;
use crate::asr::model::NoModel;
use crate::asr::recognizer::{self, Control, Event, Outcome, Plan, RecognizerConfig};
use crate::asr::ModelInfo;
use crate::audio::{self, rate_for_eagi_format};
use crate::config::{CallArgs, Config};
use crate::log::{append_json, redirect_stderr};
use crate::log_line;
use crate::procfs::rusage;

pub(crate) mod attempt;
pub(crate) mod error;
pub(crate) mod record;
pub(crate) mod verdict;

use attempt::{Action, Attempt, Input, Now};
pub use error::CallError;
pub use record::{CallRecord, Cause};
pub use verdict::{AttemptEnd, Status, Verdict};

/// Longest wait for the AGI header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Per-reply deadline once the host has failed to answer in time.
pub const UNRESPONSIVE_TIMEOUT: Duration = Duration::from_millis(500);
/// After a hangup, setting the variables may take this long in all.
pub const HANGUP_BUDGET: Duration = Duration::from_millis(150);

/// Timings and counters for the per-call JSON line.
#[derive(Debug, Default)]
struct Report {
    uniqueid: String,
    channel: String,
    model_load_ms: Option<f64>,
    cpu_at_load_s: Option<f64>,
    resampling: bool,
    backend: crate::asr::Backend,
    /// Loading the in-process model after the server was lost mid-attempt.
    fallback_ms: Option<f64>,
    /// The servers that served the call, in the order they first did.
    servers: Vec<String>,
    /// Servers lost mid-attempt and replaced by another (or the same address again).
    failovers: u32,
    ready_ms: Option<f64>,
    rate: Option<u32>,
    outcome: Option<Outcome>,
    status_set_ms: Option<f64>,
    result_latency_ms: Option<f64>,
    signal: Option<i32>,
    attempts: u32,
    barge_in_ms: Option<f64>,
}

struct Call<W: Write> {
    agi: Agi<W>,
    t0: Instant,
    t0_unix_ms: f64,
    prefix: String,
    report: Report,
    audio_stats: Option<std::sync::Arc<audio::AudioStats>>,
}

/// Runs one EAGI call. `fd3` is what `main` found at fd 3 before opening anything (owned
/// from there on). Returns the process exit code (0 for every handled outcome).
pub fn run_eagi<W: Write>(
    argv: Vec<String>,
    t0: Instant,
    fd3: Result<std::os::fd::OwnedFd, audio::AudioError>,
    out: W,
    lines: Receiver<LineEvent>,
    signals: Receiver<i32>,
) -> i32 {
    // Options first (pure parsing): they say where stderr goes.
    let config: Result<Config, CallError> = crate::profile::expand(argv)
        .map_err(CallError::from)
        .and_then(|argv| CallArgs::parse_from_args(argv).map_err(|e| CallError::options(&e)))
        .and_then(|args| Ok(args.validate()?));
    let log_path = config.as_ref().ok().and_then(|c| c.log.clone());
    if let Err(e) = redirect_stderr(log_path.as_deref()) {
        log_line!("cannot open log {:?}: {e}", log_path);
    }
    // The fd 3 reader starts before anything slow, so no audio is lost while the model loads.
    let audio = fd3.and_then(|fd| audio::reader::start(fd, t0));
    let mut call = Call {
        agi: Agi::new(out, lines, signals),
        t0,
        t0_unix_ms: unix_ms() - t0.elapsed().as_secs_f64() * 1000.0,
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
        Err(e) => return call.finish(e.verdict(), None),
    };
    let audio = match audio {
        Ok(a) => a,
        Err(e) => return call.finish(CallError::from(e).verdict(), Some(&config)),
    };
    if !header.enhanced() {
        log_line!("warning: agi_enhanced is {:?}, but fd 3 is a pipe; going on", header.get("agi_enhanced"));
    }
    let model_dir = config.model.resolve(header.language());
    // In-process, the model is checked before anything is played; served, it is needed only
    // for --server-fallback, and checked then.
    // The resident server (`--server=auto`) is the call's model's: checked the same way.
    let checked = |d: Result<std::path::PathBuf, NoModel>| -> Result<ModelInfo, CallError> { Ok(model::inspect(&d?)?) };
    let backend = match &config.server {
        None => match checked(model_dir) {
            Ok(m) => Plan::Local(m),
            Err(e) => return call.finish(e.verdict(), Some(&config)),
        },
        Some(s) if s.resident() => match checked(model_dir) {
            Ok(m) => Plan::Server { server: s.clone(), fallback: Ok(m.dir) },
            Err(e) => return call.finish(e.verdict(), Some(&config)),
        },
        Some(s) => Plan::Server { server: s.clone(), fallback: model_dir },
    };
    if config.answer {
        match call.command(&Command::Answer, config.reply_timeout) {
            Ok(_) => {}
            Err(v) => return call.finish(*v, Some(&config)),
        }
    }
    let rate = match config.rate {
        Some(r) => r,
        None => {
            let name = match call.command(&Command::GetVariable { name: "EAGI_AUDIO_FORMAT".into() }, config.reply_timeout) {
                Ok(r) if r.result() == Some(1) => r.data().map(str::to_string),
                Ok(_) => None,
                // A hangup or a host that stopped answering ends the call; a refusal (510,
                // 520, an unknown code) leaves the default format, which Asterisk then uses.
                Err(v) if matches!(v.status, Status::Hangup) || call.agi.timed_out() || call.agi.hung_up() || call.agi.broken() => {
                    return call.finish(*v, Some(&config))
                }
                Err(v) => {
                    log_line!("warning: {}; assuming slin (8 kHz)", v.error);
                    None
                }
            };
            match rate_for_eagi_format(name.as_deref()) {
                Ok(r) => r,
                Err(e) => return call.finish(CallError::from(e).verdict(), Some(&config)),
            }
        }
    };
    call.report.rate = Some(rate);
    let (ev_tx, ev_rx) = unbounded();
    let rc = RecognizerConfig {
        backend,
        audio_rate: rate,
        timers: config.timers,
        vad_mode: config.vad_mode,
        record: config.record.clone(),
        engine: EngineOptions { grammar: config.menu.grammar.clone(), alternatives: config.menu.alternatives },
        barge_min: config.menu.barge_in_min,
        fault: config.fault,
    };
    let ctl_tx = match recognizer::spawn(rc, audio, ev_tx) {
        Ok(c) => c,
        Err(e) => return call.finish(CallError::Threads(e).verdict(), Some(&config)),
    };
    let verdict = call.menu(&config, &ev_rx, &ctl_tx);
    let _ = ctl_tx.try_send(Control::Stop);
    call.finish(verdict, Some(&config))
}

fn unix_ms() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0)
}

impl<W: Write> Call<W> {
    fn ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    /// One command and its reply; a failure becomes the verdict to finish with.
    fn command(&mut self, cmd: &Command, timeout: Duration) -> Result<Reply, Box<Verdict>> {
        match self.agi.call(cmd, timeout) {
            Ok(Reply::DeadChannel) => Err(Box::new(Verdict::hangup())),
            Ok(r) if self.agi.hung_up() => {
                log_line!("{} -> {:?} after a signal", cmd.name(), r);
                Err(Box::new(self.signal_verdict()))
            }
            Ok(r @ Reply::Success { .. }) => Ok(r),
            Ok(r) => Err(Box::new(CallError::Refused { command: cmd.to_string().trim_end().to_string(), reply: format!("{r:?}") }.verdict())),
            Err(e) if self.agi.hung_up() => {
                log_line!("{e} after a signal");
                Err(Box::new(self.signal_verdict()))
            }
            Err(e) => Err(Box::new(CallError::from(e).verdict())),
        }
    }

    fn signal_verdict(&self) -> Verdict {
        match self.agi.signal() {
            Some(sig @ (libc::SIGTERM | libc::SIGINT)) => CallError::Signal(sig).verdict(),
            _ => Verdict::hangup(),
        }
    }

    /// Samples read from fd 3 so far: "now" on the audio stream.
    fn stream_pos(&self) -> audio::StreamPos {
        audio::StreamPos(self.audio_stats.as_ref().map(|s| s.samples_in.load(std::sync::atomic::Ordering::Acquire)).unwrap_or(0))
    }

    /// Samples the endpointer has listened to (it keeps up with arrival).
    fn heard_pos(&self) -> audio::StreamPos {
        audio::StreamPos(self.audio_stats.as_ref().map(|s| s.consumed.load(std::sync::atomic::Ordering::Acquire)).unwrap_or(0))
    }

    fn now(&self) -> Now {
        Now { at: Instant::now(), stream_pos: self.stream_pos(), heard_pos: self.heard_pos(), command_running: self.agi.is_running() }
    }

    /// The stages' reports that concern the call as a whole (the JSON line, the log).
    fn note(&mut self, ev: &Event) {
        match ev {
            Event::ModelLoaded { load, resampling, cpu_s, backend, ready } => {
                self.report.cpu_at_load_s = Some(*cpu_s);
                self.report.model_load_ms = Some(load.as_secs_f64() * 1000.0);
                self.report.resampling = *resampling;
                self.report.backend = *backend;
                self.report.ready_ms = Some(ready.saturating_duration_since(self.t0).as_secs_f64() * 1000.0);
                let what = if *backend == crate::asr::Backend::Server { "server connected" } else { "model loaded" };
                log_line!("{what} in {:.0} ms ({backend}){}", load.as_secs_f64() * 1000.0, if *resampling { " (resampling in the bridge)" } else { "" });
            }
            Event::FellBack { load, replayed_ms, reason } => {
                self.report.backend = crate::asr::Backend::Fallback;
                self.report.fallback_ms = Some(load.as_secs_f64() * 1000.0);
                log_line!(
                    "the in-process model took over in {:.0} ms after the server was lost ({reason}); {replayed_ms:.0} ms of audio replayed",
                    load.as_secs_f64() * 1000.0
                );
            }
            Event::Server { addr } if !self.report.servers.contains(addr) => self.report.servers.push(addr.clone()),
            Event::FailedOver { lost, to, replayed_ms, took } => {
                self.report.failovers += 1;
                log_line!("{to} took over in {:.0} ms after {lost}; {replayed_ms:.0} ms of audio replayed", took.as_secs_f64() * 1000.0);
            }
            Event::SpeechStarted { at_ms } => log_line!("speech started at {at_ms:.0} ms"),
            Event::OutOfVocabulary(w) => log_line!("grammar words not in the model's vocabulary: {}", w.join(", ")),
            _ => {}
        }
    }

    /// The whole menu: attempts with prompts, barge-in, DTMF and retries.
    fn menu(&mut self, config: &Config, events: &Receiver<Event>, control: &Controls) -> Verdict {
        let menu = &config.menu;
        let mut last: Option<Status> = None;
        for attempt in 0..=menu.retries {
            let mut prompts: Vec<String> = Vec::new();
            match last {
                Some(Status::NoInput) => prompts.extend(menu.noinput_prompt.iter().cloned()),
                Some(Status::NoMatch) => prompts.extend(menu.nomatch_prompt.iter().cloned()),
                _ => {}
            }
            prompts.extend(menu.prompts.iter().cloned());
            prompts.extend(menu.beep.iter().cloned());
            let verdict = match self.attempt(config, attempt, prompts, events, control) {
                AttemptEnd::Outcome(o) => {
                    let v = Verdict::from_outcome(&o).apply_menu(menu);
                    self.report.outcome = Some(*o);
                    v
                }
                AttemptEnd::Dtmf(d) => Verdict::dtmf(d),
                AttemptEnd::Verdict(v) => v,
            };
            self.report.attempts = attempt + 1;
            log_line!("attempt {}: {:?} {:?}", attempt + 1, verdict.status, verdict.text);
            if !matches!(verdict.status, Status::NoInput | Status::NoMatch) || attempt == menu.retries {
                return verdict;
            }
            last = Some(verdict.status);
        }
        unreachable!("the loop returns at its last attempt")
    }

    /// One attempt: moves inputs into the [`Attempt`] state machine and carries out its
    /// actions, until it ends. Stage events are taken first, so a key is never decided
    /// before an onset the endpointer has already reported.
    fn attempt(&mut self, config: &Config, n: u32, prompts: Vec<String>, events: &Receiver<Event>, control: &Controls) -> AttemptEnd {
        let rate = self.report.rate.unwrap_or(8000);
        let mut machine = Attempt::new(&config.menu, &config.timers, config.load_timeout, rate, prompts, Instant::now());
        if self.report.model_load_ms.is_some() {
            machine.model_ready(Instant::now());
        }
        let signals = self.agi.hangups().clone();
        let lines = self.agi.lines().clone();
        let actions = machine.start(n == 0, self.now());
        if let Some(end) = self.carry_out(actions, control) {
            return end;
        }
        loop {
            let input = match events.try_recv() {
                Ok(ev) => Some(Input::Event(ev)),
                Err(_) => self.wait(&machine, events, &signals, &lines),
            };
            let Some(input) = input else { continue };
            if let Input::Event(ev) = &input {
                self.note(ev);
            }
            let actions = machine.on(input, self.now());
            if let Some(end) = self.carry_out(actions, control) {
                return end;
            }
        }
    }

    /// Waits for the next input or the machine's deadline. None: nothing for the machine
    /// (a stray line, an owed reply).
    fn wait(&mut self, machine: &Attempt, events: &Receiver<Event>, signals: &Receiver<i32>, lines: &Receiver<LineEvent>) -> Option<Input> {
        let now = Instant::now();
        let wait = machine.deadline(now).saturating_duration_since(now);
        select! {
            recv(events) -> ev => Some(match ev {
                Ok(ev) => Input::Event(ev),
                Err(_) => Input::Ended(CallError::RecognizerGone.verdict()),
            }),
            recv(signals) -> sig => {
                self.agi.on_signal(sig.ok());
                Some(Input::Ended(self.signal_verdict()))
            }
            recv(lines) -> l => match l {
                Ok(LineEvent::Line(line)) => self.reply_input(&line),
                _ => {
                    log_line!("stdin closed: treating as hangup");
                    self.agi.on_signal(None);
                    Some(Input::Ended(Verdict::hangup()))
                }
            },
            recv(after(wait)) -> _ => Some(Input::Tick),
        }
    }

    /// A line from Asterisk as the machine's input.
    fn reply_input(&mut self, line: &str) -> Option<Input> {
        let Some(reply) = self.agi.accept_line(line) else {
            if let Some(s) = self.agi.stray.pop() {
                log_line!("unexpected line: {s:?}");
            }
            return None;
        };
        match reply {
            Reply::Success { result, endpos, .. } => Some(Input::Reply { result: result.unwrap_or(0), endpos }),
            Reply::DeadChannel => Some(Input::Ended(Verdict::hangup())),
            other => {
                log_line!("unexpected reply {other:?}");
                None
            }
        }
    }

    /// Carries out the machine's actions; the attempt's end, if one came.
    fn carry_out(&mut self, actions: Vec<Action>, control: &Controls) -> Option<AttemptEnd> {
        for a in actions {
            match a {
                Action::Start(cmd) => {
                    if let Err(e) = self.agi.start(&cmd) {
                        let _ = control.send(Control::Abandon);
                        return Some(AttemptEnd::Verdict(CallError::from(e).verdict()));
                    }
                }
                Action::Control(c) => {
                    let _ = control.send(c);
                }
                Action::BargedIn => {
                    self.report.barge_in_ms.get_or_insert(self.ms());
                }
                Action::HungUp => self.agi.on_signal(None),
                Action::End(end) => return Some(end),
            }
        }
        None
    }

    /// Sets the variables, writes the JSON line, returns the exit code (always 0).
    fn finish(mut self, verdict: Verdict, config: Option<&Config>) -> i32 {
        if verdict.status == Status::Error {
            log_line!("ERROR: {}", verdict.error);
        }
        let conf = verdict.confidence.map(|c| format!("{:.2}", c.clamp(0.0, 1.0))).unwrap_or_default();
        let mut vars = vec![
            ("STATUS".to_string(), verdict.status.as_str().to_string()),
            ("TEXT".to_string(), verdict.text.clone()),
            ("CONFIDENCE".to_string(), conf),
            ("CAUSE".to_string(), verdict.cause.to_string()),
            ("CHOICE".to_string(), verdict.choice.clone()),
            ("DTMF".to_string(), verdict.dtmf.clone()),
            ("ERROR".to_string(), verdict.error.clone()),
        ];
        let wanted = config.map(|c| c.menu.alternatives as usize).unwrap_or(0);
        if wanted > 0 {
            let alts: Vec<_> = verdict.alternatives.iter().filter(|a| !a.0.is_empty()).take(wanted).collect();
            vars.push(("ALT_COUNT".to_string(), alts.len().to_string()));
            for (i, (text, share)) in alts.iter().enumerate() {
                vars.push((format!("ALT_{}", i + 1), text.clone()));
                vars.push((format!("ALT_{}_CONFIDENCE", i + 1), format!("{:.2}", share.clamp(0.0, 1.0))));
            }
        }
        let budget_end = Instant::now() + HANGUP_BUDGET;
        for (i, (name, value)) in vars.iter().enumerate() {
            let cmd = Command::SetVariable { name: format!("{}{}", self.prefix, name), value: value.clone() };
            let timeout = if self.agi.hung_up() {
                budget_end.saturating_duration_since(Instant::now())
            } else if self.agi.timed_out() {
                UNRESPONSIVE_TIMEOUT // the host already failed to answer once
            } else {
                config.map(|c| c.reply_timeout).unwrap_or(Duration::from_secs(10))
            };
            if timeout.is_zero() {
                log_line!("hangup budget spent; {} variable(s) not set", vars.len() - i);
                break;
            }
            if self.agi.broken() {
                log_line!("the AGI channel is gone (stdout closed or stdin at EOF); variables not set");
                break;
            }
            let sent_at = self.ms();
            match self.agi.call(&cmd, timeout) {
                Ok(_) => {}
                Err(e) => {
                    log_line!("setting {}{}: {e}", self.prefix, name);
                    if matches!(e, crate::agi::AgiError::Write { .. } | crate::agi::AgiError::Eof(_) | crate::agi::AgiError::Timeout { .. }) {
                        log_line!("giving up on the remaining variables");
                        break;
                    }
                }
            }
            if i == 0 {
                self.report.status_set_ms = Some(sent_at);
                if let Some(o) = &self.report.outcome {
                    // What the caller waited: from the arrival of the audio where speech
                    // ended to the first variable set (trailing silence, decoding, finalize).
                    if let Some(arrived) = o.endpoint.speech_end_arrived {
                        self.report.result_latency_ms = Some(arrived.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            }
        }
        self.report.signal = self.agi.signal();
        if let Some(st) = &self.audio_stats {
            let dropped = st.dropped.load(std::sync::atomic::Ordering::Relaxed);
            if dropped > 0 {
                let rate = self.report.rate.unwrap_or(8000) as f64;
                log_line!("warning: {dropped} samples ({:.1} s) of caller audio dropped: the ring was full", dropped as f64 / rate);
            }
            let behind = st.decoder_dropped.load(std::sync::atomic::Ordering::Relaxed);
            if behind > 0 {
                let rate = self.report.rate.unwrap_or(8000) as f64;
                log_line!("warning: {behind} samples ({:.1} s) dropped before the decoder: it fell more than the ring behind", behind as f64 / rate);
            }
        }
        log_line!("{}STATUS={} text={:?} cause={}", self.prefix, verdict.status.as_str(), verdict.text, verdict.cause);
        if let Some(path) = config.and_then(|c| c.json_log.as_ref()) {
            if let Err(e) = append_json(path, &self.record(&verdict)) {
                log_line!("cannot write the JSON log {}: {e}", path.display());
            }
        }
        0
    }

    fn record(&self, v: &Verdict) -> CallRecord {
        let (cpu_s, peak_rss_kb) = rusage();
        let ms = |ns: u64| if ns == 0 { None } else { Some(ns as f64 / 1e6) };
        let st = self.audio_stats.as_ref();
        let load = |f: fn(&audio::AudioStats) -> &std::sync::atomic::AtomicU64| st.map(|s| f(s).load(std::sync::atomic::Ordering::Relaxed)).unwrap_or(0);
        let o = self.report.outcome.as_ref();
        let r = &self.report;
        CallRecord {
            ts: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0),
            uniqueid: r.uniqueid.clone(),
            channel: r.channel.clone(),
            status: v.status,
            cause: v.cause,
            text: v.text.clone(),
            confidence: v.confidence,
            error: v.error.clone(),
            rate: r.rate,
            resampling: r.resampling,
            model_load_ms: r.model_load_ms,
            backend: r.backend,
            fallback_ms: r.fallback_ms,
            ready_ms: r.ready_ms,
            fd3_ready_ms: ms(load(|s| &s.ready_ns)),
            first_audio_ms: ms(load(|s| &s.first_data_ns)),
            audio_samples_in: load(|s| &s.samples_in),
            audio_reads: load(|s| &s.reads),
            samples_dropped: load(|s| &s.dropped),
            pipe_size: load(|s| &s.pipe_size),
            samples_consumed: o.map(|o| o.endpoint.samples),
            end_reason: o.map(|o| o.reason()),
            speech_start_ms: o.and_then(|o| o.endpoint.speech_start_ms),
            speech_end_ms: o.and_then(|o| o.endpoint.speech_end_ms),
            dtx_ms: o.map(|o| o.endpoint.dtx_ms),
            finalize_ms: o.map(|o| o.finalize_ms),
            decode_wait_ms: o.map(|o| o.decode_wait_ms()),
            samples_decoded: load(|s| &s.decoded),
            decoder_dropped: load(|s| &s.decoder_dropped),
            result_latency_ms: r.result_latency_ms,
            status_set_ms: r.status_set_ms,
            signal: r.signal,
            attempts: r.attempts,
            barge_in_ms: r.barge_in_ms,
            choice: v.choice.clone(),
            dtmf: v.dtmf.clone(),
            cpu_s,
            cpu_at_load_s: r.cpu_at_load_s,
            t0_unix_ms: self.t0_unix_ms,
            peak_rss_kb,
            wall_ms: self.ms(),
            servers: r.servers.clone(),
            failovers: r.failovers,
        }
    }
}

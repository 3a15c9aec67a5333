//! One attempt of the menu as a state machine: prompts (stopped by barge-in or a key),
//! listening inside WAIT FOR DIGIT, DTMF against speech, until an outcome.
//!
//! It does no I/O. The loop around it ([`super::Call::attempt`]) feeds it [`Input`]s (an AGI
//! reply, a stage event, a hangup, its deadline) with a [`Now`] snapshot (the wall clock and
//! the stream positions), and carries out the [`Action`]s it returns: start a command, tell
//! the endpointer, end with a result. Decisions rest on the endpointer's events and on
//! positions in the audio as it arrives, never on how far decoding has got. The one deadline
//! the loop waits for is [`Attempt::deadline`], computed from the state.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::verdict::{AttemptEnd, Verdict};
use crate::agi::Command;
use crate::asr::endpoint::{EndReason, Timers};
use crate::asr::endpointer::Endpoint;
use crate::asr::recognizer::{Control, Event, Outcome};
use crate::config::MenuConfig;
use crate::log_line;

/// A key pressed while no frames arrive (DTX) is decided this long after the minimum speech.
pub const KEY_SETTLE_GRACE: Duration = Duration::from_millis(60);

/// How often a key waiting for the endpointer to hear past it is looked at again.
const KEY_RECHECK: Duration = Duration::from_millis(10);

/// WAIT FOR DIGIT's timeout while listening (the attempt ends the command itself).
const LISTEN_WAIT_MS: i64 = 30_000;

/// What the loop knows at the moment of an input.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    /// Samples read from fd 3 so far: "now" on the audio stream.
    pub stream_pos: u64,
    /// Samples the endpointer has listened to.
    pub heard_pos: u64,
    /// A command is running on the AGI channel (its reply has not come).
    pub command_running: bool,
}

/// What happened.
#[derive(Debug)]
pub enum Input {
    /// The reply to the running command: its `result` and STREAM FILE's `endpos`.
    Reply { result: i64, endpos: Option<u64> },
    /// A report of the endpointer or the decoder.
    Event(Event),
    /// The call is over from outside: a signal, stdin closed, a dead channel.
    Ended(Verdict),
    /// [`Attempt::deadline`] has passed (or anything else woke the loop).
    Tick,
}

/// What to do.
#[derive(Debug)]
pub enum Action {
    /// Start this command (a running STREAM FILE or WAIT FOR DIGIT is interrupted by it).
    Start(Command),
    /// Tell the endpointer.
    Control(Control),
    /// The prompt was stopped by the caller's speech.
    BargedIn,
    /// Asterisk said the channel is gone (a reply with result -1).
    HungUp,
    /// The attempt is over.
    End(AttemptEnd),
}

/// A key whose fate waits for the endpointer to hear past the moment it was pressed:
/// speech that started before the key wins.
#[derive(Debug, Clone, Copy)]
struct PendingKey {
    key: char,
    pos: u64,
    at: Instant,
}

/// DTMF input in progress.
#[derive(Debug, Default)]
struct Keys {
    active: bool,
    digits: String,
}

/// One attempt.
pub struct Attempt<'a> {
    menu: &'a MenuConfig,
    prompts: VecDeque<String>,
    /// A prompt is (still) playing.
    prompting: bool,
    /// The endpointer listens in this attempt (from the start with barge-in, else after
    /// the prompt).
    recognizing: bool,
    speech: bool,
    keys: Keys,
    pending: VecDeque<PendingKey>,
    /// The endpointer's verdict while the decoder finishes the text.
    ended: Option<Box<Endpoint>>,
    loaded: bool,
    load_timeout: Duration,
    listen_budget: Duration,
    deadline: Instant,
    /// Samples of minimum speech, and the wall time a key waits without frames.
    min_speech_samples: u64,
    key_settle: Duration,
    done: bool,
}

impl<'a> Attempt<'a> {
    /// Attempt `n` (0 is the first) with these prompts, at `rate` Hz.
    pub fn new(menu: &'a MenuConfig, timers: &Timers, load_timeout: Duration, rate: u32, prompts: Vec<String>, now: Instant) -> Attempt<'a> {
        let listen_budget = timers.no_input + timers.max_duration + timers.end_silence + Duration::from_secs(30);
        Attempt {
            menu,
            prompting: !prompts.is_empty(),
            recognizing: prompts.is_empty() || menu.barge_in,
            prompts: prompts.into(),
            speech: false,
            keys: Keys::default(),
            pending: VecDeque::new(),
            ended: None,
            loaded: false,
            load_timeout,
            listen_budget,
            deadline: now + load_timeout + listen_budget,
            min_speech_samples: (timers.min_speech.as_secs_f64() * rate as f64) as u64,
            key_settle: timers.min_speech + KEY_SETTLE_GRACE,
            done: false,
        }
    }

    /// The first actions: start listening (unless a prompt without barge-in comes first) and
    /// the first command. `first`: the call's first attempt keeps the audio heard so far.
    pub fn start(&mut self, first: bool, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        if self.recognizing {
            let drain_to = (!first).then_some(now.stream_pos);
            out.push(Action::Control(Control::Start { drain_to, timers: !self.prompting }));
        }
        self.pump(now, &mut out);
        out
    }

    /// The model loaded before this attempt began: its deadline is the listening budget.
    pub fn model_ready(&mut self, now: Instant) {
        self.loaded = true;
        self.deadline = now + self.listen_budget + self.prompt_allowance();
    }

    /// When the loop must wake without any input.
    pub fn deadline(&self) -> Instant {
        match self.pending.front() {
            Some(k) if !self.keys.active => self.deadline.min((k.at + self.key_settle).max(Instant::now() + KEY_RECHECK)),
            _ => self.deadline,
        }
    }

    /// True once the attempt has ended.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Takes one input; returns what to do, in order.
    pub fn on(&mut self, input: Input, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        match input {
            Input::Event(ev) => self.on_event(ev, now, &mut out),
            Input::Reply { result, endpos } => self.on_reply(result, endpos, now, &mut out),
            Input::Ended(v) => self.end_with(v, &mut out),
            Input::Tick => {
                if now.at >= self.deadline {
                    let why = if self.loaded {
                        "recognizer gave no result in time (internal deadline)".to_string()
                    } else {
                        format!("model did not load within {:?}", self.load_timeout)
                    };
                    self.end_with(Verdict::error(why), &mut out);
                }
            }
        }
        if !self.done {
            self.settle_keys(now, &mut out);
        }
        if !self.done {
            self.pump(now, &mut out);
        }
        out
    }

    fn prompt_allowance(&self) -> Duration {
        Duration::from_secs(self.prompts.len() as u64 * 120)
    }

    fn finish(&mut self, end: AttemptEnd, out: &mut Vec<Action>) {
        self.done = true;
        out.push(Action::End(end));
    }

    /// Ends without a result from the stages: they drop the attempt.
    fn end_with(&mut self, v: Verdict, out: &mut Vec<Action>) {
        out.push(Action::Control(Control::Abandon));
        self.finish(AttemptEnd::Verdict(v), out);
    }

    /// Keeps exactly one command running: the next prompt file, or WAIT FOR DIGIT.
    fn pump(&mut self, now: Now, out: &mut Vec<Action>) {
        if now.command_running || out.iter().any(|a| matches!(a, Action::Start(_))) {
            return;
        }
        if self.prompting {
            if let Some(file) = self.prompts.pop_front() {
                out.push(Action::Start(Command::StreamFile { file, escape_digits: self.escape().into() }));
                return;
            }
            self.prompting = false;
            if self.menu.barge_in {
                out.push(Action::Control(Control::StartTimers { at: now.stream_pos }));
            } else if !self.keys.active {
                self.recognizing = true;
                out.push(Action::Control(Control::Start { drain_to: Some(now.stream_pos), timers: true }));
            }
        }
        if self.menu.dtmf {
            let timeout_ms = if self.keys.active { self.menu.dtmf_timeout.as_millis() as i64 } else { LISTEN_WAIT_MS };
            out.push(Action::Start(Command::WaitForDigit { timeout_ms }));
        }
    }

    fn escape(&self) -> &'static str {
        if self.menu.dtmf {
            "0123456789*#"
        } else {
            ""
        }
    }

    fn on_event(&mut self, ev: Event, now: Now, out: &mut Vec<Action>) {
        match ev {
            Event::ModelLoaded { .. } | Event::FellBack { .. } => {
                self.loaded = true;
                self.deadline = now.at + self.listen_budget + self.prompt_allowance();
            }
            Event::SpeechStarted { .. } => self.speech = true,
            Event::BargeIn { at_ms } => {
                if self.prompting && self.menu.barge_in && !self.keys.active {
                    log_line!("barge-in at {at_ms:.0} ms: stopping the prompt");
                    self.prompting = false;
                    self.prompts.clear();
                    out.push(Action::BargedIn);
                    out.push(Action::Control(Control::StartTimers { at: now.stream_pos }));
                    // The next command stops STREAM FILE (no reply for it).
                    let next = if self.menu.dtmf { Command::WaitForDigit { timeout_ms: LISTEN_WAIT_MS } } else { Command::Noop };
                    out.push(Action::Start(next));
                }
            }
            Event::Ended(ep) if ep.reason == EndReason::NoInput => {
                self.finish(AttemptEnd::Outcome(Box::new(Outcome::without_text(*ep))), out);
            }
            Event::Ended(ep) => {
                log_line!("{:?} decided at {:.0} ms; waiting for the decoder's text", ep.reason, ep.media_ms);
                self.ended = Some(ep);
            }
            Event::Transcript { transcript, finalize_ms, at } => match self.ended.take() {
                Some(ep) => {
                    let o = Outcome { endpoint: *ep, transcript, finalize_ms, text_at: Some(at) };
                    self.finish(AttemptEnd::Outcome(Box::new(o)), out);
                }
                None => log_line!("a transcript came for no attempt; ignored"),
            },
            Event::Failed(e) => {
                let mut v = Verdict::error(e.to_string());
                v.cause = e.cause();
                self.end_with(v, out);
            }
            Event::OutOfVocabulary(_) => {}
        }
    }

    fn on_reply(&mut self, result: i64, endpos: Option<u64>, now: Now, out: &mut Vec<Action>) {
        if result < 0 {
            if endpos == Some(0) && self.prompting {
                log_line!("warning: a prompt file could not be played (STREAM FILE gave -1 endpos=0); going on");
                return;
            }
            out.push(Action::HungUp);
            return self.end_with(Verdict::hangup(), out);
        }
        if result == 0 {
            // A prompt file ended, or WAIT FOR DIGIT expired.
            if self.keys.active && !self.prompting {
                let digits = std::mem::take(&mut self.keys.digits);
                self.finish(AttemptEnd::Dtmf(digits), out);
            }
            return;
        }
        let Some(key) = u32::try_from(result).ok().and_then(char::from_u32).filter(|c| "0123456789*#ABCD".contains(*c)) else {
            return; // result=1 of an interrupted WAIT FOR DIGIT reaches here only if unowed
        };
        if self.prompting {
            // An escape digit has stopped the prompt.
            self.prompting = false;
            self.prompts.clear();
            if self.recognizing {
                out.push(Action::Control(Control::StartTimers { at: now.stream_pos }));
            }
        }
        if !self.keys.active && self.recognizing {
            self.pending.push_back(PendingKey { key, pos: now.stream_pos, at: now.at });
        } else {
            self.take_key(key, out);
        }
    }

    /// True once the endpointer has heard enough after `k` to know whether speech had
    /// started first: the minimum speech more, or, when no frames come at all (DTX), all
    /// that arrived and the settle time on the wall clock.
    fn settled(&self, k: &PendingKey, now: Now) -> bool {
        now.heard_pos >= k.pos + self.min_speech_samples || (now.heard_pos >= now.stream_pos && now.at >= k.at + self.key_settle)
    }

    /// Decides the keys whose moment the endpointer has heard past.
    fn settle_keys(&mut self, now: Now, out: &mut Vec<Action>) {
        while let Some(k) = self.pending.front().copied() {
            if !self.keys.active && self.ended.is_none() && !self.settled(&k, now) {
                return;
            }
            self.pending.pop_front();
            if (self.speech || self.ended.is_some()) && !self.keys.active {
                log_line!("key {} ignored: speech started first", k.key);
                continue;
            }
            self.take_key(k.key, out);
            if self.done {
                return;
            }
        }
    }

    /// Takes one key of DTMF input; the attempt ends at the terminator or the last digit.
    fn take_key(&mut self, key: char, out: &mut Vec<Action>) {
        if !self.keys.active {
            log_line!("DTMF input started with {key}");
            if self.recognizing {
                out.push(Action::Control(Control::Abandon));
            }
            self.keys.active = true;
        }
        if Some(key) == self.menu.dtmf_terminator {
            let digits = std::mem::take(&mut self.keys.digits);
            return self.finish(AttemptEnd::Dtmf(digits), out);
        }
        self.keys.digits.push(key);
        if self.keys.digits.len() >= self.menu.dtmf_max_digits as usize {
            let digits = std::mem::take(&mut self.keys.digits);
            self.finish(AttemptEnd::Dtmf(digits), out);
        }
    }
}

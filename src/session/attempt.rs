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
use super::CallError;
use crate::agi::Command;
use crate::asr::endpoint::{EndReason, Timers};
use crate::asr::endpointer::Endpoint;
use crate::asr::recognizer::{Control, Event, Outcome};
use crate::asr::AsrError;
use crate::audio::StreamPos;
use crate::config::MenuConfig;
use crate::log_line;

/// A key pressed while no frames arrive (DTX) is decided this long after the minimum speech.
pub(crate) const KEY_SETTLE_GRACE: Duration = Duration::from_millis(60);

/// How often a key waiting for the endpointer to hear past it is looked at again.
const KEY_RECHECK: Duration = Duration::from_millis(10);

/// WAIT FOR DIGIT's timeout while listening (the attempt ends the command itself).
const LISTEN_WAIT_MS: i64 = 30_000;

/// What the loop knows at the moment of an input.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Now {
    pub at: Instant,
    /// Samples read from fd 3 so far: "now" on the audio stream.
    pub stream_pos: StreamPos,
    /// Samples the endpointer has listened to.
    pub heard_pos: StreamPos,
    /// A command is running on the AGI channel (its reply has not come).
    pub command_running: bool,
}

/// What happened.
#[derive(Debug)]
pub(crate) enum Input {
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
pub(crate) enum Action {
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
    pos: StreamPos,
    at: Instant,
}

/// DTMF input in progress.
#[derive(Debug, Default)]
struct Keys {
    active: bool,
    digits: String,
}

/// One attempt.
pub(crate) struct Attempt<'a> {
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
    /// DTMF input began while the listening WAIT FOR DIGIT (30 s) runs: replace it with
    /// one on the inter-digit timeout.
    rearm_wait: bool,
    done: bool,
}

impl<'a> Attempt<'a> {
    /// Attempt `n` (0 is the first) with these prompts, at `rate` Hz.
    pub(crate) fn new(menu: &'a MenuConfig, timers: &Timers, load_timeout: Duration, rate: u32, prompts: Vec<String>, now: Instant) -> Attempt<'a> {
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
            rearm_wait: false,
            done: false,
        }
    }

    /// The first actions: start listening (unless a prompt without barge-in comes first) and
    /// the first command. `first`: the call's first attempt keeps the audio heard so far.
    pub(crate) fn start(&mut self, first: bool, now: Now) -> Vec<Action> {
        let mut out = Vec::new();
        if self.recognizing {
            let drain_to = (!first).then_some(now.stream_pos);
            let timers_at = (!self.prompting).then_some(now.stream_pos);
            out.push(Action::Control(Control::Start { drain_to, timers_at }));
        }
        self.pump(now, &mut out);
        out
    }

    /// The model loaded before this attempt began: its deadline is the listening budget.
    pub(crate) fn model_ready(&mut self, now: Instant) {
        self.loaded = true;
        self.deadline = now + self.listen_budget + self.prompt_allowance();
    }

    /// When the loop must wake without any input.
    pub(crate) fn deadline(&self, now: Instant) -> Instant {
        match self.pending.front() {
            Some(k) if !self.keys.active => self.deadline.min((k.at + self.key_settle).max(now + KEY_RECHECK)),
            _ => self.deadline,
        }
    }

    /// True once the attempt has ended.
    #[cfg(test)]
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Takes one input; returns what to do, in order.
    pub(crate) fn on(&mut self, input: Input, now: Now) -> Vec<Action> {
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
                    let why = if self.loaded { CallError::NoResultInTime } else { CallError::Asr(AsrError::LoadTimeout(self.load_timeout)) };
                    self.end_with(why.verdict(), &mut out);
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
        let rearm = std::mem::take(&mut self.rearm_wait) && !self.prompting;
        if (now.command_running && !rearm) || out.iter().any(|a| matches!(a, Action::Start(_))) {
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
                out.push(Action::Control(Control::Start { drain_to: Some(now.stream_pos), timers_at: Some(now.stream_pos) }));
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
            Event::ModelLoaded { .. } | Event::FellBack { .. } => self.model_ready(now.at),
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
                self.end_with(CallError::Asr(e).verdict(), out);
            }
            Event::OutOfVocabulary(_) | Event::Server { .. } | Event::FailedOver { .. } => {}
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
        let Some(key) = u32::try_from(result).ok().and_then(char::from_u32).filter(|c| crate::agi::DTMF_KEYS.contains(*c)) else {
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
        now.heard_pos >= k.pos.plus(self.min_speech_samples) || (now.heard_pos >= now.stream_pos && now.at >= k.at + self.key_settle)
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
            self.rearm_wait = self.menu.dtmf;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::Transcript;
    use crate::session::verdict::Status;

    const RATE: u32 = 8000;

    fn menu(prompts: bool) -> MenuConfig {
        MenuConfig {
            prompts: if prompts { vec!["menu".into()] } else { Vec::new() },
            barge_in: true,
            barge_in_min: Duration::from_millis(200),
            dtmf: true,
            dtmf_max_digits: 1,
            dtmf_terminator: Some('#'),
            dtmf_timeout: Duration::from_secs(3),
            ..MenuConfig::default()
        }
    }

    /// A scripted call: the wall clock and the stream advance only when the test says so.
    struct Script<'a> {
        machine: Attempt<'a>,
        t0: Instant,
        ms: u64,
        stream: u64,
        heard: u64,
        running: bool,
    }

    impl<'a> Script<'a> {
        fn new(menu: &'a MenuConfig, prompts: &[&str]) -> Script<'a> {
            let t0 = Instant::now();
            let prompts = prompts.iter().map(|p| p.to_string()).collect();
            let machine = Attempt::new(menu, &Timers::default(), Duration::from_secs(60), RATE, prompts, t0);
            Script { machine, t0, ms: 0, stream: 0, heard: 0, running: false }
        }

        fn now(&self) -> Now {
            Now {
                at: self.t0 + Duration::from_millis(self.ms),
                stream_pos: StreamPos(self.stream),
                heard_pos: StreamPos(self.heard),
                command_running: self.running,
            }
        }

        /// Audio arrives (and the endpointer hears it) for `ms`; `frames: false` is DTX.
        fn advance(&mut self, ms: u64, frames: bool) {
            self.ms += ms;
            if frames {
                self.stream += ms * RATE as u64 / 1000;
                self.heard = self.stream;
            }
        }

        fn track(&mut self, actions: &[Action]) {
            if actions.iter().any(|a| matches!(a, Action::Start(_))) {
                self.running = true;
            }
        }

        fn start(&mut self, first: bool) -> Vec<Action> {
            let a = self.machine.start(first, self.now());
            self.track(&a);
            a
        }

        fn on(&mut self, input: Input) -> Vec<Action> {
            if matches!(input, Input::Reply { .. }) {
                self.running = false;
            }
            let a = self.machine.on(input, self.now());
            self.track(&a);
            a
        }

        fn key(&mut self, k: char) -> Vec<Action> {
            self.on(Input::Reply { result: k as i64, endpos: None })
        }
    }

    fn endpoint(reason: EndReason) -> Box<Endpoint> {
        Box::new(Endpoint {
            reason,
            speech_start_ms: (reason != EndReason::NoInput).then_some(500.0),
            speech_end_ms: (reason != EndReason::NoInput).then_some(1500.0),
            samples: 20_000,
            media_ms: 2500.0,
            dtx_ms: 0.0,
            decided_at: Instant::now(),
            speech_end_arrived: None,
        })
    }

    fn transcript() -> Input {
        Input::Event(Event::Transcript { transcript: Transcript::default(), finalize_ms: 1.0, at: Instant::now() })
    }

    fn ended(actions: &[Action]) -> Option<&AttemptEnd> {
        actions.iter().find_map(|a| match a {
            Action::End(e) => Some(e),
            _ => None,
        })
    }

    fn dtmf(actions: &[Action]) -> Option<&str> {
        match ended(actions) {
            Some(AttemptEnd::Dtmf(d)) => Some(d),
            _ => None,
        }
    }

    fn status(actions: &[Action]) -> Option<Status> {
        match ended(actions) {
            Some(AttemptEnd::Verdict(v)) => Some(v.status),
            _ => None,
        }
    }

    fn has(actions: &[Action], f: impl Fn(&Action) -> bool) -> bool {
        actions.iter().any(f)
    }

    #[test]
    fn first_attempt_listens_at_once_and_plays_the_prompt() {
        let m = menu(true);
        let mut s = Script::new(&m, &["menu"]);
        let a = s.start(true);
        assert!(matches!(a[0], Action::Control(Control::Start { drain_to: None, timers_at: None })), "{a:?}");
        assert!(matches!(&a[1], Action::Start(Command::StreamFile { file, .. }) if file == "menu"), "{a:?}");
        assert_eq!(a.len(), 2);
    }

    #[test]
    fn without_a_prompt_the_no_input_timer_starts_where_listening_starts() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.advance(20, true); // audio that came while the header and options were read
        let a = s.start(true);
        assert!(matches!(a[0], Action::Control(Control::Start { drain_to: None, timers_at: Some(StreamPos(160)) })), "{a:?}");
    }

    #[test]
    fn a_retry_drops_the_audio_before_it() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.advance(3000, true);
        let a = s.start(false);
        assert!(matches!(a[0], Action::Control(Control::Start { drain_to: Some(StreamPos(24_000)), timers_at: Some(StreamPos(24_000)) })), "{a:?}");
        assert!(matches!(a[1], Action::Start(Command::WaitForDigit { timeout_ms: LISTEN_WAIT_MS })), "{a:?}");
    }

    #[test]
    fn barge_in_stops_the_prompt_and_starts_the_timers_where_it_happened() {
        let m = menu(true);
        let mut s = Script::new(&m, &["menu"]);
        s.start(true);
        s.advance(820, true);
        let a = s.on(Input::Event(Event::BargeIn { at_ms: 820.0 }));
        assert!(has(&a, |x| matches!(x, Action::BargedIn)));
        assert!(has(&a, |x| matches!(x, Action::Control(Control::StartTimers { at: StreamPos(6560) }))), "{a:?}");
        assert!(has(&a, |x| matches!(x, Action::Start(Command::WaitForDigit { .. }))), "{a:?}");
        // A second barge-in event changes nothing.
        let a = s.on(Input::Event(Event::BargeIn { at_ms: 900.0 }));
        assert!(a.is_empty(), "{a:?}");
    }

    #[test]
    fn without_barge_in_listening_starts_when_the_prompt_ends() {
        let mut m = menu(true);
        m.barge_in = false;
        let mut s = Script::new(&m, &["menu"]);
        let a = s.start(true);
        assert!(!has(&a, |x| matches!(x, Action::Control(_))), "no listening during the prompt: {a:?}");
        s.advance(4000, true);
        let a = s.on(Input::Reply { result: 0, endpos: Some(32_000) });
        assert!(matches!(a[0], Action::Control(Control::Start { drain_to: Some(StreamPos(32_000)), timers_at: Some(StreamPos(32_000)) })), "{a:?}");
        assert!(matches!(a[1], Action::Start(Command::WaitForDigit { .. })), "{a:?}");
    }

    #[test]
    fn a_key_during_the_prompt_stops_it_and_wins_when_no_speech_came() {
        let m = menu(true);
        let mut s = Script::new(&m, &["menu"]);
        s.start(true);
        s.advance(1000, true);
        let a = s.key('5');
        assert!(has(&a, |x| matches!(x, Action::Control(Control::StartTimers { at: StreamPos(8000) }))), "{a:?}");
        assert!(ended(&a).is_none(), "decided only once the endpointer heard past the key: {a:?}");
        s.advance(100, true); // min speech (100 ms) heard after the key: no onset
        let a = s.on(Input::Tick);
        assert!(has(&a, |x| matches!(x, Action::Control(Control::Abandon))), "{a:?}");
        assert_eq!(dtmf(&a), Some("5"));
    }

    #[test]
    fn a_key_with_no_audio_frames_is_decided_on_the_wall_clock() {
        // A silent far end sends no frames at all (DTX): the stream does not advance.
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.start(true);
        s.advance(1000, false);
        let a = s.key('2');
        assert!(ended(&a).is_none());
        let wait = s.machine.deadline(s.now().at).saturating_duration_since(s.now().at);
        assert!(wait <= Duration::from_millis(170) && wait >= Duration::from_millis(150), "wakes at the settle time: {wait:?}");
        s.advance(100, false);
        assert!(ended(&s.on(Input::Tick)).is_none(), "not before min speech + grace");
        s.advance(60, false);
        assert_eq!(dtmf(&s.on(Input::Tick)), Some("2"));
    }

    #[test]
    fn speech_that_started_before_the_key_wins() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.start(true);
        s.advance(500, true);
        let a = s.key('7');
        assert!(ended(&a).is_none());
        let a = s.on(Input::Event(Event::SpeechStarted { at_ms: 480.0 }));
        assert!(a.is_empty() || ended(&a).is_none(), "{a:?}");
        s.advance(100, true);
        let a = s.on(Input::Tick);
        assert!(ended(&a).is_none(), "key ignored, still listening: {a:?}");
        assert!(!has(&a, |x| matches!(x, Action::Control(Control::Abandon))));
        s.on(Input::Event(Event::Ended(endpoint(EndReason::EndOfSpeech))));
        let a = s.on(transcript());
        assert!(matches!(ended(&a), Some(AttemptEnd::Outcome(_))), "{a:?}");
    }

    #[test]
    fn multi_digit_input_ends_at_the_terminator_or_the_inter_digit_timeout() {
        let mut m = menu(false);
        m.dtmf_max_digits = 4;
        let mut s = Script::new(&m, &[]);
        s.start(true);
        s.advance(500, false);
        s.key('1');
        s.advance(200, false);
        let a = s.on(Input::Tick);
        assert!(has(&a, |x| matches!(x, Action::Start(Command::WaitForDigit { timeout_ms: 3000 }))), "inter-digit timeout: {a:?}");
        s.key('2');
        assert_eq!(dtmf(&s.key('#')), Some("12"));

        let mut s = Script::new(&m, &[]);
        s.start(true);
        s.advance(500, false);
        s.key('9');
        s.advance(200, false);
        s.on(Input::Tick);
        assert_eq!(dtmf(&s.on(Input::Reply { result: 0, endpos: None })), Some("9"), "WAIT FOR DIGIT expired");
    }

    #[test]
    fn no_input_ends_at_once_without_waiting_for_the_decoder() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.start(true);
        s.advance(5000, true);
        let a = s.on(Input::Event(Event::Ended(endpoint(EndReason::NoInput))));
        match ended(&a) {
            Some(AttemptEnd::Outcome(o)) => assert_eq!(o.reason(), EndReason::NoInput),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_lagging_decoder_delays_only_the_text() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.start(true);
        s.advance(2000, true);
        let a = s.on(Input::Event(Event::Ended(endpoint(EndReason::EndOfSpeech))));
        assert!(ended(&a).is_none(), "the text is still to come");
        // Seconds of decoding backlog: a key meanwhile is late, speech already won.
        for _ in 0..30 {
            s.advance(100, true);
            assert!(ended(&s.on(Input::Tick)).is_none());
        }
        let a = s.key('3');
        assert!(ended(&a).is_none() && !has(&a, |x| matches!(x, Action::Control(Control::Abandon))), "{a:?}");
        let a = s.on(transcript());
        assert!(matches!(ended(&a), Some(AttemptEnd::Outcome(o)) if o.reason() == EndReason::EndOfSpeech), "{a:?}");
        // A stray transcript after the end is ignored.
        assert!(s.on(transcript()).is_empty());
    }

    #[test]
    fn a_hangup_in_any_phase_abandons_the_attempt() {
        let m = menu(true);
        for phase in 0..4 {
            let mut s = Script::new(&m, &["menu"]);
            s.start(true);
            s.advance(700, true);
            if phase >= 1 {
                s.on(Input::Event(Event::BargeIn { at_ms: 700.0 }));
            }
            if phase >= 2 {
                s.key('4');
            }
            if phase == 3 {
                s.on(Input::Event(Event::Ended(endpoint(EndReason::EndOfSpeech))));
            }
            let a = s.on(Input::Ended(Verdict::hangup()));
            assert!(has(&a, |x| matches!(x, Action::Control(Control::Abandon))), "phase {phase}: {a:?}");
            assert_eq!(status(&a), Some(Status::Hangup), "phase {phase}");
            assert!(s.machine.is_done());
        }
    }

    #[test]
    fn a_dead_channel_reply_is_a_hangup_but_an_unplayable_prompt_is_not() {
        let m = menu(true);
        let mut s = Script::new(&m, &["missing", "menu"]);
        s.start(true);
        let a = s.on(Input::Reply { result: -1, endpos: Some(0) });
        assert!(ended(&a).is_none());
        assert!(has(&a, |x| matches!(x, Action::Start(Command::StreamFile { file, .. }) if file == "menu")), "{a:?}");
        let a = s.on(Input::Reply { result: -1, endpos: None });
        assert!(has(&a, |x| matches!(x, Action::HungUp)));
        assert_eq!(status(&a), Some(Status::Hangup));
    }

    #[test]
    fn a_stage_failure_ends_with_its_cause() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.start(true);
        let e = crate::asr::AsrError::ServerBusy { addr: "unix:/x".into(), reason: "full".into() };
        let a = s.on(Input::Event(Event::Failed(e)));
        match ended(&a) {
            Some(AttemptEnd::Verdict(v)) => assert_eq!((v.status, v.cause), (Status::Error, crate::session::Cause::ServerBusy)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_deadline_names_the_model_until_it_loaded() {
        let m = menu(false);
        let mut s = Script::new(&m, &[]);
        s.start(true);
        let d = s.machine.deadline(s.now().at);
        s.ms = (d - s.t0).as_millis() as u64 - 1;
        assert!(ended(&s.on(Input::Tick)).is_none());
        s.ms += 1;
        match ended(&s.on(Input::Tick)) {
            Some(AttemptEnd::Verdict(v)) => assert!(v.error.contains("model did not load"), "{}", v.error),
            other => panic!("{other:?}"),
        }
    }
}

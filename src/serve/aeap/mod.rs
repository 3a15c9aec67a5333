//! `asr_bridge serve` as an Asterisk speech engine: AEAP, the protocol of `res_speech_aeap`
//! (Asterisk 18.12 / 19.4 on), which carries the Speech API (`SpeechCreate`,
//! `SpeechBackground`, `${SPEECH_TEXT(0)}`) to an external engine over a WebSocket.
//!
//! # What Asterisk's source says (and this module relies on)
//!
//! From `res/res_speech_aeap.c`, `res/res_aeap/*.c` and `res/res_http_websocket.c`:
//!
//! - Asterisk is the client. `speech_aeap_engine_create` connects on `SpeechCreate` with
//!   `CONNECTION_TIMEOUT 2000` (ms) and `SPEECH_PROTOCOL "speech_to_text"` as the WebSocket
//!   subprotocol: one connection per speech object, closed by `SpeechDestroy` or the hangup.
//!   Its handshake sends `Authorization: Basic ...` only from the URL's user info
//!   (`ws://user:password@host/...`) and no other header; a response with any
//!   `Sec-WebSocket-Extensions` is refused ("Extensions received, but not supported by
//!   client"), so the server answers with the subprotocol and no extension.
//! - Messages are JSON text frames: `"request"` or `"response"` with the name, a string `"id"`
//!   (`ast_json_object_string_get`), `"error_msg"` on errors. Every request of Asterisk waits
//!   for its response (`.timeout = 1000`, `.wait = 1`): a reply later than 1 s fails it.
//! - `setup` carries `"version": "0.1.0"`, `"codecs": [{"name": ..}]` (the one format
//!   `SpeechCreate` chose) and `"params"` from the client section's `@name=value` lines;
//!   `handle_response_setup` fails unless the response's `codecs[0].name` is that codec name.
//! - `set` carries `{"params": {name: value}}`, one name per request: `dtmf` (a key pressed
//!   during SpeechBackground), `results_type` (`normal`/`nbest`), and any name the dialplan sets
//!   with `Set(SPEECH_ENGINE(name)=value)`. `get` carries `{"params": [name]}` and reads the
//!   first key of the response's `params`: `results` or a setting's string value.
//! - Audio comes in binary frames in the chosen codec while the speech object is ready (from
//!   the start of SpeechBackground, prompt included). Nothing tells the engine that a
//!   SpeechBackground started or that its prompt ended, and the engine cannot stop the prompt.
//! - The engine ends a recognition with its own request `set` whose params' first key is
//!   `results`: `[{"text", "score" (ast_json_object_integer_get: a JSON integer), "grammar",
//!   "best" (the n-best index)}]`; `handle_results` prepends each entry to the list, and
//!   `SPEECH_TEXT(N)` finds the N-th entry with best 0, `SPEECH_TEXT(B/N)` with best B.
//!   Asterisk answers the request and SpeechBackground returns.
//!
//! # What this engine does
//!
//! One connection is one speech object and holds one admission slot for its life (like a
//! vosk-server call: at capacity the handshake gets 503 and `SpeechCreate` fails, so the
//! dialplan can fall back at once). It holds a recognizer only while an utterance is open: the
//! first audio frame takes one from the warm pool ([`ServedCall`](super::call::ServedCall)) on the utterance's
//! [`decoder`] thread; the end of the utterance (by the EAGI side's endpointer rules, on the
//! arrival of audio, [`listen`]) feeds the rest, takes the final result and gives the
//! recognizer back warm, then pushes the results. Audio is fed in 100 ms blocks (the in-process
//! engine's [`crate::asr::engine::BLOCK_MS`]), each its own job on the decode pool charged to
//! the connection's [`Usage`], so the pool's fairness rules hold; the connection thread never
//! waits for a decode, so Asterisk's requests are answered within its 1000 ms. Audio that
//! arrives after the end of an utterance and within [`SETTLE`] of its push is dropped (frames
//! Asterisk sent before it saw the results). A key
//! (`set dtmf`) drops the open utterance unpushed (Asterisk makes its own DTMF result). A
//! malformed request gets an `error_msg` response and the connection lives. A client gone
//! mid-utterance frees its slot and its recognizer goes back warm ([`ServedCall::abandon`](super::call::ServedCall::abandon)).
//! Between utterances a speech object may sit idle (the dialplan plays prompts, asks a
//! database) up to [`IDLE_BETWEEN`]; mid-utterance the wall clock ends the utterance anyway.
//!
//! Runs on the connection's thread; decoding on the pool.

pub mod codec;
mod decoder;
pub(crate) mod listen;
pub(crate) mod params;
pub(crate) mod wire;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use super::http::Replayed;
use super::pool::Usage;
use super::Shared;
use crate::asr::endpoint::EndReason;
use crate::asr::engine::{block_len, Transcript};
use crate::log_line;
use crate::protocol::Reply;
use codec::Codec;
use decoder::{Decoder, Finishing};
use listen::Listening;
use params::{Params, ResultsType};
use wire::{Incoming, Malformed, Request, SpeechResult};

/// The WebSocket subprotocol of res_speech_aeap (`SPEECH_PROTOCOL`).
pub const PROTOCOL: &str = "speech_to_text";

/// The path that reaches this engine without the subprotocol.
pub const PATH: &str = "/aeap";

/// The longest a speech object may stay connected without a message between utterances.
pub const IDLE_BETWEEN: Duration = Duration::from_secs(600);

/// After results are pushed, audio this long is taken as frames Asterisk sent before it saw
/// them, not as a new SpeechBackground (which needs a dialplan step at least).
pub const SETTLE: Duration = Duration::from_millis(200);

/// How often a connection waiting for a final result looks for it.
const POLL: Duration = Duration::from_millis(5);

/// One open utterance: its decoder, its endpointer, audio waiting for a whole block.
struct Utterance {
    decoder: Decoder,
    listen: Listening,
    block: Vec<i16>,
    started: Instant,
}

/// An utterance decided, its final result on the way.
struct Ending {
    finishing: Finishing,
    reason: EndReason,
    started: Instant,
}

/// One speech object's state.
struct Session<'a> {
    sh: &'a Arc<Shared>,
    ws: &'a mut WebSocket<Replayed>,
    id: usize,
    codec: Option<Codec>,
    params: Params,
    utterance: Option<Utterance>,
    ending: Option<Ending>,
    /// Audio is dropped until then (see [`SETTLE`]).
    settle_until: Option<Instant>,
    /// The last results pushed (what `get results` answers).
    results: Vec<SpeechResult>,
    usage: Arc<Mutex<Usage>>,
    odd: Option<u8>,
    pushed: u64,
    heard_at: Instant,
}

/// Serves one speech object until the client closes; Err says why it ended otherwise. An open
/// utterance is abandoned (its recognizer goes back warm).
pub(super) fn serve(sh: &Arc<Shared>, ws: &mut WebSocket<Replayed>, id: usize) -> Result<(), String> {
    let mut s = Session {
        sh,
        ws,
        id,
        codec: None,
        params: Params::default(),
        utterance: None,
        ending: None,
        settle_until: None,
        results: Vec::new(),
        usage: Arc::new(Mutex::new(Usage::default())),
        odd: None,
        pushed: 0,
        heard_at: Instant::now(),
    };
    s.run()
}

impl Session<'_> {
    fn run(&mut self) -> Result<(), String> {
        loop {
            self.push_when_ready()?;
            let wait = match (&self.ending, &self.utterance) {
                (Some(_), _) => POLL,
                (None, Some(u)) => u.listen.wait(),
                (None, None) => {
                    let left = IDLE_BETWEEN.saturating_sub(self.heard_at.elapsed());
                    if left.is_zero() {
                        self.sh.stats.idle_dropped.fetch_add(1, Ordering::Relaxed);
                        return Err(format!("no message for {IDLE_BETWEEN:?} between utterances"));
                    }
                    left
                }
            };
            let _ = self.ws.get_ref().set_read_timeout(Some(wait));
            let msg = match self.ws.read() {
                Ok(m) => m,
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    self.quiet();
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Ok(()),
                Err(e) => return Err(format!("client gone: {e}")),
            };
            self.heard_at = Instant::now();
            match msg {
                Message::Text(t) => self.text(t.as_str())?,
                Message::Binary(b) => self.audio(&b)?,
                Message::Close(_) => return Ok(()),
                _ => {}
            }
        }
    }

    /// No audio for a while: the open utterance may end on the wall clock.
    fn quiet(&mut self) {
        if let Some(reason) = self.utterance.as_mut().and_then(|u| u.listen.quiet()) {
            self.end_utterance(reason);
        }
    }

    fn send(&mut self, text: String) -> Result<(), String> {
        self.ws.send(Message::text(text)).map_err(|e| format!("client gone: {e}"))
    }

    fn text(&mut self, text: &str) -> Result<(), String> {
        let reply = match wire::parse(text) {
            Ok(Incoming::Request { id, request }) => self.request(&id, request),
            Ok(Incoming::Response { id, error }) => {
                if let Some(e) = error {
                    log_line!("aeap {}: Asterisk refused {id}: {e}", self.id);
                }
                return Ok(());
            }
            Err(m) => Err(m),
        };
        match reply {
            Ok(r) => self.send(r),
            Err(m) => {
                log_line!("aeap {}: refused a request: {}", self.id, m.why);
                self.send(wire::error(&m))
            }
        }
    }

    /// The response to one request, or the error it gets.
    fn request(&mut self, id: &str, request: Request) -> Result<String, Malformed> {
        let refuse = |name: &str, why: String| Malformed { id: Some(id.to_string()), name: Some(name.to_string()), why };
        match request {
            Request::Setup { codecs, params } => {
                if self.codec.is_some() {
                    return Err(refuse("setup", "already set up".into()));
                }
                let codec = Codec::choose(&codecs).ok_or_else(|| refuse("setup", format!("no codec of {codecs:?} is taken: ulaw, alaw, slin, slin16")))?;
                let mut p = self.params.clone();
                for (k, v) in &params {
                    p.apply(k, v).map_err(|e| refuse("setup", e))?;
                }
                self.params = p;
                self.codec = Some(codec);
                Ok(wire::setup_response(id, codec))
            }
            Request::Set { params } => {
                let mut p = self.params.clone();
                for (k, v) in params.iter().filter(|(k, _)| k != "dtmf") {
                    p.apply(k, v).map_err(|e| refuse("set", e))?;
                }
                self.params = p;
                if params.iter().any(|(k, _)| k == "dtmf") {
                    self.dtmf();
                }
                Ok(wire::response("set", id, serde_json::Map::new()))
            }
            Request::Get { names } => {
                let mut out = serde_json::Map::new();
                for n in &names {
                    let v = match n.as_str() {
                        "results" => serde_json::to_value(&self.results).unwrap_or_default(),
                        other => self.params.get(other).ok_or_else(|| refuse("get", format!("unknown parameter {other:?}")))?.into(),
                    };
                    out.insert(n.clone(), v);
                }
                let mut body = serde_json::Map::new();
                body.insert("params".into(), out.into());
                Ok(wire::response("get", id, body))
            }
        }
    }

    /// A key was pressed: Asterisk ends SpeechBackground with its own DTMF result, so the open
    /// utterance is dropped (its decoder abandons it) and nothing is pushed.
    fn dtmf(&mut self) {
        self.results.clear();
        self.utterance = None;
        self.ending = None;
    }

    fn audio(&mut self, bytes: &[u8]) -> Result<(), String> {
        let Some(codec) = self.codec else {
            log_line!("aeap {}: audio before setup dropped", self.id);
            return Ok(());
        };
        let seconds = bytes.len() as f64 / codec.width() as f64 / f64::from(codec.rate());
        if seconds > self.sh.max_message_audio.as_secs_f64() {
            return Err(format!("a frame of {seconds:.1} s of audio; at most {:?} (--max-message-audio)", self.sh.max_message_audio));
        }
        let settling = self.settle_until.is_some_and(|t| Instant::now() < t);
        if self.ending.is_some() || (self.utterance.is_none() && settling) {
            return Ok(());
        }
        let mut samples = Vec::with_capacity(bytes.len());
        codec.decode(bytes, &mut self.odd, &mut samples);
        if self.utterance.is_none() {
            self.utterance = Some(self.open(codec)?);
        }
        let Some(u) = self.utterance.as_mut() else { return Ok(()) };
        let (used, ended) = u.listen.audio(&samples);
        u.block.extend_from_slice(&samples[..used]);
        let whole = block_len(codec.rate());
        while u.block.len() >= whole {
            let bytes: Vec<u8> = u.block.drain(..whole).flat_map(i16::to_le_bytes).collect();
            u.decoder.audio(bytes);
        }
        if let Some(reason) = ended {
            self.end_utterance(reason);
        }
        Ok(())
    }

    /// A new utterance: listening starts now; its decoder takes a recognizer.
    fn open(&mut self, codec: Codec) -> Result<Utterance, String> {
        let listen = Listening::new(codec.rate(), &self.params)?;
        let decoder = Decoder::start(self.sh, self.params.call_config(codec.rate()), self.usage.clone(), self.id)?;
        Ok(Utterance { decoder, listen, block: Vec::with_capacity(block_len(codec.rate()) * 2), started: Instant::now() })
    }

    /// The endpointer decided: no input pushes no results at once (the recognizer goes back
    /// warm); otherwise the decoder finishes and the results follow when ready.
    fn end_utterance(&mut self, reason: EndReason) {
        let Some(u) = self.utterance.take() else { return };
        let rest: Vec<u8> = u.block.iter().flat_map(|s| s.to_le_bytes()).collect();
        if reason == EndReason::NoInput {
            drop(u.decoder);
            let (tx, rx) = crossbeam_channel::bounded(1);
            let _ = tx.send(Ok(String::new()));
            self.ending = Some(Ending { finishing: Finishing::ready(rx), reason, started: u.started });
            return;
        }
        self.ending = Some(Ending { finishing: u.decoder.finish(rest), reason, started: u.started });
    }

    /// Pushes the results of the utterance that ended, once its final result is in.
    fn push_when_ready(&mut self) -> Result<(), String> {
        let Some(final_json) = self.ending.as_ref().and_then(|e| e.finishing.poll()) else { return Ok(()) };
        let Some(e) = self.ending.take() else { return Ok(()) };
        let results = match final_json {
            Ok(json) => self.results_of(&json),
            Err(why) => {
                log_line!("aeap {}: the utterance's decoding failed: {why}", self.id);
                Vec::new()
            }
        };
        log_line!(
            "aeap {}: {:?} after {:.1} s; {} result(s){}",
            self.id,
            e.reason,
            e.started.elapsed().as_secs_f64(),
            results.len(),
            results.first().map(|r| format!(", score {}", r.score)).unwrap_or_default()
        );
        self.results = results;
        self.pushed += 1;
        self.settle_until = Some(Instant::now() + SETTLE);
        let push_id = format!("asr-bridge-{}-{}", self.id, self.pushed);
        let request = wire::results_request(&push_id, &self.results);
        self.send(request)
    }

    /// libvosk's final JSON as AEAP results: the best text with its mean word confidence, or
    /// with `results_type=nbest` each alternative with its share of the n-best list (best 0,
    /// 1, ..); scores 0-1000. No text: no result.
    fn results_of(&self, json: &str) -> Vec<SpeechResult> {
        let mut t = Transcript::default();
        if let Some(seg) = Reply::parse(json).ok().and_then(Reply::into_segment) {
            t.push(seg);
        }
        let grammar = self.params.grammar_name();
        let score = |c: f32| (f64::from(c) * 1000.0).round().clamp(0.0, 1000.0) as i64;
        let result = |(best, (text, s)): (usize, (String, i64))| SpeechResult { text, score: s, grammar: grammar.clone(), best: best as i64 };
        if self.params.results_type == ResultsType::NBest && !t.alternatives.is_empty() {
            return t.alternatives.iter().filter(|a| !a.text.is_empty()).map(|a| (a.text.clone(), score(a.share))).enumerate().map(result).collect();
        }
        if t.text.is_empty() {
            return Vec::new();
        }
        vec![result((0, (t.text.clone(), score(t.confidence().unwrap_or(0.0)))))]
    }
}

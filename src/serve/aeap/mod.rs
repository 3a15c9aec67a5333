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
//! first audio frame takes one from the warm pool ([`ServedCall`]); the end of the utterance
//! (by the EAGI side's endpointer rules, [`listen`]) feeds the rest, takes the final result and
//! gives the recognizer back warm, then pushes the results. Audio is fed in 100 ms blocks
//! (the in-process engine's [`crate::asr::engine::BLOCK_MS`]), each its own job on the decode
//! pool charged to the connection's [`Usage`], so the pool's fairness rules hold. A key
//! (`set dtmf`) drops the open utterance unpushed (Asterisk makes its own DTMF result). A
//! malformed request gets an `error_msg` response and the connection lives. A client gone
//! mid-utterance frees its slot and its recognizer goes back warm ([`ServedCall::abandon`]).
//! Between utterances a speech object may sit idle (the dialplan plays prompts, asks a
//! database) up to [`IDLE_BETWEEN`]; mid-utterance the wall clock ends the utterance anyway.
//!
//! Runs on the connection's thread; decoding on the pool.

pub mod codec;
pub mod listen;
pub mod params;
pub mod wire;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

use super::call::ServedCall;
use super::http::Replayed;
use super::pool::Usage;
use super::{retire, Shared};
use crate::asr::endpoint::EndReason;
use crate::asr::engine::{block_len, Segment, Transcript};
use crate::log_line;
use codec::Codec;
use listen::Listening;
use params::{Params, ResultsType};
use wire::{Incoming, Malformed, Request, SpeechResult};

/// The WebSocket subprotocol of res_speech_aeap (`SPEECH_PROTOCOL`).
pub const PROTOCOL: &str = "speech_to_text";

/// The path that reaches this engine without the subprotocol.
pub const PATH: &str = "/aeap";

/// The longest a speech object may stay connected without a message between utterances.
pub const IDLE_BETWEEN: Duration = Duration::from_secs(600);

/// One open utterance: its recognizer, its endpointer, audio waiting for a whole block.
struct Utterance {
    call: Box<ServedCall>,
    listen: Listening,
    block: Vec<i16>,
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
    /// The last results pushed (what `get results` answers).
    results: Vec<SpeechResult>,
    usage: Usage,
    odd: Option<u8>,
    pushed: u64,
    heard_at: Instant,
    counted_ms: u64,
}

/// Serves one speech object until the client closes; Err says why it ended otherwise.
pub(super) fn serve(sh: &Arc<Shared>, ws: &mut WebSocket<Replayed>, id: usize) -> Result<(), String> {
    let mut s = Session {
        sh,
        ws,
        id,
        codec: None,
        params: Params::default(),
        utterance: None,
        results: Vec::new(),
        usage: Usage::default(),
        odd: None,
        pushed: 0,
        heard_at: Instant::now(),
        counted_ms: 0,
    };
    let end = s.run();
    if let Some(u) = s.utterance.take() {
        s.abandon(u);
    }
    end
}

impl Session<'_> {
    fn run(&mut self) -> Result<(), String> {
        loop {
            let wait = match &self.utterance {
                Some(u) => u.listen.wait(),
                None => {
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
                    self.quiet()?;
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
    fn quiet(&mut self) -> Result<(), String> {
        let ended = self.utterance.as_mut().and_then(|u| u.listen.quiet());
        match ended {
            Some(reason) => self.end_utterance(reason),
            None => Ok(()),
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
                for (k, v) in &params {
                    if k == "dtmf" {
                        continue;
                    }
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
    /// utterance is dropped, not pushed.
    fn dtmf(&mut self) {
        self.results.clear();
        if let Some(u) = self.utterance.take() {
            self.abandon(u);
        }
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
        let mut samples = Vec::with_capacity(bytes.len());
        codec.decode(bytes, &mut self.odd, &mut samples);
        if self.utterance.is_none() {
            self.utterance = Some(self.open(codec)?);
        }
        let Some(u) = self.utterance.as_mut() else { return Ok(()) };
        let (used, ended) = u.listen.audio(&samples);
        u.block.extend_from_slice(&samples[..used]);
        let whole = block_len(codec.rate());
        while self.utterance.as_ref().is_some_and(|u| u.block.len() >= whole) {
            self.feed(whole)?;
        }
        match ended {
            Some(reason) => self.end_utterance(reason),
            None => Ok(()),
        }
    }

    /// A recognizer for a new utterance, from the warm pool or built on the pool.
    fn open(&mut self, codec: Codec) -> Result<Utterance, String> {
        let cfg = self.params.call_config(codec.rate());
        let listen = Listening::new(codec.rate(), &self.params)?;
        let sh = self.sh.clone();
        let opened = self.sh.pool.run(&mut self.usage, move || ServedCall::open(&sh.model, &sh.info, &cfg, &sh.warm));
        let (call, oov) = opened.ok_or("building the recognizer panicked")?.0.map_err(|e| e.to_string())?;
        if !oov.is_empty() {
            log_line!("aeap {}: {} phrase word(s) not in the model's vocabulary", self.id, oov.len());
        }
        self.counted_ms = 0;
        Ok(Utterance { call: Box::new(call), listen, block: Vec::with_capacity(block_len(codec.rate()) * 2), started: Instant::now() })
    }

    /// Feeds the first `n` samples waiting (one block) on the pool.
    fn feed(&mut self, n: usize) -> Result<(), String> {
        let Some(mut u) = self.utterance.take() else { return Ok(()) };
        let bytes: Vec<u8> = u.block.drain(..n).flat_map(i16::to_le_bytes).collect();
        let received = Instant::now();
        let call = u.call;
        let run = self.sh.pool.run(&mut self.usage, move || {
            let mut call = call;
            let r = call.audio(&bytes);
            (call, r)
        });
        let Some(((call, r), queued)) = run else {
            self.sh.warm.note_discarded();
            return Err("decoding panicked".into());
        };
        u.call = call;
        self.sh.stats.record(received.elapsed(), queued);
        let ms = u.call.samples * 1000 / u64::from(u.call.rate.max(1));
        self.sh.stats.audio_ms.fetch_add(ms.saturating_sub(self.counted_ms), Ordering::Relaxed);
        self.counted_ms = ms;
        if let Err(e) = r {
            self.utterance = Some(u);
            return Err(e.to_string());
        }
        self.utterance = Some(u);
        Ok(())
    }

    /// The utterance ended: its results (none for no input) are pushed to Asterisk.
    fn end_utterance(&mut self, reason: EndReason) -> Result<(), String> {
        let Some(u) = self.utterance.take() else { return Ok(()) };
        let heard_for = u.started.elapsed();
        let results = if reason == EndReason::NoInput {
            self.abandon(u);
            Vec::new()
        } else {
            let json = self.finish(u)?;
            self.results_of(&json)
        };
        log_line!(
            "aeap {}: {reason:?} after {:.1} s; {} result(s){}",
            self.id,
            heard_for.as_secs_f64(),
            results.len(),
            results.first().map(|r| format!(", score {}", r.score)).unwrap_or_default()
        );
        self.results = results;
        self.pushed += 1;
        let push_id = format!("asr-bridge-{}-{}", self.id, self.pushed);
        let request = wire::results_request(&push_id, &self.results);
        self.send(request)
    }

    /// Feeds the audio left, takes the final result, gives the recognizer back.
    fn finish(&mut self, u: Utterance) -> Result<String, String> {
        let Utterance { call, block, .. } = u;
        let rest: Vec<u8> = block.iter().flat_map(|s| s.to_le_bytes()).collect();
        let run = self.sh.pool.run(&mut self.usage, move || {
            let mut call = call;
            let r = if rest.is_empty() { Ok(()) } else { call.audio(&rest) }.and_then(|()| call.finish());
            (call, r)
        });
        let Some(((call, r), _)) = run else {
            self.sh.warm.note_discarded();
            return Err("decoding panicked".into());
        };
        let json = r.map_err(|e| e.to_string())?;
        retire(self.sh, call.into_warm());
        Ok(json)
    }

    /// An utterance given up (a key, no input, the client gone): its recognizer ends the
    /// utterance on the pool and goes back warm.
    fn abandon(&mut self, u: Utterance) {
        super::recycle(self.sh, u.call);
    }

    /// libvosk's final JSON as AEAP results: the best text with its mean word confidence, or
    /// with `results_type=nbest` each alternative with its share of the n-best list (best 0,
    /// 1, ..); scores 0-1000. No text: no result.
    fn results_of(&self, json: &str) -> Vec<SpeechResult> {
        let mut t = Transcript::default();
        if let Some(seg) = serde_json::from_str(json).ok().as_ref().and_then(Segment::from_reply) {
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

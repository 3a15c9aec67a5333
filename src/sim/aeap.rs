//! A simulated Asterisk speech object over AEAP (`res_speech_aeap` with `res_aeap`'s WebSocket
//! transport), for the tests and the bench: what Asterisk does, from its source
//! (see [`crate::serve::aeap`] for the quotes):
//!
//! - connects within [`CONNECT_TIMEOUT`] (2 s, `CONNECTION_TIMEOUT 2000`), asking for the
//!   subprotocol `speech_to_text`; refuses a response that offers any WebSocket extension or
//!   another subprotocol;
//! - sends `setup` with `version` 0.1.0, one codec and the `@` params, and fails unless the
//!   response echoes that codec name first;
//! - waits [`RESPONSE_TIMEOUT`] (1000 ms) for each response, matched by its `id` (ids are
//!   unique per request); a response with `error_msg` fails the request;
//! - answers the engine's own requests: `set` with `results` first stores the results and ends
//!   the recognition; anything else gets "Unsupported and/or un-handled message";
//! - during SpeechBackground streams 20 ms frames in the codec (the caller's line: the WAV,
//!   then silence) until the engine pushes results.
//!
//! Runs on the caller's thread, blocking, every wait with a deadline.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

use crate::serve::aeap::codec::Codec;
use crate::serve::aeap::wire::SpeechResult;
use crate::serve::aeap::PROTOCOL;

/// res_speech_aeap's `CONNECTION_TIMEOUT`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(2000);
/// res_speech_aeap's transaction timeout (`.timeout = 1000`).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Why the simulated Asterisk gave up, as Asterisk would.
#[derive(Debug, thiserror::Error)]
pub enum AeapError {
    #[error("connect failure: {0}")]
    Connect(String),
    #[error("Extensions received, but not supported by client")]
    Extensions,
    #[error("subprotocol answered: {0:?}")]
    Protocol(Option<String>),
    #[error("setup codec '{0}' unsupported (the response's first codec is {1:?})")]
    Codec(&'static str, Option<String>),
    #[error("no response to {0} within 1000 ms")]
    Timeout(String),
    #[error("{request}: {error}")]
    Refused { request: String, error: String },
    #[error("closed: {0}")]
    Closed(String),
}

/// What one SpeechBackground gave.
#[derive(Debug, Clone)]
pub struct Background {
    /// The results as the engine sent them (array order).
    pub results: Vec<SpeechResult>,
    /// When streaming began and when the results came.
    pub started: Instant,
    pub done_at: Instant,
    /// Audio sent, in ms of the line (WAV and silence after it).
    pub sent_ms: f64,
}

impl Background {
    /// `${SPEECH(results)}`: how many results.
    pub fn count(&self) -> usize {
        self.results.len()
    }

    /// The result `${SPEECH_TEXT(arg)}` and `${SPEECH_SCORE(arg)}` read: res_speech_aeap
    /// prepends each entry (so the list is the array reversed) and `find_result` takes the
    /// N-th entry whose n-best index is B (`arg` = `N` or `B/N`).
    pub fn dialplan(&self, arg: &str) -> Option<&SpeechResult> {
        let (best, n) = match arg.split_once('/') {
            Some((b, n)) => (b.parse().ok()?, n.parse().ok()?),
            None => (0, arg.parse().ok()?),
        };
        self.results.iter().rev().filter(|r| r.best == best).nth(n)
    }
}

/// One speech object's connection.
pub struct AeapClient {
    ws: WebSocket<TcpStream>,
    codec: Codec,
    next: u64,
    /// Results pushed and not yet taken by a SpeechBackground.
    pushed: Option<Vec<SpeechResult>>,
}

impl AeapClient {
    /// `SpeechCreate`: connect to `addr` at `path`, then `setup` with `codec` and `params`.
    pub fn connect(addr: SocketAddr, path: &str, codec: Codec, params: &[(&str, &str)]) -> Result<AeapClient, AeapError> {
        let mut c = AeapClient::handshake(addr, path, codec)?;
        let params: serde_json::Map<String, Value> = params.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect();
        let reply = c.request("setup", json!({"version": "0.1.0", "codecs": [{"name": codec.name()}], "params": params}))?;
        let first = reply["codecs"][0]["name"].as_str().map(str::to_string);
        if first.as_deref() != Some(codec.name()) {
            return Err(AeapError::Codec(codec.name(), first));
        }
        Ok(c)
    }

    /// The WebSocket alone (no setup), checked as Asterisk's client checks it.
    pub fn handshake(addr: SocketAddr, path: &str, codec: Codec) -> Result<AeapClient, AeapError> {
        let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).map_err(|e| AeapError::Connect(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(CONNECT_TIMEOUT * 2)).map_err(|e| AeapError::Connect(e.to_string()))?;
        let mut req = format!("ws://{addr}{path}").into_client_request().map_err(|e| AeapError::Connect(e.to_string()))?;
        req.headers_mut().insert("Sec-WebSocket-Protocol", tungstenite::http::HeaderValue::from_static(PROTOCOL));
        let (ws, resp) = tungstenite::client::client(req, stream).map_err(|e| AeapError::Connect(e.to_string()))?;
        if resp.headers().contains_key("Sec-WebSocket-Extensions") {
            return Err(AeapError::Extensions);
        }
        let proto = resp.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
        if proto.as_deref() != Some(PROTOCOL) {
            return Err(AeapError::Protocol(proto));
        }
        Ok(AeapClient { ws, codec, next: 0, pushed: None })
    }

    /// Sends request `name` with `body` and waits for its response (1000 ms), answering the
    /// engine's requests meanwhile. The response's body, or why it failed.
    pub fn request(&mut self, name: &str, body: Value) -> Result<Value, AeapError> {
        self.next += 1;
        let id = format!("sim-{}-{}", std::process::id(), self.next);
        let mut msg = json!({"request": name, "id": id});
        if let (Some(m), Value::Object(b)) = (msg.as_object_mut(), body) {
            m.extend(b);
        }
        self.send_text(&msg.to_string())?;
        let until = Instant::now() + RESPONSE_TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AeapError::Timeout(name.into()));
            }
            let Some(v) = self.next_message(left)? else { continue };
            if v.get("response").is_some() && v["id"] == id.as_str() {
                if let Some(e) = v["error_msg"].as_str() {
                    return Err(AeapError::Refused { request: name.into(), error: e.into() });
                }
                return Ok(v);
            }
        }
    }

    /// `Set(SPEECH_ENGINE(name)=value)`, `SPEECH_RESULTS_TYPE`, a DTMF key.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), AeapError> {
        self.request("set", json!({"params": {name: value}})).map(|_| ())
    }

    /// `get` of one name: the first value of the response's params.
    pub fn get(&mut self, name: &str) -> Result<Value, AeapError> {
        let v = self.request("get", json!({"params": [name]}))?;
        Ok(v["params"][name].clone())
    }

    /// A raw text frame (a test's malformed request).
    pub fn send_text(&mut self, text: &str) -> Result<(), AeapError> {
        self.ws.send(Message::text(text)).map_err(|e| AeapError::Closed(e.to_string()))
    }

    /// The next text message within `wait` (None on timeout), after answering it if it is the
    /// engine's request.
    pub fn next_message(&mut self, wait: Duration) -> Result<Option<Value>, AeapError> {
        let _ = self.ws.get_ref().set_read_timeout(Some(wait.max(Duration::from_millis(1))));
        let msg = match self.ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(None),
            Err(e) => return Err(AeapError::Closed(e.to_string())),
        };
        let Message::Text(t) = msg else {
            return match msg {
                Message::Close(f) => Err(AeapError::Closed(format!("{f:?}"))),
                _ => Ok(None),
            };
        };
        let v: Value = serde_json::from_str(t.as_str()).map_err(|e| AeapError::Closed(format!("not JSON from the engine: {e}")))?;
        if let Some(name) = v.get("request").and_then(Value::as_str) {
            self.engine_request(name, &v)?;
        }
        Ok(Some(v))
    }

    /// res_speech_aeap's `handle_request_set`: results first, else an error response.
    fn engine_request(&mut self, name: &str, v: &Value) -> Result<(), AeapError> {
        let id = v["id"].as_str().unwrap_or_default();
        let results = v["params"].as_object().and_then(|p| p.iter().next()).filter(|(k, _)| *k == "results").map(|(_, r)| r.clone());
        let reply = match (name, results) {
            ("set", Some(r)) => match serde_json::from_value::<Vec<SpeechResult>>(r) {
                Ok(list) => {
                    self.pushed = Some(list);
                    json!({"response": "set", "id": id})
                }
                Err(_) => json!({"response": "set", "id": id, "error_msg": "unable to handle results"}),
            },
            ("set", None) => json!({"response": "set", "id": id, "error_msg": "can only set 'results'"}),
            _ => json!({"response": name, "id": id, "error_msg": "Unsupported and/or un-handled message"}),
        };
        self.send_text(&reply.to_string())
    }

    /// `SpeechBackground` on `samples` (at the codec's rate): 20 ms frames at `speed` times real
    /// time, the line's silence after them, until the engine pushes results or `deadline`.
    pub fn background(&mut self, samples: &[i16], speed: f64, deadline: Duration) -> Result<Background, AeapError> {
        self.pushed = None;
        let frame = (self.codec.rate() / 50) as usize;
        let silence = vec![0i16; frame];
        let started = Instant::now();
        let mut sent = 0usize;
        loop {
            let chunk = samples.get(sent * frame..((sent + 1) * frame).min(samples.len())).filter(|c| !c.is_empty()).unwrap_or(&silence);
            let bytes = self.codec.encode(chunk);
            self.ws.send(Message::binary(bytes)).map_err(|e| AeapError::Closed(e.to_string()))?;
            sent += 1;
            let due = started + Duration::from_secs_f64(sent as f64 * 0.02 / speed.max(0.01));
            loop {
                if let Some(results) = self.pushed.take() {
                    return Ok(Background { results, started, done_at: Instant::now(), sent_ms: sent as f64 * 20.0 });
                }
                let left = due.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.next_message(left)?;
            }
            if started.elapsed() > deadline {
                return Err(AeapError::Timeout(format!("results within {deadline:?} of SpeechBackground")));
            }
        }
    }

    /// Streams `ms` of `samples` (or the line's silence) and returns without waiting for
    /// results (a caller who hangs up mid-utterance; a key pressed mid-utterance).
    pub fn stream(&mut self, samples: &[i16], ms: u32) -> Result<(), AeapError> {
        let frame = (self.codec.rate() / 50) as usize;
        for i in 0..(ms / 20) as usize {
            let chunk = samples.get(i * frame..((i + 1) * frame).min(samples.len())).unwrap_or(&[]);
            let chunk: Vec<i16> = if chunk.is_empty() { vec![0; frame] } else { chunk.to_vec() };
            self.ws.send(Message::binary(self.codec.encode(&chunk))).map_err(|e| AeapError::Closed(e.to_string()))?;
        }
        self.ws.flush().map_err(|e| AeapError::Closed(e.to_string()))
    }

    /// Results pushed since the last SpeechBackground, if any (taken).
    pub fn take_pushed(&mut self) -> Option<Vec<SpeechResult>> {
        self.pushed.take()
    }

    /// `SpeechDestroy`: a normal close.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }

    /// The caller hangs up mid-utterance: the socket is shut without a close frame.
    pub fn hang_up(self) {
        let _ = self.ws.get_ref().shutdown(std::net::Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str, best: i64) -> SpeechResult {
        SpeechResult { text: text.into(), score: 500, grammar: "free".into(), best }
    }

    /// `SPEECH_TEXT` reads the list res_speech_aeap builds by prepending.
    #[test]
    fn dialplan_reads_results_as_asterisk_lists_them() {
        let b = Background { results: vec![r("one", 0), r("two", 1), r("three", 2)], started: Instant::now(), done_at: Instant::now(), sent_ms: 0.0 };
        assert_eq!(b.dialplan("0").unwrap().text, "one");
        assert_eq!(b.dialplan("1/0").unwrap().text, "two");
        assert_eq!(b.dialplan("2/0").unwrap().text, "three");
        assert!(b.dialplan("1").is_none());
        let b = Background { results: vec![r("a", 0), r("b", 0)], ..b };
        assert_eq!(b.dialplan("0").unwrap().text, "b", "the last entry sent is the first listed");
    }
}

//! vosk-server's WebSocket protocol as both sides of this project speak it: the client
//! ([`crate::asr::remote`]) and the resident server ([`crate::serve`]). Pure data, no I/O;
//! runs on whichever thread holds the connection.
//!
//! - the handshake: the headers `asr_bridge serve` adds to its response ([`IDLE_HEADER`],
//!   [`PAUSE_HEADER`]) and to a refusal ([`BUSY_HEADER`]), and the shared secret a client
//!   presents ([`Token`]);
//! - the client's text messages ([`ClientMessage`]): `{"config": ..}` ([`Config`]),
//!   `{"eof" : 1}`, `{"reset" : 1}` and the `{"pause" : 1}` extension; audio goes as binary
//!   messages of 16-bit little-endian samples;
//! - the server's replies ([`Reply`]): a partial transcript, or a closed segment ([`Segment`]:
//!   words with their confidence and times, or n-best alternatives).
//!
//! The server forwards libvosk's own JSON for its replies, byte for byte as vosk-server does
//! ([`crate::asr::vosk_raw`]); the types here are for parsing, and for the few messages the
//! server builds itself ([`NO_PARTIAL`], [`NO_RESULT`], [`MergedResult`]). Parsing takes any
//! JSON spacing: libvosk's pretty form as well as the compact one.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The response header in which `asr_bridge serve` says after how long a silent client is
/// dropped (its `--idle-timeout`, in ms), so the client can ping in time. Only `asr_bridge
/// serve` sends it.
pub const IDLE_HEADER: &str = "x-asr-bridge-idle-timeout-ms";

/// The response header (value [`HEADER_ON`]) with which `asr_bridge serve` marks its HTTP 503
/// as "busy" (at `--max-calls`, or the client holds its `--max-calls-per-client` share; not
/// while draining: that server is going away). Any other refusal, a 503 without it included (a
/// load balancer's "no server is available"), means "unreachable".
pub const BUSY_HEADER: &str = "x-asr-bridge-busy";

/// The response header (value [`HEADER_ON`]) with which `asr_bridge serve` says it takes
/// [`ClientMessage::Pause`]: a capability of its own, so a client never sends a pause to a
/// server that predates it (an on-demand server of the last release can outlive an upgrade by
/// its idle exit).
pub const PAUSE_HEADER: &str = "x-asr-bridge-pause";

/// The value of [`BUSY_HEADER`] and [`PAUSE_HEADER`].
pub const HEADER_ON: &str = "1";

/// The reply to audio that closed no segment, when partials are off or nothing can be
/// recognized (libvosk's own bytes).
pub const NO_PARTIAL: &str = "{\n  \"partial\" : \"\"\n}";

/// The final result of a call that can recognize nothing (libvosk's own bytes).
pub const NO_RESULT: &str = "{\n  \"text\" : \"\"\n}";

/// The shared secret a client presents in its handshake (`Authorization: Bearer TOKEN`, or
/// HTTP Basic with the token as the password) and a server compares. Its `Debug` form does not
/// show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

/// Shortest token a TCP listener takes: 128 bits as hex.
pub const MIN_LISTENER_TOKEN: usize = 32;

impl Token {
    /// A token from its text (a file's contents, a variable): surrounding whitespace is
    /// dropped; what is left must be non-empty printable ASCII without spaces (it goes into an
    /// HTTP header). The error completes "the token ...".
    ///
    /// ```
    /// use asr_bridge::protocol::Token;
    /// assert!(Token::new(" s3cret\n").is_ok());
    /// assert_eq!(Token::new("\n").unwrap_err(), "is empty");
    /// assert!(Token::new("two words").is_err());
    /// assert_eq!(format!("{:?}", Token::new("s3cret").unwrap()), "Token(..)");
    /// ```
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is empty".into());
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".into());
        }
        Ok(Token(t.to_string()))
    }

    /// A token a server guards a TCP listener with: [`Token::new`]'s rule, and long enough
    /// to resist guessing ([`MIN_LISTENER_TOKEN`]). `from` names where it came from.
    ///
    /// ```
    /// use asr_bridge::protocol::Token;
    /// assert!(Token::for_listener(&"ab".repeat(16), "t").is_ok());
    /// assert!(Token::for_listener("s3cret", "t").unwrap_err().contains("at least 32"));
    /// ```
    pub fn for_listener(text: &str, from: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.len() < MIN_LISTENER_TOKEN {
            return Err(format!("{from}: the token has {} characters, at least {MIN_LISTENER_TOKEN} are needed (e.g. `openssl rand -hex 32`)", t.len()));
        }
        Token::new(t).map_err(|why| format!("{from}: the token {why}"))
    }

    /// The token itself (for the `Authorization` header).
    pub fn secret(&self) -> &str {
        &self.0
    }

    /// Whether `presented` is this token, compared in time independent of where the first
    /// difference is.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        let mut diff = a.len() ^ b.len();
        for (i, x) in a.iter().enumerate() {
            diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
        }
        diff == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The settings of a call (`{"config": {..}}`), sent before the first audio; every key is
/// optional. Parsed as `asr_bridge serve` takes them: unknown keys (vosk-server's `model`, ...)
/// are ignored, a bad value is refused with a reason; flags may be numbers or booleans. The
/// fields are in the order they go on the wire.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// N-best size; 0 is off.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "whole_number")]
    pub max_alternatives: Option<u64>,
    /// `partial_results: 0` (an extension; vosk-server ignores it): the client does not want
    /// partial transcripts.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "flag_out", deserialize_with = "flag")]
    pub partial_results: Option<bool>,
    /// The phrases the call may say (a grammar); absent: free speech.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "phrases")]
    pub phrase_list: Option<Vec<String>>,
    /// The audio's rate, 4000-48000 Hz (a number; rounded).
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "sample_rate")]
    pub sample_rate: Option<u32>,
    /// Word times and confidences in results.
    #[serde(default, skip_serializing_if = "Option::is_none", serialize_with = "flag_out", deserialize_with = "flag")]
    pub words: Option<bool>,
}

fn sample_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let r = Value::deserialize(d)?.as_f64().ok_or_else(|| D::Error::custom("sample_rate must be a number"))?;
    if !(4000.0..=48000.0).contains(&r) {
        return Err(D::Error::custom(format!("sample_rate {r} outside 4000-48000")));
    }
    Ok(Some(r.round() as u32))
}

fn phrases<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let bad = || D::Error::custom("phrase_list must be an array of strings");
    let v = Value::deserialize(d)?;
    let list = v.as_array().ok_or_else(bad)?;
    list.iter().map(|p| p.as_str().map(str::to_string).ok_or_else(bad)).collect::<Result<_, _>>().map(Some)
}

fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Value::deserialize(d)?.as_u64().map(Some).ok_or_else(|| D::Error::custom("max_alternatives must be a whole number"))
}

/// A flag: `true`, or a non-zero whole number; anything else is off.
fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(Some(v.as_bool().unwrap_or_else(|| v.as_i64().is_some_and(|n| n != 0))))
}

/// A flag goes on the wire as 0 or 1, as vosk-server's clients send it.
fn flag_out<S: Serializer>(v: &Option<bool>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_u8(u8::from(*b)),
        None => s.serialize_none(),
    }
}

/// A text message of the client. `Display` gives its wire form: vosk-server compares `eof`
/// and `reset` as exact strings, so those are sent exactly as its own clients send them.
///
/// ```
/// use asr_bridge::protocol::{ClientMessage, Config};
/// assert_eq!(ClientMessage::Eof.to_string(), r#"{"eof" : 1}"#);
/// assert_eq!(ClientMessage::Pause.to_string(), r#"{"pause" : 1}"#);
/// let c = Config { sample_rate: Some(8000), words: Some(true), max_alternatives: Some(0), partial_results: Some(false), ..Config::default() };
/// assert_eq!(
///     ClientMessage::Config(c).to_string(),
///     r#"{"config":{"max_alternatives":0,"partial_results":0,"sample_rate":8000,"words":1}}"#
/// );
/// assert_eq!(ClientMessage::parse(r#"{"eof":1}"#), Ok(ClientMessage::Eof));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    /// The call's settings.
    Config(Config),
    /// Reply the final result, then close.
    Eof,
    /// Reply the final result and go on.
    Reset,
    /// An extension, sent only to a server that said [`PAUSE_HEADER`]: no audio follows for a
    /// while (a prompt without barge-in), only pings; the next audio ends the pause. No reply.
    Pause,
}

/// Why a text message is not one a server takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadMessage {
    /// A config message with a bad value: the reason.
    Config(String),
    /// Not JSON, or none of the messages.
    Unsupported,
}

impl ClientMessage {
    /// A text message as a server takes it (vosk-server compares the exact strings; JSON is
    /// accepted here with any spacing, and a flag as a non-zero number or `true`). A message
    /// with `config` is a config message whatever else it holds.
    pub fn parse(text: &str) -> Result<ClientMessage, BadMessage> {
        let Ok(Value::Object(m)) = serde_json::from_str::<Value>(text) else { return Err(BadMessage::Unsupported) };
        if let Some(c) = m.get("config") {
            if !c.is_object() {
                return Err(BadMessage::Config("config must be an object".into()));
            }
            return Config::deserialize(c).map(ClientMessage::Config).map_err(|e| BadMessage::Config(e.to_string()));
        }
        let truthy = |k: &str| m.get(k).is_some_and(|x| x.as_i64().is_some_and(|n| n != 0) || x.as_bool() == Some(true));
        if truthy("eof") {
            Ok(ClientMessage::Eof)
        } else if truthy("reset") {
            Ok(ClientMessage::Reset)
        } else if truthy("pause") {
            Ok(ClientMessage::Pause)
        } else {
            Err(BadMessage::Unsupported)
        }
    }
}

impl std::fmt::Display for ClientMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        #[derive(Serialize)]
        struct Wire<'a> {
            config: &'a Config,
        }
        match self {
            ClientMessage::Config(config) => f.write_str(&serde_json::to_string(&Wire { config }).map_err(|_| std::fmt::Error)?),
            ClientMessage::Eof => f.write_str(r#"{"eof" : 1}"#),
            ClientMessage::Reset => f.write_str(r#"{"reset" : 1}"#),
            ClientMessage::Pause => f.write_str(r#"{"pause" : 1}"#),
        }
    }
}

/// One recognized word of a [`Segment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordInfo {
    pub word: String,
    /// Kaldi's MBR posterior for the word, 0-1.
    pub conf: f32,
    /// Seconds from the start of the audio fed.
    pub start: f32,
    pub end: f32,
}

/// One closed segment as libvosk reports it, and as vosk-server sends it (`result` JSON):
/// either words and text, or n-best alternatives. Both the in-process engine and the served
/// client turn results into this, so one function ([`crate::asr::Transcript::push`])
/// assembles transcripts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Segment {
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub result: Vec<WordInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alternatives: Option<Vec<SegmentAlternative>>,
}

/// One n-best entry of a [`Segment`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentAlternative {
    pub confidence: f32,
    #[serde(default)]
    pub text: String,
}

/// A reply of the server (to audio, `eof` or `reset`).
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `{"partial": ..}`: the transcript so far of a segment still open.
    Partial(String),
    /// `{"text": .., "result": [..]}` or `{"alternatives": [..]}`: a closed segment.
    Result(Segment),
    /// Any other JSON (a result whose fields do not parse included).
    Other(Value),
}

impl Reply {
    /// A reply from its text; an error only when it is not JSON.
    ///
    /// ```
    /// use asr_bridge::protocol::{Reply, NO_PARTIAL};
    /// assert_eq!(Reply::parse(NO_PARTIAL).unwrap(), Reply::Partial(String::new()));
    /// let r = Reply::parse(r#"{"result":[{"conf":1.0,"end":0.5,"start":0.1,"word":"yes"}],"text":"yes"}"#).unwrap();
    /// assert_eq!(r.into_segment().unwrap().result[0].word, "yes");
    /// ```
    pub fn parse(text: &str) -> Result<Reply, serde_json::Error> {
        let v: Value = serde_json::from_str(text)?;
        Ok(match &v {
            Value::Object(o) if o.contains_key("text") || o.contains_key("alternatives") => match Segment::deserialize(&v) {
                Ok(s) => Reply::Result(s),
                Err(_) => Reply::Other(v),
            },
            Value::Object(o) => match o.get("partial").and_then(Value::as_str) {
                Some(p) => Reply::Partial(p.to_string()),
                None => Reply::Other(v),
            },
            _ => Reply::Other(v),
        })
    }

    /// The closed segment, when this is one.
    pub fn into_segment(self) -> Option<Segment> {
        match self {
            Reply::Result(s) => Some(s),
            _ => None,
        }
    }
}

impl std::fmt::Display for Reply {
    /// Compact JSON (for a log line or an error).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reply::Partial(p) => write!(f, "{}", serde_json::json!({ "partial": p })),
            Reply::Result(s) => f.write_str(&serde_json::to_string(s).map_err(|_| std::fmt::Error)?),
            Reply::Other(v) => write!(f, "{v}"),
        }
    }
}

/// The reply the server builds when one message closed several segments: their texts joined,
/// their words (as libvosk wrote them) appended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MergedResult {
    pub result: Vec<Value>,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_messages() {
        assert_eq!(ClientMessage::parse(r#"{"eof" : 1}"#), Ok(ClientMessage::Eof));
        assert_eq!(ClientMessage::parse(r#"{"eof":1}"#), Ok(ClientMessage::Eof));
        assert_eq!(ClientMessage::parse(r#"{"eof":true}"#), Ok(ClientMessage::Eof));
        assert_eq!(ClientMessage::parse(r#"{"reset" : 1}"#), Ok(ClientMessage::Reset));
        assert_eq!(ClientMessage::parse(r#"{"pause" : 1}"#), Ok(ClientMessage::Pause));
        assert_eq!(ClientMessage::parse(r#"{"eof" : 0}"#), Err(BadMessage::Unsupported));
        assert_eq!(ClientMessage::parse("hello"), Err(BadMessage::Unsupported));
        assert_eq!(ClientMessage::parse("[1]"), Err(BadMessage::Unsupported));
        assert!(matches!(ClientMessage::parse(r#"{"config": {"sample_rate": 8000}}"#), Ok(ClientMessage::Config(_))));
        for m in [ClientMessage::Eof, ClientMessage::Reset, ClientMessage::Pause] {
            assert_eq!(ClientMessage::parse(&m.to_string()), Ok(m.clone()), "{m}");
        }
    }

    fn config(v: Value) -> Result<Config, String> {
        match ClientMessage::parse(&json!({ "config": v }).to_string()) {
            Ok(ClientMessage::Config(c)) => Ok(c),
            Err(BadMessage::Config(e)) => Err(e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_is_checked() {
        let c = config(json!({"sample_rate": 16000.0, "phrase_list": ["Yes!", "no"], "words": 0, "max_alternatives": 3, "model": "x"})).unwrap();
        assert_eq!(c.sample_rate, Some(16000));
        assert_eq!(c.phrase_list, Some(vec!["Yes!".to_string(), "no".to_string()]));
        assert_eq!(c.words, Some(false));
        assert_eq!(c.max_alternatives, Some(3));
        assert_eq!(c.partial_results, None);
        assert_eq!(config(json!({"partial_results": false})).unwrap().partial_results, Some(false));
        assert_eq!(config(json!({"words": "yes"})).unwrap().words, Some(false), "not a flag: off");
        assert_eq!(config(json!({"words": 2})).unwrap().words, Some(true));
        assert_eq!(config(json!({"sample_rate": 100})).unwrap_err(), "sample_rate 100 outside 4000-48000");
        assert_eq!(config(json!({"sample_rate": "8000"})).unwrap_err(), "sample_rate must be a number");
        assert_eq!(config(json!({"sample_rate": null})).unwrap_err(), "sample_rate must be a number");
        assert_eq!(config(json!({"phrase_list": "yes"})).unwrap_err(), "phrase_list must be an array of strings");
        assert_eq!(config(json!({"phrase_list": [1, 2]})).unwrap_err(), "phrase_list must be an array of strings");
        assert_eq!(config(json!({"max_alternatives": -1})).unwrap_err(), "max_alternatives must be a whole number");
        assert_eq!(config(json!("x")).unwrap_err(), "config must be an object");
        assert_eq!(config(json!(null)).unwrap_err(), "config must be an object");
    }

    #[test]
    fn a_config_round_trips() {
        let c = Config {
            max_alternatives: Some(2),
            partial_results: Some(false),
            phrase_list: Some(vec!["yes".into()]),
            sample_rate: Some(8000),
            words: Some(true),
        };
        let wire = ClientMessage::Config(c.clone()).to_string();
        assert_eq!(wire, r#"{"config":{"max_alternatives":2,"partial_results":0,"phrase_list":["yes"],"sample_rate":8000,"words":1}}"#);
        assert_eq!(ClientMessage::parse(&wire), Ok(ClientMessage::Config(c)));
    }

    #[test]
    fn replies_compact_and_pretty() {
        let pretty = "{\n  \"result\" : [{\n      \"conf\" : 0.873122,\n      \"end\" : 1.23,\n      \"start\" : 0.9,\n      \"word\" : \"yes\"\n    }],\n  \"text\" : \"yes\"\n}";
        let compact = r#"{"result":[{"conf":0.873122,"end":1.23,"start":0.9,"word":"yes"}],"text":"yes"}"#;
        let a = Reply::parse(pretty).unwrap();
        assert_eq!(a, Reply::parse(compact).unwrap());
        let seg = a.into_segment().unwrap();
        assert_eq!((seg.text.as_str(), seg.result.len(), seg.result[0].conf), ("yes", 1, 0.873122));
        let alts = Reply::parse(r#"{"alternatives":[{"confidence":412.5,"text":"yes"},{"confidence":400.1,"text":"no"}]}"#).unwrap();
        assert_eq!(alts.into_segment().unwrap().alternatives.unwrap().len(), 2);
        assert_eq!(Reply::parse(NO_RESULT).unwrap(), Reply::Result(Segment::default()));
        assert_eq!(Reply::parse(NO_PARTIAL).unwrap().to_string(), r#"{"partial":""}"#);
        assert_eq!(Reply::parse(r#"{"partial" : "ye"}"#).unwrap(), Reply::Partial("ye".into()));
        assert!(matches!(Reply::parse(r#"{"text": 5}"#).unwrap(), Reply::Other(_)), "a result whose fields do not parse");
        assert!(matches!(Reply::parse("[]").unwrap(), Reply::Other(_)));
        assert!(Reply::parse("nope").is_err());
    }

    #[test]
    fn listener_tokens() {
        const T: &str = "0123456789abcdef0123456789abcdef";
        assert!(Token::for_listener(T, "t").is_ok());
        assert_eq!(Token::for_listener(&format!(" {T}\n"), "t").unwrap(), Token::new(T).unwrap(), "trimmed");
        assert!(Token::for_listener("short", "t").unwrap_err().contains("at least 32"));
        assert!(Token::for_listener(&format!("{T} {T}"), "t").unwrap_err().starts_with("t: the token must be"));
        assert_eq!(format!("{:?}", Token::for_listener(T, "t").unwrap()), "Token(..)");
        let t = Token::new(T).unwrap();
        assert!(t.matches(T));
        assert!(!t.matches(&format!("{T}0")));
        assert!(!t.matches("0123456789abcdef0123456789abcdeX"));
        assert!(!t.matches(""));
    }
}

//! One served call: vosk-server's message protocol ([`crate::protocol`]) over one WebSocket, on
//! the shared model.
//!
//! - text `{"config": {"sample_rate", "phrase_list", "words", "max_alternatives"}}`: settings,
//!   taken until the first audio (no reply, as vosk-server);
//! - binary: 16-bit little-endian audio; reply `{"partial": ..}`, or `{"text": .., "result": ..}`
//!   when libvosk's endpoint closed a segment;
//! - text `{"eof" : 1}`: reply the final result, then close (code 1000); `{"reset" : 1}`: reply
//!   the final result and go on;
//! - text `{"pause" : 1}` (an extension, sent only by the bridge to `asr_bridge serve`): the
//!   client stops sending audio on purpose (a prompt without barge-in) and keeps the call with
//!   pings; no reply.
//!
//! Replies are libvosk's own JSON, byte for byte as vosk-server sends it
//! ([`crate::asr::vosk_raw`]), for messages of up to [`WHOLE_SECONDS`] of audio, which are fed
//! whole as vosk-server feeds them (its clients send 0.1-0.5 s). A longer message is decoded a
//! block (100 ms) at a time, each block its own job on the worker pool, so one client's long
//! message cannot hold a worker while other calls wait; segments its blocks close are merged
//! into one reply (splitting changes libvosk's confidences in the third decimal, measured:
//! those replies are not byte-identical to vosk-server's). A
//! grammar whose words are all unknown to the model decodes nothing and answers empty results,
//! as vosk-server does (libvosk crashes on an empty grammar, so no recognizer is built).
//!
//! The recognizer is built by the same [`Engine`] the in-process bridge uses (vocabulary check,
//! grammar JSON guarded against libvosk's crashes, resampling when the model needs it), so a
//! call fed the same blocks decodes the same way.

use super::meter::net_bytes;
use super::warm::{Warm, WarmKey, WarmPool};

use serde_json::Value;
use vosk::Model;

use crate::asr::engine::{block_len, Engine, EngineOptions};
use crate::asr::grammar;
use crate::asr::{AsrError, ModelInfo};
use crate::protocol::{Config, MergedResult, NO_PARTIAL, NO_RESULT};

/// Most phrases in a `phrase_list` (a menu has tens; a directory of names, hundreds).
pub(crate) const MAX_PHRASES: usize = 4096;
/// Longest phrase, in bytes.
pub(crate) const MAX_PHRASE_BYTES: usize = 256;
/// Audio in a message fed to libvosk in one piece; a longer message is fed a block at a time.
pub(crate) const WHOLE_SECONDS: f64 = 0.5;

/// Settings from the config message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CallConfig {
    pub sample_rate: u32,
    pub phrase_list: Option<Vec<String>>,
    pub words: bool,
    pub max_alternatives: u16,
    /// `partial_results: 0` (an extension; vosk-server ignores it): the client does not want
    /// partial transcripts, so replies to audio that closes no segment are `{"partial" : ""}`
    /// without asking libvosk, whose partial result traces back the whole utterance each time.
    pub partials: bool,
}

impl CallConfig {
    pub(crate) fn new(default_rate: u32) -> CallConfig {
        CallConfig { sample_rate: default_rate, phrase_list: None, words: true, max_alternatives: 0, partials: true }
    }

    /// Applies a config message (parsed by [`crate::protocol::ClientMessage::parse`], which refuses bad values
    /// with a reason): the phrase list is checked against the caps, normalized and
    /// de-duplicated; more than 100 alternatives are 100.
    pub(crate) fn apply(&mut self, c: &Config) -> Result<(), String> {
        if let Some(r) = c.sample_rate {
            self.sample_rate = r;
        }
        if let Some(p) = &c.phrase_list {
            self.phrase_list = Some(phrase_list(p)?);
        }
        if let Some(w) = c.words {
            self.words = w;
        }
        if let Some(p) = c.partial_results {
            self.partials = p;
        }
        if let Some(n) = c.max_alternatives {
            self.max_alternatives = n.min(100) as u16;
        }
        Ok(())
    }
}

/// A `phrase_list`: normalized, de-duplicated in order (linear time), within the caps.
fn phrase_list(list: &[String]) -> Result<Vec<String>, String> {
    if list.len() > MAX_PHRASES {
        return Err(format!("phrase_list has {} phrases; at most {MAX_PHRASES}", list.len()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut phrases = Vec::new();
    for p in list {
        if p.len() > MAX_PHRASE_BYTES {
            return Err(format!("a phrase of {} bytes; at most {MAX_PHRASE_BYTES}", p.len()));
        }
        let n = grammar::normalize(p);
        if !n.is_empty() && seen.insert(n.clone()) {
            phrases.push(n);
        }
    }
    Ok(phrases)
}

/// One call's recognizer and its audio accumulator.
pub(crate) struct ServedCall {
    /// None: the call's grammar has no word the model knows (see the module docs).
    engine: Option<Engine>,
    /// Samples waiting for a whole block (only when the engine resamples, whose resampler takes
    /// fixed blocks; otherwise each message is fed as it came, as vosk-server does).
    pending: Vec<i16>,
    block: usize,
    odd: Option<u8>,
    /// Segments closed since the last reply (libvosk's JSON).
    closed: Vec<String>,
    /// Samples received.
    pub samples: u64,
    pub rate: u32,
    partials: bool,
    key: WarmKey,
    oov: Vec<String>,
    uses: u32,
    /// What the recognizer holds in memory, bytes ([`super::meter`]).
    bytes: i64,
    /// libvosk reported an error: not reused.
    broken: bool,
}

/// What becomes of a call's recognizer at the end of the call.
pub(crate) enum Afterlife {
    /// Clean: back to the warm pool.
    Warm(WarmKey, Box<Warm<Engine>>),
    /// Freed (audio left unfed, resampler state, an error).
    Discard,
    /// The call had none.
    None,
}

impl ServedCall {
    /// The call's recognizer: a warm one of its key from `warm`, or one built on the shared
    /// model. Also the grammar words the model does not know.
    pub(crate) fn open(model: &Model, info: &ModelInfo, cfg: &CallConfig, warm: &WarmPool<Engine>) -> Result<(ServedCall, Vec<String>), AsrError> {
        let key = WarmKey { rate: cfg.sample_rate, grammar: cfg.phrase_list.clone(), alternatives: cfg.max_alternatives, words: cfg.words };
        let (engine, oov, uses, bytes) = match warm.take(&key) {
            Some(w) => (Some(w.engine), w.oov, w.uses, w.bytes),
            None => {
                let (built, bytes) = net_bytes(|| Self::build(model, info, cfg));
                let (engine, oov) = built?;
                if engine.is_some() {
                    warm.note_built();
                }
                (engine, oov, 0, bytes)
            }
        };
        let block = block_len(cfg.sample_rate);
        let call = ServedCall {
            engine,
            pending: Vec::with_capacity(block * 2),
            block,
            odd: None,
            closed: Vec::new(),
            samples: 0,
            rate: cfg.sample_rate,
            partials: cfg.partials,
            key,
            oov: oov.clone(),
            uses,
            bytes,
            broken: false,
        };
        Ok((call, oov))
    }

    /// What becomes of the recognizer after the call's final result: back to the pool unless it
    /// cannot be reused cleanly (audio left unfed, the bridge resamples for it: filter state, or
    /// libvosk failed).
    pub(crate) fn into_warm(self) -> Afterlife {
        let Some(engine) = self.engine else { return Afterlife::None };
        let clean = self.pending.is_empty() && self.odd.is_none() && !engine.resampling() && !self.broken;
        if clean {
            Afterlife::Warm(self.key, Box::new(Warm::new(engine, self.oov, self.uses, self.bytes)))
        } else {
            Afterlife::Discard
        }
    }

    /// A call cut off mid-utterance (client gone, idle, closed without eof): takes libvosk's
    /// final result and drops it, which ends the utterance as `eof` would (the next accept
    /// starts a new feature pipeline: nothing of this caller's voice carries over), so the
    /// recognizer can still go back warm. Audio waiting for a whole block is dropped unfed.
    pub(crate) fn abandon(mut self) -> Afterlife {
        if self.engine.is_some() && !self.broken {
            self.pending.clear();
            self.odd = None;
            let _ = self.metered(|e| Ok(e.result_json(true)));
        }
        self.into_warm()
    }

    /// Runs libvosk work on the recognizer, counting what it leaves allocated; an error
    /// marks the recognizer broken.
    fn metered<T>(&mut self, f: impl FnOnce(&mut Engine) -> Result<T, AsrError>) -> Result<T, AsrError> {
        let Some(engine) = self.engine.as_mut() else { return Err(AsrError::Panic("no recognizer".into())) };
        let (r, grew) = net_bytes(|| f(engine));
        self.bytes += grew;
        self.broken |= r.is_err();
        r
    }

    /// Builds the recognizer on the shared model; None when the grammar has no known word.
    /// Nothing here locks the model: recognizers are built side by side, as vosk-server does.
    fn build(model: &Model, info: &ModelInfo, cfg: &CallConfig) -> Result<(Option<Engine>, Vec<String>), AsrError> {
        let mut opts = EngineOptions { grammar: None, alternatives: cfg.max_alternatives };
        let mut oov = Vec::new();
        if let Some(phrases) = &cfg.phrase_list {
            let (kept, unknown) = grammar::check_vocabulary(model, phrases);
            oov = unknown;
            if kept.is_empty() {
                return Ok((None, oov));
            }
            if info.runtime_grammar {
                grammar::vosk_grammar_args(&kept)?;
            }
            opts.grammar = Some(kept);
        }
        let mut engine = Engine::new(model, info, cfg.sample_rate, &opts)?;
        if !cfg.words {
            engine.set_words(false);
        }
        Ok((Some(engine), oov))
    }

    /// The bytes of one decode job of a long message: a block.
    pub(crate) fn piece_bytes(&self) -> usize {
        self.block * 2
    }

    /// The most bytes of a message fed whole.
    pub(crate) fn whole_bytes(&self) -> usize {
        (WHOLE_SECONDS * f64::from(self.rate)) as usize * 2
    }

    /// Feeds one piece of a binary message; the segment it closes waits for
    /// [`ServedCall::reply`].
    pub(crate) fn audio(&mut self, bytes: &[u8]) -> Result<(), AsrError> {
        let samples = self.samples_of(bytes);
        self.samples += samples.len() as u64;
        if self.engine.is_none() {
            return Ok(());
        }
        if self.engine.as_ref().is_some_and(Engine::resampling) {
            self.pending.extend_from_slice(&samples);
            let mut at = 0;
            while self.pending.len() - at >= self.block {
                let block = self.pending[at..at + self.block].to_vec();
                self.accept(&block)?;
                at += self.block;
            }
            self.pending.drain(..at);
        } else if !samples.is_empty() {
            self.accept(&samples)?;
        }
        Ok(())
    }

    /// 16-bit little-endian samples, carrying an odd byte over to the next message.
    fn samples_of(&mut self, bytes: &[u8]) -> Vec<i16> {
        let mut samples = Vec::with_capacity(bytes.len() / 2 + 1);
        let mut rest = bytes;
        if let Some(lo) = self.odd.take() {
            match rest.split_first() {
                Some((hi, tail)) => {
                    samples.push(i16::from_le_bytes([lo, *hi]));
                    rest = tail;
                }
                None => self.odd = Some(lo),
            }
        }
        let mut pairs = rest.chunks_exact(2);
        samples.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
        if let [b] = pairs.remainder() {
            self.odd = Some(*b);
        }
        samples
    }

    /// Feeds samples; an endpoint libvosk finds closes the segment.
    fn accept(&mut self, samples: &[i16]) -> Result<(), AsrError> {
        if let Some(r) = self.metered(|e| Ok(e.accept_raw(samples)?.then(|| e.result_json(false))))? {
            self.closed.push(r);
        }
        Ok(())
    }

    /// The reply to the audio fed since the last one: the closed segment, or the partial.
    pub(crate) fn reply(&mut self) -> Result<String, AsrError> {
        let mut closed = std::mem::take(&mut self.closed);
        Ok(match closed.len() {
            0 if self.partials && self.engine.is_some() => self.metered(|e| Ok(e.partial_json()))?,
            0 => NO_PARTIAL.to_string(),
            1 => closed.pop().unwrap_or_default(),
            _ => merge(&closed),
        })
    }

    /// The final result (`eof`/`reset`): feeds what waits for a whole block, then flushes.
    pub(crate) fn finish(&mut self) -> Result<String, AsrError> {
        if self.engine.is_none() {
            return Ok(NO_RESULT.to_string());
        }
        let rest = std::mem::take(&mut self.pending);
        self.metered(|e| {
            if !rest.is_empty() && e.accept_raw(&rest)? {
                let first = e.result_json(false);
                let last = e.result_json(true);
                return Ok(merge(&[first, last]));
            }
            Ok(e.result_json(true))
        })
    }
}

/// Several segments closed by one message become one result: texts joined, words appended
/// as libvosk wrote them. An n-best result before any text is the reply as it is.
fn merge(results: &[String]) -> String {
    let mut text: Vec<String> = Vec::new();
    let mut words: Vec<Value> = Vec::new();
    for r in results {
        if let Ok(v) = serde_json::from_str::<Value>(r) {
            if let Some(t) = v.get("text").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                text.push(t.to_string());
            }
            if let Some(w) = v.get("result").and_then(Value::as_array) {
                words.extend(w.iter().cloned());
            }
            if v.get("alternatives").is_some() && text.is_empty() {
                return r.clone();
            }
        }
    }
    serde_json::to_string(&MergedResult { result: words, text: text.join(" ") }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientMessage;

    /// A config message's object, as the server parses it.
    fn config(v: Value) -> Config {
        match ClientMessage::parse(&serde_json::json!({ "config": v }).to_string()) {
            Ok(ClientMessage::Config(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn config_is_checked() {
        let mut c = CallConfig::new(8000);
        c.apply(&config(
            serde_json::json!({"sample_rate": 16000.0, "phrase_list": ["Yes!", "no", "yes", "  "], "words": 0, "max_alternatives": 3, "model": "x"}),
        ))
        .unwrap();
        assert_eq!(c.sample_rate, 16000);
        assert_eq!(c.phrase_list, Some(vec!["yes".to_string(), "no".to_string()]));
        assert!(!c.words);
        assert_eq!(c.max_alternatives, 3);
        assert!(c.partials);
        c.apply(&config(serde_json::json!({"partial_results": false}))).unwrap();
        assert!(!c.partials);
        c.apply(&config(serde_json::json!({"max_alternatives": 1000}))).unwrap();
        assert_eq!(c.max_alternatives, 100);
        let many = Config { phrase_list: Some(vec!["a".into(); MAX_PHRASES + 1]), ..Config::default() };
        assert!(c.apply(&many).unwrap_err().contains("at most 4096"));
        let long = Config { phrase_list: Some(vec!["a".repeat(MAX_PHRASE_BYTES + 1)]), ..Config::default() };
        assert!(c.apply(&long).unwrap_err().contains("at most 256"));
    }

    #[test]
    fn merged_results_keep_every_word() {
        let a = r#"{"result":[{"conf":1.0,"end":0.5,"start":0.1,"word":"a"}],"text":"a"}"#.to_string();
        let b = r#"{"result":[{"conf":0.5,"end":1.5,"start":1.1,"word":"b"}],"text":"b"}"#.to_string();
        let m: Value = serde_json::from_str(&merge(&[a, b])).unwrap();
        assert_eq!(m["text"], "a b");
        assert_eq!(m["result"].as_array().unwrap().len(), 2);
    }
}

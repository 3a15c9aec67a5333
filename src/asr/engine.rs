//! The Vosk engine: one model, one recognizer, fed in fixed-size blocks so results do not
//! depend on how audio happened to arrive (`research/vosk-0.3.45.md` §11). Used by the
//! recognizer thread and by the direct-libvosk baseline (`asr_bridge transcribe`), which must
//! therefore share this code exactly. Results are copied into owned types at once.

use std::time::{Duration, Instant};

use serde::Serialize;
use vosk::{CompleteResult, DecodingState, Model, Recognizer};

use super::vosk_raw::Take;
use super::{AsrError, ModelInfo};
use crate::audio::resample::Resampler;
use crate::protocol::{Segment, SegmentAlternative, WordInfo};

/// Block length fed to libvosk, in milliseconds of audio.
pub const BLOCK_MS: u32 = 100;

/// Samples per block at `rate`.
pub fn block_len(rate: u32) -> usize {
    (rate * BLOCK_MS / 1000) as usize
}

/// Silences libvosk/Kaldi logging entirely (level -3; the vosk crate stops at -2).
/// Must run before the model loads; the level is process-global.
#[allow(unsafe_code)]
pub fn silence_vosk_logs() {
    // SAFETY: vosk_set_log_level only stores an int in Kaldi's global verbosity.
    unsafe { vosk_sys::vosk_set_log_level(-3) };
}

/// Loads the model, timing it. Call [`super::model::inspect`] first.
pub fn load_model(info: &ModelInfo) -> Result<(Model, Duration), AsrError> {
    silence_vosk_logs();
    let t = Instant::now();
    let dir = info.dir.display().to_string();
    let model = Model::new(dir.clone()).ok_or(AsrError::ModelLoad(dir))?;
    Ok((model, t.elapsed()))
}

/// One n-best alternative.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alternative {
    pub text: String,
    /// libvosk's unnormalised score (a negative total cost: higher is better).
    pub score: f32,
    /// The score turned into a share of the n-best list (softmax), 0-1.
    pub share: f32,
}

/// The final transcript of one utterance (possibly several Vosk segments joined).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Transcript {
    pub text: String,
    pub words: Vec<WordInfo>,
    /// N-best alternatives, best first, when asked for (`--alternatives`).
    pub alternatives: Vec<Alternative>,
}

/// Copies libvosk's borrowed result into the segment vosk-server would send for it.
fn segment(res: CompleteResult<'_>) -> Segment {
    match res {
        CompleteResult::Single(s) => Segment {
            text: s.text.to_string(),
            result: s.result.iter().map(|w| WordInfo { word: w.word.to_string(), conf: w.conf, start: w.start, end: w.end }).collect(),
            alternatives: None,
        },
        CompleteResult::Multiple(m) => Segment {
            alternatives: Some(m.alternatives.iter().map(|a| SegmentAlternative { confidence: a.confidence, text: a.text.to_string() }).collect()),
            ..Segment::default()
        },
    }
}

impl Transcript {
    /// Appends one closed segment.
    pub fn push(&mut self, seg: Segment) {
        match seg.alternatives {
            Some(alts) => self.take_alternatives(alts.into_iter().map(|a| (a.text.trim().to_string(), a.confidence)).collect()),
            None => self.append(&seg.text, seg.result),
        }
    }

    fn take_alternatives(&mut self, alts: Vec<(String, f32)>) {
        let Some((top, _)) = alts.first().cloned() else { return };
        if top.is_empty() && alts.len() == 1 {
            return; // an empty segment (silence) keeps the alternatives already found
        }
        let prefix = self.text.clone();
        let max = alts.iter().map(|a| a.1).fold(f32::MIN, f32::max);
        let sum: f32 = alts.iter().map(|a| (a.1 - max).exp()).sum();
        let join = |t: &str| match (prefix.is_empty(), t.is_empty()) {
            (true, _) => t.to_string(),
            (false, true) => prefix.clone(),
            (false, false) => format!("{prefix} {t}"),
        };
        self.alternatives = alts.iter().map(|(t, sc)| Alternative { text: join(t), score: *sc, share: (sc - max).exp() / sum }).collect();
        self.append(&top, Vec::new());
    }

    /// The published `ASR_CONFIDENCE`: the mean of the words' posteriors (Kaldi's MBR word
    /// confidences); with n-best on, libvosk gives no word confidences, so the best
    /// alternative's share of the n-best list is used instead. `None` without either.
    pub fn confidence(&self) -> Option<f32> {
        if !self.words.is_empty() {
            return Some(self.words.iter().map(|w| w.conf).sum::<f32>() / self.words.len() as f32);
        }
        if self.text.is_empty() {
            return None;
        }
        self.alternatives.first().map(|a| a.share)
    }

    fn append(&mut self, text: &str, words: Vec<WordInfo>) {
        let text = text.trim();
        if !text.is_empty() {
            if !self.text.is_empty() {
                self.text.push(' ');
            }
            self.text.push_str(text);
        }
        self.words.extend(words);
    }
}

/// Per-recognizer options.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EngineOptions {
    /// Normalized phrases (already checked against the vocabulary); `None` is free speech.
    pub grammar: Option<Vec<String>>,
    /// N-best size; 0 is off.
    pub alternatives: u16,
}

/// A recognizer over a loaded model, with the block accumulator and optional resampler.
pub struct Engine {
    rec: Recognizer,
    rate: u32,
    resampler: Option<Resampler>,
    resampled: Vec<i16>,
    transcript: Transcript,
    blocks: u64,
}

impl Engine {
    /// A recognizer for audio at `audio_rate`; resamples when the model cannot take it.
    pub fn new(model: &Model, info: &ModelInfo, audio_rate: u32, opts: &EngineOptions) -> Result<Engine, AsrError> {
        let (feed_rate, resample) = info.feed_rate(audio_rate);
        let rec = match &opts.grammar {
            Some(phrases) if info.runtime_grammar => {
                let args = super::grammar::vosk_grammar_args(phrases)?;
                Recognizer::new_with_grammar(model, feed_rate as f32, &args)
            }
            _ => Recognizer::new(model, feed_rate as f32),
        };
        let mut rec = rec.ok_or_else(|| AsrError::Recognizer { dir: info.dir.display().to_string(), rate: feed_rate })?;
        rec.set_words(true);
        if opts.alternatives > 0 {
            rec.set_max_alternatives(opts.alternatives);
        }
        let resampler = if resample { Some(Resampler::new(audio_rate, feed_rate, block_len(audio_rate))?) } else { None };
        Ok(Engine { rec, rate: audio_rate, resampler, resampled: Vec::new(), transcript: Transcript::default(), blocks: 0 })
    }

    /// The audio rate blocks are given in.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// True when the bridge resamples before libvosk.
    pub fn resampling(&self) -> bool {
        self.resampler.is_some()
    }

    /// Blocks fed so far.
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Feeds one block (a full [`block_len`] block, or a shorter last one). When libvosk's
    /// own endpoint closes a segment, its text is kept and decoding goes on.
    pub fn accept(&mut self, block: &[i16]) -> Result<(), AsrError> {
        if self.accept_raw(block)? {
            let seg = segment(self.rec.result());
            self.transcript.push(seg);
        }
        Ok(())
    }

    /// Feeds one block without taking the result: true when libvosk closed a segment, which
    /// the caller then takes with [`Engine::result_json`] (the served path).
    pub fn accept_raw(&mut self, block: &[i16]) -> Result<bool, AsrError> {
        self.blocks += 1;
        let state = match self.resampler.as_mut() {
            Some(r) => {
                self.resampled.clear();
                if block.len() == r.block() {
                    r.process(block, &mut self.resampled);
                } else {
                    let mut padded = block.to_vec();
                    padded.resize(r.block(), 0);
                    r.process(&padded, &mut self.resampled);
                    let keep = self.resampled.len() * block.len() / r.block();
                    self.resampled.truncate(keep);
                }
                self.rec.accept_waveform(&self.resampled)
            }
            None => self.rec.accept_waveform(block),
        };
        match state {
            Ok(DecodingState::Finalized) => Ok(true),
            Ok(DecodingState::Running) => Ok(false),
            Ok(DecodingState::Failed) => {
                Err(AsrError::Decode { rate: self.rate, reason: "accept_waveform returned -1 (sample-rate mismatch with the model?)".into() })
            }
            Err(e) => Err(AsrError::Decode { rate: self.rate, reason: e.to_string() }),
        }
    }

    /// libvosk's result as vosk-server sends it: the closed segment, or with `last` the final
    /// one (flushing the recognizer).
    pub fn result_json(&mut self, last: bool) -> String {
        super::vosk_raw::json(&mut self.rec, if last { Take::Final } else { Take::Closed })
    }

    /// libvosk's partial result, byte for byte as vosk-server sends it.
    pub fn partial_json(&mut self) -> String {
        super::vosk_raw::json(&mut self.rec, Take::Partial)
    }

    /// Word times and confidences in results (on by default; vosk-server's `words`).
    pub fn set_words(&mut self, on: bool) {
        self.rec.set_words(on);
    }

    /// Flushes libvosk and returns everything recognized.
    pub fn finish(mut self) -> Transcript {
        let seg = segment(self.rec.final_result());
        self.transcript.push(seg);
        self.transcript
    }
}

/// The direct-libvosk baseline: the same engine and blocks, no ring, no threads, no AGI.
pub fn transcribe_samples(model: &Model, info: &ModelInfo, rate: u32, samples: &[i16], opts: &EngineOptions) -> Result<Transcript, AsrError> {
    let mut engine = Engine::new(model, info, rate, opts)?;
    for block in samples.chunks(block_len(rate)) {
        engine.accept(block)?;
    }
    Ok(engine.finish())
}

//! End-of-speech logic with per-call timers, on the endpointer thread. libvosk 0.3.45 has no
//! per-recognizer endpointer, so the bridge decides: WebRTC's VAD (the `webrtc-vad` crate)
//! classifies 20 ms frames, [`SpeechTracker`] turns that into speech onset and end, and the
//! timers run on a media clock that advances with audio and, when no frames arrive at all
//! (DTX, a silent Local channel), with the wall clock. libvosk's own endpoint still closes
//! segments inside the engine; it does not end the call's utterance early.

use std::time::Duration;

use webrtc_vad::{SampleRate, Vad, VadMode};

/// VAD frame length in milliseconds.
pub const FRAME_MS: u32 = 20;

/// The per-call timers (MRCP meanings, see `research/peers.md` §b).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timers {
    /// No speech this long after listening starts: NOINPUT.
    pub no_input: Duration,
    /// Trailing silence this long ends the utterance.
    pub end_silence: Duration,
    /// Speech this long is cut off: result with cause 008.
    pub max_duration: Duration,
    /// Voiced audio needed before speech counts as started.
    pub min_speech: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            no_input: Duration::from_secs(5),
            end_silence: Duration::from_millis(800),
            max_duration: Duration::from_secs(15),
            min_speech: Duration::from_millis(100),
        }
    }
}

/// Why listening ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// Speech, then `end_silence` of silence.
    EndOfSpeech,
    /// No speech within `no_input`.
    NoInput,
    /// Speech lasted `max_duration`.
    MaxDuration,
    /// fd 3 closed (the host went away) or the audio stopped for good.
    AudioClosed,
}

/// A gap shorter than this inside speech does not reset the onset count.
const ONSET_GAP_MS: f64 = 150.0;

/// Speech onset and end from per-frame voiced/unvoiced decisions, in media milliseconds.
#[derive(Debug, Clone)]
pub struct SpeechTracker {
    timers: Timers,
    listen_start: f64,
    candidate_start: Option<f64>,
    candidate_voiced: f64,
    last_voiced_end: f64,
    speech_start: Option<f64>,
    prompt_min_speech: f64,
    hangover: f64,
}

impl SpeechTracker {
    /// Starts listening at media time `listen_start` (ms); `f64::INFINITY` holds the
    /// no-input timer back until [`SpeechTracker::start_timers`] (a prompt is playing).
    pub fn new(timers: Timers, listen_start: f64) -> Self {
        SpeechTracker {
            timers,
            listen_start,
            candidate_start: None,
            candidate_voiced: 0.0,
            last_voiced_end: if listen_start.is_finite() { listen_start } else { 0.0 },
            speech_start: None,
            prompt_min_speech: 0.0,
            hangover: 0.0,
        }
    }

    /// The VAD's hangover: voiced frames it reports after the sound has stopped. The end of
    /// speech is placed that much before the last voiced frame's end.
    pub fn set_vad_hangover(&mut self, d: Duration) {
        self.hangover = d.as_secs_f64() * 1000.0;
    }

    /// The voiced time needed for an onset while the timers are held (a prompt plays).
    pub fn set_prompt_min_speech(&mut self, d: Duration) {
        self.prompt_min_speech = d.as_secs_f64() * 1000.0;
    }

    /// Starts the no-input timer at media time `now` (the prompt has finished).
    pub fn start_timers(&mut self, now: f64) {
        if !self.listen_start.is_finite() {
            self.listen_start = now;
        }
    }

    /// Voiced milliseconds in the current speech (since the onset candidate began).
    pub fn voiced_ms(&self) -> f64 {
        self.candidate_voiced
    }

    /// One frame `[start, start + len)` in media ms, voiced or not. Returns `true` on the
    /// frame where speech onset is confirmed.
    pub fn frame(&mut self, start: f64, len: f64, voiced: bool) -> bool {
        if !voiced {
            if self.speech_start.is_none() && self.candidate_start.is_some() && start + len - self.last_voiced_end > ONSET_GAP_MS {
                self.candidate_start = None;
                self.candidate_voiced = 0.0;
            }
            return false;
        }
        self.last_voiced_end = start + len;
        if self.speech_start.is_some() {
            self.candidate_voiced += len;
            return false;
        }
        let cand = *self.candidate_start.get_or_insert(start);
        self.candidate_voiced += len;
        let mut need = self.timers.min_speech.as_secs_f64() * 1000.0;
        if start < self.listen_start {
            need = need.max(self.prompt_min_speech); // the prompt is still playing
        }
        if self.candidate_voiced >= need {
            self.speech_start = Some(cand);
            return true;
        }
        false
    }

    /// Media time (ms) when speech started, once it has.
    pub fn speech_start(&self) -> Option<f64> {
        self.speech_start
    }

    /// Media time (ms) where speech last ended: the last voiced frame's end less the VAD's
    /// hangover (never before the onset).
    pub fn last_voiced_end(&self) -> f64 {
        let end = self.last_voiced_end - self.hangover;
        self.speech_start.map_or(end, |s| end.max(s))
    }

    /// The timer decision at media time `now` (ms).
    pub fn check(&self, now: f64) -> Option<EndReason> {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        match self.speech_start {
            None => {
                let in_onset = self.candidate_start.is_some();
                (!in_onset && now - self.listen_start >= ms(self.timers.no_input)).then_some(EndReason::NoInput)
            }
            Some(s) => {
                if now - self.last_voiced_end() >= ms(self.timers.end_silence) {
                    Some(EndReason::EndOfSpeech)
                } else if now - s >= ms(self.timers.max_duration) {
                    Some(EndReason::MaxDuration)
                } else {
                    None
                }
            }
        }
    }

    /// Media ms until the nearest timer could fire (for sleeping without spinning).
    pub fn until_next(&self, now: f64) -> f64 {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let t = match self.speech_start {
            None => self.listen_start + ms(self.timers.no_input) - now,
            Some(s) => (self.last_voiced_end() + ms(self.timers.end_silence)).min(s + ms(self.timers.max_duration)) - now,
        };
        t.max(0.0)
    }
}

/// WebRTC VAD over 20 ms frames. Not `Send`: created on the endpointer thread.
pub struct VoiceDetector {
    vad: Vad,
    frame: usize,
}

impl VoiceDetector {
    /// `mode` 0 (quality) to 3 (very aggressive). Rates other than 8/16/32/48 kHz get `None`.
    pub fn new(rate: u32, mode: u8) -> Option<VoiceDetector> {
        let sr = match rate {
            8000 => SampleRate::Rate8kHz,
            16000 => SampleRate::Rate16kHz,
            32000 => SampleRate::Rate32kHz,
            48000 => SampleRate::Rate48kHz,
            _ => return None,
        };
        let mode = match mode {
            0 => VadMode::Quality,
            1 => VadMode::LowBitrate,
            2 => VadMode::Aggressive,
            _ => VadMode::VeryAggressive,
        };
        Some(VoiceDetector { vad: Vad::new_with_rate_and_mode(sr, mode), frame: (rate * FRAME_MS / 1000) as usize })
    }

    /// How long WebRTC's VAD keeps saying "voice" after the sound stops (its hangover),
    /// measured on an 8 kHz noise burst (test `vad_hangover_is_as_documented`). Durations
    /// that must reflect the sound itself (barge-in) add it back.
    pub fn hangover(mode: u8) -> Duration {
        Duration::from_millis(if mode >= 2 { 120 } else { 160 })
    }

    /// Samples per frame.
    pub fn frame_len(&self) -> usize {
        self.frame
    }

    /// Classifies one frame of exactly [`VoiceDetector::frame_len`] samples.
    pub fn is_voice(&mut self, frame: &[i16]) -> bool {
        self.vad.is_voice_segment(frame).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timers() -> Timers {
        Timers {
            no_input: Duration::from_millis(1000),
            end_silence: Duration::from_millis(500),
            max_duration: Duration::from_millis(3000),
            min_speech: Duration::from_millis(100),
        }
    }

    fn feed(t: &mut SpeechTracker, from: f64, to: f64, voiced: bool) -> Option<f64> {
        let mut onset = None;
        let mut s = from;
        while s < to {
            if t.frame(s, 20.0, voiced) {
                onset = Some(s);
            }
            s += 20.0;
        }
        onset
    }

    #[test]
    fn silence_gives_noinput_at_the_timeout() {
        let mut t = SpeechTracker::new(timers(), 0.0);
        feed(&mut t, 0.0, 980.0, false);
        assert_eq!(t.check(980.0), None);
        assert_eq!(t.check(1000.0), Some(EndReason::NoInput));
    }

    #[test]
    fn speech_then_silence_ends_after_end_silence() {
        let mut t = SpeechTracker::new(timers(), 0.0);
        feed(&mut t, 0.0, 200.0, false);
        assert_eq!(feed(&mut t, 200.0, 1200.0, true), Some(280.0));
        assert_eq!(t.speech_start(), Some(200.0));
        feed(&mut t, 1200.0, 1680.0, false);
        assert_eq!(t.check(1680.0), None);
        assert_eq!(t.check(1700.0), Some(EndReason::EndOfSpeech));
    }

    #[test]
    fn hangover_is_taken_off_the_trailing_silence() {
        let mut t = SpeechTracker::new(timers(), 0.0);
        t.set_vad_hangover(Duration::from_millis(120));
        feed(&mut t, 0.0, 1000.0, true); // 880 ms of sound plus 120 ms of hangover
        assert_eq!(t.last_voiced_end(), 880.0);
        assert_eq!(t.check(1379.0), None);
        assert_eq!(t.check(1380.0), Some(EndReason::EndOfSpeech));
    }

    #[test]
    fn a_click_is_not_speech() {
        let mut t = SpeechTracker::new(timers(), 0.0);
        feed(&mut t, 0.0, 60.0, true);
        feed(&mut t, 60.0, 1200.0, false);
        assert_eq!(t.speech_start(), None);
        assert_eq!(t.check(1200.0), Some(EndReason::NoInput));
    }

    #[test]
    fn endless_speech_hits_max_duration() {
        let mut t = SpeechTracker::new(timers(), 0.0);
        feed(&mut t, 0.0, 3200.0, true);
        assert_eq!(t.check(3200.0), Some(EndReason::MaxDuration));
    }

    #[test]
    fn dtx_wall_clock_silence_counts() {
        // Speech, then no frames at all: the media clock moves on by wall time.
        let mut t = SpeechTracker::new(timers(), 0.0);
        feed(&mut t, 0.0, 400.0, true);
        assert_eq!(t.check(400.0 + 499.0), None);
        assert_eq!(t.check(400.0 + 500.0), Some(EndReason::EndOfSpeech));
        assert!((t.until_next(600.0) - 300.0).abs() < 1e-9);
    }

    #[test]
    fn timers_held_until_the_prompt_ends() {
        let mut t = SpeechTracker::new(timers(), f64::INFINITY);
        feed(&mut t, 0.0, 5000.0, false);
        assert_eq!(t.check(5000.0), None);
        t.start_timers(5000.0);
        assert_eq!(t.check(5999.0), None);
        assert_eq!(t.check(6000.0), Some(EndReason::NoInput));
    }

    #[test]
    fn during_a_prompt_a_short_burst_is_no_onset() {
        let mut t = SpeechTracker::new(timers(), f64::INFINITY);
        t.set_prompt_min_speech(Duration::from_millis(200));
        feed(&mut t, 0.0, 120.0, true);
        feed(&mut t, 120.0, 600.0, false);
        assert_eq!(t.speech_start(), None);
        feed(&mut t, 600.0, 820.0, true);
        assert_eq!(t.speech_start(), Some(600.0));
    }

    #[test]
    fn voiced_time_grows_for_barge_in() {
        let mut t = SpeechTracker::new(timers(), f64::INFINITY);
        feed(&mut t, 0.0, 100.0, true);
        assert!(t.speech_start().is_some());
        feed(&mut t, 100.0, 200.0, true);
        assert!((t.voiced_ms() - 200.0).abs() < 1e-9);
    }

    #[test]
    fn vad_hangover_is_as_documented() {
        for mode in 0..4u8 {
            let mut v = VoiceDetector::new(8000, mode).unwrap();
            let mut samples: Vec<i16> = vec![0; 4000];
            let mut x: u32 = 12345;
            for _ in 0..960 {
                x = x.wrapping_mul(1103515245).wrapping_add(12345);
                samples.push(((x >> 16) as i16) / 3);
            }
            samples.extend(std::iter::repeat_n(0, 8000));
            let voiced = samples.chunks(160).filter(|c| v.is_voice(c)).count() as u64;
            assert_eq!(voiced * 20, 120 + VoiceDetector::hangover(mode).as_millis() as u64, "mode {mode}");
        }
    }

    #[test]
    fn vad_hears_a_vowel_like_tone_not_silence() {
        let mut v = VoiceDetector::new(8000, 2).unwrap();
        let silence = vec![0i16; v.frame_len()];
        assert!(!v.is_voice(&silence));
        assert!(VoiceDetector::new(11025, 2).is_none());
    }
}

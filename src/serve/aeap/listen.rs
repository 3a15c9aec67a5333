//! End of utterance for an AEAP speech object, by the EAGI side's rules ([`crate::asr::endpointer`]):
//! WebRTC's VAD and the noise gate over 20 ms frames, [`SpeechTracker`]'s timers (no input,
//! end silence, max duration) on a media clock that is the audio received plus wall-clock time
//! without audio beyond [`DTX_GRACE`] (a phone sending nothing under DTX still ends an
//! utterance). The utterance starts at its first audio: Asterisk says nothing when a
//! SpeechBackground starts or its prompt ends, so the no-input timer counts from the first
//! frame (prompt included). Runs on the connection thread; nothing here blocks.

use std::time::{Duration, Instant};

use crate::asr::endpoint::{EndReason, SpeechTracker, VoiceDetector};
use crate::asr::endpointer::DTX_GRACE;
use crate::asr::noise::NoiseGate;

use super::params::Params;

/// One utterance's endpointer.
pub(crate) struct Listening {
    vad: VoiceDetector,
    gate: NoiseGate,
    tracker: SpeechTracker,
    frame: usize,
    frame_buf: Vec<i16>,
    ms_per_sample: f64,
    /// Samples taken (whole frames classified, plus the partial frame at the end).
    samples: u64,
    dtx_total: f64,
    gap_extra: f64,
    last_audio: Instant,
}

impl Listening {
    /// Listening starts now, at media time 0.
    pub(crate) fn new(rate: u32, params: &Params) -> Result<Listening, String> {
        let vad = VoiceDetector::new(rate, params.vad_mode).ok_or_else(|| format!("no VAD at {rate} Hz"))?;
        let mut tracker = SpeechTracker::new(params.timers, 0.0);
        tracker.set_vad_hangover(VoiceDetector::hangover(params.vad_mode));
        Ok(Listening {
            frame: vad.frame_len(),
            frame_buf: Vec::with_capacity(vad.frame_len()),
            vad,
            gate: NoiseGate::new(rate),
            tracker,
            ms_per_sample: 1000.0 / f64::from(rate),
            samples: 0,
            dtx_total: 0.0,
            gap_extra: 0.0,
            last_audio: Instant::now(),
        })
    }

    fn media(&self) -> f64 {
        (self.samples + self.frame_buf.len() as u64) as f64 * self.ms_per_sample + self.dtx_total + self.gap_extra
    }

    /// Takes audio that just arrived. Returns how many of `samples` belong to the utterance
    /// and, once decided, why it ended (the samples after the deciding frame are not its).
    pub(crate) fn audio(&mut self, samples: &[i16]) -> (usize, Option<EndReason>) {
        self.dtx_total += self.gap_extra;
        self.gap_extra = 0.0;
        self.last_audio = Instant::now();
        let mut used = 0;
        while used < samples.len() {
            let take = (self.frame - self.frame_buf.len()).min(samples.len() - used);
            self.frame_buf.extend_from_slice(&samples[used..used + take]);
            used += take;
            if self.frame_buf.len() < self.frame {
                break;
            }
            let start = self.samples as f64 * self.ms_per_sample + self.dtx_total;
            let vad = self.vad.is_voice(&self.frame_buf);
            let voiced = self.gate.is_speech(&self.frame_buf, vad);
            self.tracker.frame(start, self.frame as f64 * self.ms_per_sample, voiced);
            self.samples += self.frame as u64;
            self.frame_buf.clear();
            if let Some(r) = self.tracker.check(self.media()) {
                return (used, Some(r));
            }
        }
        (used, None)
    }

    /// No audio came for a while: the wall clock beyond [`DTX_GRACE`] counts as silence.
    pub(crate) fn quiet(&mut self) -> Option<EndReason> {
        let idle = self.last_audio.elapsed().saturating_sub(DTX_GRACE);
        self.gap_extra = idle.as_secs_f64() * 1000.0;
        self.tracker.check(self.media())
    }

    /// How long to wait for audio before looking at the timers again.
    pub(crate) fn wait(&self) -> Duration {
        let ms = self.tracker.until_next(self.media()).clamp(1.0, 200.0);
        Duration::from_secs_f64(ms / 1000.0).max(DTX_GRACE)
    }

    /// Media ms where speech started, when it did.
    #[cfg(test)]
    pub(crate) fn speech_start_ms(&self) -> Option<f64> {
        self.tracker.speech_start()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u32) -> Vec<i16> {
        (0..ms * 8).map(|i| ((i as f64 * 2.0 * std::f64::consts::PI * 220.0 / 8000.0).sin() * 8000.0 * (1.0 + (i as f64 / 97.0).sin() * 0.5)) as i16).collect()
    }

    /// Silence alone ends with no input once the timer passes on the audio clock; the samples
    /// after the deciding frame are not taken.
    #[test]
    fn no_input_on_the_audio_clock() {
        let mut p = Params::default();
        p.apply("no_input_timeout", "1s").unwrap();
        let mut l = Listening::new(8000, &p).unwrap();
        let silence = vec![0i16; 8000 * 2];
        let (used, r) = l.audio(&silence);
        assert_eq!(r, Some(EndReason::NoInput));
        assert_eq!(used, 8000, "decided on the frame that reached 1 s");
    }

    /// With no audio arriving at all, the wall clock ends the utterance (DTX).
    #[test]
    fn the_wall_clock_counts_when_nothing_arrives() {
        let mut p = Params::default();
        p.apply("no_input_timeout", "150ms").unwrap();
        let mut l = Listening::new(8000, &p).unwrap();
        assert_eq!(l.audio(&[0; 160]), (160, None));
        assert_eq!(l.quiet(), None);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(l.quiet(), Some(EndReason::NoInput));
    }

    #[test]
    fn end_of_speech_after_the_end_silence() {
        let mut p = Params::default();
        p.apply("end_silence", "300ms").unwrap();
        let mut l = Listening::new(8000, &p).unwrap();
        let (_, r) = l.audio(&vec![0i16; 8000]);
        assert_eq!(r, None);
        let (_, r) = l.audio(&tone(600));
        assert_eq!(r, None);
        assert!(l.speech_start_ms().is_some(), "a tone with a varying envelope counts as voice");
        let (used, r) = l.audio(&vec![0i16; 8000]);
        assert_eq!(r, Some(EndReason::EndOfSpeech));
        assert!(used < 8000);
    }
}

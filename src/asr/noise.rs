//! A noise gate behind WebRTC's VAD: steady background noise is not speech.
//!
//! WebRTC's VAD (mode 2, 20 ms frames) calls almost any steady noise louder than about
//! -30 dBFS "voice", frame after frame: pink noise at -25 dBFS is voiced for all of a 5 s run,
//! enough for a barge-in and an onset. [`NoiseGate`] keeps an adaptive noise floor and passes
//! the VAD's "voice" only for frames that stand out from it.
//!
//! **Features, per 20 ms frame** (no allocation; fixed buffers):
//! - `e`: the frame's energy in dB relative to a full-scale square wave (32768²), measured
//!   after a 2nd-order 200 Hz high-pass (so that brown noise's rumble, which the VAD hardly
//!   hears, does not decide the floor). A frame whose samples are all within ±8 ("digital
//!   silence", also A-law's smallest step) is -100 dB, the floor's lowest value.
//! - `per`: periodicity, the highest normalised autocorrelation at lags of 2.5-16.7 ms
//!   (60-400 Hz pitch) over the last 40 ms, computed on the high-passed signal taken to about
//!   8 kHz. Voiced speech is 0.6-1.0 (mostly above 0.45 at 5 dB SNR); white and pink noise stay
//!   under 0.36, brown noise up to about 0.55 (high-passed, its spectrum peaks near 200 Hz).
//!
//! **The floor** (`floor_dbfs`, in the same high-passed dB):
//! - starts at the first frame's `e` (noise from the very first frame is the floor at once);
//! - follows any non-silent frame below it down at once; digital silence lowers it (to -100)
//!   only after 4 silent frames in a row, so a dropped packet or two inside noise does not;
//! - jumps up to the lowest `e` of the last 5 frames when those 5 look like steady noise:
//!   `e` within 4 dB of each other, no `per` above 0.6 and mean `per` at most 0.4 (a vowel
//!   is steady too, but periodic: this is what keeps the floor out of speech);
//! - otherwise creeps up 0.02 dB a frame (1 dB/s), which speech pauses keep pulling down.
//!
//! **The rule.** A frame is speech when the VAD says voice and either `e` is more than 5 dB
//! above the floor, or a hangover runs: two such frames in a row arm 6 frames (120 ms, the
//! VAD's own mode-2 hangover) during which the VAD's "voice" passes unchanged, so that word
//! ends and digital-silence gaps keep their VAD timing. A jump of the floor by more than
//! 1 dB (noise just began) cancels the hangover.
//!
//! **Measured** (test `measure_noise_gate_table`: `cargo test --lib noise -- --ignored
//! --nocapture`; WebRTC mode 2; noise from [`crate::audio::synth`]). "Run" is the longest
//! stretch of voiced frames as the tracker counts it (gaps under 150 ms merged), in ms of
//! voiced audio; a barge-in needs 200, an onset 100. 5 s at 8 kHz, worst of seeds 1-3,
//! VAD alone / gated, noise from the first frame:
//!
//! | noise | -40 dBFS | -30 dBFS | -25 dBFS | -20 dBFS |
//! |-------|----------|----------|----------|----------|
//! | white | 80 / 0   | 4340 / 0 | 5000 / 0 | 5000 / 0 |
//! | pink  | 80 / 0   | 380 / 0  | 5000 / 0 | 5000 / 0 |
//! | brown | 80 / 0   | 80 / 0   | 460 / 0  | 5000 / 20 |
//!
//! After 1 s of digital silence the gated run is 80 ms at every level: the VAD voices the
//! first 80 ms of any sound that starts (even -40 dBFS noise), and the gate needs those 5
//! frames to see that it is steady; no onset. 30 s at 8 and 16 kHz, -30 to -10 dBFS, seeds
//! 100-102: white and pink never pass a frame; brown passes isolated frames (runs of 20 ms,
//! 40 ms once at 16 kHz/-10 dBFS; 20-140 ms in all over 90 s). 1-3 zero frames every 500 ms
//! inside -25 dBFS noise: runs of at most 20 ms.
//!
//! Speech: the bundled 8 kHz files mixed with [`crate::audio::synth::mix_at_snr`] (the noise
//! lands at about -30 dBFS for 10 dB), onset = 100 ms voiced as the tracker confirms it,
//! against the clean file's VAD-only onset:
//!
//! | SNR   | onset shift | clean VAD-voiced frames kept | dropped of those the VAD voices in both |
//! |-------|-------------|------------------------------|-----------------------------------------|
//! | clean | 0 ms        | all but 0-2 frames           | -                                       |
//! | 20 dB | 0-60 ms     | 93-100 %                     | 0 %                                     |
//! | 10 dB | 0-60 ms     | 84-100 %                     | 0-8 %                                   |
//! | 5 dB  | 0-60 ms     | 66-100 %                     | 0-25 % (white noise; weak consonants)   |
//!
//! The 40-60 ms shifts are all `ko-numbers` and the VAD's own: alone on the 20 dB mix it
//! confirms 40-60 ms later too. The lowest "kept" (the quiet talker, 10 and 5 dB) is where the
//! VAD itself stops voicing weak syllables. Speech in the very first frame (no lead-in)
//! starts 20 ms late, that frame being taken for the floor.
//!
//! Not handled: noise that is itself periodic (mains hum, a tone, music) never counts as
//! steady, so the floor only creeps up to it (1 dB/s); speech-shaped noise (babble).

/// Digital silence and the floor's lowest value, dB.
const SILENCE_DB: f64 = -100.0;
/// Samples within ± this are digital silence.
const SILENCE_PEAK: u16 = 8;
/// Frames of digital silence in a row before the floor drops to [`SILENCE_DB`].
const SILENCE_FRAMES: u32 = 4;
/// High-pass corner, Hz.
const HP_HZ: f64 = 200.0;
/// Frames looked at to call the sound steady noise.
const WINDOW: usize = 5;
/// Largest energy spread in [`WINDOW`] for steady noise, dB.
const STEADY_DB: f64 = 4.0;
/// No frame in [`WINDOW`] may be more periodic than this for steady noise.
const STEADY_MAX_PER: f64 = 0.6;
/// Mean periodicity in [`WINDOW`] at most this for steady noise.
const STEADY_MEAN_PER: f64 = 0.4;
/// Upward creep of the floor, dB per frame.
const CREEP_DB: f64 = 0.02;
/// Energy above the floor for a frame to stand out, dB.
const MARGIN_DB: f64 = 5.0;
/// Hangover, frames.
const HANGOVER: u32 = 6;
/// A floor jump larger than this (dB) cancels the hangover.
const JUMP_DB: f64 = 1.0;
/// Periodicity history: 40 ms at up to 12.8 kHz after decimation.
const HIST_MAX: usize = 512;

/// RBJ high-pass biquad (Q = 1/√2).
#[derive(Debug, Clone)]
struct HighPass {
    b0: f64,
    b1: f64,
    b2: f64,
    a1: f64,
    a2: f64,
    x1: f64,
    x2: f64,
    y1: f64,
    y2: f64,
}

impl HighPass {
    fn new(rate: u32, fc: f64) -> HighPass {
        let w = std::f64::consts::TAU * fc / rate as f64;
        let alpha = w.sin() / (2.0 * std::f64::consts::FRAC_1_SQRT_2);
        let c = w.cos();
        let a0 = 1.0 + alpha;
        HighPass {
            b0: (1.0 + c) / 2.0 / a0,
            b1: -(1.0 + c) / a0,
            b2: (1.0 + c) / 2.0 / a0,
            a1: -2.0 * c / a0,
            a2: (1.0 - alpha) / a0,
            x1: 0.0,
            x2: 0.0,
            y1: 0.0,
            y2: 0.0,
        }
    }

    fn run(&mut self, x: f64) -> f64 {
        let y = self.b0 * x + self.b1 * self.x1 + self.b2 * self.x2 - self.a1 * self.y1 - self.a2 * self.y2;
        self.x2 = self.x1;
        self.x1 = x;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// The noise gate: one per call, fed every 20 ms frame with the VAD's decision for it.
#[derive(Debug, Clone)]
pub(crate) struct NoiseGate {
    hp: HighPass,
    /// Decimation factor to about 8 kHz for the periodicity history.
    dec: usize,
    dec_acc: f64,
    dec_n: usize,
    hist: [f32; HIST_MAX],
    hist_len: usize,
    min_lag: usize,
    max_lag: usize,
    energy: [f64; WINDOW],
    per: [f64; WINDOW],
    frames: u64,
    floor: f64,
    silent_run: u32,
    hang: u32,
    prev_above: bool,
    last_energy: f64,
    last_per: f64,
}

impl NoiseGate {
    /// A gate for audio at `rate` Hz (8000 or 16000 in the bridge; any rate works, the
    /// periodicity being measured at `rate / round(rate / 8000)`).
    pub(crate) fn new(rate: u32) -> NoiseGate {
        let rate = rate.max(1000);
        let dec = (((rate + 4000) / 8000) as usize).max(1);
        let eff = rate as usize / dec;
        let hist_len = (eff * 40 / 1000).min(HIST_MAX);
        NoiseGate {
            hp: HighPass::new(rate, HP_HZ),
            dec,
            dec_acc: 0.0,
            dec_n: 0,
            hist: [0.0; HIST_MAX],
            hist_len,
            min_lag: eff / 400,
            max_lag: (eff / 60).min(hist_len / 2),
            energy: [SILENCE_DB; WINDOW],
            per: [0.0; WINDOW],
            frames: 0,
            floor: SILENCE_DB,
            silent_run: 0,
            hang: 0,
            prev_above: false,
            last_energy: SILENCE_DB,
            last_per: 0.0,
        }
    }

    /// The noise floor, dB relative to full scale, of the high-passed (above 200 Hz) frame
    /// energy; -100 for digital silence or before the first frame.
    pub(crate) fn floor_dbfs(&self) -> f64 {
        self.floor
    }

    /// The last frame's periodicity (0-1).
    #[cfg(test)]
    pub(crate) fn periodicity(&self) -> f64 {
        self.last_per
    }

    /// One 20 ms frame and the VAD's decision for it: speech only when the VAD says voice
    /// and the frame stands out from the noise floor (see the module doc). Always updates
    /// the floor, whatever `vad_voiced` says.
    pub(crate) fn is_speech(&mut self, frame: &[i16], vad_voiced: bool) -> bool {
        let (e, silent) = self.measure(frame);
        let per = self.periodicity_now();
        self.last_energy = e;
        self.last_per = per;
        let slot = (self.frames % WINDOW as u64) as usize;
        self.energy[slot] = e;
        self.per[slot] = per;
        self.frames += 1;
        if self.frames == 1 {
            self.floor = e;
        }

        let mut jumped = false;
        if silent {
            self.silent_run += 1;
            if self.silent_run >= SILENCE_FRAMES {
                self.floor = SILENCE_DB;
            }
        } else {
            self.silent_run = 0;
            if e < self.floor {
                self.floor = e;
            } else {
                match self.steady_min() {
                    Some(min) if min > self.floor => {
                        jumped = min > self.floor + JUMP_DB;
                        self.floor = min;
                    }
                    _ => self.floor += CREEP_DB,
                }
            }
        }

        let above = !silent && e > self.floor + MARGIN_DB;
        if jumped {
            self.hang = 0;
        }
        let speech = vad_voiced && (above || self.hang > 0);
        if above && self.prev_above {
            self.hang = HANGOVER;
        } else if !above {
            self.hang = self.hang.saturating_sub(1);
        }
        self.prev_above = above;
        speech
    }

    /// High-passes the frame into the history; returns its energy (dB) and whether it is
    /// digital silence.
    fn measure(&mut self, frame: &[i16]) -> (f64, bool) {
        // Decimated samples this frame adds; the history moves once by that many.
        let new = (self.dec_n + frame.len()) / self.dec;
        let kept = new.min(self.hist_len);
        let skip = new - kept;
        self.hist.copy_within(kept..self.hist_len, 0);
        let base = self.hist_len - kept;
        let mut k = 0;
        let mut sum = 0.0f64;
        let mut silent = true;
        for &x in frame {
            silent &= x.unsigned_abs() <= SILENCE_PEAK;
            let y = self.hp.run(x as f64);
            sum += y * y;
            self.dec_acc += y;
            self.dec_n += 1;
            if self.dec_n == self.dec {
                if k >= skip {
                    self.hist[base + k - skip] = (self.dec_acc / self.dec as f64) as f32;
                }
                k += 1;
                self.dec_acc = 0.0;
                self.dec_n = 0;
            }
        }
        if silent || frame.is_empty() {
            return (SILENCE_DB, true);
        }
        let ms = sum / frame.len() as f64 / (32768.0 * 32768.0);
        ((10.0 * ms.log10()).max(SILENCE_DB), false)
    }

    /// Highest normalised autocorrelation of the last `hist_len - max_lag` samples against
    /// the history `min_lag..=max_lag` samples earlier.
    fn periodicity_now(&self) -> f64 {
        let h = &self.hist[..self.hist_len];
        let (lo, hi) = (self.min_lag, self.max_lag);
        if lo == 0 || hi <= lo || hi >= h.len() {
            return 0.0;
        }
        let w = h.len() - hi;
        let a = &h[hi..];
        let ea: f32 = a.iter().map(|v| v * v).sum();
        if ea <= 0.0 {
            return 0.0;
        }
        // Energy of the lagged window, slid one sample per lag.
        let mut eb: f32 = h[hi - lo..hi - lo + w].iter().map(|v| v * v).sum();
        let mut best = 0.0f32;
        for lag in lo..=hi {
            let start = hi - lag;
            if lag > lo {
                // The window moved one sample earlier: gained h[start], lost h[start + w].
                eb += h[start] * h[start] - h[start + w] * h[start + w];
            }
            let b = &h[start..start + w];
            let mut xy = 0.0f32;
            for (x, y) in a.iter().zip(b) {
                xy += x * y;
            }
            let den = (ea * eb.max(0.0)).sqrt();
            if den > 0.0 {
                best = best.max(xy / den);
            }
        }
        best.min(1.0) as f64
    }

    /// The lowest energy of the last [`WINDOW`] frames when they look like steady noise.
    fn steady_min(&self) -> Option<f64> {
        if self.frames < WINDOW as u64 {
            return None;
        }
        let (mut lo, mut hi, mut per_sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for i in 0..WINDOW {
            if self.per[i] > STEADY_MAX_PER || self.energy[i] <= SILENCE_DB {
                return None;
            }
            lo = lo.min(self.energy[i]);
            hi = hi.max(self.energy[i]);
            per_sum += self.per[i];
        }
        (hi - lo <= STEADY_DB && per_sum / WINDOW as f64 <= STEADY_MEAN_PER).then_some(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::asr::endpoint::VoiceDetector;
    use crate::audio::synth::{mix_at_snr, noise, NoiseKind};

    const FRAME_MS: usize = 20;
    /// The tracker's merge rule: an unvoiced frame ending more than this after the last
    /// voiced one resets the count.
    const GAP_MS: usize = 150;

    fn wav(name: &str) -> (Vec<i16>, u32) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("test-audio").join(name);
        crate::audio::wav::read_mono16(&path).unwrap()
    }

    /// Per-frame decisions: the VAD alone and the VAD behind a gate.
    fn decide(samples: &[i16], rate: u32) -> (Vec<bool>, Vec<bool>) {
        let mut vad = VoiceDetector::new(rate, 2).unwrap();
        let mut gate = NoiseGate::new(rate);
        let n = vad.frame_len();
        samples
            .chunks_exact(n)
            .map(|f| {
                let v = vad.is_voice(f);
                (v, gate.is_speech(f, v))
            })
            .unzip()
    }

    /// The longest voiced time (ms) the tracker would count: voiced frames, gaps under
    /// 150 ms merged.
    fn longest_run_ms(v: &[bool]) -> usize {
        let (mut best, mut cur, mut last_end) = (0, 0, None::<usize>);
        for (i, &voiced) in v.iter().enumerate() {
            if voiced {
                last_end = Some(i + 1);
                cur += FRAME_MS;
                best = best.max(cur);
            } else if last_end.is_some_and(|end| (i + 1 - end) * FRAME_MS > GAP_MS) {
                cur = 0;
            }
        }
        best
    }

    /// When (ms, end of the confirming frame) the tracker would confirm an onset needing
    /// `need_ms` of voiced audio.
    fn onset_ms(v: &[bool], need_ms: usize) -> Option<usize> {
        let (mut cur, mut last_end, mut open) = (0, 0, false);
        for (i, &voiced) in v.iter().enumerate() {
            if voiced {
                open = true;
                last_end = i + 1;
                cur += FRAME_MS;
                if cur >= need_ms {
                    return Some((i + 1) * FRAME_MS);
                }
            } else if open && (i + 1 - last_end) * FRAME_MS > GAP_MS {
                open = false;
                cur = 0;
            }
        }
        None
    }

    fn count(v: &[bool]) -> usize {
        v.iter().filter(|&&b| b).count()
    }

    const KINDS: [NoiseKind; 3] = [NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown];
    const SPEECH_8K: [&str; 5] = ["ko-hello-8k.wav", "ko-hello-quiet-8k.wav", "ko-numbers-8k.wav", "ko-weather-8k.wav", "ko-long-8k.wav"];

    /// (a) Steady noise, 5 s at 8 kHz. The VAD alone takes white and pink noise at -25 and
    /// -20 dBFS and brown at -20 for speech for the whole 5 s (and pink at -30, brown at -25
    /// for 340-420 ms runs): a barge-in every time. Behind the gate: no frame at all when the
    /// noise is there from the first frame, and at most the VAD's own 80 ms onset reaction
    /// when it starts after digital silence or after quieter noise; never an onset's 100 ms.
    #[test]
    fn noise_gate_rejects_steady_noise_the_vad_alone_calls_speech() {
        let mut vad_fails = 0;
        for kind in KINDS {
            for dbfs in [-40.0, -30.0, -25.0, -20.0] {
                for seed in 1..=2 {
                    let n = noise(kind, dbfs, 40_000, seed);
                    let (vad, gated) = decide(&n, 8000);
                    let (v, g) = (longest_run_ms(&vad), longest_run_ms(&gated));
                    assert!(g <= 40, "{kind:?} {dbfs} dBFS seed {seed}: gated run {g} ms (VAD alone {v} ms)");
                    if v >= 200 {
                        vad_fails += 1;
                    }
                    if dbfs == -20.0 {
                        assert!(v >= 4000, "{kind:?} -20 dBFS: the VAD alone voices {v} ms");
                    }
                    // After 1 s of digital silence, and after 1 s of -50 dBFS noise.
                    for lead in [vec![0i16; 8000], noise(kind, -50.0, 8000, seed + 10)] {
                        let mut x = lead;
                        x.extend_from_slice(&n);
                        let (_, gated) = decide(&x, 8000);
                        let g = longest_run_ms(&gated);
                        assert!(g < 100, "{kind:?} {dbfs} dBFS after a quiet lead: gated run {g} ms");
                    }
                }
            }
        }
        assert!(vad_fails >= 12, "the VAD alone fails {vad_fails} of 24 cases");
    }

    /// (a) at 16 kHz, and louder noise (-16 and -10 dBFS), 10 s each.
    #[test]
    fn noise_gate_rejects_loud_noise_at_16k() {
        for kind in KINDS {
            for dbfs in [-25.0, -16.0, -10.0] {
                let n = noise(kind, dbfs, 160_000, 3);
                let (vad, gated) = decide(&n, 16000);
                let g = longest_run_ms(&gated);
                assert!(longest_run_ms(&vad) >= 1000, "{kind:?} {dbfs}: the VAD alone should fail here");
                assert!(g <= 40, "{kind:?} {dbfs} dBFS at 16 kHz: gated run {g} ms");
                assert!(count(&gated) * FRAME_MS <= 200, "{kind:?} {dbfs}: {} stray frames", count(&gated));
            }
        }
    }

    /// Speech mixed into `kind` noise at `snr` dB: the onset shift in ms against the clean
    /// file's VAD-only onset, the share of the clean VAD-voiced frames still voiced, and the
    /// share of the frames the VAD voices in both the clean and the noisy file that the gate
    /// drops.
    fn speech_in_noise(name: &str, kind: NoiseKind, snr: f64) -> (i64, f64, f64) {
        let (clean, rate) = wav(name);
        let (clean_vad, _) = decide(&clean, rate);
        let n = noise(kind, -30.0, clean.len(), 77);
        let mixed = mix_at_snr(&clean, &n, snr);
        let (mixed_vad, gated) = decide(&mixed, rate);
        let want = onset_ms(&clean_vad, 100).unwrap();
        let got = onset_ms(&gated, 100).unwrap_or_else(|| panic!("{name} {kind:?} {snr} dB: no onset"));
        let kept = clean_vad.iter().zip(&gated).filter(|(c, g)| **c && **g).count();
        let both: Vec<usize> = (0..clean_vad.len()).filter(|&i| clean_vad[i] && mixed_vad[i]).collect();
        let dropped = both.iter().filter(|&&i| !gated[i]).count();
        (got as i64 - want as i64, kept as f64 / count(&clean_vad) as f64, dropped as f64 / both.len().max(1) as f64)
    }

    /// (b) Speech at 20 and 10 dB SNR in pink and white noise: onset within 150 ms of the clean
    /// file's VAD-only onset (measured: 0-60 ms, the VAD's own shift), and most of the clean
    /// VAD's voiced frames kept (measured: 84-100 %; the lowest, the quiet talker in white
    /// noise at 10 dB, is where the VAD itself stops voicing weak syllables).
    #[test]
    fn noise_gate_keeps_speech_at_20_and_10_db_snr() {
        for name in SPEECH_8K {
            for kind in [NoiseKind::Pink, NoiseKind::White] {
                for snr in [20.0, 10.0] {
                    let (shift, kept, _) = speech_in_noise(name, kind, snr);
                    assert!(shift.abs() <= 150, "{name} {kind:?} {snr} dB: onset moved {shift} ms");
                    assert!(kept >= 0.75, "{name} {kind:?} {snr} dB: kept {:.0} % of voiced frames", kept * 100.0);
                }
            }
        }
    }

    /// (b) at 5 dB SNR (pink, white, brown): onset still within 150 ms (measured 0-60 ms),
    /// at least 60 % of voiced frames kept (measured 66 %+).
    #[test]
    fn noise_gate_keeps_speech_at_5_db_snr() {
        for name in SPEECH_8K {
            for kind in KINDS {
                let (shift, kept, _) = speech_in_noise(name, kind, 5.0);
                assert!(shift.abs() <= 150, "{name} {kind:?} 5 dB: onset moved {shift} ms");
                assert!(kept >= 0.6, "{name} {kind:?} 5 dB: kept {:.0} %", kept * 100.0);
            }
        }
    }

    /// The floor does not climb into a 13.6 s utterance: in noise at 10 dB SNR, no silence
    /// inside the speech as long as the default end-of-speech timer (800 ms) minus the
    /// VAD hangover, nor longer than the clean VAD's own longest inner gap plus 200 ms.
    #[test]
    fn noise_gate_floor_stays_below_a_long_utterance() {
        let (clean, rate) = wav("ko-long-8k.wav");
        let (clean_vad, _) = decide(&clean, rate);
        let first = clean_vad.iter().position(|&v| v).unwrap();
        let last = clean_vad.iter().rposition(|&v| v).unwrap();
        let longest_gap = |v: &[bool]| {
            let (mut best, mut cur) = (0, 0);
            for &x in &v[first..=last] {
                cur = if x { 0 } else { cur + FRAME_MS };
                best = best.max(cur);
            }
            best
        };
        let clean_gap = longest_gap(&clean_vad);
        for kind in KINDS {
            for snr in [20.0, 10.0] {
                let mixed = mix_at_snr(&clean, &noise(kind, -30.0, clean.len(), 5), snr);
                let mut vad = VoiceDetector::new(rate, 2).unwrap();
                let mut gate = NoiseGate::new(rate);
                let mut gated = Vec::new();
                for f in mixed.chunks_exact(vad.frame_len()) {
                    let v = vad.is_voice(f);
                    gated.push(gate.is_speech(f, v));
                    // The floor stays at the noise, not at the speech: the noise alone is
                    // about -30 dBFS (10 dB) or -40 dBFS (20 dB) before the high-pass.
                    assert!(gate.floor_dbfs() < -28.0, "{kind:?} {snr} dB: floor {:.1}", gate.floor_dbfs());
                }
                let gap = longest_gap(&gated);
                assert!(gap < 680 && gap <= clean_gap + 200, "{kind:?} {snr} dB: {gap} ms gap (clean {clean_gap} ms)");
            }
        }
    }

    /// (c) Clean speech: the same onset as the VAD alone, and almost every frame the same.
    #[test]
    fn noise_gate_passes_clean_speech_like_the_vad_alone() {
        for name in SPEECH_8K.iter().chain(&["ko-hello-16k.wav"]) {
            let (x, rate) = wav(name);
            let (vad, gated) = decide(&x, rate);
            let (a, b) = (onset_ms(&vad, 100).unwrap(), onset_ms(&gated, 100).unwrap());
            assert!(b.abs_diff(a) <= 40, "{name}: onset {b} ms, VAD alone {a} ms");
            assert_eq!(onset_ms(&vad, 200), onset_ms(&gated, 200), "{name}: barge-in point");
            let differ = vad.iter().zip(&gated).filter(|(p, q)| p != q).count();
            assert!(differ <= 3, "{name}: {differ} frames differ from the VAD alone");
        }
    }

    /// (d) Digital silence, then speech: the floor is at -100 and speech passes at once; then
    /// the bundled low-level noise file is no speech either.
    #[test]
    fn noise_gate_digital_silence_then_speech() {
        let (silence, _) = wav("silence-3s-8k.wav");
        let (speech, _) = wav("ko-hello-8k.wav");
        let mut x = silence.clone();
        x.extend_from_slice(&speech);
        let (vad, gated) = decide(&x, 8000);
        assert_eq!(count(&gated[..150]), 0);
        assert_eq!(onset_ms(&gated, 100), onset_ms(&vad, 100));
        assert!(onset_ms(&gated, 100).unwrap() <= 3000 + 600);
        let mut gate = NoiseGate::new(8000);
        for f in silence.chunks_exact(160) {
            assert!(!gate.is_speech(f, true));
            assert_eq!(gate.floor_dbfs(), -100.0);
        }
        let (hiss, _) = wav("noise-2s-8k.wav");
        assert!(longest_run_ms(&decide(&hiss, 8000).1) <= 40);
    }

    /// Speech in the very first frame (no lead-in) is taken for the floor for one frame only.
    #[test]
    fn noise_gate_speech_from_the_first_frame() {
        for name in SPEECH_8K {
            let (x, rate) = wav(name);
            let start = x.chunks_exact(160).position(|f| f.iter().any(|&s| s != 0)).unwrap() * 160;
            let (vad, gated) = decide(&x[start..], rate);
            let (a, b) = (onset_ms(&vad, 100).unwrap(), onset_ms(&gated, 100).unwrap());
            assert!(b.abs_diff(a) <= 40, "{name}: onset {b} ms, VAD alone {a} ms");
        }
    }

    /// Dropped packets (1-3 frames of zeros every 500 ms) inside noise do not pull the floor
    /// down, so the noise that resumes is still noise.
    #[test]
    fn noise_gate_dropouts_inside_noise() {
        for kind in KINDS {
            for zeros in 1..=3 {
                let mut x = noise(kind, -25.0, 80_000, 3);
                for at in (4000..80_000).step_by(4000) {
                    x[at..at + 160 * zeros].fill(0);
                }
                let (_, gated) = decide(&x, 8000);
                let g = longest_run_ms(&gated);
                assert!(g <= 40, "{kind:?}, {zeros} zero frames: gated run {g} ms");
            }
        }
    }

    #[test]
    fn noise_gate_never_speech_without_the_vad() {
        let mut gate = NoiseGate::new(8000);
        let (speech, _) = wav("ko-hello-8k.wav");
        assert!(speech.chunks_exact(160).all(|f| !gate.is_speech(f, false)));
        // Odd frame sizes and an empty frame do not panic.
        assert!(!gate.is_speech(&[], true));
        let _ = gate.is_speech(&speech[4000..4100], true);
        for rate in [8000, 11025, 16000, 32000, 48000] {
            let mut g = NoiseGate::new(rate);
            let f = vec![1000i16; (rate / 50) as usize];
            let _ = g.is_speech(&f, true);
            assert!(g.floor_dbfs().is_finite());
        }
    }

    /// The periodicity feature separates voiced speech from noise (the reason the floor
    /// stays out of vowels).
    #[test]
    fn noise_gate_periodicity_tells_vowels_from_noise() {
        let mut gate = NoiseGate::new(8000);
        let mut worst_noise: f64 = 0.0;
        for kind in [NoiseKind::White, NoiseKind::Pink] {
            for f in noise(kind, -25.0, 16_000, 9).chunks_exact(160).skip(2) {
                gate.is_speech(f, true);
                worst_noise = worst_noise.max(gate.periodicity());
            }
        }
        assert!(worst_noise < 0.45, "noise periodicity {worst_noise:.2}");
        let mut gate = NoiseGate::new(8000);
        let tone: Vec<i16> = (0..1600)
            .map(|i| {
                let t = i as f64 / 8000.0;
                (4000.0 * ((std::f64::consts::TAU * 150.0 * t).sin() + 0.5 * (std::f64::consts::TAU * 450.0 * t).sin())) as i16
            })
            .collect();
        for f in tone.chunks_exact(160) {
            gate.is_speech(f, true);
        }
        assert!(gate.periodicity() > 0.9, "tone periodicity {:.2}", gate.periodicity());
    }

    /// Prints (to stderr) the module doc's figures: `cargo test --lib noise -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn measure_noise_gate_table() {
        eprintln!("longest run, ms (VAD alone / gated), 5 s at 8 kHz, worst of seeds 1-3");
        for kind in KINDS {
            let mut row = format!("{kind:?}");
            for dbfs in [-40.0, -30.0, -25.0, -20.0] {
                let (mut v, mut g, mut after) = (0, 0, 0);
                for seed in 1..=3 {
                    let n = noise(kind, dbfs, 40_000, seed);
                    let (vad, gated) = decide(&n, 8000);
                    v = v.max(longest_run_ms(&vad));
                    g = g.max(longest_run_ms(&gated));
                    let mut x = vec![0i16; 8000];
                    x.extend_from_slice(&n);
                    after = after.max(longest_run_ms(&decide(&x, 8000).1));
                }
                row += &format!(" | {dbfs}: {v} / {g} (after silence {after})");
            }
            eprintln!("{row}");
        }
        eprintln!("speech: onset shift ms / kept % of clean VAD-voiced frames / dropped % of frames voiced by the VAD in both");
        for name in SPEECH_8K {
            let mut row = name.to_string();
            for kind in KINDS {
                for snr in [20.0, 10.0, 5.0] {
                    let (shift, kept, dropped) = speech_in_noise(name, kind, snr);
                    row += &format!(" | {kind:?} {snr}: {shift} / {:.0} / {:.0}", kept * 100.0, dropped * 100.0);
                }
            }
            eprintln!("{row}");
        }
        eprintln!("30 s of noise: longest run ms / voiced ms in all, seeds 100-102");
        for rate in [8000u32, 16000] {
            for kind in KINDS {
                let mut row = format!("{rate} {kind:?}");
                for dbfs in [-30.0, -25.0, -20.0, -16.0, -10.0] {
                    let (mut run, mut total) = (0, 0);
                    for seed in 100..103 {
                        let (_, gated) = decide(&noise(kind, dbfs, rate as usize * 30, seed), rate);
                        run = run.max(longest_run_ms(&gated));
                        total += count(&gated) * FRAME_MS;
                    }
                    row += &format!(" | {dbfs}: {run} / {total}");
                }
                eprintln!("{row}");
            }
        }
        eprintln!("dropouts (1-3 zero frames every 500 ms) in 10 s of -25 dBFS noise: longest run ms");
        for kind in KINDS {
            let mut row = format!("{kind:?}");
            for zeros in 1..=3 {
                let mut x = noise(kind, -25.0, 80_000, 3);
                for at in (4000..80_000).step_by(4000) {
                    x[at..at + 160 * zeros].fill(0);
                }
                row += &format!(" | {zeros}: {}", longest_run_ms(&decide(&x, 8000).1));
            }
            eprintln!("{row}");
        }
    }
}

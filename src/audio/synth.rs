//! Deterministic test signals without external tools: white, pink and brown noise at a given
//! level, a level meter, and a mixer that puts speech into noise at a given SNR.
//!
//! **Levels.** Every dBFS figure here is an RMS level relative to 32768 (a full-scale *square*
//! wave is 0 dBFS; a full-scale sine is -3.01 dBFS): `20 * log10(rms / 32768)`.
//!
//! **Generators.** A xorshift64* PRNG feeds Box-Muller Gaussian white noise. Pink noise is that
//! white noise through Paul Kellet's refined 7-pole filter (-3 dB/octave within ±0.05 dB from
//! 9 Hz at 44.1 kHz; the same coefficients are used at any rate, so the slope is right in
//! the telephone band); brown noise is a leaky integrator `y = 0.995 y + w` (-6 dB/octave above
//! about 6 Hz at 8 kHz). Each filter runs 4096 samples before the first kept one (no start-up
//! transient), then the whole buffer is scaled so its RMS is exactly the requested level
//! before rounding to i16 (saturating; only brown noise above about -12 dBFS ever clips).
//! The same `(kind, dbfs, len, seed)` gives the same samples every run (the PRNG is exact
//! integer arithmetic; `ln`, `cos` and `powf` could in principle differ by an ulp between
//! platforms' libm, moving a rare sample by 1).

/// The colour of [`noise`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoiseKind {
    /// Flat spectrum.
    White,
    /// -3 dB per octave (equal energy per octave).
    Pink,
    /// -6 dB per octave (Brownian / red).
    Brown,
}

/// xorshift64* (Vigna): small, fast, good enough for test noise.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so that seeds 0, 1, 2 ... give unrelated streams (and never 0).
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 0x2545_F491_4F6C_DD1D } else { z })
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    /// Standard normal (Box-Muller, one value per call).
    fn gauss(&mut self) -> f64 {
        let r = (-2.0 * self.unit().ln()).sqrt();
        r * (std::f64::consts::TAU * self.unit()).cos()
    }
}

/// `len` samples of `kind` noise whose RMS is `dbfs` (relative to 32768, see the module doc).
/// Deterministic for a given `seed`.
pub fn noise(kind: NoiseKind, dbfs: f64, len: usize, seed: u64) -> Vec<i16> {
    const WARM_UP: usize = 4096;
    let mut rng = Rng::new(seed);
    let mut b = [0.0f64; 7];
    let mut y = 0.0f64;
    let mut raw = Vec::with_capacity(len);
    for i in 0..WARM_UP + len {
        let w = rng.gauss();
        let v = match kind {
            NoiseKind::White => w,
            NoiseKind::Pink => {
                b[0] = 0.99886 * b[0] + w * 0.0555179;
                b[1] = 0.99332 * b[1] + w * 0.0750759;
                b[2] = 0.96900 * b[2] + w * 0.1538520;
                b[3] = 0.86650 * b[3] + w * 0.3104856;
                b[4] = 0.55000 * b[4] + w * 0.5329522;
                b[5] = -0.7616 * b[5] - w * 0.0168980;
                let p = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + w * 0.5362;
                b[6] = w * 0.115926;
                p
            }
            NoiseKind::Brown => {
                y = 0.995 * y + w;
                y
            }
        };
        if i >= WARM_UP {
            raw.push(v);
        }
    }
    if raw.is_empty() {
        return Vec::new();
    }
    // Brown noise wanders; take its (small) mean out so the RMS is all AC.
    let mean = if kind == NoiseKind::Brown { raw.iter().sum::<f64>() / len as f64 } else { 0.0 };
    let rms = (raw.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / len as f64).sqrt();
    let gain = if rms > 0.0 { 32768.0 * 10f64.powf(dbfs / 20.0) / rms } else { 0.0 };
    raw.iter().map(|v| to_i16((v - mean) * gain)).collect()
}

fn to_i16(v: f64) -> i16 {
    v.round().clamp(i16::MIN as f64, i16::MAX as f64) as i16
}

fn mean_square(samples: &[i16]) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.iter().map(|&s| s as f64 * s as f64).sum::<f64>() / samples.len() as f64
}

/// RMS level in dBFS (relative to 32768); `-inf` for empty input or digital silence.
pub fn rms_dbfs(samples: &[i16]) -> f64 {
    dbfs(mean_square(samples))
}

/// A mean square as dBFS (relative to 32768).
fn dbfs(mean_square: f64) -> f64 {
    10.0 * (mean_square / (32768.0 * 32768.0)).log10()
}

/// Blocks of this many samples decide which part of the speech is active in [`mix_at_snr`].
pub const ACTIVE_BLOCK: usize = 160;
/// Blocks above this RMS level (dBFS) are active speech in [`mix_at_snr`].
pub const ACTIVE_DBFS: f64 = -50.0;

/// Mean square of the active part of `speech` (blocks of [`ACTIVE_BLOCK`] samples above
/// [`ACTIVE_DBFS`]; the whole signal when none is).
fn active_mean_square(speech: &[i16]) -> f64 {
    let (mut sum, mut n) = (0.0f64, 0usize);
    for block in speech.chunks(ACTIVE_BLOCK) {
        if rms_dbfs(block) > ACTIVE_DBFS {
            sum += mean_square(block) * block.len() as f64;
            n += block.len();
        }
    }
    if n > 0 {
        sum / n as f64
    } else {
        mean_square(speech)
    }
}

/// RMS level (dBFS) of the active part of `speech`, as [`mix_at_snr`] measures it.
pub fn active_rms_dbfs(speech: &[i16]) -> f64 {
    dbfs(active_mean_square(speech))
}

/// Speech plus noise at `snr_db`: the noise is scaled so that the speech's RMS over its active
/// part (blocks of [`ACTIVE_BLOCK`] samples above [`ACTIVE_DBFS`]; the whole signal when none
/// is) exceeds the noise's RMS (over the whole noise buffer) by `snr_db`. The result is as long
/// as the longer input: noise longer than the speech continues after it, speech longer than
/// the noise continues clean. Sums saturate at the i16 range.
pub fn mix_at_snr(speech: &[i16], noise: &[i16], snr_db: f64) -> Vec<i16> {
    let speech_ms = active_mean_square(speech);
    let noise_ms = mean_square(noise);
    let gain = if noise_ms > 0.0 { (speech_ms / noise_ms).sqrt() * 10f64.powf(-snr_db / 20.0) } else { 0.0 };
    (0..speech.len().max(noise.len()))
        .map(|i| {
            let s = speech.get(i).copied().unwrap_or(0) as f64;
            let v = noise.get(i).copied().unwrap_or(0) as f64;
            to_i16(s + v * gain)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [NoiseKind; 3] = [NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown];

    #[test]
    fn synth_noise_levels_are_within_half_a_db() {
        for kind in KINDS {
            for dbfs in [-60.0, -40.0, -30.0, -25.0, -20.0, -16.0] {
                for len in [8000, 40_000] {
                    let x = noise(kind, dbfs, len, 7);
                    assert_eq!(x.len(), len);
                    let got = rms_dbfs(&x);
                    assert!((got - dbfs).abs() < 0.5, "{kind:?} {dbfs} dBFS, {len} samples: got {got:.2}");
                    // Every second of it is near the level too (stationary, no start-up ramp);
                    // pink and brown noise wander more (their slow components).
                    let tol = match kind {
                        NoiseKind::White => 0.5,
                        NoiseKind::Pink => 1.0,
                        NoiseKind::Brown => 3.0,
                    };
                    for sec in x.chunks(8000) {
                        let s = rms_dbfs(sec);
                        assert!((s - dbfs).abs() < tol, "{kind:?} {dbfs}: a second at {s:.2}");
                    }
                }
            }
        }
    }

    #[test]
    fn synth_noise_is_deterministic_and_seeded() {
        for kind in KINDS {
            let a = noise(kind, -30.0, 4000, 42);
            assert_eq!(a, noise(kind, -30.0, 4000, 42));
            assert_ne!(a, noise(kind, -30.0, 4000, 43));
        }
        // A fixed fingerprint, so a change to the generator (which moves every figure
        // measured with it) is noticed.
        assert_eq!(noise(NoiseKind::White, -20.0, 6, 1), [-2225, 1870, 3084, -3246, 5707, 1832]);
        assert_eq!(noise(NoiseKind::Pink, -20.0, 6, 1), [2098, 2794, 3903, 1038, 4352, 4119]);
        assert_eq!(noise(NoiseKind::Brown, -20.0, 6, 1), [-4119, -2265, 829, -2603, 3190, 4969]);
        assert!(noise(NoiseKind::Pink, -30.0, 0, 1).is_empty());
    }

    /// Energy in the lower vs the upper half of the band: white is flat, pink leans low, brown
    /// leans low much more (first differences take out the low end: their energy relative to
    /// the signal's says how much is high-frequency).
    #[test]
    fn synth_noise_colours_differ() {
        let hf = |x: &[i16]| {
            let d: Vec<i16> = x.windows(2).map(|w| (w[1] as i32 - w[0] as i32).clamp(-32768, 32767) as i16).collect();
            rms_dbfs(&d) - rms_dbfs(x)
        };
        let w = hf(&noise(NoiseKind::White, -30.0, 16000, 3));
        let p = hf(&noise(NoiseKind::Pink, -30.0, 16000, 3));
        let b = hf(&noise(NoiseKind::Brown, -30.0, 16000, 3));
        assert!((w - 3.0).abs() < 0.5, "white: differences are +3 dB, got {w:.2}");
        assert!(p < w - 6.0 && b < p - 6.0, "white {w:.1}, pink {p:.1}, brown {b:.1}");
    }

    #[test]
    fn synth_rms_dbfs_reference() {
        assert_eq!(rms_dbfs(&[]), f64::NEG_INFINITY);
        assert_eq!(rms_dbfs(&[0; 160]), f64::NEG_INFINITY);
        assert!((rms_dbfs(&[i16::MIN; 10])).abs() < 1e-9);
        let sine: Vec<i16> = (0..8000).map(|i| (32767.0 * (i as f64 * 0.1).sin()) as i16).collect();
        assert!((rms_dbfs(&sine) + 3.01).abs() < 0.05);
    }

    #[test]
    fn synth_mix_hits_the_snr_over_active_speech() {
        // "Speech": a tone burst at -20 dBFS between digital silence.
        let mut speech = vec![0i16; 4000];
        speech.extend((0..8000).map(|i| (3277.0 * 1.414 * (i as f64 * 0.3).sin()) as i16));
        speech.extend(vec![0i16; 4000]);
        let n = noise(NoiseKind::Pink, -10.0, 24000, 5);
        for snr in [20.0, 10.0, 5.0, 0.0] {
            let mixed = mix_at_snr(&speech, &n, snr);
            assert_eq!(mixed.len(), 24000);
            // The noise alone is in the lead and past the speech's end.
            let noise_level = rms_dbfs(&mixed[16000..]);
            assert!((noise_level - (-20.0 - snr)).abs() < 0.6, "snr {snr}: noise at {noise_level:.2}");
            let speech_level = rms_dbfs(&speech[4000..12000]);
            assert!((speech_level - noise_level - snr).abs() < 0.6);
        }
        // No noise (or silent noise): speech unchanged.
        assert_eq!(mix_at_snr(&speech, &[], 10.0), speech);
        assert_eq!(mix_at_snr(&speech, &[0; 100], 10.0), speech);
        // Saturates rather than wrapping.
        let loud = mix_at_snr(&[30000; 160], &[30000; 160], 0.0);
        assert!(loud.iter().all(|&s| s == i16::MAX));
    }
}

//! Resampling for models that need a higher rate than the call's audio and do not allow
//! Kaldi to upsample (`--allow-upsample=true` missing from `conf/mfcc.conf`, as in
//! vosk-model-small-en-us-0.15). Runs on the decoder thread, block by block.

use rubato::{FftFixedIn, Resampler as _};

use super::AudioError;

/// A fixed-block resampler from `from` Hz to `to` Hz for mono i16 audio.
pub(crate) struct Resampler {
    inner: FftFixedIn<f32>,
    input: Vec<Vec<f32>>,
    output: Vec<Vec<f32>>,
    block: usize,
}

impl Resampler {
    /// A resampler that takes exactly `block` input samples per call.
    pub(crate) fn new(from: u32, to: u32, block: usize) -> Result<Resampler, AudioError> {
        let inner = FftFixedIn::<f32>::new(from as usize, to as usize, block, 2, 1).map_err(|e| AudioError::Resample { from, to, reason: e.to_string() })?;
        let out_max = inner.output_frames_max();
        Ok(Resampler { inner, input: vec![vec![0.0; block]], output: vec![vec![0.0; out_max]], block })
    }

    /// Input samples per call.
    pub(crate) fn block(&self) -> usize {
        self.block
    }

    /// Resamples one block of exactly [`Resampler::block`] samples, appending to `out`.
    pub(crate) fn process(&mut self, block: &[i16], out: &mut Vec<i16>) {
        debug_assert_eq!(block.len(), self.block);
        for (d, s) in self.input[0].iter_mut().zip(block) {
            *d = *s as f32 / 32768.0;
        }
        match self.inner.process_into_buffer(&self.input, &mut self.output, None) {
            Ok((_, produced)) => out.extend(self.output[0][..produced].iter().map(|v| (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16)),
            Err(_) => out.extend(std::iter::repeat_n(0, self.block)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_the_length_and_keeps_a_tone() {
        let mut r = Resampler::new(8000, 16000, 800).unwrap();
        let tone: Vec<i16> = (0..8000).map(|i| ((i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 8000.0).sin() * 10000.0) as i16).collect();
        let mut out = Vec::new();
        for b in tone.chunks(800) {
            r.process(b, &mut out);
        }
        assert_eq!(out.len(), 16000);
        let peak = out[4000..].iter().map(|v| v.unsigned_abs()).max().unwrap();
        assert!((9000..=11000).contains(&peak), "peak {peak}");
    }
}

//! WAV helpers (hound): read a mono 16-bit file for the simulated host and the direct
//! baseline, and the `--record` writer the decoder thread uses.

use std::path::Path;

use super::AudioError;

/// Samples and rate of a mono 16-bit PCM WAV.
pub fn read_mono16(path: &Path) -> Result<(Vec<i16>, u32), AudioError> {
    let p = path.display().to_string();
    let reader = hound::WavReader::open(path).map_err(|source| AudioError::Wav { path: p.clone(), source })?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 || spec.sample_format != hound::SampleFormat::Int {
        return Err(AudioError::WavFormat {
            path: p,
            reason: format!("need mono 16-bit PCM, got {} channel(s), {} bit {:?}", spec.channels, spec.bits_per_sample, spec.sample_format),
        });
    }
    let samples = reader.into_samples::<i16>().collect::<Result<Vec<_>, _>>().map_err(|source| AudioError::Wav { path: p, source })?;
    Ok((samples, spec.sample_rate))
}

/// The spec every file the bridge writes uses.
pub fn mono16_spec(rate: u32) -> hound::WavSpec {
    hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int }
}

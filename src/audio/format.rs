//! `EAGI_AUDIO_FORMAT` names and their sample rates. fd 3 carries signed-linear 16-bit mono in
//! host byte order; the `slinN` names differ only in rate (`research/eagi-semantics.md` §2).

use super::AudioError;

/// The sample rate of an `EAGI_AUDIO_FORMAT` value; unset or empty means `slin` (8 kHz).
///
/// ```
/// use asr_bridge::audio::rate_for_eagi_format;
/// assert_eq!(rate_for_eagi_format(None).unwrap(), 8000);
/// assert_eq!(rate_for_eagi_format(Some("SLIN16")).unwrap(), 16000);
/// assert!(rate_for_eagi_format(Some("ulaw")).is_err());
/// ```
pub fn rate_for_eagi_format(name: Option<&str>) -> Result<u32, AudioError> {
    let Some(name) = name.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(8000);
    };
    let rate = match name.to_ascii_lowercase().as_str() {
        "slin" => 8000,
        "slin12" => 12000,
        "slin16" => 16000,
        "slin24" => 24000,
        "slin32" => 32000,
        "slin44" => 44100,
        "slin48" => 48000,
        "slin96" => 96000,
        "slin192" => 192000,
        _ => return Err(AudioError::UnsupportedFormat(name.to_string())),
    };
    Ok(rate)
}

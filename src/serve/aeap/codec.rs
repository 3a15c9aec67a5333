//! The codecs the AEAP engine takes, by Asterisk's codec names (`ast_format_get_codec_name`):
//! `ulaw` and `alaw` (8 kHz, one byte a sample, decoded here), `slin` (8 kHz) and `slin16`
//! (16 kHz), 16-bit samples in the host's byte order, which Asterisk writes as they are (little
//! endian on the machines it runs on).

use crate::audio::g711;

/// An audio codec of the `setup` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Ulaw,
    Alaw,
    Slin,
    Slin16,
}

impl Codec {
    /// The first codec of Asterisk's offer this engine takes (res_speech_aeap offers one: the
    /// format SpeechCreate chose from the client section's `codecs`).
    pub fn choose(offered: &[String]) -> Option<Codec> {
        offered.iter().find_map(|n| Codec::named(n))
    }

    /// The codec of an Asterisk codec name.
    pub fn named(name: &str) -> Option<Codec> {
        match name {
            "ulaw" => Some(Codec::Ulaw),
            "alaw" => Some(Codec::Alaw),
            "slin" => Some(Codec::Slin),
            "slin16" => Some(Codec::Slin16),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Codec::Ulaw => "ulaw",
            Codec::Alaw => "alaw",
            Codec::Slin => "slin",
            Codec::Slin16 => "slin16",
        }
    }

    pub fn rate(self) -> u32 {
        match self {
            Codec::Slin16 => 16000,
            _ => 8000,
        }
    }

    /// Bytes per sample on the wire.
    pub fn width(self) -> usize {
        match self {
            Codec::Ulaw | Codec::Alaw => 1,
            Codec::Slin | Codec::Slin16 => 2,
        }
    }

    /// Appends the samples of `bytes` to `out`; `odd` carries a byte of a 16-bit sample split
    /// across frames (Asterisk never splits one, but a frame is only bytes).
    pub fn decode(self, bytes: &[u8], odd: &mut Option<u8>, out: &mut Vec<i16>) {
        match self {
            Codec::Ulaw => out.extend(bytes.iter().map(|b| g711::ulaw_to_linear(*b))),
            Codec::Alaw => out.extend(bytes.iter().map(|b| g711::alaw_to_linear(*b))),
            Codec::Slin | Codec::Slin16 => {
                let mut rest = bytes;
                if let Some(lo) = odd.take() {
                    match rest.split_first() {
                        Some((hi, tail)) => {
                            out.push(i16::from_le_bytes([lo, *hi]));
                            rest = tail;
                        }
                        None => *odd = Some(lo),
                    }
                }
                let mut pairs = rest.chunks_exact(2);
                out.extend(pairs.by_ref().map(|p| i16::from_le_bytes([p[0], p[1]])));
                if let [b] = pairs.remainder() {
                    *odd = Some(*b);
                }
            }
        }
    }

    /// The wire bytes of `samples` (the simulated client's side).
    pub fn encode(self, samples: &[i16]) -> Vec<u8> {
        match self {
            Codec::Ulaw => samples.iter().map(|s| g711::linear_to_ulaw(*s)).collect(),
            Codec::Alaw => samples.iter().map(|s| g711::linear_to_alaw(*s)).collect(),
            Codec::Slin | Codec::Slin16 => samples.iter().flat_map(|s| s.to_le_bytes()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_rates_and_choice() {
        assert_eq!(Codec::choose(&["opus".into(), "alaw".into()]), Some(Codec::Alaw));
        assert_eq!(Codec::choose(&["g729".into()]), None);
        assert_eq!(Codec::Slin16.rate(), 16000);
        for c in [Codec::Ulaw, Codec::Alaw, Codec::Slin, Codec::Slin16] {
            assert_eq!(Codec::named(c.name()), Some(c));
        }
    }

    #[test]
    fn slin_split_across_frames_loses_nothing() {
        let samples = [1i16, -2, 300, -32768];
        let bytes = Codec::Slin.encode(&samples);
        let (mut odd, mut out) = (None, Vec::new());
        Codec::Slin.decode(&bytes[..3], &mut odd, &mut out);
        Codec::Slin.decode(&bytes[3..], &mut odd, &mut out);
        assert_eq!(out, samples);
        assert_eq!(odd, None);
    }
}

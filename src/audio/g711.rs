//! G.711 (ITU-T G.711 µ-law and A-law) to and from 16-bit linear samples, computed from the
//! segment/mantissa definitions of the standard (no tables): what Asterisk sends an AEAP speech
//! engine for `codecs=ulaw` or `codecs=alaw`, and what the simulated AEAP client encodes.
//! Pure functions; any thread.

/// µ-law bias of G.711 (added before the segment search).
const ULAW_BIAS: i32 = 0x84;
/// Largest magnitude µ-law encodes before clipping.
const ULAW_CLIP: i32 = 32635;

/// One µ-law byte as a 16-bit sample.
pub(crate) fn ulaw_to_linear(byte: u8) -> i16 {
    let u = !byte;
    let exponent = i32::from((u >> 4) & 0x07);
    let mantissa = i32::from(u & 0x0f);
    let magnitude = (((mantissa << 3) + ULAW_BIAS) << exponent) - ULAW_BIAS;
    (if u & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// One 16-bit sample as a µ-law byte.
pub(crate) fn linear_to_ulaw(sample: i16) -> u8 {
    let s = i32::from(sample);
    let sign = if s < 0 { 0x80 } else { 0 };
    let magnitude = s.unsigned_abs().min(ULAW_CLIP as u32) as i32 + ULAW_BIAS;
    let exponent = (0..8).rev().find(|e| magnitude & (0x80 << e) != 0).unwrap_or(0);
    let mantissa = (magnitude >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) as u8 | mantissa as u8)
}

/// One A-law byte as a 16-bit sample.
pub(crate) fn alaw_to_linear(byte: u8) -> i16 {
    let a = byte ^ 0x55;
    let exponent = i32::from((a >> 4) & 0x07);
    let mantissa = i32::from(a & 0x0f);
    let magnitude = match exponent {
        0 => (mantissa << 4) + 8,
        e => ((mantissa << 4) + 0x108) << (e - 1),
    };
    (if a & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// One 16-bit sample as an A-law byte.
pub(crate) fn linear_to_alaw(sample: i16) -> u8 {
    let s = i32::from(sample);
    let sign: u8 = if s >= 0 { 0x80 } else { 0 };
    let magnitude = s.unsigned_abs().min(32767) as i32;
    let byte = if magnitude < 256 {
        (magnitude >> 4) as u8
    } else {
        let exponent = (1..8).rev().find(|e| magnitude >= (0x100 << (e - 1))).unwrap_or(1);
        ((exponent << 4) | ((magnitude >> (exponent + 3)) & 0x0f)) as u8
    };
    (sign | byte) ^ 0x55
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference points of G.711: silence codes and full scale.
    #[test]
    fn known_codes() {
        assert_eq!(ulaw_to_linear(0xff), 0);
        assert_eq!(ulaw_to_linear(0x7f), 0);
        assert_eq!(ulaw_to_linear(0x80), 32124);
        assert_eq!(ulaw_to_linear(0x00), -32124);
        assert_eq!(linear_to_ulaw(0), 0xff);
        assert_eq!(alaw_to_linear(0xd5), 8);
        assert_eq!(alaw_to_linear(0x55), -8);
        assert_eq!(alaw_to_linear(0xaa), 32256);
        assert_eq!(linear_to_alaw(0), 0xd5);
    }

    /// Every code decodes to a value that encodes back to the same code (both laws), and
    /// encoding any sample loses at most the law's step at that magnitude.
    #[test]
    fn round_trips() {
        for b in 0..=255u8 {
            let u = ulaw_to_linear(b);
            assert_eq!(ulaw_to_linear(linear_to_ulaw(u)), u, "ulaw {b:#x}");
            let a = alaw_to_linear(b);
            assert_eq!(linear_to_alaw(a), b, "alaw {b:#x}");
        }
        for s in (i16::MIN..=i16::MAX).step_by(7) {
            let err = |d: i16| (i32::from(d) - i32::from(s)).abs();
            let tol = (i32::from(s).abs() / 16).max(16) + 1;
            assert!(err(ulaw_to_linear(linear_to_ulaw(s))) <= tol.max(132), "ulaw {s}");
            assert!(err(alaw_to_linear(linear_to_alaw(s))) <= tol.max(64), "alaw {s}");
        }
    }
}

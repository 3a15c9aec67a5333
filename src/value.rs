//! Values typed where they enter: the parsers clap runs on options (`value_parser`), shared by
//! every mode, so a typo is refused at the edge with the same words everywhere.

use std::time::Duration;

/// Parses `700ms`, `5s`, `1.5s`, `2m`, or a bare number of milliseconds.
///
/// ```
/// use asr_bridge::value::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("700ms"), Some(Duration::from_millis(700)));
/// assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("250"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("-1s"), None);
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("min") {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 0.001)
    };
    let v: f64 = num.trim().parse().ok()?;
    if !v.is_finite() || v < 0.0 || v * scale > 86_400.0 {
        return None;
    }
    Some(Duration::from_secs_f64(v * scale))
}

/// A duration option (`value_parser = value::duration`): see [`parse_duration`].
pub fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).ok_or_else(|| "not a duration (use e.g. 700ms, 5s, 1.5s, 2m; a bare number is milliseconds)".to_string())
}

/// A duration option that must be more than zero.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be more than zero".to_string()),
        d => Ok(d),
    }
}

//! The AGI environment header (`agi_request: ...` lines up to an empty line), read once on the
//! controller thread before any command is sent (`res_agi.c` `setup_env`).

use super::AgiError;

/// The parsed header: every `key: value` pair in arrival order, unknown keys included.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgiHeader {
    vars: Vec<(String, String)>,
}

impl AgiHeader {
    /// Parses one header line (without its `\n`; a trailing `\r` is dropped) into the header.
    ///
    /// Lines are split at the first `:`; one space after it is part of the separator, so
    /// `agi_accountcode: ` gives an empty value. A duplicate key keeps its first value.
    pub fn push_line(&mut self, line_no: usize, line: &str) -> Result<(), AgiError> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let Some((key, value)) = line.split_once(':') else {
            return Err(AgiError::HeaderSyntax { line: line_no, text: truncate(line, 80) });
        };
        let value = value.strip_prefix(' ').unwrap_or(value);
        let key_ok = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !key_ok {
            return Err(AgiError::HeaderSyntax { line: line_no, text: truncate(line, 80) });
        }
        if self.get(key).is_none() {
            self.vars.push((key.to_string(), value.to_string()));
        }
        Ok(())
    }

    /// Parses a whole header given as text (tests, the simulated host).
    pub fn parse(text: &str) -> Result<AgiHeader, AgiError> {
        let mut h = AgiHeader::default();
        let mut n = 0;
        for (i, raw) in text.split_inclusive('\n').enumerate() {
            let Some(line) = raw.strip_suffix('\n') else {
                break; // a last line without its newline is not a complete line
            };
            if line.strip_suffix('\r').unwrap_or(line).is_empty() {
                return Ok(h);
            }
            h.push_line(i + 1, line)?;
            n = i + 1;
        }
        Err(AgiError::HeaderEof(n))
    }

    /// The value of `key`, if the header had it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// All pairs in arrival order.
    pub fn vars(&self) -> &[(String, String)] {
        &self.vars
    }

    /// `agi_arg_1` .. `agi_arg_N`, in order, stopping at the first gap.
    pub fn args(&self) -> Vec<String> {
        (1..).map_while(|i| self.get(&format!("agi_arg_{i}")).map(str::to_string)).collect()
    }

    /// True when Asterisk says this is EAGI (`agi_enhanced: 1.0`).
    pub fn enhanced(&self) -> bool {
        self.get("agi_enhanced").and_then(|v| v.trim().parse::<f64>().ok()).is_some_and(|v| v >= 1.0)
    }

    /// The call's language (`agi_language`), if given.
    pub fn language(&self) -> Option<&str> {
        self.get("agi_language").filter(|v| !v.is_empty())
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "agi_request: /var/lib/asterisk/agi-bin/probe\nagi_channel: Local/play@caller-0000000b;1\nagi_language: en\nagi_enhanced: 1.0\nagi_accountcode: \nagi_threadid: 139716664211136\nagi_arg_1: barge\nagi_arg_2: --end-silence=700ms\n\n";

    #[test]
    fn parses_the_real_trace_header() {
        let h = AgiHeader::parse(TRACE).unwrap();
        assert_eq!(h.get("agi_request"), Some("/var/lib/asterisk/agi-bin/probe"));
        assert_eq!(h.get("agi_accountcode"), Some(""));
        assert_eq!(h.args(), vec!["barge", "--end-silence=700ms"]);
        assert!(h.enhanced());
        assert_eq!(h.language(), Some("en"));
    }

    #[test]
    fn crlf_and_duplicates() {
        let h = AgiHeader::parse("agi_enhanced: 0.0\r\nagi_enhanced: 1.0\r\n\r\n").unwrap();
        assert_eq!(h.get("agi_enhanced"), Some("0.0"));
        assert!(!h.enhanced());
    }

    #[test]
    fn value_keeps_colons() {
        let h = AgiHeader::parse("agi_channel: SIP/a:b\n\n").unwrap();
        assert_eq!(h.get("agi_channel"), Some("SIP/a:b"));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(matches!(AgiHeader::parse("\u{1}\u{2}binary\n\n"), Err(AgiError::HeaderSyntax { line: 1, .. })));
        assert!(matches!(AgiHeader::parse("agi_x: 1\n"), Err(AgiError::HeaderEof(_))));
    }
}

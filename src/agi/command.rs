//! Typed AGI commands and the one quoting function. `Display` gives the exact wire form,
//! newline included. Built on the controller thread, written only by the AGI writer.
//!
//! Quoting follows `parse_args` in `res_agi.c` (see `research/eagi-semantics.md` §7): a
//! newline cannot be escaped, so CR, LF, NUL and the other control characters become a space;
//! `\` and `"` are escaped; the value is wrapped in quotes; the whole line stays under the
//! 8 KiB `fgets` buffer, or Asterisk would run the rest of the line as a second command.

use std::fmt;

/// Asterisk reads commands with `fgets` into 8192 bytes; the newline and NUL need two.
pub const MAX_LINE: usize = 8190;

/// Longest quoted value a command carries; leaves room for the command words.
pub const MAX_VALUE: usize = 8000;

/// Quotes `value` for one AGI argument, per `parse_args`.
///
/// ```
/// use asr_bridge::agi::quote;
/// assert_eq!(quote(r#"a "q" b\c"#), r#""a \"q\" b\\c""#);
/// assert_eq!(quote("two\nlines"), "\"two lines\"");
/// assert_eq!(quote(""), "\"\"");
/// ```
pub fn quote(value: &str) -> String {
    quote_limited(value, MAX_VALUE)
}

/// [`quote`] with an explicit bound on the quoted length (in bytes, quotes included).
/// Truncation never splits a UTF-8 character or an escape pair.
pub fn quote_limited(value: &str, max: usize) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for ch in value.chars() {
        let piece: &str = match ch {
            '\\' => "\\\\",
            '"' => "\\\"",
            c if c.is_control() && c != '\t' => " ",
            _ => {
                let mut buf = [0u8; 4];
                let s = ch.encode_utf8(&mut buf);
                if out.len() + s.len() + 1 > max {
                    break;
                }
                out.push_str(s);
                continue;
            }
        };
        if out.len() + piece.len() + 1 > max {
            break;
        }
        out.push_str(piece);
    }
    out.push('"');
    out
}

/// True for a name Asterisk takes as one plain word: letters, digits, `_`, and a dialplan
/// function form `NAME(args)` without spaces or quotes.
pub fn valid_variable_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 80 && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'(' | b')' | b'-' | b'.'))
}

/// One AGI command. `Display` is the wire form.
///
/// ```
/// use asr_bridge::agi::Command;
/// assert_eq!(Command::Answer.to_string(), "ANSWER\n");
/// let set = Command::SetVariable { name: "ASR_TEXT".into(), value: "say \"hi\"".into() };
/// assert_eq!(set.to_string(), "SET VARIABLE ASR_TEXT \"say \\\"hi\\\"\"\n");
/// assert_eq!(Command::WaitForDigit { timeout_ms: 1000 }.to_string(), "WAIT FOR DIGIT 1000\n");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Answer,
    Noop,
    ChannelStatus,
    GetVariable { name: String },
    SetVariable { name: String, value: String },
    Verbose { message: String, level: u8 },
    StreamFile { file: String, escape_digits: String },
    WaitForDigit { timeout_ms: i64 },
}

impl Command {
    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Answer => "ANSWER",
            Command::Noop => "NOOP",
            Command::ChannelStatus => "CHANNEL STATUS",
            Command::GetVariable { .. } => "GET VARIABLE",
            Command::SetVariable { .. } => "SET VARIABLE",
            Command::Verbose { .. } => "VERBOSE",
            Command::StreamFile { .. } => "STREAM FILE",
            Command::WaitForDigit { .. } => "WAIT FOR DIGIT",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Answer => f.write_str("ANSWER\n"),
            Command::Noop => f.write_str("NOOP\n"),
            Command::ChannelStatus => f.write_str("CHANNEL STATUS\n"),
            Command::GetVariable { name } => writeln!(f, "GET VARIABLE {name}"),
            Command::SetVariable { name, value } => {
                writeln!(f, "SET VARIABLE {name} {}", quote(value))
            }
            Command::Verbose { message, level } => {
                writeln!(f, "VERBOSE {} {level}", quote(message))
            }
            Command::StreamFile { file, escape_digits } => {
                writeln!(f, "STREAM FILE {} {}", quote(file), quote(escape_digits))
            }
            Command::WaitForDigit { timeout_ms } => writeln!(f, "WAIT FOR DIGIT {timeout_ms}"),
        }
    }
}

/// The host side: `parse_args` from `res_agi.c`, transcribed. The simulated host splits
/// command lines with it, and the tests use it as the oracle for [`quote`].
///
/// ```
/// use asr_bridge::agi::command::parse_args;
/// assert_eq!(parse_args(r#"SET VARIABLE X "a \"q\" b\\c""#), ["SET", "VARIABLE", "X", r#"a "q" b\c"#]);
/// ```
pub fn parse_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut whitespace = true;
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
            whitespace = false;
            continue;
        }
        match c {
            '"' => {
                quoted = !quoted;
                if whitespace {
                    whitespace = false;
                }
            }
            '\\' => escaped = true,
            ' ' | '\t' if !quoted => {
                if !whitespace {
                    args.push(std::mem::take(&mut cur));
                    whitespace = true;
                }
            }
            _ => {
                cur.push(c);
                whitespace = false;
            }
        }
    }
    if !whitespace {
        args.push(cur);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_through_parse_args() {
        for v in ["plain", "with space", "a \"q\" b\\c", "안녕하세요 \"세계\"", "tab\there", "\\", "\"", "end\\"] {
            let cmd = Command::SetVariable { name: "X".into(), value: v.into() };
            let wire = cmd.to_string();
            let args = parse_args(wire.trim_end_matches('\n'));
            assert_eq!(args, vec!["SET", "VARIABLE", "X", v], "value {v:?}");
        }
    }

    #[test]
    fn control_characters_become_spaces() {
        let args = parse_args(&quote("a\r\nb\0c\u{7}d"));
        assert_eq!(args, vec!["a  b c d"]);
    }

    #[test]
    fn empty_value_is_one_empty_argument() {
        let wire = Command::SetVariable { name: "X".into(), value: String::new() }.to_string();
        assert_eq!(parse_args(wire.trim_end()), vec!["SET", "VARIABLE", "X", ""]);
    }

    #[test]
    fn long_values_keep_the_line_under_8k_without_splitting_escapes() {
        let v = "\\".repeat(20_000);
        let wire = Command::SetVariable { name: "ASR_TEXT".into(), value: v }.to_string();
        assert!(wire.len() < MAX_LINE, "{}", wire.len());
        let args = parse_args(wire.trim_end());
        assert_eq!(args.len(), 4);
        assert!(args[3].chars().all(|c| c == '\\'));
        let v = "가".repeat(5000);
        let wire = Command::SetVariable { name: "ASR_TEXT".into(), value: v }.to_string();
        assert!(wire.len() < MAX_LINE);
        assert!(parse_args(wire.trim_end())[3].chars().all(|c| c == '가'));
    }

    #[test]
    fn variable_names() {
        assert!(valid_variable_name("ASR_TEXT"));
        assert!(!valid_variable_name("HASH(asr,text)")); // comma is not allowed
        assert!(!valid_variable_name("A B"));
        assert!(!valid_variable_name(""));
    }
}

//! Reply parsing: `200 result=N [(data)] [endpos=N]`, `510`, `511`, and the multi-line `520-`
//! usage block. Matches codes, never the text (the 511 text changed in 13.14/14.3).
//! Runs on the controller thread, fed one line at a time by [`ReplyParser`].

/// One complete reply from Asterisk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 result=...`. `result` is `None` for an empty `result=` (GET DATA with a bare `#`).
    Success { result: Option<i64>, data: Option<String>, endpos: Option<u64> },
    /// `510 Invalid or unknown command`.
    InvalidCommand,
    /// `511 Command Not Permitted on a dead channel or intercept routine`.
    DeadChannel,
    /// `520` invalid syntax, with the usage lines when Asterisk sent them.
    Usage(Vec<String>),
    /// Any other code, kept whole.
    Other { code: u16, text: String },
}

impl Reply {
    /// The numeric result of a `200` reply.
    pub fn result(&self) -> Option<i64> {
        match self {
            Reply::Success { result, .. } => *result,
            _ => None,
        }
    }

    /// The parenthesised data of a `200` reply.
    pub fn data(&self) -> Option<&str> {
        match self {
            Reply::Success { data, .. } => data.as_deref(),
            _ => None,
        }
    }

    /// True when the reply says the channel has hung up: `511`, or `200 result=-1` from a
    /// command that was running at the hangup.
    pub fn is_hangup(&self) -> bool {
        matches!(self, Reply::DeadChannel)
    }

    /// Parses a single-line reply. `520-` opens a block and needs [`ReplyParser`].
    ///
    /// ```
    /// use asr_bridge::agi::Reply;
    /// assert_eq!(
    ///     Reply::parse_line("200 result=0 (hello (x)) endpos=1600"),
    ///     Some(Reply::Success { result: Some(0), data: Some("hello (x)".into()), endpos: Some(1600) })
    /// );
    /// assert_eq!(Reply::parse_line("511 Command Not Permitted on a dead channel"), Some(Reply::DeadChannel));
    /// assert_eq!(Reply::parse_line("hello"), None);
    /// ```
    pub fn parse_line(line: &str) -> Option<Reply> {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let code_str = line.get(..3)?;
        if !code_str.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let code: u16 = code_str.parse().ok()?;
        let rest = &line[3..];
        if !(rest.is_empty() || rest.starts_with(' ') || rest.starts_with('-')) {
            return None;
        }
        match code {
            200 => parse_success(rest.trim_start()),
            510 => Some(Reply::InvalidCommand),
            511 => Some(Reply::DeadChannel),
            520 => Some(Reply::Usage(Vec::new())),
            _ => Some(Reply::Other { code, text: rest.trim_start().to_string() }),
        }
    }
}

fn parse_success(rest: &str) -> Option<Reply> {
    let after = rest.strip_prefix("result=")?;
    let num_end = after.find(|c: char| !(c.is_ascii_digit() || c == '-')).unwrap_or(after.len());
    let num = &after[..num_end];
    let result = if num.is_empty() { None } else { Some(num.parse::<i64>().ok()?) };
    let rest = &after[num_end..];
    if !(rest.is_empty() || rest.starts_with([' ', '\r'])) {
        return None;
    }
    let mut tail = rest.trim_start();
    let mut endpos = None;
    // `endpos=` comes last; the data may itself contain `)` and spaces.
    if let Some(idx) = tail.rfind("endpos=") {
        let (head, pos) = tail.split_at(idx);
        if let Ok(n) = pos["endpos=".len()..].trim().parse::<u64>() {
            endpos = Some(n);
            tail = head.trim_end();
        }
    }
    let data = if let Some(inner) = tail.strip_prefix('(') {
        Some(inner.strip_suffix(')').unwrap_or(inner).to_string())
    } else if tail.is_empty() {
        None
    } else {
        Some(tail.to_string())
    };
    Some(Reply::Success { result, data, endpos })
}

/// Gathers lines into replies: most are one line; `520-...` runs to `520 End of proper usage.`
#[derive(Debug, Default)]
pub struct ReplyParser {
    usage: Option<Vec<String>>,
}

/// What one line meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete reply.
    Reply(Reply),
    /// Part of a `520-` block; more lines follow.
    Pending,
    /// A line that is no reply (logged by the caller, never matched to a command).
    Stray(String),
}

impl ReplyParser {
    /// Feeds one line (without `\n`).
    pub fn feed(&mut self, line: &str) -> Parsed {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(block) = self.usage.as_mut() {
            if line.starts_with("520 ") || line == "520" {
                let lines = self.usage.take().unwrap_or_default();
                return Parsed::Reply(Reply::Usage(lines));
            }
            block.push(line.to_string());
            return Parsed::Pending;
        }
        if line.starts_with("520-") {
            self.usage = Some(Vec::new());
            return Parsed::Pending;
        }
        match Reply::parse_line(line) {
            Some(r) => Parsed::Reply(r),
            None => Parsed::Stray(line.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(result: Option<i64>, data: Option<&str>, endpos: Option<u64>) -> Reply {
        Reply::Success { result, data: data.map(str::to_string), endpos }
    }

    #[test]
    fn the_200_forms() {
        assert_eq!(Reply::parse_line("200 result=0"), Some(ok(Some(0), None, None)));
        assert_eq!(Reply::parse_line("200 result=1 (slin16)"), Some(ok(Some(1), Some("slin16"), None)));
        assert_eq!(Reply::parse_line("200 result=-1 endpos=0"), Some(ok(Some(-1), None, Some(0))));
        assert_eq!(Reply::parse_line("200 result=-1 (hangup) endpos=8000"), Some(ok(Some(-1), Some("hangup"), Some(8000))));
        assert_eq!(Reply::parse_line("200 result=53"), Some(ok(Some(53), None, None)));
        assert_eq!(Reply::parse_line("200 result="), Some(ok(None, None, None)));
        assert_eq!(Reply::parse_line("200 result=1 (a) b) c)\r"), Some(ok(Some(1), Some("a) b) c"), None)));
        assert_eq!(Reply::parse_line("200 result=x"), None);
    }

    #[test]
    fn codes_not_texts() {
        assert_eq!(Reply::parse_line("510 Invalid or unknown command"), Some(Reply::InvalidCommand));
        assert_eq!(Reply::parse_line("511 Command Not Permitted on a dead channel"), Some(Reply::DeadChannel));
        assert_eq!(Reply::parse_line("599 Something new"), Some(Reply::Other { code: 599, text: "Something new".into() }));
        assert_eq!(Reply::parse_line("2000 result=1"), None);
    }

    #[test]
    fn usage_block() {
        let mut p = ReplyParser::default();
        assert_eq!(p.feed("520-Invalid command syntax.  Proper usage follows:"), Parsed::Pending);
        assert_eq!(p.feed(" Usage: SET VARIABLE <variablename> <value>"), Parsed::Pending);
        assert_eq!(p.feed("200 result=1 not a reply inside the block"), Parsed::Pending);
        assert_eq!(
            p.feed("520 End of proper usage."),
            Parsed::Reply(Reply::Usage(vec![" Usage: SET VARIABLE <variablename> <value>".into(), "200 result=1 not a reply inside the block".into()]))
        );
        assert_eq!(p.feed("520 Invalid command syntax.  Proper usage not available."), Parsed::Reply(Reply::Usage(vec![])));
        assert_eq!(p.feed("HANGUP"), Parsed::Stray("HANGUP".into()));
    }
}

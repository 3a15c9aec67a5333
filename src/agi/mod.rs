//! The AGI protocol as `res_agi.c` speaks it: the environment header, typed commands with the
//! one quoting function, reply parsing, and the lock-step channel over stdin/stdout.
//!
//! Everything here runs on the controller (main) thread except the stdin reader thread that
//! [`channel::spawn_line_reader`] starts. Only [`channel::AgiWriter`] writes to stdout.

pub(crate) mod channel;
pub mod command;
pub(crate) mod header;
pub mod invariants;
pub mod reply;

pub use channel::{spawn_line_reader, AgiWriter, LineEvent};
pub use command::{quote, Command};
pub use header::AgiHeader;
pub use reply::{Reply, ReplyParser};

/// The keys a phone sends as DTMF (Asterisk's digits, A-D included).
pub const DTMF_KEYS: &str = "0123456789*#ABCD";

/// Errors at the AGI boundary.
#[derive(Debug, thiserror::Error)]
pub enum AgiError {
    /// The header did not end with an empty line before stdin closed.
    #[error("agi header incomplete: stdin closed after {0} lines without the empty line")]
    HeaderEof(usize),
    /// A header line is not `key: value`.
    #[error("agi header line {line} is not `key: value`: {text:?}")]
    HeaderSyntax { line: usize, text: String },
    /// The header did not arrive in time.
    #[error("agi header not complete within {0:?}")]
    HeaderTimeout(std::time::Duration),
    /// Writing a command to stdout failed (EPIPE when the host closed it).
    #[error("writing `{command}` to stdout failed: {source}")]
    Write {
        command: String,
        #[source]
        source: std::io::Error,
    },
    /// stdin closed while a reply was awaited.
    #[error("stdin closed while waiting for the reply to `{0}`")]
    Eof(String),
    /// No reply came before the deadline.
    #[error("no reply to `{command}` within {after:?}")]
    Timeout { command: String, after: std::time::Duration },
}

//! Logging: human lines on stderr, which the controller points at the `--log` file (or
//! /dev/null) before libvosk loads, so nothing ever reaches the AGI channel on stdout; and the
//! per-call JSON line appended to `--json-log`. Process figures live in [`crate::procfs`].

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Writes one log line to stderr with a timestamp and the pid.
#[macro_export]
macro_rules! log_line {
    ($($arg:tt)*) => {{
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("{}.{:03} asr_bridge[{}]: {}\n", now.as_secs(), now.subsec_millis(), std::process::id(), format_args!($($arg)*)),
        );
    }};
}

/// Points fd 2 at `path` (appending), or at /dev/null without one. libvosk and Kaldi write to
/// std::cerr; an AGI child inherits Asterisk's stderr, which may be the Asterisk console.
pub fn redirect_stderr(path: Option<&Path>) -> std::io::Result<()> {
    let file = match path {
        Some(p) => OpenOptions::new().create(true).append(true).open(p)?,
        None => OpenOptions::new().write(true).open("/dev/null")?,
    };
    nix::unistd::dup2(file.as_raw_fd(), 2).map_err(std::io::Error::from)?;
    Ok(())
}

/// Appends one JSON line to `path`.
pub fn append_json(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_string(value).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    f.write_all(line.as_bytes())
}

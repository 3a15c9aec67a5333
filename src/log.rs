//! Logging: human lines on stderr, which the controller points at the `--log` file (or
//! /dev/null) before libvosk loads, so nothing ever reaches the AGI channel on stdout; and the
//! per-call JSON line appended to `--json-log`.

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

/// A kB figure from `/proc/PID/FILE` (PID "self" for this process): the line starting with
/// `key`, e.g. `VmRSS:` in `status` (resident now) or `Pss:` in `smaps_rollup`.
pub fn proc_kb(pid: &str, file: &str, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let line = s.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// CPU seconds (user + system) a process has used so far, from `/proc/PID/stat`.
pub fn proc_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ... utime stime: fields 14 and 15, the 12th and 13th after ')'.
    let mut rest = stat.rsplit(')').next()?.split_whitespace().skip(11);
    let ticks: f64 = rest.next()?.parse::<f64>().ok()? + rest.next()?.parse::<f64>().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100).max(1) as f64;
    Some(ticks / hz)
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            // pid (comm) state ppid ...: the comm may hold spaces, so split after ')'.
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1)).and_then(|s| s.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(p);
            }
        }
    }
    out
}

/// CPU seconds (user + system) and peak RSS in KiB of this process.
pub fn rusage() -> (f64, u64) {
    match nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            (tv(u.user_time()) + tv(u.system_time()), u.max_rss() as u64)
        }
        Err(_) => (0.0, 0),
    }
}

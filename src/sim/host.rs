//! The host's event loop: one thread, `poll(2)` on the child's stdout with the next audio
//! frame, timer or hangup as the timeout.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command as Proc, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::Serialize;

use crate::agi::command::parse_args;

/// What the caller sends once the WAV has been played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tail {
    /// 20 ms frames of digital silence, as an RTP trunk without DTX sends.
    Silence,
    /// No frames at all, as a silent Local channel or a DTX trunk (fd 3 stays empty).
    Nothing,
}

/// One simulated call.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// The bridge executable and its dialplan arguments.
    pub bridge: PathBuf,
    pub bridge_args: Vec<String>,
    /// The caller's audio (mono 16-bit) and its rate.
    pub samples: Vec<i16>,
    pub rate: u32,
    /// Silence before the caller's audio starts (frames of zeros).
    pub lead_silence: Duration,
    /// What follows the audio.
    pub tail: Tail,
    /// 1.0 is real time; 4.0 plays four times faster (all host timers scale with it).
    pub speed: f64,
    /// Call-time of the hangup (SIGHUP), if any.
    pub hangup_at: Option<Duration>,
    /// DTMF keys pressed at call-times.
    pub dtmf: Vec<(Duration, char)>,
    /// Start as plain AGI: no fd 3, `agi_enhanced: 0.0`.
    pub plain_agi: bool,
    /// Close fd 3's write end at this call-time (the host going away).
    pub close_audio_at: Option<Duration>,
    /// Channel variables GET VARIABLE returns (e.g. EAGI_AUDIO_FORMAT).
    pub channel_vars: HashMap<String, String>,
    /// Sound files STREAM FILE knows, with their durations; others answer `-1 endpos=0`.
    pub sounds: HashMap<String, Duration>,
    /// Replace the header with these exact bytes (fault tests).
    pub raw_header: Option<Vec<u8>>,
    /// The child's whole environment besides `PATH` (later entries win): nothing of the
    /// developer's environment reaches the bridge unless `inherit_env` is set, so an exported
    /// `ASR_BRIDGE_SERVER` or `ASR_BRIDGE_MODEL` cannot change what a test runs.
    /// [`SimOptions::new`] starts it with `ASR_BRIDGE_SERVER=none`: a simulated call
    /// recognizes in-process unless its arguments (or a later entry) name a server, so a test
    /// or a bench row never starts a resident server by the default `--server=auto`.
    pub env: Vec<(String, String)>,
    /// Pass this process's environment on to the child, as Asterisk does to an AGI program
    /// (`asr_bridge simulate`, which also drops `ASR_BRIDGE_SERVER=none` from `env`).
    pub inherit_env: bool,
    /// Where the child's stderr goes (None: /dev/null).
    pub child_stderr: Option<PathBuf>,
    /// Save every byte written to fd 3 here.
    pub audio_out: Option<PathBuf>,
    /// Record when the frame holding this second of the WAV was written (end of speech).
    pub mark_s: Option<f64>,
    /// The same for a second moment (speech onset, for barge-in timing).
    pub onset_s: Option<f64>,
    /// Kill the child with SIGKILL after this wall time.
    pub max_wall: Duration,
    /// Print the dialogue as it happens.
    pub echo: bool,
    /// Reply to nothing after this many commands (a host that stops answering).
    pub stop_replying_after: Option<usize>,
    /// Hang up the moment a command starting with this text arrives, before running it.
    pub hangup_on_command: Option<String>,
    /// SIGHUPs sent at the hangup (AGIEXITONHANGUP=yes makes Asterisk send two).
    pub sighups: u32,
    /// Fault injection (the reliability tests):
    pub faults: Faults,
}

/// Ways the host can misbehave, or the world around it can.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Send the header only after this long (a SIGHUP can come first).
    pub header_delay: Option<Duration>,
    /// Close the child's stdin at this call time (EOF).
    pub close_stdin_at: Option<Duration>,
    /// Close the read end of the child's stdout at this call time (its writes get EPIPE).
    pub close_stdout_at: Option<Duration>,
    /// Send SIGTERM at this call time.
    pub sigterm_at: Option<Duration>,
    /// Write fd 3 audio in chunks of this many bytes instead of whole frames (odd counts).
    pub audio_chunk_bytes: Option<usize>,
    /// Hold all audio until this call time, then write it at once (a burst).
    pub hold_audio_until: Option<Duration>,
    /// Replace the reply to a command starting with the text by these lines.
    pub replies: Vec<(String, Vec<String>)>,
    /// Write every reply in two pieces, 5 ms apart (a reply split across reads).
    pub split_replies: bool,
    /// Lines written to the child's stdin at call times, unasked.
    pub inject: Vec<(Duration, String)>,
}

impl SimOptions {
    pub fn new(bridge: PathBuf, samples: Vec<i16>, rate: u32) -> Self {
        SimOptions {
            bridge,
            bridge_args: Vec::new(),
            samples,
            rate,
            lead_silence: Duration::ZERO,
            tail: Tail::Silence,
            speed: 1.0,
            hangup_at: None,
            dtmf: Vec::new(),
            plain_agi: false,
            close_audio_at: None,
            channel_vars: HashMap::new(),
            sounds: HashMap::new(),
            raw_header: None,
            env: vec![("ASR_BRIDGE_SERVER".into(), "none".into())],
            inherit_env: false,
            child_stderr: None,
            audio_out: None,
            mark_s: None,
            onset_s: None,
            max_wall: Duration::from_secs(60),
            echo: false,
            stop_replying_after: None,
            hangup_on_command: None,
            sighups: 1,
            faults: Faults::default(),
        }
    }
}

/// Direction of a dialogue line, as `agi set debug on` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Dir {
    /// Host to child (stdin).
    Tx,
    /// Child to host (stdout).
    Rx,
    /// A host event (hangup, DTMF, ...).
    Event,
}

/// One line of the dialogue.
#[derive(Debug, Clone, Serialize)]
pub struct DialogueLine {
    pub t_ms: f64,
    pub dir: Dir,
    pub text: String,
}

/// Everything the host saw.
#[derive(Debug, Clone, Serialize)]
pub struct SimResult {
    pub dialogue: Vec<DialogueLine>,
    /// Variables set, last value wins.
    pub vars: BTreeMap<String, String>,
    /// Wall ms (from spawn) when each variable was last set.
    pub var_times: BTreeMap<String, f64>,
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    pub agistatus: String,
    /// Wall ms from spawn to exit.
    pub child_ms: f64,
    pub hangup_ms: Option<f64>,
    /// Wall ms from hangup to the child's exit.
    pub exit_after_hangup_ms: Option<f64>,
    pub frames_written: u64,
    /// Frames Asterisk would have dropped because the pipe was full (EAGAIN): audio lost.
    pub frames_dropped: u64,
    /// Wall ms when a write to fd 3 first failed with EPIPE: the child's read end was closed,
    /// which happens only as it exits (the kernel closes its files a moment before the exit
    /// can be reaped, so a frame can land in that gap). Asterisk ignores the error; the host
    /// stops writing. Not a drop; a time before the child's last command would be a bug.
    pub audio_closed_ms: Option<f64>,
    pub audio_bytes_written: u64,
    pub first_frame_ms: Option<f64>,
    pub mark_written_ms: Option<f64>,
    pub onset_written_ms: Option<f64>,
    /// The child had to be killed (it hung).
    pub killed: bool,
    /// Commands the child sent.
    pub commands: usize,
    /// Unix time (ms) of the spawn, to compare with the child's own start instant.
    pub spawn_unix_ms: f64,
    /// The child's CPU seconds (user + system) and peak RSS (KiB), from wait4.
    pub child_cpu_s: f64,
    pub child_maxrss_kb: u64,
}

/// Reaps the child with wait4 to get its own resource usage.
#[allow(unsafe_code)]
fn wait4(pid: Pid, block: bool, res: &mut SimResult) -> std::io::Result<Option<std::process::ExitStatus>> {
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 writes only to the two out-pointers, which point at live locals.
    let r = unsafe { libc::wait4(pid.as_raw(), &mut status, if block { 0 } else { libc::WNOHANG }, &mut ru) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if r == 0 {
        return Ok(None);
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    res.child_cpu_s = tv(ru.ru_utime) + tv(ru.ru_stime);
    res.child_maxrss_kb = ru.ru_maxrss as u64;
    Ok(Some(std::process::ExitStatus::from_raw(status)))
}

enum Running {
    StreamFile { ends: Instant, started: Instant, rate: u32, escape: String },
    WaitForDigit { ends: Option<Instant> },
}

/// Commands Asterisk still runs on a dead channel (`res_agi.c` command table).
fn allowed_dead(words: &[String]) -> bool {
    let w: Vec<String> = words.iter().take(2).map(|s| s.to_ascii_uppercase()).collect();
    let first = w.first().map(String::as_str).unwrap_or("");
    let two = w.join(" ");
    matches!(first, "EXEC" | "NOOP" | "VERBOSE" | "DATABASE")
        || matches!(two.as_str(), "GET VARIABLE" | "GET FULL" | "SET VARIABLE" | "ASYNCAGI BREAK" | "SPEECH DESTROY" | "SPEECH UNLOAD")
}

struct Host {
    opts: SimOptions,
    start: Instant,
    stdin: Option<std::process::ChildStdin>,
    res: SimResult,
    dead: bool,
    running: Option<Running>,
    digits: Vec<(Instant, char)>,
    /// A SIGHUP is owed to the child (sent by the loop, which knows the pid).
    kill_hup: u32,
}

impl Host {
    fn ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    /// fd 3's read end is gone (EPIPE): the child is exiting. Nothing more can be written.
    fn audio_closed(&mut self) {
        if self.res.audio_closed_ms.is_none() {
            self.res.audio_closed_ms = Some(self.ms());
            self.log(Dir::Event, "fd 3 read end closed by the child (EPIPE); audio stops");
        }
    }

    fn log(&mut self, dir: Dir, text: &str) {
        let t_ms = self.ms();
        if self.opts.echo {
            let arrow = match dir {
                Dir::Tx => "Tx >>",
                Dir::Rx => "Rx <<",
                Dir::Event => "--  ",
            };
            #[allow(clippy::print_stdout)]
            {
                println!("{:>9.3} {arrow} {text}", t_ms / 1000.0);
            }
        }
        self.res.dialogue.push(DialogueLine { t_ms, dir, text: text.to_string() });
    }

    fn reply(&mut self, text: &str) {
        if let Some(n) = self.opts.stop_replying_after {
            if self.res.commands > n {
                return;
            }
        }
        self.log(Dir::Tx, text);
        self.write_stdin(format!("{text}\n").as_bytes());
    }

    fn write_stdin(&mut self, bytes: &[u8]) {
        let split = self.opts.faults.split_replies;
        let Some(stdin) = self.stdin.as_mut() else { return };
        if split && bytes.len() > 2 {
            let half = bytes.len() / 2;
            let _ = stdin.write_all(&bytes[..half]);
            let _ = stdin.flush();
            std::thread::sleep(Duration::from_millis(5));
            let _ = stdin.write_all(&bytes[half..]);
        } else {
            let _ = stdin.write_all(bytes);
        }
        let _ = stdin.flush();
    }

    fn call_time(&self, d: Duration) -> Instant {
        self.start + d.div_f64(self.opts.speed)
    }

    /// A new line from the child: it interrupts a running command, then runs.
    fn command(&mut self, line: &str) {
        self.res.commands += 1;
        self.log(Dir::Rx, line);
        match self.running.take() {
            Some(Running::StreamFile { .. }) => {} // stopped, and no reply at all
            Some(Running::WaitForDigit { .. }) => self.reply("200 result=1"),
            None => {}
        }
        if let Some(prefix) = self.opts.hangup_on_command.clone() {
            if line.starts_with(&prefix) && !self.dead {
                self.hangup();
            }
        }
        if let Some((_, lines)) = self.opts.faults.replies.iter().find(|(p, _)| line.starts_with(p.as_str())).cloned() {
            for l in lines {
                self.reply(&l);
            }
            return;
        }
        let args = parse_args(line);
        if args.is_empty() {
            return self.reply("510 Invalid or unknown command");
        }
        if self.dead && !allowed_dead(&args) {
            return self.reply("511 Command Not Permitted on a dead channel or intercept routine");
        }
        let up: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
        let words: Vec<&str> = up.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["ANSWER"] => self.reply("200 result=0"),
            ["NOOP", ..] => self.reply("200 result=0"),
            ["VERBOSE", _] | ["VERBOSE", _, _] => self.reply("200 result=1"),
            ["CHANNEL", "STATUS", ..] => self.reply("200 result=6"),
            ["GET", "VARIABLE", _] => match self.opts.channel_vars.get(&args[2]).cloned() {
                Some(v) => self.reply(&format!("200 result=1 ({v})")),
                None => self.reply("200 result=0"),
            },
            ["SET", "VARIABLE", _, _] => {
                let t = self.ms();
                self.res.vars.insert(args[2].clone(), args[3].clone());
                self.res.var_times.insert(args[2].clone(), t);
                self.reply("200 result=1");
            }
            ["STREAM", "FILE", _, _] | ["STREAM", "FILE", _, _, _] => match self.opts.sounds.get(&args[2]).copied() {
                Some(d) => {
                    let now = Instant::now();
                    self.running = Some(Running::StreamFile { ends: now + d.div_f64(self.opts.speed), started: now, rate: 8000, escape: args[3].clone() });
                }
                None => self.reply("200 result=-1 endpos=0"),
            },
            ["WAIT", "FOR", "DIGIT", t] => match t.parse::<i64>() {
                Ok(ms) => {
                    let ends = (ms >= 0).then(|| Instant::now() + Duration::from_millis(ms as u64).div_f64(self.opts.speed));
                    self.running = Some(Running::WaitForDigit { ends });
                }
                Err(_) => self.usage(),
            },
            ["EXEC", ..] => self.reply("200 result=0"),
            ["HANGUP", ..] => {
                self.reply("200 result=1");
                self.hangup();
            }
            ["SET", "VARIABLE", ..] | ["GET", "VARIABLE", ..] | ["STREAM", "FILE", ..] | ["WAIT", "FOR", ..] => self.usage(),
            _ => self.reply("510 Invalid or unknown command"),
        }
    }

    fn usage(&mut self) {
        self.reply("520-Invalid command syntax.  Proper usage follows:");
        self.reply(" Usage: see 'agi show commands'");
        self.reply("520 End of proper usage.");
    }

    fn hangup(&mut self) {
        if self.dead {
            return;
        }
        self.dead = true;
        self.kill_hup = self.opts.sighups;
        self.res.hangup_ms = Some(self.ms());
        self.log(Dir::Event, "hangup: SIGHUP to the child; stdin and fd 3 stay open");
        match self.running.take() {
            Some(Running::StreamFile { started, rate, .. }) => {
                let pos = (started.elapsed().as_secs_f64() * self.opts.speed * rate as f64) as u64;
                self.reply(&format!("200 result=-1 endpos={pos}"));
            }
            Some(Running::WaitForDigit { .. }) => self.reply("200 result=-1"),
            None => {}
        }
    }

    fn audio_flows(&self) -> bool {
        !self.dead && matches!(self.running, None | Some(Running::StreamFile { .. }) | Some(Running::WaitForDigit { .. }))
    }

    fn tick_running(&mut self, now: Instant) {
        // DTMF: delivered only inside WAIT FOR DIGIT (or ending STREAM FILE); lost when idle.
        while let Some(&(at, key)) = self.digits.first() {
            if at > now {
                break;
            }
            self.digits.remove(0);
            match self.running {
                Some(Running::WaitForDigit { .. }) => {
                    self.running = None;
                    self.log(Dir::Event, &format!("DTMF {key}"));
                    self.reply(&format!("200 result={}", key as u32));
                }
                Some(Running::StreamFile { started, rate, ref escape, .. }) => {
                    if escape.contains(key) {
                        self.running = None;
                        self.log(Dir::Event, &format!("DTMF {key} (an escape digit: the prompt stops)"));
                        let pos = (started.elapsed().as_secs_f64() * self.opts.speed * rate as f64) as u64;
                        self.reply(&format!("200 result={} endpos={pos}", key as u32));
                    } else {
                        self.log(Dir::Event, &format!("DTMF {key} (not an escape digit: ignored)"));
                    }
                }
                None => self.log(Dir::Event, &format!("DTMF {key} while idle: lost")),
            }
        }
        match self.running {
            Some(Running::StreamFile { ends, started, rate, .. }) if now >= ends => {
                self.running = None;
                let pos = (started.elapsed().as_secs_f64() * self.opts.speed * rate as f64) as u64;
                self.reply(&format!("200 result=0 endpos={pos}"));
            }
            Some(Running::WaitForDigit { ends: Some(ends) }) if now >= ends => {
                self.running = None;
                self.reply("200 result=0");
            }
            _ => {}
        }
    }
}

fn set_nonblocking(fd: RawFd) -> nix::Result<()> {
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).map(|_| ())
}

fn send_header(host: &mut Host, hdr: &[u8]) {
    for l in String::from_utf8_lossy(hdr).lines() {
        host.log(Dir::Tx, l);
    }
    host.write_stdin(hdr);
}

/// The header `res_agi.c` would send for this call.
pub(crate) fn header(opts: &SimOptions) -> Vec<u8> {
    if let Some(raw) = &opts.raw_header {
        return raw.clone();
    }
    let mut h = String::new();
    let enhanced = if opts.plain_agi { "0.0" } else { "1.0" };
    for (k, v) in [
        ("agi_request", "asr_bridge"),
        ("agi_channel", "SIP/sim-00000001"),
        ("agi_language", "ko"),
        ("agi_type", "SIP"),
        ("agi_uniqueid", "1795375118.22"),
        ("agi_version", "23.0.0-sim"),
        ("agi_callerid", "unknown"),
        ("agi_calleridname", "unknown"),
        ("agi_callingpres", "67"),
        ("agi_callingani2", "0"),
        ("agi_callington", "0"),
        ("agi_callingtns", "0"),
        ("agi_dnid", "unknown"),
        ("agi_rdnis", "unknown"),
        ("agi_context", "sim"),
        ("agi_extension", "7000"),
        ("agi_priority", "2"),
        ("agi_enhanced", enhanced),
        ("agi_accountcode", ""),
        ("agi_threadid", "139716664211136"),
    ] {
        h.push_str(&format!("{k}: {v}\n"));
    }
    for (i, a) in opts.bridge_args.iter().enumerate() {
        h.push_str(&format!("agi_arg_{}: {a}\n", i + 1));
    }
    h.push('\n');
    h.into_bytes()
}

/// Runs one call to the end and reports what the host saw.
#[allow(unsafe_code)] // pre_exec: fd 3 set up as res_agi.c does
pub fn run(opts: SimOptions) -> std::io::Result<SimResult> {
    let (audio_r, audio_w): (OwnedFd, OwnedFd) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    set_nonblocking(audio_w.as_raw_fd()).map_err(std::io::Error::from)?;
    let mut cmd = Proc::new(&opts.bridge);
    if !opts.inherit_env {
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
    }
    cmd.args(&opts.bridge_args).stdin(Stdio::piped()).stdout(Stdio::piped()).envs(opts.env.iter().map(|(k, v)| (k, v)));
    match &opts.child_stderr {
        Some(p) => {
            cmd.stderr(std::fs::OpenOptions::new().create(true).append(true).open(p)?);
        }
        None => {
            cmd.stderr(Stdio::null());
        }
    }
    if !opts.plain_agi {
        let fd = audio_r.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls are made: dup2 puts the
        // audio pipe's read end at fd 3 (without CLOEXEC), as res_agi.c's launch_script does.
        unsafe {
            cmd.pre_exec(move || {
                // dup2(3, 3) would keep FD_CLOEXEC, so the same number needs the flag cleared.
                let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
                if rc < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let start = Instant::now();
    let spawn_unix_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    let mut child: Child = cmd.spawn()?;
    drop(audio_r); // the child has it; the host keeps only the write end, as Asterisk does
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = Some(child.stdout.take().expect("piped stdout"));
    let out_fd = stdout.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1);
    set_nonblocking(out_fd).map_err(std::io::Error::from)?;
    let pid = Pid::from_raw(child.id() as i32);

    let digits = opts.dtmf.iter().map(|(t, k)| (start + t.div_f64(opts.speed), *k)).collect();
    let mut host = Host {
        start,
        stdin: Some(stdin),
        res: SimResult {
            dialogue: Vec::new(),
            vars: BTreeMap::new(),
            var_times: BTreeMap::new(),
            exit_code: None,
            exit_signal: None,
            agistatus: String::new(),
            child_ms: 0.0,
            hangup_ms: None,
            exit_after_hangup_ms: None,
            frames_written: 0,
            frames_dropped: 0,
            audio_closed_ms: None,
            audio_bytes_written: 0,
            first_frame_ms: None,
            mark_written_ms: None,
            onset_written_ms: None,
            killed: false,
            commands: 0,
            spawn_unix_ms,
            child_cpu_s: 0.0,
            child_maxrss_kb: 0,
        },
        dead: false,
        running: None,
        digits,
        kill_hup: 0,
        opts,
    };
    let hdr = header(&host.opts);
    let mut header_at = host.opts.faults.header_delay.map(|d| host.call_time(d));
    if header_at.is_none() {
        send_header(&mut host, &hdr);
    }
    let f = host.opts.faults.clone();
    let sigterm_at = f.sigterm_at.map(|d| host.call_time(d));
    let close_stdin_at = f.close_stdin_at.map(|d| host.call_time(d));
    let close_stdout_at = f.close_stdout_at.map(|d| host.call_time(d));
    let hold_until = f.hold_audio_until.map(|d| host.call_time(d));
    let mut inject: Vec<(Instant, String)> = f.inject.iter().map(|(d, l)| (host.call_time(*d), l.clone())).collect();
    let mut stdout_closed = false;
    let mut held: Vec<u8> = Vec::new();

    let frame = (host.opts.rate / 50) as usize; // 20 ms
    let frame_dur = Duration::from_millis(20).div_f64(host.opts.speed);
    let lead_frames = (host.opts.lead_silence.as_secs_f64() * 50.0).round() as usize;
    let mark_frame = host.opts.mark_s.map(|s| lead_frames + (s * host.opts.rate as f64) as usize / frame);
    let onset_frame = host.opts.onset_s.map(|s| lead_frames + (s * host.opts.rate as f64) as usize / frame);
    let hangup_at = host.opts.hangup_at.map(|d| host.call_time(d));
    let close_at = host.opts.close_audio_at.map(|d| host.call_time(d));
    let mut audio_w = Some(audio_w);
    let mut audio_log = match &host.opts.audio_out {
        Some(p) => Some(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => None,
    };
    let mut next_frame = start;
    let mut frame_no = 0usize;
    let mut pending: Vec<u8> = Vec::new();
    let zeros = vec![0i16; frame];
    let mut bytes = Vec::with_capacity(frame * 2);
    let mut stdout_open = true;

    let st = loop {
        let now = Instant::now();
        if let Some(st) = wait4(pid, false, &mut host.res)? {
            // Drain what the child wrote before exiting.
            if stdout.is_some() {
                read_lines(out_fd, &mut pending, &mut host, &mut stdout_open);
            }
            break st;
        }
        if now.duration_since(start) > host.opts.max_wall {
            let _ = kill(pid, Signal::SIGKILL);
            host.res.killed = true;
            host.log(Dir::Event, "child still running at max wall time: SIGKILL");
            break wait4(pid, true, &mut host.res)?.expect("blocking wait4");
        }
        if let Some(h) = hangup_at {
            if now >= h && !host.dead {
                host.hangup();
            }
        }
        if header_at.is_some_and(|t| now >= t) {
            header_at = None;
            send_header(&mut host, &hdr);
        }
        if sigterm_at.is_some_and(|t| now >= t) && !host.res.dialogue.iter().any(|l| l.text == "SIGTERM") {
            host.log(Dir::Event, "SIGTERM");
            let _ = kill(pid, Signal::SIGTERM);
        }
        if close_stdin_at.is_some_and(|t| now >= t) && host.stdin.is_some() {
            host.stdin = None;
            host.log(Dir::Event, "stdin closed by the host");
        }
        if close_stdout_at.is_some_and(|t| now >= t) && !stdout_closed {
            stdout_closed = true;
            stdout_open = false;
            stdout = None; // dropping the read end makes the child's writes fail with EPIPE
            host.log(Dir::Event, "the host closed its end of the child's stdout");
        }
        while inject.first().is_some_and(|(t, _)| now >= *t) {
            let (_, l) = inject.remove(0);
            host.log(Dir::Tx, &format!("{l}   (unasked)"));
            host.write_stdin(format!("{l}\n").as_bytes());
        }
        if let Some(c) = close_at {
            if now >= c && audio_w.is_some() {
                audio_w = None;
                host.log(Dir::Event, "fd 3 write end closed");
            }
        }
        for _ in 0..std::mem::take(&mut host.kill_hup) {
            let _ = kill(pid, Signal::SIGHUP);
        }
        host.tick_running(now);
        while now >= next_frame {
            next_frame += frame_dur;
            if !host.audio_flows() {
                continue;
            }
            let samples: &[i16] = if frame_no < lead_frames {
                &zeros
            } else {
                let i = (frame_no - lead_frames) * frame;
                if i < host.opts.samples.len() {
                    &host.opts.samples[i..(i + frame).min(host.opts.samples.len())]
                } else if host.opts.tail == Tail::Silence {
                    &zeros
                } else {
                    &[]
                }
            };
            frame_no += 1;
            if samples.is_empty() {
                continue;
            }
            let Some(w) = audio_w.as_ref().filter(|_| host.res.audio_closed_ms.is_none()) else { continue };
            bytes.clear();
            for s in samples {
                bytes.extend_from_slice(&s.to_ne_bytes());
            }
            if hold_until.is_some_and(|t| now < t) {
                held.extend_from_slice(&bytes);
                continue;
            }
            if !held.is_empty() || f.audio_chunk_bytes.is_some() {
                // A burst or odd-sized writes: whatever fits goes, the rest is dropped.
                held.extend_from_slice(&bytes);
                let chunk = f.audio_chunk_bytes.unwrap_or(4096);
                let mut off = 0;
                while off < held.len() {
                    let end = (off + chunk).min(held.len());
                    match nix::unistd::write(w, &held[off..end]) {
                        Ok(n) => {
                            host.res.audio_bytes_written += n as u64;
                            if let Some(l) = audio_log.as_mut() {
                                l.write_all(&held[off..off + n])?;
                            }
                            off += n;
                        }
                        Err(Errno::EPIPE) => {
                            host.audio_closed();
                            break;
                        }
                        Err(_) => {
                            host.res.frames_dropped += ((held.len() - off) / (frame * 2)).max(1) as u64;
                            break;
                        }
                    }
                }
                held.clear();
                host.res.frames_written += 1;
                if host.res.first_frame_ms.is_none() {
                    host.res.first_frame_ms = Some(host.ms());
                }
                continue;
            }
            match nix::unistd::write(w, &bytes) {
                Ok(n) => {
                    host.res.frames_written += 1;
                    host.res.audio_bytes_written += n as u64;
                    if host.res.first_frame_ms.is_none() {
                        host.res.first_frame_ms = Some(host.ms());
                    }
                    if Some(frame_no - 1) == mark_frame {
                        host.res.mark_written_ms = Some(host.ms());
                    }
                    if Some(frame_no - 1) == onset_frame {
                        host.res.onset_written_ms = Some(host.ms());
                    }
                    if let Some(l) = audio_log.as_mut() {
                        l.write_all(&bytes[..n])?;
                    }
                }
                Err(Errno::EPIPE) => host.audio_closed(),
                Err(_) => host.res.frames_dropped += 1, // EAGAIN: Asterisk drops the frame
            }
        }
        // Wait for output from the child, or the next frame / timer.
        let mut wake = next_frame;
        if let Some(Running::StreamFile { ends, .. }) = &host.running {
            wake = wake.min(*ends);
        }
        if let Some(Running::WaitForDigit { ends: Some(ends) }) = host.running {
            wake = wake.min(ends);
        }
        let timeout = wake.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
        if let (true, Some(out)) = (stdout_open, stdout.as_ref()) {
            let bfd = out.as_fd_borrowed();
            let mut fds = [PollFd::new(bfd, PollFlags::POLLIN)];
            let ms = timeout.as_millis().min(20) as u16;
            let _ = poll(&mut fds, PollTimeout::from(ms));
            read_lines(out_fd, &mut pending, &mut host, &mut stdout_open);
            for _ in 0..std::mem::take(&mut host.kill_hup) {
                let _ = kill(pid, Signal::SIGHUP);
            }
        } else {
            std::thread::sleep(timeout.max(Duration::from_millis(1)));
        }
    };
    if let Some(l) = audio_log.as_mut() {
        l.flush()?;
    }
    host.res.child_ms = host.ms();
    host.res.exit_code = st.code();
    host.res.exit_signal = st.signal();
    if let Some(h) = host.res.hangup_ms {
        host.res.exit_after_hangup_ms = Some(host.res.child_ms - h);
    }
    host.res.agistatus = if st.code() != Some(0) {
        "FAILURE".into()
    } else if host.dead {
        "HANGUP".into()
    } else {
        "SUCCESS".into()
    };
    let summary = format!("child exited {:?} (signal {:?}) after {:.0} ms; AGISTATUS={}", st.code(), st.signal(), host.res.child_ms, host.res.agistatus);
    host.log(Dir::Event, &summary);
    Ok(host.res)
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> std::os::fd::BorrowedFd<'_>;
}
impl AsFdBorrowed for std::process::ChildStdout {
    fn as_fd_borrowed(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

/// Asterisk's `fgets(buf, 8192)`: a line longer than 8191 bytes is cut and the rest is read
/// as the next command.
const FGETS_MAX: usize = 8191;

fn read_lines(fd: RawFd, pending: &mut Vec<u8>, host: &mut Host, open: &mut bool) {
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY-free: nix::unistd::read on a raw fd we own for the child's lifetime.
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => {
                *open = false;
                break;
            }
            Ok(n) => pending.extend_from_slice(&buf[..n]),
            Err(nix::Error::EINTR) => continue,
            Err(_) => break, // EAGAIN
        }
    }
    loop {
        let cut = match pending.iter().position(|&b| b == b'\n') {
            Some(i) if i < FGETS_MAX => i + 1,
            _ if pending.len() >= FGETS_MAX => FGETS_MAX,
            _ => break,
        };
        let raw: Vec<u8> = pending.drain(..cut).collect();
        let line = String::from_utf8_lossy(raw.strip_suffix(b"\n").unwrap_or(&raw)).into_owned();
        host.command(&line);
    }
}

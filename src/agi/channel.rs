//! The AGI channel: a reader thread turns stdin into lines on a crossbeam channel, and
//! [`Agi`] on the controller thread writes one command, then waits for its reply, with a
//! deadline, while watching for SIGHUP. Only [`AgiWriter`] touches stdout.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select, unbounded, Receiver};

use super::reply::{Parsed, ReplyParser};
use super::{AgiError, AgiHeader, Command, Reply};

/// Lines longer than this are cut (Asterisk never sends one; garbage might).
pub(crate) const MAX_LINE_IN: usize = 64 * 1024;

/// What the stdin reader thread delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// One line without its `\n` (invalid UTF-8 replaced).
    Line(String),
    /// stdin reached end of file.
    Eof,
    /// Reading stdin failed.
    Error(String),
}

/// Starts the stdin reader thread. It ends at EOF, on an error, or when the receiver is gone;
/// it is never joined (a blocked read on a pipe Asterisk keeps open would never return).
pub fn spawn_line_reader<R: Read + Send + 'static>(input: R) -> Receiver<LineEvent> {
    let (tx, rx) = unbounded();
    std::thread::Builder::new()
        .name("agi-reader".into())
        .spawn(move || {
            let mut reader = BufReader::new(input);
            let mut buf = Vec::with_capacity(256);
            loop {
                buf.clear();
                let ev = match read_line_capped(&mut reader, &mut buf) {
                    Ok(0) => LineEvent::Eof,
                    Ok(_) => {
                        if buf.last() == Some(&b'\n') {
                            buf.pop();
                        }
                        LineEvent::Line(String::from_utf8_lossy(&buf).into_owned())
                    }
                    Err(e) => LineEvent::Error(e.to_string()),
                };
                let end = !matches!(ev, LineEvent::Line(_));
                if tx.send(ev).is_err() || end {
                    return;
                }
            }
        })
        .expect("spawning the agi-reader thread");
    rx
}

/// Reads one line of at most [`MAX_LINE_IN`] bytes; the rest of an over-long line is skipped.
fn read_line_capped<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let n = r.by_ref().take(MAX_LINE_IN as u64).read_until(b'\n', buf)?;
    if n == MAX_LINE_IN && buf.last() != Some(&b'\n') {
        let mut skip = Vec::new();
        loop {
            skip.clear();
            let m = r.by_ref().take(MAX_LINE_IN as u64).read_until(b'\n', &mut skip)?;
            if m == 0 || skip.last() == Some(&b'\n') {
                break;
            }
        }
    }
    Ok(n)
}

/// Writes commands to stdout: one `write_all` of the whole line, then a flush.
pub struct AgiWriter<W: Write> {
    out: W,
}

impl<W: Write> AgiWriter<W> {
    pub fn new(out: W) -> Self {
        AgiWriter { out }
    }

    /// Sends one command. EPIPE (the host closed stdout) is an error, never a panic.
    pub fn send(&mut self, cmd: &Command) -> Result<(), AgiError> {
        let line = cmd.to_string();
        let res = self.out.write_all(line.as_bytes()).and_then(|_| self.out.flush());
        res.map_err(|source| AgiError::Write { command: line.trim_end().to_string(), source })
    }
}

/// What a command that was interrupted by the next one still owes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Owed {
    /// A reply will come (WAIT FOR DIGIT answers `200 result=1` when interrupted).
    Reply,
    /// A reply comes only if the command ended by itself at the same moment: STREAM FILE
    /// interrupted prints nothing, but a prompt that just ended sends `200 ... endpos=N`.
    MaybeEndpos,
}

impl Owed {
    fn of(cmd: &Command) -> Owed {
        match cmd {
            Command::StreamFile { .. } => Owed::MaybeEndpos,
            _ => Owed::Reply,
        }
    }
}

/// The controller's side of the protocol: strict lock-step with deadlines. A command whose
/// reply is awaited is "running"; sending another command interrupts it, and what it still
/// owes is matched and dropped before the new command's reply (`research/eagi-semantics.md` §1).
pub(crate) struct Agi<W: Write> {
    writer: AgiWriter<W>,
    lines: Receiver<LineEvent>,
    hangups: Receiver<i32>,
    parser: ReplyParser,
    hung_up: bool,
    signal: Option<i32>,
    running: Option<(String, Owed)>,
    owed: VecDeque<Owed>,
    timed_out: bool,
    broken: bool,
    /// Lines that arrived when no reply was awaited, or were no reply at all.
    pub stray: Vec<String>,
}

/// How long a reply may take once the channel has hung up (Asterisk answers at once then).
pub(crate) const DEAD_REPLY_TIMEOUT: Duration = Duration::from_millis(100);

impl<W: Write> Agi<W> {
    pub(crate) fn new(out: W, lines: Receiver<LineEvent>, hangups: Receiver<i32>) -> Self {
        Agi {
            writer: AgiWriter::new(out),
            lines,
            hangups,
            parser: ReplyParser::default(),
            hung_up: false,
            signal: None,
            running: None,
            owed: VecDeque::new(),
            timed_out: false,
            broken: false,
            stray: Vec::new(),
        }
    }

    /// True once SIGHUP arrived or a reply said the channel is dead.
    pub(crate) fn hung_up(&self) -> bool {
        self.hung_up
    }

    /// Records a signal the controller received (SIGHUP means hangup; any signal ends the call).
    pub(crate) fn on_signal(&mut self, sig: Option<i32>) {
        self.hung_up = true;
        if self.signal.is_none() || sig == Some(libc::SIGHUP) {
            self.signal = sig;
        }
    }

    /// The signal that ended the call, if one did.
    pub(crate) fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// The receiver of raw lines, for a controller that `select!`s while a command runs.
    pub(crate) fn lines(&self) -> &Receiver<LineEvent> {
        &self.lines
    }

    /// The signal receiver (SIGHUP, SIGTERM, SIGINT numbers).
    pub(crate) fn hangups(&self) -> &Receiver<i32> {
        &self.hangups
    }

    /// True once a reply failed to come before its deadline: the host may have stopped
    /// answering, so later waits should be short.
    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// True once stdout failed (EPIPE) or stdin reached EOF: nothing more can be said.
    pub(crate) fn broken(&self) -> bool {
        self.broken
    }

    /// True while a sent command's reply is still awaited.
    pub(crate) fn is_running(&self) -> bool {
        self.running.is_some()
    }

    /// Replies still owed by interrupted commands.
    #[cfg(test)]
    pub(crate) fn owed(&self) -> usize {
        self.owed.len()
    }

    /// Reads the environment header: lines up to the empty line, with a deadline. A malformed
    /// line does not stop the reading (the host still waits for commands after the empty
    /// line); the first such error comes back beside the header.
    pub(crate) fn read_header(&mut self, timeout: Duration) -> Result<(AgiHeader, Option<AgiError>), AgiError> {
        let deadline = Instant::now() + timeout;
        let mut header = AgiHeader::default();
        let mut first_error = None;
        let mut n = 0usize;
        loop {
            let ev = select! {
                recv(self.lines) -> ev => ev.unwrap_or(LineEvent::Eof),
                recv(self.hangups) -> sig => { self.on_signal(sig.ok()); continue; }
                recv(after(deadline.saturating_duration_since(Instant::now()))) -> _ => {
                    return Err(AgiError::HeaderTimeout(timeout));
                }
            };
            match ev {
                LineEvent::Line(l) => {
                    n += 1;
                    if l.strip_suffix('\r').unwrap_or(&l).is_empty() {
                        return Ok((header, first_error));
                    }
                    if let Err(e) = header.push_line(n, &l) {
                        first_error.get_or_insert(e);
                    }
                }
                LineEvent::Eof | LineEvent::Error(_) => return Err(AgiError::HeaderEof(n)),
            }
        }
    }

    /// Sends a command whose reply is read later ([`Agi::accept_line`] or
    /// [`Agi::wait_running`]). A command still running is interrupted by it.
    pub(crate) fn start(&mut self, cmd: &Command) -> Result<(), AgiError> {
        if let Some((_, owed)) = self.running.take() {
            self.owed.push_back(owed);
        }
        if let Err(e) = self.writer.send(cmd) {
            self.broken = true;
            return Err(e);
        }
        self.running = Some((cmd.to_string().trim_end().to_string(), Owed::of(cmd)));
        Ok(())
    }

    /// Feeds one raw line; returns a reply when the line completes one.
    pub(crate) fn feed_line(&mut self, line: &str) -> Option<Reply> {
        match self.parser.feed(line) {
            Parsed::Reply(r) => {
                if r.is_hangup() {
                    self.hung_up = true;
                }
                Some(r)
            }
            Parsed::Pending => None,
            Parsed::Stray(s) => {
                self.stray.push(s);
                None
            }
        }
    }

    /// Feeds one raw line; returns the running command's reply when the line completes it.
    /// Replies owed by interrupted commands are matched and dropped first.
    pub(crate) fn accept_line(&mut self, line: &str) -> Option<Reply> {
        let r = self.feed_line(line)?;
        while let Some(front) = self.owed.pop_front() {
            match front {
                Owed::Reply => return None,
                Owed::MaybeEndpos => {
                    if matches!(r, Reply::Success { endpos: Some(_), .. }) {
                        return None; // the interrupted prompt had just ended by itself
                    }
                }
            }
        }
        if self.running.take().is_some() {
            Some(r)
        } else {
            self.stray.push(format!("{r:?}"));
            None
        }
    }

    /// Waits for the running command's reply until `deadline`. SIGHUP meanwhile shortens the
    /// wait to [`DEAD_REPLY_TIMEOUT`] (Asterisk answers a running command at once on hangup).
    pub(crate) fn wait_running(&mut self, deadline: Instant) -> Result<Reply, AgiError> {
        let command = self.running.as_ref().map(|(c, _)| c.clone()).unwrap_or_default();
        let started = Instant::now();
        let mut deadline = deadline;
        if self.hung_up {
            deadline = deadline.min(started + DEAD_REPLY_TIMEOUT);
        }
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let hangups = if self.hung_up { never() } else { self.hangups.clone() };
            select! {
                recv(self.lines) -> ev => match ev.unwrap_or(LineEvent::Eof) {
                    LineEvent::Line(l) => {
                        if let Some(r) = self.accept_line(&l) {
                            return Ok(r);
                        }
                    }
                    LineEvent::Eof | LineEvent::Error(_) => {
                        self.broken = true;
                        return Err(AgiError::Eof(command));
                    }
                },
                recv(hangups) -> sig => {
                    self.on_signal(sig.ok());
                    deadline = deadline.min(Instant::now() + DEAD_REPLY_TIMEOUT);
                }
                recv(after(wait)) -> _ => {
                    // Whatever the host still sends for it must not be taken for the next reply.
                    if let Some((_, owed)) = self.running.take() {
                        self.owed.push_back(owed);
                    }
                    self.timed_out = true;
                    return Err(AgiError::Timeout { command, after: started.elapsed() });
                }
            }
        }
    }

    /// One command, then its reply, within `timeout` (interrupting a running command).
    pub(crate) fn call(&mut self, cmd: &Command, timeout: Duration) -> Result<Reply, AgiError> {
        self.start(cmd)?;
        self.wait_running(Instant::now() + timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossbeam_channel::Sender;

    fn agi() -> (Agi<Vec<u8>>, Sender<LineEvent>, Sender<i32>) {
        let (ltx, lrx) = unbounded();
        let (stx, srx) = unbounded();
        (Agi::new(Vec::new(), lrx, srx), ltx, stx)
    }

    fn line(tx: &Sender<LineEvent>, l: &str) {
        tx.send(LineEvent::Line(l.into())).unwrap();
    }

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn interrupted_stream_file_gives_no_reply() {
        let (mut agi, tx, _s) = agi();
        agi.start(&Command::StreamFile { file: "menu".into(), escape_digits: String::new() }).unwrap();
        line(&tx, "200 result=1"); // the reply to SET VARIABLE; STREAM FILE printed nothing
        let r = agi.call(&Command::SetVariable { name: "A".into(), value: "b".into() }, T).unwrap();
        assert_eq!(r.result(), Some(1));
        assert_eq!(agi.owed(), 0);
    }

    #[test]
    fn late_endpos_reply_of_a_prompt_that_just_ended_is_dropped() {
        let (mut agi, tx, _s) = agi();
        agi.start(&Command::StreamFile { file: "menu".into(), escape_digits: String::new() }).unwrap();
        line(&tx, "200 result=0 endpos=64000");
        line(&tx, "200 result=53");
        agi.start(&Command::WaitForDigit { timeout_ms: 5000 }).unwrap();
        let r = agi.wait_running(Instant::now() + T).unwrap();
        assert_eq!(r.result(), Some(53), "the key belongs to WAIT FOR DIGIT, not the prompt");
    }

    #[test]
    fn interrupted_wait_for_digit_owes_result_1() {
        let (mut agi, tx, _s) = agi();
        agi.start(&Command::WaitForDigit { timeout_ms: 5000 }).unwrap();
        line(&tx, "200 result=1");
        line(&tx, "200 result=0 (slin16)");
        let r = agi.call(&Command::GetVariable { name: "X".into() }, T).unwrap();
        assert_eq!(r.data(), Some("slin16"));
    }

    #[test]
    fn a_reply_that_never_comes_times_out() {
        let (mut agi, _tx, _s) = agi();
        let e = agi.call(&Command::Noop, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(e, AgiError::Timeout { .. }), "{e}");
    }

    #[test]
    fn sighup_shortens_the_wait() {
        let (mut agi, _tx, s) = agi();
        s.send(libc::SIGHUP).unwrap();
        let t = Instant::now();
        assert!(agi.call(&Command::Noop, Duration::from_secs(10)).is_err());
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(agi.hung_up());
        assert_eq!(agi.signal(), Some(libc::SIGHUP));
    }

    #[test]
    fn usage_block_and_stray_lines() {
        let (mut agi, tx, _s) = agi();
        line(&tx, "HANGUP");
        line(&tx, "520-Invalid command syntax.  Proper usage follows:");
        line(&tx, " Usage: SET VARIABLE");
        line(&tx, "520 End of proper usage.");
        let r = agi.call(&Command::SetVariable { name: "A".into(), value: "b".into() }, T).unwrap();
        assert_eq!(r, Reply::Usage(vec![" Usage: SET VARIABLE".into()]));
        assert_eq!(agi.stray, vec!["HANGUP".to_string()]);
    }

    #[test]
    fn epipe_is_an_error_not_a_panic() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (_ltx, lrx) = unbounded();
        let (_stx, srx) = unbounded();
        let mut agi = Agi::new(Closed, lrx, srx);
        assert!(matches!(agi.call(&Command::Noop, T), Err(AgiError::Write { .. })));
    }

    #[test]
    fn header_then_eof() {
        let (mut agi, tx, _s) = agi();
        line(&tx, "agi_request: x");
        tx.send(LineEvent::Eof).unwrap();
        assert!(matches!(agi.read_header(T), Err(AgiError::HeaderEof(1))));
    }
}

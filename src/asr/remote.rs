//! The served path's client: one WebSocket connection per listening attempt to a resident
//! recognizer (`asr_bridge serve`, or a real vosk-server), opened by [`crate::net`], speaking
//! vosk-server's protocol ([`crate::protocol`]): a `{"config": ..}` text message, 100 ms binary blocks (the same blocks the in-process
//! engine feeds libvosk), one `partial`/`result` reply per block, `{"eof" : 1}` for the final
//! result. Lock-step: each block waits for its reply, so a reply deadline always holds and the
//! server's decoding is the call's back-pressure. Every socket operation has a deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::engine::{EngineOptions, Transcript};
use super::AsrError;
use crate::net::{connect_with_idle, Conn, ServerAddr};
use crate::protocol::{ClientMessage, Config, Reply, Token};

/// What a call does when its servers do not take it: why each one did not, in the order
/// tried, as one error. Every server busy, or some busy and the rest unreachable: busy (the
/// servers that answered are full; falling back would load a model per call exactly when the
/// pool is busiest). None answered: unreachable. One server: its own error, unchanged.
pub fn pool_error(mut errors: Vec<AsrError>) -> AsrError {
    if errors.len() == 1 {
        return errors.remove(0);
    }
    let busy = errors.iter().any(|e| matches!(e, AsrError::ServerBusy { .. }));
    let mut addrs = Vec::new();
    let mut reasons = Vec::new();
    for e in &errors {
        let (addr, what) = match e {
            AsrError::ServerBusy { addr, reason } => (addr, format!("busy: {reason}")),
            AsrError::ServerUnreachable { addr, reason } | AsrError::ServerLost { addr, reason } | AsrError::ServerRefused { addr, reason } => {
                (addr, reason.clone())
            }
            other => (&String::new(), other.to_string()),
        };
        addrs.push(addr.clone());
        reasons.push(format!("{addr}: {what}"));
    }
    let (addr, reason) = (addrs.join(", "), reasons.join("; "));
    if busy {
        AsrError::ServerBusy { addr, reason }
    } else {
        AsrError::ServerUnreachable { addr, reason }
    }
}

/// The call's servers, in the order `--server` lists them, and the one that served it last.
/// An attempt connects to that one first and then to the others in list order, cyclically (at
/// first: the list in order); a server lost mid-attempt is replaced by the next ones, itself
/// last ([`Pool::after_loss`]). Each order names every server once.
#[derive(Debug, Clone)]
pub struct Pool {
    addrs: Vec<ServerAddr>,
    last: usize,
}

impl Pool {
    /// The servers to try; `addrs` is never empty (`--server=auto` resolves to one address).
    pub fn new(addrs: Vec<ServerAddr>) -> Pool {
        assert!(!addrs.is_empty(), "a pool needs a server");
        Pool { addrs, last: 0 }
    }

    /// Where a new attempt connects: the server that served last, then the others.
    ///
    /// ```
    /// use asr_bridge::asr::remote::Pool;
    /// let mut p = Pool::new(vec!["unix:/a".parse().unwrap(), "unix:/b".parse().unwrap(), "unix:/c".parse().unwrap()]);
    /// assert_eq!(p.for_attempt(), [0, 1, 2]);
    /// assert_eq!(p.after_loss(), [1, 2, 0], "the next ones first, the lost one last");
    /// p.served_by(1);
    /// assert_eq!(p.for_attempt(), [1, 2, 0]);
    /// assert_eq!(p.after_loss(), [2, 0, 1]);
    /// let one = Pool::new(vec!["ws://lb:80".parse().unwrap()]);
    /// assert_eq!(one.after_loss(), [0], "one address: the same again (a balancer routes it elsewhere)");
    /// ```
    pub fn for_attempt(&self) -> Vec<usize> {
        (0..self.addrs.len()).map(|k| (self.last + k) % self.addrs.len()).collect()
    }

    /// Where an attempt whose server (the last one that served) was lost reconnects.
    pub fn after_loss(&self) -> Vec<usize> {
        (1..=self.addrs.len()).map(|k| (self.last + k) % self.addrs.len()).collect()
    }

    /// Server `i` of the list.
    pub fn addr(&self, i: usize) -> &ServerAddr {
        &self.addrs[i]
    }

    /// Server `i` took the call.
    pub fn served_by(&mut self, i: usize) {
        self.last = i;
    }
}

/// One attempt's recognizer on the server.
pub struct RemoteEngine {
    ws: WebSocket<Conn>,
    addr: String,
    transcript: Transcript,
    bytes: Vec<u8>,
    blocks: u64,
    last_sent: Instant,
    keepalive: Duration,
    /// When each block whose reply has not come was sent, oldest first.
    in_flight: VecDeque<Instant>,
    /// The reply deadline (`--server-timeout`), applied to the oldest block in flight.
    deadline: Duration,
    /// The server takes [`ClientMessage::Pause`] (it sent [`crate::protocol::PAUSE_HEADER`]): quiet spells are announced.
    pausable: bool,
    /// A pause was sent and no audio since.
    paused: bool,
}

/// Blocks sent ahead of their replies: the decoder streams without waiting a round trip per
/// block, and a slow server builds a queue here (bounded) instead of a gap in the audio.
const MAX_IN_FLIGHT: usize = 8;

/// Ping interval when the server does not say its idle timeout.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(10);

impl RemoteEngine {
    /// Connects and sends the config message. `rate` is the call's audio rate; the server
    /// resamples when its model needs it, exactly as the in-process engine would.
    pub fn start(addr: &ServerAddr, deadline: Duration, rate: u32, opts: &EngineOptions, token: Option<&Token>) -> Result<RemoteEngine, AsrError> {
        let (mut ws, said) = connect_with_idle(addr, "/", deadline, token)?;
        let idle = said.idle;
        // Ping at a third of the server's idle timeout (vosk-server has none: every 10 s).
        let keepalive = idle.map(|i| i / 3).unwrap_or(DEFAULT_KEEPALIVE).clamp(Duration::from_millis(100), DEFAULT_KEEPALIVE);
        // partial_results: 0 spares asr_bridge serve the partial transcripts the bridge never
        // reads (vosk-server ignores the key and sends them anyway; they are skipped here).
        let config = Config {
            sample_rate: Some(rate),
            words: Some(true),
            max_alternatives: Some(opts.alternatives.into()),
            partial_results: Some(false),
            phrase_list: opts.grammar.clone(),
        };
        let name = addr.to_string();
        ws.send(Message::text(ClientMessage::Config(config).to_string())).map_err(|e| AsrError::ServerLost { addr: name.clone(), reason: e.to_string() })?;
        Ok(RemoteEngine {
            ws,
            addr: name,
            transcript: Transcript::default(),
            bytes: Vec::new(),
            blocks: 0,
            last_sent: Instant::now(),
            keepalive,
            in_flight: VecDeque::new(),
            deadline,
            pausable: said.pause,
            paused: false,
        })
    }

    fn lost(&self, e: impl std::fmt::Display) -> AsrError {
        AsrError::ServerLost { addr: self.addr.clone(), reason: e.to_string() }
    }

    /// The next reply, within the socket's deadline.
    fn reply(&mut self) -> Result<Reply, AsrError> {
        self.next_reply()?.ok_or_else(|| self.lost("no reply within the deadline (--server-timeout)"))
    }

    /// The next reply; None when none came in time (a blocking socket's deadline) or none is
    /// there yet (a non-blocking one).
    fn next_reply(&mut self) -> Result<Option<Reply>, AsrError> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return Reply::parse(t.as_str()).map(Some).map_err(|e| self.lost(format!("bad reply: {e}"))),
                Ok(Message::Close(frame)) => return Err(self.closed(frame)),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Ok(None),
                Err(e) => return Err(self.lost(e)),
            }
        }
    }

    /// Sends one block without waiting for its reply (pipelined); takes the replies that have
    /// come, and waits for the oldest only when [`MAX_IN_FLIGHT`] blocks are unanswered.
    /// Closed segments join the transcript in order.
    pub fn accept(&mut self, block: &[i16]) -> Result<(), AsrError> {
        self.bytes.clear();
        for s in block {
            self.bytes.extend_from_slice(&s.to_le_bytes());
        }
        self.blocks += 1;
        let msg = Message::binary(self.bytes.clone());
        self.last_sent = Instant::now();
        self.paused = false;
        self.ws.send(msg).map_err(|e| self.lost(e))?;
        self.in_flight.push_back(self.last_sent);
        self.take_ready()?;
        while self.in_flight.len() > MAX_IN_FLIGHT {
            self.take_oldest()?;
        }
        Ok(())
    }

    /// One block's reply: a closed segment joins the transcript.
    fn on_reply(&mut self, reply: Reply) {
        self.in_flight.pop_front();
        if let Reply::Result(seg) = reply {
            self.transcript.push(seg);
        }
    }

    /// How long the oldest block in flight may still wait for its reply.
    fn oldest_left(&self) -> Result<Duration, AsrError> {
        let Some(oldest) = self.in_flight.front() else { return Ok(self.deadline) };
        let left = self.deadline.saturating_sub(oldest.elapsed());
        if left.is_zero() {
            return Err(self.lost("no reply within the deadline (--server-timeout)"));
        }
        Ok(left)
    }

    /// The error for the server's close frame: a refusal of the call's settings, or lost.
    fn closed(&self, frame: Option<tungstenite::protocol::CloseFrame>) -> AsrError {
        let (code, why) = frame.map(|f| (f.code, f.reason.to_string())).unwrap_or((CloseCode::Normal, String::new()));
        match code {
            CloseCode::Policy | CloseCode::Unsupported | CloseCode::Invalid => AsrError::ServerRefused { addr: self.addr.clone(), reason: why },
            _ => self.lost(format!("closed the connection ({code}) {why}")),
        }
    }

    /// Takes the replies already there, without blocking.
    fn take_ready(&mut self) -> Result<(), AsrError> {
        self.oldest_left()?;
        self.ws.get_ref().set_nonblocking(true).map_err(|e| self.lost(e))?;
        let res = loop {
            match self.next_reply() {
                Ok(Some(r)) => self.on_reply(r),
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.ws.get_ref().set_nonblocking(false).map_err(|e| self.lost(e))?;
        res
    }

    /// Waits for the oldest block's reply, within what is left of its deadline.
    fn take_oldest(&mut self) -> Result<(), AsrError> {
        let left = self.oldest_left()?;
        self.ws.get_ref().set_timeouts(Some(left)).map_err(|e| self.lost(e))?;
        let reply = self.reply();
        self.ws.get_ref().set_timeouts(Some(self.deadline)).map_err(|e| self.lost(e))?;
        self.on_reply(reply?);
        Ok(())
    }

    /// Sends a ping when nothing was sent for a third of the server's idle timeout (which must
    /// not end a call that is only waiting: a long prompt without barge-in, DTX); the pong is
    /// skipped when the next reply is read. To `asr_bridge serve`, which drops a connection
    /// without audio even when it pings unless told, the first ping of a quiet spell follows a
    /// pause ([`ClientMessage::Pause`]).
    pub fn keepalive(&mut self) -> Result<(), AsrError> {
        if !self.in_flight.is_empty() {
            // No audio to send (DTX), replies still owed: their deadline runs all the same.
            self.take_ready()?;
        }
        if self.last_sent.elapsed() < self.keepalive {
            return Ok(());
        }
        if self.pausable && !self.paused {
            self.ws.send(Message::text(ClientMessage::Pause.to_string())).map_err(|e| self.lost(e))?;
            self.paused = true;
        }
        self.last_sent = Instant::now();
        self.ws.send(Message::Ping(Vec::new().into())).map_err(|e| self.lost(e))
    }

    /// The server this recognizer is on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True when the server closed this connection while it waited for its first block (a
    /// restart, an idle timeout): the attempt should open a new one instead. Reads what is
    /// pending without blocking: pongs to the keepalive are fine, anything else is not.
    pub fn stale(&mut self) -> bool {
        if self.blocks > 0 {
            return false;
        }
        if self.ws.get_ref().set_nonblocking(true).is_err() {
            return true;
        }
        let gone = loop {
            match self.ws.read() {
                Ok(Message::Pong(_) | Message::Ping(_)) => continue,
                Ok(_) => break true,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(_) => break true,
            }
        };
        gone || self.ws.get_ref().set_nonblocking(false).is_err()
    }

    /// Takes the replies still owed, asks for the final result and closes.
    pub fn finish(mut self) -> Result<Transcript, AsrError> {
        while !self.in_flight.is_empty() {
            self.take_oldest()?;
        }
        self.ws.send(Message::text(ClientMessage::Eof.to_string())).map_err(|e| self.lost(e))?;
        let seg = match self.reply()? {
            Reply::Result(seg) => seg,
            other => return Err(self.lost(format!("expected a final result, got {other}"))),
        };
        self.transcript.push(seg);
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        Ok(self.transcript)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{IDLE_HEADER, PAUSE_HEADER};

    fn unreachable_at(addr: &str, reason: &str) -> AsrError {
        AsrError::ServerUnreachable { addr: addr.into(), reason: reason.into() }
    }

    #[test]
    fn a_pool_is_busy_when_any_server_answered_busy() {
        let one = pool_error(vec![unreachable_at("unix:/a", "No such file")]);
        assert_eq!(one.to_string(), "recognition server unix:/a unreachable: No such file", "one server: its own error");
        let none = pool_error(vec![unreachable_at("unix:/a", "No such file"), unreachable_at("unix:/b", "HTTP 502 Bad Gateway")]);
        assert!(matches!(none, AsrError::ServerUnreachable { .. }), "{none:?}");
        assert_eq!(none.to_string(), "recognition server unix:/a, unix:/b unreachable: unix:/a: No such file; unix:/b: HTTP 502 Bad Gateway");
        let mixed = pool_error(vec![unreachable_at("unix:/a", "No such file"), AsrError::ServerBusy { addr: "unix:/b".into(), reason: "at capacity".into() }]);
        assert!(matches!(mixed, AsrError::ServerBusy { .. }), "{mixed:?}");
        assert!(mixed.to_string().contains("unix:/b: busy: at capacity"), "{mixed}");
    }

    /// A one-connection WebSocket server on loopback: answers the handshake (with the idle
    /// header when `idle_ms` is set, and the pause capability with `pause`, as `asr_bridge
    /// serve` does), replies to each block and to
    /// eof, and gives back what came, in order: config, audio, pause, ping, eof.
    #[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
    fn recording_server(idle_ms: Option<u64>, pause: bool) -> (ServerAddr, std::thread::JoinHandle<Vec<&'static str>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("ws://127.0.0.1:{}", l.local_addr().unwrap().port()).parse().unwrap();
        let h = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let announce = |_: &tungstenite::handshake::server::Request, mut resp: tungstenite::handshake::server::Response| {
                if let Some(ms) = idle_ms {
                    resp.headers_mut().insert(IDLE_HEADER, ms.into());
                }
                if pause {
                    resp.headers_mut().insert(PAUSE_HEADER, 1.into());
                }
                Ok(resp)
            };
            let mut ws = tungstenite::accept_hdr(s, announce).unwrap();
            let mut seen = Vec::new();
            loop {
                match ws.read() {
                    Ok(Message::Text(t)) if t.as_str() == ClientMessage::Pause.to_string() => seen.push("pause"),
                    Ok(Message::Text(t)) if t.contains("config") => seen.push("config"),
                    Ok(Message::Text(t)) if t.contains("eof") => {
                        seen.push("eof");
                        let _ = ws.send(Message::text(r#"{"text" : "", "result" : []}"#));
                    }
                    Ok(Message::Binary(_)) => {
                        seen.push("audio");
                        let _ = ws.send(Message::text(r#"{"partial" : ""}"#));
                    }
                    Ok(Message::Ping(_)) if seen.last() != Some(&"ping") => seen.push("ping"),
                    Ok(_) => {}
                    Err(_) => return seen,
                }
            }
        });
        (addr, h)
    }

    /// Two quiet spells (no audio for longer than the keepalive interval) on one connection.
    fn quiet_twice(addr: &ServerAddr) {
        let mut e = RemoteEngine::start(addr, Duration::from_secs(5), 8000, &EngineOptions::default(), None).unwrap();
        e.keepalive = Duration::from_millis(100); // what a 300 ms idle timeout gives; 10 s without one
        for _ in 0..2 {
            e.accept(&[0; 800]).unwrap();
            for _ in 0..8 {
                std::thread::sleep(Duration::from_millis(50));
                e.keepalive().unwrap();
            }
        }
        e.finish().unwrap();
    }

    #[test]
    fn a_quiet_spell_is_announced_to_asr_bridge_serve_once() {
        // An idle timeout of 300 ms: a ping every 100 ms; each spell is 400 ms.
        let (addr, h) = recording_server(Some(300), true);
        quiet_twice(&addr);
        assert_eq!(h.join().unwrap(), ["config", "audio", "pause", "ping", "audio", "pause", "ping", "eof"], "once per spell, before its first ping");
    }

    #[test]
    fn a_server_that_does_not_say_its_idle_timeout_is_never_sent_a_pause() {
        let (addr, h) = recording_server(None, false);
        quiet_twice(&addr);
        assert_eq!(h.join().unwrap(), ["config", "audio", "ping", "audio", "ping", "eof"], "pings only: vosk-server does not know a pause");
    }

    #[test]
    fn a_server_that_says_its_idle_timeout_but_not_the_pause_is_never_sent_one() {
        // asr_bridge serve of the last release: an idle timeout, no pause.
        let (addr, h) = recording_server(Some(300), false);
        quiet_twice(&addr);
        assert_eq!(h.join().unwrap(), ["config", "audio", "ping", "audio", "ping", "eof"]);
    }
}

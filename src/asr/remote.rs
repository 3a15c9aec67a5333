//! The served path's client: one WebSocket connection per listening attempt to a resident
//! recognizer (`asr_bridge serve`, or a real vosk-server), speaking vosk-server's protocol:
//! a `{"config": ..}` text message, 100 ms binary blocks (the same blocks the in-process
//! engine feeds libvosk), one `partial`/`result` reply per block, `{"eof" : 1}` for the final
//! result. Lock-step: each block waits for its reply, so a reply deadline always holds and the
//! server's decoding is the call's back-pressure. Every socket operation has a deadline.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

use super::engine::{EngineOptions, Segment, Transcript};
use super::AsrError;

/// Where the server listens: `unix:PATH` or `ws://HOST:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Unix(PathBuf),
    Ws { host: String, port: u16, path: String },
}

impl std::str::FromStr for ServerAddr {
    type Err = String;

    /// ```
    /// use asr_bridge::asr::remote::ServerAddr;
    /// assert_eq!("unix:/run/asr.sock".parse(), Ok(ServerAddr::Unix("/run/asr.sock".into())));
    /// assert_eq!(
    ///     "ws://10.0.0.5:2700".parse(),
    ///     Ok(ServerAddr::Ws { host: "10.0.0.5".into(), port: 2700, path: "/".into() })
    /// );
    /// assert!("http://x".parse::<ServerAddr>().is_err());
    /// ```
    fn from_str(s: &str) -> Result<ServerAddr, String> {
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(ServerAddr::Unix(PathBuf::from(p)));
        }
        let rest = s.strip_prefix("ws://").ok_or_else(|| format!("{s:?}: expected unix:PATH or ws://HOST:PORT"))?;
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
                (h.to_string(), p.parse::<u16>().map_err(|_| format!("{s:?}: bad port {p:?}"))?)
            }
            _ => (hostport.to_string(), 80),
        };
        if host.is_empty() {
            return Err(format!("{s:?}: no host"));
        }
        Ok(ServerAddr::Ws { host, port, path })
    }
}

impl std::fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ServerAddr::Ws { host, port, path } => write!(f, "ws://{host}:{port}{path}"),
        }
    }
}

/// A connected socket of either kind.
#[derive(Debug)]
pub enum Conn {
    Unix(UnixStream),
    Tcp(TcpStream),
}

impl Conn {
    /// Read and write deadlines for every later operation.
    pub fn set_timeouts(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
            Conn::Tcp(s) => s.set_read_timeout(t).and_then(|()| s.set_write_timeout(t)),
        }
    }
}

impl Conn {
    /// Switches the socket between blocking (calls, with deadlines) and non-blocking mode.
    pub fn set_nonblocking(&self, on: bool) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_nonblocking(on),
            Conn::Tcp(s) => s.set_nonblocking(on),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Unix(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.flush(),
            Conn::Tcp(s) => s.flush(),
        }
    }
}

/// Connects a Unix stream socket by `until`. A blocking connect would wait for as long as the
/// server's listen backlog stays full (a frozen server); a non-blocking one says EAGAIN then,
/// and is retried until the deadline.
fn connect_unix(path: &std::path::Path, until: Instant) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let addr = UnixAddr::new(path).map_err(std::io::Error::from)?;
    loop {
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None).map_err(std::io::Error::from)?;
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => {
                let s = UnixStream::from(fd);
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < until => std::thread::sleep(Duration::from_millis(5)),
            Err(nix::errno::Errno::EAGAIN) => {
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no connection within the deadline (the server's backlog is full)"))
            }
            Err(e) => return Err(e.into()),
        }
    }
}

fn unreachable(addr: &ServerAddr, reason: impl std::fmt::Display) -> AsrError {
    AsrError::ServerUnreachable { addr: addr.to_string(), reason: reason.to_string() }
}

/// The bearer token the client sends in every handshake (`Authorization: Bearer TOKEN`), when
/// it has one. Its `Debug` form does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from its text (a file's contents): surrounding whitespace is dropped; what is
    /// left must be non-empty printable ASCII without spaces (it goes into an HTTP header).
    ///
    /// ```
    /// use asr_bridge::asr::remote::Token;
    /// assert!(Token::new(" s3cret\n").is_ok());
    /// assert!(Token::new("\n").is_err());
    /// assert!(Token::new("two words").is_err());
    /// assert_eq!(format!("{:?}", Token::new("s3cret").unwrap()), "Token(..)");
    /// ```
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("is empty".into());
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be printable ASCII without spaces".into());
        }
        Ok(Token(t.to_string()))
    }

    /// The token itself (for the server side's comparison).
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// Opens a WebSocket to `addr` at `path` ("/" for calls), connect and handshake within
/// `deadline`, sending `token` when there is one. See [`connect_with_idle`] for how a refusal
/// reads.
pub fn connect(addr: &ServerAddr, path: &str, deadline: Duration, token: Option<&Token>) -> Result<WebSocket<Conn>, AsrError> {
    connect_with_idle(addr, path, deadline, token).map(|(ws, _)| ws)
}

/// The response header in which `asr_bridge serve` says after how long a silent client is
/// dropped (its `--idle-timeout`, in ms), so the client can ping in time. Only `asr_bridge
/// serve` sends it.
pub const IDLE_HEADER: &str = "x-asr-bridge-idle-timeout-ms";

/// The response header (value `1`) with which `asr_bridge serve` marks its HTTP 503 as "busy"
/// (at `--max-calls`, or the client holds its `--max-calls-per-client` share; not while
/// draining: that server is going away). Any other refusal, a 503 without it included (a load
/// balancer's "no server is available"), means "unreachable".
pub const BUSY_HEADER: &str = "x-asr-bridge-busy";

/// The response header (value `1`) with which `asr_bridge serve` says it takes [`PAUSE`]: a
/// capability of its own, so a client never sends a pause to a server that predates it (an
/// on-demand server of the last release can outlive an upgrade by its idle exit).
pub const PAUSE_HEADER: &str = "x-asr-bridge-pause";

/// The text message announcing a quiet spell to a server that sent [`PAUSE_HEADER`]: no audio
/// follows for a while, only pings; the next audio ends the pause. The server does not reply.
pub const PAUSE: &str = r#"{"pause" : 1}"#;

/// What the server said in its handshake response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Its idle timeout ([`IDLE_HEADER`]).
    pub idle: Option<Duration>,
    /// It takes [`PAUSE`] ([`PAUSE_HEADER`]).
    pub pause: bool,
}

/// [`connect`], also returning what the server says of itself in the handshake. A refusal of the
/// handshake: HTTP 503 with [`BUSY_HEADER`] is [`AsrError::ServerBusy`]; any other status
/// (a balancer's 502/503/504, 401/403 for a token refused or missing) is
/// [`AsrError::ServerUnreachable`] with the status line in the reason.
pub fn connect_with_idle(addr: &ServerAddr, path: &str, deadline: Duration, token: Option<&Token>) -> Result<(WebSocket<Conn>, Handshake), AsrError> {
    let until = Instant::now() + deadline;
    let left = || until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let (conn, url) = match addr {
        ServerAddr::Unix(p) => (Conn::Unix(connect_unix(p, until).map_err(|e| unreachable(addr, e))?), format!("ws://localhost{path}")),
        ServerAddr::Ws { host, port, path: base } => {
            let addrs: Vec<_> = (host.as_str(), *port).to_socket_addrs().map_err(|e| unreachable(addr, e))?.collect();
            let mut last = None;
            let mut conn = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, left()) {
                    Ok(s) => {
                        conn = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let s = conn.ok_or_else(|| unreachable(addr, last.map(|e| e.to_string()).unwrap_or_else(|| "no address".into())))?;
            let _ = s.set_nodelay(true);
            let full = if path == "/" { base.clone() } else { format!("{}{}", base.trim_end_matches('/'), path) };
            (Conn::Tcp(s), format!("ws://{host}:{port}{full}"))
        }
    };
    conn.set_timeouts(Some(left())).map_err(|e| unreachable(addr, e))?;
    let mut request = url.as_str().into_client_request().map_err(|e| unreachable(addr, e))?;
    if let Some(t) = token {
        let value = tungstenite::http::HeaderValue::from_str(&format!("Bearer {}", t.0)).map_err(|e| unreachable(addr, e))?;
        request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    match tungstenite::client::client(request, conn) {
        Ok((ws, resp)) => {
            let h = resp.headers();
            let idle = h.get(IDLE_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map(Duration::from_millis);
            Ok((ws, Handshake { idle, pause: h.get(PAUSE_HEADER).is_some_and(|v| v.as_bytes() == b"1") }))
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).trim().to_string()).unwrap_or_default();
            let busy = resp.headers().get(BUSY_HEADER).is_some_and(|v| v.as_bytes() == b"1");
            Err(refusal(addr, resp.status(), busy, &body, token.is_some()))
        }
        Err(HandshakeError::Interrupted(_)) => Err(unreachable(addr, format!("no handshake within {deadline:?}"))),
        Err(HandshakeError::Failure(e)) => Err(unreachable(addr, e)),
    }
}

/// What a handshake answered with `status` (not 101) means: busy only when `asr_bridge serve`
/// marked its 503 so ([`BUSY_HEADER`]); anything else is unreachable, with the status line.
fn refusal(addr: &ServerAddr, status: tungstenite::http::StatusCode, busy: bool, body: &str, token_sent: bool) -> AsrError {
    if status.as_u16() == 503 && busy {
        return AsrError::ServerBusy { addr: addr.to_string(), reason: body.to_string() };
    }
    // A body is a line of text from asr_bridge serve, a page of HTML from a balancer.
    let body = body.lines().next().filter(|l| !l.starts_with('<')).map(|l| format!(": {l}")).unwrap_or_default();
    let why = match (status.as_u16(), token_sent) {
        (401 | 403, true) => " (the server refused the token)",
        (401 | 403, false) => " (the server wants a token: set ASR_BRIDGE_TOKEN or --server-token-file)",
        _ => "",
    };
    unreachable(addr, format!("HTTP {status}{why}{body}"))
}

/// Reads the server's statistics (`asr_bridge stats`), sending `token` when there is one.
pub fn fetch_stats(addr: &ServerAddr, deadline: Duration, token: Option<&Token>) -> Result<serde_json::Value, AsrError> {
    let mut ws = connect(addr, "/stats", deadline, token)?;
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                let _ = ws.close(None);
                return serde_json::from_str(t.as_str()).map_err(|e| unreachable(addr, format!("bad statistics: {e}")));
            }
            Ok(_) => continue,
            Err(e) => return Err(unreachable(addr, e)),
        }
    }
}

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
            AsrError::ServerUnreachable { addr, reason } | AsrError::ServerLost { addr, reason } | AsrError::ServerRefused { addr, reason } => (addr, reason.clone()),
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
    /// The server takes [`PAUSE`] (it sent [`PAUSE_HEADER`]): quiet spells are announced.
    pausable: bool,
    /// A [`PAUSE`] was sent and no audio since.
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
        let mut config = json!({"sample_rate": rate, "words": 1, "max_alternatives": opts.alternatives, "partial_results": 0});
        if let Some(g) = &opts.grammar {
            config["phrase_list"] = json!(g);
        }
        let msg = json!({ "config": config }).to_string();
        let name = addr.to_string();
        ws.send(Message::text(msg)).map_err(|e| AsrError::ServerLost { addr: name.clone(), reason: e.to_string() })?;
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
    fn reply(&mut self) -> Result<serde_json::Value, AsrError> {
        self.next_reply()?.ok_or_else(|| self.lost("no reply within the deadline (--server-timeout)"))
    }

    /// The next reply; None when none came in time (a blocking socket's deadline) or none is
    /// there yet (a non-blocking one).
    fn next_reply(&mut self) -> Result<Option<serde_json::Value>, AsrError> {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => return serde_json::from_str(t.as_str()).map(Some).map_err(|e| self.lost(format!("bad reply: {e}"))),
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
    fn on_reply(&mut self, reply: &serde_json::Value) {
        self.in_flight.pop_front();
        if let Some(seg) = Segment::from_reply(reply) {
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
                Ok(Some(v)) => self.on_reply(&v),
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
        self.on_reply(&reply?);
        Ok(())
    }

    /// Sends a ping when nothing was sent for a third of the server's idle timeout (which must
    /// not end a call that is only waiting: a long prompt without barge-in, DTX); the pong is
    /// skipped when the next reply is read. To `asr_bridge serve`, which drops a connection
    /// without audio even when it pings unless told, the first ping of a quiet spell follows a
    /// [`PAUSE`].
    pub fn keepalive(&mut self) -> Result<(), AsrError> {
        if !self.in_flight.is_empty() {
            // No audio to send (DTX), replies still owed: their deadline runs all the same.
            self.take_ready()?;
        }
        if self.last_sent.elapsed() < self.keepalive {
            return Ok(());
        }
        if self.pausable && !self.paused {
            self.ws.send(Message::text(PAUSE)).map_err(|e| self.lost(e))?;
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
        self.ws.send(Message::text(r#"{"eof" : 1}"#)).map_err(|e| self.lost(e))?;
        let reply = self.reply()?;
        let seg = Segment::from_reply(&reply).ok_or_else(|| self.lost(format!("expected a final result, got {reply}")))?;
        self.transcript.push(seg);
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
        Ok(self.transcript)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::http::StatusCode;

    fn a() -> ServerAddr {
        "ws://lb:80".parse().unwrap()
    }

    #[test]
    fn only_a_marked_503_is_busy() {
        let busy = refusal(&a(), StatusCode::SERVICE_UNAVAILABLE, true, "at capacity (4 calls)", false);
        assert!(matches!(&busy, AsrError::ServerBusy { reason, .. } if reason == "at capacity (4 calls)"), "{busy:?}");
        let html = "<html><body><h1>503 Service Unavailable</h1>\nNo server is available to handle this request.\n</body></html>";
        for (status, body) in [(StatusCode::SERVICE_UNAVAILABLE, html), (StatusCode::BAD_GATEWAY, ""), (StatusCode::GATEWAY_TIMEOUT, "")] {
            let e = refusal(&a(), status, false, body, false);
            assert!(matches!(e, AsrError::ServerUnreachable { .. }), "{status}: {e:?}");
            assert!(e.to_string().ends_with(&format!("unreachable: HTTP {status}")), "{e}");
        }
        // The marker on another status does not make it busy.
        assert!(matches!(refusal(&a(), StatusCode::BAD_GATEWAY, true, "", false), AsrError::ServerUnreachable { .. }));
        let e = refusal(&a(), StatusCode::NOT_FOUND, false, "no such path", false);
        assert_eq!(e.to_string(), "recognition server ws://lb:80/ unreachable: HTTP 404 Not Found: no such path");
    }

    #[test]
    fn a_refused_or_missing_token_says_so() {
        let e = refusal(&a(), StatusCode::UNAUTHORIZED, false, "", true).to_string();
        assert!(e.contains("HTTP 401 Unauthorized") && e.contains("refused the token"), "{e}");
        let e = refusal(&a(), StatusCode::FORBIDDEN, false, "", false).to_string();
        assert!(e.contains("HTTP 403 Forbidden") && e.contains("wants a token") && e.contains("ASR_BRIDGE_TOKEN"), "{e}");
    }

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
                    Ok(Message::Text(t)) if t.as_str() == PAUSE => seen.push("pause"),
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

//! Connections between a client and a server, below both: where a server listens
//! ([`ServerAddr`]), the stream of either kind ([`Conn`]), and a client's side of the
//! WebSocket handshake ([`connect`]: deadlines, the token, what a refusal means), with the one
//! request that needs nothing more ([`fetch_stats`]). The server accepts on its own listeners
//! and speaks over the same [`Conn`]. Blocking calls, each with a deadline, on the caller's
//! thread.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

use crate::asr::AsrError;
use crate::protocol::{Token, BUSY_HEADER, HEADER_ON, IDLE_HEADER, PAUSE_HEADER};

/// Where the server listens: `unix:PATH` or `ws://HOST:PORT[/PATH]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerAddr {
    Unix(PathBuf),
    Ws { host: String, port: u16, path: String },
}

impl std::str::FromStr for ServerAddr {
    type Err = String;

    /// ```
    /// use asr_bridge::net::ServerAddr;
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
            Some((h, p)) if !h.is_empty() && !h.ends_with(':') => (h.to_string(), p.parse::<u16>().map_err(|_| format!("{s:?}: bad port {p:?}"))?),
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
        self.set_read_timeout(t).and_then(|()| match self {
            Conn::Unix(s) => s.set_write_timeout(t),
            Conn::Tcp(s) => s.set_write_timeout(t),
        })
    }

    /// The read deadline alone.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        match self {
            Conn::Unix(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
        }
    }

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

/// Opens a WebSocket to `addr` at `path` ("/" for calls), connect and handshake within
/// `deadline`, sending `token` when there is one. See [`connect_with_idle`] for how a refusal
/// reads.
pub fn connect(addr: &ServerAddr, path: &str, deadline: Duration, token: Option<&Token>) -> Result<WebSocket<Conn>, AsrError> {
    connect_with_idle(addr, path, deadline, token).map(|(ws, _)| ws)
}

/// What the server said in its handshake response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// Its idle timeout ([`IDLE_HEADER`]).
    pub idle: Option<Duration>,
    /// It takes [`crate::protocol::ClientMessage::Pause`] ([`PAUSE_HEADER`]).
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
        let value = tungstenite::http::HeaderValue::from_str(&format!("Bearer {}", t.secret())).map_err(|e| unreachable(addr, e))?;
        request.headers_mut().insert(tungstenite::http::header::AUTHORIZATION, value);
    }
    match tungstenite::client::client(request, conn) {
        Ok((ws, resp)) => {
            let h = resp.headers();
            let idle = h.get(IDLE_HEADER).and_then(|v| v.to_str().ok()?.parse::<u64>().ok()).map(Duration::from_millis);
            Ok((ws, Handshake { idle, pause: h.get(PAUSE_HEADER).is_some_and(|v| v.as_bytes() == HEADER_ON.as_bytes()) }))
        }
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().map(|b| String::from_utf8_lossy(b).trim().to_string()).unwrap_or_default();
            let busy = resp.headers().get(BUSY_HEADER).is_some_and(|v| v.as_bytes() == HEADER_ON.as_bytes());
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
}

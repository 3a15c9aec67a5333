//! The HTTP side of every connection, before any WebSocket: the request head, read within one
//! total deadline and a size cap (a client trickling a byte at a time, or sending an endless
//! header, holds its thread for [`HANDSHAKE_DEADLINE`] at most), plain responses (health,
//! metrics, refusals), and the stream handed on to the WebSocket handshake with the bytes
//! already read in front of it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::net::Conn;

/// From accept to a complete request head (and for the WebSocket handshake after it).
pub(crate) const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(5);

/// The largest request head taken (a browser's is under 2 KiB; a token adds a few dozen bytes).
const HEAD_LIMIT: usize = 16 * 1024;

/// What the server needs of a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub method: String,
    /// The path without the query.
    pub path: String,
    /// `Upgrade: websocket` was asked for.
    pub upgrade: bool,
    /// The `Authorization` header's value.
    pub authorization: Option<String>,
    /// The subprotocols asked for (`Sec-WebSocket-Protocol`, comma-separated, in order).
    pub protocols: Vec<String>,
}

/// Why no request head was taken.
#[derive(Debug)]
pub(crate) enum HeadError {
    /// Closed before sending a byte: a probe (`--server=auto` looking for the server, a TCP
    /// health check), not worth a log line.
    Probe,
    TimedOut,
    TooLarge,
    Malformed(String),
    Io(std::io::Error),
}

impl std::fmt::Display for HeadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeadError::Probe => write!(f, "closed before a request"),
            HeadError::TimedOut => write!(f, "no complete request within {HANDSHAKE_DEADLINE:?}"),
            HeadError::TooLarge => write!(f, "request head over {HEAD_LIMIT} bytes"),
            HeadError::Malformed(e) => write!(f, "malformed request: {e}"),
            HeadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Reads until a whole request head is in, by `until`. Returns it and every byte read (the
/// head and whatever followed it), for [`Replayed`].
pub(crate) fn read_head(conn: &mut Conn, until: Instant) -> Result<(Head, Vec<u8>), HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        conn.set_timeouts(Some(left)).map_err(HeadError::Io)?;
        let n = match conn.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Err(HeadError::Probe),
            Ok(0) => return Err(HeadError::Malformed("closed mid-request".into())),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => return Err(HeadError::TimedOut),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(HeadError::Io(e)),
        };
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head) = parse(&buf)? {
            return Ok((head, buf));
        }
        if buf.len() > HEAD_LIMIT {
            return Err(HeadError::TooLarge);
        }
    }
}

/// The head, once `buf` holds all of it.
fn parse(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(_)) => {
            let header = |name: &str| req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok());
            let path = req.path.unwrap_or("/");
            Ok(Some(Head {
                method: req.method.unwrap_or("").to_string(),
                path: path.split('?').next().unwrap_or("/").to_string(),
                upgrade: header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
                authorization: header("authorization").map(str::to_string),
                protocols: header("sec-websocket-protocol")
                    .map(|v| v.split(',').map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect())
                    .unwrap_or_default(),
            }))
        }
        Err(httparse::Error::TooManyHeaders) => Err(HeadError::TooLarge),
        Err(e) => Err(HeadError::Malformed(e.to_string())),
    }
}

/// Writes a whole plain HTTP response and closes; the connection is done.
pub(crate) fn respond(conn: &mut Conn, status: u16, headers: &[(&str, &str)], body: &str) {
    let mut out = format!("HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n", reason(status), body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.push_str(body);
    let _ = conn.set_timeouts(Some(Duration::from_secs(2)));
    let _ = conn.write_all(out.as_bytes());
    let _ = conn.flush();
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The connection with the bytes already read in front: what the WebSocket handshake reads.
#[derive(Debug)]
pub(crate) struct Replayed {
    read: Vec<u8>,
    at: usize,
    pub conn: Conn,
}

impl Replayed {
    pub(crate) fn new(read: Vec<u8>, conn: Conn) -> Replayed {
        Replayed { read, at: 0, conn }
    }

    /// The read deadline alone (a reply still gets the whole write deadline).
    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.conn.set_read_timeout(t)
    }
}

impl Read for Replayed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at < self.read.len() {
            let n = buf.len().min(self.read.len() - self.at);
            buf[..n].copy_from_slice(&self.read[self.at..self.at + n]);
            self.at += n;
            if self.at == self.read.len() {
                self.read = Vec::new();
                self.at = 0;
            }
            return Ok(n);
        }
        self.conn.read(buf)
    }
}

impl Write for Replayed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.conn.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.conn.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_once_complete() {
        assert_eq!(parse(b"GET /stats HTTP/1.1\r\nHost: x\r\n").unwrap(), None);
        let h = parse(b"GET /health?x=1 HTTP/1.1\r\nUpgrade: WebSocket\r\nauthorization: Bearer abc\r\n\r\n").unwrap().unwrap();
        assert_eq!(h, Head { method: "GET".into(), path: "/health".into(), upgrade: true, authorization: Some("Bearer abc".into()), protocols: vec![] });
        let h = parse(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Protocol: chat, speech_to_text\r\n\r\n").unwrap().unwrap();
        assert_eq!(h.protocols, ["chat", "speech_to_text"]);
        assert!(matches!(parse(b"\x16\x03\x01 tls hello\r\n\r\n"), Err(HeadError::Malformed(_))));
    }
}

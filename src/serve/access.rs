//! Who may use the server. A Unix socket is guarded by its file permissions (`--socket-mode`,
//! the unit's group). A TCP listener requires a shared token, presented by the client as
//! `Authorization: Bearer TOKEN` in its handshake, unless the server was explicitly opened with
//! `--allow-anonymous`; `--allow=CIDR` limits the addresses it answers at all. The rule covers
//! every path: calls, `/stats`, `/health`, `/metrics`.
//!
//! A client that can only send HTTP Basic credentials (Asterisk's AEAP client sends
//! `Authorization: Basic` from a URL's user info, `ws://asr:TOKEN@host:2700/aeap`, and no other
//! header) presents the token as the password; the user name is not checked.
//!
//! The token never appears on a command line (`ps` shows those to every user): it comes from
//! `ASR_BRIDGE_TOKEN` in the environment (the unit's `EnvironmentFile`) or `--token-file`.

use std::net::IpAddr;
use std::path::Path;

use crate::protocol::Token;

/// The token of `--token-file`, else of `ASR_BRIDGE_TOKEN`, else none; long enough for a TCP
/// listener ([`Token::for_listener`]) wherever it came from.
pub(crate) fn configured_token(file: Option<&Path>, env: Option<String>) -> Result<Option<Token>, String> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f).map_err(|e| format!("--token-file {}: {e}", f.display()))?;
        return Token::for_listener(&text, &format!("--token-file {}", f.display())).map(Some);
    }
    env.map(|t| Token::for_listener(&t, "ASR_BRIDGE_TOKEN")).transpose()
}

/// An address block of `--allow`: `10.0.0.0/8`, `::1`, `192.0.2.7`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let net: IpAddr = ip.parse().map_err(|_| format!("{s:?}: not an address or ADDRESS/PREFIX"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{s:?}: the prefix must be 0-{max}"))?,
        };
        Ok(Cidr { net, prefix })
    }
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => (u128::from(u32::from(n)), u128::from(u32::from(i)), 32),
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Who is at the other end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peer {
    Unix,
    Tcp(IpAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Unix => write!(f, "unix"),
            Peer::Tcp(ip) => write!(f, "{ip}"),
        }
    }
}

/// Why a request was refused: the HTTP status and what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// Not in `--allow` (403).
    Address,
    /// No token, or the wrong one (401).
    Token { presented: bool },
}

impl Denied {
    pub(crate) fn status(&self) -> u16 {
        match self {
            Denied::Address => 403,
            Denied::Token { .. } => 401,
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Denied::Address => "address not allowed (--allow)",
            Denied::Token { presented: false } => "a token is required (Authorization: Bearer, or Basic with the token as the password)",
            Denied::Token { presented: true } => "wrong token",
        }
    }
}

/// The token an `Authorization` value presents: `Bearer TOKEN`, or `Basic` with the token as
/// the password (`base64(user:TOKEN)`). None for any other scheme or a malformed value.
fn presented_token(authorization: &str) -> Option<String> {
    let a = authorization.trim();
    if let Some(t) = a.strip_prefix("Bearer ") {
        return Some(t.trim().to_string());
    }
    let decoded = base64(a.strip_prefix("Basic ")?.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    text.split_once(':').map(|(_, password)| password.to_string())
}

/// Standard base64 (RFC 4648, padding optional); None on any other character.
fn base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(u32::from(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        }))
    };
    let digits = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            acc |= value(*c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        match chunk.len() {
            4 => out.extend_from_slice(&bytes[1..4]),
            3 => out.extend_from_slice(&bytes[1..3]),
            2 => out.push(bytes[1]),
            _ => return None,
        }
    }
    Some(out)
}

/// The rule every request on this server passes.
#[derive(Debug, Clone)]
pub(crate) struct Access {
    token: Option<Token>,
    anonymous: bool,
    allow: Vec<Cidr>,
}

impl Access {
    /// The rule, checked against the listeners: a TCP listener needs a token or an explicit
    /// `--allow-anonymous`.
    pub(crate) fn new(token: Option<Token>, anonymous: bool, allow: Vec<Cidr>, tcp: bool) -> Result<Access, String> {
        if token.is_some() && anonymous {
            return Err("--allow-anonymous with a token: choose one (a token is required, or nothing is)".into());
        }
        if tcp && token.is_none() && !anonymous {
            return Err("a TCP listener needs a token (ASR_BRIDGE_TOKEN or --token-file) or, to open it to anyone who reaches it, --allow-anonymous".into());
        }
        Ok(Access { token, anonymous, allow })
    }

    /// Whether `peer`, presenting `authorization`, may go on.
    pub(crate) fn check(&self, peer: Peer, authorization: Option<&str>) -> Result<(), Denied> {
        let Peer::Tcp(ip) = peer else { return Ok(()) };
        if !self.allow.is_empty() && !self.allow.iter().any(|c| c.contains(ip)) {
            return Err(Denied::Address);
        }
        let Some(token) = &self.token else { return Ok(()) };
        let presented = authorization.and_then(presented_token);
        match presented.as_deref() {
            Some(p) if token.matches(p) => Ok(()),
            p => Err(Denied::Token { presented: p.is_some() }),
        }
    }

    /// A line for the start-up log.
    pub(crate) fn describe(&self) -> String {
        let who = match (&self.token, self.anonymous) {
            (Some(_), _) => "TCP requires the token",
            (None, true) => "TCP open to anyone (--allow-anonymous)",
            (None, false) => "Unix socket only",
        };
        if self.allow.is_empty() {
            who.to_string()
        } else {
            format!("{who}, from {} address block(s)", self.allow.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn tokens_are_required_and_compared() {
        let a = Access::new(Some(Token::for_listener(T, "t").unwrap()), false, vec![], true).unwrap();
        let ip = Peer::Tcp("192.0.2.1".parse().unwrap());
        assert_eq!(a.check(ip, Some(&format!("Bearer {T}"))), Ok(()));
        assert_eq!(a.check(ip, None), Err(Denied::Token { presented: false }));
        assert_eq!(a.check(ip, Some("Bearer 0123456789abcdef0123456789abcdeX")), Err(Denied::Token { presented: true }));
        assert_eq!(a.check(ip, Some(&format!("Bearer {T}0"))), Err(Denied::Token { presented: true }));
        assert_eq!(a.check(ip, Some(T)), Err(Denied::Token { presented: false }), "the scheme is required");
        assert_eq!(a.check(Peer::Unix, None), Ok(()), "a Unix socket is guarded by its permissions");
        // Asterisk's AEAP client: ws://asr:TOKEN@host/aeap sends Basic base64("asr:TOKEN").
        let basic = |userinfo: &str| format!("Basic {}", encode(userinfo.as_bytes()));
        assert_eq!(a.check(ip, Some(&basic(&format!("asr:{T}")))), Ok(()));
        assert_eq!(a.check(ip, Some(&basic(&format!("{T}:x")))), Err(Denied::Token { presented: true }), "the token is the password");
        assert_eq!(a.check(ip, Some("Basic !!!")), Err(Denied::Token { presented: false }));
    }

    /// base64 for the tests (the server only decodes).
    fn encode(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in bytes.chunks(3) {
            let n = (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..=c.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        while !out.len().is_multiple_of(4) {
            out.push('=');
        }
        out
    }

    #[test]
    fn base64_as_rfc_4648() {
        assert_eq!(base64("QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap(), b"Aladdin:open sesame");
        assert_eq!(base64("YQ").unwrap(), b"a");
        assert_eq!(base64(&encode(b"ab")).unwrap(), b"ab");
        assert!(base64("a").is_none());
        assert!(base64("a*==").is_none());
    }

    #[test]
    fn tcp_needs_a_token_or_an_explicit_opening() {
        assert!(Access::new(None, false, vec![], true).unwrap_err().contains("--allow-anonymous"));
        assert!(Access::new(None, false, vec![], false).is_ok());
        assert!(Access::new(None, true, vec![], true).is_ok());
        assert!(Access::new(Some(Token::for_listener(T, "t").unwrap()), true, vec![], true).is_err());
    }

    #[test]
    fn address_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()), "IPv4-mapped");
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!("::1".parse::<Cidr>().unwrap().contains("::1".parse().unwrap()));
        assert!(!"::1".parse::<Cidr>().unwrap().contains("127.0.0.1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nonsense".parse::<Cidr>().is_err());
        let a = Access::new(None, true, vec![c], true).unwrap();
        assert_eq!(a.check(Peer::Tcp("10.2.0.1".parse().unwrap()), None), Err(Denied::Address));
        assert_eq!(a.check(Peer::Tcp("10.1.0.1".parse().unwrap()), None), Ok(()));
    }
}

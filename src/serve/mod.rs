//! `asr_bridge serve`: the resident recognizer. One model loaded once and shared by every
//! call; one recognizer per call; libvosk work on a worker pool sized to the cores
//! ([`pool`]); vosk-server's WebSocket protocol ([`call`]) on a Unix socket (default) and
//! optionally TCP. Admission control refuses a call past `--max-calls` at once, with HTTP 503
//! at the handshake, so an EAGI client can set `ASR_CAUSE=100` and the dialplan can fall back
//! to DTMF instead of the caller waiting in a queue. SIGTERM drains: no new calls, calls in
//! flight finish (up to `--drain-timeout`). `/stats` answers with [`stats::Stats`] as JSON.
//!
//! Thread per connection (blocking sockets with deadlines), decode on the pool: a connection
//! thread costs a few pages of stack; the model and decoding are the memory and CPU.

pub mod call;
pub mod invariants;
pub mod meter;
pub mod pool;
pub mod stats;
pub mod warm;

use std::cell::Cell;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use crate::asr::engine::load_model;
use crate::asr::model::inspect;
use crate::asr::remote::{fetch_stats, Conn, ServerAddr};
use crate::asr::ModelInfo;
use crate::config::parse_duration;
use crate::log_line;
use call::{classify, CallConfig, ServedCall, TextMessage};
use pool::Pool;
use stats::Stats;

/// The default address (a socket in the systemd unit's RuntimeDirectory).
pub const DEFAULT_ADDRESS: &str = "unix:/run/asr_bridge/asr.sock";

/// Serves recognition to many calls from one resident model.
#[derive(Debug, Parser)]
#[command(name = "asr_bridge serve")]
pub struct ServeArgs {
    /// Vosk model directory (loaded once).
    #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = crate::config::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Where to listen: unix:PATH or tcp:HOST:PORT (repeatable).
    #[arg(long = "listen", default_value = DEFAULT_ADDRESS)]
    pub listen: Vec<String>,
    /// Decode threads [default: the number of cores].
    #[arg(long)]
    pub workers: Option<usize>,
    /// Calls served at once; past this a new call is refused at once [default: 2 per worker,
    /// what a warm server held within the latency bound on 2 cores; measure what your machine
    /// and model hold with `asr_bridge bench --served`].
    #[arg(long)]
    pub max_calls: Option<usize>,
    /// Build a new recognizer for every call (as vosk-server does) instead of reusing warm
    /// ones: 3-6x the decoding CPU on the test model.
    #[arg(long)]
    pub cold: bool,
    /// Retire a warm recognizer after this many calls (it grows as it expands its graph).
    #[arg(long, default_value_t = 200)]
    pub warm_max_uses: u32,
    /// Retire a warm recognizer that holds more than this many MB (`asr_bridge stats` shows
    /// what the idle ones hold). On the test model one holds 37 MB after its first call, 60-67
    /// MB after five short ones, and past 96 MB after long calls: what it holds is mostly the
    /// expanded graph that makes it fast, so a bound below that rebuilds cold recognizers.
    #[arg(long, default_value_t = 128)]
    pub warm_max_mb: u32,
    /// Permissions of the Unix socket (octal).
    #[arg(long, default_value = "660")]
    pub socket_mode: String,
    /// A call whose client sends nothing this long is dropped (its recognizer freed).
    #[arg(long, default_value = "30s")]
    pub idle_timeout: String,
    /// On SIGTERM, how long calls in flight may take to finish.
    #[arg(long, default_value = "30s")]
    pub drain_timeout: String,
    /// Audio rate assumed for a client that sends audio without a config message.
    #[arg(long, default_value_t = 8000)]
    pub sample_rate: u32,
    /// Exit after this long without calls [default: never; 10m with --on-demand].
    #[arg(long)]
    pub idle_exit: Option<String>,
    /// Started by a call (`--server=auto`): exit after --idle-exit without calls, and when the
    /// --model path comes to name other model files (a new model deployed), so the next call
    /// starts a fresh server on it.
    #[arg(long)]
    pub on_demand: bool,
}

/// Without calls this long, a server started on demand exits.
const ON_DEMAND_IDLE_EXIT: Duration = Duration::from_secs(600);

enum Listener {
    /// `ours`: bound here, so its file is removed at exit (not one systemd passed).
    Unix { l: UnixListener, path: PathBuf, ours: bool },
    Tcp(TcpListener),
}

impl Listener {
    fn bind(spec: &str, mode: u32) -> Result<Listener, String> {
        if let Some(p) = spec.strip_prefix("unix:") {
            let path = PathBuf::from(p);
            if path.exists() {
                if UnixStream::connect(&path).is_ok() {
                    return Err(format!("{p}: another server is already listening there"));
                }
                std::fs::remove_file(&path).map_err(|e| format!("{p}: cannot remove the stale socket: {e}"))?;
            }
            let l = UnixListener::bind(&path).map_err(|e| format!("{p}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{p}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(Listener::Unix { l, path, ours: true })
        } else if let Some(a) = spec.strip_prefix("tcp:") {
            let l = TcpListener::bind(a).map_err(|e| format!("{a}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(Listener::Tcp(l))
        } else {
            Err(format!("--listen {spec:?}: expected unix:PATH or tcp:HOST:PORT"))
        }
    }

    /// The sockets systemd passed (socket activation: `LISTEN_PID` is this process,
    /// `LISTEN_FDS` of them from fd 3), or None when it passed none.
    fn inherited() -> Result<Option<Vec<Listener>>, String> {
        use std::os::fd::FromRawFd;
        let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        let n: i32 = std::env::var("LISTEN_FDS").ok().and_then(|n| n.parse().ok()).unwrap_or(0);
        for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(v);
        }
        if !ours || n < 1 {
            return Ok(None);
        }
        let mut out = Vec::new();
        for fd in 3..3 + n {
            let addr: nix::sys::socket::SockaddrStorage = nix::sys::socket::getsockname(fd).map_err(|e| format!("socket activation: fd {fd}: {e}"))?;
            let l = if let Some(u) = addr.as_unix_addr() {
                let path = u.path().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(format!("fd{fd}")));
                // SAFETY: systemd passed this descriptor to this process to own; it is a Unix
                // socket (getsockname said so) and nothing else here uses it.
                let l = unsafe { UnixListener::from_raw_fd(fd) };
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Listener::Unix { l, path, ours: false }
            } else {
                // SAFETY: as above, a socket of another family (TCP) passed to this process.
                let l = unsafe { TcpListener::from_raw_fd(fd) };
                l.set_nonblocking(true).map_err(|e| e.to_string())?;
                Listener::Tcp(l)
            };
            out.push(l);
        }
        Ok(Some(out))
    }

    fn name(&self) -> String {
        match self {
            Listener::Unix { path, .. } => format!("unix:{}", path.display()),
            Listener::Tcp(l) => l.local_addr().map(|a| format!("ws://{a}")).unwrap_or_else(|_| "tcp:?".into()),
        }
    }

    fn accept(&self) -> Option<(Conn, String)> {
        match self {
            Listener::Unix { l, .. } => l.accept().ok().map(|(s, _)| (Conn::Unix(s), "unix".to_string())),
            Listener::Tcp(l) => l.accept().ok().map(|(s, a): (TcpStream, _)| {
                let _ = s.set_nodelay(true);
                (Conn::Tcp(s), a.to_string())
            }),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix { path, ours: true, .. } = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Largest message taken from a client: 10 s of 48 kHz audio.
const MAX_MESSAGE: usize = 960 * 1024;

/// What the server shares with each connection thread.
struct Shared {
    model: Mutex<vosk::Model>,
    info: ModelInfo,
    pool: Pool,
    stats: Stats,
    /// Recognizers kept warm between calls.
    warm: warm::WarmPool<crate::asr::Engine>,
    idle: Duration,
    default_rate: u32,
    listen: Vec<String>,
    next_id: AtomicUsize,
}

/// Entry point of `asr_bridge serve`.
pub fn main(args: Vec<String>) -> ExitCode {
    let args = match ServeArgs::try_parse_from(std::iter::once("serve".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let code = match serve(args) {
        Ok(()) => 0,
        Err(e) => {
            log_line!("serve: {e}");
            1
        }
    };
    // _exit: past the drain deadline, connection threads may still be inside libvosk, whose
    // C++ static destructors must not run under them. stderr is unbuffered; nothing else is owed.
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(code) }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    // First, while this is the only thread: the environment is read and cleared here.
    let passed = Listener::inherited()?;
    let dur = |name: &str, v: &str| parse_duration(v).ok_or_else(|| format!("--{name} {v:?}: not a duration"));
    let idle = dur("idle-timeout", &args.idle_timeout)?;
    let drain = dur("drain-timeout", &args.drain_timeout)?;
    let mode = u32::from_str_radix(&args.socket_mode, 8).map_err(|_| format!("--socket-mode {:?}: not octal", args.socket_mode))?;
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let max_calls = args.max_calls.unwrap_or(workers * 2).max(1);
    let idle_exit = match &args.idle_exit {
        Some(v) => Some(dur("idle-exit", v)?),
        None => args.on_demand.then_some(ON_DEMAND_IDLE_EXIT),
    };
    let deployed = args.on_demand.then(|| ModelFiles::of(&args.model));
    // Signals first, so a SIGTERM during the model load still ends us cleanly.
    let signals = Arc::new(AtomicUsize::new(0));
    for s in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let n = signals.clone();
        // SAFETY: the handler only increments an atomic, which is async-signal-safe.
        unsafe { signal_hook::low_level::register(s, move || { n.fetch_add(1, Ordering::SeqCst); }) }
            .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    let info = inspect(&args.model).map_err(|e| e.to_string())?;
    let (model, load) = load_model(&info).map_err(|e| e.to_string())?;
    let listeners: Vec<Listener> = match passed {
        Some(passed) => passed,
        None => args.listen.iter().map(|l| Listener::bind(l, mode)).collect::<Result<_, _>>()?,
    };
    let listen: Vec<String> = listeners.iter().map(Listener::name).collect();
    let shared = Arc::new(Shared {
        model: Mutex::new(model),
        info,
        pool: Pool::new(workers).map_err(|e| format!("cannot start the decode workers: {e}"))?,
        stats: Stats::new(max_calls),
        warm: warm::WarmPool::new(warm::Bounds {
            capacity: if args.cold { 0 } else { max_calls },
            max_uses: args.warm_max_uses.max(1),
            max_bytes: i64::from(args.warm_max_mb) << 20,
        }),
        idle,
        default_rate: args.sample_rate,
        listen: listen.clone(),
        next_id: AtomicUsize::new(1),
    });
    log_line!(
        "serving {} (loaded in {:.0} ms) on {} with {workers} decode workers, at most {max_calls} calls",
        shared.info.dir.display(),
        load.as_secs_f64() * 1000.0,
        listen.join(", ")
    );
    notify_systemd("READY=1");
    let fds: Vec<_> = listeners
        .iter()
        .map(|l| match l {
            Listener::Unix { l, .. } => l.as_fd(),
            Listener::Tcp(t) => t.as_fd(),
        })
        .collect();
    let mut idle = IdleWatch::new(&shared.stats);
    while signals.load(Ordering::SeqCst) == 0 {
        if let Some(why) = idle.expired(&shared.stats, idle_exit).or_else(|| deployed.as_ref().and_then(|d| d.changed(&args.model))) {
            log_line!("{why}; exiting");
            break;
        }
        let mut pfds: Vec<nix::poll::PollFd> = fds.iter().map(|fd| nix::poll::PollFd::new(*fd, nix::poll::PollFlags::POLLIN)).collect();
        if nix::poll::poll(&mut pfds, nix::poll::PollTimeout::from(200u16)).unwrap_or(0) <= 0 {
            continue;
        }
        for l in &listeners {
            while let Some((conn, peer)) = l.accept() {
                let _ = conn.set_nonblocking(false);
                let sh = shared.clone();
                let spawned = std::thread::Builder::new().name("call".into()).spawn(move || connection(&sh, conn, &peer));
                if let Err(e) = spawned {
                    log_line!("cannot start a connection thread: {e}");
                }
            }
        }
    }
    // Drain: stop listening (new clients get "connection refused" and fall back), let the
    // calls in flight finish.
    shared.stats.draining.store(true, Ordering::SeqCst);
    notify_systemd("STOPPING=1");
    drop(fds);
    drop(listeners);
    let active = shared.stats.active.load(Ordering::SeqCst);
    log_line!("shutting down: no new calls; waiting up to {drain:?} for {active} call(s) in flight");
    let until = Instant::now() + drain;
    let first = signals.load(Ordering::SeqCst);
    while shared.stats.active.load(Ordering::SeqCst) > 0 && Instant::now() < until && signals.load(Ordering::SeqCst) == first {
        std::thread::sleep(Duration::from_millis(20));
    }
    let left = shared.stats.active.load(Ordering::SeqCst);
    if left > 0 {
        log_line!("exiting with {left} call(s) still in flight");
    } else {
        log_line!("all calls finished; exiting");
    }
    Ok(())
}

/// When the server last had a call (active, or accepted since the last look).
struct IdleWatch {
    busy_at: Instant,
    accepted: u64,
}

impl IdleWatch {
    fn new(stats: &Stats) -> IdleWatch {
        IdleWatch { busy_at: Instant::now(), accepted: stats.accepted.load(Ordering::SeqCst) }
    }

    /// Why to exit, once `limit` has passed without calls.
    fn expired(&mut self, stats: &Stats, limit: Option<Duration>) -> Option<String> {
        let accepted = stats.accepted.load(Ordering::SeqCst);
        if accepted != self.accepted || stats.active.load(Ordering::SeqCst) > 0 {
            self.accepted = accepted;
            self.busy_at = Instant::now();
        }
        let limit = limit?;
        (self.busy_at.elapsed() >= limit).then(|| format!("no calls for {limit:?} (--idle-exit)"))
    }
}

/// What a model path names: the directory it resolves to and its acoustic model file.
#[derive(Debug, PartialEq)]
struct ModelFiles(Option<(PathBuf, u64, u64, i64, u64)>);

impl ModelFiles {
    fn of(path: &std::path::Path) -> ModelFiles {
        use std::os::unix::fs::MetadataExt;
        let Ok(dir) = path.canonicalize() else { return ModelFiles(None) };
        let files = std::fs::metadata(dir.join("am/final.mdl")).ok().map(|m| (dir.clone(), m.dev(), m.ino(), m.mtime(), m.size()));
        ModelFiles(files)
    }

    /// Why to exit, when `path` has come to name other model files since the start.
    fn changed(&self, path: &std::path::Path) -> Option<String> {
        (ModelFiles::of(path) != *self).then(|| format!("the model at {} changed (a new model deployed?)", path.display()))
    }
}

/// Tells systemd (`Type=notify`) how we are, when it started us with `$NOTIFY_SOCKET`.
fn notify_systemd(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
        }
        None => sock.send_to(state.as_bytes(), &path),
    };
    if let Err(e) = sent {
        log_line!("cannot notify systemd ({state}): {e}");
    }
}

/// One accepted connection: the handshake (admission, or statistics), then the call.
#[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
fn connection(sh: &Shared, conn: Conn, peer: &str) {
    let _ = conn.set_timeouts(Some(Duration::from_secs(5)));
    let wants_stats = Cell::new(false);
    let admitted = Cell::new(false);
    let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == "/stats" {
            wants_stats.set(true);
            return Ok(resp);
        }
        if sh.stats.draining.load(Ordering::SeqCst) {
            return Err(refusal("shutting down"));
        }
        if !sh.stats.admit() {
            return Err(refusal(&format!("at capacity: {} calls active", sh.stats.max_calls)));
        }
        admitted.set(true);
        let mut resp = resp;
        if let Ok(v) = (sh.idle.as_millis() as u64).to_string().parse() {
            resp.headers_mut().insert(crate::asr::remote::IDLE_HEADER, v);
        }
        Ok(resp)
    };
    // Audio messages are small (vosk clients send 0.1-0.5 s); a huge one is refused rather
    // than buffered.
    let limits = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let result = tungstenite::accept_hdr_with_config(conn, callback, Some(limits));
    // The slot is given back however the connection ends.
    let mut slot = admitted.get().then(|| SlotGuard(&sh.stats));
    let mut ws = match result {
        Ok(ws) => ws,
        Err(e) => {
            // A connection closed before it sent anything is a probe (`--server=auto` looking
            // for this server, a health check), not a refused call.
            let probe = matches!(&e, tungstenite::HandshakeError::Failure(tungstenite::Error::Protocol(tungstenite::error::ProtocolError::HandshakeIncomplete)));
            if !admitted.get() && !wants_stats.get() && !probe {
                log_line!("refused a call from {peer}: {e}");
            }
            return;
        }
    };
    if wants_stats.get() {
        let mut j = sh.stats.to_json(&sh.info.dir.display().to_string(), sh.pool.workers(), &sh.listen);
        j["warm"] = sh.warm.to_json();
        let _ = ws.send(Message::text(j.to_string()));
        let _ = ws.close(None);
        let _ = ws.flush();
        return;
    }
    let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = ws.get_ref().set_timeouts(Some(sh.idle));
    let mut held = None;
    match serve_call(sh, &mut ws, id, &mut held, &mut slot) {
        Ok(()) => {
            sh.stats.completed.fetch_add(1, Ordering::Relaxed);
        }
        Err((code, why)) => {
            sh.stats.aborted.fetch_add(1, Ordering::Relaxed);
            log_line!("call {id} from {peer} ended: {why}");
            // The slot first: the caller may already be placing its next call.
            drop(slot.take());
            if let Some(c) = held.take() {
                recycle(sh, c);
            }
            if let Some(code) = code {
                // A close reason holds at most 123 bytes; cut at a character boundary.
                let mut cut = why.len().min(120);
                while !why.is_char_boundary(cut) {
                    cut -= 1;
                }
                let reason = why[..cut].to_string();
                let _ = ws.close(Some(CloseFrame { code, reason: reason.into() }));
                let _ = ws.flush();
            }
        }
    }
}

struct SlotGuard<'a>(&'a Stats);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

/// A call cut off mid-utterance: its recognizer ends the utterance on the pool and goes back
/// warm ([`ServedCall::abandon`]).
fn recycle(sh: &Shared, c: Box<ServedCall>) {
    match sh.pool.run(move || c.abandon()) {
        Some((Some((key, w)), _)) => sh.warm.put(key, w),
        _ => sh.warm.note_discarded(),
    }
}

fn refusal(why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_string()));
    *r.status_mut() = tungstenite::http::StatusCode::SERVICE_UNAVAILABLE;
    r
}

type CallEnd = Result<(), (Option<CloseCode>, String)>;

/// vosk-server's loop for one call; `Ok` when the client got its final result. `call` holds
/// the call's recognizer between messages, and still holds it when the call ends otherwise.
/// `slot` is the call's admission, given back as soon as the final result is sent.
fn serve_call(sh: &Shared, ws: &mut WebSocket<Conn>, id: usize, call: &mut Option<Box<ServedCall>>, slot: &mut Option<SlotGuard>) -> CallEnd {
    let mut cfg = CallConfig::new(sh.default_rate);
    let mut counted_ms = 0u64;
    loop {
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Err((None, "client closed before eof".into())),
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err((Some(CloseCode::Away), format!("client silent for {:?}", sh.idle)))
            }
            Err(e) => return Err((None, format!("client gone: {e}"))),
        };
        let received = Instant::now();
        let (work, last): (Work, bool) = match msg {
            Message::Text(t) => match classify(t.as_str()) {
                TextMessage::Config(c) => {
                    if call.is_some() {
                        log_line!("call {id}: config after audio ignored");
                    } else if let Err(e) = cfg.apply(&c) {
                        return Err((Some(CloseCode::Policy), format!("bad config: {e}")));
                    }
                    continue;
                }
                TextMessage::Eof => (Work::Final, true),
                TextMessage::Reset => (Work::Final, false),
                TextMessage::Other => return Err((Some(CloseCode::Unsupported), "unsupported text message".into())),
            },
            Message::Binary(b) => (Work::Audio(b.to_vec()), false),
            Message::Close(_) => return Err((None, "client closed before eof".into())),
            _ => continue,
        };
        let c = match call.take() {
            Some(c) => c,
            None => {
                let (c, oov) = ServedCall::open(&sh.model, &sh.info, &cfg, &sh.warm).map_err(|e| (Some(CloseCode::Policy), e.to_string()))?;
                if !oov.is_empty() {
                    log_line!("call {id}: grammar words not in the model's vocabulary: {}", oov.join(", "));
                }
                Box::new(c)
            }
        };
        let audio = matches!(work, Work::Audio(_));
        let (c, reply, queued) = sh
            .pool
            .run(move || {
                let mut c = c;
                let r = match work {
                    Work::Audio(b) => c.audio(&b),
                    Work::Final => c.finish(),
                };
                (c, r)
            })
            .map(|((c, r), q)| (c, r, q))
            .ok_or_else(|| {
                sh.warm.note_discarded();
                (Some(CloseCode::Error), "decoding panicked".to_string())
            })?;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                *call = Some(c);
                return Err((Some(CloseCode::Error), e.to_string()));
            }
        };
        if audio {
            sh.stats.record(received.elapsed(), queued);
            let ms = c.samples * 1000 / c.rate.max(1) as u64;
            sh.stats.audio_ms.fetch_add(ms - counted_ms, Ordering::Relaxed);
            counted_ms = ms;
        }
        if last {
            // The call's work is done: free its slot before the client has its result, since it
            // may place its next call the moment it does (not after the recognizer is pooled or
            // freed, which takes a while).
            drop(slot.take());
        }
        if let Err(e) = ws.send(Message::text(reply)) {
            *call = Some(c);
            return Err((None, format!("client gone: {e}")));
        }
        if last {
            // The final result is taken: the recognizer is clean for the next caller.
            match c.into_warm() {
                Some((key, w)) => sh.warm.put(key, w),
                None => sh.warm.note_discarded(),
            }
            let _ = ws.close(None);
            let _ = ws.flush();
            return Ok(());
        }
        *call = Some(c);
    }
}

enum Work {
    Audio(Vec<u8>),
    Final,
}

/// Runs `asr_bridge stats`: the server's statistics as pretty JSON for `main` to print, and
/// the exit status (1 when it cannot be reached: a health check).
pub fn stats(args: Vec<String>) -> (String, ExitCode) {
    #[derive(Parser)]
    #[command(name = "asr_bridge stats")]
    struct StatsArgs {
        /// The server: unix:PATH or ws://HOST:PORT; `auto`: the resident server of --model (as
        /// a call with the default --server=auto finds it), or else the installed unit's socket.
        #[arg(long, env = "ASR_BRIDGE_SERVER", default_value = "auto")]
        server: String,
        /// The model whose resident server `auto` means.
        #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = crate::config::DEFAULT_MODEL)]
        model: PathBuf,
        /// Connect and reply deadline.
        #[arg(long, default_value = "2s")]
        timeout: String,
    }
    let a = match StatsArgs::try_parse_from(std::iter::once("stats".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let parsed = match a.server.as_str() {
        // The model's resident server where there is one, else the installed unit's socket.
        "auto" => Ok(crate::asr::resident::runtime_dir()
            .and_then(|d| crate::asr::resident::socket_path(&d, &a.model))
            .ok()
            .filter(|s| s.exists())
            .map(ServerAddr::Unix)
            .unwrap_or_else(|| ServerAddr::Unix(PathBuf::from(DEFAULT_ADDRESS.trim_start_matches("unix:"))))),
        other => other.parse().map_err(|e| format!("--server {e}")),
    };
    let addr: ServerAddr = match parsed {
        Ok(s) => s,
        Err(e) => {
            eprintln!("stats: {e}");
            return (String::new(), ExitCode::from(2));
        }
    };
    let t = parse_duration(&a.timeout).unwrap_or(Duration::from_secs(2));
    let token = match crate::config::client_token_from_env() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("stats: {e}");
            return (String::new(), ExitCode::from(2));
        }
    };
    match fetch_stats(&addr, t, token.as_ref()) {
        Ok(v) => (serde_json::to_string_pretty(&v).unwrap_or_default() + "\n", ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("stats: {e}");
            (String::new(), ExitCode::FAILURE)
        }
    }
}

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
//!
//! On a network ([`access`]): TCP needs a token (or `--allow-anonymous`) and may be limited to
//! address blocks. Limits that hold against a hostile client: at most `--max-handshakes`
//! connections before their handshake, each with one total deadline ([`http`]); accept errors
//! (EMFILE) back off; audio per message capped (`--max-message-audio`) and decoded a block at a
//! time on the pool; phrase lists capped and checked without a shared lock ([`call`]); a
//! connection that sends no audio for `--idle-timeout` is dropped even if it pings, unless the
//! client announced a pause; `--max-calls-per-client` shares the slots out by address.
//! Plain HTTP: `/health` (200, or 503 while draining) and `/metrics` (Prometheus text).

pub(crate) mod access;
pub mod aeap;
pub(crate) mod call;
pub(crate) mod http;
pub mod invariants;
pub(crate) mod meter;
pub(crate) mod pool;
pub(crate) mod stats;
pub(crate) mod warm;

use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tungstenite::http::HeaderValue;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

use crate::asr::engine::load_model;
use crate::asr::model::inspect;
use crate::asr::ModelInfo;
use crate::log_line;
use crate::net::Conn;
use crate::protocol::{BadMessage, ClientMessage, BUSY_HEADER, HEADER_ON, IDLE_HEADER, PAUSE_HEADER};
use access::{Access, Cidr, Peer};
use call::{Afterlife, CallConfig, ServedCall};
use http::{Replayed, HANDSHAKE_DEADLINE};
use pool::{Pool, Usage};
use stats::{Refusal, Stats};

/// The default address (a socket in the systemd unit's RuntimeDirectory).
pub const DEFAULT_ADDRESS: &str = "unix:/run/asr_bridge/asr.sock";

/// Serves recognition to many calls from one resident model.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Vosk model directory (loaded once).
    #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = crate::asr::model::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Where to listen: unix:PATH or tcp:HOST:PORT (repeatable).
    #[arg(long = "listen", default_value = DEFAULT_ADDRESS)]
    pub listen: Vec<ListenAddr>,
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
    #[arg(long, default_value = "660", value_parser = octal_mode)]
    pub socket_mode: u32,
    /// A call whose client sends nothing this long is dropped (its recognizer freed).
    #[arg(long, default_value = "30s", value_parser = crate::value::duration)]
    pub idle_timeout: Duration,
    /// On SIGTERM, how long calls in flight may take to finish.
    #[arg(long, default_value = "30s", value_parser = crate::value::duration)]
    pub drain_timeout: Duration,
    /// Audio rate assumed for a client that sends audio without a config message.
    #[arg(long, default_value_t = 8000)]
    pub sample_rate: u32,
    /// Exit after this long without calls [default: never; 10m with --on-demand].
    #[arg(long, value_parser = crate::value::duration)]
    pub idle_exit: Option<Duration>,
    /// The token TCP clients must present (`Authorization: Bearer TOKEN`), read from this file
    /// (else from `ASR_BRIDGE_TOKEN` in the environment; never given on the command line).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Serve TCP clients without a token (anyone who reaches the port can run calls and read
    /// the statistics). Without a token or this, a TCP listener is refused at start.
    #[arg(long)]
    pub allow_anonymous: bool,
    /// Answer TCP clients only from these address blocks (repeatable): 10.0.0.0/8, ::1, ...
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<Cidr>,
    /// Connections accepted but not through their handshake, at most; more are closed at once.
    #[arg(long, default_value_t = 64)]
    pub max_handshakes: usize,
    /// Calls one client address may hold at once [default: no share; behind a balancer every
    /// call comes from the balancer's address].
    #[arg(long)]
    pub max_calls_per_client: Option<usize>,
    /// Audio one binary message may hold; a longer one closes the call (1009).
    #[arg(long, default_value = "10s", value_parser = crate::value::positive_duration)]
    pub max_message_audio: Duration,
    /// Started by a call (`--server=auto`): exit after --idle-exit without calls, and when the
    /// --model path comes to name other model files (a new model deployed), so the next call
    /// starts a fresh server on it.
    #[arg(long)]
    pub on_demand: bool,
}

fn octal_mode(v: &str) -> Result<u32, String> {
    u32::from_str_radix(v, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| "not an octal file mode (e.g. 660)".to_string())
}

/// Where `serve` listens (`--listen`): parsed once, where the option enters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`.
    Tcp(String),
}

impl ListenAddr {
    pub fn is_tcp(&self) -> bool {
        matches!(self, ListenAddr::Tcp(_))
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(spec: &str) -> Result<ListenAddr, String> {
        match (spec.strip_prefix("unix:"), spec.strip_prefix("tcp:")) {
            (Some(p), _) if !p.is_empty() => Ok(ListenAddr::Unix(PathBuf::from(p))),
            (_, Some(a)) if a.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) => Ok(ListenAddr::Tcp(a.to_string())),
            _ => Err("expected unix:PATH or tcp:HOST:PORT".to_string()),
        }
    }
}

/// Without calls this long, a server started on demand exits.
const ON_DEMAND_IDLE_EXIT: Duration = Duration::from_secs(600);

enum Listener {
    /// `ours`: bound here, so its file is removed at exit (not one systemd passed).
    Unix {
        l: UnixListener,
        path: PathBuf,
        ours: bool,
    },
    Tcp(TcpListener),
}

impl Listener {
    fn bind(spec: &ListenAddr, mode: u32) -> Result<Listener, String> {
        if let ListenAddr::Unix(path) = spec {
            let path = path.clone();
            let p = path.display().to_string();
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(format!("{p}: exists and is not a socket (not removed)"));
                }
                if UnixStream::connect(&path).is_ok() {
                    return Err(format!("{p}: another server is already listening there"));
                }
                std::fs::remove_file(&path).map_err(|e| format!("{p}: cannot remove the stale socket: {e}"))?;
            }
            let l = UnixListener::bind(&path).map_err(|e| format!("{p}: {e}"))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(|e| format!("{p}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(Listener::Unix { l, path, ours: true })
        } else if let ListenAddr::Tcp(a) = spec {
            let l = TcpListener::bind(a).map_err(|e| format!("{a}: {e}"))?;
            l.set_nonblocking(true).map_err(|e| e.to_string())?;
            Ok(Listener::Tcp(l))
        } else {
            unreachable!("ListenAddr has two kinds")
        }
    }

    /// The sockets systemd passed (socket activation: `LISTEN_PID` is this process,
    /// `LISTEN_FDS` of them from fd 3), or None when it passed none.
    #[allow(unsafe_code)] // the descriptors systemd passed, taken once
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

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Listener::Unix { l, .. } => l.as_fd(),
            Listener::Tcp(t) => t.as_fd(),
        }
    }

    fn is_tcp(&self) -> bool {
        matches!(self, Listener::Tcp(_))
    }

    /// The next connection waiting; None when none is.
    fn accept(&self) -> std::io::Result<Option<(Conn, Peer)>> {
        let got = match self {
            Listener::Unix { l, .. } => l.accept().map(|(s, _)| (Conn::Unix(s), Peer::Unix)),
            Listener::Tcp(l) => l.accept().map(|(s, a): (TcpStream, _)| {
                let _ = s.set_nodelay(true);
                (Conn::Tcp(s), Peer::Tcp(a.ip()))
            }),
        };
        match got {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
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

/// Largest message taken from a client: 10 s of 48 kHz audio (`--max-message-audio` then
/// caps it in seconds at the call's rate).
const MAX_MESSAGE: usize = 960 * 1024;

/// After an accept error (EMFILE, ENFILE, ENOMEM), the pause before the next accept: the
/// listener stays readable, and retrying at once would spin a core.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// A pause the client announced holds the call at most this long without audio.
const MAX_PAUSE: Duration = Duration::from_secs(600);

/// What the server shares with each connection thread.
struct Shared {
    /// Shared by every call without a lock: libvosk builds recognizers on one model from many
    /// threads (vosk-server does), and the word lookup only reads ([`crate::asr::vosk_raw`]).
    model: vosk::Model,
    info: ModelInfo,
    pool: Pool,
    stats: Stats,
    /// Recognizers kept warm between calls.
    warm: warm::WarmPool<crate::asr::Engine>,
    idle: Duration,
    default_rate: u32,
    listen: Vec<String>,
    next_id: AtomicUsize,
    access: Access,
    max_message_audio: Duration,
}

/// Runs `asr_bridge serve` until it is stopped; it never returns (the process ends with
/// `_exit`, status 1 when serving failed).
#[allow(unsafe_code)] // _exit
pub fn run(args: ServeArgs) -> crate::ModeResult {
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

#[allow(unsafe_code)] // the signal handlers
fn serve(args: ServeArgs) -> Result<(), String> {
    // First, while this is the only thread: the environment is read and cleared here.
    let passed = Listener::inherited()?;
    let token = access::configured_token(args.token_file.as_deref(), std::env::var("ASR_BRIDGE_TOKEN").ok())?;
    std::env::remove_var("ASR_BRIDGE_TOKEN");
    let (idle, drain, mode) = (args.idle_timeout, args.drain_timeout, args.socket_mode);
    let workers = args.workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)).max(1);
    let max_calls = args.max_calls.unwrap_or(workers * 2).max(1);
    let idle_exit = args.idle_exit.or(args.on_demand.then_some(ON_DEMAND_IDLE_EXIT));
    let deployed = args.on_demand.then(|| ModelFiles::of(&args.model));
    // Signals first, so a SIGTERM during the model load still ends us cleanly.
    let signals = Arc::new(AtomicUsize::new(0));
    for s in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        let n = signals.clone();
        // SAFETY: the handler only increments an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(s, move || {
                n.fetch_add(1, Ordering::SeqCst);
            })
        }
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    }
    // Before the model loads: a listener refused for want of a token fails at once.
    let tcp = match &passed {
        Some(p) => p.iter().any(Listener::is_tcp),
        None => args.listen.iter().any(ListenAddr::is_tcp),
    };
    let access = Access::new(token, args.allow_anonymous, args.allow.clone(), tcp)?;
    raise_open_files_limit();
    let info = inspect(&args.model).map_err(|e| e.to_string())?;
    let (model, load) = load_model(&info).map_err(|e| e.to_string())?;
    let listeners: Vec<Listener> = match passed {
        Some(passed) => passed,
        None => args.listen.iter().map(|l| Listener::bind(l, mode)).collect::<Result<_, _>>()?,
    };
    let listen: Vec<String> = listeners.iter().map(Listener::name).collect();
    let shared = Arc::new(Shared {
        model,
        info,
        pool: Pool::new(workers).map_err(|e| format!("cannot start the decode workers: {e}"))?,
        stats: Stats::new(max_calls, args.max_calls_per_client.map(|n| n.max(1))),
        warm: warm::WarmPool::new(warm::Bounds {
            capacity: if args.cold { 0 } else { max_calls },
            max_uses: args.warm_max_uses.max(1),
            max_bytes: i64::from(args.warm_max_mb) << 20,
        }),
        idle,
        default_rate: args.sample_rate,
        listen: listen.clone(),
        next_id: AtomicUsize::new(1),
        access,
        max_message_audio: args.max_message_audio,
    });
    log_line!(
        "serving {} (loaded in {:.0} ms) on {} with {workers} decode workers, at most {max_calls} calls; {}",
        shared.info.dir.display(),
        load.as_secs_f64() * 1000.0,
        listen.join(", "),
        shared.access.describe()
    );
    notify_systemd("READY=1");
    let fds: Vec<_> = listeners.iter().map(Listener::fd).collect();
    let mut idle = IdleWatch::new(&shared.stats);
    let mut accept_errors = ErrorLog::default();
    while signals.load(Ordering::SeqCst) == 0 {
        if let Some(why) = idle.expired(&shared.stats, idle_exit).or_else(|| deployed.as_ref().and_then(|d| d.changed(&args.model))) {
            log_line!("{why}; exiting");
            break;
        }
        if !wait_readable(&fds, 200) {
            continue;
        }
        for l in &listeners {
            accept_all(&shared, l, args.max_handshakes.max(1), &mut accept_errors);
        }
    }
    // Drain: the Unix sockets stop listening (a bridge on this box gets "connection refused"
    // and starts or falls back at once); TCP listeners stay, answering /health with 503 and new
    // calls with an unmarked 503, so a balancer takes the server out and clients go elsewhere.
    shared.stats.draining.store(true, Ordering::SeqCst);
    notify_systemd("STOPPING=1");
    drop(fds);
    let listeners: Vec<Listener> = listeners.into_iter().filter(Listener::is_tcp).collect();
    let fds: Vec<_> = listeners.iter().map(Listener::fd).collect();
    let active = shared.stats.active.load(Ordering::SeqCst);
    log_line!("shutting down: no new calls; waiting up to {drain:?} for {active} call(s) in flight");
    let until = Instant::now() + drain;
    let first = signals.load(Ordering::SeqCst);
    while shared.stats.active.load(Ordering::SeqCst) > 0 && Instant::now() < until && signals.load(Ordering::SeqCst) == first {
        if wait_readable(&fds, 20) {
            for l in &listeners {
                accept_all(&shared, l, args.max_handshakes.max(1), &mut accept_errors);
            }
        }
    }
    let left = shared.stats.active.load(Ordering::SeqCst);
    if left > 0 {
        log_line!("exiting with {left} call(s) still in flight");
    } else {
        log_line!("all calls finished; exiting");
    }
    Ok(())
}

/// Takes every connection waiting on `l`, each on its own thread, unless `max_handshakes`
/// are already pending (then it is closed at once: a flood of idle connections cannot hold
/// threads and descriptors). An accept error backs off instead of spinning.
fn accept_all(shared: &Arc<Shared>, l: &Listener, max_handshakes: usize, errors: &mut ErrorLog) {
    loop {
        let (conn, peer) = match l.accept() {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => {
                errors.note(&e);
                std::thread::sleep(ACCEPT_BACKOFF);
                return;
            }
        };
        // Only TCP counts against the cap: a flood from the network must not shed the bridges
        // on this box, whose Unix socket the file permissions already guard.
        let counted = matches!(peer, Peer::Tcp(_));
        let pending = &shared.stats.handshaking;
        if counted && pending.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max_handshakes).then_some(n + 1)).is_err() {
            shared.stats.shed.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let _ = conn.set_nonblocking(false);
        let sh = shared.clone();
        let spawned = std::thread::Builder::new().name("call".into()).spawn(move || connection(&sh, conn, peer, counted));
        if let Err(e) = spawned {
            if counted {
                pending.fetch_sub(1, Ordering::AcqRel);
            }
            log_line!("cannot start a connection thread: {e}");
        }
    }
}

/// Waits up to `ms` for a connection on any of `fds`.
fn wait_readable(fds: &[std::os::fd::BorrowedFd<'_>], ms: u16) -> bool {
    let mut pfds: Vec<nix::poll::PollFd> = fds.iter().map(|fd| nix::poll::PollFd::new(*fd, nix::poll::PollFlags::POLLIN)).collect();
    if pfds.is_empty() {
        std::thread::sleep(Duration::from_millis(u64::from(ms)));
        return false;
    }
    nix::poll::poll(&mut pfds, nix::poll::PollTimeout::from(ms)).unwrap_or(0) > 0
}

/// Accept errors logged at most once every ten seconds, with how many came between.
#[derive(Default)]
struct ErrorLog {
    last: Option<Instant>,
    since: u64,
}

impl ErrorLog {
    fn note(&mut self, e: &std::io::Error) {
        self.since += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            log_line!("accept failed ({} time(s) since the last report): {e}; backing off", self.since);
            self.last = Some(Instant::now());
            self.since = 0;
        }
    }
}

/// Raises the soft limit on open files to the hard one: each call holds a socket, and a server
/// at its soft default of 1024 runs out long before its memory does.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
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

/// One accepted connection: the request head, the access rule, then what it asks for.
fn connection(sh: &Arc<Shared>, mut conn: Conn, peer: Peer, counted: bool) {
    let handshaking = Handshaking(&sh.stats, counted);
    let until = Instant::now() + HANDSHAKE_DEADLINE;
    let (head, read) = match http::read_head(&mut conn, until) {
        Ok(h) => h,
        Err(http::HeadError::TooLarge) => return http::respond(&mut conn, 431, &[], "request head too large\n"),
        Err(http::HeadError::Malformed(_)) => return http::respond(&mut conn, 400, &[], "not an HTTP request\n"),
        // Probes, and clients too slow to finish a request head: nothing worth a line each.
        Err(_) => return,
    };
    if let Err(d) = sh.access.check(peer, head.authorization.as_deref()) {
        sh.stats.denied.fetch_add(1, Ordering::Relaxed);
        let challenge: &[(&str, &str)] = if d.status() == 401 { &[("WWW-Authenticate", "Bearer")] } else { &[] };
        return http::respond(&mut conn, d.status(), challenge, &format!("{}\n", d.reason()));
    }
    match (head.path.as_str(), head.upgrade) {
        ("/health", _) => health(sh, &mut conn),
        ("/metrics", _) => http::respond(&mut conn, 200, &[("Content-Type", "text/plain; version=0.0.4")], &stats::prometheus(&snapshot(sh))),
        ("/stats", false) => http::respond(&mut conn, 200, &[("Content-Type", "application/json")], &format!("{}\n", snapshot(sh))),
        ("/stats", true) => send_stats(sh, conn, read, until),
        (_, false) => http::respond(&mut conn, 426, &[("Upgrade", "websocket")], "a call is a WebSocket (vosk-server's protocol)\n"),
        (path, true) if path == aeap::PATH || head.protocols.iter().any(|p| p == aeap::PROTOCOL) => {
            let protocol = head.protocols.iter().any(|p| p == aeap::PROTOCOL).then_some(aeap::PROTOCOL);
            speech_object(sh, conn, read, peer, until, handshaking, protocol)
        }
        (_, true) => call(sh, conn, read, peer, until, handshaking),
    }
}

/// Decrements the count of connections before their handshake when dropped (if counted).
struct Handshaking<'a>(&'a Stats, bool);

impl Drop for Handshaking<'_> {
    fn drop(&mut self) {
        if self.1 {
            self.0.handshaking.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// `/health`, for load balancers: 200 while calls are taken, 503 while draining. (While the
/// model loads nothing listens yet, or systemd holds the socket: a balancer sees a timeout.)
fn health(sh: &Shared, conn: &mut Conn) {
    if sh.stats.draining.load(Ordering::SeqCst) {
        http::respond(conn, 503, &[], "draining\n");
    } else {
        http::respond(conn, 200, &[], "ok\n");
    }
}

/// The statistics of `/stats` and `/metrics`.
fn snapshot(sh: &Shared) -> serde_json::Value {
    let mut j = sh.stats.to_json(&sh.info.dir.display().to_string(), sh.pool.workers(), &sh.listen);
    j["warm"] = sh.warm.to_json();
    j
}

/// The WebSocket handshake on the head already read, by `until`; `idle` is said in a header
/// for calls (so the bridge can ping in time).
#[allow(clippy::result_large_err)] // the handshake callback's type is tungstenite's
/// `protocol`: the subprotocol answered (the client asked for it); no extension is ever
/// answered (tungstenite negotiates none), which Asterisk's client requires.
fn handshake(conn: Conn, read: Vec<u8>, until: Instant, idle: Option<Duration>, protocol: Option<&'static str>) -> Option<WebSocket<Replayed>> {
    let _ = conn.set_timeouts(Some(until.saturating_duration_since(Instant::now()).max(Duration::from_millis(1))));
    let callback = |_: &Request, mut resp: Response| -> Result<Response, ErrorResponse> {
        if let Some(p) = protocol {
            resp.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(p));
        }
        if let Some(v) = idle.and_then(|i| HeaderValue::from_str(&i.as_millis().to_string()).ok()) {
            resp.headers_mut().insert(IDLE_HEADER, v);
            resp.headers_mut().insert(PAUSE_HEADER, HeaderValue::from_static(HEADER_ON));
        }
        Ok(resp)
    };
    // Audio messages are small (vosk clients send 0.1-0.5 s); a huge one is refused rather
    // than buffered.
    let limits = tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    tungstenite::accept_hdr_with_config(Replayed::new(read, conn), callback, Some(limits)).ok()
}

fn send_stats(sh: &Shared, conn: Conn, read: Vec<u8>, until: Instant) {
    let Some(mut ws) = handshake(conn, read, until, None, None) else { return };
    let _ = ws.send(Message::text(snapshot(sh).to_string()));
    let _ = ws.close(None);
    let _ = ws.flush();
}

/// A call: admission (a slot, the client's share), the handshake, then vosk-server's loop.
fn call(sh: &Arc<Shared>, mut conn: Conn, read: Vec<u8>, peer: Peer, until: Instant, handshaking: Handshaking) {
    let Some(slot) = admit(sh, &mut conn, peer) else { return };
    let mut slot = Some(slot);
    let Some(mut ws) = handshake(conn, read, until, Some(sh.idle), None) else { return };
    drop(handshaking);
    let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = ws.get_ref().conn.set_timeouts(Some(sh.idle));
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

/// A slot for a call or a speech object (the same `--max-calls` and share per client), or the
/// refusal already sent: 503 while draining, 503 marked busy at capacity. The slot is given
/// back however the connection ends (the guard's drop).
fn admit<'a>(sh: &'a Shared, conn: &mut Conn, peer: Peer) -> Option<SlotGuard<'a>> {
    if sh.stats.draining.load(Ordering::SeqCst) {
        // Not "busy": this server is going away, the client should go elsewhere.
        http::respond(conn, 503, &[], "shutting down\n");
        return None;
    }
    let client = match peer {
        Peer::Tcp(ip) => Some(ip),
        Peer::Unix => None,
    };
    if let Err(r) = sh.stats.admit(client) {
        let why = match r {
            Refusal::Full => format!("at capacity: {} calls active", sh.stats.max_calls),
            Refusal::ClientShare => format!("{peer} holds its share of the calls (--max-calls-per-client)"),
        };
        log_line!("refused a call from {peer}: {why}");
        http::respond(conn, 503, &[(BUSY_HEADER, HEADER_ON)], &format!("{why}\n"));
        return None;
    }
    Some(SlotGuard(&sh.stats, client))
}

/// An AEAP speech object (Asterisk's `SpeechCreate`, [`aeap`]): a slot for its whole life,
/// the handshake answering `protocol`, then the engine's loop.
fn speech_object(sh: &Arc<Shared>, mut conn: Conn, read: Vec<u8>, peer: Peer, until: Instant, handshaking: Handshaking, protocol: Option<&'static str>) {
    let Some(slot) = admit(sh, &mut conn, peer) else { return };
    let Some(mut ws) = handshake(conn, read, until, None, protocol) else { return };
    drop(handshaking);
    let id = sh.next_id.fetch_add(1, Ordering::Relaxed);
    let _ = ws.get_ref().conn.set_timeouts(Some(sh.idle));
    let end = aeap::serve(sh, &mut ws, id);
    drop(slot);
    match end {
        Ok(()) => {
            sh.stats.completed.fetch_add(1, Ordering::Relaxed);
            let _ = ws.close(None);
            let _ = ws.flush();
        }
        Err(why) => {
            sh.stats.aborted.fetch_add(1, Ordering::Relaxed);
            log_line!("speech object {id} from {peer} ended: {why}");
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Error, reason: why.chars().take(100).collect::<String>().into() }));
            let _ = ws.flush();
        }
    }
}

struct SlotGuard<'a>(&'a Stats, Option<std::net::IpAddr>);

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// A call cut off mid-utterance: its recognizer ends the utterance on the pool and goes back
/// warm ([`ServedCall::abandon`]).
fn recycle(sh: &Shared, c: Box<ServedCall>) {
    match sh.pool.run(&mut Usage::default(), move || c.abandon()) {
        Some((after, _)) => retire(sh, after),
        None => sh.warm.note_discarded(),
    }
}

/// A recognizer whose call is over: back to the pool, or counted as freed.
fn retire(sh: &Shared, after: Afterlife) {
    match after {
        Afterlife::Warm(key, w) => sh.warm.put(key, *w),
        Afterlife::Discard => sh.warm.note_discarded(),
        Afterlife::None => {}
    }
}

type CallEnd = Result<(), (Option<CloseCode>, String)>;

/// When a call stops waiting for its client: `--idle-timeout` after its last audio; while a
/// pause the client announced lasts, `--idle-timeout` after its last message of any kind (its
/// pings), for at most [`MAX_PAUSE`]. Pings alone do not keep a call.
struct Quiet {
    idle: Duration,
    audio_at: Instant,
    heard_at: Instant,
    paused_at: Option<Instant>,
}

impl Quiet {
    fn new(idle: Duration) -> Quiet {
        let now = Instant::now();
        Quiet { idle, audio_at: now, heard_at: now, paused_at: None }
    }

    fn heard(&mut self, audio: bool) {
        self.heard_at = Instant::now();
        if audio {
            self.audio_at = self.heard_at;
            self.paused_at = None;
        }
    }

    fn pause(&mut self) {
        self.heard(false);
        self.paused_at.get_or_insert(self.heard_at);
    }

    /// How long the next read may wait; Err with the reason once the call has waited enough.
    fn left(&self) -> Result<Duration, String> {
        let until = match self.paused_at {
            Some(p) => (self.heard_at + self.idle).min(p + MAX_PAUSE),
            None => self.audio_at + self.idle,
        };
        let left = until.saturating_duration_since(Instant::now());
        if !left.is_zero() {
            return Ok(left);
        }
        Err(match self.paused_at {
            Some(p) if p.elapsed() >= MAX_PAUSE => format!("paused for more than {MAX_PAUSE:?}"),
            Some(_) => format!("client silent for {:?}", self.idle),
            None => format!("no audio for {:?} (--idle-timeout; pings without an announced pause do not keep a call)", self.idle),
        })
    }
}

/// Whether a call's audio comes faster than real time: more than [`PACE_SLACK`] ahead of the
/// wall clock since its first audio. Its work is then batch work on the pool.
#[derive(Default)]
struct Pace {
    first: Option<Instant>,
    audio_s: f64,
}

/// Audio a call may send ahead of the clock and still be live (a reconnect replays what the
/// bridge buffered; a client's send buffer bunches blocks).
const PACE_SLACK: f64 = 2.0;

impl Pace {
    /// Counts `seconds` more audio; true when the call is now ahead.
    fn ahead(&mut self, seconds: f64) -> bool {
        let first = *self.first.get_or_insert_with(Instant::now);
        self.audio_s += seconds;
        self.audio_s > first.elapsed().as_secs_f64() + PACE_SLACK
    }
}

/// vosk-server's loop for one call; `Ok` when the client got its final result. `call` holds
/// the call's recognizer between messages, and still holds it when the call ends otherwise.
/// `slot` is the call's admission, given back as soon as the final result is sent.
fn serve_call(sh: &Arc<Shared>, ws: &mut WebSocket<Replayed>, id: usize, call: &mut Option<Box<ServedCall>>, slot: &mut Option<SlotGuard>) -> CallEnd {
    let mut cfg = CallConfig::new(sh.default_rate);
    let mut counted_ms = 0u64;
    let mut quiet = Quiet::new(sh.idle);
    let mut usage = Usage::default();
    let mut pace = Pace::default();
    loop {
        let idle = |why: String| {
            sh.stats.idle_dropped.fetch_add(1, Ordering::Relaxed);
            (Some(CloseCode::Away), why)
        };
        let left = quiet.left().map_err(idle)?;
        let _ = ws.get_ref().set_read_timeout(Some(left));
        let msg = match ws.read() {
            Ok(m) => m,
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => return Err((None, "client closed before eof".into())),
            Err(tungstenite::Error::Io(e)) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(tungstenite::Error::Capacity(e)) => return Err((Some(CloseCode::Size), format!("message too large: {e}"))),
            Err(e) => return Err((None, format!("client gone: {e}"))),
        };
        let received = Instant::now();
        let (work, last): (Work, bool) = match msg {
            Message::Text(t) => match ClientMessage::parse(t.as_str()) {
                Ok(ClientMessage::Config(_)) | Err(BadMessage::Config(_)) if call.is_some() => {
                    log_line!("call {id}: config after audio ignored");
                    continue;
                }
                Ok(ClientMessage::Config(c)) => {
                    cfg.apply(&c).map_err(|e| (Some(CloseCode::Policy), format!("bad config: {e}")))?;
                    continue;
                }
                Err(BadMessage::Config(e)) => return Err((Some(CloseCode::Policy), format!("bad config: {e}"))),
                Ok(ClientMessage::Pause) => {
                    quiet.pause();
                    continue;
                }
                Ok(ClientMessage::Eof) => (Work::Final, true),
                Ok(ClientMessage::Reset) => (Work::Final, false),
                Err(BadMessage::Unsupported) => return Err((Some(CloseCode::Unsupported), "unsupported text message".into())),
            },
            Message::Binary(b) => {
                let seconds = b.len() as f64 / 2.0 / f64::from(cfg.sample_rate.max(1));
                if seconds > sh.max_message_audio.as_secs_f64() {
                    let max = sh.max_message_audio;
                    return Err((Some(CloseCode::Size), format!("a message of {seconds:.1} s of audio; at most {max:?} (--max-message-audio)")));
                }
                quiet.heard(true);
                usage.batch = pace.ahead(seconds);
                (Work::Audio(b.to_vec()), false)
            }
            Message::Close(_) => return Err((None, "client closed before eof".into())),
            _ => {
                quiet.heard(false);
                continue;
            }
        };
        let c = match call.take() {
            Some(c) => c,
            None => {
                let (shared, config) = (sh.clone(), cfg.clone());
                let opened = sh.pool.run(&mut usage, move || ServedCall::open(&shared.model, &shared.info, &config, &shared.warm));
                let (c, oov) = opened
                    .ok_or_else(|| (Some(CloseCode::Error), "building the recognizer panicked".to_string()))?
                    .0
                    .map_err(|e| (Some(CloseCode::Policy), e.to_string()))?;
                if !oov.is_empty() {
                    let shown: Vec<&str> = oov.iter().take(20).map(String::as_str).collect();
                    log_line!("call {id}: {} grammar word(s) not in the model's vocabulary: {}", oov.len(), shown.join(", "));
                }
                Box::new(c)
            }
        };
        let audio = matches!(work, Work::Audio(_));
        let (c, reply, queued) = decode(sh, &mut usage, c, work)?;
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
            retire(sh, c.into_warm());
            let _ = ws.close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }));
            let _ = ws.flush();
            return Ok(());
        }
        *call = Some(c);
    }
}

/// Runs a message's work on the pool, charged to the call's `usage`: a message of up to half
/// a second in one job (as vosk-server feeds it), a longer one a block at a time, each its own
/// job (other calls' blocks go between); then the reply. Returns the call, the reply, and
/// the time spent waiting for a worker.
#[allow(clippy::type_complexity)]
fn decode(
    sh: &Shared,
    usage: &mut Usage,
    mut c: Box<ServedCall>,
    work: Work,
) -> Result<(Box<ServedCall>, Result<String, crate::asr::AsrError>, Duration), (Option<CloseCode>, String)> {
    let jobs: Vec<Option<Vec<u8>>> = match work {
        Work::Audio(b) if b.is_empty() => vec![Some(b)],
        Work::Audio(b) if b.len() <= c.whole_bytes() => vec![Some(b)],
        Work::Audio(b) => b.chunks(c.piece_bytes()).map(|p| Some(p.to_vec())).collect(),
        Work::Final => vec![None],
    };
    let n = jobs.len();
    let mut queued = Duration::ZERO;
    for (i, job) in jobs.into_iter().enumerate() {
        let last = i + 1 == n;
        let run = move || {
            let mut c = c;
            let r = match job {
                Some(piece) => c.audio(&piece).and_then(|()| if last { c.reply().map(Some) } else { Ok(None) }),
                None => c.finish().map(Some),
            };
            (c, r)
        };
        let ((back, r), q) = sh.pool.run(usage, run).ok_or_else(|| {
            sh.warm.note_discarded();
            (Some(CloseCode::Error), "decoding panicked".to_string())
        })?;
        queued += q;
        c = back;
        match r {
            Ok(None) => continue,
            Ok(Some(reply)) => return Ok((c, Ok(reply), queued)),
            Err(e) => return Ok((c, Err(e), queued)),
        }
    }
    unreachable!("a message is at least one job")
}

enum Work {
    Audio(Vec<u8>),
    Final,
}

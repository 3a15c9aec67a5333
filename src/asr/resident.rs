//! The resident server of a model, found or started on demand (`--server=auto`): one
//! `asr_bridge serve` per model directory per box, started by the first call that needs it,
//! reused by every later one, gone after `--idle-exit` without calls (as sccache's server or
//! gpg-agent: the first client starts the daemon).
//!
//! - **Where**: a socket per model, `<runtime dir>/<model name>-<hash of its canonical path>.sock`.
//!   The runtime directory is `$XDG_RUNTIME_DIR/asr_bridge` when that variable is set (and it
//!   must then be usable: a session that names one gets no other), else `/run/asr_bridge` when
//!   this user can write there, else `asr_bridge-<uid>` in the temp directory, mode 0700 and
//!   owned by this user (anything else is refused: another user could plant a socket there).
//! - **Exactly one start**: the starting call holds an exclusive `flock` on `<socket>.lock` from
//!   before its last look at the socket until the server answers, so simultaneous first calls
//!   start one server; the others wait on the lock and find it answering.
//! - **Detached**: the server runs in its own session (`setsid`), SIGHUP ignored, stdin and
//!   stdout on /dev/null, stderr appended to `<socket>.log`, every inherited descriptor past
//!   stderr closed at exec (fd 3, the call's audio, above all): it holds none of the call's pipes,
//!   so the call exits and Asterisk sees its stdout close at once.
//! - It is started with the call's configured model path and `--on-demand`: it exits after
//!   `--idle-exit` (10 minutes) without calls, or when that path comes to name other model
//!   files (a new model deployed), and the next call starts a fresh one.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::net::ServerAddr;

/// How long a first call waits for the server it started to load the model and answer.
pub(crate) const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The reply deadline on the resident server (at least; `--server-timeout` if longer).
pub(crate) const REPLY_DEADLINE: Duration = Duration::from_secs(30);

/// The directory of the resident servers' sockets, locks and logs.
fn runtime_dir() -> Result<PathBuf, String> {
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR").filter(|x| !x.is_empty()) {
        let dir = PathBuf::from(x).join("asr_bridge");
        return match private_dir(&dir) {
            Ok(()) => Ok(dir),
            Err(e) => Err(format!("XDG_RUNTIME_DIR: {}: {e}", dir.display())),
        };
    }
    let run = PathBuf::from("/run/asr_bridge");
    if usable(&run) || (writable(Path::new("/run")) && std::fs::DirBuilder::new().mode(0o755).create(&run).is_ok()) {
        return Ok(run);
    }
    let uid = nix::unistd::getuid();
    let dir = std::env::temp_dir().join(format!("asr_bridge-{uid}"));
    match private_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) => Err(format!("{}: {e}", dir.display())),
    }
}

/// The socket of `model`'s resident server in `dir`: the model's name for people, a hash of
/// its canonical path so that two models never share a server.
fn socket_path(dir: &Path, model: &Path) -> Result<PathBuf, String> {
    let canonical = model.canonicalize().map_err(|e| format!("{}: {e}", model.display()))?;
    let name: String = canonical
        .file_name()
        .map(|n| n.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(40).collect())
        .unwrap_or_default();
    // FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
    let hash = canonical.as_os_str().as_encoded_bytes().iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    Ok(dir.join(format!("{name}-{hash:016x}.sock")))
}

/// Where `model`'s resident server listens (or will): its socket in the runtime directory.
pub(crate) fn socket_of(model: &Path) -> Result<PathBuf, String> {
    socket_path(&runtime_dir()?, model)
}

/// The address of `model`'s resident server, started here if none answers.
pub(crate) fn find_or_start(model: &Path, exe: &Path, timeout: Duration) -> Result<ServerAddr, String> {
    let sock = socket_of(model)?;
    let addr = ServerAddr::Unix(sock.clone());
    if answers(&sock) {
        return Ok(addr);
    }
    let until = Instant::now() + timeout;
    let _lock = lock(&sock.with_extension("lock"), until)?;
    if answers(&sock) {
        return Ok(addr); // another call started it while this one waited for the lock
    }
    let log = sock.with_extension("log");
    // Absolute (it runs in /), not canonical: it watches what this path names.
    let model = std::path::absolute(model).map_err(|e| format!("{}: {e}", model.display()))?;
    let mut child = spawn(exe, &model, &sock, &log)?;
    crate::log_line!("started the resident server for {} (pid {}, log {})", model.display(), child.id(), log.display());
    wait_until_it_answers(&mut child, &sock, &log, until)?;
    Ok(addr)
}

/// A server accepts on the socket.
fn answers(sock: &Path) -> bool {
    UnixStream::connect(sock).is_ok()
}

fn usable(dir: &Path) -> bool {
    dir.is_dir() && writable(dir)
}

fn writable(dir: &Path) -> bool {
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK).is_ok()
}

/// `dir` exists (created mode 0700 if not), is a real directory of this user's, and nobody
/// else may write there.
fn private_dir(dir: &Path) -> Result<(), String> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e.to_string()),
    }
    let m = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    let uid = nix::unistd::getuid().as_raw();
    if !m.is_dir() {
        return Err("not a directory".into());
    }
    if m.uid() != uid {
        return Err(format!("owned by uid {}, not {uid}", m.uid()));
    }
    if m.permissions().mode() & 0o022 != 0 {
        return Err(format!("writable by others (mode {:o})", m.permissions().mode() & 0o777));
    }
    if !writable(dir) {
        return Err("not writable".into());
    }
    Ok(())
}

/// An exclusive lock on `path`, waited for until `until`; released when the file closes.
#[allow(unsafe_code)]
fn lock(path: &Path, until: Instant) -> Result<File, String> {
    let f = OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    loop {
        // SAFETY: flock(2) on a descriptor this File owns.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(f);
        }
        if Instant::now() >= until {
            return Err(format!("{}: another call has been starting the server for too long", path.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts `asr_bridge serve --on-demand` for `model` on `sock`, detached from the call.
#[allow(unsafe_code)]
fn spawn(exe: &Path, model: &Path, sock: &Path, log: &Path) -> Result<Child, String> {
    let mut err = OpenOptions::new().create(true).append(true).mode(0o600).open(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let _ = writeln!(err, "--- started on demand by pid {}", std::process::id());
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(format!("--model={}", model.display()))
        .arg(format!("--listen=unix:{}", sock.display()))
        .arg("--on-demand")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    // SAFETY: only async-signal-safe calls (setsid, signal, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            // Inherited descriptors (fd 3, the call's audio, above all) close at exec.
            for fd in 3..1024 {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|e| format!("cannot start {}: {e}", exe.display()))
}

/// Waits for the started server to answer (it binds once the model is loaded); an early exit
/// or the deadline is an error that names the log.
fn wait_until_it_answers(child: &mut Child, sock: &Path, log: &Path, until: Instant) -> Result<(), String> {
    loop {
        if answers(sock) {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server it started exited ({status}); see {}", log.display()));
        }
        if Instant::now() >= until {
            return Err(format!("the server it started did not answer in time; see {}", log.display()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_socket_per_model_named_for_people() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("vosk model-en"), d.path().join("other"));
        std::fs::create_dir(&a).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::os::unix::fs::symlink(&a, d.path().join("current")).unwrap();
        let sa = socket_path(Path::new("/run/x"), &a).unwrap();
        assert!(sa.file_name().unwrap().to_string_lossy().starts_with("vosk_model-en-"), "{sa:?}");
        assert_eq!(sa, socket_path(Path::new("/run/x"), &d.path().join("current")).unwrap(), "a link to a model is that model");
        assert_ne!(sa, socket_path(Path::new("/run/x"), &b).unwrap());
        assert!(socket_path(Path::new("/run/x"), &d.path().join("missing")).is_err());
    }

    #[test]
    fn a_private_directory_must_be_ours_and_closed_to_others() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("rt");
        private_dir(&p).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o700);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(private_dir(&p).unwrap_err().contains("writable by others"));
        let f = d.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(private_dir(&f).is_err());
    }
}

//! A resident `asr_bridge serve` for a test: the real binary and model on its own socket,
//! killed when dropped (also when the test panics).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use asr_bridge::net::{fetch_stats, ServerAddr};
use tungstenite::WebSocket;

use super::{bin, model};

/// A reply deadline that is not what a test is about.
pub const PATIENT: &str = "--server-timeout=20s";

/// A resident server on its own socket, killed when dropped.
pub struct Server {
    pub child: Child,
    pub sock: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Server {
    pub fn start(args: &[&str]) -> Server {
        Server::start_env(args, &[])
    }

    /// [`Server::start`] with environment variables set for the server (a token).
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_with(args, env, |_| {})
    }

    /// [`Server::start_env`], with `configure` applied to the command before it is spawned.
    pub fn start_with(args: &[&str], env: &[(&str, &str)], configure: impl FnOnce(&mut Command)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("asr.sock");
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--model")
            .arg(model())
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()))
            .args(args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("serve.log")).unwrap());
        configure(&mut cmd);
        let child = cmd.spawn().expect("start asr_bridge serve");
        let s = Server { child, sock, dir };
        let until = Instant::now() + Duration::from_secs(60);
        while s.try_stats().is_none() {
            assert!(Instant::now() < until, "server did not come up; log:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn addr(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    pub fn arg(&self) -> String {
        format!("--server={}", self.addr())
    }

    /// Bridge options for a call on this server, with a generous reply deadline for tests that
    /// are not about deadlines: the first blocks on a fresh server take about a second each
    /// (lazy graph expansion), more on a loaded test machine.
    pub fn call_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec![self.arg(), PATIENT.to_string()];
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }

    pub fn try_stats(&self) -> Option<serde_json::Value> {
        fetch_stats(&self.addr().parse::<ServerAddr>().unwrap(), Duration::from_secs(2), None).ok()
    }

    pub fn stats(&self) -> serde_json::Value {
        self.try_stats().unwrap_or_else(|| panic!("stats unreachable; log:\n{}", self.log()))
    }

    /// Polls the statistics until `pred` holds (a deadline, not a timing assertion).
    pub fn wait_for(&self, what: &str, pred: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.stats();
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < until, "{what} never happened: {s:#}\nlog:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The port of the server's TCP listener (`--listen=tcp:127.0.0.1:0`).
    pub fn tcp_port(&self) -> u16 {
        let s = self.stats();
        let ws = s["listen"].as_array().unwrap().iter().filter_map(|l| l.as_str()?.strip_prefix("ws://")).next().expect("a TCP listener").to_string();
        ws.rsplit(':').next().unwrap().parse().unwrap()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// A raw vosk-server protocol client (what a third-party client would do).
    pub fn raw_client(&self) -> WebSocket<std::os::unix::net::UnixStream> {
        let s = std::os::unix::net::UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        tungstenite::client::client("ws://localhost/", s).expect("handshake").0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

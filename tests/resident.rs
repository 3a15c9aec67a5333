//! `--server=auto`: the resident server of the call's model, found or started by the call
//! itself (issue "One model per box with no configuration"). Each test has its own runtime
//! directory (`XDG_RUNTIME_DIR`), so tests never share a server, and kills every server started
//! under it when it ends: nothing outlives a test. The tests run one at a time: each loads
//! models (a server, or calls in-process), and several at once on two cores would measure the
//! machine, not the bridge.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A private runtime directory and the servers started under it.
struct Runtime {
    dir: tempfile::TempDir,
}

impl Runtime {
    fn new() -> Runtime {
        Runtime { dir: tempfile::tempdir().unwrap() }
    }

    /// A call with `--server=auto` in this runtime directory.
    fn call(&self, wav_name: &str, args: &[&str]) -> Call {
        let mut c = Call::new(wav_name, &[&["--server=auto", "--end-silence=700ms"], args].concat());
        c.opts.env.push(("XDG_RUNTIME_DIR".into(), self.dir.path().display().to_string()));
        c
    }

    /// Pids of the servers listening under this runtime directory.
    fn servers(&self) -> Vec<u32> {
        let needle = format!("--listen=unix:{}", self.dir.path().display());
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                cmd.contains(" serve ") && cmd.contains(&needle)
            })
            .collect()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        for pid in self.servers() {
            // SAFETY: kill(2) on a server this test started.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        let until = Instant::now() + Duration::from_secs(5);
        while !self.servers().is_empty() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn backend(o: &Outcome) -> Backend {
    o.json().backend
}

/// The descriptors of `pid` that are pipes.
fn pipes_of(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("pipe:"))
        .collect()
}

#[test]
fn two_calls_in_a_row_leave_one_server_and_the_second_is_served_at_once() {
    let _serial = serial();
    let rt = Runtime::new();
    let first = rt.call("ko-hello-8k.wav", &[]).run();
    first.assert_ok();
    assert_eq!(backend(&first), Backend::Server, "the first call streams to the server it started: {}", first.log);
    assert!(first.log.contains("started the resident server"), "{}", first.log);
    let servers = rt.servers();
    assert_eq!(servers.len(), 1, "{servers:?}");
    // The server holds none of the call's pipes (stdin, stdout, fd 3): the call's exit closes
    // them, so Asterisk sees the AGI end at once.
    assert_eq!(pipes_of(servers[0]), Vec::<String>::new(), "the server holds pipes");
    assert!(first.res.exit_code == Some(0) && !first.res.killed);

    let second = rt.call("ko-numbers-8k.wav", &[]).run();
    second.assert_ok();
    assert_eq!(backend(&second), Backend::Server, "{}", second.log);
    assert!(!second.log.contains("started the resident server"), "{}", second.log);
    assert_eq!(rt.servers(), servers, "the same server, and only it");
    // Ready to stream: the first call waited for the model to load, the second did not.
    let ready = |o: &Outcome| o.json().ready_ms.unwrap();
    assert!(ready(&first) > 1000.0, "the first call waited for the model: {} ms", ready(&first));
    assert!(ready(&second) < 500.0, "the second found the model loaded: {} ms", ready(&second));
}

#[test]
fn eight_calls_started_together_start_one_server() {
    let _serial = serial();
    let rt = Runtime::new();
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..8).map(|_| s.spawn(|| rt.call("ko-hello-8k.wav", &[]).run())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        o.assert_ok();
    }
    assert_eq!(rt.servers().len(), 1, "{:?}", rt.servers());
    let started = outs.iter().filter(|o| o.log.contains("started the resident server")).count();
    assert_eq!(started, 1, "exactly one call started it");
    // The server admits 2 calls per core; a call past that recognizes in-process rather than
    // fail (the resident server is the bridge's choice, not the dialplan's).
    let served = outs.iter().filter(|o| backend(o) == Backend::Server).count();
    assert!(served >= 2, "{served} of 8 served");
    for o in outs.iter().filter(|o| backend(o) != Backend::Server) {
        assert_eq!(backend(o), Backend::Fallback, "{}", o.log);
        assert!(o.log.contains("busy"), "{}", o.log);
    }
}

/// The resident server dying mid-call (killed, crashed): the call's connection resets and the
/// in-process model takes over with the audio heard so far, as `--server-fallback` does.
#[test]
fn a_resident_server_killed_mid_call_is_taken_over_in_process() {
    let _serial = serial();
    let rt = Runtime::new();
    rt.call("ko-hello-8k.wav", &[]).run().assert_ok();
    let servers = rt.servers();
    assert_eq!(servers.len(), 1);
    let out = std::thread::scope(|s| {
        let call = s.spawn(|| rt.call("ko-long-8k.wav", &[]).run());
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: kill(2) on the server this test started.
        unsafe { libc::kill(servers[0] as i32, libc::SIGKILL) };
        call.join().unwrap()
    });
    out.assert_ok();
    assert_eq!(backend(&out), Backend::Fallback, "{}", out.log);
    assert!(out.log.contains("took over"), "{}", out.log);
}

#[test]
fn a_runtime_directory_that_cannot_be_used_means_in_process_with_a_clear_log_line() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let not_a_dir = d.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    let mut c = Call::new("ko-hello-8k.wav", &["--server=auto"]);
    c.opts.env.push(("XDG_RUNTIME_DIR".into(), not_a_dir.display().to_string()));
    let o = c.run();
    o.assert_ok();
    assert_eq!(backend(&o), Backend::InProcess, "{}", o.log);
    assert!(o.log.contains("resident server: XDG_RUNTIME_DIR") && o.log.contains("recognizing in-process"), "{}", o.log);
}

#[test]
fn server_none_recognizes_in_process_and_starts_nothing() {
    let _serial = serial();
    let rt = Runtime::new();
    // Not `rt.call`, whose --server=auto and this --server=none would be a list (an error
    // since issue 14: a repeated --server no longer silently keeps the last one).
    let mut c = Call::new("ko-hello-8k.wav", &["--server=none", "--end-silence=700ms"]);
    c.opts.env.push(("XDG_RUNTIME_DIR".into(), rt.dir.path().display().to_string()));
    c.opts.env.push(("ASR_BRIDGE_SERVER".into(), "auto".into()));
    let o = c.run();
    o.assert_ok();
    assert_eq!(backend(&o), Backend::InProcess, "{}", o.log);
    assert!(rt.servers().is_empty());
}

/// Starts `asr_bridge serve --on-demand` on `model` the way a call would, and waits until it
/// answers.
fn on_demand(model: &Path, sock: &Path, extra: &[&str], log: &Path) -> std::process::Child {
    let child = Command::new(bin())
        .args(["serve", "--on-demand", &format!("--model={}", model.display()), &format!("--listen=unix:{}", sock.display())])
        .args(extra)
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while std::os::unix::net::UnixStream::connect(sock).is_err() {
        assert!(Instant::now() < until, "the server did not come up: {}", std::fs::read_to_string(log).unwrap_or_default());
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Waits for `child` to exit; how long after `since` it did.
fn exit_after(child: &mut std::process::Child, since: Instant, limit: Duration) -> (std::process::ExitStatus, Duration) {
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st, since.elapsed());
        }
        if since.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_server_started_on_demand_exits_when_idle() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let (sock, log) = (d.path().join("s.sock"), d.path().join("serve.log"));
    let mut child = on_demand(&model(), &sock, &["--idle-exit=1s"], &log);
    let (st, _) = exit_after(&mut child, Instant::now(), Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    // On the server's own clock: from "serving" (listening, idle) to its exit.
    let text = std::fs::read_to_string(&log).unwrap();
    let at = |what: &str| -> f64 {
        let line = text.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what:?} in {text}"));
        line.split_whitespace().next().unwrap().parse().unwrap()
    };
    let idle = at("no calls for 1s (--idle-exit)") - at("serving ");
    assert!((1.0..2.5).contains(&idle), "exited {idle:.2} s after it began to listen, idle limit 1 s: {text}");
    assert!(!sock.exists(), "its socket is gone");
}

#[test]
fn a_server_started_on_demand_exits_when_a_new_model_is_deployed() {
    let _serial = serial();
    let d = tempfile::tempdir().unwrap();
    let (sock, log) = (d.path().join("s.sock"), d.path().join("serve.log"));
    let current: PathBuf = d.path().join("current");
    std::os::unix::fs::symlink(model(), &current).unwrap();
    let mut child = on_demand(&current, &sock, &[], &log);
    let v2 = model_variant(d.path(), &[], &[]);
    let deployed = Instant::now();
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(&v2, &current).unwrap();
    let (st, after) = exit_after(&mut child, deployed, Duration::from_secs(10));
    assert!(st.success(), "{st:?}");
    assert!(after < Duration::from_secs(3), "noticed {after:?} after the new model");
    assert!(std::fs::read_to_string(&log).unwrap().contains("changed (a new model deployed?)"));
}

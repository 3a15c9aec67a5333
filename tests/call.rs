//! One call end to end: the real binary through the simulated host, on the real test model.
//! Issue: "The core EAGI bridge".

mod common;

use std::time::Duration;

use common::*;

/// The bridge's transcript equals libvosk's for the same samples, on every bundled speech
/// WAV; and what it recorded is byte-identical to what the host wrote to fd 3.
#[test]
fn transcript_equals_direct_libvosk_on_every_bundled_wav() {
    let entries: Vec<_> = manifest().into_iter().filter(|e| e["kind"] == "speech" && e["rate"] == 8000 && e["file"] != "ko-long-8k.wav").collect();
    assert!(entries.len() >= 3, "bundled speech WAVs: {}", entries.len());
    for e in entries {
        let name = e["file"].as_str().unwrap();
        let mut call = Call::new(name, &["--end-silence=700ms"]);
        let rec = call.path("rec.wav");
        let host_audio = call.path("host.raw");
        call.opts.bridge_args.push(format!("--record={}", rec.display()));
        call.opts.audio_out = Some(host_audio.clone());
        let out = call.run();
        out.assert_ok();
        let consumed = out.json().samples_consumed.unwrap();
        // --record holds exactly the samples consumed, and they are what the host wrote.
        let (recorded, rate) = asr_bridge::audio::wav::read_mono16(&rec).unwrap();
        assert_eq!(rate, 8000);
        assert_eq!(recorded.len() as u64, consumed, "{name}");
        let written = std::fs::read(&host_audio).unwrap();
        let rec_bytes: Vec<u8> = recorded.iter().flat_map(|s| s.to_ne_bytes()).collect();
        assert!(written.len() >= rec_bytes.len(), "{name}");
        assert!(written[..rec_bytes.len()] == rec_bytes[..], "{name}: recorded audio differs from fd 3 audio");
        // The same samples straight into libvosk give the same words.
        let d = direct(&wav(name), Some(consumed));
        let text = out.var("ASR_TEXT");
        assert!(!text.is_empty(), "{name}: empty transcript");
        assert_eq!(text, d["text"].as_str().unwrap(), "{name}: bridge vs direct libvosk");
        let conf: f64 = out.var("ASR_CONFIDENCE").parse().unwrap();
        assert!((0.0..=1.0).contains(&conf));
        assert!((conf - d["confidence"].as_f64().unwrap()).abs() < 0.006, "{name}");
        assert_eq!(out.var("ASR_CAUSE"), "000");
        assert_eq!(out.var("ASR_ERROR"), "");
        assert_eq!(out.json().samples_dropped, 0);
    }
}

/// Speech from the very first frame, while the model is still loading, is recognized.
#[test]
fn audio_during_model_load_is_kept() {
    let mut call = Call::new("ko-numbers-8k.wav", &["--end-silence=700ms"]);
    call.opts.speed = 1.0;
    let (mut samples, _) = asr_bridge::audio::wav::read_mono16(&wav("ko-numbers-8k.wav")).unwrap();
    // Start the speech at the first sample: drop the WAV's lead silence.
    let lead = (manifest().iter().find(|e| e["file"] == "ko-numbers-8k.wav").unwrap()["speech_start_s"].as_f64().unwrap() * 8000.0) as usize;
    samples.drain(..lead.saturating_sub(160));
    call.opts.samples = samples.clone();
    let rec = call.path("rec.wav");
    call.opts.bridge_args.push(format!("--record={}", rec.display()));
    let out = call.run();
    out.assert_ok();
    let j = out.json();
    let load = j.model_load_ms.unwrap();
    let speech = j.speech_start_ms.unwrap();
    assert!(speech < load, "speech at {speech} ms should precede the end of model load at {load} ms");
    assert_eq!(j.samples_dropped, 0);
    assert!(j.fd3_ready_ms.unwrap() < load, "reader ready before the model");
    let (recorded, _) = asr_bridge::audio::wav::read_mono16(&rec).unwrap();
    assert_eq!(&recorded[..], &samples[..recorded.len()], "recording starts at the first sample");
    let d = direct(&rec, None);
    assert_eq!(out.var("ASR_TEXT"), d["text"].as_str().unwrap());
}

#[test]
fn slin16_audio_at_16k() {
    let mut call = Call::new("ko-hello-16k.wav", &["--end-silence=700ms"]);
    call.opts.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "slin16".into());
    let rec = call.path("rec.wav");
    call.opts.bridge_args.push(format!("--record={}", rec.display()));
    let out = call.run();
    out.assert_ok();
    assert_eq!(out.json().rate, Some(16000));
    let (recorded, rate) = asr_bridge::audio::wav::read_mono16(&rec).unwrap();
    assert_eq!(rate, 16000);
    let d = direct(&wav("ko-hello-16k.wav"), Some(recorded.len() as u64));
    assert_eq!(out.var("ASR_TEXT"), d["text"].as_str().unwrap());
}

#[test]
fn no_speech_is_noinput_at_the_timeout() {
    let mut call = Call::new("silence-3s-8k.wav", &["--no-input-timeout=1500ms"]);
    call.opts.speed = 1.0;
    let out = call.run();
    assert_eq!(out.status(), "NOINPUT", "{}", out.log);
    assert_eq!(out.var("ASR_CAUSE"), "002");
    assert_eq!(out.var("ASR_TEXT"), "");
    assert_eq!(out.json().end_reason, Some(EndReason::NoInput));
    // The timer is on the media clock: 1.5 s of audio consumed, not more than a block beyond.
    let consumed = out.json().samples_consumed.unwrap();
    assert!((12_000..=12_000 + 800).contains(&consumed), "consumed {consumed}");
}

/// A silent Local channel or DTX sends no frames at all: the timers still fire (wall clock).
#[test]
fn no_frames_at_all_still_times_out() {
    let mut call = Call::with_samples(Vec::new(), 8000, &["--no-input-timeout=2s"]);
    call.opts.tail = asr_bridge::sim::Tail::Nothing;
    call.opts.speed = 1.0;
    let out = call.run();
    assert_eq!(out.status(), "NOINPUT", "{}", out.log);
    assert_eq!(out.json().samples_consumed, Some(0));
    assert!(out.json().dtx_ms.unwrap() >= 1900.0);
    let set = out.res.var_times["ASR_STATUS"];
    assert!(set >= 2000.0, "NOINPUT after {set} ms, before the 2 s timeout");
}

/// Speech then no frames at all: end of speech is detected by the wall clock.
#[test]
fn end_of_speech_without_trailing_frames() {
    let (mut samples, _) = asr_bridge::audio::wav::read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    let end = (speech_end_s("ko-hello-8k.wav") * 8000.0) as usize + 400;
    samples.truncate(end);
    let mut call = Call::with_samples(samples, 8000, &["--end-silence=700ms"]);
    call.opts.tail = asr_bridge::sim::Tail::Nothing;
    let out = call.run();
    out.assert_ok();
    assert_eq!(out.json().end_reason, Some(EndReason::EndOfSpeech));
    assert!(out.json().dtx_ms.unwrap() > 0.0);
}

#[test]
fn endless_speech_ends_at_max_duration() {
    let call = Call::new("ko-long-8k.wav", &["--max-duration=3s", "--end-silence=700ms"]);
    let out = call.run();
    assert_eq!(out.status(), "OK", "{}", out.log);
    assert_eq!(out.var("ASR_CAUSE"), "008");
    assert!(!out.var("ASR_TEXT").is_empty());
    let j = out.json();
    assert_eq!(j.end_reason, Some(EndReason::MaxDuration));
    let start = j.speech_start_ms.unwrap();
    let consumed_ms = (j.samples_consumed.unwrap() as f64) / 8.0;
    assert!((consumed_ms - start - 3000.0).abs() <= 120.0, "cut at {consumed_ms} ms, speech from {start} ms");
}

#[test]
fn hangup_while_listening() {
    let mut call = Call::new("ko-long-8k.wav", &["--end-silence=700ms"]);
    call.opts.hangup_at = Some(Duration::from_millis(4500));
    let out = call.run();
    assert_eq!(out.status(), "HANGUP", "{}", out.log);
    assert_eq!(out.res.agistatus, "HANGUP");
    let after = out.res.exit_after_hangup_ms.unwrap();
    assert!(after < 2000.0, "exit {after} ms after SIGHUP");
    // Nothing but dead-channel commands after the hangup.
    let h = out.res.hangup_ms.unwrap();
    assert!(out.res.dialogue.iter().filter(|l| l.t_ms > h && l.dir == asr_bridge::sim::Dir::Tx).all(|l| !l.text.starts_with("511")));
}

#[test]
fn hangup_while_the_model_loads() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.hangup_at = Some(Duration::from_millis(300));
    let out = call.run();
    assert_eq!(out.status(), "HANGUP", "{}", out.log);
    assert!(out.json().model_load_ms.is_none(), "hung up before the model loaded");
    assert!(out.res.exit_after_hangup_ms.unwrap() < 2000.0);
}

#[test]
fn hangup_after_the_result() {
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    call.opts.hangup_on_command = Some("SET VARIABLE ASR_STATUS".into());
    let out = call.run();
    // The result was final before the hangup; SET VARIABLE works on a dead channel.
    out.assert_ok();
    assert!(!out.var("ASR_TEXT").is_empty());
    assert_eq!(out.var("ASR_CAUSE"), "000");
    assert_eq!(out.res.agistatus, "HANGUP");
}

#[test]
fn hangup_twice_is_harmless() {
    let mut call = Call::new("ko-long-8k.wav", &[]);
    call.opts.hangup_at = Some(Duration::from_millis(3000));
    call.opts.sighups = 2;
    let out = call.run();
    assert_eq!(out.status(), "HANGUP");
    assert_eq!(out.res.exit_signal, None, "a second SIGHUP must not kill the bridge");
}

#[test]
fn missing_model_is_a_clear_error() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.bridge_args.push("--model=/nonexistent/model".into());
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert_eq!(out.var("ASR_CAUSE"), "006");
    assert!(out.var("ASR_ERROR").contains("/nonexistent/model does not exist"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn model_missing_a_file_names_it() {
    let call0 = Call::new("ko-hello-8k.wav", &[]);
    let variant = model_variant(call0.dir.path(), &["ivector/final.mat"], &[]);
    let mut call = call0;
    call.opts.bridge_args.push(format!("--model={}", variant.display()));
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("ivector/final.mat is missing"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn not_a_model_directory() {
    let call0 = Call::new("ko-hello-8k.wav", &[]);
    let empty = call0.dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut call = call0;
    call.opts.bridge_args.push(format!("--model={}", empty.display()));
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("is this a Vosk model directory"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn plain_agi_without_fd3_is_a_clear_error() {
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.plain_agi = true;
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("EAGI"), "{}", out.var("ASR_ERROR"));
    assert!(out.var("ASR_ERROR").contains("fd 3 is not open"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn bad_option_is_a_clear_error() {
    let out = Call::new("ko-hello-8k.wav", &["--end-silence=soon"]).run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("--end-silence"), "{}", out.var("ASR_ERROR"));
    let out = Call::new("ko-hello-8k.wav", &["--frobnicate=1"]).run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("--frobnicate"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn custom_prefix_and_answer() {
    let out = Call::new("ko-hello-8k.wav", &["--prefix=MENU_", "--answer", "--end-silence=700ms"]).run();
    assert_eq!(out.var("MENU_STATUS"), "OK");
    assert!(!out.res.vars.contains_key("ASR_STATUS"));
    assert!(out.res.dialogue.iter().any(|l| l.text == "ANSWER"));
}

/// A model that needs 16 kHz and may not upsample: the bridge resamples 8 kHz audio itself.
#[test]
fn model_without_upsampling_is_fed_resampled_audio() {
    let call0 = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    let mfcc = std::fs::read_to_string(model().join("conf/mfcc.conf")).unwrap();
    let no_up: String = mfcc.lines().filter(|l| !l.contains("allow-upsample")).map(|l| format!("{l}\n")).collect();
    let variant = model_variant(call0.dir.path(), &[], &[("conf/mfcc.conf", &no_up)]);
    let mut call = call0;
    call.opts.bridge_args.push(format!("--model={}", variant.display()));
    let out = call.run();
    out.assert_ok();
    assert!(out.json().resampling);
    assert!(!out.var("ASR_TEXT").is_empty());
}

/// A panic in the recognizer thread ends the call with ERROR, exit 0. The panic comes through
/// the test seam (`--fault`, feature `faults`, which `make test` turns on).
#[test]
#[cfg_attr(not(feature = "faults"), ignore = "needs the test seam: cargo test --features faults (make test)")]
fn recognizer_panic_is_an_error_not_a_crash() {
    let call = Call::new("ko-hello-8k.wav", &["--fault=recognizer-panic"]);
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("panicked"), "{}", out.var("ASR_ERROR"));
}

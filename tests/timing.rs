//! Caller-facing timing on the wall clock: barge-in, the no-input timer, DTMF without audio
//! frames, end of speech without frames (DTX), and the JSON log's `result_latency_ms`. Each is
//! decided on the arrival of audio and the wall clock, so each holds while the in-process model
//! is still loading (no lead silence: the caller speaks at once) and on a fresh server started
//! by the test. Real binary, real model, simulated host at real time (speed 1.0).
//!
//! Every time here is the host's (`t_ms`, from the spawn): when a command reached it, and when
//! it wrote the audio frame holding a moment of the WAV (`SimOptions::onset_s` / `mark_s`, giving
//! `onset_written_ms` / `mark_written_ms`). The tests run one at a time (`serial()`): they are
//! about wall-clock reactions, and two model loads at once on a small machine would measure
//! the machine.

mod common;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use asr_bridge::audio::wav::read_mono16;
use asr_bridge::sim::{Dir, Tail};
use common::server::Server;
use common::*;

/// What a noisy 2-core test machine may add to a promise.
const MARGIN_MS: f64 = 250.0;
/// The host writes each 20 ms frame at the start of the time it holds (a real trunk sends it
/// at the end), so a bridge counting received audio is up to one frame ahead of the host's
/// clock. Only lower bounds use it.
const JITTER_MS: f64 = 20.0;
/// How far before the manifest's `speech_end_s` the bridge's VAD may place the end of speech
/// (20 ms frames, less the VAD's hangover; ko-hello: manifest 2820 ms, VAD 2800 ms), plus the
/// 20 ms between writing a frame and the end of the audio it holds. Only lower bounds use it.
const VAD_END_MS: f64 = 60.0;

const HELLO: &str = "ko-hello-8k.wav";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A call at real time; a hung bridge is killed well before the default 90 s.
fn realtime(mut call: Call) -> Call {
    call.opts.speed = 1.0;
    call.opts.max_wall = Duration::from_secs(30);
    call
}

/// Host time (ms) of the first command starting with `prefix`.
fn rx_at(out: &Outcome, prefix: &str) -> Option<f64> {
    out.res.dialogue.iter().find(|l| l.dir == Dir::Rx && l.text.starts_with(prefix)).map(|l| l.t_ms)
}

/// Host time (ms) of the first SET VARIABLE: when the dialplan starts getting the result.
fn first_set_ms(out: &Outcome) -> f64 {
    rx_at(out, "SET VARIABLE").unwrap_or_else(|| panic!("no SET VARIABLE\n{}", dialogue(out)))
}

/// The dialogue without the header, for failure messages.
fn dialogue(out: &Outcome) -> String {
    out.res.dialogue.iter().filter(|l| !l.text.starts_with("agi_")).map(|l| format!("{:>9.1} {:?} {}", l.t_ms, l.dir, l.text)).collect::<Vec<_>>().join("\n")
}

fn assert_served(out: &Outcome) {
    assert_eq!(out.json().backend, Backend::Server, "log:\n{}", out.log);
}

// ---- 1. Barge-in ------------------------------------------------------------------------

/// A 6 s prompt with barge-in; the caller speaks at once (the WAV's own onset, no lead silence).
fn barge_in_call(extra: &[&str]) -> Outcome {
    let mut args = vec!["--prompt=menu", "--end-silence=700ms"];
    args.extend_from_slice(extra);
    let mut call = realtime(Call::new(HELLO, &args));
    call.opts.sounds.insert("menu".into(), Duration::from_secs(6));
    call.opts.onset_s = Some(speech_start_s(HELLO));
    call.run()
}

/// The command that interrupts STREAM FILE comes between onset + --barge-in-min (200 ms) and
/// onset + 350 ms (+ margin), onset being when the host wrote the frame holding the speech
/// onset.
fn assert_barge_in_within_350ms(out: &Outcome) {
    let onset = out.res.onset_written_ms.expect("the host recorded when it wrote the onset frame");
    let rx: Vec<_> = out.res.dialogue.iter().filter(|l| l.dir == Dir::Rx).collect();
    let sf = rx.iter().position(|l| l.text.starts_with("STREAM FILE \"menu\"")).unwrap_or_else(|| panic!("prompt never played\n{}", dialogue(out)));
    let next = rx.get(sf + 1).unwrap_or_else(|| panic!("nothing after the prompt\n{}", dialogue(out)));
    let played_out = out.res.dialogue.iter().any(|l| l.dir == Dir::Tx && l.text.contains("endpos=") && l.t_ms <= next.t_ms);
    let after = next.t_ms - onset;
    eprintln!("measured: barge-in {after:.0} ms after the onset frame");
    assert!(
        !played_out && (200.0 - JITTER_MS..=350.0 + MARGIN_MS).contains(&after),
        "barge-in {after:.0} ms after the onset frame was written (onset at {onset:.0} ms, {:?} at {:.0} ms, prompt played out: {played_out}); \
         want 200..{:.0} ms\n{}",
        next.text,
        next.t_ms,
        350.0 + MARGIN_MS,
        dialogue(out)
    );
}

#[test]
fn barge_in_while_the_model_loads_stops_the_prompt_within_350ms() {
    let _g = serial();
    let out = barge_in_call(&[]);
    assert_barge_in_within_350ms(&out);
}

#[test]
fn barge_in_on_a_fresh_server_stops_the_prompt_within_350ms() {
    let _g = serial();
    let server = Server::start(&[]);
    let out = barge_in_call(&strs(&server.call_args(&[])));
    assert_served(&out);
    assert_barge_in_within_350ms(&out);
}

// ---- 2. No input ------------------------------------------------------------------------

/// No prompt, `--no-input-timeout=2s`; the caller sends silence frames, or no frames at all.
fn no_input_call(frames: bool, extra: &[&str]) -> Outcome {
    let mut args = vec!["--no-input-timeout=2s"];
    args.extend_from_slice(extra);
    let mut call = realtime(Call::with_samples(Vec::new(), 8000, &args));
    call.opts.tail = if frames { Tail::Silence } else { Tail::Nothing };
    call.run()
}

/// NOINPUT, and the first SET VARIABLE comes 2 s (+ 100 ms + margin) after listening started
/// (the host received WAIT FOR DIGIT).
fn assert_no_input_at_2s(out: &Outcome) {
    let listen = rx_at(out, "WAIT FOR DIGIT").unwrap_or_else(|| panic!("never listened\n{}", dialogue(out)));
    let set = first_set_ms(out);
    let after = set - listen;
    eprintln!("measured: result {after:.0} ms after listening started");
    let status = out.res.vars.get("ASR_STATUS").cloned().unwrap_or_default();
    assert!(
        status == "NOINPUT" && (2000.0 - JITTER_MS..=2100.0 + MARGIN_MS).contains(&after),
        "ASR_STATUS={status}, result {after:.0} ms after listening started (WAIT FOR DIGIT at {listen:.0} ms, SET VARIABLE at {set:.0} ms); \
         want NOINPUT at 2000..{:.0} ms\n{}",
        2100.0 + MARGIN_MS,
        dialogue(out)
    );
    assert_eq!(out.var("ASR_CAUSE"), "002");
}

#[test]
fn no_input_while_the_model_loads_fires_at_2s() {
    let _g = serial();
    assert_no_input_at_2s(&no_input_call(true, &[]));
}

#[test]
fn no_input_while_the_model_loads_fires_at_2s_without_audio_frames() {
    let _g = serial();
    assert_no_input_at_2s(&no_input_call(false, &[]));
}

#[test]
fn no_input_on_a_fresh_server_fires_at_2s() {
    let _g = serial();
    let server = Server::start(&[]);
    let out = no_input_call(true, &strs(&server.call_args(&[])));
    assert_no_input_at_2s(&out);
    assert_served(&out);
}

#[test]
fn no_input_on_a_fresh_server_fires_at_2s_without_audio_frames() {
    let _g = serial();
    let server = Server::start(&[]);
    let out = no_input_call(false, &strs(&server.call_args(&[])));
    assert_no_input_at_2s(&out);
    assert_served(&out);
}

// ---- 3. DTMF without audio frames --------------------------------------------------------

/// A caller that sends no frames at all presses 2 at 1 s; `--no-input-timeout=5s`.
fn dtmf_call(extra: &[&str]) -> Outcome {
    let mut args = vec!["--no-input-timeout=5s"];
    args.extend_from_slice(extra);
    let mut call = realtime(Call::with_samples(Vec::new(), 8000, &args));
    call.opts.tail = Tail::Nothing;
    call.opts.dtmf.push((Duration::from_secs(1), '2'));
    call.run()
}

/// DTMF=2, set within 300 ms (+ margin) of the key (one digit awaited: it ends at once).
fn assert_dtmf_at_once(out: &Outcome) {
    let ev = out
        .res
        .dialogue
        .iter()
        .find(|l| l.dir == Dir::Event && l.text.starts_with("DTMF 2"))
        .unwrap_or_else(|| panic!("the key was never pressed\n{}", dialogue(out)));
    assert_eq!(ev.text, "DTMF 2", "the key did not reach WAIT FOR DIGIT\n{}", dialogue(out));
    let key = ev.t_ms;
    let set = first_set_ms(out);
    let after = set - key;
    eprintln!("measured: result {after:.0} ms after the key");
    let status = out.res.vars.get("ASR_STATUS").cloned().unwrap_or_default();
    let dtmf = out.res.vars.get("ASR_DTMF").cloned().unwrap_or_default();
    assert!(
        status == "DTMF" && dtmf == "2" && (0.0..=300.0 + MARGIN_MS).contains(&after),
        "ASR_STATUS={status} ASR_DTMF={dtmf:?}, result {after:.0} ms after the key (key at {key:.0} ms, SET VARIABLE at {set:.0} ms); \
         want DTMF 2 within {:.0} ms\n{}",
        300.0 + MARGIN_MS,
        dialogue(out)
    );
}

#[test]
fn dtmf_without_audio_frames_while_the_model_loads_ends_at_once() {
    let _g = serial();
    assert_dtmf_at_once(&dtmf_call(&[]));
}

#[test]
fn dtmf_without_audio_frames_on_a_fresh_server_ends_at_once() {
    let _g = serial();
    let server = Server::start(&[]);
    let out = dtmf_call(&strs(&server.call_args(&[])));
    assert_dtmf_at_once(&out);
    assert_served(&out);
}

// ---- 4. End of speech without frames (DTX), 5. result_latency_ms -------------------------

/// The speech of ko-hello and 100 ms after it, then no frames at all (a DTX trunk), on a
/// server warmed by one call; `--end-silence=700ms`. The host marks the frame holding the
/// manifest's speech end.
fn warm_server_dtx_call() -> (Server, Outcome) {
    let server = Server::start(&[]);
    let warm = Call::new(HELLO, &strs(&server.call_args(&["--end-silence=700ms"]))).run();
    warm.assert_ok();
    let end = speech_end_s(HELLO);
    let (mut samples, rate) = read_mono16(&wav(HELLO)).unwrap();
    samples.truncate(((end + 0.1) * rate as f64) as usize);
    let mut call = realtime(Call::with_samples(samples, rate, &strs(&server.call_args(&["--end-silence=700ms"]))));
    call.opts.tail = Tail::Nothing;
    call.opts.mark_s = Some(end);
    let out = call.run();
    assert_served(&out);
    (server, out)
}

/// Wall ms from the host writing the last speech frame to the first SET VARIABLE.
fn caller_wait_ms(out: &Outcome) -> f64 {
    let end = out.res.mark_written_ms.expect("the host recorded when it wrote the speech-end frame");
    first_set_ms(out) - end
}

/// The endpointer decides the end of speech on the wall clock when no frames come (DTX):
/// end-silence after the last speech frame, whatever the decoder is doing. The caller's
/// whole wait also holds the decoder's catch-up (`decode_wait_ms`: libvosk's first-speech
/// blocks on a fresh recognizer); that figure is a speed and is measured by the benchmark
/// (`asr_bridge bench --timing`), not bounded here.
#[test]
fn end_of_speech_without_frames_is_decided_after_end_silence_on_a_warm_server() {
    let _g = serial();
    let (_server, out) = warm_server_dtx_call();
    let wait = caller_wait_ms(&out);
    let decoding = out.json().decode_wait_ms.expect("decode_wait_ms in the JSON log");
    let decided = wait - decoding;
    eprintln!("measured: decided {decided:.0} ms after the last speech frame, result {wait:.0} ms (decoding {decoding:.0} ms)");
    let status = out.res.vars.get("ASR_STATUS").cloned().unwrap_or_default();
    assert!(
        status == "OK" && (700.0 - VAD_END_MS..=850.0 + MARGIN_MS).contains(&decided),
        "ASR_STATUS={status}, decided {decided:.0} ms after the last speech frame (written at {:.0} ms; JSON end_reason {:?}, speech_end_ms {:?}); \
         want OK at {:.0}..{:.0} ms\n{}",
        out.res.mark_written_ms.unwrap(),
        out.json().end_reason,
        out.json().speech_end_ms,
        700.0 - VAD_END_MS,
        850.0 + MARGIN_MS,
        dialogue(&out)
    );
}

fn assert_latency_reported(out: &Outcome) {
    let wait = caller_wait_ms(out);
    let reported = out.json().result_latency_ms;
    eprintln!("measured: result_latency_ms {reported:?}, the caller waited {wait:.0} ms");
    assert!(
        reported.is_some_and(|r| (r - wait).abs() <= 100.0),
        "result_latency_ms {reported:?}, the caller waited {wait:.0} ms (last speech frame to first SET VARIABLE)\nJSON: {}",
        out.json()
    );
}

#[test]
fn result_latency_ms_is_what_the_caller_waits_while_the_model_loads() {
    let _g = serial();
    let mut call = realtime(Call::new(HELLO, &["--end-silence=700ms"]));
    call.opts.mark_s = Some(speech_end_s(HELLO));
    let out = call.run();
    out.assert_ok();
    assert_latency_reported(&out);
}

#[test]
fn result_latency_ms_is_what_the_caller_waits_without_frames_on_a_warm_server() {
    let _g = serial();
    let (_server, out) = warm_server_dtx_call();
    out.assert_ok();
    assert_latency_reported(&out);
}

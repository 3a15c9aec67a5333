//! Voice menus through the simulated host on the real model: barge-in, DTMF fallback,
//! grammars, choices, retries and n-best. Issue: "Voice menus and call flow".

mod common;

use std::time::Duration;

use asr_bridge::sim::Dir;
use common::*;

fn stream_file_replies(out: &Outcome) -> Vec<String> {
    // Replies carrying endpos= belong to STREAM FILE.
    out.res.dialogue.iter().filter(|l| l.dir == Dir::Tx && l.text.contains("endpos=")).map(|l| l.text.clone()).collect()
}

fn rx(out: &Outcome) -> Vec<(f64, String)> {
    out.res.dialogue.iter().filter(|l| l.dir == Dir::Rx).map(|l| (l.t_ms, l.text.clone())).collect()
}

fn recognized(name: &str) -> String {
    manifest().into_iter().find(|e| e["file"] == name).unwrap()["recognized"].as_str().unwrap().to_string()
}

#[test]
fn barge_in_stops_the_prompt_after_speech_onset() {
    let mut call = Call::new("ko-hello-8k.wav", &["--prompt=menu", "--end-silence=700ms"]);
    call.opts.speed = 1.0;
    call.opts.sounds.insert("menu".into(), Duration::from_secs(8));
    let out = call.run();
    out.assert_ok();
    assert!(stream_file_replies(&out).is_empty(), "an interrupted STREAM FILE has no reply: {:?}", stream_file_replies(&out));
    let cmds = rx(&out);
    let sf = cmds.iter().position(|(_, c)| c.starts_with("STREAM FILE \"menu\"")).expect("prompt played");
    let (t_interrupt, next) = &cmds[sf + 1];
    assert!(next.starts_with("WAIT FOR DIGIT"), "next command {next}");
    let onset_ms = speech_start_s("ko-hello-8k.wav") * 1000.0;
    assert!(*t_interrupt < 8000.0, "the prompt was stopped early ({t_interrupt} ms)");
    assert!(*t_interrupt >= onset_ms + 150.0, "not before the minimum speech ({t_interrupt} ms, onset {onset_ms} ms)");
    assert!(out.json().barge_in_ms.is_some());
}

#[test]
fn a_short_noise_burst_does_not_interrupt() {
    // 120 ms of loud noise, then silence: shorter than --barge-in-min.
    let mut samples: Vec<i16> = vec![0; 4000];
    let mut x: u32 = 12345;
    for _ in 0..960 {
        x = x.wrapping_mul(1103515245).wrapping_add(12345);
        samples.push(((x >> 16) as i16) / 3);
    }
    samples.extend(std::iter::repeat_n(0, 8000 * 6));
    let mut call = Call::with_samples(samples, 8000, &["--prompt=menu", "--no-input-timeout=1s"]);
    call.opts.sounds.insert("menu".into(), Duration::from_secs(3));
    let out = call.run();
    assert_eq!(stream_file_replies(&out).len(), 1, "the prompt played to its end");
    assert!(stream_file_replies(&out)[0].starts_with("200 result=0 endpos="));
    assert_eq!(out.status(), "NOINPUT", "{}", out.log);
}

#[test]
fn steady_noise_neither_stops_the_prompt_nor_becomes_words() {
    // Pink and brown noise at -25 dBFS through a 3 s prompt and after it: the VAD alone calls
    // this speech (the prompt stopped after 1.8 s and the call ended OK with words).
    use asr_bridge::audio::synth::{noise, NoiseKind};
    for (kind, seed) in [(NoiseKind::Pink, 1), (NoiseKind::Brown, 2), (NoiseKind::White, 3)] {
        let samples = noise(kind, -25.0, 8000 * 7, seed);
        let mut call = Call::with_samples(samples, 8000, &["--prompt=menu", "--no-input-timeout=2s"]);
        call.opts.sounds.insert("menu".into(), Duration::from_secs(3));
        let out = call.run();
        assert_eq!(stream_file_replies(&out).len(), 1, "{kind:?}: the prompt played to its end\n{}", out.log);
        assert_eq!(out.status(), "NOINPUT", "{kind:?}: {}", out.log);
        assert!(out.json().barge_in_ms.is_none(), "{kind:?}");
    }
}

#[test]
fn speech_in_noise_still_barges_in_and_is_recognized_as_libvosk_would() {
    // ko-hello mixed into pink noise at 10 dB SNR, after 1 s of the noise alone.
    use asr_bridge::audio::synth::{mix_at_snr, noise, NoiseKind};
    let (hello, _) = asr_bridge::audio::wav::read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    let mut speech = vec![0i16; 8000];
    speech.extend(&hello);
    let samples = mix_at_snr(&speech, &noise(NoiseKind::Pink, -30.0, speech.len() + 8000 * 2, 7), 10.0);
    let mut call = Call::with_samples(samples, 8000, &["--prompt=menu", "--end-silence=700ms"]);
    call.opts.speed = 1.0;
    call.opts.onset_s = Some(1.0 + speech_start_s("ko-hello-8k.wav"));
    call.opts.sounds.insert("menu".into(), Duration::from_secs(8));
    let rec = call.path("rec.wav");
    call.opts.bridge_args.push(format!("--record={}", rec.display()));
    let out = call.run();
    let cmds = rx(&out);
    let sf = cmds.iter().position(|(_, c)| c.starts_with("STREAM FILE \"menu\"")).expect("prompt played");
    let t_interrupt = cmds[sf + 1].0;
    let onset = out.res.onset_written_ms.expect("onset written");
    // The promise is barge-in-min + 150 ms (350 ms); 250 ms more for a noisy machine.
    assert!(
        t_interrupt >= onset + 180.0 && t_interrupt <= onset + 350.0 + 250.0,
        "prompt stopped at {t_interrupt} ms, speech onset written at {onset} ms\n{}",
        out.log
    );
    assert_eq!(out.status(), "OK", "{}", out.log);
    let d = direct(&rec, None);
    assert_eq!(out.var("ASR_TEXT"), d["text"].as_str().unwrap(), "the same text as libvosk on the same samples");
}

#[test]
fn prompt_ending_as_barge_in_fires_is_handled() {
    // The prompt ends about when barge-in fires: a late `endpos` reply may or may not come.
    for extra_ms in [150u64, 200, 250] {
        let mut call = Call::new("ko-hello-8k.wav", &["--prompt=menu", "--end-silence=700ms"]);
        call.opts.speed = 1.0;
        let ms = (speech_start_s("ko-hello-8k.wav") * 1000.0) as u64 + extra_ms;
        call.opts.sounds.insert("menu".into(), Duration::from_millis(ms));
        let out = call.run();
        out.assert_ok();
        assert!(!out.var("ASR_TEXT").is_empty());
    }
}

#[test]
fn no_barge_in_plays_everything_and_discards_prompt_audio() {
    // All the speech happens while the prompt plays: with barge-in off it is not recognized.
    let mut call = Call::new("ko-hello-8k.wav", &["--prompt=menu", "--no-barge-in", "--no-input-timeout=1500ms"]);
    call.opts.sounds.insert("menu".into(), Duration::from_secs(4));
    let out = call.run();
    assert_eq!(stream_file_replies(&out).len(), 1);
    assert_eq!(out.status(), "NOINPUT", "{}", out.log);
}

#[test]
fn no_barge_in_recognizes_speech_after_the_prompt() {
    let mut call = Call::new("ko-hello-8k.wav", &["--prompt=menu", "--no-barge-in", "--end-silence=700ms"]);
    call.opts.sounds.insert("menu".into(), Duration::from_secs(2));
    call.opts.lead_silence = Duration::from_millis(2500);
    let out = call.run();
    out.assert_ok();
    assert_eq!(stream_file_replies(&out).len(), 1);
}

#[test]
fn dtmf_during_the_prompt() {
    let mut call = Call::new("silence-3s-8k.wav", &["--prompt=menu"]);
    call.opts.sounds.insert("menu".into(), Duration::from_secs(5));
    call.opts.dtmf.push((Duration::from_millis(1000), '5'));
    let out = call.run();
    assert_eq!(out.status(), "DTMF", "{}", out.log);
    assert_eq!(out.var("ASR_DTMF"), "5");
    let replies = stream_file_replies(&out);
    assert_eq!(replies.len(), 1, "the key stopped the prompt: {replies:?}");
    assert!(replies[0].starts_with("200 result=53 endpos="), "{replies:?}");
}

#[test]
fn dtmf_while_listening_with_max_digits_and_terminator() {
    let mut call = Call::new("silence-3s-8k.wav", &["--dtmf-max-digits=4", "--no-input-timeout=5s"]);
    for (t, k) in [(800, '1'), (1200, '2'), (1600, '#')] {
        call.opts.dtmf.push((Duration::from_millis(t), k));
    }
    let out = call.run();
    assert_eq!(out.status(), "DTMF", "{}", out.log);
    assert_eq!(out.var("ASR_DTMF"), "12");
    assert_eq!(out.var("ASR_TEXT"), "");

    let mut call = Call::new("silence-3s-8k.wav", &["--dtmf-max-digits=4", "--dtmf-timeout=500ms"]);
    call.opts.dtmf.push((Duration::from_millis(800), '7'));
    let out = call.run();
    assert_eq!(out.status(), "DTMF");
    assert_eq!(out.var("ASR_DTMF"), "7", "the inter-digit timeout ends input");
}

#[test]
fn speech_wins_if_it_started_first() {
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    call.opts.speed = 1.0;
    let during = ((speech_start_s("ko-hello-8k.wav") + 0.6) * 1000.0) as u64;
    call.opts.dtmf.push((Duration::from_millis(during), '9'));
    let out = call.run();
    out.assert_ok();
    assert_eq!(out.var("ASR_DTMF"), "");
}

#[test]
fn choice_matching_and_nomatch() {
    let phrase = recognized("ko-hello-8k.wav");
    assert!(!phrase.is_empty());
    let choice = format!("--choice=100:{phrase}");
    let out = Call::new("ko-hello-8k.wav", &[&choice, "--choice=200:감사합니다", "--end-silence=700ms"]).run();
    out.assert_ok();
    assert_eq!(out.var("ASR_CHOICE"), "100");

    let out = Call::new("ko-hello-8k.wav", &["--choice=300:sales", "--choice=400:billing", "--end-silence=700ms"]).run();
    assert_eq!(out.status(), "NOMATCH", "{}", out.log);
    assert_eq!(out.var("ASR_CAUSE"), "001");
    assert_eq!(out.var("ASR_CHOICE"), "");
}

#[test]
fn confidence_floor_gives_nomatch() {
    let out = Call::new("ko-hello-8k.wav", &["--min-confidence=1.0", "--end-silence=700ms"]).run();
    assert_eq!(out.status(), "NOMATCH", "{}", out.log);
}

#[test]
fn retries_replay_the_menu_with_their_prompts() {
    let mut call = Call::new("silence-3s-8k.wav", &["--prompt=menu", "--retries=1", "--noinput-prompt=sorry", "--no-input-timeout=1s"]);
    call.opts.sounds.insert("menu".into(), Duration::from_millis(500));
    call.opts.sounds.insert("sorry".into(), Duration::from_millis(300));
    let out = call.run();
    assert_eq!(out.status(), "NOINPUT");
    let streams: Vec<String> = rx(&out).into_iter().map(|(_, c)| c).filter(|c| c.starts_with("STREAM FILE")).collect();
    assert_eq!(streams, ["STREAM FILE \"menu\" \"0123456789*#\"", "STREAM FILE \"sorry\" \"0123456789*#\"", "STREAM FILE \"menu\" \"0123456789*#\""]);
    assert_eq!(out.json().attempts, 2);
}

#[test]
fn a_retry_can_succeed() {
    // The caller says nothing for 7 s: the first attempts end NOINPUT, a retry then hears the
    // speech. Real time, so the attempts keep pace with the audio even while the model loads.
    let mut call = Call::new(
        "ko-hello-8k.wav",
        &["--prompt=menu", "--retries=3", "--nomatch-prompt=sorry", "--noinput-prompt=sorry", "--no-input-timeout=1500ms", "--end-silence=700ms"],
    );
    call.opts.sounds.insert("menu".into(), Duration::from_millis(400));
    call.opts.sounds.insert("sorry".into(), Duration::from_millis(300));
    call.opts.lead_silence = Duration::from_millis(7000);
    call.opts.speed = 1.0;
    let out = call.run();
    out.assert_ok();
    assert!(out.json().attempts >= 2);
}

#[test]
fn nbest_alternatives() {
    let out = Call::new("ko-hello-8k.wav", &["--alternatives=3", "--end-silence=700ms"]).run();
    out.assert_ok();
    let n: usize = out.var("ASR_ALT_COUNT").parse().unwrap();
    assert!((1..=3).contains(&n));
    assert_eq!(out.var("ASR_ALT_1"), out.var("ASR_TEXT"));
    let mut prev = 1.01f64;
    for i in 1..=n {
        let c: f64 = out.var(&format!("ASR_ALT_{i}_CONFIDENCE")).parse().unwrap();
        assert!((0.0..=1.0).contains(&c) && c <= prev, "alternative {i}: {c}");
        prev = c;
    }
    let conf: f64 = out.var("ASR_CONFIDENCE").parse().unwrap();
    assert!((0.0..=1.0).contains(&conf));
}

#[test]
fn grammar_with_quotes_and_non_ascii_does_not_crash() {
    let out = Call::new("ko-hello-8k.wav", &["--grammar=안녕하세요|\"반갑습니다\"|a\\\"b|네", "--end-silence=700ms"]).run();
    assert!(matches!(out.status(), "OK" | "NOMATCH"), "{}", out.log);
    assert_eq!(out.res.exit_signal, None);
}

#[test]
fn empty_grammar_is_a_clear_error() {
    let out = Call::new("ko-hello-8k.wav", &["--grammar=| |"]).run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("grammar"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn grammar_of_unknown_words_only_is_a_clear_error() {
    let out = Call::new("ko-hello-8k.wav", &["--grammar=zzyzx|qwxqwx"]).run();
    assert_eq!(out.status(), "ERROR", "{}", out.log);
    assert!(out.var("ASR_ERROR").contains("vocabulary"), "{}", out.var("ASR_ERROR"));
    assert!(out.log.contains("zzyzx"), "OOV words are logged");
}

/// A model without HCLr.fst/Gr.fst cannot take a runtime grammar: the engine recognizes
/// freely instead (the menu then matches the transcript). Real libvosk, real model; only the
/// capability flag says "no".
#[test]
fn model_without_runtime_grammar_recognizes_freely() {
    use asr_bridge::asr::engine::{load_model, transcribe_samples, EngineOptions};
    let mut info = asr_bridge::asr::model::inspect(&model()).unwrap();
    assert!(info.runtime_grammar, "the test model has a dynamic graph");
    let (samples, rate) = asr_bridge::audio::wav::read_mono16(&wav("ko-hello-8k.wav")).unwrap();
    let (m, _) = load_model(&info).unwrap();
    info.runtime_grammar = false;
    let with = EngineOptions { grammar: Some(vec!["네".into()]), alternatives: 0 };
    let a = transcribe_samples(&m, &info, rate, &samples, &with).unwrap();
    assert!(!a.text.is_empty() && a.text != "네", "free transcript, not the grammar: {:?}", a.text);
}

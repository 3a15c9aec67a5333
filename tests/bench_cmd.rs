//! `asr_bridge bench` on one bundled WAV: a report is written, and a broken bound makes the
//! exit status non-zero (so CI can gate on it). Issue: "Benchmarking the audio path".

mod common;

use std::process::Command;

use common::*;

fn bench(out: &std::path::Path, extra: &[&str]) -> (bool, String, serde_json::Value) {
    let o = Command::new(bin())
        .args(["bench", "--limit=1", "--speed=4", "--lead-silence=12s", "--calls=1"])
        .arg(format!("--manifest={}", root().join("test-audio").display()))
        .arg(format!("--model={}", model().display()))
        .arg(format!("--out={}", out.display()))
        .args(extra)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), report)
}

#[test]
fn report_and_bounds() {
    let d = tempfile::tempdir().unwrap();
    let (ok, text, r) = bench(d.path(), &[]);
    assert!(ok, "{text}");
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 2, "plots in the report");
    let f = &r["files"][0];
    assert_eq!(f["same_as_direct"], true, "{r:#}");
    assert_eq!(f["samples_dropped"], 0);
    assert!(f["cpu_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(r["concurrency"][0]["calls"], 1);

    // --served: the same call through a resident server, side by side.
    let (ok, text, r) = bench(d.path(), &["--served", "--served-rounds=2"]);
    assert!(ok, "{text}");
    let f = &r["files"][0];
    assert_eq!(f["served"]["backend"], "server", "{r:#}");
    assert_eq!(f["served"]["same_as_in_process"], true, "a fresh server's first call: {r:#}");
    assert!(f["served"]["start_to_streaming_ms"].as_f64().unwrap() < f["start_to_streaming_ms"].as_f64().unwrap());
    // Served levels, side by side: warm recognizers, then --cold (one built per call).
    let levels = r["served_concurrency"].as_array().unwrap();
    let pools: Vec<&str> = levels.iter().map(|l| l["pool"].as_str().unwrap()).collect();
    assert_eq!(pools, ["warm", "cold"], "{r:#}");
    for l in levels {
        assert_eq!((&l["ok"], &l["first_round"]["ok"], &l["rounds"]), (&1.into(), &1.into(), &2.into()), "{l:#}");
        let cpu = l["server_cpu_per_audio_s"].as_f64().unwrap();
        assert!(cpu > 0.01 && cpu < 5.0, "server CPU per audio second measured: {l:#}");
    }
    assert!(levels[0]["server"]["warm"]["reused"].as_u64().unwrap() >= 1, "the warm server reused a recognizer: {:#}", levels[0]["server"]);
    assert_eq!(levels[1]["server"]["warm"]["reused"], 0, "the cold one never: {:#}", levels[1]["server"]);
    let cpu = &r["summary"]["served"]["server_cpu_per_audio_s"];
    assert!(cpu["ratio"].as_f64().is_some_and(f64::is_finite), "{cpu}");
    assert!(r["summary"]["served"]["one_model_mb"].as_f64().unwrap() > 100.0);
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.contains("Served (one asr_bridge serve) versus in-process"));

    let (ok, text, r) = bench(d.path(), &["--max-latency-ms=1"]);
    assert!(!ok, "a broken bound fails the run: {text}");
    assert!(text.contains("BOUNDS BROKEN"), "{text}");
    assert!(!r["summary"]["bounds_broken"].as_array().unwrap().is_empty());
}

/// `--aeap` (issue 16): the WAV also goes through the AEAP path (a simulated res_speech_aeap
/// on a resident server), reported beside the EAGI path with sane figures.
#[test]
fn aeap_section_beside_the_eagi_path() {
    let d = tempfile::tempdir().unwrap();
    let (ok, text, r) = bench(d.path(), &["--aeap"]);
    assert!(ok, "{text}");
    let a = &r["files"][0]["aeap"];
    assert_eq!(a["same_as_in_process"], true, "a fresh server's first utterance: {r:#}");
    let score = a["score"].as_i64().unwrap();
    assert!((1..=1000).contains(&score), "{a}");
    // The first utterance on a fresh server decodes on a cold recognizer, slower than real time
    // here (0.8-12 s after the end of speech, by the load on the box): bounded against the
    // in-process EAGI call of the same run (which loads a model per call), not in seconds.
    let lat = a["latency_ms"].as_f64().unwrap();
    assert!(lat > 0.0 && lat.is_finite(), "latency after end of speech: {a}");
    let cpu = a["server_cpu_per_audio_s"].as_f64().unwrap();
    assert!(cpu > 0.01 && cpu < 5.0, "server CPU per audio second: {a}");
    let s = &r["summary"]["aeap"];
    assert_eq!(s["same_text_as_in_process"], 1, "{s}");
    for k in ["latency_mean_ms", "cpu_per_audio_s"] {
        assert!(s[k]["ratio"].as_f64().is_some_and(|x| x.is_finite() && x > 0.0 && x < 5.0), "{k}: AEAP against in-process: {s}");
    }
    assert!(text.contains(" aeap: latency "), "{text}");
}

/// `--timing-only --timing-quick`: the caller-facing timing section runs (one in-process call
/// per scenario, at real time) and yields every scenario's rows with numbers, targets and a
/// pass column, in report.json, the terminal tables and the HTML.
#[test]
fn timing_section_yields_rows_with_numbers() {
    let d = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .args(["bench", "--timing-only", "--timing-quick"])
        .arg(format!("--manifest={}", root().join("test-audio").display()))
        .arg(format!("--model={}", model().display()))
        .arg(format!("--out={}", d.path().display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{text}\n{}", String::from_utf8_lossy(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(d.path().join("report.json")).unwrap()).unwrap();
    let t = &r["timing"];
    assert_eq!(r["files"].as_array().map(Vec::len), Some(0), "--timing-only runs no per-WAV rows");
    let scenarios = t["scenarios"].as_array().unwrap();
    let names: Vec<&str> = scenarios.iter().map(|s| s["scenario"].as_str().unwrap()).collect();
    assert_eq!(names, ["barge-in reaction", "no-input timer", "end-of-speech latency", "noise alone", "speech in noise"]);
    // The number each scenario is about, per row.
    let key = ["reaction_ms", "noinput_ms", "latency_ms", "false_barge_in", "reaction_ms"];
    for (s, k) in scenarios.iter().zip(key) {
        assert!(!s["target"].as_str().unwrap().is_empty());
        let rows = s["rows"].as_array().unwrap();
        assert!(!rows.is_empty(), "{s:#}");
        for row in rows {
            assert_eq!(row["mode"], "in-process");
            assert!(row.get("error").is_none(), "{row:#}");
            assert!(row["pass"].is_boolean() || row["pass"].is_null(), "{row:#}");
            assert!(!row["status"].is_null(), "{row:#}");
            match k {
                "false_barge_in" => assert!(row[k].is_boolean() && row["false_ok"].is_boolean(), "{row:#}"),
                _ => assert!(row[k].as_f64().is_some_and(|v| v.is_finite()), "{k} in {row:#}"),
            }
        }
    }
    // What the bridge decides on the wall clock alone, even with a loaded machine.
    let noinput = &scenarios[1]["rows"][0];
    assert_eq!(noinput["status"], "NOINPUT", "{noinput:#}");
    assert!((1500.0..4000.0).contains(&noinput["noinput_ms"].as_f64().unwrap()), "{noinput:#}");
    assert!(scenarios[0]["rows"][0]["reaction_ms"].as_f64().unwrap() > 0.0);
    let sin = &scenarios[4]["rows"][0];
    assert!(sin["direct_text"].is_string() && sin["same_as_direct"].is_boolean(), "{sin:#}");
    assert!(t["summary"]["rows"].as_u64().unwrap() >= 5);
    assert!(text.contains("caller-facing timing") && text.contains("== speech in noise"), "{text}");
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.contains("Caller-facing timing"));
}

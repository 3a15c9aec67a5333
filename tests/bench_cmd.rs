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
    let (ok, text, r) = bench(d.path(), &["--served"]);
    assert!(ok, "{text}");
    let f = &r["files"][0];
    assert_eq!(f["served"]["backend"], "server", "{r:#}");
    assert_eq!(f["served"]["same_as_in_process"], true, "a fresh server's first call: {r:#}");
    assert!(f["served"]["start_to_streaming_ms"].as_f64().unwrap() < f["start_to_streaming_ms"].as_f64().unwrap());
    assert_eq!(r["served_concurrency"][0]["ok"], 1);
    assert!(r["summary"]["served"]["one_model_mb"].as_f64().unwrap() > 100.0);
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.contains("Served (one asr_bridge serve) versus in-process"));

    let (ok, text, r) = bench(d.path(), &["--max-latency-ms=1"]);
    assert!(!ok, "a broken bound fails the run: {text}");
    assert!(text.contains("BOUNDS BROKEN"), "{text}");
    assert!(!r["summary"]["bounds_broken"].as_array().unwrap().is_empty());
}

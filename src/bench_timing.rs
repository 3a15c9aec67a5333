//! `asr_bridge bench --timing`: caller-facing timing, each scenario a full simulated call at
//! real time (speed 1.0), side by side in-process (no lead silence: the model is still loading
//! when the caller speaks), on a fresh `asr_bridge serve` started for the row, and on a warm
//! one (one warm-up call before). What a caller notices: how fast the prompt stops when they
//! talk over it, when silence ends in NOINPUT, how long after they stop the dialplan gets the
//! result, whether steady noise stops the prompt or ends as OK, and speech in noise.
//!
//! Every time is the simulated host's (`t_ms`, from the spawn): when a command reached it, and
//! when it wrote the audio frame holding a moment of the caller's audio (`onset_written_ms`,
//! `mark_written_ms`).
//!
//! Scenarios 1-3 run one call at a time (they measure wall-clock reactions); 4 and 5 run
//! `--timing-jobs` in-process calls and as many served ones at once (4 is about outcomes, and
//! 5's barge-in is decided on the arrival of audio; its end-of-speech figures are under that
//! load), so the section stays near two minutes on two cores.

#![allow(clippy::print_stdout)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::asr::endpoint::EndReason;
use crate::asr::Backend;
use crate::audio::wav::read_mono16;
use crate::bench::{BenchServer, Direct, ManifestEntry};
use crate::session::CallRecord;
use crate::sim::{self, Dir, SimOptions, SimResult, Tail};

use crate::audio::synth::{self, NoiseKind};

/// The bundled WAV every speech scenario uses.
const HELLO: &str = "ko-hello-8k.wav";
/// Targets.
const BARGE_IN_MAX_MS: f64 = 350.0;
const NO_INPUT_MS: f64 = 2000.0;
const NO_INPUT_TOL_MS: f64 = 100.0;
const END_SILENCE_MS: f64 = 700.0;
const EOS_MARGIN_MS: f64 = 150.0;
/// Noise alone must neither stop the prompt nor end OK up to this level.
const NOISE_MAX_CLEAN_DBFS: f64 = -25.0;
/// Speech in noise: the noise's fixed level. ko-hello's active speech is at -19.5 dBFS with
/// peaks at -3 dBFS; the speech is scaled to this level + SNR (at -30 dBFS, 20 dB SNR would
/// clip 417 samples; at -35, 23).
const SIN_NOISE_DBFS: f64 = -35.0;
/// Noise before the speech starts.
const SIN_LEAD_S: f64 = 1.0;

/// Where a call recognizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    #[serde(rename = "in-process")]
    InProcess,
    #[serde(rename = "served fresh")]
    Fresh,
    #[serde(rename = "served warm")]
    Warm,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::InProcess => "in-process",
            Mode::Fresh => "served fresh",
            Mode::Warm => "served warm",
        }
    }
}

/// One call: the caller's audio, what follows it, and the dialplan's options.
#[derive(Clone)]
struct CallSpec {
    samples: Vec<i16>,
    rate: u32,
    tail: Tail,
    args: Vec<String>,
    sounds: Vec<(&'static str, Duration)>,
    onset_s: Option<f64>,
    mark_s: Option<f64>,
    record: bool,
    /// Hang up when a command starting with this arrives (the measurement is over).
    hangup_on: Option<&'static str>,
}

impl CallSpec {
    fn new(samples: Vec<i16>, rate: u32, args: &[&str]) -> CallSpec {
        CallSpec {
            samples,
            rate,
            tail: Tail::Silence,
            args: args.iter().map(|s| s.to_string()).collect(),
            sounds: Vec::new(),
            onset_s: None,
            mark_s: None,
            record: false,
            hangup_on: None,
        }
    }
}

/// A scenario of the section (`--timing-scenario`; in the JSON rows by its spaced name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
pub enum Scenario {
    #[serde(rename = "barge-in")]
    BargeIn,
    #[serde(rename = "no-input")]
    NoInput,
    #[serde(rename = "end-of-speech")]
    EndOfSpeech,
    #[serde(rename = "noise alone")]
    NoiseAlone,
    #[serde(rename = "speech in noise")]
    SpeechInNoise,
}

impl Scenario {
    const ALL: [Scenario; 5] = [Scenario::BargeIn, Scenario::NoInput, Scenario::EndOfSpeech, Scenario::NoiseAlone, Scenario::SpeechInNoise];

    /// The section's heading (its `scenario` in the JSON).
    fn title(self) -> &'static str {
        match self {
            Scenario::BargeIn => "barge-in reaction",
            Scenario::NoInput => "no-input timer",
            Scenario::EndOfSpeech => "end-of-speech latency",
            Scenario::NoiseAlone => "noise alone",
            Scenario::SpeechInNoise => "speech in noise",
        }
    }
}

/// Scenario-specific facts copied into the row: the noise, its level, the SNR.
#[derive(Debug, Clone, Default)]
struct Meta {
    noise: Option<&'static str>,
    dbfs: Option<f64>,
    noise_dbfs: Option<f64>,
    snr_db: Option<f64>,
}

struct Job {
    scenario: Scenario,
    mode: Mode,
    variant: String,
    meta: Meta,
    spec: CallSpec,
}

struct Outcome {
    res: SimResult,
    log: Option<CallRecord>,
    rec: Option<PathBuf>,
    wall_s: f64,
    /// Direct libvosk (a fresh model) on the samples an in-process call consumed.
    direct: Option<Direct>,
}

/// The section in report.json.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimingReport {
    pub speed: f64,
    pub quick: bool,
    pub jobs: usize,
    pub wall_s: f64,
    pub phases_s: Phases,
    pub scenarios: Vec<ScenarioSection>,
    pub summary: TimingSummary,
}

/// Where the section's wall time went, s.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Phases {
    pub servers_and_warm_up: f64,
    pub one_at_a_time: f64,
    pub several_at_once: f64,
}

/// One scenario: its target and its rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioSection {
    /// The heading (`barge-in reaction`, ...).
    pub scenario: String,
    pub target: String,
    pub note: String,
    pub rows: Vec<TimingRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimingSummary {
    pub rows: usize,
    pub judged: usize,
    pub passed: usize,
    /// `scenario / variant / mode` of each judged row that missed.
    pub failed: Vec<String>,
}

/// One call of a scenario. The fields after `pass` belong to some scenarios only.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimingRow {
    pub scenario: Scenario,
    pub variant: String,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dbfs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_dbfs: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snr_db: Option<f64>,
    pub status: Option<String>,
    pub cause: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asr_error: Option<String>,
    pub backend: Option<Backend>,
    pub call_wall_s: Option<f64>,
    /// In-process rows only.
    pub model_load_ms: Option<f64>,
    /// The call could not be run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Within target; none: not judged.
    pub pass: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reaction_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interrupted_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub played_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noinput_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_barge_in: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub barge_in_at_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_ok: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_start_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speech_end_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decode_wait_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as_direct: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_as_in_process: Option<bool>,
}

struct Ctx<'a> {
    exe: PathBuf,
    model: &'a Path,
    dir: &'a Path,
}

/// The options of the timing section (from `asr_bridge bench`).
pub struct TimingOptions<'a> {
    pub manifest_base: &'a Path,
    pub manifest: &'a [ManifestEntry],
    pub model: &'a Path,
    pub work: &'a Path,
    /// One in-process row per scenario (a smoke run).
    pub quick: bool,
    /// Calls at once in scenarios 4 and 5 (per lane).
    pub jobs: usize,
    /// Only these scenarios (empty: all).
    pub only: &'a [Scenario],
}

fn noise_name(k: NoiseKind) -> &'static str {
    match k {
        NoiseKind::White => "white",
        NoiseKind::Pink => "pink",
        NoiseKind::Brown => "brown",
    }
}

/// Runs the section: one entry per scenario with its target and rows.
pub fn run(o: &TimingOptions) -> Result<TimingReport, String> {
    let t0 = Instant::now();
    let entry = o.manifest.iter().find(|e| e.file == HELLO).ok_or_else(|| format!("{HELLO} is not in the manifest"))?;
    let (onset, end) = (entry.speech_start_s.ok_or("manifest: no speech_start_s")?, entry.speech_end_s.ok_or("manifest: no speech_end_s")?);
    let (hello, rate) = read_mono16(&o.manifest_base.join(HELLO)).map_err(|e| e.to_string())?;
    let dir = o.work.join("timing");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let ctx = Ctx { exe: crate::bench::exe()?, model: o.model, dir: &dir };

    let modes: &[Mode] = if o.quick { &[Mode::InProcess] } else { &[Mode::InProcess, Mode::Fresh, Mode::Warm] };
    let outcome_modes: &[Mode] = if o.quick { &[Mode::InProcess] } else { &[Mode::InProcess, Mode::Warm] };
    let end_silence = format!("--end-silence={}ms", END_SILENCE_MS as u64);
    let mut serial = Vec::new();
    let mut parallel = Vec::new();

    // 1. Barge-in: speech at once over a 6 s prompt; hang up once the prompt was stopped.
    for &mode in modes {
        let mut s = CallSpec::new(hello.clone(), rate, &["--prompt=menu", &end_silence]);
        s.sounds.push(("menu", Duration::from_secs(6)));
        s.onset_s = Some(onset);
        s.hangup_on = Some("WAIT FOR DIGIT");
        serial.push(Job { scenario: Scenario::BargeIn, mode, variant: "speech at once, 6 s prompt".into(), meta: Meta::default(), spec: s });
    }
    // 2. No input: silence frames, or none at all (DTX).
    for &mode in modes {
        for (variant, tail) in [("silence frames", Tail::Silence), ("DTX (no frames)", Tail::Nothing)] {
            if o.quick && tail == Tail::Silence {
                continue;
            }
            let mut s = CallSpec::new(Vec::new(), 8000, &["--no-input-timeout=2s"]);
            s.tail = tail;
            serial.push(Job { scenario: Scenario::NoInput, mode, variant: variant.into(), meta: Meta::default(), spec: s });
        }
    }
    // 3. End of speech: the WAV and silence frames after it, or the speech and 100 ms, then
    // no frames (DTX).
    for &mode in modes {
        for dtx in [false, true] {
            if o.quick && !dtx {
                continue;
            }
            let mut samples = hello.clone();
            let mut s = CallSpec::new(Vec::new(), rate, &[&end_silence]);
            if dtx {
                samples.truncate(((end + 0.1) * rate as f64) as usize);
                s.tail = Tail::Nothing;
            }
            s.samples = samples;
            s.mark_s = Some(end);
            let variant = if dtx { "DTX after speech" } else { "frames after speech" };
            serial.push(Job { scenario: Scenario::EndOfSpeech, mode, variant: variant.into(), meta: Meta::default(), spec: s });
        }
    }
    // 4. Noise alone: 5 s of it during a 4 s prompt.
    let kinds: &[NoiseKind] = if o.quick { &[NoiseKind::Pink] } else { &[NoiseKind::White, NoiseKind::Pink, NoiseKind::Brown] };
    let levels: &[f64] = if o.quick { &[-30.0] } else { &[-40.0, -30.0, -25.0, -20.0] };
    for &mode in outcome_modes {
        for (ki, &kind) in kinds.iter().enumerate() {
            for (li, &dbfs) in levels.iter().enumerate() {
                let n = synth::noise(kind, dbfs, 5 * 8000, 100 + (ki * 10 + li) as u64);
                let mut s = CallSpec::new(n, 8000, &["--prompt=menu", "--no-input-timeout=2s", &end_silence]);
                s.sounds.push(("menu", Duration::from_secs(4)));
                parallel.push(Job {
                    scenario: Scenario::NoiseAlone,
                    mode,
                    variant: format!("{} {dbfs} dBFS", noise_name(kind)),
                    meta: Meta { noise: Some(noise_name(kind)), dbfs: Some(dbfs), ..Meta::default() },
                    spec: s,
                });
            }
        }
    }
    // 5. Speech in noise: noise at a fixed level from 1 s before the speech to the WAV's end,
    // the speech scaled to that level + SNR; the prompt as in 1.
    let sin_kinds: &[NoiseKind] = if o.quick { &[NoiseKind::Pink] } else { &[NoiseKind::Pink, NoiseKind::White] };
    let snrs: &[f64] = if o.quick { &[10.0] } else { &[20.0, 10.0, 5.0] };
    let active = synth::active_rms_dbfs(&hello);
    for &mode in outcome_modes {
        for (ki, &kind) in sin_kinds.iter().enumerate() {
            for (si, &snr) in snrs.iter().enumerate() {
                let lead = (SIN_LEAD_S * rate as f64) as usize;
                let gain = 10f64.powf((SIN_NOISE_DBFS + snr - active) / 20.0);
                let mut speech = vec![0i16; lead];
                speech.extend(hello.iter().map(|&v| (v as f64 * gain).round().clamp(i16::MIN as f64, i16::MAX as f64) as i16));
                let n = synth::noise(kind, SIN_NOISE_DBFS, speech.len(), 200 + (ki * 10 + si) as u64);
                let mixed = synth::mix_at_snr(&speech, &n, snr);
                let mut s = CallSpec::new(mixed, rate, &["--prompt=menu", &end_silence]);
                s.sounds.push(("menu", Duration::from_secs(6)));
                s.onset_s = Some(SIN_LEAD_S + onset);
                s.mark_s = Some(SIN_LEAD_S + end);
                s.record = true;
                parallel.push(Job {
                    scenario: Scenario::SpeechInNoise,
                    mode,
                    variant: format!("{} SNR {snr} dB", noise_name(kind)),
                    meta: Meta { noise: Some(noise_name(kind)), noise_dbfs: Some(SIN_NOISE_DBFS), snr_db: Some(snr), ..Meta::default() },
                    spec: s,
                });
            }
        }
    }

    if !o.only.is_empty() {
        serial.retain(|j| o.only.contains(&j.scenario));
        parallel.retain(|j| o.only.contains(&j.scenario));
    }
    // The servers, all started at once before any row: the warm one (then one warm-up call
    // on it), and one per fresh row, each used by its row only (fresh: no call before) and
    // stopped after it. Idle, they cost memory, not time.
    let fresh_rows: Vec<usize> = serial.iter().enumerate().filter(|(_, j)| j.mode == Mode::Fresh && !o.quick).map(|(i, _)| i).collect();
    let want_warm = serial.iter().chain(&parallel).any(|j| j.mode == Mode::Warm);
    if want_warm || !fresh_rows.is_empty() {
        eprintln!("timing: starting {} servers...", fresh_rows.len() + want_warm as usize);
    }
    let dir_ref: &Path = &dir;
    let (warm, fresh) = std::thread::scope(|s| {
        let w = want_warm.then(|| s.spawn(move || start_server(o.model, &dir_ref.join("server-warm"), 2 * o.jobs.max(1) + 2)));
        let f: Vec<_> = fresh_rows.iter().map(|&i| (i, s.spawn(move || start_server(o.model, &dir_ref.join(format!("server-t{i}")), 1)))).collect();
        let join = |h: std::thread::ScopedJoinHandle<'_, Result<BenchServer, String>>| h.join().unwrap_or_else(|_| Err("panicked".into()));
        (w.map(join), f.into_iter().map(|(i, h)| (i, join(h))).collect::<Vec<_>>())
    });
    let warm = match warm {
        Some(srv) => {
            let srv = srv?;
            let w = call(&ctx, &CallSpec::new(hello.clone(), rate, &[&end_silence]), Some(&srv.addr), "warm-up")?;
            if w.res.vars.get("ASR_STATUS").map(String::as_str) != Some("OK") {
                return Err(format!("the warm-up call on the server ended {:?}", w.res.vars.get("ASR_STATUS")));
            }
            Some(srv)
        }
        None => None,
    };
    let servers = Servers { warm, fresh: Mutex::new(fresh) };
    let servers_s = t0.elapsed().as_secs_f64();

    // The longest calls first (in-process speech waits for its model and decoding), so the
    // pool does not end on one long straggler.
    let rank = |j: &Job| match (j.scenario, j.mode) {
        (Scenario::SpeechInNoise, Mode::InProcess) => 0,
        (Scenario::NoiseAlone, Mode::InProcess) => 1,
        (Scenario::SpeechInNoise, _) => 2,
        _ => 3,
    };
    parallel.sort_by_key(rank);
    let total = serial.len() + parallel.len();
    let done = AtomicUsize::new(0);
    let mut outs: Vec<(usize, Result<Outcome, String>)> = Vec::new();
    // Quick (smoke) runs put every call through the pool; the full run measures 1-3 alone.
    let (alone, pooled): (Vec<&Job>, Vec<&Job>) =
        if o.quick { (Vec::new(), serial.iter().chain(&parallel).collect()) } else { (serial.iter().collect(), parallel.iter().collect()) };
    for (i, job) in alone.iter().enumerate() {
        progress(done.fetch_add(1, Ordering::Relaxed), total, job);
        outs.push((i, run_job(&ctx, job, i, &servers)));
    }
    // Two lanes at once, `--timing-jobs` calls each: in-process calls (a model load each, the
    // CPU) and served ones (mostly waiting on the prompt and the timers).
    let alone_s = t0.elapsed().as_secs_f64() - servers_s;
    let base = alone.len();
    let lane = |in_process: bool| {
        pooled.iter().enumerate().filter(|(_, j)| (j.mode == Mode::InProcess) == in_process).map(|(i, j)| (base + i, *j)).collect::<Vec<_>>()
    };
    let lanes = [lane(true), lane(false)];
    let lane_outs: Vec<Vec<Result<Outcome, String>>> = std::thread::scope(|s| {
        let hs: Vec<_> = lanes
            .iter()
            .map(|l| {
                s.spawn(|| {
                    pool(l, o.jobs.max(1), |_, (i, job)| {
                        progress(done.fetch_add(1, Ordering::Relaxed), total, job);
                        run_job(&ctx, job, *i, &servers)
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_default()).collect()
    });
    for (l, rs) in lanes.iter().zip(lane_outs) {
        outs.extend(l.iter().map(|(i, _)| *i).zip(rs));
    }
    outs.sort_by_key(|(i, _)| *i);
    let pooled_s = t0.elapsed().as_secs_f64() - servers_s - alone_s;
    let jobs: Vec<&Job> = alone.into_iter().chain(pooled).collect();
    eprintln!("\rtiming: {total} calls in {:.0} s{:<60}", t0.elapsed().as_secs_f64(), "");

    let mut rows: Vec<TimingRow> = Vec::new();
    for (i, r) in outs {
        let job = jobs[i];
        let row = match r {
            Ok(out) => measure(job, &out),
            Err(e) => TimingRow { error: Some(e), pass: Some(false), ..row_base(job, None) },
        };
        rows.push(row);
    }
    // Speech in noise, served warm: its text next to the in-process one for the same mix.
    let inproc_text: Vec<(String, Option<String>)> =
        rows.iter().filter(|r| r.scenario == Scenario::SpeechInNoise && r.mode == Mode::InProcess).map(|r| (r.variant.clone(), r.text.clone())).collect();
    for r in rows.iter_mut() {
        if r.scenario == Scenario::SpeechInNoise && r.mode == Mode::Warm {
            let t = inproc_text.iter().find(|(v, _)| *v == r.variant).map(|(_, t)| t.clone());
            r.same_as_in_process = t.map(|t| t == r.text);
        }
    }

    let section = |sc: Scenario, target: String, note: &str| ScenarioSection {
        scenario: sc.title().into(),
        target,
        note: note.into(),
        rows: rows.iter().filter(|r| r.scenario == sc).cloned().collect(),
    };
    let scenarios = vec![
        section(
            Scenario::BargeIn,
            format!("<= {BARGE_IN_MAX_MS:.0} ms from the host writing the speech onset to the command that stopped STREAM FILE"),
            "ko-hello-8k speech at once (no lead silence), --prompt=menu (6 s), --barge-in-min=200ms (default); the host hangs up at that command",
        ),
        section(
            Scenario::NoInput,
            format!("NOINPUT, {NO_INPUT_MS:.0} ± {NO_INPUT_TOL_MS:.0} ms from WAIT FOR DIGIT to the first SET VARIABLE"),
            "--no-input-timeout=2s, no prompt",
        ),
        section(
            Scenario::EndOfSpeech,
            format!("served warm: OK, <= {:.0} ms (end-silence + {EOS_MARGIN_MS:.0}) from the last speech frame written to the first SET VARIABLE; in-process and served fresh: reported", END_SILENCE_MS + EOS_MARGIN_MS),
            "ko-hello-8k at once, --end-silence=700ms; the mark is the frame holding the manifest's speech_end_s; in-process waits for the model load and for decoding to catch up",
        ),
        section(
            Scenario::NoiseAlone,
            format!("up to {NOISE_MAX_CLEAN_DBFS:.0} dBFS: the prompt not stopped (no false barge-in) and the call not OK (no false OK); louder: reported"),
            "5 s of noise from the call's start during a 4 s prompt, --no-input-timeout=2s; in-process and served warm",
        ),
        section(
            Scenario::SpeechInNoise,
            format!("barge-in 0..{BARGE_IN_MAX_MS:.0} ms after the speech onset; in-process: the same text as direct libvosk on the samples it consumed"),
            "ko-hello-8k after 1 s of noise at -35 dBFS (to the WAV's end), the speech scaled to -35 dBFS + SNR over its active part; --prompt=menu (6 s); calls run several at once (eos_ms is under that load); served warm text is a later decode on a shared model (may differ, README Results), shown next to in-process",
        ),
    ];
    let judged = rows.iter().filter(|r| r.pass.is_some()).count();
    let failed: Vec<String> =
        rows.iter().filter(|r| r.pass == Some(false)).map(|r| format!("{} / {} / {}", scenario_name(r.scenario), r.variant, r.mode.name())).collect();
    Ok(TimingReport {
        speed: 1.0,
        quick: o.quick,
        jobs: o.jobs,
        wall_s: t0.elapsed().as_secs_f64(),
        phases_s: Phases { servers_and_warm_up: servers_s, one_at_a_time: alone_s, several_at_once: pooled_s },
        scenarios,
        summary: TimingSummary { rows: rows.len(), judged, passed: judged - failed.len(), failed },
    })
}

fn progress(i: usize, n: usize, job: &Job) {
    use std::io::Write;
    eprint!("\rtiming {i}/{n}: {:<60}", format!("{:?} {} ({})", job.scenario, job.variant, job.mode.name()));
    let _ = std::io::stderr().flush();
}

/// `f` over `items` with `p` at a time, results in order.
fn pool<T: Sync, R: Send>(items: &[T], p: usize, f: impl Fn(usize, &T) -> R + Sync) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..p.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = f(i, item);
                out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|e| e.into_inner());
    v.sort_by_key(|(i, _)| *i);
    v.into_iter().map(|(_, r)| r).collect()
}

/// The servers of the section: the warm one, and the fresh ones by row.
struct Servers {
    warm: Option<BenchServer>,
    fresh: Mutex<Vec<(usize, Result<BenchServer, String>)>>,
}

fn start_server(model: &Path, dir: &Path, max_calls: usize) -> Result<BenchServer, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    BenchServer::start(model, dir, max_calls)
}

fn run_job(ctx: &Ctx, job: &Job, i: usize, servers: &Servers) -> Result<Outcome, String> {
    let tag = format!("t{i}");
    match job.mode {
        Mode::InProcess => {
            let mut out = call(ctx, &job.spec, None, &tag)?;
            // A fresh decode of what the call consumed: the in-process text must equal it.
            if let Some(rec) = out.rec.as_ref().filter(|p| p.is_file()) {
                out.direct = crate::bench::direct(ctx.model, rec);
            }
            Ok(out)
        }
        Mode::Fresh => {
            let srv = {
                let mut f = servers.fresh.lock().unwrap_or_else(|e| e.into_inner());
                let k = f.iter().position(|(j, _)| *j == i).ok_or("no fresh server for this row")?;
                f.remove(k).1?
            };
            // Stopped (dropped) once its one call is over.
            call(ctx, &job.spec, Some(&srv.addr), &tag)
        }
        Mode::Warm => call(ctx, &job.spec, Some(&servers.warm.as_ref().ok_or("no warm server")?.addr), &tag),
    }
}

fn call(ctx: &Ctx, spec: &CallSpec, via: Option<&str>, tag: &str) -> Result<Outcome, String> {
    let json_log = ctx.dir.join(format!("{tag}.json"));
    let rec = ctx.dir.join(format!("{tag}.wav"));
    let mut args = vec![format!("--json-log={}", json_log.display())];
    match via {
        None => args.push(format!("--model={}", ctx.model.display())),
        // A fresh server's first blocks take about a second each: not what this measures.
        Some(a) => args.extend([format!("--server={a}"), "--server-timeout=20s".to_string()]),
    }
    if spec.record {
        args.push(format!("--record={}", rec.display()));
    }
    args.extend(spec.args.iter().cloned());
    let mut o = SimOptions::new(ctx.exe.clone(), spec.samples.clone(), spec.rate);
    o.bridge_args = args;
    o.speed = 1.0;
    o.tail = spec.tail;
    o.onset_s = spec.onset_s;
    o.mark_s = spec.mark_s;
    o.max_wall = Duration::from_secs(60);
    o.child_stderr = Some(ctx.dir.join(format!("{tag}.err")));
    o.hangup_on_command = spec.hangup_on.map(str::to_string);
    for (n, d) in &spec.sounds {
        o.sounds.insert(n.to_string(), *d);
    }
    let t = Instant::now();
    let res = sim::run(o).map_err(|e| e.to_string())?;
    let log = CallRecord::last_in(&json_log).ok();
    Ok(Outcome { res, log, rec: spec.record.then_some(rec), wall_s: t.elapsed().as_secs_f64(), direct: None })
}

/// Host time (ms) of the first command starting with `prefix`.
fn rx_at(res: &SimResult, prefix: &str) -> Option<f64> {
    res.dialogue.iter().find(|l| l.dir == Dir::Rx && l.text.starts_with(prefix)).map(|l| l.t_ms)
}

/// The prompt: the command after STREAM FILE (its text and host time), and whether the
/// prompt had played out (its `endpos=` reply) before that command.
struct Prompt {
    next: Option<(String, f64)>,
    played_out: bool,
}

impl Prompt {
    /// Stopped early by the bridge going on to listen (an error or a hangup that ends the call
    /// stops the prompt with SET VARIABLE instead).
    fn barged_in(&self) -> bool {
        !self.played_out && self.next.as_ref().is_some_and(|(c, _)| !c.starts_with("SET VARIABLE"))
    }
}

fn prompt(res: &SimResult) -> Option<Prompt> {
    let sf = res.dialogue.iter().position(|l| l.dir == Dir::Rx && l.text.starts_with("STREAM FILE"))?;
    let next = res.dialogue[sf + 1..].iter().find(|l| l.dir == Dir::Rx).map(|l| (l.text.clone(), l.t_ms));
    let until = next.as_ref().map(|(_, t)| *t).unwrap_or(f64::MAX);
    let played_out = res.dialogue[sf + 1..].iter().any(|l| l.dir == Dir::Tx && l.text.contains("endpos=") && l.t_ms <= until);
    Some(Prompt { next, played_out })
}

fn scenario_name(s: Scenario) -> &'static str {
    match s {
        Scenario::BargeIn => "barge-in",
        Scenario::NoInput => "no-input",
        Scenario::EndOfSpeech => "end-of-speech",
        Scenario::NoiseAlone => "noise alone",
        Scenario::SpeechInNoise => "speech in noise",
    }
}

fn row_base(job: &Job, out: Option<&Outcome>) -> TimingRow {
    let log = out.and_then(|o| o.log.as_ref());
    TimingRow {
        scenario: job.scenario,
        variant: job.variant.clone(),
        mode: job.mode,
        noise: job.meta.noise.map(str::to_string),
        dbfs: job.meta.dbfs,
        noise_dbfs: job.meta.noise_dbfs,
        snr_db: job.meta.snr_db,
        status: out.and_then(|o| o.res.vars.get("ASR_STATUS").cloned()),
        cause: out.and_then(|o| o.res.vars.get("ASR_CAUSE").cloned()),
        asr_error: out.and_then(|o| o.res.vars.get("ASR_ERROR").filter(|e| !e.is_empty()).cloned()),
        backend: log.map(|l| l.backend),
        call_wall_s: out.map(|o| o.wall_s),
        model_load_ms: log.filter(|_| job.mode == Mode::InProcess).and_then(|l| l.model_load_ms),
        error: None,
        pass: None,
        reaction_ms: None,
        interrupted_by: None,
        played_out: None,
        noinput_ms: None,
        latency_ms: None,
        result_latency_ms: None,
        end_reason: None,
        false_barge_in: None,
        barge_in_at_ms: None,
        false_ok: None,
        text: None,
        eos_latency_ms: None,
        speech_start_ms: None,
        speech_end_ms: None,
        decode_wait_ms: None,
        direct_text: None,
        same_as_direct: None,
        same_as_in_process: None,
    }
}

fn measure(job: &Job, out: &Outcome) -> TimingRow {
    let mut m = row_base(job, Some(out));
    let log = out.log.as_ref();
    let res = &out.res;
    let status = res.vars.get("ASR_STATUS").cloned().unwrap_or_default();
    let first_set = rx_at(res, "SET VARIABLE");
    // A served row that did not run on the server measures something else.
    let on_backend = job.mode == Mode::InProcess || log.is_some_and(|l| l.backend == Backend::Server);
    match job.scenario {
        Scenario::BargeIn => {
            let p = prompt(res);
            let (cmd, at) = p.as_ref().and_then(|p| p.next.clone()).unzip();
            let played_out = p.as_ref().is_none_or(|p| p.played_out);
            let reaction = at.zip(res.onset_written_ms).map(|(a, o)| a - o);
            m.reaction_ms = reaction;
            m.interrupted_by = cmd;
            m.played_out = Some(played_out);
            m.pass = Some(on_backend && !played_out && reaction.is_some_and(|r| (0.0..=BARGE_IN_MAX_MS).contains(&r)));
        }
        Scenario::NoInput => {
            let after = first_set.zip(rx_at(res, "WAIT FOR DIGIT")).map(|(s, l)| s - l);
            m.noinput_ms = after;
            m.pass = Some(on_backend && status == "NOINPUT" && after.is_some_and(|a| (a - NO_INPUT_MS).abs() <= NO_INPUT_TOL_MS));
        }
        Scenario::EndOfSpeech => {
            let wait = first_set.zip(res.mark_written_ms).map(|(s, e)| s - e);
            m.latency_ms = wait;
            m.result_latency_ms = log.and_then(|l| l.result_latency_ms);
            m.end_reason = log.and_then(|l| l.end_reason);
            m.pass = (job.mode == Mode::Warm).then(|| on_backend && status == "OK" && wait.is_some_and(|w| w <= END_SILENCE_MS + EOS_MARGIN_MS));
        }
        Scenario::NoiseAlone => {
            let p = prompt(res);
            let barged = p.as_ref().is_some_and(Prompt::barged_in);
            m.false_barge_in = Some(barged);
            m.barge_in_at_ms = if barged { p.and_then(|p| p.next).map(|(_, t)| t) } else { None };
            m.false_ok = Some(status == "OK");
            m.text = res.vars.get("ASR_TEXT").cloned();
            let judged = job.meta.dbfs.is_some_and(|d| d <= NOISE_MAX_CLEAN_DBFS);
            // Neither stopped nor OK: NOINPUT (or NOMATCH, noise let through but decoded to
            // nothing); an ERROR is a failure of its own.
            m.pass = judged.then(|| on_backend && !barged && (status == "NOINPUT" || status == "NOMATCH"));
        }
        Scenario::SpeechInNoise => {
            let p = prompt(res);
            let barged = p.as_ref().is_some_and(Prompt::barged_in);
            let reaction = if barged { p.and_then(|p| p.next).map(|(_, t)| t).zip(res.onset_written_ms).map(|(a, o)| a - o) } else { None };
            let text = res.vars.get("ASR_TEXT").cloned().unwrap_or_default();
            let same = out.direct.as_ref().map(|d| d.text == text);
            m.reaction_ms = reaction;
            m.eos_latency_ms = first_set.zip(res.mark_written_ms).map(|(s, e)| s - e);
            m.end_reason = log.and_then(|l| l.end_reason);
            m.speech_start_ms = log.and_then(|l| l.speech_start_ms);
            m.speech_end_ms = log.and_then(|l| l.speech_end_ms);
            m.decode_wait_ms = log.and_then(|l| l.decode_wait_ms);
            m.result_latency_ms = log.and_then(|l| l.result_latency_ms);
            m.text = Some(text);
            m.direct_text = out.direct.as_ref().map(|d| d.text.clone());
            m.same_as_direct = same;
            let reacted = reaction.is_some_and(|r| (0.0..=BARGE_IN_MAX_MS).contains(&r));
            let text_ok = job.mode != Mode::InProcess || same == Some(true);
            m.pass = Some(on_backend && reacted && text_ok && status == "OK");
        }
    }
    m
}

fn num(v: Option<f64>) -> String {
    v.map(|x| format!("{x:.0}")).unwrap_or_else(|| "-".into())
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "yes".into(),
        Some(false) => "no".into(),
        None => "-".into(),
    }
}

fn text(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".into())
}

fn pass_cell(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "-",
    }
}

/// A column of a scenario's table: its header and its cell.
type Column = (&'static str, fn(&TimingRow) -> String);

/// The columns of each scenario's table.
fn columns(s: Scenario) -> Vec<Column> {
    match s {
        Scenario::BargeIn => {
            vec![("reaction_ms", |r| num(r.reaction_ms)), ("interrupted by", |r| text(&r.interrupted_by)), ("played out", |r| yes_no(r.played_out))]
        }
        Scenario::NoInput => vec![("noinput_ms", |r| num(r.noinput_ms)), ("status", |r| text(&r.status))],
        Scenario::EndOfSpeech => vec![
            ("latency_ms", |r| num(r.latency_ms)),
            ("json result_latency", |r| num(r.result_latency_ms)),
            ("status", |r| text(&r.status)),
            ("model_load_ms", |r| num(r.model_load_ms)),
        ],
        Scenario::NoiseAlone => vec![
            ("false barge-in", |r| yes_no(r.false_barge_in)),
            ("barge-in at ms", |r| num(r.barge_in_at_ms)),
            ("status", |r| text(&r.status)),
            ("cause", |r| text(&r.cause)),
            ("false OK", |r| yes_no(r.false_ok)),
        ],
        Scenario::SpeechInNoise => vec![
            ("reaction_ms", |r| num(r.reaction_ms)),
            ("eos_ms (loaded)", |r| num(r.eos_latency_ms)),
            ("status", |r| text(&r.status)),
            ("same as direct", |r| yes_no(r.same_as_direct)),
            ("same as in-proc", |r| yes_no(r.same_as_in_process)),
        ],
    }
}

impl ScenarioSection {
    /// The scenario of this section, by its heading.
    fn kind(&self) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.title() == self.scenario)
    }
}

/// The section as terminal tables.
pub fn print(t: &TimingReport) {
    let ph = &t.phases_s;
    println!(
        "\ncaller-facing timing (real time, speed 1.0; section wall {:.0} s: servers and warm-up {:.0}, scenarios 1-3 one at a time {:.0}, 4-5 several at once {:.0})",
        t.wall_s, ph.servers_and_warm_up, ph.one_at_a_time, ph.several_at_once
    );
    for s in &t.scenarios {
        println!("\n== {}: target {}", s.scenario, s.target);
        println!("   ({})", s.note);
        let cols = s.kind().map(columns).unwrap_or_default();
        let mut head = format!("{:<26} {:<13}", "variant", "mode");
        for (h, _) in &cols {
            head.push_str(&format!(" {:>w$}", h, w = h.len().max(6)));
        }
        println!("{head} {:>5}", "pass");
        for r in &s.rows {
            let mut line = format!("{:<26} {:<13}", r.variant, r.mode.name());
            for (h, cell) in &cols {
                let c = if *h == "interrupted by" { cell(r).chars().take(14).collect() } else { cell(r) };
                line.push_str(&format!(" {:>w$}", c, w = h.len().max(6)));
            }
            println!("{line} {:>5}{}", pass_cell(r.pass), r.error.as_deref().map(|e| format!("  error: {e}")).unwrap_or_default());
        }
    }
    let sm = &t.summary;
    println!("\ntiming: {}/{} judged rows within target ({} rows reported)", sm.passed, sm.judged, sm.rows);
    for f in &sm.failed {
        println!("  missed: {f}");
    }
}

/// The section as HTML tables.
pub fn html(t: &TimingReport) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut h = String::from("<h2>Caller-facing timing (real time)</h2>");
    for s in &t.scenarios {
        let cols = s.kind().map(columns).unwrap_or_default();
        h.push_str(&format!(
            "<h3>{}</h3><p>Target: {}<br><small>{}</small></p><div class=\"wide\"><table><tr><th>variant</th><th>mode</th>",
            esc(&s.scenario),
            esc(&s.target),
            esc(&s.note)
        ));
        for (hd, _) in &cols {
            h.push_str(&format!("<th>{}</th>", esc(hd)));
        }
        h.push_str("<th>pass</th></tr>");
        for r in &s.rows {
            h.push_str(&format!("<tr><td>{}</td><td>{}</td>", esc(&r.variant), esc(r.mode.name())));
            for (_, cell) in &cols {
                h.push_str(&format!("<td>{}</td>", esc(&cell(r))));
            }
            let class = match r.pass {
                Some(true) => " class=\"met\"",
                Some(false) => " class=\"missed\"",
                None => "",
            };
            h.push_str(&format!("<td{class}>{}</td></tr>", pass_cell(r.pass)));
        }
        h.push_str("</table></div>");
    }
    h
}

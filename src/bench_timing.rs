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

use serde_json::{json, Value};

use crate::audio::wav::read_mono16;
use crate::bench::BenchServer;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    InProcess,
    Fresh,
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    BargeIn,
    NoInput,
    EndOfSpeech,
    NoiseAlone,
    SpeechInNoise,
}

struct Job {
    scenario: Scenario,
    mode: Mode,
    variant: String,
    /// Scenario-specific facts copied into the row (noise kind, level, SNR).
    meta: Value,
    spec: CallSpec,
}

struct Outcome {
    res: SimResult,
    log: Value,
    rec: Option<PathBuf>,
    wall_s: f64,
    /// Direct libvosk (a fresh model) on the samples an in-process call consumed.
    direct: Value,
}

struct Ctx<'a> {
    exe: PathBuf,
    model: &'a Path,
    dir: &'a Path,
}

/// The options of the timing section (from `asr_bridge bench`).
pub struct TimingOptions<'a> {
    pub manifest_base: &'a Path,
    pub manifest: &'a [Value],
    pub model: &'a Path,
    pub work: &'a Path,
    /// One in-process row per scenario (a smoke run).
    pub quick: bool,
    /// Calls at once in scenarios 4 and 5 (per lane).
    pub jobs: usize,
    /// Only scenarios whose name contains this.
    pub only: Option<&'a str>,
}

fn noise_name(k: NoiseKind) -> &'static str {
    match k {
        NoiseKind::White => "white",
        NoiseKind::Pink => "pink",
        NoiseKind::Brown => "brown",
    }
}

/// Runs the section; the JSON holds one entry per scenario with its target and rows.
pub fn run(o: &TimingOptions) -> Result<Value, String> {
    let t0 = Instant::now();
    let entry = o.manifest.iter().find(|e| e["file"] == HELLO).ok_or_else(|| format!("{HELLO} is not in the manifest"))?;
    let (onset, end) = (
        entry["speech_start_s"].as_f64().ok_or("manifest: no speech_start_s")?,
        entry["speech_end_s"].as_f64().ok_or("manifest: no speech_end_s")?,
    );
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
        serial.push(Job { scenario: Scenario::BargeIn, mode, variant: "speech at once, 6 s prompt".into(), meta: Value::Null, spec: s });
    }
    // 2. No input: silence frames, or none at all (DTX).
    for &mode in modes {
        for (variant, tail) in [("silence frames", Tail::Silence), ("DTX (no frames)", Tail::Nothing)] {
            if o.quick && tail == Tail::Silence {
                continue;
            }
            let mut s = CallSpec::new(Vec::new(), 8000, &["--no-input-timeout=2s"]);
            s.tail = tail;
            serial.push(Job { scenario: Scenario::NoInput, mode, variant: variant.into(), meta: Value::Null, spec: s });
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
            serial.push(Job { scenario: Scenario::EndOfSpeech, mode, variant: variant.into(), meta: Value::Null, spec: s });
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
                    meta: json!({"noise": noise_name(kind), "dbfs": dbfs}),
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
                    meta: json!({"noise": noise_name(kind), "noise_dbfs": SIN_NOISE_DBFS, "snr_db": snr}),
                    spec: s,
                });
            }
        }
    }

    if let Some(f) = o.only {
        serial.retain(|j| scenario_name(j.scenario).contains(f));
        parallel.retain(|j| scenario_name(j.scenario).contains(f));
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
    let (alone, pooled): (Vec<&Job>, Vec<&Job>) = if o.quick { (Vec::new(), serial.iter().chain(&parallel).collect()) } else { (serial.iter().collect(), parallel.iter().collect()) };
    for (i, job) in alone.iter().enumerate() {
        progress(done.fetch_add(1, Ordering::Relaxed), total, job);
        outs.push((i, run_job(&ctx, job, i, &servers)));
    }
    // Two lanes at once, `--timing-jobs` calls each: in-process calls (a model load each, the
    // CPU) and served ones (mostly waiting on the prompt and the timers).
    let alone_s = t0.elapsed().as_secs_f64() - servers_s;
    let base = alone.len();
    let lane = |in_process: bool| pooled.iter().enumerate().filter(|(_, j)| (j.mode == Mode::InProcess) == in_process).map(|(i, j)| (base + i, *j)).collect::<Vec<_>>();
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

    let mut rows: Vec<(Scenario, Value)> = Vec::new();
    for (i, r) in outs {
        let job = jobs[i];
        let row = match r {
            Ok(out) => measure(job, &out),
            Err(e) => {
                let mut m = row_base(job, None);
                m.insert("error".into(), json!(e));
                m.insert("pass".into(), json!(false));
                Value::Object(m)
            }
        };
        rows.push((job.scenario, row));
    }
    // Speech in noise, served warm: its text next to the in-process one for the same mix.
    let inproc_text: Vec<(String, Value)> =
        rows.iter().filter(|(s, r)| *s == Scenario::SpeechInNoise && r["mode"] == "in-process").map(|(_, r)| (r["variant"].as_str().unwrap_or("").to_string(), r["text"].clone())).collect();
    for (s, r) in rows.iter_mut() {
        if *s == Scenario::SpeechInNoise && r["mode"] == "served warm" {
            let t = inproc_text.iter().find(|(v, _)| Some(v.as_str()) == r["variant"].as_str()).map(|(_, t)| t.clone());
            r["same_as_in_process"] = json!(t.map(|t| t == r["text"]));
        }
    }

    let section = |sc: Scenario, name: &str, target: String, note: &str| {
        json!({
            "scenario": name,
            "target": target,
            "note": note,
            "rows": rows.iter().filter(|(s, _)| *s == sc).map(|(_, r)| r.clone()).collect::<Vec<_>>(),
        })
    };
    let scenarios = vec![
        section(
            Scenario::BargeIn,
            "barge-in reaction",
            format!("<= {BARGE_IN_MAX_MS:.0} ms from the host writing the speech onset to the command that stopped STREAM FILE"),
            "ko-hello-8k speech at once (no lead silence), --prompt=menu (6 s), --barge-in-min=200ms (default); the host hangs up at that command",
        ),
        section(
            Scenario::NoInput,
            "no-input timer",
            format!("NOINPUT, {NO_INPUT_MS:.0} ± {NO_INPUT_TOL_MS:.0} ms from WAIT FOR DIGIT to the first SET VARIABLE"),
            "--no-input-timeout=2s, no prompt",
        ),
        section(
            Scenario::EndOfSpeech,
            "end-of-speech latency",
            format!("served warm: OK, <= {:.0} ms (end-silence + {EOS_MARGIN_MS:.0}) from the last speech frame written to the first SET VARIABLE; in-process and served fresh: reported", END_SILENCE_MS + EOS_MARGIN_MS),
            "ko-hello-8k at once, --end-silence=700ms; the mark is the frame holding the manifest's speech_end_s; in-process waits for the model load and for decoding to catch up",
        ),
        section(
            Scenario::NoiseAlone,
            "noise alone",
            format!("up to {NOISE_MAX_CLEAN_DBFS:.0} dBFS: the prompt not stopped (no false barge-in) and the call not OK (no false OK); louder: reported"),
            "5 s of noise from the call's start during a 4 s prompt, --no-input-timeout=2s; in-process and served warm",
        ),
        section(
            Scenario::SpeechInNoise,
            "speech in noise",
            format!("barge-in 0..{BARGE_IN_MAX_MS:.0} ms after the speech onset; in-process: the same text as direct libvosk on the samples it consumed"),
            "ko-hello-8k after 1 s of noise at -35 dBFS (to the WAV's end), the speech scaled to -35 dBFS + SNR over its active part; --prompt=menu (6 s); calls run several at once (eos_ms is under that load); served warm text is a later decode on a shared model (may differ, README Results), shown next to in-process",
        ),
    ];
    let all: Vec<&Value> = rows.iter().map(|(_, r)| r).collect();
    let judged: Vec<&&Value> = all.iter().filter(|r| r["pass"].is_boolean()).collect();
    let failed: Vec<String> = judged
        .iter()
        .filter(|r| r["pass"] == false)
        .map(|r| format!("{} / {} / {}", r["scenario"].as_str().unwrap_or(""), r["variant"].as_str().unwrap_or(""), r["mode"].as_str().unwrap_or("")))
        .collect();
    Ok(json!({
        "speed": 1.0,
        "quick": o.quick,
        "jobs": o.jobs,
        "wall_s": t0.elapsed().as_secs_f64(),
        "phases_s": {"servers_and_warm_up": servers_s, "one_at_a_time": alone_s, "several_at_once": pooled_s},
        "scenarios": scenarios,
        "summary": {"rows": all.len(), "judged": judged.len(), "passed": judged.len() - failed.len(), "failed": failed},
    }))
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
    let log = std::fs::read_to_string(&json_log).ok().and_then(|t| t.lines().last().and_then(|l| serde_json::from_str(l).ok())).unwrap_or(Value::Null);
    Ok(Outcome { res, log, rec: spec.record.then_some(rec), wall_s: t.elapsed().as_secs_f64(), direct: Value::Null })
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

fn row_base(job: &Job, out: Option<&Outcome>) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("scenario".into(), json!(scenario_name(job.scenario)));
    m.insert("variant".into(), json!(job.variant));
    m.insert("mode".into(), json!(job.mode.name()));
    if let Value::Object(meta) = &job.meta {
        m.extend(meta.clone());
    }
    if let Some(o) = out {
        m.insert("status".into(), json!(o.res.vars.get("ASR_STATUS")));
        m.insert("cause".into(), json!(o.res.vars.get("ASR_CAUSE")));
        if let Some(e) = o.res.vars.get("ASR_ERROR").filter(|e| !e.is_empty()) {
            m.insert("asr_error".into(), json!(e));
        }
        m.insert("backend".into(), o.log["backend"].clone());
        m.insert("call_wall_s".into(), json!(o.wall_s));
        m.insert("model_load_ms".into(), if job.mode == Mode::InProcess { o.log["model_load_ms"].clone() } else { Value::Null });
    }
    m
}

fn measure(job: &Job, out: &Outcome) -> Value {
    let direct = &out.direct;
    let mut m = row_base(job, Some(out));
    let res = &out.res;
    let status = res.vars.get("ASR_STATUS").cloned().unwrap_or_default();
    let first_set = rx_at(res, "SET VARIABLE");
    // A served row that did not run on the server measures something else.
    let on_backend = job.mode == Mode::InProcess || out.log["backend"] == "server";
    match job.scenario {
        Scenario::BargeIn => {
            let p = prompt(res);
            let (cmd, at) = p.as_ref().and_then(|p| p.next.clone()).unzip();
            let played_out = p.as_ref().is_none_or(|p| p.played_out);
            let reaction = at.zip(res.onset_written_ms).map(|(a, o)| a - o);
            m.insert("reaction_ms".into(), json!(reaction));
            m.insert("interrupted_by".into(), json!(cmd));
            m.insert("played_out".into(), json!(played_out));
            m.insert("pass".into(), json!(on_backend && !played_out && reaction.is_some_and(|r| (0.0..=BARGE_IN_MAX_MS).contains(&r))));
        }
        Scenario::NoInput => {
            let after = first_set.zip(rx_at(res, "WAIT FOR DIGIT")).map(|(s, l)| s - l);
            m.insert("noinput_ms".into(), json!(after));
            m.insert("pass".into(), json!(on_backend && status == "NOINPUT" && after.is_some_and(|a| (a - NO_INPUT_MS).abs() <= NO_INPUT_TOL_MS)));
        }
        Scenario::EndOfSpeech => {
            let wait = first_set.zip(res.mark_written_ms).map(|(s, e)| s - e);
            m.insert("latency_ms".into(), json!(wait));
            m.insert("result_latency_ms".into(), out.log["result_latency_ms"].clone());
            m.insert("end_reason".into(), out.log["end_reason"].clone());
            let pass = match job.mode {
                Mode::Warm => json!(on_backend && status == "OK" && wait.is_some_and(|w| w <= END_SILENCE_MS + EOS_MARGIN_MS)),
                _ => Value::Null,
            };
            m.insert("pass".into(), pass);
        }
        Scenario::NoiseAlone => {
            let p = prompt(res);
            let barged = p.as_ref().is_some_and(Prompt::barged_in);
            m.insert("false_barge_in".into(), json!(barged));
            m.insert("barge_in_at_ms".into(), json!(if barged { p.and_then(|p| p.next).map(|(_, t)| t) } else { None }));
            m.insert("false_ok".into(), json!(status == "OK"));
            m.insert("text".into(), json!(res.vars.get("ASR_TEXT")));
            let judged = job.meta["dbfs"].as_f64().is_some_and(|d| d <= NOISE_MAX_CLEAN_DBFS);
            // Neither stopped nor OK: NOINPUT (or NOMATCH, noise let through but decoded to
            // nothing); an ERROR is a failure of its own.
            m.insert("pass".into(), if judged { json!(on_backend && !barged && (status == "NOINPUT" || status == "NOMATCH")) } else { Value::Null });
        }
        Scenario::SpeechInNoise => {
            let p = prompt(res);
            let barged = p.as_ref().is_some_and(Prompt::barged_in);
            let reaction = if barged { p.and_then(|p| p.next).map(|(_, t)| t).zip(res.onset_written_ms).map(|(a, o)| a - o) } else { None };
            let text = res.vars.get("ASR_TEXT").cloned().unwrap_or_default();
            let same = direct["text"].as_str().map(|d| d == text);
            m.insert("reaction_ms".into(), json!(reaction));
            m.insert("eos_latency_ms".into(), json!(first_set.zip(res.mark_written_ms).map(|(s, e)| s - e)));
            for k in ["end_reason", "speech_start_ms", "speech_end_ms", "decode_wait_ms", "result_latency_ms"] {
                m.insert(k.into(), out.log[k].clone());
            }
            m.insert("text".into(), json!(text));
            m.insert("direct_text".into(), direct["text"].clone());
            m.insert("same_as_direct".into(), json!(same));
            let reacted = reaction.is_some_and(|r| (0.0..=BARGE_IN_MAX_MS).contains(&r));
            let text_ok = job.mode != Mode::InProcess || same == Some(true);
            m.insert("pass".into(), json!(on_backend && reacted && text_ok && status == "OK"));
        }
    }
    Value::Object(m)
}

fn cell(v: &Value, digits: usize) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.into(),
        Value::Number(n) => n.as_f64().map(|x| format!("{x:.digits$}")).unwrap_or_default(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn pass_cell(v: &Value) -> &'static str {
    match v {
        Value::Bool(true) => "PASS",
        Value::Bool(false) => "FAIL",
        _ => "-",
    }
}

/// The columns of each scenario's table: (header, key, digits).
fn columns(scenario: &str) -> &'static [(&'static str, &'static str, usize)] {
    match scenario {
        "barge-in reaction" => &[("reaction_ms", "reaction_ms", 0), ("interrupted by", "interrupted_by", 0), ("played out", "played_out", 0)],
        "no-input timer" => &[("noinput_ms", "noinput_ms", 0), ("status", "status", 0)],
        "end-of-speech latency" => &[("latency_ms", "latency_ms", 0), ("json result_latency", "result_latency_ms", 0), ("status", "status", 0), ("model_load_ms", "model_load_ms", 0)],
        "noise alone" => &[("false barge-in", "false_barge_in", 0), ("barge-in at ms", "barge_in_at_ms", 0), ("status", "status", 0), ("cause", "cause", 0), ("false OK", "false_ok", 0)],
        _ => &[("reaction_ms", "reaction_ms", 0), ("eos_ms (loaded)", "eos_latency_ms", 0), ("status", "status", 0), ("same as direct", "same_as_direct", 0), ("same as in-proc", "same_as_in_process", 0)],
    }
}

/// The section as terminal tables.
pub fn print(t: &Value) {
    let ph = &t["phases_s"];
    println!(
        "\ncaller-facing timing (real time, speed 1.0; section wall {:.0} s: servers and warm-up {:.0}, scenarios 1-3 one at a time {:.0}, 4-5 several at once {:.0})",
        t["wall_s"].as_f64().unwrap_or(0.0),
        ph["servers_and_warm_up"].as_f64().unwrap_or(0.0),
        ph["one_at_a_time"].as_f64().unwrap_or(0.0),
        ph["several_at_once"].as_f64().unwrap_or(0.0)
    );
    for s in t["scenarios"].as_array().into_iter().flatten() {
        let name = s["scenario"].as_str().unwrap_or("");
        println!("\n== {name}: target {}", s["target"].as_str().unwrap_or(""));
        println!("   ({})", s["note"].as_str().unwrap_or(""));
        let cols = columns(name);
        let mut head = format!("{:<26} {:<13}", "variant", "mode");
        for (h, _, _) in cols {
            head.push_str(&format!(" {:>w$}", h, w = h.len().max(6)));
        }
        println!("{head} {:>5}", "pass");
        for r in s["rows"].as_array().into_iter().flatten() {
            let mut line = format!("{:<26} {:<13}", r["variant"].as_str().unwrap_or(""), r["mode"].as_str().unwrap_or(""));
            for (h, k, d) in cols {
                let c = if *k == "interrupted_by" { cell(&r[*k], *d).chars().take(14).collect() } else { cell(&r[*k], *d) };
                line.push_str(&format!(" {:>w$}", c, w = h.len().max(6)));
            }
            println!("{line} {:>5}{}", pass_cell(&r["pass"]), r["error"].as_str().map(|e| format!("  error: {e}")).unwrap_or_default());
        }
    }
    let sm = &t["summary"];
    println!("\ntiming: {}/{} judged rows within target ({} rows reported)", sm["passed"], sm["judged"], sm["rows"]);
    for f in sm["failed"].as_array().into_iter().flatten() {
        println!("  missed: {}", f.as_str().unwrap_or(""));
    }
}

/// The section as HTML tables.
pub fn html(t: &Value) -> String {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let mut h = String::from("<h2>Caller-facing timing (real time)</h2>");
    for s in t["scenarios"].as_array().into_iter().flatten() {
        let name = s["scenario"].as_str().unwrap_or("");
        h.push_str(&format!("<h3>{}</h3><p>Target: {}<br><small>{}</small></p><table><tr><th>variant</th><th>mode</th>", esc(name), esc(s["target"].as_str().unwrap_or("")), esc(s["note"].as_str().unwrap_or(""))));
        for (hd, _, _) in columns(name) {
            h.push_str(&format!("<th>{}</th>", esc(hd)));
        }
        h.push_str("<th>pass</th></tr>");
        for r in s["rows"].as_array().into_iter().flatten() {
            h.push_str(&format!("<tr><td>{}</td><td>{}</td>", esc(r["variant"].as_str().unwrap_or("")), esc(r["mode"].as_str().unwrap_or(""))));
            for (_, k, d) in columns(name) {
                h.push_str(&format!("<td>{}</td>", esc(&cell(&r[*k], *d))));
            }
            h.push_str(&format!("<td>{}</td></tr>", pass_cell(&r["pass"])));
        }
        h.push_str("</table>");
    }
    h
}

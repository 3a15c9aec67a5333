//! `asr_bridge transcribe`: the direct-libvosk baseline. Loads a fresh model and feeds a WAV
//! in the same blocks the bridge uses ([`crate::asr::engine`]), with no ring, threads or AGI,
//! and prints one JSON object (stdout is the terminal here).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::json;

use crate::asr::engine::{load_model, transcribe_samples};
use crate::asr::model::inspect;
use crate::audio::wav::read_mono16;
use crate::procfs::rusage;

/// Recognizes a WAV straight through libvosk.
#[derive(Debug, clap::Args)]
pub struct TranscribeArgs {
    /// Mono 16-bit WAV.
    #[arg(long)]
    pub wav: PathBuf,
    /// Vosk model directory.
    #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = crate::config::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Use only the first N samples.
    #[arg(long)]
    pub samples: Option<usize>,
    /// Decode the file this many more times with fresh recognizers on the same loaded model
    /// (what a resident server does), reporting each transcript under `repeats`.
    #[arg(long, default_value_t = 0)]
    pub repeat: u32,
}

/// Runs `asr_bridge transcribe`: prints one JSON object.
pub fn run(args: TranscribeArgs) -> crate::ModeResult {
    let (mut samples, rate) = read_mono16(&args.wav)?;
    if let Some(n) = args.samples {
        samples.truncate(n);
    }
    let info = inspect(&args.model)?;
    let (model, load) = load_model(&info)?;
    let (cpu0, _) = rusage();
    let t = Instant::now();
    let tr = transcribe_samples(&model, &info, rate, &samples, &Default::default())?;
    let (cpu1, rss) = rusage();
    let mut repeats = Vec::new();
    for _ in 0..args.repeat {
        let r = transcribe_samples(&model, &info, rate, &samples, &Default::default())?;
        repeats.push(json!({"text": r.text, "confidence": r.confidence(), "same": r == tr}));
    }
    let v = json!({
            "repeats": repeats,
            "text": tr.text,
            "confidence": tr.confidence(),
            "words": tr.words,
            "samples": samples.len(),
            "rate": rate,
            "audio_s": samples.len() as f64 / rate as f64,
            "load_ms": load.as_secs_f64() * 1000.0,
            "decode_wall_s": t.elapsed().as_secs_f64(),
            "decode_cpu_s": cpu1 - cpu0,
            "peak_rss_kb": rss,
    });
    println!("{v}");
    Ok(ExitCode::SUCCESS)
}

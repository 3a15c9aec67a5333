//! `asr_bridge transcribe`: the direct-libvosk baseline. Loads a fresh model and feeds a WAV
//! in the same blocks the bridge uses ([`crate::asr::engine`]), with no ring, threads or AGI,
//! and prints one JSON object (stdout is the terminal here).

#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use serde_json::json;

use crate::asr::engine::{load_model, transcribe_samples};
use crate::asr::model::inspect;
use crate::audio::wav::read_mono16;
use crate::log::rusage;

/// Recognizes a WAV straight through libvosk.
#[derive(Debug, Parser)]
#[command(name = "asr_bridge transcribe")]
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

/// Entry point of `asr_bridge transcribe`.
pub fn main(args: Vec<String>) -> ExitCode {
    let args = match TranscribeArgs::try_parse_from(std::iter::once("transcribe".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let run = || -> Result<serde_json::Value, String> {
        let (mut samples, rate) = read_mono16(&args.wav).map_err(|e| e.to_string())?;
        if let Some(n) = args.samples {
            samples.truncate(n);
        }
        let info = inspect(&args.model).map_err(|e| e.to_string())?;
        let (model, load) = load_model(&info).map_err(|e| e.to_string())?;
        let (cpu0, _) = rusage();
        let t = Instant::now();
        let tr = transcribe_samples(&model, &info, rate, &samples, &Default::default()).map_err(|e| e.to_string())?;
        let (cpu1, rss) = rusage();
        let mut repeats = Vec::new();
        for _ in 0..args.repeat {
            let r = transcribe_samples(&model, &info, rate, &samples, &Default::default()).map_err(|e| e.to_string())?;
            repeats.push(json!({"text": r.text, "confidence": r.confidence(), "same": r == tr}));
        }
        Ok(json!({
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
        }))
    };
    match run() {
        Ok(v) => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("transcribe: {e}");
            ExitCode::FAILURE
        }
    }
}

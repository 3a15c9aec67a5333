//! `asr_bridge simulate`: one call through the simulated host, printing the AGI dialogue and
//! the variables set (stdout here is the terminal, not an AGI channel).

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use super::host::{run, SimOptions, Tail};
use crate::audio::wav::read_mono16;
use crate::value::parse_duration;

/// Runs the bridge as Asterisk would, over a WAV file.
#[derive(Debug, Parser)]
#[command(name = "asr_bridge simulate", about = "One EAGI call through the simulated Asterisk host")]
pub struct SimArgs {
    /// The caller's audio: mono 16-bit WAV (8 kHz for slin, 16 kHz for slin16).
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// Seconds of digital silence as the caller's audio, instead of a WAV.
    #[arg(long)]
    pub silence: Option<f64>,
    /// Playback speed: 1 is real time.
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Hang up (SIGHUP) at this call time, e.g. 2.5s.
    #[arg(long)]
    pub hangup_at: Option<String>,
    /// Press a key at a call time: TIME:KEY, e.g. 3s:5 (repeatable).
    #[arg(long)]
    pub dtmf: Vec<String>,
    /// EAGI_AUDIO_FORMAT channel variable (slin16 for 16 kHz audio).
    #[arg(long)]
    pub format: Option<String>,
    /// Start as plain AGI: no fd 3.
    #[arg(long)]
    pub plain_agi: bool,
    /// After the WAV: `silence` frames or `none` (no frames at all, like DTX).
    #[arg(long, default_value = "silence")]
    pub tail: String,
    /// Digital silence before the WAV starts, e.g. 1s.
    #[arg(long)]
    pub lead_silence: Option<String>,
    /// A sound STREAM FILE can play: NAME=DURATION (repeatable).
    #[arg(long)]
    pub sound: Vec<String>,
    /// Close fd 3's write end at this call time.
    #[arg(long)]
    pub close_audio_at: Option<String>,
    /// The bridge executable (default: this one).
    #[arg(long)]
    pub bridge: Option<PathBuf>,
    /// Write everything written to fd 3 to this raw file.
    #[arg(long)]
    pub audio_out: Option<PathBuf>,
    /// Note when the frame holding this WAV second was written (e.g. the end of speech).
    #[arg(long)]
    pub mark_s: Option<f64>,
    /// Write the whole result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The child's stderr goes here.
    #[arg(long)]
    pub child_stderr: Option<PathBuf>,
    /// Kill the child after this long.
    #[arg(long, default_value = "120s")]
    pub max_wall: String,
    /// Do not print the dialogue.
    #[arg(long)]
    pub quiet: bool,
    /// The bridge's dialplan arguments (after `--`).
    #[arg(last = true)]
    pub bridge_args: Vec<String>,
}

fn dur(opt: &str, v: &str) -> Result<Duration, String> {
    parse_duration(v).ok_or_else(|| format!("--{opt}: {v:?} is not a duration"))
}

impl SimArgs {
    /// Turns the flags into host options.
    pub fn options(&self) -> Result<SimOptions, String> {
        let (samples, rate) = match (&self.wav, self.silence) {
            (Some(w), _) => read_mono16(w).map_err(|e| e.to_string())?,
            (None, Some(s)) => {
                let rate = if self.format.as_deref().is_some_and(|f| f.eq_ignore_ascii_case("slin16")) { 16000 } else { 8000 };
                (vec![0; (s * rate as f64) as usize], rate)
            }
            (None, None) => return Err("give --wav FILE or --silence SECONDS".into()),
        };
        let bridge = match &self.bridge {
            Some(b) => b.clone(),
            None => std::env::current_exe().map_err(|e| e.to_string())?,
        };
        let mut o = SimOptions::new(bridge, samples, rate);
        // The call as Asterisk would run it: the environment's (or the default) server choice.
        o.env.retain(|(k, _)| k != "ASR_BRIDGE_SERVER");
        o.bridge_args = self.bridge_args.clone();
        o.speed = if self.speed > 0.0 { self.speed } else { return Err("--speed must be positive".into()) };
        o.hangup_at = self.hangup_at.as_deref().map(|v| dur("hangup-at", v)).transpose()?;
        o.close_audio_at = self.close_audio_at.as_deref().map(|v| dur("close-audio-at", v)).transpose()?;
        o.lead_silence = self.lead_silence.as_deref().map(|v| dur("lead-silence", v)).transpose()?.unwrap_or_default();
        for d in &self.dtmf {
            let (t, k) = d.rsplit_once(':').ok_or_else(|| format!("--dtmf {d:?}: use TIME:KEY"))?;
            let key = k.chars().next().filter(|c| "0123456789*#ABCD".contains(*c)).ok_or_else(|| format!("--dtmf {d:?}: bad key"))?;
            o.dtmf.push((dur("dtmf", t)?, key));
        }
        for s in &self.sound {
            let (n, d) = s.split_once('=').ok_or_else(|| format!("--sound {s:?}: use NAME=DURATION"))?;
            o.sounds.insert(n.to_string(), dur("sound", d)?);
        }
        o.tail = match self.tail.as_str() {
            "silence" => Tail::Silence,
            "none" => Tail::Nothing,
            t => return Err(format!("--tail {t:?}: use silence or none")),
        };
        o.plain_agi = self.plain_agi;
        if let Some(f) = &self.format {
            o.channel_vars = HashMap::from([("EAGI_AUDIO_FORMAT".to_string(), f.clone())]);
        }
        o.audio_out = self.audio_out.clone();
        o.mark_s = self.mark_s;
        o.child_stderr = self.child_stderr.clone();
        o.max_wall = dur("max-wall", &self.max_wall)?;
        o.echo = !self.quiet;
        Ok(o)
    }
}

/// Entry point of `asr_bridge simulate`.
pub fn main(args: Vec<String>) -> ExitCode {
    let args = match SimArgs::try_parse_from(std::iter::once("simulate".to_string()).chain(args)) {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let opts = match args.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.quiet {
        println!("simulated Asterisk host: {} -> fd 3 at {} Hz, speed {}x", args.wav.as_ref().map(|p| p.display().to_string()).unwrap_or("silence".into()), opts.rate, opts.speed);
    }
    let res = match run(opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("simulate: {e}");
            return ExitCode::from(2);
        }
    };
    if !args.quiet {
        println!("\nvariables set by the bridge:");
        for (k, v) in &res.vars {
            println!("  {k}={v}");
        }
        println!(
            "\nAGISTATUS={} exit={:?} frames written={} dropped={} hangup={:?}",
            res.agistatus, res.exit_code, res.frames_written, res.frames_dropped, res.hangup_ms.map(|h| format!("{h:.0} ms"))
        );
    }
    if let Some(p) = &args.json {
        if let Err(e) = std::fs::write(p, serde_json::to_vec_pretty(&res).unwrap_or_default()) {
            eprintln!("simulate: writing {}: {e}", p.display());
            return ExitCode::from(2);
        }
    }
    if res.exit_code == Some(0) && !res.killed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

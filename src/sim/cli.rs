//! `asr_bridge simulate`: one call through the simulated host, printing the AGI dialogue and
//! the variables set (stdout here is the terminal, not an AGI channel).

#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::host::{self, SimOptions, Tail};
use crate::audio::wav::read_mono16;
use crate::value::duration;

/// Runs the bridge as Asterisk would, over a WAV file.
#[derive(Debug, clap::Args)]
pub struct SimArgs {
    /// The caller's audio: mono 16-bit WAV (8 kHz for slin, 16 kHz for slin16).
    #[arg(long)]
    pub wav: Option<PathBuf>,
    /// Seconds of digital silence as the caller's audio, instead of a WAV.
    #[arg(long)]
    pub silence: Option<f64>,
    /// Playback speed: 1 is real time.
    #[arg(long, default_value_t = 1.0, value_parser = speed)]
    pub speed: f64,
    /// Hang up (SIGHUP) at this call time, e.g. 2.5s.
    #[arg(long, value_parser = duration)]
    pub hangup_at: Option<Duration>,
    /// Press a key at a call time: TIME:KEY, e.g. 3s:5 (repeatable).
    #[arg(long, value_parser = key_at)]
    pub dtmf: Vec<(Duration, char)>,
    /// EAGI_AUDIO_FORMAT channel variable (slin16 for 16 kHz audio).
    #[arg(long)]
    pub format: Option<String>,
    /// Start as plain AGI: no fd 3.
    #[arg(long)]
    pub plain_agi: bool,
    /// After the WAV: `silence` frames or `none` (no frames at all, like DTX).
    #[arg(long, value_enum, default_value_t = TailArg::Silence)]
    pub tail: TailArg,
    /// Digital silence before the WAV starts, e.g. 1s.
    #[arg(long, value_parser = duration)]
    pub lead_silence: Option<Duration>,
    /// A sound STREAM FILE can play: NAME=DURATION (repeatable).
    #[arg(long, value_parser = sound)]
    pub sound: Vec<(String, Duration)>,
    /// Close fd 3's write end at this call time.
    #[arg(long, value_parser = duration)]
    pub close_audio_at: Option<Duration>,
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
    #[arg(long, default_value = "120s", value_parser = crate::value::positive_duration)]
    pub max_wall: Duration,
    /// Do not print the dialogue.
    #[arg(long)]
    pub quiet: bool,
    /// The bridge's dialplan arguments (after `--`).
    #[arg(last = true)]
    pub bridge_args: Vec<String>,
}

/// What the host sends after the WAV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TailArg {
    /// Silence frames until the call ends.
    Silence,
    /// No frames at all (like DTX).
    None,
}

fn speed(v: &str) -> Result<f64, String> {
    v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s > 0.0).ok_or_else(|| "must be a positive number".to_string())
}

/// `TIME:KEY`, e.g. `3s:5`.
fn key_at(v: &str) -> Result<(Duration, char), String> {
    let (t, k) = v.rsplit_once(':').ok_or("use TIME:KEY")?;
    let key = k.chars().next().filter(|c| k.len() == 1 && crate::agi::DTMF_KEYS.contains(*c)).ok_or("the key must be one of 0-9, *, #, A-D")?;
    Ok((duration(t)?, key))
}

/// `NAME=DURATION`.
fn sound(v: &str) -> Result<(String, Duration), String> {
    let (n, d) = v.split_once('=').ok_or("use NAME=DURATION")?;
    Ok((n.to_string(), duration(d)?))
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
        o.inherit_env = true;
        o.bridge_args = self.bridge_args.clone();
        o.speed = self.speed;
        o.hangup_at = self.hangup_at;
        o.close_audio_at = self.close_audio_at;
        o.lead_silence = self.lead_silence.unwrap_or_default();
        o.dtmf.extend(self.dtmf.iter().copied());
        o.sounds.extend(self.sound.iter().cloned());
        o.tail = match self.tail {
            TailArg::Silence => Tail::Silence,
            TailArg::None => Tail::Nothing,
        };
        o.plain_agi = self.plain_agi;
        if let Some(f) = &self.format {
            o.channel_vars = HashMap::from([("EAGI_AUDIO_FORMAT".to_string(), f.clone())]);
        }
        o.audio_out = self.audio_out.clone();
        o.mark_s = self.mark_s;
        o.child_stderr = self.child_stderr.clone();
        o.max_wall = self.max_wall;
        o.echo = !self.quiet;
        Ok(o)
    }
}

/// Runs `asr_bridge simulate`: status 0 when the bridge exited 0 on its own.
pub fn run(args: SimArgs) -> crate::ModeResult {
    let opts = args.options()?;
    if !args.quiet {
        println!(
            "simulated Asterisk host: {} -> fd 3 at {} Hz, speed {}x",
            args.wav.as_ref().map(|p| p.display().to_string()).unwrap_or("silence".into()),
            opts.rate,
            opts.speed
        );
    }
    let res = host::run(opts)?;
    if !args.quiet {
        println!("\nvariables set by the bridge:");
        for (k, v) in &res.vars {
            println!("  {k}={v}");
        }
        println!(
            "\nAGISTATUS={} exit={:?} frames written={} dropped={} hangup={:?}",
            res.agistatus,
            res.exit_code,
            res.frames_written,
            res.frames_dropped,
            res.hangup_ms.map(|h| format!("{h:.0} ms"))
        );
    }
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_vec_pretty(&res)?).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    Ok(if res.exit_code == Some(0) && !res.killed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

//! The command line: one clap [`Cli`] for every mode. Without a subcommand the program is the
//! EAGI call Asterisk starts (Asterisk passes only options); `--help`, the man page and the
//! shell completions come from this one definition, so they list every mode.

use clap::{Parser, Subcommand};

use crate::bench::BenchArgs;
use crate::config::CallArgs;
use crate::doctor::{DoctorArgs, StatsArgs};
use crate::serve::ServeArgs;
use crate::sim::cli::SimArgs;
use crate::sim::transcribe::TranscribeArgs;

/// Offline speech recognition for the Asterisk dialplan (EAGI + Vosk).
#[derive(Debug, Parser)]
#[command(
    name = "asr_bridge",
    version,
    args_override_self = true,
    args_conflicts_with_subcommands = true,
    about = "Offline speech recognition for the Asterisk dialplan (EAGI + Vosk)",
    long_about = "Offline speech recognition for the Asterisk dialplan (EAGI + Vosk).\n\nWithout a subcommand this is the EAGI program: EAGI(asr_bridge,--option=value,...) reads the caller's audio from fd 3 and sets the ASR_* variables. The subcommands serve, test and check it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,
    /// The EAGI call's options (when no subcommand is given).
    #[command(flatten)]
    pub call: CallArgs,
}

/// The modes besides the EAGI call.
#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Serve recognition to many calls from one resident model (vosk-server's protocol, AEAP).
    Serve(ServeArgs),
    /// A recognition server's statistics as JSON (exit 1 when it cannot be reached).
    Stats(StatsArgs),
    /// One EAGI call through the simulated Asterisk host, printing the AGI dialogue.
    Simulate(SimArgs),
    /// Recognize a WAV straight through libvosk (the direct baseline), as JSON.
    Transcribe(TranscribeArgs),
    /// Benchmark the audio path with WAVs: latency, CPU, memory, drops, accuracy.
    Bench(BenchArgs),
    /// Check libvosk, models, the AGI directory, logs, servers and the config file.
    Doctor(DoctorArgs),
    /// Print the man page (roff).
    Man,
    /// Print shell completions.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Whether argv (without the program name) asks for a mode or for help rather than being
    /// an EAGI call: its first word names a subcommand, or is a help or version flag.
    /// Cheap (a string match, no clap command built): it runs before the EAGI call has caught
    /// SIGHUP.
    pub fn is_mode(args: &[String]) -> bool {
        let Some(first) = args.first() else { return false };
        matches!(first.as_str(), "-h" | "--help" | "-V" | "--version" | "help") || <Mode as Subcommand>::has_subcommand(first)
    }
}

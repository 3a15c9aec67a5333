//! asr_bridge: offline speech recognition for the Asterisk dialplan.
//!
//! Asterisk starts the binary per call with `EAGI(asr_bridge,...)`. The caller's audio arrives
//! on fd 3 and is read by a real-time thread into a lock-free ring ([`audio`]); a recognizer
//! thread feeds it to Vosk and decides when the caller has finished ([`asr`]); the main thread
//! speaks AGI on stdin/stdout ([`agi`]) and runs the call ([`session`]). [`sim`] is a simulated
//! Asterisk host that drives the real binary for tests, demos and benchmarks.
//!
//! stdout is the AGI channel: nothing in this library prints to it.

#![deny(unsafe_code)] // allowed locally, where each unsafe block says why it is sound
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]
#![deny(clippy::print_stdout)]
#![warn(unreachable_pub)]

pub mod agi;
pub mod asr;
pub mod audio;
pub mod bench;
pub mod bench_timing;
pub mod cli;
pub mod config;
pub mod doctor;
pub mod log;
pub mod menu;
pub mod net;
pub mod procfs;
pub(crate) mod profile;
pub mod protocol;
pub mod serve;
pub mod session;
pub mod sim;
pub mod value;

/// Why a mode (a subcommand) stopped: its own typed error, boxed; `main` prints it and exits 1.
pub type ModeError = Box<dyn std::error::Error + Send + Sync>;

/// What a mode returns to `main`: its exit status, or the error that stopped it.
pub type ModeResult = Result<std::process::ExitCode, ModeError>;

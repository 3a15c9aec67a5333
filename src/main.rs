//! `asr_bridge`: parse, run, exit. Without a subcommand it is the EAGI program Asterisk
//! starts; the modes ([`asr_bridge::cli::Mode`]) serve, simulate, benchmark and check it.

#![deny(unsafe_code)] // allowed in `eagi` only: fd 3 taken once, and _exit

use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::time::Instant;

use asr_bridge::cli::{Cli, Mode};
use clap::{CommandFactory, Parser};
use crossbeam_channel::unbounded;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

/// jemalloc for the whole process, libvosk included: its unprefixed `malloc`/`free` in this
/// executable take the place of glibc's for every library (libvosk resolves them here). glibc's
/// malloc spent a quarter of a warm server's CPU (`malloc_consolidate`, `_int_malloc` under
/// Kaldi's per-frame lattice links); with jemalloc a warm server needs 0.15 CPU-s per audio
/// second instead of 0.22 (README, "Served mode").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let t0 = Instant::now();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if Cli::is_mode(&args) {
        // A person (or a unit file) chose a mode: clap reports a bad option and exits 2.
        let name = args[0].clone();
        let cli = Cli::try_parse_from(std::iter::once("asr_bridge".to_string()).chain(args)).unwrap_or_else(|e| e.exit());
        let mode = cli.mode.expect("is_mode: a subcommand or help");
        return match run(mode) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("asr_bridge {name}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    eagi(args, t0)
}

/// Runs a mode to its exit status.
fn run(mode: Mode) -> asr_bridge::ModeResult {
    match mode {
        Mode::Serve(a) => asr_bridge::serve::run(a),
        Mode::Stats(a) => {
            print!("{}", asr_bridge::doctor::stats(&a)?);
            Ok(ExitCode::SUCCESS)
        }
        Mode::Simulate(a) => asr_bridge::sim::cli::run(a),
        Mode::Transcribe(a) => asr_bridge::sim::transcribe::run(a),
        Mode::Bench(a) => asr_bridge::bench::run(a),
        Mode::Doctor(a) => {
            let (report, code) = asr_bridge::doctor::run(&a);
            print!("{report}");
            Ok(code)
        }
        Mode::Man => {
            // The man page, generated from the clap definitions (make install puts it in place).
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Mode::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "asr_bridge", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The EAGI call: Asterisk started us with options only. Every outcome, a bad option included,
/// goes to the dialplan as `ASR_*` variables, and the process exits 0.
#[allow(unsafe_code)]
fn eagi(args: Vec<String>, t0: Instant) -> ExitCode {
    // Look at fd 3 before anything opens a descriptor that could take the number 3.
    let fd3 = asr_bridge::audio::reader::check_audio_fd(asr_bridge::audio::EAGI_AUDIO_FD).map(|()| {
        // SAFETY: fd 3 is open (fstat succeeded just now) and nothing in this process has
        // taken it: this is the one place that owns it, and the reader thread gets it.
        unsafe { std::os::fd::OwnedFd::from_raw_fd(asr_bridge::audio::EAGI_AUDIO_FD) }
    });
    // SIGHUP kills an AGI child that has no handler: catch it before anything else.
    let (sig_tx, sig_rx) = unbounded();
    match signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT]) {
        Ok(mut signals) => {
            std::thread::Builder::new()
                .name("signals".into())
                .spawn(move || {
                    for s in signals.forever() {
                        if sig_tx.send(s).is_err() {
                            break;
                        }
                    }
                })
                .expect("spawning the signal thread");
        }
        Err(e) => eprintln!("asr_bridge: cannot install signal handlers: {e}"),
    }
    let lines = asr_bridge::agi::spawn_line_reader(std::io::stdin());
    let code = asr_bridge::session::run_eagi(args, t0, fd3, std::io::stdout(), lines, sig_rx);
    let _ = std::io::stdout().flush();
    // _exit: libvosk's C++ static destructors must not run while the recognizer thread may
    // still be inside libvosk (a hangup during model load), and the fd 3 reader is never joined.
    // SAFETY: _exit ends the process at once; stdout was flushed above, nothing else is owed.
    unsafe { libc::_exit(code) }
}

//! `asr_bridge`: parse, run, exit. Without a subcommand it is the EAGI program Asterisk
//! starts; `simulate` runs a call through the simulated host, `transcribe` is the direct
//! libvosk baseline, `doctor` checks an installation, `man` and `completions` print the man
//! page and shell completions.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

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
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("simulate") => {
            args.remove(0);
            return asr_bridge::sim::cli::main(args);
        }
        Some("transcribe") => {
            args.remove(0);
            return asr_bridge::sim::transcribe::main(args);
        }
        Some("serve") => {
            args.remove(0);
            return asr_bridge::serve::main(args);
        }
        Some("stats") => {
            args.remove(0);
            let (json, code) = asr_bridge::serve::stats(args);
            print!("{json}");
            return code;
        }
        Some("bench") => {
            args.remove(0);
            return asr_bridge::bench::main(args);
        }
        Some("doctor") => {
            args.remove(0);
            let (report, code) = asr_bridge::doctor::run(args);
            print!("{report}");
            return code;
        }
        Some("man") => {
            // The man page, generated from the clap definitions (make install puts it in place).
            let cmd = <asr_bridge::config::CallArgs as clap::CommandFactory>::command();
            let mut out = std::io::stdout();
            return match clap_mangen::Man::new(cmd).render(&mut out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            };
        }
        Some("completions") => {
            let shell = match args.get(1).map(|s| s.parse::<clap_complete::Shell>()) {
                Some(Ok(s)) => s,
                _ => {
                    eprintln!("usage: asr_bridge completions bash|zsh|fish|elvish|powershell");
                    return ExitCode::from(2);
                }
            };
            let mut cmd = <asr_bridge::config::CallArgs as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "asr_bridge", &mut std::io::stdout());
            return ExitCode::SUCCESS;
        }
        Some("-h" | "--help" | "-V" | "--version") => {
            // Only a person types this: clap prints help or the version and exits.
            let _ = asr_bridge::config::CallArgs::parse_from_args(args).map_err(|e| e.exit());
            return ExitCode::SUCCESS;
        }
        _ => {}
    }
    // Look at fd 3 before anything opens a descriptor that could take the number 3.
    let fd3 = asr_bridge::audio::reader::check_audio_fd(asr_bridge::audio::EAGI_AUDIO_FD);
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

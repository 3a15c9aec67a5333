//! The simulated Asterisk host, faithful to `research/eagi-semantics.md`: it starts the real
//! bridge binary with stdin/stdout pipes and fd 3 as a pipe whose write end is non-blocking,
//! sends the header, writes the caller's audio in 20 ms frames at real-time pace (or faster)
//! only while the child is idle or inside STREAM FILE / WAIT FOR DIGIT, lets a new command
//! interrupt those (no reply for STREAM FILE, `200 result=1` for WAIT FOR DIGIT), splits
//! arguments with `parse_args`, answers 510/511/520, and hangs up with SIGHUP while keeping
//! stdin and fd 3 open, as `res_agi.c` does. Runs in the `asr_bridge simulate` process.

pub mod aeap;
pub mod cli;
pub(crate) mod host;
pub mod transcribe;

pub use host::{run, Dir, SimOptions, SimResult, Tail};

//! One utterance's decoding, off the connection thread: a small thread holds the utterance's
//! [`ServedCall`] and runs each 100 ms block as a job on the decode pool, charged to the
//! speech object's [`Usage`] (so the pool's fairness rules hold). The connection thread keeps
//! reading, answering Asterisk within its 1000 ms and running the endpointer on the arrival
//! of audio, as the EAGI side's endpointer never waits for its decoder. The thread ends with
//! the utterance: finished (the final result sent back, the recognizer given back warm) or
//! abandoned (a key, no input, the client gone: [`ServedCall::abandon`]).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::super::call::{CallConfig, ServedCall};
use super::super::pool::Usage;
use super::super::{recycle, retire, Shared};
use crate::log_line;

enum Job {
    /// 16-bit little-endian samples: one block.
    Audio(Vec<u8>),
    /// The last samples, then the final result.
    Finish(Vec<u8>),
}

/// The handle on an utterance's decoder thread. Dropping it abandons the utterance.
pub(super) struct Decoder {
    jobs: Sender<Job>,
    done: Receiver<Result<String, String>>,
}

/// An utterance whose final result is on its way (libvosk's JSON, or why not).
pub(super) struct Finishing(Receiver<Result<String, String>>);

impl Finishing {
    /// A result already known (an utterance that needs no decoding).
    pub(super) fn ready(rx: Receiver<Result<String, String>>) -> Finishing {
        Finishing(rx)
    }

    /// The final result once ready; None while it is not.
    pub(super) fn poll(&self) -> Option<Result<String, String>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(crossbeam_channel::TryRecvError::Empty) => None,
            Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err("the decoder ended without a result".into())),
        }
    }
}

impl Decoder {
    /// Starts the utterance's thread: it takes a recognizer for `cfg` (warm, or built on the
    /// pool) and decodes what it is given, in order.
    pub(super) fn start(sh: &Arc<Shared>, cfg: CallConfig, usage: Arc<Mutex<Usage>>, id: usize) -> Result<Decoder, String> {
        let (jobs, rx) = unbounded();
        let (tx, done) = crossbeam_channel::bounded(1);
        let sh = sh.clone();
        std::thread::Builder::new()
            .name("aeap-decode".into())
            .spawn(move || run(&sh, cfg, &usage, id, &rx, &tx))
            .map_err(|e| format!("cannot start a decoder thread: {e}"))?;
        Ok(Decoder { jobs, done })
    }

    /// Queues one block.
    pub(super) fn audio(&self, bytes: Vec<u8>) {
        let _ = self.jobs.send(Job::Audio(bytes));
    }

    /// Queues the rest and asks for the final result.
    pub(super) fn finish(self, rest: Vec<u8>) -> Finishing {
        let _ = self.jobs.send(Job::Finish(rest));
        Finishing(self.done)
    }
}

/// Runs `f` on the pool with the speech object's usage.
fn on_pool<T: Send + 'static>(sh: &Shared, usage: &Mutex<Usage>, f: impl FnOnce() -> T + Send + 'static) -> Option<(T, std::time::Duration)> {
    let mut u = usage.lock().unwrap_or_else(|p| p.into_inner());
    sh.pool.run(&mut u, f)
}

fn run(sh: &Arc<Shared>, cfg: CallConfig, usage: &Mutex<Usage>, id: usize, jobs: &Receiver<Job>, done: &Sender<Result<String, String>>) {
    let shared = sh.clone();
    let opened = on_pool(sh, usage, move || ServedCall::open(&shared.model, &shared.info, &cfg, &shared.warm));
    let mut call = match opened.map(|(r, _)| r) {
        Some(Ok((c, oov))) => {
            if !oov.is_empty() {
                log_line!("aeap {id}: {} phrase word(s) not in the model's vocabulary", oov.len());
            }
            Box::new(c)
        }
        Some(Err(e)) => return failed(jobs, done, e.to_string()),
        None => return failed(jobs, done, "building the recognizer panicked".into()),
    };
    let mut counted_ms = 0u64;
    while let Ok(job) = jobs.recv() {
        let (bytes, last) = match job {
            Job::Audio(b) => (b, false),
            Job::Finish(b) => (b, true),
        };
        let received = Instant::now();
        let ran = on_pool(sh, usage, move || {
            let mut c = call;
            let r = if bytes.is_empty() { Ok(()) } else { c.audio(&bytes) };
            let r = if last { r.and_then(|()| c.finish()).map(Some) } else { r.map(|()| None) };
            (c, r)
        });
        let Some(((c, r), queued)) = ran else {
            sh.warm.note_discarded();
            let _ = done.send(Err("decoding panicked".into()));
            return;
        };
        call = c;
        sh.stats.record(received.elapsed(), queued);
        let ms = call.samples * 1000 / u64::from(call.rate.max(1));
        sh.stats.audio_ms.fetch_add(ms.saturating_sub(counted_ms), Ordering::Relaxed);
        counted_ms = ms;
        match r {
            Ok(None) => {}
            Ok(Some(json)) => {
                retire(sh, call.into_warm());
                let _ = done.send(Ok(json));
                return;
            }
            Err(e) => {
                retire(sh, call.into_warm());
                let _ = done.send(Err(e.to_string()));
                return;
            }
        }
    }
    // The handle was dropped: the utterance is abandoned.
    recycle(sh, call);
}

/// No recognizer: every job is answered with the reason.
fn failed(jobs: &Receiver<Job>, done: &Sender<Result<String, String>>, why: String) {
    log_line!("aeap: {why}");
    while let Ok(job) = jobs.recv() {
        if matches!(job, Job::Finish(_)) {
            let _ = done.send(Err(why));
            return;
        }
    }
}

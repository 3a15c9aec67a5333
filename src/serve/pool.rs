//! The decode worker pool: a fixed number of threads (one per core by default) that run the
//! calls' libvosk work, as vosk-server's `ThreadPoolExecutor(os.cpu_count())` does. A
//! connection thread hands its call state to the pool with each message and waits for it back,
//! so each call's blocks stay in order while at most `workers` decodes run at once.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Sender};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of decode threads.
pub struct Pool {
    jobs: Sender<Job>,
    workers: usize,
}

impl Pool {
    /// Starts `workers` threads (at least one).
    pub fn new(workers: usize) -> std::io::Result<Pool> {
        let workers = workers.max(1);
        let (tx, rx) = unbounded::<Job>();
        for i in 0..workers {
            let rx = rx.clone();
            std::thread::Builder::new().name(format!("decode-{i}")).spawn(move || {
                for job in rx.iter() {
                    // A panic in one call's work must not take the worker (and other calls) down;
                    // the caller sees its reply channel closed.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                }
            })?;
        }
        Ok(Pool { jobs: tx, workers })
    }

    /// Threads in the pool.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on a worker and waits for its value; also returns how long it waited for a
    /// free worker. `None` when the work panicked.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<(T, Duration)> {
        let (tx, rx) = bounded(1);
        let queued = Instant::now();
        let job: Job = Box::new(move || {
            let waited = queued.elapsed();
            let _ = tx.send((f(), waited));
        });
        self.jobs.send(job).ok()?;
        rx.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn runs_at_most_workers_at_once_and_survives_panics() {
        let pool = Arc::new(Pool::new(2).unwrap());
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..6)
            .map(|i| {
                let (pool, running, peak) = (pool.clone(), running.clone(), peak.clone());
                std::thread::spawn(move || {
                    pool.run(move || {
                        let n = running.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(n, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(30));
                        running.fetch_sub(1, Ordering::SeqCst);
                        i * 2
                    })
                    .map(|(v, _)| v)
                })
            })
            .collect();
        let mut got: Vec<_> = handles.into_iter().map(|h| h.join().unwrap().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![0, 2, 4, 6, 8, 10]);
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        assert!(pool.run(|| -> u32 { panic!("boom") }).is_none());
        assert_eq!(pool.run(|| 7).map(|(v, _)| v), Some(7), "a worker survives a panic");
    }
}

//! The decode worker pool: a fixed number of threads (one per core by default) that run the
//! calls' libvosk work, as vosk-server's `ThreadPoolExecutor(os.cpu_count())` does. A
//! connection thread hands its call state to the pool with each message and waits for it back,
//! so each call's blocks stay in order while at most `workers` decodes run at once. Waiting
//! work is taken least recently served call first ([`Usage`]), not first come; and work of
//! calls sent faster than real time (batch transcription, or a client abusing the server) may
//! hold all workers but one, so a call at the pace of speech always finds one within a block's
//! decode. (A block on a cold recognizer takes up to ~0.3 s on 2 cores: without the reserve, two
//! such clients kept an honest call's blocks waiting that long each, 4 s behind by its end.)

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

type Job = Box<dyn FnOnce() + Send>;

/// How fast a call's recorded decode time fades: a call's claim on the workers is its recent
/// use, not its whole history (a long honest call is not punished for having talked long).
const USAGE_HALF_LIFE: Duration = Duration::from_secs(4);

/// One call's recent use of the workers: decode time, decayed with [`USAGE_HALF_LIFE`]. The
/// pool runs the waiting job of the call that used least first (least recent service), so a
/// call sending audio faster than real time, which would use every worker, waits while calls
/// at the pace of speech go first; it still gets every worker nobody else wants.
#[derive(Debug, Clone)]
pub(crate) struct Usage {
    seconds: f64,
    at: Instant,
    /// The call's audio came faster than real time: its work is batch work.
    pub batch: bool,
}

impl Default for Usage {
    fn default() -> Usage {
        Usage { seconds: 0.0, at: Instant::now(), batch: false }
    }
}

impl Usage {
    /// The decayed decode time, as of now.
    pub(crate) fn now(&self) -> f64 {
        self.seconds * 0.5f64.powf(self.at.elapsed().as_secs_f64() / USAGE_HALF_LIFE.as_secs_f64())
    }

    fn add(&mut self, spent: Duration) {
        self.seconds = self.now() + spent.as_secs_f64();
        self.at = Instant::now();
    }
}

/// A waiting job: least usage first, then first come.
struct Waiting {
    usage: f64,
    seq: u64,
    job: Job,
}

impl PartialEq for Waiting {
    fn eq(&self, o: &Waiting) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, o: &Waiting) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Waiting {
    /// Reversed: the heap's greatest is the least used, earliest job.
    fn cmp(&self, o: &Waiting) -> Ordering {
        o.usage.total_cmp(&self.usage).then(o.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct Queue {
    live: BinaryHeap<Waiting>,
    batch: BinaryHeap<Waiting>,
    /// Batch jobs running now.
    batch_running: usize,
    seq: u64,
}

impl Queue {
    /// The next job a free worker takes, and whether it is batch work: live work first; batch
    /// work only while fewer than `batch_max` batch jobs run.
    fn next(&mut self, batch_max: usize) -> Option<(Job, bool)> {
        if let Some(w) = self.live.pop() {
            return Some((w.job, false));
        }
        if self.batch_running < batch_max {
            let w = self.batch.pop()?;
            self.batch_running += 1;
            return Some((w.job, true));
        }
        None
    }
}

/// A fixed set of decode threads.
pub(crate) struct Pool {
    queue: Arc<(Mutex<Queue>, Condvar)>,
    workers: usize,
}

impl Pool {
    /// Starts `workers` threads (at least one).
    pub(crate) fn new(workers: usize) -> std::io::Result<Pool> {
        let workers = workers.max(1);
        let queue = Arc::new((Mutex::new(Queue::default()), Condvar::new()));
        let batch_max = (workers - 1).max(1);
        for i in 0..workers {
            let q = queue.clone();
            std::thread::Builder::new().name(format!("decode-{i}")).spawn(move || loop {
                let (lock, ready) = &*q;
                let (job, batch) = {
                    let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
                    loop {
                        if let Some(j) = g.next(batch_max) {
                            break j;
                        }
                        g = ready.wait(g).unwrap_or_else(|p| p.into_inner());
                    }
                };
                // A panic in one call's work must not take the worker (and other calls) down;
                // the caller sees its reply channel closed.
                let _ = catch_unwind(AssertUnwindSafe(job));
                if batch {
                    lock.lock().unwrap_or_else(|p| p.into_inner()).batch_running -= 1;
                    // A batch job may now run on a worker that waits.
                    ready.notify_all();
                }
            })?;
        }
        Ok(Pool { queue, workers })
    }

    /// Threads in the pool.
    pub(crate) fn workers(&self) -> usize {
        self.workers
    }

    /// Runs `f` on a worker for the call whose use is `usage`, and waits for its value; also
    /// returns how long it waited for a free worker. Charges the decode time to `usage`.
    /// `None` when the work panicked.
    pub(crate) fn run<T: Send + 'static>(&self, usage: &mut Usage, f: impl FnOnce() -> T + Send + 'static) -> Option<(T, Duration)> {
        let (tx, rx) = bounded(1);
        let queued = Instant::now();
        let job: Job = Box::new(move || {
            let waited = queued.elapsed();
            let _ = tx.send((f(), waited));
        });
        {
            let (lock, ready) = &*self.queue;
            let mut g = lock.lock().unwrap_or_else(|p| p.into_inner());
            g.seq += 1;
            let seq = g.seq;
            let w = Waiting { usage: usage.now(), seq, job };
            if usage.batch {
                g.batch.push(w);
            } else {
                g.live.push(w);
            }
            ready.notify_all();
        }
        let got = rx.recv().ok();
        if let Some((_, waited)) = &got {
            usage.add(queued.elapsed().saturating_sub(*waited));
        }
        got
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
                    pool.run(&mut Usage::default(), move || {
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
        assert!(pool.run(&mut Usage::default(), || -> u32 { panic!("boom") }).is_none());
        assert_eq!(pool.run(&mut Usage::default(), || 7).map(|(v, _)| v), Some(7), "a worker survives a panic");
    }

    #[test]
    fn the_least_served_call_goes_first() {
        let pool = Arc::new(Pool::new(1).unwrap());
        // Occupy the only worker, then queue a heavy user's job before a light user's.
        let (hold_tx, hold_rx) = bounded::<()>(0);
        let p = pool.clone();
        let busy = std::thread::spawn(move || p.run(&mut Usage::default(), move || hold_rx.recv().ok()));
        std::thread::sleep(Duration::from_millis(50));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut heavy = Usage::default();
        heavy.add(Duration::from_secs(3));
        let spawn = |name: &'static str, mut usage: Usage| {
            let (p, order) = (pool.clone(), order.clone());
            std::thread::spawn(move || {
                p.run(&mut usage, move || order.lock().unwrap().push(name));
                usage
            })
        };
        let h = spawn("heavy", heavy);
        std::thread::sleep(Duration::from_millis(50));
        let l = spawn("light", Usage::default());
        std::thread::sleep(Duration::from_millis(50));
        hold_tx.send(()).unwrap();
        busy.join().unwrap();
        let (heavy, light) = (h.join().unwrap(), l.join().unwrap());
        assert_eq!(*order.lock().unwrap(), ["light", "heavy"], "the light user came later and went first");
        assert!(heavy.now() > 2.5 && light.now() < 0.5, "{} {}", heavy.now(), light.now());
        let mut fading = Usage { seconds: 1.0, at: Instant::now() - USAGE_HALF_LIFE, batch: false };
        assert!((fading.now() - 0.5).abs() < 0.01);
        fading.add(Duration::from_millis(500));
        assert!((fading.now() - 1.0).abs() < 0.01);
    }

    #[test]
    fn batch_work_leaves_a_worker_for_live_work() {
        let pool = Arc::new(Pool::new(2).unwrap());
        let (hold_tx, hold_rx) = bounded::<()>(0);
        let running = Arc::new(AtomicUsize::new(0));
        let batch: Vec<_> = (0..2)
            .map(|_| {
                let (p, rx, running) = (pool.clone(), hold_rx.clone(), running.clone());
                std::thread::spawn(move || {
                    let mut u = Usage { batch: true, ..Usage::default() };
                    p.run(&mut u, move || {
                        running.fetch_add(1, Ordering::SeqCst);
                        rx.recv().ok()
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(running.load(Ordering::SeqCst), 1, "one batch job runs, the other waits");
        let t = Instant::now();
        assert_eq!(pool.run(&mut Usage::default(), || 5).map(|(v, _)| v), Some(5));
        assert!(t.elapsed() < Duration::from_secs(1), "live work found the reserved worker");
        hold_tx.send(()).unwrap();
        hold_tx.send(()).unwrap();
        for b in batch {
            assert!(b.join().unwrap().is_some());
        }
    }
}

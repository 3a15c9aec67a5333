//! Health and statistics of a running server, sent as one JSON message to a WebSocket client
//! at `/stats` (`asr_bridge stats`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

/// Lag samples kept for the percentiles.
const WINDOW: usize = 4096;

/// Counters shared by the accept loop and the connection threads.
pub struct Stats {
    pub started: Instant,
    pub max_calls: usize,
    /// Calls holding a recognizer slot now (admitted, not yet ended).
    pub active: AtomicUsize,
    pub accepted: AtomicU64,
    /// Calls refused at once because `max_calls` were active.
    pub refused: AtomicU64,
    /// Calls that ended with a final result.
    pub completed: AtomicU64,
    /// Calls that ended otherwise (client gone, idle, error).
    pub aborted: AtomicU64,
    /// Audio received, in samples at each call's rate, summed as milliseconds.
    pub audio_ms: AtomicU64,
    pub draining: AtomicBool,
    lag: Mutex<Lag>,
}

#[derive(Default)]
struct Lag {
    /// Message received -> reply ready, ms (queue wait plus decode).
    decode: VecDeque<f32>,
    /// Waiting for a free worker, ms.
    queue: VecDeque<f32>,
    decode_max: f32,
    queue_max: f32,
}

fn push(q: &mut VecDeque<f32>, v: f32) {
    if q.len() == WINDOW {
        q.pop_front();
    }
    q.push_back(v);
}

fn summary(q: &VecDeque<f32>, max: f32) -> serde_json::Value {
    let mut v: Vec<f32> = q.iter().copied().collect();
    v.sort_by(f32::total_cmp);
    let pct = |p: f64| -> Option<f64> {
        if v.is_empty() {
            return None;
        }
        let i = ((v.len() - 1) as f64 * p).round() as usize;
        Some((v[i] as f64 * 100.0).round() / 100.0)
    };
    json!({ "p50": pct(0.5), "p95": pct(0.95), "max": (max as f64 * 100.0).round() / 100.0, "samples": v.len() })
}

impl Stats {
    pub fn new(max_calls: usize) -> Stats {
        Stats {
            started: Instant::now(),
            max_calls,
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            audio_ms: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            lag: Mutex::new(Lag::default()),
        }
    }

    /// Takes a call slot, or refuses when all are taken (never queues).
    pub fn admit(&self) -> bool {
        let ok = self
            .active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_calls).then_some(n + 1))
            .is_ok();
        if ok {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        ok
    }

    /// Gives a slot back.
    pub fn release(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Records one audio message's lag.
    pub fn record(&self, decode: Duration, queue: Duration) {
        let (d, q) = (decode.as_secs_f32() * 1000.0, queue.as_secs_f32() * 1000.0);
        if let Ok(mut l) = self.lag.lock() {
            push(&mut l.decode, d);
            push(&mut l.queue, q);
            l.decode_max = l.decode_max.max(d);
            l.queue_max = l.queue_max.max(q);
        }
    }

    /// The statistics message.
    pub fn to_json(&self, model: &str, workers: usize, listen: &[String]) -> serde_json::Value {
        let (decode, queue) = match self.lag.lock() {
            Ok(l) => (summary(&l.decode, l.decode_max), summary(&l.queue, l.queue_max)),
            Err(_) => (json!(null), json!(null)),
        };
        json!({
            "status": if self.draining.load(Ordering::Relaxed) { "draining" } else { "ok" },
            "pid": std::process::id(),
            "model": model,
            "listen": listen,
            "uptime_s": (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "workers": workers,
            "max_calls": self.max_calls,
            "active": self.active.load(Ordering::Acquire),
            "accepted": self.accepted.load(Ordering::Relaxed),
            "refused": self.refused.load(Ordering::Relaxed),
            "completed": self.completed.load(Ordering::Relaxed),
            "aborted": self.aborted.load(Ordering::Relaxed),
            "audio_s": self.audio_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "decode_lag_ms": decode,
            "queue_wait_ms": queue,
            "rss_kb": crate::log::proc_kb("self", "status", "VmRSS:"),
            "rss_peak_kb": crate::log::rusage().1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_past_capacity_and_frees_slots() {
        let s = Stats::new(2);
        assert!(s.admit());
        assert!(s.admit());
        assert!(!s.admit());
        s.release();
        assert!(s.admit());
        assert_eq!(s.refused.load(Ordering::Relaxed), 1);
        assert_eq!(s.accepted.load(Ordering::Relaxed), 3);
        s.record(Duration::from_millis(12), Duration::from_millis(1));
        s.record(Duration::from_millis(30), Duration::from_millis(3));
        let j = s.to_json("m", 2, &[]);
        assert_eq!(j["active"], 2);
        assert_eq!(j["decode_lag_ms"]["max"], 30.0);
        assert_eq!(j["decode_lag_ms"]["samples"], 2);
    }
}

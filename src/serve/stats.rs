//! Health and statistics of a running server, sent as one JSON message to a WebSocket client
//! at `/stats` (`asr_bridge stats`).

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

/// Lag samples kept for the percentiles.
const WINDOW: usize = 4096;

/// Counters shared by the accept loop and the connection threads.
pub(crate) struct Stats {
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
    /// Connections accepted whose request head or handshake is not through yet.
    pub handshaking: AtomicUsize,
    /// Connections closed at accept because `--max-handshakes` were already pending.
    pub shed: AtomicU64,
    /// Requests refused by the access rule (401, 403).
    pub denied: AtomicU64,
    /// Calls refused because their client held its share of the slots.
    pub refused_client_share: AtomicU64,
    /// Connections dropped for sending no audio for the idle timeout.
    pub idle_dropped: AtomicU64,
    /// The most slots one client address may hold (`--max-calls-per-client`).
    per_client: Option<usize>,
    clients: Mutex<HashMap<IpAddr, usize>>,
    lag: Mutex<Lag>,
}

/// Why a call was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Every slot is taken.
    Full,
    /// This client holds its share (`--max-calls-per-client`).
    ClientShare,
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
    pub(crate) fn new(max_calls: usize, per_client: Option<usize>) -> Stats {
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
            handshaking: AtomicUsize::new(0),
            shed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
            refused_client_share: AtomicU64::new(0),
            idle_dropped: AtomicU64::new(0),
            per_client,
            clients: Mutex::new(HashMap::new()),
            lag: Mutex::new(Lag::default()),
        }
    }

    /// Takes a call slot for `client` (None: a Unix socket, not shared out), or refuses when
    /// all are taken or the client holds its share (never queues).
    pub(crate) fn admit(&self, client: Option<IpAddr>) -> Result<(), Refusal> {
        let shared = client.zip(self.per_client);
        if let Some((ip, share)) = shared {
            let mut held = self.clients.lock().unwrap_or_else(|p| p.into_inner());
            let n = held.entry(ip).or_insert(0);
            if *n >= share {
                self.refused_client_share.fetch_add(1, Ordering::Relaxed);
                return Err(Refusal::ClientShare);
            }
            *n += 1;
        }
        let ok = self.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < self.max_calls).then_some(n + 1)).is_ok();
        if ok {
            self.accepted.fetch_add(1, Ordering::Relaxed);
            Ok(())
        } else {
            self.refused.fetch_add(1, Ordering::Relaxed);
            if let Some((ip, _)) = shared {
                self.unshare(ip);
            }
            Err(Refusal::Full)
        }
    }

    /// Gives a slot back.
    pub(crate) fn release(&self, client: Option<IpAddr>) {
        self.active.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = client.filter(|_| self.per_client.is_some()) {
            self.unshare(ip);
        }
    }

    fn unshare(&self, ip: IpAddr) {
        let mut held = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = held.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                held.remove(&ip);
            }
        }
    }

    /// Records one audio message's lag.
    pub(crate) fn record(&self, decode: Duration, queue: Duration) {
        let (d, q) = (decode.as_secs_f32() * 1000.0, queue.as_secs_f32() * 1000.0);
        if let Ok(mut l) = self.lag.lock() {
            push(&mut l.decode, d);
            push(&mut l.queue, q);
            l.decode_max = l.decode_max.max(d);
            l.queue_max = l.queue_max.max(q);
        }
    }

    /// The statistics message.
    pub(crate) fn to_json(&self, model: &str, workers: usize, listen: &[String]) -> serde_json::Value {
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
            "refused_client_share": self.refused_client_share.load(Ordering::Relaxed),
            "max_calls_per_client": self.per_client,
            "handshaking": self.handshaking.load(Ordering::Relaxed),
            "shed": self.shed.load(Ordering::Relaxed),
            "denied": self.denied.load(Ordering::Relaxed),
            "idle_dropped": self.idle_dropped.load(Ordering::Relaxed),
            "completed": self.completed.load(Ordering::Relaxed),
            "aborted": self.aborted.load(Ordering::Relaxed),
            "audio_s": self.audio_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "decode_lag_ms": decode,
            "queue_wait_ms": queue,
            "rss_kb": crate::procfs::proc_kb("self", "status", "VmRSS:"),
            "rss_peak_kb": crate::procfs::rusage().1,
        })
    }
}

/// The statistics in Prometheus' text format (`/metrics`), taken from the same snapshot as
/// `/stats`: one place decides what each figure means.
pub(crate) fn prometheus(j: &serde_json::Value) -> String {
    const METRICS: &[(&str, &str, &str, &str)] = &[
        ("active", "asr_bridge_calls_active", "gauge", "Calls holding a slot now."),
        ("max_calls", "asr_bridge_calls_max", "gauge", "Calls served at once (--max-calls)."),
        ("accepted", "asr_bridge_calls_accepted_total", "counter", "Calls admitted."),
        ("refused", "asr_bridge_calls_refused_total", "counter", "Calls refused at capacity (503)."),
        ("refused_client_share", "asr_bridge_calls_refused_client_share_total", "counter", "Calls refused past a client's share."),
        ("completed", "asr_bridge_calls_completed_total", "counter", "Calls that got their final result."),
        ("aborted", "asr_bridge_calls_aborted_total", "counter", "Calls that ended otherwise."),
        ("idle_dropped", "asr_bridge_calls_idle_dropped_total", "counter", "Calls dropped for sending no audio."),
        ("audio_s", "asr_bridge_audio_seconds_total", "counter", "Audio received."),
        ("handshaking", "asr_bridge_handshakes_pending", "gauge", "Connections before the end of their handshake."),
        ("shed", "asr_bridge_connections_shed_total", "counter", "Connections closed at accept (--max-handshakes)."),
        ("denied", "asr_bridge_requests_denied_total", "counter", "Requests refused by the access rule."),
        ("workers", "asr_bridge_decode_workers", "gauge", "Decode threads."),
        ("uptime_s", "asr_bridge_uptime_seconds", "gauge", "Seconds since start."),
    ];
    let mut out = String::new();
    let mut put = |name: &str, kind: &str, help: &str, v: Option<f64>, label: &str| {
        let Some(v) = v else { return };
        if !out.contains(&format!("# TYPE {name} ")) {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        }
        out.push_str(&format!("{name}{label} {v}\n"));
    };
    for (key, name, kind, help) in METRICS {
        put(name, kind, help, j[*key].as_f64(), "");
    }
    put("asr_bridge_draining", "gauge", "1 while shutting down.", Some(f64::from(u8::from(j["status"] == "draining"))), "");
    for (key, name, help) in [
        ("decode_lag_ms", "asr_bridge_decode_lag_ms", "Audio message received to reply ready."),
        ("queue_wait_ms", "asr_bridge_queue_wait_ms", "Wait for a decode worker."),
    ] {
        for q in ["p50", "p95"] {
            let quantile = if q == "p50" { "0.5" } else { "0.95" };
            put(name, "gauge", help, j[key][q].as_f64(), &format!("{{quantile=\"{quantile}\"}}"));
        }
    }
    let w = &j["warm"];
    put("asr_bridge_warm_idle", "gauge", "Warm recognizers waiting for a call.", w["idle"].as_f64(), "");
    put("asr_bridge_warm_idle_bytes", "gauge", "Memory the idle warm recognizers hold.", w["idle_mb"].as_f64().map(|mb| mb * 1048576.0), "");
    put("asr_bridge_warm_reused_total", "counter", "Calls given a warm recognizer.", w["reused"].as_f64(), "");
    put("asr_bridge_warm_built_total", "counter", "Recognizers built.", w["built"].as_f64(), "");
    put("asr_bridge_resident_bytes", "gauge", "Resident memory of the server.", j["rss_kb"].as_f64().map(|kb| kb * 1024.0), "");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_refuses_past_capacity_and_frees_slots() {
        let s = Stats::new(2, None);
        assert!(s.admit(None).is_ok());
        assert!(s.admit(None).is_ok());
        assert_eq!(s.admit(None), Err(Refusal::Full));
        s.release(None);
        assert!(s.admit(None).is_ok());
        assert_eq!(s.refused.load(Ordering::Relaxed), 1);
        assert_eq!(s.accepted.load(Ordering::Relaxed), 3);
        s.record(Duration::from_millis(12), Duration::from_millis(1));
        s.record(Duration::from_millis(30), Duration::from_millis(3));
        let j = s.to_json("m", 2, &[]);
        assert_eq!(j["active"], 2);
        assert_eq!(j["decode_lag_ms"]["max"], 30.0);
        assert_eq!(j["decode_lag_ms"]["samples"], 2);
        let m = prometheus(&j);
        assert!(m.contains("# TYPE asr_bridge_calls_active gauge\nasr_bridge_calls_active 2\n"), "{m}");
        assert!(m.contains("asr_bridge_calls_refused_total 1\n"), "{m}");
        assert!(m.contains("asr_bridge_decode_lag_ms{quantile=\"0.95\"} 30\n"), "{m}");
        assert_eq!(m.matches("# TYPE asr_bridge_decode_lag_ms").count(), 1, "{m}");
    }

    #[test]
    fn a_client_holds_at_most_its_share() {
        let s = Stats::new(3, Some(2));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        assert!(s.admit(Some(a)).is_ok());
        assert!(s.admit(Some(a)).is_ok());
        assert_eq!(s.admit(Some(a)), Err(Refusal::ClientShare));
        assert!(s.admit(Some(b)).is_ok());
        assert_eq!(s.admit(Some(b)), Err(Refusal::Full), "the total still holds");
        assert!(s.admit(None).is_err());
        s.release(Some(a));
        assert!(s.admit(Some(a)).is_ok(), "a share comes back with its slot");
        assert_eq!(s.active.load(Ordering::Relaxed), 3);
    }
}

//! Warm recognizers: a call's libvosk recognizer, once the call has taken its final result,
//! goes back here and serves a later call of the same kind instead of being freed.
//!
//! Why: libvosk expands its lookahead decoding graph lazily and caches it inside each
//! recognizer; a fresh one pays 0.5-0.8 CPU-s per audio second on the test model, a reused one
//! 0.1-0.3 (`research/vosk-0.3.45.md` §12). What makes recognizers different is the key: rate,
//! grammar (normalized phrases), n-best size and word output; a call takes a warm one of its
//! key or builds one.
//!
//! Clean between callers: a recognizer goes back only after libvosk's `FinalResult` (libvosk
//! then starts the next utterance from a clean decoder and a new feature pipeline; research
//! §12: texts after any history equal those of fresh recognizers on the same model): at `eof`,
//! or, for a call cut off mid-utterance, taken and dropped by the server
//! ([`super::call::ServedCall::abandon`]; so the pool also warms when overloaded calls give
//! up). Never when the bridge resamples for it (the resampler keeps filter state) or libvosk
//! failed on it.
//!
//! Bounded: at most `capacity` idle recognizers in all (the admission limit), the least
//! recently used dropped first (grammar keys come and go); a recognizer that has served
//! `max_uses` calls, or holds more than `max_bytes` ([`super::meter`]), is retired (it grows as
//! it expands its graph: research §12 saw 585 -> 664 MB over 21 decodes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What makes recognizers interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct WarmKey {
    pub rate: u32,
    /// The normalized phrase list as the client gave it (None: free recognition).
    pub grammar: Option<Vec<String>>,
    pub alternatives: u16,
    pub words: bool,
}

/// One idle recognizer (`E`: libvosk's `Engine` in the server) and what it came with.
pub(crate) struct Warm<E> {
    pub engine: E,
    /// Grammar words its model did not know (reported again to each call that takes it).
    pub oov: Vec<String>,
    /// Calls it has served.
    pub uses: u32,
    /// What it holds in memory, bytes.
    pub bytes: i64,
    idle_since: Instant,
}

impl<E> Warm<E> {
    pub(crate) fn new(engine: E, oov: Vec<String>, uses: u32, bytes: i64) -> Warm<E> {
        Warm { engine, oov, uses, bytes, idle_since: Instant::now() }
    }
}

/// The pool's limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bounds {
    /// Idle recognizers at most (the admission limit); 0 turns reuse off (every call builds, as
    /// vosk-server does).
    pub capacity: usize,
    /// Calls a recognizer serves before it is retired.
    pub max_uses: u32,
    /// Memory a recognizer may hold and still go back to the pool.
    pub max_bytes: i64,
}

/// The idle recognizers, by key.
pub(crate) struct WarmPool<E> {
    idle: Mutex<HashMap<WarmKey, Vec<Warm<E>>>>,
    bounds: Bounds,
    pub reused: AtomicU64,
    pub built: AtomicU64,
    /// Retired for their uses or memory, or dropped as least recently used.
    pub retired: AtomicU64,
    /// Of those, retired for the memory they held.
    pub retired_for_memory: AtomicU64,
    /// Freed at the end of their call because they could not be reused cleanly.
    pub discarded: AtomicU64,
}

impl<E> WarmPool<E> {
    pub(crate) fn new(bounds: Bounds) -> WarmPool<E> {
        WarmPool {
            idle: Mutex::new(HashMap::new()),
            bounds,
            reused: AtomicU64::new(0),
            built: AtomicU64::new(0),
            retired: AtomicU64::new(0),
            retired_for_memory: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
        }
    }

    /// A warm recognizer of this key, the most recently used first.
    pub(crate) fn take(&self, key: &WarmKey) -> Option<Warm<E>> {
        let mut idle = self.idle.lock().ok()?;
        let list = idle.get_mut(key)?;
        let w = list.pop();
        if list.is_empty() {
            idle.remove(key);
        }
        if w.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        w
    }

    /// Counts a recognizer built because none was warm.
    pub(crate) fn note_built(&self) {
        self.built.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a recognizer freed at the end of its call instead of coming back (so that, with
    /// no call active, built = idle + retired + discarded).
    pub(crate) fn note_discarded(&self) {
        self.discarded.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a recognizer back after a clean call; retires it past `max_uses` or
    /// `max_bytes`, and drops the least recently used idle one past `capacity`.
    pub(crate) fn put(&self, key: WarmKey, mut w: Warm<E>) {
        w.uses += 1;
        let b = self.bounds;
        if b.capacity == 0 || w.uses >= b.max_uses || w.bytes > b.max_bytes {
            self.retired.fetch_add(1, Ordering::Relaxed);
            if w.bytes > b.max_bytes {
                self.retired_for_memory.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        w.idle_since = Instant::now();
        let Ok(mut idle) = self.idle.lock() else { return };
        idle.entry(key).or_default().push(w);
        while idle.values().map(Vec::len).sum::<usize>() > b.capacity {
            let oldest = idle.iter().filter_map(|(k, v)| v.first().map(|w| (k.clone(), w.idle_since))).min_by_key(|(_, t)| *t).map(|(k, _)| k);
            let Some(k) = oldest else { break };
            if let Some(list) = idle.get_mut(&k) {
                list.remove(0);
                if list.is_empty() {
                    idle.remove(&k);
                }
            }
            self.retired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Idle recognizers now, and distinct keys among them.
    pub(crate) fn idle(&self) -> (usize, usize) {
        self.idle.lock().map(|m| (m.values().map(Vec::len).sum(), m.len())).unwrap_or((0, 0))
    }

    /// What the idle recognizers hold in memory, bytes.
    pub(crate) fn idle_bytes(&self) -> i64 {
        self.idle.lock().map(|m| m.values().flatten().map(|w| w.bytes).sum()).unwrap_or(0)
    }

    /// The pool's part of `asr_bridge stats`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let (idle, keys) = self.idle();
        let mb = |b: i64| (b.max(0) as f64 / (1 << 20) as f64 * 10.0).round() / 10.0;
        serde_json::json!({
            "idle": idle,
            "keys": keys,
            "idle_mb": mb(self.idle_bytes()),
            "max_mb": mb(self.bounds.max_bytes),
            "reused": self.reused.load(Ordering::Relaxed),
            "built": self.built.load(Ordering::Relaxed),
            "retired": self.retired.load(Ordering::Relaxed),
            "retired_for_memory": self.retired_for_memory.load(Ordering::Relaxed),
            "discarded": self.discarded.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(capacity: usize, max_uses: u32) -> Bounds {
        Bounds { capacity, max_uses, max_bytes: 64 << 20 }
    }

    fn key(rate: u32, grammar: Option<&[&str]>) -> WarmKey {
        WarmKey { rate, grammar: grammar.map(|g| g.iter().map(|p| p.to_string()).collect()), alternatives: 0, words: true }
    }

    #[test]
    fn a_recognizer_serves_only_its_own_key() {
        let pool = WarmPool::new(bounds(4, 100));
        pool.put(key(8000, None), Warm::new("free-8k", vec![], 0, 0));
        assert!(pool.take(&key(16000, None)).is_none(), "another rate");
        assert!(pool.take(&key(8000, Some(&["yes", "no"]))).is_none(), "a grammar");
        let w = pool.take(&key(8000, None)).expect("its own key");
        assert_eq!((w.engine, w.uses), ("free-8k", 1));
        assert!(pool.take(&key(8000, None)).is_none(), "taken once");
        assert_eq!(pool.reused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn never_more_idle_than_the_capacity_least_recently_used_first() {
        let pool = WarmPool::new(bounds(2, 100));
        pool.put(key(8000, Some(&["a"])), Warm::new(1, vec![], 0, 0));
        std::thread::sleep(std::time::Duration::from_millis(2));
        pool.put(key(8000, Some(&["b"])), Warm::new(2, vec![], 0, 0));
        std::thread::sleep(std::time::Duration::from_millis(2));
        pool.put(key(8000, Some(&["c"])), Warm::new(3, vec![], 0, 0));
        assert_eq!(pool.idle(), (2, 2));
        assert!(pool.take(&key(8000, Some(&["a"]))).is_none(), "the oldest key went first");
        assert!(pool.take(&key(8000, Some(&["c"]))).is_some());
        assert_eq!(pool.retired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_recognizer_is_retired_after_max_uses_and_reuse_can_be_off() {
        let pool = WarmPool::new(bounds(4, 3));
        let k = key(8000, None);
        pool.put(k.clone(), Warm::new((), vec![], 0, 0));
        let w = pool.take(&k).unwrap();
        pool.put(k.clone(), w);
        let w = pool.take(&k).unwrap();
        assert_eq!(w.uses, 2);
        pool.put(k.clone(), w); // its third call: retired
        assert!(pool.take(&k).is_none());
        assert_eq!(pool.retired.load(Ordering::Relaxed), 1);

        let off = WarmPool::new(bounds(0, 100));
        off.put(k.clone(), Warm::new((), vec![], 0, 0));
        assert_eq!(off.idle(), (0, 0));
    }

    #[test]
    fn a_recognizer_past_the_memory_bound_is_retired_and_idle_memory_is_reported() {
        let pool = WarmPool::new(bounds(4, 100));
        let k = key(8000, None);
        pool.put(k.clone(), Warm::new("small", vec![], 0, 30 << 20));
        pool.put(k.clone(), Warm::new("grown", vec![], 0, 65 << 20));
        assert_eq!(pool.idle(), (1, 1));
        assert_eq!(pool.idle_bytes(), 30 << 20);
        assert_eq!(pool.take(&k).map(|w| w.engine), Some("small"));
        assert_eq!(pool.retired_for_memory.load(Ordering::Relaxed), 1);
        assert_eq!(pool.to_json()["idle_mb"], 0.0);
    }
}

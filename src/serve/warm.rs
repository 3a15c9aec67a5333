//! Warm recognizers: a call's libvosk recognizer, once the call has taken its final result,
//! goes back here and serves a later call of the same kind instead of being freed.
//!
//! Why: libvosk expands its lookahead decoding graph lazily and caches it inside each
//! recognizer; a fresh one pays 0.5-0.8 CPU-s per audio second on the test model, a reused one
//! 0.1-0.3 (`research/vosk-0.3.45.md` §12). What makes recognizers different is the key: rate,
//! grammar (normalized phrases), n-best size and word output; a call takes a warm one of its
//! key or builds one.
//!
//! Clean between callers: a recognizer goes back only after `FinalResult` taken at the end of
//! a call (libvosk then starts the next utterance from a clean decoder and a new feature
//! pipeline; research §12: texts after any history equal those of fresh recognizers on the
//! same model), never after a call cut off mid-utterance, and never when the bridge resamples
//! for it (the resampler keeps filter state).
//!
//! Bounded: at most `capacity` idle recognizers in all (the admission limit), the least
//! recently used dropped first (grammar keys come and go); a recognizer that has served
//! `max_uses` calls is retired (it grows: research §12 saw 585 -> 664 MB over 21 decodes).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// What makes recognizers interchangeable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarmKey {
    pub rate: u32,
    /// The normalized phrase list as the client gave it (None: free recognition).
    pub grammar: Option<Vec<String>>,
    pub alternatives: u16,
    pub words: bool,
}

/// One idle recognizer (`E`: libvosk's `Engine` in the server) and what it came with.
pub struct Warm<E> {
    pub engine: E,
    /// Grammar words its model did not know (reported again to each call that takes it).
    pub oov: Vec<String>,
    /// Calls it has served.
    pub uses: u32,
    idle_since: Instant,
}

impl<E> Warm<E> {
    pub fn new(engine: E, oov: Vec<String>, uses: u32) -> Warm<E> {
        Warm { engine, oov, uses, idle_since: Instant::now() }
    }
}

/// The idle recognizers, by key.
pub struct WarmPool<E> {
    idle: Mutex<HashMap<WarmKey, Vec<Warm<E>>>>,
    capacity: usize,
    max_uses: u32,
    pub reused: AtomicU64,
    pub built: AtomicU64,
    pub retired: AtomicU64,
}

impl<E> WarmPool<E> {
    /// `capacity` 0 turns reuse off (every call builds, as vosk-server does).
    pub fn new(capacity: usize, max_uses: u32) -> WarmPool<E> {
        WarmPool {
            idle: Mutex::new(HashMap::new()),
            capacity,
            max_uses,
            reused: AtomicU64::new(0),
            built: AtomicU64::new(0),
            retired: AtomicU64::new(0),
        }
    }

    /// A warm recognizer of this key, the most recently used first.
    pub fn take(&self, key: &WarmKey) -> Option<Warm<E>> {
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
    pub fn note_built(&self) {
        self.built.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a recognizer back after a clean call; retires it past `max_uses`, and drops
    /// the least recently used idle one past `capacity`.
    pub fn put(&self, key: WarmKey, mut w: Warm<E>) {
        w.uses += 1;
        if self.capacity == 0 || w.uses >= self.max_uses {
            self.retired.fetch_add(1, Ordering::Relaxed);
            return;
        }
        w.idle_since = Instant::now();
        let Ok(mut idle) = self.idle.lock() else { return };
        idle.entry(key).or_default().push(w);
        while idle.values().map(Vec::len).sum::<usize>() > self.capacity {
            let oldest = idle
                .iter()
                .filter_map(|(k, v)| v.first().map(|w| (k.clone(), w.idle_since)))
                .min_by_key(|(_, t)| *t)
                .map(|(k, _)| k);
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
    pub fn idle(&self) -> (usize, usize) {
        self.idle.lock().map(|m| (m.values().map(Vec::len).sum(), m.len())).unwrap_or((0, 0))
    }

    /// The pool's part of `asr_bridge stats`.
    pub fn to_json(&self) -> serde_json::Value {
        let (idle, keys) = self.idle();
        serde_json::json!({
            "idle": idle,
            "keys": keys,
            "reused": self.reused.load(Ordering::Relaxed),
            "built": self.built.load(Ordering::Relaxed),
            "retired": self.retired.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(rate: u32, grammar: Option<&[&str]>) -> WarmKey {
        WarmKey { rate, grammar: grammar.map(|g| g.iter().map(|p| p.to_string()).collect()), alternatives: 0, words: true }
    }

    #[test]
    fn a_recognizer_serves_only_its_own_key() {
        let pool = WarmPool::new(4, 100);
        pool.put(key(8000, None), Warm::new("free-8k", vec![], 0));
        assert!(pool.take(&key(16000, None)).is_none(), "another rate");
        assert!(pool.take(&key(8000, Some(&["yes", "no"]))).is_none(), "a grammar");
        let w = pool.take(&key(8000, None)).expect("its own key");
        assert_eq!((w.engine, w.uses), ("free-8k", 1));
        assert!(pool.take(&key(8000, None)).is_none(), "taken once");
        assert_eq!(pool.reused.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn never_more_idle_than_the_capacity_least_recently_used_first() {
        let pool = WarmPool::new(2, 100);
        pool.put(key(8000, Some(&["a"])), Warm::new(1, vec![], 0));
        std::thread::sleep(std::time::Duration::from_millis(2));
        pool.put(key(8000, Some(&["b"])), Warm::new(2, vec![], 0));
        std::thread::sleep(std::time::Duration::from_millis(2));
        pool.put(key(8000, Some(&["c"])), Warm::new(3, vec![], 0));
        assert_eq!(pool.idle(), (2, 2));
        assert!(pool.take(&key(8000, Some(&["a"]))).is_none(), "the oldest key went first");
        assert!(pool.take(&key(8000, Some(&["c"]))).is_some());
        assert_eq!(pool.retired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_recognizer_is_retired_after_max_uses_and_reuse_can_be_off() {
        let pool = WarmPool::new(4, 3);
        let k = key(8000, None);
        pool.put(k.clone(), Warm::new((), vec![], 0));
        let w = pool.take(&k).unwrap();
        pool.put(k.clone(), w);
        let w = pool.take(&k).unwrap();
        assert_eq!(w.uses, 2);
        pool.put(k.clone(), w); // its third call: retired
        assert!(pool.take(&k).is_none());
        assert_eq!(pool.retired.load(Ordering::Relaxed), 1);

        let off = WarmPool::new(0, 100);
        off.put(k.clone(), Warm::new((), vec![], 0));
        assert_eq!(off.idle(), (0, 0));
    }
}

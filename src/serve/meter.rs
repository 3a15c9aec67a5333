//! How much memory a recognizer holds, counted as it grows.
//!
//! libvosk says nothing about a recognizer's size, and a process's RSS mixes every call. But
//! all of a recognizer's libvosk work runs inside one closure on one thread at a time (its
//! build on the connection thread, each block on a decode worker), and jemalloc (the process
//! allocator, `main.rs`) counts the bytes each thread allocates and frees. The net of those two
//! counters around a piece of work is what that work left allocated; summed over a
//! recognizer's life it is the recognizer's footprint (give or take the few result strings the
//! work hands back, about 1 KB per call). The warm pool bounds it (`--warm-max-mb`) and reports
//! it (`asr_bridge stats`). Built without the `jemalloc` feature (the fuzz targets), nothing
//! is counted.

/// Runs `f` and returns the bytes it left allocated on this thread (negative: it freed
/// more than it allocated). 0 when the counters cannot be read.
pub(crate) fn net_bytes<T>(f: impl FnOnce() -> T) -> (T, i64) {
    let before = counters();
    let v = f();
    let net = match (before, counters()) {
        (Some((a0, d0)), Some((a1, d1))) => a1.wrapping_sub(a0) as i64 - d1.wrapping_sub(d0) as i64,
        _ => 0,
    };
    (v, net)
}

/// This thread's (allocated, deallocated) byte counters.
#[cfg(feature = "jemalloc")]
fn counters() -> Option<(u64, u64)> {
    use tikv_jemalloc_ctl::thread::{allocatedp, deallocatedp};
    Some((allocatedp::read().ok()?.get(), deallocatedp::read().ok()?.get()))
}

#[cfg(not(feature = "jemalloc"))]
fn counters() -> Option<(u64, u64)> {
    None
}

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use super::*;

    #[test]
    fn counts_what_stays_allocated_not_what_comes_and_goes() {
        let (kept, grew) = net_bytes(|| vec![7u8; 4 << 20]);
        assert!((4 << 20..(4 << 20) + 65536).contains(&grew), "a kept 4 MiB buffer counts: {grew}");
        let ((), transient) = net_bytes(|| drop(std::hint::black_box(vec![1u8; 8 << 20])));
        assert!(transient.abs() < 65536, "a buffer freed inside counts nothing: {transient}");
        let ((), shrank) = net_bytes(|| drop(kept));
        assert!(shrank <= -(4 << 20), "freeing it counts against: {shrank}");
    }
}

//! The fd 3 hot path: 20 ms frames of bytes turned into samples and pushed through the rtrb
//! ring, then popped in VAD-frame pieces, exactly as the reader and recognizer threads do.

use asr_bridge::audio::reader::bytes_to_samples;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn ring(c: &mut Criterion) {
    let mut g = c.benchmark_group("ring");
    for (name, frame_bytes) in [("slin-20ms", 320usize), ("slin16-20ms", 640)] {
        let bytes: Vec<u8> = (0..frame_bytes).map(|i| (i * 7) as u8).collect();
        g.throughput(Throughput::Bytes(frame_bytes as u64 * 50));
        g.bench_function(format!("{name}-push-pop-1s"), |b| {
            b.iter_batched(
                || rtrb::RingBuffer::<i16>::new(512 * 1024),
                |(mut p, mut cons)| {
                    let mut carry = None;
                    let mut samples = [0i16; 4096];
                    let mut out = [0i16; 320];
                    for _ in 0..50 {
                        let n = bytes_to_samples(&bytes, &mut carry, &mut samples);
                        let ch = p.write_chunk_uninit(n).unwrap();
                        ch.fill_from_iter(samples[..n].iter().copied());
                        let avail = cons.slots();
                        let chunk = cons.read_chunk(avail.min(out.len())).unwrap();
                        let (a, _) = chunk.as_slices();
                        out[..a.len()].copy_from_slice(a);
                        chunk.commit_all();
                    }
                    out
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, ring);
criterion_main!(benches);

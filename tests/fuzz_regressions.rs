//! Replays every saved fuzz input (`fuzz/regressions/<target>/`: inputs that once broke a
//! parser, or were worth keeping) through the same invariants the fuzz targets check.

use asr_bridge::agi::invariants;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        if std::panic::catch_unwind(|| check(&data)).is_err() {
            panic!("{} breaks the {target} invariants", p.display());
        }
        n += 1;
    }
    n
}

#[test]
fn saved_inputs_keep_passing() {
    assert!(replay("header", invariants::header) >= 1);
    assert!(replay("reply", invariants::reply) >= 1);
    assert!(replay("quoting", invariants::quoting) >= 1);
    assert!(replay("serve_message", asr_bridge::serve::invariants::message) >= 1);
}

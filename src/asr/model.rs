//! Model directory checks, done before libvosk sees the directory: libvosk 0.3.45 only says
//! "could not load", so every file it needs is checked here and a missing one is named.
//! Also reads `conf/mfcc.conf` for the model's sample rate and whether Kaldi may upsample.
//! Runs on the controller thread (cheap: a few `stat`s and one small read).

use std::fs;
use std::path::{Path, PathBuf};

use super::AsrError;

/// Where the model is looked for when neither `--model` nor `ASR_BRIDGE_MODEL` says.
pub const DEFAULT_MODEL: &str = "/var/lib/asr_bridge/model";

/// What the bridge needs to know about a model before loading it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// The model directory.
    pub dir: PathBuf,
    /// `--sample-frequency` in the feature config (Kaldi's default is 16000).
    pub sample_rate: u32,
    /// `--allow-upsample=true` in the feature config.
    pub allow_upsample: bool,
    /// `graph/HCLr.fst` and `graph/Gr.fst` exist: runtime grammars work.
    pub runtime_grammar: bool,
}

impl ModelInfo {
    /// The rate to hand libvosk for audio at `audio_rate`, and whether the bridge must
    /// resample first: Kaldi downsamples on its own but upsamples only when allowed.
    pub fn feed_rate(&self, audio_rate: u32) -> (u32, bool) {
        if audio_rate < self.sample_rate && !self.allow_upsample {
            (self.sample_rate, true)
        } else {
            (audio_rate, false)
        }
    }
}

fn need(dir: &Path, rel: &str, missing: &mut Vec<String>) {
    let p = dir.join(rel);
    match fs::metadata(&p) {
        Err(_) => missing.push(format!("{rel} is missing")),
        Ok(m) if !m.is_file() => missing.push(format!("{rel} is not a file")),
        Ok(m) if m.len() == 0 => missing.push(format!("{rel} is empty")),
        Ok(_) => {
            if fs::File::open(&p).is_err() {
                missing.push(format!("{rel} is not readable"));
            }
        }
    }
}

/// Checks `dir` the way libvosk 0.3.45's `Model::Model` will read it.
pub fn inspect(dir: &Path) -> Result<ModelInfo, AsrError> {
    let d = dir.display().to_string();
    match fs::metadata(dir) {
        Err(_) => return Err(AsrError::ModelMissing(d)),
        Ok(m) if !m.is_dir() => return Err(AsrError::ModelNotDir(d)),
        Ok(_) => {}
    }
    if fs::read_dir(dir).is_err() {
        return Err(AsrError::ModelIncomplete { dir: d, what: "the directory is not readable".into() });
    }
    let exists = |rel: &str| dir.join(rel).is_file();
    let mut missing = Vec::new();
    // Layout: V2 (am/, conf/, graph/, ivector/) or V1 (files in the root).
    let (conf_dir, ivector_dir) = if exists("am/final.mdl") || exists("conf/model.conf") {
        need(dir, "am/final.mdl", &mut missing);
        need(dir, "conf/model.conf", &mut missing);
        ("conf/", "ivector/")
    } else if exists("final.mdl") {
        need(dir, "mfcc.conf", &mut missing);
        ("", "")
    } else {
        return Err(AsrError::ModelIncomplete {
            dir: d,
            what: "no model files: expected am/final.mdl and conf/model.conf (or final.mdl and mfcc.conf); is this a Vosk model directory?".into(),
        });
    };
    let feature_conf = [format!("{conf_dir}mfcc.conf"), format!("{conf_dir}fbank.conf")].into_iter().find(|c| exists(c));
    if feature_conf.is_none() {
        missing.push(format!("{conf_dir}mfcc.conf (or fbank.conf) is missing"));
    }
    let runtime_grammar = exists("graph/HCLr.fst") && exists("graph/Gr.fst");
    if exists("graph/HCLG.fst") {
        need(dir, "graph/HCLG.fst", &mut missing);
    } else if exists("graph/HCLr.fst") || exists("graph/Gr.fst") {
        for f in ["graph/HCLr.fst", "graph/Gr.fst", "graph/disambig_tid.int"] {
            need(dir, f, &mut missing);
        }
    } else {
        missing.push("graph/HCLG.fst (or graph/HCLr.fst with graph/Gr.fst) is missing".into());
    }
    if exists(&format!("{ivector_dir}final.ie")) {
        for f in ["final.ie", "splice.conf", "online_cmvn.conf", "final.mat", "global_cmvn.stats", "final.dubm"] {
            need(dir, &format!("{ivector_dir}{f}"), &mut missing);
        }
    }
    if !missing.is_empty() {
        return Err(AsrError::ModelIncomplete { dir: d, what: missing.join(", ") });
    }
    let (sample_rate, allow_upsample) = match &feature_conf {
        Some(c) => parse_feature_conf(&fs::read_to_string(dir.join(c)).unwrap_or_default()),
        None => (16000, false),
    };
    Ok(ModelInfo { dir: dir.to_path_buf(), sample_rate, allow_upsample, runtime_grammar })
}

/// `--sample-frequency` (default 16000) and `--allow-upsample` from a Kaldi feature config.
pub fn parse_feature_conf(text: &str) -> (u32, bool) {
    let mut rate = 16000;
    let mut up = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(v) = line.strip_prefix("--sample-frequency=") {
            if let Ok(r) = v.trim().parse::<f64>() {
                rate = r as u32;
            }
        } else if let Some(v) = line.strip_prefix("--allow-upsample=") {
            up = matches!(v.trim(), "true" | "1");
        } else if line == "--allow-upsample" {
            up = true;
        }
    }
    (rate, up)
}

/// Where the call's model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelChoice {
    /// `--model`, `ASR_BRIDGE_MODEL`, or the built-in default.
    Fixed(PathBuf),
    /// `--models-root`: a subdirectory per language.
    ByLanguage(PathBuf),
}

impl ModelChoice {
    /// The model directory for a call in `language` (`agi_language`). Under a models root the
    /// rule is: the language as given (`en_US`), then its base (`en`), then `default`.
    pub fn resolve(&self, language: Option<&str>) -> Result<PathBuf, NoModel> {
        let root = match self {
            ModelChoice::Fixed(p) => return Ok(p.clone()),
            ModelChoice::ByLanguage(r) => r,
        };
        let lang = language.unwrap_or("").trim();
        let base = lang.split(['_', '-']).next().unwrap_or("");
        let mut tried: Vec<String> = Vec::new();
        for cand in [lang, &lang.to_ascii_lowercase(), base, "default"] {
            if cand.is_empty() || cand.contains(['/', '.']) || tried.iter().any(|t| t == cand) {
                continue;
            }
            tried.push(cand.to_string());
            let p = root.join(cand);
            if p.is_dir() {
                return Ok(p);
            }
        }
        let mut found: Vec<String> = std::fs::read_dir(root)
            .map(|d| d.filter_map(|e| e.ok()).filter(|e| e.path().is_dir()).map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        found.sort();
        Err(NoModel { language: lang.to_string(), base: base.to_string(), root: root.clone(), tried, found })
    }
}

/// No model directory under `--models-root` for the call's language.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "no model for language {language:?} under {} (tried {}; found: {}): add {}/{} or {}/default",
    root.display(),
    tried.join(", "),
    if found.is_empty() { "none".to_string() } else { found.join(", ") },
    root.display(),
    if base.is_empty() { "LANG" } else { base },
    root.display()
)]
pub struct NoModel {
    pub language: String,
    pub base: String,
    pub root: PathBuf,
    pub tried: Vec<String>,
    pub found: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_conf() {
        assert_eq!(parse_feature_conf("--use-energy=false\n--allow-upsample=true\n"), (16000, true));
        assert_eq!(parse_feature_conf("--sample-frequency=8000 # narrowband\n"), (8000, false));
        assert_eq!(parse_feature_conf("--sample-frequency=16000\n--allow-downsample=true\n"), (16000, false));
    }

    #[test]
    fn missing_and_incomplete() {
        let t = tempfile::tempdir().unwrap();
        assert!(matches!(inspect(&t.path().join("nope")), Err(AsrError::ModelMissing(_))));
        let err = inspect(t.path()).unwrap_err().to_string();
        assert!(err.contains("no model files"), "{err}");
        fs::create_dir_all(t.path().join("am")).unwrap();
        fs::create_dir_all(t.path().join("conf")).unwrap();
        fs::write(t.path().join("am/final.mdl"), b"x").unwrap();
        fs::write(t.path().join("conf/model.conf"), b"").unwrap();
        let err = inspect(t.path()).unwrap_err().to_string();
        assert!(err.contains("conf/model.conf is empty"), "{err}");
        assert!(err.contains("conf/mfcc.conf (or fbank.conf) is missing"), "{err}");
        assert!(err.contains("graph/HCLG.fst"), "{err}");
    }

    #[test]
    fn feed_rate_resamples_only_without_upsample() {
        let mut m = ModelInfo { dir: PathBuf::new(), sample_rate: 16000, allow_upsample: true, runtime_grammar: true };
        assert_eq!(m.feed_rate(8000), (8000, false));
        m.allow_upsample = false;
        assert_eq!(m.feed_rate(8000), (16000, true));
        assert_eq!(m.feed_rate(16000), (16000, false));
        assert_eq!(m.feed_rate(48000), (48000, false));
    }
}

//! The tiers of the tree, checked: every `crate::` path in a module points at its own tier or
//! one below. Core (the AGI protocol, audio, recognition, the server protocol, typed values)
//! knows nothing of a call; the bridge (the EAGI call) and the server are side by side on top of
//! it and never import each other; the tools (simulated host, bench, doctor, the command line)
//! sit on top of everything.

use std::path::{Path, PathBuf};

/// The tier of each top-level module: 0 core, 1 bridge or server, 2 tools.
const TIERS: &[(&str, u8, &str)] = &[
    ("agi", 0, "core"),
    ("audio", 0, "core"),
    ("asr", 0, "core"),
    ("protocol", 0, "core"),
    ("net", 0, "core"),
    ("value", 0, "core"),
    ("log", 0, "core"),
    ("procfs", 0, "core"),
    ("config", 1, "bridge"),
    ("profile", 1, "bridge"),
    ("menu", 1, "bridge"),
    ("session", 1, "bridge"),
    ("serve", 1, "server"),
    ("sim", 2, "tools"),
    ("bench", 2, "tools"),
    ("bench_timing", 2, "tools"),
    ("doctor", 2, "tools"),
    ("cli", 2, "tools"),
];

fn tier(module: &str) -> Option<(u8, &'static str)> {
    TIERS.iter().find(|(m, _, _)| *m == module).map(|(_, t, name)| (*t, *name))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file under src/ belongs to (`src/serve/call.rs` -> `serve`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// The modules a line of code names as `crate::NAME` (comments left out).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("crate::")
        .filter(|(i, _)| !code[..*i].ends_with("asr_bridge::") && !code[..*i].ends_with('$'))
        .map(|(i, m)| code[i + m.len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect())
        .collect()
}

#[test]
fn every_import_points_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut checked = 0;
    for f in &files {
        let Some(own) = module_of(&src, f) else { continue };
        let Some((own_tier, own_name)) = tier(&own) else {
            assert!(matches!(own.as_str(), "lib" | "main"), "{}: module `{own}` has no tier in tests/layers.rs", f.display());
            continue;
        };
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            for target in crate_paths(line) {
                let Some((t, name)) = tier(&target) else { continue };
                checked += 1;
                let sideways = t == own_tier && name != own_name;
                if t > own_tier || sideways {
                    wrong.push(format!("{}:{}: {own} ({own_name}) uses crate::{target} ({name})", f.display(), n + 1));
                }
            }
        }
    }
    assert!(checked > 100, "the scan found only {checked} crate:: paths");
    assert!(wrong.is_empty(), "imports that point up or sideways:\n{}", wrong.join("\n"));
}

#[test]
fn the_scan_sees_a_wrong_import() {
    assert_eq!(crate_paths("use crate::session::Verdict; // crate::cli"), ["session"]);
    assert_eq!(tier("serve"), Some((1, "server")));
    assert_eq!(tier("session"), Some((1, "bridge")));
}

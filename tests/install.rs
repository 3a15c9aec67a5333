//! Deployment: `make install` into a temporary DESTDIR, `doctor` against it (passing and
//! deliberately broken), a simulated call through the installed binary with a profile from
//! a config file, and `make uninstall` leaving nothing behind. Issue: "Deploying on a real
//! Asterisk box".

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn make(target: &str, dest: &Path) -> std::process::Output {
    Command::new("make")
        .current_dir(root())
        .args([target, &format!("DESTDIR={}", dest.display()), "PREFIX=/usr", "AGIDIR=/var/lib/asterisk/agi-bin"])
        .arg(format!("INSTALL_BIN={}", bin().display()))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("make")
}

fn doctor(installed: &Path, dest: &Path, config: &Path) -> (bool, String) {
    let out = Command::new(installed)
        .args(["doctor", "--asterisk-user=root"])
        .arg(format!("--config={}", config.display()))
        .arg(format!("--agi-dir={}", dest.join("var/lib/asterisk/agi-bin").display()))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("ASR_BRIDGE_MODEL")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn install_doctor_call_uninstall() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    let out = make("install", &dest);
    assert!(out.status.success(), "make install: {}", String::from_utf8_lossy(&out.stderr));
    let installed = dest.join("usr/bin/asr_bridge");
    for f in ["usr/bin/asr_bridge", "usr/lib/asr_bridge/libvosk.so", "usr/share/man/man1/asr_bridge.1", "usr/share/bash-completion/completions/asr_bridge"] {
        assert!(dest.join(f).is_file(), "{f} installed");
    }
    let agi = dest.join("var/lib/asterisk/agi-bin/asr_bridge");
    assert_eq!(std::fs::canonicalize(&agi).unwrap(), std::fs::canonicalize(&installed).unwrap());
    // The systemd unit of the resident server points at the installed binary and uses
    // options `serve` accepts.
    let unit = std::fs::read_to_string(dest.join("usr/lib/systemd/system/asr_bridge.service")).unwrap();
    let exec = unit.lines().find_map(|l| l.strip_prefix("ExecStart=")).expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().filter(|w| !w.starts_with('$')).collect();
    assert_eq!(words[..2], ["/usr/bin/asr_bridge", "serve"], "{exec}");
    assert!(unit.contains("Type=notify") && unit.contains("RuntimeDirectory=asr_bridge") && unit.contains("RuntimeDirectoryPreserve=yes"));
    // Socket activation: the socket unit listens where the service would.
    let socket = std::fs::read_to_string(dest.join("usr/lib/systemd/system/asr_bridge.socket")).unwrap();
    let listen = socket.lines().find_map(|l| l.strip_prefix("ListenStream=")).expect("ListenStream");
    assert!(exec.contains(&format!("--listen=unix:{listen}")), "{listen} vs {exec}");
    let help = Command::new(&installed).args(&words[1..]).arg("--help").env_remove("LD_LIBRARY_PATH").output().unwrap();
    assert!(help.status.success(), "{exec}: {}", String::from_utf8_lossy(&help.stderr));
    let man = std::fs::read_to_string(dest.join("usr/share/man/man1/asr_bridge.1")).unwrap();
    assert!(man.contains("end\\-silence"), "man page lists the options");

    // A config with defaults and a profile.
    let phrase = manifest().into_iter().find(|e| e["file"] == "ko-hello-8k.wav").unwrap()["recognized"].as_str().unwrap().to_string();
    let calls = tmp.path().join("calls.json");
    let cfg = tmp.path().join("asr_bridge.toml");
    std::fs::write(
        &cfg,
        format!(
            "model = \"{}\"\njson-log = \"{}\"\n\n[profile.menu]\nend-silence = \"700ms\"\nchoice = [\"100:{phrase}\", \"200:감사합니다\"]\n",
            model().display(),
            calls.display()
        ),
    )
    .unwrap();

    // doctor passes, with libvosk from the installed place (no LD_LIBRARY_PATH).
    let (ok, text) = doctor(&installed, &dest, &cfg);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("libvosk loaded from {}", dest.join("usr/lib/asr_bridge/libvosk.so").display())), "{text}");
    assert!(text.contains("expects 16000 Hz"), "{text}");

    // doctor fails, and says why: a missing model, an unknown key, no AGI entry.
    let bad = tmp.path().join("bad.toml");
    std::fs::write(&bad, "model = \"/nonexistent/model\"\n").unwrap();
    let (ok, text) = doctor(&installed, &dest, &bad);
    assert!(!ok && text.contains("[FAIL]") && text.contains("/nonexistent/model does not exist"), "{text}");
    std::fs::write(&bad, format!("model = \"{}\"\n[profile.x]\nbarge = 1\n", model().display())).unwrap();
    let (ok, text) = doctor(&installed, &dest, &bad);
    assert!(!ok && text.contains("line 3") && text.contains("`barge`"), "{text}");
    let out = Command::new(&installed)
        .args(["doctor", "--asterisk-user=root", "--agi-dir=/nonexistent"])
        .arg(format!("--config={}", cfg.display()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("/nonexistent/asr_bridge does not exist"));

    // A simulated call through the installed binary, options from the profile.
    let res = tmp.path().join("sim.json");
    let out = Command::new(&installed)
        .args(["simulate", "--quiet", "--speed=2"])
        .arg(format!("--wav={}", wav("ko-hello-8k.wav").display()))
        .arg(format!("--json={}", res.display()))
        .args(["--", "--profile=menu"])
        .env("ASR_BRIDGE_CONFIG", &cfg)
        // In-process: this test is about the installed files, and a resident server started
        // by the default --server=auto would outlive it.
        .env("ASR_BRIDGE_SERVER", "none")
        .env_remove("ASR_BRIDGE_MODEL")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&res).unwrap()).unwrap();
    assert_eq!(r["vars"]["ASR_STATUS"], "OK", "{r:#}");
    assert_eq!(r["vars"]["ASR_CHOICE"], "100");
    let record = CallRecord::last_in(&calls).expect("json-log from the file defaults");
    assert_eq!((record.status, record.choice.as_str()), (asr_bridge::session::Status::Ok, "100"), "{record}");

    // uninstall leaves no file behind.
    let out = make("uninstall", &dest);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(walk(&dest), Vec::<PathBuf>::new());
}

#[test]
fn unknown_profile_is_a_clear_error_in_the_dialplan() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("asr_bridge.toml");
    std::fs::write(&cfg, format!("model = \"{}\"\n[profile.menu]\nretries = 1\n", model().display())).unwrap();
    let mut call = Call::new("ko-hello-8k.wav", &["--profile=sales"]);
    call.opts.env.push(("ASR_BRIDGE_CONFIG".into(), cfg.display().to_string()));
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("no [profile.sales]"), "{}", out.var("ASR_ERROR"));
}

#[test]
fn models_root_picks_the_call_language() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("models");
    std::fs::create_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(model(), root.join("ko")).unwrap();
    // The simulated host says agi_language: ko.
    let mut call = Call::new("ko-hello-8k.wav", &["--end-silence=700ms"]);
    call.opts.bridge_args.retain(|a| !a.starts_with("--model="));
    call.opts.bridge_args.push(format!("--models-root={}", root.display()));
    let out = call.run();
    out.assert_ok();
    // No model for the language: a clear error.
    std::fs::remove_file(root.join("ko")).unwrap();
    std::os::unix::fs::symlink(model(), root.join("en")).unwrap();
    let mut call = Call::new("ko-hello-8k.wav", &[]);
    call.opts.bridge_args.retain(|a| !a.starts_with("--model="));
    call.opts.bridge_args.push(format!("--models-root={}", root.display()));
    let out = call.run();
    assert_eq!(out.status(), "ERROR");
    assert!(out.var("ASR_ERROR").contains("no model for language \"ko\"") && out.var("ASR_ERROR").contains("found: en"), "{}", out.var("ASR_ERROR"));
}

/// `--help`, the man page and the completions come from one clap definition: every mode is in
/// each, and the EAGI call's options are in the top-level help.
#[test]
fn help_man_page_and_completions_list_every_mode() {
    let run = |args: &[&str]| {
        let out = Command::new(bin()).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let help = run(&["--help"]);
    let man = run(&["man"]);
    let bash = run(&["completions", "bash"]);
    for mode in ["serve", "stats", "simulate", "transcribe", "bench", "doctor", "man", "completions"] {
        assert!(help.lines().any(|l| l.trim_start().starts_with(mode)), "--help lists {mode}:\n{help}");
        assert!(man.contains(&format!("asr_bridge\\-{mode}")), "the man page lists {mode}");
        assert!(bash.contains(mode), "bash completions know {mode}");
        let sub = run(&[mode, "--help"]);
        assert!(sub.contains("Usage: asr_bridge"), "{mode} --help: {sub}");
    }
    assert!(help.contains("--end-silence") && man.contains("end\\-silence"), "the EAGI call's options");
    // A mode's bad value is refused where it enters, naming the option (exit 2, clap's status).
    let out = Command::new(bin()).args(["serve", "--idle-timeout=soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--idle-timeout"), "{}", String::from_utf8_lossy(&out.stderr));
}

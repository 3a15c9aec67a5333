//! The config file (`/etc/asr_bridge.toml`, or `--config` / `ASR_BRIDGE_CONFIG`): defaults
//! for every call and named profiles, so a dialplan line can be `EAGI(asr_bridge,--profile=menu)`.
//! Keys are the long option names. Precedence: argv, then environment, then profile, then
//! file defaults, then built-in defaults. The file is turned into `--key=value` arguments put
//! before argv (the last value of an option wins), and an option whose environment variable
//! is set is not taken from the file. Runs on the controller thread, before anything else.

use std::path::{Path, PathBuf};

use clap::CommandFactory;

use crate::config::CallArgs;

/// The config file read when none is named and `/etc/asr_bridge.toml` exists.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/asr_bridge.toml";

/// Errors in the config file.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("config {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config {path} line {line}: unknown key `{key}`{section}")]
    UnknownKey { path: String, line: usize, key: String, section: String },
    #[error("config {path} line {line}: `{key}` must be a string, number, boolean or list of strings")]
    BadValue { path: String, line: usize, key: String },
    #[error("--profile={name}: {why}")]
    Profile { name: String, why: String },
}

/// Options a config file may set: every long option but `config` and `profile`.
fn known_keys() -> Vec<(String, Option<String>)> {
    CallArgs::command()
        .get_arguments()
        .filter_map(|a| a.get_long().map(|l| (l.to_string(), a.get_env().map(|e| e.to_string_lossy().into_owned()))))
        .filter(|(k, _)| k != "config" && k != "profile" && k != "help" && k != "version")
        .collect()
}

/// The line where `key` is set inside `section` ("" for the top level), for error messages.
fn line_of(text: &str, section: &str, key: &str) -> usize {
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.trim();
        if let Some(h) = l.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            current = h.trim().to_string();
            continue;
        }
        let k = l.split('=').next().unwrap_or("").trim().trim_matches('"');
        if current == section && k == key {
            return i + 1;
        }
    }
    0
}

/// One `--key=value` list from a TOML table, checking every key.
fn table_args(path: &str, text: &str, section: &str, table: &toml::Table, env_set: &dyn Fn(&str) -> bool) -> Result<Vec<String>, ProfileError> {
    let keys = known_keys();
    let mut out = Vec::new();
    for (key, value) in table {
        let Some((_, env)) = keys.iter().find(|(k, _)| k == key) else {
            return Err(ProfileError::UnknownKey {
                path: path.into(),
                line: line_of(text, section, key),
                key: key.clone(),
                section: if section.is_empty() { String::new() } else { format!(" in [{section}]") },
            });
        };
        if env.as_deref().is_some_and(env_set) {
            continue; // the environment outranks the file
        }
        let bad = || ProfileError::BadValue { path: path.into(), line: line_of(text, section, key), key: key.clone() };
        match value {
            toml::Value::String(s) => out.push(format!("--{key}={s}")),
            toml::Value::Integer(n) => out.push(format!("--{key}={n}")),
            toml::Value::Float(f) => out.push(format!("--{key}={f}")),
            toml::Value::Boolean(true) => out.push(format!("--{key}")),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(items) => {
                for it in items {
                    match it {
                        toml::Value::String(s) => out.push(format!("--{key}={s}")),
                        _ => return Err(bad()),
                    }
                }
            }
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// A parsed config file.
#[derive(Debug, Clone)]
pub(crate) struct ConfigFile {
    pub path: PathBuf,
    text: String,
    doc: toml::Table,
}

impl ConfigFile {
    /// Reads and parses the file; unknown keys are found by [`ConfigFile::args`].
    pub(crate) fn load(path: &Path) -> Result<ConfigFile, ProfileError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError::Read { path: p.clone(), reason: e.to_string() })?;
        let doc: toml::Table =
            text.parse().map_err(|e: toml::de::Error| ProfileError::Read { path: p, reason: e.to_string().lines().next().unwrap_or("").to_string() })?;
        Ok(ConfigFile { path: path.to_path_buf(), text, doc })
    }

    /// Profile names.
    pub(crate) fn profiles(&self) -> Vec<String> {
        match self.doc.get("profile") {
            Some(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// The file's arguments: its defaults, then the profile's (if any).
    pub(crate) fn args(&self, profile: Option<&str>, env_set: &dyn Fn(&str) -> bool) -> Result<Vec<String>, ProfileError> {
        let p = self.path.display().to_string();
        let mut defaults = self.doc.clone();
        let profiles = match defaults.remove("profile") {
            Some(toml::Value::Table(t)) => t,
            Some(_) => return Err(ProfileError::BadValue { path: p, line: line_of(&self.text, "", "profile"), key: "profile".into() }),
            None => toml::Table::new(),
        };
        let mut out = table_args(&p, &self.text, "", &defaults, env_set)?;
        for (name, t) in &profiles {
            let toml::Value::Table(t) = t else {
                return Err(ProfileError::BadValue { path: p, line: 0, key: format!("profile.{name}") });
            };
            // Every profile is checked, not only the one asked for.
            let args = table_args(&p, &self.text, &format!("profile.{name}"), t, env_set)?;
            if Some(name.as_str()) == profile {
                out = merge(out, args);
            }
        }
        if let Some(name) = profile {
            if !profiles.contains_key(name) {
                return Err(ProfileError::Profile { name: name.into(), why: format!("no [profile.{name}] in {p} (profiles: {})", self.profiles().join(", ")) });
            }
        }
        Ok(out)
    }
}

/// The value of `--name=value` in argv (the last one wins), if given.
pub(crate) fn arg_value(argv: &[String], name: &str) -> Option<String> {
    let prefix = format!("--{name}=");
    argv.iter().rev().find_map(|a| a.strip_prefix(&prefix).map(str::to_string))
}

/// The config file to read: `--config`, then `ASR_BRIDGE_CONFIG`, then `/etc/asr_bridge.toml`
/// if it exists.
pub(crate) fn config_path(argv: &[String]) -> Option<PathBuf> {
    arg_value(argv, "config")
        .or_else(|| std::env::var("ASR_BRIDGE_CONFIG").ok().filter(|v| !v.is_empty()))
        .map(PathBuf::from)
        .or_else(|| Path::new(DEFAULT_CONFIG).is_file().then(|| PathBuf::from(DEFAULT_CONFIG)))
}

/// argv with the config file's defaults and profile put in front of it.
pub(crate) fn expand(argv: Vec<String>) -> Result<Vec<String>, ProfileError> {
    let profile = arg_value(&argv, "profile").filter(|p| !p.is_empty());
    let Some(path) = config_path(&argv) else {
        return match profile {
            Some(name) => {
                Err(ProfileError::Profile { name, why: format!("no config file ({DEFAULT_CONFIG} does not exist; set --config or ASR_BRIDGE_CONFIG)") })
            }
            None => Ok(argv),
        };
    };
    let file = ConfigFile::load(&path)?;
    let env_set = |var: &str| std::env::var_os(var).is_some_and(|v| !v.is_empty());
    let args = file.args(profile.as_deref(), &env_set)?;
    Ok(merge(args, argv))
}

/// Options a later source (the profile, then argv) replaces as a whole instead of adding to:
/// the dialplan's `--server` list is the call's list, not more servers after the file's.
const REPLACED_AS_A_WHOLE: &[&str] = &["server"];

/// `earlier` then `later`, less the [`REPLACED_AS_A_WHOLE`] options of `earlier` that `later`
/// gives again.
fn merge(mut earlier: Vec<String>, later: Vec<String>) -> Vec<String> {
    for name in REPLACED_AS_A_WHOLE {
        let (flag, prefix) = (format!("--{name}"), format!("--{name}="));
        let sets = |a: &String| *a == flag || a.starts_with(&prefix);
        if later.iter().any(sets) {
            earlier.retain(|a| !sets(a));
        }
    }
    earlier.extend(later);
    earlier
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("asr_bridge.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    const TEXT: &str = "model = \"/m/ko\"\nend-silence = \"900ms\"\n\n[profile.menu]\nprompt = \"custom/menu\"\nchoice = [\"100:sales\", \"200:support\"]\nretries = 2\nanswer = true\n";

    #[test]
    fn precedence_argv_env_profile_file() {
        let (_d, p) = file(TEXT);
        let f = ConfigFile::load(&p).unwrap();
        let no_env = |_: &str| false;
        let args = f.args(Some("menu"), &no_env).unwrap();
        assert!(args.contains(&"--model=/m/ko".to_string()), "{args:?}");
        let pos = |a: &str| args.iter().position(|x| x == a).unwrap();
        assert!(pos("--end-silence=900ms") < pos("--retries=2"), "file defaults come before the profile");
        assert!(args.contains(&"--retries=2".to_string()) && args.contains(&"--answer".to_string()));
        let mut argv = args.clone();
        argv.push("--end-silence=500ms".into());
        let c = CallArgs::parse_from_args(argv).unwrap().validate().unwrap();
        assert_eq!(c.timers.end_silence, std::time::Duration::from_millis(500), "argv wins");
        assert_eq!(c.menu.choices.len(), 2);
        // An option whose environment variable is set is not taken from the file.
        let env = |v: &str| v == "ASR_BRIDGE_MODEL";
        assert!(!f.args(None, &env).unwrap().iter().any(|a| a.starts_with("--model=")));
    }

    #[test]
    fn a_later_server_list_replaces_the_earlier_one() {
        let (_d, p) = file("server = [\"unix:/a\", \"unix:/b\"]\nprompt = \"hello\"\n[profile.lb]\nserver = \"ws://lb:80\"\nprompt = \"menu\"\n");
        let f = ConfigFile::load(&p).unwrap();
        let servers = |args: Vec<String>| {
            CallArgs::parse_from_args(args).unwrap().validate().unwrap().server.unwrap().servers.iter().map(ToString::to_string).collect::<Vec<_>>()
        };
        assert_eq!(servers(f.args(None, &|_| false).unwrap()), ["unix:/a", "unix:/b"], "a list in the file");
        let profile = f.args(Some("lb"), &|_| false).unwrap();
        assert_eq!(servers(profile.clone()), ["ws://lb:80/"], "the profile's list replaces the defaults'");
        assert_eq!(profile.iter().filter(|a| a.starts_with("--prompt=")).count(), 2, "other repeatable options still add up");
        let mut argv = f.args(None, &|_| false).unwrap();
        argv = merge(argv, vec!["--server=unix:/c".into(), "--server=unix:/d".into()]);
        assert_eq!(servers(argv), ["unix:/c", "unix:/d"], "argv's list replaces the file's");
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let (_d, p) = file("model = \"/m\"\n[profile.menu]\nprompt = \"x\"\nbarge = true\n");
        let e = ConfigFile::load(&p).unwrap().args(None, &|_| false).unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("`barge`") && e.contains("[profile.menu]"), "{e}");
    }

    #[test]
    fn missing_profile_and_bad_toml() {
        let (_d, p) = file(TEXT);
        let e = ConfigFile::load(&p).unwrap().args(Some("nope"), &|_| false).unwrap_err().to_string();
        assert!(e.contains("no [profile.nope]") && e.contains("menu"), "{e}");
        let (_d2, p2) = file("model = \n");
        assert!(ConfigFile::load(&p2).is_err());
    }
}

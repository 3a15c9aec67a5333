//! `asr_bridge doctor`: the self-check for a real Asterisk box. Each check gives one line with
//! a plain-language fix; the exit status is non-zero when something is wrong. The report is
//! returned as text and printed by `main` (an ordinary command: stdout is the terminal there).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::asr::model::inspect;
use crate::asr::model::ModelChoice;
use crate::asr::recognizer::ServerConfig;
use crate::config::CallArgs;
use crate::net::{fetch_stats, ServerAddr};
use crate::profile::{config_path, ConfigFile};

/// Checks an installation.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Config file (default: ASR_BRIDGE_CONFIG, then /etc/asr_bridge.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Asterisk's AGI directory.
    #[arg(long, default_value = "/var/lib/asterisk/agi-bin")]
    pub agi_dir: PathBuf,
    /// The user Asterisk runs as.
    #[arg(long, default_value = "asterisk")]
    pub asterisk_user: String,
    /// Also load each model with libvosk (slow: seconds per model).
    #[arg(long)]
    pub load: bool,
    /// Extra model directories to check.
    #[arg(long)]
    pub model: Vec<PathBuf>,
    /// A recognition server to check (besides those the config names): unix:PATH or ws://HOST:PORT.
    #[arg(long)]
    pub server: Vec<ServerAddr>,
}

#[derive(Default)]
struct Report {
    failed: usize,
    warned: usize,
    text: String,
}

impl Report {
    fn ok(&mut self, what: &str) {
        self.text.push_str(&format!("[ OK ] {what}\n"));
    }
    fn warn(&mut self, what: &str, fix: &str) {
        self.warned += 1;
        self.text.push_str(&format!("[WARN] {what}\n       fix: {fix}\n"));
    }
    fn fail(&mut self, what: &str, fix: &str) {
        self.failed += 1;
        self.text.push_str(&format!("[FAIL] {what}\n       fix: {fix}\n"));
    }
}

/// Where libvosk.so was loaded from (this process has it mapped).
pub fn libvosk_path() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|l| l.split_whitespace().nth(5).filter(|p| p.ends_with("/libvosk.so")).map(str::to_string))
}

fn check_model(r: &mut Report, dir: &Path, load: bool) {
    match inspect(dir) {
        Err(e) => r.fail(&e.to_string(), "put a complete Vosk model there (e.g. unzip vosk-model-small-en-us-0.15) or fix the path"),
        Ok(info) => {
            let rate = match info.feed_rate(8000) {
                _ if info.sample_rate == 8000 => "a narrowband (8 kHz) model: telephony audio as is".to_string(),
                (_, true) => format!("expects {} Hz and may not upsample: the bridge resamples 8 kHz calls itself", info.sample_rate),
                (_, false) => format!("expects {} Hz; 8 kHz calls are upsampled by Kaldi (allow-upsample)", info.sample_rate),
            };
            let grammar = if info.runtime_grammar { "runtime grammars: yes" } else { "runtime grammars: no (menus match the free transcript)" };
            r.ok(&format!("model {}: {rate}; {grammar}", dir.display()));
            if load {
                match crate::asr::engine::load_model(&info) {
                    Ok((_, t)) => r.ok(&format!("model {} loads in {:.1} s", dir.display(), t.as_secs_f64())),
                    Err(e) => r.fail(&e.to_string(), "re-download the model: a file is truncated or corrupt"),
                }
            }
        }
    }
}

/// `--server=auto`: where the resident server of `model` is, or why calls will recognize
/// in-process.
fn check_resident(r: &mut Report, model: &std::path::Path) {
    use crate::asr::resident;
    let sock = match resident::socket_of(model) {
        Ok(s) => s,
        Err(e) => {
            return r
                .warn(&format!("--server=auto: {e}: calls will recognize in-process"), "set XDG_RUNTIME_DIR to a private directory, or create /run/asr_bridge")
        }
    };
    let addr = ServerAddr::Unix(sock.clone());
    match fetch_stats(&addr, std::time::Duration::from_secs(2), None) {
        Ok(st) => r.ok(&format!("--server=auto: the resident server of {} runs at {addr} ({} calls active)", model.display(), st["active"])),
        Err(_) => r.ok(&format!("--server=auto: no resident server of {} yet; the first call starts one at {addr}", model.display())),
    }
}

/// A configured `--server`: it answers, and (for a Unix socket) the Asterisk user may connect.
fn check_server(r: &mut Report, addr: &ServerAddr, s: &ServerConfig, user: &str) {
    let fallback = if s.fallback { " (calls fall back to the in-process model meanwhile)" } else { " (calls end with ASR_CAUSE=101 meanwhile)" };
    match fetch_stats(addr, s.timeout, s.token.as_ref()) {
        Err(e) => {
            let fix = "start it (systemctl enable --now asr_bridge) or fix --server";
            if s.fallback {
                r.warn(&format!("{e}{fallback}"), fix)
            } else {
                r.fail(&format!("{e}{fallback}"), fix)
            }
        }
        Ok(st) => r.ok(&format!(
            "server {} answers: model {}, {} of {} calls active, {} workers, {} refused so far",
            addr,
            st["model"].as_str().unwrap_or("?"),
            st["active"],
            st["max_calls"],
            st["workers"],
            st["refused"]
        )),
    }
    if let ServerAddr::Unix(path) = addr {
        let Ok(meta) = std::fs::metadata(path) else { return };
        let mode = meta.permissions().mode();
        let can = match nix::unistd::User::from_name(user).ok().flatten() {
            Some(u) if u.uid.as_raw() == 0 => true,
            Some(u) if u.uid.as_raw() == meta.uid() => mode & 0o200 != 0,
            Some(u) if u.gid.as_raw() == meta.gid() => mode & 0o020 != 0,
            _ => mode & 0o002 != 0,
        };
        if !can {
            r.fail(
                &format!("{user} may not connect to {} (mode {:o})", path.display(), mode & 0o777),
                "run the server as the Asterisk user or group (the systemd unit does), --socket-mode=660",
            );
        }
    }
}

fn models_of(choice: &ModelChoice) -> Vec<PathBuf> {
    match choice {
        ModelChoice::Fixed(p) => vec![p.clone()],
        ModelChoice::ByLanguage(root) => {
            std::fs::read_dir(root).map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect()).unwrap_or_else(|_| vec![root.clone()])
        }
    }
}

fn check_writable(r: &mut Report, what: &str, path: &Path) {
    let existed = path.exists();
    match std::fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(_) => {
            if !existed {
                let _ = std::fs::remove_file(path);
            }
            r.ok(&format!("{what} {} is writable", path.display()));
        }
        Err(e) => r.fail(
            &format!("{what} {} is not writable: {e}", path.display()),
            "create its directory and let the Asterisk user write there (chown asterisk: DIR)",
        ),
    }
}

fn check_agi_entry(r: &mut Report, dir: &Path, user: &str) {
    let entry = dir.join("asr_bridge");
    let meta = match std::fs::metadata(&entry) {
        Ok(m) => m,
        Err(_) => {
            return r.fail(
                &format!("{} does not exist (or is a dangling link)", entry.display()),
                "run `make install` (or: ln -s /usr/local/bin/asr_bridge AGIDIR/asr_bridge)",
            )
        }
    };
    let mode = meta.permissions().mode();
    let who = nix::unistd::User::from_name(user).ok().flatten();
    let can_exec = match &who {
        Some(u) if u.uid.as_raw() == 0 => mode & 0o111 != 0,
        Some(u) if u.uid.as_raw() == meta.uid() => mode & 0o100 != 0,
        Some(u) if u.gid.as_raw() == meta.gid() => mode & 0o010 != 0,
        _ => mode & 0o001 != 0,
    };
    let target = std::fs::canonicalize(&entry).map(|p| p.display().to_string()).unwrap_or_default();
    if !can_exec {
        return r.fail(&format!("{} ({target}) is not executable by {user}", entry.display()), "chmod 755 the binary");
    }
    match who {
        Some(_) => r.ok(&format!("{} -> {target} is executable by {user}", entry.display())),
        None => r.warn(
            &format!("{} -> {target} is executable by anyone, but there is no user {user} here", entry.display()),
            "pass --asterisk-user=NAME if Asterisk runs as another user",
        ),
    }
}

/// Runs `asr_bridge doctor` with these arguments: the report to print, and the exit status.
pub fn run(args: &DoctorArgs) -> (String, ExitCode) {
    let mut r = Report::default();
    match libvosk_path() {
        Some(p) => r.ok(&format!("libvosk loaded from {p}")),
        None => r.fail("libvosk.so is not mapped in this process", "reinstall: libvosk.so belongs in PREFIX/lib/asr_bridge/"),
    }
    crate::asr::engine::silence_vosk_logs();
    let argv: Vec<String> = args.config.iter().map(|c| format!("--config={}", c.display())).collect();
    let mut models: Vec<PathBuf> = args.model.clone();
    let mut logs: Vec<PathBuf> = Vec::new();
    let mut servers: Vec<ServerConfig> = Vec::new();
    for addr in &args.server {
        let token = crate::config::client_token_from_env().unwrap_or_else(|e| {
            r.fail(&e.to_string(), "fix the token file or ASR_BRIDGE_TOKEN");
            None
        });
        servers.push(ServerConfig { servers: vec![addr.clone()], timeout: std::time::Duration::from_secs(5), fallback: false, token })
    }
    // A model is needed in-process, or as the fallback of a server.
    let mut take = |c: &crate::config::Config, models: &mut Vec<PathBuf>, logs: &mut Vec<PathBuf>| {
        if c.server.as_ref().is_none_or(|s| s.fallback) {
            models.extend(models_of(&c.model));
        }
        servers.extend(c.server.clone());
        logs.extend(c.log.clone());
        logs.extend(c.json_log.clone());
    };
    match config_path(&argv) {
        None => r.ok("no config file (built-in defaults and the environment apply)"),
        Some(path) => match ConfigFile::load(&path) {
            Err(e) => r.fail(&e.to_string(), "fix the TOML syntax"),
            Ok(file) => {
                let names: Vec<Option<String>> = std::iter::once(None).chain(file.profiles().into_iter().map(Some)).collect();
                let mut ok = true;
                for name in names {
                    let label = name.as_deref().map(|n| format!("profile {n}")).unwrap_or("defaults".into());
                    let parsed = file
                        .args(name.as_deref(), &|v| std::env::var_os(v).is_some())
                        .map_err(|e| e.to_string())
                        .and_then(|a| CallArgs::parse_from_args(a).map_err(|e| e.to_string().lines().next().unwrap_or("").to_string()))
                        .and_then(|a| a.validate().map_err(|e| e.to_string()));
                    match parsed {
                        Ok(c) => take(&c, &mut models, &mut logs),
                        Err(e) => {
                            ok = false;
                            r.fail(&format!("{} ({label}): {e}", path.display()), "fix or remove that key");
                        }
                    }
                }
                if ok {
                    r.ok(&format!("config {} parses (profiles: {})", path.display(), file.profiles().join(", ")));
                }
            }
        },
    }
    if models.is_empty() {
        let from_env = CallArgs::parse_from_args(Vec::new()).ok().and_then(|a| a.validate().ok());
        if let Some(c) = from_env {
            take(&c, &mut models, &mut logs);
        }
    }
    let resident = servers.iter().any(ServerConfig::resident);
    let mut servers: Vec<(ServerAddr, ServerConfig)> = servers.iter().flat_map(|s| s.servers.iter().map(|a| (a.clone(), s.clone()))).collect();
    servers.sort_by_key(|(a, _)| a.to_string());
    servers.dedup_by_key(|(a, _)| a.to_string());
    for (addr, s) in &servers {
        check_server(&mut r, addr, s, &args.asterisk_user);
    }
    if resident {
        for m in &models {
            check_resident(&mut r, m);
        }
    }
    models.sort();
    models.dedup();
    for m in &models {
        check_model(&mut r, m, args.load);
    }
    logs.sort();
    logs.dedup();
    for l in &logs {
        check_writable(&mut r, "log", l);
    }
    check_agi_entry(&mut r, &args.agi_dir, &args.asterisk_user);
    r.text.push_str(&format!("\n{} failed, {} warnings\n", r.failed, r.warned));
    let code = if r.failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS };
    (r.text, code)
}

/// Which server `asr_bridge stats` asks: `auto`, or an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatsTarget {
    /// The resident server of `--model` (as a call with the default `--server=auto` finds
    /// it), or else the installed unit's socket.
    Auto,
    At(ServerAddr),
}

impl std::str::FromStr for StatsTarget {
    type Err = String;

    fn from_str(s: &str) -> Result<StatsTarget, String> {
        match s.trim() {
            "auto" => Ok(StatsTarget::Auto),
            other => other.parse().map(StatsTarget::At),
        }
    }
}

/// The options of `asr_bridge stats`.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// The server: unix:PATH or ws://HOST:PORT; `auto`: the resident server of --model (as
    /// a call with the default --server=auto finds it), or else the installed unit's socket.
    #[arg(long, env = "ASR_BRIDGE_SERVER", default_value = "auto")]
    pub server: StatsTarget,
    /// The model whose resident server `auto` means.
    #[arg(long, env = "ASR_BRIDGE_MODEL", default_value = crate::asr::model::DEFAULT_MODEL)]
    pub model: PathBuf,
    /// Connect and reply deadline.
    #[arg(long, default_value = "2s", value_parser = crate::value::positive_duration)]
    pub timeout: Duration,
}

/// Runs `asr_bridge stats`: the server's statistics as pretty JSON, for `main` to print. An
/// error (the server cannot be reached: a health check) is for `main` to report (status 1).
pub fn stats(a: &StatsArgs) -> Result<String, crate::ModeError> {
    let addr = match &a.server {
        // The model's resident server where there is one, else the installed unit's socket.
        StatsTarget::Auto => crate::asr::resident::socket_of(&a.model)
            .ok()
            .filter(|s| s.exists())
            .map(ServerAddr::Unix)
            .unwrap_or_else(|| ServerAddr::Unix(PathBuf::from(crate::serve::DEFAULT_ADDRESS.trim_start_matches("unix:")))),
        StatsTarget::At(addr) => addr.clone(),
    };
    let token = crate::config::client_token_from_env()?;
    let v = fetch_stats(&addr, a.timeout, token.as_ref())?;
    Ok(serde_json::to_string_pretty(&v)? + "\n")
}

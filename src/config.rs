//! Options: the raw clap flags ([`CallArgs`], from argv with environment defaults) and the
//! validated [`Config`] with `Duration`s and paths. Parsed on the controller thread, before
//! anything else that can fail; a bad option is reported to the dialplan as ERROR.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::agi::command::valid_variable_name;
use crate::asr::endpoint::Timers;
use crate::asr::model::ModelChoice;
use crate::asr::recognizer::ServerConfig;
use crate::menu::{parse_choice, Choice};
use crate::net::ServerAddr;
use crate::protocol::Token;

pub use crate::asr::model::DEFAULT_MODEL;

/// Errors in the options.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range.
    #[error("--{option}={value:?}: {why}")]
    Range { option: &'static str, value: String, why: &'static str },
    /// `--server` is not an address, or not a valid list.
    #[error("--server={0}")]
    Server(String),
    /// The client's token cannot be had.
    #[error("server token from {from}: {why}")]
    Token { from: String, why: String },
}

/// The raw flags, exactly as the dialplan passes them: `EAGI(asr_bridge,--end-silence=700ms)`.
#[derive(Debug, Clone, Parser)]
#[command(name = "asr_bridge", version, args_override_self = true, about = "Offline speech recognition for the Asterisk dialplan (EAGI + Vosk)")]
pub struct CallArgs {
    /// Config file with defaults and profiles (default /etc/asr_bridge.toml if it exists).
    #[arg(long, env = "ASR_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// A [profile.NAME] of the config file.
    #[arg(long)]
    pub profile: Option<String>,
    /// Vosk model directory (wins over --models-root).
    #[arg(long, env = "ASR_BRIDGE_MODEL")]
    pub model: Option<PathBuf>,
    /// A directory of models, one per language (en, ko, ...): the call's agi_language picks one.
    #[arg(long, env = "ASR_BRIDGE_MODELS_ROOT")]
    pub models_root: Option<PathBuf>,
    /// No speech this long after listening starts ends with NOINPUT.
    #[arg(long, env = "ASR_BRIDGE_NO_INPUT_TIMEOUT", default_value = "5s", value_parser = crate::value::duration)]
    pub no_input_timeout: Duration,
    /// Trailing silence that ends the utterance.
    #[arg(long, env = "ASR_BRIDGE_END_SILENCE", default_value = "800ms", value_parser = crate::value::duration)]
    pub end_silence: Duration,
    /// Longest utterance; longer speech is cut off (ASR_CAUSE=008).
    #[arg(long, env = "ASR_BRIDGE_MAX_DURATION", default_value = "15s", value_parser = crate::value::duration)]
    pub max_duration: Duration,
    /// Voiced audio needed before speech counts as started.
    #[arg(long, default_value = "100ms", value_parser = crate::value::duration)]
    pub min_speech: Duration,
    /// Audio sample rate on fd 3; by default read from EAGI_AUDIO_FORMAT (slin = 8000).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Prefix of the dialplan variables set.
    #[arg(long, env = "ASR_BRIDGE_PREFIX", default_value = "ASR_")]
    pub prefix: String,
    /// Send ANSWER first (EAGI never answers for you).
    #[arg(long)]
    pub answer: bool,
    /// Write the samples the recognizer consumed to this WAV file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Human-readable log file; the process's stderr (and so libvosk's) goes there too.
    #[arg(long, env = "ASR_BRIDGE_LOG")]
    pub log: Option<PathBuf>,
    /// Append one JSON line per call with timings and the outcome.
    #[arg(long, env = "ASR_BRIDGE_JSON_LOG")]
    pub json_log: Option<PathBuf>,
    /// WebRTC VAD aggressiveness, 0 (keeps most audio as speech) to 3.
    #[arg(long, default_value_t = 2)]
    pub vad_mode: u8,
    /// Longest wait for the model to load.
    #[arg(long, default_value = "60s", value_parser = crate::value::duration)]
    pub load_timeout: Duration,
    /// Longest wait for any AGI reply.
    #[arg(long, default_value = "10s", value_parser = crate::value::duration)]
    pub reply_timeout: Duration,
    /// Sound file(s) to play before listening (repeatable; `a&b` plays a then b).
    #[arg(long)]
    pub prompt: Vec<String>,
    /// Play the whole prompt, then listen (audio during the prompt is discarded).
    #[arg(long)]
    pub no_barge_in: bool,
    /// Speech needed to stop the prompt (so a cough or line noise does not).
    #[arg(long, default_value = "200ms", value_parser = crate::value::duration)]
    pub barge_in_min: Duration,
    /// Sound file played right before listening starts (e.g. beep).
    #[arg(long)]
    pub beep: Option<String>,
    /// Do not listen for keys (no WAIT FOR DIGIT while listening).
    #[arg(long)]
    pub no_dtmf: bool,
    /// Keys collected before DTMF input ends.
    #[arg(long, default_value_t = 1)]
    pub dtmf_max_digits: u32,
    /// Key that ends DTMF input early (not included in ASR_DTMF); empty for none.
    #[arg(long, default_value = "#", value_parser = terminator)]
    pub dtmf_terminator: Terminator,
    /// Longest wait for the next key once one was pressed.
    #[arg(long, default_value = "3s", value_parser = crate::value::duration)]
    pub dtmf_timeout: Duration,
    /// Phrase grammar: `phrase|phrase|...`.
    #[arg(long)]
    pub grammar: Option<String>,
    /// Phrase grammar from a file, one phrase per line.
    #[arg(long)]
    pub grammar_file: Option<PathBuf>,
    /// A menu choice: `VALUE:phrase|phrase` (repeatable, one per EAGI argument).
    #[arg(long = "choice")]
    pub choices: Vec<String>,
    /// Lowest match score (0-1) that selects a choice.
    #[arg(long, default_value_t = 0.75)]
    pub match_threshold: f64,
    /// Lowest ASR_CONFIDENCE accepted; below it the result is NOMATCH.
    #[arg(long, default_value_t = 0.0)]
    pub min_confidence: f64,
    /// Replay the menu this many more times after NOINPUT or NOMATCH.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Played before the retry after NOINPUT.
    #[arg(long)]
    pub noinput_prompt: Option<String>,
    /// Played before the retry after NOMATCH.
    #[arg(long)]
    pub nomatch_prompt: Option<String>,
    /// N-best alternatives in ASR_ALT_1.. (0 is off).
    #[arg(long, default_value_t = 0)]
    pub alternatives: u16,
    /// Where to recognize: `auto`, the resident server of the call's model, started by the
    /// first call that needs it (in-process when it cannot serve); `none`, in-process (a model
    /// loaded per call); unix:PATH or ws://HOST:PORT, that server (`asr_bridge serve`, or
    /// vosk-server). Several servers (repeat the option, or separate them with commas) are
    /// tried in order, and a server lost mid-call is replaced by the next.
    #[arg(long, env = "ASR_BRIDGE_SERVER", default_value = "auto")]
    pub server: Vec<ServerList>,
    /// A file holding the token sent to the servers (`Authorization: Bearer`); without it, the
    /// environment variable ASR_BRIDGE_TOKEN, if set. Never the token itself on the command line.
    /// Empty is none (a blank line in an environment file).
    #[arg(long, env = TOKEN_FILE_ENV, value_parser = path_or_empty)]
    pub server_token_file: Option<PathBuf>,
    /// When the server cannot be reached, load the model in-process instead (without it the
    /// call ends at once with ERROR, ASR_CAUSE=101). A busy server is never fallen back from.
    #[arg(long, env = "ASR_BRIDGE_SERVER_FALLBACK")]
    pub server_fallback: bool,
    /// Deadline to connect to the server, and for each of its replies (the first blocks on a
    /// freshly started server can take a second or more: libvosk expands its graph lazily).
    #[arg(long, env = "ASR_BRIDGE_SERVER_TIMEOUT", default_value = "5s", value_parser = crate::value::duration)]
    pub server_timeout: Duration,
    /// Test seam: a failure to inject (only in builds with the `faults` feature).
    #[cfg(feature = "faults")]
    #[arg(long, hide = true, value_enum)]
    pub fault: Option<crate::asr::recognizer::Fault>,
}

/// The environment variable holding the client's token.
pub const TOKEN_ENV: &str = "ASR_BRIDGE_TOKEN";
/// The environment variable naming a file with the client's token (`--server-token-file`).
pub const TOKEN_FILE_ENV: &str = "ASR_BRIDGE_TOKEN_FILE";

/// Where `--server` says to recognize.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerChoice {
    /// `none`: in-process.
    InProcess,
    /// `auto`: the resident server of the call's model.
    Resident,
    /// These servers, in this order.
    Servers(Vec<ServerAddr>),
}

/// One `--server` value: a comma-separated list of `auto`, `none` or addresses, parsed where
/// it enters (clap), so a bad address is refused with the option's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList(Vec<ServerItem>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum ServerItem {
    Auto,
    None,
    At(ServerAddr),
}

impl std::str::FromStr for ServerList {
    type Err = String;

    fn from_str(v: &str) -> Result<ServerList, String> {
        let items = v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| match s {
            "auto" => Ok(ServerItem::Auto),
            "none" => Ok(ServerItem::None),
            addr => addr.parse().map(ServerItem::At),
        });
        items.collect::<Result<_, _>>().map(ServerList)
    }
}

/// `--server` values (repeated, each possibly a comma-separated list) as one choice. `auto`
/// and `none` stand alone; empty entries are skipped, and nothing at all is `none`.
///
/// ```
/// use asr_bridge::config::{server_choice, ServerChoice, ServerList};
/// let v = |s: &[&str]| s.iter().map(|s| s.parse::<ServerList>().unwrap()).collect::<Vec<_>>();
/// assert_eq!(server_choice(&v(&["auto"])).unwrap(), ServerChoice::Resident);
/// assert_eq!(server_choice(&v(&["none"])).unwrap(), ServerChoice::InProcess);
/// let two = server_choice(&v(&["unix:/a, ws://b:2700", "unix:/c"])).unwrap();
/// assert!(matches!(two, ServerChoice::Servers(ref s) if s.len() == 3));
/// assert!(server_choice(&v(&["auto", "unix:/a"])).is_err());
/// assert!("ws://".parse::<ServerList>().is_err());
/// ```
pub fn server_choice(values: &[ServerList]) -> Result<ServerChoice, ConfigError> {
    let items: Vec<&ServerItem> = values.iter().flat_map(|l| &l.0).collect();
    match items.as_slice() {
        [] | [ServerItem::None] => return Ok(ServerChoice::InProcess),
        [ServerItem::Auto] => return Ok(ServerChoice::Resident),
        _ => {}
    }
    let mut servers = Vec::new();
    for item in &items {
        match item {
            ServerItem::At(a) => servers.push(a.clone()),
            word => {
                let names: Vec<String> = items
                    .iter()
                    .map(|i| match i {
                        ServerItem::Auto => "auto".to_string(),
                        ServerItem::None => "none".to_string(),
                        ServerItem::At(a) => a.to_string(),
                    })
                    .collect();
                let word = if matches!(word, ServerItem::Auto) { "auto" } else { "none" };
                return Err(ConfigError::Server(format!(
                    "{}: `{word}` stands alone; a list names servers only (unix:PATH or ws://HOST:PORT)",
                    names.join(",")
                )));
            }
        }
    }
    Ok(ServerChoice::Servers(servers))
}

/// A path option where empty means none (a blank line in an environment file).
fn path_or_empty(v: &str) -> Result<PathBuf, std::convert::Infallible> {
    Ok(PathBuf::from(v.trim()))
}

/// `--dtmf-terminator`: one key, or empty for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminator(pub Option<char>);

fn terminator(v: &str) -> Result<Terminator, String> {
    match v.trim() {
        "" => Ok(Terminator(None)),
        t if t.len() == 1 && crate::agi::DTMF_KEYS.contains(t) => Ok(Terminator(t.chars().next())),
        _ => Err("must be one key: 0-9, *, #, A-D, or empty".to_string()),
    }
}

/// The client's token: the contents of `file` (`--server-token-file`, trimmed) when given,
/// else `env` (the value of [`TOKEN_ENV`]) when set and not empty, else none. A file that
/// cannot be read, or holds no token, is an error.
pub fn client_token(file: Option<&std::path::Path>, env: Option<String>) -> Result<Option<Token>, ConfigError> {
    let bad = |from: String, why: String| ConfigError::Token { from, why };
    match file {
        Some(f) => {
            let text = std::fs::read_to_string(f).map_err(|e| bad(format!("--server-token-file={}", f.display()), format!("cannot be read: {e}")))?;
            Token::new(&text).map(Some).map_err(|why| bad(format!("--server-token-file={}", f.display()), format!("the token in it {why}")))
        }
        None => match env.filter(|v| !v.trim().is_empty()) {
            Some(v) => Token::new(&v).map(Some).map_err(|why| bad(TOKEN_ENV.to_string(), why)),
            None => Ok(None),
        },
    }
}

/// [`client_token`] from the environment alone (`asr_bridge stats`, `doctor`).
pub fn client_token_from_env() -> Result<Option<Token>, ConfigError> {
    client_token(std::env::var_os(TOKEN_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from).as_deref(), std::env::var(TOKEN_ENV).ok())
}

/// The validated options of one call.
#[derive(Debug, Clone)]
pub struct Config {
    pub model: ModelChoice,
    pub timers: Timers,
    pub rate: Option<u32>,
    pub prefix: String,
    pub answer: bool,
    pub record: Option<PathBuf>,
    pub log: Option<PathBuf>,
    pub json_log: Option<PathBuf>,
    pub vad_mode: u8,
    pub load_timeout: Duration,
    pub reply_timeout: Duration,
    pub menu: MenuConfig,
    pub server: Option<ServerConfig>,
    /// Always None outside the tests (feature `faults`).
    pub fault: Option<crate::asr::recognizer::Fault>,
}

/// Prompts, barge-in, DTMF, grammar, choices and retries.
#[derive(Debug, Clone, Default)]
pub struct MenuConfig {
    pub prompts: Vec<String>,
    pub barge_in: bool,
    pub barge_in_min: Duration,
    pub beep: Option<String>,
    pub dtmf: bool,
    pub dtmf_max_digits: u32,
    pub dtmf_terminator: Option<char>,
    pub dtmf_timeout: Duration,
    pub grammar: Option<Vec<String>>,
    pub choices: Vec<Choice>,
    pub match_threshold: f64,
    pub min_confidence: f64,
    pub retries: u32,
    pub noinput_prompt: Vec<String>,
    pub nomatch_prompt: Vec<String>,
    pub alternatives: u16,
}

/// Splits `a&b` prompt lists (Asterisk's own convention) into file names.
pub fn split_sounds(spec: &str) -> Vec<String> {
    spec.split('&').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

impl CallArgs {
    /// Parses argv elements (without the program name). Empty elements, which
    /// `EAGI(asr_bridge,)` produces, are skipped.
    pub fn parse_from_args<I: IntoIterator<Item = String>>(args: I) -> Result<CallArgs, clap::Error> {
        let argv = std::iter::once("asr_bridge".to_string()).chain(args.into_iter().filter(|a| !a.trim().is_empty()));
        CallArgs::try_parse_from(argv)
    }

    /// Validates the raw flags into a [`Config`].
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let timers = Timers { no_input: self.no_input_timeout, end_silence: self.end_silence, max_duration: self.max_duration, min_speech: self.min_speech };
        if timers.end_silence < Duration::from_millis(100) {
            return Err(ConfigError::Range { option: "end-silence", value: format!("{:?}", self.end_silence), why: "must be at least 100ms" });
        }
        if timers.max_duration.is_zero() || timers.no_input.is_zero() {
            return Err(ConfigError::Range {
                option: if timers.no_input.is_zero() { "no-input-timeout" } else { "max-duration" },
                value: "0".to_string(),
                why: "must be more than zero",
            });
        }
        if let Some(r) = self.rate {
            if ![8000, 16000, 32000, 48000].contains(&r) {
                return Err(ConfigError::Range { option: "rate", value: r.to_string(), why: "must be 8000, 16000, 32000 or 48000" });
            }
        }
        if !valid_variable_name(&format!("{}STATUS", self.prefix)) || self.prefix.contains(['(', ')']) {
            return Err(ConfigError::Range { option: "prefix", value: self.prefix.clone(), why: "must be letters, digits and _ only" });
        }
        if self.vad_mode > 3 {
            return Err(ConfigError::Range { option: "vad-mode", value: self.vad_mode.to_string(), why: "must be 0, 1, 2 or 3" });
        }
        let menu = self.menu()?;
        let server = self.server_config()?;
        Ok(Config {
            server,
            menu,
            model: match (&self.model, &self.models_root) {
                (Some(m), _) => ModelChoice::Fixed(m.clone()),
                (None, Some(root)) => ModelChoice::ByLanguage(root.clone()),
                (None, None) => ModelChoice::Fixed(PathBuf::from(DEFAULT_MODEL)),
            },
            timers,
            rate: self.rate,
            prefix: self.prefix.clone(),
            answer: self.answer,
            record: self.record.clone(),
            log: self.log.clone(),
            json_log: self.json_log.clone(),
            vad_mode: self.vad_mode,
            fault: self.fault(),
            load_timeout: self.load_timeout,
            reply_timeout: self.reply_timeout,
        })
    }
}

impl CallArgs {
    #[cfg(feature = "faults")]
    fn fault(&self) -> Option<crate::asr::recognizer::Fault> {
        self.fault
    }

    #[cfg(not(feature = "faults"))]
    fn fault(&self) -> Option<crate::asr::recognizer::Fault> {
        None
    }

    /// The served mode's settings; None for in-process.
    fn server_config(&self) -> Result<Option<ServerConfig>, ConfigError> {
        let servers = match server_choice(&self.server)? {
            ServerChoice::InProcess => return Ok(None),
            ServerChoice::Resident => Vec::new(),
            ServerChoice::Servers(s) => s,
        };
        let timeout = self.server_timeout;
        if timeout.is_zero() {
            return Err(ConfigError::Range { option: "server-timeout", value: "0".to_string(), why: "must be more than zero" });
        }
        // The resident server is ours to start, not the dialplan's to require: whenever
        // it cannot serve, the call goes on in-process.
        let fallback = self.server_fallback || servers.is_empty();
        let file = self.server_token_file.as_deref().filter(|f| !f.as_os_str().is_empty());
        let token = client_token(file, std::env::var(TOKEN_ENV).ok())?;
        Ok(Some(ServerConfig { servers, timeout, fallback, token }))
    }

    fn menu(&self) -> Result<MenuConfig, ConfigError> {
        let range = |option: &'static str, value: String, why: &'static str| ConfigError::Range { option, value, why };
        let grammar = match (&self.grammar, &self.grammar_file) {
            (Some(_), Some(_)) => return Err(range("grammar-file", String::new(), "give --grammar or --grammar-file, not both")),
            (Some(g), None) => Some(g.clone()),
            (None, Some(f)) => Some(std::fs::read_to_string(f).map_err(|_| range("grammar-file", f.display().to_string(), "cannot be read"))?),
            (None, None) => None,
        };
        let grammar = match grammar {
            Some(g) => {
                let phrases = crate::asr::grammar::parse_phrases(&g);
                if phrases.is_empty() {
                    return Err(range("grammar", g, "has no phrases (use phrase|phrase|...)"));
                }
                Some(phrases)
            }
            None => None,
        };
        let choices =
            self.choices.iter().map(|c| parse_choice(c).map_err(|_| range("choice", c.clone(), "use VALUE:phrase|phrase"))).collect::<Result<Vec<_>, _>>()?;
        for (name, v) in [("match-threshold", self.match_threshold), ("min-confidence", self.min_confidence)] {
            if !(0.0..=1.0).contains(&v) {
                return Err(range(if name == "match-threshold" { "match-threshold" } else { "min-confidence" }, v.to_string(), "must be between 0 and 1"));
            }
        }
        if self.dtmf_max_digits == 0 {
            return Err(range("dtmf-max-digits", "0".into(), "must be at least 1"));
        }
        if self.alternatives > 20 {
            return Err(range("alternatives", self.alternatives.to_string(), "must be 20 or fewer"));
        }
        Ok(MenuConfig {
            prompts: self.prompt.iter().flat_map(|p| split_sounds(p)).collect(),
            barge_in: !self.no_barge_in,
            barge_in_min: self.barge_in_min,
            beep: self.beep.clone().filter(|b| !b.trim().is_empty()),
            dtmf: !self.no_dtmf,
            dtmf_max_digits: self.dtmf_max_digits,
            dtmf_terminator: self.dtmf_terminator.0,
            dtmf_timeout: self.dtmf_timeout,
            grammar,
            choices,
            match_threshold: self.match_threshold,
            min_confidence: self.min_confidence,
            retries: self.retries.min(10),
            noinput_prompt: self.noinput_prompt.as_deref().map(split_sounds).unwrap_or_default(),
            nomatch_prompt: self.nomatch_prompt.as_deref().map(split_sounds).unwrap_or_default(),
            alternatives: self.alternatives,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Config, String> {
        CallArgs::parse_from_args(a.iter().map(|s| s.to_string())).map_err(|e| e.to_string()).and_then(|c| c.validate().map_err(|e| e.to_string()))
    }

    #[test]
    fn dialplan_style_arguments() {
        let c = args(&["--end-silence=700ms", "", "--no-input-timeout=3s", "--model=/m", "--answer"]).unwrap();
        assert_eq!(c.timers.end_silence, Duration::from_millis(700));
        assert_eq!(c.timers.no_input, Duration::from_secs(3));
        assert_eq!(c.model, ModelChoice::Fixed(PathBuf::from("/m")));
        assert!(c.answer);
    }

    #[test]
    fn models_by_language() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("en")).unwrap();
        std::fs::create_dir_all(d.path().join("ko")).unwrap();
        let m = ModelChoice::ByLanguage(d.path().to_path_buf());
        assert_eq!(m.resolve(Some("en_US")).unwrap(), d.path().join("en"));
        assert_eq!(m.resolve(Some("ko")).unwrap(), d.path().join("ko"));
        let e = m.resolve(Some("de")).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("\"de\"") && e.contains("found: en, ko"), "{e}");
        std::fs::create_dir_all(d.path().join("default")).unwrap();
        assert_eq!(m.resolve(Some("de")).unwrap(), d.path().join("default"));
        assert_eq!(m.resolve(None).unwrap(), d.path().join("default"));
        assert_eq!(ModelChoice::Fixed("/x".into()).resolve(Some("de")).unwrap(), PathBuf::from("/x"));
    }

    #[test]
    fn menu_options() {
        let c = args(&["--prompt=welcome&menu", "--choice=100:sales", "--choice=200:support|help desk", "--retries=2", "--grammar=sales|support"]).unwrap();
        assert_eq!(c.menu.prompts, ["welcome", "menu"]);
        assert_eq!(c.menu.choices.len(), 2);
        assert_eq!(c.menu.retries, 2);
        assert!(c.menu.barge_in && c.menu.dtmf);
        assert_eq!(c.menu.dtmf_terminator, Some('#'));
        assert!(args(&["--grammar=|"]).unwrap_err().contains("has no phrases"));
        assert!(args(&["--choice=100:"]).unwrap_err().contains("choice"));
        assert!(args(&["--dtmf-terminator=xx"]).unwrap_err().contains("dtmf-terminator"));
    }

    #[test]
    fn bad_options_say_what_is_wrong() {
        // Refused where it enters (clap's value parser): the option, the value, and why.
        let e = args(&["--end-silence=soon"]).unwrap_err();
        assert!(e.contains("--end-silence") && e.contains("'soon'") && e.contains("not a duration"), "{e}");
        assert!(args(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(args(&["--prefix=A B"]).unwrap_err().contains("prefix"));
        assert!(args(&["--rate=11025"]).unwrap_err().contains("rate"));
        assert!(args(&["--server=http://x"]).unwrap_err().contains("expected unix:PATH or ws://HOST:PORT"));
        assert!(args(&["--server=unix:/s", "--server-timeout=0"]).unwrap_err().contains("server-timeout"));
    }

    #[test]
    fn served_mode_options() {
        let c = args(&["--server=ws://asr.example:2700", "--server-fallback", "--server-timeout=500ms"]).unwrap();
        let s = c.server.unwrap();
        assert_eq!(s.servers, vec!["ws://asr.example:2700".parse::<ServerAddr>().unwrap()]);
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert!(s.fallback);
        assert!(args(&["--server=none"]).unwrap().server.is_none());
        let auto = args(&[]).unwrap().server.unwrap();
        assert_eq!((auto.resident(), auto.fallback), (true, true), "the default: the resident server, in-process when it cannot serve");
        assert!(args(&["--server=auto"]).unwrap().server.unwrap().resident());
    }

    fn servers(a: &[&str]) -> Vec<String> {
        args(a).unwrap().server.unwrap().servers.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_list_of_servers_in_order() {
        assert_eq!(servers(&["--server=unix:/a", "--server=unix:/b"]), ["unix:/a", "unix:/b"], "repeated: all of them, in order");
        assert_eq!(servers(&["--server=unix:/a,ws://b:2700"]), ["unix:/a", "ws://b:2700/"], "comma-separated");
        assert_eq!(servers(&["--server=unix:/a, unix:/b", "--server=ws://c"]), ["unix:/a", "unix:/b", "ws://c:80/"], "both");
        assert_eq!(servers(&["--server=ws://lb:80,ws://lb:80"]), ["ws://lb:80/", "ws://lb:80/"], "the same address twice is two tries");
        assert_eq!(servers(&["--server=unix:/a,", "--server="]), ["unix:/a"], "empty entries are skipped");
        assert!(args(&["--server="]).unwrap().server.is_none(), "nothing at all is in-process, as before");
    }

    #[test]
    fn auto_and_none_stand_alone() {
        for bad in [&["--server=auto,unix:/a"][..], &["--server=unix:/a", "--server=none"], &["--server=auto", "--server=none"]] {
            let e = args(bad).unwrap_err();
            assert!(e.contains("stands alone") && e.contains("unix:PATH or ws://HOST:PORT"), "{bad:?}: {e}");
        }
        let e = args(&["--server=unix:/a,http://b"]).unwrap_err();
        assert!(e.contains("\"http://b\": expected unix:PATH or ws://HOST:PORT"), "the bad entry is named: {e}");
    }

    #[test]
    fn the_token_comes_from_a_file_or_the_environment() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("token");
        std::fs::write(&f, "  s3cret\n").unwrap();
        assert_eq!(client_token(Some(&f), Some("other".into())).unwrap(), Some(Token::new("s3cret").unwrap()), "the file wins, trimmed");
        assert_eq!(client_token(None, Some("envtok".into())).unwrap(), Some(Token::new("envtok").unwrap()));
        assert_eq!(client_token(None, Some(String::new())).unwrap(), None, "an empty variable is no token");
        assert_eq!(client_token(None, None).unwrap(), None);
        let e = client_token(Some(&d.path().join("missing")), None).unwrap_err().to_string();
        assert!(e.contains("--server-token-file=") && e.contains("missing") && e.contains("cannot be read"), "{e}");
        std::fs::write(&f, "\n").unwrap();
        let e = client_token(Some(&f), None).unwrap_err().to_string();
        assert!(e.contains("the token in it is empty"), "{e}");
        let e = client_token(None, Some("two words".into())).unwrap_err().to_string();
        assert!(e.contains("from ASR_BRIDGE_TOKEN") && e.contains("without spaces"), "{e}");
        let c = args(&["--server=unix:/a", &format!("--server-token-file={}", d.path().join("missing").display())]);
        assert!(c.unwrap_err().contains("cannot be read"), "a bad token file is a config error");
    }
}

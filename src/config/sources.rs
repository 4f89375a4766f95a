//! Where each setting comes from: a flag, a `RINGCAST_<FLAG_NAME>` environment variable, a
//! `--config` TOML file, or the default — in that order of precedence.
//!
//! Owns: the layering, generic over every clap argument of [`Config`]: the environment
//! variable of `--max-connections` is `RINGCAST_MAX_CONNECTIONS`, its file key
//! `max-connections` (or `max_connections`). A flag added to `Config` gets both without a line
//! here. The lower layers are turned into arguments placed before the command line's own and
//! the whole parsed once, so a value from the environment or the file goes through exactly
//! the parser and checks a flag does; each is first parsed alone, so an error names its source.
//! Must not: know any particular flag, except `--config` and `--check-config`, which are about
//! the layering itself (neither is a setting a file may hold).

use std::ffi::OsString;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command, CommandFactory, FromArgMatches};

use super::Config;

/// Every environment variable of a flag starts with this.
pub const ENV_PREFIX: &str = "RINGCAST_";

/// A repeatable flag's values in one environment variable are separated by whitespace (a
/// comma may be part of a topic name, a colon of an origin).
pub fn split_env_list(v: &str) -> impl Iterator<Item = &str> {
    v.split_whitespace()
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// The variable's name.
    Env(String),
    File(PathBuf),
    Default,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(v) => write!(f, "env {v}"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting as it is in force.
#[derive(Clone, Debug)]
pub struct Setting {
    /// The flag's name without dashes (`max-connections`), which is also its file key.
    pub name: String,
    /// Its values (one, or any number for a repeatable flag); `None` when unset.
    pub values: Option<Vec<String>>,
    pub repeatable: bool,
    pub switch: bool,
    pub source: Source,
}

/// A parsed configuration and where each of its settings came from.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub settings: Vec<Setting>,
    /// What was given but means nothing: `RINGCAST_*` variables that name no flag (a typo, or
    /// a variable of the test tools). Logged as warnings, not refused, so such a variable in
    /// the environment cannot keep the node from starting.
    pub warnings: Vec<String>,
}

/// Why the configuration could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// clap's own answer: `--help`, `--version`, or a bad command line (with usage).
    Clap(clap::Error),
    /// A bad environment variable or file: the message names the key and the source.
    Invalid(String),
}

impl From<String> for LoadError {
    fn from(s: String) -> Self {
        LoadError::Invalid(s)
    }
}

/// `RINGCAST_` + the flag's name in upper case, `-` as `_`.
pub fn env_name(long: &str) -> String {
    let mut s = String::with_capacity(ENV_PREFIX.len() + long.len());
    s.push_str(ENV_PREFIX);
    s.extend(long.chars().map(|c| match c {
        '-' => '_',
        c => c.to_ascii_uppercase(),
    }));
    s
}

/// The settings: every argument with a long name, except `--help`/`--version`.
fn settings_of(cmd: &Command) -> impl Iterator<Item = (&Arg, &str)> {
    cmd.get_arguments().filter_map(|a| {
        if matches!(a.get_action(), ArgAction::Help | ArgAction::Version) {
            return None;
        }
        a.get_long().map(|l| (a, l))
    })
}

fn is_repeatable(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::Append)
}

fn is_switch(a: &Arg) -> bool {
    matches!(a.get_action(), ArgAction::SetTrue)
}

/// `Config`'s command with each flag's environment variable shown in `--help` (values hidden:
/// a token in the environment must not be printed).
pub fn command_with_env() -> Command {
    Config::command().mut_args(|a| match (a.get_long(), a.get_action()) {
        (Some(l), act) if !matches!(act, ArgAction::Help | ArgAction::Version) => {
            let name = env_name(l);
            a.env(name).hide_env_values(true)
        }
        _ => a,
    })
}

/// A file key or environment value for a switch (`--no-pin`): true or false.
fn parse_switch(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// The values one lower layer gives one flag.
struct Given {
    values: Vec<String>,
    source: Source,
}

/// Loads the configuration from `args` (the command line, program name first), the process
/// environment and the `--config` file, then validates it.
pub fn load<I, T>(args: I) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let env: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    load_from(args, &env)
}

/// [`load`] with the environment given (only the `RINGCAST_*` variables matter).
pub fn load_from<I, T>(args: I, env: &[(String, String)]) -> Result<Loaded, LoadError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let plain = Config::command();
    // 1. The command line alone: which flags it gives (and --help, --version, usage errors).
    let cli = match plain.clone().try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp) => {
            // The same answer from the command that shows the variables.
            let e = command_with_env()
                .try_get_matches_from(&args)
                .err()
                .unwrap_or(e);
            return Err(LoadError::Clap(e));
        }
        Err(e) => return Err(LoadError::Clap(e)),
    };
    let on_cli = |id: &str| cli.value_source(id) == Some(ValueSource::CommandLine);
    let prog = args.first().cloned().unwrap_or_else(|| "ringcast".into());

    // 2. The environment.
    let warnings: Vec<String> = env
        .iter()
        .filter(|(k, _)| !settings_of(&plain).any(|(_, l)| env_name(l) == *k))
        .map(|(k, _)| format!("{k} is set but names no flag of ringcast; ignored"))
        .collect();
    let mut env_given: Vec<(String, Given)> = Vec::new();
    for (arg, long) in settings_of(&plain) {
        let var = env_name(long);
        let Some((_, v)) = env.iter().find(|(k, _)| *k == var) else {
            continue;
        };
        let values = if is_repeatable(arg) {
            split_env_list(v).map(str::to_string).collect()
        } else {
            vec![v.clone()]
        };
        env_given.push((
            arg.get_id().to_string(),
            Given {
                values,
                source: Source::Env(var),
            },
        ));
    }
    // 3. The file, named by --config or RINGCAST_CONFIG.
    let file: Option<PathBuf> = if on_cli("config") {
        cli.get_one::<PathBuf>("config").cloned()
    } else {
        env_given
            .iter()
            .find(|(id, _)| id == "config")
            .map(|(_, g)| PathBuf::from(&g.values[0]))
    };
    let file_given = match &file {
        Some(path) => read_file(&plain, path)?,
        None => Vec::new(),
    };

    // 4. Lower layers as arguments before the command line's, each checked alone first.
    let mut argv: Vec<OsString> = vec![prog.clone()];
    let mut sources: Vec<(String, Source)> = Vec::new();
    for (arg, long) in settings_of(&plain) {
        let id = arg.get_id().as_str();
        if on_cli(id) {
            sources.push((id.to_string(), Source::Flag));
            continue;
        }
        let g = env_given
            .iter()
            .chain(file_given.iter())
            .find(|(i, _)| i == id)
            .map(|(_, g)| g);
        let Some(g) = g else {
            continue;
        };
        let mut these = Vec::new();
        for v in &g.values {
            if is_switch(arg) {
                match parse_switch(v) {
                    Some(true) => these.push(OsString::from(format!("--{long}"))),
                    Some(false) if arg.get_default_values() == ["true"] => {
                        return Err(LoadError::Invalid(format!(
                            "{}: {long} is a switch that is on by default; to turn it off set \
                             no-{long} instead",
                            g.source
                        )));
                    }
                    Some(false) => {}
                    None => {
                        return Err(LoadError::Invalid(format!(
                            "{}: {long} takes true or false, not {v:?}",
                            g.source
                        )))
                    }
                }
            } else {
                these.push(OsString::from(format!("--{long}={v}")));
            }
        }
        if let Err(e) = plain
            .clone()
            .try_get_matches_from(std::iter::once(prog.clone()).chain(these.iter().cloned()))
        {
            return Err(LoadError::Invalid(format!(
                "{}: {long}: {}",
                g.source,
                first_line(&e)
            )));
        }
        argv.extend(these);
        sources.push((id.to_string(), g.source.clone()));
    }
    argv.extend(args.into_iter().skip(1));

    // 5. Everything, parsed once.
    let m = plain
        .clone()
        .try_get_matches_from(&argv)
        .map_err(LoadError::Clap)?;
    let mut config = Config::from_arg_matches(&m).map_err(LoadError::Clap)?;
    config.validate().map_err(LoadError::Invalid)?;
    let settings = settings_of(&plain)
        .map(|(arg, long)| {
            let id = arg.get_id().as_str();
            let source = sources
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, s)| s.clone())
                .unwrap_or(Source::Default);
            Setting {
                name: long.to_string(),
                values: raw_values(&m, id),
                repeatable: is_repeatable(arg),
                switch: is_switch(arg),
                source,
            }
        })
        .collect();
    Ok(Loaded {
        config,
        settings,
        warnings,
    })
}

fn raw_values(m: &ArgMatches, id: &str) -> Option<Vec<String>> {
    let raw = m.get_raw(id)?;
    let v: Vec<String> = raw.map(|s| s.to_string_lossy().into_owned()).collect();
    Some(v)
}

/// clap's message without its `error: ` prefix and its usage tips.
fn first_line(e: &clap::Error) -> String {
    let s = e.to_string();
    let line = s.lines().next().unwrap_or("").trim();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// Reads the TOML file: each key a flag's name (kebab or snake case), each value a string,
/// number or boolean, or an array of them for a repeatable flag.
fn read_file(cmd: &Command, path: &Path) -> Result<Vec<(String, Given)>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        LoadError::Invalid(format!("--config {}: cannot read it: {e}", path.display()))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        LoadError::Invalid(format!(
            "--config {}: not valid TOML: {}",
            path.display(),
            e.to_string().trim_end()
        ))
    })?;
    let source = Source::File(path.to_path_buf());
    let mut out: Vec<(String, Given)> = Vec::new();
    for (key, value) in &table {
        let long = key.replace('_', "-");
        let Some((arg, _)) = settings_of(cmd).find(|(_, l)| *l == long) else {
            return Err(LoadError::Invalid(format!(
                "{source}: unknown key `{key}` (keys are the flag names of `ringcast --help`)"
            )));
        };
        let id = arg.get_id().to_string();
        if id == "config" || id == "check_config" {
            return Err(LoadError::Invalid(format!(
                "{source}: `{key}` cannot be set in the file (give it as a flag)"
            )));
        }
        if out.iter().any(|(i, _)| *i == id) {
            return Err(LoadError::Invalid(format!(
                "{source}: `{key}` is given twice (as {long} and {})",
                long.replace('-', "_")
            )));
        }
        let scalar = |v: &toml::Value| -> Result<String, LoadError> {
            match v {
                toml::Value::String(s) => Ok(s.clone()),
                toml::Value::Integer(i) => Ok(i.to_string()),
                toml::Value::Float(f) => Ok(f.to_string()),
                toml::Value::Boolean(b) => Ok(b.to_string()),
                other => Err(LoadError::Invalid(format!(
                    "{source}: `{key}` must be a string, number or boolean, not {}",
                    other.type_str()
                ))),
            }
        };
        let values = match value {
            toml::Value::Array(items) if is_repeatable(arg) => {
                items.iter().map(scalar).collect::<Result<Vec<_>, _>>()?
            }
            toml::Value::Array(_) => {
                return Err(LoadError::Invalid(format!(
                    "{source}: `{key}` takes one value, not an array"
                )))
            }
            v => vec![scalar(v)?],
        };
        out.push((
            id,
            Given {
                values,
                source: source.clone(),
            },
        ));
    }
    Ok(out)
}

/// A value as TOML: numbers and booleans bare, anything else a basic string.
fn toml_value(v: &str, switch: bool) -> String {
    if switch || v.parse::<i64>().is_ok() {
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len() + 2);
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{:04X}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Whether a flag holds a secret, printed redacted: `--publish-token`, `--admin-token`, and any
/// flag named `*-token` added later.
pub fn is_secret(name: &str) -> bool {
    name.ends_with("-token")
}

impl Loaded {
    /// The effective configuration as a TOML file `--config` would read back (secrets
    /// redacted), each line saying where its value came from.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# ringcast {}: the effective configuration (flag > environment > file > default)",
            env!("CARGO_PKG_VERSION")
        );
        for w in &self.warnings {
            let _ = writeln!(out, "# warning: {w}");
        }
        for s in &self.settings {
            if s.name == "config" || s.name == "check-config" {
                if let (Some(v), "config") = (&s.values, s.name.as_str()) {
                    let _ = writeln!(
                        out,
                        "# config = {}  # {}",
                        toml_value(&v[0], false),
                        s.source
                    );
                }
                continue;
            }
            let shown = |v: &str| {
                if is_secret(&s.name) {
                    "\"REDACTED\"".to_string()
                } else if s.name == "redis" {
                    // Its password: a unit's ExecStartPre=--check-config logs this output.
                    toml_value(&crate::backplane::redact(v), false)
                } else {
                    toml_value(v, s.switch)
                }
            };
            match &s.values {
                None => {
                    let _ = writeln!(out, "# {} is unset  # {}", s.name, s.source);
                }
                Some(v) if s.repeatable => {
                    let items: Vec<String> = v.iter().map(|x| shown(x)).collect();
                    let _ = writeln!(out, "{} = [{}]  # {}", s.name, items.join(", "), s.source);
                }
                Some(v) => {
                    let _ = writeln!(
                        out,
                        "{} = {}  # {}",
                        s.name,
                        shown(v.first().map_or("", String::as_str)),
                        s.source
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(args: &[&str], e: &[(&str, &str)]) -> Result<Loaded, String> {
        let mut a = vec!["ringcast"];
        a.extend_from_slice(args);
        load_from(a, &env(e)).map_err(|e| match e {
            LoadError::Clap(c) => c.to_string(),
            LoadError::Invalid(s) => s,
        })
    }

    fn source(l: &Loaded, name: &str) -> Source {
        l.settings
            .iter()
            .find(|s| s.name == name)
            .unwrap()
            .source
            .clone()
    }

    fn file(text: &str) -> (tempdir::Dir, String) {
        let d = tempdir::Dir::new();
        let p = d.0.join("ringcast.toml");
        std::fs::write(&p, text).unwrap();
        let s = p.to_string_lossy().into_owned();
        (d, s)
    }

    /// A directory removed when dropped (no crate for one test helper).
    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                let p = std::env::temp_dir().join(format!(
                    "ringcast-config-{}-{}",
                    std::process::id(),
                    N.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    #[test]
    fn env_names() {
        assert_eq!(env_name("max-connections"), "RINGCAST_MAX_CONNECTIONS");
        assert_eq!(env_name("no-pin"), "RINGCAST_NO_PIN");
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let (_d, f) = file(
            "max-connections = 7\nmax_topics = 9\nheartbeat-secs = 3\npoll-limit = 4\n\
             public-topic = [\"f1\", \"f2\"]\nallow-origin = [\"http://file\"]\n\
             publish-token = \"file-secret\"\nno-pin = true\njwt-issuer = \"file-iss\"\n\
             jwt-audience = \"file-aud\"\njwt-cookie = \"file_cookie\"\n\
             jwt-public-key-file = [\"k1.pem\", \"k2.pem\"]\n",
        );
        let e = [
            ("RINGCAST_MAX_CONNECTIONS", "70"),
            ("RINGCAST_MAX_TOPICS", "90"),
            ("RINGCAST_PUBLIC_TOPIC", "e1 e2\ne3"),
            ("RINGCAST_NO_PIN", "false"),
            ("RINGCAST_CONFIG", f.as_str()),
            ("RINGCAST_JWT_ISSUER", "env-iss"),
            ("RINGCAST_JWT_COOKIE", "env_cookie"),
        ];
        let l = load(
            &[
                "--max-connections",
                "700",
                "--allow-origin",
                "http://flag",
                "--jwt-cookie",
                "flag_cookie",
            ],
            &e,
        )
        .unwrap();
        let c = &l.config;
        // number: flag > env > file > default
        assert_eq!(c.max_connections, 700);
        assert_eq!(source(&l, "max-connections"), Source::Flag);
        assert_eq!(c.max_topics, 90);
        assert_eq!(
            source(&l, "max-topics"),
            Source::Env("RINGCAST_MAX_TOPICS".into())
        );
        assert_eq!(c.heartbeat_secs, 3);
        assert_eq!(source(&l, "heartbeat-secs"), Source::File(f.clone().into()));
        assert_eq!(c.pong_timeout_secs, super::super::DEFAULT_PONG_TIMEOUT_SECS);
        assert_eq!(source(&l, "pong-timeout-secs"), Source::Default);
        // repeatable: the highest layer that has any value gives all of them
        assert_eq!(c.public_topic, ["e1", "e2", "e3"]);
        assert_eq!(c.allow_origin, ["http://flag"]);
        assert_eq!(
            c.jwt_public_key_file,
            [PathBuf::from("k1.pem"), PathBuf::from("k2.pem")]
        );
        // string: flag > env > file
        assert_eq!(c.jwt_cookie.as_deref(), Some("flag_cookie"));
        assert_eq!(c.jwt_issuer.as_deref(), Some("env-iss"));
        assert_eq!(c.jwt_audience.as_deref(), Some("file-aud"));
        assert_eq!(c.publish_token.as_deref(), Some("file-secret"));
        assert_eq!(c.admin_token, None);
        // switch: the environment's false beats the file's true
        assert!(c.pin);
        assert!(!c.no_pin);
    }

    #[test]
    fn switches_and_enums_from_env() {
        let l = load(
            &[],
            &[
                ("RINGCAST_NO_PIN", "yes"),
                ("RINGCAST_SLOW_CLIENT", "drop"),
                ("RINGCAST_WS_CLIENT_PUBLISH", "off"),
            ],
        )
        .unwrap();
        assert!(!l.config.pin);
        assert_eq!(l.config.slow_client, super::super::SlowClient::Drop);
        assert!(!l.config.client_publish());
        // A flag on the command line still wins over the environment's switch.
        let l = load(&["--pin"], &[("RINGCAST_NO_PIN", "true")]).unwrap();
        assert!(l.config.pin, "the flag --pin beats RINGCAST_NO_PIN");
    }

    #[test]
    fn errors_name_the_key_and_the_source() {
        let err = load(&[], &[("RINGCAST_MAX_CONNECTIONS", "lots")]).unwrap_err();
        assert!(err.contains("RINGCAST_MAX_CONNECTIONS"), "{err}");
        assert!(err.contains("max-connections"), "{err}");
        let err = load(&[], &[("RINGCAST_NO_PIN", "maybe")]).unwrap_err();
        assert!(err.contains("RINGCAST_NO_PIN"), "{err}");
        let err = load(&[], &[("RINGCAST_PIN", "false")]).unwrap_err();
        assert!(err.contains("no-pin"), "{err}");

        let (_d, f) = file("max-conections = 5\n");
        let err = load(&["--config", &f], &[]).unwrap_err();
        assert!(err.contains("max-conections") && err.contains(&f), "{err}");
        let (_d, f) = file("max-topics = \"many\"\n");
        let err = load(&["--config", &f], &[]).unwrap_err();
        assert!(err.contains("max-topics") && err.contains(&f), "{err}");
        let (_d, f) = file("listen = [\"a\", \"b\"]\n");
        assert!(load(&["--config", &f], &[]).unwrap_err().contains("listen"));
        let (_d, f) = file("max-topics = 1\nmax_topics = 2\n");
        assert!(load(&["--config", &f], &[]).unwrap_err().contains("twice"));
        let (_d, f) = file("config = \"other.toml\"\n");
        assert!(load(&["--config", &f], &[]).is_err());
        let (_d, f) = file("max-topics = \n");
        assert!(load(&["--config", &f], &[]).unwrap_err().contains("TOML"));
        let err = load(&["--config", "/nonexistent/ringcast.toml"], &[]).unwrap_err();
        assert!(err.contains("/nonexistent/ringcast.toml"), "{err}");
        // Validation runs on the merged result.
        let (_d, f) = file("client-buffer-bytes = 0\n");
        assert!(load(&["--config", &f], &[])
            .unwrap_err()
            .contains("--client-buffer-bytes"));
    }

    #[test]
    fn unknown_variables_are_warned_about_not_refused() {
        let l = load(&[], &[("RINGCAST_MAX_CONECTIONS", "5")]).unwrap();
        assert_eq!(l.warnings.len(), 1);
        assert!(l.warnings[0].contains("RINGCAST_MAX_CONECTIONS"));
        assert!(l.render().contains("# warning: RINGCAST_MAX_CONECTIONS"));
        assert!(load(&[], &[("RINGCAST_SHARDS", "1")])
            .unwrap()
            .warnings
            .is_empty());
    }

    #[test]
    fn render_reads_back_and_redacts() {
        let l = load(
            &[
                "--publish-token",
                "s3cr3t-value",
                "--public-topic",
                "a/*",
                "--jwt-secret-file",
                "hmac.secret",
            ],
            &[("RINGCAST_HISTORY_SECS", "5")],
        )
        .unwrap();
        let text = l.render();
        assert!(!text.contains("s3cr3t-value"), "{text}");
        assert!(
            text.contains("publish-token = \"REDACTED\"  # flag"),
            "{text}"
        );
        assert!(
            text.contains("history-secs = 5  # env RINGCAST_HISTORY_SECS"),
            "{text}"
        );
        assert!(text.contains("public-topic = [\"a/*\"]  # flag"), "{text}");
        // What it prints is a file `--config` reads back to the same settings (less secrets).
        let (_d, f) = file(&text.replace("publish-token = \"REDACTED\"", ""));
        let back = load(&["--config", &f], &[]).unwrap();
        assert_eq!(back.config.history_secs, 5);
        assert_eq!(back.config.public_topic, ["a/*"]);
        assert_eq!(back.config.listen, l.config.listen);
    }

    #[test]
    fn render_hides_the_redis_password() {
        let l = load(&["--redis", "redis://app:hunter22@10.0.0.5:6379/1"], &[]).unwrap();
        let text = l.render();
        assert!(
            !text.contains("hunter22") && !text.contains("app:"),
            "{text}"
        );
        assert!(
            text.contains("redis = \"redis://***@10.0.0.5:6379/1\"  # flag"),
            "{text}"
        );
    }
}

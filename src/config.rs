//! Server settings: embedded defaults < TOML file < `LATCHKEY_*` environment < flags.
//!
//! Every setting has one name, used as the TOML key, as the environment variable
//! (`LATCHKEY_` + the name in upper case) and in error messages. Unknown keys and bad
//! values are refused with the key named, so a typo never silently falls back.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::password::Params;
use crate::token;

/// Whether and where `/metrics` is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsAccess {
    /// Not served (404).
    Off,
    /// Served only to loopback peers.
    Loopback,
    /// Served to anyone.
    On,
}

/// A network range of trusted proxies (`10.0.0.0/8`, `::1`, `127.0.0.1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` falls in this range (IPv4-mapped IPv6 peers count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Everything `latchkey serve` runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address to listen on (ignored when systemd hands over a socket).
    pub listen: String,
    /// Directory holding `users.redb` and the generated `secret.key`.
    pub data_dir: PathBuf,
    /// Key files; the first signs, all verify. Empty: `secret.key` in the data dir.
    pub key_files: Vec<PathBuf>,
    /// Worker threads.
    pub workers: usize,
    /// The `iss` claim issued and required.
    pub issuer: String,
    /// Token lifetime in seconds.
    pub ttl: u64,
    /// Seconds after the password was entered beyond which a token no longer slides.
    pub absolute_limit: u64,
    /// Clock skew tolerated, seconds.
    pub leeway: u64,
    /// Name of the token cookie.
    pub cookie_name: String,
    /// `Domain` attribute of the cookie, for single sign-on across subdomains.
    pub cookie_domain: Option<String>,
    /// `Secure` attribute (turn off only for plain-HTTP deployments).
    pub cookie_secure: bool,
    /// Whether anyone may register once the first user exists.
    pub signup_open: bool,
    /// argon2id parameters for new hashes.
    pub argon2: Params,
    /// Largest accepted request body, bytes.
    pub body_limit: usize,
    /// Seconds a keep-alive connection may wait for its next request.
    pub read_timeout: u64,
    /// Seconds the whole request head may take, from its first byte (from the accept,
    /// for a new connection).
    pub header_timeout: u64,
    /// Seconds the whole request body may take, from the end of the head.
    pub body_timeout: u64,
    /// Seconds the whole response may take to be written.
    pub send_timeout: u64,
    /// Connections open at once; `None`: derived at start from the descriptor limit
    /// (`server::default_max_connections`).
    pub max_connections: Option<usize>,
    /// Connections open at once from one client address (an IPv6 /64 counts as one);
    /// `trusted_proxies` are exempt.
    pub max_connections_per_address: usize,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// Failed logins within `throttle_window` that trigger a lockout.
    pub throttle_max_failures: u32,
    /// Seconds over which failures are counted.
    pub throttle_window: u64,
    /// Seconds a throttled name or address is refused.
    pub throttle_lockout: u64,
    /// Password hashes computed at once; further logins get 503.
    pub login_concurrency: usize,
    /// Who may read `/metrics`.
    pub metrics: MetricsAccess,
    /// The public origin of this server (`https://auth.example.com`), used for
    /// absolute redirects and the `Origin` check; empty: taken from `Host`.
    pub public_url: Option<String>,
    /// Run without a user store: verify tokens only, send logins to `login_url`.
    pub verify_only: bool,
    /// Where verify-only instances send visitors to log in.
    pub login_url: Option<String>,
}

impl Config {
    /// The embedded defaults, given the process environment's systemd variables.
    pub fn defaults(env: &Env) -> Config {
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let data_dir = env
            .get("STATE_DIRECTORY")
            // systemd may pass several colon-separated directories; the first is ours.
            .and_then(|d| d.split(':').next().map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("latchkey-data"));
        let key_files = env
            .get("CREDENTIALS_DIRECTORY")
            .map(|d| Path::new(d).join("latchkey.key"))
            .filter(|p| p.exists())
            .into_iter()
            .collect();
        Config {
            listen: "127.0.0.1:8080".into(),
            data_dir,
            key_files,
            workers,
            issuer: token::DEFAULT_ISSUER.into(),
            ttl: token::DEFAULT_TTL,
            absolute_limit: 7 * 24 * 3600,
            leeway: token::DEFAULT_LEEWAY,
            cookie_name: "token".into(),
            cookie_domain: None,
            cookie_secure: true,
            signup_open: false,
            argon2: Params::default(),
            body_limit: 16 * 1024,
            read_timeout: 30,
            header_timeout: 10,
            body_timeout: 10,
            send_timeout: 10,
            max_connections: None,
            max_connections_per_address: 64,
            trusted_proxies: Vec::new(),
            throttle_max_failures: 5,
            throttle_window: 120,
            throttle_lockout: 300,
            login_concurrency: workers.saturating_sub(1).max(1),
            metrics: MetricsAccess::Loopback,
            public_url: None,
            verify_only: false,
            login_url: None,
        }
    }

    /// Builds the configuration from its layers; `file` is the `--config` path.
    pub fn load(
        file: Option<&Path>,
        env: &Env,
        flags: &[(&str, Value)],
    ) -> Result<Config, ConfigError> {
        let mut config = Config::defaults(env);
        let mut login_concurrency_set = false;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| ConfigError::File {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| ConfigError::File {
                        path: path.to_path_buf(),
                        reason: e.message().to_string(),
                    })?;
            for (key, value) in table {
                let value = Value::from_toml(&key, value)?;
                login_concurrency_set |= key == "login_concurrency";
                config.set(&key, value, Source::File)?;
            }
        }
        for (name, value) in env.vars.iter() {
            let Some(key) = name.strip_prefix("LATCHKEY_") else {
                continue;
            };
            if key == "LOG" {
                continue;
            }
            let key = key.to_ascii_lowercase();
            login_concurrency_set |= key == "login_concurrency";
            let value = if LIST_KEYS.contains(&key.as_str()) {
                Value::List(split_list(value))
            } else {
                Value::Text(value.clone())
            };
            config.set(&key, value, Source::Env)?;
        }
        for (key, value) in flags {
            login_concurrency_set |= *key == "login_concurrency";
            config.set(key, value.clone(), Source::Flag)?;
        }
        if !login_concurrency_set {
            config.login_concurrency = config.workers.saturating_sub(1).max(1);
        }
        config.check()?;
        Ok(config)
    }

    fn set(&mut self, key: &str, value: Value, source: Source) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::Value {
            key: key.to_string(),
            source,
            reason: reason.to_string(),
        };
        match key {
            "listen" => self.listen = value.text(key, source)?,
            "data_dir" => self.data_dir = PathBuf::from(value.text(key, source)?),
            "key_files" | "key_file" => {
                self.key_files = value
                    .list(key, source)?
                    .into_iter()
                    .map(PathBuf::from)
                    .collect();
            }
            "workers" => self.workers = value.number(key, source, 1, 256)? as usize,
            "issuer" => {
                let issuer = value.text(key, source)?;
                if issuer.is_empty() {
                    return Err(bad("must not be empty"));
                }
                self.issuer = issuer;
            }
            "ttl" => self.ttl = value.number(key, source, 60, 30 * 24 * 3600)?,
            "absolute_limit" => {
                self.absolute_limit = value.number(key, source, 60, 365 * 24 * 3600)?
            }
            "leeway" => self.leeway = value.number(key, source, 0, 600)?,
            "cookie_name" => {
                let name = value.text(key, source)?;
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                {
                    return Err(bad("must be letters, digits, '-' or '_'"));
                }
                self.cookie_name = name;
            }
            "cookie_domain" => {
                let domain = value
                    .text(key, source)?
                    .trim_start_matches('.')
                    .to_ascii_lowercase();
                if domain.is_empty() {
                    self.cookie_domain = None;
                } else if !domain.contains('.')
                    || !domain
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
                {
                    return Err(bad("must be a domain name like example.com"));
                } else {
                    self.cookie_domain = Some(domain);
                }
            }
            "cookie_secure" => self.cookie_secure = value.boolean(key, source)?,
            "signup" => {
                self.signup_open = match value.text(key, source)?.as_str() {
                    "open" => true,
                    "closed" => false,
                    _ => return Err(bad("must be \"open\" or \"closed\"")),
                }
            }
            "argon2_memory_kib" => {
                self.argon2.m_kib = value.number(key, source, 8, 4 * 1024 * 1024)? as u32
            }
            "argon2_iterations" => self.argon2.t = value.number(key, source, 1, 100)? as u32,
            "argon2_parallelism" => self.argon2.p = value.number(key, source, 1, 64)? as u32,
            "body_limit" => {
                self.body_limit = value.number(key, source, 1024, 16 * 1024 * 1024)? as usize
            }
            "read_timeout" => self.read_timeout = value.number(key, source, 1, 3600)?,
            "header_timeout" => self.header_timeout = value.number(key, source, 1, 3600)?,
            "body_timeout" => self.body_timeout = value.number(key, source, 1, 3600)?,
            "send_timeout" => self.send_timeout = value.number(key, source, 1, 3600)?,
            "max_connections" => {
                self.max_connections = Some(value.number(key, source, 1, 1_000_000)? as usize)
            }
            "max_connections_per_address" => {
                self.max_connections_per_address = value.number(key, source, 1, 1_000_000)? as usize
            }
            "trusted_proxies" => {
                let mut nets = Vec::new();
                for item in value.list(key, source)? {
                    nets.push(Cidr::parse(item.trim()).ok_or_else(|| {
                        bad(&format!("\"{item}\" is not an IP address or CIDR range"))
                    })?);
                }
                self.trusted_proxies = nets;
            }
            "throttle_max_failures" => {
                self.throttle_max_failures = value.number(key, source, 0, 1_000_000)? as u32;
            }
            "throttle_window" => self.throttle_window = value.number(key, source, 1, 86_400)?,
            "throttle_lockout" => self.throttle_lockout = value.number(key, source, 1, 86_400)?,
            "login_concurrency" => {
                self.login_concurrency = value.number(key, source, 1, 256)? as usize
            }
            "metrics" => {
                self.metrics = match value.text(key, source)?.as_str() {
                    "on" => MetricsAccess::On,
                    "off" => MetricsAccess::Off,
                    "loopback" => MetricsAccess::Loopback,
                    _ => return Err(bad("must be \"on\", \"off\" or \"loopback\"")),
                }
            }
            "public_url" => {
                let url = value.text(key, source)?.trim_end_matches('/').to_string();
                if url.is_empty() {
                    self.public_url = None;
                } else if origin_of(&url).as_deref() != Some(url.as_str()) {
                    return Err(bad(
                        "must be an origin like https://auth.example.com (no path)",
                    ));
                } else {
                    self.public_url = Some(url);
                }
            }
            "verify_only" => self.verify_only = value.boolean(key, source)?,
            "login_url" => {
                let url = value.text(key, source)?;
                if !(url.starts_with("https://")
                    || url.starts_with("http://")
                    || url.starts_with('/'))
                {
                    return Err(bad("must be an http(s) URL or a local path"));
                }
                self.login_url = Some(url);
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    key: key.to_string(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// Checks rules that span several settings.
    fn check(&self) -> Result<(), ConfigError> {
        let rule = |key: &str, reason: &str| {
            Err(ConfigError::Value {
                key: key.into(),
                source: Source::Combined,
                reason: reason.into(),
            })
        };
        if self.verify_only && self.login_url.is_none() {
            return rule(
                "login_url",
                "is required with verify_only (where should visitors log in?)",
            );
        }
        if self.verify_only && self.key_files.is_empty() {
            return rule(
                "key_files",
                "is required with verify_only (the issuing instance's key)",
            );
        }
        if self.absolute_limit < self.ttl {
            return rule("absolute_limit", "must be at least ttl");
        }
        if self.argon2.m_kib < 8 * self.argon2.p {
            return rule(
                "argon2_memory_kib",
                "must be at least 8 KiB per lane of parallelism",
            );
        }
        Ok(())
    }

    /// The key files in force: the configured ones, or `secret.key` in the data dir.
    pub fn effective_key_files(&self) -> Vec<PathBuf> {
        if self.key_files.is_empty() {
            vec![self.data_dir.join("secret.key")]
        } else {
            self.key_files.clone()
        }
    }

    /// The user store file.
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("users.redb")
    }
}

/// Keys whose value is a list.
const LIST_KEYS: &[&str] = &["key_files", "key_file", "trusted_proxies"];

/// Every key the configuration accepts, for documentation and tests.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "key_files",
    "workers",
    "issuer",
    "ttl",
    "absolute_limit",
    "leeway",
    "cookie_name",
    "cookie_domain",
    "cookie_secure",
    "signup",
    "argon2_memory_kib",
    "argon2_iterations",
    "argon2_parallelism",
    "body_limit",
    "read_timeout",
    "header_timeout",
    "body_timeout",
    "send_timeout",
    "max_connections",
    "max_connections_per_address",
    "trusted_proxies",
    "throttle_max_failures",
    "throttle_window",
    "throttle_lockout",
    "login_concurrency",
    "metrics",
    "public_url",
    "verify_only",
    "login_url",
];

fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

/// `scheme://host[:port]` of an absolute http(s) URL, lowercased; `None` otherwise.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    if authority.is_empty()
        || authority.contains('@')
        || !authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    {
        return None;
    }
    Some(format!("{scheme}://{}", authority.to_ascii_lowercase()))
}

/// The process environment, captured once (tests pass their own).
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: BTreeMap<String, String>,
}

impl Env {
    /// The real environment.
    pub fn from_process() -> Env {
        Env {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment from pairs.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Env {
        Env {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// A variable's value, when set and not empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// A setting's raw value before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text (environment, flags, TOML strings).
    Text(String),
    /// A TOML integer.
    Integer(i64),
    /// A TOML boolean.
    Bool(bool),
    /// A list (TOML arrays, comma-separated environment values, repeated flags).
    List(Vec<String>),
}

impl Value {
    fn from_toml(key: &str, value: toml::Value) -> Result<Value, ConfigError> {
        Ok(match value {
            toml::Value::String(s) => Value::Text(s),
            toml::Value::Integer(i) => Value::Integer(i),
            toml::Value::Boolean(b) => Value::Bool(b),
            toml::Value::Array(items) => Value::List(
                items
                    .into_iter()
                    .map(|v| match v {
                        toml::Value::String(s) => Ok(s),
                        _ => Err(ConfigError::Value {
                            key: key.into(),
                            source: Source::File,
                            reason: "must be a list of strings".into(),
                        }),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => {
                return Err(ConfigError::Value {
                    key: key.into(),
                    source: Source::File,
                    reason: "has an unsupported type".into(),
                });
            }
        })
    }

    fn text(self, key: &str, source: Source) -> Result<String, ConfigError> {
        match self {
            Value::Text(s) => Ok(s),
            Value::Integer(i) => Ok(i.to_string()),
            _ => Err(ConfigError::Value {
                key: key.into(),
                source,
                reason: "must be a string".into(),
            }),
        }
    }

    fn list(self, key: &str, source: Source) -> Result<Vec<String>, ConfigError> {
        match self {
            Value::List(items) => Ok(items),
            Value::Text(s) => Ok(split_list(&s)),
            _ => Err(ConfigError::Value {
                key: key.into(),
                source,
                reason: "must be a list of strings".into(),
            }),
        }
    }

    fn number(self, key: &str, source: Source, min: u64, max: u64) -> Result<u64, ConfigError> {
        let bad = |reason: String| ConfigError::Value {
            key: key.into(),
            source,
            reason,
        };
        let n = match self {
            Value::Integer(i) => {
                u64::try_from(i).map_err(|_| bad("must not be negative".into()))?
            }
            Value::Text(s) => s
                .trim()
                .parse::<u64>()
                .map_err(|_| bad(format!("must be a whole number, not \"{s}\"")))?,
            _ => return Err(bad("must be a whole number".into())),
        };
        if n < min || n > max {
            return Err(bad(format!("must be between {min} and {max}, not {n}")));
        }
        Ok(n)
    }

    fn boolean(self, key: &str, source: Source) -> Result<bool, ConfigError> {
        match self {
            Value::Bool(b) => Ok(b),
            Value::Text(s) => match s.trim() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(ConfigError::Value {
                    key: key.into(),
                    source,
                    reason: format!("must be true or false, not \"{s}\""),
                }),
            },
            _ => Err(ConfigError::Value {
                key: key.into(),
                source,
                reason: "must be true or false".into(),
            }),
        }
    }
}

/// Which layer a setting came from (named in errors).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The TOML file.
    File,
    /// A `LATCHKEY_*` variable.
    Env,
    /// A command-line flag.
    Flag,
    /// A rule over several settings.
    Combined,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::File => "in the config file",
            Source::Env => "in the environment",
            Source::Flag => "on the command line",
            Source::Combined => "in the configuration",
        })
    }
}

/// Why the configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The config file could not be read or parsed.
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A key no version of latchkey knows.
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it was written.
        source: Source,
    },
    /// A known key with a value that is not acceptable.
    Value {
        /// The key.
        key: String,
        /// Where it was set.
        source: Source,
        /// What is wrong with it.
        reason: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::File { path, reason } => {
                write!(
                    f,
                    "cannot read the config file {}: {reason}",
                    path.display()
                )
            }
            ConfigError::UnknownKey { key, source } => {
                let shown = match source {
                    Source::Env => format!("LATCHKEY_{}", key.to_ascii_uppercase()),
                    _ => key.clone(),
                };
                write!(
                    f,
                    "unknown setting \"{shown}\" {source} (known settings: {})",
                    KEYS.join(", ")
                )
            }
            ConfigError::Value {
                key,
                source,
                reason,
            } => {
                write!(f, "setting \"{key}\" {source} {reason}")
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_temp(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "latchkey-config-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("latchkey.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::load(None, &Env::default(), &[]).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("latchkey-data"));
        assert_eq!(
            c.effective_key_files(),
            vec![PathBuf::from("latchkey-data/secret.key")]
        );
        assert_eq!((c.ttl, c.absolute_limit, c.leeway), (3600, 604_800, 30));
        assert_eq!(c.issuer, "latchkey");
        assert!(c.cookie_secure && !c.signup_open && !c.verify_only);
        assert_eq!(c.body_limit, 16 * 1024);
        assert_eq!(c.metrics, MetricsAccess::Loopback);
        assert_eq!((c.read_timeout, c.header_timeout), (30, 10));
        assert_eq!((c.body_timeout, c.send_timeout), (10, 10));
        assert_eq!(c.max_connections, None);
        assert_eq!(c.max_connections_per_address, 64);
    }

    #[test]
    fn precedence_is_flags_env_file_defaults() {
        let file =
            write_temp("listen = \"127.0.0.1:1\"\nttl = 100\nissuer = \"file\"\nworkers = 3\n");
        let env = Env::from_pairs(&[("LATCHKEY_TTL", "200"), ("LATCHKEY_ISSUER", "env")]);
        let flags = [("issuer", Value::Text("flag".into()))];
        let c = Config::load(Some(&file), &env, &flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:1"); // file over default
        assert_eq!(c.ttl, 200); // env over file
        assert_eq!(c.issuer, "flag"); // flag over env
        assert_eq!(c.workers, 3);
        assert_eq!(c.login_concurrency, 2);
    }

    #[test]
    fn refusals_name_the_key() {
        let file = write_temp("tll = 5\n");
        let err = Config::load(Some(&file), &Env::default(), &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("unknown setting \"tll\" in the config file"),
            "{err}"
        );

        let env = Env::from_pairs(&[("LATCHKEY_WORKRES", "2")]);
        let err = Config::load(None, &env, &[]).unwrap_err();
        assert!(err.to_string().contains("LATCHKEY_WORKRES"), "{err}");

        let env = Env::from_pairs(&[("LATCHKEY_WORKERS", "many")]);
        let err = Config::load(None, &env, &[]).unwrap_err();
        assert!(
            err.to_string()
                .contains("\"workers\" in the environment must be a whole number"),
            "{err}"
        );

        let file = write_temp("ttl = \"soon\"\n");
        let err = Config::load(Some(&file), &Env::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("\"ttl\""), "{err}");

        let file = write_temp("cookie_secure = \"maybe\"\n");
        let err = Config::load(Some(&file), &Env::default(), &[]).unwrap_err();
        assert!(err.to_string().contains("\"cookie_secure\""), "{err}");

        let file = write_temp("trusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n");
        let err = Config::load(Some(&file), &Env::default(), &[]).unwrap_err();
        assert!(
            err.to_string().contains("\"nope\" is not an IP address"),
            "{err}"
        );

        let file = write_temp("this is = not toml\n");
        let err = Config::load(Some(&file), &Env::default(), &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("cannot read the config file"),
            "{err}"
        );

        let flags = [("verify_only", Value::Bool(true))];
        let err = Config::load(None, &Env::default(), &flags).unwrap_err();
        assert!(err.to_string().contains("\"login_url\""), "{err}");

        let flags = [("public_url", Value::Text("https://a.example/path".into()))];
        let err = Config::load(None, &Env::default(), &flags).unwrap_err();
        assert!(err.to_string().contains("\"public_url\""), "{err}");
    }

    #[test]
    fn systemd_directories() {
        let dir = std::env::temp_dir().join(format!("latchkey-creds-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("latchkey.key"), "x").unwrap();
        let env = Env::from_pairs(&[
            ("STATE_DIRECTORY", "/var/lib/latchkey:/other"),
            ("CREDENTIALS_DIRECTORY", dir.to_str().unwrap()),
        ]);
        let c = Config::load(None, &env, &[]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/latchkey"));
        assert_eq!(c.key_files, vec![dir.join("latchkey.key")]);
    }

    #[test]
    fn cidr_matching() {
        let net = Cidr::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        let one = Cidr::parse("::1").unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("::2".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("garbage"), None);
    }

    #[test]
    fn origins() {
        assert_eq!(
            origin_of("https://Auth.Example.com/x?y").as_deref(),
            Some("https://auth.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin_of("javascript://x"), None);
        assert_eq!(origin_of("https://user@evil.example"), None);
        assert_eq!(origin_of("/local"), None);
    }
}

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricsAccess {
    /// Not served (404).
    Off,
    /// Served only to loopback peers.
    #[default]
    Loopback,
    /// Served to anyone.
    On,
}

/// The second-factor policy (setting `totp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TotpMode {
    /// No enrolment is offered and no code is asked for; factors enrolled earlier are
    /// kept, unused, for when the setting changes back.
    Off,
    /// Users may enrol; whoever has a factor enters a code at every login;
    /// `totp_required_roles` must.
    #[default]
    Optional,
    /// Every user must have a factor: one who has none is sent to enrolment right after
    /// the password, before any other page.
    Required,
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

/// Everything `latchkey serve` runs with. Built by [`Config::load`] from [`SETTINGS`];
/// `Config::default()` is only the blank every load starts from.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Config {
    /// Address to listen on (ignored when systemd hands over a socket).
    pub listen: String,
    /// Directory holding `users.redb` and the generated `secret.key`.
    pub data_dir: PathBuf,
    /// The PostgreSQL store's URL; `None`: `users.redb` in `data_dir`.
    pub store: Option<StoreUrl>,
    /// The file holding the PostgreSQL password.
    pub store_password_file: Option<PathBuf>,
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
    /// Connections open at once; `None`: derived at start from the memory budget and
    /// the descriptor limit (`server::default_max_connections`).
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
    /// Whether second factors are off, optional or required for everyone.
    pub totp: TotpMode,
    /// Roles whose users must have a second factor even when `totp` is `optional`.
    pub totp_required_roles: Vec<String>,
}

/// The `store` setting's URL. It may carry a password, so its `Debug` shows it with the
/// password replaced by `***` (a configuration printed for debugging never leaks it).
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The URL as given (password included: hand it only to the store).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::store::redact(&self.0))
    }
}

/// How a setting's value is written: decides how an environment variable is read (lists
/// are comma-separated) and how the flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text (an address, a URL, a name).
    Text,
    /// A file or directory path.
    Path,
    /// A whole number within bounds.
    Number,
    /// `true` or `false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    Bool,
    /// One of a few words.
    Choice,
    /// A list (a TOML array, a comma-separated variable, a repeated flag).
    List,
    /// A list of file paths, written like [`Kind::List`].
    Paths,
}

impl Kind {
    /// Whether values are lists (comma-separated in the environment, repeated flags).
    pub fn is_list(self) -> bool {
        matches!(self, Kind::List | Kind::Paths)
    }
}

/// A setting's embedded default.
#[derive(Debug, Clone, Copy)]
pub enum SettingDefault {
    /// This value, applied through the setting's own rule like any other.
    Value(&'static str),
    /// Computed from the environment or from other settings once every layer is read;
    /// `doc` says how, for the README and `--help`.
    Derived {
        /// How the default is found, in words.
        doc: &'static str,
        /// The value; `None` leaves the setting unset.
        value: fn(&Config, &Env) -> Option<Value>,
    },
    /// No value: the feature it configures is off until it is set.
    Unset,
}

/// One setting, defined once: its name (the TOML key; `LATCHKEY_` + the name in upper
/// case is its environment variable), its flag of `latchkey serve` if any, its shape,
/// default and one line of help, and how a value is checked and applied. [`SETTINGS`]
/// drives the TOML file, the environment, the flags, `serve --help` and the README table.
pub struct Setting {
    /// The TOML key and, upper-cased after `LATCHKEY_`, the environment variable.
    pub name: &'static str,
    /// Other names accepted for it (older or singular spellings).
    pub aliases: &'static [&'static str],
    /// The long flag of `latchkey serve` (without `--`), when there is one.
    pub flag: Option<&'static str>,
    /// How its value is written.
    pub kind: Kind,
    /// The embedded default.
    pub default: SettingDefault,
    /// What it does, in one line.
    pub help: &'static str,
    /// Checks `value` and stores it in the configuration.
    apply: fn(&mut Config, Value, &Site<'_>) -> Result<(), ConfigError>,
}

impl Setting {
    /// The environment variable: `LATCHKEY_` + the name in upper case.
    pub fn env_var(&self) -> String {
        format!("LATCHKEY_{}", self.name.to_ascii_uppercase())
    }

    /// Every environment variable that sets it: [`env_var`](Self::env_var), then one per alias.
    pub fn env_vars(&self) -> Vec<String> {
        std::iter::once(self.name)
            .chain(self.aliases.iter().copied())
            .map(|n| format!("LATCHKEY_{}", n.to_ascii_uppercase()))
            .collect()
    }

    /// The placeholder of the flag's value in `--help`.
    pub fn value_name(&self) -> &'static str {
        match self.kind {
            Kind::Path if self.name.ends_with("dir") => "DIR",
            Kind::Path | Kind::Paths => "FILE",
            Kind::Number => "N",
            Kind::Text | Kind::Bool | Kind::Choice | Kind::List => "VALUE",
        }
    }

    /// The default as documented: the value, or how it is derived.
    pub fn default_doc(&self) -> &'static str {
        match self.default {
            SettingDefault::Value(v) => v,
            SettingDefault::Derived { doc, .. } => doc,
            SettingDefault::Unset => "none",
        }
    }

    fn answers_to(&self, key: &str) -> bool {
        self.name == key || self.aliases.contains(&key)
    }
}

/// Where a value being applied came from, to name it in errors.
pub struct Site<'a> {
    key: &'a str,
    source: Source,
}

impl Site<'_> {
    fn bad(&self, reason: impl Into<String>) -> ConfigError {
        ConfigError::Value {
            key: self.key.to_string(),
            source: self.source,
            reason: reason.into(),
        }
    }

    fn text(&self, value: Value) -> Result<String, ConfigError> {
        value.text(self.key, self.source)
    }

    fn number(&self, value: Value, min: u64, max: u64) -> Result<u64, ConfigError> {
        value.number(self.key, self.source, min, max)
    }

    fn boolean(&self, value: Value) -> Result<bool, ConfigError> {
        value.boolean(self.key, self.source)
    }

    fn list(&self, value: Value) -> Result<Vec<String>, ConfigError> {
        value.list(self.key, self.source)
    }

    /// One of `choices`, as its index.
    fn choice(&self, value: Value, choices: &[&str]) -> Result<usize, ConfigError> {
        let text = self.text(value)?;
        choices.iter().position(|c| *c == text).ok_or_else(|| {
            let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
            let list = match quoted.split_last() {
                Some((last, rest)) if !rest.is_empty() => {
                    format!("{} or {last}", rest.join(", "))
                }
                _ => quoted.join(""),
            };
            self.bad(format!("must be {list}"))
        })
    }
}

macro_rules! setting {
    ($name:literal, $kind:ident, $default:expr, $help:literal, |$c:ident, $v:ident, $s:ident| $apply:expr) => {
        setting!($name, [], None, $kind, $default, $help, |$c, $v, $s| $apply)
    };
    ($name:literal, flag $flag:literal, $kind:ident, $default:expr, $help:literal, |$c:ident, $v:ident, $s:ident| $apply:expr) => {
        setting!($name, [], Some($flag), $kind, $default, $help, |$c, $v, $s| $apply)
    };
    ($name:literal, [$($alias:literal),*], $flag:expr, $kind:ident, $default:expr, $help:literal, |$c:ident, $v:ident, $s:ident| $apply:expr) => {
        Setting {
            name: $name,
            aliases: &[$($alias),*],
            flag: $flag,
            kind: Kind::$kind,
            default: $default,
            help: $help,
            apply: |$c: &mut Config, $v: Value, $s: &Site<'_>| -> Result<(), ConfigError> {
                $apply;
                Ok(())
            },
        }
    };
}

use SettingDefault::{Derived, Unset, Value as Is};

/// Every setting, in the order the README and `--help` list them.
pub const SETTINGS: &[Setting] = &[
    setting!("listen", flag "listen", Text, Is("127.0.0.1:8080"),
        "address to listen on (ignored when systemd passes a socket)",
        |c, v, s| c.listen = s.text(v)?),
    setting!("data_dir", flag "data-dir", Path,
        Derived { doc: "`./latchkey-data`, or `$STATE_DIRECTORY`", value: default_data_dir },
        "holds `users.redb`, the generated `secret.key` and the other files the server keeps",
        |c, v, s| c.data_dir = PathBuf::from(s.text(v)?)),
    setting!(
        "store",
        flag "store",
        Text,
        Unset,
        "where users are kept: absent, `users.redb` in `data_dir`; a `postgres://user@host/db?sslmode=verify-full` URL, a PostgreSQL database every instance shares (a build with the `postgres` feature; see [Scaling out](#scaling-out))",
        |c, v, s| {
            let url = s.text(v)?;
            if url.trim().is_empty() {
                c.store = None;
            } else if !crate::store::is_postgres_url(&url) {
                return Err(s.bad("must be a postgres:// URL (leave it unset for users.redb in data_dir)"));
            } else {
                c.store = Some(StoreUrl(url.trim().to_string()));
            }
        }
    ),
    setting!(
        "store_password_file",
        Path,
        Unset,
        "a file whose first line is the PostgreSQL password, instead of one in the `store` URL",
        |c, v, s| {
            let path = s.text(v)?;
            c.store_password_file = (!path.is_empty()).then(|| PathBuf::from(path));
        }
    ),
    setting!(
        "key_files",
        ["key_file"],
        Some("key-file"),
        Paths,
        Derived {
            doc: "`$CREDENTIALS_DIRECTORY/latchkey.key` when present, else `<data_dir>/secret.key` (generated on first start)",
            value: default_key_files,
        },
        "signing keys: the first signs, all verify (rotation); the flag repeats",
        |c, v, s| c.key_files = s.list(v)?.into_iter().map(PathBuf::from).collect()
    ),
    setting!("workers", flag "workers", Number,
        Derived { doc: "number of cores", value: default_workers },
        "worker threads computing answers",
        |c, v, s| c.workers = s.number(v, 1, 256)? as usize),
    setting!(
        "issuer",
        Text,
        Is(token::DEFAULT_ISSUER),
        "the `iss` claim issued and required",
        |c, v, s| {
            let issuer = s.text(v)?;
            if issuer.is_empty() {
                return Err(s.bad("must not be empty"));
            }
            c.issuer = issuer;
        }
    ),
    setting!(
        "ttl",
        Number,
        Is("3600"),
        "token lifetime, seconds (60 – 30 days)",
        |c, v, s| c.ttl = s.number(v, token::MIN_TTL, token::MAX_TTL)?
    ),
    setting!(
        "absolute_limit",
        Number,
        Is("604800"),
        "no sliding past this many seconds after the password was entered (7 days)",
        |c, v, s| c.absolute_limit = s.number(v, 60, 365 * 24 * 3600)?
    ),
    setting!(
        "leeway",
        Number,
        Is("30"),
        "clock skew tolerated for `exp`, `nbf`, `iat`, seconds",
        |c, v, s| c.leeway = s.number(v, 0, 600)?
    ),
    setting!(
        "cookie_name",
        Text,
        Is("token"),
        "the token cookie",
        |c, v, s| {
            let name = s.text(v)?;
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            {
                return Err(s.bad("must be letters, digits, '-' or '_'"));
            }
            c.cookie_name = name;
        }
    ),
    setting!(
        "cookie_domain",
        Text,
        Unset,
        "`Domain` of the cookie for single sign-on across subdomains; also the domain (and its subdomains) that redirects may lead to",
        |c, v, s| {
            let domain = s.text(v)?.trim_start_matches('.').to_ascii_lowercase();
            if domain.is_empty() {
                c.cookie_domain = None;
            } else if !domain.contains('.')
                || !domain
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            {
                return Err(s.bad("must be a domain name like example.com"));
            } else {
                c.cookie_domain = Some(domain);
            }
        }
    ),
    setting!(
        "cookie_secure",
        Bool,
        Is("true"),
        "`Secure` attribute of the cookies; turn off only for plain-HTTP deployments",
        |c, v, s| c.cookie_secure = s.boolean(v)?
    ),
    setting!(
        "signup",
        Choice,
        Is("closed"),
        "`open` lets anyone register once the first user exists",
        |c, v, s| c.signup_open = s.choice(v, &["open", "closed"])? == 0
    ),
    setting!(
        "argon2_memory_kib",
        Number,
        Is("19456"),
        "argon2id memory for new hashes, KiB",
        |c, v, s| c.argon2.m_kib = s.number(v, 8, 4 * 1024 * 1024)? as u32
    ),
    setting!(
        "argon2_iterations",
        Number,
        Is("2"),
        "argon2id iterations",
        |c, v, s| c.argon2.t = s.number(v, 1, 100)? as u32
    ),
    setting!(
        "argon2_parallelism",
        Number,
        Is("1"),
        "argon2id lanes",
        |c, v, s| c.argon2.p = s.number(v, 1, 64)? as u32
    ),
    setting!(
        "body_limit",
        Number,
        Is("16384"),
        "largest request body, bytes",
        |c, v, s| c.body_limit = s.number(v, 1024, 16 * 1024 * 1024)? as usize
    ),
    setting!(
        "read_timeout",
        Number,
        Is("30"),
        "seconds a keep-alive connection may wait for its next request",
        |c, v, s| c.read_timeout = s.number(v, 1, 3600)?
    ),
    setting!(
        "header_timeout",
        Number,
        Is("10"),
        "seconds the whole request head may take, from its first byte (from the accept, for a new connection); then 408, or a silent close when nothing came",
        |c, v, s| c.header_timeout = s.number(v, 1, 3600)?
    ),
    setting!(
        "body_timeout",
        Number,
        Is("10"),
        "seconds the whole request body may take, from the end of the head; then 408",
        |c, v, s| c.body_timeout = s.number(v, 1, 3600)?
    ),
    setting!(
        "send_timeout",
        Number,
        Is("10"),
        "seconds the whole response may take to be written; then the connection closes",
        |c, v, s| c.send_timeout = s.number(v, 1, 3600)?
    ),
    setting!(
        "max_connections",
        Number,
        Derived {
            doc: "a quarter of the memory (the cgroup limit, else the RAM) ÷ (40 KiB + `body_limit`), at most descriptor limit − max(64, limit / 8) and 10,000",
            value: |_, _| None,
        },
        "connections open at once (see [HTTP limits](#http-limits))",
        |c, v, s| c.max_connections = Some(s.number(v, 1, 1_000_000)? as usize)
    ),
    setting!(
        "max_connections_per_address",
        Number,
        Is("64"),
        "connections open at once from one client address (an IPv6 /64 counts as one); `trusted_proxies` are exempt",
        |c, v, s| c.max_connections_per_address = s.number(v, 1, 1_000_000)? as usize
    ),
    setting!(
        "trusted_proxies",
        List,
        Unset,
        "addresses or CIDR ranges whose `X-Forwarded-For` is believed",
        |c, v, s| {
            let mut nets = Vec::new();
            for item in s.list(v)? {
                nets.push(Cidr::parse(item.trim()).ok_or_else(|| {
                    s.bad(format!("\"{item}\" is not an IP address or CIDR range"))
                })?);
            }
            c.trusted_proxies = nets;
        }
    ),
    setting!(
        "throttle_max_failures",
        Number,
        Is("5"),
        "failed logins within the window that lock a name or address (0: off)",
        |c, v, s| c.throttle_max_failures = s.number(v, 0, 1_000_000)? as u32
    ),
    setting!(
        "throttle_window",
        Number,
        Is("120"),
        "seconds over which failures are counted",
        |c, v, s| c.throttle_window = s.number(v, 1, 86_400)?
    ),
    setting!(
        "throttle_lockout",
        Number,
        Is("300"),
        "seconds a locked name or address is refused",
        |c, v, s| c.throttle_lockout = s.number(v, 1, 86_400)?
    ),
    setting!(
        "login_concurrency",
        Number,
        Derived {
            doc: "workers − 1 (at least 1)",
            value: default_login_concurrency
        },
        "password hashes computed at once; more get 503",
        |c, v, s| c.login_concurrency = s.number(v, 1, 256)? as usize
    ),
    setting!(
        "metrics",
        Choice,
        Is("loopback"),
        "`/metrics` for `on` anyone, `loopback` peers only, or `off`",
        |c, v, s| {
            c.metrics = [
                MetricsAccess::On,
                MetricsAccess::Off,
                MetricsAccess::Loopback,
            ][s.choice(v, &["on", "off", "loopback"])?]
        }
    ),
    setting!(
        "public_url",
        Text,
        Unset,
        "this server's public origin (`https://auth.example.com`): absolute login redirects from `/auth`, the `Origin` check",
        |c, v, s| {
            let url = s.text(v)?.trim_end_matches('/').to_string();
            if url.is_empty() {
                c.public_url = None;
            } else if origin_of(&url).as_deref() != Some(url.as_str()) {
                return Err(s.bad("must be an origin like https://auth.example.com (no path)"));
            } else {
                c.public_url = Some(url);
            }
        }
    ),
    setting!(
        "totp",
        Choice,
        Is("optional"),
        "second factor (TOTP, RFC 6238): `optional` lets users enrol, `required` makes everyone enrol, `off` neither offers it nor asks for codes",
        |c, v, s| {
            c.totp = [TotpMode::Off, TotpMode::Optional, TotpMode::Required]
                [s.choice(v, &["off", "optional", "required"])?]
        }
    ),
    setting!(
        "totp_required_roles",
        List,
        Unset,
        "roles whose users must have a second factor even when `totp` is `optional` (e.g. `[\"admin\"]`)",
        |c, v, s| {
            let mut roles = Vec::new();
            for role in s.list(v)? {
                let role = role.trim().to_string();
                crate::store::validate_role(&role)
                    .map_err(|e| s.bad(format!("\"{role}\": {e}")))?;
                roles.push(role);
            }
            c.totp_required_roles = roles;
        }
    ),
    setting!("verify_only", flag "verify-only", Bool, Is("false"),
        "run without a user store: verify tokens only, send logins to `login_url`",
        |c, v, s| c.verify_only = s.boolean(v)?),
    setting!("login_url", flag "login-url", Text, Unset,
    "where a verify-only instance sends visitors to log in",
    |c, v, s| {
        let url = s.text(v)?;
        if !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/')) {
            return Err(s.bad("must be an http(s) URL or a local path"));
        }
        c.login_url = Some(url);
    }),
];

/// The data directory when nothing else names one (relative to the working directory).
pub const DEFAULT_DATA_DIR: &str = "latchkey-data";

fn default_data_dir(_: &Config, env: &Env) -> Option<Value> {
    // systemd may pass several colon-separated directories; the first is ours.
    let dir = env
        .get("STATE_DIRECTORY")
        .and_then(|d| d.split(':').next())
        .filter(|d| !d.is_empty())
        .unwrap_or(DEFAULT_DATA_DIR);
    Some(Value::Text(dir.to_string()))
}

fn default_key_files(_: &Config, env: &Env) -> Option<Value> {
    let credential = env
        .get("CREDENTIALS_DIRECTORY")
        .map(|d| Path::new(d).join("latchkey.key"))
        .filter(|p| p.exists())?;
    Some(Value::List(vec![credential.to_string_lossy().into_owned()]))
}

fn default_workers(_: &Config, _: &Env) -> Option<Value> {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Some(Value::Integer(cores.min(256) as i64))
}

fn default_login_concurrency(config: &Config, _: &Env) -> Option<Value> {
    Some(Value::Integer(
        config.workers.saturating_sub(1).max(1) as i64
    ))
}

/// The setting called `key` (or one of its aliases).
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.answers_to(key))
}

impl Config {
    /// The embedded defaults, given the process environment's systemd variables.
    pub fn defaults(env: &Env) -> Config {
        // The defaults are checked by the tests; applying them cannot fail.
        Config::load(None, env, &[]).unwrap_or_default()
    }

    /// Builds the configuration from its layers: the embedded defaults, the TOML file
    /// `file` (the `--config` path), the `LATCHKEY_*` variables of `env`, then `flags`
    /// (setting name, value). Derived defaults are computed last, from the final values
    /// of the settings they depend on; rules across settings are checked at the end.
    pub fn load(
        file: Option<&Path>,
        env: &Env,
        flags: &[(&str, Value)],
    ) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for setting in SETTINGS {
            if let SettingDefault::Value(text) = setting.default {
                config.apply(
                    setting,
                    Value::Text(text.into()),
                    setting.name,
                    Source::Default,
                )?;
            }
        }
        let mut set: Vec<&'static str> = Vec::new();
        if let Some(path) = file {
            for (key, value) in read_file(path)? {
                let value = Value::from_toml(&key, value)?;
                set.push(config.set(&key, value, Source::File)?);
            }
        }
        for (name, value) in env.vars.iter() {
            let Some(key) = name.strip_prefix("LATCHKEY_") else {
                continue;
            };
            if NOT_SETTINGS.contains(&key) {
                continue;
            }
            let key = key.to_ascii_lowercase();
            let value = match setting(&key) {
                Some(s) if s.kind.is_list() => Value::List(split_list(value)),
                _ => Value::Text(value.clone()),
            };
            set.push(config.set(&key, value, Source::Env)?);
        }
        for (key, value) in flags {
            set.push(config.set(key, value.clone(), Source::Flag)?);
        }
        for setting in SETTINGS {
            if let SettingDefault::Derived { value, .. } = setting.default
                && !set.contains(&setting.name)
                && let Some(v) = value(&config, env)
            {
                config.apply(setting, v, setting.name, Source::Default)?;
            }
        }
        config.check()?;
        Ok(config)
    }

    /// Applies `value` to the setting called `key`; returns the setting's name.
    fn set(
        &mut self,
        key: &str,
        value: Value,
        source: Source,
    ) -> Result<&'static str, ConfigError> {
        let setting = setting(key).ok_or_else(|| ConfigError::UnknownKey {
            key: key.to_string(),
            source,
        })?;
        self.apply(setting, value, key, source)?;
        Ok(setting.name)
    }

    fn apply(
        &mut self,
        setting: &Setting,
        value: Value,
        key: &str,
        source: Source,
    ) -> Result<(), ConfigError> {
        (setting.apply)(self, value, &Site { key, source })
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
        if self.totp == TotpMode::Off && !self.totp_required_roles.is_empty() {
            return rule(
                "totp_required_roles",
                "has no effect while totp is \"off\": remove it, or set totp to \"optional\"",
            );
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

    /// The user store file (of the embedded store).
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("users.redb")
    }

    /// Where the user store is: the `store` URL, else `users.redb` in the data dir.
    pub fn store_location(&self) -> crate::store::Location {
        match &self.store {
            Some(url) => crate::store::Location::Postgres {
                url: url.0.clone(),
                password_file: self.store_password_file.clone(),
            },
            None => crate::store::Location::File(self.store_path()),
        }
    }

    /// The PostgreSQL pool's bound: one connection per worker, and three for the control
    /// socket, the login flusher and `/healthz` beside them.
    pub fn store_pool_size(&self) -> usize {
        self.workers + 3
    }
}

/// `LATCHKEY_*` variables that are not settings.
const NOT_SETTINGS: &[&str] = &["LOG"];

/// The top-level keys and values of a TOML file.
fn read_file(path: &Path) -> Result<toml::Table, ConfigError> {
    let failed = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
    text.parse()
        .map_err(|e: toml::de::Error| failed(e.message().to_string()))
}

/// Every setting with its environment variable, default and help, for `serve --help`.
pub fn settings_help() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "Settings (defaults < --config FILE < environment < flags); each is a TOML key and an\n\
         environment variable:\n",
    );
    for s in SETTINGS {
        let _ = writeln!(out, "  {:<24} {}", s.name, s.env_vars().join(", "));
        let help = format!("{} [default: {}]", s.help, s.default_doc());
        let _ = writeln!(out, "      {}", help.replace('`', ""));
    }
    out.push_str("  LATCHKEY_LOG: log level, off | error | info (default) | debug\n");
    out
}

/// The settings table of the README, generated from [`SETTINGS`] (a test checks that
/// README.md holds exactly this table).
pub fn settings_markdown() -> String {
    use std::fmt::Write as _;
    let mut out = String::from("| setting | default | meaning |\n|---|---|---|\n");
    for s in SETTINGS {
        let flag = s.flag.map(|f| format!(" (`--{f}`)")).unwrap_or_default();
        let env: Vec<String> = s.env_vars().iter().map(|v| format!("`{v}`")).collect();
        let env = env.join(", ");
        let default = match s.default {
            SettingDefault::Value(v) => format!("`{v}`"),
            SettingDefault::Derived { doc, .. } => doc.to_string(),
            SettingDefault::Unset => "none".to_string(),
        };
        let _ = writeln!(
            out,
            "| `{}`{flag}, {env} | {default} | {} |",
            s.name, s.help
        );
    }
    out
}

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
    /// The embedded default.
    Default,
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
            Source::Default => "in the embedded defaults",
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
                    SETTINGS
                        .iter()
                        .map(|s| s.name)
                        .collect::<Vec<_>>()
                        .join(", ")
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

    #[test]
    fn the_store_url_is_checked_and_its_password_never_debug_printed() {
        let env = Env::default();
        let flags = [(
            "store",
            Value::Text("postgres://app:s3cret@db.example.org/latchkey".into()),
        )];
        let config = Config::load(None, &env, &flags).expect("a postgres URL");
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(format!("{config:?}").contains("postgres://app:***@db.example.org"));
        assert!(config.store_location().is_postgres());
        let bad = [("store", Value::Text("mysql://app:s3cret@db/x".into()))];
        let err = Config::load(None, &env, &bad).expect_err("not postgres");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(
            !Config::load(None, &env, &[])
                .expect("default")
                .store_location()
                .is_postgres()
        );
    }

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
        assert_eq!(c.totp, TotpMode::Optional);
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
    fn the_second_factor_policy() {
        let c = Config::load(None, &Env::default(), &[]).unwrap();
        assert_eq!(
            (c.totp, c.totp_required_roles.len()),
            (TotpMode::Optional, 0)
        );
        let file =
            write_temp("totp = \"optional\"\ntotp_required_roles = [\"admin\", \" ops \"]\n");
        let c = Config::load(Some(&file), &Env::default(), &[]).unwrap();
        assert_eq!(c.totp_required_roles, ["admin", "ops"]);
        let env = Env::from_pairs(&[("LATCHKEY_TOTP", "required")]);
        assert_eq!(
            Config::load(None, &env, &[]).unwrap().totp,
            TotpMode::Required
        );
        let env = Env::from_pairs(&[("LATCHKEY_TOTP", "on")]);
        let err = Config::load(None, &env, &[]).unwrap_err().to_string();
        assert!(
            err.contains("must be \"off\", \"optional\" or \"required\""),
            "{err}"
        );
        let env = Env::from_pairs(&[("LATCHKEY_TOTP_REQUIRED_ROLES", "admin,Admin")]);
        let err = Config::load(None, &env, &[]).unwrap_err().to_string();
        assert!(err.contains("\"Admin\": bad role"), "{err}");
        let env = Env::from_pairs(&[
            ("LATCHKEY_TOTP", "off"),
            ("LATCHKEY_TOTP_REQUIRED_ROLES", "admin"),
        ]);
        let err = Config::load(None, &env, &[]).unwrap_err().to_string();
        assert!(
            err.contains("\"totp_required_roles\"") && err.contains("no effect"),
            "{err}"
        );
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
    fn the_readme_table_lists_every_setting_with_its_default() {
        let readme = include_str!("../README.md");
        let table = settings_markdown();
        assert!(
            readme.contains(&table),
            "README.md must hold the settings table generated from SETTINGS; replace it with:\n{table}"
        );
    }

    #[test]
    fn every_setting_applies_its_own_default_and_has_a_unique_name() {
        let c = Config::defaults(&Env::default());
        assert_eq!(
            c.workers,
            std::thread::available_parallelism().map_or(2, |n| n.get())
        );
        assert_eq!(c.login_concurrency, c.workers.saturating_sub(1).max(1));
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(!s.help.is_empty(), "{}", s.name);
            for other in &SETTINGS[i + 1..] {
                assert!(!other.answers_to(s.name), "{} twice", s.name);
            }
            if let SettingDefault::Value(v) = s.default {
                let mut blank = Config::default();
                blank
                    .apply(s, Value::Text(v.into()), s.name, Source::Default)
                    .unwrap_or_else(|e| panic!("{}: {e}", s.name));
            }
        }
        let env = Env::from_pairs(&[("LATCHKEY_KEY_FILE", "a.key,b.key")]);
        let c = Config::load(None, &env, &[]).unwrap();
        assert_eq!(
            c.key_files,
            vec![PathBuf::from("a.key"), PathBuf::from("b.key")]
        );
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

//! The running server: listener (bound, or handed over by systemd), the connection
//! layer's limits and deadlines, N worker threads on one `tiny_http::Server`, the
//! conversion between tiny_http and `http` types, the access log, systemd notification
//! and watchdog, and graceful shutdown.
//!
//! **A worker never waits on a client**: tiny_http's connection loop reads each request
//! whole (head and body, each within a size limit and a deadline) before a worker takes
//! it, and writes the answer after; a worker here only computes.

use std::borrow::Cow;
use std::io;
use std::net::TcpListener;
use std::os::fd::FromRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::accounts::{Accounts, Rules, SetupCode, SetupError, TotpPolicy};
use crate::auth::{Auth, Policy};
use crate::config::Config;
use crate::control::{ControlError, ControlSocket};
use crate::http::{self, Method, Reply, Request};
use crate::keeper::{self, Keeper};
use crate::keys::{self, KeyRing};
use crate::log::{self, Level};
use crate::memory;
use crate::metrics::Metrics;
use crate::pages;
use crate::password::Passwords;
use crate::routes::{self, App, Outcome, Shared};
use crate::store::{HealthEvent, OpenError, StoreError};
use crate::throttle::Limits;
use crate::token::{Clock, Validation, Verifier};
use crate::wire::{self, DateCache, FixedHead, Version};

/// The request headers the handlers read; the connection layer keeps no others (it
/// checks them and drops them), so a request never holds bytes nobody reads.
const HEADERS_READ: &[&str] = &[
    "cookie",
    "authorization",
    "content-type",
    "host",
    "origin",
    "x-original-url",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-uri",
];

/// The largest response buffer a worker keeps between requests, bytes.
const MAX_KEPT_BUFFER: usize = 256 * 1024;

/// The longest accepted `Cookie` header (all of them together), bytes.
pub const MAX_COOKIE_BYTES: usize = 8 * 1024;
/// The longest accepted `Authorization` header, bytes.
pub const MAX_AUTHORIZATION_BYTES: usize = 8 * 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug)]
pub enum ServeError {
    /// A key could not be loaded or generated.
    Key(keys::KeyError),
    /// The user store could not be opened, is damaged, or could not remember the key.
    Store(StoreError),
    /// The password parameters were refused.
    Password(crate::password::PasswordError),
    /// The data directory could not be created.
    DataDir(std::path::PathBuf, io::Error),
    /// The listen address could not be bound or the inherited socket used.
    Listen(String, io::Error),
    /// The connection layer stopped.
    Accept(io::Error),
    /// The setup code for the first registration could not be made.
    Setup(SetupError),
    /// The control socket could not be made.
    Control(ControlError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServeError::Key(e) => write!(f, "{e}"),
            ServeError::Store(e) => write!(f, "{e}"),
            ServeError::Password(e) => write!(f, "argon2 settings refused: {e}"),
            ServeError::DataDir(p, e) => {
                write!(f, "cannot create the data directory {}: {e}", p.display())
            }
            ServeError::Listen(a, e) => write!(f, "cannot listen on {a}: {e}"),
            ServeError::Accept(e) => write!(f, "the server stopped serving connections: {e}"),
            ServeError::Setup(e) => write!(f, "{e}"),
            ServeError::Control(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Everything built from the configuration before the first request.
pub struct Prepared {
    app: App,
    workers: usize,
}

impl Prepared {
    /// The application the workers will run: in-process tests call
    /// `routes::handle(prepared.app(), &request, now)` with it, without sockets.
    pub fn app(&self) -> &App {
        &self.app
    }
}

/// Opens (or on a first start creates) the store, loads the keys (generating
/// `secret.key` only for a store that was never served, or with `replace_key`), checks
/// that the primary key is the one the store was last served with, scans the store, and
/// builds the application, without listening yet.
pub fn prepare(config: Config) -> Result<Prepared, ServeError> {
    prepare_with(config, false)
}

/// [`prepare`], where `replace_key` (`serve --replace-key`) accepts a primary key the
/// store was not served with, generating `secret.key` when the default key file is
/// missing: the deliberate switch to a new key.
pub fn prepare_with(config: Config, replace_key: bool) -> Result<Prepared, ServeError> {
    // The key the store remembers, read through an inspection first: a start refused for
    // its key (or for a damaged store) leaves the store exactly as it was.
    let location = config.store_location();
    let remembered = if config.verify_only {
        None
    } else {
        match location.inspect() {
            Ok(store) => store
                .served_kid()
                .map_err(|e| ServeError::Store(e.into()))?,
            Err(OpenError::Missing(_)) => None,
            Err(e) => return Err(ServeError::Store(e.into())),
        }
    };
    let (ring, continuity) = load_keys(&config, remembered.as_deref(), replace_key)?;
    let store = if config.verify_only {
        None
    } else {
        make_dir(&config.data_dir)?;
        let store = location
            .open(config.store_pool_size())
            .map_err(|e| ServeError::Store(e.into()))?;
        if continuity.changes() {
            store
                .remember_kid(ring.primary().kid())
                .map_err(|e| ServeError::Store(e.into()))?;
        }
        if store.is_shared() {
            log::info(&format!(
                "user store: {} (shared; at most {} connections)",
                location.display(),
                config.store_pool_size()
            ));
            // Other instances' changes are heard from the first request on.
            if !store.listen(Duration::from_secs(2)) {
                log::error(
                    "user store: not listening for other instances' changes yet; every \
                     request reads the database until the notification connection is up",
                );
            }
        }
        Some(Arc::new(store))
    };
    if let Some(store) = &store {
        let scan = store.scan().map_err(|e| ServeError::Store(e.into()))?;
        let users = scan.users;
        match scan.verdict() {
            Ok(_) => log::info(&format!("user store: {users} users")),
            Err(e) => log::error(&format!("{e}")),
        }
        // From here on, changes of the store's health are logged once each.
        store.set_observer(log_store_event);
    }
    let passwords = Passwords::new(config.argon2).map_err(ServeError::Password)?;
    let validation = Validation {
        issuer: config.issuer.clone(),
        leeway: config.leeway,
        ttl: config.ttl,
        clock: Clock::System,
    };
    let policy = Policy {
        cookie_name: config.cookie_name.clone(),
        cookie_domain: config.cookie_domain.clone(),
        cookie_secure: config.cookie_secure,
        ttl: config.ttl,
        absolute_limit: config.absolute_limit,
        issuer: config.issuer.clone(),
    };
    let setup = match &store {
        Some(store) => SetupCode::arm(&config.data_dir, store).map_err(ServeError::Setup)?,
        None => SetupCode::none(),
    };
    if let (Some(code), Some(path)) = (setup.code(), setup.path()) {
        log::info(&format!(
            "no account exists yet: register the administrator at /register with the \
             one-time setup code {code} (also in {}), or create one with \
             `latchkey user add NAME --role admin`",
            path.display()
        ));
    }
    let keeper = Keeper::new(
        store.clone(),
        &config.effective_key_files(),
        &ring,
        config.key_files.is_empty(),
    );
    // The data directory the start made (for the store or the generated key) is made
    // again if it goes.
    let keeper = Arc::new(if store.is_some() || config.key_files.is_empty() {
        keeper.with_data_dir(config.data_dir.clone())
    } else {
        keeper
    });
    let auth = Auth::new(&ring, Verifier::new(&ring, validation), store, policy);
    let rules = Rules {
        passwords,
        throttle: Limits {
            max_failures: config.throttle_max_failures,
            window: config.throttle_window,
            lockout: config.throttle_lockout,
            capacity: 10_000,
        },
        login_concurrency: config.login_concurrency,
        signup_open: config.signup_open,
        setup,
        totp: TotpPolicy {
            mode: config.totp,
            required_roles: config.totp_required_roles.clone(),
        },
    };
    let shared = Shared {
        accounts: Arc::new(Accounts::new(rules).with_name_key(name_key(ring.primary()))),
        metrics: Metrics::new(
            routes::labels().to_vec(),
            config.workers,
            config.verify_only,
        ),
        access_log: log::level() >= Level::Info,
        connections: std::sync::OnceLock::new(),
        keeper,
        config: config.clone(),
    };
    Ok(Prepared {
        app: App {
            auth,
            shared: Arc::new(shared),
        },
        workers: config.workers,
    })
}

/// `latchkey serve --check`: the verdict `serve` would reach, without writing anything:
/// the configuration, the keys, the argon2 settings, and an existing store read in full
/// through an inspection (every record decoded, the indexes checked, the primary key
/// compared with the one the store was last served with). Returns notes for the operator.
pub fn check(config: &Config, replace_key: bool) -> Result<Vec<String>, ServeError> {
    let mut notes = Vec::new();
    let files = config.effective_key_files();
    let location = config.store_location();
    let path = location.display();
    let store = if config.verify_only {
        None
    } else {
        match location.inspect() {
            Ok(store) => Some(store),
            Err(OpenError::Missing(_)) => {
                notes.push(format!("{path} will be created on first start"));
                None
            }
            Err(OpenError::Busy(_)) => {
                notes.push(format!(
                    "{path} is in use by a running server, so its records and its key were not checked"
                ));
                None
            }
            Err(e) => return Err(ServeError::Store(e.into())),
        }
    };
    let remembered = match &store {
        Some(store) => store
            .served_kid()
            .map_err(|e| ServeError::Store(e.into()))?,
        None => None,
    };
    let generated = config.key_files.is_empty() && !files[0].exists();
    if generated {
        match (&remembered, replace_key) {
            (Some(kid), false) => {
                return Err(ServeError::Key(keys::KeyError::Missing {
                    path: files[0].clone(),
                    kid: kid.clone(),
                }));
            }
            (Some(kid), true) => notes.push(format!(
                "{} will be generated, replacing key {kid} (--replace-key)",
                files[0].display()
            )),
            (None, _) => notes.push(format!(
                "{} will be generated on first start",
                files[0].display()
            )),
        }
    } else {
        let ring = load_ring(&files, remembered.as_deref())?;
        match keys::continuity(remembered.as_deref(), &ring, replace_key, &files[0])
            .map_err(ServeError::Key)?
        {
            keys::Continuity::Rotated(old) => notes.push(format!(
                "the primary key becomes {} (key {old} still verifies)",
                ring.primary().kid()
            )),
            keys::Continuity::Replaced(old) => notes.push(format!(
                "the primary key becomes {}, replacing key {old} (--replace-key)",
                ring.primary().kid()
            )),
            keys::Continuity::FirstServe | keys::Continuity::Same => {}
        }
    }
    Passwords::new(config.argon2).map_err(ServeError::Password)?;
    if let Some(store) = &store {
        let scan = store.scan().map_err(|e| ServeError::Store(e.into()))?;
        let users = scan.verdict().map_err(ServeError::Store)?;
        notes.push(format!("{path} holds {users} users"));
    }
    Ok(notes)
}

/// The secret that spreads unknown names over the stored hashing costs, derived from
/// the signing key (HMAC-SHA256 of a fixed label): the same on every instance that
/// holds the key and after every restart, and telling nothing about the key.
fn name_key(key: &keys::Key) -> [u8; 32] {
    use hmac::{KeyInit, Mac};
    let Ok(mut mac) = <hmac::Hmac<sha2::Sha256>>::new_from_slice(key.bytes()) else {
        return [0; 32];
    };
    mac.update(b"latchkey: the cost an unknown user name is checked at");
    mac.finalize().into_bytes().into()
}

/// Logs a change of the store's health: one line per change, never per request.
fn log_store_event(event: &HealthEvent) {
    match event {
        HealthEvent::ReadsFailing(why) => log::error(&format!(
            "user store: reads fail: {why}; /healthz answers 503 until they work again"
        )),
        HealthEvent::ReadsWork => log::info("user store: reads work again"),
        HealthEvent::WritesFailing(why) => log::error(&format!(
            "user store: writes fail: {why}; reads, logins and token checks go on, and \
             /healthz answers 503 until writes work again"
        )),
        HealthEvent::WritesWork => log::info("user store: writes work again"),
        HealthEvent::Reopened => log::debug("user store: re-opened the file after an error"),
        // The failing reads that follow say the same as an error line.
        HealthEvent::ReopenFailed(why) => log::info(&format!(
            "user store: cannot open the file again: {why}; retrying with back-off"
        )),
        HealthEvent::NotificationsFailing(why) => log::error(&format!(
            "user store: the notification connection is down: {why}; other instances' \
             changes are not heard, so every request reads the database until it is back \
             (reconnecting by itself)"
        )),
        HealthEvent::NotificationsWork => {
            log::info("user store: listening for other instances' changes")
        }
        HealthEvent::FileRestored(path) => log::error(&format!(
            "user store: {path} was deleted under the running server; it was written back \
             from the server's open copy, and no user was lost"
        )),
        HealthEvent::FileReplaced(what) => log::error(&format!("user store: {what}")),
        HealthEvent::Damaged(damage) => log::error(&format!(
            "user store: {damage}; that user cannot log in (everyone else can); restore a \
             backup or remove the user"
        )),
    }
}

fn make_dir(dir: &Path) -> Result<(), ServeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| ServeError::DataDir(dir.to_path_buf(), e))
}

/// The key ring and how its primary key relates to the one the store remembers
/// (`remembered`, `None` for a store never served, or no store). On the embedded
/// defaults, `secret.key` is generated only for a store that was never served (a first
/// start, also right after `latchkey user add` made the store), or with `replace_key`; a
/// missing key for a store that was served refuses the start, naming the file. The
/// primary key must be the one the store was last served with, a rotation keeping it
/// among the verifying keys, or `replace_key`. The kid (never the key) is logged.
fn load_keys(
    config: &Config,
    remembered: Option<&str>,
    replace_key: bool,
) -> Result<(KeyRing, keys::Continuity), ServeError> {
    let files = config.effective_key_files();
    if config.key_files.is_empty() {
        make_dir(&config.data_dir)?;
        let path = &files[0];
        if !path.exists() {
            if let (Some(kid), false) = (remembered, replace_key) {
                return Err(ServeError::Key(keys::KeyError::Missing {
                    path: path.clone(),
                    kid: kid.to_string(),
                }));
            }
            keys::generate(path).map_err(ServeError::Key)?;
            log::info(&format!(
                "generated a new signing key in {}",
                path.display()
            ));
        }
    }
    let ring = load_ring(&files, remembered)?;
    let continuity = if config.verify_only {
        keys::Continuity::Same
    } else {
        keys::continuity(remembered, &ring, replace_key, &files[0]).map_err(ServeError::Key)?
    };
    let how = match &continuity {
        keys::Continuity::FirstServe => " (the user store's first key)".to_string(),
        keys::Continuity::Same => String::new(),
        keys::Continuity::Rotated(old) => {
            format!(" (rotated from key {old}, which still verifies)")
        }
        keys::Continuity::Replaced(old) => format!(
            " (replacing key {old} as asked by --replace-key: tokens signed with it are refused)"
        ),
    };
    let verifying: Vec<&str> = ring.keys().iter().skip(1).map(|k| k.kid()).collect();
    log::info(&format!(
        "signing with key {} from {}{how}{}",
        ring.primary().kid(),
        files[0].display(),
        if verifying.is_empty() {
            String::new()
        } else {
            format!("; also verifying {}", verifying.join(", "))
        }
    ));
    Ok((ring, continuity))
}

/// Loads the key files; a missing first one for a store that was served is reported as
/// [`keys::KeyError::Missing`], which says how to restore or replace it.
fn load_ring(
    files: &[std::path::PathBuf],
    remembered: Option<&str>,
) -> Result<KeyRing, ServeError> {
    KeyRing::load(files).map_err(|e| match (e, remembered) {
        (keys::KeyError::Read { path, source }, Some(kid))
            if source.kind() == io::ErrorKind::NotFound && path == files[0] =>
        {
            ServeError::Key(keys::KeyError::Missing {
                path,
                kid: kid.to_string(),
            })
        }
        (e, _) => ServeError::Key(e),
    })
}

/// Set by the signal thread; workers seeing `recv()` fail after it is set exit quietly.
static STOPPING: AtomicBool = AtomicBool::new(false);

/// The listening socket for `config`: the one systemd passed, or `listen` bound now.
/// `serve` takes it before anything else, so a port in use is reported before a key,
/// a store or a setup code is made.
pub fn listen(config: &Config) -> Result<TcpListener, ServeError> {
    listener(&config.listen)
}

/// Serves on `listener` until SIGTERM or SIGINT; returns after every worker has finished
/// and the answers in flight were written.
pub fn run(prepared: Prepared, listener: TcpListener) -> Result<(), ServeError> {
    return_large_blocks_to_the_os();
    let signals = block_stop_signals();
    let descriptors = raise_descriptor_limit();
    let memory = memory::budget();
    let addr = listener
        .local_addr()
        .map_err(|e| ServeError::Listen("the listening socket".into(), e))?;
    let shared = &prepared.app.shared;
    let fixed = Arc::new(fixed_head(&shared.config));
    let limits = connection_limits(shared, Arc::clone(&fixed), descriptors, memory);
    let (max_connections, per_address) =
        (limits.max_connections, limits.max_connections_per_address);
    let server = Arc::new(
        tiny_http::Server::from_listener(listener, limits)
            .map_err(|e| ServeError::Listen(addr.to_string(), e))?,
    );
    let (for_health, for_metrics) = (Arc::downgrade(&server), Arc::downgrade(&server));
    let _ = shared.connections.set(routes::Connections {
        fault: Box::new(move || {
            for_health
                .upgrade()
                .and_then(|server| server.health().err())
        }),
        metrics: Box::new(move || {
            for_metrics
                .upgrade()
                .map(|server| connection_metrics(&server.stats(), max_connections))
                .unwrap_or_default()
        }),
    });
    // The operator's commands reach the store through the control socket while serving.
    let control = match prepared.app.auth.store_handle() {
        Some(store) => Some(
            ControlSocket::start(
                &prepared.app.shared.config.data_dir,
                store,
                Arc::clone(&prepared.app.shared.accounts),
            )
            .map_err(ServeError::Control)?,
        ),
        None => None,
    };
    let fatal: Arc<std::sync::Mutex<Option<io::Error>>> = Arc::default();
    let mut handles = Vec::new();
    for n in 0..prepared.workers {
        let server = Arc::clone(&server);
        let app = prepared.app.clone();
        let fatal = Arc::clone(&fatal);
        let fixed = Arc::clone(&fixed);
        let handle = std::thread::Builder::new()
            .name(format!("worker-{n}"))
            .spawn(move || worker(&server, &app, &fixed, &fatal))
            .map_err(|e| ServeError::Listen(addr.to_string(), e))?;
        handles.push(handle);
    }
    let memory = match memory {
        Some(m) => format!("{} MiB ({})", m.bytes / (1024 * 1024), m.source),
        None => "unknown".into(),
    };
    log::info(&format!(
        "listening on http://{addr} with {} workers{} (at most {max_connections} connections, {per_address} per address; descriptor limit {descriptors}; memory {memory})",
        prepared.workers,
        if prepared.app.auth.store().is_some() {
            ""
        } else {
            " (verify-only)"
        }
    ));
    if max_connections as u64 + 32 > descriptors {
        log::error(&format!(
            "max_connections {max_connections} leaves little room under the descriptor limit {descriptors}; raise LimitNOFILE or lower max_connections"
        ));
    }
    notify("READY=1");
    start_monitor(Arc::downgrade(&server));
    let control = Arc::new(std::sync::Mutex::new(control));
    start_keeper(
        Arc::clone(&prepared.app.shared.keeper),
        Arc::clone(&control),
    );
    wait_for_stop(signals);
    STOPPING.store(true, Ordering::SeqCst);
    notify("STOPPING=1");
    log::info("stopping: finishing requests in flight");
    server.shutdown();
    for handle in handles {
        let _ = handle.join();
    }
    // A file deleted just before the stop is put back before the next start needs it.
    prepared.app.shared.keeper.check();
    // A clean stop removes the socket; the commands then open the store themselves.
    drop(control.lock().unwrap_or_else(|p| p.into_inner()).take());
    // The last reference: waits for the connection loop to write the last answers.
    drop(server);
    let fatal = fatal.lock().unwrap_or_else(|p| p.into_inner()).take();
    match fatal {
        Some(e) => Err(ServeError::Accept(e)),
        None => {
            log::info("stopped");
            Ok(())
        }
    }
}

/// The connection layer's limits from the configuration, with latchkey's answers to
/// the requests it refuses itself (pages, or JSON under `/api/`, counted in `/metrics`)
/// and its notices in latchkey's log.
fn connection_limits(
    shared: &Arc<Shared>,
    fixed: Arc<FixedHead>,
    descriptors: u64,
    memory: Option<memory::Budget>,
) -> tiny_http::Limits {
    let config = &shared.config;
    let seconds = std::time::Duration::from_secs;
    let head = tiny_http::HeadLimits::default();
    let max_connections = config.max_connections.unwrap_or_else(|| {
        default_max_connections(
            descriptors,
            memory.map(|m| m.bytes),
            connection_cost(&head, config.body_limit),
        )
    });
    let counting = Arc::clone(shared);
    let render: tiny_http::RenderRefusal = Arc::new(move |refusal: &tiny_http::Refusal| {
        counting
            .metrics
            .request(Outcome::unrouted().route, refusal.status, 0);
        let now = unix_now();
        if counting.access_log {
            // Refused before it was a request: no method to show, the target as far as read.
            let path = refusal
                .target
                .as_deref()
                .map_or("-", |t| http::split_target(t).0);
            use std::io::Write as _;
            let line = access_line(now, "-", path, refusal.status, 0, None);
            let _ = io::stderr().write_all(line.as_bytes());
        }
        refusal_response(refusal, &fixed, now)
    });
    let exempt: Option<tiny_http::ExemptAddress> = if config.trusted_proxies.is_empty() {
        None
    } else {
        let proxies = config.trusted_proxies.clone();
        Some(Arc::new(move |ip| {
            proxies.iter().any(|net| net.contains(ip))
        }))
    };
    let notice: tiny_http::Notice = Arc::new(|level, text: &str| match level {
        tiny_http::NoticeLevel::Error => log::error(text),
        tiny_http::NoticeLevel::Info => log::info(text),
    });
    tiny_http::Limits {
        header_timeout: seconds(config.header_timeout),
        body_timeout: seconds(config.body_timeout),
        send_timeout: seconds(config.send_timeout),
        idle_timeout: seconds(config.read_timeout),
        max_connections,
        max_connections_per_address: config.max_connections_per_address,
        max_body: config.body_limit,
        head,
        keep_field: Some(Arc::new(is_read_header)),
        exempt: Some(exempt).flatten(),
        render: Some(render),
        notice: Some(notice),
    }
}

/// The answer to a request the connection layer refuses (framing, limits, deadlines):
/// an error page in the site's layout, or JSON `{"error","message"}` when the target is
/// under `/api/`, with `Connection: close`.
pub fn refusal_response(refusal: &tiny_http::Refusal, fixed: &FixedHead, now: i64) -> Vec<u8> {
    let path = refusal
        .target
        .as_deref()
        .map_or("", |t| http::split_target(t).0);
    let reply = limit_reply(path, refusal.status, &refusal.message)
        .with_header("Connection", "close".into());
    let mut out = Vec::new();
    wire::write_reply(
        &mut out,
        &reply,
        fixed,
        &wire::http_date(now),
        Version::Http11,
        false,
    );
    out
}

/// The connection layer's counters in the Prometheus text format.
fn connection_metrics(stats: &tiny_http::Stats, max_connections: usize) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(1024);
    let _ = writeln!(out, "# HELP latchkey_connections Connections open now.");
    let _ = writeln!(out, "# TYPE latchkey_connections gauge");
    let _ = writeln!(out, "latchkey_connections {}", stats.open);
    let _ = writeln!(
        out,
        "# HELP latchkey_connections_max The max_connections in force."
    );
    let _ = writeln!(out, "# TYPE latchkey_connections_max gauge");
    let _ = writeln!(out, "latchkey_connections_max {max_connections}");
    let _ = writeln!(
        out,
        "# HELP latchkey_connections_total Connections by what became of them."
    );
    let _ = writeln!(out, "# TYPE latchkey_connections_total counter");
    for (outcome, n) in [
        ("accepted", stats.accepted),
        ("refused_per_address", stats.refused_per_address),
        ("refused_full", stats.refused_full),
        ("evicted", stats.evicted),
        ("timed_out", stats.timed_out),
        ("answered_by_the_connection_layer", stats.answered_here),
        ("panicked", stats.panics),
    ] {
        let _ = writeln!(
            out,
            "latchkey_connections_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    out
}

/// Bytes of memory one connection costs besides its request head and body: its state
/// in the connection loop (about 0.4 KiB), the kernel's socket (about 2 KiB, outside
/// the process but on the same host), the offsets of up to 100 header fields and the
/// allocator's rounding. Measured with `benches/stalled.py` (see README, HTTP limits).
pub const CONNECTION_OVERHEAD: u64 = 8 * 1024;

/// The most memory one connection can hold, bytes: a whole request head kept
/// (`head.max_head`, 32 KiB by default) while a body of up to `body_limit` bytes
/// arrives, and [`CONNECTION_OVERHEAD`]. That is the stalled request of the worst
/// shape: a connection waiting for anything else (a head, its next request, its
/// answer to be read) holds less.
pub fn connection_cost(head: &tiny_http::HeadLimits, body_limit: usize) -> u64 {
    head.max_head as u64 + body_limit as u64 + CONNECTION_OVERHEAD
}

/// The default `max_connections`: as many connections as a quarter of the memory
/// budget (`memory`, bytes: the cgroup's limit or the RAM) holds at `connection_cost`
/// bytes each, and no more than the descriptor limit `descriptors` allows less headroom
/// for the process's own descriptors (store, log, control socket, the poll) and the
/// refusals being answered, `max(64, descriptors / 8)`; at least 16 and at most 10,000.
/// Without a known budget, only the descriptors count.
///
/// A quarter leaves the rest to what else a small host runs, and to latchkey's own
/// logins (argon2 takes 19 MiB per password hashed at once).
pub fn default_max_connections(
    descriptors: u64,
    memory: Option<u64>,
    connection_cost: u64,
) -> usize {
    let headroom = (descriptors / 8).max(64);
    let by_descriptors = descriptors.saturating_sub(headroom);
    let by_memory = memory.map_or(u64::MAX, |bytes| bytes / 4 / connection_cost.max(1));
    by_descriptors.min(by_memory).clamp(16, 10_000) as usize
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit (as Go's runtime and most servers
/// do; systemd's default soft limit is 1024) and returns the soft limit in force.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid resource and a pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

fn worker(
    server: &tiny_http::Server,
    app: &App,
    fixed: &FixedHead,
    fatal: &std::sync::Mutex<Option<io::Error>>,
) {
    // Reused for every response of this worker: it grows to the largest page once.
    let mut out = Vec::with_capacity(16 * 1024);
    let mut date = DateCache::default();
    loop {
        match server.recv() {
            Ok(request) => serve_one(request, app, fixed, &mut out, &mut date),
            Err(e) => {
                if !STOPPING.load(Ordering::SeqCst) {
                    log::error(&format!("the server stopped accepting connections: {e}"));
                    *fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                    // Wake the main thread, which waits for a stop signal.
                    // SAFETY: kill(2) on our own pid with a valid signal has no memory effects.
                    unsafe {
                        libc::kill(libc::getpid(), libc::SIGTERM);
                    }
                }
                return;
            }
        }
    }
}

/// Answers one tiny_http request: admit it within the limits, handle a borrowed view of
/// it, write the reply into the worker's buffer, respond, count and log.
fn serve_one(
    mut request: tiny_http::Request,
    app: &App,
    fixed: &FixedHead,
    out: &mut Vec<u8>,
    date: &mut DateCache,
) {
    let started = Instant::now();
    let now = unix_now();
    let (reply, outcome) = match admit(&request) {
        Ok(()) => {
            let body = request.take_body();
            let req = view(&request, body);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                routes::handle(app, &req, now)
            }));
            match result {
                Ok(answer) => answer,
                Err(_) => (
                    limit_reply(req.path, 500, "Something went wrong on our side."),
                    Outcome::unrouted(),
                ),
            }
        }
        Err(refusal) => (
            limit_reply(
                http::split_target(request.url()).0,
                refusal.status,
                &refusal.message,
            ),
            Outcome::unrouted(),
        ),
    };
    let status = reply.status;
    let version = match request.http_version() {
        tiny_http::HTTPVersion(1, 0) => Version::Http10,
        _ => Version::Http11,
    };
    let head_only = *request.method() == tiny_http::Method::Head;
    wire::write_reply(out, &reply, fixed, date.get(now), version, head_only);
    // Counted before the response is written, so a client that has its answer can
    // already see it in /metrics.
    let micros = started.elapsed().as_micros() as u64;
    app.shared.metrics.request(outcome.route, status, micros);
    // The access line is made while the request (method, path) is still at hand, and
    // only when it will be written.
    let line = (log::level() >= Level::Info).then(|| {
        let path = http::split_target(request.url()).0;
        access_line(
            now,
            request.method(),
            path,
            status,
            micros,
            outcome.user.as_deref(),
        )
    });
    if let Err(e) = request.respond_raw(out) {
        log::debug(&format!("could not send the response: {e}"));
    }
    if out.capacity() > MAX_KEPT_BUFFER {
        // One very large page (a long user list) does not pin its memory for good.
        *out = Vec::with_capacity(16 * 1024);
    }
    if let Some(line) = line {
        use std::io::Write as _;
        // One write per line: stderr is unbuffered.
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

struct Refusal {
    status: u16,
    message: String,
}

/// Enforces the limits on the headers the handlers read. The body is already in memory
/// (the connection layer read it within `body_limit`), so nothing here waits.
fn admit(request: &tiny_http::Request) -> Result<(), Refusal> {
    let refuse = |status: u16, message: &str| Refusal {
        status,
        message: message.to_string(),
    };
    let mut cookie_bytes = 0;
    for (name, value) in request.fields().iter() {
        if name.eq_ignore_ascii_case(b"cookie") {
            cookie_bytes += value.len();
            if cookie_bytes > MAX_COOKIE_BYTES {
                return Err(refuse(431, "The Cookie header is too large."));
            }
        } else if name.eq_ignore_ascii_case(b"authorization")
            && value.len() > MAX_AUTHORIZATION_BYTES
        {
            return Err(refuse(431, "The Authorization header is too large."));
        }
    }
    Ok(())
}

/// Whether the handlers read the header `name` (one of [`HEADERS_READ`]).
fn is_read_header(name: &[u8]) -> bool {
    HEADERS_READ
        .iter()
        .any(|read| name.eq_ignore_ascii_case(read.as_bytes()))
}

/// The handlers' view of an admitted request: it borrows the path and the header
/// values handlers read from tiny_http's request; the other headers are skipped.
///
/// A header holding obs-text (bytes above 0x7F, RFC 9110 §5.5) is opaque: a `Cookie`
/// header is read as lossy UTF-8, so that the token cookie is found beside another
/// app's `city=São Paulo` on the same domain; any other header the handlers read is
/// treated as absent when it holds obs-text. Every header read keeps its place in the
/// arrival order (the first `token`, `flash` or `login_step` cookie sent is the first
/// read).
fn view(request: &tiny_http::Request, body: Vec<u8>) -> Request<'_> {
    let method = match request.method() {
        tiny_http::Method::Get | tiny_http::Method::Head => Method::Get,
        tiny_http::Method::Post => Method::Post,
        _ => Method::Other,
    };
    let mut req = Request::new(method, request.url());
    req.peer = request.remote_addr().map(|a| a.ip());
    req.body = body;
    // Room for the usual few (cookie, host, origin, content type) without regrowing.
    req.headers.reserve_exact(4);
    for (name, value) in request.fields().iter() {
        let Some(read) = HEADERS_READ
            .iter()
            .find(|read| name.eq_ignore_ascii_case(read.as_bytes()))
        else {
            continue;
        };
        let value = match std::str::from_utf8(value) {
            Ok(text) if text.is_ascii() => Cow::Borrowed(text),
            _ if *read == "cookie" => Cow::Owned(String::from_utf8_lossy(value).into_owned()),
            _ => continue,
        };
        req.headers.push((Cow::Borrowed(read), value));
    }
    req
}

/// An error answer made before routing: a page, or JSON under `/api/`.
fn limit_reply(path: &str, status: u16, message: &str) -> Reply {
    if path.starts_with("/api/") {
        let error = match status {
            408 => "request_timeout",
            413 => "payload_too_large",
            414 => "uri_too_long",
            417 => "expectation_failed",
            431 => "header_too_large",
            500 => "internal",
            501 => "not_implemented",
            503 => "unavailable",
            505 => "http_version_not_supported",
            _ => "bad_request",
        };
        return Reply::api_error(status, error, message);
    }
    let chrome = pages::Chrome {
        user: None,
        csrf: "",
        notice: None,
        has_store: true,
        login_url: "/login",
    };
    Reply::html(status, pages::error(&chrome, status, message))
}

/// The headers every response carries, serialized once at start.
pub fn fixed_head(config: &Config) -> FixedHead {
    let csp = pages::content_security_policy(&crate::auth::form_action_sources(config));
    FixedHead::new(&[
        ("Server", "latchkey"),
        ("Content-Security-Policy", csp.as_str()),
        ("X-Frame-Options", "DENY"),
        ("Referrer-Policy", "same-origin"),
        ("X-Content-Type-Options", "nosniff"),
    ])
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The listener: the socket systemd passed (`LISTEN_FDS`/`LISTEN_PID`), or `addr`.
fn listener(addr: &str) -> Result<TcpListener, ServeError> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(0);
    if ours && count >= 1 {
        const SD_LISTEN_FDS_START: i32 = 3;
        // SAFETY: systemd's protocol hands fd 3 to this process (LISTEN_PID matched)
        // as an open listening socket; nothing else in the process owns it.
        let listener = unsafe { TcpListener::from_raw_fd(SD_LISTEN_FDS_START) };
        // SAFETY: fcntl on an fd we own.
        unsafe {
            libc::fcntl(SD_LISTEN_FDS_START, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        let addr = listener
            .local_addr()
            .map_err(|e| ServeError::Listen("the socket passed by systemd".into(), e))?;
        log::info(&format!("using the socket passed by systemd ({addr})"));
        return Ok(listener);
    }
    TcpListener::bind(addr).map_err(|e| ServeError::Listen(addr.to_string(), e))
}

/// Each login allocates the argon2 memory (19 MiB by default) and frees it after. glibc
/// raises its mmap threshold after the first such free, so later blocks come from the
/// per-thread heaps and stay resident (measured: 120 MiB held after a login burst with two
/// workers). Pinning the threshold keeps large blocks mmapped, so they go back to the
/// OS at once (measured: under 5 MiB held).
fn return_large_blocks_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before the workers start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Blocks SIGTERM and SIGINT in this thread (and the threads it starts), so that
/// `wait_for_stop` can take them synchronously.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a zeroed local set, then pthread_sigmask on it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_stop(set: libc::sigset_t) {
    let mut signal = 0;
    // SAFETY: sigwait on a set of signals blocked in every thread.
    unsafe {
        libc::sigwait(&set, &mut signal);
    }
}

/// Sends a state line to systemd's notify socket, when there is one. Abstract socket
/// names (a leading `@`) are supported.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let result = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), Path::new(&path))
    };
    if let Err(e) = result {
        log::error(&format!("cannot notify systemd: {e}"));
    }
}

/// Runs the keeper every [`keeper::INTERVAL`] until the server stops, and has the
/// control socket listen again when its file is gone.
fn start_keeper(keeper: Arc<Keeper>, control: Arc<std::sync::Mutex<Option<ControlSocket>>>) {
    let spawned = std::thread::Builder::new()
        .name("keeper".into())
        .spawn(move || {
            while !STOPPING.load(Ordering::SeqCst) {
                keeper.check();
                keep_control_socket(&control);
                std::thread::sleep(keeper::INTERVAL);
            }
        });
    if let Err(e) = spawned {
        log::error(&format!(
            "cannot start the thread that keeps the files: {e}"
        ));
    }
}

/// Has the control socket listen again when its file was removed or replaced, unless
/// the server is stopping; logs what happened once per episode.
fn keep_control_socket(control: &std::sync::Mutex<Option<ControlSocket>>) {
    static FAILING: AtomicBool = AtomicBool::new(false);
    let mut control = control.lock().unwrap_or_else(|p| p.into_inner());
    let Some(socket) = control
        .as_mut()
        .filter(|_| !STOPPING.load(Ordering::SeqCst))
    else {
        return;
    };
    match socket.keep() {
        Ok(false) => {}
        Ok(true) => {
            FAILING.store(false, Ordering::SeqCst);
            log::error(&format!(
                "the control socket {} was removed under the running server; it listens again",
                socket.path().display()
            ));
        }
        Err(e) => {
            if !FAILING.swap(true, Ordering::SeqCst) {
                log::error(&format!(
                    "the control socket was removed under the running server and cannot \
                     listen again: {e}; the user commands cannot reach this server until it is"
                ));
            }
        }
    }
}

/// Watches the connection layer: logs when it falls into a fault (not accepting, or
/// its loop stuck) and when it recovers, once per episode; and, when systemd asks for a
/// watchdog (`WATCHDOG_USEC`), pings `WATCHDOG=1` every half period **only while the
/// layer is healthy**, so that systemd restarts a server that stopped serving.
fn start_monitor(server: Weak<tiny_http::Server>) {
    let usec = std::env::var("WATCHDOG_USEC")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let pid_ok = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .is_none_or(|p| p == std::process::id());
    let watchdog = usec
        .filter(|u| *u > 0 && pid_ok)
        .map(|u| Duration::from_micros(u / 2));
    let tick = Duration::from_millis(500);
    let spawned = std::thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let mut fault: Option<String> = None;
            let mut last_ping: Option<Instant> = None;
            loop {
                if STOPPING.load(Ordering::SeqCst) {
                    return;
                }
                let Some(server) = server.upgrade() else {
                    return;
                };
                let health = server.health();
                drop(server);
                match (&health, &fault) {
                    (Err(why), None) => {
                        log::error(&format!(
                            "the connection layer is not serving: {why}; /healthz answers 503 and the watchdog is not pinged until it recovers"
                        ));
                        fault = Some(why.clone());
                    }
                    (Ok(()), Some(_)) => {
                        log::info("the connection layer is serving again");
                        fault = None;
                    }
                    _ => {}
                }
                if let Some(period) = watchdog
                    && health.is_ok()
                    && last_ping.is_none_or(|t| t.elapsed() >= period)
                {
                    notify("WATCHDOG=1");
                    last_ping = Some(Instant::now());
                }
                std::thread::sleep(watchdog.map_or(tick, |p| p.min(tick)));
            }
        });
    if let Err(e) = spawned {
        log::error(&format!("cannot start the watchdog thread: {e}"));
    }
}

/// One access line: time, method, path (never the query), status, µs, user or `-`.
/// Paths and user names are printed with control characters (and anything outside
/// printable ASCII) escaped, so neither a request nor a token can forge lines.
fn access_line(
    now: i64,
    method: impl std::fmt::Display,
    path: &str,
    status: u16,
    micros: u64,
    user: Option<&str>,
) -> String {
    use std::fmt::Write as _;
    let mut line = String::with_capacity(96 + path.len());
    let _ = write!(line, "{} access {method} ", log::timestamp(now));
    line.extend(path.chars().flat_map(char::escape_default));
    let _ = write!(line, " {status} {micros}us ");
    // The name comes from a token, which on a verify-only instance another program
    // sharing the key may have made: escaped like the path.
    match user {
        Some(user) => line.extend(user.chars().flat_map(char::escape_default)),
        None => line.push('-'),
    }
    line.push('\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn a_connection_costs_a_head_a_body_and_its_overhead() {
        let head = tiny_http::HeadLimits::default();
        // The defaults: 32 KiB head, 16 KiB body, 8 KiB overhead.
        assert_eq!(connection_cost(&head, 16 * 1024), 56 * 1024);
        assert_eq!(
            connection_cost(&head, 1024 * 1024),
            32 * 1024 + 1024 * 1024 + CONNECTION_OVERHEAD
        );
    }

    #[test]
    fn the_default_max_connections_follows_memory_and_descriptors() {
        let cost = connection_cost(&tiny_http::HeadLimits::default(), 16 * 1024);
        // A 512 MiB budget (a cgroup's MemoryMax=512M): a quarter, 128 MiB, at 56 KiB.
        assert_eq!(default_max_connections(16_384, Some(512 * MIB), cost), 2340);
        // A 512 MB VPS whose MemTotal is 480 MiB.
        assert_eq!(default_max_connections(16_384, Some(480 * MIB), cost), 2194);
        // Plenty of memory: the descriptors decide, and the ceiling.
        assert_eq!(
            default_max_connections(16_384, Some(24 * 1024 * MIB), cost),
            10_000
        );
        assert_eq!(
            default_max_connections(1024, Some(24 * 1024 * MIB), cost),
            896
        );
        assert_eq!(default_max_connections(1024, Some(512 * MIB), cost), 896);
        assert_eq!(default_max_connections(4096, Some(2048 * MIB), cost), 3584);
        // No known budget: the descriptors alone, as before.
        assert_eq!(default_max_connections(16_384, None, cost), 10_000);
        assert_eq!(default_max_connections(1024, None, cost), 896);
        // A tiny budget or a huge body limit still leaves a few connections.
        assert_eq!(default_max_connections(16_384, Some(16 * MIB), cost), 73);
        let huge_bodies = connection_cost(&tiny_http::HeadLimits::default(), 16 * 1024 * 1024);
        assert_eq!(
            default_max_connections(16_384, Some(512 * MIB), huge_bodies),
            16
        );
        assert_eq!(default_max_connections(64, None, cost), 16);
        assert_eq!(default_max_connections(0, Some(0), 0), 16);
    }

    #[test]
    fn read_headers_are_kept_and_others_dropped() {
        assert!(is_read_header(b"Cookie"));
        assert!(is_read_header(b"X-Forwarded-For"));
        assert!(!is_read_header(b"User-Agent"));
        assert!(!is_read_header(b"Cookie2"));
    }

    #[test]
    fn access_lines_cannot_be_forged_through_the_path() {
        let line = access_line(
            0,
            &tiny_http::Method::Get,
            "/a\n1970 access GET /x",
            200,
            5,
            None,
        );
        assert_eq!(
            line,
            "1970-01-01T00:00:00Z access GET /a\\n1970 access GET /x 200 5us -\n"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn csp_has_no_script_and_the_style_hash() {
        let config = Config::defaults(&crate::config::Env::default());
        let csp = pages::content_security_policy(&crate::auth::form_action_sources(&config));
        assert!(csp.starts_with("default-src 'none'; style-src 'sha256-"));
        assert!(!csp.contains("script-src") && !csp.contains("unsafe-inline"));
        assert!(csp.contains("frame-ancestors 'none'"));
    }
}

//! Connections to the PostgreSQL store: the URL (libpq's `postgres://` form, with
//! `sslmode` and `sslrootcert` handled here), the password (from the URL or a file),
//! TLS, bounded timeouts, and a small bounded pool.
//!
//! # Why a pool of our own
//! The server's workers are plain threads that each need one connection for the length
//! of one statement or transaction. What they need from a pool is: a bound (sized from
//! `workers`), a bounded wait for a free connection, a connection dropped when it broke,
//! and no worker stuck connecting to a server that is down. That is about a hundred lines
//! here, with the failure behaviour spelt out; `r2d2` would add a scheduled thread pool
//! for its reaper and health checks that it runs on its own schedule, and its
//! `connection_timeout` covers the wait but not a connect that hangs.
//!
//! # Timeouts
//! Every connection is made with a connect timeout (2 s), TCP keepalives and a TCP user
//! timeout (5 s: unacknowledged data fails the socket instead of hanging), and the server
//! is told `statement_timeout`, `lock_timeout` (5 s each) and
//! `idle_in_transaction_session_timeout` (30 s) in the startup packet. After a failed
//! connect the pool answers at once for [`DOWN_GRACE`] instead of trying again, so a
//! server that is away costs a worker microseconds, not a connect timeout, per request.
//!
//! # Secrets
//! The password never appears in a message: [`Target::display`] is the URL with the
//! password replaced by `***` (in the authority and in a `password=` parameter), and it
//! is the only form of the URL that leaves this module.

use std::path::Path;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use postgres::config::SslMode;
use postgres::{Client, Config, NoTls};
use postgres_native_tls::MakeTlsConnector;

/// How long a connect may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a statement, or a wait for a lock, may take on the server.
pub(crate) const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// After a failed connect, how long the pool fails at once instead of trying again.
pub(crate) const DOWN_GRACE: Duration = Duration::from_millis(500);
/// How long a caller waits for a free connection when all are in use.
pub(crate) const CHECKOUT_WAIT: Duration = Duration::from_secs(5);

pub use super::{is_postgres_url, redact};

/// Why a store URL or its password file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// The URL, redacted.
    pub target: String,
    /// What is wrong and what to do.
    pub why: String,
}

impl std::fmt::Display for TargetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the store URL {} cannot be used: {}",
            self.target, self.why
        )
    }
}

impl std::error::Error for TargetError {}

/// TLS as the URL's `sslmode` asks (libpq's meanings).
#[derive(Clone)]
enum Tls {
    /// `disable`: plain TCP.
    Off,
    /// `prefer` (the default), `require`, `verify-ca`, `verify-full`: the connector,
    /// and whether TLS is required.
    On(MakeTlsConnector),
}

/// Where the store is and how to connect: the parsed URL, the password, TLS.
#[derive(Clone)]
pub struct Target {
    config: Config,
    tls: Tls,
    display: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.display)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Parses `url` (`postgres://[user[:password]@]host[:port]/dbname[?param=value&...]`).
    /// `password_file`, when given, holds the password (its first line; the URL must
    /// then carry none). `sslmode` is libpq's: `disable`; `prefer` (the default: TLS
    /// when the server offers it, without checking its certificate); `require` (TLS,
    /// certificate not checked); `verify-ca` (the certificate chain is checked against
    /// the system's roots and `sslrootcert`); `verify-full` (the chain and the host
    /// name). `sslrootcert=FILE` adds a PEM root certificate.
    pub fn parse(url: &str, password_file: Option<&Path>) -> Result<Target, TargetError> {
        let display = redact(url);
        let bad = |why: String| TargetError {
            target: display.clone(),
            why,
        };
        if !is_postgres_url(url) {
            return Err(bad(
                "it must start with postgres:// or postgresql://".to_string()
            ));
        }
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let mut kept = Vec::new();
        let mut sslmode = "prefer".to_string();
        let mut root_cert = None;
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            if param.is_empty() {
                continue;
            }
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            match key {
                "sslmode" => sslmode = value.to_ascii_lowercase(),
                "sslrootcert" => root_cert = Some(value.to_string()),
                _ => kept.push(param),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: Config = rebuilt.parse().map_err(|e: postgres::Error| {
            // The parser's message names an option or a value, never the password.
            bad(format!("{e}"))
        })?;
        if let Some(file) = password_file {
            if config.get_password().is_some() {
                return Err(bad(format!(
                    "it carries a password and store_password_file ({}) names another; \
                     keep the password in one place",
                    file.display()
                )));
            }
            let text = std::fs::read_to_string(file).map_err(|e| {
                bad(format!(
                    "cannot read the password file {}: {e}",
                    file.display()
                ))
            })?;
            let password = text.lines().next().unwrap_or("");
            if password.is_empty() {
                return Err(bad(format!(
                    "the password file {} is empty",
                    file.display()
                )));
            }
            config.password(password);
        }
        let (mode, verify_chain, verify_host) = match sslmode.as_str() {
            "disable" => (SslMode::Disable, false, false),
            "allow" | "prefer" => (SslMode::Prefer, false, false),
            "require" => (SslMode::Require, false, false),
            "verify-ca" => (SslMode::Require, true, false),
            "verify-full" => (SslMode::Require, true, true),
            other => {
                return Err(bad(format!(
                    "sslmode={other} is not one of disable, allow, prefer, require, \
                     verify-ca, verify-full"
                )));
            }
        };
        config.ssl_mode(mode);
        let tls = if mode == SslMode::Disable {
            Tls::Off
        } else {
            let mut builder = native_tls::TlsConnector::builder();
            builder
                .danger_accept_invalid_certs(!verify_chain)
                .danger_accept_invalid_hostnames(!verify_host);
            if let Some(path) = &root_cert {
                let pem = std::fs::read(path)
                    .map_err(|e| bad(format!("cannot read sslrootcert {path}: {e}")))?;
                let cert = native_tls::Certificate::from_pem(&pem).map_err(|e| {
                    bad(format!("sslrootcert {path} is not a PEM certificate: {e}"))
                })?;
                builder.add_root_certificate(cert);
            }
            let connector = builder
                .build()
                .map_err(|e| bad(format!("cannot set up TLS: {e}")))?;
            Tls::On(MakeTlsConnector::new(connector))
        };
        let mut options = config.get_options().unwrap_or("").to_string();
        let ms = STATEMENT_TIMEOUT.as_millis();
        options.push_str(&format!(
            " -c statement_timeout={ms} -c lock_timeout={ms} \
             -c idle_in_transaction_session_timeout=30000"
        ));
        config
            .options(options.trim())
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_user_timeout(STATEMENT_TIMEOUT)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(5))
            .keepalives_interval(Duration::from_secs(1))
            .keepalives_retries(3);
        if config.get_application_name().is_none() {
            config.application_name("latchkey");
        }
        Ok(Target {
            config,
            tls,
            display,
        })
    }

    /// The URL with its password replaced by `***`, for every message.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// A new connection (bounded by the connect timeout). The error is made safe to show:
    /// it names the redacted URL.
    pub(crate) fn connect(&self) -> Result<Client, String> {
        let result = match &self.tls {
            Tls::Off => self.config.connect(NoTls),
            Tls::On(connector) => self.config.connect(connector.clone()),
        };
        result.map_err(|e| format!("cannot connect to {}: {}", self.display, describe(&e)))
    }
}

/// A postgres error in words: the server's message when it sent one, else the client's.
pub(crate) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
    }
}

struct PoolState {
    idle: Vec<Client>,
    /// Connections out of the pool plus idle ones.
    open: usize,
    /// Set after a failed connect: until then, fail at once with the reason.
    down: Option<(Instant, String)>,
}

/// A bounded pool of connections to one [`Target`].
pub(crate) struct Pool {
    target: Target,
    max: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

/// A connection taken from the pool; it goes back when dropped, unless it broke.
pub(crate) struct Pooled<'p> {
    pool: &'p Pool,
    client: Option<Client>,
}

impl std::ops::Deref for Pooled<'_> {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Pooled<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let mut state = self.pool.lock();
        if client.is_closed() {
            state.open -= 1;
        } else {
            state.idle.push(client);
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

impl Pool {
    /// A pool of at most `max` connections (at least 1); none is opened yet.
    pub(crate) fn new(target: Target, max: usize) -> Pool {
        Pool {
            target,
            max: max.max(1),
            state: Mutex::new(PoolState {
                idle: Vec::new(),
                open: 0,
                down: None,
            }),
            freed: Condvar::new(),
        }
    }

    /// The target the pool connects to.
    pub(crate) fn target(&self) -> &Target {
        &self.target
    }

    /// The most connections this pool opens.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A connection: an idle one, a new one while under the bound, or the next one freed
    /// within [`CHECKOUT_WAIT`]. Fails at once while the server was found down less than
    /// [`DOWN_GRACE`] ago. The error is safe to show.
    pub(crate) fn get(&self) -> Result<Pooled<'_>, String> {
        let deadline = Instant::now() + CHECKOUT_WAIT;
        let mut state = self.lock();
        loop {
            while let Some(client) = state.idle.pop() {
                if client.is_closed() {
                    state.open -= 1;
                    continue;
                }
                return Ok(Pooled {
                    pool: self,
                    client: Some(client),
                });
            }
            if let Some((at, why)) = &state.down
                && at.elapsed() < DOWN_GRACE
            {
                return Err(why.clone());
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                let made = self.target.connect();
                let mut state = self.lock();
                return match made {
                    Ok(client) => {
                        state.down = None;
                        Ok(Pooled {
                            pool: self,
                            client: Some(client),
                        })
                    }
                    Err(why) => {
                        state.open -= 1;
                        state.down = Some((Instant::now(), why.clone()));
                        drop(state);
                        self.freed.notify_one();
                        Err(why)
                    }
                };
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(format!(
                    "all {} connections to {} stayed busy for {} s",
                    self.max,
                    self.target.display,
                    CHECKOUT_WAIT.as_secs()
                ));
            }
            state = self
                .freed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Drops every idle connection (after the server went away, so none is reused).
    pub(crate) fn clear_idle(&self) {
        let mut state = self.lock();
        let n = state.idle.len();
        state.idle.clear();
        state.open -= n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, shown) in [
            (
                "postgres://app:s3cret@db.example.org:5432/latchkey",
                "postgres://app:***@db.example.org:5432/latchkey",
            ),
            (
                "postgresql://app@db/latchkey?sslmode=require",
                "postgresql://app@db/latchkey?sslmode=require",
            ),
            (
                "postgres://db/latchkey?user=app&password=s3cret&sslmode=verify-full",
                "postgres://db/latchkey?user=app&password=***&sslmode=verify-full",
            ),
            ("postgres://a:b:c@d@host/x", "postgres://a:***@host/x"),
            ("postgres://host", "postgres://host"),
            ("not a url s3cret", "not a url s3cret"),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn parsing_keeps_the_password_out_of_errors() {
        let err = Target::parse("postgres://u:s3cret@h/db?sslmode=sometimes", None)
            .expect_err("bad sslmode");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().contains("sslmode=sometimes"), "{err}");
        let err = Target::parse("postgres://u:s3cret@h/db?bogus=1", None).expect_err("unknown");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let err = Target::parse("mysql://u:s3cret@h/db", None).expect_err("scheme");
        assert!(!err.to_string().contains("s3cret"), "{err}");
        let t =
            Target::parse("postgres://u:s3cret@h:5433/db?sslmode=disable", None).expect("parses");
        assert_eq!(t.display(), "postgres://u:***@h:5433/db?sslmode=disable");
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn the_password_file_and_the_url_do_not_both_give_one() {
        let dir = std::env::temp_dir().join(format!("latchkey-pool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pw");
        std::fs::write(&file, "from-file\n").expect("write");
        let t = Target::parse("postgres://u@h/db", Some(&file)).expect("parses");
        assert_eq!(t.config.get_password(), Some(&b"from-file"[..]));
        let err = Target::parse("postgres://u:x@h/db", Some(&file)).expect_err("both");
        assert!(
            err.to_string().contains("keep the password in one place"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

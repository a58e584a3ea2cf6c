//! [`UserStore`], the one store type every caller uses, over either backend: the redb
//! file (`embedded`) or, with the `postgres` feature, a PostgreSQL database
//! (`postgres`). Each method delegates; the two backends keep the same operations and
//! the same guarantees (tests run one body against both), so callers never ask which
//! one they have, except where the difference is the point: [`UserStore::is_shared`]
//! (several instances share the store, so the failed-login counters and the setup code
//! live in it too).
//!
//! [`Location`] is where a store is, as the `store` setting gives it: absent (redb in the
//! data directory) or a `postgres://` URL (with `store_password_file`).

use std::path::{Path, PathBuf};

use super::embedded;
#[cfg(feature = "postgres")]
use super::postgres::PgStore;
use super::{
    BackupError, BackupInfo, CreateError, Entry, Health, HealthEvent, OpenError, ReadError, Scan,
    SessionCache, SessionState, Snapshot, StoreError, UpdateError, User,
};
use crate::throttle::{Key, Limits};

/// The user store: a redb file, or a PostgreSQL database shared by several instances.
///
/// `Send + Sync`: share one `Arc<UserStore>` between threads.
pub enum UserStore {
    /// Users in one redb file (the embedded default).
    Embedded(embedded::UserStore),
    /// Users in PostgreSQL (feature `postgres`).
    #[cfg(feature = "postgres")]
    Postgres(PgStore),
}

const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UserStore>();
};

/// Runs the same expression on whichever backend `$store` holds.
macro_rules! each {
    ($store:expr, $s:ident => $e:expr) => {
        match $store {
            UserStore::Embedded($s) => $e,
            #[cfg(feature = "postgres")]
            UserStore::Postgres($s) => $e,
        }
    };
}

/// Where a store is: what the `store` setting names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A redb file (`users.redb` in the data directory when `store` is absent).
    File(PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// The `postgres://` URL (it may carry a password: show it only through
        /// [`redact`](super::redact)).
        url: String,
        /// The file holding the password (`store_password_file`), if any.
        password_file: Option<PathBuf>,
    },
}

impl Location {
    /// `text` as a location: a `postgres://` (or `postgresql://`) URL, else a file path.
    pub fn parse(text: &str, password_file: Option<&Path>) -> Location {
        if super::is_postgres_url(text) {
            Location::Postgres {
                url: text.trim().to_string(),
                password_file: password_file.map(Path::to_path_buf),
            }
        } else {
            Location::File(PathBuf::from(text))
        }
    }

    /// The location for messages: the file's path, or the URL with its password
    /// replaced by `***`.
    pub fn display(&self) -> String {
        match self {
            Location::File(path) => path.display().to_string(),
            Location::Postgres { url, .. } => super::redact(url),
        }
    }

    /// Whether this is a PostgreSQL database.
    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres { .. })
    }

    /// Opens the store, creating it when there is none (a redb file; PostgreSQL tables).
    /// `pool` bounds a PostgreSQL store's connections (sized from `workers`).
    pub fn open(&self, pool: usize) -> Result<UserStore, OpenError> {
        match self {
            Location::File(path) => embedded::UserStore::open(path).map(UserStore::Embedded),
            Location::Postgres { .. } => self.postgres(pool, false),
        }
    }

    /// Opens an existing store: a missing redb file is [`OpenError::Missing`]; a
    /// PostgreSQL store is opened (its tables made) as [`open`](Self::open) does, since
    /// a database that exists is the operator's choice.
    pub fn open_existing(&self, pool: usize) -> Result<UserStore, OpenError> {
        match self {
            Location::File(path) => {
                embedded::UserStore::open_existing(path).map(UserStore::Embedded)
            }
            Location::Postgres { .. } => self.postgres(pool, false),
        }
    }

    /// Looks at the store without ever writing to it.
    pub fn inspect(&self) -> Result<UserStore, OpenError> {
        match self {
            Location::File(path) => embedded::UserStore::inspect(path).map(UserStore::Embedded),
            Location::Postgres { .. } => self.postgres(2, true),
        }
    }

    #[cfg(feature = "postgres")]
    fn postgres(&self, pool: usize, inspect: bool) -> Result<UserStore, OpenError> {
        let Location::Postgres { url, password_file } = self else {
            return Err(OpenError::NoPostgres(self.display()));
        };
        let target = super::pool::Target::parse(url, password_file.as_deref()).map_err(|e| {
            OpenError::Database {
                target: e.target.clone(),
                what: e.why,
            }
        })?;
        let display = target.display().to_string();
        let named = |e: OpenError| match e {
            OpenError::Database { target, what } if target.is_empty() => OpenError::Database {
                target: display.clone(),
                what,
            },
            other => other,
        };
        let store = if inspect {
            PgStore::inspect(target)
        } else {
            PgStore::open(target, pool)
        };
        store.map(UserStore::Postgres).map_err(named)
    }

    #[cfg(not(feature = "postgres"))]
    fn postgres(&self, _pool: usize, _inspect: bool) -> Result<UserStore, OpenError> {
        Err(OpenError::NoPostgres(self.display()))
    }
}

impl UserStore {
    /// Opens the redb store at `path`, or creates one (see `embedded`).
    pub fn open(path: &Path) -> Result<UserStore, OpenError> {
        embedded::UserStore::open(path).map(UserStore::Embedded)
    }

    /// Opens an existing redb store; [`OpenError::Missing`] when there is no file.
    pub fn open_existing(path: &Path) -> Result<UserStore, OpenError> {
        embedded::UserStore::open_existing(path).map(UserStore::Embedded)
    }

    /// Looks at the redb store at `path` without ever writing to the file.
    pub fn inspect(path: &Path) -> Result<UserStore, OpenError> {
        embedded::UserStore::inspect(path).map(UserStore::Embedded)
    }

    /// The redb file this store lives in; for a PostgreSQL store, its URL with the
    /// password replaced by `***` (for messages only).
    pub fn path(&self) -> &Path {
        match self {
            UserStore::Embedded(s) => s.path(),
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => Path::new(s.display()),
        }
    }

    /// Where the store is, for messages: the file, or the redacted URL.
    pub fn describe(&self) -> String {
        self.path().display().to_string()
    }

    /// Whether several instances share this store (PostgreSQL): then the failed-login
    /// counters and the setup code are kept in it, and other instances' changes arrive
    /// by notification.
    pub fn is_shared(&self) -> bool {
        !matches!(self, UserStore::Embedded(_))
    }

    /// Whether this handle only inspects the store.
    pub fn is_inspection(&self) -> bool {
        each!(self, s => s.is_inspection())
    }

    /// Sets the function told about every change of the store's health.
    pub fn set_observer(&self, observer: impl Fn(&HealthEvent) + Send + Sync + 'static) {
        each!(self, s => s.set_observer(observer))
    }

    /// A cheap check that the store can be read.
    pub fn check(&self) -> Result<(), ReadError> {
        each!(self, s => s.check())
    }

    /// Whether [`check`](Self::check) passes.
    pub fn is_readable(&self) -> bool {
        each!(self, s => s.is_readable())
    }

    /// The store's health, as `/healthz` reports it.
    pub fn health(&self) -> Health {
        each!(self, s => s.health())
    }

    /// Keeps the store's file fit for the next start (a redb file deleted under the
    /// server is written back from its open copy; see the embedded backend). Nothing for
    /// PostgreSQL, whose files are the database server's.
    pub fn keep_file(&self) {
        match self {
            UserStore::Embedded(s) => s.keep_file(),
            #[cfg(feature = "postgres")]
            UserStore::Postgres(_) => {}
        }
    }

    /// Creates a user with `ver` 0; `NameTaken` when the name exists ignoring case.
    pub fn create(&self, name: &str, role: &str, password_hash: &str) -> Result<User, CreateError> {
        each!(self, s => s.create(name, role, password_hash))
    }

    /// Creates the first user only while the store holds none ([`CreateError::NotFirst`]
    /// otherwise), decided in the write transaction.
    pub fn create_first(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<User, CreateError> {
        each!(self, s => s.create_first(name, role, password_hash))
    }

    /// A user by id.
    pub fn get(&self, id: u64) -> Result<Option<User>, ReadError> {
        each!(self, s => s.get(id))
    }

    /// A user by name (case-insensitive, trimmed).
    pub fn get_by_name(&self, name: &str) -> Result<Option<User>, ReadError> {
        each!(self, s => s.get_by_name(name))
    }

    /// The id of the user called `name`, without reading the record.
    pub fn id_by_name(&self, name: &str) -> Result<Option<u64>, ReadError> {
        each!(self, s => s.id_by_name(name))
    }

    /// What the per-request check needs.
    pub fn session_state(&self, id: u64) -> Result<Option<SessionState>, ReadError> {
        each!(self, s => s.session_state(id))
    }

    /// [`session_state`](Self::session_state) through a worker's memo: no read while
    /// nothing changed (on PostgreSQL, while the notification connection is up).
    pub fn session_state_cached<'c>(
        &self,
        id: u64,
        cache: &'c mut SessionCache,
    ) -> Result<Option<&'c SessionState>, ReadError> {
        each!(self, s => s.session_state_cached(id, cache))
    }

    /// Up to `limit` rows with id > `after`, by id.
    pub fn list(&self, after: u64, limit: usize) -> Result<Vec<Entry>, ReadError> {
        each!(self, s => s.list(after, limit))
    }

    /// Number of users.
    pub fn count(&self) -> Result<u64, ReadError> {
        each!(self, s => s.count())
    }

    /// Sets the role (no `ver` bump).
    pub fn set_role(&self, id: u64, role: &str) -> Result<User, UpdateError> {
        each!(self, s => s.set_role(id, role))
    }

    /// Sets the password hash and bumps `ver`.
    pub fn set_password(&self, id: u64, password_hash: &str) -> Result<User, UpdateError> {
        each!(self, s => s.set_password(id, password_hash))
    }

    /// Sets the password hash with the "must change" mark, and bumps `ver`.
    pub fn reset_password(
        &self,
        id: u64,
        password_hash: &str,
        must_change: bool,
    ) -> Result<User, UpdateError> {
        each!(self, s => s.reset_password(id, password_hash, must_change))
    }

    /// Removes the second factor and bumps `ver`.
    pub fn reset_totp(&self, id: u64) -> Result<User, UpdateError> {
        each!(self, s => s.reset_totp(id))
    }

    /// Starts (or starts over) an enrolment in the second factor: `secret` becomes the
    /// pending secret; nothing is in force until [`enable_totp`](Self::enable_totp).
    pub fn begin_totp(&self, id: u64, secret: &[u8]) -> Result<User, UpdateError> {
        each!(self, s => s.begin_totp(id, secret))
    }

    /// Switches the second factor on, only if the pending secret is still `pending` and
    /// no factor is on yet (bumping `ver`); `Ok(None)` when that does not hold.
    pub fn enable_totp(
        &self,
        id: u64,
        pending: &[u8],
        step: u64,
        recovery: &[[u8; 32]],
    ) -> Result<Option<User>, UpdateError> {
        each!(self, s => s.enable_totp(id, pending, step, recovery))
    }

    /// Records the accepted code's time step, only if the factor is still `secret`'s and
    /// `step` is later than its last one (of two requests with one code, exactly one
    /// wins); `Ok(None)` otherwise.
    pub fn use_totp_step(
        &self,
        id: u64,
        secret: &[u8],
        step: u64,
    ) -> Result<Option<User>, UpdateError> {
        each!(self, s => s.use_totp_step(id, secret, step))
    }

    /// Spends a recovery code (its hash), only if it is still there; `Ok(None)`
    /// otherwise.
    pub fn use_recovery_code(&self, id: u64, hash: &[u8; 32]) -> Result<Option<User>, UpdateError> {
        each!(self, s => s.use_recovery_code(id, hash))
    }

    /// Locks (bumping `ver`) or unlocks.
    pub fn set_locked(&self, id: u64, locked: bool) -> Result<User, UpdateError> {
        each!(self, s => s.set_locked(id, locked))
    }

    /// Bumps `ver`: every earlier token is revoked.
    pub fn revoke(&self, id: u64) -> Result<User, UpdateError> {
        each!(self, s => s.revoke(id))
    }

    /// Records a login durably now.
    pub fn record_login(&self, id: u64, new_hash: Option<&str>) -> Result<User, UpdateError> {
        each!(self, s => s.record_login(id, new_hash))
    }

    /// Records a login without waiting for a write (committed shortly after).
    pub fn note_login(&self, user: &User, new_hash: Option<&str>) -> User {
        each!(self, s => s.note_login(user, new_hash))
    }

    /// Commits the pending logins now.
    pub fn flush_logins(&self) -> Result<(), UpdateError> {
        each!(self, s => s.flush_logins())
    }

    /// Deletes a user; the id is never handed out again.
    pub fn delete(&self, id: u64) -> Result<(), UpdateError> {
        each!(self, s => s.delete(id))
    }

    /// Puts user `user_id`'s login `key` on the logout deny list until `exp` (past
    /// [`MAX_REVOKED_PER_USER`](super::MAX_REVOKED_PER_USER) live entries, every session
    /// of the user ends instead); on PostgreSQL for every instance (they hear of it by
    /// notification).
    pub fn revoke_token(
        &self,
        user_id: u64,
        key: &str,
        exp: i64,
    ) -> Result<super::Revocation, UpdateError> {
        each!(self, s => s.revoke_token(user_id, key, exp))
    }

    /// Whether the token `id` was logged out of and could still be presented; answered
    /// from memory (on PostgreSQL, from the database while not listening).
    pub fn is_token_revoked(&self, id: &str, now: i64) -> bool {
        each!(self, s => s.is_token_revoked(id, now))
    }

    /// The `kid` of the primary key the store was last served with.
    pub fn served_kid(&self) -> Result<Option<String>, ReadError> {
        each!(self, s => s.served_kid())
    }

    /// Remembers `kid` as the primary key the store is served with.
    pub fn remember_kid(&self, kid: &str) -> Result<(), UpdateError> {
        each!(self, s => s.remember_kid(kid))
    }

    /// Reads the whole store and checks every record and invariant.
    pub fn scan(&self) -> Result<Scan, ReadError> {
        each!(self, s => s.scan())
    }

    /// [`scan`](Self::scan) as one result.
    pub fn check_consistency(&self) -> Result<u64, StoreError> {
        each!(self, s => s.check_consistency())
    }

    /// Writes a consistent redb copy of the store to `dest` (never over a file).
    pub fn backup_to(&self, dest: &Path) -> Result<BackupInfo, BackupError> {
        each!(self, s => s.backup_to(dest))
    }

    /// Every user, the counter and the remembered key, read at one moment.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        each!(self, s => s.snapshot())
    }

    /// Seconds until any of `keys` may try a password again, from the counters kept in
    /// a shared store; `None` for a store that keeps none (the caller counts in memory).
    pub fn throttle_retry_after(&self, keys: &[Key], now: i64) -> Result<Option<u64>, ReadError> {
        match self {
            UserStore::Embedded(_) => {
                let _ = (keys, now);
                Ok(None)
            }
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.throttle_retry_after(keys, now),
        }
    }

    /// Counts a failed attempt against `keys` in a shared store (nothing for redb).
    pub fn throttle_failure(
        &self,
        keys: &[Key],
        now: i64,
        limits: &Limits,
    ) -> Result<(), UpdateError> {
        match self {
            UserStore::Embedded(_) => {
                let _ = (keys, now, limits);
                Ok(())
            }
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.throttle_failure(keys, now, limits),
        }
    }

    /// Forgets `key`'s failures in a shared store (nothing for redb).
    pub fn throttle_reset(&self, key: &Key) -> Result<(), UpdateError> {
        match self {
            UserStore::Embedded(_) => {
                let _ = key;
                Ok(())
            }
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.throttle_reset(key),
        }
    }

    /// The setup code every instance of a shared store uses: `candidate` unless one is
    /// kept already. `Ok(None)` once a user exists, and always for redb (whose code is
    /// only in the data directory).
    pub fn shared_setup_code(&self, candidate: &str) -> Result<Option<String>, UpdateError> {
        match self {
            UserStore::Embedded(_) => {
                let _ = candidate;
                Ok(None)
            }
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.shared_setup_code(candidate),
        }
    }

    /// Forgets the shared setup code (nothing for redb).
    pub fn forget_setup_code(&self) -> Result<(), UpdateError> {
        match self {
            UserStore::Embedded(_) => Ok(()),
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.forget_setup_code(),
        }
    }

    /// Writes `snapshot` into this store (see `store copy`): refuses a store holding
    /// users unless `replace`. A redb store is written through a fresh file and a
    /// restore (so a running server's lock and a sound store are respected).
    pub fn import(&self, snapshot: &Snapshot, replace: bool) -> Result<u64, StoreError> {
        match self {
            UserStore::Embedded(_) => {
                let _ = (snapshot, replace);
                Err(StoreError::Damaged(
                    "a redb store is written by `store copy` through a new file".into(),
                ))
            }
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.import(snapshot, replace),
        }
    }

    /// For a PostgreSQL store, starts listening for other instances' changes and waits up
    /// to `wait` for `LISTEN` to be in force; whether it is. Always true for redb (its
    /// only writer is this process).
    pub fn listen(&self, wait: std::time::Duration) -> bool {
        match self {
            UserStore::Embedded(_) => {
                let _ = wait;
                true
            }
            #[cfg(feature = "postgres")]
            UserStore::Postgres(s) => s.listen(wait),
        }
    }
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        each!(self, s => s.fmt(f))
    }
}

//! The PostgreSQL backend, [`PgStore`]: the same operations and guarantees as the redb
//! one, for several latchkey instances sharing one database.
//!
//! # Tables
//! Every name starts with `latchkey_`, so the store can live beside other tables:
//! - `latchkey_schema (version)`: one row, [`PG_SCHEMA_VERSION`];
//! - `latchkey_users`: one row per user, one column per [`User`] field, plus `name_key`
//!   (the lowercased name, `UNIQUE`: names are unique ignoring case whoever inserts);
//! - `latchkey_meta (key, number, text)`: `next_id` (ids are handed out by updating this
//!   row, so they are dense and never reused, and a failed create uses none), and
//!   `served_kid`, `setup_code`;
//! - `latchkey_throttle (key, window_start, failures, locked_until)`: failed-login
//!   counters shared by every instance;
//! - `latchkey_revoked_tokens (id, exp)`: tokens logged out of, until they expire. Every
//!   instance holds the list in memory (checked on every request without a round trip)
//!   and reloads it when told by a `revoked` notification, or when its notification
//!   connection is back; while that connection is down, the database is asked.
//!
//! # Guarantees
//! - Every change is one transaction at READ COMMITTED; an update first locks the user's
//!   row (`SELECT … FOR UPDATE`), so concurrent changes of one user are applied one after
//!   the other and no token version bump is lost.
//! - The last active administrator: a change that would take an active administrator
//!   away takes a transaction-scoped advisory lock before it counts the others, so two
//!   such changes are judged one after the other, each seeing the other's commit.
//! - Every change that may alter a session (`ver`, lock, role, name, deletion) sends
//!   `NOTIFY latchkey_users` in its own transaction: PostgreSQL delivers it only if the
//!   transaction commits.
//!
//! # The per-worker memo across instances
//! [`PgStore::session_state_cached`] keeps the redb backend's memo (no database round trip
//! while nothing changed). Its generation moves after this instance's own writes and on
//! every notification received by a background thread that holds its own connection
//! with `LISTEN latchkey_users`. While that connection is down (and until it is up
//! again, and `LISTEN` is in force), the memo is not trusted: every request reads the
//! database. The thread reconnects by itself and moves the generation when it is back,
//! since notifications may have been missed meanwhile.
//!
//! # Failures
//! Connections come from a bounded pool (see `pool`); connects and statements are
//! bounded by timeouts, and a server found down is not tried again for half a second,
//! so a worker never waits long. Every failure is [`Unavailable::Database`]; the health
//! turns back by itself at the first statement that works.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, Row, Transaction};

use super::edit;
use super::logins::{self, Batch, Flushed, Logins};
use super::pool::{Pool, Target, describe};
use super::{
    BackupError, BackupInfo, CreateError, Damage, DamagedRecord, Entry, Health, HealthEvent,
    MAX_REVOKED_PER_USER, OpenError, RECOVERY_CODES_MAX, REVOKED_SWEEP_INTERVAL, ReadError,
    Revocation, Scan, SessionCache, SessionState, Snapshot, TotpFactor, Unavailable, UpdateError,
    User, record, validate_hash, validate_name, validate_role,
};
use crate::throttle::{Counter, Key, Limits};

/// The schema version of the PostgreSQL tables this build writes and understands.
pub const PG_SCHEMA_VERSION: u64 = 1;
/// The notification channel of changes that may alter a session.
pub const CHANNEL: &str = "latchkey_users";
/// The advisory lock taken by changes that may take an administrator away.
const ADMIN_LOCK: i64 = 0x6c61_7463_6841_646d; // "latchAdm"
/// The advisory lock taken while the schema is created or migrated.
const SCHEMA_LOCK: i64 = 0x6c61_7463_6853_6368; // "latchSch"
/// The first wait before retrying failed login commits or the notification connection.
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between retries of the notification connection.
const MAX_LISTEN_RETRY: Duration = Duration::from_secs(1);
/// How often the notification connection is checked when nothing arrives.
const LISTEN_PING: Duration = Duration::from_secs(1);

const COLUMNS: &str = "id, name, role, password_hash, ver, locked, created, updated, \
                       last_login, must_change_password, totp_secret, totp_last_step, \
                       totp_recovery, totp_pending";

const CREATE_V1: &str = "
CREATE TABLE latchkey_users (
    id bigint PRIMARY KEY CHECK (id > 0),
    name text NOT NULL,
    name_key text NOT NULL UNIQUE CHECK (name_key = lower(name)),
    role text NOT NULL,
    password_hash text NOT NULL,
    ver bigint NOT NULL DEFAULT 0 CHECK (ver >= 0),
    locked boolean NOT NULL DEFAULT false,
    created bigint NOT NULL,
    updated bigint NOT NULL,
    last_login bigint,
    must_change_password boolean NOT NULL DEFAULT false,
    totp_secret bytea,
    totp_last_step bigint,
    totp_recovery bytea,
    totp_pending bytea
);
CREATE INDEX latchkey_users_admins ON latchkey_users (id) WHERE role = 'admin' AND NOT locked;
CREATE TABLE latchkey_meta (
    key text PRIMARY KEY,
    number bigint,
    text text
);
INSERT INTO latchkey_meta (key, number) VALUES ('next_id', 1);
CREATE TABLE latchkey_revoked_tokens (
    id text PRIMARY KEY,
    exp bigint NOT NULL
);
CREATE TABLE latchkey_throttle (
    key text PRIMARY KEY,
    window_start bigint NOT NULL,
    failures integer NOT NULL,
    locked_until bigint NOT NULL
);
";

type Observer = Box<dyn Fn(&HealthEvent) + Send + Sync>;

/// Users in a PostgreSQL database, shared by any number of latchkey instances.
///
/// `Send + Sync`: share one `Arc<PgStore>` between threads. Dropping it commits the
/// pending logins and stops the notification thread.
pub struct PgStore {
    shared: Arc<Shared>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

struct Shared {
    pool: Pool,
    inspect: bool,
    /// Moved after every own write that may change a session (failed ones too), every
    /// notification and every reconnect of the notification connection.
    generation: AtomicU64,
    /// Whether the notification connection is up with `LISTEN` in force: only then is a
    /// memo trusted.
    listening: AtomicBool,
    listener_started: AtomicBool,
    stop: AtomicBool,
    failing: AtomicBool,
    state: Mutex<State>,
    logins: Logins,
    observer: RwLock<Option<Observer>>,
    throttle_writes: AtomicU64,
    /// The revoked tokens (id → exp), and their number without the lock.
    revoked: RwLock<HashMap<String, i64>>,
    revoked_count: AtomicUsize,
    /// When a logout last swept expired entries out of the deny list, Unix seconds.
    last_sweep: AtomicI64,
}

#[derive(Default)]
struct State {
    failure: Option<String>,
    damage: BTreeMap<u64, String>,
    index_damage: Vec<String>,
    listener_down: bool,
}

/// A failure inside a transaction: the database's, or the operation's own answer.
enum Fail<E> {
    Db(postgres::Error),
    Op(E),
}

impl<E> From<postgres::Error> for Fail<E> {
    fn from(e: postgres::Error) -> Fail<E> {
        Fail::Db(e)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A `u64` as PostgreSQL's `bigint` (values past `i64::MAX` cannot occur: ids and
/// versions count up by one).
fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn is_active_admin(user: &User) -> bool {
    user.role == super::ROLE_ADMIN && !user.locked
}

/// A row of `latchkey_users` as a [`User`], or what is wrong with it.
fn user_of(row: &Row) -> Result<User, DamagedRecord> {
    let id: i64 = row.try_get(0).unwrap_or(0);
    let id = u64::try_from(id).unwrap_or(0);
    let damaged = |why: String| DamagedRecord { id, why };
    let get_err = |e: postgres::Error| damaged(format!("a column cannot be read ({e})"));
    let name: String = row.try_get(1).map_err(get_err)?;
    let role: String = row.try_get(2).map_err(get_err)?;
    let password_hash: String = row.try_get(3).map_err(get_err)?;
    let ver: i64 = row.try_get(4).map_err(get_err)?;
    let locked: bool = row.try_get(5).map_err(get_err)?;
    let created: i64 = row.try_get(6).map_err(get_err)?;
    let updated: i64 = row.try_get(7).map_err(get_err)?;
    let last_login: Option<i64> = row.try_get(8).map_err(get_err)?;
    let must_change_password: bool = row.try_get(9).map_err(get_err)?;
    let secret: Option<Vec<u8>> = row.try_get(10).map_err(get_err)?;
    let last_step: Option<i64> = row.try_get(11).map_err(get_err)?;
    let recovery: Option<Vec<u8>> = row.try_get(12).map_err(get_err)?;
    let totp_pending: Option<Vec<u8>> = row.try_get(13).map_err(get_err)?;
    if validate_name(&name).as_deref() != Ok(name.as_str()) {
        return Err(damaged(format!(
            "the name {name:?} breaks the naming rules"
        )));
    }
    validate_role(&role).map_err(|e| damaged(e.to_string()))?;
    validate_hash(&password_hash).map_err(|e| damaged(e.to_string()))?;
    let ver = u64::try_from(ver).map_err(|_| damaged(format!("the version {ver} is negative")))?;
    let totp = match (secret, last_step, recovery) {
        (None, None, None) => None,
        (Some(secret), Some(step), Some(recovery)) => {
            let last_step = u64::try_from(step)
                .map_err(|_| damaged(format!("the last time step {step} is negative")))?;
            if recovery.len() % 32 != 0 || recovery.len() / 32 > RECOVERY_CODES_MAX {
                return Err(damaged(format!(
                    "the recovery codes take {} bytes, not a multiple of 32 up to {}",
                    recovery.len(),
                    32 * RECOVERY_CODES_MAX
                )));
            }
            let recovery = recovery
                .chunks_exact(32)
                .map(|c| {
                    let mut hash = [0u8; 32];
                    hash.copy_from_slice(c);
                    hash
                })
                .collect();
            Some(TotpFactor {
                secret,
                last_step,
                recovery,
            })
        }
        _ => {
            return Err(damaged(
                "the second factor is partly missing (secret, step and recovery codes go \
                 together)"
                    .into(),
            ));
        }
    };
    let user = User {
        id,
        name,
        role,
        password_hash,
        ver,
        locked,
        created,
        updated,
        last_login,
        must_change_password,
        totp,
        totp_pending,
    };
    record::check(&user).map_err(|e| damaged(e.to_string()))?;
    Ok(user)
}

/// The values of a user's columns, in [`COLUMNS`] order after `id`.
struct Columns {
    id: i64,
    name_key: String,
    ver: i64,
    secret: Option<Vec<u8>>,
    last_step: Option<i64>,
    recovery: Option<Vec<u8>>,
}

impl Columns {
    fn of(user: &User) -> Columns {
        Columns {
            id: big(user.id),
            name_key: user.name.to_ascii_lowercase(),
            ver: big(user.ver),
            secret: user.totp.as_ref().map(|t| t.secret.clone()),
            last_step: user.totp.as_ref().map(|t| big(t.last_step)),
            recovery: user.totp.as_ref().map(|t| t.recovery.concat()),
        }
    }

    /// Every column of `user` as statement parameters `$1`..`$15`, in the order
    /// `insert_user` and `write_user` name them.
    fn params<'a>(&'a self, user: &'a User) -> [&'a (dyn postgres::types::ToSql + Sync); 15] {
        [
            &self.id,
            &user.name,
            &self.name_key,
            &user.role,
            &user.password_hash,
            &self.ver,
            &user.locked,
            &user.created,
            &user.updated,
            &user.last_login,
            &user.must_change_password,
            &self.secret,
            &self.last_step,
            &self.recovery,
            &user.totp_pending,
        ]
    }
}

/// Inserts `user` (all columns).
fn insert_user(tx: &mut Transaction<'_>, user: &User) -> Result<u64, postgres::Error> {
    let c = Columns::of(user);
    tx.execute(
        "INSERT INTO latchkey_users (id, name, name_key, role, password_hash, ver, locked, \
         created, updated, last_login, must_change_password, totp_secret, totp_last_step, \
         totp_recovery, totp_pending) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        &c.params(user),
    )
}

/// Writes every column of `user` over its row.
fn write_user(tx: &mut Transaction<'_>, user: &User) -> Result<u64, postgres::Error> {
    let c = Columns::of(user);
    tx.execute(
        "UPDATE latchkey_users SET name = $2, name_key = $3, role = $4, password_hash = $5, \
         ver = $6, locked = $7, created = $8, updated = $9, last_login = $10, \
         must_change_password = $11, totp_secret = $12, totp_last_step = $13, \
         totp_recovery = $14, totp_pending = $15 WHERE id = $1",
        &c.params(user),
    )
}

/// Whether an active administrator other than `id` exists, judged after taking the
/// administrators' advisory lock (held to the end of the transaction), so that two
/// changes that would each take one away are judged one after the other.
fn other_active_admin(tx: &mut Transaction<'_>, id: u64) -> Result<bool, postgres::Error> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ADMIN_LOCK])?;
    let row = tx.query_one(
        "SELECT EXISTS (SELECT 1 FROM latchkey_users WHERE id <> $1 AND role = 'admin' \
         AND NOT locked)",
        &[&big(id)],
    )?;
    row.try_get(0)
}

/// The revoked tokens that could still be presented.
fn load_revoked(client: &mut Client, now: i64) -> Result<HashMap<String, i64>, postgres::Error> {
    let exists: bool = client
        .query_one(
            "SELECT to_regclass('latchkey_revoked_tokens') IS NOT NULL",
            &[],
        )?
        .try_get(0)?;
    if !exists {
        return Ok(HashMap::new());
    }
    let rows = client.query(
        "SELECT id, exp FROM latchkey_revoked_tokens WHERE exp > $1",
        &[&now],
    )?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

fn retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
    )
}

impl PgStore {
    /// Connects to the database `target` names, creates the tables on first use or
    /// migrates them (under an advisory lock, so instances starting together do not
    /// race), and keeps a pool of at most `pool_size` connections. Fails with
    /// [`OpenError::NewerSchema`] when a newer latchkey wrote the tables, and
    /// [`OpenError::Database`] when the database cannot be reached.
    pub fn open(target: Target, pool_size: usize) -> Result<PgStore, OpenError> {
        PgStore::start(target, pool_size, false)
    }

    /// Connects without creating or changing anything: for `serve --check`, listings
    /// and backups. Writes fail with [`Unavailable::ReadOnly`]. A database without
    /// latchkey's tables is [`OpenError::Missing`] (named by the redacted URL).
    pub fn inspect(target: Target) -> Result<PgStore, OpenError> {
        PgStore::start(target, 2, true)
    }

    fn start(target: Target, pool_size: usize, inspect: bool) -> Result<PgStore, OpenError> {
        let pool = Pool::new(target, pool_size);
        let failed = |what: String| OpenError::Database {
            target: pool.target().display().to_string(),
            what,
        };
        let revoked = {
            let mut client = pool.get().map_err(&failed)?;
            prepare(&mut client, !inspect).map_err(|e| match e {
                OpenError::Missing(_) => OpenError::Missing(pool.target().display().into()),
                other => other,
            })?;
            load_revoked(&mut client, now()).map_err(|e| failed(describe(&e)))?
        };
        let store = PgStore {
            shared: Arc::new(Shared {
                pool,
                inspect,
                generation: AtomicU64::new(0),
                listening: AtomicBool::new(false),
                listener_started: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                failing: AtomicBool::new(false),
                state: Mutex::new(State::default()),
                logins: Logins::default(),
                observer: RwLock::new(None),
                throttle_writes: AtomicU64::new(0),
                revoked: RwLock::new(HashMap::new()),
                revoked_count: AtomicUsize::new(0),
                last_sweep: AtomicI64::new(0),
            }),
            listener: Mutex::new(None),
        };
        store.shared.set_revoked(revoked);
        Ok(store)
    }

    /// Puts the login `key` of user `user_id` (it starts with `<user_id>/`) on the deny
    /// list until `exp`, with the redb backend's rules: a user who already has
    /// [`MAX_REVOKED_PER_USER`] live entries has every session ended instead (`ver`
    /// bumped, their entries dropped), and at most every [`REVOKED_SWEEP_INTERVAL`]
    /// seconds expired entries are dropped. The user's row is locked first, so two
    /// instances' logouts of one user are counted one after the other. Every instance
    /// hears of it (a `revoked` notification) and reads the list again.
    pub fn revoke_token(
        &self,
        user_id: u64,
        key: &str,
        exp: i64,
    ) -> Result<Revocation, UpdateError> {
        let now = now();
        let prefix = format!("{user_id}/");
        let sweep = self.shared.last_sweep.load(Ordering::Relaxed) + REVOKED_SWEEP_INTERVAL <= now;
        let outcome = self
            .shared
            .write(true, |tx| -> Result<_, Fail<UpdateError>> {
                let user = tx.query_opt(
                    "SELECT 1 FROM latchkey_users WHERE id = $1 FOR UPDATE",
                    &[&big(user_id)],
                )?;
                if sweep {
                    tx.execute(
                        "DELETE FROM latchkey_revoked_tokens WHERE exp <= $1",
                        &[&now],
                    )?;
                }
                let live: i64 = tx
                    .query_one(
                        "SELECT count(*) FROM latchkey_revoked_tokens \
                     WHERE starts_with(id, $1) AND exp > $2",
                        &[&prefix, &now],
                    )?
                    .try_get(0)?;
                let over = usize::try_from(live).unwrap_or(usize::MAX) >= MAX_REVOKED_PER_USER;
                let outcome = if over && user.is_some() {
                    tx.execute(
                        "UPDATE latchkey_users SET ver = ver + 1, updated = $2 WHERE id = $1",
                        &[&big(user_id), &now],
                    )?;
                    tx.execute(
                        "DELETE FROM latchkey_revoked_tokens WHERE starts_with(id, $1)",
                        &[&prefix],
                    )?;
                    Revocation::AllSessionsEnded
                } else {
                    tx.execute(
                        "INSERT INTO latchkey_revoked_tokens (id, exp) VALUES ($1, $2) \
                     ON CONFLICT (id) DO UPDATE \
                     SET exp = greatest(latchkey_revoked_tokens.exp, EXCLUDED.exp)",
                        &[&key, &exp],
                    )?;
                    Revocation::Listed
                };
                tx.execute("SELECT pg_notify($1, 'revoked')", &[&CHANNEL])?;
                Ok(outcome)
            })?;
        if sweep {
            self.shared.last_sweep.store(now, Ordering::Relaxed);
        }
        let mut revoked = self
            .shared
            .revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if sweep {
            revoked.retain(|_, at| *at > now);
        }
        match outcome {
            Revocation::AllSessionsEnded => revoked.retain(|k, _| !k.starts_with(&prefix)),
            Revocation::Listed => {
                revoked.insert(key.to_string(), exp);
            }
        }
        self.shared
            .revoked_count
            .store(revoked.len(), Ordering::Release);
        Ok(outcome)
    }

    /// Whether the token `id` was logged out of and could still be presented: from
    /// memory while listening (one atomic load while none is revoked), else from the
    /// database (and from memory when the database cannot be asked).
    pub fn is_token_revoked(&self, id: &str, now: i64) -> bool {
        if !self.shared.inspect && !self.shared.listening.load(Ordering::SeqCst) {
            let asked: Result<Option<i64>, ReadError> = self.shared.read(|c| {
                let row = c.query_opt(
                    "SELECT exp FROM latchkey_revoked_tokens WHERE id = $1",
                    &[&id],
                )?;
                Ok(row.map(|r| r.try_get::<_, i64>(0)).transpose()?)
            });
            if let Ok(exp) = asked {
                return exp.is_some_and(|exp| exp > now);
            }
        }
        if self.shared.revoked_count.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.shared
            .revoked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .is_some_and(|exp| *exp > now)
    }

    /// The store's URL with the password replaced by `***`.
    pub fn display(&self) -> &str {
        self.shared.pool.target().display()
    }

    /// The most connections this store opens at once (the notification connection
    /// aside).
    pub fn pool_size(&self) -> usize {
        self.shared.pool.max()
    }

    /// Whether this handle only inspects the store.
    pub fn is_inspection(&self) -> bool {
        self.shared.inspect
    }

    /// Whether the notification connection is up, so the per-worker memo is trusted.
    pub fn is_listening(&self) -> bool {
        self.shared.listening.load(Ordering::SeqCst)
    }

    /// Sets the function told about every change of the store's health.
    pub fn set_observer(&self, observer: impl Fn(&HealthEvent) + Send + Sync + 'static) {
        *self
            .shared
            .observer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(observer));
    }

    /// A cheap check that the database answers: reads the schema version.
    pub fn check(&self) -> Result<(), ReadError> {
        self.shared.read(|c| {
            c.query_opt("SELECT version FROM latchkey_schema LIMIT 1", &[])?;
            Ok(())
        })
    }

    /// Whether [`check`](Self::check) passes.
    pub fn is_readable(&self) -> bool {
        self.check().is_ok()
    }

    /// The store's health: whether the database answers now (checked), and the damage
    /// known from the last scan and reads since.
    pub fn health(&self) -> Health {
        let _ = self.check();
        let state = lock(&self.shared.state);
        let mut damage: Vec<Damage> = state
            .damage
            .iter()
            .map(|(&id, why)| {
                Damage::Record(DamagedRecord {
                    id,
                    why: why.clone(),
                })
            })
            .collect();
        damage.extend(state.index_damage.iter().cloned().map(Damage::Index));
        Health {
            read_failure: state.failure.clone(),
            write_failure: None,
            damage,
            // No file to lose: the database keeps its own.
            file_fault: None,
            revoked_tokens: self.shared.revoked_count.load(Ordering::Acquire),
        }
    }

    /// Creates a user with `ver` 0; fails with `NameTaken` when the name exists (ignoring
    /// case and surrounding whitespace), also when another instance creates it at the
    /// same moment (the unique index decides).
    pub fn create(&self, name: &str, role: &str, password_hash: &str) -> Result<User, CreateError> {
        self.create_user(name, role, password_hash, false)
    }

    /// [`create`](Self::create), but only while the store holds no user at all (the
    /// first administrator, made with the setup code): [`CreateError::NotFirst`]
    /// otherwise, also when another instance creates a user at the same moment.
    pub fn create_first(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<User, CreateError> {
        self.create_user(name, role, password_hash, true)
    }

    fn create_user(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
        first: bool,
    ) -> Result<User, CreateError> {
        let name = validate_name(name).map_err(CreateError::Invalid)?;
        validate_role(role).map_err(CreateError::Invalid)?;
        validate_hash(password_hash).map_err(CreateError::Invalid)?;
        let key = name.to_ascii_lowercase();
        let at = now();
        self.shared.write(true, |tx| {
            if tx
                .query_opt("SELECT 1 FROM latchkey_users WHERE name_key = $1", &[&key])?
                .is_some()
            {
                return Err(Fail::Op(CreateError::NameTaken(name.clone())));
            }
            // The counter row's lock orders creates: ids are dense and never reused.
            let Some(row) = tx.query_opt(
                "UPDATE latchkey_meta SET number = number + 1 WHERE key = 'next_id' \
                 RETURNING number - 1",
                &[],
            )?
            else {
                return Err(Fail::Op(CreateError::Damaged(
                    "the id counter is missing".into(),
                )));
            };
            let id: i64 = row.try_get(0)?;
            let Some(id) = u64::try_from(id).ok().filter(|&id| id > 0) else {
                return Err(Fail::Op(CreateError::Damaged(format!(
                    "the id counter holds {id}"
                ))));
            };
            if first
                && tx
                    .query_opt("SELECT 1 FROM latchkey_users LIMIT 1", &[])?
                    .is_some()
            {
                return Err(Fail::Op(CreateError::NotFirst));
            }
            let user = User::new(
                id,
                name.clone(),
                role.to_string(),
                password_hash.to_string(),
                at,
            );
            record::check(&user).map_err(|e| Fail::Op(CreateError::Invalid(e)))?;
            match insert_user(tx, &user) {
                Ok(_) => Ok(user),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(Fail::Op(CreateError::NameTaken(name.clone())))
                }
                Err(e) => Err(Fail::Db(e)),
            }
        })
    }

    /// A user by id; `Ok(None)` when there is none.
    pub fn get(&self, id: u64) -> Result<Option<User>, ReadError> {
        let found = self.shared.read(|c| {
            let row = c.query_opt(
                &format!("SELECT {COLUMNS} FROM latchkey_users WHERE id = $1"),
                &[&big(id)],
            )?;
            row.map(|r| user_of(&r))
                .transpose()
                .map_err(|d| Fail::Op(ReadError::DamagedRecord(d)))
        });
        let found = self.shared.noting_damage(found)?;
        Ok(found.map(|u| self.with_pending_login(u)))
    }

    /// A user by name (case-insensitive, trimmed).
    pub fn get_by_name(&self, name: &str) -> Result<Option<User>, ReadError> {
        let Ok(name) = validate_name(name) else {
            return Ok(None);
        };
        let key = name.to_ascii_lowercase();
        let found = self.shared.read(|c| {
            let row = c.query_opt(
                &format!("SELECT {COLUMNS} FROM latchkey_users WHERE name_key = $1"),
                &[&key],
            )?;
            row.map(|r| user_of(&r))
                .transpose()
                .map_err(|d| Fail::Op(ReadError::DamagedRecord(d)))
        });
        let found = self.shared.noting_damage(found)?;
        Ok(found.map(|u| self.with_pending_login(u)))
    }

    /// The id of the user called `name` (case-insensitive, trimmed), without reading the
    /// rest of the row.
    pub fn id_by_name(&self, name: &str) -> Result<Option<u64>, ReadError> {
        let Ok(name) = validate_name(name) else {
            return Ok(None);
        };
        let key = name.to_ascii_lowercase();
        self.shared.read(|c| {
            let row = c.query_opt("SELECT id FROM latchkey_users WHERE name_key = $1", &[&key])?;
            Ok(row
                .map(|r| r.try_get::<_, i64>(0))
                .transpose()?
                .and_then(|id| u64::try_from(id).ok()))
        })
    }

    /// What the per-request check needs, in one statement.
    pub fn session_state(&self, id: u64) -> Result<Option<SessionState>, ReadError> {
        let found = self.shared.read(|c| {
            let row = c.query_opt(
                "SELECT ver, locked, must_change_password, role, name, \
                 totp_secret IS NOT NULL FROM latchkey_users WHERE id = $1",
                &[&big(id)],
            )?;
            let Some(row) = row else {
                return Ok(None);
            };
            let ver: i64 = row.try_get(0)?;
            let state = SessionState {
                ver: u64::try_from(ver).map_err(|_| {
                    Fail::Op(ReadError::DamagedRecord(DamagedRecord {
                        id,
                        why: format!("the version {ver} is negative"),
                    }))
                })?,
                locked: row.try_get(1)?,
                must_change_password: row.try_get(2)?,
                role: row.try_get(3)?,
                name: row.try_get(4)?,
                totp: row.try_get(5)?,
            };
            Ok(Some(state))
        });
        self.shared.noting_damage(found)
    }

    /// [`session_state`](Self::session_state) through `cache`: no database round trip
    /// while the memo is trusted and the generation has not moved. Trusted only while the
    /// notification connection is up; otherwise every call reads the database.
    pub fn session_state_cached<'c>(
        &self,
        id: u64,
        cache: &'c mut SessionCache,
    ) -> Result<Option<&'c SessionState>, ReadError> {
        if !self.shared.listener_started.load(Ordering::Relaxed) {
            self.start_listener();
        }
        // Read before the generation: a state read while not listening is never reused.
        let trusted = self.shared.listening.load(Ordering::SeqCst);
        let generation = self.shared.generation.load(Ordering::SeqCst);
        if cache.generation != generation || !trusted {
            cache.entries.clear();
            cache.generation = generation;
        }
        if !cache.entries.contains_key(&id) {
            let state = self.session_state(id)?;
            if cache.entries.len() >= SessionCache::CAPACITY {
                cache.entries.clear();
            }
            cache.entries.insert(id, state);
        }
        Ok(cache.entries.get(&id).and_then(Option::as_ref))
    }

    /// Up to `limit` rows with id > `after`, by id.
    pub fn list(&self, after: u64, limit: usize) -> Result<Vec<Entry>, ReadError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.shared.read(|c| {
            let rows = c.query(
                &format!("SELECT {COLUMNS} FROM latchkey_users WHERE id > $1 ORDER BY id LIMIT $2"),
                &[&big(after), &limit],
            )?;
            Ok::<_, Fail<ReadError>>(rows.iter().map(user_of).collect::<Vec<_>>())
        })?;
        Ok(rows
            .into_iter()
            .map(|row| match row {
                Ok(u) => Entry::User(self.with_pending_login(u)),
                Err(d) => {
                    self.shared.note_damage(&d);
                    Entry::Damaged(d)
                }
            })
            .collect())
    }

    /// Number of users.
    pub fn count(&self) -> Result<u64, ReadError> {
        self.shared.read(|c| {
            let n: i64 = c
                .query_one("SELECT count(*) FROM latchkey_users", &[])?
                .try_get(0)?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
    }

    /// Sets the role (no `ver` bump: the role applies on the next request).
    pub fn set_role(&self, id: u64, role: &str) -> Result<User, UpdateError> {
        validate_role(role).map_err(UpdateError::Invalid)?;
        self.update(id, true, |user| edit::set_role(user, role, now()))
    }

    /// Sets the password hash (clearing a "must change" mark) and bumps `ver`.
    pub fn set_password(&self, id: u64, password_hash: &str) -> Result<User, UpdateError> {
        self.reset_password(id, password_hash, false)
    }

    /// Sets the password hash, marks whether it must be changed, bumps `ver`.
    pub fn reset_password(
        &self,
        id: u64,
        password_hash: &str,
        must_change: bool,
    ) -> Result<User, UpdateError> {
        validate_hash(password_hash).map_err(UpdateError::Invalid)?;
        self.update(id, true, |user| {
            edit::set_password(user, password_hash, must_change, now())
        })
    }

    /// Removes the second factor (and an enrolment in progress) and bumps `ver`.
    pub fn reset_totp(&self, id: u64) -> Result<User, UpdateError> {
        self.update(id, true, |user| edit::reset_totp(user, now()))
    }

    /// Locks (bumping `ver` on every call) or unlocks (keeping it).
    pub fn set_locked(&self, id: u64, locked: bool) -> Result<User, UpdateError> {
        self.update(id, true, |user| edit::set_locked(user, locked, now()))
    }

    /// Bumps `ver`: every token issued before is revoked, on every instance.
    pub fn revoke(&self, id: u64) -> Result<User, UpdateError> {
        self.update(id, true, |user| edit::revoke(user, now()))
    }

    /// Records a successful login now (and a re-hash); no `ver` bump.
    pub fn record_login(&self, id: u64, new_hash: Option<&str>) -> Result<User, UpdateError> {
        if let Some(hash) = new_hash {
            validate_hash(hash).map_err(UpdateError::Invalid)?;
        }
        self.update(id, false, |user| edit::record_login(user, new_hash, now()))
    }

    /// Records a successful login without waiting for the database (see the redb
    /// backend's `note_login`: the same rules).
    pub fn note_login(&self, user: &User, new_hash: Option<&str>) -> User {
        let at = now();
        if self.shared.inspect {
            return User {
                last_login: Some(at),
                ..user.clone()
            };
        }
        let new_hash = new_hash.filter(|h| validate_hash(h).is_ok());
        logins::note(&self.shared, user, at, new_hash, FIRST_RETRY)
    }

    /// Commits the pending logins now.
    pub fn flush_logins(&self) -> Result<(), UpdateError> {
        logins::flush(&*self.shared)
    }

    fn start_listener(&self) {
        if self.shared.inspect {
            return;
        }
        let mut listener = lock(&self.listener);
        if self.shared.listener_started.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = Arc::clone(&self.shared);
        *listener = std::thread::Builder::new()
            .name("store-listener".into())
            .spawn(move || listen_loop(&shared))
            .ok();
    }

    /// Starts the notification thread now (it starts by itself with the first cached
    /// session check); `wait` bounds how long to wait for `LISTEN` to be in force.
    /// Returns whether it is.
    pub fn listen(&self, wait: Duration) -> bool {
        self.start_listener();
        let deadline = Instant::now() + wait;
        while !self.is_listening() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.is_listening()
    }

    fn with_pending_login(&self, user: User) -> User {
        self.shared.logins.shown(user)
    }

    /// Deletes a user (a damaged row too); the id is never handed out again.
    pub fn delete(&self, id: u64) -> Result<(), UpdateError> {
        self.shared.write(true, |tx| {
            let Some(row) = tx.query_opt(
                &format!("SELECT {COLUMNS} FROM latchkey_users WHERE id = $1 FOR UPDATE"),
                &[&big(id)],
            )?
            else {
                return Err(Fail::Op(UpdateError::NotFound));
            };
            if let Ok(user) = user_of(&row)
                && is_active_admin(&user)
                && !other_active_admin(tx, id)?
            {
                return Err(Fail::Op(UpdateError::LastAdmin));
            }
            tx.execute("DELETE FROM latchkey_users WHERE id = $1", &[&big(id)])?;
            Ok(())
        })?;
        lock(&self.shared.state).damage.remove(&id);
        self.shared.logins.forget(id);
        Ok(())
    }

    /// Locks user `id`'s row, applies `change`, writes it back: one transaction. The
    /// last active administrator is kept (see the module docs).
    fn update(
        &self,
        id: u64,
        sessions: bool,
        change: impl Fn(&mut User),
    ) -> Result<User, UpdateError> {
        let applied = self.update_if(id, sessions, &mut |user| {
            change(user);
            true
        })?;
        // `update_if` answers `None` only when the change declined, never here.
        applied.ok_or(UpdateError::NotFound)
    }

    /// Locks user `id`'s row and applies `change`, which says whether it applies; when
    /// it does not, the transaction is rolled back and the answer is `Ok(None)` (a
    /// compare-and-set: the row lock makes two concurrent ones take turns). A change that
    /// would leave no active administrator is refused (`LastAdmin`). The notification
    /// (with `sessions`) is sent only for a change that applied.
    fn update_if(
        &self,
        id: u64,
        sessions: bool,
        change: &mut dyn FnMut(&mut User) -> bool,
    ) -> Result<Option<User>, UpdateError> {
        /// The transaction's own outcomes: a failed update, or a condition that did
        /// not hold.
        enum Refused {
            Update(UpdateError),
            Condition,
        }
        impl From<Unavailable> for Refused {
            fn from(e: Unavailable) -> Refused {
                Refused::Update(e.into())
            }
        }
        let result = self.shared.write(sessions, |tx| {
            let Some(row) = tx.query_opt(
                &format!("SELECT {COLUMNS} FROM latchkey_users WHERE id = $1 FOR UPDATE"),
                &[&big(id)],
            )?
            else {
                return Err(Fail::Op(Refused::Update(UpdateError::NotFound)));
            };
            let mut user = user_of(&row)
                .map_err(|d| Fail::Op(Refused::Update(UpdateError::DamagedRecord(d))))?;
            let was_admin = is_active_admin(&user);
            if !change(&mut user) {
                return Err(Fail::Op(Refused::Condition));
            }
            if was_admin && !is_active_admin(&user) && !other_active_admin(tx, id)? {
                return Err(Fail::Op(Refused::Update(UpdateError::LastAdmin)));
            }
            record::check(&user).map_err(|e| Fail::Op(Refused::Update(UpdateError::Invalid(e))))?;
            write_user(tx, &user)?;
            Ok(user)
        });
        match result {
            Ok(user) => Ok(Some(self.with_pending_login(user))),
            Err(Refused::Condition) => Ok(None),
            Err(Refused::Update(e)) => {
                if let UpdateError::DamagedRecord(d) = &e {
                    self.shared.note_damage(d);
                }
                Err(e)
            }
        }
    }

    /// Starts (or starts over) an enrolment: `secret` becomes the pending secret; the
    /// factor in force, `ver` and `updated` are left as they are.
    pub fn begin_totp(&self, id: u64, secret: &[u8]) -> Result<User, UpdateError> {
        self.update(id, false, |user| edit::begin_totp(user, secret))
    }

    /// Switches the second factor on, in one transaction, only if the pending secret is
    /// still `pending` and no factor is on yet (see the redb backend: the same rule);
    /// bumps `ver`. `Ok(None)` when the condition does not hold: nothing was written.
    pub fn enable_totp(
        &self,
        id: u64,
        pending: &[u8],
        step: u64,
        recovery: &[[u8; 32]],
    ) -> Result<Option<User>, UpdateError> {
        self.update_if(id, true, &mut |user| {
            edit::enable_totp(user, pending, step, recovery, now())
        })
    }

    /// Records that the code of time step `step` was accepted for the factor whose
    /// secret is `secret`: a compare-and-set under the row lock, so of two instances
    /// presenting the same code at once exactly one gets `Ok(Some(_))`.
    pub fn use_totp_step(
        &self,
        id: u64,
        secret: &[u8],
        step: u64,
    ) -> Result<Option<User>, UpdateError> {
        self.update_if(id, false, &mut |user| {
            edit::use_totp_step(user, secret, step)
        })
    }

    /// Spends a recovery code (its hash) only if it is still there, under the row lock.
    pub fn use_recovery_code(&self, id: u64, hash: &[u8; 32]) -> Result<Option<User>, UpdateError> {
        self.update_if(id, false, &mut |user| edit::use_recovery_code(user, hash))
    }

    /// The `kid` of the primary key the store was last served with.
    pub fn served_kid(&self) -> Result<Option<String>, ReadError> {
        self.meta_text("served_kid")
    }

    /// Remembers `kid` as the primary key the store is served with.
    pub fn remember_kid(&self, kid: &str) -> Result<(), UpdateError> {
        self.set_meta_text("served_kid", Some(kid))
    }

    /// The setup code kept for every instance: `candidate` becomes it unless one is kept
    /// already; returns the kept one. `None` once a user exists (then the kept code is
    /// removed).
    pub fn shared_setup_code(&self, candidate: &str) -> Result<Option<String>, UpdateError> {
        self.shared.write(false, |tx| {
            if tx
                .query_opt("SELECT 1 FROM latchkey_users LIMIT 1", &[])?
                .is_some()
            {
                tx.execute("DELETE FROM latchkey_meta WHERE key = 'setup_code'", &[])?;
                return Ok(None);
            }
            tx.execute(
                "INSERT INTO latchkey_meta (key, text) VALUES ('setup_code', $1) \
                 ON CONFLICT (key) DO NOTHING",
                &[&candidate],
            )?;
            let row = tx.query_one(
                "SELECT text FROM latchkey_meta WHERE key = 'setup_code'",
                &[],
            )?;
            Ok(row.try_get(0)?)
        })
    }

    /// Forgets the shared setup code (a first user exists).
    pub fn forget_setup_code(&self) -> Result<(), UpdateError> {
        self.set_meta_text("setup_code", None)
    }

    fn meta_text(&self, key: &str) -> Result<Option<String>, ReadError> {
        self.shared.read(|c| {
            let row = c.query_opt("SELECT text FROM latchkey_meta WHERE key = $1", &[&key])?;
            Ok(row
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten())
        })
    }

    fn set_meta_text(&self, key: &str, value: Option<&str>) -> Result<(), UpdateError> {
        self.shared.write(false, |tx| {
            match value {
                Some(v) => tx.execute(
                    "INSERT INTO latchkey_meta (key, text) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET text = EXCLUDED.text",
                    &[&key, &v],
                )?,
                None => tx.execute("DELETE FROM latchkey_meta WHERE key = $1", &[&key])?,
            };
            Ok(())
        })
    }

    /// Seconds until any of `keys` may try again, or `None`: the counters every instance
    /// shares.
    pub fn throttle_retry_after(&self, keys: &[Key], now: i64) -> Result<Option<u64>, ReadError> {
        let texts: Vec<String> = keys.iter().map(Key::as_text).collect();
        self.shared.read(|c| {
            let row = c.query_one(
                "SELECT max(locked_until) FROM latchkey_throttle WHERE key = ANY($1) \
                 AND locked_until > $2",
                &[&texts, &now],
            )?;
            let until: Option<i64> = row.try_get(0)?;
            Ok(until.map(|u| u64::try_from(u - now).unwrap_or(0)))
        })
    }

    /// Counts a failed attempt against every key, by [`Counter::fail`], each key's row
    /// locked while it is counted. Expired rows are removed now and then.
    pub fn throttle_failure(
        &self,
        keys: &[Key],
        now: i64,
        limits: &Limits,
    ) -> Result<(), UpdateError> {
        let mut texts: Vec<String> = keys.iter().map(Key::as_text).collect();
        texts.sort();
        texts.dedup();
        let sweep = self
            .shared
            .throttle_writes
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(64);
        self.shared.write(false, |tx| {
            for key in &texts {
                tx.execute(
                    "INSERT INTO latchkey_throttle (key, window_start, failures, locked_until) \
                     VALUES ($1, $2, 0, 0) ON CONFLICT (key) DO NOTHING",
                    &[key, &now],
                )?;
                let row = tx.query_one(
                    "SELECT window_start, failures, locked_until FROM latchkey_throttle \
                     WHERE key = $1 FOR UPDATE",
                    &[key],
                )?;
                let failures: i32 = row.try_get(1)?;
                let previous = Counter {
                    window_start: row.try_get(0)?,
                    failures: u32::try_from(failures).unwrap_or(0),
                    locked_until: row.try_get(2)?,
                };
                let next = Counter::fail(Some(previous), now, limits);
                tx.execute(
                    "UPDATE latchkey_throttle SET window_start = $2, failures = $3, \
                     locked_until = $4 WHERE key = $1",
                    &[
                        key,
                        &next.window_start,
                        &i32::try_from(next.failures).unwrap_or(i32::MAX),
                        &next.locked_until,
                    ],
                )?;
            }
            if sweep {
                tx.execute(
                    "DELETE FROM latchkey_throttle WHERE locked_until <= $1 \
                     AND window_start <= $1 - $2",
                    &[&now, &big(limits.window)],
                )?;
            }
            Ok(())
        })
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn throttle_reset(&self, key: &Key) -> Result<(), UpdateError> {
        let text = key.as_text();
        self.shared.write(false, |tx| {
            tx.execute("DELETE FROM latchkey_throttle WHERE key = $1", &[&text])?;
            Ok(())
        })
    }

    /// Reads every row and checks it: every row decodes and the id counter is above
    /// every id (names are unique by the index). What it finds becomes the damage
    /// [`health`](Self::health) reports.
    pub fn scan(&self) -> Result<Scan, ReadError> {
        let snapshot = self.snapshot()?;
        let mut scan = Scan {
            users: snapshot.users.len() as u64,
            damage: snapshot
                .damaged
                .iter()
                .cloned()
                .map(Damage::Record)
                .collect(),
        };
        if let Some(top) = snapshot
            .users
            .iter()
            .map(|u| u.id)
            .chain(snapshot.damaged.iter().map(|d| d.id))
            .max()
            && top >= snapshot.next_id
        {
            scan.damage.push(Damage::Index(format!(
                "user {top} is not below the id counter {}",
                snapshot.next_id
            )));
        }
        self.shared.set_damage(&scan);
        Ok(scan)
    }

    /// [`scan`](Self::scan) as one result.
    pub fn check_consistency(&self) -> Result<u64, super::StoreError> {
        self.scan()?.verdict()
    }

    /// Every user, read in one repeatable-read snapshot, with the counter and the key.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        if !self.shared.inspect {
            let _ = self.flush_logins();
        }
        self.shared.read(|c| {
            let mut tx = c
                .build_transaction()
                .isolation_level(IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()?;
            let rows = tx.query(
                &format!("SELECT {COLUMNS} FROM latchkey_users ORDER BY id"),
                &[],
            )?;
            let mut snapshot = Snapshot::default();
            for row in &rows {
                match user_of(row) {
                    Ok(user) => snapshot.users.push(user),
                    Err(d) => snapshot.damaged.push(d),
                }
            }
            let next: Option<i64> = tx
                .query_opt(
                    "SELECT number FROM latchkey_meta WHERE key = 'next_id'",
                    &[],
                )?
                .map(|r| r.try_get::<_, Option<i64>>(0))
                .transpose()?
                .flatten();
            snapshot.next_id = next.and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
            snapshot.served_kid = tx
                .query_opt(
                    "SELECT text FROM latchkey_meta WHERE key = 'served_kid'",
                    &[],
                )?
                .map(|r| r.try_get::<_, Option<String>>(0))
                .transpose()?
                .flatten();
            for row in tx.query(
                "SELECT id, exp FROM latchkey_revoked_tokens ORDER BY id",
                &[],
            )? {
                snapshot.revoked.push((row.try_get(0)?, row.try_get(1)?));
            }
            tx.commit()?;
            Ok(snapshot)
        })
    }

    /// Writes `snapshot` into this store in one transaction: every user as it is (hashes,
    /// versions, roles, locks, second factors), the id counter (never lowered) and the
    /// remembered key. Refuses a store holding users unless `replace`, which deletes
    /// them first (in the same transaction). Every instance is notified.
    pub fn import(&self, snapshot: &Snapshot, replace: bool) -> Result<u64, super::StoreError> {
        let users = self.shared.write(true, |tx| {
            let existing: i64 = tx
                .query_one("SELECT count(*) FROM latchkey_users", &[])?
                .try_get(0)?;
            if existing > 0 && !replace {
                return Err(Fail::Op(super::StoreError::NotEmpty(
                    u64::try_from(existing).unwrap_or(0),
                )));
            }
            tx.execute("DELETE FROM latchkey_users", &[])?;
            for user in &snapshot.users {
                record::check(user).map_err(|e| Fail::Op(super::StoreError::Invalid(e)))?;
                insert_user(tx, user)?;
            }
            let top = snapshot.users.iter().map(|u| u.id).max().unwrap_or(0);
            let next = snapshot.next_id.max(top.saturating_add(1)).max(1);
            tx.execute(
                "UPDATE latchkey_meta SET number = greatest(number, $1) WHERE key = 'next_id'",
                &[&big(next)],
            )?;
            if let Some(kid) = &snapshot.served_kid {
                tx.execute(
                    "INSERT INTO latchkey_meta (key, text) VALUES ('served_kid', $1) \
                     ON CONFLICT (key) DO UPDATE SET text = EXCLUDED.text",
                    &[kid],
                )?;
            }
            tx.execute("DELETE FROM latchkey_revoked_tokens", &[])?;
            for (id, exp) in &snapshot.revoked {
                tx.execute(
                    "INSERT INTO latchkey_revoked_tokens (id, exp) VALUES ($1, $2)",
                    &[id, exp],
                )?;
            }
            tx.execute("SELECT pg_notify($1, 'revoked')", &[&CHANNEL])?;
            Ok(snapshot.users.len() as u64)
        })?;
        Ok(users)
    }

    /// Writes a redb backup file at `dest` (mode 0600, never over an existing file) from
    /// one snapshot of the database: the same format as an embedded store's backups, so
    /// `latchkey restore` and `latchkey store copy` read it. Rows that cannot be read are
    /// left out and counted in `damaged`.
    pub fn backup_to(&self, dest: &Path) -> Result<BackupInfo, BackupError> {
        if std::fs::symlink_metadata(dest).is_ok() {
            return Err(BackupError::Exists(dest.to_path_buf()));
        }
        let snapshot = self.snapshot().map_err(|e| match e {
            ReadError::Unavailable(u) => BackupError::Unavailable(u),
            ReadError::DamagedRecord(d) => {
                BackupError::Unavailable(Unavailable::Database(d.to_string()))
            }
        })?;
        super::embedded::write_snapshot(dest, &snapshot)
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.logins.stop();
        if let Some(listener) = lock(&self.listener).take() {
            let _ = listener.join();
        }
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.display())
            .field("inspect", &self.shared.inspect)
            .finish_non_exhaustive()
    }
}

/// Creates the tables on first use, migrates older ones, refuses newer ones; all in one
/// transaction under an advisory lock. With `migrate` false (an inspection) nothing is
/// created or changed.
fn prepare(client: &mut Client, migrate: bool) -> Result<(), OpenError> {
    let mut tx = client.transaction().map_err(db_open)?;
    if migrate {
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
            .map_err(db_open)?;
    }
    let exists: bool = tx
        .query_one("SELECT to_regclass('latchkey_schema') IS NOT NULL", &[])
        .and_then(|r| r.try_get(0))
        .map_err(db_open)?;
    let found = if exists {
        let v: Option<i32> = tx
            .query_one("SELECT max(version) FROM latchkey_schema", &[])
            .and_then(|r| r.try_get(0))
            .map_err(db_open)?;
        u64::try_from(v.unwrap_or(0)).unwrap_or(0)
    } else {
        0
    };
    if found > PG_SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            found,
            supported: PG_SCHEMA_VERSION,
        });
    }
    if !migrate {
        if !exists {
            // An inspection never creates: the store does not exist yet.
            return Err(OpenError::Missing(std::path::PathBuf::new()));
        }
        if found < PG_SCHEMA_VERSION {
            return Err(OpenError::Database {
                target: String::new(),
                what: format!(
                    "the tables have schema version {found}; start `latchkey serve` once to \
                     migrate them to version {PG_SCHEMA_VERSION}"
                ),
            });
        }
        return Ok(());
    }
    let mut version = found;
    while version < PG_SCHEMA_VERSION {
        match version {
            0 => {
                tx.batch_execute(
                    "CREATE TABLE IF NOT EXISTS latchkey_schema (version integer NOT NULL)",
                )
                .map_err(db_open)?;
                tx.batch_execute(CREATE_V1).map_err(db_open)?;
            }
            other => {
                return Err(OpenError::Database {
                    target: String::new(),
                    what: format!("schema version {other} has no migration"),
                });
            }
        }
        version += 1;
    }
    if found != PG_SCHEMA_VERSION {
        tx.execute("DELETE FROM latchkey_schema", &[])
            .map_err(db_open)?;
        tx.execute(
            "INSERT INTO latchkey_schema (version) VALUES ($1)",
            &[&(PG_SCHEMA_VERSION as i32)],
        )
        .map_err(db_open)?;
    }
    tx.commit().map_err(db_open)
}

fn db_open(e: postgres::Error) -> OpenError {
    OpenError::Database {
        target: String::new(),
        what: describe(&e),
    }
}

impl Shared {
    fn set_revoked(&self, entries: HashMap<String, i64>) {
        let mut revoked = self.revoked.write().unwrap_or_else(PoisonError::into_inner);
        self.revoked_count.store(entries.len(), Ordering::Release);
        *revoked = entries;
    }

    fn emit(&self, event: HealthEvent) {
        if let Some(observer) = self
            .observer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            observer(&event);
        }
    }

    fn works(&self) {
        if !self.failing.load(Ordering::Acquire) {
            return;
        }
        let changed = {
            let mut state = lock(&self.state);
            self.failing.store(false, Ordering::Release);
            state.failure.take().is_some()
        };
        if changed {
            self.emit(HealthEvent::ReadsWork);
        }
    }

    fn failed(&self, why: &str) {
        let first = {
            let mut state = lock(&self.state);
            self.failing.store(true, Ordering::Release);
            let shown = self.pool.target().display();
            let line = if why.contains(shown) {
                why.to_string()
            } else {
                format!("{shown}: {why}")
            };
            state.failure.replace(line).is_none()
        };
        if first {
            self.emit(HealthEvent::ReadsFailing(why.to_string()));
        }
    }

    /// A database error as [`Unavailable`], noting the failure; a connection that broke
    /// makes the pool drop its idle ones (they are likely broken too).
    fn unavailable(&self, e: &postgres::Error, client: &Client) -> Unavailable {
        let why = describe(e);
        if client.is_closed() || e.as_db_error().is_none() {
            self.pool.clear_idle();
        }
        self.failed(&why);
        Unavailable::Database(why)
    }

    fn read<T, E: From<Unavailable>>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<T, Fail<E>>,
    ) -> Result<T, E> {
        let mut client = match self.pool.get() {
            Ok(c) => c,
            Err(why) => {
                self.failed(&why);
                return Err(Unavailable::Database(why).into());
            }
        };
        match f(&mut client) {
            Ok(v) => {
                self.works();
                Ok(v)
            }
            Err(Fail::Op(e)) => {
                self.works();
                Err(e)
            }
            Err(Fail::Db(e)) => Err(self.unavailable(&e, &client).into()),
        }
    }

    /// Runs `f` in one transaction and commits; with `sessions`, notifies every instance
    /// in the same transaction and moves this instance's generation (after a failed
    /// commit too: it may have happened). Serialization failures and deadlocks are
    /// retried twice.
    fn write<T, E: From<Unavailable>>(
        &self,
        sessions: bool,
        mut f: impl FnMut(&mut Transaction<'_>) -> Result<T, Fail<E>>,
    ) -> Result<T, E> {
        if self.inspect {
            return Err(Unavailable::ReadOnly.into());
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut client = match self.pool.get() {
                Ok(c) => c,
                Err(why) => {
                    self.failed(&why);
                    return Err(Unavailable::Database(why).into());
                }
            };
            let outcome = (|| {
                let mut tx = client.transaction()?;
                let value = f(&mut tx)?;
                if sessions {
                    tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])?;
                }
                tx.commit()?;
                Ok(value)
            })();
            match outcome {
                Ok(value) => {
                    if sessions {
                        self.generation.fetch_add(1, Ordering::SeqCst);
                    }
                    self.works();
                    return Ok(value);
                }
                Err(Fail::Op(e)) => {
                    self.works();
                    return Err(e);
                }
                Err(Fail::Db(e)) if retryable(&e) && attempt < 3 => continue,
                Err(Fail::Db(e)) => {
                    if sessions {
                        self.generation.fetch_add(1, Ordering::SeqCst);
                    }
                    return Err(self.unavailable(&e, &client).into());
                }
            }
        }
    }

    fn noting_damage<T>(&self, result: Result<T, ReadError>) -> Result<T, ReadError> {
        if let Err(ReadError::DamagedRecord(d)) = &result {
            self.note_damage(d);
        }
        result
    }

    fn note_damage(&self, d: &DamagedRecord) {
        let first = lock(&self.state)
            .damage
            .insert(d.id, d.why.clone())
            .is_none();
        if first {
            self.emit(HealthEvent::Damaged(Damage::Record(d.clone())));
        }
    }

    fn set_damage(&self, scan: &Scan) {
        let mut new = Vec::new();
        {
            let mut state = lock(&self.state);
            let mut records = BTreeMap::new();
            let mut index = Vec::new();
            for damage in &scan.damage {
                match damage {
                    Damage::Record(d) => {
                        if !state.damage.contains_key(&d.id) {
                            new.push(damage.clone());
                        }
                        records.insert(d.id, d.why.clone());
                    }
                    Damage::Index(what) => {
                        if !state.index_damage.contains(what) {
                            new.push(damage.clone());
                        }
                        index.push(what.clone());
                    }
                }
            }
            state.damage = records;
            state.index_damage = index;
        }
        for damage in new {
            self.emit(HealthEvent::Damaged(damage));
        }
    }

    /// Writes a batch of logins in one transaction, rows locked in id order: a login
    /// never replaces a newer `last_login`; a re-hash replaces the hash only if it is
    /// still the verified one.
    fn write_batch(&self, batch: &Batch) -> Result<(), UpdateError> {
        let mut ids: Vec<u64> = batch.keys().copied().collect();
        ids.sort_unstable();
        self.write(false, |tx| {
            for id in &ids {
                let login = &batch[id];
                let (verified, new) = match &login.rehash {
                    Some(rehash) => (Some(rehash.verified.as_str()), Some(rehash.new.as_str())),
                    None => (None, None),
                };
                tx.execute(
                    "UPDATE latchkey_users SET \
                     last_login = greatest(coalesce(last_login, $2), $2), \
                     password_hash = CASE WHEN $4::text IS NOT NULL AND password_hash = $3 \
                                     THEN $4 ELSE password_hash END \
                     WHERE id = $1",
                    &[&big(*id), &login.at, &verified, &new],
                )?;
            }
            Ok(())
        })
    }

    fn listener_changed(&self, up: bool, why: &str) {
        let changed = {
            let mut state = lock(&self.state);
            let was_down = state.listener_down;
            state.listener_down = !up;
            was_down == up
        };
        if changed {
            self.emit(if up {
                HealthEvent::NotificationsWork
            } else {
                HealthEvent::NotificationsFailing(why.to_string())
            });
        }
    }

    /// Sleeps up to `d`, returning early (true) when the store is dropped.
    fn stopped_within(&self, d: Duration) -> bool {
        let deadline = Instant::now() + d;
        while Instant::now() < deadline {
            if self.stop.load(Ordering::SeqCst) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25).min(deadline - Instant::now()));
        }
        self.stop.load(Ordering::SeqCst)
    }
}

/// The notification thread: keeps a connection with `LISTEN latchkey_users`, moves the
/// generation on every notification, checks the connection every second, and while it
/// is down keeps the memo untrusted and reconnects (250 ms doubling to 1 s).
fn listen_loop(shared: &Shared) {
    let mut backoff = FIRST_RETRY;
    while !shared.stop.load(Ordering::SeqCst) {
        let mut client = match shared.pool.target().connect() {
            Ok(client) => client,
            Err(why) => {
                shared.listener_changed(false, &why);
                if shared.stopped_within(backoff) {
                    return;
                }
                backoff = (backoff * 2).min(MAX_LISTEN_RETRY);
                continue;
            }
        };
        // Named, so that operators can tell it in pg_stat_activity.
        if let Err(e) = client.batch_execute(&format!(
            "SET application_name = 'latchkey listener'; LISTEN {CHANNEL}"
        )) {
            shared.listener_changed(false, &describe(&e));
            if shared.stopped_within(backoff) {
                return;
            }
            continue;
        }
        // Changes may have been missed while not listening: nothing cached before this
        // point is trusted, and the list of revoked tokens is read again.
        match load_revoked(&mut client, now()) {
            Ok(list) => shared.set_revoked(list),
            Err(e) => {
                shared.listener_changed(false, &describe(&e));
                if shared.stopped_within(backoff) {
                    return;
                }
                continue;
            }
        }
        shared.generation.fetch_add(1, Ordering::SeqCst);
        shared.listening.store(true, Ordering::SeqCst);
        shared.listener_changed(true, "");
        backoff = FIRST_RETRY;
        let mut pinged = Instant::now();
        let why = loop {
            if shared.stop.load(Ordering::SeqCst) {
                shared.listening.store(false, Ordering::SeqCst);
                return;
            }
            let mut broken = None;
            let mut reload = false;
            {
                let mut notifications = client.notifications();
                let mut iter = notifications.timeout_iter(Duration::from_millis(200));
                loop {
                    match postgres::fallible_iterator::FallibleIterator::next(&mut iter) {
                        Ok(Some(n)) if n.payload() == "revoked" => {
                            reload = true;
                            // Nothing arrives while the list is read: read it now.
                            break;
                        }
                        Ok(Some(_)) => {
                            shared.generation.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            broken = Some(describe(&e));
                            break;
                        }
                    }
                }
            }
            if let Some(why) = broken {
                break why;
            }
            if reload {
                match load_revoked(&mut client, now()) {
                    Ok(list) => shared.set_revoked(list),
                    Err(e) => break describe(&e),
                }
            }
            if client.is_closed() {
                break "the server closed the notification connection".to_string();
            }
            if pinged.elapsed() >= LISTEN_PING {
                if let Err(e) = client.is_valid(LISTEN_PING) {
                    break describe(&e);
                }
                pinged = Instant::now();
            }
        };
        shared.listening.store(false, Ordering::SeqCst);
        shared.generation.fetch_add(1, Ordering::SeqCst);
        shared.listener_changed(false, &why);
    }
    shared.listening.store(false, Ordering::SeqCst);
}

impl Flushed for Shared {
    fn logins(&self) -> &Logins {
        &self.logins
    }

    fn write_logins(&self, batch: &Batch) -> Result<(), UpdateError> {
        self.write_batch(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::HASH_MAX;

    #[test]
    fn the_hash_bound_matches_the_column_check() {
        // The record rules are the redb backend's: a row that passes them can be copied
        // into a redb store and back.
        let user = User::new(1, "a".into(), "user".into(), "h".repeat(HASH_MAX), 0);
        assert!(record::check(&user).is_ok());
        assert_eq!(Columns::of(&user).name_key, "a");
    }
}

//! The embedded backend: users in one redb file, [`UserStore`].
//!
//! # Opening
//! An existing file is first checked without any chance of changing it: redb opens it
//! through the in-memory [`Overlay`] with its integrity check on (every page's checksum
//! of the committed trees), under the file's real lock, and every call into redb is
//! guarded against panics. Only a file that passes is opened for real (redb's `open`,
//! never `create`); a file that does not is refused with [`OpenError::Damaged`] and
//! left exactly as it was. A file that was shut down cleanly must pass as it is; one left
//! by a crash may fall back to its previous commit, which is redb's crash recovery (a
//! commit that never returned was never acknowledged). A store is created only where no
//! file exists: under a temporary name, mode 0600, complete, then linked into place,
//! which fails rather than replace anything that appeared meanwhile.
//!
//! # Durability and recovery
//! Each write is one transaction committed with `Durability::Immediate`. After a failed
//! commit redb refuses every later operation on that handle ("Previous I/O error
//! occurred. Please close and re-open the database."), so the store closes it and opens
//! the file again at once; reads go on through the new handle, and the next write
//! succeeds as soon as its cause (a full disk) is gone. The handle sits behind a
//! `RwLock`: every transaction holds the read side for its duration, a re-open takes the
//! write side, so no transaction ever sees its handle closed under it and the old handle
//! (which holds the file's lock) is gone before the new one opens. A failed re-open is
//! retried with back-off (1 s doubling to 30 s) while reads answer
//! [`Unavailable::Closed`].
//!
//! # Health
//! The store keeps one [`Health`] value: whether reads fail, whether writes fail (since
//! when, why), and the damage it knows of. Changes are reported once to an observer (the
//! server logs them), never per request. While writes fail, [`UserStore::health`] tries
//! a small probe write with back-off, so that `/healthz` turns back to 200 by itself
//! even when no one writes.
//!
//! # Logins without a write
//! [`UserStore::note_login`] records a successful login (`last_login`, and the argon2
//! re-hash) in memory and returns at once; a background thread commits the pending
//! logins shortly after, in one transaction, retrying with back-off while writes fail.
//! Applying a login never clobbers a newer change: `last_login` only moves forward, and
//! the re-hash replaces the stored hash only if that is still the hash the password was
//! checked against. A crash loses at most the last second's `last_login` values.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::backends::FileBackend;
use redb::{
    Builder, Database, DatabaseError, Durability, ReadTransaction, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, TableError, WriteTransaction,
};

use super::edit;
use super::logins::{self, Batch, Flushed, Logins};
use super::overlay::Overlay;
use super::{
    BackupError, BackupInfo, CreateError, Damage, DamagedRecord, Entry, Health, HealthEvent,
    MAX_REVOKED_PER_USER, OpenError, REVOKED_SWEEP_INTERVAL, ReadError, RestoreError, Restored,
    Revocation, SCHEMA_VERSION, Scan, SessionCache, SessionState, Snapshot, Unavailable,
    UpdateError, User, WriteFailure, files, guard, record, validate_hash, validate_name,
    validate_role,
};

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const NAMES: TableDefinition<&str, u64> = TableDefinition::new("user_names");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_TEXT: TableDefinition<&str, &str> = TableDefinition::new("meta_text");
/// Tokens revoked one by one (logout): token id → its `exp`, kept until then.
const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked_tokens");
const META_SCHEMA: &str = "schema_version";
const META_NEXT_ID: &str = "next_id";
const META_PROBE: &str = "write_probe";
const TEXT_SERVED_KID: &str = "served_kid";

/// The first wait before retrying a failed re-open or probing failed writes.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between retries.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long writes must go without a failure, after one succeeded, before they count as
/// working again: on a nearly full disk small writes (a login) may succeed between
/// failing larger ones, and the health must not flap with them.
const HOLD_DOWN: Duration = Duration::from_secs(5);

/// Users in one redb file.
///
/// `Send + Sync`: share one `Arc<UserStore>` between threads. The file is locked while the
/// store is open; a second process gets [`OpenError::Busy`]. Dropping the store commits
/// the pending logins, then closes the file.
pub struct UserStore {
    shared: Arc<Shared>,
}

// The web server shares one store between its worker threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UserStore>();
};

type Observer = Box<dyn Fn(&HealthEvent) + Send + Sync>;

struct Shared {
    path: PathBuf,
    /// An inspection: the file is read through an overlay and never written.
    inspect: bool,
    db: RwLock<Slot>,
    /// Whether `db` is closed (a re-open failed), without taking the lock.
    closed: AtomicBool,
    /// Held by the one thread re-opening.
    reopening: Mutex<()>,
    /// Moved after every commit that may change a session (failed ones too) and every
    /// re-open; a [`SessionCache`] filled at another value is dropped.
    generation: AtomicU64,
    reads_failing: AtomicBool,
    writes_failing: AtomicBool,
    state: Mutex<State>,
    logins: Logins,
    observer: RwLock<Option<Observer>>,
    /// The `revoked_tokens` table in memory (this process is the store's only writer),
    /// and its size without the lock: empty, the per-request check costs one load.
    revoked: RwLock<HashMap<String, i64>>,
    revoked_count: AtomicUsize,
    /// Every commit, counted: a copy taken at one count is current while it holds.
    commits: AtomicU64,
    /// When a logout last swept expired entries out of the deny list, Unix seconds.
    last_sweep: AtomicI64,
    /// The device and inode of the file the handle has open, to notice it deleted or
    /// replaced under the server.
    identity: Mutex<Option<(u64, u64)>>,
}

enum Slot {
    Open(Database),
    Closed(String),
}

struct State {
    read_failure: Option<String>,
    write_failure: Option<WriteFailure>,
    /// Damaged records by id, with what is wrong.
    damage: BTreeMap<u64, String>,
    /// Broken invariants found by the last scan.
    index_damage: Vec<String>,
    reopen_at: Instant,
    reopen_backoff: Duration,
    /// Whether the last re-open failed (reported once per episode).
    reopen_failing: bool,
    probe_at: Instant,
    probe_backoff: Duration,
    /// When the last write failed, during a write failure episode.
    last_write_failure: Option<Instant>,
    /// A write succeeded since the last failure; the episode ends after [`HOLD_DOWN`].
    recovering: bool,
    /// While another file stands where the store's file was: what to do.
    file_fault: Option<String>,
}

/// A failure inside a transaction: the storage's, or the operation's own answer.
enum Fail<E> {
    Storage(Box<redb::Error>),
    Op(E),
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl<E> From<$t> for Fail<E> {
            fn from(e: $t) -> Fail<E> {
                Fail::Storage(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Unix seconds from the system clock (0 if the clock is before 1970).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl UserStore {
    /// Opens the store at `path`, or creates one when no file is there. The parent
    /// directory must exist.
    ///
    /// An existing file is checked first and refused untouched when it is not a sound
    /// store ([`OpenError::Damaged`]); an older schema is migrated. A new file is made
    /// complete under a temporary name with mode 0600 and linked into place, never over
    /// a file. Fails with `Busy` when another process holds the file and `NewerSchema`
    /// when a newer latchkey wrote it.
    pub fn open(path: &Path) -> Result<UserStore, OpenError> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match create(path) {
                Ok(()) => {}
                // Someone else made it meanwhile: open theirs, never replace it.
                Err(OpenError::File { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            },
            _ => {}
        }
        UserStore::open_existing(path)
    }

    /// Opens an existing store; fails with [`OpenError::Missing`] when there is no file,
    /// so that a mistyped directory is an error, not a new empty store.
    pub fn open_existing(path: &Path) -> Result<UserStore, OpenError> {
        // Checked through the overlay, migration included (a newer schema, or a store
        // that cannot be migrated, is refused before anything touches the file), then
        // dropped: its handle holds the file's lock.
        let checked = checked_overlay(path)?;
        prepare(&checked, path)?;
        close_quietly(checked);
        let db = match guard::quietly(|| Builder::new().open(path)) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_failure(path, e)),
            Err(panic) => return Err(OpenError::damaged(path, stopped(&panic))),
        };
        prepare(&db, path)?;
        tighten_mode(path);
        UserStore::new(path, db, false).load_revoked()
    }

    /// Opens an existing store to look at it without ever writing to the file: reads come
    /// from the file, and whatever redb or a migration writes stays in memory. The file
    /// is checked as [`open_existing`](Self::open_existing) does and locked while the
    /// handle lives. The handle's own writes fail with [`Unavailable::ReadOnly`].
    ///
    /// For `serve --check`, listings, backups and checking a copy before a restore.
    pub fn inspect(path: &Path) -> Result<UserStore, OpenError> {
        let db = checked_overlay(path)?;
        prepare(&db, path)?;
        UserStore::new(path, db, true).load_revoked()
    }

    fn new(path: &Path, db: Database, inspect: bool) -> UserStore {
        let at = Instant::now();
        UserStore {
            shared: Arc::new(Shared {
                path: path.to_path_buf(),
                inspect,
                db: RwLock::new(Slot::Open(db)),
                closed: AtomicBool::new(false),
                reopening: Mutex::new(()),
                generation: AtomicU64::new(0),
                reads_failing: AtomicBool::new(false),
                writes_failing: AtomicBool::new(false),
                state: Mutex::new(State {
                    read_failure: None,
                    write_failure: None,
                    damage: BTreeMap::new(),
                    index_damage: Vec::new(),
                    reopen_at: at,
                    reopen_backoff: FIRST_RETRY,
                    reopen_failing: false,
                    probe_at: at,
                    probe_backoff: FIRST_RETRY,
                    last_write_failure: None,
                    recovering: false,
                    file_fault: None,
                }),
                logins: Logins::default(),
                observer: RwLock::new(None),
                revoked: RwLock::new(HashMap::new()),
                revoked_count: AtomicUsize::new(0),
                commits: AtomicU64::new(0),
                last_sweep: AtomicI64::new(0),
                identity: Mutex::new(file_identity(path)),
            }),
        }
    }

    /// Reads the revoked tokens into memory (at open).
    fn load_revoked(self) -> Result<UserStore, OpenError> {
        let path = self.shared.path.clone();
        let entries = self
            .shared
            .read(|tx| {
                let mut entries = HashMap::new();
                match tx.open_table(REVOKED) {
                    Ok(table) => {
                        for entry in table.iter()? {
                            let (id, exp) = entry?;
                            entries.insert(id.value().to_string(), exp.value());
                        }
                    }
                    Err(TableError::TableDoesNotExist(_)) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(entries)
            })
            .map_err(|e: ReadError| OpenError::damaged(&path, e.to_string()))?;
        self.shared.set_revoked(entries);
        Ok(self)
    }

    /// Puts the login `key` of user `user_id` (`auth::LoginKey`, which starts with
    /// `<user_id>/`) on the deny list until `exp`, when it could no longer be valid:
    /// [`is_token_revoked`] answers true for it from then on. A user who already has
    /// [`MAX_REVOKED_PER_USER`] live entries has every session ended instead (`ver`
    /// bumped, their entries dropped), so the list stays bounded. At most every
    /// [`REVOKED_SWEEP_INTERVAL`] seconds the same transaction also drops every expired
    /// entry; otherwise a logout touches only its user's entries.
    ///
    /// [`is_token_revoked`]: Self::is_token_revoked
    pub fn revoke_token(
        &self,
        user_id: u64,
        key: &str,
        exp: i64,
    ) -> Result<Revocation, UpdateError> {
        let now = now();
        let prefix = format!("{user_id}/");
        let sweep = self.shared.last_sweep.load(Ordering::Relaxed) + REVOKED_SWEEP_INTERVAL <= now;
        let (outcome, gone) = self
            .shared
            .write(true, |tx| -> Result<_, Fail<UpdateError>> {
                let mut table = tx.open_table(REVOKED)?;
                let mut gone = Vec::new();
                if sweep {
                    for entry in table.iter()? {
                        let (key, at) = entry?;
                        if at.value() <= now {
                            gone.push(key.value().to_string());
                        }
                    }
                }
                let mut mine = Vec::new();
                for entry in table.range::<&str>(prefix.as_str()..)? {
                    let (key, at) = entry?;
                    if !key.value().starts_with(&prefix) {
                        break;
                    }
                    mine.push((key.value().to_string(), at.value()));
                }
                let live = mine.iter().filter(|(_, at)| *at > now).count();
                let outcome = if live >= MAX_REVOKED_PER_USER && end_sessions(tx, user_id)? {
                    gone.extend(mine.into_iter().map(|(key, _)| key));
                    Revocation::AllSessionsEnded
                } else {
                    table.insert(key, exp)?;
                    Revocation::Listed
                };
                for key in &gone {
                    table.remove(key.as_str())?;
                }
                Ok((outcome, gone))
            })?;
        if sweep {
            self.shared.last_sweep.store(now, Ordering::Relaxed);
        }
        let mut revoked = self
            .shared
            .revoked
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for key in &gone {
            revoked.remove(key);
        }
        if outcome == Revocation::Listed {
            revoked.insert(key.to_string(), exp);
        }
        self.shared
            .revoked_count
            .store(revoked.len(), Ordering::Release);
        Ok(outcome)
    }

    /// Whether the token `id` was revoked on its own (logged out) and could still be
    /// presented. Costs one atomic load while no token is revoked.
    pub fn is_token_revoked(&self, id: &str, now: i64) -> bool {
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

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Whether this handle only inspects the store (see [`inspect`](Self::inspect)).
    pub fn is_inspection(&self) -> bool {
        self.shared.inspect
    }

    /// Sets the function told about every change of the store's health (once per change,
    /// never per request): the server logs them.
    pub fn set_observer(&self, observer: impl Fn(&HealthEvent) + Send + Sync + 'static) {
        *self
            .shared
            .observer
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(observer));
    }

    /// A cheap check that the store can be read: one read transaction reading the
    /// schema version.
    pub fn check(&self) -> Result<(), ReadError> {
        self.shared.read(|tx| {
            tx.open_table(META)?.get(META_SCHEMA)?;
            Ok(())
        })
    }

    /// Whether [`check`](Self::check) passes.
    pub fn is_readable(&self) -> bool {
        self.check().is_ok()
    }

    /// The store's health: reads (checked now), writes (the last write's outcome; while
    /// writes fail, a probe write is tried with back-off) and the known damage.
    pub fn health(&self) -> Health {
        let _ = self.check();
        self.shared.probe_writes();
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
            read_failure: state.read_failure.clone(),
            write_failure: state.write_failure.clone(),
            damage,
            file_fault: state.file_fault.clone(),
            revoked_tokens: self.shared.revoked_count.load(Ordering::Acquire),
        }
    }

    /// Checks that the path still names the file this handle writes to. When the file
    /// was deleted under the server (a careless `rm`, a clean-up script), a copy is made
    /// from this handle's snapshot, put at the path (never over a file), and the handle
    /// moves to it, all while no write can run: nothing acknowledged is lost, and the
    /// next start finds every user. When another file stands there (a restore while
    /// serving, a copy over it), neither file is touched and [`health`](Self::health)
    /// says what to do until the server restarts. The server calls this every few
    /// seconds; it costs one `stat` while all is well.
    pub fn keep_file(&self) {
        if self.shared.inspect {
            return;
        }
        let known = *lock(&self.shared.identity);
        let now = file_identity(&self.shared.path);
        if now.is_some() && now == known {
            return;
        }
        if now.is_some() || std::fs::symlink_metadata(&self.shared.path).is_ok() {
            let what = format!(
                "another file was put where the user store {} was while the server runs; \
                 the server still writes to the old one, which ends with it: take a backup \
                 now (`latchkey backup FILE`), stop the server, put the file you want in \
                 place (`latchkey restore`), and start it",
                self.shared.path.display()
            );
            let first = lock(&self.shared.state)
                .file_fault
                .replace(what.clone())
                .is_none();
            if first {
                self.shared.emit(HealthEvent::FileReplaced(what));
            }
            return;
        }
        for _ in 0..5 {
            let temp = files::temp_beside(&self.shared.path, "kept");
            let _ = std::fs::remove_file(&temp);
            let taken_at = self.shared.commits.load(Ordering::SeqCst);
            if self.backup_to(&temp).is_err() {
                let _ = std::fs::remove_file(&temp);
                return;
            }
            let Ok(_only_me) = self.shared.reopening.lock() else {
                let _ = std::fs::remove_file(&temp);
                return;
            };
            let mut slot = self
                .shared
                .db
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if self.shared.commits.load(Ordering::SeqCst) != taken_at {
                // Something was written since the copy: take it again.
                drop(slot);
                let _ = std::fs::remove_file(&temp);
                continue;
            }
            if files::place_new(&temp, &self.shared.path).is_err() {
                let _ = std::fs::remove_file(&temp);
                return;
            }
            let old = std::mem::replace(
                &mut *slot,
                Slot::Closed("moving to the restored file".into()),
            );
            if let Slot::Open(db) = old {
                close_quietly(db);
            }
            match guard::quietly(|| Builder::new().open(&self.shared.path)) {
                Ok(Ok(db)) => {
                    *slot = Slot::Open(db);
                    self.shared.closed.store(false, Ordering::Release);
                }
                Ok(Err(e)) => {
                    *slot = Slot::Closed(open_failure(&self.shared.path, e).to_string());
                    self.shared.closed.store(true, Ordering::Release);
                }
                Err(panic) => {
                    *slot = Slot::Closed(stopped(&panic));
                    self.shared.closed.store(true, Ordering::Release);
                }
            }
            *lock(&self.shared.identity) = file_identity(&self.shared.path);
            drop(slot);
            self.shared.generation.fetch_add(1, Ordering::SeqCst);
            self.shared.emit(HealthEvent::FileRestored(
                self.shared.path.display().to_string(),
            ));
            return;
        }
    }

    /// Creates a user with `ver` 0; fails with `NameTaken` when the name exists (ignoring
    /// case and surrounding whitespace). The name is stored trimmed.
    pub fn create(&self, name: &str, role: &str, password_hash: &str) -> Result<User, CreateError> {
        let name = validate_name(name).map_err(CreateError::Invalid)?;
        validate_role(role).map_err(CreateError::Invalid)?;
        validate_hash(password_hash).map_err(CreateError::Invalid)?;
        let key = name.to_ascii_lowercase();
        let at = now();
        self.shared.write(true, |tx| {
            let mut names = tx.open_table(NAMES)?;
            if names.get(key.as_str())?.is_some() {
                return Err(Fail::Op(CreateError::NameTaken(name.clone())));
            }
            let mut meta = tx.open_table(META)?;
            let Some(id) = meta.get(META_NEXT_ID)?.map(|v| v.value()) else {
                return Err(Fail::Op(CreateError::Damaged(
                    "the id counter is missing".into(),
                )));
            };
            let Some(next) = id.checked_add(1) else {
                return Err(Fail::Op(CreateError::Damaged(
                    "the id counter is exhausted".into(),
                )));
            };
            let user = User::new(
                id,
                name.clone(),
                role.to_string(),
                password_hash.to_string(),
                at,
            );
            let bytes = record::encode(&user).map_err(|e| Fail::Op(CreateError::Invalid(e)))?;
            tx.open_table(USERS)?.insert(id, bytes.as_slice())?;
            names.insert(key.as_str(), id)?;
            meta.insert(META_NEXT_ID, next)?;
            Ok(user)
        })
    }

    /// A user by id; `Ok(None)` when there is none, [`ReadError::DamagedRecord`] when
    /// the record cannot be read.
    pub fn get(&self, id: u64) -> Result<Option<User>, ReadError> {
        let found = self.shared.read(|tx| {
            let users = tx.open_table(USERS)?;
            let user = users.get(id)?.map(|v| decode(id, v.value())).transpose();
            user.map_err(Fail::Op)
        });
        let found = self.shared.noting_damage(found)?;
        Ok(found.map(|u| self.with_pending_login(u)))
    }

    /// A user by name (case-insensitive, trimmed). A name that could never be valid is
    /// simply not found.
    pub fn get_by_name(&self, name: &str) -> Result<Option<User>, ReadError> {
        let Ok(name) = validate_name(name) else {
            return Ok(None);
        };
        let found = self.shared.read(|tx| {
            let names = tx.open_table(NAMES)?;
            let Some(id) = names
                .get(name.to_ascii_lowercase().as_str())?
                .map(|v| v.value())
            else {
                return Ok(None);
            };
            let users = tx.open_table(USERS)?;
            match users.get(id)? {
                Some(v) => decode(id, v.value()).map(Some).map_err(Fail::Op),
                None => Err(Fail::Op(ReadError::DamagedRecord(DamagedRecord {
                    id,
                    why: format!("the name {name} points to it, but there is no record"),
                }))),
            }
        });
        let found = self.shared.noting_damage(found)?;
        Ok(found.map(|u| self.with_pending_login(u)))
    }

    /// The id the name index gives `name` (case-insensitive, trimmed), without reading the
    /// record: how a user whose record is damaged can still be found and deleted.
    pub fn id_by_name(&self, name: &str) -> Result<Option<u64>, ReadError> {
        let Ok(name) = validate_name(name) else {
            return Ok(None);
        };
        self.shared.read(|tx| {
            let names = tx.open_table(NAMES)?;
            let id = names
                .get(name.to_ascii_lowercase().as_str())?
                .map(|v| v.value());
            Ok(id)
        })
    }

    /// What the per-request check needs, read in one read transaction; the password hash
    /// and the second factor are not decoded. This is the hot path of every request.
    pub fn session_state(&self, id: u64) -> Result<Option<SessionState>, ReadError> {
        let found = self.shared.read(|tx| {
            let users = tx.open_table(USERS)?;
            let state = users
                .get(id)?
                .map(|v| {
                    record::decode_session(v.value())
                        .map_err(|why| ReadError::DamagedRecord(DamagedRecord { id, why }))
                })
                .transpose();
            state.map_err(Fail::Op)
        });
        self.shared.noting_damage(found)
    }

    /// [`session_state`](Self::session_state) through `cache`: a read transaction only
    /// when this user's state is not cached or the store's generation moved since.
    ///
    /// Sound because this process is the store's only writer (the file is locked while it
    /// is open) and the generation moves after every commit that may change a session
    /// (a failed commit too: it may still have reached the disk) and after every re-open:
    /// the generation is read before the transaction, so a state read while a write
    /// commits, or before a re-open, is never reused.
    pub fn session_state_cached<'c>(
        &self,
        id: u64,
        cache: &'c mut SessionCache,
    ) -> Result<Option<&'c SessionState>, ReadError> {
        let generation = self.shared.generation.load(Ordering::SeqCst);
        if cache.generation != generation {
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

    /// Up to `limit` rows with id > `after`, by id: readable users, and a marker for each
    /// damaged record. Page with the last id seen.
    pub fn list(&self, after: u64, limit: usize) -> Result<Vec<Entry>, ReadError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let rows: Vec<Entry> = self.shared.read(|tx| {
            let users = tx.open_table(USERS)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for entry in users.range(first..)?.take(limit) {
                let (id, bytes) = entry?;
                let id = id.value();
                out.push(match record::decode(id, bytes.value()) {
                    Ok(user) => Entry::User(user),
                    Err(why) => Entry::Damaged(DamagedRecord { id, why }),
                });
            }
            Ok::<_, Fail<ReadError>>(out)
        })?;
        Ok(rows
            .into_iter()
            .map(|row| match row {
                Entry::User(u) => Entry::User(self.with_pending_login(u)),
                Entry::Damaged(d) => {
                    self.shared.note_damage(&d);
                    Entry::Damaged(d)
                }
            })
            .collect())
    }

    /// Number of users (damaged records included).
    pub fn count(&self) -> Result<u64, ReadError> {
        self.shared.read(|tx| Ok(tx.open_table(USERS)?.len()?))
    }

    /// Sets the role. Does not bump `ver`: the server applies the store's role on the next
    /// request.
    pub fn set_role(&self, id: u64, role: &str) -> Result<User, UpdateError> {
        validate_role(role).map_err(UpdateError::Invalid)?;
        self.update(id, true, |user| edit::set_role(user, role, now()))
    }

    /// Sets the password hash (the user chose it: any "must change" mark is cleared) and
    /// bumps `ver`.
    pub fn set_password(&self, id: u64, password_hash: &str) -> Result<User, UpdateError> {
        self.reset_password(id, password_hash, false)
    }

    /// Sets the password hash, marks whether the user must change it at the next login
    /// (an administrator's reset), and bumps `ver`: every session ends.
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

    /// Removes the user's second factor (and any enrolment in progress) and bumps `ver`:
    /// every session ends, and the user logs in with the password alone until they
    /// enrol again.
    pub fn reset_totp(&self, id: u64) -> Result<User, UpdateError> {
        self.update(id, true, |user| edit::reset_totp(user, now()))
    }

    /// Starts (or starts over) an enrolment in the second factor: `secret` becomes the
    /// pending secret, shown to the user until they confirm it with a code. A confirmed
    /// factor, the token version and `updated` are left as they are: nothing is in force
    /// until [`enable_totp`](Self::enable_totp).
    pub fn begin_totp(&self, id: u64, secret: &[u8]) -> Result<User, UpdateError> {
        self.update(id, false, |user| edit::begin_totp(user, secret))
    }

    /// Switches the second factor on, in one write transaction, only if the pending
    /// secret is still `pending` (the one the user's code was checked against: another
    /// tab may have started over meanwhile) and no factor is on yet: the pending secret
    /// becomes the factor's, with `step` (the step of the code that confirmed it) as its
    /// last used step and `recovery` as its recovery code hashes; the pending secret is
    /// cleared and `ver` bumped, so every session from before ends. `Ok(None)` when the
    /// condition does not hold: nothing was written.
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

    /// Records that the code of time step `step` was accepted for the factor whose secret
    /// is `secret`, as a compare-and-set in one write transaction: only if the user still
    /// has that factor and `step` is later than its last used step. Of two requests
    /// presenting the same code at once, exactly one gets `Ok(Some(_))`; `Ok(None)` (a
    /// replay, or the factor was reset or replaced meanwhile) writes nothing.
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

    /// Spends a recovery code: removes the hash `hash` from the user's factor, in one
    /// write transaction, only if it is there. `Ok(None)` when it is not (never issued,
    /// or already used, also by a concurrent request): nothing was written.
    pub fn use_recovery_code(&self, id: u64, hash: &[u8; 32]) -> Result<Option<User>, UpdateError> {
        self.update_if(id, false, &mut |user| edit::use_recovery_code(user, hash))
    }

    /// Locks (bumping `ver`, on every call) or unlocks (keeping `ver`).
    pub fn set_locked(&self, id: u64, locked: bool) -> Result<User, UpdateError> {
        self.update(id, true, |user| edit::set_locked(user, locked, now()))
    }

    /// Bumps `ver`: every token issued before is revoked.
    pub fn revoke(&self, id: u64) -> Result<User, UpdateError> {
        self.update(id, true, |user| edit::revoke(user, now()))
    }

    /// Records a successful login durably, now: sets `last_login`, and replaces the hash
    /// when it was re-hashed at stronger parameters. Does not bump `ver` or `updated`.
    /// The server uses [`note_login`](Self::note_login) instead, which needs no write.
    pub fn record_login(&self, id: u64, new_hash: Option<&str>) -> Result<User, UpdateError> {
        if let Some(hash) = new_hash {
            validate_hash(hash).map_err(UpdateError::Invalid)?;
        }
        self.update(id, false, |user| edit::record_login(user, new_hash, now()))
    }

    /// Records a successful login without waiting for the disk, and returns `user` with
    /// `last_login` set. The login (and `new_hash`, the password re-hashed at stronger
    /// parameters) is committed by a background thread shortly after, retried while
    /// writes fail; it never replaces a newer `last_login`, and the new hash replaces the
    /// stored one only if that is still `user.password_hash` (so a password changed
    /// meanwhile is never clobbered). A new hash that breaks the rules is left out.
    /// Reads of this store show the login at once.
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

    /// Commits the pending logins now (the background thread does it by itself; a backup
    /// calls this first so that the copy has them).
    pub fn flush_logins(&self) -> Result<(), UpdateError> {
        logins::flush(&*self.shared)
    }

    /// `user` with its pending (not yet committed) login, if any.
    fn with_pending_login(&self, user: User) -> User {
        self.shared.logins.shown(user)
    }

    /// Deletes a user and frees the name; the id is never handed out again. A damaged
    /// record can be deleted too (every name index entry pointing to it goes with it).
    pub fn delete(&self, id: u64) -> Result<(), UpdateError> {
        self.shared.write(true, |tx| {
            let mut users = tx.open_table(USERS)?;
            let Some(removed) = users.remove(id)?.map(|v| v.value().to_vec()) else {
                return Err(Fail::Op(UpdateError::NotFound));
            };
            let mut names = tx.open_table(NAMES)?;
            match record::decode(id, &removed) {
                Ok(user) => {
                    if is_active_admin(&user) && !other_active_admin(&users, id)? {
                        return Err(Fail::Op(UpdateError::LastAdmin));
                    }
                    names.remove(user.name.to_ascii_lowercase().as_str())?;
                }
                Err(_) => {
                    let mut stale = Vec::new();
                    for entry in names.iter()? {
                        let (key, value) = entry?;
                        if value.value() == id {
                            stale.push(key.value().to_string());
                        }
                    }
                    for key in stale {
                        names.remove(key.as_str())?;
                    }
                }
            }
            Ok(())
        })?;
        self.shared.forget_damage(id);
        self.shared.logins.forget(id);
        Ok(())
    }

    /// Reads user `id`, applies `change`, writes it back: one write transaction.
    fn update(
        &self,
        id: u64,
        sessions: bool,
        change: impl FnOnce(&mut User),
    ) -> Result<User, UpdateError> {
        let mut change = Some(change);
        let applied = self.update_if(id, sessions, &mut |user| {
            if let Some(change) = change.take() {
                change(user);
            }
            true
        })?;
        // `update_if` answers `None` only when its condition is false, never here.
        applied.ok_or(UpdateError::NotFound)
    }

    /// Reads user `id`, applies `change` and writes it back, in one write transaction,
    /// for a change that depends on the record: `change` says whether it applies; when
    /// it does not, the transaction is aborted (nothing is written, no commit waits for
    /// the disk) and the answer is `Ok(None)`. A change that would leave no active
    /// administrator is refused (`LastAdmin`). (`change` is a trait object: the
    /// transaction code exists once for every update.)
    fn update_if(
        &self,
        id: u64,
        sessions: bool,
        change: &mut dyn FnMut(&mut User) -> bool,
    ) -> Result<Option<User>, UpdateError> {
        /// The transaction's own outcomes: a failed update, or a condition that did not hold.
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
            let mut users = tx.open_table(USERS)?;
            let found = users
                .get(id)?
                .map(|v| decode(id, v.value()))
                .transpose()
                .map_err(|e| Fail::Op(Refused::Update(e.into())))?;
            let Some(mut user) = found else {
                return Err(Fail::Op(Refused::Update(UpdateError::NotFound)));
            };
            let was_admin = is_active_admin(&user);
            if !change(&mut user) {
                return Err(Fail::Op(Refused::Condition));
            }
            if was_admin && !is_active_admin(&user) {
                match other_active_admin(&users, id) {
                    Ok(true) => {}
                    Ok(false) => return Err(Fail::Op(Refused::Update(UpdateError::LastAdmin))),
                    Err(Fail::Op(e)) => return Err(Fail::Op(Refused::Update(e))),
                    Err(Fail::Storage(e)) => return Err(Fail::Storage(e)),
                }
            }
            let bytes = record::encode(&user)
                .map_err(|e| Fail::Op(Refused::Update(UpdateError::Invalid(e))))?;
            users.insert(id, bytes.as_slice())?;
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

    /// The `kid` of the primary signing key the store was last served with, or `None`
    /// when it has never been served.
    pub fn served_kid(&self) -> Result<Option<String>, ReadError> {
        self.shared.read(|tx| match tx.open_table(META_TEXT) {
            Ok(table) => Ok(table.get(TEXT_SERVED_KID)?.map(|v| v.value().to_string())),
            Err(TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        })
    }

    /// Remembers `kid` as the primary key the store is served with (see `served_kid`).
    pub fn remember_kid(&self, kid: &str) -> Result<(), UpdateError> {
        self.shared.write(false, |tx| {
            tx.open_table(META_TEXT)?.insert(TEXT_SERVED_KID, kid)?;
            Ok(())
        })
    }

    /// Reads the whole store and checks every record and the invariants in the module
    /// docs: every record decodes, the name index and the users table agree both ways,
    /// and the id counter is above every id. A full scan: for `serve --check`, the
    /// server's start, `user list` and backups, not for the request path. What it finds
    /// becomes the damage [`health`](Self::health) reports.
    pub fn scan(&self) -> Result<Scan, ReadError> {
        let scan = self.shared.read(|tx| {
            let users = tx.open_table(USERS)?;
            let names = tx.open_table(NAMES)?;
            let meta = tx.open_table(META)?;
            let mut scan = Scan::default();
            let mut index = Vec::new();
            let next_id = meta.get(META_NEXT_ID)?.map(|v| v.value());
            if next_id.is_none() {
                index.push("the id counter is missing".to_string());
            }
            for entry in users.iter()? {
                let (id, bytes) = entry?;
                let id = id.value();
                if let Some(next) = next_id
                    && id >= next
                {
                    index.push(format!("user {id} is not below the id counter {next}"));
                }
                let user = match record::decode(id, bytes.value()) {
                    Ok(user) => user,
                    Err(why) => {
                        scan.damage.push(Damage::Record(DamagedRecord { id, why }));
                        continue;
                    }
                };
                scan.users += 1;
                let key = user.name.to_ascii_lowercase();
                match names.get(key.as_str())?.map(|v| v.value()) {
                    Some(indexed) if indexed == id => {}
                    Some(other) => index.push(format!(
                        "the name index gives {key} to user {other}, not to user {id}"
                    )),
                    None => index.push(format!(
                        "user {id} ({}) is missing from the name index",
                        user.name
                    )),
                }
            }
            for entry in names.iter()? {
                let (key, id) = entry?;
                let (key, id) = (key.value(), id.value());
                match users.get(id)? {
                    None => scan.damage.push(Damage::Record(DamagedRecord {
                        id,
                        why: format!("the name {key} points to it, but there is no record"),
                    })),
                    Some(bytes) => {
                        if let Ok(user) = record::decode(id, bytes.value())
                            && user.name.to_ascii_lowercase() != key
                        {
                            index.push(format!(
                                "the name index entry {key} points to user {id}, who is named {}",
                                user.name
                            ));
                        }
                    }
                }
            }
            scan.damage.sort_by_key(|d| match d {
                Damage::Record(r) => r.id,
                Damage::Index(_) => u64::MAX,
            });
            scan.damage.extend(index.into_iter().map(Damage::Index));
            Ok::<_, Fail<ReadError>>(scan)
        })?;
        self.shared.set_damage(&scan);
        Ok(scan)
    }

    /// [`scan`](Self::scan) as one result: the number of users, or an error naming every
    /// finding. For tests and the crash suite.
    pub fn check_consistency(&self) -> Result<u64, super::StoreError> {
        self.scan()?.verdict()
    }

    /// Writes a consistent copy of the store to `dest` (mode 0600) and says what it holds.
    ///
    /// The copy is made from one read snapshot (so it works beside writers in the same
    /// process, as a running server needs), into a new redb file under a temporary name
    /// beside `dest`, committed durably, then linked into place: `dest` never exists
    /// half-written and is never overwritten ([`BackupError::Exists`]). Records are copied
    /// byte for byte (damaged ones included, and counted). Pending logins are committed
    /// first when possible.
    pub fn backup_to(&self, dest: &Path) -> Result<BackupInfo, BackupError> {
        if std::fs::symlink_metadata(dest).is_ok() {
            return Err(BackupError::Exists(dest.to_path_buf()));
        }
        if !self.shared.inspect {
            let _ = self.flush_logins();
        }
        let temp = files::temp_beside(dest, "partial");
        // Named with this process's id: one that exists was left by a crashed process.
        let _ = std::fs::remove_file(&temp);
        let file = files::create_private(&temp).map_err(|source| BackupError::File {
            path: temp.clone(),
            source,
        })?;
        let result = self.copy_into(file, &temp).and_then(|info| {
            files::place_new(&temp, dest)
                .map_err(|source| {
                    if source.kind() == std::io::ErrorKind::AlreadyExists {
                        BackupError::Exists(dest.to_path_buf())
                    } else {
                        BackupError::File {
                            path: dest.to_path_buf(),
                            source,
                        }
                    }
                })
                .map(|()| info)
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        let mut info = result?;
        info.bytes = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
        Ok(info)
    }

    fn copy_into(&self, file: File, path: &Path) -> Result<BackupInfo, BackupError> {
        let target_err = |e: redb::Error| {
            Fail::Op(BackupError::Storage {
                path: path.to_path_buf(),
                source: Box::new(e),
            })
        };
        let target = match guard::quietly(|| {
            FileBackend::new(file).and_then(|backend| Builder::new().create_with_backend(backend))
        }) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => {
                return Err(BackupError::Storage {
                    path: path.to_path_buf(),
                    source: Box::new(e.into()),
                });
            }
            Err(panic) => {
                return Err(BackupError::Storage {
                    path: path.to_path_buf(),
                    source: Box::new(redb::Error::Corrupted(panic)),
                });
            }
        };
        let info = self.shared.read(|tx| {
            let users = tx.open_table(USERS)?;
            let names = tx.open_table(NAMES)?;
            let meta = tx.open_table(META)?;
            let meta_text = match tx.open_table(META_TEXT) {
                Ok(t) => Some(t),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let revoked = match tx.open_table(REVOKED) {
                Ok(t) => Some(t),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            let mut info = BackupInfo {
                users: 0,
                damaged: 0,
                bytes: 0,
            };
            let mut out = target.begin_write().map_err(|e| target_err(e.into()))?;
            out.set_durability(Durability::Immediate)
                .map_err(|e| target_err(e.into()))?;
            {
                let mut t = out.open_table(USERS).map_err(|e| target_err(e.into()))?;
                for entry in users.iter()? {
                    let (id, bytes) = entry?;
                    if record::decode(id.value(), bytes.value()).is_ok() {
                        info.users += 1;
                    } else {
                        info.damaged += 1;
                    }
                    t.insert(id.value(), bytes.value())
                        .map_err(|e| target_err(e.into()))?;
                }
                let mut t = out.open_table(NAMES).map_err(|e| target_err(e.into()))?;
                for entry in names.iter()? {
                    let (key, id) = entry?;
                    t.insert(key.value(), id.value())
                        .map_err(|e| target_err(e.into()))?;
                }
                let mut t = out.open_table(META).map_err(|e| target_err(e.into()))?;
                for entry in meta.iter()? {
                    let (key, value) = entry?;
                    if key.value() != META_PROBE {
                        t.insert(key.value(), value.value())
                            .map_err(|e| target_err(e.into()))?;
                    }
                }
                let mut t = out
                    .open_table(META_TEXT)
                    .map_err(|e| target_err(e.into()))?;
                if let Some(meta_text) = &meta_text {
                    for entry in meta_text.iter()? {
                        let (key, value) = entry?;
                        t.insert(key.value(), value.value())
                            .map_err(|e| target_err(e.into()))?;
                    }
                }
                let mut t = out.open_table(REVOKED).map_err(|e| target_err(e.into()))?;
                if let Some(revoked) = &revoked {
                    for entry in revoked.iter()? {
                        let (key, value) = entry?;
                        t.insert(key.value(), value.value())
                            .map_err(|e| target_err(e.into()))?;
                    }
                }
            }
            out.commit().map_err(|e| target_err(e.into()))?;
            Ok(info)
        })?;
        close_quietly(target);
        Ok(info)
    }
}

impl Drop for UserStore {
    /// Commits the pending logins (the flusher's last round), then closes the file.
    fn drop(&mut self) {
        self.shared.logins.stop();
    }
}

impl std::fmt::Debug for UserStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserStore")
            .field("path", &self.shared.path)
            .field("inspect", &self.shared.inspect)
            .finish_non_exhaustive()
    }
}

/// Decodes a record read by `get`/`update`, as a [`ReadError`].
/// Whether `user` is an administrator who can log in.
fn is_active_admin(user: &User) -> bool {
    user.role == super::ROLE_ADMIN && !user.locked
}

/// Whether a user other than `id` is an active administrator (read in the write
/// transaction that would take the last one away, so two such changes cannot both pass).
/// A damaged record does not count.
fn other_active_admin(
    users: &redb::Table<'_, u64, &[u8]>,
    id: u64,
) -> Result<bool, Fail<UpdateError>> {
    for entry in users.iter()? {
        let (key, value) = entry?;
        if key.value() != id
            && record::decode(key.value(), value.value()).is_ok_and(|u| is_active_admin(&u))
        {
            return Ok(true);
        }
    }
    Ok(false)
}

fn decode(id: u64, bytes: &[u8]) -> Result<User, ReadError> {
    record::decode(id, bytes).map_err(|why| ReadError::DamagedRecord(DamagedRecord { id, why }))
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

    /// Runs `f` in a read transaction, guarded; storage failures become
    /// [`Unavailable::Read`] (and re-open the file), panics [`Unavailable::Panicked`].
    fn read<T, E: From<Unavailable>>(
        &self,
        f: impl FnOnce(&ReadTransaction) -> Result<T, Fail<E>>,
    ) -> Result<T, E> {
        self.reopen_if_due();
        let outcome = {
            let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Slot::Closed(why) => Err(why.clone()),
                Slot::Open(db) => Ok(guard::quietly(|| {
                    let tx = db.begin_read()?;
                    f(&tx)
                })),
            }
        };
        match outcome {
            Err(why) => {
                self.reads_failed(&why);
                Err(Unavailable::Closed(why).into())
            }
            Ok(Ok(Ok(value))) => {
                self.reads_work();
                Ok(value)
            }
            Ok(Ok(Err(Fail::Op(e)))) => {
                self.reads_work();
                Err(e)
            }
            Ok(Ok(Err(Fail::Storage(e)))) => {
                self.reads_failed(&e.to_string());
                self.reopen();
                Err(Unavailable::Read(e).into())
            }
            Ok(Err(panic)) => {
                self.reads_failed(&stopped(&panic));
                self.reopen();
                Err(Unavailable::Panicked(panic).into())
            }
        }
    }

    /// Runs `f` in a write transaction committed durably, guarded. `sessions` says whether
    /// the write may change a session (then the generation moves). A failed commit moves
    /// the generation too, marks writes as failing and re-opens the file at once.
    fn write<T, E: From<Unavailable>>(
        &self,
        sessions: bool,
        f: impl FnOnce(&WriteTransaction) -> Result<T, Fail<E>>,
    ) -> Result<T, E> {
        if self.inspect {
            return Err(Unavailable::ReadOnly.into());
        }
        self.reopen_if_due();
        let outcome = {
            let slot = self.db.read().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Slot::Closed(why) => Err(why.clone()),
                Slot::Open(db) => Ok(guard::quietly(|| {
                    let mut tx = db.begin_write()?;
                    tx.set_durability(Durability::Immediate)?;
                    // An error drops (aborts) the transaction.
                    let value = f(&tx)?;
                    tx.commit()?;
                    Ok(value)
                })),
            }
        };
        match outcome {
            Err(why) => Err(Unavailable::Closed(why).into()),
            Ok(Ok(Ok(value))) => {
                self.commits.fetch_add(1, Ordering::SeqCst);
                if sessions {
                    self.generation.fetch_add(1, Ordering::SeqCst);
                }
                self.writes_work();
                Ok(value)
            }
            Ok(Ok(Err(Fail::Op(e)))) => Err(e),
            Ok(Ok(Err(Fail::Storage(e)))) => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.writes_failed(&e.to_string());
                self.reopen();
                Err(Unavailable::Write(e).into())
            }
            Ok(Err(panic)) => {
                self.generation.fetch_add(1, Ordering::SeqCst);
                self.writes_failed(&stopped(&panic));
                self.reopen();
                Err(Unavailable::Panicked(panic).into())
            }
        }
    }

    fn reads_work(&self) {
        if !self.reads_failing.load(Ordering::Acquire) {
            return;
        }
        let changed = {
            let mut state = lock(&self.state);
            self.reads_failing.store(false, Ordering::Release);
            state.read_failure.take().is_some()
        };
        if changed {
            self.emit(HealthEvent::ReadsWork);
        }
    }

    fn reads_failed(&self, why: &str) {
        let first = {
            let mut state = lock(&self.state);
            self.reads_failing.store(true, Ordering::Release);
            state.read_failure.replace(why.to_string()).is_none()
        };
        if first {
            self.emit(HealthEvent::ReadsFailing(why.to_string()));
        }
    }

    /// A write succeeded: writes work again once none failed for [`HOLD_DOWN`].
    fn writes_work(&self) {
        if !self.writes_failing.load(Ordering::Acquire) {
            return;
        }
        lock(&self.state).recovering = true;
        self.end_write_failure_if_held();
    }

    /// Ends a write failure episode when a write succeeded since the last failure and
    /// that failure is [`HOLD_DOWN`] old.
    fn end_write_failure_if_held(&self) {
        if !self.writes_failing.load(Ordering::Acquire) {
            return;
        }
        let changed = {
            let mut state = lock(&self.state);
            let held = state
                .last_write_failure
                .is_none_or(|at| at.elapsed() >= HOLD_DOWN);
            if !(state.recovering && held) {
                return;
            }
            self.writes_failing.store(false, Ordering::Release);
            state.probe_backoff = FIRST_RETRY;
            state.recovering = false;
            state.last_write_failure = None;
            state.write_failure.take().is_some()
        };
        if changed {
            self.emit(HealthEvent::WritesWork);
        }
    }

    fn writes_failed(&self, why: &str) {
        let first = {
            let mut state = lock(&self.state);
            self.writes_failing.store(true, Ordering::Release);
            let first = state.write_failure.is_none();
            if first {
                state.write_failure = Some(WriteFailure {
                    reason: why.to_string(),
                    since: now(),
                });
                state.probe_backoff = FIRST_RETRY;
            } else if let Some(w) = &mut state.write_failure {
                w.reason = why.to_string();
            }
            state.recovering = false;
            state.last_write_failure = Some(Instant::now());
            state.probe_at = Instant::now() + state.probe_backoff;
            first
        };
        if first {
            self.emit(HealthEvent::WritesFailing(why.to_string()));
        }
    }

    /// While writes fail: a small write, at most once per back-off period, so that health
    /// turns good again by itself once writing works.
    fn probe_writes(&self) {
        if self.inspect || !self.writes_failing.load(Ordering::Acquire) {
            return;
        }
        self.end_write_failure_if_held();
        if !self.writes_failing.load(Ordering::Acquire) {
            return;
        }
        {
            let mut state = lock(&self.state);
            if Instant::now() < state.probe_at {
                return;
            }
            // Claimed: others wait for the next period while this probe runs.
            state.probe_backoff = (state.probe_backoff * 2).min(MAX_RETRY);
            state.probe_at = Instant::now() + state.probe_backoff;
        }
        let at = u64::try_from(now()).unwrap_or(0);
        let _ = self.write::<(), UpdateError>(false, |tx| {
            tx.open_table(META)?.insert(META_PROBE, at)?;
            Ok(())
        });
    }

    /// Re-opens the file when a re-open failed before and its back-off has passed.
    fn reopen_if_due(&self) {
        if !self.closed.load(Ordering::Acquire) {
            return;
        }
        let due = Instant::now() >= lock(&self.state).reopen_at;
        if due {
            self.reopen();
        }
    }

    /// Closes the handle and opens the file again: what redb asks for after an I/O error.
    /// One thread at a time; the others go on (and see the new handle or `Closed`).
    fn reopen(&self) {
        if self.inspect {
            return;
        }
        let Ok(_only_me) = self.reopening.try_lock() else {
            return;
        };
        let event = {
            let mut slot = self.db.write().unwrap_or_else(PoisonError::into_inner);
            // The old handle goes first: it holds the file's lock.
            let old = std::mem::replace(
                &mut *slot,
                Slot::Closed("re-opening the file after an error".into()),
            );
            if let Slot::Open(db) = old {
                close_quietly(db);
            }
            let opened = match guard::quietly(|| Builder::new().open(&self.path)) {
                Ok(Ok(db)) => Ok(db),
                Ok(Err(e)) => Err(open_failure(&self.path, e).to_string()),
                Err(panic) => Err(stopped(&panic)),
            };
            let mut state = lock(&self.state);
            match opened {
                Ok(db) => {
                    *slot = Slot::Open(db);
                    self.closed.store(false, Ordering::Release);
                    // The handle now has whatever file the path names.
                    *lock(&self.identity) = file_identity(&self.path);
                    state.file_fault = None;
                    state.reopen_backoff = FIRST_RETRY;
                    state.reopen_failing = false;
                    Some(HealthEvent::Reopened)
                }
                Err(why) => {
                    *slot = Slot::Closed(why.clone());
                    self.closed.store(true, Ordering::Release);
                    state.reopen_at = Instant::now() + state.reopen_backoff;
                    state.reopen_backoff = (state.reopen_backoff * 2).min(MAX_RETRY);
                    let first = !state.reopen_failing;
                    state.reopen_failing = true;
                    first.then_some(HealthEvent::ReopenFailed(why))
                }
            }
        };
        // After the new handle is in place: a state read before this never counts as newer.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(event) = event {
            self.emit(event);
        }
    }

    /// Passes `result` through, remembering a damaged record it reports.
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

    fn forget_damage(&self, id: u64) {
        lock(&self.state).damage.remove(&id);
    }

    /// Replaces the known damage with what a full scan found; reports the new findings.
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

    /// Writes a batch of logins in one transaction: a login never replaces a newer
    /// `last_login`; a re-hash replaces the hash only if it is still the verified one.
    fn write_batch(&self, batch: &Batch) -> Result<(), UpdateError> {
        self.write(false, |tx| {
            let mut users = tx.open_table(USERS)?;
            for (&id, login) in batch {
                let Some(bytes) = users.get(id)?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let Ok(mut user) = record::decode(id, &bytes) else {
                    continue;
                };
                let mut changed = false;
                if user.last_login.is_none_or(|t| t < login.at) {
                    user.last_login = Some(login.at);
                    changed = true;
                }
                if let Some(rehash) = &login.rehash
                    && user.password_hash == rehash.verified
                {
                    user.password_hash.clone_from(&rehash.new);
                    changed = true;
                }
                if changed && let Ok(bytes) = record::encode(&user) {
                    users.insert(id, bytes.as_slice())?;
                }
            }
            Ok(())
        })
    }
}

/// Creates a new store at `path`: made complete under a temporary name beside it (mode
/// 0600, tables created, durable), then linked into place, which fails with
/// `AlreadyExists` instead of replacing a file that appeared meanwhile.
fn create(path: &Path) -> Result<(), OpenError> {
    let file_err = |path: &Path, source| OpenError::File {
        path: path.to_path_buf(),
        source,
    };
    let temp = files::temp_beside(path, "new");
    // Named with this process's id: one that exists was left by a crashed process that
    // had the same id.
    let _ = std::fs::remove_file(&temp);
    let file = files::create_private(&temp).map_err(|e| file_err(path, e))?;
    let made = (|| {
        let db = match guard::quietly(|| {
            FileBackend::new(file).and_then(|backend| Builder::new().create_with_backend(backend))
        }) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(open_failure(path, e)),
            Err(panic) => return Err(OpenError::damaged(path, stopped(&panic))),
        };
        prepare(&db, path)?;
        close_quietly(db);
        files::place_new(&temp, path).map_err(|e| file_err(path, e))
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    made
}

/// Opens an overlay backend on the store file: the real file, for its locks and reads.
fn overlay(path: &Path) -> Result<Overlay, OpenError> {
    let file_err = |source| OpenError::File {
        path: path.to_path_buf(),
        source,
    };
    // Read and write, only so that redb can take its write locks; nothing is written.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(file_err)?;
    let backend = FileBackend::new(file).map_err(|e| open_failure(path, e))?;
    Overlay::new(backend).map_err(file_err)
}

/// Checks an existing store file without any chance of changing it, and returns a
/// handle on it whose writes stay in memory. See the module docs, "Opening".
fn checked_overlay(path: &Path) -> Result<Database, OpenError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(OpenError::Missing(path.to_path_buf()));
        }
        Err(source) => {
            return Err(OpenError::File {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if !meta.is_file() {
        return Err(OpenError::damaged(path, "is not a regular file"));
    }
    if meta.len() == 0 {
        return Err(OpenError::damaged(
            path,
            "is empty (0 bytes), as a failed copy or a full disk during a restore leaves a file",
        ));
    }
    // Whether the file was closed cleanly: a read-only open refuses one that needs
    // recovery, and changes nothing in any case.
    let clean = match guard::quietly(|| {
        overlay(path).map(|backend| Builder::new().open_read_only_with_backend(backend))
    }) {
        Ok(Ok(Ok(db))) => {
            let _ = guard::quietly(|| drop(db));
            true
        }
        Ok(Ok(Err(DatabaseError::RepairAborted))) => false,
        Ok(Ok(Err(e))) => return Err(open_failure(path, e)),
        Ok(Err(e)) => return Err(e),
        Err(panic) => return Err(OpenError::damaged(path, stopped(&panic))),
    };
    // The full check: every page of the committed trees against its checksum. A clean
    // file whose last commit fails it was changed after redb wrote it: refused. A file
    // left by a crash may fall back to the commit before (redb's crash recovery).
    let fell_back = Arc::new(AtomicBool::new(false));
    let mut builder = Builder::new();
    builder.set_check_integrity_on_open(true);
    {
        let fell_back = Arc::clone(&fell_back);
        builder.set_repair_callback(move |session| {
            // redb reports 0.3 only when the last commit failed its checksums and it is
            // about to fall back to the previous one.
            if (session.progress() - 0.3).abs() < 0.05 {
                fell_back.store(true, Ordering::SeqCst);
                if clean {
                    session.abort();
                }
            }
        });
    }
    let backend = overlay(path)?;
    match guard::quietly(|| builder.create_with_backend(backend)) {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(DatabaseError::RepairAborted)) if fell_back.load(Ordering::SeqCst) => {
            Err(OpenError::damaged(
                path,
                "fails redb's checksums: its pages were changed after latchkey wrote them",
            ))
        }
        Ok(Err(e)) => Err(open_failure(path, e)),
        Err(panic) => Err(OpenError::damaged(path, stopped(&panic))),
    }
}

/// Closes a database handle; a panic while closing (a damaged file) is swallowed: the
/// handle is gone either way.
fn close_quietly(db: Database) {
    let _ = guard::quietly(|| drop(db));
}

impl Drop for Shared {
    /// Closes the handle under the panic guard (the store's last reference is going).
    fn drop(&mut self) {
        let slot = std::mem::replace(
            self.db.get_mut().unwrap_or_else(PoisonError::into_inner),
            Slot::Closed("closed".into()),
        );
        if let Slot::Open(db) = slot {
            close_quietly(db);
        }
    }
}

/// What a panic inside redb means for the operator.
fn stopped(panic: &str) -> String {
    format!("makes redb stop on an internal check ({panic})")
}

/// An error from opening a file with redb, as an [`OpenError`].
fn open_failure(path: &Path, e: DatabaseError) -> OpenError {
    use std::io::ErrorKind;
    match e {
        DatabaseError::DatabaseAlreadyOpen => OpenError::Busy(path.to_path_buf()),
        DatabaseError::UpgradeRequired(v) => OpenError::damaged(
            path,
            format!("is in redb file format {v}, which this latchkey cannot read"),
        ),
        DatabaseError::Storage(redb::StorageError::Corrupted(what)) => {
            OpenError::damaged(path, format!("fails redb's integrity check ({what})"))
        }
        DatabaseError::Storage(redb::StorageError::Io(e)) if e.kind() == ErrorKind::InvalidData => {
            OpenError::damaged(path, format!("is not a redb file ({e})"))
        }
        DatabaseError::Storage(redb::StorageError::Io(e))
            if e.kind() == ErrorKind::UnexpectedEof =>
        {
            OpenError::damaged(path, format!("ends early ({e}): it was cut short"))
        }
        DatabaseError::Storage(redb::StorageError::Io(source)) => OpenError::File {
            path: path.to_path_buf(),
            source,
        },
        other => OpenError::Storage {
            path: path.to_path_buf(),
            source: Box::new(other.into()),
        },
    }
}

/// Bumps the `ver` of user `id` inside `tx`, ending every session of theirs; `false`
/// when there is no such user or their record is damaged (nothing to end, or nothing
/// that can be changed).
fn end_sessions(tx: &WriteTransaction, id: u64) -> Result<bool, Fail<UpdateError>> {
    let mut users = tx.open_table(USERS)?;
    let found = users.get(id)?.map(|v| decode(id, v.value()));
    let Some(Ok(mut user)) = found else {
        return Ok(false);
    };
    user.ver = user.ver.saturating_add(1);
    user.updated = now();
    let bytes = record::encode(&user).map_err(|e| Fail::Op(UpdateError::Invalid(e)))?;
    users.insert(id, bytes.as_slice())?;
    Ok(true)
}

/// The device and inode of the file `path` names (through a symlink), if any.
fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Sets the file's mode to 0600 when group or others may use it (stores made before
/// latchkey created them private). Best effort: the check never fails an open.
fn tighten_mode(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
    }
}

/// Creates missing tables and brings the schema to [`SCHEMA_VERSION`], in one write
/// transaction, only when something is to be done (a store that is up to date is not
/// written to).
fn prepare(db: &Database, path: &Path) -> Result<(), OpenError> {
    let storage = |e: redb::Error| OpenError::Storage {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let result = guard::quietly(|| -> Result<(), OpenError> {
        let (found, complete) = schema_of(db).map_err(storage)?;
        if found > SCHEMA_VERSION {
            return Err(OpenError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found == SCHEMA_VERSION && complete {
            return Ok(());
        }
        let mut tx = db.begin_write().map_err(|e| storage(e.into()))?;
        tx.set_durability(Durability::Immediate)
            .map_err(|e| storage(e.into()))?;
        let mut version = found;
        while version < SCHEMA_VERSION {
            match version {
                0 => migrate_v0_to_v1(&tx, path)?,
                1 => migrate_v1_to_v2(&tx).map_err(storage)?,
                _ => {
                    return Err(OpenError::damaged(
                        path,
                        format!("has schema version {version}, which has no migration"),
                    ));
                }
            }
            version += 1;
        }
        let created = (|| -> Result<(), redb::Error> {
            tx.open_table(USERS)?;
            tx.open_table(NAMES)?;
            tx.open_table(META_TEXT)?;
            tx.open_table(REVOKED)?;
            let mut meta = tx.open_table(META)?;
            meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
            if meta.get(META_NEXT_ID)?.is_none() {
                meta.insert(META_NEXT_ID, 1)?;
            }
            Ok(())
        })();
        created.map_err(storage)?;
        tx.commit().map_err(|e| storage(e.into()))
    });
    match result {
        Ok(result) => result,
        Err(panic) => Err(OpenError::damaged(path, stopped(&panic))),
    }
}

/// The schema version in the file (0 without one) and whether every table exists.
fn schema_of(db: &Database) -> Result<(u64, bool), redb::Error> {
    let tx = db.begin_read()?;
    let mut complete = true;
    let found = match tx.open_table(META) {
        Ok(meta) => meta.get(META_SCHEMA)?.map(|v| v.value()).unwrap_or(0),
        Err(TableError::TableDoesNotExist(_)) => {
            complete = false;
            0
        }
        Err(e) => return Err(e.into()),
    };
    for exists in [
        tx.open_table(USERS).map(|_| ()),
        tx.open_table(NAMES).map(|_| ()),
        tx.open_table(META_TEXT).map(|_| ()),
        tx.open_table(REVOKED).map(|_| ()),
    ] {
        match exists {
            Ok(()) => {}
            Err(TableError::TableDoesNotExist(_)) => complete = false,
            Err(e) => return Err(e.into()),
        }
    }
    Ok((found, complete))
}

/// Migration from v0 (no schema version) to v1: rebuild the name index and the id
/// counter from the `users` table, whose records are in format 1. Also what makes a
/// fresh file a v1 store. A record that cannot be read makes the index impossible to
/// rebuild: the store is refused as damaged.
fn migrate_v0_to_v1(tx: &WriteTransaction, path: &Path) -> Result<(), OpenError> {
    let storage = |e: redb::Error| OpenError::Storage {
        path: path.to_path_buf(),
        source: Box::new(e),
    };
    let rebuilt = (|| -> Result<Result<(), String>, redb::Error> {
        tx.delete_table(NAMES)?;
        let users = tx.open_table(USERS)?;
        let mut names = tx.open_table(NAMES)?;
        let mut next_id = 1;
        for entry in users.iter()? {
            let (id, bytes) = entry?;
            let user = match record::decode_v1(id.value(), bytes.value()) {
                Ok(user) => user,
                Err(why) => {
                    return Ok(Err(format!(
                        "holds an unreadable record (user {}: {why}) in a store without a \
                         schema version, so its name index cannot be rebuilt",
                        id.value()
                    )));
                }
            };
            let key = user.name.to_ascii_lowercase();
            if let Some(other) = names.insert(key.as_str(), user.id)? {
                return Ok(Err(format!(
                    "has users {} and {} sharing the name {}",
                    other.value(),
                    user.id,
                    user.name
                )));
            }
            next_id = next_id.max(user.id.saturating_add(1));
        }
        let mut meta = tx.open_table(META)?;
        let counter = meta.get(META_NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
        meta.insert(META_NEXT_ID, next_id.max(counter))?;
        Ok(Ok(()))
    })();
    match rebuilt.map_err(storage)? {
        Ok(()) => Ok(()),
        Err(what) => Err(OpenError::damaged(path, what)),
    }
}

/// Migration from v1 to v2: every record from format 1 to format 2 (no second factor,
/// no forced password change). A record that does not decode is left as it is and stays
/// a damaged record.
fn migrate_v1_to_v2(tx: &WriteTransaction) -> Result<(), redb::Error> {
    let mut users = tx.open_table(USERS)?;
    let mut rewritten = Vec::new();
    for entry in users.iter()? {
        let (id, bytes) = entry?;
        if let Ok(user) = record::decode_v1(id.value(), bytes.value())
            && let Ok(bytes) = record::encode(&user)
        {
            rewritten.push((id.value(), bytes));
        }
    }
    for (id, bytes) in rewritten {
        users.insert(id, bytes.as_slice())?;
    }
    tx.open_table(META_TEXT)?;
    Ok(())
}

/// `latchkey restore`: checks the copy at `copy` (a full scan: it must be a sound store)
/// and puts it in place at `target` atomically: written as a fresh store under a
/// temporary name in the target's directory, synced, renamed over `target`, the directory
/// synced. The file it replaces is kept beside it as `users.redb.replaced-<unix time>`.
///
/// Refuses while a server holds `target` ([`RestoreError::Busy`]), and refuses to replace
/// a sound store unless `force` ([`RestoreError::TargetSound`]); a damaged one may be
/// replaced. When run as root, the new file gets the owner of the file it replaces (or of
/// the directory), so a service running as its own user can still open it.
pub fn restore(copy: &Path, target: &Path, force: bool) -> Result<Restored, RestoreError> {
    let source = UserStore::inspect(copy).map_err(|e| RestoreError::Copy {
        path: copy.to_path_buf(),
        source: e,
    })?;
    let scan = source.scan().map_err(|e| RestoreError::Copy {
        path: copy.to_path_buf(),
        source: OpenError::damaged(copy, e.to_string()),
    })?;
    if !scan.is_sound() {
        return Err(RestoreError::CopyUnsound {
            path: copy.to_path_buf(),
            scan: Box::new(scan),
        });
    }
    // Held until the new file is in place: no server opens the old one meanwhile.
    let mut held = None;
    let mut damaged_target = None;
    if std::fs::symlink_metadata(target).is_ok() {
        match UserStore::inspect(target) {
            Ok(current) => {
                let current_scan = current.scan().map_err(|e| RestoreError::Target {
                    path: target.to_path_buf(),
                    source: OpenError::damaged(target, e.to_string()),
                })?;
                if current_scan.is_sound() && !force {
                    return Err(RestoreError::TargetSound {
                        path: target.to_path_buf(),
                        users: current_scan.users,
                    });
                }
                if !current_scan.is_sound() {
                    damaged_target =
                        Some(super::StoreError::Unsound(Box::new(current_scan)).to_string());
                }
                held = Some(current);
            }
            Err(OpenError::Busy(path)) => return Err(RestoreError::Busy(path)),
            Err(OpenError::Missing(_)) => {}
            Err(OpenError::Damaged { what, .. }) => damaged_target = Some(what),
            Err(e @ OpenError::NewerSchema { .. }) if !force => {
                return Err(RestoreError::Target {
                    path: target.to_path_buf(),
                    source: e,
                });
            }
            Err(OpenError::NewerSchema { .. }) => {}
            Err(e) => {
                return Err(RestoreError::Target {
                    path: target.to_path_buf(),
                    source: e,
                });
            }
        }
    }
    let file_err = |path: &Path, source| RestoreError::File {
        path: path.to_path_buf(),
        source,
    };
    let temp = files::temp_beside(target, "restore");
    let _ = std::fs::remove_file(&temp);
    let info = source.backup_to(&temp).map_err(RestoreError::Write)?;
    drop(source);
    let dir = files::parent(target);
    let owner = if target.exists() { target } else { dir };
    if let Err(e) = files::own_like(&temp, owner)
        && e.kind() != std::io::ErrorKind::PermissionDenied
    {
        let _ = std::fs::remove_file(&temp);
        return Err(file_err(&temp, e));
    }
    let mut kept = None;
    if target.exists() {
        let aside = target.with_file_name(format!(
            "{}.replaced-{}",
            target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            now()
        ));
        if let Err(e) = files::keep_aside(target, &aside) {
            let _ = std::fs::remove_file(&temp);
            return Err(file_err(&aside, e));
        }
        kept = Some(aside);
    }
    if let Err(e) = files::replace(&temp, target) {
        let _ = std::fs::remove_file(&temp);
        return Err(file_err(target, e));
    }
    drop(held);
    Ok(Restored {
        users: info.users,
        kept,
        damaged_target,
    })
}

/// Writes `snapshot` as a fresh redb store at `dest` (mode 0600; under a temporary name
/// beside it first, committed durably, then linked into place: never over an existing
/// file). How a PostgreSQL store is backed up in the embedded format, and how
/// `latchkey store copy` makes a redb store.
pub(crate) fn write_snapshot(dest: &Path, snapshot: &Snapshot) -> Result<BackupInfo, BackupError> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(BackupError::Exists(dest.to_path_buf()));
    }
    let temp = files::temp_beside(dest, "partial");
    let _ = std::fs::remove_file(&temp);
    let file = files::create_private(&temp).map_err(|source| BackupError::File {
        path: temp.clone(),
        source,
    })?;
    let storage = |e: redb::Error| BackupError::Storage {
        path: dest.to_path_buf(),
        source: Box::new(e),
    };
    let written = (|| -> Result<BackupInfo, BackupError> {
        let db = match guard::quietly(|| {
            FileBackend::new(file).and_then(|backend| Builder::new().create_with_backend(backend))
        }) {
            Ok(Ok(db)) => db,
            Ok(Err(e)) => return Err(storage(e.into())),
            Err(panic) => return Err(storage(redb::Error::Corrupted(panic))),
        };
        let filled = (|| -> Result<(), redb::Error> {
            let mut tx = db.begin_write()?;
            tx.set_durability(Durability::Immediate)?;
            {
                let mut users = tx.open_table(USERS)?;
                let mut names = tx.open_table(NAMES)?;
                let mut top = 0;
                for user in &snapshot.users {
                    let Ok(bytes) = record::encode(user) else {
                        continue;
                    };
                    users.insert(user.id, bytes.as_slice())?;
                    names.insert(user.name.to_ascii_lowercase().as_str(), user.id)?;
                    top = top.max(user.id);
                }
                let mut meta = tx.open_table(META)?;
                meta.insert(META_SCHEMA, SCHEMA_VERSION)?;
                meta.insert(
                    META_NEXT_ID,
                    snapshot.next_id.max(top.saturating_add(1)).max(1),
                )?;
                let mut text = tx.open_table(META_TEXT)?;
                if let Some(kid) = &snapshot.served_kid {
                    text.insert(TEXT_SERVED_KID, kid.as_str())?;
                }
                let mut revoked = tx.open_table(REVOKED)?;
                for (id, exp) in &snapshot.revoked {
                    revoked.insert(id.as_str(), *exp)?;
                }
            }
            tx.commit()?;
            Ok(())
        })();
        close_quietly(db);
        filled.map_err(storage)?;
        files::place_new(&temp, dest).map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                BackupError::Exists(dest.to_path_buf())
            } else {
                BackupError::File {
                    path: dest.to_path_buf(),
                    source,
                }
            }
        })?;
        let written = snapshot
            .users
            .iter()
            .filter(|u| record::encode(u).is_ok())
            .count() as u64;
        Ok(BackupInfo {
            users: written,
            damaged: snapshot.damaged.len() as u64 + (snapshot.users.len() as u64 - written),
            bytes: std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0),
        })
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

impl UserStore {
    /// Every readable user, the damaged records, the id counter and the remembered key,
    /// from one read snapshot: what `latchkey store copy` moves.
    pub fn snapshot(&self) -> Result<Snapshot, ReadError> {
        if !self.shared.inspect {
            let _ = self.flush_logins();
        }
        self.shared.read(|tx| {
            let users = tx.open_table(USERS)?;
            let meta = tx.open_table(META)?;
            let mut snapshot = Snapshot::default();
            for entry in users.iter()? {
                let (id, bytes) = entry?;
                match record::decode(id.value(), bytes.value()) {
                    Ok(user) => snapshot.users.push(user),
                    Err(why) => snapshot.damaged.push(DamagedRecord {
                        id: id.value(),
                        why,
                    }),
                }
            }
            snapshot.next_id = meta.get(META_NEXT_ID)?.map(|v| v.value()).unwrap_or(1);
            snapshot.served_kid = match tx.open_table(META_TEXT) {
                Ok(t) => t.get(TEXT_SERVED_KID)?.map(|v| v.value().to_string()),
                Err(TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(e.into()),
            };
            match tx.open_table(REVOKED) {
                Ok(t) => {
                    for entry in t.iter()? {
                        let (id, exp) = entry?;
                        snapshot.revoked.push((id.value().to_string(), exp.value()));
                    }
                }
                Err(TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(e.into()),
            }
            Ok::<_, Fail<ReadError>>(snapshot)
        })
    }

    /// [`create`](Self::create), but only while the store holds no user at all (the
    /// first administrator, made with the setup code): [`CreateError::NotFirst`]
    /// otherwise. Decided inside the write transaction.
    pub fn create_first(
        &self,
        name: &str,
        role: &str,
        password_hash: &str,
    ) -> Result<User, CreateError> {
        let name = validate_name(name).map_err(CreateError::Invalid)?;
        validate_role(role).map_err(CreateError::Invalid)?;
        validate_hash(password_hash).map_err(CreateError::Invalid)?;
        let key = name.to_ascii_lowercase();
        let at = now();
        self.shared.write(true, |tx| {
            let mut users = tx.open_table(USERS)?;
            if users.len()? > 0 {
                return Err(Fail::Op(CreateError::NotFirst));
            }
            let mut meta = tx.open_table(META)?;
            let Some(id) = meta.get(META_NEXT_ID)?.map(|v| v.value()) else {
                return Err(Fail::Op(CreateError::Damaged(
                    "the id counter is missing".into(),
                )));
            };
            let user = User::new(
                id,
                name.clone(),
                role.to_string(),
                password_hash.to_string(),
                at,
            );
            let bytes = record::encode(&user).map_err(|e| Fail::Op(CreateError::Invalid(e)))?;
            users.insert(id, bytes.as_slice())?;
            tx.open_table(NAMES)?.insert(key.as_str(), id)?;
            meta.insert(META_NEXT_ID, id.saturating_add(1))?;
            Ok(user)
        })
    }
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
    use redb::{BackendError, StorageBackend};
    use std::ops::Bound;

    /// redb's own file backend whose writes and syncs fail while `failing` is set: a disk
    /// that fills up under a running store, at the moment the test chooses.
    #[derive(Debug)]
    struct Failing {
        file: FileBackend,
        failing: Arc<AtomicBool>,
    }

    impl Failing {
        fn check(&self) -> std::io::Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
            } else {
                Ok(())
            }
        }
    }

    impl StorageBackend for Failing {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.file.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.file.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.file.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.file.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.file.close()
        }
        fn try_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, BackendError> {
            self.file.try_lock_range(a, b)
        }
        fn try_lock_shared_range(
            &self,
            a: Bound<u64>,
            b: Bound<u64>,
        ) -> Result<bool, BackendError> {
            self.file.try_lock_shared_range(a, b)
        }
        fn lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), BackendError> {
            self.file.lock_range(a, b)
        }
        fn lock_shared_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), BackendError> {
            self.file.lock_shared_range(a, b)
        }
        fn unlock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<(), BackendError> {
            self.file.unlock_range(a, b)
        }
        fn query_lock_range(&self, a: Bound<u64>, b: Bound<u64>) -> Result<bool, BackendError> {
            self.file.query_lock_range(a, b)
        }
    }

    /// A store whose handle writes through [`Failing`]; a re-open opens the real file.
    fn failing_store(tag: &str) -> (UserStore, Arc<AtomicBool>, PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("latchkey-embedded-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("users.redb");
        drop(UserStore::open(&path).expect("create"));
        let failing = Arc::new(AtomicBool::new(false));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open");
        let backend = Failing {
            file: FileBackend::new(file).expect("backend"),
            failing: Arc::clone(&failing),
        };
        let db = Builder::new()
            .create_with_backend(backend)
            .expect("redb on the failing backend");
        (UserStore::new(&path, db, false), failing, dir)
    }

    #[test]
    fn a_failed_commit_reopens_the_file_and_the_next_write_succeeds() {
        let (store, failing, dir) = failing_store("reopen");
        let events = Arc::new(Mutex::new(Vec::new()));
        {
            let events = Arc::clone(&events);
            store.set_observer(move |e| lock(&events).push(e.clone()));
        }
        let alice = store.create("alice", "user", "$fake$hash").expect("create");
        let mut memo = SessionCache::new();
        assert_eq!(
            store
                .session_state_cached(alice.id, &mut memo)
                .expect("read")
                .map(|s| s.ver),
            Some(0)
        );
        let before = store.shared.generation.load(Ordering::SeqCst);
        failing.store(true, Ordering::SeqCst);
        match store.revoke(alice.id) {
            Err(UpdateError::Unavailable(Unavailable::Write(e))) => {
                assert!(e.to_string().contains("No space left on device"), "{e}");
            }
            other => panic!("expected a write failure, got {other:?}"),
        }
        // The memo filled before the failed write is not trusted after it: the failed
        // commit and the re-open both moved the generation.
        assert!(store.shared.generation.load(Ordering::SeqCst) >= before + 2);
        assert!(store.health().write_failure.is_some());
        assert_eq!(
            lock(&events).as_slice(),
            [
                HealthEvent::WritesFailing(
                    "I/O error: No space left on device (os error 28)".into()
                ),
                HealthEvent::Reopened
            ]
        );
        // The re-opened handle is the real file's: reads work, and so does the next write,
        // without anyone restarting anything.
        assert_eq!(store.get(alice.id).expect("read").expect("alice").ver, 0);
        assert_eq!(store.revoke(alice.id).expect("write works again").ver, 1);
        assert_eq!(
            store
                .session_state_cached(alice.id, &mut memo)
                .expect("read")
                .map(|s| s.ver),
            Some(1),
            "the memo sees the new version"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn logins_are_recorded_without_a_write_and_never_clobber_a_newer_password() {
        let (store, failing, dir) = failing_store("logins");
        let alice = store.create("alice", "user", "$old$hash").expect("create");
        failing.store(true, Ordering::SeqCst);
        // Writing fails, the login is still recorded (in memory) and shown.
        let seen = store.note_login(&alice, Some("$rehashed$hash"));
        assert!(seen.last_login.is_some());
        assert_eq!(
            store
                .get(alice.id)
                .expect("read")
                .expect("alice")
                .last_login,
            seen.last_login
        );
        assert!(store.flush_logins().is_err(), "the disk is full");
        // The store re-opened on the real file; the password changes meanwhile.
        store
            .set_password(alice.id, "$new$hash")
            .expect("password change");
        store
            .flush_logins()
            .expect("the pending login is written now");
        let now = store.get(alice.id).expect("read").expect("alice");
        assert_eq!(
            now.password_hash, "$new$hash",
            "the re-hash of the old password is dropped"
        );
        assert_eq!(now.last_login, seen.last_login);
        assert_eq!(now.ver, 1);
        // Without a change in between, the re-hash is applied.
        let bob = store.create("bob", "user", "$weak$hash").expect("create");
        store.note_login(&bob, Some("$strong$hash"));
        store.flush_logins().expect("flush");
        assert_eq!(
            store.get(bob.id).expect("read").expect("bob").password_hash,
            "$strong$hash"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_reopen_that_fails_is_retried_and_reads_come_back() {
        let (store, failing, dir) = failing_store("closed");
        let alice = store.create("alice", "user", "$fake$hash").expect("create");
        let path = store.path().to_path_buf();
        let aside = dir.join("aside.redb");
        std::fs::rename(&path, &aside).expect("move the file away");
        failing.store(true, Ordering::SeqCst);
        assert!(store.revoke(alice.id).is_err());
        // The re-open found no file: closed, reads fail and say why.
        match store.get(alice.id) {
            Err(ReadError::Unavailable(Unavailable::Closed(why))) => {
                assert!(why.contains("No such file"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        assert!(store.health().read_failure.is_some());
        std::fs::rename(&aside, &path).expect("back");
        // Retried after the back-off (1 s), by the next operation.
        std::thread::sleep(FIRST_RETRY + Duration::from_millis(100));
        assert_eq!(
            store.get(alice.id).expect("open again").expect("alice").id,
            1
        );
        assert!(store.health().read_failure.is_none());
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The user store: users in one redb file (`users.redb` in the data dir).
//!
//! This is the only state latchkey keeps, so every write is one redb write
//! transaction committed with `Durability::Immediate`: once a method returns
//! `Ok`, the change survives a crash or power loss, and a crash mid-write leaves
//! the previous state. redb lets one writer in at a time, so two writers never
//! interleave (two creators of one name: exactly one wins), and readers see a
//! consistent snapshot without blocking the writer.
//!
//! # Layout
//! Three tables, all created when the store is opened:
//! - `users`: id (`u64`) → the encoded record (see [`User`] and `encode`).
//! - `user_names`: the lowercased name → id. Names are unique ignoring case.
//! - `meta`: `schema_version` ([`SCHEMA_VERSION`]) and `next_id`, the id
//!   counter.
//!
//! Invariants, kept by every write transaction and checked by
//! [`UserStore::check_consistency`]:
//! - every user has exactly one `user_names` entry, the lowercased name, and
//!   every `user_names` entry points to a user with that name;
//! - `next_id` is greater than every id ever handed out, so ids are never reused.
//!
//! # Schema versions
//! The schema version names the table layout and record format. Opening a
//! store with a newer version fails with [`StoreError::NewerSchema`]; an older
//! one is migrated in the transaction that opens it, one version at a time. A
//! file without a version (v0: a fresh file, or one written before the version
//! existed) is brought to v1 by rebuilding the name index and the counter from
//! the `users` table.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{
    ConcurrencyMode, Database, DatabaseError, Durability, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, TableDefinition, WriteTransaction,
};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 1;
/// The longest user name, in characters (names are ASCII).
pub const NAME_MAX: usize = 64;
/// The longest role name, in characters (roles are ASCII).
pub const ROLE_MAX: usize = 32;
/// The longest password hash accepted (a PHC string of argon2id is about 100 bytes).
pub const HASH_MAX: usize = 1024;
/// The built-in role of ordinary users.
pub const ROLE_USER: &str = "user";
/// The built-in role that may use the admin page.
pub const ROLE_ADMIN: &str = "admin";

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const NAMES: TableDefinition<&str, u64> = TableDefinition::new("user_names");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_SCHEMA: &str = "schema_version";
const META_NEXT_ID: &str = "next_id";

/// A user record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Stable numeric id, never reused.
    pub id: u64,
    /// Display and login name (case-insensitively unique).
    pub name: String,
    /// Role name (`user`, `admin`, or another lowercase name).
    pub role: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Token version; tokens with another `ver` are revoked.
    pub ver: u64,
    /// A locked user cannot log in and their tokens are revoked.
    pub locked: bool,
    /// Unix seconds.
    pub created: i64,
    /// Unix seconds of the last account change (role, password, lock, revoke).
    pub updated: i64,
    /// Unix seconds of the last successful login.
    pub last_login: Option<i64>,
}

/// The per-request view of a user: what the revocation check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Current token version.
    pub ver: u64,
    /// Locked flag.
    pub locked: bool,
    /// Current role (the store's role wins over the token's).
    pub role: String,
    /// Current name.
    pub name: String,
}

/// One worker's memo of [`UserStore::session_state`] answers, valid until the store's
/// next write; it spares the per-request read transaction of a logged-in request.
#[derive(Debug, Default)]
pub struct SessionCache {
    writes: u64,
    entries: HashMap<u64, Option<SessionState>>,
}

impl SessionCache {
    /// The most users remembered; the memo starts over beyond it.
    pub const CAPACITY: usize = 1024;

    /// An empty memo.
    pub fn new() -> SessionCache {
        SessionCache::default()
    }

    /// How many users are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no user is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Users in one redb file.
///
/// `Send + Sync`: share one `Arc<UserStore>` between threads. The file is
/// locked while the store is open; a second process gets [`StoreError::Busy`].
pub struct UserStore {
    db: Database,
    path: PathBuf,
    /// Bumped after every committed write: a [`SessionCache`] filled at an older
    /// value may be stale.
    writes: AtomicU64,
}

// The web server shares one store between its worker threads.
const _: () = {
    const fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<UserStore>();
};

impl UserStore {
    /// Opens or creates the store at `path`, creating the tables and migrating
    /// an older schema. The parent directory must exist.
    ///
    /// Fails with `Busy` when another process holds the file, `NewerSchema`
    /// when a newer latchkey wrote it, and `Open` when redb cannot open the file.
    pub fn open(path: &Path) -> Result<UserStore, StoreError> {
        // ExclusiveWriter (redb's default, stated here on purpose): the whole file is
        // locked, so a second process fails fast instead of sharing the writer.
        let db = Database::builder()
            .set_concurrency_mode(ConcurrencyMode::ExclusiveWriter)
            .create(path)
            .map_err(|e| match e {
                DatabaseError::DatabaseAlreadyOpen => StoreError::Busy(path.to_path_buf()),
                other => StoreError::Open {
                    path: path.to_path_buf(),
                    source: Box::new(other.into()),
                },
            })?;
        let store = UserStore {
            db,
            path: path.to_path_buf(),
            writes: AtomicU64::new(0),
        };
        store.prepare()?;
        Ok(store)
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A cheap health check for `/healthz`: one read transaction reading the schema version.
    pub fn check(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_read()?;
        let meta = tx.open_table(META)?;
        match meta.get(META_SCHEMA)? {
            Some(v) if v.value() == SCHEMA_VERSION => Ok(()),
            Some(v) => Err(StoreError::Corrupt(format!(
                "the schema version is {}",
                v.value()
            ))),
            None => Err(StoreError::Corrupt("the schema version is missing".into())),
        }
    }

    /// Whether [`check`](Self::check) passes.
    pub fn is_readable(&self) -> bool {
        self.check().is_ok()
    }

    /// Creates the tables and brings the schema to [`SCHEMA_VERSION`], in one transaction.
    fn prepare(&self) -> Result<(), StoreError> {
        let tx = self.write()?;
        let found = tx
            .open_table(META)?
            .get(META_SCHEMA)?
            .map(|v| v.value())
            .unwrap_or(0);
        if found > SCHEMA_VERSION {
            tx.abort()?;
            return Err(StoreError::NewerSchema {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        let mut version = found;
        while version < SCHEMA_VERSION {
            match version {
                0 => migrate_v0_to_v1(&tx)?,
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "no migration from schema version {version}"
                    )));
                }
            }
            version += 1;
        }
        // Create whichever tables are missing.
        tx.open_table(USERS)?;
        tx.open_table(NAMES)?;
        tx.open_table(META)?.insert(META_SCHEMA, SCHEMA_VERSION)?;
        tx.commit()?;
        Ok(())
    }

    /// Commits `tx` and then tells every [`SessionCache`] that its answers may be stale.
    fn commit(&self, tx: WriteTransaction) -> Result<(), StoreError> {
        tx.commit()?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// A write transaction that is durable when `commit` returns.
    fn write(&self) -> Result<WriteTransaction, StoreError> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::Immediate)?;
        Ok(tx)
    }

    /// Creates a user with `ver` 0; fails with `NameTaken` when the name exists
    /// (ignoring case and surrounding whitespace). The name is stored trimmed.
    pub fn create(&self, name: &str, role: &str, password_hash: &str) -> Result<User, StoreError> {
        let name = validate_name(name)?;
        validate_role(role)?;
        validate_hash(password_hash)?;
        let key = name.to_ascii_lowercase();
        let now = now();
        let tx = self.write()?;
        let user = {
            let mut names = tx.open_table(NAMES)?;
            if names.get(key.as_str())?.is_some() {
                return Err(StoreError::NameTaken(name));
            }
            let mut meta = tx.open_table(META)?;
            let id = meta
                .get(META_NEXT_ID)?
                .map(|v| v.value())
                .ok_or_else(|| StoreError::Corrupt("the id counter is missing".into()))?;
            let next = id
                .checked_add(1)
                .ok_or_else(|| StoreError::Corrupt("the id counter is exhausted".into()))?;
            let user = User {
                id,
                name,
                role: role.to_string(),
                password_hash: password_hash.to_string(),
                ver: 0,
                locked: false,
                created: now,
                updated: now,
                last_login: None,
            };
            tx.open_table(USERS)?.insert(id, encode(&user).as_slice())?;
            names.insert(key.as_str(), id)?;
            meta.insert(META_NEXT_ID, next)?;
            user
        };
        self.commit(tx)?;
        Ok(user)
    }

    /// A user by id.
    pub fn get(&self, id: u64) -> Result<Option<User>, StoreError> {
        let tx = self.db.begin_read()?;
        let users = tx.open_table(USERS)?;
        let user = users.get(id)?.map(|v| decode(id, v.value())).transpose()?;
        Ok(user)
    }

    /// A user by name (case-insensitive, trimmed). A name that could never be
    /// valid is simply not found.
    pub fn get_by_name(&self, name: &str) -> Result<Option<User>, StoreError> {
        let Ok(name) = validate_name(name) else {
            return Ok(None);
        };
        let tx = self.db.begin_read()?;
        let names = tx.open_table(NAMES)?;
        let Some(id) = names
            .get(name.to_ascii_lowercase().as_str())?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let users = tx.open_table(USERS)?;
        let user = users.get(id)?.map(|v| decode(id, v.value())).transpose()?;
        match user {
            Some(user) => Ok(Some(user)),
            None => Err(StoreError::Corrupt(format!(
                "the name {name} points to missing user {id}"
            ))),
        }
    }

    /// What the per-request check needs, read in one read transaction; the
    /// password hash is not decoded. This is the hot path of every request.
    pub fn session_state(&self, id: u64) -> Result<Option<SessionState>, StoreError> {
        let tx = self.db.begin_read()?;
        let users = tx.open_table(USERS)?;
        let state = users
            .get(id)?
            .map(|v| decode_session(id, v.value()))
            .transpose()?;
        Ok(state)
    }

    /// [`session_state`](Self::session_state) through `cache`: a read transaction only
    /// when this user's state is not cached or the store was written since it was.
    ///
    /// Sound because this process is the store's only writer (the file is locked while
    /// it is open) and every write bumps a counter after its commit: the counter is read
    /// before the transaction, so a state read while a write commits is never reused.
    pub fn session_state_cached<'c>(
        &self,
        id: u64,
        cache: &'c mut SessionCache,
    ) -> Result<Option<&'c SessionState>, StoreError> {
        let writes = self.writes.load(Ordering::SeqCst);
        if cache.writes != writes {
            cache.entries.clear();
            cache.writes = writes;
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

    /// Up to `limit` users with id > `after`, by id. Page with the last id seen.
    pub fn list(&self, after: u64, limit: usize) -> Result<Vec<User>, StoreError> {
        let Some(first) = after.checked_add(1) else {
            return Ok(Vec::new());
        };
        let tx = self.db.begin_read()?;
        let users = tx.open_table(USERS)?;
        let mut out = Vec::with_capacity(limit.min(1024));
        for entry in users.range(first..)?.take(limit) {
            let (id, record) = entry?;
            out.push(decode(id.value(), record.value())?);
        }
        Ok(out)
    }

    /// Number of users.
    pub fn count(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(USERS)?.len()?)
    }

    /// Sets the role. Does not bump `ver`: the server applies the store's role on
    /// the next request.
    pub fn set_role(&self, id: u64, role: &str) -> Result<User, StoreError> {
        validate_role(role)?;
        self.update(id, |user| {
            user.role = role.to_string();
            user.updated = now();
        })
    }

    /// Sets the password hash and bumps `ver`.
    pub fn set_password(&self, id: u64, password_hash: &str) -> Result<User, StoreError> {
        validate_hash(password_hash)?;
        self.update(id, |user| {
            user.password_hash = password_hash.to_string();
            user.ver = user.ver.saturating_add(1);
            user.updated = now();
        })
    }

    /// Locks (bumping `ver`, on every call) or unlocks (keeping `ver`).
    pub fn set_locked(&self, id: u64, locked: bool) -> Result<User, StoreError> {
        self.update(id, |user| {
            if locked {
                user.ver = user.ver.saturating_add(1);
            }
            user.locked = locked;
            user.updated = now();
        })
    }

    /// Bumps `ver`: every token issued before is revoked.
    pub fn revoke(&self, id: u64) -> Result<User, StoreError> {
        self.update(id, |user| {
            user.ver = user.ver.saturating_add(1);
            user.updated = now();
        })
    }

    /// Records a successful login: sets `last_login`, and replaces the hash when
    /// it was re-hashed at stronger parameters. Does not bump `ver` or `updated`.
    pub fn record_login(&self, id: u64, new_hash: Option<&str>) -> Result<User, StoreError> {
        if let Some(hash) = new_hash {
            validate_hash(hash)?;
        }
        self.update(id, |user| {
            user.last_login = Some(now());
            if let Some(hash) = new_hash {
                user.password_hash = hash.to_string();
            }
        })
    }

    /// Deletes a user and frees the name. The id is never handed out again.
    pub fn delete(&self, id: u64) -> Result<(), StoreError> {
        let tx = self.write()?;
        {
            let mut users = tx.open_table(USERS)?;
            let removed = users
                .remove(id)?
                .map(|v| decode(id, v.value()))
                .transpose()?;
            let Some(user) = removed else {
                return Err(StoreError::NotFound);
            };
            tx.open_table(NAMES)?
                .remove(user.name.to_ascii_lowercase().as_str())?;
        }
        self.commit(tx)?;
        Ok(())
    }

    /// Reads user `id`, applies `change`, writes it back: one write transaction.
    fn update(&self, id: u64, change: impl FnOnce(&mut User)) -> Result<User, StoreError> {
        let tx = self.write()?;
        let user = {
            let mut users = tx.open_table(USERS)?;
            let found = users.get(id)?.map(|v| decode(id, v.value())).transpose()?;
            let Some(mut user) = found else {
                return Err(StoreError::NotFound);
            };
            change(&mut user);
            users.insert(id, encode(&user).as_slice())?;
            user
        };
        self.commit(tx)?;
        Ok(user)
    }

    /// Reads the whole store and checks the invariants in the module docs:
    /// every record decodes, the name index and the users table agree both
    /// ways, and the id counter is above every id. Returns the number of users.
    /// A full scan: for tests, backups and operators, not for the request path.
    pub fn check_consistency(&self) -> Result<u64, StoreError> {
        let tx = self.db.begin_read()?;
        let users = tx.open_table(USERS)?;
        let names = tx.open_table(NAMES)?;
        let meta = tx.open_table(META)?;
        let corrupt = |what: String| Err(StoreError::Corrupt(what));
        let Some(next_id) = meta.get(META_NEXT_ID)?.map(|v| v.value()) else {
            return corrupt("the id counter is missing".into());
        };
        let mut count = 0;
        for entry in users.iter()? {
            let (id, record) = entry?;
            let user = decode(id.value(), record.value())?;
            if user.id >= next_id {
                return corrupt(format!(
                    "user {} is not below the id counter {next_id}",
                    user.id
                ));
            }
            let key = user.name.to_ascii_lowercase();
            match names.get(key.as_str())?.map(|v| v.value()) {
                Some(indexed) if indexed == user.id => {}
                other => {
                    return corrupt(format!(
                        "user {} ({}) has name index entry {other:?}",
                        user.id, user.name
                    ));
                }
            }
            count += 1;
        }
        for entry in names.iter()? {
            let (key, id) = entry?;
            let (key, id) = (key.value(), id.value());
            let name = users
                .get(id)?
                .map(|v| decode(id, v.value()))
                .transpose()?
                .map(|u| u.name);
            if name.map(|n| n.to_ascii_lowercase()).as_deref() != Some(key) {
                return corrupt(format!("the name index entry {key:?} points to user {id}"));
            }
        }
        if names.len()? != count {
            return corrupt("the name index and the users table differ in size".into());
        }
        Ok(count)
    }
}

/// Migration from v0 (no schema version) to v1: rebuild the name index and the
/// id counter from the `users` table, whose record format is the v1 one.
/// Also what makes a fresh file a v1 store.
fn migrate_v0_to_v1(tx: &WriteTransaction) -> Result<(), StoreError> {
    tx.delete_table(NAMES)?;
    let users = tx.open_table(USERS)?;
    let mut names = tx.open_table(NAMES)?;
    let mut next_id = 1;
    for entry in users.iter()? {
        let (id, record) = entry?;
        let user = decode(id.value(), record.value())?;
        let key = user.name.to_ascii_lowercase();
        if let Some(other) = names.insert(key.as_str(), user.id)? {
            return Err(StoreError::Corrupt(format!(
                "users {} and {} share the name {}",
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
    Ok(())
}

/// Unix seconds from the system clock (0 if the clock is before 1970).
fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether `c` may appear in a user name: ASCII letters, digits, `.`, `_`, `-`, `@`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')
}

/// Checks a user name and returns its canonical (trimmed) form.
///
/// Rules: after trimming whitespace, 1–64 characters, each an ASCII letter, a
/// digit, `.`, `_`, `-` or `@`, the first a letter or a digit. The set is safe
/// in HTTP headers (`Remote-User`), HTML, file names and command lines.
pub fn validate_name(name: &str) -> Result<String, StoreError> {
    let name = name.trim();
    let bad = |why: String| Err(StoreError::BadName(why));
    if name.is_empty() {
        return bad("the name is empty".into());
    }
    if let Some(c) = name.chars().find(|&c| !is_name_char(c)) {
        return bad(format!(
            "{c:?} is not allowed; use ASCII letters, digits, '.', '_', '-' and '@'"
        ));
    }
    if name.len() > NAME_MAX {
        return bad(format!(
            "the name has {} characters; use at most {NAME_MAX}",
            name.len()
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("the name must start with a letter or a digit".into());
    }
    Ok(name.to_string())
}

/// Checks a role name: 1–32 characters, each a lowercase ASCII letter, a digit,
/// `.`, `_`, `-` or `@`, the first a letter or a digit. Not trimmed.
pub fn validate_role(role: &str) -> Result<(), StoreError> {
    let bad = |why: String| Err(StoreError::BadRole(why));
    if role.is_empty() {
        return bad("the role is empty".into());
    }
    if let Some(c) = role
        .chars()
        .find(|&c| c.is_ascii_uppercase() || !is_name_char(c))
    {
        return bad(format!(
            "{c:?} is not allowed; use lowercase ASCII letters, digits, '.', '_', '-' and '@'"
        ));
    }
    if role.len() > ROLE_MAX {
        return bad(format!(
            "the role has {} characters; use at most {ROLE_MAX}",
            role.len()
        ));
    }
    if !role.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return bad("the role must start with a letter or a digit".into());
    }
    Ok(())
}

/// Checks a password hash before storing it: 1–1024 bytes. Its contents are the
/// password module's business.
fn validate_hash(hash: &str) -> Result<(), StoreError> {
    if hash.is_empty() {
        Err(StoreError::BadHash("the password hash is empty".into()))
    } else if hash.len() > HASH_MAX {
        Err(StoreError::BadHash(format!(
            "the password hash is longer than {HASH_MAX} bytes"
        )))
    } else {
        Ok(())
    }
}

/// The record format byte written by this build.
const RECORD_FORMAT: u8 = 1;
const FLAG_LOCKED: u8 = 1;
const FLAG_LAST_LOGIN: u8 = 2;
const HEADER_LEN: usize = 34;

/// Encodes a user record (the id is the table key, not part of the record).
///
/// Format 1, integers little-endian:
/// ```text
/// [0]      format = 1
/// [1..9]   ver        u64
/// [9]      flags      bit 0 locked, bit 1 last_login present, others 0
/// [10..18] created    i64
/// [18..26] updated    i64
/// [26..34] last_login i64 (0 when absent)
/// then name, role, password_hash: each a u16 byte length + UTF-8 bytes; nothing after.
/// ```
/// A new field means a new format byte and a schema migration that rewrites
/// every record; the decoder refuses formats it does not know.
fn encode(user: &User) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        HEADER_LEN + 6 + user.name.len() + user.role.len() + user.password_hash.len(),
    );
    out.push(RECORD_FORMAT);
    out.extend_from_slice(&user.ver.to_le_bytes());
    let mut flags = 0;
    if user.locked {
        flags |= FLAG_LOCKED;
    }
    if user.last_login.is_some() {
        flags |= FLAG_LAST_LOGIN;
    }
    out.push(flags);
    out.extend_from_slice(&user.created.to_le_bytes());
    out.extend_from_slice(&user.updated.to_le_bytes());
    out.extend_from_slice(&user.last_login.unwrap_or(0).to_le_bytes());
    for s in [&user.name, &user.role, &user.password_hash] {
        // Lengths are bounded by NAME_MAX, ROLE_MAX and HASH_MAX, far below u16::MAX.
        let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
    }
    out
}

/// A cursor over a record that fails, never panics, on short or bad input.
struct Reader<'a> {
    id: u64,
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> StoreError {
        StoreError::Corrupt(format!(
            "the record of user {} is unreadable: {what}",
            self.id
        ))
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], StoreError> {
        let Some((head, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(self.err("it ends early"));
        };
        self.rest = rest;
        Ok(*head)
    }

    fn str(&mut self) -> Result<&'a str, StoreError> {
        let len = usize::from(u16::from_le_bytes(self.bytes()?));
        if self.rest.len() < len {
            return Err(self.err("it ends early"));
        }
        let (head, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(head).map_err(|_| self.err("a text field is not UTF-8"))
    }

    /// The fixed fields: (ver, locked, created, updated, last_login).
    #[allow(clippy::type_complexity)]
    fn header(&mut self) -> Result<(u64, bool, i64, i64, Option<i64>), StoreError> {
        let [format] = self.bytes()?;
        if format != RECORD_FORMAT {
            return Err(self.err(&format!("unknown record format {format}")));
        }
        let ver = u64::from_le_bytes(self.bytes()?);
        let [flags] = self.bytes()?;
        if flags & !(FLAG_LOCKED | FLAG_LAST_LOGIN) != 0 {
            return Err(self.err(&format!("unknown flags {flags:#04x}")));
        }
        let created = i64::from_le_bytes(self.bytes()?);
        let updated = i64::from_le_bytes(self.bytes()?);
        let last_login = i64::from_le_bytes(self.bytes()?);
        let last_login = (flags & FLAG_LAST_LOGIN != 0).then_some(last_login);
        Ok((ver, flags & FLAG_LOCKED != 0, created, updated, last_login))
    }
}

/// Decodes a whole record; garbage is an error, never a panic.
fn decode(id: u64, record: &[u8]) -> Result<User, StoreError> {
    let mut r = Reader { id, rest: record };
    let (ver, locked, created, updated, last_login) = r.header()?;
    let name = r.str()?.to_string();
    let role = r.str()?.to_string();
    let password_hash = r.str()?.to_string();
    if !r.rest.is_empty() {
        return Err(r.err("it has bytes after the last field"));
    }
    Ok(User {
        id,
        name,
        role,
        password_hash,
        ver,
        locked,
        created,
        updated,
        last_login,
    })
}

/// Decodes only what a request needs, skipping the hash.
fn decode_session(id: u64, record: &[u8]) -> Result<SessionState, StoreError> {
    let mut r = Reader { id, rest: record };
    let (ver, locked, ..) = r.header()?;
    let name = r.str()?.to_string();
    let role = r.str()?.to_string();
    Ok(SessionState {
        ver,
        locked,
        role,
        name,
    })
}

/// Why a store operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// The name is taken (compared ignoring case); holds the name asked for.
    NameTaken(String),
    /// No such user.
    NotFound,
    /// The user name breaks a rule; holds which one.
    BadName(String),
    /// The role name breaks a rule; holds which one.
    BadRole(String),
    /// The password hash is empty or too long.
    BadHash(String),
    /// Another process (a running server?) holds the store file.
    Busy(PathBuf),
    /// The file was written by a newer latchkey with a schema this build does not know.
    NewerSchema {
        /// The schema version in the file.
        found: u64,
        /// The newest version this build understands ([`SCHEMA_VERSION`]).
        supported: u64,
    },
    /// A record or the indexes are damaged (never expected; restore a backup).
    Corrupt(String),
    /// The file could not be opened (missing directory, permissions, not a redb file...).
    Open {
        /// The store file.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// Any other redb failure (I/O error, full disk...). Boxed: redb's error is large.
    Database(Box<redb::Error>),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::NameTaken(name) => {
                write!(
                    f,
                    "the name {name} is taken (names are compared ignoring case)"
                )
            }
            StoreError::NotFound => write!(f, "no such user"),
            StoreError::BadName(why) => write!(f, "bad user name: {why}"),
            StoreError::BadRole(why) => write!(f, "bad role: {why}"),
            StoreError::BadHash(why) => write!(f, "bad password hash: {why}"),
            StoreError::Busy(path) => write!(
                f,
                "the user store {} is in use by another process (a running latchkey server?); \
                 stop it or use the admin page",
                path.display()
            ),
            StoreError::NewerSchema { found, supported } => write!(
                f,
                "the user store has schema version {found} but this latchkey understands \
                 versions up to {supported}: it was written by a newer latchkey; run that \
                 version, or restore a backup made before the upgrade"
            ),
            StoreError::Corrupt(what) => {
                write!(f, "the user store is damaged: {what}; restore a backup")
            }
            StoreError::Open { path, source } => {
                write!(f, "cannot open the user store {}: {source}", path.display())
            }
            StoreError::Database(e) => write!(f, "user store error: {e}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Open { source, .. } => Some(source.as_ref()),
            StoreError::Database(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                StoreError::Database(Box::new(e.into()))
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn user() -> User {
        User {
            id: 7,
            name: "Alice".into(),
            role: "admin".into(),
            password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdA$aGFzaA".into(),
            ver: 3,
            locked: true,
            created: 1_700_000_000,
            updated: 1_700_000_500,
            last_login: Some(1_700_001_000),
        }
    }

    #[test]
    fn record_round_trips() {
        let u = user();
        assert_eq!(decode(7, &encode(&u)).expect("decode"), u);
        let u = User {
            last_login: None,
            locked: false,
            ..user()
        };
        assert_eq!(decode(7, &encode(&u)).expect("decode"), u);
        let s = decode_session(7, &encode(&u)).expect("decode");
        assert_eq!(
            s,
            SessionState {
                ver: 3,
                locked: false,
                role: "admin".into(),
                name: "Alice".into()
            }
        );
    }

    #[test]
    fn bad_records_are_errors() {
        let good = encode(&user());
        for len in 0..good.len() {
            assert!(decode(7, &good[..len]).is_err(), "truncated to {len}");
        }
        let mut other_format = good.clone();
        other_format[0] = 2;
        let err = decode(7, &other_format).expect_err("format 2");
        assert!(err.to_string().contains("unknown record format 2"), "{err}");
        let mut bad_flags = good.clone();
        bad_flags[9] |= 0x80;
        assert!(decode(7, &bad_flags).is_err());
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(decode(7, &trailing).is_err());
        let mut not_utf8 = good;
        not_utf8[HEADER_LEN + 2] = 0xff;
        assert!(decode(7, &not_utf8).is_err());
    }

    proptest! {
        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(1, &bytes);
            let _ = decode_session(1, &bytes);
        }

        #[test]
        fn any_valid_user_round_trips(
            ver in any::<u64>(), locked in any::<bool>(), created in any::<i64>(),
            updated in any::<i64>(), last_login in any::<Option<i64>>(),
            name in "[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", role in "[a-z0-9][a-z0-9._@-]{0,31}",
            hash in "[ -~]{1,300}",
        ) {
            let u = User { id: 9, name, role, password_hash: hash, ver, locked, created, updated, last_login };
            prop_assert_eq!(decode(9, &encode(&u)).expect("decode"), u);
        }
    }

    #[test]
    fn error_stays_small() {
        assert!(
            std::mem::size_of::<StoreError>() <= 56,
            "{}",
            std::mem::size_of::<StoreError>()
        );
    }
}

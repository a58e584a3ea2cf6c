//! The user store: the API every backend offers, its errors, validation and the record
//! codec; the embedded backend keeps users in one redb file (`users.redb` in the data
//! dir), see [`UserStore`].
//!
//! This is the only state latchkey keeps, so two promises hold whatever happens to the
//! disk or the file:
//! - **an acknowledged write is never lost**: every write is one transaction committed
//!   durably (`Ok` means it survives a crash or a power cut); a store file is created only
//!   where no file exists (atomically, mode 0600) and an existing file is never
//!   overwritten: one that is not a sound store is refused untouched
//!   ([`OpenError::Damaged`]);
//! - **a fault never leaves a lasting outage**: after a failed commit (a full disk, an
//!   I/O error) the store re-opens its file by itself and the next write succeeds once the
//!   cause is gone; reads go on meanwhile; one damaged record makes only that user
//!   unreadable ([`DamagedRecord`]); a panic inside redb is an error, not a crash.
//!
//! # Module map
//! - `error`: one error enum per operation ([`OpenError`], [`ReadError`],
//!   [`CreateError`], [`UpdateError`], [`BackupError`], [`RestoreError`]) and the
//!   umbrella [`StoreError`];
//! - `record`: the fixed, versioned record layout (format 2);
//! - `embedded`: the redb backend, [`UserStore`];
//! - `overlay`: a storage backend that reads the file and keeps writes in memory, so a
//!   store can be checked or inspected without any chance of changing it;
//! - `guard`: calls into redb whose panics become errors;
//! - `files`: creating files privately and putting them in place atomically.
//!
//! # Layout
//! Four tables, created when the store is opened:
//! - `users`: id (`u64`) → the encoded record (see [`User`] and the `record` module);
//! - `user_names`: the lowercased name → id. Names are unique ignoring case;
//! - `meta` (`&str` → `u64`): `schema_version` ([`SCHEMA_VERSION`]) and `next_id`, the
//!   id counter (also `write_probe`, the time of the last write made only to learn
//!   whether writing works again);
//! - `meta_text` (`&str` → `&str`): `served_kid`, the `kid` of the primary signing key
//!   the store was last served with (see `UserStore::served_kid`).
//!
//! Invariants, kept by every write transaction and checked by [`UserStore::scan`]:
//! - every user has exactly one `user_names` entry, the lowercased name, and every
//!   `user_names` entry points to a user with that name;
//! - `next_id` is greater than every id ever handed out, so ids are never reused.
//!
//! # Schema versions
//! The schema version names the table layout and record format. Opening a store with a
//! newer version fails with [`OpenError::NewerSchema`]; an older one is migrated in one
//! transaction when it is opened, one version at a time:
//! - v0 (no version: a fresh file, or one written before versions existed) → v1:
//!   rebuild the name index and the id counter from the `users` table;
//! - v1 → v2: rewrite every record from format 1 to format 2 (the second-factor fields
//!   and `must_change_password`), and create `meta_text`. A record that does not decode
//!   is left as it is: it stays a damaged record, reported, not a reason to refuse the
//!   store.

mod copy;
mod edit;
mod embedded;
mod error;
mod facade;
mod files;
mod guard;
mod logins;
mod overlay;
#[cfg(feature = "postgres")]
pub mod pool;
#[cfg(feature = "postgres")]
pub mod postgres;
mod record;

use std::collections::HashMap;
use std::fmt;

pub use copy::{Copied, copy};
pub use embedded::restore;
pub use facade::{Location, UserStore};

/// Whether `text` names a PostgreSQL store (`postgres://` or `postgresql://`).
pub fn is_postgres_url(text: &str) -> bool {
    let lower = text.trim_start().to_ascii_lowercase();
    lower.starts_with("postgres://") || lower.starts_with("postgresql://")
}

/// `url` with its password replaced by `***`: the only form of a store URL that may be
/// shown or logged. Works on any text (it never fails), so it is safe on bad input too.
pub fn redact(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest_start = scheme_end + 3;
    let rest = &url[rest_start..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let mut out = String::with_capacity(url.len());
    out.push_str(&url[..rest_start]);
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    out.push_str(&userinfo[..colon]);
                    out.push_str(":***");
                }
                None => out.push_str(userinfo),
            }
            out.push_str(&authority[at..]);
        }
        None => out.push_str(authority),
    }
    let tail = &rest[authority_end..];
    match tail.split_once('?') {
        Some((path, query)) => {
            out.push_str(path);
            out.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            out.push_str(&params.join("&"));
        }
        None => out.push_str(tail),
    }
    out
}

/// Writes a new file at `dest` (mode 0600) with what `fill` writes, under a temporary
/// name first, then put in place without ever replacing anything there: a backup copy
/// received from a running server is never half-written under its name.
pub fn write_new_file(
    dest: &std::path::Path,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let temp = files::temp_beside(dest, "partial");
    let _ = std::fs::remove_file(&temp);
    let result = files::create_private(&temp)
        .and_then(|mut file| fill(&mut file))
        .and_then(|()| files::place_new(&temp, dest));
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}
pub use error::{
    BackupError, CreateError, DamagedRecord, Invalid, OpenError, ReadError, RestoreError, Restored,
    StoreError, Unavailable, UpdateError,
};

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: u64 = 2;
/// The longest user name, in characters (names are ASCII).
pub const NAME_MAX: usize = 64;
/// The longest role name, in characters (roles are ASCII).
pub const ROLE_MAX: usize = 32;
/// The longest password hash accepted (a PHC string of argon2id is about 100 bytes).
pub const HASH_MAX: usize = 1024;
/// The shortest TOTP secret kept, bytes (RFC 4226 §4 asks for at least 128 bits; 80 is
/// what some authenticator apps still hand out).
pub const TOTP_SECRET_MIN: usize = 10;
/// The longest TOTP secret kept, bytes (SHA-512's block-sized key).
pub const TOTP_SECRET_MAX: usize = 64;
/// The most recovery codes kept per user.
pub const RECOVERY_CODES_MAX: usize = 16;
/// The built-in role of ordinary users.
pub const ROLE_USER: &str = "user";
/// The built-in role that may use the admin page.
pub const ROLE_ADMIN: &str = "admin";

/// A user record.
#[derive(Clone, PartialEq, Eq)]
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
    /// Set by an administrator: the user must change the password at the next login
    /// before anything else.
    pub must_change_password: bool,
    /// The confirmed second factor, when the user has one.
    pub totp: Option<TotpFactor>,
    /// An enrolment secret shown to the user but not confirmed with a code yet
    /// ([`TOTP_SECRET_MIN`]–[`TOTP_SECRET_MAX`] bytes).
    pub totp_pending: Option<Vec<u8>>,
}

impl User {
    /// A new user's record: `ver` 0, unlocked, no login yet, no second factor.
    pub fn new(id: u64, name: String, role: String, password_hash: String, now: i64) -> User {
        User {
            id,
            name,
            role,
            password_hash,
            ver: 0,
            locked: false,
            created: now,
            updated: now,
            last_login: None,
            must_change_password: false,
            totp: None,
            totp_pending: None,
        }
    }
}

impl fmt::Debug for User {
    /// Everything but the password hash and the second factor's secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("ver", &self.ver)
            .field("locked", &self.locked)
            .field("created", &self.created)
            .field("updated", &self.updated)
            .field("last_login", &self.last_login)
            .field("must_change_password", &self.must_change_password)
            .field("totp", &self.totp)
            .field("totp_pending", &self.totp_pending.as_ref().map(|_| "…"))
            .finish_non_exhaustive()
    }
}

/// A confirmed TOTP second factor (RFC 6238).
#[derive(Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// The shared secret, [`TOTP_SECRET_MIN`]–[`TOTP_SECRET_MAX`] bytes.
    pub secret: Vec<u8>,
    /// The last time step (Unix seconds / 30) whose code was accepted: a code of this
    /// step or an earlier one is a replay and refused.
    pub last_step: u64,
    /// SHA-256 hashes of the unused single-use recovery codes, at most
    /// [`RECOVERY_CODES_MAX`].
    pub recovery: Vec<[u8; 32]>,
}

impl fmt::Debug for TotpFactor {
    /// The step and the number of recovery codes, never the secret or the hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TotpFactor")
            .field("last_step", &self.last_step)
            .field("recovery_codes", &self.recovery.len())
            .finish_non_exhaustive()
    }
}

/// The per-request view of a user: what the revocation check needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionState {
    /// Current token version.
    pub ver: u64,
    /// Locked flag.
    pub locked: bool,
    /// The user must change the password before anything else.
    pub must_change_password: bool,
    /// Current role (the store's role wins over the token's).
    pub role: String,
    /// Current name.
    pub name: String,
    /// Whether the user has a confirmed second factor (the policy gate sends users who
    /// must have one and do not to enrolment).
    pub totp: bool,
}

/// One worker's memo of [`UserStore::session_state`] answers, valid until the store's
/// next write; it spares the per-request read transaction of a logged-in request.
///
/// It is tied to the store's generation counter, which moves after every commit that may
/// change a session (successful or not: a failed commit may still have reached the
/// disk) and after every re-open, so a state read before a failed write or a re-open is
/// never trusted afterwards.
#[derive(Debug, Default)]
pub struct SessionCache {
    generation: u64,
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

/// One row of a listing: a user, or the marker of a record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A readable user.
    User(User),
    /// A damaged record: the user exists but cannot be read.
    Damaged(DamagedRecord),
}

impl Entry {
    /// The user id of the row.
    pub fn id(&self) -> u64 {
        match self {
            Entry::User(u) => u.id,
            Entry::Damaged(d) => d.id,
        }
    }
}

/// One finding of a full scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Damage {
    /// A record that cannot be read (or that the name index points to but is missing).
    Record(DamagedRecord),
    /// A broken invariant that belongs to no one record (the id counter, a name index
    /// entry pointing to another user's record); holds what.
    Index(String),
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Record(d) => write!(f, "the record of user {} is unreadable ({})", d.id, d.why),
            Damage::Index(what) => f.write_str(what),
        }
    }
}

/// What a full scan ([`UserStore::scan`]) found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// Readable users.
    pub users: u64,
    /// Everything that is wrong, by user id then index findings; empty for a sound store.
    pub damage: Vec<Damage>,
}

impl Scan {
    /// Whether nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.damage.is_empty()
    }

    /// The number of readable users, or [`StoreError::Unsound`] naming every finding.
    pub fn verdict(self) -> Result<u64, StoreError> {
        if self.is_sound() {
            Ok(self.users)
        } else {
            Err(StoreError::Unsound(Box::new(self)))
        }
    }
}

/// Since when and why writes fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    /// What the storage said (e.g. "No space left on device").
    pub reason: String,
    /// Unix seconds of the first failure of this episode.
    pub since: i64,
}

/// The store's health, as `/healthz`, `/metrics`, `serve --check` and `user list` report
/// it. One value, so the four never contradict each other:
///
/// | condition | `serving()` | `/healthz` |
/// |---|---|---|
/// | reads fail (closed after an error, I/O) | false | 503, the reason |
/// | writes fail (disk full, I/O), reads work | false | 503, the reason and since when |
/// | damaged records, otherwise fine | true | 200, naming every damaged record |
/// | sound | true | 200 `ok` |
///
/// A write failure ends once a write succeeded and none failed for 5 s (on a nearly full
/// disk small writes succeed between failing larger ones; the health does not flap).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// Why the last read failed, while reads fail.
    pub read_failure: Option<String>,
    /// While writes fail.
    pub write_failure: Option<WriteFailure>,
    /// Damage known from the last full scan and from reads since (a deleted record's
    /// damage is forgotten).
    pub damage: Vec<Damage>,
    /// While another file stands where the store's file was (see
    /// [`UserStore::keep_file`]): what to do.
    pub file_fault: Option<String>,
    /// Logged-out logins on the deny list, expired ones not yet swept included.
    pub revoked_tokens: usize,
}

impl Health {
    /// Whether the store can be read and written: what a load balancer needs to know.
    /// Damaged records do not make it false: every other user is served.
    pub fn serving(&self) -> bool {
        self.read_failure.is_none() && self.write_failure.is_none() && self.file_fault.is_none()
    }

    /// One line for `/healthz` and the logs: `ok`, or what is wrong.
    pub fn describe(&self) -> String {
        let mut out = if let Some(why) = &self.file_fault {
            format!("unavailable: {why}")
        } else if let Some(why) = &self.read_failure {
            format!("unavailable: the user store cannot be read: {why}")
        } else if let Some(w) = &self.write_failure {
            format!(
                "unavailable: the user store cannot be written (since {}): {}; reads and \
                 logins still work, writes work again by themselves once the cause is gone",
                crate::log::timestamp(w.since),
                w.reason
            )
        } else {
            "ok".to_string()
        };
        if !self.damage.is_empty() {
            out.push_str(if self.serving() { ", but" } else { "; also" });
            out.push_str(&format!(
                " the user store is damaged ({} finding{}): ",
                self.damage.len(),
                if self.damage.len() == 1 { "" } else { "s" }
            ));
            let findings: Vec<String> = self.damage.iter().map(Damage::to_string).collect();
            out.push_str(&findings.join("; "));
            out.push_str(
                "; the other users are served; restore a backup or remove the damaged users",
            );
        }
        out
    }
}

/// A change of the store's health, reported once when it happens (not per request) to
/// the observer set with [`UserStore::set_observer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// Reads started failing; holds why.
    ReadsFailing(String),
    /// Reads work again.
    ReadsWork,
    /// Writes started failing; holds why.
    WritesFailing(String),
    /// Writes work again.
    WritesWork,
    /// The file was re-opened after an error.
    Reopened,
    /// Re-opening failed for the first time in a row; holds why (retried with back-off;
    /// reported again only after a re-open succeeded).
    ReopenFailed(String),
    /// Damage seen for the first time.
    Damaged(Damage),
    /// The PostgreSQL store's notification connection is down (other instances' changes
    /// are not heard: every request reads the database until it is back); holds why.
    NotificationsFailing(String),
    /// The notification connection is up again.
    NotificationsWork,
    /// The store's file had been deleted under the server and was put back from the
    /// server's open copy; holds the path.
    FileRestored(String),
    /// Another file was put where the store's file was; holds what to do.
    FileReplaced(String),
}

/// The most logged-out logins the deny list keeps for one user at a time. Logging out
/// past it ends every session of that user instead (their `ver` is bumped, and their
/// entries go): the list is bounded by the number of users, whatever one of them does.
pub const MAX_REVOKED_PER_USER: usize = 32;

/// How often, at most, a logout also sweeps expired entries out of the whole deny list,
/// seconds: the sweep reads the whole table, so it is not done on every logout.
pub const REVOKED_SWEEP_INTERVAL: i64 = 60;

/// What [`UserStore::revoke_token`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// The login is on the deny list until it could no longer be valid.
    Listed,
    /// The user already had [`MAX_REVOKED_PER_USER`] logged-out logins listed: every
    /// session of theirs was ended instead.
    AllSessionsEnded,
}

/// Everything a store holds, read at one moment: what `latchkey store copy` moves
/// between backends and what a PostgreSQL store's backup is written from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Every readable user, by id.
    pub users: Vec<User>,
    /// The records that cannot be read (not copied).
    pub damaged: Vec<DamagedRecord>,
    /// The next id to hand out (above every id ever handed out).
    pub next_id: u64,
    /// The `kid` of the key the store was last served with.
    pub served_kid: Option<String>,
    /// Tokens logged out of (token id, `exp`), kept until they expire.
    pub revoked: Vec<(String, i64)>,
}

/// What [`UserStore::backup_to`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupInfo {
    /// Readable users in the copy.
    pub users: u64,
    /// Damaged records copied as they are.
    pub damaged: u64,
    /// The copy's size, bytes.
    pub bytes: u64,
}

/// Whether `c` may appear in a user name: ASCII letters, digits, `.`, `_`, `-`, `@`.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')
}

/// Checks a user name and returns its canonical (trimmed) form.
///
/// Rules: after trimming whitespace, 1–64 characters, each an ASCII letter, a digit,
/// `.`, `_`, `-` or `@`, the first a letter or a digit. The set is safe in HTTP headers
/// (`Remote-User`), HTML, file names and command lines.
pub fn validate_name(name: &str) -> Result<String, Invalid> {
    let name = name.trim();
    let bad = |why: String| Err(Invalid::Name(why));
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

/// Checks a role name: 1–32 characters, each a lowercase ASCII letter, a digit, `.`,
/// `_`, `-` or `@`, the first a letter or a digit. Not trimmed.
pub fn validate_role(role: &str) -> Result<(), Invalid> {
    let bad = |why: String| Err(Invalid::Role(why));
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

/// Checks a password hash before storing it: 1–1024 bytes. Its contents are the password
/// module's business.
fn validate_hash(hash: &str) -> Result<(), Invalid> {
    if hash.is_empty() {
        Err(Invalid::Hash("the password hash is empty".into()))
    } else if hash.len() > HASH_MAX {
        Err(Invalid::Hash(format!(
            "the password hash is longer than {HASH_MAX} bytes"
        )))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_lines_name_the_condition() {
        assert_eq!(Health::default().describe(), "ok");
        let damaged = Health {
            damage: vec![Damage::Record(DamagedRecord {
                id: 2,
                why: "unknown record format 9".into(),
            })],
            ..Health::default()
        };
        assert!(damaged.serving());
        assert!(
            damaged
                .describe()
                .starts_with("ok, but the user store is damaged (1 finding): the record of user 2")
        );
        let failing = Health {
            write_failure: Some(WriteFailure {
                reason: "No space left on device (os error 28)".into(),
                since: 0,
            }),
            ..damaged
        };
        assert!(!failing.serving());
        let line = failing.describe();
        assert!(line.starts_with("unavailable: the user store cannot be written (since 1970-01-01T00:00:00Z): No space left"), "{line}");
        assert!(line.contains("; also the user store is damaged"), "{line}");
    }

    #[test]
    fn debug_never_shows_hashes_or_secrets() {
        let user = User {
            totp: Some(TotpFactor {
                secret: b"0123456789abcdef".to_vec(),
                last_step: 1,
                recovery: vec![[0x41; 32]],
            }),
            totp_pending: Some(b"fedcba9876543210".to_vec()),
            ..User::new(
                1,
                "a".into(),
                "user".into(),
                "$argon2id$secret-hash".into(),
                0,
            )
        };
        let text = format!("{user:?}");
        assert!(!text.contains("secret-hash") && !text.contains("0123") && !text.contains("fedc"));
        assert!(!text.contains("AAAA") && !text.contains("65, 65"));
    }
}

//! Why a store operation failed: one error enum per operation, and [`StoreError`], the
//! umbrella each of them converts into (as redb's own `error.rs` does).
//!
//! The split keeps two kinds of failure apart all the way to the caller:
//! - the request's fault, which the caller answers itself: a name taken, a rule broken
//!   ([`Invalid`]), no such user;
//! - the store's condition, which the caller reports: the file is damaged
//!   ([`OpenError::Damaged`]), one record is damaged ([`DamagedRecord`]), or the storage
//!   cannot be used right now ([`Unavailable`]: a full disk, an I/O error, a handle that
//!   never writes).
//!
//! Every `Display` message says what to do. Large redb errors are boxed so that a
//! `Result` stays small on the request path.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use super::{Damage, Scan};

/// A user name, role, password hash or second-factor field breaks a rule; holds which.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invalid {
    /// The user name (see [`validate_name`](super::validate_name)).
    Name(String),
    /// The role (see [`validate_role`](super::validate_role)).
    Role(String),
    /// The password hash: empty, or longer than [`HASH_MAX`](super::HASH_MAX) bytes.
    Hash(String),
    /// A second-factor field: a secret outside 10–64 bytes, more than 16 recovery codes.
    Totp(String),
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Name(why) => write!(f, "bad user name: {why}"),
            Invalid::Role(why) => write!(f, "bad role: {why}"),
            Invalid::Hash(why) => write!(f, "bad password hash: {why}"),
            Invalid::Totp(why) => write!(f, "bad second factor: {why}"),
        }
    }
}

impl std::error::Error for Invalid {}

/// One user's record cannot be read: its bytes do not decode, or the name index points
/// to a record that is not there. The other users are unaffected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedRecord {
    /// The user id (the `users` table key).
    pub id: u64,
    /// What is wrong with it, for the operator (never the record's contents).
    pub why: String,
}

impl fmt::Display for DamagedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the user store is damaged: the record of user {} is unreadable ({}); restore a \
             backup with `latchkey restore FILE`, or remove that user (`latchkey user remove`, \
             or Delete on the admin page)",
            self.id, self.why
        )
    }
}

impl std::error::Error for DamagedRecord {}

/// The store cannot do this right now, for a reason that is not the request's.
///
/// While writes fail the store keeps answering reads; after a failed commit it re-opens
/// the file by itself (redb refuses every later operation on a handle that saw an I/O
/// error), so these conditions end without a restart once their cause is gone.
#[derive(Debug)]
#[non_exhaustive]
pub enum Unavailable {
    /// Reading failed in the storage layer (an I/O error).
    Read(Box<redb::Error>),
    /// Writing failed in the storage layer (a full disk, an I/O error). Nothing was changed.
    Write(Box<redb::Error>),
    /// redb stopped on an internal check: part of the file is damaged. Holds its message.
    Panicked(String),
    /// The file was closed after an error and opening it again failed (retried with
    /// back-off); holds why.
    Closed(String),
    /// This handle only inspects the store (`serve --check`, `user list`, backups): it
    /// never writes to the file.
    ReadOnly,
    /// The PostgreSQL store cannot be reached or refused the statement (the server is
    /// down, a timeout, every connection busy); holds why, with the URL redacted.
    /// Nothing was changed; latchkey reconnects by itself.
    Database(String),
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::Read(e) => write!(f, "the user store cannot be read: {e}"),
            Unavailable::Write(e) => write!(
                f,
                "the user store cannot be written: {e}; nothing was changed, and writing \
                 works again by itself once the cause (a full disk?) is gone"
            ),
            Unavailable::Panicked(what) => write!(
                f,
                "the user store is damaged: redb stopped on an internal check ({what}); \
                 restore a backup with `latchkey restore FILE`"
            ),
            Unavailable::Closed(why) => write!(
                f,
                "the user store is closed after an error and could not be opened again \
                 yet ({why}); it keeps retrying by itself"
            ),
            Unavailable::ReadOnly => write!(
                f,
                "this handle only inspects the user store and never writes to it"
            ),
            Unavailable::Database(why) => write!(
                f,
                "the user store (PostgreSQL) cannot be used right now: {why}; nothing was \
                 changed, and latchkey reconnects by itself once the database is back"
            ),
        }
    }
}

impl std::error::Error for Unavailable {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Unavailable::Read(e) | Unavailable::Write(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Why a store could not be opened, created or inspected.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// There is no store file (only an explicit open-existing refuses this; `open`
    /// creates one).
    Missing(PathBuf),
    /// Another process (a running server?) holds the store file.
    Busy(PathBuf),
    /// The file is not a sound store: empty, truncated, not a redb file, a page whose
    /// checksum fails, redb stopped on it. Nothing was written to it.
    Damaged {
        /// The store file.
        path: PathBuf,
        /// What is wrong, for the operator.
        what: String,
    },
    /// A newer latchkey wrote the file with a schema this build does not know.
    NewerSchema {
        /// The schema version in the file.
        found: u64,
        /// The newest version this build understands ([`SCHEMA_VERSION`](super::SCHEMA_VERSION)).
        supported: u64,
    },
    /// The file could not be opened or created (missing directory, permissions...).
    File {
        /// The store file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// redb failed while opening, migrating or creating the tables (I/O, full disk).
    Storage {
        /// The store file.
        path: PathBuf,
        /// What redb said. Boxed: redb's error is large.
        source: Box<redb::Error>,
    },
    /// The PostgreSQL store could not be reached, set up or migrated, or its URL cannot
    /// be used.
    Database {
        /// The store URL, its password replaced by `***`.
        target: String,
        /// What went wrong, for the operator.
        what: String,
    },
    /// `store` names a PostgreSQL database but this latchkey was built without the
    /// `postgres` feature.
    NoPostgres(String),
}

impl OpenError {
    pub(crate) fn damaged(path: &Path, what: impl Into<String>) -> OpenError {
        OpenError::Damaged {
            path: path.to_path_buf(),
            what: what.into(),
        }
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Missing(path) => write!(f, "there is no user store at {}", path.display()),
            OpenError::Busy(path) => write!(
                f,
                "the user store {} is in use by another process (a running latchkey server?); \
                 stop it or use the admin page",
                path.display()
            ),
            OpenError::Damaged { path, what } => {
                let dir = path
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                write!(
                    f,
                    "the user store is damaged: {} {what}. Nothing was changed. Restore a \
                     backup with `latchkey restore FILE --data-dir {}` (with the server \
                     stopped), or move the file away to start with an empty store",
                    path.display(),
                    dir.display()
                )
            }
            OpenError::NewerSchema { found, supported } => write!(
                f,
                "the user store has schema version {found} but this latchkey understands \
                 versions up to {supported}: it was written by a newer latchkey; run that \
                 version, or restore a backup made before the upgrade"
            ),
            OpenError::File { path, source } => {
                write!(f, "cannot open the user store {}: {source}", path.display())
            }
            OpenError::Storage { path, source } => {
                write!(f, "cannot open the user store {}: {source}", path.display())
            }
            OpenError::Database { target, what } => {
                write!(f, "cannot use the user store {target}: {what}")
            }
            OpenError::NoPostgres(target) => write!(
                f,
                "the store {target} is a PostgreSQL database, but this latchkey was built \
                 without PostgreSQL support; build it with `cargo build --release --features \
                 postgres`"
            ),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::File { source, .. } => Some(source),
            OpenError::Storage { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Why a read (`get`, `get_by_name`, `session_state`, `list`, `count`, `scan`) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReadError {
    /// The record asked for is damaged; the other users can still be read.
    DamagedRecord(DamagedRecord),
    /// The store cannot be read right now.
    Unavailable(Unavailable),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::DamagedRecord(d) => d.fmt(f),
            ReadError::Unavailable(u) => u.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::DamagedRecord(_) => None,
            ReadError::Unavailable(u) => Some(u),
        }
    }
}

/// Why `create` failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum CreateError {
    /// The name, role or hash breaks a rule.
    Invalid(Invalid),
    /// The name is taken (compared ignoring case); holds the name asked for.
    NameTaken(String),
    /// The id counter is missing or exhausted: the store is damaged.
    Damaged(String),
    /// Only the first user may be made this way (`create_first`), and a user exists.
    NotFirst,
    /// The store cannot be written right now.
    Unavailable(Unavailable),
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Invalid(e) => e.fmt(f),
            CreateError::NameTaken(name) => write!(
                f,
                "the name {name} is taken (names are compared ignoring case)"
            ),
            CreateError::Damaged(what) => write!(
                f,
                "the user store is damaged: {what}; restore a backup with `latchkey restore FILE`"
            ),
            CreateError::NotFirst => write!(
                f,
                "a user exists already: only the first account is made with the setup code"
            ),
            CreateError::Unavailable(u) => u.fmt(f),
        }
    }
}

impl std::error::Error for CreateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CreateError::Unavailable(u) => Some(u),
            _ => None,
        }
    }
}

/// Why a change to one user (`set_role`, `set_password`, `set_locked`, `revoke`,
/// `record_login`, `delete`, the key record) failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum UpdateError {
    /// The new value breaks a rule.
    Invalid(Invalid),
    /// No user with that id.
    NotFound,
    /// The user's record is damaged, so it cannot be changed (it can be deleted).
    DamagedRecord(DamagedRecord),
    /// The change would leave no administrator who can log in: the last active
    /// administrator cannot be deleted, demoted or locked.
    LastAdmin,
    /// The store cannot be written right now.
    Unavailable(Unavailable),
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpdateError::Invalid(e) => e.fmt(f),
            UpdateError::NotFound => write!(f, "no such user"),
            UpdateError::LastAdmin => write!(
                f,
                "this is the last active administrator: nobody could manage users without \
                 one; make another user an administrator first"
            ),
            UpdateError::DamagedRecord(d) => d.fmt(f),
            UpdateError::Unavailable(u) => u.fmt(f),
        }
    }
}

impl std::error::Error for UpdateError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            UpdateError::Unavailable(u) => Some(u),
            _ => None,
        }
    }
}

/// Why `backup_to` failed. A partly written copy is removed.
#[derive(Debug)]
#[non_exhaustive]
pub enum BackupError {
    /// Something is already at the destination; a backup never overwrites.
    Exists(PathBuf),
    /// The copy could not be created, written or synced.
    File {
        /// The destination.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// redb failed while writing the copy (a full disk?).
    Storage {
        /// The destination.
        path: PathBuf,
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// The store itself cannot be read right now.
    Unavailable(Unavailable),
}

impl fmt::Display for BackupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackupError::Exists(path) => write!(
                f,
                "{} already exists; a backup never overwrites a file (choose a new name)",
                path.display()
            ),
            BackupError::File { path, source } => {
                write!(f, "cannot write the copy {}: {source}", path.display())
            }
            BackupError::Storage { path, source } => {
                write!(f, "cannot write the copy {}: {source}", path.display())
            }
            BackupError::Unavailable(u) => u.fmt(f),
        }
    }
}

impl std::error::Error for BackupError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BackupError::File { source, .. } => Some(source),
            BackupError::Storage { source, .. } => Some(source.as_ref()),
            BackupError::Unavailable(u) => Some(u),
            BackupError::Exists(_) => None,
        }
    }
}

/// What [`restore`](super::restore) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// Readable users in the restored store.
    pub users: u64,
    /// Where the replaced store file was kept, when there was one.
    pub kept: Option<PathBuf>,
    /// What was wrong with the replaced store, when it was damaged.
    pub damaged_target: Option<String>,
}

/// Why `latchkey restore` refused or failed. Nothing was changed, except where a variant
/// says otherwise.
#[derive(Debug)]
#[non_exhaustive]
pub enum RestoreError {
    /// The copy cannot be opened or is not a sound store file.
    Copy {
        /// The copy.
        path: PathBuf,
        /// Why.
        source: OpenError,
    },
    /// The copy's records or indexes are damaged.
    CopyUnsound {
        /// The copy.
        path: PathBuf,
        /// What the scan found.
        scan: Box<Scan>,
    },
    /// A running server holds the store to replace.
    Busy(PathBuf),
    /// The store to replace is sound; `--force` replaces it anyway.
    TargetSound {
        /// The store file.
        path: PathBuf,
        /// Its users.
        users: u64,
    },
    /// The store to replace cannot be looked at (permissions, a newer schema without
    /// `--force`).
    Target {
        /// The store file.
        path: PathBuf,
        /// Why.
        source: OpenError,
    },
    /// Writing the new store under its temporary name failed.
    Write(BackupError),
    /// Putting it in place (or keeping the old one aside) failed.
    File {
        /// The file concerned.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::Copy { path, source } => match source {
                OpenError::Damaged { what, .. } => write!(
                    f,
                    "the copy {} is damaged: it {what}; nothing was changed (try an older \
                     backup)",
                    path.display()
                ),
                OpenError::Missing(_) => write!(f, "there is no file {}", path.display()),
                other => write!(
                    f,
                    "cannot use the copy {}: {other}; nothing was changed",
                    path.display()
                ),
            },
            RestoreError::CopyUnsound { path, scan } => write!(
                f,
                "the copy {} is damaged: {}; nothing was changed (try an older backup)",
                path.display(),
                scan.damage
                    .iter()
                    .map(Damage::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            RestoreError::Busy(path) => write!(
                f,
                "the user store {} is in use by a running server; stop it first \
                 (`systemctl stop latchkey`), then restore; nothing was changed",
                path.display()
            ),
            RestoreError::TargetSound { path, users } => write!(
                f,
                "{} is a sound store with {users} users; pass --force to replace it (it is \
                 kept beside as users.redb.replaced-<time>); nothing was changed",
                path.display()
            ),
            RestoreError::Target { path, source } => write!(
                f,
                "cannot replace {}: {source}; nothing was changed",
                path.display()
            ),
            RestoreError::Write(e) => write!(f, "{e}; nothing was changed"),
            RestoreError::File { path, source } => write!(
                f,
                "cannot put the restored store in place ({}: {source})",
                path.display()
            ),
        }
    }
}

impl std::error::Error for RestoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RestoreError::Copy { source, .. } | RestoreError::Target { source, .. } => Some(source),
            RestoreError::Write(e) => Some(e),
            RestoreError::File { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Any store failure: what each per-operation error converts into, for callers that only
/// report (`?` into a handler's or a command's error).
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreError {
    /// See [`OpenError`].
    Open(OpenError),
    /// A rule is broken.
    Invalid(Invalid),
    /// The name is taken; holds the name asked for.
    NameTaken(String),
    /// No such user.
    NotFound,
    /// One record is damaged.
    DamagedRecord(DamagedRecord),
    /// See [`UpdateError::LastAdmin`].
    LastAdmin,
    /// The store's structure is damaged (the id counter); holds what.
    Damaged(String),
    /// A full scan found damage (see [`Scan`]); the readable users are still served.
    Unsound(Box<Scan>),
    /// See [`BackupError`].
    Backup(BackupError),
    /// See [`RestoreError`].
    Restore(Box<RestoreError>),
    /// The storage cannot be used right now.
    Unavailable(Unavailable),
    /// A copy refuses to write into a store that holds users (without `--force`); holds
    /// how many.
    NotEmpty(u64),
    /// A copy refuses a source with damaged records; holds what was found.
    SourceDamaged(String),
}

impl StoreError {
    /// Whether the store (not the request) is at fault and the answer should say "try
    /// again later": the storage is unavailable.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Open(e) => e.fmt(f),
            StoreError::Invalid(e) => e.fmt(f),
            StoreError::NameTaken(name) => write!(
                f,
                "the name {name} is taken (names are compared ignoring case)"
            ),
            StoreError::NotFound => write!(f, "no such user"),
            StoreError::LastAdmin => UpdateError::LastAdmin.fmt(f),
            StoreError::DamagedRecord(d) => d.fmt(f),
            StoreError::Damaged(what) => write!(
                f,
                "the user store is damaged: {what}; restore a backup with `latchkey restore FILE`"
            ),
            StoreError::Unsound(scan) => write!(f, "{}", UnsoundReport(scan)),
            StoreError::Backup(e) => e.fmt(f),
            StoreError::Restore(e) => e.fmt(f),
            StoreError::Unavailable(u) => u.fmt(f),
            StoreError::NotEmpty(n) => write!(
                f,
                "the target store holds {n} users; nothing was copied (pass --force to \
                 replace them)"
            ),
            StoreError::SourceDamaged(what) => write!(
                f,
                "the source store is damaged ({what}); nothing was copied: restore a backup \
                 or remove the damaged users first"
            ),
        }
    }
}

/// The message for a scan that found damage: every finding, then what to do.
struct UnsoundReport<'a>(&'a Scan);

impl fmt::Display for UnsoundReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scan = self.0;
        write!(f, "the user store is damaged: ")?;
        for (i, damage) in scan.damage.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            match damage {
                Damage::Record(d) => {
                    write!(f, "the record of user {} is unreadable ({})", d.id, d.why)?
                }
                Damage::Index(what) => write!(f, "{what}")?,
            }
        }
        write!(
            f,
            ". The other {} users are readable and are served. Restore a backup with \
             `latchkey restore FILE`, or remove the damaged users (`latchkey user remove`, or \
             Delete on the admin page)",
            scan.users
        )
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Open(e) => e.source(),
            StoreError::Backup(e) => e.source(),
            StoreError::Restore(e) => e.source(),
            StoreError::Unavailable(u) => Some(u),
            _ => None,
        }
    }
}

impl From<OpenError> for StoreError {
    fn from(e: OpenError) -> StoreError {
        StoreError::Open(e)
    }
}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> StoreError {
        StoreError::Invalid(e)
    }
}

impl From<Unavailable> for StoreError {
    fn from(e: Unavailable) -> StoreError {
        StoreError::Unavailable(e)
    }
}

impl From<ReadError> for StoreError {
    fn from(e: ReadError) -> StoreError {
        match e {
            ReadError::DamagedRecord(d) => StoreError::DamagedRecord(d),
            ReadError::Unavailable(u) => StoreError::Unavailable(u),
        }
    }
}

impl From<CreateError> for StoreError {
    fn from(e: CreateError) -> StoreError {
        match e {
            CreateError::Invalid(e) => StoreError::Invalid(e),
            CreateError::NameTaken(name) => StoreError::NameTaken(name),
            CreateError::Damaged(what) => StoreError::Damaged(what),
            CreateError::NotFirst => StoreError::Damaged(CreateError::NotFirst.to_string()),
            CreateError::Unavailable(u) => StoreError::Unavailable(u),
        }
    }
}

impl From<UpdateError> for StoreError {
    fn from(e: UpdateError) -> StoreError {
        match e {
            UpdateError::Invalid(e) => StoreError::Invalid(e),
            UpdateError::NotFound => StoreError::NotFound,
            UpdateError::DamagedRecord(d) => StoreError::DamagedRecord(d),
            UpdateError::LastAdmin => StoreError::LastAdmin,
            UpdateError::Unavailable(u) => StoreError::Unavailable(u),
        }
    }
}

impl From<BackupError> for StoreError {
    fn from(e: BackupError) -> StoreError {
        match e {
            BackupError::Unavailable(u) => StoreError::Unavailable(u),
            other => StoreError::Backup(other),
        }
    }
}

impl From<Unavailable> for ReadError {
    fn from(e: Unavailable) -> ReadError {
        ReadError::Unavailable(e)
    }
}

impl From<Unavailable> for CreateError {
    fn from(e: Unavailable) -> CreateError {
        CreateError::Unavailable(e)
    }
}

impl From<Unavailable> for UpdateError {
    fn from(e: Unavailable) -> UpdateError {
        UpdateError::Unavailable(e)
    }
}

impl From<Unavailable> for BackupError {
    fn from(e: Unavailable) -> BackupError {
        BackupError::Unavailable(e)
    }
}

impl From<RestoreError> for StoreError {
    fn from(e: RestoreError) -> StoreError {
        StoreError::Restore(Box::new(e))
    }
}

impl From<ReadError> for UpdateError {
    fn from(e: ReadError) -> UpdateError {
        match e {
            ReadError::DamagedRecord(d) => UpdateError::DamagedRecord(d),
            ReadError::Unavailable(u) => UpdateError::Unavailable(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_stay_small() {
        // Every request-path result carries one of these; redb's own error is boxed.
        for (name, size) in [
            ("StoreError", std::mem::size_of::<StoreError>()),
            ("ReadError", std::mem::size_of::<ReadError>()),
            ("UpdateError", std::mem::size_of::<UpdateError>()),
            ("CreateError", std::mem::size_of::<CreateError>()),
            ("OpenError", std::mem::size_of::<OpenError>()),
        ] {
            assert!(size <= 64, "{name} is {size} bytes");
        }
    }

    #[test]
    fn messages_say_what_to_do() {
        let d = DamagedRecord {
            id: 3,
            why: "unknown record format 9".into(),
        };
        let text = d.to_string();
        assert!(text.starts_with("the user store is damaged: the record of user 3"));
        assert!(text.contains("latchkey restore") && text.contains("user remove"));
        let open = OpenError::damaged(Path::new("/srv/data/users.redb"), "is empty (0 bytes)");
        let text = open.to_string();
        assert!(text.starts_with("the user store is damaged: /srv/data/users.redb is empty"));
        assert!(text.contains("latchkey restore FILE --data-dir /srv/data"));
        assert!(text.contains("Nothing was changed"));
    }
}

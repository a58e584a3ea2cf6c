//! The user store on redb. STUB: to be implemented.

use std::path::Path;

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
    /// Unix seconds.
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

/// Users in one redb file.
pub struct UserStore {}

impl UserStore {
    /// Opens or creates the store at `path`.
    pub fn open(_path: &Path) -> Result<UserStore, StoreError> {
        todo!()
    }
    /// Creates a user; fails with `NameTaken` when the name exists.
    pub fn create(
        &self,
        _name: &str,
        _role: &str,
        _password_hash: &str,
    ) -> Result<User, StoreError> {
        todo!()
    }
    /// A user by id.
    pub fn get(&self, _id: u64) -> Result<Option<User>, StoreError> {
        todo!()
    }
    /// A user by name (case-insensitive, trimmed).
    pub fn get_by_name(&self, _name: &str) -> Result<Option<User>, StoreError> {
        todo!()
    }
    /// What the per-request check needs, read in one read transaction.
    pub fn session_state(&self, _id: u64) -> Result<Option<SessionState>, StoreError> {
        todo!()
    }
    /// Up to `limit` users with id > `after`, by id.
    pub fn list(&self, _after: u64, _limit: usize) -> Result<Vec<User>, StoreError> {
        todo!()
    }
    /// Number of users.
    pub fn count(&self) -> Result<u64, StoreError> {
        todo!()
    }
    /// Sets the role.
    pub fn set_role(&self, _id: u64, _role: &str) -> Result<User, StoreError> {
        todo!()
    }
    /// Sets the password hash and bumps `ver`.
    pub fn set_password(&self, _id: u64, _password_hash: &str) -> Result<User, StoreError> {
        todo!()
    }
    /// Locks (bumping `ver`) or unlocks.
    pub fn set_locked(&self, _id: u64, _locked: bool) -> Result<User, StoreError> {
        todo!()
    }
    /// Bumps `ver`: every token issued before is revoked.
    pub fn revoke(&self, _id: u64) -> Result<User, StoreError> {
        todo!()
    }
    /// Records a successful login, replacing the hash when re-hashed.
    pub fn record_login(&self, _id: u64, _new_hash: Option<&str>) -> Result<User, StoreError> {
        todo!()
    }
    /// Deletes a user.
    pub fn delete(&self, _id: u64) -> Result<(), StoreError> {
        todo!()
    }
}

/// Checks a user name and returns its canonical (trimmed) form.
pub fn validate_name(_name: &str) -> Result<String, StoreError> {
    todo!()
}

/// Checks a role name.
pub fn validate_role(_role: &str) -> Result<(), StoreError> {
    todo!()
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// The name is taken.
    NameTaken(String),
    /// No such user.
    NotFound,
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for StoreError {}

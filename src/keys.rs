//! Key files → key ring. STUB: to be implemented.

use std::path::{Path, PathBuf};

/// One HMAC secret and its `kid`.
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    kid: String,
}

impl Key {
    /// Builds a key from secret bytes (at least 32).
    pub fn new(_bytes: Vec<u8>) -> Result<Key, KeyError> {
        todo!()
    }
    /// The secret.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// First 8 chars of base64url(SHA-256(bytes)).
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Keys in order: the first signs, all verify.
#[derive(Clone)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring from keys; fails when empty.
    pub fn new(keys: Vec<Key>) -> Result<KeyRing, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing { keys })
    }
    /// Loads key files in order.
    pub fn load(_paths: &[PathBuf]) -> Result<KeyRing, KeyError> {
        todo!()
    }
    /// The signing key.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }
    /// All keys, primary first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// Writes a new random key file with mode 0600; refuses to overwrite.
pub fn generate(_path: &Path) -> Result<(), KeyError> {
    todo!()
}

/// Why a key could not be loaded or made.
#[derive(Debug)]
pub enum KeyError {
    /// No key given.
    Empty,
}

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyError::Empty => write!(f, "no key given"),
        }
    }
}

impl std::error::Error for KeyError {}

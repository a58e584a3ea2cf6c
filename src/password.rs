//! argon2id password hashing. STUB: to be implemented.

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Parallelism.
    pub p: u32,
}

impl Default for Params {
    /// The OWASP baseline: 19 MiB, t=2, p=1.
    fn default() -> Params {
        Params {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

/// The outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right password; `rehash` holds a new PHC string when the stored parameters were weaker.
    Match {
        /// Replacement hash to store, if any.
        rehash: Option<String>,
    },
    /// Wrong password (or unknown user).
    Mismatch,
}

/// Hashes and verifies passwords with fixed parameters.
#[derive(Clone)]
pub struct Passwords {}

impl Passwords {
    /// A hasher with these parameters; fails when argon2 refuses them.
    pub fn new(_params: Params) -> Result<Passwords, PasswordError> {
        todo!()
    }
    /// Checks the rules, then returns a PHC string.
    pub fn hash(&self, _password: &str) -> Result<String, PasswordError> {
        todo!()
    }
    /// Verifies against a stored PHC string.
    pub fn verify(&self, _password: &str, _phc: &str) -> Verdict {
        todo!()
    }
    /// Burns the same time as `verify` for an unknown user; always `Mismatch`.
    pub fn verify_unknown(&self, _password: &str) -> Verdict {
        todo!()
    }
}

/// Checks the password rules (8–1024 bytes).
pub fn check_rules(_password: &str) -> Result<(), PasswordError> {
    todo!()
}

/// Why a password was refused or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordError {
    /// Fewer than 8 bytes.
    TooShort,
    /// More than 1024 bytes.
    TooLong,
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl std::error::Error for PasswordError {}

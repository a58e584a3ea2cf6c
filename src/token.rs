//! HS256 JSON Web Tokens: `Signer`, `Verifier`, `Claims`, `TokenError`.
//!
//! Pure: no I/O, no clock reads except through `Clock`. STUB: to be implemented.

use crate::keys::KeyRing;

/// The claims latchkey signs and reads (DESIGN.md token contract).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Claims {
    /// The user id as a string (`sub`).
    pub sub: String,
    /// The same id as a number (`user_id`), as the original design used.
    pub user_id: u64,
    /// The user name.
    pub name: String,
    /// The role name.
    pub role: String,
    /// Issued at, Unix seconds.
    pub iat: i64,
    /// Expires at, Unix seconds.
    pub exp: i64,
    /// Issuer.
    pub iss: String,
    /// When the password was last entered, Unix seconds.
    pub auth_time: i64,
    /// The user's token version at issue time.
    pub ver: u64,
}

/// Where "now" comes from during validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system clock.
    System,
    /// A fixed instant, Unix seconds (tests, replay of logs).
    Fixed(i64),
}

impl Clock {
    /// The current time in Unix seconds.
    pub fn now(&self) -> i64 {
        todo!()
    }
}

/// Everything the verifier checks beyond the signature, stated explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The required `iss`, compared exactly.
    pub issuer: String,
    /// Seconds of clock skew tolerated for `exp`, `nbf` and `iat`.
    pub leeway: u64,
    /// Token lifetime, used to derive `iat`/`auth_time` of legacy tokens that lack them.
    pub ttl: u64,
    /// The clock.
    pub clock: Clock,
}

/// The four classes a rejected token falls in; kept distinct up to the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Past `exp`.
    Expired,
    /// Not a JWT at all.
    Malformed,
    /// A JWT we do not accept: signature, key, algorithm, issuer, claims, time window.
    Invalid,
    /// Valid signature, but the user state in the store no longer matches.
    Revoked,
}

impl ErrorClass {
    /// The class word used in JSON errors, metrics and CLI output.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Expired => "expired",
            ErrorClass::Malformed => "malformed",
            ErrorClass::Invalid => "invalid",
            ErrorClass::Revoked => "revoked",
        }
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// The user's token version or state no longer matches the store.
    Revoked,
}

impl TokenError {
    /// The class this error belongs to.
    pub fn class(&self) -> ErrorClass {
        todo!()
    }
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, _f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        todo!()
    }
}

impl std::error::Error for TokenError {}

/// Signs claims with the primary key of a ring.
#[derive(Clone)]
pub struct Signer {}

impl Signer {
    /// Builds a signer keyed once with the ring's primary key.
    pub fn new(_ring: &KeyRing) -> Signer {
        todo!()
    }

    /// Returns the compact JWS for `claims`.
    pub fn sign(&self, _claims: &Claims) -> String {
        todo!()
    }
}

/// Verifies tokens against every key of a ring.
#[derive(Clone)]
pub struct Verifier {}

impl Verifier {
    /// Builds a verifier keyed once per key of the ring.
    pub fn new(_ring: &KeyRing, _validation: Validation) -> Verifier {
        todo!()
    }

    /// The validation settings in force.
    pub fn validation(&self) -> &Validation {
        todo!()
    }

    /// Checks `token` completely and returns its claims.
    pub fn verify(&self, _token: &str) -> Result<Claims, TokenError> {
        todo!()
    }
}

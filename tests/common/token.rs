//! Token fixtures, one set for every suite: the instant token suites judge at, one key,
//! the standard claims, and the few helpers suites built for themselves before.
//!
//! Suites that need a clock use [`NOW`] (fixed) or [`now`] (the system's); claims are made
//! with [`user`] (or [`claims`] for the standard ones) and varied with struct update
//! syntax: `Claims { exp: NOW - 1, ..claims() }`.

use std::time::{SystemTime, UNIX_EPOCH};

use latchkey::keys::{Key, KeyRing};
use latchkey::token::{Amr, Claims, Clock, Signer, TokenBuf, TokenError, Validation, Verifier};

/// The fixed instant token suites judge at, Unix seconds (2027-01-15).
pub const NOW: i64 = 1_800_000_000;

/// The secret of the suites' key: 38 bytes, above the 32-byte minimum.
pub const KEY: &[u8] = b"token-fixture-key-0123456789abcdefghij";

/// Unix time now, seconds, from the system clock (for suites that talk to a server).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}

/// A key from a secret (at least 32 bytes).
pub fn key(secret: &[u8]) -> Key {
    Key::new(secret.to_vec()).expect("a long enough secret")
}

/// The ring of [`KEY`] alone.
pub fn ring() -> KeyRing {
    KeyRing::new(vec![key(KEY)]).expect("one key")
}

/// A verifier of [`ring`] for issuer `latchkey`, judging at [`NOW`].
pub fn verifier() -> Verifier {
    verifier_of(&ring())
}

/// A verifier of `ring` for issuer `latchkey`, judging at [`NOW`].
pub fn verifier_of(ring: &KeyRing) -> Verifier {
    verifier_with(ring, "latchkey", Clock::Fixed(NOW))
}

/// A verifier of `ring` for `issuer` on `clock`, with the default leeway and lifetime.
pub fn verifier_with(ring: &KeyRing, issuer: &str, clock: Clock) -> Verifier {
    Verifier::new(ring, Validation::new(issuer, clock))
}

/// Signs with the primary key of [`ring`].
pub fn sign(claims: &Claims<'_>) -> String {
    Signer::new(&ring()).sign(claims)
}

/// Verifies `token` into a fresh buffer and returns owned claims, for assertions.
pub fn verify(verifier: &Verifier, token: &str) -> Result<Claims<'static>, TokenError> {
    let mut buf = TokenBuf::new();
    verifier.verify(token, &mut buf).map(Claims::into_owned)
}

/// The claims latchkey issues to user `id` called `name` with `role` on a password
/// login at `at`: an hour's lifetime, token version 0, issuer `latchkey`, a login id
/// (`jti`, 22 characters) of its own.
pub fn user(id: u64, name: &str, role: &str, at: i64) -> Claims<'static> {
    Claims {
        sub: id.to_string().into(),
        user_id: id,
        name: name.to_owned().into(),
        role: role.to_owned().into(),
        iat: at,
        exp: at + 3600,
        iss: "latchkey".into(),
        auth_time: at,
        ver: 0,
        amr: Amr::PWD,
        jti: Some(format!("fixtureLoginId{id:08}").into()),
    }
}

/// The standard claims: user 42, `ann`, `admin`, issued a minute before [`NOW`] for an
/// hour, password entered ten minutes before [`NOW`].
pub fn claims() -> Claims<'static> {
    Claims {
        exp: NOW + 3600,
        auth_time: NOW - 600,
        ..user(42, "ann", "admin", NOW - 60)
    }
}

/// `claims` with new times: issued at `iat`, expiring at `exp`, password at `auth_time`.
pub fn timed(claims: &Claims<'_>, iat: i64, exp: i64, auth_time: i64) -> Claims<'static> {
    Claims {
        iat,
        exp,
        auth_time,
        ..claims.clone().into_owned()
    }
}

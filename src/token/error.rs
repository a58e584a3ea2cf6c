//! Why a token was refused: [`TokenError`], its [`ErrorClass`] and the [`Part`] it concerns.
//!
//! The classes are part of the token contract (`docs/design.md`): every refusal is
//! exactly one of expired, malformed, invalid or revoked, kept distinct up to the user
//! (JSON errors, metrics, CLI exit codes). Messages say what to do and never echo token
//! contents, only the configured issuer and times.

use std::fmt;
use std::sync::Arc;

use super::MAX_TOKEN_LEN;

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

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One of the three dot-separated segments of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The JOSE header.
    Header,
    /// The claims.
    Payload,
    /// The HMAC tag.
    Signature,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Header => "header",
            Part::Payload => "payload",
            Part::Signature => "signature",
        })
    }
}

/// Why a token was refused.
///
/// Each variant belongs to one [`ErrorClass`]:
/// - **malformed** (not a JWT at all): [`TooLong`](Self::TooLong) (over 4096 bytes, checked
///   before any decoding), [`Segments`](Self::Segments) (not exactly three),
///   [`EmptySegment`](Self::EmptySegment), [`Base64`](Self::Base64) (anything but canonical
///   base64url without padding: `=`, `+`, `/`, whitespace, non-zero trailing bits),
///   [`Utf8`](Self::Utf8), [`Json`](Self::Json) (header or payload not a parseable JSON object);
/// - **invalid** (a JWT we do not accept): [`Algorithm`](Self::Algorithm) (`alg` missing or
///   not exactly `HS256`), [`Critical`](Self::Critical) (a `crit` header),
///   [`Type`](Self::Type) (`typ` other than `JWT`), [`UnknownKey`](Self::UnknownKey),
///   [`Signature`](Self::Signature), [`WrongType`](Self::WrongType) (e.g. a string or float
///   `exp`), [`Duplicate`](Self::Duplicate) (a member name twice), [`Missing`](Self::Missing)
///   (`exp`, `iss`, identity, `name`, `role`), [`Subject`](Self::Subject) (`sub` and
///   `user_id` disagree, or `sub` is not a decimal id), [`Issuer`](Self::Issuer),
///   [`AuthMethods`](Self::AuthMethods) (an `amr` outside the RFC 8176 registry, empty,
///   or with a value twice), [`NotYetValid`](Self::NotYetValid),
///   [`IssuedInFuture`](Self::IssuedInFuture) and
///   [`AuthenticatedInFuture`](Self::AuthenticatedInFuture) (`nbf`/`iat`/`auth_time`
///   later than now plus the leeway);
/// - **expired**: [`Expired`](Self::Expired) (`now >= exp + leeway`);
/// - **revoked**: [`Revoked`](Self::Revoked), made only by the server's store check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// The token is longer than [`MAX_TOKEN_LEN`] bytes.
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// The token does not have exactly three dot-separated segments.
    Segments {
        /// How many it has.
        count: usize,
    },
    /// A segment is empty.
    EmptySegment {
        /// Which one.
        part: Part,
    },
    /// A segment is not canonical base64url without padding.
    Base64 {
        /// Which one.
        part: Part,
    },
    /// A decoded segment is not UTF-8.
    Utf8 {
        /// Which one.
        part: Part,
    },
    /// A decoded segment is not a parseable JSON object.
    Json {
        /// Which one.
        part: Part,
    },
    /// The header's `alg` is missing or not exactly `HS256`.
    Algorithm,
    /// The header has a `crit` member (no extensions are understood).
    Critical,
    /// The header's `typ` is present and not `JWT`.
    Type,
    /// The header's `kid` names no key of the ring.
    UnknownKey,
    /// The signature does not match (or is not 32 bytes).
    Signature,
    /// A member has the wrong JSON type (say a string `exp` or a numeric `role`).
    WrongType {
        /// Header or payload.
        part: Part,
        /// The member.
        name: &'static str,
    },
    /// A member name occurs twice.
    Duplicate {
        /// Header or payload.
        part: Part,
    },
    /// A required claim is missing; `sub` stands for "neither `sub` nor `user_id`".
    Missing {
        /// The claim.
        claim: &'static str,
    },
    /// `sub` is not the decimal form of `user_id`, or not a decimal id at all.
    Subject,
    /// `iss` is not the configured issuer.
    Issuer {
        /// The issuer required (shared with the verifier, so refusing allocates nothing).
        expected: Arc<str>,
    },
    /// `amr` is an array of strings but not a set of RFC 8176 §2 registered values: empty,
    /// a value twice, or a value outside the registry.
    AuthMethods,
    /// `nbf` is later than now plus the leeway.
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The verifier's now.
        now: i64,
    },
    /// `iat` is later than now plus the leeway.
    IssuedInFuture {
        /// The token's `iat`.
        iat: i64,
        /// The verifier's now.
        now: i64,
    },
    /// `auth_time` is later than now plus the leeway: a login that has not happened yet
    /// would otherwise slide past the absolute limit.
    AuthenticatedInFuture {
        /// The token's `auth_time`.
        auth_time: i64,
        /// The verifier's now.
        now: i64,
    },
    /// `now >= exp + leeway`.
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The verifier's now.
        now: i64,
    },
    /// The user's token version or state no longer matches the store.
    Revoked,
}

impl TokenError {
    /// The class this error belongs to.
    pub fn class(&self) -> ErrorClass {
        use TokenError::*;
        match self {
            TooLong { .. }
            | Segments { .. }
            | EmptySegment { .. }
            | Base64 { .. }
            | Utf8 { .. }
            | Json { .. } => ErrorClass::Malformed,
            Algorithm
            | Critical
            | Type
            | UnknownKey
            | Signature
            | WrongType { .. }
            | Duplicate { .. }
            | Missing { .. }
            | Subject
            | Issuer { .. }
            | AuthMethods
            | NotYetValid { .. }
            | IssuedInFuture { .. }
            | AuthenticatedInFuture { .. } => ErrorClass::Invalid,
            Expired { .. } => ErrorClass::Expired,
            Revoked => ErrorClass::Revoked,
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use TokenError::*;
        match self {
            TooLong { len } => write!(
                f,
                "the token is {len} bytes, over the {MAX_TOKEN_LEN}-byte limit; pass the token alone"
            ),
            Segments { count } => write!(
                f,
                "a token is three base64url segments joined by dots, this has {count}; \
                 check it was copied whole"
            ),
            EmptySegment { part } => {
                write!(
                    f,
                    "the {part} segment is empty; check the token was copied whole"
                )
            }
            Base64 { part } => write!(
                f,
                "the {part} segment is not canonical base64url without padding \
                 (no '=', '+', '/' or spaces); check the token was copied unchanged"
            ),
            Utf8 { part } => write!(f, "the {part} is not UTF-8 text"),
            Json { part } => write!(f, "the {part} is not a JSON object"),
            Algorithm => write!(
                f,
                "the header's alg is not HS256; latchkey accepts HS256 tokens only"
            ),
            Critical => write!(
                f,
                "the header lists critical extensions (crit), which latchkey does not support"
            ),
            Type => write!(f, "the header's typ is not JWT"),
            UnknownKey => write!(
                f,
                "the token names a key (kid) that is not loaded; add that key file to verify it"
            ),
            Signature => write!(
                f,
                "the signature does not match: the token was altered or signed with another key"
            ),
            WrongType { part, name } => write!(
                f,
                "the {part} member `{name}` has the wrong type (times and ids are integers, \
                 names are strings)"
            ),
            Duplicate { part } => write!(f, "the {part} has a member name twice"),
            Missing { claim: "sub" } => write!(
                f,
                "the token names no user (neither `sub` nor `user_id`); log in again"
            ),
            Missing { claim } => write!(f, "the token lacks the `{claim}` claim; log in again"),
            Subject => write!(
                f,
                "the token's `sub` is not the decimal user id (or disagrees with `user_id`)"
            ),
            Issuer { expected } => write!(
                f,
                "the token's issuer is not \"{expected}\"; it was made for another service, \
                 or the issuer setting differs"
            ),
            NotYetValid { nbf, now } => write!(
                f,
                "the token is not valid until {} s from now (nbf {nbf}); check the clocks agree",
                nbf.saturating_sub(*now)
            ),
            IssuedInFuture { iat, now } => write!(
                f,
                "the token was issued {} s in the future (iat {iat}); check the clocks agree",
                iat.saturating_sub(*now)
            ),
            AuthMethods => write!(
                f,
                "the token's amr is not a set of RFC 8176 method values (empty, a value twice, \
                 or an unregistered value); log in again"
            ),
            AuthenticatedInFuture { auth_time, now } => write!(
                f,
                "the token says the password was entered {} s in the future (auth_time \
                 {auth_time}); check the clocks agree, then log in again",
                auth_time.saturating_sub(*now)
            ),
            Expired { exp, now } => write!(
                f,
                "the token expired {} s ago (exp {exp}); log in again",
                now.saturating_sub(*exp)
            ),
            Revoked => write!(
                f,
                "the token was revoked (password change, log out everywhere, lock or removal); \
                 log in again"
            ),
        }
    }
}

impl std::error::Error for TokenError {}

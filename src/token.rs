//! HS256 JSON Web Tokens: [`Signer`], [`Verifier`], [`Claims`], [`TokenError`].
//!
//! Pure: no I/O, and no clock reads except through [`Clock`]. The verifier is strict
//! (RFC 7515, RFC 7519, RFC 8725) and fast, because it runs on every request:
//! - each key's HMAC state is built once and cloned per token, so keys are never re-hashed;
//! - a header equal, byte for byte, to one we (or PyJWT) write picks its key without being
//!   decoded or parsed;
//! - segments are decoded into stack buffers (the 4096-byte limit bounds them);
//! - the signature is checked before the payload is parsed, so forgeries never reach JSON;
//! - a payload laid out exactly as [`Signer::sign`] writes it is read without serde; any
//!   other goes through serde_json with a visitor that refuses duplicate members and wrong
//!   types; either way only the four strings that [`Claims`] owns are allocated.
//!
//! See `docs/token.md` for the wire format and the error classes.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use sha2::Sha256;

use crate::keys::{Key, KeyRing};

/// The longest token accepted, in bytes; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Room for any decoded segment of a token within [`MAX_TOKEN_LEN`].
const MAX_DECODED_LEN: usize = MAX_TOKEN_LEN / 4 * 3;

/// An HMAC-SHA256 tag: 32 bytes, 43 base64url characters.
const SIG_LEN: usize = 32;
const SIG_B64_LEN: usize = 43;

/// Payload segments up to this length decode into a small stack buffer (less to zero).
const SMALL_SEGMENT_LEN: usize = 512;

/// Room for the JSON of typical claims; longer claims fall back to the heap.
const SIGN_STACK_LEN: usize = 512;

/// base64url of `{"alg":"HS256","typ":"JWT"}`: the header of the original design and of
/// PyJWT; a token carrying it (no `kid`) is checked with the primary key only.
const LEGACY_HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

type HmacSha256 = Hmac<Sha256>;

/// The claims latchkey signs and reads (DESIGN.md token contract).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    /// The current time in Unix seconds (negative before 1970).
    pub fn now(&self) -> i64 {
        match self {
            Clock::Fixed(now) => *now,
            Clock::System => system_seconds(),
        }
    }
}

/// Unix seconds from the coarse real-time clock: whole seconds are all tokens need, and it
/// reads several times faster than the precise clock (this runs on every request).
#[cfg(target_os = "linux")]
fn system_seconds() -> i64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut now) } == 0 {
        return now.tv_sec;
    }
    precise_seconds()
}

#[cfg(not(target_os = "linux"))]
fn system_seconds() -> i64 {
    precise_seconds()
}

/// Unix seconds from `SystemTime` (negative before 1970).
fn precise_seconds() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The issuer (`iss`) tokens carry and are checked for unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "latchkey";
/// Seconds of clock skew tolerated unless configured otherwise.
pub const DEFAULT_LEEWAY: u64 = 30;
/// Token lifetime in seconds unless configured otherwise.
pub const DEFAULT_TTL: u64 = 3600;

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

impl Validation {
    /// The rules for tokens from `issuer` on `clock`, with the default leeway and lifetime.
    pub fn new(issuer: impl Into<String>, clock: Clock) -> Validation {
        Validation {
            issuer: issuer.into(),
            leeway: DEFAULT_LEEWAY,
            ttl: DEFAULT_TTL,
            clock,
        }
    }
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
///   [`NotYetValid`](Self::NotYetValid) and [`IssuedInFuture`](Self::IssuedInFuture)
///   (`nbf`/`iat` later than now plus the leeway);
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
        /// The issuer required.
        expected: String,
    },
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
            | NotYetValid { .. }
            | IssuedInFuture { .. } => ErrorClass::Invalid,
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

/// A pre-keyed HMAC-SHA256 state (the key's pads already hashed).
fn keyed(key: &Key) -> HmacSha256 {
    match HmacSha256::new_from_slice(key.bytes()) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    }
}

/// A pre-keyed HMAC, and the same state with the first 64 bytes of our own tokens already
/// absorbed: our header, the dot, and the start of the payload (its leading `{"sub"`
/// encodes to `eyJzdWIi`). A message that starts with that block skips one of the ~7
/// SHA-256 compressions a token costs.
#[derive(Clone)]
struct KeyedMac {
    mac: HmacSha256,
    first_block: [u8; 64],
    after_first_block: HmacSha256,
}

impl KeyedMac {
    fn new(key: &Key, header_b64: &str) -> KeyedMac {
        let mac = keyed(key);
        let mut first_block = [0u8; 64];
        // Our header encodes to 59 characters, so the block ends 4 characters into the
        // payload. Should a block not fill (a shorter header), the zero block matches no
        // token (base64url has no NUL) and every message takes the long way.
        let lead = format!("{header_b64}.eyJzdWIi");
        if let Some(lead) = lead.as_bytes().get(..first_block.len()) {
            first_block.copy_from_slice(lead);
        }
        let mut after_first_block = mac.clone();
        after_first_block.update(&first_block);
        KeyedMac {
            mac,
            first_block,
            after_first_block,
        }
    }

    /// The MAC state after absorbing `message`.
    fn absorb(&self, message: &[u8]) -> HmacSha256 {
        match message.split_at_checked(self.first_block.len()) {
            Some((first, rest)) if first == self.first_block => {
                let mut mac = self.after_first_block.clone();
                mac.update(rest);
                mac
            }
            _ => {
                let mut mac = self.mac.clone();
                mac.update(message);
                mac
            }
        }
    }
}

/// base64url of `json`.
fn b64(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

/// Signs claims with the primary key of a ring.
#[derive(Clone)]
pub struct Signer {
    mac: KeyedMac,
    /// base64url of our header, then the dot.
    prefix: String,
}

impl Signer {
    /// Builds a signer keyed once with the ring's primary key.
    pub fn new(ring: &KeyRing) -> Signer {
        let key = ring.primary();
        let header = format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, key.kid());
        let header = b64(&header);
        Signer {
            mac: KeyedMac::new(key, &header),
            prefix: header + ".",
        }
    }

    /// Returns the compact JWS for `claims`.
    ///
    /// `sub` must be the decimal form of `user_id`, or the token will not verify.
    pub fn sign(&self, claims: &Claims) -> String {
        debug_assert_eq!(
            claims.sub.parse(),
            Ok(claims.user_id),
            "sub must be user_id"
        );
        let mut stack = [0u8; SIGN_STACK_LEN];
        let heap: Vec<u8>;
        let json: &[u8] = match write_claims(claims, &mut stack) {
            Some(len) => &stack[..len],
            None => {
                // Claims too long for the stack buffer: serde_json writes the same bytes.
                // Only strings and integers, so serializing to a Vec cannot fail.
                heap = serde_json::to_vec(claims).unwrap_or_default();
                &heap
            }
        };
        let prefix = self.prefix.len();
        let body = prefix + base64_len(json.len());
        let mut out = vec![0u8; body + 1 + SIG_B64_LEN];
        out[..prefix].copy_from_slice(self.prefix.as_bytes());
        encode_into(json, &mut out[prefix..body]);
        let mac = self.mac.absorb(&out[..body]);
        out[body] = b'.';
        let tag: [u8; SIG_LEN] = mac.finalize().into_bytes().into();
        out[body + 1..].copy_from_slice(&encode_tag(&tag));
        debug_assert!(out.is_ascii());
        // SAFETY: every byte written above is from the base64url alphabet (the header,
        // the payload and tag encodings) or a `.`, all ASCII, so `out` is valid UTF-8;
        // skipping the re-validation saves a scan of the whole token on every sign.
        unsafe { String::from_utf8_unchecked(out) }
    }
}

/// The length of unpadded base64 for `len` bytes.
fn base64_len(len: usize) -> usize {
    (len * 4).div_ceil(3)
}

/// Encodes `input` as unpadded base64url into `out`, which is exactly long enough.
/// Six bytes become eight characters through four lookups of character pairs; it writes
/// what the base64 crate writes (tested) and is quicker on the signing path.
fn encode_into(input: &[u8], out: &mut [u8]) {
    let mut groups = input.chunks_exact(6);
    let mut outs = out.chunks_exact_mut(8);
    for (bytes, chars) in (&mut groups).zip(&mut outs) {
        let mut word = [0u8; 8];
        word[..6].copy_from_slice(bytes);
        let bits = u64::from_be_bytes(word);
        for (i, pair) in chars.chunks_exact_mut(2).enumerate() {
            pair.copy_from_slice(&CHAR_PAIRS[(bits >> (52 - 12 * i)) as usize & 0xfff]);
        }
    }
    // Up to five bytes left: three at a time, then one or two.
    let out = outs.into_remainder();
    for (bytes, chars) in groups.remainder().chunks(3).zip(out.chunks_mut(4)) {
        let byte = |i: usize| u32::from(bytes.get(i).copied().unwrap_or(0));
        let bits = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for (i, c) in chars.iter_mut().enumerate() {
            *c = B64URL[(bits >> (18 - 6 * i)) as usize & 63];
        }
    }
}

/// The two base64url characters of every 12-bit value.
static CHAR_PAIRS: [[u8; 2]; 4096] = {
    let mut pairs = [[0; 2]; 4096];
    let mut i = 0;
    while i < 4096 {
        pairs[i] = [B64URL[i >> 6], B64URL[i & 63]];
        i += 1;
    }
    pairs
};

/// One verification key: its kid, its keyed HMAC and the headers that name it.
#[derive(Clone)]
struct VerifyKey {
    kid: String,
    mac: KeyedMac,
    /// base64url of `{"alg":"HS256","typ":"JWT","kid":K}` (ours) and of
    /// `{"alg":"HS256","kid":K,"typ":"JWT"}` (PyJWT's sorted order).
    headers: [String; 2],
}

/// Verifies tokens against every key of a ring.
#[derive(Clone)]
pub struct Verifier {
    /// Primary first.
    keys: Vec<VerifyKey>,
    validation: Validation,
}

impl Verifier {
    /// Builds a verifier keyed once per key of the ring.
    pub fn new(ring: &KeyRing, validation: Validation) -> Verifier {
        let keys = ring
            .keys()
            .iter()
            .map(|key| {
                let kid = key.kid();
                let ours = b64(&format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#));
                VerifyKey {
                    kid: kid.to_owned(),
                    mac: KeyedMac::new(key, &ours),
                    headers: [
                        ours,
                        b64(&format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#)),
                    ],
                }
            })
            .collect();
        Verifier { keys, validation }
    }

    /// The validation settings in force.
    pub fn validation(&self) -> &Validation {
        &self.validation
    }

    /// Checks `token` completely and returns its claims.
    ///
    /// Order: size, segments, header (alg, crit, typ, kid), base64 of payload and
    /// signature, signature, then the payload: JSON and types, `exp`, `iss`, `nbf`/`iat`,
    /// expiry, identity, `name`, `role`. The first failure is returned.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len() });
        }
        let (header, payload, signature) = split(token)?;
        let key = self.key_for(token, header)?;
        if payload.len() <= SMALL_SEGMENT_LEN {
            let mut buf = [0u8; SMALL_SEGMENT_LEN / 4 * 3];
            self.verify_parts(token, key, payload, signature, &mut buf)
        } else {
            let mut buf = [0u8; MAX_DECODED_LEN];
            self.verify_parts(token, key, payload, signature, &mut buf)
        }
    }

    /// The rest of [`Self::verify`] once the key is known, decoding into `buf`.
    fn verify_parts(
        &self,
        token: &str,
        key: &VerifyKey,
        payload: &str,
        signature: &str,
        buf: &mut [u8],
    ) -> Result<Claims, TokenError> {
        let json = decode(payload, Part::Payload, buf).map_err(|err| or_segments(token, err))?;
        let mut tag = [0u8; SIG_LEN];
        decode_signature(signature, &mut tag).map_err(|err| or_segments(token, err))?;

        let mac = key
            .mac
            .absorb(&token.as_bytes()[..token.len() - signature.len() - 1]);
        mac.verify_slice(&tag).map_err(|_| TokenError::Signature)?;

        let json = std::str::from_utf8(json).map_err(|_| TokenError::Utf8 {
            part: Part::Payload,
        })?;
        let raw = match read_own_layout(json) {
            Some(raw) => raw,
            None => parse_object(json, Part::Payload)?,
        };
        self.check(raw)
    }

    /// The key a header selects, refusing any header we do not accept.
    fn key_for(&self, token: &str, header: &str) -> Result<&VerifyKey, TokenError> {
        if let Some(key) = self
            .keys
            .iter()
            .find(|key| key.headers.iter().any(|h| h == header))
        {
            return Ok(key);
        }
        if header == LEGACY_HEADER_B64 {
            return Ok(&self.keys[0]);
        }
        match token.split('.').count() {
            3 => self.key_for_parsed(header),
            count => Err(TokenError::Segments { count }),
        }
    }

    /// The slow path of [`Self::key_for`]: decode and parse the header.
    #[cold]
    fn key_for_parsed(&self, header: &str) -> Result<&VerifyKey, TokenError> {
        let mut buf = [0u8; MAX_DECODED_LEN];
        let json = decode(header, Part::Header, &mut buf)?;
        let json =
            std::str::from_utf8(json).map_err(|_| TokenError::Utf8 { part: Part::Header })?;
        let fields: RawHeader = parse_object(json, Part::Header)?;
        if fields.crit.is_some() {
            return Err(TokenError::Critical);
        }
        if fields.alg.as_ref().map(|alg| &*alg.0) != Some("HS256") {
            return Err(TokenError::Algorithm);
        }
        if fields.typ.is_some_and(|typ| typ.0 != "JWT") {
            return Err(TokenError::Type);
        }
        match fields.kid {
            None => Ok(&self.keys[0]),
            Some(kid) => self
                .keys
                .iter()
                .find(|key| key.kid == kid.0)
                .ok_or(TokenError::UnknownKey),
        }
    }

    /// Checks the claims of a signed payload against the validation settings.
    fn check(&self, raw: RawClaims) -> Result<Claims, TokenError> {
        let v = &self.validation;
        let now = v.clock.now();
        let leeway = i64::try_from(v.leeway).unwrap_or(i64::MAX);
        let exp = raw.exp.ok_or(TokenError::Missing { claim: "exp" })?;
        let iss = raw.iss.ok_or(TokenError::Missing { claim: "iss" })?;
        if iss != v.issuer {
            return Err(TokenError::Issuer {
                expected: v.issuer.clone(),
            });
        }
        let horizon = now.saturating_add(leeway);
        if let Some(nbf) = raw.nbf.filter(|&nbf| nbf > horizon) {
            return Err(TokenError::NotYetValid { nbf, now });
        }
        if let Some(iat) = raw.iat.filter(|&iat| iat > horizon) {
            return Err(TokenError::IssuedInFuture { iat, now });
        }
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired { exp, now });
        }
        let (sub, user_id) = match (raw.sub, raw.user_id) {
            (Some(sub), Some(id)) if parse_id(&sub) == Some(id) => (sub, id),
            (Some(sub), None) => match parse_id(&sub) {
                Some(id) => (sub, id),
                None => return Err(TokenError::Subject),
            },
            (None, Some(id)) => (id.to_string(), id),
            (Some(_), Some(_)) => return Err(TokenError::Subject),
            (None, None) => return Err(TokenError::Missing { claim: "sub" }),
        };
        let name = raw.name.ok_or(TokenError::Missing { claim: "name" })?;
        let role = raw.role.ok_or(TokenError::Missing { claim: "role" })?;
        let ttl = i64::try_from(v.ttl).unwrap_or(i64::MAX);
        let iat = raw.iat.unwrap_or(exp.saturating_sub(ttl));
        Ok(Claims {
            sub,
            user_id,
            name,
            role,
            iat,
            exp,
            iss,
            auth_time: raw.auth_time.unwrap_or(iat),
            ver: raw.ver.unwrap_or(0),
        })
    }
}

/// A canonical decimal u64: digits only, no sign, no leading zero (except "0").
fn parse_id(text: &str) -> Option<u64> {
    let bytes = text.as_bytes();
    let canonical = match bytes {
        [] => false,
        [b'0'] => true,
        [first, ..] => *first != b'0' && bytes.iter().all(u8::is_ascii_digit),
    };
    if canonical { text.parse().ok() } else { None }
}

/// Splits a token at its first dot and at the dot before a 43-character signature (or
/// its last dot). Payload or signature may still hold dots: the caller reports those as
/// [`TokenError::Segments`] before any other failure, so well-formed tokens are not
/// scanned twice.
fn split(token: &str) -> Result<(&str, &str, &str), TokenError> {
    let (header, rest) = token.split_once('.').ok_or_else(|| segments(token))?;
    // The signature is almost always 43 characters: look there before searching.
    let at = match rest.len().checked_sub(SIG_B64_LEN + 1) {
        Some(at) if rest.as_bytes()[at] == b'.' => at,
        _ => rest.rfind('.').ok_or_else(|| segments(token))?,
    };
    let (payload, signature) = (&rest[..at], &rest[at + 1..]);
    if header.is_empty() || payload.is_empty() || signature.is_empty() {
        let count = token.split('.').count();
        if count != 3 {
            return Err(TokenError::Segments { count });
        }
        for (segment, part) in [
            (header, Part::Header),
            (payload, Part::Payload),
            (signature, Part::Signature),
        ] {
            if segment.is_empty() {
                return Err(TokenError::EmptySegment { part });
            }
        }
    }
    Ok((header, payload, signature))
}

/// The error for a token that does not have exactly three segments.
#[cold]
fn segments(token: &str) -> TokenError {
    TokenError::Segments {
        count: token.split('.').count(),
    }
}

/// `err`, or [`TokenError::Segments`] when the token has more than three segments: `split`
/// leaves extra dots inside the payload or signature, to be found here, off the hot path.
#[cold]
#[inline(never)]
fn or_segments(token: &str, err: TokenError) -> TokenError {
    match token.split('.').count() {
        3 => err,
        count => TokenError::Segments { count },
    }
}

/// Decodes canonical base64url (no padding, zero trailing bits) into `buf`.
fn decode<'b>(segment: &str, part: Part, buf: &'b mut [u8]) -> Result<&'b [u8], TokenError> {
    match decode_base64url(segment.as_bytes(), buf) {
        Some(len) => Ok(&buf[..len]),
        None => Err(TokenError::Base64 { part }),
    }
}

/// Decodes the signature; a canonical segment of the wrong length is a bad signature.
fn decode_signature(segment: &str, tag: &mut [u8; SIG_LEN]) -> Result<(), TokenError> {
    if segment.len() == SIG_B64_LEN {
        return decode(segment, Part::Signature, tag).map(|_| ());
    }
    let mut buf = [0u8; MAX_DECODED_LEN];
    decode(segment, Part::Signature, &mut buf)?;
    Err(TokenError::Signature)
}

/// The base64url alphabet.
const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// For each byte, its base64url value shifted to its place in a group of four characters
/// (18, 12, 6, 0 bits); bit 31 marks a byte outside the alphabet.
static SHIFTED: [[u32; 256]; 4] = [shifted(18), shifted(12), shifted(6), shifted(0)];

const fn shifted(shift: u32) -> [u32; 256] {
    let mut table = [1 << 31; 256];
    let mut i = 0;
    while i < 64 {
        table[B64URL[i] as usize] = (i as u32) << shift;
        i += 1;
    }
    table
}

/// Strict base64url decoding: no padding, alphabet characters only, the unused bits of
/// the last character zero; `None` otherwise or when `buf` is too small. One lookup per
/// character; it accepts exactly what the base64 crate's strict `URL_SAFE_NO_PAD` accepts
/// (tested) and is quicker on the hot path.
fn decode_base64url(text: &[u8], buf: &mut [u8]) -> Option<usize> {
    let tail_len = text.len() % 4;
    if tail_len == 1 {
        return None;
    }
    let len = text.len() / 4 * 3 + tail_len.saturating_sub(1);
    let out = buf.get_mut(..len)?;
    let mut invalid = 0;
    let mut groups = text.chunks_exact(4);
    let mut outs = out.chunks_exact_mut(3);
    for (chars, bytes) in (&mut groups).zip(&mut outs) {
        let bits = SHIFTED[0][usize::from(chars[0])]
            | SHIFTED[1][usize::from(chars[1])]
            | SHIFTED[2][usize::from(chars[2])]
            | SHIFTED[3][usize::from(chars[3])];
        invalid |= bits;
        bytes.copy_from_slice(&bits.to_be_bytes()[1..]);
    }
    // Two or three characters left: one or two bytes, and bits that must be zero.
    let mut bits = 0;
    for (i, &c) in groups.remainder().iter().enumerate() {
        bits |= SHIFTED[i][usize::from(c)];
    }
    invalid |= bits;
    let [_, first, second, third] = bits.to_be_bytes();
    let rest = outs.into_remainder();
    match tail_len {
        2 if second == 0 => rest[0] = first,
        3 if third == 0 => rest.copy_from_slice(&[first, second]),
        0 => {}
        _ => return None,
    }
    (invalid >> 31 == 0).then_some(len)
}

/// Encodes a 32-byte tag as its 43 base64url characters.
fn encode_tag(tag: &[u8; SIG_LEN]) -> [u8; SIG_B64_LEN] {
    let mut text = [0u8; SIG_B64_LEN];
    encode_into(tag, &mut text);
    text
}

/// Parses a JSON object with [`Fields`] `T`, classing failures: syntax or a non-object is
/// malformed; a duplicate member or a wrong type is invalid.
fn parse_object<'de, T: Fields<'de>>(json: &'de str, part: Part) -> Result<T, TokenError> {
    let starts_object = json
        .trim_start_matches([' ', '\t', '\n', '\r'])
        .starts_with('{');
    if !starts_object {
        return Err(TokenError::Json { part });
    }
    let flaw = Cell::new(None);
    let mut de = serde_json::Deserializer::from_str(json);
    let parsed = ObjectSeed {
        flaw: &flaw,
        out: PhantomData,
    }
    .deserialize(&mut de)
    .and_then(|fields| de.end().map(|()| fields));
    parsed.map_err(|err| match (err.classify(), flaw.get()) {
        (serde_json::error::Category::Data, Some(Flaw::Duplicate)) => {
            TokenError::Duplicate { part }
        }
        (serde_json::error::Category::Data, Some(Flaw::WrongType(name))) => {
            TokenError::WrongType { part, name }
        }
        _ => TokenError::Json { part },
    })
}

/// What the object reader found wrong, beyond syntax (serde's errors are opaque).
#[derive(Debug, Clone, Copy)]
enum Flaw {
    Duplicate,
    WrongType(&'static str),
}

/// The known members of a JSON object, read one at a time.
trait Fields<'de>: Default {
    /// Reads the value of member `name` if it is known; returns whether it was.
    fn read<A: MapAccess<'de>>(
        &mut self,
        name: &str,
        map: &mut A,
        flaw: &Cell<Option<Flaw>>,
    ) -> Result<bool, A::Error>;
}

/// Reads a known member into its slot, refusing a second occurrence and a wrong type.
fn put<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    name: &'static str,
    map: &mut A,
    flaw: &Cell<Option<Flaw>>,
) -> Result<bool, A::Error> {
    if slot.is_some() {
        flaw.set(Some(Flaw::Duplicate));
        return Err(de::Error::custom("duplicate member"));
    }
    match map.next_value() {
        Ok(value) => {
            *slot = Some(value);
            Ok(true)
        }
        Err(err) => {
            flaw.set(Some(Flaw::WrongType(name)));
            Err(err)
        }
    }
}

/// The header members that matter; others are ignored (after the duplicate check).
#[derive(Default)]
struct RawHeader<'de> {
    alg: Option<Text<'de>>,
    typ: Option<Text<'de>>,
    kid: Option<Text<'de>>,
    crit: Option<IgnoredAny>,
}

impl<'de> Fields<'de> for RawHeader<'de> {
    fn read<A: MapAccess<'de>>(
        &mut self,
        name: &str,
        map: &mut A,
        flaw: &Cell<Option<Flaw>>,
    ) -> Result<bool, A::Error> {
        match name {
            "alg" => put(&mut self.alg, "alg", map, flaw),
            "typ" => put(&mut self.typ, "typ", map, flaw),
            "kid" => put(&mut self.kid, "kid", map, flaw),
            "crit" => put(&mut self.crit, "crit", map, flaw),
            _ => Ok(false),
        }
    }
}

/// The claims as found in the payload, before validation.
#[derive(Debug, Default, PartialEq, Eq)]
struct RawClaims {
    sub: Option<String>,
    user_id: Option<u64>,
    name: Option<String>,
    role: Option<String>,
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iss: Option<String>,
    auth_time: Option<i64>,
    ver: Option<u64>,
}

impl<'de> Fields<'de> for RawClaims {
    fn read<A: MapAccess<'de>>(
        &mut self,
        name: &str,
        map: &mut A,
        flaw: &Cell<Option<Flaw>>,
    ) -> Result<bool, A::Error> {
        match name {
            "sub" => put(&mut self.sub, "sub", map, flaw),
            "user_id" => put(&mut self.user_id, "user_id", map, flaw),
            "name" => put(&mut self.name, "name", map, flaw),
            "role" => put(&mut self.role, "role", map, flaw),
            "iat" => put(&mut self.iat, "iat", map, flaw),
            "exp" => put(&mut self.exp, "exp", map, flaw),
            "nbf" => put(&mut self.nbf, "nbf", map, flaw),
            "iss" => put(&mut self.iss, "iss", map, flaw),
            "auth_time" => put(&mut self.auth_time, "auth_time", map, flaw),
            "ver" => put(&mut self.ver, "ver", map, flaw),
            _ => Ok(false),
        }
    }
}

/// A JSON string borrowed from the input when it has no escapes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// Reads one JSON object into `T`, refusing duplicate member names (known or not).
struct ObjectSeed<'f, T> {
    flaw: &'f Cell<Option<Flaw>>,
    out: PhantomData<T>,
}

impl<'de, T: Fields<'de>> DeserializeSeed<'de> for ObjectSeed<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de, T: Fields<'de>> Visitor<'de> for ObjectSeed<'_, T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut fields = T::default();
        let mut others: Vec<Text<'de>> = Vec::new();
        while let Some(name) = map.next_key::<Text<'de>>()? {
            if !fields.read(&name.0, &mut map, self.flaw)? {
                map.next_value::<IgnoredAny>()?;
                others.push(name);
            }
        }
        others.sort_unstable();
        if others.windows(2).any(|pair| pair[0] == pair[1]) {
            self.flaw.set(Some(Flaw::Duplicate));
            return Err(de::Error::custom("duplicate member"));
        }
        Ok(fields)
    }
}

// Our own payload layout. `Signer::sign` writes the claims in one fixed order with the same
// bytes serde_json would write; the verifier first tries to read exactly that layout without
// serde (as it does for the header), and hands anything else to the general parser. Both
// directions are checked against serde_json by the tests below.

/// Writes `claims` as JSON into `buf`, byte for byte as serde_json would; `None` when the
/// buffer is too small.
fn write_claims(claims: &Claims, buf: &mut [u8]) -> Option<usize> {
    let mut w = JsonWriter { buf, len: 0 };
    w.raw(br#"{"sub":"#)?;
    w.string(&claims.sub)?;
    w.raw(br#","user_id":"#)?;
    w.uint(claims.user_id)?;
    w.raw(br#","name":"#)?;
    w.string(&claims.name)?;
    w.raw(br#","role":"#)?;
    w.string(&claims.role)?;
    w.raw(br#","iat":"#)?;
    w.int(claims.iat)?;
    w.raw(br#","exp":"#)?;
    w.int(claims.exp)?;
    w.raw(br#","iss":"#)?;
    w.string(&claims.iss)?;
    w.raw(br#","auth_time":"#)?;
    w.int(claims.auth_time)?;
    w.raw(br#","ver":"#)?;
    w.uint(claims.ver)?;
    w.raw(b"}")?;
    Some(w.len)
}

/// Appends JSON pieces to a fixed buffer.
struct JsonWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl JsonWriter<'_> {
    #[inline]
    fn raw(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    /// A JSON string, escaped as serde_json escapes (`\"`, `\\`, short forms, `\u00xx`).
    fn string(&mut self, text: &str) -> Option<()> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        self.raw(b"\"")?;
        let mut rest = text.as_bytes();
        // Copy runs of plain characters whole; escape the rest one by one.
        while let Some(at) = rest
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\')
        {
            self.raw(&rest[..at])?;
            let byte = rest[at];
            match byte {
                b'"' => self.raw(b"\\\"")?,
                b'\\' => self.raw(b"\\\\")?,
                b'\n' => self.raw(b"\\n")?,
                b'\r' => self.raw(b"\\r")?,
                b'\t' => self.raw(b"\\t")?,
                0x08 => self.raw(b"\\b")?,
                0x0c => self.raw(b"\\f")?,
                _ => self.raw(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ])?,
            }
            rest = &rest[at + 1..];
        }
        self.raw(rest)?;
        self.raw(b"\"")
    }

    fn uint(&mut self, mut value: u64) -> Option<()> {
        // Two digits per division, written in place: the same algorithm as the itoa
        // crate, without its copy out of a separate buffer (signing with itoa measured
        // 18 % slower in `cargo bench --bench token`).
        const PAIRS: [u8; 200] = {
            let mut pairs = [0u8; 200];
            let mut n = 0;
            while n < 100 {
                pairs[2 * n] = b'0' + (n / 10) as u8;
                pairs[2 * n + 1] = b'0' + (n % 10) as u8;
                n += 1;
            }
            pairs
        };
        // Written in place, right to left, two digits per division.
        let len = value.checked_ilog10().map_or(1, |log| log as usize + 1);
        let end = self.len.checked_add(len)?;
        let digits = self.buf.get_mut(self.len..end)?;
        let mut at = len;
        while at >= 2 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            digits[at - 2..at].copy_from_slice(&PAIRS[pair..pair + 2]);
            at -= 2;
        }
        if at == 1 {
            digits[0] = b'0' + value as u8;
        }
        self.len = end;
        Some(())
    }

    fn int(&mut self, value: i64) -> Option<()> {
        if value < 0 {
            self.raw(b"-")?;
        }
        self.uint(value.unsigned_abs())
    }
}

/// Reads a payload laid out exactly as [`write_claims`] writes it, with strings free of
/// escapes; `None` for anything else (the general parser then decides). Whatever it
/// accepts, serde_json reads to the same values.
fn read_own_layout(json: &str) -> Option<RawClaims> {
    let mut r = LayoutReader { rest: json };
    r.lit(r#"{"sub":"#)?;
    let sub = r.string()?;
    r.lit(r#","user_id":"#)?;
    let user_id = r.uint()?;
    r.lit(r#","name":"#)?;
    let name = r.string()?;
    r.lit(r#","role":"#)?;
    let role = r.string()?;
    r.lit(r#","iat":"#)?;
    let iat = r.int()?;
    r.lit(r#","exp":"#)?;
    let exp = r.int()?;
    r.lit(r#","iss":"#)?;
    let iss = r.string()?;
    r.lit(r#","auth_time":"#)?;
    let auth_time = r.int()?;
    r.lit(r#","ver":"#)?;
    let ver = r.uint()?;
    if r.rest != "}" {
        return None;
    }
    Some(RawClaims {
        sub: Some(sub.to_owned()),
        user_id: Some(user_id),
        name: Some(name.to_owned()),
        role: Some(role.to_owned()),
        iat: Some(iat),
        exp: Some(exp),
        nbf: None,
        iss: Some(iss.to_owned()),
        auth_time: Some(auth_time),
        ver: Some(ver),
    })
}

/// The value of up to 19 ASCII digits (no overflow possible).
fn small_decimal(digits: &[u8]) -> u64 {
    digits
        .iter()
        .fold(0u64, |value, &d| value * 10 + u64::from(d - b'0'))
}

/// The value of exactly 8 ASCII digits, combined pairwise inside one u64 (three multiplies
/// instead of eight dependent ones).
fn eight_digits(digits: [u8; 8]) -> u64 {
    let v = u64::from_le_bytes(digits) - 0x3030_3030_3030_3030;
    let v = (v * 10 + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v * 100 + (v >> 16)) & 0x0000_ffff_0000_ffff;
    (v * 10_000 + (v >> 32)) & 0xffff_ffff
}

/// Consumes the expected pieces of [`read_own_layout`].
struct LayoutReader<'a> {
    rest: &'a str,
}

impl<'a> LayoutReader<'a> {
    fn lit(&mut self, piece: &str) -> Option<()> {
        self.rest = self.rest.strip_prefix(piece)?;
        Some(())
    }

    /// A string without escapes or control characters.
    fn string(&mut self) -> Option<&'a str> {
        let body = self.rest.strip_prefix('"')?;
        let end = body
            .bytes()
            .position(|b| b == b'"' || b == b'\\' || b < 0x20)?;
        if body.as_bytes()[end] != b'"' {
            return None;
        }
        self.rest = &body[end + 1..];
        Some(&body[..end])
    }

    /// Digits as JSON writes them (no leading zero) that fit a u64.
    fn uint(&mut self) -> Option<u64> {
        let bytes = self.rest.as_bytes();
        let len = bytes.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || (len > 1 && bytes[0] == b'0') {
            return None;
        }
        let digits = &bytes[..len];
        let value = match len {
            // Timestamps have 10 digits: the last 8 are combined at once.
            9..20 => {
                let (high, low) = digits.split_at(len - 8);
                small_decimal(high) * 100_000_000 + eight_digits(low.try_into().ok()?)
            }
            ..9 => small_decimal(digits),
            _ => digits.iter().try_fold(0u64, |value, &d| {
                value.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            })?,
        };
        self.rest = &self.rest[len..];
        Some(value)
    }

    /// An i64; `-0` is left to serde_json, which reads it as a float.
    fn int(&mut self) -> Option<i64> {
        match self.rest.strip_prefix('-') {
            None => i64::try_from(self.uint()?).ok(),
            Some(rest) => {
                self.rest = rest;
                match self.uint()? {
                    0 => None,
                    magnitude => 0i64.checked_sub_unsigned(magnitude),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_block_shortcut_gives_the_plain_hmac() {
        let key = Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap();
        let header = b64(&format!(
            r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#,
            key.kid()
        ));
        let keyed_mac = KeyedMac::new(&key, &header);
        assert_ne!(
            keyed_mac.first_block, [0u8; 64],
            "our header fills the first block"
        );
        let ring = KeyRing::new(vec![key.clone()]).unwrap();
        let claims = Claims {
            sub: "42".into(),
            user_id: 42,
            name: "ann".into(),
            role: "user".into(),
            iat: 1,
            exp: 2,
            iss: "latchkey".into(),
            auth_time: 1,
            ver: 0,
        };
        let token = Signer::new(&ring).sign(&claims);
        assert_eq!(
            &token.as_bytes()[..64],
            &keyed_mac.first_block,
            "our tokens take the shortcut"
        );
        let ours = format!("{header}.eyJzdWIiOiI0MiJ9");
        let other = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9-and-some-more-bytes-than-sixty-four";
        for message in [ours.as_str(), other, "short"] {
            let mut plain = keyed(&key);
            plain.update(message.as_bytes());
            assert_eq!(
                keyed_mac.absorb(message.as_bytes()).finalize().into_bytes(),
                plain.finalize().into_bytes(),
                "{message}"
            );
        }
    }

    #[test]
    fn legacy_header_constant_is_the_encoding() {
        assert_eq!(LEGACY_HEADER_B64, b64(r#"{"alg":"HS256","typ":"JWT"}"#));
    }

    #[test]
    fn decimal_ids_are_canonical() {
        assert_eq!(parse_id("0"), Some(0));
        assert_eq!(parse_id("42"), Some(42));
        assert_eq!(parse_id("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "042",
            "+42",
            "-1",
            " 42",
            "4 2",
            "18446744073709551616",
            "0x2a",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn split_counts_segments() {
        assert_eq!(split("a.b.c"), Ok(("a", "b", "c")));
        assert_eq!(split("a.b"), Err(TokenError::Segments { count: 2 }));
        // Extra dots stay in the payload; `verify` reports them (see the adversarial suite).
        assert_eq!(split("a.b.c.d"), Ok(("a", "b.c", "d")));
        assert_eq!(split("...."), Err(TokenError::Segments { count: 5 }));
        assert_eq!(
            split("a..c"),
            Err(TokenError::EmptySegment {
                part: Part::Payload
            })
        );
    }

    #[test]
    fn objects_refuse_duplicates_and_wrong_types() {
        let dup = parse_object::<RawClaims>(r#"{"x":1,"y":2,"x":3}"#, Part::Payload);
        assert_eq!(
            dup.err(),
            Some(TokenError::Duplicate {
                part: Part::Payload
            })
        );
        let escaped = parse_object::<RawClaims>(r#"{"exp":1,"\u0065xp":2}"#, Part::Payload);
        assert_eq!(
            escaped.err(),
            Some(TokenError::Duplicate {
                part: Part::Payload
            })
        );
        let wrong = parse_object::<RawClaims>(r#"{"exp":"1"}"#, Part::Payload);
        assert_eq!(
            wrong.err(),
            Some(TokenError::WrongType {
                part: Part::Payload,
                name: "exp"
            })
        );
        let trailing = parse_object::<RawClaims>(r#"{"exp":1} x"#, Part::Payload);
        assert_eq!(
            trailing.err(),
            Some(TokenError::Json {
                part: Part::Payload
            })
        );
    }
    fn sample() -> Claims {
        Claims {
            sub: "7".into(),
            user_id: 7,
            name: "ann".into(),
            role: "admin".into(),
            iat: -5,
            exp: 1_800_000_000,
            iss: "latchkey".into(),
            auth_time: i64::MIN,
            ver: u64::MAX,
        }
    }

    fn layout_json(c: &Claims) -> String {
        let mut buf = [0u8; 4096];
        let len = write_claims(c, &mut buf).expect("fits");
        String::from_utf8(buf[..len].to_vec()).expect("UTF-8")
    }

    #[test]
    fn layout_edge_cases_agree_with_serde() {
        let base = layout_json(&sample());
        assert_eq!(base, serde_json::to_string(&sample()).expect("json"));
        assert!(read_own_layout(&base).is_some());
        let variants = [
            base.replace(r#""iat":-5"#, r#""iat":-0"#),
            base.replace(r#""iat":-5"#, r#""iat":05"#),
            base.replace(r#""iat":-5"#, r#""iat":-9223372036854775809"#),
            base.replace(r#""iat":-5"#, r#""iat":9223372036854775808"#),
            base.replace(
                r#""ver":18446744073709551615"#,
                r#""ver":18446744073709551616"#,
            ),
            base.replace(r#""ver":18446744073709551615"#, r#""ver":-1"#),
            base.replace(r#""name":"ann""#, r#""name":"a\nn""#),
            base.replace(r#""name":"ann""#, "\"name\":\"a\u{1}n\""),
            base.replace(r#""name":"ann""#, r#""name":"a\"""#),
            base.replace(r#""iat":-5"#, r#""iat":-5.0"#),
            base.replace(r#""iat":-5"#, r#""iat":"-5""#),
            format!("{base} "),
            format!(" {base}"),
            base.replace('}', r#","ver":1}"#),
        ];
        for json in &variants {
            let general = parse_object::<RawClaims>(json, Part::Payload);
            if let Some(fast) = read_own_layout(json) {
                assert_eq!(Ok(fast), general, "{json}");
            }
        }
        // The fast path leaves these to serde_json, which refuses or reads them.
        assert!(
            read_own_layout(&variants[0]).is_none(),
            "-0 is a float to serde_json"
        );
        assert!(parse_object::<RawClaims>(&variants[0], Part::Payload).is_err());
        assert!(read_own_layout(&variants[6]).is_none());
        assert!(parse_object::<RawClaims>(&variants[6], Part::Payload).is_ok());
    }

    proptest::proptest! {
        #[test]
        fn layout_writer_matches_serde_json(
            user_id: u64, name in "\\PC*|[\\x00-\\x7f]*", role: String, iss: String,
            iat: i64, exp: i64, auth_time: i64, ver: u64,
        ) {
            let c = Claims {
                sub: user_id.to_string(), user_id, name, role, iat, exp, iss, auth_time, ver,
            };
            let json = layout_json(&c);
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&c).expect("json"));
            let general = parse_object::<RawClaims>(&json, Part::Payload);
            proptest::prop_assert!(general.is_ok());
            if let Some(fast) = read_own_layout(&json) {
                proptest::prop_assert_eq!(Ok(fast), general);
            }
        }

        #[test]
        fn layout_reader_agrees_with_serde_on_edits(
            at in 0usize..200, len in 0usize..4, insert in "[-0-9\"\\\\a-z:,{} .eE+]{0,3}",
        ) {
            let base = layout_json(&sample());
            let at = at % base.len();
            let end = (at + len).min(base.len());
            let mut json = base.clone();
            json.replace_range(at..end, &insert);
            if let Some(fast) = read_own_layout(&json) {
                proptest::prop_assert_eq!(Ok(fast), parse_object::<RawClaims>(&json, Part::Payload));
            }
        }
    }
    proptest::proptest! {
        #[test]
        fn tag_encoder_matches_the_base64_crate(tag: [u8; 32]) {
            let expected = URL_SAFE_NO_PAD.encode(tag);
            proptest::prop_assert_eq!(&encode_tag(&tag)[..], expected.as_bytes());
        }

        #[test]
        fn decoder_matches_the_strict_base64_crate(
            text in "[A-Za-z0-9_-]{0,70}|[A-Za-z0-9_+/=. \n-]{0,70}|\\PC{0,20}",
            cut in 0usize..4,
        ) {
            let text = &text.as_bytes()[..text.len().saturating_sub(cut)];
            let mut ours = [0u8; 64];
            let mut theirs = [0u8; 64];
            let got = decode_base64url(text, &mut ours);
            let want = URL_SAFE_NO_PAD.decode_slice(text, &mut theirs).ok();
            proptest::prop_assert_eq!(got, want);
            if let Some(len) = got {
                proptest::prop_assert_eq!(&ours[..len], &theirs[..len]);
            }
        }

        #[test]
        fn decoder_refuses_every_non_canonical_last_character(bytes: [u8; 32], last in 0usize..64) {
            let mut text = encode_tag(&bytes);
            text[SIG_B64_LEN - 1] = B64URL[last];
            let mut ours = [0u8; 32];
            let got = decode_base64url(&text, &mut ours).map(|_| ours.to_vec());
            proptest::prop_assert_eq!(got, URL_SAFE_NO_PAD.decode(text).ok());
        }
    }

    proptest::proptest! {
        #[test]
        fn layout_integers_read_like_str_parse(value: u64, digits in 1usize..21) {
            let text = value.to_string();
            let text = &text[text.len().saturating_sub(digits)..];
            let text = text.trim_start_matches('0');
            let text = if text.is_empty() { "0" } else { text };
            let mut reader = LayoutReader { rest: text };
            proptest::prop_assert_eq!(reader.uint(), text.parse::<u64>().ok());
            proptest::prop_assert_eq!(reader.rest, "");
        }
    }

    #[test]
    fn layout_integers_at_the_edges() {
        for text in [
            "0",
            "9",
            "10",
            "99999999",
            "100000000",
            "1795706622",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "123456789012345678901",
        ] {
            let mut reader = LayoutReader { rest: text };
            assert_eq!(reader.uint(), text.parse::<u64>().ok(), "{text}");
        }
    }
    proptest::proptest! {
        #[test]
        fn encoder_matches_the_base64_crate(input in proptest::collection::vec(0u8.., 0..80)) {
            let expected = URL_SAFE_NO_PAD.encode(&input);
            let mut out = vec![0u8; base64_len(input.len())];
            encode_into(&input, &mut out);
            proptest::prop_assert_eq!(out, expected.into_bytes());
        }
    }
}

//! HS256 JSON Web Tokens (RFC 7519, signed as RFC 7515 compact JWS): [`Signer`],
//! [`Verifier`], [`Claims`], [`TokenError`].
//!
//! The wire format, the claims, the strictness rules and the error classes are the token
//! contract in `docs/design.md`; `docs/token.md` explains them and this module's speed.
//! Pure: no I/O, and time only through [`Clock`] (only [`mod@bench`] times operations).
//!
//! Files, one job each:
//! - `mod.rs`: the API: [`Signer`], [`Verifier`], [`Claims`], [`TokenBuf`],
//!   [`Validation`], [`Clock`], the defaults, and the claim checks;
//! - `error.rs`: [`TokenError`], [`ErrorClass`], [`Part`];
//! - `amr.rs`: [`Amr`], the `amr` claim (RFC 8176) as a bitset, and its rule;
//! - `mac.rs`: the keyed HMAC-SHA256 ([`hmac_sha256`], also used for CSRF tokens);
//! - `base64url.rs`: strict unpadded base64url;
//! - `layout.rs`: our fixed payload layout: the writer, and the reader fast path;
//! - `json.rs`: the strict JSON reader for every other header and payload;
//! - `bench.rs`: the benchmark workload of `latchkey token bench` and `cargo bench`.
//!
//! Verification runs on every request, so it stays close to the cost of the HMAC itself
//! and allocates nothing: the payload is decoded into a caller's [`TokenBuf`] and the
//! [`Claims`] borrow their strings from it (escapes are decoded in place). Each key's HMAC
//! is keyed once; a header equal to one we or PyJWT write picks its key without being
//! decoded; the signature is checked before the payload is parsed, so a forgery never
//! reaches JSON; our own layout is read with plain byte comparisons.

mod amr;
mod base64url;
pub mod bench;
mod error;
mod json;
mod layout;
mod mac;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use hmac::Mac;

pub use self::amr::Amr;
pub use self::error::{ErrorClass, Part, TokenError};
pub use self::mac::{HmacSha256, hmac_sha256};

use self::json::{HeaderMembers, PayloadMembers};
use self::mac::KeyedMac;
use crate::keys::KeyRing;

/// The longest token accepted, in bytes; longer ones are refused before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Room for any decoded segment of a token within [`MAX_TOKEN_LEN`].
const MAX_DECODED_LEN: usize = MAX_TOKEN_LEN / 4 * 3;

/// An HMAC-SHA256 tag: 32 bytes, 43 base64url characters.
const SIG_LEN: usize = 32;
const SIG_B64_LEN: usize = 43;

/// Room on the stack for the JSON of typical claims when signing; longer claims are
/// written into the token's own allocation.
const SIGN_STACK_LEN: usize = 512;

/// base64url of `{"alg":"HS256","typ":"JWT"}`: the header of the original design and of
/// PyJWT; a token carrying it (no `kid`) is checked with the primary key only.
const LEGACY_HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

/// The issuer (`iss`) tokens carry and are checked for unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "latchkey";
/// Seconds of clock skew tolerated unless configured otherwise.
pub const DEFAULT_LEEWAY: u64 = 30;
/// Token lifetime in seconds unless configured otherwise.
pub const DEFAULT_TTL: u64 = 3600;
/// The shortest token lifetime latchkey issues, in seconds (one minute): shorter ones
/// would expire within the clock-skew leeway and sliding would re-issue on every request.
pub const MIN_TTL: u64 = 60;
/// The longest token lifetime latchkey issues, in seconds (30 days): a token cannot be
/// taken back before it expires on a verify-only instance.
pub const MAX_TTL: u64 = 30 * 24 * 3600;

/// The claims latchkey signs and reads (the token contract in `docs/design.md`).
///
/// The strings borrow from the [`TokenBuf`] a token was verified into (`Claims<'b>`), or
/// are owned (`Claims<'static>`, from [`Claims::into_owned`] or built by hand). Compare
/// them with `==` against `&str` as usual.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Claims<'a> {
    /// The user id as a decimal string (`sub`, RFC 7519 §4.1.2).
    pub sub: Cow<'a, str>,
    /// The same id as a number (`user_id`), as the original design used.
    pub user_id: u64,
    /// The user name.
    pub name: Cow<'a, str>,
    /// The role name.
    pub role: Cow<'a, str>,
    /// Issued at, Unix seconds (`iat`, RFC 7519 §4.1.6).
    pub iat: i64,
    /// Expires at, Unix seconds (`exp`, RFC 7519 §4.1.4).
    pub exp: i64,
    /// Issuer (`iss`, RFC 7519 §4.1.1).
    pub iss: Cow<'a, str>,
    /// When the password was last entered, Unix seconds (OpenID Connect's `auth_time`).
    pub auth_time: i64,
    /// The user's token version at issue time; the store bumps it to revoke tokens.
    pub ver: u64,
    /// How the user authenticated (RFC 8176); a token without it reads as `["pwd"]`.
    #[serde(default)]
    pub amr: Amr,
    /// The login this token belongs to (`jti`, RFC 7519 §4.1.7): random, made when the
    /// password was entered and kept when the token slides, so logging out can revoke
    /// that login and nothing else. Tokens of the original design have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<Cow<'a, str>>,
}

impl Claims<'_> {
    /// The same claims owning their strings, to keep beyond the [`TokenBuf`] (a login
    /// being started, a command's output). Allocates only for borrowed strings.
    pub fn into_owned(self) -> Claims<'static> {
        Claims {
            sub: Cow::Owned(self.sub.into_owned()),
            user_id: self.user_id,
            name: Cow::Owned(self.name.into_owned()),
            role: Cow::Owned(self.role.into_owned()),
            iat: self.iat,
            exp: self.exp,
            iss: Cow::Owned(self.iss.into_owned()),
            auth_time: self.auth_time,
            ver: self.ver,
            amr: self.amr,
            jti: self.jti.map(|j| Cow::Owned(j.into_owned())),
        }
    }
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

/// Everything the verifier checks beyond the signature, stated explicitly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// The required `iss`, compared byte for byte.
    pub issuer: String,
    /// Seconds of clock skew tolerated for `exp`, `nbf`, `iat` and `auth_time`.
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

/// The room a token is decoded into: [`Verifier::verify`] decodes the payload here, and
/// the [`Claims`] it returns borrow their strings from it.
///
/// About 3 KiB (any token within [`MAX_TOKEN_LEN`] fits). Make one per worker thread or
/// loop and reuse it for every token: it needs no clearing between uses. Its contents are
/// never shown (`Debug` prints none).
#[derive(Clone)]
pub struct TokenBuf {
    segment: [u8; MAX_DECODED_LEN],
    /// Where the decimal `sub` of a token that carries only `user_id` is written.
    digits: itoa::Buffer,
}

impl TokenBuf {
    /// An empty buffer.
    pub fn new() -> TokenBuf {
        TokenBuf {
            segment: [0; MAX_DECODED_LEN],
            digits: itoa::Buffer::new(),
        }
    }
}

impl Default for TokenBuf {
    fn default() -> TokenBuf {
        TokenBuf::new()
    }
}

impl std::fmt::Debug for TokenBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenBuf")
    }
}

/// The JOSE header our tokens carry under a key (RFC 7515 §4.1), and PyJWT's order of it.
fn headers(kid: &str) -> [String; 2] {
    [
        format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
        format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#),
    ]
}

/// base64url of `json`, for the headers built once per key.
fn b64(json: &str) -> String {
    let mut out = vec![0u8; base64url::encoded_len(json.len())];
    base64url::encode_into(json.as_bytes(), &mut out);
    String::from_utf8(out).unwrap_or_default()
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
        let [ours, _] = headers(key.kid());
        let header = b64(&ours);
        Signer {
            mac: KeyedMac::new(key.bytes(), &header),
            prefix: header + ".",
        }
    }

    /// The compact JWS for `claims` (RFC 7515 §7.1): our header, the claims in our fixed
    /// layout (`layout.rs`), the HS256 tag. Makes exactly one allocation, the token.
    ///
    /// `sub` must be the decimal form of `user_id`, or the token will not verify.
    pub fn sign(&self, claims: &Claims<'_>) -> String {
        debug_assert_eq!(
            claims.sub.parse(),
            Ok(claims.user_id),
            "sub must be user_id"
        );
        let mut stack = [0u8; SIGN_STACK_LEN];
        let out = match layout::write_claims(claims, &mut stack) {
            Some(len) => {
                let json = &stack[..len];
                let mut out = vec![0u8; self.token_len(json.len())];
                self.assemble(json, &mut out);
                out
            }
            None => self.sign_long(claims),
        };
        debug_assert!(out.is_ascii());
        // SAFETY: every byte of `out` is from the base64url alphabet (the header, the
        // payload and tag encodings) or a `.`, all ASCII, so it is valid UTF-8; skipping
        // the re-validation saves a scan of the whole token on every sign.
        unsafe { String::from_utf8_unchecked(out) }
    }

    /// The length of a token whose payload JSON is `json_len` bytes.
    fn token_len(&self, json_len: usize) -> usize {
        self.prefix.len() + base64url::encoded_len(json_len) + 1 + SIG_B64_LEN
    }

    /// Writes the token for payload `json` into `out`, exactly [`Self::token_len`] long.
    fn assemble(&self, json: &[u8], out: &mut [u8]) {
        let prefix = self.prefix.len();
        let body = prefix + base64url::encoded_len(json.len());
        out[..prefix].copy_from_slice(self.prefix.as_bytes());
        base64url::encode_into(json, &mut out[prefix..body]);
        let mac = self.mac.absorb(&out[..body]);
        out[body] = b'.';
        let tag: [u8; SIG_LEN] = mac.finalize().into_bytes().into();
        base64url::encode_into(&tag, &mut out[body + 1..]);
    }

    /// Claims too long for the stack: the JSON is written behind the token in the same
    /// allocation (sized for the longest JSON they can make), which is then cut to the
    /// token. Still one allocation.
    #[cold]
    fn sign_long(&self, claims: &Claims<'_>) -> Vec<u8> {
        let most = layout::max_json_len(claims);
        let room = self.token_len(most);
        let mut out = vec![0u8; room + most];
        let (head, scratch) = out.split_at_mut(room);
        let len = match layout::write_claims(claims, scratch) {
            Some(len) => len,
            None => unreachable!("max_json_len bounds what write_claims writes"),
        };
        let token_len = self.token_len(len);
        self.assemble(&scratch[..len], &mut head[..token_len]);
        out.truncate(token_len);
        out
    }
}

/// One verification key: its kid, its keyed HMAC and the headers that name it.
#[derive(Clone)]
struct VerifyKey {
    kid: String,
    mac: KeyedMac,
    /// base64url of `{"alg":"HS256","typ":"JWT","kid":K}` (ours) and of
    /// `{"alg":"HS256","kid":K,"typ":"JWT"}` (PyJWT's sorted order).
    headers: [String; 2],
}

/// Verifies tokens against every key of a ring, under one [`Validation`].
#[derive(Clone)]
pub struct Verifier {
    /// Primary first.
    keys: Vec<VerifyKey>,
    validation: Validation,
    /// The issuer again, shared with [`TokenError::Issuer`] so refusing allocates nothing.
    issuer: Arc<str>,
}

/// The claims as found in a payload, before validation; strings borrowed from the
/// [`TokenBuf`].
#[derive(Debug, Default, PartialEq, Eq)]
struct RawClaims<'b> {
    sub: Option<&'b str>,
    /// The reader found `sub` to be the canonical decimal `user_id` already.
    sub_is_user_id: bool,
    user_id: Option<u64>,
    name: Option<&'b str>,
    role: Option<&'b str>,
    iat: Option<i64>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iss: Option<&'b str>,
    auth_time: Option<i64>,
    ver: Option<u64>,
    /// Present: the set, or why its values make none.
    amr: Option<Result<Amr, TokenError>>,
    jti: Option<&'b str>,
}

impl Verifier {
    /// Builds a verifier keyed once per key of the ring.
    pub fn new(ring: &KeyRing, validation: Validation) -> Verifier {
        let keys = ring
            .keys()
            .iter()
            .map(|key| {
                let headers = headers(key.kid()).map(|h| b64(&h));
                VerifyKey {
                    kid: key.kid().to_owned(),
                    mac: KeyedMac::new(key.bytes(), &headers[0]),
                    headers,
                }
            })
            .collect();
        let issuer = Arc::from(validation.issuer.as_str());
        Verifier {
            keys,
            validation,
            issuer,
        }
    }

    /// Checks `token` completely and returns its claims, borrowed from `buf`, which the
    /// payload is decoded into (any previous contents are overwritten). Allocates nothing.
    ///
    /// ```
    /// # use latchkey::keys::{Key, KeyRing};
    /// # use latchkey::token::{Clock, Signer, TokenBuf, Validation, Verifier};
    /// # let ring = KeyRing::new(vec![Key::new(vec![7; 32]).unwrap()]).unwrap();
    /// # let token = "not.a.token";
    /// let verifier = Verifier::new(&ring, Validation::new("latchkey", Clock::System));
    /// let mut buf = TokenBuf::new(); // once per worker, reused for every token
    /// match verifier.verify(token, &mut buf) {
    ///     Ok(claims) => println!("hello {}", claims.name),
    ///     Err(err) => println!("{}: {err}", err.class()),
    /// }
    /// ```
    ///
    /// Order: size, segments, header (alg, crit, typ, kid), base64 of payload and
    /// signature, signature (constant time), then the payload: JSON and types, `exp`,
    /// `iss`, `nbf`/`iat`/`auth_time`, expiry, identity, `name`, `role`. The first
    /// failure is returned.
    pub fn verify<'b>(&self, token: &str, buf: &'b mut TokenBuf) -> Result<Claims<'b>, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong { len: token.len() });
        }
        let TokenBuf { segment, digits } = buf;
        let (key, payload, signature) = match self.known_header(token) {
            Some((key, rest)) => {
                let (payload, signature) = split_rest(token, rest)?;
                (key, payload, signature)
            }
            None => {
                let (header, payload, signature) = split(token)?;
                (self.key_for(token, header, segment)?, payload, signature)
            }
        };
        let len = base64url::decode(payload.as_bytes(), segment).ok_or_else(|| {
            or_segments(
                token,
                TokenError::Base64 {
                    part: Part::Payload,
                },
            )
        })?;
        let mut tag = [0u8; SIG_LEN];
        decode_signature(signature, &mut tag).map_err(|err| or_segments(token, err))?;

        let signing_input = &token.as_bytes()[..token.len() - signature.len() - 1];
        let mac = key.mac.absorb(signing_input);
        mac.verify_slice(&tag).map_err(|_| TokenError::Signature)?;

        let raw = read_payload(&mut segment[..len])?;
        self.check(raw, digits)
    }

    /// The key of a token that starts with a header we (or PyJWT) write under it, or the
    /// original design's header (the primary key), then a dot; and what follows the dot.
    /// Such a header is recognised without being searched for, decoded or parsed.
    fn known_header<'t>(&self, token: &'t str) -> Option<(&VerifyKey, &'t str)> {
        let after = |header: &str| token.strip_prefix(header)?.strip_prefix('.');
        self.keys
            .iter()
            .find_map(|key| {
                key.headers
                    .iter()
                    .find_map(|h| after(h))
                    .map(|rest| (key, rest))
            })
            .or_else(|| after(LEGACY_HEADER_B64).map(|rest| (&self.keys[0], rest)))
    }

    /// The key a header that is not one of [`Self::known_header`]'s selects, refusing
    /// any header we do not accept. `buf` is room to decode it.
    #[cold]
    fn key_for(&self, token: &str, header: &str, buf: &mut [u8]) -> Result<&VerifyKey, TokenError> {
        match token.split('.').count() {
            3 => self.key_for_parsed(header, buf),
            count => Err(TokenError::Segments { count }),
        }
    }

    /// The rest of [`Self::key_for`]: decode and parse the header.
    fn key_for_parsed(&self, header: &str, buf: &mut [u8]) -> Result<&VerifyKey, TokenError> {
        let part = Part::Header;
        let len = base64url::decode(header.as_bytes(), buf).ok_or(TokenError::Base64 { part })?;
        let text = std::str::from_utf8(&buf[..len]).map_err(|_| TokenError::Utf8 { part })?;
        let mut fields = HeaderMembers::default();
        json::read_object(text, part, &mut fields)?;
        if fields.crit.is_some() {
            return Err(TokenError::Critical);
        }
        if !fields.alg.is_some_and(|alg| alg.is("HS256")) {
            return Err(TokenError::Algorithm);
        }
        if fields.typ.is_some_and(|typ| !typ.is("JWT")) {
            return Err(TokenError::Type);
        }
        match fields.kid {
            None => Ok(&self.keys[0]),
            Some(kid) => self
                .keys
                .iter()
                .find(|key| kid.is(&key.kid))
                .ok_or(TokenError::UnknownKey),
        }
    }

    /// Checks the claims of a signed payload against the validation settings; `digits`
    /// holds the decimal `sub` of a token that carries only `user_id`.
    #[inline(always)]
    fn check<'b>(
        &self,
        raw: RawClaims<'b>,
        digits: &'b mut itoa::Buffer,
    ) -> Result<Claims<'b>, TokenError> {
        let v = &self.validation;
        let now = v.clock.now();
        let leeway = i64::try_from(v.leeway).unwrap_or(i64::MAX);
        let exp = raw.exp.ok_or(TokenError::Missing { claim: "exp" })?;
        let iss = raw.iss.ok_or(TokenError::Missing { claim: "iss" })?;
        if iss != v.issuer {
            return Err(TokenError::Issuer {
                expected: Arc::clone(&self.issuer),
            });
        }
        let horizon = now.saturating_add(leeway);
        if let Some(nbf) = raw.nbf.filter(|&nbf| nbf > horizon) {
            return Err(TokenError::NotYetValid { nbf, now });
        }
        if let Some(iat) = raw.iat.filter(|&iat| iat > horizon) {
            return Err(TokenError::IssuedInFuture { iat, now });
        }
        if let Some(auth_time) = raw.auth_time.filter(|&at| at > horizon) {
            return Err(TokenError::AuthenticatedInFuture { auth_time, now });
        }
        if now >= exp.saturating_add(leeway) {
            return Err(TokenError::Expired { exp, now });
        }
        let (sub, user_id) = match (raw.sub, raw.user_id) {
            (Some(sub), Some(id)) if raw.sub_is_user_id || parse_id(sub) == Some(id) => (sub, id),
            (Some(sub), None) => match parse_id(sub) {
                Some(id) => (sub, id),
                None => return Err(TokenError::Subject),
            },
            (None, Some(id)) => (digits.format(id), id),
            (Some(_), Some(_)) => return Err(TokenError::Subject),
            (None, None) => return Err(TokenError::Missing { claim: "sub" }),
        };
        let name = raw.name.ok_or(TokenError::Missing { claim: "name" })?;
        let role = raw.role.ok_or(TokenError::Missing { claim: "role" })?;
        let amr = raw.amr.unwrap_or(Ok(Amr::PWD))?;
        let ttl = i64::try_from(v.ttl).unwrap_or(i64::MAX);
        let iat = raw.iat.unwrap_or(exp.saturating_sub(ttl));
        Ok(Claims {
            sub: Cow::Borrowed(sub),
            user_id,
            name: Cow::Borrowed(name),
            role: Cow::Borrowed(role),
            iat,
            exp,
            iss: Cow::Borrowed(iss),
            auth_time: raw.auth_time.unwrap_or(iat),
            ver: raw.ver.unwrap_or(0),
            amr,
            jti: raw.jti.map(Cow::Borrowed),
        })
    }
}

/// Reads a signed payload (decoded into `json`): our layout by the fast path, anything
/// else by the strict reader, unescaping strings in place.
#[inline(always)]
fn read_payload(json: &mut [u8]) -> Result<RawClaims<'_>, TokenError> {
    let utf8 = TokenError::Utf8 {
        part: Part::Payload,
    };
    if let Some(found) = layout::read(json) {
        let text = if found.ascii {
            debug_assert!(json.is_ascii());
            // SAFETY: the layout reader matched every byte of `json` (fixed text, digits,
            // strings) and saw only ASCII, which is UTF-8.
            unsafe { std::str::from_utf8_unchecked(json) }
        } else {
            std::str::from_utf8(json).map_err(|_| utf8)?
        };
        return Ok(RawClaims {
            sub: text.get(found.sub),
            sub_is_user_id: true,
            user_id: Some(found.user_id),
            name: text.get(found.name),
            role: text.get(found.role),
            iat: Some(found.iat),
            exp: Some(found.exp),
            nbf: None,
            iss: text.get(found.iss),
            auth_time: Some(found.auth_time),
            ver: Some(found.ver),
            amr: found.amr.map(Ok),
            jti: found.jti.and_then(|range| text.get(range)),
        });
    }
    read_payload_strictly(json)
}

/// [`read_payload`] for a payload not in our layout: the strict reader.
#[inline(never)]
fn read_payload_strictly(json: &mut [u8]) -> Result<RawClaims<'_>, TokenError> {
    let utf8 = TokenError::Utf8 {
        part: Part::Payload,
    };
    let text = std::str::from_utf8(json).map_err(|_| utf8)?;
    let mut m = PayloadMembers::default();
    json::read_object(text, Part::Payload, &mut m)?;
    let [sub, name, role, iss, jti] =
        json::unescape_strs(json, [m.sub, m.name, m.role, m.iss, m.jti]);
    Ok(RawClaims {
        sub,
        sub_is_user_id: false,
        user_id: m.user_id,
        name,
        role,
        iat: m.iat,
        exp: m.exp,
        nbf: m.nbf,
        iss,
        auth_time: m.auth_time,
        ver: m.ver,
        amr: m.amr,
        jti,
    })
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
    if header.is_empty() {
        return Err(empty_segment(token, Part::Header));
    }
    let (payload, signature) = split_rest(token, rest)?;
    Ok((header, payload, signature))
}

/// Splits what follows a token's first dot (`rest`) into payload and signature, at the
/// dot before a 43-character signature (or at its last dot).
fn split_rest<'t>(token: &str, rest: &'t str) -> Result<(&'t str, &'t str), TokenError> {
    // The signature is almost always 43 characters: look there before searching.
    let at = match rest.len().checked_sub(SIG_B64_LEN + 1) {
        Some(at) if rest.as_bytes()[at] == b'.' => at,
        _ => rest.rfind('.').ok_or_else(|| segments(token))?,
    };
    let (payload, signature) = (&rest[..at], &rest[at + 1..]);
    if payload.is_empty() {
        return Err(empty_segment(token, Part::Payload));
    }
    if signature.is_empty() {
        return Err(empty_segment(token, Part::Signature));
    }
    Ok((payload, signature))
}

/// The error for an empty segment: [`TokenError::Segments`] when there are not three.
#[cold]
fn empty_segment(token: &str, part: Part) -> TokenError {
    match token.split('.').count() {
        3 => TokenError::EmptySegment { part },
        count => TokenError::Segments { count },
    }
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

/// Decodes the signature; a canonical segment of the wrong length is a bad signature.
fn decode_signature(segment: &str, tag: &mut [u8; SIG_LEN]) -> Result<(), TokenError> {
    let bad = TokenError::Base64 {
        part: Part::Signature,
    };
    if segment.len() == SIG_B64_LEN {
        return base64url::decode(segment.as_bytes(), tag)
            .map(drop)
            .ok_or(bad);
    }
    decode_odd_signature(segment).map_or(Err(bad), |()| Err(TokenError::Signature))
}

/// Whether a signature segment that cannot be a 32-byte tag is at least canonical.
#[cold]
fn decode_odd_signature(segment: &str) -> Option<()> {
    let mut buf = [0u8; MAX_DECODED_LEN];
    base64url::decode(segment.as_bytes(), &mut buf).map(drop)
}

/// Characters of a token's signature segment that name it ([`token_id`]).
pub const TOKEN_ID_LEN: usize = 22;

/// The id of one signed token: the first [`TOKEN_ID_LEN`] characters (132 bits) of its
/// signature segment, unique to the token (an HMAC-SHA256 output) and never a secret
/// (the token carries it). `None` when the token has no signature segment that long.
/// Logging out revokes the presented token by this id.
pub fn token_id(token: &str) -> Option<&str> {
    let (_, signature) = token.rsplit_once('.')?;
    signature.get(..TOKEN_ID_LEN).filter(|s| {
        s.len() == TOKEN_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Key;

    fn ring() -> KeyRing {
        KeyRing::new(vec![
            Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).expect("key"),
        ])
        .expect("ring")
    }

    fn sample() -> Claims<'static> {
        Claims {
            sub: "42".into(),
            user_id: 42,
            name: "ann".into(),
            role: "user".into(),
            iat: 1,
            exp: 2,
            iss: "latchkey".into(),
            auth_time: 1,
            ver: 0,
            amr: Amr::PWD,
            jti: None,
        }
    }

    #[test]
    fn our_tokens_take_the_first_block_shortcut() {
        let ring = ring();
        let token = Signer::new(&ring).sign(&sample());
        let header = b64(&headers(ring.primary().kid())[0]);
        let keyed = KeyedMac::new(ring.primary().bytes(), &header);
        assert_eq!(&token.as_bytes()[..64], keyed.first_block());
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
    fn long_claims_sign_and_verify() {
        let ring = ring();
        let mut claims = sample();
        claims.exp = i64::MAX;
        claims.name = "\"n\u{1}".repeat(100).into();
        let token = Signer::new(&ring).sign(&claims);
        let verifier = Verifier::new(&ring, Validation::new("latchkey", Clock::Fixed(1)));
        assert_eq!(verifier.verify(&token, &mut TokenBuf::new()), Ok(claims));
    }

    #[test]
    fn a_token_with_only_user_id_gets_its_sub_from_the_buffer() {
        let ring = ring();
        let header = b64(&headers(ring.primary().kid())[0]);
        let payload = b64(r#"{"user_id":7,"name":"a","role":"r","exp":100,"iss":"latchkey"}"#);
        let input = format!("{header}.{payload}");
        let mut mac = hmac_sha256(ring.primary().bytes());
        mac.update(input.as_bytes());
        let tag: [u8; 32] = mac.finalize().into_bytes().into();
        let token = format!("{input}.{}", b64_bytes(&tag));
        let verifier = Verifier::new(&ring, Validation::new("latchkey", Clock::Fixed(1)));
        let mut buf = TokenBuf::new();
        let claims = verifier.verify(&token, &mut buf).expect("valid");
        assert_eq!(
            (&*claims.sub, claims.user_id, claims.amr),
            ("7", 7, Amr::PWD)
        );
    }

    fn b64_bytes(bytes: &[u8]) -> String {
        let mut out = vec![0u8; base64url::encoded_len(bytes.len())];
        base64url::encode_into(bytes, &mut out);
        String::from_utf8(out).expect("ASCII")
    }
}

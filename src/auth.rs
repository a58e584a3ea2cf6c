//! The login cycle around every handler: **before** (find and verify the token, check
//! it against the store) and **after** (issue, slide or clear the cookie), plus the
//! cookie strings and the CSRF tokens of forms.
//!
//! CSRF design (signed double-submit): every visitor gets a random `csrf` cookie
//! (HttpOnly, SameSite=Strict) the first time a form is shown. A form carries
//! `base64url(HMAC(csrf_key, cookie || "|" || sub))`, where `csrf_key` is derived from
//! the primary signing key (so every instance agrees) and `sub` is the logged-in user
//! or `-`. A POST is accepted only when the field matches the cookie it was made for,
//! so another site can neither read nor forge it, and a token made before login is
//! useless after it.
//!
//! Between the two steps of a login with a second factor the browser holds one more
//! value, the `login_step` cookie: `<user id>.<ver>.<expiry>.<tag>`, where the tag is
//! `base64url(HMAC(step_key, "<user id>.<ver>.<expiry>|" || csrf cookie))` and
//! `step_key` is derived from the primary signing key under its own label. It says
//! "this browser gave this user's password at most 5 minutes ago" and nothing else:
//! only `/login/totp` reads it (it is sent to no other path); it is not a token (not a
//! JWT, and its MAC is under a key no token, CSRF field or flash is made with), so no
//! other route and no verifier accepts it; it is void once the user's token version
//! moves (password changed, sessions ended, factor reset) and in any browser but the
//! one holding the CSRF cookie it was made for.

use std::cell::RefCell;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use sha2::Sha256;

use crate::http::{Login, Reply, Request};
use crate::keys::KeyRing;
use crate::store::{ReadError, SessionCache, StoreError, User, UserStore};
use crate::token::{
    Amr, Claims, ErrorClass, HmacSha256, Signer, TOKEN_ID_LEN, TokenBuf, TokenError, Verifier,
    hmac_sha256,
};

/// Name of the CSRF cookie.
pub const CSRF_COOKIE: &str = "csrf";
/// Name of the CSRF form field.
pub const CSRF_FIELD: &str = "csrf";
/// Name of the one-shot notice cookie.
pub const FLASH_COOKIE: &str = "flash";
/// Name of the cookie held between the password and the code of a login.
pub const LOGIN_STEP_COOKIE: &str = "login_step";
/// The only path the `login_step` cookie is sent to.
pub const LOGIN_STEP_PATH: &str = "/login/totp";
/// Seconds the second step of a login may come after the first.
pub const LOGIN_STEP_TTL: i64 = 300;

/// Between the prefill and the text of a flash payload.
const FLASH_SEPARATOR: u8 = 0x1f;
/// Bytes of the flash cookie's MAC kept (128 bits).
const FLASH_TAG_LEN: usize = 16;

/// A one-shot notice carried across a redirect by the signed `flash` cookie, so a form
/// answers with a redirect (Post/Redirect/Get) and a reload never submits it again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports a failure.
    pub error: bool,
    /// The sentence to show.
    pub text: String,
    /// A value to put back into the form (the user name typed), or empty.
    pub prefill: String,
}

impl Flash {
    /// Good news.
    pub fn info(text: impl Into<String>) -> Flash {
        Flash {
            error: false,
            text: text.into(),
            prefill: String::new(),
        }
    }

    /// A failure.
    pub fn error(text: impl Into<String>) -> Flash {
        Flash {
            error: true,
            text: text.into(),
            prefill: String::new(),
        }
    }

    /// With `value` to put back into the form.
    pub fn prefill(mut self, value: &str) -> Flash {
        self.prefill = value.to_string();
        self
    }
}

/// Cookie and lifetime settings shared by all workers.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The token cookie's name.
    pub cookie_name: String,
    /// `Domain` attribute, when set.
    pub cookie_domain: Option<String>,
    /// `Secure` attribute.
    pub cookie_secure: bool,
    /// Token lifetime, seconds.
    pub ttl: u64,
    /// Seconds after `auth_time` beyond which a token neither slides nor is accepted.
    pub absolute_limit: u64,
    /// The `iss` claim.
    pub issuer: String,
}

/// Where the token of a request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The token cookie: slid and cleared by the after step.
    Cookie,
    /// `Authorization: Bearer`: never answered with cookies.
    Bearer,
}

/// Who is asking, as decided by the before step.
// One per request, on the stack: boxing the larger variant would cost an allocation
// on every logged-in request to save a few dozen bytes of stack.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Visitor<'b> {
    /// A verified user.
    User {
        /// The token's claims, with the store's current name and role.
        claims: Claims<'b>,
        /// Where the token came from.
        source: Source,
        /// The store's name or role differs from the token's: re-issue it.
        stale: bool,
        /// An administrator reset the password and the user must choose a new one
        /// before anything else (known only where the store is).
        must_change: bool,
        /// Whether the store vouched for the token. False when the store could not be
        /// read (a PostgreSQL server away, a store file that cannot be opened): the token
        /// was taken on its signature alone, as a verify-only instance takes it, and is
        /// never slid (a revocation made meanwhile cannot be seen).
        checked: bool,
        /// Whether the user has a second factor; `None` where there is no store to ask
        /// (also while the store cannot be read).
        second_factor: Option<bool>,
        /// The login logging out revokes (see [`LoginKey`]).
        login: LoginKey,
    },
    /// No usable token; `rejected` says why one was refused, if one was sent.
    Anonymous {
        /// The class of the refused token.
        rejected: Option<ErrorClass>,
        /// Where the refused token came from.
        source: Option<Source>,
    },
}

impl<'b> Visitor<'b> {
    /// The claims of a logged-in visitor.
    pub fn claims(&self) -> Option<&Claims<'b>> {
        match self {
            Visitor::User { claims, .. } => Some(claims),
            Visitor::Anonymous { .. } => None,
        }
    }

    /// Whether this user must change their password before using anything else.
    pub fn must_change_password(&self) -> bool {
        matches!(
            self,
            Visitor::User {
                must_change: true,
                ..
            }
        )
    }

    /// Whether this user has a second factor (`None` when not logged in, or where no
    /// store can tell).
    pub fn second_factor(&self) -> Option<bool> {
        match self {
            Visitor::User { second_factor, .. } => *second_factor,
            Visitor::Anonymous { .. } => None,
        }
    }

    /// The login of the token that identified this user (what logging out revokes).
    pub fn login(&self) -> Option<&LoginKey> {
        match self {
            Visitor::User { login, .. } => Some(login),
            Visitor::Anonymous { .. } => None,
        }
    }

    /// The class of the token this visitor sent and was refused, if any.
    pub fn rejected(&self) -> Option<ErrorClass> {
        match self {
            Visitor::Anonymous { rejected, .. } => *rejected,
            Visitor::User { .. } => None,
        }
    }
}

/// A token that verified, as [`Auth::identify`] builds its visitor from it.
struct Checked<'b> {
    claims: Claims<'b>,
    stale: bool,
    must_change: bool,
    checked: bool,
    second_factor: Option<bool>,
}

/// What a valid `login_step` cookie says: this user's password was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginStep {
    /// The user whose password it was.
    pub user_id: u64,
    /// Their token version then.
    pub ver: u64,
}

/// The `login_step` cookies of a request, judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepCookie {
    /// None was sent.
    Absent,
    /// One is valid for this browser, now.
    Valid(LoginStep),
    /// One was sent but none is valid (expired, altered, another browser's).
    Refused,
}

/// One worker's login machinery: its own keyed verifier and signer (no locks on
/// the hot path) and a handle to the shared store, when this instance has one.
#[derive(Clone)]
pub struct Auth {
    verifier: Verifier,
    signer: Signer,
    csrf_key: HmacSha256,
    step_key: HmacSha256,
    store: Option<Arc<UserStore>>,
    sessions: Sessions,
    decoding: Decoding,
    policy: Arc<Policy>,
}

/// This worker's [`SessionCache`]; a clone (another worker) starts with an empty one.
#[derive(Default)]
struct Sessions(RefCell<SessionCache>);

impl Clone for Sessions {
    fn clone(&self) -> Sessions {
        Sessions::default()
    }
}

/// This worker's room to decode tokens into (3 KiB, made once instead of per request);
/// a clone (another worker) gets its own.
#[derive(Default)]
struct Decoding(RefCell<Box<TokenBuf>>);

impl Clone for Decoding {
    fn clone(&self) -> Decoding {
        Decoding::default()
    }
}

impl Auth {
    /// Builds the machinery from a key ring; `verifier` carries the validation rules.
    pub fn new(
        ring: &KeyRing,
        verifier: Verifier,
        store: Option<Arc<UserStore>>,
        policy: Policy,
    ) -> Auth {
        let derive = |label: &[u8]| {
            let mut derive = hmac_sha256(ring.primary().bytes());
            derive.update(label);
            hmac_sha256(&derive.finalize().into_bytes())
        };
        Auth {
            verifier,
            signer: Signer::new(ring),
            csrf_key: derive(b"latchkey csrf key v1"),
            step_key: derive(b"latchkey login step key v1"),
            store,
            sessions: Sessions::default(),
            decoding: Decoding::default(),
            policy: Arc::new(policy),
        }
    }

    /// The user store, when this instance holds one.
    pub fn store(&self) -> Option<&UserStore> {
        self.store.as_deref()
    }

    /// A shared handle to the user store, for the server's other threads (the control
    /// socket).
    pub fn store_handle(&self) -> Option<Arc<UserStore>> {
        self.store.clone()
    }

    /// The tokens a request carries, in the order they are tried: every non-empty
    /// `token` cookie (browsers send all cookies whose domain and path match, so a stale
    /// one from a parent domain or another path may come first), or else the bearer
    /// token of `Authorization`.
    pub fn tokens<'s, 'r>(
        &'s self,
        req: &'r Request<'_>,
    ) -> impl Iterator<Item = (&'r str, Source)> + use<'s, 'r> {
        let mut cookies = req
            .cookies(&self.policy.cookie_name)
            .filter(|t| !t.is_empty())
            .peekable();
        let bearer = if cookies.peek().is_none() {
            req.bearer()
        } else {
            None
        };
        cookies
            .map(|t| (t, Source::Cookie))
            .chain(bearer.map(|t| (t, Source::Bearer)))
    }

    /// This worker's buffer for [`Self::identify`], held for one request (the visitor's
    /// claims borrow from it).
    pub fn token_buf(&self) -> std::cell::RefMut<'_, TokenBuf> {
        std::cell::RefMut::map(self.decoding.0.borrow_mut(), |buf| &mut **buf)
    }

    /// The before step: the first token of the request that verifies and that the store
    /// still honours identifies the visitor; when none does, the visitor is anonymous
    /// and the first refusal says why. A store failure is returned as an error (answered
    /// 503), never as a login. Tokens are decoded into `buf`, which the visitor's claims
    /// borrow from.
    pub fn identify<'b>(
        &self,
        req: &Request,
        now: i64,
        buf: &'b mut TokenBuf,
    ) -> Result<Visitor<'b>, StoreError> {
        let mut refused: Option<(ErrorClass, Source)> = None;
        let mut tokens = self.tokens(req);
        let chosen = match (tokens.next(), tokens.next()) {
            (None, _) => None,
            // The usual case: one token, read into the buffer once.
            (Some(only), None) => Some(only),
            // Several: each is judged first (the buffer is reused), then the one that
            // identifies is read into it for good.
            (Some(_), Some(_)) => {
                let mut first: Option<((&str, Source), u64)> = None;
                let mut users_differ = false;
                for (token, source) in self.tokens(req) {
                    match self.check(token, now, &mut *buf)? {
                        Ok(Checked { claims, .. }) => match first {
                            None => first = Some(((token, source), claims.user_id)),
                            Some((_, user)) => users_differ |= user != claims.user_id,
                        },
                        Err(class) => {
                            refused.get_or_insert((class, source));
                        }
                    }
                }
                if users_differ {
                    // Tokens of two users at once: a token set by another site on a
                    // shared domain (cookie tossing) must not decide who this is, and
                    // there is no telling which cookie is whose, so nobody is logged
                    // in and nothing is cleared or slid.
                    crate::log::debug("a request carried valid tokens of different users");
                    return Ok(Visitor::Anonymous {
                        rejected: None,
                        source: None,
                    });
                }
                first.map(|(candidate, _)| candidate)
            }
        };
        if let Some((token, source)) = chosen {
            return Ok(match self.check(token, now, buf)? {
                Ok(Checked {
                    claims,
                    stale,
                    must_change,
                    checked,
                    second_factor,
                }) => Visitor::User {
                    login: LoginKey::of(&claims),
                    claims,
                    source,
                    stale,
                    must_change,
                    checked,
                    second_factor,
                },
                Err(class) => {
                    let (class, source) = *refused.get_or_insert((class, source));
                    Visitor::Anonymous {
                        rejected: Some(class),
                        source: Some(source),
                    }
                }
            });
        }
        Ok(Visitor::Anonymous {
            rejected: refused.map(|(class, _)| class),
            source: refused.map(|(_, source)| source),
        })
    }

    /// Verifies one token (decoding it into `buf`) and checks it against the store: the
    /// claims (with the store's current name and role), whether they differ from the
    /// token's, whether the user must change the password, and whether they have a
    /// second factor (`None` without a store); or the class of the refusal.
    fn check<'b>(
        &self,
        token: &str,
        now: i64,
        buf: &'b mut TokenBuf,
    ) -> Result<Result<Checked<'b>, ErrorClass>, StoreError> {
        let mut claims = match self.verifier.verify(token, buf) {
            Ok(claims) => claims,
            Err(e) => return Ok(Err(e.class())),
        };
        if now
            >= claims
                .auth_time
                .saturating_add(self.policy.absolute_limit as i64)
        {
            return Ok(Err(ErrorClass::Expired));
        }
        let mut stale = false;
        let mut must_change = false;
        let mut second_factor = None;
        if let Some(store) = &self.store {
            // A token logged out of is refused like a revoked one, here where the store
            // is (verify-only instances cannot know); also while the store cannot be
            // read, from the list this instance holds.
            if store.is_token_revoked(LoginKey::of(&claims).as_str(), now) {
                return Ok(Err(TokenError::Revoked.class()));
            }
            let mut sessions = self.sessions.0.borrow_mut();
            let state = match store.session_state_cached(claims.user_id, &mut sessions) {
                Ok(state) => state,
                // A damaged record cannot vouch for the token: refused like a revoked one.
                Err(ReadError::DamagedRecord(_)) => None,
                // The store cannot be read right now: the token is taken on its signature
                // alone, as a verify-only instance takes it (never slid), so verification
                // goes on while the store is away.
                Err(ReadError::Unavailable(_)) => {
                    return Ok(Ok(Checked {
                        claims,
                        stale: false,
                        must_change: false,
                        checked: false,
                        second_factor: None,
                    }));
                }
            };
            match state {
                Some(state) if !state.locked && state.ver == claims.ver => {
                    must_change = state.must_change_password;
                    second_factor = Some(state.totp);
                    if state.role != claims.role || state.name != claims.name {
                        claims.role = state.role.clone().into();
                        claims.name = state.name.clone().into();
                        stale = true;
                    }
                }
                _ => return Ok(Err(TokenError::Revoked.class())),
            }
        }
        Ok(Ok(Checked {
            claims,
            stale,
            must_change,
            checked: true,
            second_factor,
        }))
    }

    /// Fresh claims for `user`, who has just logged in the way `amr` says ([`Amr::PWD`],
    /// or [`Amr::PWD_OTP`] after a code): a new login, with a new random `jti` that names
    /// it until it ends.
    pub fn claims_for(&self, user: &User, now: i64, amr: Amr) -> Claims<'static> {
        Claims {
            sub: user.id.to_string().into(),
            user_id: user.id,
            name: user.name.clone().into(),
            role: user.role.clone().into(),
            iat: now,
            exp: now + self.policy.ttl as i64,
            iss: self.policy.issuer.clone().into(),
            auth_time: now,
            ver: user.ver,
            amr,
            jti: Some(new_nonce().into()),
        }
    }

    /// Signs claims.
    pub fn sign(&self, claims: &Claims) -> String {
        self.signer.sign(claims)
    }

    /// The after step: adds the one token `Set-Cookie` the reply needs, if any.
    /// Logout wins over everything; a fresh login comes next; then sliding, which only
    /// an instance holding the store does: a verify-only instance cannot tell whether
    /// the user was revoked, so it must not extend a token's life.
    pub fn finish(&self, visitor: &Visitor, reply: &mut Reply, now: i64) {
        let cookie = match (&reply.login, visitor) {
            (Login::End, _) => Some(self.clear_cookie()),
            (Login::Start(claims), _) => {
                Some(self.token_cookie(&self.sign(claims), claims.exp - now))
            }
            (
                Login::Keep,
                Visitor::User {
                    claims,
                    source: Source::Cookie,
                    stale,
                    checked: true,
                    ..
                },
            ) if self.store.is_some() => self.slide(claims, *stale, now).map(|fresh| {
                let max_age = fresh.exp - now;
                self.token_cookie(&self.sign(&fresh), max_age)
            }),
            (
                Login::Keep,
                Visitor::Anonymous {
                    rejected: Some(_),
                    source: Some(Source::Cookie),
                },
            ) => Some(self.clear_cookie()),
            (Login::Keep, _) => None,
        };
        if let Some(cookie) = cookie {
            reply.headers.push(("Set-Cookie", cookie));
        }
    }

    /// The re-issued claims when the token is due: less than half its lifetime is
    /// left, or the store changed the name or role. Never past the absolute limit.
    pub fn slide<'b>(&self, claims: &Claims<'b>, stale: bool, now: i64) -> Option<Claims<'b>> {
        let due = claims.exp - now < (self.policy.ttl / 2) as i64;
        if !due && !stale {
            return None;
        }
        let limit = claims
            .auth_time
            .saturating_add(self.policy.absolute_limit as i64);
        let exp = (now + self.policy.ttl as i64).min(limit);
        if exp <= now || (exp <= claims.exp && !stale) {
            return None;
        }
        Some(Claims {
            iat: now,
            exp,
            ..claims.clone()
        })
    }

    /// `Set-Cookie` value carrying a token.
    pub fn token_cookie(&self, token: &str, max_age: i64) -> String {
        self.cookie(&self.policy.cookie_name, token, Some(max_age.max(0)), "Lax")
    }

    /// `Set-Cookie` value deleting the token cookie.
    pub fn clear_cookie(&self) -> String {
        self.cookie(&self.policy.cookie_name, "", Some(0), "Lax")
    }

    /// `Set-Cookie` value carrying `flash` to the page a redirect answering `req` leads
    /// to: the notice and the value to put back in the form, signed with the CSRF key
    /// and bound to the visitor's CSRF cookie (so neither another site on a shared domain
    /// nor another visitor can put its text on this visitor's pages), for 2 min.
    pub fn flash_cookie(&self, req: &Request, flash: &Flash) -> String {
        let nonce = req
            .cookies(CSRF_COOKIE)
            .find(|c| valid_nonce(c))
            .unwrap_or("");
        let mut payload = Vec::with_capacity(2 + flash.prefill.len() + flash.text.len());
        payload.push(if flash.error { b'e' } else { b'i' });
        payload.extend(
            flash
                .prefill
                .bytes()
                .filter(|&b| b != FLASH_SEPARATOR)
                .take(64),
        );
        payload.push(FLASH_SEPARATOR);
        payload.extend(
            flash
                .text
                .bytes()
                .filter(|&b| b != FLASH_SEPARATOR)
                .take(512),
        );
        let tag = self.flash_mac(&payload, nonce).finalize().into_bytes();
        let value = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(&tag[..FLASH_TAG_LEN])
        );
        self.cookie(FLASH_COOKIE, &value, Some(120), "Lax")
    }

    /// `Set-Cookie` value deleting the flash cookie once its page was shown.
    pub fn clear_flash_cookie(&self) -> String {
        self.cookie(FLASH_COOKIE, "", Some(0), "Lax")
    }

    /// The flash a request carries, when one of its `flash` cookies is ours, intact, and
    /// made for this visitor (one of its CSRF cookies, or none when it has none).
    pub fn read_flash(&self, req: &Request) -> Option<Flash> {
        req.cookies(FLASH_COOKIE).find_map(|value| {
            let (payload, tag) = value.split_once('.')?;
            let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
            let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
            if tag.len() != FLASH_TAG_LEN {
                return None;
            }
            let made_here = req
                .cookies(CSRF_COOKIE)
                .chain(std::iter::once(""))
                .any(|nonce| {
                    self.flash_mac(&payload, nonce)
                        .verify_truncated_left(&tag)
                        .is_ok()
                });
            if !made_here {
                return None;
            }
            let (&kind, rest) = payload.split_first()?;
            let at = rest.iter().position(|&b| b == FLASH_SEPARATOR)?;
            Some(Flash {
                error: kind == b'e',
                prefill: String::from_utf8_lossy(&rest[..at]).into_owned(),
                text: String::from_utf8_lossy(&rest[at + 1..]).into_owned(),
            })
        })
    }

    /// HMAC(csrf_key, "flash|" || nonce || "|" || payload); the nonce is a CSRF cookie
    /// (22 base64url characters) or empty, so the fields cannot run into each other.
    fn flash_mac(&self, payload: &[u8], nonce: &str) -> HmacSha256 {
        let mut mac = self.csrf_key.clone();
        mac.update(b"flash|");
        mac.update(nonce.as_bytes());
        mac.update(b"|");
        mac.update(payload);
        mac
    }

    /// A cookie with our attributes; `max_age: None` makes a browser-session cookie.
    fn cookie(&self, name: &str, value: &str, max_age: Option<i64>, same_site: &str) -> String {
        self.cookie_at(name, value, "/", max_age, same_site)
    }

    /// A cookie with our attributes, sent only to `path` and below.
    fn cookie_at(
        &self,
        name: &str,
        value: &str,
        path: &str,
        max_age: Option<i64>,
        same_site: &str,
    ) -> String {
        let mut c = format!("{name}={value}; Path={path}");
        if let Some(max_age) = max_age {
            c.push_str(&format!("; Max-Age={max_age}"));
        }
        c.push_str("; HttpOnly; SameSite=");
        c.push_str(same_site);
        if self.policy.cookie_secure {
            c.push_str("; Secure");
        }
        if let Some(domain) = &self.policy.cookie_domain {
            c.push_str("; Domain=");
            c.push_str(domain);
        }
        c
    }

    /// `Set-Cookie` value carrying the `login_step` value for `user`, whose password was
    /// just accepted, bound to the CSRF cookie `nonce` (the one the login form was sent
    /// with) and valid for [`LOGIN_STEP_TTL`] seconds from `now`.
    pub fn login_step_cookie(&self, user: &User, nonce: &str, now: i64) -> String {
        let fields = format!("{}.{}.{}", user.id, user.ver, now + LOGIN_STEP_TTL);
        let tag = self.step_mac(&fields, nonce).finalize().into_bytes();
        let value = format!("{fields}.{}", URL_SAFE_NO_PAD.encode(tag));
        self.cookie_at(
            LOGIN_STEP_COOKIE,
            &value,
            LOGIN_STEP_PATH,
            Some(LOGIN_STEP_TTL),
            "Strict",
        )
    }

    /// `Set-Cookie` value deleting the `login_step` cookie.
    pub fn clear_login_step_cookie(&self) -> String {
        self.cookie_at(LOGIN_STEP_COOKIE, "", LOGIN_STEP_PATH, Some(0), "Strict")
    }

    /// The request's `login_step` cookies, judged at `now` against its CSRF cookies.
    pub fn login_step(&self, req: &Request, now: i64) -> StepCookie {
        let mut sent = false;
        for value in req.cookies(LOGIN_STEP_COOKIE) {
            sent = true;
            if let Some(step) = self.valid_step(req, value, now) {
                return StepCookie::Valid(step);
            }
        }
        if sent {
            StepCookie::Refused
        } else {
            StepCookie::Absent
        }
    }

    /// The step `value` stands for, when its MAC matches one of the request's CSRF
    /// cookies (constant time) and it has not expired.
    fn valid_step(&self, req: &Request, value: &str, now: i64) -> Option<LoginStep> {
        let (fields, tag) = value.rsplit_once('.')?;
        let mut parts = fields.split('.');
        let mut number = || -> Option<u64> {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 20 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let (user_id, ver, expiry) = (number()?, number()?, number()?);
        if parts.next().is_some() {
            return None;
        }
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        let bound = req
            .cookies(CSRF_COOKIE)
            .any(|nonce| self.step_mac(fields, nonce).verify_slice(&tag).is_ok());
        let fresh = i64::try_from(expiry).is_ok_and(|e| now < e);
        (bound && fresh).then_some(LoginStep { user_id, ver })
    }

    fn step_mac(&self, fields: &str, nonce: &str) -> HmacSha256 {
        let mut mac = self.step_key.clone();
        mac.update(fields.as_bytes());
        mac.update(b"|");
        mac.update(nonce.as_bytes());
        mac
    }

    /// The CSRF field value for a form shown to this visitor (made for the first
    /// well-formed `csrf` cookie), and the `Set-Cookie` to send when the visitor has none.
    pub fn csrf_for(&self, req: &Request, visitor: &Visitor) -> (String, Option<String>) {
        match req.cookies(CSRF_COOKIE).find(|c| valid_nonce(c)) {
            Some(nonce) => (self.csrf_token(nonce, visitor), None),
            None => {
                let nonce = new_nonce();
                let token = self.csrf_token(&nonce, visitor);
                (
                    token,
                    Some(self.cookie(CSRF_COOKIE, &nonce, None, "Strict")),
                )
            }
        }
    }

    /// Whether a POSTed CSRF field matches one of this visitor's `csrf` cookies
    /// (constant time per cookie): a stale cookie of the same name from another path or
    /// a parent domain must not make every form fail.
    pub fn csrf_ok(&self, req: &Request, visitor: &Visitor, field: Option<&str>) -> bool {
        self.csrf_nonce(req, visitor, field).is_some()
    }

    /// The `csrf` cookie a POSTed CSRF field was made for, when it matches one
    /// (constant time per cookie): what the `login_step` value is bound to.
    pub fn csrf_nonce<'r>(
        &self,
        req: &'r Request,
        visitor: &Visitor,
        field: Option<&str>,
    ) -> Option<&'r str> {
        let tag = field.and_then(|f| URL_SAFE_NO_PAD.decode(f).ok())?;
        req.cookies(CSRF_COOKIE)
            .find(|nonce| self.csrf_mac(nonce, visitor).verify_slice(&tag).is_ok())
    }

    fn csrf_token(&self, nonce: &str, visitor: &Visitor) -> String {
        URL_SAFE_NO_PAD.encode(self.csrf_mac(nonce, visitor).finalize().into_bytes())
    }

    /// HMAC(csrf_key, nonce || "|" || sub), the value a form must carry.
    fn csrf_mac(&self, nonce: &str, visitor: &Visitor) -> HmacSha256 {
        let mut mac = self.csrf_key.clone();
        mac.update(nonce.as_bytes());
        mac.update(b"|");
        mac.update(subject(visitor).as_bytes());
        mac
    }
}

fn subject<'v>(visitor: &'v Visitor<'_>) -> &'v str {
    visitor.claims().map_or("-", |c| &c.sub)
}

fn valid_nonce(nonce: &str) -> bool {
    nonce.len() == 22
        && nonce
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A new login's id (the `jti` claim): 128 random bits as 22 base64url characters.
pub fn new_login_id() -> String {
    new_nonce()
}

/// Whether `jti` is a login id as [`new_login_id`] makes them (22 base64url characters):
/// only those name logins in the revocation list; any other token is named by its
/// signature.
fn is_login_id(jti: &str) -> bool {
    jti.len() == TOKEN_ID_LEN
        && jti
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The name a login is revoked by when its holder logs out: the user's id, `/`, then
/// the login's id (`jti`, made when the password was entered and kept when the token
/// slides), or, for a token without one (the original design's), `@` and the moment
/// the password was entered (`<user_id>/@<auth_time>`), which its slid tokens keep too.
/// The user's id comes first so that the store can bound the entries of one user. Made
/// on the stack: the per-request check allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginKey {
    text: [u8; LoginKey::MAX],
    len: u8,
}

impl LoginKey {
    /// The longest key: 20 digits, `/`, then a `jti` or `@`, a sign and 19 digits.
    const MAX: usize = 20 + 1 + if TOKEN_ID_LEN > 21 { TOKEN_ID_LEN } else { 21 };

    /// The login of `claims`.
    pub fn of(claims: &Claims<'_>) -> LoginKey {
        let mut key = LoginKey {
            text: [0; LoginKey::MAX],
            len: 0,
        };
        key.push(itoa::Buffer::new().format(claims.user_id).as_bytes());
        key.push(b"/");
        match claims.jti.as_deref().filter(|j| is_login_id(j)) {
            Some(jti) => key.push(jti.as_bytes()),
            None => {
                key.push(b"@");
                key.push(itoa::Buffer::new().format(claims.auth_time).as_bytes());
            }
        }
        key
    }

    fn push(&mut self, bytes: &[u8]) {
        let at = usize::from(self.len);
        let end = (at + bytes.len()).min(LoginKey::MAX);
        self.text[at..end].copy_from_slice(&bytes[..end - at]);
        self.len = end as u8;
    }

    /// The key as text (ASCII by construction).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or("")
    }
}

fn new_nonce() -> String {
    let mut bytes = [0u8; 16];
    // getrandom fails only when the OS has no entropy source at all; then fall back
    // to a hash of the time and a counter, which is still unpredictable enough for a
    // nonce that is useless without the server's key.
    if getrandom::fill(&mut bytes).is_err() {
        use sha2::Digest;
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!(
            "{t}|{}|{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        bytes.copy_from_slice(&Sha256::digest(seed.as_bytes())[..16]);
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `target` may be redirected to after login: a local path, or an absolute
/// http(s) URL on `own_origin`'s host or on `cookie_domain` or one of its subdomains.
pub fn safe_redirect(target: &str, own_origin: Option<&str>, cookie_domain: Option<&str>) -> bool {
    if crate::http::is_local_path(target) {
        return true;
    }
    if target
        .bytes()
        .any(|b| b == b'\\' || b.is_ascii_control() || b == b' ' || b >= 0x80)
    {
        return false;
    }
    let Some(origin) = crate::config::origin_of(target) else {
        return false;
    };
    let host = host_of(&origin);
    if own_origin.and_then(crate::config::origin_of).as_deref() == Some(origin.as_str()) {
        return true;
    }
    match cookie_domain {
        Some(domain) => host == domain || host.ends_with(&format!(".{domain}")),
        None => false,
    }
}

/// The CSP `form-action` sources that allow exactly the redirects [`safe_redirect`]
/// allows after a form is sent (browsers apply `form-action` to the redirect that
/// answers a form): this site, the public origin, the issuer a verify-only instance
/// sends logins to, and the cookie domain and its subdomains on any port, over http or
/// https (CSP 3 §6.6.2.6: a source without a port matches only the default port).
pub fn form_action_sources(config: &crate::config::Config) -> String {
    let mut sources = String::from("'self'");
    let origins = [config.public_url.as_deref(), config.login_url.as_deref()];
    for origin in origins
        .into_iter()
        .flatten()
        .filter_map(crate::config::origin_of)
    {
        sources.push(' ');
        sources.push_str(&origin);
    }
    if let Some(domain) = &config.cookie_domain {
        for scheme in ["https", "http"] {
            sources.push_str(&format!(" {scheme}://{domain}:* {scheme}://*.{domain}:*"));
        }
    }
    sources
}

/// The `host[:port]` of an origin, without the scheme.
pub fn host_port(origin: &str) -> &str {
    origin.split_once("://").map_or(origin, |(_, a)| a)
}

/// The host of an origin, without scheme and port.
pub fn host_of(origin: &str) -> &str {
    let authority = origin.split_once("://").map_or(origin, |(_, a)| a);
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    authority.split(':').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Method;
    use crate::keys::Key;
    use crate::token::{Clock, Validation};

    const NOW: i64 = 1_800_000_000;

    /// An instance without a store, judging at `NOW`, and its signer.
    fn auth() -> (Auth, Signer) {
        let key = Key::new(b"auth-unit-test-key-0123456789abcdef".to_vec()).expect("key");
        let ring = KeyRing::new(vec![key]).expect("ring");
        let verifier = Verifier::new(&ring, Validation::new("latchkey", Clock::Fixed(NOW)));
        let policy = Policy {
            cookie_name: "token".into(),
            cookie_domain: None,
            cookie_secure: true,
            ttl: 3600,
            absolute_limit: 7 * 24 * 3600,
            issuer: "latchkey".into(),
        };
        (Auth::new(&ring, verifier, None, policy), Signer::new(&ring))
    }

    fn claims(auth_time: i64, amr: Amr) -> Claims<'static> {
        Claims {
            sub: "7".into(),
            user_id: 7,
            name: "ann".into(),
            role: "user".into(),
            iat: NOW - 3000,
            exp: NOW + 600,
            iss: "latchkey".into(),
            auth_time,
            ver: 0,
            amr,
            jti: None,
        }
    }

    #[test]
    fn sliding_keeps_auth_time_and_amr() {
        let (auth, _) = auth();
        let due = claims(NOW - 5000, Amr::PWD_OTP);
        let fresh = auth
            .slide(&due, false, NOW)
            .expect("less than half the lifetime left");
        assert_eq!((fresh.iat, fresh.exp), (NOW, NOW + 3600));
        assert_eq!(fresh.auth_time, NOW - 5000);
        assert_eq!(fresh.amr, Amr::PWD_OTP);
    }

    #[test]
    fn a_login_from_the_future_is_refused_as_invalid() {
        let (auth, signer) = auth();
        let mut buf = TokenBuf::new();
        for (auth_time, expected) in [
            (NOW - 60, None),
            (NOW + 30, None),
            (NOW + 31, Some(ErrorClass::Invalid)),
            (NOW + 7 * 24 * 3600, Some(ErrorClass::Invalid)),
        ] {
            let token = signer.sign(&claims(auth_time, Amr::PWD));
            let bearer = format!("Bearer {token}");
            let req = Request::new(Method::Get, "/api/me").with_header("authorization", &bearer);
            let visitor = auth.identify(&req, NOW, &mut buf).expect("no store");
            assert_eq!(visitor.rejected(), expected, "auth_time {auth_time}");
        }
    }

    #[test]
    fn the_login_step_value_is_bound_to_its_csrf_cookie_and_lasts_five_minutes() {
        let (auth, _) = auth();
        let user = User::new(7, "ann".into(), "user".into(), "h".into(), 0);
        let nonce = "A".repeat(22);
        let set = auth.login_step_cookie(&user, &nonce, NOW);
        assert!(set.contains("; Path=/login/totp; Max-Age=300; HttpOnly; SameSite=Strict"));
        let value = set
            .strip_prefix("login_step=")
            .and_then(|v| v.split(';').next())
            .expect("value");
        let judge = |cookie: &str, at: i64| {
            let req = Request::new(Method::Post, "/login/totp").with_header("cookie", cookie);
            auth.login_step(&req, at)
        };
        let ok = StepCookie::Valid(LoginStep { user_id: 7, ver: 0 });
        let both = format!("csrf={nonce}; login_step={value}");
        assert_eq!(judge(&both, NOW + LOGIN_STEP_TTL - 1), ok);
        assert_eq!(judge(&both, NOW + LOGIN_STEP_TTL), StepCookie::Refused);
        let other = format!("csrf={}; login_step={value}", "B".repeat(22));
        assert_eq!(judge(&other, NOW), StepCookie::Refused, "another browser");
        assert_eq!(
            judge(&format!("login_step={value}"), NOW),
            StepCookie::Refused
        );
        assert_eq!(judge(&format!("csrf={nonce}"), NOW), StepCookie::Absent);
        for altered in [
            value.replacen("7.0.", "8.0.", 1),
            value.replacen("7.0.", "7.1.", 1),
            value.replacen("7.0.", "7.0.1.", 1),
            value.replacen(
                &(NOW + LOGIN_STEP_TTL).to_string(),
                &(NOW + 9999).to_string(),
                1,
            ),
            format!("{value}x"),
        ] {
            let cookie = format!("csrf={nonce}; login_step={altered}");
            assert_eq!(judge(&cookie, NOW), StepCookie::Refused, "{altered}");
        }
        // A stale value before a valid one (a parent domain's) does not hide it.
        let stale = format!("csrf={nonce}; login_step=1.2.3.x; login_step={value}");
        assert_eq!(judge(&stale, NOW), ok);
        // Not a token: as a bearer token or a cookie, it is refused as malformed.
        let mut buf = TokenBuf::new();
        let bearer = format!("Bearer {value}");
        let req = Request::new(Method::Get, "/api/me").with_header("authorization", &bearer);
        let visitor = auth.identify(&req, NOW, &mut buf).expect("no store");
        assert_eq!(visitor.rejected(), Some(ErrorClass::Malformed));
        // Nor a CSRF field: its tag is under another key.
        let tag = value.rsplit('.').next().expect("tag");
        let req = Request::new(Method::Post, "/x").with_header("cookie", &format!("csrf={nonce}"));
        let anonymous = Visitor::Anonymous {
            rejected: None,
            source: None,
        };
        assert!(!auth.csrf_ok(&req, &anonymous, Some(tag)));
    }

    #[test]
    fn redirect_targets() {
        let own = Some("https://auth.example.com");
        let dom = Some("example.com");
        for ok in [
            "/account",
            "https://auth.example.com/x",
            "https://app.example.com/deep/path?q=1",
            "http://example.com/",
            "https://a.b.example.com:8443/",
        ] {
            assert!(safe_redirect(ok, own, dom), "{ok}");
        }
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "https://example.com.evil.example/",
            "https://evilexample.com/",
            "https://example.com@evil.example/",
            "https://app.example.com\\@evil.example/",
            "javascript:alert(1)",
            "https://app.example.com /",
            "ftp://app.example.com/",
            "https:/evil.example",
            "https://[::1]/",
        ] {
            assert!(!safe_redirect(bad, own, dom), "{bad}");
        }
        // Without a cookie domain only the own origin is allowed.
        assert!(!safe_redirect("https://app.example.com/", own, None));
        assert!(safe_redirect("https://auth.example.com/", own, None));
        assert!(!safe_redirect("https://auth.example.com/", None, None));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("https://a.example:80"), "a.example");
        assert_eq!(host_of("http://[::1]:8080"), "::1");
        assert_eq!(host_of("http://x"), "x");
    }
}

//! The account rules, on plain values: logging in with a password (throttle, hashing
//! limit, store, parameter upgrade), creating users (naming and role rules, the first
//! user is the administrator), changing a password, and what an administrator may do to
//! other accounts. Nothing here knows HTTP: `routes` turns forms into these calls and
//! their typed outcomes into pages and status codes, and the same rules hold for every
//! caller.
//!
//! Each operation takes the store, the client address and the time it needs as
//! arguments, and answers with the user it acted on or an error enum of its own whose
//! `Display` is a sentence to show the person who asked.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::config::TotpMode;
use crate::http::Client;
use crate::password::{self, CostMix, Params, PasswordError, Passwords, Verdict};
use crate::store::{
    self, Invalid, ROLE_ADMIN, ROLE_USER, ReadError, StoreError, UpdateError, User, UserStore,
};
use crate::throttle::{Key, Limits, Throttle};
use crate::totp::{self, CodeError};

/// The account machinery one server shares between its workers: password hashing at
/// the configured cost, failed-login throttling, the hashing limit and the sign-up rule.
#[derive(Debug)]
pub struct Accounts {
    passwords: Passwords,
    throttle: Throttle,
    hashing: Gate,
    signup_open: bool,
    setup: SetupCode,
    totp: TotpPolicy,
    /// How the stored hashes' costs are spread, counted at most every [`COSTS_RECOUNT`].
    costs: Mutex<Costs>,
    /// The secret that spreads unknown names over those costs (see
    /// [`with_name_key`](Accounts::with_name_key)).
    name_key: NameKey,
}

/// The secret of [`Accounts::with_name_key`]; never shown by `Debug`.
struct NameKey([u8; 32]);

impl fmt::Debug for NameKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NameKey(..)")
    }
}

/// How often, at most, the stored hashes' costs are counted again (a read of every
/// user, at the start of a login, whatever the name).
const COSTS_RECOUNT: std::time::Duration = std::time::Duration::from_secs(60);

/// The last count of the stored hashes' costs.
#[derive(Debug, Default)]
struct Costs {
    mix: CostMix,
    counted: Option<std::time::Instant>,
}

/// The settings the account rules depend on.
#[derive(Debug)]
pub struct Rules {
    /// Password hashing at the configured cost.
    pub passwords: Passwords,
    /// Failed-login throttling limits.
    pub throttle: Limits,
    /// Password hashes computed at once; more attempts are refused as busy.
    pub login_concurrency: usize,
    /// Whether anyone may register once the first user exists.
    pub signup_open: bool,
    /// The code the first registration needs (see [`SetupCode`]).
    pub setup: SetupCode,
    /// Who may and who must have a second factor.
    pub totp: TotpPolicy,
}

/// Who may and who must have a second factor (settings `totp` and
/// `totp_required_roles`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TotpPolicy {
    /// Off, optional, or required for everyone.
    pub mode: TotpMode,
    /// Roles that must have one while the mode is `optional`.
    pub required_roles: Vec<String>,
}

impl TotpPolicy {
    /// Whether second factors are in use at all: enrolment offered, codes asked for.
    pub fn enabled(&self) -> bool {
        self.mode != TotpMode::Off
    }

    /// Whether a user with this role must have a second factor.
    pub fn required_for(&self, role: &str) -> bool {
        match self.mode {
            TotpMode::Off => false,
            TotpMode::Required => true,
            TotpMode::Optional => self.required_roles.iter().any(|r| r == role),
        }
    }

    /// Whether a user with this role, who has (`has_factor`) or has not a second factor,
    /// must enrol before using anything else.
    pub fn must_enrol(&self, role: &str, has_factor: bool) -> bool {
        !has_factor && self.required_for(role)
    }

    /// Whether `user`'s login needs a code after the password.
    pub fn asks_code(&self, user: &User) -> bool {
        self.enabled() && user.totp.is_some()
    }
}

/// A correct password, and what the login still needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordLogin {
    /// Nothing more: the user is logged in with the password (`amr` `["pwd"]`).
    Done(User),
    /// The user has a second factor: the login is complete only once a code is
    /// accepted ([`Accounts::second_factor`]). The name's failed attempts are not
    /// forgotten yet, so a known password does not buy fresh guesses at the code.
    NeedsCode(User),
}

impl PasswordLogin {
    /// The user whose password it was.
    pub fn user(&self) -> &User {
        match self {
            PasswordLogin::Done(user) | PasswordLogin::NeedsCode(user) => user,
        }
    }

    /// The user whose password it was, by value.
    pub fn into_user(self) -> User {
        match self {
            PasswordLogin::Done(user) | PasswordLogin::NeedsCode(user) => user,
        }
    }
}

/// A code entered after the password, to complete the login of user `user_id`.
#[derive(Debug, Clone, Copy)]
pub struct CodeAttempt<'a> {
    /// The user whose password was accepted.
    pub user_id: u64,
    /// Their token version when it was: a change since (password, sessions ended,
    /// second factor reset) voids the half-done login.
    pub ver: u64,
    /// A six-digit TOTP code or a recovery code, as typed.
    pub code: &'a str,
    /// The client, when known: failures are also counted against it.
    pub client: Option<&'a Client>,
    /// Unix seconds.
    pub now: i64,
}

/// A login completed with a code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeLogin {
    /// The user, as stored after the code was recorded.
    pub user: User,
    /// When a recovery code was used: how many are left.
    pub recovery_left: Option<usize>,
}

/// Why a code was not accepted.
#[derive(Debug)]
pub enum CodeLoginError {
    /// Not a code, a wrong or too old one, or one used already (counted as a failure,
    /// except when it is not a code at all).
    Code(CodeError),
    /// A recovery code that is not one of the user's unused ones.
    WrongRecovery,
    /// Too many recent failures for this name or address; retry after this many seconds.
    Throttled(u64),
    /// The login the code was to complete no longer stands (the password was changed,
    /// sessions were ended, the account was locked or deleted, the second factor was
    /// removed or switched off): start again with the password.
    Stale,
    /// The store could not be used.
    Store(StoreError),
}

/// A new enrolment: the secret to show, and its key URI.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolment {
    /// The secret, [`totp::SECRET_LEN`] bytes.
    pub secret: Vec<u8>,
    /// The `otpauth://` URI authenticator apps read (issuer, user name, secret).
    pub uri: String,
}

impl fmt::Debug for Enrolment {
    /// Never the secret, nor the URI that holds it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrolment").finish_non_exhaustive()
    }
}

/// Why a second-factor change (enrolment, switching on or off) was refused.
#[derive(Debug)]
pub enum TotpError {
    /// Second factors are switched off on this server (`totp = "off"`).
    Off,
    /// The user has a second factor already.
    AlreadyOn,
    /// No enrolment was started.
    NotStarted,
    /// The enrolment changed meanwhile (started over in another window): the code was
    /// for the old key.
    Changed,
    /// The user has no second factor to switch off.
    NotOn,
    /// The code was not accepted.
    Code(CodeError),
    /// A recovery code that is not one of the user's unused ones.
    WrongRecovery,
    /// The current password was not accepted (wrong, throttled, busy, store).
    Password(LoginError),
    /// Too many recent failures for this name or address; retry after this many seconds.
    Throttled(u64),
    /// The system random source failed.
    Random(String),
    /// The user no longer exists.
    NotFound,
    /// The store could not be used.
    Store(StoreError),
}

/// A password login attempt.
#[derive(Debug, Clone, Copy)]
pub struct Attempt<'a> {
    /// The user name as typed (trimmed and compared ignoring case).
    pub name: &'a str,
    /// The password as typed.
    pub password: &'a str,
    /// The client, when known: failures are also counted against it.
    pub client: Option<&'a Client>,
    /// Unix seconds.
    pub now: i64,
}

/// A self-service registration as typed on the form.
#[derive(Debug, Clone, Copy)]
pub struct Registration<'a> {
    /// The name as typed.
    pub name: &'a str,
    /// The password.
    pub password: &'a str,
    /// The password typed a second time.
    pub confirm: &'a str,
    /// The setup code, which only the first registration needs.
    pub setup_code: &'a str,
}

/// A new account as asked for on the registration or admin form.
#[derive(Debug, Clone, Copy)]
pub struct NewUser<'a> {
    /// The name as typed.
    pub name: &'a str,
    /// The password.
    pub password: &'a str,
    /// The password typed a second time, when the form asks for it.
    pub confirm: Option<&'a str>,
    /// The role (`user`, `admin` or another lowercase name).
    pub role: &'a str,
}

/// Why a password login failed.
#[derive(Debug)]
pub enum LoginError {
    /// Wrong name, wrong password, or a locked account: indistinguishable on purpose.
    Wrong,
    /// Too many recent failures for this name or address; retry after this many seconds.
    Throttled(u64),
    /// Every hashing place is taken; retry in a moment.
    Busy,
    /// The store could not be used.
    Store(StoreError),
}

/// Why a user could not be created.
#[derive(Debug)]
pub enum CreateError {
    /// Registration is closed and this would not be the first user.
    Closed,
    /// The first registration needs the setup code, and it was missing or wrong.
    SetupCode,
    /// The two passwords typed differ.
    PasswordsDiffer,
    /// The name breaks a rule (the store's message).
    Name(StoreError),
    /// The role breaks a rule (the store's message).
    Role(StoreError),
    /// The password breaks a rule.
    Password(PasswordError),
    /// The name is taken (ignoring case).
    Taken,
    /// Every hashing place is taken; retry in a moment.
    Busy,
    /// The store could not be used.
    Store(StoreError),
}

/// Why a password change failed.
#[derive(Debug)]
pub enum PasswordChangeError {
    /// The two new passwords differ.
    PasswordsDiffer,
    /// The new password breaks a rule.
    Password(PasswordError),
    /// The current password was not accepted (wrong, throttled, busy, store).
    Current(LoginError),
    /// The store could not be used.
    Store(StoreError),
}

/// What an administrator does to an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction<'a> {
    /// Give the account this role.
    SetRole(&'a str),
    /// Lock the account and end its sessions.
    Lock,
    /// Let a locked account log in again.
    Unlock,
    /// End every session of the account.
    Revoke,
    /// Delete the account.
    Delete,
    /// Remove the account's second factor (every session ends).
    ResetTotp,
    /// Set a new password (every session ends); `must_change` sends the user to the
    /// password form at their next login, before anything else.
    SetPassword {
        /// The new password.
        password: &'a str,
        /// Whether the user must choose another one at the next login.
        must_change: bool,
    },
}

impl AdminAction<'_> {
    /// Whether an administrator may do this to their own account: only ending their
    /// own sessions (locking, deleting or demoting oneself needs another administrator).
    pub fn allowed_on_self(self) -> bool {
        matches!(self, AdminAction::Revoke)
    }
}

/// Why an administrator's action was refused.
#[derive(Debug)]
pub enum AdminError {
    /// The action targets the administrator's own account and is not allowed there.
    OwnAccount,
    /// There is no such user.
    NotFound,
    /// The role breaks a rule (the store's message).
    Role(StoreError),
    /// The new password breaks a rule.
    Password(PasswordError),
    /// The action would leave no administrator who can log in.
    LastAdmin,
    /// Every hashing place is taken; retry in a moment.
    Busy,
    /// The store could not be used.
    Store(StoreError),
}

/// What an administrator's action did, to say so on the page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminDone {
    /// The account acted on, as it was after the action (before it, for a deletion).
    pub user: User,
    /// The action.
    pub action: AdminActionKind,
}

/// [`AdminAction`] without its data, for reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminActionKind {
    /// The role was set.
    SetRole,
    /// The account was locked.
    Lock,
    /// The account was unlocked.
    Unlock,
    /// The sessions were ended.
    Revoke,
    /// The account was deleted.
    Delete,
    /// A new password was set.
    SetPassword,
    /// The second factor was removed.
    ResetTotp,
}

impl fmt::Display for AdminDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.user.name;
        match self.action {
            AdminActionKind::SetRole => write!(f, "{name} now has the role {}.", self.user.role),
            AdminActionKind::Lock => write!(f, "{name} is locked."),
            AdminActionKind::Unlock => write!(f, "{name} is unlocked."),
            AdminActionKind::Revoke => write!(f, "Every session of {name} was ended."),
            AdminActionKind::Delete => write!(f, "{name} (id {}) was deleted.", self.user.id),
            AdminActionKind::SetPassword if self.user.must_change_password => write!(
                f,
                "{name} has a new password and must change it at the next login; their sessions were ended."
            ),
            AdminActionKind::SetPassword => {
                write!(f, "{name} has a new password; their sessions were ended.")
            }
            AdminActionKind::ResetTotp => write!(
                f,
                "{name} no longer has a second factor; their sessions were ended."
            ),
        }
    }
}

impl Accounts {
    /// The machinery for these settings.
    pub fn new(rules: Rules) -> Accounts {
        Accounts {
            passwords: rules.passwords,
            throttle: Throttle::new(rules.throttle),
            hashing: Gate::new(rules.login_concurrency),
            signup_open: rules.signup_open,
            setup: rules.setup,
            totp: rules.totp,
            costs: Mutex::new(Costs::default()),
            name_key: NameKey(random_key()),
        }
    }

    /// Sets the secret that decides, for each unknown name, which stored cost it is
    /// checked at. The server derives it from its signing key, so that the same name
    /// costs the same on every instance and after a restart (a random one would move
    /// unknown names, and only them, between costs at each start).
    pub fn with_name_key(mut self, key: [u8; 32]) -> Accounts {
        self.name_key = NameKey(key);
        self
    }

    /// Counts the stored hashes' costs again when the last count is older than
    /// [`COSTS_RECOUNT`]. A store that cannot be read keeps the last count.
    fn recount_costs(&self, store: &UserStore) {
        let mut costs = self.costs.lock().unwrap_or_else(PoisonError::into_inner);
        if costs.counted.is_some_and(|at| at.elapsed() < COSTS_RECOUNT) {
            return;
        }
        let configured = self.passwords.params();
        let mut mix = CostMix::default();
        let mut after = 0;
        loop {
            let Ok(page) = store.list(after, 1024) else {
                return;
            };
            let Some(last) = page.last() else {
                break;
            };
            after = last.id();
            for entry in &page {
                if let crate::store::Entry::User(user) = entry {
                    // An unreadable hash is checked like an unknown name, at the
                    // configured cost.
                    mix.add(password::stored_params(&user.password_hash).unwrap_or(configured));
                }
            }
        }
        costs.mix = mix;
        costs.counted = Some(std::time::Instant::now());
    }

    #[cfg(test)]
    fn lock_costs(&self) -> std::sync::MutexGuard<'_, Costs> {
        self.costs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The cost an unknown `name` is checked at: one of the stored costs, each for its
    /// share of the users, always the same one for the same name (a keyed hash of its
    /// canonical form picks it).
    fn unknown_cost(&self, name: &str) -> Params {
        use hmac::{KeyInit, Mac};
        let configured = self.passwords.params();
        let costs = self.costs.lock().unwrap_or_else(PoisonError::into_inner);
        if costs.mix.only(configured) {
            return configured;
        }
        let Ok(mut mac) = <hmac::Hmac<sha2::Sha256>>::new_from_slice(&self.name_key.0) else {
            return configured;
        };
        mac.update(name.trim().to_ascii_lowercase().as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut position = [0u8; 8];
        position.copy_from_slice(&digest[..8]);
        costs
            .mix
            .pick(u64::from_be_bytes(position))
            .unwrap_or(configured)
    }

    /// Who may and who must have a second factor.
    pub fn totp_policy(&self) -> &TotpPolicy {
        &self.totp
    }

    /// The setup code, while the first registration still needs one.
    pub fn setup_code(&self) -> &SetupCode {
        &self.setup
    }

    /// Password hashing at the configured cost.
    pub fn passwords(&self) -> &Passwords {
        &self.passwords
    }

    /// The failed-login throttle (its size is reported in metrics and tests).
    pub fn throttle(&self) -> &Throttle {
        &self.throttle
    }

    /// Checks a name and password: refused while the name or the client address is
    /// throttled or every hashing place is taken; unknown names cost a hash like known
    /// ones; a locked account fails like a wrong password. A success records the login
    /// and upgrades a hash made at weaker parameters; it forgets the name's failures
    /// only when the login is complete ([`PasswordLogin::Done`]): a user with a second
    /// factor must still enter a code, whose failures count in the same throttle.
    pub fn login(
        &self,
        store: &UserStore,
        attempt: &Attempt<'_>,
    ) -> Result<PasswordLogin, LoginError> {
        let keys = throttle_keys(attempt.name, attempt.client);
        if let Some(retry) = self.throttled(store, &keys, attempt.now) {
            return Err(LoginError::Throttled(retry));
        }
        let Some(_place) = self.hashing.try_enter() else {
            return Err(LoginError::Busy);
        };
        self.recount_costs(store);
        let user = store
            .get_by_name(attempt.name)
            .map_err(|e| LoginError::Store(e.into()))?;
        let verdict = match &user {
            Some(user) => self.passwords.verify(attempt.password, &user.password_hash),
            None => self
                .passwords
                .verify_unknown_at(attempt.password, self.unknown_cost(attempt.name)),
        };
        match (user, verdict) {
            (Some(user), Verdict::Match { rehash }) if !user.locked => {
                // Recorded without waiting for the disk: a login needs no write.
                let user = store.note_login(&user, rehash.as_deref());
                if self.totp.asks_code(&user) {
                    return Ok(PasswordLogin::NeedsCode(user));
                }
                self.forget_failures(store, &keys[0]);
                Ok(PasswordLogin::Done(user))
            }
            _ => {
                self.count_failure(store, &keys, attempt.now);
                Err(LoginError::Wrong)
            }
        }
    }

    /// Seconds until any of `keys` may try again. A shared store (PostgreSQL) keeps the
    /// counters, so that N instances do not give N times the attempts; otherwise they
    /// are counted in memory here. A shared store that cannot be read throttles nothing
    /// (logged): the attempt needs the store anyway and fails there.
    fn throttled(&self, store: &UserStore, keys: &[Key], now: i64) -> Option<u64> {
        if !self.shares_throttle(store) {
            return self.throttle.retry_after(keys, now);
        }
        store.throttle_retry_after(keys, now).unwrap_or_else(|e| {
            crate::log::debug(&format!("failed-login counters: {e}"));
            None
        })
    }

    /// Counts a failed attempt against `keys` (in the shared store when there is one;
    /// a failure to count there is logged).
    fn count_failure(&self, store: &UserStore, keys: &[Key], now: i64) {
        if !self.shares_throttle(store) {
            return self.throttle.failure(keys, now);
        }
        if let Err(e) = store.throttle_failure(keys, now, self.throttle.limits()) {
            crate::log::error(&format!("a failed login could not be counted: {e}"));
        }
    }

    /// Forgets `key`'s failures after a complete login (best effort in a shared store: a
    /// counter left behind only expires later).
    fn forget_failures(&self, store: &UserStore, key: &Key) {
        if !self.shares_throttle(store) {
            return self.throttle.reset(key);
        }
        let _ = store.throttle_reset(key);
    }

    fn shares_throttle(&self, store: &UserStore) -> bool {
        store.is_shared() && self.throttle.limits().max_failures > 0
    }

    /// Whether a visitor may register now: sign-up is open, or the store is empty (the
    /// first account is how an administrator comes to exist).
    pub fn signup_open(&self, store: &UserStore) -> Result<bool, StoreError> {
        Ok(self.signup_open || store.count()? == 0)
    }

    /// Self-service registration: allowed while [`signup_open`](Self::signup_open); the
    /// first account of an empty store is an administrator and needs the setup code
    /// (single use: it is spent by the registration that succeeds), every later one is
    /// a user.
    pub fn register(&self, store: &UserStore, new: &Registration<'_>) -> Result<User, CreateError> {
        let first = is_empty(store).map_err(CreateError::Store)?;
        if !first && !self.signup_open {
            return Err(CreateError::Closed);
        }
        let account = NewUser {
            name: new.name,
            password: new.password,
            confirm: Some(new.confirm),
            role: if first { ROLE_ADMIN } else { ROLE_USER },
        };
        if !first {
            return self.create(store, &account);
        }
        check_new(&account)?;
        let claim = self.setup.claim(new.setup_code)?;
        // Only while the store is still empty, decided in the store's transaction: two
        // instances sharing a store cannot both make a first administrator.
        let user = self.create_as(store, &account, true)?;
        claim.spend();
        Ok(user)
    }

    /// Creates an account after checking the name, role and password rules; hashing
    /// takes a place under the hashing limit. Once a user exists the setup code is
    /// retired, however the user came to be.
    pub fn create(&self, store: &UserStore, new: &NewUser<'_>) -> Result<User, CreateError> {
        self.create_as(store, new, false)
    }

    fn create_as(
        &self,
        store: &UserStore,
        new: &NewUser<'_>,
        first: bool,
    ) -> Result<User, CreateError> {
        let name = check_new(new)?;
        let Some(_place) = self.hashing.try_enter() else {
            return Err(CreateError::Busy);
        };
        let hash = self
            .passwords
            .hash(new.password)
            .map_err(CreateError::Password)?;
        let made = if first {
            store.create_first(&name, new.role, &hash)
        } else {
            store.create(&name, new.role, &hash)
        };
        match made {
            Ok(user) => {
                self.setup.retire();
                if store.is_shared() {
                    let _ = store.forget_setup_code();
                }
                Ok(user)
            }
            Err(store::CreateError::NameTaken(_)) => Err(CreateError::Taken),
            // Another instance made the first account meanwhile.
            Err(store::CreateError::NotFirst) => Err(CreateError::Closed),
            Err(store::CreateError::Invalid(e @ Invalid::Name(_))) => {
                Err(CreateError::Name(e.into()))
            }
            Err(store::CreateError::Invalid(e @ Invalid::Role(_))) => {
                Err(CreateError::Role(e.into()))
            }
            Err(e) => Err(CreateError::Store(e.into())),
        }
    }

    /// Changes the password of the user named in `current` after checking it (with the
    /// same throttle as a login); every other session of the user is revoked.
    pub fn change_password(
        &self,
        store: &UserStore,
        current: &Attempt<'_>,
        new: &str,
        confirm: &str,
    ) -> Result<User, PasswordChangeError> {
        if new != confirm {
            return Err(PasswordChangeError::PasswordsDiffer);
        }
        password::check_rules(new).map_err(PasswordChangeError::Password)?;
        let user = self
            .login(store, current)
            .map_err(PasswordChangeError::Current)?
            .into_user();
        let Some(_place) = self.hashing.try_enter() else {
            return Err(PasswordChangeError::Current(LoginError::Busy));
        };
        let hash = self
            .passwords
            .hash(new)
            .map_err(PasswordChangeError::Password)?;
        store
            .set_password(user.id, &hash)
            .map_err(|e| PasswordChangeError::Store(e.into()))
    }

    /// The second step of a login: a TOTP code (one step either side of now, never one
    /// accepted before) or an unused recovery code (spent by this use) for the user
    /// whose password was accepted, while that login still stands. Refused while the
    /// name or the client address is throttled; a wrong code counts as a failure there,
    /// like a wrong password; a success forgets the name's failures.
    pub fn second_factor(
        &self,
        store: &UserStore,
        attempt: &CodeAttempt<'_>,
    ) -> Result<CodeLogin, CodeLoginError> {
        let user = match store.get(attempt.user_id) {
            Ok(Some(user)) => user,
            Ok(None) | Err(ReadError::DamagedRecord(_)) => return Err(CodeLoginError::Stale),
            Err(e) => return Err(CodeLoginError::Store(e.into())),
        };
        if user.ver != attempt.ver || user.locked || !self.totp.asks_code(&user) {
            return Err(CodeLoginError::Stale);
        }
        let keys = throttle_keys(&user.name, attempt.client);
        if let Some(retry) = self.throttled(store, &keys, attempt.now) {
            return Err(CodeLoginError::Throttled(retry));
        }
        match self.check_code(store, &user, attempt.code, &keys, attempt.now) {
            Ok(done) => {
                self.forget_failures(store, &keys[0]);
                Ok(done)
            }
            Err(Refusal::Code(e)) => Err(CodeLoginError::Code(e)),
            Err(Refusal::WrongRecovery) => Err(CodeLoginError::WrongRecovery),
            Err(Refusal::Gone) => Err(CodeLoginError::Stale),
            Err(Refusal::Store(e)) => Err(CodeLoginError::Store(e)),
        }
    }

    /// Checks `code` for `user`, who has a second factor: a recovery code (16
    /// characters) is looked up among the hashes and spent; anything else is checked as
    /// a TOTP code and its step recorded. Both writes are compare-and-set, so a code
    /// presented twice at once is accepted once. A wrong code (not one that is no code
    /// at all) is counted against `keys`.
    fn check_code(
        &self,
        store: &UserStore,
        user: &User,
        code: &str,
        keys: &[Key],
        now: i64,
    ) -> Result<CodeLogin, Refusal> {
        let Some(factor) = &user.totp else {
            return Err(Refusal::Gone);
        };
        let fail = |refusal: Refusal| {
            self.count_failure(store, keys, now);
            Err(refusal)
        };
        if totp::is_recovery_code(code) {
            let Some(at) = totp::match_recovery(&factor.recovery, code) else {
                return fail(Refusal::WrongRecovery);
            };
            return match store.use_recovery_code(user.id, &factor.recovery[at]) {
                Ok(Some(user)) => {
                    let left = user.totp.as_ref().map_or(0, |f| f.recovery.len());
                    Ok(CodeLogin {
                        user,
                        recovery_left: Some(left),
                    })
                }
                // Spent by a concurrent request, or the factor went meanwhile.
                Ok(None) => fail(Refusal::WrongRecovery),
                Err(e) => Err(Refusal::from(e)),
            };
        }
        let step = match totp::verify(&factor.secret, code, now, factor.last_step) {
            Ok(step) => step,
            Err(e @ CodeError::NotACode) => return Err(Refusal::Code(e)),
            Err(e) => return fail(Refusal::Code(e)),
        };
        match store.use_totp_step(user.id, &factor.secret, step) {
            Ok(Some(user)) => Ok(CodeLogin {
                user,
                recovery_left: None,
            }),
            // A concurrent request used this step (or a later one) first.
            Ok(None) => fail(Refusal::Code(CodeError::Replayed)),
            Err(e) => Err(Refusal::from(e)),
        }
    }

    /// Starts (or starts over) an enrolment for user `id`: a fresh 160-bit secret is
    /// kept as the pending one and returned with its key URI (`issuer` and the user's
    /// name as the label). Nothing is in force until [`enable_totp`](Self::enable_totp).
    pub fn begin_totp(
        &self,
        store: &UserStore,
        id: u64,
        issuer: &str,
    ) -> Result<Enrolment, TotpError> {
        if !self.totp.enabled() {
            return Err(TotpError::Off);
        }
        let user = get_user(store, id)?;
        if user.totp.is_some() {
            return Err(TotpError::AlreadyOn);
        }
        let secret = totp::new_secret().map_err(|e| TotpError::Random(e.to_string()))?;
        let user = store
            .begin_totp(id, &secret)
            .map_err(TotpError::from_update)?;
        Ok(Enrolment {
            uri: totp::key_uri(issuer, &user.name, &secret),
            secret,
        })
    }

    /// The enrolment `user` has in progress, to show again (a reload of the page).
    pub fn pending_enrolment(&self, user: &User, issuer: &str) -> Option<Enrolment> {
        let secret = user.totp_pending.as_ref().filter(|_| user.totp.is_none())?;
        Some(Enrolment {
            uri: totp::key_uri(issuer, &user.name, secret),
            secret: secret.clone(),
        })
    }

    /// Switches the second factor of user `id` on once `code` is right for the pending
    /// secret (the app was set up correctly). Returns the user (their `ver` bumped:
    /// every earlier session ends) and 10 new recovery codes, to show once; only their
    /// hashes are kept. A wrong code counts in the login throttle.
    pub fn enable_totp(
        &self,
        store: &UserStore,
        id: u64,
        code: &str,
        client: Option<&Client>,
        now: i64,
    ) -> Result<(User, Vec<String>), TotpError> {
        if !self.totp.enabled() {
            return Err(TotpError::Off);
        }
        let user = get_user(store, id)?;
        if user.totp.is_some() {
            return Err(TotpError::AlreadyOn);
        }
        let Some(pending) = &user.totp_pending else {
            return Err(TotpError::NotStarted);
        };
        let keys = throttle_keys(&user.name, client);
        if let Some(retry) = self.throttled(store, &keys, now) {
            return Err(TotpError::Throttled(retry));
        }
        let step = match totp::verify(pending, code, now, 0) {
            Ok(step) => step,
            Err(e @ CodeError::NotACode) => return Err(TotpError::Code(e)),
            Err(e) => {
                self.count_failure(store, &keys, now);
                return Err(TotpError::Code(e));
            }
        };
        let (codes, hashes) =
            totp::new_recovery_codes().map_err(|e| TotpError::Random(e.to_string()))?;
        match store.enable_totp(id, pending, step, &hashes) {
            Ok(Some(user)) => Ok((user, codes)),
            Ok(None) => Err(TotpError::Changed),
            Err(e) => Err(TotpError::from_update(e)),
        }
    }

    /// Switches the second factor off: needs the current password (`current`, throttled
    /// like a login) and a current code or an unused recovery code. Every session of the
    /// user ends (`ver` is bumped), as after an administrator's reset.
    pub fn disable_totp(
        &self,
        store: &UserStore,
        current: &Attempt<'_>,
        code: &str,
    ) -> Result<User, TotpError> {
        if !self.totp.enabled() {
            return Err(TotpError::Off);
        }
        let user = self
            .login(store, current)
            .map_err(TotpError::Password)?
            .into_user();
        if user.totp.is_none() {
            return Err(TotpError::NotOn);
        }
        let keys = throttle_keys(&user.name, current.client);
        if let Some(retry) = self.throttled(store, &keys, current.now) {
            return Err(TotpError::Throttled(retry));
        }
        match self.check_code(store, &user, code, &keys, current.now) {
            Ok(_) => {}
            Err(Refusal::Code(e)) => return Err(TotpError::Code(e)),
            Err(Refusal::WrongRecovery) => return Err(TotpError::WrongRecovery),
            Err(Refusal::Gone) => return Err(TotpError::NotOn),
            Err(Refusal::Store(e)) => return Err(TotpError::Store(e)),
        }
        self.forget_failures(store, &keys[0]);
        store.reset_totp(user.id).map_err(TotpError::from_update)
    }

    /// Ends every session of user `id` ("log out everywhere").
    pub fn revoke_all(&self, store: &UserStore, id: u64) -> Result<User, StoreError> {
        Ok(store.revoke(id)?)
    }

    /// An administrator (`actor`, a user id) acts on the account `target`. Acting on
    /// oneself is refused except for ending one's own sessions.
    pub fn administer(
        &self,
        store: &UserStore,
        actor: u64,
        target: u64,
        action: AdminAction<'_>,
    ) -> Result<AdminDone, AdminError> {
        if actor == target && !action.allowed_on_self() {
            return Err(AdminError::OwnAccount);
        }
        let done = |user: User, action| AdminDone { user, action };
        let result = match action {
            AdminAction::SetRole(role) => {
                store::validate_role(role).map_err(|e| AdminError::Role(e.into()))?;
                store
                    .set_role(target, role)
                    .map(|u| done(u, AdminActionKind::SetRole))
                    .map_err(StoreError::from)
            }
            AdminAction::Lock => store
                .set_locked(target, true)
                .map(|u| done(u, AdminActionKind::Lock))
                .map_err(StoreError::from),
            AdminAction::Unlock => store
                .set_locked(target, false)
                .map(|u| done(u, AdminActionKind::Unlock))
                .map_err(StoreError::from),
            AdminAction::Revoke => store
                .revoke(target)
                .map(|u| done(u, AdminActionKind::Revoke))
                .map_err(StoreError::from),
            AdminAction::Delete => match store.get(target) {
                Ok(Some(user)) => store
                    .delete(target)
                    .map(|()| done(user, AdminActionKind::Delete))
                    .map_err(StoreError::from),
                Ok(None) => Err(StoreError::NotFound),
                // A damaged record cannot be read, but it can be deleted.
                Err(ReadError::DamagedRecord(d)) => {
                    let gone = User::new(
                        d.id,
                        "The damaged user".into(),
                        String::new(),
                        String::new(),
                        0,
                    );
                    store
                        .delete(target)
                        .map(|()| done(gone, AdminActionKind::Delete))
                        .map_err(StoreError::from)
                }
                Err(e) => Err(e.into()),
            },
            AdminAction::ResetTotp => store
                .reset_totp(target)
                .map(|u| done(u, AdminActionKind::ResetTotp))
                .map_err(StoreError::from),
            AdminAction::SetPassword {
                password,
                must_change,
            } => {
                password::check_rules(password).map_err(AdminError::Password)?;
                let Some(_place) = self.hashing.try_enter() else {
                    return Err(AdminError::Busy);
                };
                let hash = self
                    .passwords
                    .hash(password)
                    .map_err(AdminError::Password)?;
                store
                    .reset_password(target, &hash, must_change)
                    .map(|u| done(u, AdminActionKind::SetPassword))
                    .map_err(StoreError::from)
            }
        };
        result.map_err(|e| match e {
            StoreError::NotFound => AdminError::NotFound,
            StoreError::LastAdmin => AdminError::LastAdmin,
            e @ StoreError::Invalid(Invalid::Role(_)) => AdminError::Role(e),
            e => AdminError::Store(e),
        })
    }
}

/// Why [`Accounts::check_code`] refused a code.
enum Refusal {
    Code(CodeError),
    WrongRecovery,
    /// The user or their factor is gone.
    Gone,
    Store(StoreError),
}

impl From<UpdateError> for Refusal {
    fn from(e: UpdateError) -> Refusal {
        match e {
            UpdateError::NotFound | UpdateError::DamagedRecord(_) => Refusal::Gone,
            e => Refusal::Store(e.into()),
        }
    }
}

impl TotpError {
    fn from_update(e: UpdateError) -> TotpError {
        match e {
            UpdateError::NotFound => TotpError::NotFound,
            e => TotpError::Store(e.into()),
        }
    }

    /// Seconds the client should wait before retrying, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            TotpError::Throttled(seconds) => Some(*seconds),
            TotpError::Password(e) => e.retry_after(),
            _ => None,
        }
    }
}

impl CodeLoginError {
    /// Seconds the client should wait before retrying, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            CodeLoginError::Throttled(seconds) => Some(*seconds),
            _ => None,
        }
    }
}

/// User `id`, or why not.
fn get_user(store: &UserStore, id: u64) -> Result<User, TotpError> {
    match store.get(id) {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(TotpError::NotFound),
        Err(e) => Err(TotpError::Store(e.into())),
    }
}

/// Checks a new account's rules (the confirmation, name, role and password) before any
/// work is done; the canonical name.
fn check_new(new: &NewUser<'_>) -> Result<String, CreateError> {
    if new.confirm.is_some_and(|c| c != new.password) {
        return Err(CreateError::PasswordsDiffer);
    }
    let name = store::validate_name(new.name).map_err(|e| CreateError::Name(e.into()))?;
    store::validate_role(new.role).map_err(|e| CreateError::Role(e.into()))?;
    password::check_rules(new.password).map_err(CreateError::Password)?;
    Ok(name)
}

/// Whether the store holds no user yet.
fn is_empty(store: &UserStore) -> Result<bool, StoreError> {
    Ok(store.count()? == 0)
}

/// What a login attempt is throttled by: the name (trimmed, lowercased), and the
/// client when known.
fn throttle_keys(name: &str, client: Option<&Client>) -> Vec<Key> {
    let mut keys = vec![Key::Name(name.trim().to_lowercase())];
    match client {
        Some(Client::Addr(addr)) => keys.push(Key::Addr(throttle_network(*addr))),
        Some(Client::Named(name)) => keys.push(Key::Client(name.clone())),
        None => {}
    }
    keys
}

/// The network a client address is throttled as: an IPv4 address itself, an IPv6
/// address's /64 (one subscriber gets a /64 or more, so its addresses are one client),
/// as the connection limits count them.
fn throttle_network(addr: std::net::IpAddr) -> std::net::IpAddr {
    match addr.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

impl LoginError {
    /// Seconds the client should wait before retrying, for `Retry-After`.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            LoginError::Throttled(seconds) => Some(*seconds),
            LoginError::Busy => Some(1),
            _ => None,
        }
    }
}

impl fmt::Display for LoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoginError::Wrong => write!(f, "Wrong username or password."),
            LoginError::Throttled(retry) => write!(
                f,
                "Too many failed logins. Try again in {} min.",
                retry.div_ceil(60)
            ),
            LoginError::Busy => write!(
                f,
                "The server is busy logging other people in. Please try again in a moment."
            ),
            LoginError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for CreateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreateError::Closed => write!(
                f,
                "Registration is closed. Ask an administrator for an account."
            ),
            CreateError::SetupCode => write!(
                f,
                "The setup code is missing or wrong. The first account needs the one-time \
                 code the server wrote to the file setup-code in its data directory (and to \
                 its log at start)."
            ),
            CreateError::PasswordsDiffer => write!(f, "The two passwords differ."),
            CreateError::Name(e) | CreateError::Role(e) => write!(f, "{}", sentence(e)),
            CreateError::Password(e) => write!(f, "{}", sentence(e)),
            CreateError::Taken => write!(f, "That user name is taken."),
            CreateError::Busy => write!(f, "The server is busy. Please try again in a moment."),
            CreateError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for PasswordChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordChangeError::PasswordsDiffer => write!(f, "The two new passwords differ."),
            PasswordChangeError::Password(e) => write!(f, "{}", sentence(e)),
            PasswordChangeError::Current(LoginError::Wrong) => {
                write!(f, "The current password is wrong.")
            }
            PasswordChangeError::Current(LoginError::Throttled(_)) => {
                write!(f, "Too many failed attempts. Try again later.")
            }
            PasswordChangeError::Current(e) => write!(f, "{e}"),
            PasswordChangeError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::OwnAccount => write!(
                f,
                "You cannot change your own role, lock or delete yourself; ask another administrator."
            ),
            AdminError::NotFound => write!(f, "There is no such user."),
            AdminError::Role(e) => write!(f, "{}", sentence(e)),
            AdminError::Password(e) => write!(f, "{}", sentence(e)),
            AdminError::LastAdmin => write!(f, "{}", sentence(&UpdateError::LastAdmin)),
            AdminError::Busy => write!(f, "The server is busy. Please try again in a moment."),
            AdminError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for CodeLoginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodeLoginError::Code(e) => write!(f, "{}", sentence(e)),
            CodeLoginError::WrongRecovery => write!(
                f,
                "That recovery code is wrong or was used already. Enter the code your app shows, or another recovery code."
            ),
            CodeLoginError::Throttled(retry) => write!(
                f,
                "Too many failed attempts. Try again in {} min.",
                retry.div_ceil(60)
            ),
            CodeLoginError::Stale => write!(
                f,
                "Your login took too long or no longer stands. Please enter your password again."
            ),
            CodeLoginError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl fmt::Display for TotpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TotpError::Off => write!(
                f,
                "Two-factor authentication is switched off on this server (setting totp = \"off\")."
            ),
            TotpError::AlreadyOn => write!(f, "Two-factor authentication is on already."),
            TotpError::NotStarted => {
                write!(f, "No set-up is in progress: start by showing a new key.")
            }
            TotpError::Changed => write!(
                f,
                "The key was replaced meanwhile (in another window?): scan the key shown now and enter its code."
            ),
            TotpError::NotOn => write!(f, "Two-factor authentication is not on."),
            TotpError::Code(e) => write!(f, "{}", sentence(e)),
            TotpError::WrongRecovery => {
                write!(f, "That recovery code is wrong or was used already.")
            }
            TotpError::Password(LoginError::Wrong) => write!(f, "The password is wrong."),
            TotpError::Password(LoginError::Throttled(_)) | TotpError::Throttled(_) => {
                write!(f, "Too many failed attempts. Try again later.")
            }
            TotpError::Password(e) => write!(f, "{e}"),
            TotpError::Random(e) => write!(
                f,
                "The server could not make a random key ({e}); please try again."
            ),
            TotpError::NotFound => write!(f, "There is no such user."),
            TotpError::Store(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for CodeLoginError {}
impl std::error::Error for TotpError {}
impl std::error::Error for LoginError {}
impl std::error::Error for CreateError {}
impl std::error::Error for PasswordChangeError {}
impl std::error::Error for AdminError {}

/// A lower-case error message as a sentence: capitalised, ending in a full stop.
pub fn sentence(message: &impl fmt::Display) -> String {
    let text = message.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => {
            let mut out: String = first.to_uppercase().chain(chars).collect();
            if !out.ends_with('.') {
                out.push('.');
            }
            out
        }
        None => String::new(),
    }
}

/// The file in the data directory that holds the setup code.
pub const SETUP_CODE_FILE: &str = "setup-code";

/// The one-time code the first registration on an empty store needs, so that a freshly
/// installed server does not hand its administrator account to whoever comes first.
/// It is written to `setup-code` in the data directory (mode 0600) and logged at start;
/// an earlier start's code is kept, so a restart does not invalidate a copied code. It
/// is spent by the registration that succeeds and retired as soon as any user exists
/// (for example one made with `latchkey user add NAME --role admin`); the file goes
/// with it.
#[derive(Debug, Default)]
pub struct SetupCode {
    path: Option<PathBuf>,
    code: Mutex<Option<String>>,
}

/// Why the setup code could not be armed.
#[derive(Debug)]
pub enum SetupError {
    /// The store could not be counted.
    Store(StoreError),
    /// The file could not be read, written or removed.
    File(PathBuf, std::io::Error),
    /// The system random source failed.
    Random(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Store(e) => write!(f, "{e}"),
            SetupError::File(path, e) => {
                write!(f, "cannot write the setup code to {}: {e}", path.display())
            }
            SetupError::Random(e) => write!(f, "cannot make a setup code: {e}"),
        }
    }
}

impl std::error::Error for SetupError {}

/// A claimed setup code: put back when dropped, unless [`spend`](Self::spend) is called.
#[derive(Debug)]
pub struct SetupClaim<'a> {
    setup: &'a SetupCode,
    code: Option<String>,
}

impl SetupClaim<'_> {
    /// The registration succeeded: the code is gone for good.
    pub fn spend(mut self) {
        self.code = None;
        self.setup.retire();
    }
}

impl Drop for SetupClaim<'_> {
    fn drop(&mut self) {
        if let Some(code) = self.code.take() {
            *self.setup.lock() = Some(code);
        }
    }
}

impl SetupCode {
    /// No code: the store has users (or this instance has no store).
    pub fn none() -> SetupCode {
        SetupCode::default()
    }

    /// The code for a store in `data_dir`: armed (kept from `setup-code`, or made and
    /// written there with mode 0600) while the store is empty; otherwise none, and a
    /// leftover file is removed.
    pub fn arm(data_dir: &Path, store: &UserStore) -> Result<SetupCode, SetupError> {
        let path = data_dir.join(SETUP_CODE_FILE);
        if !is_empty(store).map_err(SetupError::Store)? {
            remove_file(&path)?;
            return Ok(SetupCode::none());
        }
        let kept = std::fs::read_to_string(&path)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| well_formed_code(t));
        let mut code = match kept {
            Some(code) => code,
            None => new_setup_code()?,
        };
        if store.is_shared() {
            // Several instances share the store: the first to start keeps its code in
            // it, and every instance uses that one (each writes it to its own file).
            match store
                .shared_setup_code(&code)
                .map_err(|e| SetupError::Store(e.into()))?
            {
                Some(shared) => code = shared,
                None => {
                    remove_file(&path)?;
                    return Ok(SetupCode::none());
                }
            }
        }
        let on_file = std::fs::read_to_string(&path)
            .ok()
            .map(|t| t.trim().to_string());
        if on_file.as_deref() != Some(code.as_str()) {
            write_private(&path, &format!("{code}\n"))
                .map_err(|e| SetupError::File(path.clone(), e))?;
        }
        Ok(SetupCode {
            path: Some(path),
            code: Mutex::new(Some(code)),
        })
    }

    /// The code while the first registration still needs it (for the start-up log).
    pub fn code(&self) -> Option<String> {
        self.lock().clone()
    }

    /// The file the code is in.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Takes the code when `offered` is it (compared in constant time); only one
    /// registration can hold it at a time.
    fn claim(&self, offered: &str) -> Result<SetupClaim<'_>, CreateError> {
        let mut held = self.lock();
        let matches = held
            .as_deref()
            .is_some_and(|code| constant_time_eq(code.as_bytes(), offered.trim().as_bytes()));
        if !matches {
            return Err(CreateError::SetupCode);
        }
        Ok(SetupClaim {
            setup: self,
            code: held.take(),
        })
    }

    /// Forgets the code and removes its file (best effort; a failure is logged).
    fn retire(&self) {
        let had = self.lock().take().is_some();
        if let Some(path) = &self.path
            && (had || path.exists())
            && let Err(e) = remove_file(path)
        {
            crate::log::error(&e.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.code.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// 20 characters of Crockford's base32 in four groups (100 bits), e.g. `7KQ2M-XT4PA-9WZRE-HD3FN`.
fn new_setup_code() -> Result<String, SetupError> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut bytes = [0u8; 20];
    getrandom::fill(&mut bytes).map_err(|e| SetupError::Random(e.to_string()))?;
    let mut code = String::with_capacity(23);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 && i % 5 == 0 {
            code.push('-');
        }
        code.push(ALPHABET[usize::from(b & 31)] as char);
    }
    Ok(code)
}

fn well_formed_code(code: &str) -> bool {
    code.len() == 23
        && code.split('-').count() == 4
        && code
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || b.is_ascii_uppercase())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Writes `text` to a new file at `path` with mode 0600 (replacing an old one).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

fn remove_file(path: &Path) -> Result<(), SetupError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(SetupError::File(path.to_path_buf(), e))
        }
        _ => Ok(()),
    }
}

/// A counting semaphore that never blocks: beyond `max` holders, `try_enter` fails.
/// It bounds how many password hashes run at once, so a burst of logins never holds
/// every worker.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    used: AtomicUsize,
}

/// A place in a [`Gate`], given back when dropped.
#[derive(Debug)]
pub struct GatePass<'a>(&'a Gate);

impl Gate {
    /// A gate letting `max` holders in at once.
    pub fn new(max: usize) -> Gate {
        Gate {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Enters when a place is free.
    pub fn try_enter(&self) -> Option<GatePass<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| GatePass(self))
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// 32 random bytes (a fixed fallback if the system has no randomness: the key only
/// spreads unknown names over costs, and the server sets its own).
fn random_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    let _ = getrandom::fill(&mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::password::Params;

    struct Fixture {
        dir: std::path::PathBuf,
        store: UserStore,
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn fixture(tag: &str) -> Fixture {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "latchkey-accounts-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let store = UserStore::open(&dir.join("users.redb")).expect("store");
        Fixture { dir, store }
    }

    fn rules(signup_open: bool, login_concurrency: usize) -> Rules {
        Rules {
            setup: SetupCode::none(),
            passwords: Passwords::new(Params {
                m_kib: 64,
                t: 1,
                p: 1,
            })
            .expect("params"),
            throttle: Limits {
                max_failures: 3,
                window: 60,
                lockout: 300,
                capacity: 100,
            },
            login_concurrency,
            signup_open,
            totp: TotpPolicy::default(),
        }
    }

    static CLIENT: std::sync::LazyLock<Client> =
        std::sync::LazyLock::new(|| Client::Addr("192.0.2.7".parse().expect("ip")));

    /// The account rules over the fixture's store, with its setup code armed.
    fn armed(f: &Fixture, signup_open: bool, login_concurrency: usize) -> Accounts {
        Accounts::new(Rules {
            setup: SetupCode::arm(&f.dir, &f.store).expect("armed"),
            ..rules(signup_open, login_concurrency)
        })
    }

    /// Registers through the account rules, with the setup code when it is needed.
    fn register(
        accounts: &Accounts,
        store: &UserStore,
        name: &str,
        password: &str,
    ) -> Result<User, CreateError> {
        let code = accounts.setup_code().code().unwrap_or_default();
        accounts.register(
            store,
            &Registration {
                name,
                password,
                confirm: password,
                setup_code: &code,
            },
        )
    }

    fn attempt<'a>(name: &'a str, password: &'a str, now: i64) -> Attempt<'a> {
        Attempt {
            name,
            password,
            client: Some(&CLIENT),
            now,
        }
    }

    #[test]
    fn unknown_names_are_checked_at_the_stored_costs_each_name_always_at_one() {
        let f = fixture("costs");
        let old = Params {
            m_kib: 128,
            t: 2,
            p: 1,
        };
        let hash = Passwords::new(old)
            .expect("params")
            .hash("correct horse battery")
            .expect("hash");
        f.store.create("carol", ROLE_USER, &hash).expect("create");
        let accounts = Accounts::new(rules(false, 4)).with_name_key([7; 32]);
        let configured = accounts.passwords().params();
        // Before any count: the configured cost.
        assert_eq!(accounts.unknown_cost("nobody"), configured);
        let _ = accounts.login(&f.store, &attempt("nobody", "wrong guess 1", 0));
        // Every stored hash is at the old cost: so is every unknown name.
        for name in ["nobody", "NoBody ", "someone", "x"] {
            assert_eq!(accounts.unknown_cost(name), old, "{name}");
        }
        // Half the users at each cost: names split, each always the same way (case and
        // spaces as the store compares names).
        let new_hash = accounts.passwords().hash("another password").expect("hash");
        f.store
            .create("dave", ROLE_USER, &new_hash)
            .expect("create");
        accounts.lock_costs().counted = None;
        let _ = accounts.login(&f.store, &attempt("nobody", "wrong guess 2", 0));
        let picks: Vec<Params> = (0..200)
            .map(|i| accounts.unknown_cost(&format!("name{i}")))
            .collect();
        let at_old = picks.iter().filter(|p| **p == old).count();
        assert!(
            (60..=140).contains(&at_old),
            "{at_old} of 200 at the old cost"
        );
        assert_eq!(
            accounts.unknown_cost("Name7"),
            accounts.unknown_cost(" name7")
        );
    }

    #[test]
    fn the_first_registration_needs_the_setup_code_once() {
        let f = fixture("setup");
        let accounts = Accounts::new(Rules {
            setup: SetupCode::arm(&f.dir, &f.store).expect("armed"),
            ..rules(false, 1)
        });
        let file = f.dir.join(SETUP_CODE_FILE);
        let code = accounts.setup_code().code().expect("a code");
        assert_eq!(std::fs::read_to_string(&file).expect("file").trim(), code);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // A restart keeps the code the operator may have copied.
        let again = SetupCode::arm(&f.dir, &f.store).expect("armed");
        assert_eq!(again.code().as_deref(), Some(code.as_str()));
        let first = |setup_code: &str, name: &str| {
            accounts.register(
                &f.store,
                &Registration {
                    name,
                    password: "long enough",
                    confirm: "long enough",
                    setup_code,
                },
            )
        };
        for wrong in ["", "7KQ2M-XT4PA-9WZRE-HD3FN", &code[..22]] {
            let err = first(wrong, "mallory").expect_err("refused");
            assert!(matches!(err, CreateError::SetupCode), "{wrong:?}: {err:?}");
        }
        // A refusal for another reason leaves the code in place.
        assert!(matches!(first(&code, "-bad"), Err(CreateError::Name(_))));
        let admin = first(&format!(" {} ", code.to_lowercase().to_uppercase()), "root")
            .expect("the right code");
        assert_eq!(admin.role, ROLE_ADMIN);
        assert!(!file.exists(), "the file goes once the code is spent");
        assert_eq!(accounts.setup_code().code(), None);
        assert!(matches!(first(&code, "other"), Err(CreateError::Closed)));
        // With a user in the store no code is armed, and a stale file is removed.
        std::fs::write(&file, "stale").expect("write");
        let none = SetupCode::arm(&f.dir, &f.store).expect("none");
        assert_eq!(none.code(), None);
        assert!(!file.exists());
    }

    #[test]
    fn any_new_user_retires_the_setup_code() {
        let f = fixture("retire");
        let accounts = Accounts::new(Rules {
            setup: SetupCode::arm(&f.dir, &f.store).expect("armed"),
            ..rules(false, 1)
        });
        assert!(accounts.setup_code().code().is_some());
        accounts
            .create(
                &f.store,
                &NewUser {
                    name: "ops",
                    password: "long enough",
                    confirm: None,
                    role: ROLE_ADMIN,
                },
            )
            .expect("created as by `user add --role admin`");
        assert_eq!(accounts.setup_code().code(), None);
        assert!(!f.dir.join(SETUP_CODE_FILE).exists());
    }

    #[test]
    fn the_first_user_is_the_administrator_and_registration_then_closes() {
        let f = fixture("first");
        let accounts = armed(&f, false, 1);
        assert!(accounts.signup_open(&f.store).expect("open"));
        let first = register(&accounts, &f.store, "Alice", "correct horse").expect("first");
        assert_eq!(first.role, ROLE_ADMIN);
        assert!(!accounts.signup_open(&f.store).expect("closed"));
        let err = register(&accounts, &f.store, "bob", "correct horse").expect_err("closed");
        assert!(matches!(err, CreateError::Closed), "{err:?}");

        let open = armed(&f, true, 1);
        let second = register(&open, &f.store, "bob", "correct horse").expect("open sign-up");
        assert_eq!(second.role, ROLE_USER);
    }

    #[test]
    fn creation_checks_every_rule_before_hashing() {
        let f = fixture("create");
        let accounts = armed(&f, true, 1);
        let new = |name, password, confirm, role| NewUser {
            name,
            password,
            confirm,
            role,
        };
        let cases: [(NewUser<'_>, &str); 5] = [
            (
                new("ok", "long enough", Some("different"), "user"),
                "The two passwords differ.",
            ),
            (new("-bad", "long enough", None, "user"), "Bad user name"),
            (new("ok", "long enough", None, "Admin"), "Bad role"),
            (
                new("ok", "short", None, "user"),
                "The password is too short",
            ),
            (new("", "long enough", None, "user"), "Bad user name"),
        ];
        for (case, message) in cases {
            let err = accounts.create(&f.store, &case).expect_err("refused");
            assert!(err.to_string().starts_with(message), "{case:?}: {err}");
        }
        accounts
            .create(&f.store, &new("Carol", "long enough", None, "ops"))
            .expect("created");
        let err = accounts
            .create(&f.store, &new(" carol ", "long enough", None, "user"))
            .expect_err("taken");
        assert!(matches!(err, CreateError::Taken), "{err:?}");
        assert_eq!(f.store.count().expect("count"), 1);
    }

    #[test]
    fn logins_are_throttled_by_name_and_a_success_resets_the_name() {
        let f = fixture("login");
        let accounts = armed(&f, true, 1);
        register(&accounts, &f.store, "dave", "right password").expect("user");
        let user = accounts
            .login(&f.store, &attempt("DAVE ", "right password", 100))
            .expect("login ignores case and spaces")
            .into_user();
        assert!(user.last_login.is_some());
        for _ in 0..2 {
            let err = accounts
                .login(&f.store, &attempt("dave", "wrong", 100))
                .expect_err("wrong");
            assert!(matches!(err, LoginError::Wrong));
        }
        // A success forgets the name's two failures...
        accounts
            .login(&f.store, &attempt("dave", "right password", 100))
            .expect("login");
        for _ in 0..3 {
            let _ = accounts.login(&f.store, &attempt("dave", "wrong", 101));
        }
        // ...but three in a row lock the name out, right password or not.
        let err = accounts
            .login(&f.store, &attempt("dave", "right password", 102))
            .expect_err("throttled");
        assert!(matches!(err, LoginError::Throttled(_)), "{err:?}");
        assert_eq!(err.retry_after(), Some(299));
        // Unknown names and locked accounts fail like a wrong password.
        let err = accounts
            .login(&f.store, &attempt("nobody", "whatever", 1000))
            .expect_err("unknown");
        assert!(matches!(err, LoginError::Wrong));
    }

    #[test]
    fn a_full_hashing_gate_answers_busy() {
        let f = fixture("busy");
        let accounts = armed(&f, true, 1);
        let _held = accounts.hashing.try_enter().expect("the only place");
        let err = accounts
            .login(&f.store, &attempt("x", "y", 1))
            .expect_err("busy");
        assert!(matches!(err, LoginError::Busy));
        assert_eq!(err.retry_after(), Some(1));
    }

    #[test]
    fn a_password_change_needs_the_current_password_and_revokes() {
        let f = fixture("change");
        let accounts = armed(&f, true, 1);
        let user = register(&accounts, &f.store, "erin", "old password").expect("user");
        let err = accounts
            .change_password(
                &f.store,
                &attempt("erin", "wrong one", 5),
                "new password",
                "new password",
            )
            .expect_err("wrong current");
        assert_eq!(err.to_string(), "The current password is wrong.");
        let err = accounts
            .change_password(&f.store, &attempt("erin", "old password", 5), "a", "b")
            .expect_err("differ");
        assert!(matches!(err, PasswordChangeError::PasswordsDiffer));
        let changed = accounts
            .change_password(
                &f.store,
                &attempt("erin", "old password", 5),
                "new password",
                "new password",
            )
            .expect("changed");
        assert_eq!(changed.ver, user.ver + 1, "older tokens are revoked");
        accounts
            .login(&f.store, &attempt("erin", "new password", 6))
            .expect("new password works");
    }

    #[test]
    fn administrators_cannot_act_on_themselves_except_to_end_their_sessions() {
        let f = fixture("admin");
        let accounts = armed(&f, true, 1);
        let admin = register(&accounts, &f.store, "root", "password!").expect("admin");
        let user = register(&accounts, &f.store, "frank", "password!").expect("user");
        for action in [
            AdminAction::SetRole("user"),
            AdminAction::Lock,
            AdminAction::Unlock,
            AdminAction::Delete,
        ] {
            let err = accounts
                .administer(&f.store, admin.id, admin.id, action)
                .expect_err("own account");
            assert!(matches!(err, AdminError::OwnAccount), "{action:?}");
        }
        accounts
            .administer(&f.store, admin.id, admin.id, AdminAction::Revoke)
            .expect("own sessions");
        let done = accounts
            .administer(&f.store, admin.id, user.id, AdminAction::SetRole("ops"))
            .expect("role");
        assert_eq!(done.to_string(), "frank now has the role ops.");
        let err = accounts
            .administer(
                &f.store,
                admin.id,
                user.id,
                AdminAction::SetRole("Bad Role"),
            )
            .expect_err("bad role");
        assert!(err.to_string().starts_with("Bad role"), "{err}");
        let done = accounts
            .administer(&f.store, admin.id, user.id, AdminAction::Delete)
            .expect("delete");
        assert_eq!(
            done.to_string(),
            format!("frank (id {}) was deleted.", user.id)
        );
        let err = accounts
            .administer(&f.store, admin.id, user.id, AdminAction::Lock)
            .expect_err("gone");
        assert!(matches!(err, AdminError::NotFound));
    }

    /// Far enough from any step boundary that "now" stays within one step.
    const T: i64 = 1_800_000_010;

    fn code(secret: &[u8], at: i64) -> String {
        format!("{:06}", totp::code_at(secret, at))
    }

    fn code_attempt<'a>(user: &User, code: &'a str, now: i64) -> CodeAttempt<'a> {
        CodeAttempt {
            user_id: user.id,
            ver: user.ver,
            code,
            client: Some(&CLIENT),
            now,
        }
    }

    /// A user with a second factor switched on at `T`: the user, the secret, the
    /// recovery codes.
    fn enrolled(
        accounts: &Accounts,
        store: &UserStore,
        name: &str,
    ) -> (User, Vec<u8>, Vec<String>) {
        let user = register(accounts, store, name, "password!").expect("user");
        let enrolment = accounts
            .begin_totp(store, user.id, "latchkey")
            .expect("begin");
        assert!(
            enrolment
                .uri
                .starts_with(&format!("otpauth://totp/latchkey:{name}?secret="))
        );
        let (user, codes) = accounts
            .enable_totp(
                store,
                user.id,
                &code(&enrolment.secret, T),
                Some(&CLIENT),
                T,
            )
            .expect("enable");
        (user, enrolment.secret, codes)
    }

    #[test]
    fn the_policy_says_who_must_have_a_second_factor() {
        let policy = |mode, roles: &[&str]| TotpPolicy {
            mode,
            required_roles: roles.iter().map(|r| r.to_string()).collect(),
        };
        let optional = policy(TotpMode::Optional, &["admin"]);
        assert!(optional.must_enrol("admin", false) && !optional.must_enrol("admin", true));
        assert!(!optional.must_enrol("user", false));
        let required = policy(TotpMode::Required, &[]);
        assert!(required.must_enrol("user", false) && !required.must_enrol("user", true));
        let off = policy(TotpMode::Off, &[]);
        assert!(!off.enabled() && !off.must_enrol("admin", false));
        let mut user = User::new(1, "a".into(), "user".into(), "h".into(), 0);
        assert!(!required.asks_code(&user));
        user.totp = Some(store::TotpFactor {
            secret: vec![1; 20],
            last_step: 0,
            recovery: Vec::new(),
        });
        assert!(required.asks_code(&user) && optional.asks_code(&user));
        assert!(
            !off.asks_code(&user),
            "off: factors are kept but not asked for"
        );
    }

    #[test]
    fn a_login_with_a_second_factor_takes_a_fresh_code_once() {
        let f = fixture("totp-login");
        // The address's failures are not forgotten on a success: room for this test's.
        let accounts = Accounts::new(Rules {
            setup: SetupCode::arm(&f.dir, &f.store).expect("armed"),
            throttle: Limits {
                max_failures: 10,
                window: 60,
                lockout: 300,
                capacity: 100,
            },
            ..rules(true, 1)
        });
        let (user, secret, codes) = enrolled(&accounts, &f.store, "gail");
        assert_eq!(codes.len(), totp::RECOVERY_CODES);
        assert_eq!(user.totp.as_ref().expect("on").last_step, totp::step(T));
        let step = accounts
            .login(&f.store, &attempt("gail", "password!", T))
            .expect("password");
        let PasswordLogin::NeedsCode(user) = step else {
            panic!("a user with a factor needs a code: {step:?}");
        };
        let now = T + 30;
        // The code that switched the factor on was used; so is an older one.
        for (old, why) in [(T, CodeError::Replayed), (T - 60, CodeError::Wrong)] {
            let err = accounts
                .second_factor(&f.store, &code_attempt(&user, &code(&secret, old), now))
                .expect_err("refused");
            assert!(
                matches!(err, CodeLoginError::Code(e) if e == why),
                "{err:?}"
            );
        }
        let done = accounts
            .second_factor(&f.store, &code_attempt(&user, &code(&secret, now), now))
            .expect("the current code");
        assert_eq!(done.recovery_left, None);
        assert_eq!(done.user.totp.expect("on").last_step, totp::step(now));
        let err = accounts
            .second_factor(&f.store, &code_attempt(&user, &code(&secret, now), now))
            .expect_err("replay");
        assert!(
            matches!(err, CodeLoginError::Code(CodeError::Replayed)),
            "{err:?}"
        );
        // One step ahead (a fast phone clock) is fine, once.
        accounts
            .second_factor(
                &f.store,
                &code_attempt(&user, &code(&secret, now + 30), now),
            )
            .expect("one step ahead");
        // Recovery codes: once each, any case and spacing.
        let typed = codes[3].to_lowercase().replace('-', " ");
        let done = accounts
            .second_factor(&f.store, &code_attempt(&user, &typed, now))
            .expect("recovery code");
        assert_eq!(done.recovery_left, Some(totp::RECOVERY_CODES - 1));
        let err = accounts
            .second_factor(&f.store, &code_attempt(&user, &codes[3], now))
            .expect_err("spent");
        assert!(matches!(err, CodeLoginError::WrongRecovery), "{err:?}");
        // A change to the account since the password voids the half-done login.
        accounts.revoke_all(&f.store, user.id).expect("revoke");
        let err = accounts
            .second_factor(
                &f.store,
                &code_attempt(&user, &code(&secret, now + 60), now + 60),
            )
            .expect_err("stale");
        assert!(matches!(err, CodeLoginError::Stale), "{err:?}");
    }

    #[test]
    fn wrong_codes_count_in_the_login_throttle() {
        let f = fixture("totp-throttle");
        let accounts = armed(&f, true, 1);
        let (_, secret, _) = enrolled(&accounts, &f.store, "hal");
        let now = T + 90;
        // Every attempt from another address (an attacker who knows the password, spread
        // over many): only the name's count can stop them.
        let clients: Vec<Client> = (1..=8)
            .map(|i| Client::Addr(format!("198.51.100.{i}").parse().expect("ip")))
            .collect();
        let password = |i: usize| {
            let attempt = Attempt {
                client: Some(&clients[i]),
                ..attempt("hal", "password!", now)
            };
            accounts.login(&f.store, &attempt)
        };
        let code_from = |i: usize, user: &User, code: &str| {
            let attempt = CodeAttempt {
                client: Some(&clients[i]),
                ..code_attempt(user, code, now)
            };
            accounts.second_factor(&f.store, &attempt)
        };
        let right = code(&secret, now);
        let wrong = if right == "000000" {
            "999999"
        } else {
            "000000"
        };
        let user = password(0).expect("password").into_user();
        let err = code_from(1, &user, wrong).expect_err("wrong");
        assert!(
            matches!(err, CodeLoginError::Code(CodeError::Wrong)),
            "{err:?}"
        );
        // Not a code at all: refused without counting.
        let err = code_from(2, &user, "12").expect_err("not a code");
        assert!(
            matches!(err, CodeLoginError::Code(CodeError::NotACode)),
            "{err:?}"
        );
        // A correct password does not forget the failures of a user who still owes a
        // code: the password again, then two more wrong codes, lock the name.
        let user = password(3).expect("password").into_user();
        let err = code_from(4, &user, "RECO-VERY-CODE-0000").expect_err("second failure");
        assert!(matches!(err, CodeLoginError::WrongRecovery), "{err:?}");
        let user = password(5).expect("password").into_user();
        let err = code_from(6, &user, wrong).expect_err("third failure");
        assert!(
            matches!(err, CodeLoginError::Code(CodeError::Wrong)),
            "{err:?}"
        );
        let err = code_from(7, &user, &right).expect_err("throttled, right code or not");
        assert!(matches!(err, CodeLoginError::Throttled(_)), "{err:?}");
        assert_eq!(err.retry_after(), Some(300));
        let err = password(0).expect_err("the password too");
        assert!(matches!(err, LoginError::Throttled(_)), "{err:?}");
    }

    #[test]
    fn enrolment_and_switching_off_follow_the_rules() {
        let f = fixture("totp-enrol");
        let accounts = armed(&f, true, 1);
        let user = register(&accounts, &f.store, "ivy", "password!").expect("user");
        let err = accounts
            .enable_totp(&f.store, user.id, "123456", None, T)
            .expect_err("nothing started");
        assert!(matches!(err, TotpError::NotStarted), "{err:?}");
        let first = accounts
            .begin_totp(&f.store, user.id, "Acme")
            .expect("begin");
        let again = accounts
            .begin_totp(&f.store, user.id, "Acme")
            .expect("start over");
        assert_ne!(first.secret, again.secret);
        assert_eq!(
            format!("{first:?}"),
            "Enrolment { .. }",
            "no secret in Debug"
        );
        let stored = f.store.get(user.id).expect("get").expect("ivy");
        assert_eq!(
            accounts.pending_enrolment(&stored, "Acme"),
            Some(again.clone())
        );
        // The first key's code does not switch on the second.
        let err = accounts
            .enable_totp(&f.store, user.id, &code(&first.secret, T), None, T)
            .expect_err("old key");
        assert!(matches!(err, TotpError::Code(CodeError::Wrong)), "{err:?}");
        let (on, codes) = accounts
            .enable_totp(&f.store, user.id, &code(&again.secret, T), None, T)
            .expect("enable");
        assert_eq!(on.ver, user.ver + 1, "sessions from before end");
        let hashes = &on.totp.as_ref().expect("on").recovery;
        assert!(
            codes
                .iter()
                .all(|c| totp::match_recovery(hashes, c).is_some())
        );
        let err = accounts
            .begin_totp(&f.store, user.id, "Acme")
            .expect_err("already on");
        assert!(matches!(err, TotpError::AlreadyOn), "{err:?}");
        assert_eq!(accounts.pending_enrolment(&on, "Acme"), None);

        // Off needs the password and a code.
        let now = T + 60;
        let err = accounts
            .disable_totp(
                &f.store,
                &attempt("ivy", "wrong!", now),
                &code(&again.secret, now),
            )
            .expect_err("wrong password");
        assert_eq!(err.to_string(), "The password is wrong.");
        let err = accounts
            .disable_totp(&f.store, &attempt("ivy", "password!", now), "000000")
            .expect_err("no code");
        assert!(matches!(err, TotpError::Code(_)), "{err:?}");
        let off = accounts
            .disable_totp(&f.store, &attempt("ivy", "password!", now), &codes[0])
            .expect("a recovery code does too");
        assert!(off.totp.is_none() && off.ver == on.ver + 1);
        let err = accounts
            .disable_totp(&f.store, &attempt("ivy", "password!", now), "123456")
            .expect_err("not on");
        assert!(matches!(err, TotpError::NotOn), "{err:?}");

        // Switched off on the server: nothing is offered.
        let off_server = Accounts::new(Rules {
            totp: TotpPolicy {
                mode: TotpMode::Off,
                required_roles: Vec::new(),
            },
            ..rules(true, 1)
        });
        let err = off_server
            .begin_totp(&f.store, user.id, "Acme")
            .expect_err("off");
        assert!(matches!(err, TotpError::Off), "{err:?}");
    }

    #[test]
    fn ipv6_clients_are_throttled_by_their_64() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
        assert_eq!(
            throttle_network(ip("2001:db8:1:2:aaaa::1")),
            throttle_network(ip("2001:db8:1:2:bbbb::9"))
        );
        assert_ne!(
            throttle_network(ip("2001:db8:1:2::1")),
            throttle_network(ip("2001:db8:1:3::1"))
        );
        assert_eq!(throttle_network(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(throttle_network(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn the_gate_lets_max_holders_in_and_frees_a_place_on_drop() {
        let gate = Gate::new(2);
        let a = gate.try_enter().expect("first place");
        let b = gate.try_enter().expect("second place");
        assert!(gate.try_enter().is_none(), "a third holder is refused");
        drop(a);
        let c = gate.try_enter().expect("a freed place is taken again");
        assert!(gate.try_enter().is_none());
        drop((b, c));
        assert!(gate.try_enter().is_some());
    }

    #[test]
    fn sentences() {
        assert_eq!(sentence(&"bad role: x"), "Bad role: x.");
        assert_eq!(sentence(&"done."), "Done.");
        assert_eq!(sentence(&""), "");
    }
}

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
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::http::Client;
use crate::password::{self, PasswordError, Passwords, Verdict};
use crate::store::{self, ROLE_ADMIN, ROLE_USER, StoreError, User, UserStore};
use crate::throttle::{Key, Limits, Throttle};

/// The account machinery one server shares between its workers: password hashing at
/// the configured cost, failed-login throttling, the hashing limit and the sign-up rule.
#[derive(Debug)]
pub struct Accounts {
    passwords: Passwords,
    throttle: Throttle,
    hashing: Gate,
    signup_open: bool,
}

/// The settings the account rules depend on.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Password hashing at the configured cost.
    pub passwords: Passwords,
    /// Failed-login throttling limits.
    pub throttle: Limits,
    /// Password hashes computed at once; more attempts are refused as busy.
    pub login_concurrency: usize,
    /// Whether anyone may register once the first user exists.
    pub signup_open: bool,
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
        }
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
    /// ones; a locked account fails like a wrong password. A success forgets the name's
    /// failures, records the login and upgrades a hash made at weaker parameters.
    pub fn login(&self, store: &UserStore, attempt: &Attempt<'_>) -> Result<User, LoginError> {
        let keys = throttle_keys(attempt.name, attempt.client);
        if let Some(retry) = self.throttle.retry_after(&keys, attempt.now) {
            return Err(LoginError::Throttled(retry));
        }
        let Some(_place) = self.hashing.try_enter() else {
            return Err(LoginError::Busy);
        };
        let user = store.get_by_name(attempt.name).map_err(LoginError::Store)?;
        let verdict = match &user {
            Some(user) => self.passwords.verify(attempt.password, &user.password_hash),
            None => self.passwords.verify_unknown(attempt.password),
        };
        match (user, verdict) {
            (Some(user), Verdict::Match { rehash }) if !user.locked => {
                self.throttle.reset(&keys[0]);
                store
                    .record_login(user.id, rehash.as_deref())
                    .map_err(LoginError::Store)
            }
            _ => {
                self.throttle.failure(&keys, attempt.now);
                Err(LoginError::Wrong)
            }
        }
    }

    /// Whether a visitor may register now: sign-up is open, or the store is empty (the
    /// first account is how an administrator comes to exist).
    pub fn signup_open(&self, store: &UserStore) -> Result<bool, StoreError> {
        Ok(self.signup_open || store.count()? == 0)
    }

    /// Self-service registration: allowed while [`signup_open`](Self::signup_open); the
    /// first account of an empty store is an administrator, every later one a user.
    pub fn register(
        &self,
        store: &UserStore,
        name: &str,
        password: &str,
        confirm: &str,
    ) -> Result<User, CreateError> {
        let first = is_empty(store).map_err(CreateError::Store)?;
        if !first && !self.signup_open {
            return Err(CreateError::Closed);
        }
        let role = if first { ROLE_ADMIN } else { ROLE_USER };
        self.create(
            store,
            &NewUser {
                name,
                password,
                confirm: Some(confirm),
                role,
            },
        )
    }

    /// Creates an account after checking the name, role and password rules; hashing
    /// takes a place under the hashing limit.
    pub fn create(&self, store: &UserStore, new: &NewUser<'_>) -> Result<User, CreateError> {
        if new.confirm.is_some_and(|c| c != new.password) {
            return Err(CreateError::PasswordsDiffer);
        }
        let name = store::validate_name(new.name).map_err(CreateError::Name)?;
        store::validate_role(new.role).map_err(CreateError::Role)?;
        password::check_rules(new.password).map_err(CreateError::Password)?;
        let Some(_place) = self.hashing.try_enter() else {
            return Err(CreateError::Busy);
        };
        let hash = self
            .passwords
            .hash(new.password)
            .map_err(CreateError::Password)?;
        match store.create(&name, new.role, &hash) {
            Ok(user) => Ok(user),
            Err(StoreError::NameTaken(_)) => Err(CreateError::Taken),
            Err(e @ StoreError::BadName(_)) => Err(CreateError::Name(e)),
            Err(e @ StoreError::BadRole(_)) => Err(CreateError::Role(e)),
            Err(e) => Err(CreateError::Store(e)),
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
            .map_err(PasswordChangeError::Current)?;
        let Some(_place) = self.hashing.try_enter() else {
            return Err(PasswordChangeError::Current(LoginError::Busy));
        };
        let hash = self
            .passwords
            .hash(new)
            .map_err(PasswordChangeError::Password)?;
        store
            .set_password(user.id, &hash)
            .map_err(PasswordChangeError::Store)
    }

    /// Ends every session of user `id` ("log out everywhere").
    pub fn revoke_all(&self, store: &UserStore, id: u64) -> Result<User, StoreError> {
        store.revoke(id)
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
                store::validate_role(role).map_err(AdminError::Role)?;
                store
                    .set_role(target, role)
                    .map(|u| done(u, AdminActionKind::SetRole))
            }
            AdminAction::Lock => store
                .set_locked(target, true)
                .map(|u| done(u, AdminActionKind::Lock)),
            AdminAction::Unlock => store
                .set_locked(target, false)
                .map(|u| done(u, AdminActionKind::Unlock)),
            AdminAction::Revoke => store
                .revoke(target)
                .map(|u| done(u, AdminActionKind::Revoke)),
            AdminAction::Delete => match store.get(target) {
                Ok(Some(user)) => store
                    .delete(target)
                    .map(|()| done(user, AdminActionKind::Delete)),
                Ok(None) => Err(StoreError::NotFound),
                Err(e) => Err(e),
            },
        };
        result.map_err(|e| match e {
            StoreError::NotFound => AdminError::NotFound,
            e @ StoreError::BadRole(_) => AdminError::Role(e),
            e => AdminError::Store(e),
        })
    }
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
        Some(Client::Addr(addr)) => keys.push(Key::Addr(*addr)),
        Some(Client::Named(name)) => keys.push(Key::Client(name.clone())),
        None => {}
    }
    keys
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
            AdminError::Store(e) => write!(f, "{e}"),
        }
    }
}

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
        }
    }

    static CLIENT: std::sync::LazyLock<Client> =
        std::sync::LazyLock::new(|| Client::Addr("192.0.2.7".parse().expect("ip")));

    fn attempt<'a>(name: &'a str, password: &'a str, now: i64) -> Attempt<'a> {
        Attempt {
            name,
            password,
            client: Some(&CLIENT),
            now,
        }
    }

    #[test]
    fn the_first_user_is_the_administrator_and_registration_then_closes() {
        let f = fixture("first");
        let accounts = Accounts::new(rules(false, 1));
        assert!(accounts.signup_open(&f.store).expect("open"));
        let first = accounts
            .register(&f.store, "Alice", "correct horse", "correct horse")
            .expect("first");
        assert_eq!(first.role, ROLE_ADMIN);
        assert!(!accounts.signup_open(&f.store).expect("closed"));
        let err = accounts
            .register(&f.store, "bob", "correct horse", "correct horse")
            .expect_err("closed");
        assert!(matches!(err, CreateError::Closed), "{err:?}");

        let open = Accounts::new(rules(true, 1));
        let second = open
            .register(&f.store, "bob", "correct horse", "correct horse")
            .expect("open sign-up");
        assert_eq!(second.role, ROLE_USER);
    }

    #[test]
    fn creation_checks_every_rule_before_hashing() {
        let f = fixture("create");
        let accounts = Accounts::new(rules(true, 1));
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
        let accounts = Accounts::new(rules(true, 1));
        accounts
            .register(&f.store, "dave", "right password", "right password")
            .expect("user");
        let user = accounts
            .login(&f.store, &attempt("DAVE ", "right password", 100))
            .expect("login ignores case and spaces");
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
        let accounts = Accounts::new(rules(true, 1));
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
        let accounts = Accounts::new(rules(true, 1));
        let user = accounts
            .register(&f.store, "erin", "old password", "old password")
            .expect("user");
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
        let accounts = Accounts::new(rules(true, 1));
        let admin = accounts
            .register(&f.store, "root", "password!", "password!")
            .expect("admin");
        let user = accounts
            .register(&f.store, "frank", "password!", "password!")
            .expect("user");
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

//! The change each write operation makes to one user record, as plain functions on a
//! [`User`]: both backends apply them inside their own transaction (redb's write
//! transaction, PostgreSQL's row lock), so a rule is written once and the two stores
//! cannot drift apart.
//!
//! `now` is the time of the change, Unix seconds. The conditional changes (the second
//! factor's compare-and-set steps) return whether their condition held; when it did not,
//! they leave the user untouched and the backend writes nothing.

use super::{TotpFactor, User};

/// Ends every session of the user: bumps the token version `ver`.
fn end_sessions(user: &mut User) {
    user.ver = user.ver.saturating_add(1);
}

/// Sets the role. `ver` is kept: the server applies the stored role on the next request.
pub fn set_role(user: &mut User, role: &str, now: i64) {
    user.role = role.to_string();
    user.updated = now;
}

/// Sets the password hash and whether the user must change it at the next login (an
/// administrator's reset; `false` when the user chose it), and ends every session.
pub fn set_password(user: &mut User, password_hash: &str, must_change: bool, now: i64) {
    user.password_hash = password_hash.to_string();
    user.must_change_password = must_change;
    end_sessions(user);
    user.updated = now;
}

/// Removes the second factor and any enrolment in progress, and ends every session.
pub fn reset_totp(user: &mut User, now: i64) {
    user.totp = None;
    user.totp_pending = None;
    end_sessions(user);
    user.updated = now;
}

/// Starts (or starts over) an enrolment: `secret` becomes the pending secret. The factor
/// in force, `ver` and `updated` are kept: nothing is in force until [`enable_totp`].
pub fn begin_totp(user: &mut User, secret: &[u8]) {
    user.totp_pending = Some(secret.to_vec());
}

/// Switches the second factor on, only if the pending secret is still `pending` (the one
/// the user's code was checked against: another tab may have started over meanwhile)
/// and no factor is on yet: the pending secret becomes the factor's, with `step` (the
/// step of the confirming code) as its last used step and `recovery` as its recovery code
/// hashes; every session from before ends.
pub fn enable_totp(
    user: &mut User,
    pending: &[u8],
    step: u64,
    recovery: &[[u8; 32]],
    now: i64,
) -> bool {
    if user.totp.is_some() || user.totp_pending.as_deref() != Some(pending) {
        return false;
    }
    user.totp = user.totp_pending.take().map(|secret| TotpFactor {
        secret,
        last_step: step,
        recovery: recovery.to_vec(),
    });
    end_sessions(user);
    user.updated = now;
    true
}

/// Records that the code of time step `step` was accepted, only if the user still has
/// the factor whose secret is `secret` and `step` is later than its last used step (so a
/// code is accepted once: a replay, or a factor reset meanwhile, changes nothing).
pub fn use_totp_step(user: &mut User, secret: &[u8], step: u64) -> bool {
    match &mut user.totp {
        Some(factor) if factor.secret == secret && step > factor.last_step => {
            factor.last_step = step;
            true
        }
        _ => false,
    }
}

/// Spends a recovery code: removes the hash `hash` from the factor, only if it is there
/// (never issued, or already used, changes nothing).
pub fn use_recovery_code(user: &mut User, hash: &[u8; 32]) -> bool {
    let Some(factor) = &mut user.totp else {
        return false;
    };
    let before = factor.recovery.len();
    factor.recovery.retain(|h| h != hash);
    factor.recovery.len() < before
}

/// Locks (ending every session, on every call) or unlocks (keeping `ver`).
pub fn set_locked(user: &mut User, locked: bool, now: i64) {
    if locked {
        end_sessions(user);
    }
    user.locked = locked;
    user.updated = now;
}

/// Ends every session: every token issued before is revoked.
pub fn revoke(user: &mut User, now: i64) {
    end_sessions(user);
    user.updated = now;
}

/// Records a successful login at `now`, with the password re-hashed at other parameters
/// when `new_hash` is given. Neither `ver` nor `updated` changes.
pub fn record_login(user: &mut User, new_hash: Option<&str>, now: i64) {
    user.last_login = Some(now);
    if let Some(hash) = new_hash {
        user.password_hash = hash.to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            id: 7,
            name: "alice".into(),
            role: "user".into(),
            password_hash: "old".into(),
            ver: 3,
            locked: false,
            must_change_password: false,
            created: 1,
            updated: 1,
            last_login: None,
            totp: None,
            totp_pending: None,
        }
    }

    #[test]
    fn what_ends_sessions_and_what_does_not() {
        let mut u = user();
        set_role(&mut u, "admin", 10);
        assert_eq!((u.role.as_str(), u.ver, u.updated), ("admin", 3, 10));
        set_password(&mut u, "new", true, 11);
        assert_eq!(
            (u.password_hash.as_str(), u.must_change_password, u.ver),
            ("new", true, 4)
        );
        set_locked(&mut u, true, 12);
        set_locked(&mut u, true, 12);
        assert_eq!((u.locked, u.ver), (true, 6), "every lock ends sessions");
        set_locked(&mut u, false, 13);
        assert_eq!((u.locked, u.ver), (false, 6));
        revoke(&mut u, 14);
        assert_eq!(u.ver, 7);
        record_login(&mut u, Some("rehashed"), 15);
        assert_eq!(
            (u.last_login, u.password_hash.as_str(), u.ver, u.updated),
            (Some(15), "rehashed", 7, 14)
        );
    }

    #[test]
    fn the_second_factor_steps_are_compare_and_set() {
        let mut u = user();
        begin_totp(&mut u, b"first");
        begin_totp(&mut u, b"second");
        // The code was checked against the first secret, but another tab started over.
        assert!(!enable_totp(&mut u, b"first", 100, &[[1; 32]], 20));
        assert_eq!((u.totp.is_none(), u.ver), (true, 3));
        assert!(enable_totp(&mut u, b"second", 100, &[[1; 32], [2; 32]], 20));
        assert_eq!((u.totp_pending.is_none(), u.ver), (true, 4));
        assert!(!enable_totp(&mut u, b"second", 100, &[], 21), "already on");
        // Each step once, and only later ones.
        assert!(!use_totp_step(&mut u, b"second", 100));
        assert!(use_totp_step(&mut u, b"second", 101));
        assert!(!use_totp_step(&mut u, b"second", 101));
        assert!(!use_totp_step(&mut u, b"other", 102));
        // Each recovery code once.
        assert!(use_recovery_code(&mut u, &[1; 32]));
        assert!(!use_recovery_code(&mut u, &[1; 32]));
        assert!(!use_recovery_code(&mut u, &[9; 32]));
        reset_totp(&mut u, 30);
        assert_eq!((u.totp.is_none(), u.ver), (true, 5));
        assert!(!use_recovery_code(&mut u, &[2; 32]));
    }
}

//! Logins recorded without waiting for the storage: a successful login is noted in
//! memory at once and committed by a background thread shortly after, in batches, retried
//! while writes fail. Both backends use this queue; each gives only the write of a batch.
//!
//! Reads show a noted login at once ([`Logins::shown`]). A batch being committed stays
//! visible until it is; a failed batch goes back to the pending logins, merged with any
//! newer one. A committed login never replaces a newer `last_login`, and a re-hash
//! replaces the stored hash only if that is still the one the password was checked
//! against (each backend's write applies these two rules).

use std::collections::HashMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::User;

/// How long the flusher gathers logins into one commit.
const BATCH_WINDOW: Duration = Duration::from_millis(100);
/// The longest wait between retries of a failed commit.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// One user's login waiting to be committed.
#[derive(Clone)]
pub(super) struct PendingLogin {
    /// Unix seconds of the login.
    pub(super) at: i64,
    /// The password re-hashed at the configured parameters, when it was.
    pub(super) rehash: Option<Rehash>,
}

/// A password hash to replace, only if it is still the one the password was checked
/// against (a password changed meanwhile is never clobbered).
#[derive(Clone)]
pub(super) struct Rehash {
    /// The hash the password was checked against.
    pub(super) verified: String,
    /// Its replacement.
    pub(super) new: String,
}

impl PendingLogin {
    /// Keeps the later login, and the re-hash of the later one that has one.
    fn merge(&mut self, newer: PendingLogin) {
        self.at = self.at.max(newer.at);
        if newer.rehash.is_some() {
            self.rehash = newer.rehash;
        }
    }
}

/// Logins by user id.
pub(super) type Batch = HashMap<u64, PendingLogin>;

/// A store's side of its login queue: where the queue is and how a batch is written.
pub(super) trait Flushed: Send + Sync + 'static {
    /// The store's queue.
    fn logins(&self) -> &Logins;
    /// Writes a batch in one transaction (see the module docs for the rules).
    fn write_logins(&self, batch: &Batch) -> Result<(), super::UpdateError>;
}

/// Notes a login of `user` at `at` in `store`'s queue (with `new_hash` replacing the
/// verified hash when given) and makes sure its flusher runs, retrying from
/// `first_retry`; returns `user` with that `last_login`.
pub(super) fn note<S: Flushed>(
    store: &std::sync::Arc<S>,
    user: &User,
    at: i64,
    new_hash: Option<&str>,
    first_retry: Duration,
) -> User {
    store.logins().note(user, at, new_hash);
    let runner = std::sync::Arc::clone(store);
    store.logins().start(move || {
        runner
            .logins()
            .run(first_retry, |batch| runner.write_logins(batch));
    });
    User {
        last_login: Some(at),
        ..user.clone()
    }
}

/// Commits `store`'s pending logins now.
pub(super) fn flush<S: Flushed>(store: &S) -> Result<(), super::UpdateError> {
    store.logins().flush(|batch| store.write_logins(batch))
}

#[derive(Default)]
struct Queue {
    pending: Batch,
    /// The batch being committed, still shown by reads until it is.
    in_flight: Batch,
    stop: bool,
}

/// The queue of logins not committed yet, and the thread that commits them.
#[derive(Default)]
pub(super) struct Logins {
    queue: Mutex<Queue>,
    wake: Condvar,
    flusher: Mutex<Option<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Logins {
    /// Notes a login of `user` at `at` (Unix seconds), with `new_hash` replacing the hash
    /// the password was checked against when given, and wakes the flusher.
    pub(super) fn note(&self, user: &User, at: i64, new_hash: Option<&str>) {
        let login = PendingLogin {
            at,
            rehash: new_hash.map(|new| Rehash {
                verified: user.password_hash.clone(),
                new: new.to_string(),
            }),
        };
        let mut queue = lock(&self.queue);
        match queue.pending.get_mut(&user.id) {
            Some(p) => p.merge(login),
            None => {
                queue.pending.insert(user.id, login);
            }
        }
        self.wake.notify_all();
    }

    /// `user` with its login not committed yet, if any.
    pub(super) fn shown(&self, mut user: User) -> User {
        let queue = lock(&self.queue);
        for p in [queue.in_flight.get(&user.id), queue.pending.get(&user.id)]
            .into_iter()
            .flatten()
        {
            user.last_login = Some(user.last_login.map_or(p.at, |t| t.max(p.at)));
        }
        user
    }

    /// Drops the pending login of user `id` (the user was deleted).
    pub(super) fn forget(&self, id: u64) {
        lock(&self.queue).pending.remove(&id);
    }

    /// Commits the pending logins now with `write`; on failure they go back to the
    /// pending ones.
    pub(super) fn flush<E>(&self, write: impl FnOnce(&Batch) -> Result<(), E>) -> Result<(), E> {
        let batch = {
            let mut queue = lock(&self.queue);
            let batch = std::mem::take(&mut queue.pending);
            queue.in_flight.extend(batch.clone());
            batch
        };
        if batch.is_empty() {
            return Ok(());
        }
        let result = write(&batch);
        let mut queue = lock(&self.queue);
        for id in batch.keys() {
            queue.in_flight.remove(id);
        }
        if result.is_err() {
            for (id, login) in batch {
                match queue.pending.get_mut(&id) {
                    Some(newer) => {
                        let mut older = login;
                        older.merge(newer.clone());
                        *newer = older;
                    }
                    None => {
                        queue.pending.insert(id, login);
                    }
                }
            }
        }
        result
    }

    /// Starts the flusher thread, once: `run` is expected to call [`Logins::run`].
    pub(super) fn start(&self, run: impl FnOnce() + Send + 'static) {
        let mut flusher = lock(&self.flusher);
        if flusher.is_none() {
            *flusher = std::thread::Builder::new()
                .name("login-flusher".into())
                .spawn(run)
                .ok();
        }
    }

    /// The flusher's loop: gathers logins for a moment, commits them with `write`, backs
    /// off from `first_retry` (doubling up to 30 s) while writes fail; after
    /// [`Logins::stop`], one last round.
    pub(super) fn run<E>(&self, first_retry: Duration, write: impl Fn(&Batch) -> Result<(), E>) {
        let mut backoff = first_retry;
        loop {
            let stopping = {
                let mut queue = lock(&self.queue);
                while queue.pending.is_empty() && !queue.stop {
                    queue = self
                        .wake
                        .wait(queue)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                if queue.pending.is_empty() {
                    return;
                }
                if !queue.stop {
                    queue = self
                        .wake
                        .wait_timeout(queue, BATCH_WINDOW)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                queue.stop
            };
            if self.flush(&write).is_ok() {
                backoff = first_retry;
                continue;
            }
            if stopping {
                // The last round failed (writes fail): these `last_login` values are lost.
                return;
            }
            let queue = lock(&self.queue);
            if !queue.stop {
                let _ = self.wake.wait_timeout(queue, backoff);
            }
            backoff = (backoff * 2).min(MAX_RETRY);
        }
    }

    /// Stops the flusher after its last round, and waits for it.
    pub(super) fn stop(&self) {
        lock(&self.queue).stop = true;
        self.wake.notify_all();
        if let Some(flusher) = lock(&self.flusher).take() {
            let _ = flusher.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: u64, hash: &str, last_login: Option<i64>) -> User {
        User {
            id,
            name: format!("u{id}"),
            role: "user".into(),
            password_hash: hash.into(),
            ver: 0,
            locked: false,
            must_change_password: false,
            created: 1,
            updated: 1,
            last_login,
            totp: None,
            totp_pending: None,
        }
    }

    #[test]
    fn a_noted_login_is_shown_until_committed_and_never_goes_back_in_time() {
        let logins = Logins::default();
        let alice = user(1, "h1", Some(50));
        logins.note(&alice, 100, None);
        logins.note(&alice, 90, None);
        assert_eq!(logins.shown(alice.clone()).last_login, Some(100));
        assert_eq!(logins.shown(user(1, "h1", Some(200))).last_login, Some(200));
        assert_eq!(logins.shown(user(2, "h", None)).last_login, None);
        let mut written = Vec::new();
        logins
            .flush(|batch| {
                written.extend(batch.iter().map(|(id, l)| (*id, l.at)));
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(written, [(1, 100)]);
        assert_eq!(
            logins.shown(alice).last_login,
            Some(50),
            "committed: the store's own"
        );
        // Nothing pending: the write is not called.
        logins
            .flush(|_| -> Result<(), ()> { panic!("no batch") })
            .unwrap();
    }

    #[test]
    fn a_failed_batch_goes_back_merged_with_newer_logins() {
        let logins = Logins::default();
        let alice = user(1, "verified", None);
        logins.note(&alice, 100, Some("rehashed"));
        let failed = logins.flush(|batch| {
            // A login arrives while the batch is being written: both are shown.
            logins.note(&alice, 120, None);
            assert_eq!(logins.shown(alice.clone()).last_login, Some(120));
            assert_eq!(batch.len(), 1);
            Err("disk full")
        });
        assert_eq!(failed, Err("disk full"));
        let mut seen = None;
        logins
            .flush(|batch| {
                let login = &batch[&1];
                seen = Some((
                    login.at,
                    login
                        .rehash
                        .as_ref()
                        .map(|r| (r.verified.clone(), r.new.clone())),
                ));
                Ok::<(), ()>(())
            })
            .unwrap();
        assert_eq!(
            seen,
            Some((120, Some(("verified".into(), "rehashed".into())))),
            "the later login, and the re-hash of the older one kept"
        );
    }

    #[test]
    fn a_forgotten_user_has_no_login_to_commit() {
        let logins = Logins::default();
        logins.note(&user(1, "h", None), 100, None);
        logins.forget(1);
        logins
            .flush(|_| -> Result<(), ()> { panic!("no batch") })
            .unwrap();
    }

    #[test]
    fn the_flusher_commits_and_stops_after_a_last_round() {
        let logins = std::sync::Arc::new(Logins::default());
        let committed = std::sync::Arc::new(Mutex::new(Vec::new()));
        let (runner, sink) = (
            std::sync::Arc::clone(&logins),
            std::sync::Arc::clone(&committed),
        );
        logins.start(move || {
            runner.run(Duration::from_millis(10), |batch| {
                lock(&sink).extend(batch.keys().copied());
                Ok::<(), ()>(())
            })
        });
        logins.note(&user(1, "h", None), 100, None);
        logins.note(&user(2, "h", None), 100, None);
        logins.stop();
        let mut ids = lock(&committed).clone();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2]);
    }
}

//! Keeps the files a running server depends on fit for its next start.
//!
//! A serving process holds its store open and its keys in memory, so a file deleted or
//! changed under it goes unnoticed until the next start (a reboot, an upgrade, the
//! watchdog), which then finds an empty store or refuses for the key: an outage far
//! from its cause. The server calls [`Keeper::check`] every few seconds and once more
//! at a clean stop:
//!
//! - the store's file deleted: written back from the server's open copy, no user lost
//!   ([`UserStore::keep_file`]); another file put there: `/healthz` answers 503 with
//!   what to do;
//! - the generated key file (`secret.key` in the data directory) deleted: written back
//!   from memory, so sessions and the next start go on;
//! - a configured key file missing, unreadable, too open, or holding a key the store
//!   was not served with: a warning in the log and in `/healthz` (still 200: serving
//!   works now), saying that the next start would be refused and why.
//!
//! Configured key files are never written: removing one may be a deliberate step of a
//! key rotation.
//!
//! When the data directory itself is gone (an `rm -rf` of the wrong path), it is made
//! again (mode 0700) first, so that the store and the generated key go back into it;
//! otherwise the next start would make a fresh one with a new key and an empty store.
//! A write-back that fails is logged once, not at every look.

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use crate::keys::{self, Key, KeyRing};
use crate::log;
use crate::store::UserStore;

/// How often the server runs [`Keeper::check`].
pub const INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

/// The watch over the store's file and the key files, with its current warning.
pub struct Keeper {
    store: Option<Arc<UserStore>>,
    /// The key file latchkey generated (and may therefore write back), with its key.
    generated: Option<(PathBuf, Key)>,
    /// The configured key files in ring order, primary first.
    files: Vec<PathBuf>,
    /// The kids in use, primary first.
    kids: Vec<String>,
    /// Whether a new primary must be among the keys the store was served with (not in
    /// verify-only mode, which has no store to remember a key).
    continuity: bool,
    /// The data directory, made again when it is gone (see [`Keeper::with_data_dir`]).
    data_dir: Option<PathBuf>,
    warning: Mutex<Option<String>>,
    /// The last write-back failure logged, so that a lasting one is logged once.
    failure: Mutex<Option<String>>,
}

impl Keeper {
    /// A keeper for `store` (none in verify-only mode) and the ring loaded from `files`
    /// (same order). `generated` says the first file is latchkey's own `secret.key`.
    pub fn new(
        store: Option<Arc<UserStore>>,
        files: &[PathBuf],
        ring: &KeyRing,
        generated: bool,
    ) -> Keeper {
        let generated = match (generated, files.first()) {
            (true, Some(path)) => Some((path.clone(), ring.primary().clone())),
            _ => None,
        };
        Keeper {
            continuity: store.is_some(),
            store,
            generated,
            files: files.to_vec(),
            kids: ring.keys().iter().map(|k| k.kid().to_string()).collect(),
            data_dir: None,
            warning: Mutex::new(None),
            failure: Mutex::new(None),
        }
    }

    /// The same keeper, also making the data directory `dir` again (mode 0700) when it
    /// is gone, before the store and the generated key are written back into it.
    pub fn with_data_dir(mut self, dir: PathBuf) -> Keeper {
        self.data_dir = Some(dir);
        self
    }

    /// Logs a write-back failure when it differs from the last one logged; `None`
    /// records that the write-backs work again.
    fn failed(&self, failure: Option<String>) {
        let mut last = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
        if *last != failure {
            if let Some(text) = &failure {
                log::error(text);
            }
            *last = failure;
        }
    }

    /// Makes the data directory again when it is gone; whether it is there.
    fn keep_data_dir(&self) -> bool {
        let Some(dir) = &self.data_dir else {
            return true;
        };
        if std::fs::symlink_metadata(dir).is_ok() {
            return true;
        }
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            Ok(()) => {
                log::error(&format!(
                    "the data directory {} was removed under the running server; it was \
                     made again (mode 0700) and the files the server holds are written \
                     back into it",
                    dir.display()
                ));
                true
            }
            Err(e) => {
                self.failed(Some(format!(
                    "the data directory {} was removed under the running server and cannot \
                     be made again: {e}; the store and the key are only in the server's \
                     memory until it is",
                    dir.display()
                )));
                false
            }
        }
    }

    /// Looks once: puts back what was deleted and can be, and updates the warning
    /// (logged when it appears, changes or clears).
    pub fn check(&self) {
        // Without its directory nothing can be written back (the failure is logged).
        let dir_there = self.keep_data_dir();
        if let Some(store) = self.store.as_ref().filter(|_| dir_there) {
            store.keep_file();
        }
        if let Some((path, key)) = self.generated.as_ref().filter(|_| dir_there)
            && std::fs::symlink_metadata(path).is_err()
        {
            match keys::write_new(path, key.bytes()) {
                Ok(()) => {
                    self.failed(None);
                    log::error(&format!(
                        "the key file {} was deleted under the running server; it was written \
                         back from memory (key {})",
                        path.display(),
                        key.kid()
                    ));
                }
                Err(e) => self.failed(Some(format!(
                    "the key file {} was deleted under the running server and cannot be \
                     written back: {e}",
                    path.display()
                ))),
            }
        } else if dir_there {
            self.failed(None);
        }
        let now = self.next_start_verdict();
        let mut warning = self.warning.lock().unwrap_or_else(PoisonError::into_inner);
        if *warning != now {
            match &now {
                Some(why) => log::error(&format!("warning: {why}")),
                None => log::info("the key files are fit for the next start again"),
            }
            *warning = now;
        }
    }

    /// Why the next start would be refused for its keys, if it would.
    fn next_start_verdict(&self) -> Option<String> {
        let mut loaded = Vec::with_capacity(self.files.len());
        for path in &self.files {
            match keys::load_file(path) {
                Ok(key) => loaded.push(key),
                Err(e) => {
                    return Some(format!(
                        "{e}; the server goes on with the key it loaded, but the next start \
                         will be refused: put the key file back"
                    ));
                }
            }
        }
        let (Some(in_use), Some(primary)) = (self.kids.first(), loaded.first()) else {
            return None;
        };
        if self.continuity && primary.kid() != in_use && !loaded.iter().any(|k| k.kid() == in_use) {
            return Some(format!(
                "the key file {} now holds key {}, and no key file holds key {in_use}, which \
                 the store was served with: the next start will be refused unless it is \
                 given --replace-key (which ends every session); keep the old key as a \
                 verifying key to rotate",
                self.files[0].display(),
                primary.kid()
            ));
        }
        None
    }

    /// The current warning for `/healthz`, if any.
    pub fn warning(&self) -> Option<String> {
        self.warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("latchkey-keeper-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn keeper(files: &[PathBuf], generated: bool, continuity: bool) -> Keeper {
        let ring = KeyRing::load(files).unwrap();
        let mut keeper = Keeper::new(None, files, &ring, generated);
        keeper.continuity = continuity;
        keeper
    }

    #[test]
    fn a_deleted_generated_key_is_written_back_with_the_same_key() {
        let dir = dir("generated");
        let path = dir.join("secret.key");
        keys::generate(&path).unwrap();
        let before = std::fs::read(&path).unwrap();
        let keeper = keeper(std::slice::from_ref(&path), true, true);
        std::fs::remove_file(&path).unwrap();
        keeper.check();
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(keeper.warning(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_missing_configured_key_is_a_warning_and_is_never_written() {
        let dir = dir("configured");
        let (a, b) = (dir.join("a.key"), dir.join("b.key"));
        keys::generate(&a).unwrap();
        keys::generate(&b).unwrap();
        let keeper = keeper(&[a.clone(), b.clone()], false, true);
        keeper.check();
        assert_eq!(keeper.warning(), None);
        std::fs::remove_file(&b).unwrap();
        keeper.check();
        let warning = keeper.warning().unwrap();
        assert!(
            warning.contains("b.key") && warning.contains("next start"),
            "{warning}"
        );
        assert!(!b.exists(), "a configured key file is never written back");
        // Put back: the warning clears.
        keys::generate(&b).unwrap();
        keeper.check();
        assert_eq!(keeper.warning(), None);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_replaced_primary_warns_unless_the_old_key_still_verifies() {
        let dir = dir("replaced");
        let (a, b) = (dir.join("a.key"), dir.join("b.key"));
        keys::generate(&a).unwrap();
        let keeper = keeper(std::slice::from_ref(&a), false, true);
        let old = std::fs::read(&a).unwrap();
        std::fs::remove_file(&a).unwrap();
        keys::generate(&a).unwrap();
        keeper.check();
        assert!(keeper.warning().unwrap().contains("--replace-key"));
        // The old key put back: the next start is fine again.
        std::fs::remove_file(&a).unwrap();
        keys::write_new(&a, old.strip_suffix(b"\n").unwrap()).unwrap();
        keeper.check();
        assert_eq!(keeper.warning(), None);
        // Verify-only mode has no store that remembers a key: a new key is no warning.
        let free = self::keeper(std::slice::from_ref(&a), false, false);
        std::fs::remove_file(&a).unwrap();
        keys::generate(&b).unwrap();
        std::fs::rename(&b, &a).unwrap();
        free.check();
        assert_eq!(free.warning(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}

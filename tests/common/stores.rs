//! One test body, two stores: [`TestStore`] is a fresh redb store in a temporary
//! directory, or (with the `postgres` feature) a fresh database on the test binary's
//! PostgreSQL server; [`on_both_stores!`] writes each test once and runs it on both.

#![allow(dead_code)]

use std::ops::Deref;
use std::sync::Arc;

use latchkey::store::{Location, UserStore};

use super::TempDir;

/// A store under test and how to open it again.
pub struct TestStore {
    store: Option<Arc<UserStore>>,
    pub location: Location,
    _dir: Option<TempDir>,
}

impl TestStore {
    /// A fresh redb store (`users.redb` in a new temporary directory).
    pub fn redb(tag: &str) -> TestStore {
        let dir = TempDir::new(tag);
        let location = Location::File(dir.store_file());
        let store = location.open(4).expect("open the redb store");
        TestStore {
            store: Some(Arc::new(store)),
            location,
            _dir: Some(dir),
        }
    }

    /// A fresh database on the test binary's PostgreSQL server.
    #[cfg(feature = "postgres")]
    pub fn postgres() -> TestStore {
        let url = super::pg::fresh_database();
        let location = Location::parse(&url, None);
        let store = location.open(12).expect("open the PostgreSQL store");
        TestStore {
            store: Some(Arc::new(store)),
            location,
            _dir: None,
        }
    }

    /// Closes the store and opens it again (a restart).
    pub fn reopen(mut self) -> TestStore {
        drop(self.store.take());
        self.store = Some(Arc::new(self.location.open(12).expect("open again")));
        self
    }

    /// A shared handle, as the server's workers hold it.
    pub fn arc(&self) -> Arc<UserStore> {
        Arc::clone(self.store.as_ref().expect("open"))
    }

    /// What a second instance would use: for PostgreSQL another handle (its own pool
    /// and notification connection), for redb the same one (a file has one process).
    pub fn second_instance(&self) -> Arc<UserStore> {
        match self.location {
            Location::File(_) => self.arc(),
            Location::Postgres { .. } => Arc::new(self.another()),
        }
    }

    /// Another handle on the same store (another instance, for PostgreSQL).
    pub fn another(&self) -> UserStore {
        self.location.open(12).expect("another handle")
    }
}

impl Deref for TestStore {
    type Target = UserStore;
    fn deref(&self) -> &UserStore {
        self.store.as_deref().expect("open")
    }
}

/// `on_both_stores! { fn name(s) { body } ... }`: a module per test with a `redb` test
/// and, with the `postgres` feature, a `postgres` test running the same body on a
/// [`TestStore`] named `s`.
#[macro_export]
macro_rules! on_both_stores {
    ($(fn $name:ident($s:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;
                #[test]
                fn redb() {
                    #[allow(unused_mut)]
                    let mut $s = common::stores::TestStore::redb(stringify!($name));
                    $body
                }
                #[cfg(feature = "postgres")]
                #[test]
                fn postgres() {
                    #[allow(unused_mut)]
                    let mut $s = common::stores::TestStore::postgres();
                    $body
                }
            }
        )*
    };
}

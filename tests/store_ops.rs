//! Every store operation and every store error, through the public API: each test body
//! runs on a real redb file in a temporary directory and (feature `postgres`) on a real
//! PostgreSQL database (`common::stores`).

mod common;

use common::TempDir;
use std::path::Path;

use latchkey::password::{Params, Passwords, Verdict};
use latchkey::store::{
    self, CreateError, Entry, Invalid, Location, OpenError, StoreError, UpdateError, UserStore,
};

fn open(dir: &TempDir) -> UserStore {
    UserStore::open(&dir.store_file()).expect("open")
}

const HASH: &str = "$fake$hash";

on_both_stores! {
    fn create_and_get(s) {
        if let Location::File(file) = &s.location {
            assert_eq!(s.path(), file.as_path());
        }
        assert!(s.is_readable());
        s.check().expect("check");
        assert_eq!(s.count().expect("count"), 0);

        let alice = s.create("  Alice ", "admin", HASH).expect("create");
        assert_eq!(alice.id, 1);
        assert_eq!(alice.name, "Alice", "stored trimmed, case kept");
        assert_eq!(alice.role, "admin");
        assert_eq!(alice.password_hash, HASH);
        assert_eq!(alice.ver, 0);
        assert!(!alice.locked);
        assert_eq!(alice.last_login, None);
        assert_eq!(alice.created, alice.updated);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        assert!((now - alice.created).abs() < 5, "created is Unix seconds");

        assert_eq!(s.get(1).expect("get"), Some(alice.clone()));
        assert_eq!(s.get(2).expect("get"), None);
        for variant in ["alice", "ALICE", " Alice\t", "aLiCe"] {
            assert_eq!(
                s.get_by_name(variant).expect("by name"),
                Some(alice.clone()),
                "{variant}"
            );
        }
        assert_eq!(s.get_by_name("bob").expect("by name"), None);
        assert_eq!(s.get_by_name("not a name!").expect("by name"), None);
        assert_eq!(s.get_by_name("").expect("by name"), None);

        let state = s.session_state(1).expect("state").expect("exists");
        assert_eq!((state.ver, state.locked), (0, false));
        assert_eq!(
            (state.role.as_str(), state.name.as_str()),
            ("admin", "Alice")
        );
        assert_eq!(s.session_state(99).expect("state"), None);
        assert_eq!(s.count().expect("count"), 1);
    }

    fn taken_names_ignore_case_and_whitespace(s) {
        s.create("alice", "user", HASH).expect("create");
        for taken in ["alice", "ALICE", "Alice", " alice", "alice\n", "\taLIce  "] {
            match s.create(taken, "user", HASH) {
                Err(CreateError::NameTaken(name)) => assert_eq!(name, taken.trim()),
                other => panic!("{taken:?}: expected NameTaken, got {other:?}"),
            }
        }
        let err = s.create("ALICE", "user", HASH).expect_err("taken");
        assert_eq!(
            err.to_string(),
            "the name ALICE is taken (names are compared ignoring case)"
        );
        assert_eq!(s.count().expect("count"), 1);
        // A failed create does not use up an id.
        assert_eq!(s.create("bob", "user", HASH).expect("create").id, 2);
    }

    fn bad_names_are_refused_with_the_rule(s) {
        let long = "a".repeat(65);
        for (name, says) in [
            ("", "empty"),
            ("   ", "empty"),
            ("al ice", "' ' is not allowed"),
            ("bob/x", "'/' is not allowed"),
            ("é", "'é' is not allowed"),
            ("a<b>", "'<' is not allowed"),
            ("-flag", "must start with a letter or a digit"),
            (".hidden", "must start with a letter or a digit"),
            (long.as_str(), "at most 64"),
        ] {
            match s.create(name, "user", HASH) {
                Err(CreateError::Invalid(e @ Invalid::Name(_))) => {
                    assert!(e.to_string().contains(says), "{name:?}: {e}");
                    assert!(e.to_string().starts_with("bad user name: "), "{e}");
                }
                other => panic!("{name:?}: expected BadName, got {other:?}"),
            }
        }
        assert_eq!(s.count().expect("count"), 0);
        // The edges of the safe set are accepted.
        let max = "b".repeat(64);
        for good in ["a", "0", "x.y_z-w@example.org", "A1", max.as_str()] {
            assert_eq!(store::validate_name(good).expect(good), good);
            s.create(good, "user", HASH).expect(good);
        }
    }

    fn roles(s) {
        for good in [
            store::ROLE_USER,
            store::ROLE_ADMIN,
            "editor",
            "ops.team-1",
            "a_b@c",
        ] {
            store::validate_role(good).expect(good);
        }
        let long = "r".repeat(33);
        for (role, says) in [
            ("", "empty"),
            ("Admin", "'A' is not allowed"),
            (" user", "' ' is not allowed"),
            ("us/er", "'/' is not allowed"),
            ("-x", "must start"),
            (long.as_str(), "at most 32"),
        ] {
            match s.create("carol", role, HASH) {
                Err(CreateError::Invalid(e @ Invalid::Role(_))) => {
                    assert!(e.to_string().contains(says), "{e}")
                }
                other => panic!("{role:?}: expected BadRole, got {other:?}"),
            }
        }
        let u = s.create("carol", "editor", HASH).expect("custom role");
        let u2 = s.set_role(u.id, "admin").expect("set role");
        assert_eq!(u2.role, "admin");
        assert_eq!(u2.ver, u.ver, "a role change does not revoke");
        assert_eq!(
            s.session_state(u.id).expect("state").expect("exists").role,
            "admin"
        );
        assert!(matches!(
            s.set_role(u.id, "ADMIN"),
            Err(UpdateError::Invalid(Invalid::Role(_)))
        ));
        assert!(matches!(
            s.set_role(999, "user"),
            Err(UpdateError::NotFound)
        ));
    }

    fn bad_hashes_are_refused(s) {
        assert!(matches!(
            s.create("dave", "user", ""),
            Err(CreateError::Invalid(Invalid::Hash(_)))
        ));
        let long = "h".repeat(store::HASH_MAX + 1);
        assert!(matches!(
            s.create("dave", "user", &long),
            Err(CreateError::Invalid(Invalid::Hash(_)))
        ));
        let u = s.create("dave", "user", HASH).expect("create");
        assert!(matches!(
            s.set_password(u.id, ""),
            Err(UpdateError::Invalid(Invalid::Hash(_)))
        ));
        assert!(matches!(
            s.record_login(u.id, Some(&long)),
            Err(UpdateError::Invalid(Invalid::Hash(_)))
        ));
        assert_eq!(s.get(u.id).expect("get").expect("exists"), u, "unchanged");
    }

    fn version_bumps(s) {
        let u = s.create("erin", "user", HASH).expect("create");

        let u = s.revoke(u.id).expect("revoke");
        assert_eq!(u.ver, 1);
        let u = s.set_password(u.id, "$fake$other").expect("passwd");
        assert_eq!((u.ver, u.password_hash.as_str()), (2, "$fake$other"));

        let u = s.set_locked(u.id, true).expect("lock");
        assert_eq!((u.ver, u.locked), (3, true));
        let state = s.session_state(u.id).expect("state").expect("exists");
        assert_eq!(
            (state.ver, state.locked),
            (3, true),
            "the request check sees the lock"
        );
        let u = s.set_locked(u.id, false).expect("unlock");
        assert_eq!((u.ver, u.locked), (3, false), "unlock keeps ver");

        let before = s.get(u.id).expect("get").expect("exists");
        let u = s.record_login(u.id, None).expect("login");
        assert_eq!(u.ver, 3, "a login does not revoke");
        assert!(u.last_login.is_some());
        assert_eq!(
            (u.password_hash.as_str(), u.updated),
            (before.password_hash.as_str(), before.updated)
        );
        let u = s.record_login(u.id, Some("$fake$rehashed")).expect("login");
        assert_eq!((u.ver, u.password_hash.as_str()), (3, "$fake$rehashed"));
        assert_eq!(s.get(u.id).expect("get"), Some(u));

        for op in [
            s.revoke(42),
            s.set_password(42, HASH),
            s.set_locked(42, true),
            s.set_locked(42, false),
            s.record_login(42, None),
        ] {
            assert!(matches!(op, Err(UpdateError::NotFound)), "{op:?}");
        }
    }

    fn delete_frees_the_name_but_not_the_id(s) {
        let a = s.create("frank", "user", HASH).expect("create");
        s.delete(a.id).expect("delete");
        assert_eq!(s.get(a.id).expect("get"), None);
        assert_eq!(s.get_by_name("frank").expect("by name"), None);
        assert_eq!(s.session_state(a.id).expect("state"), None);
        assert!(matches!(s.delete(a.id), Err(UpdateError::NotFound)));
        assert_eq!(StoreError::NotFound.to_string(), "no such user");
        let b = s.create("FRANK", "user", HASH).expect("name is free again");
        assert!(b.id > a.id, "ids are never reused");
        assert_eq!(s.check_consistency().expect("consistent"), 1);
        // Nor after reopening.
        let s = s.reopen();
        s.delete(b.id).expect("delete");
        assert_eq!(s.create("gina", "user", HASH).expect("create").id, b.id + 1);
    }

    fn list_pages_by_id(s) {
        for i in 0..25 {
            s.create(&format!("user{i:02}"), "user", HASH)
                .expect("create");
        }
        s.delete(5).expect("delete");
        let mut seen: Vec<Entry> = Vec::new();
        let mut after = 0;
        loop {
            let page = s.list(after, 10).expect("list");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 10);
            after = page.last().map(Entry::id).expect("non-empty");
            seen.extend(page);
        }
        assert!(seen.iter().all(|e| matches!(e, Entry::User(_))));
        let ids: Vec<u64> = seen.iter().map(Entry::id).collect();
        let expected: Vec<u64> = (1..=25).filter(|&id| id != 5).collect();
        assert_eq!(ids, expected);
        assert_eq!(s.count().expect("count"), 24);
        assert!(s.list(u64::MAX, 10).expect("list").is_empty());
        assert!(s.list(0, 0).expect("list").is_empty());
        assert_eq!(s.check_consistency().expect("consistent"), 24);
    }

    fn changes_survive_reopening(s) {
        let id = {
            let u = s.create("hank", "editor", HASH).expect("create");
            s.revoke(u.id).expect("revoke");
            s.set_locked(u.id, true).expect("lock");
            u.id
        };
        let s = s.reopen();
        let u = s.get(id).expect("get").expect("exists");
        assert_eq!(
            (u.name.as_str(), u.role.as_str(), u.ver, u.locked),
            ("hank", "editor", 2, true)
        );
    }

    fn login_flow_with_rehash(s) {
        let weak = Passwords::new(Params {
            m_kib: 256,
            t: 1,
            p: 1,
        })
        .expect("params");
        let strong = Passwords::new(Params {
            m_kib: 1024,
            t: 1,
            p: 1,
        })
        .expect("params");
        let u = s
            .create("ivy", "user", &weak.hash("ivy's password").expect("hash"))
            .expect("create");

        assert_eq!(
            strong.verify("wrong password", &u.password_hash),
            Verdict::Mismatch
        );
        assert_eq!(strong.verify_unknown("any password"), Verdict::Mismatch);
        let Verdict::Match { rehash } = strong.verify("ivy's password", &u.password_hash) else {
            panic!("right password refused");
        };
        let rehash = rehash.expect("weaker params are re-hashed");
        let u = s.record_login(u.id, Some(&rehash)).expect("record");
        assert_eq!(u.ver, 0, "a re-hash does not revoke");
        assert_eq!(
            strong.verify("ivy's password", &u.password_hash),
            Verdict::Match { rehash: None }
        );

        // A locked user still verifies; refusing the login is the caller's job, by this flag.
        let u = s.set_locked(u.id, true).expect("lock");
        assert!(u.locked);
        assert!(matches!(
            strong.verify("ivy's password", &u.password_hash),
            Verdict::Match { .. }
        ));
    }

    fn cached_session_states_follow_every_write(s) {
        let mut cache = store::SessionCache::new();
        assert_eq!(s.session_state_cached(1, &mut cache).expect("read"), None);
        let alice = s.create("alice", "user", HASH).expect("create");
        let state = |s: &UserStore, cache: &mut store::SessionCache| {
            s.session_state_cached(alice.id, cache)
                .expect("read")
                .cloned()
                .expect("alice is known")
        };
        // The unknown id remembered before the user existed is forgotten after the create.
        assert_eq!(state(&s, &mut cache).ver, 0);
        assert_eq!(
            state(&s, &mut cache),
            s.session_state(alice.id).unwrap().unwrap()
        );
        s.revoke(alice.id).expect("revoke");
        assert_eq!(state(&s, &mut cache).ver, 1, "a revocation is seen at once");
        s.set_role(alice.id, "ops").expect("role");
        assert_eq!(state(&s, &mut cache).role, "ops");
        s.set_locked(alice.id, true).expect("lock");
        assert!(state(&s, &mut cache).locked);
        s.delete(alice.id).expect("delete");
        assert_eq!(
            s.session_state_cached(alice.id, &mut cache).expect("read"),
            None
        );
        // Many users: the memo starts over instead of growing without bound.
        for id in 0..(store::SessionCache::CAPACITY as u64 * 2) {
            assert_eq!(
                s.session_state_cached(1000 + id, &mut cache).expect("read"),
                None
            );
        }
        assert!(cache.len() <= store::SessionCache::CAPACITY);
    }

    fn the_last_active_administrator_cannot_be_deleted_demoted_or_locked(s) {
        let root = s.create("root", "admin", HASH).expect("admin");
        let bob = s.create("bob", "user", HASH).expect("user");
        let last = |r: Result<store::User, store::UpdateError>| {
            assert!(matches!(r, Err(store::UpdateError::LastAdmin)), "{r:?}");
        };
        last(s.set_role(root.id, "user"));
        last(s.set_locked(root.id, true));
        assert!(matches!(
            s.delete(root.id),
            Err(store::UpdateError::LastAdmin)
        ));
        // Whatever else happens to the last admin is allowed.
        s.revoke(root.id).expect("revoke");
        s.reset_password(root.id, HASH, true).expect("password");
        s.set_role(root.id, "admin").expect("admin stays admin");
        // With a second active admin, either may go; a locked admin does not count.
        s.set_role(bob.id, "admin").expect("second admin");
        s.set_locked(bob.id, true).expect("lock the second");
        last(s.set_role(root.id, "user"));
        s.set_locked(bob.id, false).expect("unlock");
        s.set_role(root.id, "user")
            .expect("demote root: bob is left");
        last(s.set_locked(bob.id, true));
        assert!(matches!(
            s.delete(bob.id),
            Err(store::UpdateError::LastAdmin)
        ));
        // A plain user goes as before.
        s.delete(root.id).expect("delete a plain user");
        let msg = store::UpdateError::LastAdmin.to_string();
        assert!(msg.contains("last active administrator"), "{msg}");
    }
}

#[test]
fn busy_when_another_handle_holds_the_file() {
    let dir = TempDir::new("ops");
    let _held = open(&dir);
    match UserStore::open(&dir.store_file()) {
        Err(e @ OpenError::Busy(_)) => assert_eq!(
            e.to_string(),
            format!(
                "the user store {} is in use by another process (a running latchkey server?); \
                 stop it or use the admin page",
                dir.store_file().display()
            )
        ),
        Err(e) => panic!("expected Busy, got {e}"),
        Ok(_) => panic!("expected Busy, got a second handle"),
    }
}

#[test]
fn open_failures_name_the_file() {
    let dir = TempDir::new("ops");
    let missing = dir.path().join("no-such-dir").join("users.redb");
    let err = UserStore::open(&missing).expect_err("missing directory");
    assert!(matches!(err, OpenError::File { .. }), "{err:?}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot open the user store {}", missing.display()))
    );

    let junk = dir.path().join("junk.redb");
    std::fs::write(
        &junk,
        b"this is not a redb file, just some text that is long enough",
    )
    .expect("write");
    let err = UserStore::open(&junk).expect_err("not a redb file");
    assert!(matches!(err, OpenError::Damaged { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!(
            "the user store is damaged: {} is not a redb file",
            junk.display()
        )),
        "{err}"
    );
    assert_eq!(
        std::fs::read(&junk).expect("read"),
        b"this is not a redb file, just some text that is long enough",
        "never overwritten"
    );
}

/// The login flow the web server runs: look up, verify, record the login
/// (with a re-hash when the stored parameters are weaker).
#[test]
fn store_error_messages_are_actionable() {
    let newer = OpenError::NewerSchema {
        found: 2,
        supported: 1,
    };
    assert_eq!(
        newer.to_string(),
        "the user store has schema version 2 but this latchkey understands versions up to 1: \
         it was written by a newer latchkey; run that version, or restore a backup made before \
         the upgrade"
    );
    let path: &Path = Path::new("x/users.redb");
    assert!(
        OpenError::Busy(path.into())
            .to_string()
            .contains("x/users.redb")
    );
}

on_both_stores! {
    fn revoked_tokens_are_kept_until_their_expiry_and_across_a_reopen(s) {
        let dir = TempDir::new("ops-revoked");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let (a, b, old) = (
            "1/AAAAAAAAAAAAAAAAAAAAAA",
            "1/BBBBBBBBBBBBBBBBBBBBBB",
            "1/CCCCCCCCCCCCCCCCCCCCCC",
        );
        assert!(!s.is_token_revoked(a, now), "nothing is revoked at first");
        s.revoke_token(1, old, now - 1).expect("an expired one");
        s.revoke_token(1, a, now + 600).expect("revoke");
        assert!(s.is_token_revoked(a, now));
        assert!(!s.is_token_revoked(b, now));
        assert!(!s.is_token_revoked(a, now + 600), "not past its expiry");
        assert!(
            !s.is_token_revoked(old, now),
            "an expired entry counts for nothing"
        );
        // A backup carries the list.
        s.backup_to(&dir.path().join("copy.redb")).expect("backup");
        let s = s.reopen();
        assert!(s.is_token_revoked(a, now), "kept across a reopen");
        s.revoke_token(1, b, now + 600).expect("revoke");
        assert!(s.is_token_revoked(a, now) && s.is_token_revoked(b, now));
        let copy = UserStore::open(&dir.path().join("copy.redb")).expect("copy");
        assert!(copy.is_token_revoked(a, now), "the backup holds the list");
    }

    fn one_user_logging_out_past_the_bound_ends_every_session_and_frees_the_entries(s) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64;
        let user = s.create("mallory", "user", HASH).expect("create");
        let other = s.create("olive", "user", HASH).expect("create");
        let key = |id: u64, n: usize| format!("{id}/{n:0>22}");
        for n in 0..store::MAX_REVOKED_PER_USER {
            let done = s
                .revoke_token(user.id, &key(user.id, n), now + 600)
                .expect("revoke");
            assert_eq!(done, store::Revocation::Listed);
        }
        // Someone else's entry is not touched by mallory's.
        s.revoke_token(other.id, &key(other.id, 0), now + 600)
            .expect("revoke");
        let over = store::MAX_REVOKED_PER_USER;
        let done = s
            .revoke_token(user.id, &key(user.id, over), now + 600)
            .expect("revoke");
        assert_eq!(done, store::Revocation::AllSessionsEnded);
        let after = s.get(user.id).expect("read").expect("user");
        assert_eq!(after.ver, user.ver + 1, "every session of hers ended");
        assert!(
            !s.is_token_revoked(&key(user.id, 0), now),
            "her entries went (the new ver covers them)"
        );
        assert!(s.is_token_revoked(&key(other.id, 0), now), "olive's stays");
        // She can log out again afterwards, one entry at a time.
        let done = s
            .revoke_token(user.id, &key(user.id, over + 1), now + 600)
            .expect("revoke");
        assert_eq!(done, store::Revocation::Listed);
        // Expired entries do not count toward the bound.
        let u = s.create("ursula", "user", HASH).expect("create");
        for n in 0..store::MAX_REVOKED_PER_USER * 2 {
            let done = s
                .revoke_token(u.id, &key(u.id, n), now - 1)
                .expect("revoke");
            assert_eq!(done, store::Revocation::Listed);
        }
    }
}

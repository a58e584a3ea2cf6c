//! Many threads over one `Arc<UserStore>`, as the web server's workers use it:
//! no duplicate names, no lost updates, reads never see a half-written user. Each body
//! runs on redb and (feature `postgres`) on PostgreSQL, where a second test also races
//! two handles (two instances) on one database, and the last administrator holds.

mod common;

use std::sync::{Arc, Barrier};
use std::thread;

use latchkey::password::{Params, Passwords, Verdict};
use latchkey::store::{CreateError, Entry, UpdateError};

const THREADS: usize = 8;

on_both_stores! {
    fn same_name_from_many_threads_exactly_one_wins(s) {
        let store = s.arc();
        for round in 0..5 {
            let barrier = Arc::new(Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (store, barrier) = (store.clone(), barrier.clone());
                    thread::spawn(move || {
                        // Case and whitespace variants of one name.
                        let name = match t % 3 {
                            0 => format!("racer{round}"),
                            1 => format!("RACER{round}"),
                            _ => format!("  Racer{round} "),
                        };
                        barrier.wait();
                        store.create(&name, "user", "$fake$hash")
                    })
                })
                .collect();
            let results: Vec<_> = handles
                .into_iter()
                .map(|h| h.join().expect("thread"))
                .collect();
            let winners = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(winners, 1, "round {round}: {results:?}");
            for r in &results {
                assert!(matches!(r, Ok(_) | Err(CreateError::NameTaken(_))), "{r:?}");
            }
        }
        assert_eq!(store.count().expect("count"), 5);
        assert_eq!(store.check_consistency().expect("consistent"), 5);
    }

    fn no_lost_version_bumps(s) {
        const BUMPS: u64 = 50;
        let store = s.arc();
        let id = store
            .create("target", "user", "$fake$hash")
            .expect("create")
            .id;
        let barrier = Arc::new(Barrier::new(THREADS + 2));
        let mut handles = Vec::new();
        for _ in 0..THREADS {
            let (store, barrier) = (store.clone(), barrier.clone());
            handles.push(thread::spawn(move || {
                barrier.wait();
                for _ in 0..BUMPS {
                    store.revoke(id).expect("revoke");
                }
            }));
        }
        // Logins (which rewrite the record without bumping) race with the revokes.
        let (s, b) = (store.clone(), barrier.clone());
        handles.push(thread::spawn(move || {
            b.wait();
            for _ in 0..BUMPS {
                s.record_login(id, Some("$fake$rehashed")).expect("login");
            }
        }));
        // A reader watches ver only ever grow.
        let (s, b) = (store.clone(), barrier.clone());
        handles.push(thread::spawn(move || {
            b.wait();
            let mut last = 0;
            for _ in 0..500 {
                let ver = s.session_state(id).expect("state").expect("exists").ver;
                assert!(ver >= last, "ver went back from {last} to {ver}");
                last = ver;
            }
        }));
        for h in handles {
            h.join().expect("thread");
        }
        let user = store.get(id).expect("get").expect("exists");
        assert_eq!(user.ver, THREADS as u64 * BUMPS);
        assert_eq!(user.password_hash, "$fake$rehashed");
        assert!(user.last_login.is_some());
    }

    fn threads_create_and_verify_at_once(s) {
        const PER_THREAD: usize = 5;
        let store = s.arc();
        let passwords = Passwords::new(Params {
            m_kib: 1024,
            t: 1,
            p: 1,
        })
        .expect("params");
        let barrier = Arc::new(Barrier::new(THREADS));
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, passwords, barrier) = (store.clone(), passwords.clone(), barrier.clone());
                thread::spawn(move || {
                    barrier.wait();
                    for i in 0..PER_THREAD {
                        let name = format!("t{t}-u{i}");
                        let secret = format!("password of {name}");
                        let hash = passwords.hash(&secret).expect("hash");
                        let id = store.create(&name, "user", &hash).expect("create").id;
                        // Read back and verify, as a login would, while others write.
                        let user = store.get_by_name(&name).expect("by name").expect("exists");
                        assert_eq!(user.id, id);
                        assert_eq!(
                            passwords.verify(&secret, &user.password_hash),
                            Verdict::Match { rehash: None }
                        );
                        assert_eq!(
                            passwords.verify("not the password", &user.password_hash),
                            Verdict::Mismatch
                        );
                        store.record_login(id, None).expect("login");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        let n = (THREADS * PER_THREAD) as u64;
        assert_eq!(store.count().expect("count"), n);
        assert_eq!(store.check_consistency().expect("consistent"), n);
        let mut ids: Vec<u64> = store
            .list(0, usize::MAX)
            .expect("list")
            .iter()
            .map(Entry::id)
            .collect();
        ids.dedup();
        assert_eq!(ids, (1..=n).collect::<Vec<_>>(), "ids are dense and unique");
    }

    fn two_instances_race_one_name(s) {
        let (a, b) = (s.arc(), s.second_instance());
        for round in 0..5 {
            let barrier = Arc::new(Barrier::new(THREADS));
            let handles: Vec<_> = (0..THREADS)
                .map(|t| {
                    let store = if t % 2 == 0 { a.clone() } else { b.clone() };
                    let barrier = barrier.clone();
                    thread::spawn(move || {
                        barrier.wait();
                        store.create(&format!("Twin{round}"), "user", "$fake$hash")
                    })
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("thread")).collect();
            assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
            for r in &results {
                assert!(matches!(r, Ok(_) | Err(CreateError::NameTaken(_))), "{r:?}");
            }
        }
        assert_eq!(a.check_consistency().expect("consistent"), 5);
        // Version bumps from both instances at once: none lost.
        let id = a.create("shared", "user", "$fake$hash").expect("create").id;
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let store = if t % 2 == 0 { a.clone() } else { b.clone() };
                thread::spawn(move || {
                    for _ in 0..20 {
                        store.revoke(id).expect("revoke");
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(b.get(id).expect("get").expect("exists").ver, THREADS as u64 * 20);
    }

    fn the_last_administrator_holds_under_concurrency(s) {
        let (a, b) = (s.arc(), s.second_instance());
        for round in 0..10 {
            let one = a.create(&format!("adminA{round}"), "admin", "$fake$hash").expect("admin");
            let two = a.create(&format!("adminB{round}"), "admin", "$fake$hash").expect("admin");
            // The keeper of the last round steps down: these two are the last.
            if let Some(keeper) = a.get_by_name(&format!("keeper{}", round.max(1) - 1)).expect("read") {
                a.set_role(keeper.id, "user").expect("the keeper steps down");
            }
            let barrier = Arc::new(Barrier::new(2));
            let (sa, ba) = (a.clone(), barrier.clone());
            let demote = thread::spawn(move || {
                ba.wait();
                if round % 2 == 0 {
                    sa.set_role(one.id, "user").map(|_| ())
                } else {
                    sa.delete(one.id)
                }
            });
            let (sb, bb) = (b.clone(), barrier.clone());
            let lock = thread::spawn(move || {
                bb.wait();
                sb.set_locked(two.id, true).map(|_| ())
            });
            let results = [demote.join().expect("thread"), lock.join().expect("thread")];
            let passed = results.iter().filter(|r| r.is_ok()).count();
            assert_eq!(passed, 1, "round {round}: exactly one may pass: {results:?}");
            for r in &results {
                assert!(matches!(r, Ok(()) | Err(UpdateError::LastAdmin)), "{r:?}");
            }
            // Leave exactly one active administrator per round's survivor, then retire
            // both before the next round (a plain user can always go).
            let active: Vec<_> = a
                .list(0, usize::MAX)
                .expect("list")
                .into_iter()
                .filter_map(|e| match e {
                    Entry::User(u) if u.role == "admin" && !u.locked => Some(u),
                    _ => None,
                })
                .collect();
            assert_eq!(active.len(), 1, "round {round}: {active:?}");
            let keeper = a.create(&format!("keeper{round}"), "admin", "$fake$hash").expect("admin");
            for u in a.list(0, usize::MAX).expect("list") {
                if let Entry::User(u) = u
                    && u.id != keeper.id
                {
                    a.delete(u.id).expect("delete the others");
                }
            }
        }
    }
}

//! Many threads over one `Arc<UserStore>`, as the web server's workers use it:
//! no duplicate names, no lost updates, reads never see a half-written user.

mod common;

use common::TempDir;
use std::sync::{Arc, Barrier};
use std::thread;

use latchkey::password::{Params, Passwords, Verdict};
use latchkey::store::{CreateError, Entry, UserStore};

const THREADS: usize = 8;

fn open(dir: &TempDir) -> Arc<UserStore> {
    Arc::new(UserStore::open(&dir.store_file()).expect("open"))
}

#[test]
fn same_name_from_many_threads_exactly_one_wins() {
    let dir = TempDir::new("conc");
    let store = open(&dir);
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

#[test]
fn no_lost_version_bumps() {
    const BUMPS: u64 = 50;
    let dir = TempDir::new("conc");
    let store = open(&dir);
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

#[test]
fn threads_create_and_verify_at_once() {
    const PER_THREAD: usize = 5;
    let dir = TempDir::new("conc");
    let store = open(&dir);
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

//! What only the PostgreSQL store has, on a real server: other instances' changes reach a
//! worker's memo by notification (and nothing else does while the memo is trusted), the
//! memo is not trusted while the notification connection is down, the schema version,
//! secrets kept out of messages, bounded failures, and the counters and the setup code
//! every instance shares.

#![cfg(feature = "postgres")]

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::pg::{self, PgCluster};
use latchkey::store::{CreateError, Location, OpenError, SessionCache, UserStore};
use latchkey::throttle::{Key, Limits};

const HASH: &str = "$fake$hash";

fn open(url: &str) -> UserStore {
    Location::parse(url, None).open(8).expect("open")
}

/// The ver the memo answers for `id`.
fn cached_ver(store: &UserStore, id: u64, memo: &mut SessionCache) -> Option<u64> {
    store
        .session_state_cached(id, memo)
        .expect("read")
        .map(|s| s.ver)
}

fn database_name(url: &str) -> String {
    url.rsplit('/').next().expect("db").to_string()
}

#[test]
fn another_instances_revocation_reaches_the_memo_within_a_second() {
    let url = pg::fresh_database();
    let (a, b) = (open(&url), open(&url));
    assert!(b.listen(Duration::from_secs(5)), "B listens");
    let alice = a.create("alice", "user", HASH).expect("create");
    let mut memo = SessionCache::new();
    assert_eq!(cached_ver(&b, alice.id, &mut memo), Some(0));
    for (what, change) in [
        (
            "revoke",
            Box::new(|s: &UserStore, id| s.revoke(id).map(|_| ()))
                as Box<dyn Fn(&UserStore, u64) -> _>,
        ),
        (
            "lock",
            Box::new(|s: &UserStore, id| s.set_locked(id, true).map(|_| ())),
        ),
        (
            "password",
            Box::new(|s: &UserStore, id| s.set_password(id, "$new$hash").map(|_| ())),
        ),
    ] {
        let before = cached_ver(&b, alice.id, &mut memo).expect("exists");
        change(&a, alice.id).expect(what);
        let started = Instant::now();
        while cached_ver(&b, alice.id, &mut memo) == Some(before) {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{what} on A not seen by B's memo within 1 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        eprintln!(
            "{what}: seen by the other instance after {:?}",
            started.elapsed()
        );
    }
    // A role change and a deletion, the same way.
    a.set_locked(alice.id, false).expect("unlock");
    a.set_role(alice.id, "ops").expect("role");
    let started = Instant::now();
    while b
        .session_state_cached(alice.id, &mut memo)
        .expect("read")
        .map(|s| s.role.clone())
        != Some("ops".into())
    {
        assert!(started.elapsed() < Duration::from_secs(1), "role not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
    a.delete(alice.id).expect("delete");
    let started = Instant::now();
    while cached_ver(&b, alice.id, &mut memo).is_some() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "deletion not seen"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn the_memo_answers_without_the_database_until_told_and_distrusts_a_lost_connection() {
    let url = pg::fresh_database();
    let b = open(&url);
    assert!(b.listen(Duration::from_secs(5)), "B listens");
    let bob = b.create("bob", "user", HASH).expect("create");
    // The create's own notification comes back to B's listener shortly after.
    std::thread::sleep(Duration::from_millis(300));
    let mut memo = SessionCache::new();
    assert_eq!(cached_ver(&b, bob.id, &mut memo), Some(0));
    // A change behind latchkey's back, without a notification: the memo keeps answering
    // from memory (no round trip per request while nothing was announced)...
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    sql.execute(
        "UPDATE latchkey_users SET ver = 41 WHERE id = $1",
        &[&(bob.id as i64)],
    )
    .expect("update");
    for _ in 0..20 {
        assert_eq!(
            cached_ver(&b, bob.id, &mut memo),
            Some(0),
            "the memo answered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // ...and a notification (any instance's write) makes it read again.
    sql.execute(
        "UPDATE latchkey_users SET ver = 42 WHERE id = $1",
        &[&(bob.id as i64)],
    )
    .expect("update");
    sql.batch_execute("NOTIFY latchkey_users").expect("notify");
    let started = Instant::now();
    while cached_ver(&b, bob.id, &mut memo) != Some(42) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "notification not heard"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The notification connection is cut: from then on the memo is not trusted, so a
    // change made meanwhile without a notification is seen within a second.
    sql.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'latchkey listener' AND datname = $1",
        &[&database_name(&url)],
    )
    .expect("terminate the listener");
    sql.execute(
        "UPDATE latchkey_users SET ver = 43 WHERE id = $1",
        &[&(bob.id as i64)],
    )
    .expect("update");
    let started = Instant::now();
    while cached_ver(&b, bob.id, &mut memo) != Some(43) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lost notification connection left the memo trusted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // It reconnects by itself.
    let started = Instant::now();
    while !b.listen(Duration::from_millis(50)) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never listened again"
        );
    }
}

#[test]
fn schema_versions_are_kept_and_a_newer_one_is_refused() {
    let url = pg::fresh_database();
    // An inspection of an empty database finds no store and creates nothing.
    assert!(matches!(
        Location::parse(&url, None).inspect(),
        Err(OpenError::Missing(_))
    ));
    let mut sql = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    let tables: i64 = sql
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename LIKE 'latchkey_%'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(tables, 0, "an inspection created tables");
    drop(open(&url));
    let version: i32 = sql
        .query_one("SELECT version FROM latchkey_schema", &[])
        .expect("version")
        .get(0);
    assert_eq!(version as u64, latchkey::store::postgres::PG_SCHEMA_VERSION);
    // Opened again (another instance starting): nothing to migrate, the data stays.
    let s = open(&url);
    s.create("carol", "user", HASH).expect("create");
    drop(s);
    assert_eq!(open(&url).count().expect("count"), 1);
    sql.execute("UPDATE latchkey_schema SET version = 99", &[])
        .expect("newer");
    match Location::parse(&url, None).open(2) {
        Err(e @ OpenError::NewerSchema { found: 99, .. }) => {
            assert!(e.to_string().contains("newer latchkey"), "{e}")
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    assert!(matches!(
        Location::parse(&url, None).inspect(),
        Err(OpenError::NewerSchema { .. })
    ));
}

#[test]
fn passwords_come_from_a_file_and_never_show_in_messages() {
    let url = pg::fresh_database();
    let db = database_name(&url);
    // The shared server's port, from the URL.
    let port: u16 = url
        .split(':')
        .nth(3)
        .and_then(|p| p.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    let dir = common::TempDir::new("pgpw");
    let file = dir.path().join("pw");
    std::fs::write(&file, format!("{}\n", pg::PASSWORD)).expect("write");
    let bare = format!("postgres://postgres@127.0.0.1:{port}/{db}");
    let s = Location::parse(&bare, Some(&file))
        .open(2)
        .expect("password from the file");
    s.create("dave", "user", HASH).expect("create");
    // A wrong password: refused, and the message shows *** instead of it.
    let wrong = format!("postgres://postgres:Wr0ngSecret@127.0.0.1:{port}/{db}");
    let err = Location::parse(&wrong, None)
        .open(2)
        .expect_err("wrong password");
    let text = err.to_string();
    assert!(!text.contains("Wr0ngSecret"), "{text}");
    assert!(text.contains("postgres://postgres:***@127.0.0.1"), "{text}");
    assert!(text.contains("password authentication failed"), "{text}");
    let shown = Location::parse(&wrong, None).display();
    assert!(!shown.contains("Wr0ngSecret"));
}

#[test]
fn a_server_that_is_away_fails_fast_and_the_store_recovers_by_itself() {
    let cluster = PgCluster::start();
    let url = cluster.database();
    let s = open(&url);
    let eve = s.create("eve", "user", HASH).expect("create");
    assert!(s.health().serving());
    cluster.kill();
    let started = Instant::now();
    let err = s.get(eve.id).expect_err("the server is away");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    assert!(!err.to_string().contains(pg::PASSWORD), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let health = s.health();
    assert!(!health.serving());
    assert!(
        health.describe().contains("cannot be read"),
        "{}",
        health.describe()
    );
    assert!(!health.describe().contains(pg::PASSWORD));
    // Many calls while it is away: each answers at once (no connect timeout per call).
    let started = Instant::now();
    for _ in 0..100 {
        assert!(s.session_state(eve.id).is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    cluster.resume();
    let started = Instant::now();
    while let Err(e) = s.get(eve.id) {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never recovered: {e}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(s.health().serving());
    assert_eq!(s.revoke(eve.id).expect("writes work again").ver, 1);
}

#[test]
fn a_connect_that_cannot_succeed_is_bounded() {
    // A port nothing listens on, and an address that drops packets would hang without
    // the connect timeout; loopback refuses at once, so only the bound is checked here.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let started = Instant::now();
    let err = Location::parse(&format!("postgres://x:Secret9@127.0.0.1:{port}/db"), None)
        .open(2)
        .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!err.to_string().contains("Secret9"), "{err}");
}

#[test]
fn failed_logins_are_counted_once_for_every_instance() {
    let url = pg::fresh_database();
    let (a, b) = (open(&url), open(&url));
    let limits = Limits {
        max_failures: 4,
        window: 60,
        lockout: 300,
        capacity: 100,
    };
    let keys = [
        Key::Name("frank".into()),
        Key::Addr("192.0.2.7".parse().expect("ip")),
    ];
    // Two failures through each instance: four in all, the limit.
    for store in [&a, &b, &a] {
        store.throttle_failure(&keys, 1000, &limits).expect("count");
        assert_eq!(b.throttle_retry_after(&keys, 1000).expect("read"), None);
    }
    b.throttle_failure(&keys, 1001, &limits).expect("count");
    assert_eq!(
        a.throttle_retry_after(&keys, 1001).expect("read"),
        Some(300)
    );
    assert_eq!(
        b.throttle_retry_after(&keys[1..], 1100).expect("read"),
        Some(201)
    );
    a.throttle_reset(&keys[0]).expect("reset");
    assert_eq!(
        b.throttle_retry_after(&keys[..1], 1100).expect("read"),
        None
    );
    assert_eq!(b.throttle_retry_after(&keys, 1301).expect("read"), None);
    // Racing failures from both instances are all counted.
    let racing = [Key::Name("gina".into())];
    let barrier = Arc::new(Barrier::new(2));
    let (a, b) = (Arc::new(a), Arc::new(b));
    let threads: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .map(|s| {
            let (barrier, racing) = (barrier.clone(), racing.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for _ in 0..3 {
                    s.throttle_failure(
                        &racing,
                        2000,
                        &Limits {
                            max_failures: 6,
                            ..limits
                        },
                    )
                    .expect("count");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("thread");
    }
    assert!(
        a.throttle_retry_after(&racing, 2000)
            .expect("read")
            .is_some()
    );
}

#[test]
fn one_setup_code_and_one_first_administrator_for_every_instance() {
    let url = pg::fresh_database();
    let (a, b) = (Arc::new(open(&url)), Arc::new(open(&url)));
    let code = a
        .shared_setup_code("AAAAA-AAAAA-AAAAA-AAAAA")
        .expect("kept")
        .expect("armed");
    assert_eq!(
        b.shared_setup_code("BBBBB-BBBBB-BBBBB-BBBBB")
            .expect("kept"),
        Some(code.clone()),
        "the second instance uses the first one's code"
    );
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = [(a.clone(), "root"), (b.clone(), "boss")]
        .into_iter()
        .map(|(s, name)| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                s.create_first(name, "admin", HASH)
            })
        })
        .collect();
    let results: Vec<_> = threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect();
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .any(|r| matches!(r, Err(CreateError::NotFirst)))
    );
    assert_eq!(a.count().expect("count"), 1);
    assert_eq!(
        b.shared_setup_code("CCCCC-CCCCC-CCCCC-CCCCC")
            .expect("read"),
        None
    );
}

#[test]
fn copies_and_backups_keep_every_field() {
    let url = pg::fresh_database();
    let s = open(&url);
    let root = s.create("root", "admin", "$argon2id$root").expect("create");
    let ivy = s.create("Ivy", "editor", "$argon2id$ivy").expect("create");
    s.revoke(ivy.id).expect("revoke");
    s.set_locked(ivy.id, true).expect("lock");
    s.reset_password(root.id, "$argon2id$reset", true)
        .expect("reset");
    s.remember_kid("Ab3dEf9h").expect("kid");
    let gone = s.create("gone", "user", HASH).expect("create");
    s.delete(gone.id).expect("delete");
    let dir = common::TempDir::new("pgcopy");
    let backup = dir.path().join("backup.redb");
    let info = s.backup_to(&backup).expect("backup");
    assert_eq!((info.users, info.damaged), (2, 0));
    assert!(matches!(
        s.backup_to(&backup),
        Err(latchkey::store::BackupError::Exists(_))
    ));
    let file = UserStore::inspect(&backup).expect("a redb store");
    let original = s.snapshot().expect("snapshot");
    let copied = file.snapshot().expect("snapshot");
    assert_eq!(copied, original, "every field, the counter and the key");
    assert_eq!(
        copied.next_id,
        gone.id + 1,
        "ids are never handed out again"
    );
    // And into another database, refusing a non-empty one.
    let other = open(&pg::fresh_database());
    other.create("someone", "user", HASH).expect("create");
    assert!(matches!(
        other.import(&copied, false),
        Err(latchkey::store::StoreError::NotEmpty(1))
    ));
    assert_eq!(other.import(&copied, true).expect("replace"), 2);
    assert_eq!(other.snapshot().expect("snapshot"), original);
    assert_eq!(
        other.create("next", "user", HASH).expect("create").id,
        gone.id + 1
    );
}

#[test]
fn a_logout_on_one_instance_is_refused_by_the_other_within_a_second() {
    let url = pg::fresh_database();
    let (a, b) = (open(&url), open(&url));
    assert!(b.listen(Duration::from_secs(5)), "B listens");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let id = "1/LoggedOutLoginId000000";
    assert!(!b.is_token_revoked(id, now));
    a.revoke_token(1, id, now + 600).expect("log out on A");
    let started = Instant::now();
    while !b.is_token_revoked(id, now) {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "B still accepts the logged-out token"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    eprintln!(
        "logout seen by the other instance after {:?}",
        started.elapsed()
    );
    // A third instance starting later loads the list.
    assert!(open(&url).is_token_revoked(id, now));
    assert!(!b.is_token_revoked(id, now + 600), "not past its expiry");
}

#[test]
fn tls_is_used_when_the_url_asks_and_the_certificate_is_checked_when_asked() {
    let cluster = PgCluster::start_tls();
    let url = cluster.database();
    let at = |host: &str, params: &str| url.replace("127.0.0.1", host) + params;
    // The server takes TCP connections over TLS only: without TLS, refused.
    let err = Location::parse(&at("127.0.0.1", "?sslmode=disable"), None)
        .open(2)
        .expect_err("plain TCP is refused by the server");
    assert!(!err.to_string().contains(pg::PASSWORD), "{err}");
    // require: encrypted, the certificate not checked (libpq's meaning).
    let s = Location::parse(&at("127.0.0.1", "?sslmode=require"), None)
        .open(2)
        .expect("TLS");
    s.create("tls", "user", HASH).expect("write over TLS");
    // prefer (the default) uses TLS when the server offers it.
    Location::parse(&url, None).open(2).expect("prefer");
    // verify-full: the self-signed certificate is not trusted by the system roots...
    let err = Location::parse(&at("localhost", "?sslmode=verify-full"), None)
        .open(2)
        .expect_err("an unknown certificate authority");
    assert!(!err.to_string().contains(pg::PASSWORD), "{err}");
    // ...but is with sslrootcert, for the name it carries.
    let root = format!("&sslrootcert={}", cluster.certificate().display());
    let s = Location::parse(
        &at("localhost", &format!("?sslmode=verify-full{root}")),
        None,
    )
    .open(2)
    .expect("verified");
    assert_eq!(s.count().expect("read over TLS"), 1);
    // verify-full checks the host name too: 127.0.0.1 is not in the certificate.
    Location::parse(
        &at("127.0.0.1", &format!("?sslmode=verify-full{root}")),
        None,
    )
    .open(2)
    .expect_err("the host name does not match");
    // verify-ca checks the chain only.
    Location::parse(&at("127.0.0.1", &format!("?sslmode=verify-ca{root}")), None)
        .open(2)
        .expect("the chain is enough");
}

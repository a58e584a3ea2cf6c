//! Schema versions: a newer store is refused with the documented message and left as it
//! was; a v1 store (record format 1, as the previous latchkey wrote it) and a v0 store
//! (no schema version, no name index) are migrated on open with every user intact; an
//! inspection migrates in memory only.
//!
//! These tests write the files with redb directly and encode format-1 records by hand
//! from the layout in docs/store.md, so they also pin the on-disk tables and formats.
mod common;

use common::TempDir;

use latchkey::store::{
    Damage, Entry, OpenError, ReadError, SCHEMA_VERSION, SessionCache, UpdateError, User, UserStore,
};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sha2::{Digest, Sha256};

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const NAMES: TableDefinition<&str, u64> = TableDefinition::new("user_names");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const META_TEXT: TableDefinition<&str, &str> = TableDefinition::new("meta_text");

fn sha(path: &std::path::Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).expect("read")).to_vec()
}

fn meta(path: &std::path::Path, key: &str) -> Option<u64> {
    let db = Database::create(path).expect("redb");
    let tx = db.begin_read().expect("read");
    let meta = tx.open_table(META).expect("meta");
    meta.get(key).expect("get").map(|v| v.value())
}

/// One user as schema v1 stored it.
struct V1 {
    id: u64,
    name: &'static str,
    role: &'static str,
    hash: &'static str,
    ver: u64,
    locked: bool,
    created: i64,
    updated: i64,
    last_login: Option<i64>,
}

/// A format-1 record: `[1] ver:u64 flags:u8 created:i64 updated:i64 last_login:i64`,
/// then name, role, hash as u16 length + UTF-8, little-endian (docs/store.md).
fn v1_record(u: &V1) -> Vec<u8> {
    let mut out = vec![1u8];
    out.extend_from_slice(&u.ver.to_le_bytes());
    out.push(u8::from(u.locked) | if u.last_login.is_some() { 2 } else { 0 });
    out.extend_from_slice(&u.created.to_le_bytes());
    out.extend_from_slice(&u.updated.to_le_bytes());
    out.extend_from_slice(&u.last_login.unwrap_or(0).to_le_bytes());
    for s in [u.name, u.role, u.hash] {
        out.extend_from_slice(&(s.len() as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
    }
    out
}

fn v1_users() -> Vec<V1> {
    vec![
        V1 {
            id: 1,
            name: "Alice",
            role: "admin",
            hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            ver: 0,
            locked: false,
            created: 1_700_000_000,
            updated: 1_700_000_000,
            last_login: Some(1_700_000_900),
        },
        V1 {
            id: 2,
            name: "bob",
            role: "editor",
            hash: "$argon2id$v=19$m=19456,t=2,p=1$b3RoZXJzYWx0$b3RoZXJoYXNo",
            ver: 7,
            locked: true,
            created: 1_700_000_100,
            updated: 1_700_000_700,
            last_login: None,
        },
        V1 {
            id: 4,
            name: "carol@example.org",
            role: "user",
            hash: "$fake$hash",
            ver: 1,
            locked: false,
            created: 1_700_000_200,
            updated: 1_700_000_300,
            last_login: Some(1_700_000_400),
        },
    ]
}

/// A v1 store as the previous latchkey left it: three users (id 3 deleted), counter 5.
fn write_v1_store(path: &std::path::Path, extra: &[(u64, &[u8])]) {
    let db = Database::create(path).expect("redb");
    let tx = db.begin_write().expect("write");
    {
        let mut users = tx.open_table(USERS).expect("users");
        let mut names = tx.open_table(NAMES).expect("names");
        for u in v1_users() {
            users
                .insert(u.id, v1_record(&u).as_slice())
                .expect("insert");
            names
                .insert(u.name.to_ascii_lowercase().as_str(), u.id)
                .expect("insert");
        }
        for (id, bytes) in extra {
            users.insert(*id, *bytes).expect("insert");
        }
        let mut meta = tx.open_table(META).expect("meta");
        meta.insert("schema_version", 1).expect("insert");
        meta.insert("next_id", 5).expect("insert");
    }
    tx.commit().expect("commit");
}

fn expect_v1_users_intact(s: &UserStore) {
    for u in v1_users() {
        let got = s.get(u.id).expect("get").expect("kept");
        let want = User {
            id: u.id,
            name: u.name.into(),
            role: u.role.into(),
            password_hash: u.hash.into(),
            ver: u.ver,
            locked: u.locked,
            created: u.created,
            updated: u.updated,
            last_login: u.last_login,
            must_change_password: false,
            totp: None,
            totp_pending: None,
        };
        assert_eq!(got, want);
        assert_eq!(
            s.get_by_name(&u.name.to_uppercase()).expect("by name"),
            Some(want)
        );
        let state = s.session_state(u.id).expect("state").expect("exists");
        assert_eq!((state.ver, state.locked), (u.ver, u.locked));
        assert!(!state.must_change_password);
    }
}

#[test]
fn a_fresh_store_is_at_the_current_version_and_private() {
    let dir = TempDir::new("schema");
    drop(UserStore::open(&dir.store_file()).expect("open"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.store_file())
            .expect("store")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "created private");
    }
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["users.redb"]);
    assert_eq!(
        meta(&dir.store_file(), "schema_version"),
        Some(SCHEMA_VERSION)
    );
    assert_eq!(meta(&dir.store_file(), "next_id"), Some(1));
    let db = Database::create(dir.store_file()).expect("redb");
    let tx = db.begin_read().expect("read");
    tx.open_table(USERS).expect("users table exists");
    tx.open_table(NAMES).expect("name index exists");
    tx.open_table(META_TEXT).expect("text meta exists");
}

#[test]
fn an_inspection_does_not_write_the_file() {
    let dir = TempDir::new("schema");
    {
        let s = UserStore::open(&dir.store_file()).expect("open");
        s.create("alice", "user", "$fake$hash").expect("create");
    }
    let before = sha(&dir.store_file());
    let s = UserStore::inspect(&dir.store_file()).expect("inspect");
    assert_eq!(s.scan().expect("scan").users, 1);
    // The inspection holds the file's lock, as an open does.
    assert!(matches!(
        UserStore::open(&dir.store_file()),
        Err(OpenError::Busy(_))
    ));
    drop(s);
    assert_eq!(sha(&dir.store_file()), before);
}

#[test]
fn a_newer_schema_is_refused_with_the_documented_message() {
    let dir = TempDir::new("schema");
    drop(UserStore::open(&dir.store_file()).expect("open"));
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        tx.open_table(META)
            .expect("meta")
            .insert("schema_version", SCHEMA_VERSION + 1)
            .expect("insert");
        tx.commit().expect("commit");
    }
    let before = sha(&dir.store_file());
    for err in [
        UserStore::open(&dir.store_file()).err(),
        UserStore::inspect(&dir.store_file()).err(),
    ] {
        let err = err.expect("refused");
        assert!(
            matches!(err, OpenError::NewerSchema { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "the user store has schema version {} but this latchkey understands versions \
                 up to {}: it was written by a newer latchkey; run that version, or restore a \
                 backup made before the upgrade",
                SCHEMA_VERSION + 1,
                SCHEMA_VERSION
            )
        );
    }
    assert_eq!(
        sha(&dir.store_file()),
        before,
        "refusing did not touch the file"
    );
}

#[test]
fn a_v1_store_is_migrated_with_every_user_intact() {
    let dir = TempDir::new("schema");
    write_v1_store(&dir.store_file(), &[]);
    let s = UserStore::open(&dir.store_file()).expect("migrated");
    expect_v1_users_intact(&s);
    assert_eq!(s.check_consistency().expect("consistent"), 3);
    assert_eq!(s.served_kid().expect("kid"), None, "never served");
    // The counter is kept: id 3 (deleted before) is not handed out again.
    assert_eq!(
        s.create("dave", "user", "$fake$hash").expect("create").id,
        5
    );
    drop(s);
    assert_eq!(meta(&dir.store_file(), "schema_version"), Some(2));
    // Every record is in format 2 now.
    let db = Database::create(dir.store_file()).expect("redb");
    let tx = db.begin_read().expect("read");
    let users = tx.open_table(USERS).expect("users");
    let mut n = 0;
    for entry in users.iter().expect("iter") {
        let (_, bytes) = entry.expect("entry");
        assert_eq!(bytes.value()[0], 2);
        n += 1;
    }
    assert_eq!(n, 4);
    tx.open_table(META_TEXT).expect("created by the migration");
}

#[test]
fn an_inspection_migrates_in_memory_only() {
    let dir = TempDir::new("schema");
    write_v1_store(&dir.store_file(), &[]);
    let before = sha(&dir.store_file());
    {
        let s = UserStore::inspect(&dir.store_file()).expect("inspect");
        assert!(s.is_inspection());
        expect_v1_users_intact(&s);
        assert!(s.scan().expect("scan").is_sound());
        // Writes are refused, not silently lost.
        assert!(matches!(
            s.revoke(1),
            Err(UpdateError::Unavailable(
                latchkey::store::Unavailable::ReadOnly
            ))
        ));
    }
    assert_eq!(sha(&dir.store_file()), before, "the file was not written");
    assert_eq!(meta(&dir.store_file(), "schema_version"), Some(1));
}

#[test]
fn a_damaged_v1_record_stays_damaged_and_the_others_migrate() {
    let dir = TempDir::new("schema");
    write_v1_store(&dir.store_file(), &[(3, &[1, 2, 3][..])]);
    let s = UserStore::open(&dir.store_file()).expect("migrated");
    expect_v1_users_intact(&s);
    let scan = s.scan().expect("scan");
    assert_eq!(scan.users, 3);
    assert!(
        matches!(&scan.damage[..], [Damage::Record(d)] if d.id == 3),
        "{scan:?}"
    );
}

#[test]
fn a_v0_store_is_migrated() {
    let dir = TempDir::new("schema");
    // A v1 store stripped to v0: no meta table, no name index.
    write_v1_store(&dir.store_file(), &[]);
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        assert!(tx.delete_table(META).expect("delete meta"));
        assert!(tx.delete_table(NAMES).expect("delete index"));
        tx.commit().expect("commit");
    }
    let s = UserStore::open(&dir.store_file()).expect("migrated");
    assert_eq!(s.check_consistency().expect("consistent"), 3);
    expect_v1_users_intact(&s);
    assert!(matches!(
        s.create("ALICE", "user", "$fake$hash"),
        Err(latchkey::store::CreateError::NameTaken(_))
    ));
    // The counter is rebuilt from the highest id present (4): v0 kept no counter.
    assert_eq!(
        s.create("erin", "user", "$fake$hash").expect("create").id,
        5
    );
    drop(s);
    assert_eq!(
        meta(&dir.store_file(), "schema_version"),
        Some(SCHEMA_VERSION)
    );
}

#[test]
fn a_v0_store_keeps_a_higher_counter() {
    let dir = TempDir::new("schema");
    write_v1_store(&dir.store_file(), &[]);
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        let mut meta = tx.open_table(META).expect("meta");
        meta.remove("schema_version").expect("remove");
        meta.insert("next_id", 40).expect("insert");
        drop(meta);
        tx.commit().expect("commit");
    }
    let s = UserStore::open(&dir.store_file()).expect("migrated");
    assert_eq!(
        s.create("frank", "user", "$fake$hash").expect("create").id,
        40
    );
}

#[test]
fn an_unreadable_record_is_an_error_not_a_panic_and_can_be_deleted() {
    let dir = TempDir::new("schema");
    {
        let s = UserStore::open(&dir.store_file()).expect("open");
        s.create("alice", "user", "$fake$hash").expect("create");
        s.create("ghost", "user", "$fake$hash").expect("create");
    }
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        tx.open_table(USERS)
            .expect("users")
            .insert(2, &[9u8, 1, 2, 3][..])
            .expect("insert");
        tx.commit().expect("commit");
    }
    let s = UserStore::open(&dir.store_file()).expect("a damaged record does not stop the open");
    let damaged = |e: ReadError| match e {
        ReadError::DamagedRecord(d) => {
            assert_eq!(d.id, 2);
            assert!(d.why.contains("unknown record format 9"), "{d:?}");
        }
        other => panic!("{other:?}"),
    };
    damaged(s.get(2).expect_err("get"));
    damaged(s.session_state(2).expect_err("state"));
    damaged(s.get_by_name("ghost").expect_err("by name"));
    let mut memo = SessionCache::new();
    damaged(s.session_state_cached(2, &mut memo).expect_err("memo"));
    match s.revoke(2).expect_err("revoke") {
        UpdateError::DamagedRecord(d) => assert_eq!(d.id, 2),
        other => panic!("{other:?}"),
    }
    // Everyone else is fine, and the listing marks the damaged one.
    assert_eq!(s.get(1).expect("get").expect("alice").name, "alice");
    let rows = s.list(0, 10).expect("list");
    assert!(matches!(&rows[..], [Entry::User(a), Entry::Damaged(d)] if a.id == 1 && d.id == 2));
    let err = s.check_consistency().expect_err("unsound");
    let text = err.to_string();
    assert!(
        text.starts_with("the user store is damaged: the record of user 2 is unreadable"),
        "{text}"
    );
    assert!(text.contains("The other 1 users are readable"), "{text}");
    assert_eq!(s.health().damage.len(), 1);
    assert!(s.health().serving(), "one damaged record is not an outage");
    // The way out without a backup: delete it (its name goes with it).
    assert_eq!(s.id_by_name("GHOST").expect("index"), Some(2));
    s.delete(2).expect("delete the damaged record");
    assert_eq!(s.check_consistency().expect("sound again"), 1);
    assert!(s.health().damage.is_empty());
    assert_eq!(s.id_by_name("ghost").expect("index"), None);
}

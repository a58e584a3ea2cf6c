//! Schema versions: a newer store is refused with the documented message, and a
//! v0 store (no schema version, no name index) is migrated on open.
//!
//! These tests write the file with redb directly, so they also pin the on-disk
//! table names and types described in docs/store.md.
mod common;

use common::TempDir;

use latchkey::store::{SCHEMA_VERSION, StoreError, UserStore};
use redb::{Database, ReadableDatabase, TableDefinition};

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
const NAMES: TableDefinition<&str, u64> = TableDefinition::new("user_names");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

fn set_meta(dir: &TempDir, key: &str, value: u64) {
    let db = Database::create(dir.store_file()).expect("redb");
    let tx = db.begin_write().expect("write");
    tx.open_table(META)
        .expect("meta")
        .insert(key, value)
        .expect("insert");
    tx.commit().expect("commit");
}

#[test]
fn a_fresh_store_is_at_the_current_version() {
    let dir = TempDir::new("schema");
    drop(UserStore::open(&dir.store_file()).expect("open"));
    let db = Database::create(dir.store_file()).expect("redb");
    let tx = db.begin_read().expect("read");
    let meta = tx.open_table(META).expect("meta");
    assert_eq!(
        meta.get("schema_version").expect("get").map(|v| v.value()),
        Some(SCHEMA_VERSION)
    );
    assert_eq!(
        meta.get("next_id").expect("get").map(|v| v.value()),
        Some(1)
    );
    tx.open_table(USERS).expect("users table exists");
    tx.open_table(NAMES).expect("name index exists");
}

#[test]
fn a_newer_schema_is_refused_with_the_documented_message() {
    let dir = TempDir::new("schema");
    drop(UserStore::open(&dir.store_file()).expect("open"));
    set_meta(&dir, "schema_version", SCHEMA_VERSION + 1);
    let err = UserStore::open(&dir.store_file()).err().expect("refused");
    assert!(
        matches!(err, StoreError::NewerSchema { found, supported } if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!(
            "the user store has schema version {} but this latchkey understands versions up to \
             {}: it was written by a newer latchkey; run that version, or restore a backup made \
             before the upgrade",
            SCHEMA_VERSION + 1,
            SCHEMA_VERSION
        )
    );
    // Refusing did not touch the file: still newer.
    let db = Database::create(dir.store_file()).expect("redb");
    let tx = db.begin_read().expect("read");
    let meta = tx.open_table(META).expect("meta");
    assert_eq!(
        meta.get("schema_version").expect("get").map(|v| v.value()),
        Some(SCHEMA_VERSION + 1)
    );
}

#[test]
fn a_v0_store_is_migrated() {
    let dir = TempDir::new("schema");
    // Build a store, then strip it to v0: no meta table, no name index.
    {
        let s = UserStore::open(&dir.store_file()).expect("open");
        for name in ["alice", "Bob", "carol", "dave"] {
            s.create(name, "user", "$fake$hash").expect("create");
        }
        s.delete(4).expect("delete the highest id");
        s.revoke(2).expect("revoke");
    }
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        assert!(tx.delete_table(META).expect("delete meta"));
        assert!(tx.delete_table(NAMES).expect("delete index"));
        tx.commit().expect("commit");
    }
    let s = UserStore::open(&dir.store_file()).expect("migrated");
    assert_eq!(s.check_consistency().expect("consistent"), 3);
    let bob = s
        .get_by_name("BOB")
        .expect("by name")
        .expect("index rebuilt");
    assert_eq!((bob.id, bob.name.as_str(), bob.ver), (2, "Bob", 1));
    assert!(matches!(
        s.create("alice", "user", "$fake$hash"),
        Err(StoreError::NameTaken(_))
    ));
    // The counter is rebuilt from the highest id still present (3), so 4 is handed out
    // again only because v0 kept no counter; from v1 on, ids are never reused.
    assert_eq!(
        s.create("erin", "user", "$fake$hash").expect("create").id,
        4
    );
    drop(s);
    let db = Database::create(dir.store_file()).expect("redb");
    let tx = db.begin_read().expect("read");
    let meta = tx.open_table(META).expect("meta");
    assert_eq!(
        meta.get("schema_version").expect("get").map(|v| v.value()),
        Some(SCHEMA_VERSION)
    );
}

#[test]
fn a_v0_store_keeps_a_higher_counter() {
    let dir = TempDir::new("schema");
    {
        let s = UserStore::open(&dir.store_file()).expect("open");
        s.create("alice", "user", "$fake$hash").expect("create");
        s.create("bob", "user", "$fake$hash").expect("create");
        s.delete(2).expect("delete");
    }
    // v0 with a counter but no schema version: the counter is kept.
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        tx.open_table(META)
            .expect("meta")
            .remove("schema_version")
            .expect("remove");
        tx.commit().expect("commit");
    }
    let s = UserStore::open(&dir.store_file()).expect("migrated");
    assert_eq!(
        s.create("carol", "user", "$fake$hash").expect("create").id,
        3
    );
}

#[test]
fn an_unreadable_record_is_an_error_not_a_panic() {
    let dir = TempDir::new("schema");
    drop(UserStore::open(&dir.store_file()).expect("open"));
    {
        let db = Database::create(dir.store_file()).expect("redb");
        let tx = db.begin_write().expect("write");
        tx.open_table(USERS)
            .expect("users")
            .insert(1, &[9u8, 1, 2, 3][..])
            .expect("insert");
        tx.open_table(NAMES)
            .expect("names")
            .insert("ghost", 1)
            .expect("insert");
        tx.open_table(META)
            .expect("meta")
            .insert("next_id", 2)
            .expect("insert");
        tx.commit().expect("commit");
    }
    let s = UserStore::open(&dir.store_file()).expect("open");
    for err in [
        s.get(1).err(),
        s.session_state(1).err(),
        s.get_by_name("ghost").err(),
        s.list(0, 10).err(),
        s.revoke(1).err(),
        s.check_consistency().err(),
    ] {
        let err = err.expect("an error");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
        assert!(err.to_string().contains("unknown record format 9"), "{err}");
    }
}

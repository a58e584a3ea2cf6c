//! Files deleted or replaced under a running server.
//!
//! A server holds its store open and its keys in memory, so without a watch a deleted
//! `users.redb` went on being written (unlinked) while `/healthz` said `ok`, and the
//! next start made a new, empty store: every user gone. A deleted `secret.key` was
//! noticed only by the refused next start. The server now puts back what it can (the
//! store from its open copy, its own generated key from memory) and reports in
//! `/healthz` what it cannot.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, TempDir};

/// Polls `probe` for up to 10 s (the keeper looks every 2 s).
fn within_seconds(probe: impl Fn() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn add(data: &Path, name: &str) -> (i32, String, String) {
    common::cli(
        &[
            "user",
            "add",
            name,
            "--role",
            "admin",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "correct horse battery\n",
    )
}

#[test]
fn a_store_file_deleted_under_the_server_is_written_back_with_every_user() {
    let dir = Arc::new(TempDir::new("attack-store-gone"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let data = server.data_dir();
    assert_eq!(add(&data, "root").0, 0);

    // A careless clean-up removes the file while the server runs.
    std::fs::remove_file(data.join("users.redb")).unwrap();
    let (code, out, _) = add(&data, "dave");
    assert_eq!(code, 0, "the server acknowledges a new user: {out}");
    assert!(
        within_seconds(|| data.join("users.redb").exists()),
        "the store file was not written back: {}",
        server.log()
    );
    // The log line comes after the file is back, through the log reader: wait for it too.
    assert!(
        within_seconds(|| server
            .log()
            .contains("was deleted under the running server")),
        "{}",
        server.log()
    );
    // Writes after the move land in the file at the path.
    assert_eq!(add(&data, "erin").0, 0);
    let health = server.get("/healthz", &[]);
    assert_eq!((health.status, health.body.trim()), (200, "ok"));

    // The next start (a reboot, the watchdog, an upgrade) finds every user.
    server.stop();
    let server = Server::start_in(dir, &[], &[]);
    let (_, listed, _) = common::cli(&["user", "list", "--data-dir", data.to_str().unwrap()], "");
    for name in ["root", "dave", "erin"] {
        assert!(
            listed.contains(name),
            "{name} is gone: {listed:?}; {}",
            server.log()
        );
    }
}

#[test]
fn a_store_file_deleted_just_before_a_stop_is_written_back_by_the_stop() {
    let dir = Arc::new(TempDir::new("attack-store-gone-stop"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let data = server.data_dir();
    assert_eq!(add(&data, "root").0, 0);
    std::fs::remove_file(data.join("users.redb")).unwrap();
    assert_eq!(add(&data, "dave").0, 0);
    server.stop();
    assert!(data.join("users.redb").exists());
    let (_, listed, _) = common::cli(&["user", "list", "--data-dir", data.to_str().unwrap()], "");
    assert!(
        listed.contains("root") && listed.contains("dave"),
        "{listed:?}"
    );
}

#[test]
fn another_store_file_put_in_place_while_serving_makes_healthz_say_what_to_do() {
    let dir = Arc::new(TempDir::new("attack-store-replaced"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let data = server.data_dir();
    assert_eq!(add(&data, "root").0, 0);
    // A copy of the file put over it (not through `latchkey restore`, which refuses
    // while serving).
    let copy = dir.path().join("copy.redb");
    std::fs::copy(data.join("users.redb"), &copy).unwrap();
    std::fs::rename(&copy, data.join("users.redb")).unwrap();
    assert!(
        within_seconds(|| server.get("/healthz", &[]).status == 503),
        "/healthz never noticed the replaced file: {}",
        server.log()
    );
    let body = server.get("/healthz", &[]).body;
    assert!(
        body.contains("another file") && body.contains("restore"),
        "{body}"
    );
}

#[test]
fn a_deleted_generated_key_file_is_written_back_and_the_next_start_works() {
    let dir = Arc::new(TempDir::new("attack-key-gone"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let key = server.key_file();
    let before = std::fs::read(&key).unwrap();
    std::fs::remove_file(&key).unwrap();
    assert!(
        within_seconds(|| key.exists()),
        "the key file was not written back: {}",
        server.log()
    );
    assert_eq!(std::fs::read(&key).unwrap(), before, "the same key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let health = server.get("/healthz", &[]);
    assert_eq!((health.status, health.body.trim()), (200, "ok"));
    server.stop();
    let server = Server::start_in(dir, &[], &[]);
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn a_configured_key_file_the_next_start_would_refuse_is_a_healthz_warning() {
    let dir = Arc::new(TempDir::new("attack-key-configured"));
    let key = dir.path().join("configured.key");
    latchkey::keys::generate(&key).unwrap();
    let server = Server::start_in(
        Arc::clone(&dir),
        &["--key-file", key.to_str().unwrap()],
        &[],
    );
    std::fs::remove_file(&key).unwrap();
    assert!(
        within_seconds(|| server.get("/healthz", &[]).body.contains("warning")),
        "/healthz said ok though the next start will be refused: {}",
        server.log()
    );
    let health = server.get("/healthz", &[]);
    assert_eq!(health.status, 200, "serving works now: {}", health.body);
    assert!(health.body.contains("configured.key") && health.body.contains("next start"));
    assert!(!key.exists(), "a configured key file is never written back");
}

/// The whole data directory removed under the running server (`rm -rf` of the wrong
/// path): nothing could be written back, since the files' directory was gone; the
/// store's loss went unreported, the key's failed write-back was logged every 2 s, and
/// the next start made a fresh directory with a new key, an empty store and a setup
/// code for whoever registered first. The directory is now made again (0700) and both
/// files written back into it.
#[test]
fn a_data_directory_removed_under_the_server_comes_back_with_every_user_and_the_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Arc::new(TempDir::new("attack-store-dir-gone"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let data = server.data_dir();
    assert_eq!(add(&data, "root").0, 0);
    let key = std::fs::read(data.join("secret.key")).unwrap();

    std::fs::remove_dir_all(&data).unwrap();
    assert!(
        within_seconds(|| data.join("users.redb").exists() && data.join("secret.key").exists()),
        "the data directory was not made again with its files: {}",
        server.log()
    );
    let mode = std::fs::metadata(&data).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    assert_eq!(std::fs::read(data.join("secret.key")).unwrap(), key);
    std::thread::sleep(Duration::from_secs(3));
    let failures = server.log().matches("cannot be written back").count();
    assert!(failures <= 1, "the same failure logged {failures} times");

    server.stop();
    let server = Server::start_in(dir, &[], &[]);
    assert!(
        server.setup_code().is_none(),
        "a fresh store: {}",
        server.log()
    );
    let (_, listed, _) = common::cli(&["user", "list", "--data-dir", data.to_str().unwrap()], "");
    assert!(listed.contains("root"), "{listed:?}; {}", server.log());
}

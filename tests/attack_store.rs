//! Store faults the server does not see.
//!
//! If `users.redb` is deleted (or renamed away) while the server runs, the server keeps
//! reading and writing the unlinked file: `/healthz` says `ok`, `latchkey user add`
//! reports success, logins work. At the next start there is no store at that path, so
//! the server makes a new, empty one with the old key and arms a setup code: every user
//! acknowledged meanwhile (and before) is gone, and nothing said so.

mod common;

use std::sync::Arc;

use common::{Server, TempDir};

#[test]
fn a_store_file_deleted_under_the_server_loses_every_user_at_the_next_start_unnoticed() {
    let dir = Arc::new(TempDir::new("attack-store-gone"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let data = server.data_dir();
    let d = data.to_str().unwrap().to_string();
    let add = |name: &str| {
        common::cli(
            &["user", "add", name, "--role", "admin", "--data-dir", &d],
            "correct horse battery\n",
        )
    };
    assert_eq!(add("root").0, 0);

    // A careless clean-up removes the file while the server runs.
    std::fs::remove_file(data.join("users.redb")).unwrap();
    let (code, out, _) = add("dave");
    assert_eq!(code, 0, "the server acknowledges a new user: {out}");
    let health = server.get("/healthz", &[]);
    let healthz_said = format!("{} {}", health.status, health.body.trim());

    // The next start (a reboot, the watchdog, an upgrade).
    server.stop();
    let server = Server::start_in(dir, &[], &[]);
    let (_, listed, _) = common::cli(&["user", "list", "--data-dir", &d], "");
    assert!(
        listed.contains("dave") && listed.contains("root"),
        "every acknowledged user is gone after the restart ({listed:?}); /healthz said \
         {healthz_said:?} while the store file was missing, and the server started on a new \
         empty store: {}",
        server.log()
    );
}

/// The same for the key: `secret.key` deleted while the server runs is noticed only by
/// the next start, which is refused (by design, to keep sessions and verify-only
/// instances working); meanwhile `/healthz` answers `ok`, so the outage comes at the
/// next restart with no warning before it.
#[test]
fn a_deleted_key_file_is_reported_only_by_the_refused_next_start() {
    let dir = Arc::new(TempDir::new("attack-key-gone"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    std::fs::remove_file(server.key_file()).unwrap();
    let health = server.get("/healthz", &[]);
    assert_ne!(
        (health.status, health.body.trim()),
        (200, "ok"),
        "/healthz says ok though the next start will be refused for the missing key"
    );
}

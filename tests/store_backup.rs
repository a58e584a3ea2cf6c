//! `latchkey backup` and `latchkey restore` through the real binary: a round trip keeps
//! every user (passwords, versions, roles, locks); a backup is private and never
//! overwrites; a restore checks the copy in full, refuses to replace a sound store without
//! `--force`, refuses while a server holds the store, and keeps what it replaces.
mod common;

use std::path::Path;
use std::sync::Arc;

use common::{Server, TempDir, cli};
use latchkey::password::{Params, Passwords, Verdict};
use latchkey::store::UserStore;
use sha2::{Digest, Sha256};

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).expect("read")).to_vec()
}

fn s(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// `dir/data` with alice (admin), bob (locked, revoked twice) and carol (role editor).
fn populated(dir: &TempDir) {
    let d = dir.data();
    for (name, role) in [("alice", "admin"), ("bob", "user"), ("carol", "user")] {
        let (code, _, err) = cli(
            &["user", "add", name, "--role", role, "--data-dir", s(&d)],
            &format!("password-{name}\n"),
        );
        assert_eq!(code, 0, "{err}");
    }
    for args in [
        ["user", "lock", "bob"],
        ["user", "revoke", "bob"],
        ["user", "role", "carol"],
    ] {
        let mut args: Vec<&str> = args.to_vec();
        if args[1] == "role" {
            args.push("editor");
        }
        args.extend(["--data-dir", s(&d)]);
        let (code, _, err) = cli(&args, "");
        assert_eq!(code, 0, "{err}");
    }
}

fn list_json(data: &Path) -> serde_json::Value {
    let (code, out, err) = cli(&["user", "list", "--json", "--data-dir", s(data)], "");
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).expect("JSON")
}

#[test]
fn backup_and_restore_round_trip() {
    let dir = TempDir::new("backup");
    populated(&dir);
    let copy = dir.path().join("nightly.redb");
    let (code, out, err) = cli(&["backup", s(&copy), "--data-dir", s(&dir.data())], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("backed up 3 users to {} (", copy.display())),
        "{out}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&copy).expect("copy").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "private");
    }
    // Never over an existing file.
    let before = sha(&copy);
    let (code, _, err) = cli(&["backup", s(&copy), "--data-dir", s(&dir.data())], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("already exists; a backup never overwrites"),
        "{err}"
    );
    assert_eq!(sha(&copy), before);
    // The copy is a sound store.
    assert_eq!(
        UserStore::inspect(&copy)
            .expect("inspect")
            .check_consistency()
            .expect("sound"),
        3
    );

    // Restored into a new data directory: the same users, the same passwords.
    let elsewhere = dir.path().join("restored");
    let (code, out, err) = cli(&["restore", s(&copy), "--data-dir", s(&elsewhere)], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out,
        format!(
            "restored 3 users from {} into {}\n",
            copy.display(),
            elsewhere.join("users.redb").display()
        )
    );
    assert_eq!(list_json(&elsewhere), list_json(&dir.data()));
    let store = UserStore::open(&elsewhere.join("users.redb")).expect("open");
    let bob = store.get_by_name("bob").expect("read").expect("bob");
    assert!(bob.locked && bob.ver == 2);
    let pw = Passwords::new(Params::default()).expect("params");
    assert!(matches!(
        pw.verify("password-bob", &bob.password_hash),
        Verdict::Match { .. }
    ));
}

#[test]
fn restore_refuses_a_sound_store_without_force_and_keeps_what_it_replaces() {
    let dir = TempDir::new("backup");
    populated(&dir);
    let data = dir.data();
    let copy = dir.path().join("copy.redb");
    let (code, _, err) = cli(&["backup", s(&copy), "--data-dir", s(&data)], "");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &["user", "add", "dave", "--data-dir", s(&data)],
        "password-dave\n",
    );
    assert_eq!(code, 0, "{err}");
    let store = data.join("users.redb");
    let before = sha(&store);
    let (code, _, err) = cli(&["restore", s(&copy), "--data-dir", s(&data)], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("is a sound store with 4 users; pass --force to replace it"),
        "{err}"
    );
    assert_eq!(sha(&store), before, "nothing was changed");

    let (code, out, err) = cli(
        &["restore", s(&copy), "--data-dir", s(&data), "--force"],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored 3 users"), "{out}");
    let kept = out
        .lines()
        .find_map(|l| l.strip_prefix("the replaced store was kept as "))
        .expect("kept");
    assert_eq!(
        sha(Path::new(kept)),
        before,
        "the replaced store is kept as it was"
    );
    let names: Vec<String> = list_json(&data)
        .as_array()
        .expect("array")
        .iter()
        .map(|u| u["name"].as_str().expect("name").to_string())
        .collect();
    assert_eq!(names, ["alice", "bob", "carol"]);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&store)
            .expect("store")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // No temporary file is left behind.
    let stray: Vec<String> = std::fs::read_dir(&data)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn restore_refuses_a_damaged_copy_and_replaces_a_damaged_store() {
    let dir = TempDir::new("backup");
    populated(&dir);
    let data = dir.data();
    let copy = dir.path().join("copy.redb");
    let (code, _, err) = cli(&["backup", s(&copy), "--data-dir", s(&data)], "");
    assert_eq!(code, 0, "{err}");
    // A copy cut short is refused, and the store is left alone.
    let cut = dir.path().join("cut.redb");
    let bytes = std::fs::read(&copy).expect("read");
    std::fs::write(&cut, &bytes[..bytes.len() - 1]).expect("write");
    let store = data.join("users.redb");
    let before = sha(&store);
    let (code, _, err) = cli(&["restore", s(&cut), "--data-dir", s(&data), "--force"], "");
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("the copy {} is damaged", cut.display())),
        "{err}"
    );
    assert_eq!(sha(&store), before);
    let empty = dir.path().join("empty.redb");
    std::fs::write(&empty, b"").expect("write");
    let (code, _, err) = cli(
        &["restore", s(&empty), "--data-dir", s(&data), "--force"],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("is empty (0 bytes)"), "{err}");

    // A damaged store may be replaced without --force: that is what backups are for.
    std::fs::write(&store, b"").expect("a failed copy left it empty");
    let (code, out, err) = cli(&["restore", s(&copy), "--data-dir", s(&data)], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored 3 users"), "{out}");
    assert_eq!(list_json(&data).as_array().expect("array").len(), 3);
}

#[test]
fn restore_refuses_while_a_server_holds_the_store_and_backup_asks_the_server() {
    let dir = Arc::new(TempDir::new("backup"));
    populated(&dir);
    let data = dir.data();
    let copy = dir.path().join("copy.redb");
    let (code, _, err) = cli(&["backup", s(&copy), "--data-dir", s(&data)], "");
    assert_eq!(code, 0, "{err}");
    let store = data.join("users.redb");
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let (code, _, err) = cli(
        &["restore", s(&copy), "--data-dir", s(&data), "--force"],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("a server is running on"), "{err}");
    assert!(err.contains("stop it first"), "{err}");
    // A backup while serving is made by the server, through its control socket.
    let live = dir.path().join("live.redb");
    let (code, out, err) = cli(&["backup", s(&live), "--data-dir", s(&data)], "");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("backed up 3 users"), "{out}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&live).expect("copy").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let (code, _, err) = cli(&["backup", s(&live), "--data-dir", s(&data)], "");
    assert_eq!(code, 1, "never over an existing file");
    assert!(err.contains("exists"), "{err}");
    assert!(server.stop().success());
    let before = sha(&store);
    let later = dir.path().join("later.redb");
    assert_eq!(
        cli(&["backup", s(&later), "--data-dir", s(&data)], "").0,
        0,
        "works once the server is stopped"
    );
    assert_eq!(sha(&store), before, "a backup never writes the store");
    // The copy made while serving is a sound store with the same users.
    let restored = Arc::new(TempDir::new("backup"));
    let (code, out, err) = cli(
        &["restore", s(&live), "--data-dir", s(&restored.data())],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("restored 3 users"), "{out}");
}

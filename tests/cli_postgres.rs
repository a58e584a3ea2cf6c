//! The command line against a PostgreSQL store, through the real binary and a real
//! server: every `user` command with `--store` (and `LATCHKEY_STORE`, the password from
//! `store_password_file`), `serve --check`, `backup` (a redb file `restore` and `store
//! copy` read), and `store copy` from redb to PostgreSQL and back, after which every
//! user still logs in with the same password.

#![cfg(feature = "postgres")]

mod common;

use std::sync::Arc;

use common::pg::{self, PgCluster};
use common::{Server, TempDir, bin};

/// Runs `latchkey <args>` with `env`, `stdin` piped in; (code, stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String) {
    use std::io::Write;
    let mut cmd = std::process::Command::new(bin());
    cmd.args(args)
        .env("LATCHKEY_ARGON2_MEMORY_KIB", "64")
        .env("LATCHKEY_ARGON2_ITERATIONS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("LATCHKEY_") && k != "LATCHKEY_ARGON2_MEMORY_KIB" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run latchkey");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    let out = child.wait_with_output().expect("wait");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let (code, out, err) = run(args, env, stdin);
    assert_eq!(code, 0, "latchkey {args:?}: {out}{err}");
    assert!(
        !out.contains(pg::PASSWORD) && !err.contains(pg::PASSWORD),
        "{out}{err}"
    );
    out
}

/// Logs `name` in through the API of a server; the status.
fn login_status(server: &Server, name: &str, password: &str) -> u16 {
    let body = serde_json::json!({"username": name, "password": password}).to_string();
    server
        .request(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
        .status
}

const USERS: &[(&str, &str, &str)] = &[
    ("root", "admin", "root-password-1"),
    ("Bob.Smith", "editor", "bob-password-22"),
    ("carol@example.org", "user", "carol-password-333"),
];

#[test]
fn user_commands_check_and_backup_work_on_postgres() {
    let url = pg::fresh_database();
    let dir = TempDir::new("clipg");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let with = ["--store", url.as_str(), "--data-dir", data];
    let user = |args: &[&str], stdin: &str| {
        let mut full = vec!["user"];
        full.extend_from_slice(args);
        full.extend_from_slice(&with);
        ok(&full, &[], stdin)
    };
    for (name, role, password) in USERS {
        let out = user(&["add", name, "--role", role], &format!("{password}\n"));
        assert!(out.starts_with(&format!("added user {name} (id ")), "{out}");
    }
    let (code, _, err) = run(
        &["user", "add", "BOB.smith", "--store", &url],
        &[],
        "whatever-password\n",
    );
    assert_eq!(code, 1);
    assert!(err.contains("is taken"), "{err}");
    assert!(user(&["role", "carol@example.org", "ops"], "").contains("ops"));
    user(&["lock", "Bob.Smith"], "");
    user(&["unlock", "Bob.Smith"], "");
    user(&["revoke", "Bob.Smith"], "");
    user(&["passwd", "Bob.Smith"], "bob-password-23\n");
    // The same through LATCHKEY_STORE and a password file instead of the URL's password.
    let cluster_port = url
        .split(':')
        .nth(3)
        .and_then(|p| p.split('/').next())
        .expect("port");
    let db = url.rsplit('/').next().expect("db");
    let bare = format!("postgres://postgres@127.0.0.1:{cluster_port}/{db}");
    let pw = dir.path().join("db-password");
    std::fs::write(&pw, format!("{}\n", pg::PASSWORD)).expect("pw");
    let env = [
        ("LATCHKEY_STORE", bare.as_str()),
        ("LATCHKEY_STORE_PASSWORD_FILE", pw.to_str().expect("utf-8")),
    ];
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&["user", "list", "--json"], &env, "")).expect("JSON");
    let summary: Vec<(String, String, u64)> = listed
        .iter()
        .map(|u| {
            (
                u["name"].as_str().expect("name").to_string(),
                u["role"].as_str().expect("role").to_string(),
                u["ver"].as_u64().expect("ver"),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("root".to_string(), "admin".to_string(), 0),
            ("Bob.Smith".into(), "editor".into(), 3),
            ("carol@example.org".into(), "ops".into(), 0),
        ]
    );
    let out = ok(&["user", "list"], &env, "");
    assert!(out.starts_with("ID  NAME"), "{out}");
    user(&["remove", "carol@example.org"], "");
    // The last administrator is kept by the database too.
    let (code, _, err) = run(&["user", "remove", "root", "--store", &url], &[], "");
    assert_eq!(code, 1);
    assert!(err.contains("last active administrator"), "{err}");

    // serve --check reads the database and writes nothing.
    let key = dir.path().join("secret.key");
    ok(&["key", "generate", key.to_str().expect("utf-8")], &[], "");
    let out = ok(
        &[
            "serve",
            "--check",
            "--store",
            &url,
            "--key-file",
            key.to_str().expect("utf-8"),
            "--data-dir",
            data,
        ],
        &[],
        "",
    );
    assert!(out.contains("holds 2 users"), "{out}");
    assert!(out.contains("postgres://postgres:***@"), "{out}");

    // A backup is a redb file: restore and store copy read it.
    let backup = dir.path().join("users-backup.redb");
    let out = ok(
        &[
            "backup",
            backup.to_str().expect("utf-8"),
            "--store",
            &url,
            "--data-dir",
            data,
        ],
        &[],
        "",
    );
    assert!(out.starts_with("backed up 2 users to"), "{out}");
    let restored = dir.path().join("restored");
    std::fs::create_dir_all(&restored).expect("dir");
    ok(
        &[
            "restore",
            backup.to_str().expect("utf-8"),
            "--data-dir",
            restored.to_str().expect("utf-8"),
        ],
        &[],
        "",
    );
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok(
        &[
            "user",
            "list",
            "--json",
            "--data-dir",
            restored.to_str().expect("utf-8"),
        ],
        &[],
        "",
    ))
    .expect("JSON");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["ver"], 3);
    // restore refuses a PostgreSQL store, saying what to do instead.
    let (code, _, err) = run(
        &["restore", backup.to_str().expect("utf-8"), "--store", &url],
        &[],
        "",
    );
    assert_eq!(code, 1);
    assert!(err.contains("store copy"), "{err}");
    assert!(!err.contains(pg::PASSWORD), "{err}");
}

#[test]
fn store_copy_round_trip_keeps_every_login() {
    let pg = PgCluster::start();
    let url = pg.database();
    let dir = Arc::new(TempDir::new("copy"));
    let data = dir.path().join("data");
    let data_s = data.to_str().expect("utf-8");
    for (name, role, password) in USERS {
        ok(
            &["user", "add", name, "--role", role, "--data-dir", data_s],
            &[],
            &format!("{password}\n"),
        );
    }
    ok(
        &["user", "lock", "carol@example.org", "--data-dir", data_s],
        &[],
        "",
    );
    let redb = data.join("users.redb");
    let redb_s = redb.to_str().expect("utf-8");
    // redb -> PostgreSQL.
    let out = ok(&["store", "copy", "--from", redb_s, "--to", &url], &[], "");
    assert!(out.starts_with("copied 3 users from"), "{out}");
    assert!(out.contains("postgres://postgres:***@"), "{out}");
    // A second copy into the non-empty database is refused without --force.
    let (code, _, err) = run(&["store", "copy", "--from", redb_s, "--to", &url], &[], "");
    assert_eq!(code, 1);
    assert!(
        err.contains("holds 3 users") && err.contains("--force"),
        "{err}"
    );
    assert!(!err.contains(pg::PASSWORD));
    ok(
        &["store", "copy", "--from", redb_s, "--to", &url, "--force"],
        &[],
        "",
    );

    // A server on the database: everyone logs in with the same password; carol is
    // still locked.
    let key = dir.path().join("secret.key");
    let key_s = key.to_str().expect("utf-8");
    ok(&["key", "generate", key_s], &[], "");
    let on_pg = Server::start(&["--store", &url, "--key-file", key_s], &[]);
    for (name, _, password) in &USERS[..2] {
        assert_eq!(
            login_status(&on_pg, name, password),
            200,
            "{name} on PostgreSQL"
        );
        assert_eq!(login_status(&on_pg, name, "not-the-password"), 401);
    }
    assert_eq!(
        login_status(&on_pg, USERS[2].0, USERS[2].2),
        401,
        "carol is locked"
    );
    // A change made on PostgreSQL travels back.
    let data2 = dir.path().join("back");
    std::fs::create_dir_all(&data2).expect("dir");
    ok(
        &["user", "passwd", "root", "--store", &url],
        &[],
        "root-password-2\n",
    );
    drop(on_pg);
    let back = data2.join("users.redb");
    let back_s = back.to_str().expect("utf-8");
    let out = ok(&["store", "copy", "--from", &url, "--to", back_s], &[], "");
    assert!(out.starts_with("copied 3 users"), "{out}");
    // Into an existing store with users: refused, then replaced with --force (kept).
    let (code, _, err) = run(&["store", "copy", "--from", &url, "--to", back_s], &[], "");
    assert_eq!(code, 1, "{err}");
    let out = ok(
        &["store", "copy", "--from", &url, "--to", back_s, "--force"],
        &[],
        "",
    );
    assert!(out.contains("kept as"), "{out}");
    let serve_dir = Arc::new(TempDir::new("copy-serve"));
    std::fs::create_dir_all(serve_dir.data()).expect("dir");
    std::fs::copy(&back, serve_dir.data().join("users.redb")).expect("copy the file");
    let on_redb = Server::start_in(Arc::clone(&serve_dir), &["--key-file", key_s], &[]);
    assert_eq!(login_status(&on_redb, "root", "root-password-2"), 200);
    assert_eq!(login_status(&on_redb, "root", "root-password-1"), 401);
    assert_eq!(login_status(&on_redb, "bob.smith", "bob-password-22"), 200);
    assert_eq!(
        login_status(&on_redb, USERS[2].0, USERS[2].2),
        401,
        "still locked"
    );
    // The copy kept the ids and the counter.
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok(
        &[
            "user",
            "list",
            "--json",
            "--data-dir",
            serve_dir.data().to_str().expect("utf-8"),
        ],
        &[],
        "",
    ))
    .expect("JSON");
    let ids: Vec<u64> = listed
        .iter()
        .map(|u| u["id"].as_u64().expect("id"))
        .collect();
    assert_eq!(ids, [1, 2, 3]);
}

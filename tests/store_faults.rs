//! Faults an operator's bad day brings, through the real binary and real files: damaged
//! store files (refused untouched, never a panic), one damaged record (named everywhere,
//! only its owner refused), a full disk (503 while writes fail, recovery without a
//! restart, no acknowledged user lost), a store file that vanishes (reads fail as JSON
//! 503 under /api/, recovery once it is back), and a deleted or changed signing key
//! (start refused, naming the file; the deliberate switch).
//!
//! The disk-full test mounts a small tmpfs: it needs root, so it is `#[ignore]`d and
//! `.ci/run` runs it as root with `--ignored`; it fails, never skips, when the mount fails.
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Browser, FAST_ENV, Response, Server, TempDir, Tmpfs, bin, cli, fill};
use latchkey::password::{Params, Passwords};
use latchkey::store::UserStore;
use redb::{Database, TableDefinition};
use sha2::{Digest, Sha256};

const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");

/// The server's argon2 parameters in the fast test environment.
fn passwords() -> Passwords {
    Passwords::new(Params {
        m_kib: 64,
        t: 1,
        p: 1,
    })
    .expect("params")
}

fn password(name: &str) -> String {
    format!("password-{name}")
}

fn sha(path: &Path) -> Vec<u8> {
    Sha256::digest(std::fs::read(path).expect("read")).to_vec()
}

/// The names in a directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `dir/data/users.redb` holding alice (admin), bob and carol, each record stored once
/// (the file is a backup of a store built user by user, so no stale copies of a record
/// linger in freed pages). Returns the store file and carol's password hash, which
/// appears in the file exactly once, inside her record.
fn populated(dir: &TempDir) -> (PathBuf, Vec<u8>) {
    let scratch = dir.path().join("scratch.redb");
    let mut carol = Vec::new();
    {
        let s = UserStore::open(&scratch).expect("scratch store");
        let pw = passwords();
        for (name, role) in [("alice", "admin"), ("bob", "user"), ("carol", "user")] {
            let hash = pw.hash(&password(name)).expect("hash");
            if name == "carol" {
                carol = hash.clone().into_bytes();
            }
            s.create(name, role, &hash).expect("create");
        }
    }
    let data = dir.data();
    std::fs::create_dir_all(&data).expect("data dir");
    let file = data.join("users.redb");
    UserStore::open_existing(&scratch)
        .expect("reopen")
        .backup_to(&file)
        .expect("compact copy");
    std::fs::remove_file(&scratch).expect("scratch");
    (file, carol)
}

/// Runs `latchkey <args>` with the fast environment and a bound on its run time
/// (a `serve` that should refuse to start must not start).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("LATCHKEY_") || k == "STATE_DIRECTORY" || k == "CREDENTIALS_DIRECTORY" {
            cmd.env_remove(k);
        }
    }
    for (k, v) in FAST_ENV {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn latchkey");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"a new password\n");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("latchkey {args:?} did not exit within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A refusal: exit 1, the message, never a panic or a backtrace.
#[track_caller]
fn refused(result: &(i32, String, String), says: &[&str]) {
    let (code, _, stderr) = result;
    assert_eq!(*code, 1, "stderr: {stderr}");
    for s in says {
        assert!(stderr.contains(s), "expected {s:?} in: {stderr}");
    }
    for never in ["panicked", "backtrace", "RUST_BACKTRACE", "unreachable"] {
        assert!(!stderr.contains(never), "{never:?} in: {stderr}");
    }
}

#[derive(Debug, Clone, Copy)]
enum Harm {
    Empty,
    CutByOneByte,
    ZeroedPage,
    FlippedByte,
    Garbage,
}

/// Damages the store file as the harm says; `marker` is the bytes of one record.
fn harm(file: &Path, how: Harm, marker: &[u8]) {
    let mut bytes = std::fs::read(file).expect("read");
    let at = || {
        let found: Vec<usize> = bytes
            .windows(marker.len())
            .enumerate()
            .filter(|(_, w)| *w == marker)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(found.len(), 1, "the record is stored once");
        found[0]
    };
    match how {
        Harm::Empty => bytes.clear(),
        Harm::CutByOneByte => {
            bytes.pop();
        }
        Harm::ZeroedPage => {
            let page = at() / 4096 * 4096;
            bytes[page..page + 4096].fill(0);
        }
        Harm::FlippedByte => {
            let i = at() + marker.len() / 2;
            bytes[i] ^= 0x01;
        }
        Harm::Garbage => {
            let mut noise = vec![0u8; bytes.len()];
            getrandom::fill(&mut noise).expect("random");
            bytes = noise;
        }
    }
    std::fs::write(file, bytes).expect("write");
}

#[test]
fn damaged_store_files_are_refused_untouched_by_every_command() {
    for (how, what) in [
        (Harm::Empty, "is empty (0 bytes)"),
        (Harm::CutByOneByte, "integrity check"),
        (Harm::ZeroedPage, "integrity check"),
        (Harm::FlippedByte, "integrity check"),
        (Harm::Garbage, "is not a redb file"),
    ] {
        let dir = TempDir::new("harm");
        let (file, marker) = populated(&dir);
        harm(&file, how, &marker);
        let before = sha(&file);
        let data = dir.data();
        let d = data.to_str().expect("utf-8");
        let copy = dir.path().join("copy.redb");
        let says = ["the user store is damaged: ", what, "latchkey restore"];
        for args in [
            vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", d],
            vec!["serve", "--check", "--data-dir", d],
            vec!["user", "list", "--data-dir", d],
            vec!["user", "add", "dave", "--data-dir", d],
            vec!["user", "revoke", "alice", "--data-dir", d],
            vec!["backup", copy.to_str().expect("utf-8"), "--data-dir", d],
        ] {
            let result = run(&args);
            refused(&result, &says);
            assert_eq!(sha(&file), before, "{how:?}: {args:?} changed the file");
        }
        // Nothing was created beside it: no key, no temporary file, no copy.
        assert_eq!(listing(&data), ["users.redb"], "{how:?}");
        assert!(!copy.exists());
    }
}

/// Logs in through the form; returns the response (303 on success).
fn page_login<'s>(server: &'s Server, name: &str, password: &str) -> (Response, Browser<'s>) {
    let mut b = Browser::new(server);
    let r = b.submit(
        "/login",
        "/login",
        &[("username", name), ("password", password)],
    );
    (r, b)
}

fn api_login(server: &Server, name: &str, password: &str) -> Response {
    let body = serde_json::json!({ "username": name, "password": password }).to_string();
    server.request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

#[test]
fn one_damaged_record_is_named_everywhere_and_refuses_only_its_owner() {
    let dir = Arc::new(TempDir::new("record"));
    let (file, _) = populated(&dir);
    {
        let db = Database::create(&file).expect("redb");
        let tx = db.begin_write().expect("write");
        tx.open_table(USERS)
            .expect("users")
            .insert(2, &[9u8, 0, 0, 0][..])
            .expect("damage bob's record");
        tx.commit().expect("commit");
    }
    let data = dir.data();
    let d = data.to_str().expect("utf-8").to_string();

    let server = Server::start_in_logging_errors(Arc::clone(&dir), &[], &[]);
    assert!(
        server
            .log()
            .contains("the record of user 2 is unreadable (unknown record format 9)"),
        "{}",
        server.log()
    );
    // The admin page lists the others and marks the damaged one.
    let (r, mut alice) = page_login(&server, "alice", &password("alice"));
    assert_eq!(r.status, 303, "{}", r.body);
    let admin = alice.get("/admin");
    assert_eq!(admin.status, 200, "{}", admin.body);
    assert!(admin.body.contains("carol"), "{}", admin.body);
    assert!(
        admin
            .body
            .contains("damaged record: unknown record format 9"),
        "{}",
        admin.body
    );
    assert!(admin.body.contains("/admin/users/2/delete"));
    // Bob's login fails with a clear message; the others work.
    let (r, _) = page_login(&server, "bob", &password("bob"));
    assert_eq!(r.status, 500, "{}", r.body);
    assert!(
        r.body.contains("record in the user store is damaged"),
        "{}",
        r.body
    );
    let r = api_login(&server, "bob", &password("bob"));
    assert_eq!(r.status, 500);
    assert_eq!(json(&r)["error"], "account_damaged");
    assert_eq!(api_login(&server, "carol", &password("carol")).status, 200);
    assert_eq!(
        page_login(&server, "carol", &password("carol")).0.status,
        303
    );
    // /healthz: serving (everyone else is), naming the damage; /metrics counts it.
    let h = server.get("/healthz", &[]);
    assert_eq!(h.status, 200, "{}", h.body);
    assert!(
        h.body.starts_with("ok, but the user store is damaged"),
        "{}",
        h.body
    );
    assert!(h.body.contains("user 2"), "{}", h.body);
    let m = server.get("/metrics", &[]);
    assert!(
        m.body.contains("latchkey_store_damaged_records 1"),
        "{}",
        m.body
    );
    assert!(m.body.contains("latchkey_store_writable 1"));
    assert!(server.stop().success());

    // The command line says the same.
    let (code, out, err) = run(&["user", "list", "--data-dir", &d]);
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("alice") && out.contains("carol"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("2 ") && l.contains("(damaged)")),
        "{out}"
    );
    assert!(
        err.contains("the record of user 2 is unreadable (unknown record format 9)"),
        "{err}"
    );
    let (code, out, err) = run(&["user", "list", "--json", "--data-dir", &d]);
    assert_eq!(code, 1, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(rows[1]["id"], 2);
    assert_eq!(rows[1]["damaged"], "unknown record format 9");
    let check = run(&["serve", "--check", "--data-dir", &d]);
    refused(
        &check,
        &["the record of user 2 is unreadable", "latchkey restore"],
    );

    // Without a backup, the damaged user can be removed; then all is sound again.
    let (code, out, err) = run(&["user", "remove", "bob", "--data-dir", &d]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "removed bob (id 2; its record was damaged)\n");
    assert_eq!(run(&["user", "list", "--data-dir", &d]).0, 0);
    let (code, out, err) = run(&["serve", "--check", "--data-dir", &d]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("holds 2 users"), "{out}");
}

/// The write-health changes the server logged, in order ("writes fail", "writes work");
/// panics when one is logged twice in a row (a line per request, not per change).
fn store_changes(log: &str) -> Vec<&'static str> {
    let changes: Vec<&'static str> = log
        .lines()
        .filter_map(|line| {
            if line.contains(" error user store: writes fail: ") {
                Some("writes fail")
            } else if line.contains(" info user store: writes work again") {
                Some("writes work")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(changes.first().copied(), Some("writes fail"), "{log}");
    for pair in changes.windows(2) {
        assert_ne!(pair[0], pair[1], "logged twice in a row: {log}");
    }
    changes
}

/// Creates a user through the admin page: 303 back to the page when created (the names
/// and passwords here break no rule), 503 when the store cannot be written.
fn admin_create(admin: &mut Browser, name: &str) -> Response {
    let pw = password(name);
    admin.submit(
        "/admin",
        "/admin/users",
        &[("username", name), ("password", &pw), ("role", "user")],
    )
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_is_survived_without_a_restart_and_loses_no_acknowledged_user() {
    let dir = Arc::new(TempDir::new("full"));
    let mount = Tmpfs::mount(dir.path(), "8m");
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let data = dir.data();
    let store_file = data.join("users.redb");
    let mut acknowledged = vec!["root".to_string()];
    let mut root = Browser::registered(&server, "root", &password("root"));
    let cookie = format!("token={}", root.jar.get("token").expect("cookie"));
    for i in 0..3 {
        let name = format!("early{i}");
        let r = admin_create(&mut root, &name);
        assert_eq!(r.status, 303, "{}", r.body);
        acknowledged.push(name);
    }

    // The disk fills; sooner or later the store needs room it cannot get.
    let filler = fill(dir.path());
    let mut refusal = None;
    for i in 0..500 {
        let name = format!("late{i}");
        let r = admin_create(&mut root, &name);
        match r.status {
            303 => acknowledged.push(name),
            503 => {
                refusal = Some(r);
                break;
            }
            other => panic!("creating {name}: {other} {}", r.body),
        }
    }
    let refusal = refusal.expect("a full disk refused no creation");
    assert!(
        refusal.body.contains("cannot be used right now"),
        "{}",
        refusal.body
    );
    assert!(
        refusal
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "a page outside /api/"
    );
    let h = server.get("/healthz", &[]);
    assert_eq!(h.status, 503, "{}", h.body);
    assert!(
        h.body.contains("cannot be written") && h.body.contains("No space left on device"),
        "{}",
        h.body
    );
    let m = server.get("/metrics", &[]);
    assert!(m.body.contains("latchkey_store_writable 0"), "{}", m.body);
    // Reads, token checks and logins go on.
    assert_eq!(server.get("/account", &[("Cookie", &cookie)]).status, 200);
    let auth = server.get("/auth", &[("Cookie", &cookie)]);
    assert_eq!(auth.status, 200);
    assert_eq!(auth.header("remote-user"), Some("root"));
    assert_eq!(root.get("/admin").status, 200, "the admin page is a read");
    let r = api_login(&server, "early0", &password("early0"));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        page_login(&server, "early1", &password("early1")).0.status,
        303
    );
    // More refusals add no error line: the store logs one line per change of state,
    // never per request. (On a nearly full disk a small write may still succeed between
    // failing ones; the state then changes only after writes went 5 s without a failure.)
    let mut refused = 1;
    for i in 0..5 {
        let name = format!("more{i}");
        match admin_create(&mut root, &name).status {
            303 => acknowledged.push(name),
            503 => refused += 1,
            other => panic!("creating {name}: {other}"),
        }
    }
    let changes = store_changes(&server.log());
    assert!(
        changes.len() < refused || refused == 1,
        "a line per refusal: {changes:?}"
    );

    // Room again: writes work without a restart, and /healthz says so.
    std::fs::remove_file(&filler).expect("free the space");
    let mut recovered = false;
    for i in 0..50 {
        let name = format!("after{i}");
        let r = admin_create(&mut root, &name);
        if r.status == 303 {
            acknowledged.push(name);
            recovered = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(recovered, "creation never worked again: {}", server.log());
    // /healthz turns good once writes went a few seconds without a failure (small writes
    // may succeed between failing ones on a nearly full disk: the state does not flap).
    let started = Instant::now();
    loop {
        let h = server.get("/healthz", &[]);
        if h.status == 200 {
            assert_eq!(h.body, "ok\n");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "/healthz never recovered: {}",
            h.body
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The log line is written before the answer, but read from the pipe by another
    // thread: give it a moment.
    let started = Instant::now();
    while store_changes(&server.log()).last().copied() != Some("writes work") {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no \"writes work again\" line: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The store file vanishes while the disk is full: opening it again after the failed
    // write fails, so reads fail too, answered as JSON under /api/, and come back by
    // themselves once the file does.
    let kept = data.join("kept.redb");
    std::fs::hard_link(&store_file, &kept).expect("keep the inode");
    std::fs::remove_file(&store_file).expect("unlink");
    let filler = fill(dir.path());
    let mut failed = false;
    for i in 0..500 {
        let name = format!("gone{i}");
        let r = admin_create(&mut root, &name);
        match r.status {
            303 => acknowledged.push(name),
            503 => {
                failed = true;
                break;
            }
            other => panic!("creating {name}: {other} {}", r.body),
        }
    }
    assert!(failed, "a full disk refused no creation");
    let r = api_login(&server, "early0", &password("early0"));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(json(&r)["error"], "unavailable");
    assert!(json(&r)["message"].as_str().is_some());
    let h = server.get("/healthz", &[]);
    assert_eq!(h.status, 503);
    assert!(h.body.contains("cannot be read"), "{}", h.body);
    std::fs::remove_file(&filler).expect("free the space");
    std::fs::hard_link(&kept, &store_file).expect("the file is back");
    std::fs::remove_file(&kept).expect("one name again");
    let started = Instant::now();
    while server.get("/healthz", &[]).status != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "never recovered: {}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        api_login(&server, "early0", &password("early0")).status,
        200
    );
    let r = admin_create(&mut root, "back");
    assert_eq!(r.status, 303, "{}", r.body);
    acknowledged.push("back".into());

    // Over the whole run: every change of state logged once, none repeated.
    store_changes(&server.log());
    // A restart finds every acknowledged user.
    assert!(server.stop().success());
    let (code, out, err) = cli(
        &[
            "user",
            "list",
            "--json",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for name in &acknowledged {
        assert!(names.contains(&name.as_str()), "{name} was lost: {names:?}");
    }
    let again = Server::start_in(Arc::clone(&dir), &[], &[]);
    let last = acknowledged.last().expect("some");
    assert_eq!(api_login(&again, last, &password(last)).status, 200);
    drop(again);
    drop(mount);
}

/// The kid the server logged at start.
fn logged_kid(log: &str) -> String {
    let rest = log
        .split("signing with key ")
        .nth(1)
        .unwrap_or_else(|| panic!("no kid logged: {log}"));
    rest[..8].to_string()
}

#[test]
fn a_deleted_key_file_refuses_the_start_until_restored_or_replaced() {
    let dir = Arc::new(TempDir::new("keys"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let key_file = server.key_file();
    let key = std::fs::read_to_string(&key_file).expect("generated on first start");
    let first = logged_kid(&server.log());
    assert!(!server.log().contains(key.trim()), "never the key itself");
    let mut alice = Browser::registered(&server, "alice", &password("alice"));
    let cookie = format!("token={}", alice.jar.get("token").expect("cookie"));
    assert_eq!(alice.get("/account").status, 200);
    assert!(server.stop().success());

    std::fs::remove_file(&key_file).expect("delete the key");
    let store = dir.data().join("users.redb");
    let before = sha(&store);
    let d = dir.data();
    let d = d.to_str().expect("utf-8");
    let path = key_file.to_str().expect("utf-8");
    let says = [
        path,
        first.as_str(),
        "--replace-key",
        "Restore that key file",
    ];
    refused(
        &run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", d]),
        &says,
    );
    refused(&run(&["serve", "--check", "--data-dir", d]), &says);
    assert!(!key_file.exists(), "no key was written");
    assert_eq!(
        sha(&store),
        before,
        "the refusal wrote nothing to the store"
    );

    // Restoring the key brings everything back, sessions included.
    std::fs::write(&key_file, &key).expect("restore");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    assert_eq!(logged_kid(&server.log()), first);
    assert_eq!(server.get("/account", &[("Cookie", &cookie)]).status, 200);
    assert!(server.stop().success());

    // The deliberate switch: a new key, old sessions end, and it sticks.
    std::fs::remove_file(&key_file).expect("delete again");
    let server = Server::start_in(Arc::clone(&dir), &["--replace-key"], &[]);
    let second = logged_kid(&server.log());
    assert_ne!(second, first);
    assert!(
        server.log().contains(&format!("replacing key {first}")),
        "{}",
        server.log()
    );
    assert!(key_file.exists(), "generated");
    let r = server.get("/account", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 303, "the old session ended");
    assert!(server.stop().success());
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    assert_eq!(logged_kid(&server.log()), second, "remembered");
    assert_eq!(api_login(&server, "alice", &password("alice")).status, 200);
}

#[test]
fn a_store_made_by_user_add_gets_a_key_on_its_first_start() {
    let dir = Arc::new(TempDir::new("keys"));
    let d = dir.data();
    let d = d.to_str().expect("utf-8");
    let (code, _, err) = cli(
        &["user", "add", "alice", "--role", "admin", "--data-dir", d],
        "password-alice\n",
    );
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = run(&["serve", "--check", "--data-dir", d]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("secret.key will be generated on first start"),
        "{out}"
    );
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    assert!(server.log().contains("generated a new signing key"));
    assert!(
        server.log().contains("(the user store's first key)"),
        "{}",
        server.log()
    );
    assert_eq!(api_login(&server, "alice", &password("alice")).status, 200);
}

#[test]
fn a_new_primary_key_needs_the_old_one_among_the_verifying_keys() {
    let dir = Arc::new(TempDir::new("keys"));
    let server = Server::start_in(Arc::clone(&dir), &[], &[]);
    let old_file = server.key_file();
    let old = logged_kid(&server.log());
    let alice = Browser::registered(&server, "alice", &password("alice"));
    let cookie = format!("token={}", alice.jar.get("token").expect("cookie"));
    assert!(server.stop().success());
    let new_file = dir.path().join("new.key");
    let (code, _, err) = cli(&["key", "generate", new_file.to_str().expect("utf-8")], "");
    assert_eq!(code, 0, "{err}");
    let d = dir.data();
    let d = d.to_str().expect("utf-8");
    let new = new_file.to_str().expect("utf-8");
    // Alone, the new key would silently end every session: refused, naming it.
    let says = [
        new,
        old.as_str(),
        "--replace-key",
        "--key-file NEW --key-file OLD",
    ];
    refused(
        &run(&[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            d,
            "--key-file",
            new,
        ]),
        &says,
    );
    refused(
        &run(&["serve", "--check", "--data-dir", d, "--key-file", new]),
        &says,
    );
    // A rotation keeps the old key verifying: accepted and remembered.
    let oldf = old_file.to_str().expect("utf-8");
    let (code, out, err) = run(&[
        "serve",
        "--check",
        "--data-dir",
        d,
        "--key-file",
        new,
        "--key-file",
        oldf,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("key {old} still verifies")), "{out}");
    let server = Server::start_in(
        Arc::clone(&dir),
        &["--key-file", new, "--key-file", oldf],
        &[],
    );
    assert!(
        server.log().contains(&format!("rotated from key {old}")),
        "{}",
        server.log()
    );
    assert_eq!(
        server.get("/account", &[("Cookie", &cookie)]).status,
        200,
        "old sessions live on"
    );
    assert!(server.stop().success());
    // From now on the new key is the store's key.
    let server = Server::start_in(Arc::clone(&dir), &["--key-file", new], &[]);
    assert_ne!(logged_kid(&server.log()), old);
}

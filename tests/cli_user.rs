//! `latchkey user ...` through the real binary: passwords on stdin, the table
//! and JSON listings, every change, the exit codes, and the plain message when
//! another process holds the store.
mod common;

use common::TempDir;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use latchkey::password::{Params, Passwords, Verdict};
use latchkey::store::UserStore;

/// `latchkey user <args>` with `stdin` piped in, in `cwd`, with no data-dir
/// variables inherited from the environment.
fn latchkey_in(cwd: &Path, env: &[(&str, &Path)], args: &[&str], stdin: &str) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_latchkey"));
    cmd.arg("user")
        .args(args)
        .current_dir(cwd)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("run latchkey");
    // The command may exit before reading its input (e.g. when the store is busy).
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes());
    child.wait_with_output().expect("wait")
}

/// `latchkey user <args> --data-dir <dir>`.
fn latchkey(dir: &TempDir, args: &[&str], stdin: &str) -> Output {
    let data = dir.data();
    let mut all: Vec<&str> = args.to_vec();
    all.extend(["--data-dir", data.to_str().expect("utf-8 path")]);
    latchkey_in(dir.path(), &[], &all, stdin)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[track_caller]
fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "status {:?}, stderr: {}",
        out.status,
        stderr(out)
    );
    stdout(out)
}

#[track_caller]
fn fails(out: &Output, code: i32, message: &str) {
    assert_eq!(out.status.code(), Some(code), "stderr: {}", stderr(out));
    assert!(
        stderr(out).contains(message),
        "expected {message:?} in: {}",
        stderr(out)
    );
}

fn store(dir: &TempDir) -> UserStore {
    UserStore::open(&dir.data().join("users.redb")).expect("open")
}

fn list_json(dir: &TempDir) -> Vec<serde_json::Value> {
    let out = ok(&latchkey(dir, &["list", "--json"], ""));
    serde_json::from_str(&out).expect("list --json is a JSON array")
}

#[test]
fn add_then_list() {
    let dir = TempDir::new("cli");
    let out = latchkey(
        &dir,
        &["add", " Alice ", "--role", "admin"],
        "correct horse\n",
    );
    assert_eq!(ok(&out), "added user Alice (id 1, role admin)\n");
    ok(&latchkey(&dir, &["add", "bob"], "bob's password\r\n"));

    // The data dir is created private.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.data())
            .expect("data dir")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    let table = ok(&latchkey(&dir, &["list"], ""));
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID  NAME   ROLE   LOCKED  2FA  CREATED"),
        "{table}"
    );
    assert!(lines[0].ends_with("LAST LOGIN"), "{table}");
    assert!(
        lines[1].starts_with("1   Alice  admin  no      no   20"),
        "{table}"
    );
    assert!(lines[1].ends_with("Z  never"), "{table}");
    assert!(lines[2].starts_with("2   bob    user   no "), "{table}");
    assert!(!table.contains("argon2"), "never the hash");

    let json = ok(&latchkey(&dir, &["list", "--json"], ""));
    assert!(
        !json.contains("argon2") && !json.contains("hash"),
        "never the hash: {json}"
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).expect("JSON array");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["id"], 1);
    assert_eq!(rows[0]["name"], "Alice");
    assert_eq!(rows[0]["role"], "admin");
    assert_eq!(rows[0]["locked"], false);
    assert_eq!(rows[0]["ver"], 0);
    assert!(rows[0]["created"].as_i64().expect("created") > 1_600_000_000);
    assert_eq!(rows[0]["last_login"], serde_json::Value::Null);
    assert_eq!(rows[1]["name"], "bob");

    // The password read from stdin, without its line end, is the one stored,
    // hashed at the default parameters.
    let s = store(&dir);
    let pw = Passwords::new(Params::default()).expect("defaults");
    let alice = s.get_by_name("alice").expect("get").expect("exists");
    assert!(
        alice
            .password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$")
    );
    assert_eq!(
        pw.verify("correct horse", &alice.password_hash),
        Verdict::Match { rehash: None }
    );
    let bob = s.get_by_name("bob").expect("get").expect("exists");
    assert_eq!(
        pw.verify("bob's password", &bob.password_hash),
        Verdict::Match { rehash: None }
    );
}

#[test]
fn an_empty_store_lists_nothing() {
    let dir = TempDir::new("cli");
    std::fs::create_dir_all(dir.data()).expect("dir");
    drop(store(&dir));
    assert_eq!(list_json(&dir), Vec::<serde_json::Value>::new());
    assert_eq!(
        ok(&latchkey(&dir, &["list"], "")).lines().count(),
        1,
        "just the header"
    );
}

#[test]
fn changes() {
    let dir = TempDir::new("cli");
    ok(&latchkey(&dir, &["add", "carol"], "first password\n"));

    assert_eq!(
        ok(&latchkey(&dir, &["role", "CAROL", "editor"], "")),
        "carol now has the role editor\n"
    );
    assert_eq!(list_json(&dir)[0]["role"], "editor");

    assert_eq!(
        ok(&latchkey(&dir, &["lock", "carol"], "")),
        "locked carol; their sessions are revoked\n"
    );
    let row = &list_json(&dir)[0];
    assert_eq!(
        (row["locked"].clone(), row["ver"].clone()),
        (true.into(), 1.into())
    );
    assert!(ok(&latchkey(&dir, &["list"], "")).contains(" yes "));

    assert_eq!(
        ok(&latchkey(&dir, &["unlock", "carol"], "")),
        "unlocked carol\n"
    );
    let row = &list_json(&dir)[0];
    assert_eq!(
        (row["locked"].clone(), row["ver"].clone()),
        (false.into(), 1.into())
    );

    assert_eq!(
        ok(&latchkey(&dir, &["revoke", "carol"], "")),
        "revoked every session of carol\n"
    );
    assert_eq!(list_json(&dir)[0]["ver"], 2);

    let out = latchkey(&dir, &["passwd", "carol"], "second password\n");
    assert_eq!(
        ok(&out),
        "changed the password of carol; their sessions are revoked\n"
    );
    assert_eq!(list_json(&dir)[0]["ver"], 3);
    {
        let s = store(&dir);
        let hash = s.get(1).expect("get").expect("exists").password_hash;
        let pw = Passwords::new(Params::default()).expect("defaults");
        assert_eq!(
            pw.verify("second password", &hash),
            Verdict::Match { rehash: None }
        );
        assert_eq!(pw.verify("first password", &hash), Verdict::Mismatch);
    }

    assert_eq!(
        ok(&latchkey(&dir, &["remove", "carol"], "")),
        "removed carol (id 1)\n"
    );
    assert!(list_json(&dir).is_empty());
    ok(&latchkey(&dir, &["add", "carol"], "third password\n"));
    assert_eq!(list_json(&dir)[0]["id"], 2, "ids are not reused");
}

#[test]
fn errors_exit_1_with_a_message() {
    let dir = TempDir::new("cli");
    fails(
        &latchkey(&dir, &["list"], ""),
        1,
        "latchkey: there is no user store at ",
    );
    fails(
        &latchkey(&dir, &["add", "dave"], "short\n"),
        1,
        "latchkey: the password is too short",
    );
    let long = format!("{}\n", "p".repeat(1025));
    fails(
        &latchkey(&dir, &["add", "dave"], &long),
        1,
        "latchkey: the password is too long",
    );
    fails(
        &latchkey(&dir, &["add", "dave"], ""),
        1,
        "latchkey: no password on stdin",
    );
    fails(
        &latchkey(&dir, &["add", "da ve"], "long enough\n"),
        1,
        "latchkey: bad user name: ' '",
    );
    fails(
        &latchkey(&dir, &["add", "dave", "--role", "Boss"], "long enough\n"),
        1,
        "latchkey: bad role",
    );
    ok(&latchkey(&dir, &["add", "dave"], "long enough\n"));
    fails(
        &latchkey(&dir, &["add", " DAVE"], "long enough\n"),
        1,
        "latchkey: the name DAVE is taken",
    );
    for cmd in ["passwd", "lock", "unlock", "revoke", "remove"] {
        fails(
            &latchkey(&dir, &[cmd, "nobody"], "long enough\n"),
            1,
            "latchkey: there is no user named nobody",
        );
    }
    fails(
        &latchkey(&dir, &["role", "nobody", "user"], ""),
        1,
        "there is no user named nobody",
    );
    fails(
        &latchkey(&dir, &["role", "dave", "x y"], ""),
        1,
        "latchkey: bad role",
    );
    fails(
        &latchkey(&dir, &["passwd", "dave"], "short\n"),
        1,
        "too short",
    );
    assert_eq!(
        list_json(&dir)[0]["ver"],
        0,
        "failed commands changed nothing"
    );
    // Nothing on stderr or stdout shows a password or a hash.
    let out = latchkey(&dir, &["add", "erin"], "tiny\n");
    assert!(!stderr(&out).contains("tiny") && !stdout(&out).contains("tiny"));
}

#[test]
fn usage_errors_exit_2() {
    let dir = TempDir::new("cli");
    for args in [
        &["add"][..],
        &["frobnicate"],
        &["role", "dave"],
        &["list", "--xml"],
    ] {
        let out = latchkey(&dir, args, "");
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_held_store_gets_the_plain_in_use_message() {
    let dir = TempDir::new("cli");
    ok(&latchkey(&dir, &["add", "frank"], "long enough\n"));
    let held = store(&dir);
    let file = dir.data().join("users.redb");
    let expected = format!(
        "latchkey: the user store {} is in use by another process (a running latchkey \
         server?); stop it or use the admin page\n",
        file.display()
    );
    for args in [&["list"][..], &["lock", "frank"], &["add", "gina"]] {
        let out = latchkey(&dir, args, "long enough\n");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), expected, "{args:?}");
    }
    drop(held);
    assert_eq!(
        list_json(&dir).len(),
        1,
        "usable again once released; nothing changed"
    );
}

#[test]
fn data_dir_from_the_environment() {
    let dir = TempDir::new("cli");
    let data = dir.data();
    // LATCHKEY_DATA_DIR.
    ok(&latchkey_in(
        dir.path(),
        &[("LATCHKEY_DATA_DIR", &data)],
        &["add", "hank"],
        "long enough\n",
    ));
    assert!(data.join("users.redb").exists());
    // $STATE_DIRECTORY (systemd), the first of several.
    let state = dir.path().join("state");
    let states = PathBuf::from(format!(
        "{}:{}",
        state.display(),
        dir.path().join("other").display()
    ));
    ok(&latchkey_in(
        dir.path(),
        &[("STATE_DIRECTORY", &states)],
        &["add", "ivy"],
        "long enough\n",
    ));
    assert!(state.join("users.redb").exists());
    // The flag wins over both.
    let out = latchkey_in(
        dir.path(),
        &[("STATE_DIRECTORY", &states)],
        &["list", "--data-dir", data.to_str().expect("utf-8")],
        "",
    );
    assert!(ok(&out).contains("hank"));
    // Else ./latchkey-data.
    ok(&latchkey_in(
        dir.path(),
        &[],
        &["add", "jack"],
        "long enough\n",
    ));
    assert!(dir.path().join("latchkey-data").join("users.redb").exists());
}

#[test]
fn data_dir_from_the_servers_config_file() {
    let dir = TempDir::new("cli");
    let data = dir.path().join("from-config");
    let file = dir.path().join("latchkey.toml");
    std::fs::write(
        &file,
        format!(
            "data_dir = \"{}\"\nargon2_memory_kib = 64\nargon2_iterations = 1\n",
            data.display()
        ),
    )
    .expect("config file");
    let config = file.to_str().expect("utf-8");
    ok(&latchkey_in(
        dir.path(),
        &[],
        &["add", "kim", "--config", config],
        "long enough\n",
    ));
    assert!(
        data.join("users.redb").exists(),
        "the file's data_dir is used"
    );
    // The hash is made at the file's argon2 cost, as the server would.
    let user = UserStore::open(&data.join("users.redb"))
        .expect("store")
        .get_by_name("kim")
        .expect("read")
        .expect("kim");
    assert!(
        user.password_hash.contains("m=64,t=1"),
        "{}",
        user.password_hash
    );
    assert!(
        ok(&latchkey_in(
            dir.path(),
            &[],
            &["list", "--config", config],
            ""
        ))
        .contains("kim")
    );
    // A bad file is refused with the key named, as `serve` would.
    std::fs::write(&file, "tll = 3\n").expect("config file");
    fails(
        &latchkey_in(dir.path(), &[], &["list", "--config", config], ""),
        1,
        "unknown setting \"tll\"",
    );
}

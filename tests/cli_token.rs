//! `latchkey key generate` and `latchkey token issue|verify` through the real binary.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::token::{now, timed, user};
use latchkey::keys::{self, KeyRing};
use latchkey::token::Signer;

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli_token")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn latchkey(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(args)
        .current_dir(dir)
        .env_remove("LATCHKEY_KEY_FILE")
        .output()
        .expect("latchkey runs")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory holding a freshly generated `k.key`.
fn with_key(name: &str) -> PathBuf {
    let dir = scratch(name);
    let out = latchkey(&dir, &["key", "generate", "k.key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

fn issue(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec!["token", "issue", "--key-file", "k.key", "--sub", "42"];
    args.extend_from_slice(&["--name", "ann", "--role", "admin"]);
    args.extend_from_slice(extra);
    let out = latchkey(dir, &args);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim_end().to_owned()
}

#[test]
fn key_generate_writes_mode_0600_and_refuses_overwrite() {
    let dir = scratch("generate");
    let out = latchkey(&dir, &["key", "generate", "k.key"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = dir.join("k.key");
    let key = keys::load_file(&path).expect("loads");
    let said = stdout(&out);
    assert!(said.contains("k.key") && said.contains(key.kid()), "{said}");
    assert_eq!(
        fs::metadata(&path).expect("meta").permissions().mode() & 0o777,
        0o600
    );
    let before = fs::read(&path).expect("read");

    let again = latchkey(&dir, &["key", "generate", "k.key"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    assert_eq!(fs::read(&path).expect("read"), before, "not overwritten");

    // The default path: the key `latchkey serve` reads on the embedded defaults, in a
    // data directory made private.
    let out = latchkey(&dir, &["key", "generate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let key = dir.join("latchkey-data").join("secret.key");
    assert!(key.exists());
    assert_eq!(
        fs::metadata(dir.join("latchkey-data"))
            .expect("meta")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // ...and the token commands find it there too, as serve would.
    let token = latchkey(
        &dir,
        &[
            "token", "issue", "--sub", "1", "--name", "ann", "--role", "user",
        ],
    );
    assert!(token.status.success(), "{}", stderr(&token));
    let token = stdout(&token);
    let out = latchkey(&dir, &["token", "verify", token.trim()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A config file names the data directory for all of them.
    let conf = dir.join("latchkey.toml");
    fs::write(&conf, "data_dir = \"elsewhere\"\nissuer = \"conf\"\n").expect("config");
    let out = latchkey(&dir, &["key", "generate", "--config", "latchkey.toml"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.join("elsewhere").join("secret.key").exists());
    let token = latchkey(
        &dir,
        &[
            "token",
            "issue",
            "--config",
            "latchkey.toml",
            "--sub",
            "1",
            "--name",
            "a",
            "--role",
            "user",
        ],
    );
    let token = stdout(&token);
    assert_eq!(common::jwt_claims(token.trim())["iss"], "conf");
    let out = latchkey(
        &dir,
        &["token", "verify", "--config", "latchkey.toml", token.trim()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn issue_then_verify_prints_the_claims() {
    let dir = with_key("issue-verify");
    let token = issue(&dir, &["--ttl", "600", "--issuer", "cgy"]);
    let out = latchkey(
        &dir,
        &[
            "token",
            "verify",
            "--key-file",
            "k.key",
            "--issuer",
            "cgy",
            &token,
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let claims: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("claims JSON");
    assert_eq!(claims["sub"], "42");
    assert_eq!(claims["user_id"], 42);
    assert_eq!(claims["name"], "ann");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["iss"], "cgy");
    assert_eq!(claims["ver"], 0);
    assert_eq!(claims["auth_time"], claims["iat"]);
    let (iat, exp) = (
        claims["iat"].as_i64().expect("iat"),
        claims["exp"].as_i64().expect("exp"),
    );
    assert_eq!(exp - iat, 600);
    assert!((iat - now()).abs() < 60);
}

#[test]
fn verify_reads_the_key_file_from_the_environment_and_the_token_from_stdin() {
    let dir = with_key("env-stdin");
    let token = issue(&dir, &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_latchkey"))
        .args(["token", "verify", "-"])
        .current_dir(&dir)
        .env("LATCHKEY_KEY_FILE", dir.join("k.key"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    writeln!(child.stdin.take().expect("stdin"), "{token}").expect("write");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""name":"ann""#));
}

#[test]
fn verify_exit_codes_name_the_class() {
    let dir = with_key("classes");
    let ring = KeyRing::load(&[dir.join("k.key")]).expect("ring");
    let t = now();
    let expired = Signer::new(&ring).sign(&timed(
        &user(42, "ann", "admin", t),
        t - 7200,
        t - 3600,
        t - 7200,
    ));
    let good = issue(&dir, &[]);
    let cases = [
        ("expired", expired.as_str(), &[][..], 3),
        ("malformed", "not-a-token", &[][..], 4),
        ("malformed", "a.b.c.d", &[][..], 4),
        (
            "invalid",
            good.as_str(),
            &["--issuer", "someone-else"][..],
            5,
        ),
    ];
    for (class, token, extra, code) in cases {
        let mut args = vec!["token", "verify", "--key-file", "k.key"];
        args.extend_from_slice(extra);
        args.push(token);
        let out = latchkey(&dir, &args);
        assert_eq!(out.status.code(), Some(code), "{class}: {}", stderr(&out));
        assert!(
            stderr(&out).starts_with(&format!("{class}: ")),
            "{}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty());
    }

    // A signature by another key is invalid too.
    let other = scratch("classes-other");
    latchkey(&other, &["key", "generate", "k.key"]);
    let foreign = issue(&other, &[]);
    let out = latchkey(&dir, &["token", "verify", "--key-file", "k.key", &foreign]);
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    // ... unless that key is loaded as well (rotation).
    let both = ["token", "verify", "--key-file", "k.key", "--key-file"];
    let other_key = other.join("k.key");
    let mut args: Vec<&str> = both.to_vec();
    args.push(other_key.to_str().expect("utf8 path"));
    args.push(&foreign);
    assert_eq!(latchkey(&dir, &args).status.code(), Some(0));
}

#[test]
fn key_errors_exit_1_with_an_actionable_message() {
    let dir = with_key("key-errors");
    let token = issue(&dir, &[]);
    fs::set_permissions(dir.join("k.key"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = latchkey(&dir, &["token", "verify", "--key-file", "k.key", &token]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("chmod 600 k.key"), "{}", stderr(&out));

    // Without --key-file the default is latchkey-data/secret.key, absent here.
    let out = latchkey(&dir, &["token", "verify", &token]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("latchkey-data/secret.key"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn issue_refuses_what_the_server_would_never_issue() {
    let dir = with_key("issue-refusals");
    let run = |name: &str, role: &str, extra: &[&str]| {
        let (name, role) = (format!("--name={name}"), format!("--role={role}"));
        let mut args = vec!["token", "issue", "--key-file", "k.key", "--sub", "42"];
        args.extend_from_slice(&[&name, &role]);
        args.extend_from_slice(extra);
        latchkey(&dir, &args)
    };
    // Names and roles the store refuses: exit 1 with the store's reason.
    let long_name = "n".repeat(65);
    for (name, role, reason) in [
        ("", "user", "bad user name"),
        ("ann smith", "user", "bad user name"),
        ("Zoë", "user", "bad user name"),
        ("-ann", "user", "bad user name"),
        (long_name.as_str(), "user", "bad user name"),
        ("ann", "Admin", "bad role"),
        ("ann", "", "bad role"),
        ("ann", "site admin", "bad role"),
    ] {
        let out = run(name, role, &[]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name:?} {role:?}: {}",
            stdout(&out)
        );
        assert!(
            stderr(&out).contains(reason),
            "{name:?} {role:?}: {}",
            stderr(&out)
        );
        assert!(stdout(&out).is_empty(), "no token printed");
    }
    // Lifetimes outside the ttl setting's bounds: a usage error (exit 2).
    for ttl in ["0", "59", "2592001", "-5"] {
        let out = run("ann", "user", &[&format!("--ttl={ttl}")]);
        assert_eq!(out.status.code(), Some(2), "--ttl {ttl}: {}", stderr(&out));
        assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
    }
    // The bounds themselves, and a name the store trims, are fine.
    for ttl in ["60", "2592000"] {
        assert_eq!(run("ann", "user", &["--ttl", ttl]).status.code(), Some(0));
    }
    let out = run(" ann ", "user", &["--ver", "7"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let token = stdout(&out).trim_end().to_owned();
    let out = latchkey(&dir, &["token", "verify", "--key-file", "k.key", &token]);
    let claims: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("claims JSON");
    assert_eq!(claims["name"], "ann", "trimmed as the store trims");
    assert_eq!(claims["ver"], 7);
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]));
}

#[test]
fn bench_prints_one_json_object_of_positive_numbers() {
    // An empty directory and no key file: the bench needs neither.
    let dir = scratch("bench-json");
    let out = latchkey(&dir, &["token", "bench", "--json", "--rounds", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "one line: {text}");
    let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let object = value.as_object().expect("an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["floor_ns", "reject_forged_ns", "sign_ns", "verify_ns"]
    );
    for (key, ns) in object {
        let ns = ns.as_f64().unwrap_or_else(|| panic!("{key} is a number"));
        assert!(ns > 0.0 && ns.is_finite(), "{key}: {ns}");
    }
    assert_eq!(
        fs::read_dir(&dir).expect("dir").count(),
        0,
        "nothing written"
    );
}

#[test]
fn bench_table_names_each_operation_against_the_floor() {
    let dir = scratch("bench-table");
    let out = latchkey(&dir, &["token", "bench", "--rounds", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("latchkey token bench: 2 interleaved rounds"),
        "{text}"
    );
    for row in [
        "verify",
        "reject a forged signature",
        "sign",
        "floor: HMAC-SHA256",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no {row} row: {text}"));
        let ratio = line.split_whitespace().last().expect("ratio");
        assert!(ratio.ends_with('x'), "{line}");
        let per_second = line.split_whitespace().rev().nth(1).expect("ops/s");
        let per_second = per_second.replace(',', "");
        assert!(per_second.parse::<u64>().is_ok_and(|n| n > 0), "{line}");
    }
    assert!(text.contains("1.00x"), "the floor against itself: {text}");
    let out = latchkey(&dir, &["token", "bench", "--rounds", "0"]);
    assert_eq!(out.status.code(), Some(2), "at least one round");
}

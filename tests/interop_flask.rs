//! latchkey and the original design side by side: PyJWT reads latchkey's tokens,
//! latchkey reads tokens made the way the original Flask app makes them, and the Flask
//! app itself (`../shared/peers/flask_seed`, run under gunicorn) and latchkey accept each
//! other's `token` cookie when they share one key and one issuer.
//!
//! Heavy: run with `cargo test --test interop_flask -- --ignored` (`.ci/run` does). They
//! need python3 with the packages of the peer's requirements.txt (Flask, PyJWT,
//! gunicorn); without them they fail, they do not skip.

mod common;
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::token::{timed, user};
use common::{Server, TempDir, cli, jwt_claims, mint};
use latchkey::token::Claims;
use serde_json::Value;
use support::{Client, Group, add_users, get, now};

/// The issuer shared by every party here (the original design's default).
const ISSUER: &str = "cgy";

/// The Flask peer's folder, beside the repository.
fn flask_seed() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/peers/flask_seed");
    assert!(
        dir.join("app.py").is_file(),
        "the Flask peer is missing: expected {} (app.py of the original design) beside the \
         repository; it ships in the shared peers folder",
        dir.display()
    );
    dir
}

/// Checks once that python3 can import what these tests use; fails with the fix.
fn require_python() {
    let out = Command::new("python3")
        .args(["-c", "import jwt, flask, flask_sqlalchemy, gunicorn"])
        .output();
    match out {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "python3 lacks a package these tests need ({}); install them with: \
             python3 -m pip install -r ../shared/peers/flask_seed/requirements.txt",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => panic!(
            "python3 not found ({e}); install it and then: \
             python3 -m pip install -r ../shared/peers/flask_seed/requirements.txt"
        ),
    }
}

/// Runs a Python snippet with arguments; returns (success, stdout, stderr).
fn python(script: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A key file's secret as its users read it: the line without its line end.
const READ_KEY: &str = r#"
def read_key(path):
    with open(path, "rb") as f:
        data = f.read()
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data
"#;

/// `jwt.decode` as the original design's `validate_token` calls it.
fn pyjwt_decode(key_file: &Path, issuer: &str, token: &str) -> Result<Value, String> {
    let script = format!(
        "{READ_KEY}\nimport json, sys, jwt\n\
         claims = jwt.decode(sys.argv[3], read_key(sys.argv[1]), algorithms=[\"HS256\"], issuer=sys.argv[2])\n\
         print(json.dumps(claims))\n"
    );
    let (ok, out, err) = python(&script, &[key_file.to_str().unwrap(), issuer, token]);
    if ok {
        Ok(serde_json::from_str(&out).expect("JSON from python"))
    } else {
        Err(err)
    }
}

/// A token made by the original design's `create_token`: PyJWT, the same header and
/// payload (`name`, `role`, `user_id`, `exp` as a datetime, `iss`), `exp_in` seconds ahead.
fn pyjwt_encode(
    key_file: &Path,
    issuer: &str,
    name: &str,
    role: &str,
    id: u64,
    exp_in: i64,
) -> String {
    let script = format!(
        "{READ_KEY}\nimport datetime, sys, jwt\n\
         headers = {{'alg': 'HS256', 'typ': 'JWT'}}\n\
         exp = datetime.datetime.now(tz=datetime.timezone.utc) + datetime.timedelta(seconds=int(sys.argv[6]))\n\
         payload = {{'name': sys.argv[3], 'role': sys.argv[4], 'user_id': int(sys.argv[5]), 'exp': exp, 'iss': sys.argv[2]}}\n\
         print(jwt.encode(payload=payload, key=read_key(sys.argv[1]), algorithm='HS256', headers=headers))\n"
    );
    let (ok, out, err) = python(
        &script,
        &[
            key_file.to_str().unwrap(),
            issuer,
            name,
            role,
            &id.to_string(),
            &exp_in.to_string(),
        ],
    );
    assert!(ok, "PyJWT encode failed: {err}");
    out.trim().to_string()
}

/// A fresh key file (`latchkey key generate`), the one every party here shares.
fn shared_key(dir: &TempDir) -> PathBuf {
    let path = dir.path().join("shared.key");
    let (code, out, err) = cli(&["key", "generate", path.to_str().unwrap()], "");
    assert_eq!(code, 0, "key generate: {out}{err}");
    path
}

/// An issuing latchkey with `users`, signing with `key` for `ISSUER`.
fn issuer(key: &Path, users: &[(&str, &str, &str)]) -> (Server, Vec<u64>) {
    let dir = Arc::new(TempDir::new("issuer"));
    let ids = add_users(&dir.path().join("data"), users);
    let server = Server::start_in(
        dir,
        &["--key-file", key.to_str().unwrap()],
        &[
            ("LATCHKEY_ISSUER", ISSUER),
            ("LATCHKEY_COOKIE_SECURE", "false"),
        ],
    );
    (server, ids)
}

/// A verify-only latchkey with `key` for `ISSUER`.
fn verifier(key: &Path, login_url: &str) -> Server {
    Server::start(
        &[
            "--verify-only",
            "--key-file",
            key.to_str().unwrap(),
            "--login-url",
            login_url,
        ],
        &[
            ("LATCHKEY_ISSUER", ISSUER),
            ("LATCHKEY_COOKIE_SECURE", "false"),
        ],
    )
}

fn api_login(server: &Server, name: &str, password: &str) -> String {
    let body = serde_json::json!({ "username": name, "password": password }).to_string();
    let r = server.request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["token"].as_str().unwrap().to_string()
}

#[test]
#[ignore = "heavy: needs python3 with Flask and PyJWT; run by .ci/run"]
fn latchkey_tokens_decode_in_pyjwt() {
    require_python();
    let dir = TempDir::new("pyjwt");
    let key = shared_key(&dir);
    let (server, ids) = issuer(&key, &[("carol", "editor", "carol-password")]);

    // From the API login.
    let token = api_login(&server, "carol", "carol-password");
    let claims = pyjwt_decode(&key, ISSUER, &token).unwrap_or_else(|e| panic!("PyJWT: {e}"));
    assert_eq!(claims["name"], "carol");
    assert_eq!(claims["role"], "editor");
    assert_eq!(claims["user_id"], ids[0]);
    assert_eq!(claims["iss"], ISSUER);
    assert_eq!(
        claims,
        jwt_claims(&token),
        "PyJWT reads every claim as written"
    );
    let exp = claims["exp"].as_i64().unwrap();
    assert!((now() + 3500..=now() + 3700).contains(&exp), "{claims}");

    // From `latchkey token issue`.
    let (code, out, err) = cli(
        &[
            "token",
            "issue",
            "--key-file",
            key.to_str().unwrap(),
            "--sub",
            "42",
            "--name",
            "dave",
            "--role",
            "user",
            "--ttl",
            "120",
            "--issuer",
            ISSUER,
        ],
        "",
    );
    assert_eq!(code, 0, "{err}");
    let claims = pyjwt_decode(&key, ISSUER, out.trim()).unwrap_or_else(|e| panic!("PyJWT: {e}"));
    assert_eq!(claims["name"], "dave");
    assert_eq!(claims["user_id"], 42);
    assert_eq!(claims["sub"], "42");

    // PyJWT checks what the original design relies on: the issuer and the key.
    let err = pyjwt_decode(&key, "someone-else", &token).unwrap_err();
    assert!(err.contains("InvalidIssuerError"), "{err}");
    let other = dir.path().join("other.key");
    std::fs::write(&other, "another-secret-of-at-least-32-bytes!!\n").unwrap();
    let err = pyjwt_decode(&other, ISSUER, &token).unwrap_err();
    assert!(err.contains("InvalidSignatureError"), "{err}");
}

#[test]
#[ignore = "heavy: needs python3 with Flask and PyJWT; run by .ci/run"]
fn tokens_of_the_original_design_are_accepted_by_latchkey() {
    require_python();
    let dir = TempDir::new("legacy");
    let key = shared_key(&dir);
    let key_arg = key.to_str().unwrap();
    let (server, ids) = issuer(&key, &[("carol", "editor", "carol-password")]);
    let carol = ids[0];

    // `latchkey token verify` (exit 0, the claims on stdout; a missing ver reads as 0).
    let token = pyjwt_encode(&key, ISSUER, "carol", "editor", carol, 3600);
    assert_eq!(
        jwt_claims(&token).as_object().unwrap().len(),
        5,
        "name, role, user_id, exp, iss only"
    );
    // `latchkey token verify` against the shared key and the original issuer.
    let verify = |token: &str| {
        cli(
            &[
                "token",
                "verify",
                "--key-file",
                key_arg,
                "--issuer",
                ISSUER,
                token,
            ],
            "",
        )
    };
    let (code, out, err) = verify(&token);
    assert_eq!(code, 0, "verify refused the original design's token: {err}");
    let claims: Value = serde_json::from_str(&out).expect("claims JSON");
    assert_eq!(claims["name"], "carol");
    assert_eq!(claims["role"], "editor");
    assert_eq!(claims["user_id"], carol);
    assert_eq!(claims["sub"], carol.to_string());
    assert_eq!(claims["ver"], 0);

    // The classes the original design's errors map to.
    let expired = pyjwt_encode(&key, ISSUER, "carol", "editor", carol, -3600);
    let (code, _, err) = verify(&expired);
    assert_eq!(code, 3, "{err}");
    let foreign = pyjwt_encode(&key, "another-issuer", "carol", "editor", carol, 3600);
    let (code, _, err) = verify(&foreign);
    assert_eq!(code, 5, "{err}");

    // `/api/me` on the issuing instance: the store knows carol at version 0.
    let cookie = format!("token={token}");
    let me = server.get("/api/me", &[("Cookie", &cookie)]);
    assert_eq!(me.status, 200, "{}", me.body);
    let v: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(v["name"], "carol");
    assert_eq!(v["iss"], ISSUER);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        server.get("/api/me", &[("Authorization", &bearer)]).status,
        200
    );
    // A user the store does not have is refused there as revoked...
    let ghost = pyjwt_encode(&key, ISSUER, "ghost", "user", 999, 3600);
    let me = server.get("/api/me", &[("Cookie", &format!("token={ghost}"))]);
    assert_eq!(me.status, 401);
    assert!(me.body.contains("\"error\":\"revoked\""), "{}", me.body);
    // ...while a verify-only instance, which has no store, takes the token's word.
    let v = verifier(&key, "http://127.0.0.1:9/login");
    let me = v.get("/api/me", &[("Cookie", &format!("token={ghost}"))]);
    assert_eq!(me.status, 200, "{}", me.body);
    assert!(me.body.contains("\"name\":\"ghost\""), "{}", me.body);
    // And an instance with another issuer refuses all of them.
    let other = Server::start(&["--key-file", key_arg], &[("LATCHKEY_ISSUER", "latchkey")]);
    let me = other.get("/api/me", &[("Cookie", &cookie)]);
    assert_eq!(me.status, 401);
    assert!(me.body.contains("\"error\":\"invalid\""), "{}", me.body);
}

/// The Flask peer under gunicorn on a loopback port of its own choosing.
struct Flask {
    group: Group,
    addr: std::net::SocketAddr,
    _dir: TempDir,
}

impl Flask {
    fn start(key_text: &str) -> Flask {
        let seed = flask_seed();
        let dir = TempDir::new("flask");
        let mut cmd = Command::new("python3");
        cmd.args([
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--bind",
            "127.0.0.1:0",
            "--no-control-socket",
            "--graceful-timeout",
            "2",
            "--chdir",
        ])
        .arg(&seed)
        .arg("app:app")
        .env("FLASK_SEED_SECRET", key_text)
        .env("FLASK_SEED_ISSUER", ISSUER)
        .env("FLASK_SEED_DB", dir.path().join("seed.db"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
        let mut group = Group::spawn("gunicorn (flask_seed)", cmd);
        let start = Instant::now();
        let addr = loop {
            let said = group.output();
            if let Some(rest) = said.split("Listening at: http://").nth(1) {
                let addr = rest.split_whitespace().next().unwrap_or("");
                break addr
                    .parse()
                    .unwrap_or_else(|_| panic!("bad address in {said}"));
            }
            if let Some(why) = group.exited() {
                panic!("{why}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "gunicorn did not start; it said:\n{said}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // Listening is not serving: wait for the worker to answer.
        loop {
            if support::probe(addr, "/") == Some(200) {
                break;
            }
            if let Some(why) = group.exited() {
                panic!("{why}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the Flask app does not answer; gunicorn said:\n{}",
                group.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Flask {
            group,
            addr,
            _dir: dir,
        }
    }
}

#[test]
#[ignore = "heavy: needs python3 with Flask and PyJWT; run by .ci/run"]
fn flask_seed_and_latchkey_accept_each_others_cookies() {
    require_python();
    let dir = TempDir::new("shared");
    let key = shared_key(&dir);
    let key_text = std::fs::read_to_string(&key).unwrap();
    let key_text = key_text.trim_end_matches(['\r', '\n']);
    let flask = Flask::start(key_text);
    let flask_host = flask.addr.to_string();

    // Log in at the Flask app as its seeded user.
    let mut browser = Client::new(flask.addr);
    let page = browser.get(&flask_host, "/login/", &[]);
    assert_eq!(page.status, 200, "{}", page.body);
    let r = browser.post_form(
        &flask_host,
        &format!("http://{flask_host}"),
        "/login/",
        &[("username", "alice"), ("password", "alice-password")],
    );
    assert_eq!(
        r.status,
        302,
        "Flask login: {}\n{}",
        r.body,
        flask.group.output()
    );
    let flask_token = browser
        .jar
        .get("token")
        .expect("Flask's token cookie")
        .to_string();
    let flask_claims = jwt_claims(&flask_token);
    assert_eq!(flask_claims["name"], "alice");
    assert_eq!(flask_claims["iss"], ISSUER);

    // A verify-only latchkey accepts it, in /api/me and in /auth.
    let login_url = format!("http://{flask_host}/login/");
    let v = verifier(&key, &login_url);
    let cookie = format!("token={flask_token}");
    let me = v.get("/api/me", &[("Cookie", &cookie)]);
    assert_eq!(me.status, 200, "{}", me.body);
    let claims: Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(claims["name"], "alice");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["user_id"], flask_claims["user_id"]);
    assert_eq!(claims["ver"], 0);
    assert_eq!(
        claims["amr"],
        serde_json::json!(["pwd"]),
        "no amr reads as pwd"
    );
    let auth = v.get("/auth", &[("Cookie", &cookie)]);
    assert_eq!(auth.status, 200, "{}", auth.body);
    assert_eq!(auth.header("remote-user"), Some("alice"));
    assert_eq!(auth.header("remote-role"), Some("admin"));
    let id = flask_claims["user_id"].to_string();
    assert_eq!(auth.header("remote-id"), Some(id.as_str()));
    assert_eq!(
        v.get("/auth?role=admin", &[("Cookie", &cookie)]).status,
        200
    );
    assert_eq!(
        v.get("/auth?role=editor", &[("Cookie", &cookie)]).status,
        403
    );
    // Without a cookie it sends the visitor to the Flask app's login page.
    let anon = v.get("/auth", &[("X-Original-URL", "http://127.0.0.1/x")]);
    assert_eq!(anon.status, 401);
    assert!(
        anon.location().starts_with(&login_url),
        "{}",
        anon.location()
    );

    // An issuing latchkey whose store has alice under the same id accepts it too.
    let (issuer, ids) = issuer(
        &key,
        &[
            ("alice", "admin", "latchkey-password"),
            ("erin", "user", "erin-password"),
        ],
    );
    assert_eq!(
        flask_claims["user_id"], ids[0],
        "both stores start their ids at 1"
    );
    let me = issuer.get("/api/me", &[("Cookie", &cookie)]);
    assert_eq!(me.status, 200, "{}", me.body);

    // latchkey's cookie, from its login form, is accepted by the Flask app.
    let mut b = common::Browser::new(&issuer);
    let r = b.submit(
        "/login",
        "/login",
        &[("username", "erin"), ("password", "erin-password")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let latchkey_token = b.jar.get("token").unwrap().to_string();
    let info = get(
        flask.addr,
        &flask_host,
        "/token-info",
        &[("Cookie", &format!("token={latchkey_token}"))],
    );
    assert_eq!(
        info.status, 200,
        "Flask refused latchkey's cookie: {}",
        info.body
    );
    let info: Value = serde_json::from_str(&info.body).unwrap();
    assert_eq!(info["payload"]["name"], "erin");
    assert_eq!(info["payload"]["role"], "user");
    assert_eq!(info["payload"]["user_id"], ids[1]);
    assert_eq!(info["payload"]["iss"], ISSUER);
    assert!(info["msg"].is_null(), "{info}");

    // And the Flask app refuses what it should: an expired latchkey token (signed here:
    // `token issue` refuses a lifetime below the ttl setting's minimum).
    let t = now();
    let erin = user(ids[1], "erin", "user", t - 7200);
    let expired = Claims {
        iss: ISSUER.into(),
        ..timed(&erin, t - 7200, t - 3600, t - 7200)
    };
    let expired = mint(&key, &expired);
    let info = get(
        flask.addr,
        &flask_host,
        "/token-info",
        &[("Cookie", &format!("token={}", expired.trim()))],
    );
    assert_eq!(info.status, 401, "{}", info.body);
}

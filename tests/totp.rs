//! The second factor through the real binary, with every code computed by **pyotp**
//! (PyPI), an implementation independent of latchkey's: enrolment through the API and
//! through the pages, logins with a code, a replayed code and one two steps old refused,
//! recovery codes working once, throttling after wrong codes, the `required` policy
//! forcing enrolment, the administrator's reset (page and CLI), `amr` in the tokens,
//! `/auth?totp=1` directly and through the shipped nginx gate, and the QR code of the
//! enrolment page, screenshotted in Chromium and decoded by Debian's `zbarimg`, leading to
//! the very key pyotp then logs in with.
//!
//! Heavy: run with `cargo test --test totp -- --ignored` (`.ci/run` does, after
//! `pip install pyotp` and `apt-get install zbar-tools nginx-light chromium
//! chromium-driver`). A missing program fails the test, it does not skip.

mod common;
mod support;
// The suite uses only part of the WebDriver client that `tests/browser.rs` shares.
#[allow(dead_code)]
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::{Browser, Response, Server, TempDir, cli, csrf_of, jwt_claims, notice_of, pct};
use serde_json::{Value, json};
use support::{Client, Nginx, Port, Shipped, add_users, now};

/// Runs a Python snippet with pyotp imported and `sys.argv[1..]` = `args`; its stdout,
/// trimmed. Panics with the install line when pyotp is missing.
fn python(snippet: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(format!("import sys, json, pyotp\n{snippet}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run python3 ({e}); this suite needs python3 with pyotp")
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'pyotp'"),
        "pyotp is missing; this suite needs it: python3 -m pip install pyotp"
    );
    assert!(out.status.success(), "python3 failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// pyotp's code for the base32 `secret` at Unix second `at`.
fn pyotp_at(secret: &str, at: i64) -> String {
    let code = python(
        "print(pyotp.TOTP(sys.argv[1]).at(int(sys.argv[2])))",
        &[secret, &at.to_string()],
    );
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "{code}"
    );
    code
}

/// pyotp's code for `secret` now.
fn pyotp_now(secret: &str) -> String {
    pyotp_at(secret, now())
}

/// What pyotp reads from a key URI: secret, account name, issuer, digits, period, digest.
fn pyotp_parse(uri: &str) -> Value {
    let text = python(
        "t = pyotp.parse_uri(sys.argv[1])\n\
         print(json.dumps({'secret': t.secret, 'name': t.name, 'issuer': t.issuer, \
         'digits': t.digits, 'interval': t.interval, 'digest': t.digest().name}))",
        &[uri],
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Sleeps until a new 30-second step has begun (and one second into it), so the next
/// code pyotp makes for "now" is one no login has used yet.
fn wait_for_next_step() {
    let step = now().div_euclid(30);
    while now().div_euclid(30) == step {
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
}

/// A JSON POST.
fn post_json(server: &Server, path: &str, bearer: Option<&str>, body: &Value) -> Response {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = &auth {
        headers.push(("Authorization", auth));
    }
    server.request("POST", path, &headers, body.to_string().as_bytes())
}

fn body(r: &Response) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {} {}", r.status, r.body))
}

/// Logs in through `/api/login`: the answer.
fn api_login(server: &Server, name: &str, password: &str, extra: &[(&str, &str)]) -> Response {
    let mut creds = json!({ "username": name, "password": password });
    for (k, v) in extra {
        creds[*k] = json!(v);
    }
    post_json(server, "/api/login", None, &creds)
}

/// The amr claim of the token in a successful `/api/login` answer.
fn amr_of(r: &Response) -> Value {
    assert_eq!(r.status, 200, "{}", r.body);
    jwt_claims(body(r)["token"].as_str().expect("token"))["amr"].clone()
}

/// Enrols `name` through the API with pyotp's code: the base32 secret and the recovery
/// codes; the answer's new token carries `pwd` and `otp`.
fn enrol_by_api(server: &Server, name: &str, password: &str) -> (String, Vec<String>) {
    let token = body(&api_login(server, name, password, &[]))["token"]
        .as_str()
        .expect("token")
        .to_string();
    let r = post_json(server, "/api/account/totp", Some(&token), &json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let started = body(&r);
    let secret = started["secret"].as_str().expect("secret").to_string();
    let uri = started["uri"].as_str().expect("uri");
    let read = pyotp_parse(uri);
    assert_eq!(
        (&read["secret"], &read["name"], &read["issuer"]),
        (&json!(secret), &json!(name), &json!("latchkey")),
        "{uri}"
    );
    assert_eq!(
        (&read["digits"], &read["interval"], &read["digest"]),
        (&json!(6), &json!(30), &json!("sha1"))
    );
    let r = post_json(
        server,
        "/api/account/totp/enable",
        Some(&token),
        &json!({ "code": pyotp_now(&secret) }),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let enabled = body(&r);
    let codes: Vec<String> =
        serde_json::from_value(enabled["recovery_codes"].clone()).expect("recovery codes");
    assert_eq!(codes.len(), 10);
    let fresh = enabled["token"].as_str().expect("a new token");
    assert_eq!(jwt_claims(fresh)["amr"], json!(["pwd", "otp"]));
    // Switching the factor on ended the sessions from before.
    let me = server.get("/api/me", &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(
        (me.status, body(&me)["error"].clone()),
        (401, json!("revoked"))
    );
    (secret, codes)
}

/// The base32 key shown on the enrolment page (`<code class="key" id="key">`).
fn key_on(page: &str) -> String {
    let at = page.find("id=\"key\">").expect("the key on the page") + 9;
    page[at..at + page[at..].find('<').expect("end")]
        .split_whitespace()
        .collect()
}

/// The recovery codes on the page that shows them.
fn codes_on(page: &str) -> Vec<String> {
    page.split("<li><code>")
        .skip(1)
        .map(|rest| rest[..rest.find('<').expect("end")].to_string())
        .collect()
}

/// A server whose store already holds `users` (name, role, password).
fn server_with(users: &[(&str, &str, &str)], env: &[(&str, &str)]) -> Server {
    let dir = Arc::new(TempDir::new("totp"));
    add_users(&dir.path().join("data"), users);
    Server::start_in(dir, &[], env)
}

#[test]
#[ignore = "heavy: needs python3 with pyotp; run by .ci/run"]
fn api_enrolment_and_logins_with_pyotp_codes() {
    let server = server_with(&[("alice", "admin", "alice password")], &[]);
    let (secret, codes) = enrol_by_api(&server, "alice", "alice password");

    // The password alone is no longer enough.
    let r = api_login(&server, "alice", "alice password", &[]);
    assert_eq!(
        (r.status, body(&r)["error"].clone()),
        (401, json!("otp_required"))
    );
    // The app's current code (a new step: the one that switched the factor on is used).
    wait_for_next_step();
    let code = pyotp_now(&secret);
    let r = api_login(&server, "alice", "alice password", &[("otp", &code)]);
    assert_eq!(amr_of(&r), json!(["pwd", "otp"]));
    let token = body(&r)["token"].as_str().expect("token").to_string();
    let me = server.get("/api/me", &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(body(&me)["amr"], json!(["pwd", "otp"]));
    // The same code again: a replay.
    let r = api_login(&server, "alice", "alice password", &[("otp", &code)]);
    assert_eq!(
        (r.status, body(&r)["error"].clone()),
        (401, json!("wrong_otp"))
    );
    assert!(
        body(&r)["message"]
            .as_str()
            .unwrap()
            .contains("used already"),
        "{}",
        r.body
    );
    // A code two steps old, never used: outside the window.
    let old = pyotp_at(&secret, now() - 60);
    let r = api_login(&server, "alice", "alice password", &[("otp", &old)]);
    assert_eq!(
        (r.status, body(&r)["error"].clone()),
        (401, json!("wrong_otp"))
    );
    assert!(
        body(&r)["message"]
            .as_str()
            .unwrap()
            .contains("wrong or too old"),
        "{}",
        r.body
    );
    // A recovery code works once.
    let r = api_login(
        &server,
        "alice",
        "alice password",
        &[("recovery_code", &codes[2])],
    );
    assert_eq!(amr_of(&r), json!(["pwd", "otp"]));
    let r = api_login(
        &server,
        "alice",
        "alice password",
        &[("recovery_code", &codes[2])],
    );
    assert_eq!(
        (r.status, body(&r)["error"].clone()),
        (401, json!("wrong_otp"))
    );
    // The next step's code (a phone running a little fast) is accepted once.
    let ahead = pyotp_at(&secret, now() + 30);
    let r = api_login(&server, "alice", "alice password", &[("otp", &ahead)]);
    assert_eq!(amr_of(&r), json!(["pwd", "otp"]));
    assert!(
        !server.log().contains(&secret),
        "the secret is never logged"
    );
    assert!(!server.log().contains(&codes[2]), "nor a recovery code");
}

#[test]
#[ignore = "heavy: needs python3 with pyotp; run by .ci/run"]
fn wrong_codes_are_throttled_like_wrong_passwords() {
    let server = server_with(
        &[("bob", "user", "bob password")],
        &[("LATCHKEY_THROTTLE_MAX_FAILURES", "3")],
    );
    let (secret, _) = enrol_by_api(&server, "bob", "bob password");
    wait_for_next_step();
    let right = pyotp_now(&secret);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        let r = api_login(&server, "bob", "bob password", &[("otp", wrong)]);
        assert_eq!(
            (r.status, body(&r)["error"].clone()),
            (401, json!("wrong_otp"))
        );
    }
    let r = api_login(&server, "bob", "bob password", &[("otp", &right)]);
    assert_eq!(
        (r.status, body(&r)["error"].clone()),
        (429, json!("throttled"))
    );
    assert_eq!(r.header("retry-after"), Some("300"));
    // The form says the same, and the password alone is throttled too.
    let mut b = Browser::new(&server);
    let r = b.submit(
        "/login",
        "/login",
        &[
            ("username", "bob"),
            ("password", "bob password"),
            ("next", "/"),
        ],
    );
    assert_eq!(r.location(), "/login?next=/");
    let page = b.follow(&r);
    assert!(
        notice_of(&page.body).is_some_and(|n| n.starts_with("Too many failed logins")),
        "{}",
        page.body
    );
}

#[test]
#[ignore = "heavy: needs python3 with pyotp; run by .ci/run"]
fn page_enrolment_two_step_login_and_the_administrators_reset() {
    let server = server_with(
        &[
            ("root", "admin", "root password"),
            ("carol", "user", "carol password"),
        ],
        &[],
    );
    let mut carol = Browser::new(&server);
    let r = carol.submit(
        "/login",
        "/login",
        &[
            ("username", "carol"),
            ("password", "carol password"),
            ("next", "/account"),
        ],
    );
    assert_eq!(r.location(), "/account");
    // Enrol on the page: the key from the page, the code from pyotp.
    let r = carol.submit("/account/totp", "/account/totp", &[("action", "start")]);
    let page = carol.follow(&r);
    assert!(page.body.contains("<svg role=\"img\""), "{}", page.body);
    let secret = key_on(&page.body);
    let r = carol.submit(
        "/account/totp",
        "/account/totp",
        &[("action", "enable"), ("code", &pyotp_now(&secret))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.header("cache-control"),
        Some("no-store"),
        "{:?}",
        r.headers
    );
    let codes = codes_on(&r.body);
    assert_eq!(codes.len(), 10, "{}", r.body);
    assert_eq!(
        jwt_claims(carol.jar.get("token").expect("token"))["amr"],
        json!(["pwd", "otp"])
    );

    // A new login: the password, then the code page, then pyotp's current code.
    wait_for_next_step();
    let mut phone = Browser::new(&server);
    let r = phone.submit(
        "/login?next=/account",
        "/login",
        &[
            ("username", "carol"),
            ("password", "carol password"),
            ("next", "/account"),
        ],
    );
    assert_eq!(r.location(), "/login/totp?next=/account");
    assert!(phone.jar.get("token").is_none());
    let step = r.set_cookies("login_step");
    assert!(
        step.len() == 1 && step[0].contains("Path=/login/totp") && step[0].contains("Max-Age=300"),
        "{step:?}"
    );
    let code = pyotp_now(&secret);
    let r = phone.submit(
        "/login/totp?next=/account",
        "/login/totp",
        &[("code", &code), ("next", "/account")],
    );
    assert_eq!(r.location(), "/account", "{}", r.body);
    let claims = jwt_claims(phone.jar.get("token").expect("logged in"));
    assert_eq!(
        (claims["name"].clone(), claims["amr"].clone()),
        (json!("carol"), json!(["pwd", "otp"]))
    );
    let page = phone.get("/account");
    assert!(
        page.body.contains("password and one-time code"),
        "{}",
        page.body
    );
    // The same code in another browser: refused.
    let mut other = Browser::new(&server);
    other.submit(
        "/login",
        "/login",
        &[
            ("username", "carol"),
            ("password", "carol password"),
            ("next", "/"),
        ],
    );
    let r = other.submit(
        "/login/totp",
        "/login/totp",
        &[("code", &code), ("next", "/")],
    );
    assert_eq!(r.location(), "/login/totp?next=/");
    assert_eq!(
        notice_of(&other.follow(&r).body).as_deref(),
        Some("That code was used already; wait for the next one your app shows.")
    );
    // A recovery code instead: once.
    let r = other.submit(
        "/login/totp",
        "/login/totp",
        &[("code", &codes[9]), ("next", "/")],
    );
    assert_eq!(r.location(), "/");
    assert!(other.jar.get("token").is_some());

    // The administrator sees who has it and resets carol's: her sessions end, and the
    // password alone logs her in again.
    let mut root = Browser::new(&server);
    root.submit(
        "/login",
        "/login",
        &[
            ("username", "root"),
            ("password", "root password"),
            ("next", "/admin"),
        ],
    );
    let admin = root.get("/admin");
    assert!(
        admin.body.contains("data-label=\"2FA\">on<"),
        "{}",
        admin.body
    );
    let r = root.submit("/admin/users/2/totp", "/admin/users/2/totp", &[]);
    assert_eq!(r.location(), "/admin");
    assert_eq!(
        notice_of(&root.follow(&r).body).as_deref(),
        Some("carol no longer has a second factor; their sessions were ended.")
    );
    assert_eq!(phone.get("/account").location(), "/login?next=/account");
    let mut again = Browser::new(&server);
    let r = again.submit(
        "/login",
        "/login",
        &[
            ("username", "carol"),
            ("password", "carol password"),
            ("next", "/"),
        ],
    );
    assert_eq!(r.location(), "/");
    assert_eq!(
        jwt_claims(again.jar.get("token").unwrap())["amr"],
        json!(["pwd"])
    );

    // And with the CLI, through the running server's control socket.
    enrol_by_api(&server, "carol", "carol password");
    let data = server.data_dir();
    let data = data.to_str().unwrap();
    let (code, out, err) = cli(&["user", "list", "--json", "--data-dir", data], "");
    assert_eq!(code, 0, "{err}");
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[1]["totp"], json!(true), "{out}");
    let (code, out, err) = cli(&["user", "totp-reset", "carol", "--data-dir", data], "");
    assert_eq!(code, 0, "{out}{err}");
    let r = api_login(&server, "carol", "carol password", &[]);
    assert_eq!(amr_of(&r), json!(["pwd"]));
}

#[test]
#[ignore = "heavy: needs python3 with pyotp; run by .ci/run"]
fn the_required_policy_forces_enrolment_before_anything_else() {
    let server = server_with(
        &[("dora", "user", "dora password")],
        &[("LATCHKEY_TOTP", "required")],
    );
    let mut dora = Browser::new(&server);
    let r = dora.submit(
        "/login?next=/account",
        "/login",
        &[
            ("username", "dora"),
            ("password", "dora password"),
            ("next", "/account"),
        ],
    );
    assert_eq!(r.location(), "/account/totp?next=/account");
    // Every other page sends her back there; /auth does too; the API says why.
    for page in ["/", "/account", "/admin"] {
        let r = dora.get(page);
        assert_eq!(r.location(), format!("/account/totp?next={page}"), "{page}");
    }
    let auth = server.get(
        "/auth",
        &[("Cookie", &dora.jar.header()), ("X-Original-URL", "/app")],
    );
    assert_eq!(auth.status, 401);
    assert!(
        auth.location().starts_with("/account/totp"),
        "{}",
        auth.location()
    );
    let page = dora.get("/account/totp?next=/account");
    assert!(
        page.body.contains("must have a second factor"),
        "{}",
        page.body
    );
    // Enrolled through the page, she goes on.
    let r = dora.submit(
        "/account/totp?next=/account",
        "/account/totp",
        &[("action", "start"), ("next", "/account")],
    );
    let page = dora.follow(&r);
    let secret = key_on(&page.body);
    let csrf = csrf_of(&page.body).expect("form");
    let r = dora.post(
        "/account/totp",
        &[
            ("action", "enable"),
            ("code", &pyotp_now(&secret)),
            ("next", "/account"),
        ],
        &csrf,
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("href=\"/login?next=/account\""),
        "{}",
        r.body
    );
    assert_eq!(dora.get("/").status, 200);
    let auth = server.get("/auth", &[("Cookie", &dora.jar.header())]);
    assert_eq!(
        (auth.status, auth.header("remote-amr")),
        (200, Some("pwd,otp"))
    );
}

#[test]
#[ignore = "heavy: needs python3 with pyotp; run by .ci/run"]
fn auth_totp_1_directly_and_through_the_nginx_gate() {
    let env = [
        ("LATCHKEY_PUBLIC_URL", "http://auth.example.com"),
        ("LATCHKEY_COOKIE_DOMAIN", "example.com"),
        ("LATCHKEY_COOKIE_SECURE", "false"),
        ("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1"),
    ];
    let latchkey = server_with(&[("erin", "admin", "erin password")], &env);
    let (listen, app) = (Port::reserve(), Port::reserve());
    let conf = render_contrib_with_totp(listen.port, &latchkey, app.port);
    let nginx = Nginx::start(&conf, vec![listen, app]);
    const APP: &str = "app.example.com";
    const PORTAL: &str = "auth.example.com";
    const ORIGIN: &str = "http://auth.example.com";

    // Log in with the password (no factor yet) through nginx.
    let mut erin = Client::new(nginx.addr);
    let r = erin.submit(
        PORTAL,
        ORIGIN,
        "/login",
        "/login",
        &[
            ("username", "erin"),
            ("password", "erin password"),
            ("next", "/"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    // Directly: /auth answers with Remote-Amr; ?totp=1 wants more.
    let cookie = erin.jar.header();
    let direct = latchkey.get("/auth", &[("Cookie", &cookie)]);
    assert_eq!(
        (direct.status, direct.header("remote-amr")),
        (200, Some("pwd"))
    );
    let direct = latchkey.get("/auth?totp=1", &[("Cookie", &cookie)]);
    assert_eq!(direct.status, 401);
    // Through the gate: the app sees "pwd" (a forged header replaced); the part that
    // needs the role and the second factor sends her to log in with it.
    let r = erin.get(APP, "/dashboard", &[("Remote-Amr", "pwd,otp")]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, nginx.error_log());
    assert!(
        r.body.contains("user=[erin]") && r.body.contains("amr=[pwd]"),
        "{}",
        r.body
    );
    let r = erin.get(APP, "/admin/users", &[]);
    assert_eq!(r.status, 302, "{}\n{}", r.body, nginx.error_log());
    assert_eq!(
        r.location(),
        "http://auth.example.com/login?totp=1&next=http%3A//app.example.com/admin/users"
    );
    // The login page sends a session without a factor to set one up, and back.
    let r = erin.get(
        PORTAL,
        "/login?totp=1&next=http%3A//app.example.com/admin/users",
        &[],
    );
    assert_eq!(
        (r.status, r.location()),
        (
            303,
            "/account/totp?next=http%3A//app.example.com/admin/users"
        )
    );
    let page = erin.get(PORTAL, r.location(), &[]);
    let r = erin.post_form(
        PORTAL,
        ORIGIN,
        "/account/totp",
        &[
            ("action", "start"),
            ("next", "http://app.example.com/admin/users"),
            ("csrf", &csrf_of(&page.body).expect("form")),
        ],
    );
    let page = erin.get(PORTAL, r.location(), &[]);
    let secret = key_on(&page.body);
    let r = erin.post_form(
        PORTAL,
        ORIGIN,
        "/account/totp",
        &[
            ("action", "enable"),
            ("code", &pyotp_now(&secret)),
            ("next", "http://app.example.com/admin/users"),
            ("csrf", &csrf_of(&page.body).expect("form")),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    // The same browser session now carries otp: through the gate, and told to the app.
    let r = erin.get(APP, "/admin/users", &[("Remote-Amr", "forged")]);
    assert_eq!(r.status, 200, "{}\n{}", r.body, nginx.error_log());
    assert!(r.body.contains("amr=[pwd,otp]"), "{}", r.body);

    // A fresh browser: password, code page, pyotp's code, and in.
    wait_for_next_step();
    let mut phone = Client::new(nginx.addr);
    let r = phone.get(APP, "/admin/users", &[]);
    assert_eq!(r.status, 302);
    let next = "http://app.example.com/admin/users";
    let r = phone.submit(
        PORTAL,
        ORIGIN,
        &format!("/login?next={}", pct(next)),
        "/login",
        &[
            ("username", "erin"),
            ("password", "erin password"),
            ("next", next),
        ],
    );
    assert_eq!(
        r.location(),
        "/login/totp?next=http%3A//app.example.com/admin/users"
    );
    assert_eq!(
        phone.get(APP, "/admin/users", &[]).status,
        302,
        "not in yet"
    );
    let r = phone.submit(
        PORTAL,
        ORIGIN,
        &format!("/login/totp?next={}", pct(next)),
        "/login/totp",
        &[("code", &pyotp_now(&secret)), ("next", next)],
    );
    assert_eq!(r.location(), next, "{}", r.body);
    let r = phone.get(APP, "/admin/users", &[]);
    assert_eq!(r.status, 200);
    assert!(r.body.contains("amr=[pwd,otp]"), "{}", r.body);
}

/// `contrib/nginx.conf` rendered as `tests/nginx.rs` does (loopback ports, no TLS, the
/// test's latchkey and stand-in app), with its role-gated part also requiring the second
/// factor, and an app that echoes the identity headers it receives.
fn render_contrib_with_totp(port: u16, latchkey: &Server, app_port: u16) -> String {
    let mut conf = Shipped::open("contrib/nginx.conf");
    conf.replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"), 2);
    conf.replace(
        "server 127.0.0.1:8080;",
        &format!("server {};", latchkey.addr),
        2,
    );
    conf.replace(
        "http://127.0.0.1:3000",
        &format!("http://127.0.0.1:{app_port}"),
        3,
    );
    conf.replace(
        "proxy_pass http://latchkey_auth/auth?role=admin;",
        "proxy_pass http://latchkey_auth/auth?role=admin&totp=1;",
        1,
    );
    conf.expect("proxy_set_header Remote-Amr  $latchkey_amr;", 2);
    let conf: String = conf
        .text
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_certificate"))
        .map(|l| format!("{l}\n"))
        .collect();
    conf + &format!(
        r#"
server {{
    listen 127.0.0.1:{app_port};
    location / {{
        default_type text/plain;
        return 200 "app: user=[$http_remote_user] role=[$http_remote_role] amr=[$http_remote_amr] uri=[$request_uri]\n";
    }}
}}
"#
    )
}

/// The zbarimg program (Debian's `zbar-tools`); panics with the install line when missing.
fn zbarimg() -> &'static str {
    let path = "/usr/bin/zbarimg";
    assert!(
        Path::new(path).exists(),
        "{path} is missing; this suite needs it: apt-get install -y --no-install-recommends zbar-tools"
    );
    path
}

#[test]
#[ignore = "heavy: needs chromium, chromedriver, zbarimg and pyotp; run by .ci/run"]
fn the_qr_code_in_chromium_decodes_to_the_key_pyotp_logs_in_with() {
    let zbar = zbarimg();
    let server = Server::start(&[], &[]);
    let base = format!("http://{}", server.addr);
    let driver = webdriver::Driver::start();
    driver.set_window_size(1024, 900);
    let d = &driver;
    let wait_for_h1 = |text: &str| {
        d.wait_until(&format!("a page headed {text:?}"), |d| {
            d.try_texts("h1").is_ok_and(|h| h == [text])
        })
    };

    // The first account, then the enrolment page.
    d.goto(&format!("{base}/register"));
    d.type_into("#setup_code", &server.setup_code().expect("a setup code"));
    d.type_into("#username", "fred");
    d.type_into("#password", "fred password");
    d.type_into("#confirm", "fred password");
    d.click("form[action='/register'] button[type=submit]");
    wait_for_h1("Hello, fred!");
    d.goto(&format!("{base}/account/totp"));
    wait_for_h1("Two-factor authentication");
    d.click("form[action='/account/totp'] button[type=submit]");
    d.wait_until("the QR code", |d| !d.find_all("svg.qr").is_empty());
    let key = d.text_of("#key").split_whitespace().collect::<String>();
    assert_eq!(key.len(), 32, "160 bits in base32: {key}");

    // Screenshot, decode, compare.
    let png = d.screenshot();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("totp-enrolment.png");
    std::fs::write(&shot, &png).unwrap();
    let out = Command::new(zbar)
        .args(["--raw", "-q"])
        .arg(&shot)
        .output()
        .expect("run zbarimg");
    assert!(
        out.status.success(),
        "zbarimg found no code in {} ({}): {}",
        shot.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let decoded = String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim_end()
        .to_string();
    assert_eq!(
        decoded,
        format!(
            "otpauth://totp/latchkey:fred?secret={key}&issuer=latchkey&algorithm=SHA1&digits=6&period=30"
        ),
        "exactly the key URI, with the key the page shows"
    );
    let read = pyotp_parse(&decoded);
    assert_eq!(
        (read["secret"].clone(), read["name"].clone()),
        (json!(key), json!("fred"))
    );

    // pyotp's code from the decoded key switches the factor on...
    d.type_into("#code", &pyotp_now(&key));
    d.click("form[action='/account/totp'] input[value=enable] ~ button[type=submit]");
    wait_for_h1("Two-factor authentication is on");
    assert_eq!(d.find_all("ol.codes li").len(), 10);
    let claims = jwt_claims(d.cookie("token").expect("token").value());
    assert_eq!(claims["amr"], json!(["pwd", "otp"]));

    // ...and logs in: password, then the code page with the next code.
    d.click("nav form[action='/logout'] button");
    wait_for_h1("Welcome");
    wait_for_next_step();
    d.goto(&format!("{base}/login?next=/account"));
    d.type_into("form[action='/login'] input[name=username]", "fred");
    d.type_into(
        "form[action='/login'] input[name=password]",
        "fred password",
    );
    d.click("form[action='/login'] button[type=submit]");
    wait_for_h1("Enter your code");
    assert!(
        d.cookie("token").is_none(),
        "not logged in between the steps"
    );
    d.type_into("#code", &pyotp_now(&key));
    d.click("form[action='/login/totp'] button[type=submit]");
    wait_for_h1("Your account");
    assert!(d.url().ends_with("/account"), "{}", d.url());
    let token = d.cookie("token").expect("logged in");
    assert_eq!(jwt_claims(token.value())["amr"], json!(["pwd", "otp"]));
    assert!(
        d.cookie("login_step").is_none(),
        "the between-steps value is gone"
    );
}

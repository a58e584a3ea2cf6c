//! The web server through the real binary: the login journey, sliding, error classes,
//! revocation, CSRF, roles, limits, the API and concurrency.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::token::now;
use common::{Browser, Conn, Server, csrf_of, jwt_claims, notice_of};
use latchkey::keys::KeyRing;
use latchkey::token::{Amr, Claims, Signer};

/// A server with a first admin `root` and a plain user `bob`, both logged in.
fn with_users(server: &Server) -> (Browser<'_>, Browser<'_>) {
    let mut admin = Browser::registered(server, "root", "root-password");
    let r = admin.done(
        "/admin",
        "/admin/users",
        &[
            ("username", "bob"),
            ("password", "bob-password"),
            ("role", "user"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(notice_of(&r.body).as_deref(), Some("Created bob."));
    let mut bob = Browser::new(server);
    let r = bob.submit(
        "/login",
        "/login",
        &[("username", "bob"), ("password", "bob-password")],
    );
    assert_eq!((r.status, r.location()), (303, "/"), "bob is logged in");
    (admin, bob)
}

/// The notice shown by the page a redirect leads to, carried there by the redirect's
/// signed flash cookie.
/// The notice a cookie-less visitor sees after the redirect `r`: the flash is bound to
/// the CSRF cookie set with it.
fn flash_notice(server: &Server, r: &common::Response) -> Option<String> {
    let flash = r.cookie("flash")?;
    let csrf = r.cookie("csrf").unwrap_or_default();
    let page = server.get(
        r.location(),
        &[("Cookie", &format!("flash={flash}; csrf={csrf}"))],
    );
    notice_of(&page.body)
}

/// The notice `browser` sees after the redirect `r` it was given.
fn notice_after(browser: &mut Browser, r: &common::Response) -> Option<String> {
    assert_eq!(r.status, 303, "{}", r.body);
    notice_of(&browser.get(r.location()).body)
}

const REVOKED: &str = "Your session was ended (password changed, account locked or logged out everywhere), please log in again.";

fn sign_with(server: &Server, claims: &Claims<'_>) -> String {
    common::mint(&server.key_file(), claims)
}

fn claims_of(browser: &Browser) -> Claims<'static> {
    common::claims_of(browser.jar.get("token").unwrap())
}

#[test]
fn the_whole_journey() {
    let server = Server::start(&[], &[]);
    let mut b = Browser::new(&server);

    let home = b.get("/");
    assert_eq!(home.status, 200);
    assert!(
        home.body.contains("No account exists yet."),
        "an empty store points to the first registration"
    );

    let reg = b.get("/register");
    assert_eq!(reg.status, 200);
    assert!(reg.body.contains("first account"));
    let csrf = csrf_of(&reg.body).unwrap();
    let code = server.setup_code().expect("a setup code on an empty store");
    let r = b.post(
        "/register",
        &[
            ("username", "Alice"),
            ("password", "correct horse"),
            ("confirm", "correct horse"),
            ("setup_code", &code),
        ],
        &csrf,
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), "/");
    let set = r.set_cookies("token");
    assert_eq!(set.len(), 1);
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=3600",
        "Secure",
    ] {
        assert!(set[0].contains(attr), "{attr} missing in {}", set[0]);
    }
    let claims = jwt_claims(b.jar.get("token").unwrap());
    assert_eq!(claims["name"], "Alice");
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["iss"], "latchkey");

    let home = b.get("/");
    assert!(home.body.contains("Hello, Alice!"), "{}", home.body);
    assert!(home.body.contains("admin"));
    assert!(
        home.body.contains("Your account was created."),
        "the flash shows once"
    );
    assert!(
        !b.get("/").body.contains("Your account was created."),
        "and only once"
    );

    let account = b.get("/account");
    assert_eq!(account.status, 200);
    assert!(account.body.contains("Alice") && account.body.contains("expires in"));
    assert_eq!(account.header("cache-control"), Some("no-store"));

    let csrf = csrf_of(&account.body).unwrap();
    let out = b.post("/logout", &[], &csrf);
    assert_eq!(out.status, 303);
    assert_eq!(out.location(), "/");
    assert_eq!(
        out.cookie("token").as_deref(),
        Some(""),
        "logout clears the cookie"
    );
    assert!(out.set_cookies("token")[0].contains("Max-Age=0"));
    assert!(b.jar.get("token").is_none());

    let account = b.get("/account");
    assert_eq!(account.status, 303);
    assert_eq!(account.location(), "/login?next=/account");

    let login = b.get("/login?next=/account");
    assert!(login.body.contains("value=\"/account\""));
    let csrf = csrf_of(&login.body).unwrap();
    let r = b.post(
        "/login",
        &[
            ("username", "alice"),
            ("password", "correct horse"),
            ("next", "/account"),
        ],
        &csrf,
    );
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), "/account");
    assert!(b.get("/account").body.contains("Your account"));
}

#[test]
fn sliding_refresh_keeps_auth_time_and_stops_at_the_absolute_limit() {
    let server = Server::start(&[], &[]);
    let (admin, _) = with_users(&server);
    let base = claims_of(&admin);
    let t = now();

    // First half of the lifetime: no new cookie.
    let fresh = Claims {
        iat: t,
        exp: t + 3000,
        ..base.clone()
    };
    let r = server.get(
        "/",
        &[("Cookie", &format!("token={}", sign_with(&server, &fresh)))],
    );
    assert_eq!(r.status, 200);
    assert!(
        r.set_cookies("token").is_empty(),
        "no refresh in the first half"
    );

    // Second half: a new cookie, later exp, same auth_time and authentication methods.
    let old_auth = t - 5000;
    let due = Claims {
        iat: t - 3500,
        exp: t + 100,
        auth_time: old_auth,
        amr: Amr::PWD_OTP,
        ..base.clone()
    };
    let r = server.get(
        "/",
        &[("Cookie", &format!("token={}", sign_with(&server, &due)))],
    );
    assert_eq!(r.status, 200);
    let token = r.cookie("token").expect("refreshed");
    let c = jwt_claims(&token);
    assert!(c["exp"].as_i64().unwrap() >= t + 3600 - 5);
    assert_eq!(c["auth_time"].as_i64().unwrap(), old_auth);
    assert_eq!(c["amr"], serde_json::json!(["pwd", "otp"]));

    // Near the absolute limit the new exp is capped at auth_time + 7 days.
    let week = 7 * 24 * 3600;
    let near = Claims {
        iat: t - 3500,
        exp: t + 100,
        auth_time: t - week + 600,
        ..base.clone()
    };
    let r = server.get(
        "/",
        &[("Cookie", &format!("token={}", sign_with(&server, &near)))],
    );
    let c = jwt_claims(&r.cookie("token").expect("refreshed"));
    assert_eq!(c["exp"].as_i64().unwrap(), t - week + 600 + week);

    // Past the absolute limit: refused as expired.
    let past = Claims {
        iat: t - 100,
        exp: t + 100,
        auth_time: t - week - 1,
        ..base.clone()
    };
    let r = server.get(
        "/account",
        &[("Cookie", &format!("token={}", sign_with(&server, &past)))],
    );
    assert_eq!(r.status, 303);
    assert_eq!(
        flash_notice(&server, &r).as_deref(),
        Some("Your session has expired, please log in again.")
    );
}

#[test]
fn each_error_class_reaches_the_visitor() {
    let server = Server::start(&[], &[]);
    let (admin, _) = with_users(&server);
    let base = claims_of(&admin);
    let t = now();
    let expired = sign_with(
        &server,
        &Claims {
            iat: t - 7200,
            exp: t - 3600,
            ..base.clone()
        },
    );
    let mut forged = sign_with(&server, &base);
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'Q' } else { 'A' });
    let foreign = {
        let dir = common::TempDir::new("foreign");
        let path = dir.path().join("k");
        latchkey::keys::generate(&path).unwrap();
        Signer::new(&KeyRing::load(&[path]).unwrap()).sign(&base)
    };
    let stale = sign_with(
        &server,
        &Claims {
            ver: base.ver + 7,
            ..base.clone()
        },
    );
    let cases = [
        (
            expired.as_str(),
            "expired",
            "Your session has expired, please log in again.",
        ),
        ("not-a-token", "malformed", "Your login cookie was damaged"),
        (forged.as_str(), "invalid", "could not be verified"),
        (foreign.as_str(), "invalid", "could not be verified"),
        (stale.as_str(), "revoked", "Your session was ended"),
    ];
    for (token, class, message) in cases {
        let r = server.get("/account", &[("Cookie", &format!("token={token}"))]);
        assert_eq!(r.status, 303, "{class}");
        assert_eq!(r.location(), "/login?next=/account");
        assert_eq!(
            r.cookie("token").as_deref(),
            Some(""),
            "{class}: cookie cleared"
        );
        let flash = r.cookie("flash").expect("a notice");
        let page = server.get(r.location(), &[("Cookie", &format!("flash={flash}"))]);
        assert!(page.body.contains(message), "{class}: {}", page.body);
        assert_eq!(
            page.cookie("flash").as_deref(),
            Some(""),
            "the notice is one-shot"
        );
        let api = server.get("/api/me", &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(api.status, 401);
        let json: serde_json::Value = serde_json::from_str(&api.body).unwrap();
        assert_eq!(json["error"], class);
    }
    // A tampered cookie never authenticates.
    let r = server.get("/", &[("Cookie", &format!("token={forged}"))]);
    assert_eq!(r.status, 303);
}

#[test]
fn password_change_and_logout_everywhere_revoke_old_cookies() {
    let server = Server::start(&[], &[]);
    let (_, mut bob) = with_users(&server);
    let old = bob.jar.get("token").unwrap().to_string();

    let r = bob.submit(
        "/account",
        "/account/password",
        &[
            ("current", "bob-password"),
            ("password", "new-bob-password"),
            ("confirm", "new-bob-password"),
        ],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/account");
    assert!(
        bob.get("/account")
            .body
            .contains("Your password was changed.")
    );
    let r = server.get("/account", &[("Cookie", &format!("token={old}"))]);
    assert_eq!(
        flash_notice(&server, &r).as_deref(),
        Some(REVOKED),
        "the old cookie is revoked at once"
    );

    let current = bob.jar.get("token").unwrap().to_string();
    let r = bob.submit("/account/revoke", "/account/revoke", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(r.cookie("token").as_deref(), Some(""));
    let r = server.get("/account", &[("Cookie", &format!("token={current}"))]);
    assert_eq!(flash_notice(&server, &r).as_deref(), Some(REVOKED));

    // The new password works, the old one does not.
    let mut again = Browser::new(&server);
    let r = again.submit(
        "/login",
        "/login",
        &[("username", "bob"), ("password", "bob-password")],
    );
    assert_eq!(
        notice_after(&mut again, &r).as_deref(),
        Some("Wrong username or password.")
    );
    let r = again.submit(
        "/login",
        "/login",
        &[("username", "bob"), ("password", "new-bob-password")],
    );
    assert_eq!((r.status, r.location()), (303, "/"));
    assert!(r.cookie("token").is_some_and(|t| !t.is_empty()));
}

#[test]
fn csrf_and_origin_are_enforced_and_change_nothing() {
    let server = Server::start(&[], &[]);
    let (_, mut bob) = with_users(&server);
    let form = [
        ("current", "bob-password"),
        ("password", "hijacked-pass"),
        ("confirm", "hijacked-pass"),
    ];
    let cookie = bob.jar.header();

    let missing = server.post_form("/account/password", &[("Cookie", &cookie)], &form);
    assert_eq!(missing.status, 403);
    let r = bob.post(
        "/account/password",
        &form,
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    assert_eq!(r.status, 403);
    // A CSRF value made for another visitor (anonymous) is refused too.
    let anon = server.get("/login", &[]);
    let other = csrf_of(&anon.body).unwrap();
    let r = bob.post("/account/password", &form, &other);
    assert_eq!(r.status, 403);
    // A right token from a foreign Origin is refused.
    let page = bob.get("/account");
    let csrf = csrf_of(&page.body).unwrap();
    let mut fields = form.to_vec();
    fields.push(("csrf", &csrf));
    let r = server.post_form(
        "/account/password",
        &[
            ("Cookie", &bob.jar.header()),
            ("Origin", "https://evil.example"),
        ],
        &fields,
    );
    assert_eq!(r.status, 403);
    // Nothing changed: the old password still works.
    let mut check = Browser::new(&server);
    let r = check.submit(
        "/login",
        "/login",
        &[("username", "bob"), ("password", "bob-password")],
    );
    assert_eq!((r.status, r.location()), (303, "/"));
    assert!(r.cookie("token").is_some_and(|t| !t.is_empty()));
    // Logout without a token is refused too (the user stays logged in).
    let r = server.post_form("/logout", &[("Cookie", &bob.jar.header())], &[]);
    assert_eq!(r.status, 403);
    assert!(r.set_cookies("token").is_empty());
}

#[test]
fn open_redirects_are_refused() {
    let server = Server::start(&[], &[]);
    with_users(&server);
    for evil in [
        "//evil.example",
        "/\\evil.example",
        "https://evil.example/",
        "http:evil.example",
        "/\t/evil.example",
        "javascript:alert(1)",
    ] {
        let mut b = Browser::new(&server);
        let r = b.submit(
            "/login",
            "/login",
            &[
                ("username", "bob"),
                ("password", "bob-password"),
                ("next", evil),
            ],
        );
        assert_eq!(r.status, 303, "{evil}");
        assert_eq!(r.location(), "/", "{evil}");
    }
}

#[test]
fn admin_is_for_admins_and_role_changes_reach_the_next_token() {
    let server = Server::start(&[], &[]);
    let (mut admin, mut bob) = with_users(&server);
    let r = bob.get("/admin");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("403 Forbidden"));
    let csrf = csrf_of(&bob.get("/").body).unwrap();
    let r = bob.post("/admin/users/1/lock", &[], &csrf);
    assert_eq!(r.status, 403);

    let listing = admin.get("/admin");
    assert!(listing.body.contains("bob"));
    let r = admin.done("/admin", "/admin/users/2/role", &[("role", "editor")]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        notice_of(&r.body).as_deref(),
        Some("bob now has the role editor.")
    );

    let r = bob.get("/");
    assert!(r.body.contains("editor"), "the store's role wins at once");
    let token = r.cookie("token").expect("re-issued with the new role");
    assert_eq!(jwt_claims(&token)["role"], "editor");

    // Lock: bob's cookie is revoked and he cannot log in.
    let r = admin.done("/admin", "/admin/users/2/lock", &[]);
    assert_eq!(notice_of(&r.body).as_deref(), Some("bob is locked."));
    let r = bob.get("/account");
    assert_eq!(notice_after(&mut bob, &r).as_deref(), Some(REVOKED));
    let mut again = Browser::new(&server);
    let r = again.submit(
        "/login",
        "/login",
        &[("username", "bob"), ("password", "bob-password")],
    );
    assert_eq!(
        notice_after(&mut again, &r).as_deref(),
        Some("Wrong username or password."),
        "a locked user gets the same answer as a wrong password"
    );
    // An admin cannot delete themselves.
    let r = admin.done("/admin", "/admin/users/1/delete", &[]);
    assert!(
        notice_of(&r.body).is_some_and(|n| n.starts_with("You cannot change your own role")),
        "{}",
        r.body
    );
}

#[test]
fn registration_is_closed_after_the_first_user_by_default() {
    let server = Server::start(&[], &[]);
    with_users(&server);
    let r = server.get("/register", &[]);
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Registration is closed"));
    let open = Server::start(&[], &[("LATCHKEY_SIGNUP", "open")]);
    with_users(&open);
    let mut b = Browser::registered(&open, "carol", "carol-pass");
    assert_eq!(jwt_claims(b.jar.get("token").unwrap())["role"], "user");
    let r = b.get("/login");
    assert_eq!(r.status, 303, "logged-in visitors are sent on from /login");
}

#[test]
fn bad_input_gets_the_right_status() {
    let server = Server::start(&[], &[]);
    let (_, bob) = with_users(&server);
    let cookie = bob.jar.header();

    // Declared 1 GB body: 413 at once, nothing read, memory stays small.
    let mut conn = Conn::open(server.addr);
    conn.raw()
        .write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000000\r\n\r\nusername=a")
        .unwrap();
    let r = conn.read_response(false);
    assert_eq!(r.status, 413);
    assert!(r.body.contains("413 Payload Too Large"));
    let (peak_kb, _) = server.memory_kb();
    assert!(peak_kb < 64 * 1024, "peak RSS {peak_kb} kB");

    // Streamed (chunked) body over the limit.
    let mut conn = Conn::open(server.addr);
    let stream = conn.raw();
    stream
        .write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b'a'; 4096];
    let mut body = Vec::new();
    for _ in 0..8 {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(&chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&body).unwrap();
    let r = conn.read_response(false);
    assert_eq!(r.status, 413);
    // The rest of the body is not parsed as requests: the connection closes after the 413.
    assert_eq!(r.header("connection"), Some("close"));
    let mut rest = Vec::new();
    let _ = conn.raw().read_to_end(&mut rest);
    assert!(
        !String::from_utf8_lossy(&rest).contains("HTTP/1.1"),
        "{rest:?}"
    );

    // Malformed form encoding, naming the field.
    let page = server.get("/login", &[]);
    let r = server.request(
        "POST",
        "/login",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"username=%zz&password=x",
    );
    assert_eq!(r.status, 400);
    assert!(r.body.contains("username"), "{}", r.body);
    drop(page);

    // Too large a header line, too many header fields: 431 from the HTTP layer.
    let long = "x".repeat(9000);
    assert_eq!(server.get("/", &[("X-Long", &long)]).status, 431);
    let many: Vec<(String, String)> = (0..120).map(|i| (format!("X-H{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(server.get("/", &many).status, 431);

    // Too large a cookie header.
    let huge = format!("token={}", "a".repeat(9000));
    assert_eq!(server.get("/", &[("Cookie", &huge)]).status, 431);
    // An oversized token in a normal-sized header is malformed, not a crash.
    let long = format!("token={}", "a".repeat(5000));
    let r = server.get("/api/me", &[("Cookie", &long)]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("malformed"));

    assert_eq!(server.get("/nowhere", &[]).status, 404);
    let r = server.request("DELETE", "/account", &[("Cookie", &cookie)], b"");
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    assert_eq!(server.get("/api/nowhere", &[]).status, 404);
    assert!(server.get("/api/nowhere", &[]).body.contains("\"error\""));
    let r = server.request("POST", "/login", &[("Content-Type", "text/plain")], b"hi");
    assert_eq!(r.status, 415);

    // Still serving afterwards.
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
fn security_headers_on_every_page() {
    let server = Server::start(&[], &[]);
    for path in ["/", "/login", "/nowhere"] {
        let r = server.get(path, &[]);
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("default-src 'none'") && !csp.contains("script"));
        assert_eq!(r.header("x-frame-options"), Some("DENY"));
        assert_eq!(r.header("referrer-policy"), Some("same-origin"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    }
}

#[test]
fn api_login_and_me() {
    let server = Server::start(&[], &[]);
    with_users(&server);
    let json = |body: &str| {
        server.request(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = json(r#"{"username":"bob","password":"bob-password"}"#);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.set_cookies("token").is_empty(),
        "API logins set no cookie"
    );
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["token_type"], "Bearer");
    assert_eq!(v["expires_in"], 3600);
    let token = v["token"].as_str().unwrap();
    let me = server.get("/api/me", &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(me.status, 200);
    assert!(
        me.set_cookies("token").is_empty(),
        "Bearer calls never get cookies"
    );
    let claims: serde_json::Value = serde_json::from_str(&me.body).unwrap();
    assert_eq!(claims["name"], "bob");
    assert_eq!(claims["role"], "user");
    assert_eq!(
        claims["amr"],
        serde_json::json!(["pwd"]),
        "a password login"
    );

    let r = json(r#"{"username":"bob","password":"nope-nope"}"#);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("Wrong username or password."));
    let r = json("{not json");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("\"error\":\"bad_request\""));
    let r = server.request(
        "POST",
        "/api/login",
        &[("Content-Type", "text/plain")],
        b"x",
    );
    assert_eq!(r.status, 415);
    let r = server.get("/api/me", &[]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("\"error\":\"none\""));
}

#[test]
fn many_clients_at_once() {
    let server = Server::start(&[], &[]);
    let (_, bob) = with_users(&server);
    let cookie = bob.jar.header();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr;
            let cookie = cookie.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                for n in 0..500 {
                    if (i + n) % 2 == 0 {
                        let r = conn.send("GET", "/auth", &[("Cookie", &cookie)], b"");
                        assert_eq!(r.status, 200);
                        assert_eq!(r.header("remote-user"), Some("bob"));
                    } else {
                        let r = conn.send("GET", "/", &[("Cookie", &cookie)], b"");
                        assert_eq!(r.status, 200);
                        assert!(r.body.contains("Hello, bob!"));
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn graceful_stop_on_sigterm() {
    let server = Server::start(&[], &[]);
    assert_eq!(server.get("/", &[]).status, 200);
    // A request in flight on a keep-alive connection does not stop the shutdown.
    let mut idle = Conn::open(server.addr);
    let r = idle.send("GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    let asked = std::time::Instant::now();
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "an idle server stops promptly: {:?}",
        asked.elapsed()
    );
    let mut buf = [0u8; 1];
    let _ = idle.raw().set_read_timeout(Some(Duration::from_secs(2)));
    let _ = idle.raw().read(&mut buf);
}

#[test]
fn a_copy_of_a_logged_out_cookie_is_refused_also_after_a_restart() {
    let dir = std::sync::Arc::new(common::TempDir::new("logout"));
    let server = Server::start_in(std::sync::Arc::clone(&dir), &[], &[]);
    let mut b = Browser::registered(&server, "root", "root-password");
    let copy = b.jar.header();
    assert_eq!(server.get("/auth", &[("Cookie", &copy)]).status, 200);
    let csrf = csrf_of(&b.get("/account").body).expect("form");
    assert_eq!(b.post("/logout", &[], &csrf).status, 303);
    let r = server.get("/api/me", &[("Cookie", &copy)]);
    assert!(r.body.contains("\"error\":\"revoked\""), "{}", r.body);
    assert!(server.stop().success());
    let again = Server::start_in(dir, &[], &[]);
    assert_eq!(again.get("/auth", &[("Cookie", &copy)]).status, 401);
}

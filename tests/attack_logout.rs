//! Logging out must keep a copy of the cookie out for as long as that login could be
//! presented. The deny list entry made by `POST /logout` lived until the presented
//! token's `exp`, but a token is still accepted until `exp + leeway`, and a token of the
//! same login that slid later than the one logged out with has a later `exp`: in both
//! windows the copy was accepted again and slid to a fresh token, which then lived on
//! until `absolute_limit`. The entry now names the login and lives until
//! `auth_time + absolute_limit + leeway`.
//!
//! Both tests wait for a real token to expire (the shortest `ttl` is 60 s).

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{Browser, Server, csrf_of, jwt_claims};

const PASSWORD: &str = "correct horse battery";

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A server with the shortest lifetime, one user `ann`, and a browser logged in as her.
fn logged_in(server: &Server) -> Browser<'_> {
    let _admin = Browser::registered(server, "admin1", PASSWORD);
    let (code, _, err) = common::cli(
        &[
            "user",
            "add",
            "ann",
            "--data-dir",
            server.data_dir().to_str().unwrap(),
        ],
        &format!("{PASSWORD}\n"),
    );
    assert_eq!(code, 0, "{err}");
    let mut ann = Browser::new(server);
    let r = ann.submit(
        "/login",
        "/login",
        &[("username", "ann"), ("password", PASSWORD)],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(ann.jar.get("token").is_some());
    ann
}

fn log_out(browser: &mut Browser<'_>) {
    let page = browser.get("/logout");
    let csrf = csrf_of(&page.body).expect("logout form");
    let r = browser.post("/logout", &[], &csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        browser.jar.get("token").is_none(),
        "logging out clears the cookie"
    );
}

fn me(server: &Server, token: &str) -> common::Response {
    server.get("/api/me", &[("Cookie", &format!("token={token}"))])
}

fn sleep_until(t: i64) {
    let now = unix_now();
    if t > now {
        std::thread::sleep(Duration::from_secs((t - now) as u64));
    }
}

#[test]
#[ignore = "slow: waits about a minute for a token to expire"]
fn a_logged_out_cookie_stays_refused_through_the_leeway() {
    let server = Server::start(&[], &[("LATCHKEY_TTL", "60")]);
    let mut ann = logged_in(&server);
    let stolen = ann.jar.get("token").unwrap().to_string();
    let exp = jwt_claims(&stolen)["exp"].as_i64().unwrap();
    log_out(&mut ann);
    assert_eq!(
        me(&server, &stolen).status,
        401,
        "revoked right after logout"
    );

    // Past exp, inside the 30 s leeway: the deny list entry has lapsed, the token has not.
    sleep_until(exp + 2);
    let r = server.get("/account", &[("Cookie", &format!("token={stolen}"))]);
    let revived = r.cookie("token").unwrap_or_default();
    assert!(
        r.status != 200 && revived.is_empty(),
        "the cookie logged out of is accepted again {}s after its exp (status {}) and \
         slid to a fresh token good for another ttl, up to absolute_limit: {revived}",
        unix_now() - exp,
        r.status
    );
}

#[test]
#[ignore = "slow: waits about a minute and a half for tokens to expire"]
fn a_copy_that_slid_before_the_logout_is_refused_too() {
    let server = Server::start(&[], &[("LATCHKEY_TTL", "60")]);
    let mut ann = logged_in(&server);
    let original = ann.jar.get("token").unwrap().to_string();
    let exp = jwt_claims(&original)["exp"].as_i64().unwrap();
    // Ann opens the log-out page while her cookie is fresh (nothing slides yet).
    let page = ann.get("/logout");
    let csrf = csrf_of(&page.body).expect("logout form");
    assert_eq!(ann.jar.get("token"), Some(original.as_str()));

    // The thief uses a copy once less than half the lifetime is left: it slides.
    sleep_until(exp - 25);
    let thief = server.get("/", &[("Cookie", &format!("token={original}"))]);
    let slid = thief.cookie("token").expect("the copy slides");
    let slid_exp = jwt_claims(&slid)["exp"].as_i64().unwrap();
    assert!(slid_exp > exp);

    // Ann presses the button with her (older) cookie: the login (jti) is denied, but
    // only until her token's exp.
    let r = ann.post("/logout", &[], &csrf);
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(me(&server, &slid).status, 401, "the whole login is revoked");

    // After her token's exp plus the leeway, the thief's later token of the same login
    // is honoured again.
    sleep_until(exp + 31);
    let r = me(&server, &slid);
    assert_eq!(
        r.status, 401,
        "a token of the logged-out login is accepted again once the token logged out \
         with has expired: {}",
        r.body
    );
}

/// A token without a `jti` (the original design's, which latchkey accepts by contract,
/// or one issued before the `jti` claim existed) is named for logging out by its own
/// signature, and sliding keeps it without a `jti`. So logging out with the current
/// cookie revokes that one token only: a copy taken before the last slide, or the
/// tokens that copy slides to, stay valid (and keep sliding) up to `absolute_limit`.
#[test]
fn logging_out_a_login_without_jti_refuses_its_other_tokens() {
    let server = Server::start(&[], &[]);
    let _admin = Browser::registered(&server, "admin1", PASSWORD);
    // ann's token as the original design (or an earlier latchkey) made it: no jti, and
    // with less than half its hour left, so the next request slides it.
    let now = unix_now();
    let claims = latchkey::token::Claims {
        jti: None,
        ..common::token::user(1, "admin1", "admin", now - 2000)
    };
    let first = common::mint(&server.key_file(), &claims);
    // The browser slides it; a thief kept the first one.
    let r = server.get("/", &[("Cookie", &format!("token={first}"))]);
    let current = r.cookie("token").expect("slid");
    assert!(jwt_claims(&current).get("jti").is_none());
    // The owner logs out with the current cookie.
    let mut owner = Browser::new(&server);
    owner.jar.set("token", &current);
    log_out(&mut owner);
    assert_eq!(me(&server, &current).status, 401);
    let r = me(&server, &first);
    assert_eq!(
        r.status, 401,
        "the earlier token of the logged-out login is still accepted: {}",
        r.body
    );
}

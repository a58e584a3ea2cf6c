//! The login journey in a real browser: headless Chromium driven through chromedriver
//! (W3C WebDriver) against the real binary. It fills the register and login forms by
//! clicking their buttons, follows the redirects, reads the one-shot notices, checks the
//! cookie flags from the browser's side (the token is invisible to `document.cookie`),
//! logs out, has refused cookies bounced to the login page, and saves screenshots under
//! `test-artifacts/`.
//!
//!
//! More in its modules: [`layout`] walks every page at a phone's and a desktop's size in
//! light and dark (nothing scrolls sideways on a phone; a screenshot set in
//! `test-artifacts/screenshots/`), and [`proxied`] puts latchkey behind the real nginx on
//! a port of its own, where the forms must pass the Content-Security-Policy and a name
//! from a token of the original design must reach the app behind the gate.
//!
//! Heavy and ignored by default: `.ci/run` installs `chromium chromium-driver` (and
//! `nginx-light`) and runs `cargo test --test browser -- --ignored`. When asked to run
//! without them it fails.

mod common;
#[path = "browser/layout.rs"]
mod layout;
#[path = "browser/png.rs"]
mod png;
#[path = "browser/proxied.rs"]
mod proxied;
mod support;
#[path = "browser/webdriver.rs"]
mod webdriver;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::token::{now, timed};
use common::{Server, claims_of, jwt_claims, mint};
use serde_json::json;
use webdriver::Driver;

const NAME: &str = "alice";
const PASSWORD: &str = "correct horse battery";

/// The viewport the screenshots are taken at.
const WIDTH: u32 = 1024;
const HEIGHT: u32 = 768;

/// The server runs with its default `Secure` cookies: Chromium treats http://127.0.0.1
/// as a potentially trustworthy origin and stores and sends Secure cookies for it, so
/// the production cookie attributes are the ones under test.
const SECURE: bool = true;

#[test]
#[ignore = "heavy: needs chromium and chromedriver; run by .ci/run"]
fn browser_journey() {
    let started = Instant::now();
    let server = Server::start(&[], &[]);
    let base = format!("http://{}", server.addr);
    let driver = Driver::start();
    driver.set_window_size(WIDTH, HEIGHT);
    let d = &driver;

    // Anonymous home.
    d.goto(&format!("{base}/"));
    assert_eq!(d.url(), format!("{base}/"));
    assert_eq!(d.title(), "Home · latchkey");
    assert_eq!(d.text_of("h1"), "Welcome to latchkey");
    assert!(
        d.body_text().contains("No account exists yet."),
        "an empty store's home page points to the first registration"
    );
    assert_eq!(notice(d), None);

    // Register the first account, which becomes the admin.
    d.goto(&format!("{base}/register"));
    assert_eq!(d.text_of("h1"), "Register");
    assert!(d.body_text().contains("it becomes the administrator"));
    shoot(d, "register.png");
    d.type_into("#setup_code", &server.setup_code().expect("a setup code"));
    d.type_into("#username", NAME);
    d.type_into("#password", PASSWORD);
    d.type_into("#confirm", PASSWORD);
    d.click("form[action='/register'] button[type=submit]");
    d.wait_for_h1(&format!("Hello, {NAME}!"));
    assert_eq!(d.url(), format!("{base}/"), "a 303 to the home page");
    assert_eq!(d.text_of("span.badge"), "admin");
    assert_eq!(
        notice(d).as_deref(),
        Some("Your account was created. Welcome!")
    );
    assert_eq!(d.find_all("div.notice.info").len(), 1);
    shoot(d, "home-welcome.png");

    // The notice is one-shot.
    d.refresh();
    d.wait_for_h1(&format!("Hello, {NAME}!"));
    assert_eq!(notice(d), None, "the notice is gone after a reload");

    // The cookies as the browser holds them.
    let token = d
        .cookie("token")
        .expect("the browser stored the token cookie");
    assert_eq!(token.http_only(), Some(true), "{:?}", token.0);
    assert_eq!(token.same_site(), Some("Lax"), "{:?}", token.0);
    assert_eq!(token.secure(), Some(SECURE), "{:?}", token.0);
    assert_eq!(token.path(), Some("/"), "{:?}", token.0);
    let claims = jwt_claims(token.value());
    assert_eq!(claims["name"], NAME);
    assert_eq!(claims["role"], "admin");
    let expiry = token.0["expiry"].as_i64().expect("a persistent cookie");
    let ttl = expiry - now();
    assert!((3500..=3700).contains(&ttl), "Max-Age is the TTL: {ttl}");
    let csrf = d
        .cookie("csrf")
        .expect("the browser stored the csrf cookie");
    assert_eq!(csrf.http_only(), Some(true), "{:?}", csrf.0);
    assert_eq!(csrf.same_site(), Some("Strict"), "{:?}", csrf.0);
    assert!(d.cookie("flash").is_none(), "the flash cookie was cleared");
    let visible = d.execute("return document.cookie;");
    let visible = visible.as_str().expect("document.cookie is a string");
    assert!(
        !visible.contains("token="),
        "scripts can read the token: {visible:?}"
    );
    assert!(
        !visible.contains("csrf="),
        "scripts can read csrf: {visible:?}"
    );
    shoot(d, "home.png");

    // The nav's "Log out" button.
    d.click("nav form[action='/logout'] button");
    d.wait_for_h1("Welcome");
    assert_eq!(d.url(), format!("{base}/"));
    assert!(d.body_text().contains("You are not logged in."));
    assert_eq!(notice(d).as_deref(), Some("You have been logged out."));
    assert!(d.cookie("token").is_none(), "logging out clears the cookie");

    // A user page sends an anonymous visitor to the login page.
    d.goto(&format!("{base}/account"));
    d.wait_for_h1("Log in");
    assert!(
        d.url().ends_with("/login?next=/account"),
        "redirected to {}",
        d.url()
    );
    assert_eq!(notice(d), None);
    shoot(d, "login.png");

    // Log in and land on the page asked for.
    log_in(d, PASSWORD);
    d.wait_for_h1("Your account");
    assert_eq!(d.url(), format!("{base}/account"));
    assert_eq!(d.text_of("table tr:first-child td"), NAME);
    assert!(d.cookie("token").is_some());
    shoot(d, "account.png");

    // A damaged token cookie: the login page says so and the cookie is cleared.
    set_token(d, "not-a-token");
    d.goto(&format!("{base}/account"));
    d.wait_for_h1("Log in");
    assert!(d.url().ends_with("/login?next=/account"), "{}", d.url());
    assert_eq!(
        notice(d).as_deref(),
        Some("Your login cookie was damaged, please log in again.")
    );
    assert!(d.cookie("token").is_none(), "the refused cookie is cleared");
    shoot(d, "login-damaged.png");

    // A wrong password.
    log_in(d, "not the password");
    d.wait_until("the wrong-password notice", |d| {
        d.try_texts("div.notice.error")
            .is_ok_and(|n| n == ["Wrong username or password."])
    });
    assert_eq!(d.text_of("h1"), "Log in");
    assert!(d.cookie("token").is_none());

    // The right one, then a token that expired (signed with the server's own key).
    log_in(d, PASSWORD);
    d.wait_for_h1("Your account");
    assert_eq!(d.url(), format!("{base}/account"));
    let fresh = d.cookie("token").expect("logged in again");
    let expired = expired_copy(&server, fresh.value());
    set_token(d, &expired);
    d.goto(&format!("{base}/account"));
    d.wait_for_h1("Log in");
    assert!(d.url().ends_with("/login?next=/account"), "{}", d.url());
    assert_eq!(
        notice(d).as_deref(),
        Some("Your session has expired, please log in again.")
    );
    assert!(d.cookie("token").is_none());

    drop(driver);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the browser journey took {:?}",
        started.elapsed()
    );
}

/// The text of the page's notice, if it shows one.
fn notice(d: &Driver) -> Option<String> {
    let found = d.find_all("div.notice");
    assert!(found.len() <= 1, "more than one notice");
    found.first().map(|n| d.text(n))
}

/// Fills the login form on the current page and clicks its button.
fn log_in(d: &Driver, password: &str) {
    d.type_into("form[action='/login'] input[name=username]", NAME);
    d.type_into("form[action='/login'] input[name=password]", password);
    d.click("form[action='/login'] button[type=submit]");
}

/// Replaces the token cookie the browser holds, keeping the server's attributes.
fn set_token(d: &Driver, value: &str) {
    d.add_cookie(json!({
        "name": "token",
        "value": value,
        "path": "/",
        "httpOnly": true,
        "secure": SECURE,
        "sameSite": "Lax",
    }));
    let held = d.cookies();
    let tokens: Vec<_> = held.iter().filter(|c| c.name() == "token").collect();
    assert_eq!(tokens.len(), 1, "one token cookie: {held:?}");
    assert_eq!(tokens[0].value(), value);
}

/// The same claims as `token`, expired a minute ago, signed with the server's key.
fn expired_copy(server: &Server, token: &str) -> String {
    let claims = claims_of(token);
    let t = now();
    let auth_time = claims.auth_time.min(t - 7200);
    mint(
        &server.key_file(),
        &timed(&claims, t - 7200, t - 60, auth_time),
    )
}

/// Saves a screenshot under `test-artifacts/` and checks it is a real PNG of the
/// viewport.
fn shoot(d: &Driver, name: &str) -> PathBuf {
    let png = d.screenshot();
    assert!(
        (5_000..10_000_000).contains(&png.len()),
        "{name} has an odd size: {} bytes",
        png.len()
    );
    let png::Size { width, height } = png::check(name, &png);
    assert!(
        (WIDTH / 2..=WIDTH * 2).contains(&width) && (HEIGHT / 4..=HEIGHT * 2).contains(&height),
        "{name} is {width}x{height}"
    );
    let path = png::artifacts("").join(name);
    std::fs::write(&path, &png).unwrap();
    path
}

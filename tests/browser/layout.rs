//! Every page as a phone and a desktop browser lay it out, in the light and the dark
//! colour scheme. One tour walks the whole site in Chromium (first run, registration,
//! account, the second factor's pages, the admin pages with users whose names and roles
//! are the longest the store allows, the confirmations, an error page, the login steps)
//! and stops at each page for the test that runs it:
//!
//! - [`no_page_scrolls_sideways_on_a_phone`]: at 390 CSS pixels (mobile viewport rules on),
//!   the page is no wider than the window, so nothing needs a horizontal scroll;
//! - [`screenshots_of_every_page_light_and_dark_desktop_and_phone`]: a whole-page PNG per
//!   page × scheme × size in `test-artifacts/screenshots/`, each checked to be a whole PNG
//!   as wide as its viewport, and each page's dark shot different from its light one with
//!   a dark background where the light one is light.
//!
//! Sizes and schemes are switched with the DevTools protocol (`Emulation.*` through
//! chromedriver's `goog/cdp/execute`), which lays the current page out again without
//! reloading it, so pages that answer a form (the recovery codes) are seen in all four.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};

use crate::common::{Server, cli};
use crate::png;
use crate::support::add_users;
use crate::webdriver::{DESKTOP, Driver, PHONE, Scheme, Viewport};

/// The administrator, registered through the first-run form, with a name as long as
/// the store allows (64 characters) and nowhere a browser would break a line (no space,
/// no hyphen): every page that names the user gets the longest name there can be.
const ADMIN: &str = "alexandra_konstantinopoulou.papadimitriou@research.example.org.u";
const PASSWORD: &str = "correct horse battery";

/// Another such name, for the pages about another user.
const LONG_NAME: &str = "maximilian_alexander.hohenlohe_waldenburg_schillingsfurst@long.e";
/// A role as long as the store allows (32 characters).
const LONG_ROLE: &str = "regional-operations-coordinators";
/// A user who has the second factor on, and one who began setting it up.
const WITH_2FA: &str = "dave.two-factor";
const PENDING_2FA: &str = "erin.pending";
const LOCKED: &str = "carol.locked";

/// Walks every page of a fresh site in `d`, calling `at(d, name)` on each once it has
/// loaded (`name` is a short file-name-safe label such as `admin` or `totp-enrol`).
/// Returns the labels in order.
pub fn tour(d: &Driver, mut at: impl FnMut(&Driver, &str)) -> Vec<&'static str> {
    assert_eq!((ADMIN.len(), LONG_NAME.len()), (64, 64));
    assert_eq!(LONG_ROLE.len(), 32);
    let server = Server::start(&[], &[("LATCHKEY_SIGNUP", "open")]);
    let base = format!("http://{}", server.addr);
    let mut seen = Vec::new();
    let mut stop = |d: &Driver, name: &'static str| {
        at(d, name);
        seen.push(name);
    };
    d.emulate(&DESKTOP, Scheme::Light);

    // The first run: the home page and the registration of the administrator.
    visit(d, &format!("{base}/"), "Welcome to latchkey");
    stop(d, "home-first-run");
    visit(d, &format!("{base}/register"), "Register");
    stop(d, "register-first");
    d.type_into("#setup_code", &server.setup_code().expect("a setup code"));
    d.type_into("#username", ADMIN);
    d.type_into("#password", PASSWORD);
    d.type_into("#confirm", PASSWORD);
    d.click("form[action='/register'] button[type=submit]");
    d.wait_for_h1(&format!("Hello, {ADMIN}!"));
    stop(d, "home");

    // Users for the admin page.
    let ids = more_users(&server);

    visit(d, &format!("{base}/account"), "Your account");
    stop(d, "account");
    visit(d, &format!("{base}/account/revoke"), "Log out everywhere?");
    stop(d, "account-revoke");

    // The second factor: start, the key as QR code and text, the recovery codes, on.
    visit(
        d,
        &format!("{base}/account/totp"),
        "Two-factor authentication",
    );
    stop(d, "totp-start");
    d.click("form[action='/account/totp'] button[type=submit]");
    d.wait_until("the QR code", |d| !d.find_all("svg.qr").is_empty());
    stop(d, "totp-enrol");
    let key: String = d.text_of("#key").split_whitespace().collect();
    d.type_into("#code", &code_now(&key));
    d.click("form[action='/account/totp'] input[value=enable] ~ button[type=submit]");
    d.wait_for_h1("Two-factor authentication is on");
    stop(d, "totp-recovery-codes");
    visit(
        d,
        &format!("{base}/account/totp"),
        "Two-factor authentication",
    );
    stop(d, "totp-on");

    // The admin pages.
    visit(d, &format!("{base}/admin"), "Users");
    let listed = d.body_text();
    for name in [ADMIN, LONG_NAME, WITH_2FA, LOCKED] {
        assert!(listed.contains(name), "{name} is not on the admin page");
    }
    let role_field = format!("input[name=role][value='{LONG_ROLE}']");
    assert_eq!(d.find_all(&role_field).len(), 1, "no {role_field}");
    stop(d, "admin");
    let long = ids.long_name;
    visit(
        d,
        &format!("{base}/admin/users/{long}/password"),
        &format!("New password for {LONG_NAME}"),
    );
    stop(d, "admin-password");
    visit_any(d, &format!("{base}/admin/users/{}/totp", ids.with_2fa));
    stop(d, "admin-totp-reset");
    visit_any(d, &format!("{base}/admin/users/{long}/delete"));
    stop(d, "admin-delete");

    // The rest while logged in: the logout page, an error page.
    visit(d, &format!("{base}/logout"), "Log out");
    stop(d, "logout");
    visit(d, &format!("{base}/no/such/page"), "404 Not Found");
    stop(d, "not-found");

    // Logged out: home, registration (sign-up is open), the login steps.
    d.click("nav form[action='/logout'] button");
    d.wait_for_h1("Welcome");
    stop(d, "home-logged-out");
    visit(d, &format!("{base}/register"), "Register");
    stop(d, "register");
    visit(d, &format!("{base}/login"), "Log in");
    stop(d, "login");
    log_in(d, "not the password");
    d.wait_until("the wrong-password notice", |d| {
        d.try_texts("div.notice.error").is_ok_and(|n| n.len() == 1)
    });
    stop(d, "login-failed");
    log_in(d, PASSWORD);
    d.wait_for_h1("Enter your code");
    stop(d, "login-totp");
    seen
}

/// The ids of the users the admin pages act on.
struct Ids {
    long_name: u64,
    with_2fa: u64,
}

/// Adds the admin page's other users through the running server (the CLI reaches it
/// over its control socket): the longest name, the longest role, a locked user, one with
/// the second factor on and one half-way through setting it up, and two plain ones.
fn more_users(server: &Server) -> Ids {
    let data = server.data_dir();
    let users = [
        (LONG_NAME, "user", "long-name password"),
        ("bob", LONG_ROLE, "bob password"),
        (LOCKED, "user", "carol password"),
        (WITH_2FA, "user", "dave password"),
        (PENDING_2FA, "editor", "erin password"),
        ("frank", "user", "frank password"),
        ("grace@example.org", "admin", "grace password"),
    ];
    let ids = add_users(&data, &users);
    let (code, out, err) = cli(
        &["user", "lock", LOCKED, "--data-dir", data.to_str().unwrap()],
        "",
    );
    assert_eq!(code, 0, "user lock: {out}{err}");
    let token = api_login(server, WITH_2FA, "dave password");
    let secret = api(server, &token, "/api/account/totp", json!({}))["secret"]
        .as_str()
        .expect("a secret")
        .to_string();
    let enabled = api(
        server,
        &token,
        "/api/account/totp/enable",
        json!({ "code": code_now(&secret) }),
    );
    assert!(enabled["recovery_codes"].is_array(), "{enabled}");
    let token = api_login(server, PENDING_2FA, "erin password");
    api(server, &token, "/api/account/totp", json!({}));
    Ids {
        long_name: ids[0],
        with_2fa: ids[3],
    }
}

/// `POST /api/login`: the token.
fn api_login(server: &Server, name: &str, password: &str) -> String {
    let body = json!({ "username": name, "password": password }).to_string();
    let r = server.request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let answer: Value = serde_json::from_str(&r.body).unwrap();
    answer["token"].as_str().unwrap().to_string()
}

/// A JSON POST with a bearer token; the answer, which must be a 200.
fn api(server: &Server, token: &str, path: &str, body: Value) -> Value {
    let bearer = format!("Bearer {token}");
    let r = server.request(
        "POST",
        path,
        &[
            ("Content-Type", "application/json"),
            ("Authorization", &bearer),
        ],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    serde_json::from_str(&r.body).unwrap()
}

/// The current 6-digit code for a base32 key.
fn code_now(base32: &str) -> String {
    let secret = data_encoding::BASE32_NOPAD
        .decode(base32.as_bytes())
        .unwrap_or_else(|e| panic!("{base32:?}: {e}"));
    format!(
        "{:06}",
        latchkey::totp::code_at(&secret, crate::common::token::now())
    )
}

/// Loads `url` and checks the page's heading.
fn visit(d: &Driver, url: &str, h1: &str) {
    d.goto(url);
    d.wait_for_h1(h1);
}

/// Loads `url`, a page of the site with a heading of its own (a question naming a user).
fn visit_any(d: &Driver, url: &str) {
    d.goto(url);
    let h1 = d.try_texts("h1").unwrap_or_default();
    assert!(
        h1.len() == 1 && !h1[0].is_empty() && !h1[0].contains("Not Found"),
        "{url}: headings {h1:?}"
    );
}

/// Fills the login form as the administrator with `password` and sends it.
fn log_in(d: &Driver, password: &str) {
    d.type_into("form[action='/login'] input[name=username]", ADMIN);
    d.type_into("form[action='/login'] input[name=password]", password);
    d.click("form[action='/login'] button[type=submit]");
}

/// How wide the page is against the window, and what sticks out past `LIMIT` pixels (the
/// width the page was asked to fit): boxes whose right edge is past it, and boxes whose
/// content is wider than they are (a word too long for its line).
const MEASURE: &str = "\
const root = document.documentElement;
const limit = LIMIT;
const wide = [];
for (const e of document.querySelectorAll('body *')) {
  const r = e.getBoundingClientRect();
  const spills = e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1
    && getComputedStyle(e).overflowX === 'visible' && !e.matches('input, select, textarea');
  if (r.width > 0 && (r.right > limit + 0.5 || spills)) {
    const cls = (e.getAttribute('class') || '').trim().split(/\\s+/).filter(Boolean);
    const name = e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + cls.map(c => '.' + c).join('');
    const how = spills ? 'content ' + e.scrollWidth + ' px in ' + e.clientWidth + ' px' : 'right edge ' + Math.round(r.right) + ' px';
    wide.push(name + ' (' + how + '): ' + (e.textContent || '').trim().slice(0, 50));
  }
}
return {scrollWidth: root.scrollWidth, innerWidth: window.innerWidth, bodyScrollWidth: document.body.scrollWidth, wide: wide.slice(0, 15)};";

#[test]
#[ignore = "heavy: needs chromium and chromedriver; run by .ci/run"]
fn no_page_scrolls_sideways_on_a_phone() {
    let started = Instant::now();
    let driver = Driver::start();
    let mut faults = Vec::new();
    let pages = tour(&driver, |d, page| {
        d.emulate(&PHONE, Scheme::Light);
        let m = d.execute(&MEASURE.replace("LIMIT", &PHONE.width.to_string()));
        let want = u64::from(PHONE.width);
        let inner = m["innerWidth"].as_u64().unwrap_or(0);
        let scroll = m["scrollWidth"].as_u64().unwrap_or(u64::MAX);
        let body = m["bodyScrollWidth"].as_u64().unwrap_or(u64::MAX);
        // The window must be the phone's width too: a phone's browser zooms out of a
        // page too wide for it, widening the window rather than scrolling.
        if inner != want || scroll > inner || body > inner {
            faults.push(format!(
                "{page}: {scroll} px wide (body {body} px) in a {inner} px window; past {want} px:\n    {}",
                m["wide"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("\n    ")
            ));
        }
        d.emulate(&DESKTOP, Scheme::Light);
    });
    assert!(pages.contains(&"admin"), "the tour reached the admin page");
    assert!(
        faults.is_empty(),
        "pages that scroll sideways on a {} px phone:\n{}",
        PHONE.width,
        faults.join("\n")
    );
    eprintln!(
        "{} pages fit a {} px phone ({:.1} s)",
        pages.len(),
        PHONE.width,
        started.elapsed().as_secs_f64()
    );
}

/// The page's background colour as the browser computed it: `(r, g, b)`.
fn background(d: &Driver) -> (u8, u8, u8) {
    let css = d.execute("return getComputedStyle(document.body).backgroundColor;");
    let css = css.as_str().unwrap_or_default().to_string();
    let parts: Vec<u8> = css
        .trim_start_matches("rgba(")
        .trim_start_matches("rgb(")
        .trim_end_matches(')')
        .split(',')
        .filter_map(|p| p.trim().parse().ok())
        .collect();
    assert!(parts.len() >= 3, "background {css:?}");
    (parts[0], parts[1], parts[2])
}

/// Relative luminance on a 0–255 scale (Rec. 709 weights, no gamma: enough to tell
/// light from dark).
fn luminance((r, g, b): (u8, u8, u8)) -> f64 {
    0.2126 * f64::from(r) + 0.7152 * f64::from(g) + 0.0722 * f64::from(b)
}

#[test]
#[ignore = "heavy: needs chromium and chromedriver; run by .ci/run"]
fn screenshots_of_every_page_light_and_dark_desktop_and_phone() {
    let started = Instant::now();
    let dir = png::artifacts("screenshots");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "png") {
            std::fs::remove_file(path).unwrap();
        }
    }
    let driver = Driver::start();
    let mut written = BTreeSet::new();
    let pages = tour(&driver, |d, page| {
        for view in [DESKTOP, PHONE] {
            let mut shots = Vec::new();
            for scheme in [Scheme::Light, Scheme::Dark] {
                d.emulate(&view, scheme);
                let name = format!("{page}-{}-{}.png", scheme.name(), view.name);
                let bytes = d.page_screenshot(view.width);
                let size = png::check(&name, &bytes);
                assert_eq!(size.width, view.width, "{name} is {size:?}");
                assert!(size.height >= view.height, "{name} is {size:?}");
                std::fs::write(dir.join(&name), &bytes).unwrap();
                written.insert(name);
                shots.push((bytes, background(d)));
            }
            check_schemes(page, &view, &shots[0], &shots[1]);
        }
        d.emulate(&DESKTOP, Scheme::Light);
    });
    // Exactly one file per page, scheme and size, all there.
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png"))
        .collect();
    assert_eq!(on_disk, written);
    assert_eq!(written.len(), pages.len() * 4, "{written:?}");
    for must in ["login", "register", "account", "admin", "login-totp"] {
        assert!(pages.contains(&must), "no {must} page in {pages:?}");
    }
    eprintln!(
        "{} screenshots of {} pages in {} ({:.1} s)",
        written.len(),
        pages.len(),
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}

/// A page's light and dark shots at one size: different images, and a light
/// background in the one and a dark background in the other.
fn check_schemes(
    page: &str,
    view: &Viewport,
    light: &(Vec<u8>, (u8, u8, u8)),
    dark: &(Vec<u8>, (u8, u8, u8)),
) {
    assert!(
        light.0 != dark.0,
        "{page} ({}): the dark screenshot is the light one",
        view.name
    );
    let (l, k) = (luminance(light.1), luminance(dark.1));
    assert!(
        l > 160.0 && k < 96.0,
        "{page} ({}): background {:?} in light, {:?} in dark",
        view.name,
        light.1,
        dark.1
    );
}

//! The second factor through `routes::handle`, in-process and without sockets (as
//! `tests/routes.rs` does): enrolment on `/account/totp`, the two-step login and the
//! value held between the steps, replays and throttling, the `totp` policy and its gate,
//! `/auth?totp=1` and `Remote-Amr`, the API, the admin reset. Codes come from
//! `latchkey::totp::code_at`; `tests/totp.rs` checks the same journeys through the real
//! binary with codes made by pyotp, an independent implementation.
//!
//! Each app judges requests at the system time plus an offset the test moves forward in
//! 30-second steps (a code is accepted once, so a second login needs a later step); the
//! leeway is raised so tokens issued "in the future" still verify.

mod common;

use std::cell::Cell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use latchkey::config::{Config, Env, Value};
use latchkey::http::{Method, Reply, Request, percent_encode};
use latchkey::routes;
use latchkey::server::{self, Prepared};
use latchkey::token::{Amr, Signer};
use latchkey::totp;

use common::jwt_claims;
use common::token::now;

/// A prepared server in a temporary data directory, with its own clock offset.
struct App {
    prepared: Option<Prepared>,
    dir: PathBuf,
    offset: Cell<i64>,
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl App {
    fn new(settings: &[(&str, &str)]) -> App {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "latchkey-totp-routes-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut app = App {
            prepared: None,
            dir,
            offset: Cell::new(0),
        };
        app.restart(settings);
        app
    }

    /// Stops this server (closing its store) and prepares another on the same data
    /// directory with `settings`.
    fn restart(&mut self, settings: &[(&str, &str)]) {
        self.prepared = None;
        let mut flags = vec![
            (
                "data_dir",
                Value::Text(self.dir.to_string_lossy().into_owned()),
            ),
            ("argon2_memory_kib", Value::Text("64".into())),
            ("argon2_iterations", Value::Text("1".into())),
            ("workers", Value::Text("2".into())),
            ("leeway", Value::Text("600".into())),
            ("signup", Value::Text("open".into())),
        ];
        for (k, v) in settings {
            flags.push((k, Value::Text(v.to_string())));
        }
        let config = Config::load(None, &Env::default(), &flags).expect("config");
        self.prepared = Some(server::prepare(config).expect("prepare"));
    }

    /// The time requests are judged at.
    fn now(&self) -> i64 {
        now() + self.offset.get()
    }

    /// Moves the clock to the next 30-second step.
    fn next_step(&self) {
        self.offset.set(self.offset.get() + 30);
    }

    fn handle(&self, req: &Request) -> Reply {
        let prepared = self.prepared.as_ref().expect("prepared");
        routes::handle(prepared.app(), req, self.now()).0
    }

    fn setup_code(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("setup-code"))
            .ok()
            .map(|c| c.trim().to_string())
    }

    /// The code of `secret` the server's clock sees now, `steps` steps later.
    fn code(&self, secret: &[u8], steps: i64) -> String {
        format!("{:06}", totp::code_at(secret, self.now() + 30 * steps))
    }

    /// A token for user `id` signed with the server's key, as another latchkey sharing
    /// it would make (here: one that says only `pwd`).
    fn mint(&self, claims: &latchkey::token::Claims) -> String {
        let ring = latchkey::keys::KeyRing::load(&[self.dir.join("secret.key")]).expect("key");
        Signer::new(&ring).sign(claims)
    }
}

/// A browser in-process: a cookie jar (paths ignored) and forms with their CSRF field.
struct Browser<'a> {
    app: &'a App,
    cookies: Vec<(String, String)>,
    peer: IpAddr,
}

impl<'a> Browser<'a> {
    fn new(app: &'a App) -> Browser<'a> {
        Browser {
            app,
            cookies: Vec::new(),
            peer: "192.0.2.20".parse().expect("ip"),
        }
    }

    fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn set_cookie(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_string(), value.to_string()));
    }

    fn send(&mut self, mut req: Request) -> Reply {
        req.peer = Some(self.peer);
        let cookie = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        if !cookie.is_empty() {
            req = req.with_header("Cookie", &cookie);
        }
        let reply = self.app.handle(&req);
        for (name, value) in &reply.headers {
            if *name != "Set-Cookie" {
                continue;
            }
            let pair = value.split(';').next().unwrap_or("");
            let (n, v) = pair.split_once('=').expect("cookie pair");
            self.cookies.retain(|(k, _)| k != n);
            if !v.is_empty() && !value.contains("Max-Age=0") {
                self.cookies.push((n.to_string(), v.to_string()));
            }
        }
        reply
    }

    fn get(&mut self, target: &str) -> Reply {
        self.send(Request::new(Method::Get, target))
    }

    fn get_with(&mut self, target: &str, headers: &[(&str, &str)]) -> Reply {
        let mut req = Request::new(Method::Get, target);
        for (k, v) in headers {
            req = req.with_header(k, v);
        }
        self.send(req)
    }

    /// GETs `page`, takes its CSRF field, POSTs `fields` to `action`.
    fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Reply {
        let form = self.get(page);
        let csrf = csrf_of(&form.body)
            .unwrap_or_else(|| panic!("no form on {page}: {} {}", form.status, form.body));
        self.post(action, fields, &csrf)
    }

    fn post(&mut self, action: &str, fields: &[(&str, &str)], csrf: &str) -> Reply {
        let mut body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect();
        body.push(format!("csrf={csrf}"));
        let req = Request::new(Method::Post, action)
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(body.join("&").as_bytes());
        self.send(req)
    }

    fn follow(&mut self, reply: &Reply) -> Reply {
        assert_eq!(reply.status, 303, "{}", reply.body);
        let to = location(reply).to_string();
        self.get(&to)
    }

    /// Registers through the form (the first account is the administrator).
    fn register(&mut self, name: &str, password: &str) {
        let code = self.app.setup_code().unwrap_or_default();
        let r = self.submit(
            "/register",
            "/register",
            &[
                ("username", name),
                ("password", password),
                ("confirm", password),
                ("setup_code", &code),
            ],
        );
        assert_eq!(r.status, 303, "{}", r.body);
    }

    /// The first step of a login, with `next`.
    fn password(&mut self, name: &str, password: &str, next: &str) -> Reply {
        self.submit(
            &format!("/login?next={}", percent_encode(next)),
            "/login",
            &[("username", name), ("password", password), ("next", next)],
        )
    }

    /// The second step: the code form, then `code`.
    fn code(&mut self, code: &str, next: &str) -> Reply {
        self.submit(
            &format!("/login/totp?next={}", percent_encode(next)),
            "/login/totp",
            &[("code", code), ("next", next)],
        )
    }

    /// Sets up the second factor through `/account/totp`: the secret read off the page
    /// and the recovery codes shown once.
    fn enrol(&mut self) -> (Vec<u8>, Vec<String>) {
        let r = self.submit("/account/totp", "/account/totp", &[("action", "start")]);
        assert_eq!(r.status, 303, "{}", r.body);
        let page = self.follow(&r);
        let secret = key_of(&page.body);
        let code = self.app.code(&secret, 0);
        let r = self.submit(
            "/account/totp",
            "/account/totp",
            &[("action", "enable"), ("code", &code)],
        );
        assert_eq!(r.status, 200, "{}", r.body);
        (secret, codes_of(&r.body))
    }

    fn claims(&self) -> serde_json::Value {
        jwt_claims(self.cookie("token").expect("a token cookie"))
    }
}

fn location(reply: &Reply) -> &str {
    reply.header("Location").unwrap_or("")
}

fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")?;
    let rest = &page[at + 19..];
    Some(rest[..rest.find('"')?].to_string())
}

fn notice_of(page: &str) -> Option<String> {
    let at = page.find("class=\"notice ")?;
    let rest = &page[at..];
    let start = rest.find('>')? + 1;
    let end = rest.find("</div>")?;
    Some(rest[start..end].to_string())
}

/// The secret of the key shown on the enrolment page (`<code class="key" id="key">`).
fn key_of(page: &str) -> Vec<u8> {
    let at = page.find("id=\"key\">").expect("the key on the page") + 9;
    let text = &page[at..at + page[at..].find('<').expect("end")];
    let plain: String = text.split_whitespace().collect();
    data_encoding::BASE32_NOPAD
        .decode(plain.as_bytes())
        .expect("base32")
}

/// The recovery codes of the page that shows them.
fn codes_of(page: &str) -> Vec<String> {
    let codes: Vec<String> = page
        .split("<li><code>")
        .skip(1)
        .map(|rest| rest[..rest.find('<').expect("end")].to_string())
        .collect();
    assert_eq!(codes.len(), totp::RECOVERY_CODES, "{page}");
    codes
}

fn api(app: &App, path: &str, bearer: Option<&str>, body: &serde_json::Value) -> Reply {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let mut req = Request::new(Method::Post, path)
        .with_header("Content-Type", "application/json")
        .with_body(body.to_string().as_bytes());
    if let Some(auth) = &auth {
        req = req.with_header("Authorization", auth);
    }
    req.peer = Some("192.0.2.30".parse().expect("ip"));
    app.handle(&req)
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_str(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.body))
}

#[test]
fn enrolment_on_the_page_then_a_two_step_login_with_amr() {
    let app = App::new(&[]);
    let mut ann = Browser::new(&app);
    ann.register("ann", "ann password");
    let before = ann.cookie("token").expect("logged in").to_string();

    let page = ann.get("/account");
    assert!(
        page.body.contains("Off: your password alone logs you in."),
        "{}",
        page.body
    );
    let page = ann.get("/account/totp");
    assert!(
        page.body.contains("Set up two-factor authentication"),
        "{}",
        page.body
    );
    // Starting shows a QR code and the key; a reload shows the same key.
    let r = ann.submit("/account/totp", "/account/totp", &[("action", "start")]);
    assert_eq!(
        (r.status, location(&r)),
        (303, "/account/totp?next=/account")
    );
    let page = ann.follow(&r);
    assert!(page.body.contains("<svg role=\"img\""), "{}", page.body);
    assert!(page.private, "the key is not cached");
    let secret = key_of(&page.body);
    assert_eq!(secret.len(), 20);
    assert_eq!(key_of(&ann.get("/account/totp").body), secret);
    let uri = format!(
        "otpauth://totp/latchkey:ann?secret={}&amp;issuer=latchkey&amp;algorithm=SHA1&amp;digits=6&amp;period=30",
        totp::base32(&secret)
    );
    assert!(
        page.body.contains(&uri),
        "the key URI as a link: {}",
        page.body
    );
    // A wrong code changes nothing and says why.
    let wrong = if app.code(&secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let r = ann.submit(
        "/account/totp",
        "/account/totp",
        &[("action", "enable"), ("code", wrong)],
    );
    let page = ann.follow(&r);
    assert_eq!(
        notice_of(&page.body).as_deref(),
        Some("The code is wrong or too old; enter the one your app shows now.")
    );
    // The right one switches it on: the recovery codes once, a token with otp, and
    // every session from before ends.
    let r = ann.submit(
        "/account/totp",
        "/account/totp",
        &[("action", "enable"), ("code", &app.code(&secret, 0))],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.private);
    let codes = codes_of(&r.body);
    assert!(
        r.body.contains("href=\"/login?next=/account\""),
        "{}",
        r.body
    );
    assert_eq!(ann.claims()["amr"], serde_json::json!(["pwd", "otp"]));
    let mut old = Browser::new(&app);
    old.set_cookie("token", &before);
    assert_eq!(
        old.get("/account").status,
        303,
        "the session from before ended"
    );
    let page = ann.get("/account");
    assert!(
        page.body.contains("On: every login asks for a code"),
        "{}",
        page.body
    );
    assert!(page.body.contains("password and one-time code"));
    let page = ann.get("/account/totp");
    assert!(
        page.body.contains("10 unused recovery codes left."),
        "{}",
        page.body
    );
    assert!(!page.body.contains("<svg"), "the key is never shown again");

    // Log in again: the password leads to the code page, and only the code logs in.
    let mut phone = Browser::new(&app);
    let r = phone.password("ANN", "ann password", "/account");
    assert_eq!((r.status, location(&r)), (303, "/login/totp?next=/account"));
    assert!(
        phone.cookie("token").is_none(),
        "no session after the password alone"
    );
    let step = r
        .headers
        .iter()
        .find(|(n, v)| *n == "Set-Cookie" && v.starts_with("login_step="))
        .map(|(_, v)| v.clone())
        .expect("the between-steps value");
    for attribute in [
        "Path=/login/totp",
        "Max-Age=300",
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
    ] {
        assert!(step.contains(attribute), "{attribute}: {step}");
    }
    let page = phone.get("/login/totp?next=/account");
    assert!(
        page.body.contains("autocomplete=\"one-time-code\""),
        "{}",
        page.body
    );
    app.next_step();
    let code = app.code(&secret, 0);
    let r = phone.code(&code, "/account");
    assert_eq!((r.status, location(&r)), (303, "/account"), "{}", r.body);
    assert!(phone.cookie("login_step").is_none(), "cleared");
    let claims = phone.claims();
    assert_eq!(claims["amr"], serde_json::json!(["pwd", "otp"]));
    assert_eq!(claims["name"], "ann");

    // The same code again is a replay, however fresh the password.
    let mut thief = Browser::new(&app);
    thief.password("ann", "ann password", "/");
    let r = thief.code(&code, "/");
    assert_eq!(location(&r), "/login/totp?next=/");
    assert_eq!(
        notice_of(&thief.follow(&r).body).as_deref(),
        Some("That code was used already; wait for the next one your app shows.")
    );
    assert!(thief.cookie("token").is_none());
    // A recovery code works once.
    let r = thief.code(&codes[0], "/");
    assert_eq!(location(&r), "/", "{}", r.body);
    let home = thief.follow(&r);
    assert!(
        notice_of(&home.body)
            .is_some_and(|n| n.starts_with("You logged in with a recovery code; 9 left.")),
        "{}",
        home.body
    );
    let mut again = Browser::new(&app);
    again.password("ann", "ann password", "/");
    let r = again.code(&codes[0], "/");
    assert_eq!(location(&r), "/login/totp?next=/");
    assert!(again.cookie("token").is_none());
}

#[test]
fn the_value_between_the_steps_grants_nothing_else() {
    let app = App::new(&[]);
    let mut bea = Browser::new(&app);
    bea.register("bea", "bea password");
    let (secret, _) = bea.enrol();
    let mut b = Browser::new(&app);
    b.password("bea", "bea password", "/");
    let step = b.cookie("login_step").expect("held").to_string();
    assert!(b.cookie("token").is_none());
    // Not a session anywhere: pages, /auth, the API, as a cookie or as a token.
    assert_eq!(location(&b.get("/account")), "/login?next=/account");
    let auth = b.get_with("/auth", &[("X-Original-URL", "/app")]);
    assert_eq!(auth.status, 401);
    assert_eq!(b.get("/api/me").status, 401);
    let bearer = format!("Bearer {step}");
    let me =
        app.handle(&Request::new(Method::Get, "/api/me").with_header("Authorization", &bearer));
    assert_eq!(
        (me.status, json(&me)["error"].as_str()),
        (401, Some("malformed"))
    );
    let mut forged = Browser::new(&app);
    forged.set_cookie("token", &step);
    assert_eq!(forged.get("/auth").status, 401);
    assert!(forged.cookie("token").is_none(), "refused and cleared");

    // Only with the CSRF cookie it was made for: another browser holding the value alone
    // is sent back to the password.
    let mut other = Browser::new(&app);
    other.get("/login");
    other.set_cookie("login_step", &step);
    let r = other.get("/login/totp");
    assert_eq!(location(&r), "/login?next=/");
    assert!(other.cookie("login_step").is_none(), "cleared");
    // Altered (another user id), it is refused too.
    let (id, rest) = step.split_once('.').expect("id first");
    let mut altered = Browser::new(&app);
    altered.cookies = b.cookies.clone();
    altered.set_cookie(
        "login_step",
        &format!("{}.{rest}", id.parse::<u64>().unwrap() + 1),
    );
    assert_eq!(location(&altered.get("/login/totp")), "/login?next=/");

    // Five minutes, no more.
    app.offset.set(app.offset.get() + 301);
    let r = b.get("/login/totp");
    assert_eq!(location(&r), "/login?next=/");
    assert_eq!(
        notice_of(&b.follow(&r).body).as_deref(),
        Some("Your login took too long or no longer stands: please enter your password again.")
    );
    // A change to the account between the steps voids it: sessions ended.
    let mut c = Browser::new(&app);
    c.password("bea", "bea password", "/");
    let r = bea.submit("/account/revoke", "/account/revoke", &[]);
    assert_eq!(r.status, 303);
    app.next_step();
    let r = c.code(&app.code(&secret, 0), "/");
    assert_eq!(location(&r), "/login?next=/", "{}", r.body);
    assert!(c.cookie("token").is_none());
}

#[test]
fn wrong_codes_count_in_the_login_throttle() {
    let app = App::new(&[("throttle_max_failures", "3")]);
    let mut cy = Browser::new(&app);
    cy.register("cy", "cy password");
    let (secret, _) = cy.enrol();
    app.next_step();
    let right = app.code(&secret, 0);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    let mut b = Browser::new(&app);
    b.password("cy", "cy password", "/");
    for _ in 0..2 {
        let r = b.code(wrong, "/");
        assert_eq!(location(&r), "/login/totp?next=/");
    }
    // A correct password meanwhile forgets nothing.
    b.password("cy", "cy password", "/");
    let r = b.code("NOTA-RECO-VERY-CODE", "/");
    assert_eq!(location(&r), "/login/totp?next=/");
    let r = b.code(&right, "/");
    assert_eq!(r.header("Retry-After"), Some("300"), "{}", r.body);
    assert_eq!(
        notice_of(&b.follow(&r).body).as_deref(),
        Some("Too many failed attempts. Try again in 5 min.")
    );
    assert!(b.cookie("token").is_none());
    // The password too, for that name.
    let r = Browser::new(&app).password("cy", "cy password", "/");
    assert_eq!(location(&r), "/login?next=/");
}

#[test]
fn required_policy_sends_users_to_enrolment_before_anything_else() {
    let app = App::new(&[("totp", "required")]);
    let mut dee = Browser::new(&app);
    dee.register("dee", "dee password");
    // Right after registering: every page leads to the enrolment page, and back.
    let r = dee.get("/admin");
    assert_eq!(location(&r), "/account/totp?next=/admin");
    let page = dee.follow(&r);
    assert_eq!(
        notice_of(&page.body).as_deref(),
        Some("Your account must have two-factor authentication: set it up before you go on.")
    );
    assert!(
        page.body.contains("must have a second factor"),
        "{}",
        page.body
    );
    let r = dee.submit("/account/totp", "/account/password", &[]);
    assert_eq!(location(&r), "/account/totp", "a POST elsewhere too");
    // /auth says where to go; the API says what to do; /api/me still answers.
    let auth = dee.get_with("/auth", &[("X-Original-URL", "http://localhost/app")]);
    assert_eq!(auth.status, 401);
    assert!(
        location(&auth).starts_with("/account/totp"),
        "{}",
        location(&auth)
    );
    assert_eq!(dee.get("/api/me").status, 200);
    // After the password, a user without the factor goes straight to enrolment.
    let mut again = Browser::new(&app);
    let r = again.password("dee", "dee password", "/admin");
    assert_eq!(location(&r), "/account/totp?next=/admin");
    assert_eq!(again.claims()["amr"], serde_json::json!(["pwd"]));
    let (secret, _) = again.enrol();
    assert_eq!(again.get("/admin").status, 200);
    assert_eq!(
        again.get_with("/auth", &[]).header("Remote-Amr"),
        Some("pwd,otp")
    );
    // Logins from then on need the code.
    app.next_step();
    let mut later = Browser::new(&app);
    let r = later.password("dee", "dee password", "/admin");
    assert_eq!(location(&r), "/login/totp?next=/admin");
    let r = later.code(&app.code(&secret, 0), "/admin");
    assert_eq!(location(&r), "/admin");
}

#[test]
fn required_roles_apply_to_those_roles_only() {
    let app = App::new(&[("totp_required_roles", "admin")]);
    let mut root = Browser::new(&app);
    root.register("root", "root password");
    assert_eq!(location(&root.get("/")), "/account/totp?next=/");
    let mut eve = Browser::new(&app);
    eve.register("eve", "eve password");
    assert_eq!(
        eve.get("/").status,
        200,
        "a plain user is not sent anywhere"
    );
    // Promoted to admin: sent to enrolment on the next request.
    let (_, _) = root.enrol();
    let r = root.submit("/admin", "/admin/users/2/role", &[("role", "admin")]);
    assert_eq!(r.status, 303);
    assert_eq!(location(&eve.get("/")), "/account/totp?next=/");
}

#[test]
fn forward_auth_with_totp_1_needs_a_session_with_the_second_factor() {
    let app = App::new(&[]);
    let mut fay = Browser::new(&app);
    fay.register("fay", "fay password");
    let nginx = [("X-Original-URL", "/secret?a=1")];
    let r = fay.get_with("/auth", &nginx);
    assert_eq!((r.status, r.header("Remote-Amr")), (200, Some("pwd")));
    // totp=1 without the factor: as for a visitor who must log in, to the login page
    // with totp=1, which sends a user without a factor to set one up.
    let r = fay.get_with("/auth?totp=1", &nginx);
    assert_eq!(r.status, 401);
    assert!(r.header("Remote-User").is_none());
    assert_eq!(location(&r), "/login?totp=1&next=/secret%3Fa%3D1");
    assert_eq!(r.body, "Not logged in (second factor required).\n");
    let caddy = fay.get_with(
        "/auth?role=admin&totp=1",
        &[
            ("X-Forwarded-Host", "localhost"),
            ("X-Forwarded-Uri", "/secret"),
            ("X-Forwarded-Proto", "http"),
        ],
    );
    assert_eq!((caddy.status, location(&caddy)), (302, "/login?totp=1"));
    assert_eq!(
        fay.get_with("/auth?role=ops&totp=1", &nginx).status,
        403,
        "the role first"
    );
    let to = location(&r).to_string();
    let r = fay.get(&to);
    assert_eq!(location(&r), "/account/totp?next=/secret%3Fa%3D1");
    // Enrolled: the same session now carries otp; /auth?totp=1 lets it through.
    fay.enrol();
    let r = fay.get_with("/auth?totp=1&role=admin", &nginx);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Remote-Amr"), Some("pwd,otp"));
    assert_eq!(r.header("Remote-User"), Some("fay"));
    assert_eq!(fay.get_with("/auth?totp=0", &nginx).status, 200);
    // A session of this user that says only pwd (minted by another instance sharing the
    // key, or from before the factor was enforced) is asked to log in again with it.
    let mut claims = common::claims_of(fay.cookie("token").expect("token"));
    claims.amr = Amr::PWD;
    let mut pwd_only = Browser::new(&app);
    pwd_only.set_cookie("token", &app.mint(&claims));
    assert_eq!(pwd_only.get_with("/auth?totp=1", &nginx).status, 401);
    let page = pwd_only.get("/login?totp=1&next=/account");
    assert_eq!(page.status, 200, "the login form, although logged in");
    assert_eq!(
        notice_of(&page.body).as_deref(),
        Some("This page needs your second factor: log in again with your password and a code.")
    );
    let r = pwd_only.get("/login?next=/account");
    assert_eq!(
        location(&r),
        "/account",
        "without totp=1 the session is enough"
    );
}

#[test]
fn a_verify_only_instance_applies_totp_1_from_the_claim() {
    let issuer = App::new(&[]);
    let mut gus = Browser::new(&issuer);
    gus.register("gus", "gus password");
    let pwd = gus.cookie("token").expect("token").to_string();
    gus.enrol();
    let otp = gus.cookie("token").expect("token").to_string();
    let key = issuer.dir.join("secret.key");
    let verifier = App::new(&[
        ("verify_only", "true"),
        ("login_url", "https://auth.example.com/login"),
        ("public_url", "https://app.example.com"),
        ("key_files", key.to_str().expect("utf-8")),
    ]);
    let ask = |token: &str| {
        verifier.handle(
            &Request::new(Method::Get, "/auth?totp=1")
                .with_header("Cookie", &format!("token={token}"))
                .with_header("X-Original-URL", "https://app.example.com/x"),
        )
    };
    let r = ask(&pwd);
    assert_eq!(
        r.status, 401,
        "no store here: the pwd token is still valid, but lacks otp"
    );
    assert_eq!(
        location(&r),
        "https://auth.example.com/login?totp=1&next=https%3A//app.example.com/x"
    );
    let r = ask(&otp);
    assert_eq!((r.status, r.header("Remote-Amr")), (200, Some("pwd,otp")));
}

#[test]
fn the_api_enrols_and_logs_in_with_a_code() {
    let app = App::new(&[]);
    Browser::new(&app).register("hal", "hal password");
    let login = |body: serde_json::Value| api(&app, "/api/login", None, &body);
    let r = login(serde_json::json!({"username": "hal", "password": "hal password"}));
    assert_eq!(r.status, 200, "{}", r.body);
    let token = json(&r)["token"].as_str().expect("token").to_string();
    assert_eq!(jwt_claims(&token)["amr"], serde_json::json!(["pwd"]));

    // Only with a Bearer token: the cookie carries no CSRF field here.
    let cookie = Request::new(Method::Post, "/api/account/totp")
        .with_header("Cookie", &format!("token={token}"));
    assert_eq!(json(&app.handle(&cookie))["error"], "bearer_required");
    let r = api(
        &app,
        "/api/account/totp",
        Some(&token),
        &serde_json::json!({}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let started = json(&r);
    let secret = data_encoding::BASE32_NOPAD
        .decode(started["secret"].as_str().expect("secret").as_bytes())
        .expect("base32");
    assert_eq!(
        started["uri"],
        totp::key_uri("latchkey", "hal", &secret).as_str()
    );
    let r = api(
        &app,
        "/api/account/totp/enable",
        Some(&token),
        &serde_json::json!({"code": "12"}),
    );
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (400, Some("wrong_otp"))
    );
    let r = api(
        &app,
        "/api/account/totp/enable",
        Some(&token),
        &serde_json::json!({"code": app.code(&secret, 0)}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let enabled = json(&r);
    let codes: Vec<String> =
        serde_json::from_value(enabled["recovery_codes"].clone()).expect("codes");
    assert_eq!(codes.len(), 10);
    let fresh = enabled["token"].as_str().expect("a new token");
    assert_eq!(jwt_claims(fresh)["amr"], serde_json::json!(["pwd", "otp"]));
    let me = |t: &str| {
        app.handle(
            &Request::new(Method::Get, "/api/me")
                .with_header("Authorization", &format!("Bearer {t}")),
        )
        .status
    };
    assert_eq!(
        (me(&token), me(fresh)),
        (401, 200),
        "the old token was revoked"
    );
    let r = api(
        &app,
        "/api/account/totp",
        Some(fresh),
        &serde_json::json!({}),
    );
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (409, Some("totp_already_enabled"))
    );

    // Logging in now needs a code.
    let r = login(serde_json::json!({"username": "hal", "password": "hal password"}));
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (401, Some("otp_required"))
    );
    let r = login(
        serde_json::json!({"username": "hal", "password": "wrong password", "otp": "123456"}),
    );
    assert_eq!(json(&r)["error"], "wrong_credentials");
    app.next_step();
    let code = app.code(&secret, 0);
    let r = login(serde_json::json!({"username": "hal", "password": "hal password", "otp": code}));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        jwt_claims(json(&r)["token"].as_str().expect("t"))["amr"],
        serde_json::json!(["pwd", "otp"])
    );
    let r = login(serde_json::json!({"username": "hal", "password": "hal password", "otp": code}));
    assert_eq!(
        (r.status, json(&r)["error"].as_str()),
        (401, Some("wrong_otp")),
        "replay"
    );
    assert!(
        json(&r)["message"]
            .as_str()
            .unwrap_or("")
            .contains("used already")
    );
    let r = login(
        serde_json::json!({"username": "hal", "password": "hal password", "recovery_code": codes[5]}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = login(
        serde_json::json!({"username": "hal", "password": "hal password", "recovery_code": codes[5]}),
    );
    assert_eq!(json(&r)["error"], "wrong_otp", "once");
    for bad in [
        serde_json::json!({"username": "hal", "password": "hal password", "otp": codes[6]}),
        serde_json::json!({"username": "hal", "password": "hal password", "recovery_code": "123456"}),
        serde_json::json!({"username": "hal", "password": "hal password", "otp": "1", "recovery_code": codes[6]}),
    ] {
        assert_eq!(login(bad.clone()).status, 400, "{bad}");
    }
}

#[test]
fn switching_off_needs_the_password_and_a_code() {
    let app = App::new(&[]);
    let mut ida = Browser::new(&app);
    ida.register("ida", "ida password");
    let (secret, _) = ida.enrol();
    app.next_step();
    let r = ida.submit(
        "/account/totp",
        "/account/totp",
        &[
            ("action", "disable"),
            ("password", "nope nope"),
            ("code", &app.code(&secret, 0)),
        ],
    );
    assert_eq!(
        notice_of(&ida.follow(&r).body).as_deref(),
        Some("The password is wrong.")
    );
    let r = ida.submit(
        "/account/totp",
        "/account/totp",
        &[
            ("action", "disable"),
            ("password", "ida password"),
            ("code", &app.code(&secret, 0)),
        ],
    );
    assert_eq!(location(&r), "/account", "{}", r.body);
    assert_eq!(ida.claims()["amr"], serde_json::json!(["pwd"]));
    assert!(
        ida.follow(&r)
            .body
            .contains("Off: your password alone logs you in.")
    );
    let r = Browser::new(&app).password("ida", "ida password", "/");
    assert_eq!(location(&r), "/", "the password alone again");
}

#[test]
fn an_administrator_sees_and_resets_second_factors() {
    let app = App::new(&[]);
    let mut root = Browser::new(&app);
    root.register("root", "root password");
    let mut jo = Browser::new(&app);
    jo.register("jo", "jo password");
    let page = root.get("/admin");
    assert!(page.body.contains("<th>2FA</th>"), "{}", page.body);
    assert!(
        !page.body.contains("/admin/users/2/totp"),
        "nothing to reset yet"
    );
    jo.enrol();
    let page = root.get("/admin");
    assert!(
        page.body.contains("data-label=\"2FA\">on<"),
        "{}",
        page.body
    );
    assert!(page.body.contains("href=\"/admin/users/2/totp\""));
    assert!(
        !page.body.contains("href=\"/admin/users/1/totp\""),
        "not one's own"
    );
    let confirm = root.get("/admin/users/2/totp");
    assert!(
        confirm.body.contains("Reset the second factor of jo?"),
        "{}",
        confirm.body
    );
    let r = root.submit("/admin/users/2/totp", "/admin/users/2/totp", &[]);
    assert_eq!(location(&r), "/admin");
    assert_eq!(
        notice_of(&root.follow(&r).body).as_deref(),
        Some("jo no longer has a second factor; their sessions were ended.")
    );
    assert_eq!(
        location(&jo.get("/account")),
        "/login?next=/account",
        "revoked"
    );
    let r = Browser::new(&app).password("jo", "jo password", "/");
    assert_eq!(location(&r), "/", "the password alone");
    let r = root.submit("/admin", "/admin/users/1/totp", &[]);
    assert_eq!(location(&r), "/admin");
    assert!(
        root.follow(&r)
            .body
            .contains("You cannot change your own role")
    );
}

#[test]
fn switched_off_the_factor_is_neither_offered_nor_asked_for() {
    let mut app = App::new(&[]);
    {
        let mut kim = Browser::new(&app);
        kim.register("kim", "kim password");
        kim.enrol();
    }
    // The same store served with totp = "off": the factor is kept but not asked for.
    app.restart(&[("totp", "off")]);
    let mut kim = Browser::new(&app);
    let r = kim.password("kim", "kim password", "/");
    assert_eq!(location(&r), "/", "no code asked for");
    assert_eq!(kim.claims()["amr"], serde_json::json!(["pwd"]));
    let page = kim.get("/account/totp");
    assert!(
        page.body.contains("switched off on this server"),
        "{}",
        page.body
    );
    assert!(!kim.get("/account").body.contains("Two-factor"));
    let r = kim.get_with("/auth?totp=1", &[]);
    assert_eq!(r.status, 401);
    let r = kim.get("/login?totp=1");
    assert_eq!(
        r.status, 403,
        "no way to get the factor here: said, not looped"
    );
    // Served with it again, the factor is asked for as before.
    app.restart(&[]);
    let r = Browser::new(&app).password("kim", "kim password", "/");
    assert_eq!(location(&r), "/login/totp?next=/");
}

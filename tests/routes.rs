//! The handlers in-process, without sockets: requests are built with
//! `http::Request::new(..).with_header(..).with_body(..)` and answered by
//! `routes::handle` on the app `server::prepare` builds from a real configuration
//! (a temporary data directory, a real store and key). The journeys that need no real
//! connection live here; the whole-program suites prove the binary.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use latchkey::config::{Config, Env, Value};
use latchkey::http::{Method, Reply, Request};
use latchkey::routes;
use latchkey::server::{self, Prepared};

use common::token::{now, timed, user};

/// A prepared server in a temporary data directory, removed on drop.
struct App {
    prepared: Prepared,
    dir: PathBuf,
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
            "latchkey-routes-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut flags = vec![
            ("data_dir", Value::Text(dir.to_string_lossy().into_owned())),
            ("argon2_memory_kib", Value::Text("64".into())),
            ("argon2_iterations", Value::Text("1".into())),
            ("workers", Value::Text("2".into())),
        ];
        for (k, v) in settings {
            flags.push((k, Value::Text(v.to_string())));
        }
        let config = Config::load(None, &Env::default(), &flags).expect("config");
        let prepared = server::prepare(config).expect("prepare");
        App { prepared, dir }
    }

    fn handle(&self, req: &Request) -> Reply {
        routes::handle(self.prepared.app(), req, now()).0
    }

    /// The setup code the server wrote for the first registration, if any.
    fn setup_code(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.join("setup-code"))
            .ok()
            .map(|c| c.trim().to_string())
    }

    /// The `route` label a request was counted under.
    fn label(&self, req: &Request) -> &'static str {
        routes::labels()[routes::handle(self.prepared.app(), req, now()).1.route]
    }
}

/// A browser in-process: a cookie jar and the CSRF field of the last page.
struct Visitor<'a> {
    app: &'a App,
    cookies: Vec<(String, String)>,
    peer: IpAddr,
}

impl<'a> Visitor<'a> {
    fn new(app: &'a App) -> Visitor<'a> {
        Visitor {
            app,
            cookies: Vec::new(),
            peer: "192.0.2.10".parse().expect("ip"),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn send(&mut self, mut req: Request) -> Reply {
        req.peer = Some(self.peer);
        let cookie = self.cookie_header();
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

    /// GETs `page`, takes its CSRF field, POSTs `fields` to `action`.
    fn submit(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Reply {
        let form = self.get(page);
        let csrf = csrf_of(&form.body).unwrap_or_else(|| panic!("no form on {page}"));
        self.post(action, fields, &csrf)
    }

    fn post(&mut self, action: &str, fields: &[(&str, &str)], csrf: &str) -> Reply {
        let mut body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", latchkey::http::percent_encode(v)))
            .collect();
        body.push(format!("csrf={csrf}"));
        let req = Request::new(Method::Post, action)
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(body.join("&").as_bytes());
        self.send(req)
    }

    /// Follows a redirect: GETs its `Location`.
    fn follow(&mut self, reply: &Reply) -> Reply {
        assert_eq!(reply.status, 303, "{}", reply.body);
        self.get(location(reply))
    }

    /// POSTs a form through `submit` and follows the redirect that answers it (every
    /// form answers with one: Post/Redirect/Get), returning the page it leads to.
    fn done(&mut self, page: &str, action: &str, fields: &[(&str, &str)]) -> Reply {
        let r = self.submit(page, action, fields);
        self.follow(&r)
    }

    /// How a login through the form went: `ok`, or the notice the login page shows.
    fn login_outcome(&mut self, name: &str, password: &str) -> String {
        let r = self.login(name, password);
        assert_eq!(r.status, 303, "{}", r.body);
        if !location(&r).starts_with("/login") {
            return "ok".into();
        }
        notice_of(&self.follow(&r).body).unwrap_or_default()
    }

    /// Registers through the form, with the setup code while the server has one.
    fn register(&mut self, name: &str, password: &str) -> Reply {
        let code = self.app.setup_code().unwrap_or_default();
        self.submit(
            "/register",
            "/register",
            &[
                ("username", name),
                ("password", password),
                ("confirm", password),
                ("setup_code", &code),
            ],
        )
    }

    fn login(&mut self, name: &str, password: &str) -> Reply {
        self.submit(
            "/login",
            "/login",
            &[("username", name), ("password", password), ("next", "/")],
        )
    }
}

/// The text of the notice shown on a page, if any.
fn notice_of(page: &str) -> Option<String> {
    let at = page.find("class=\"notice ")?;
    let rest = &page[at..];
    let start = rest.find('>')? + 1;
    let end = rest.find("</div>")?;
    Some(rest[start..end].to_string())
}

fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")?;
    let rest = &page[at + 19..];
    Some(rest[..rest.find('"')?].to_string())
}

fn location(reply: &Reply) -> &str {
    reply.header("Location").unwrap_or("")
}

#[test]
fn the_first_registration_makes_the_administrator_and_logs_in() {
    let app = App::new(&[]);
    let mut alice = Visitor::new(&app);
    let page = alice.get("/register");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("first account"), "{}", page.body);
    let r = alice.register("Alice", "correct horse");
    assert_eq!((r.status, location(&r)), (303, "/"));
    let home = alice.get("/");
    assert!(home.body.contains("Hello, Alice!"), "{}", home.body);
    assert!(
        home.body.contains("href=\"/admin\""),
        "the first user is admin"
    );
    assert!(home.private, "a logged-in page is not cached");

    // Registration is now closed to everyone else.
    let mut bob = Visitor::new(&app);
    let r = bob.get("/register");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("Registration is closed"));
}

#[test]
fn login_failures_say_the_same_for_unknown_names_and_wrong_passwords() {
    let app = App::new(&[]);
    Visitor::new(&app).register("carol", "right password");
    let mut v = Visitor::new(&app);
    for (name, password) in [("carol", "wrong password"), ("nobody", "right password")] {
        let r = v.login(name, password);
        assert_eq!((r.status, location(&r)), (303, "/login?next=/"));
        let page = v.follow(&r);
        assert_eq!(page.status, 200);
        assert_eq!(
            notice_of(&page.body).as_deref(),
            Some("Wrong username or password.")
        );
        assert!(
            page.body.contains(&format!("value=\"{name}\"")),
            "the name typed is kept"
        );
        assert!(!v.cookies.iter().any(|(n, _)| n == "token"));
        // The notice is shown once.
        assert_eq!(notice_of(&v.get("/login").body), None);
    }
    let r = v.login("CAROL", "right password");
    assert_eq!((r.status, location(&r)), (303, "/"));
    assert!(v.cookies.iter().any(|(n, _)| n == "token"));
}

#[test]
fn the_route_table_answers_405_with_allow_and_404_elsewhere() {
    let app = App::new(&[]);
    let r = app.handle(&Request::new(Method::Post, "/account"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("GET, HEAD"));
    let r = app.handle(&Request::new(Method::Get, "/api/login"));
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("POST"));
    assert!(
        r.body.contains("\"error\":\"method_not_allowed\""),
        "{}",
        r.body
    );
    let r = app.handle(&Request::new(Method::Other, "/login"));
    assert_eq!(r.header("Allow"), Some("GET, HEAD, POST"));
    let r = app.handle(&Request::new(Method::Get, "/nowhere"));
    assert_eq!(r.status, 404);
    assert!(r.body.contains("There is no page at this address."));
    let r = app.handle(&Request::new(Method::Get, "/api/nowhere"));
    assert_eq!(r.status, 404);
    assert_eq!(r.content_type, "application/json");

    assert_eq!(app.label(&Request::new(Method::Get, "/auth")), "auth");
    assert_eq!(
        app.label(&Request::new(Method::Post, "/account/revoke")),
        "account"
    );
    assert_eq!(
        app.label(&Request::new(Method::Post, "/admin/users/3/lock")),
        "admin"
    );
    assert_eq!(app.label(&Request::new(Method::Get, "/nowhere")), "other");
}

#[test]
fn a_post_without_the_csrf_field_of_its_cookie_changes_nothing() {
    let app = App::new(&[]);
    let mut v = Visitor::new(&app);
    v.get("/register");
    let r = v.post(
        "/register",
        &[
            ("username", "mallory"),
            ("password", "12345678"),
            ("confirm", "12345678"),
        ],
        "forged",
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("The form had expired"), "{}", r.body);
    let r = v.get("/register");
    assert!(r.body.contains("first account"), "no user was created");
}

#[test]
fn administrators_manage_others_but_not_themselves() {
    let app = App::new(&[]);
    let mut admin = Visitor::new(&app);
    admin.register("root", "root password");
    let create = |admin: &mut Visitor, name: &str| {
        admin.done(
            "/admin",
            "/admin/users",
            &[
                ("username", name),
                ("password", "a password"),
                ("role", "user"),
            ],
        )
    };
    let r = create(&mut admin, "dave");
    assert_eq!(notice_of(&r.body).as_deref(), Some("Created dave."));
    let mut dave = Visitor::new(&app);
    assert_eq!(dave.login_outcome("dave", "a password"), "ok");

    // Own account: refused with the reason; ending one's own sessions is allowed.
    let r = admin.done("/admin", "/admin/users/1/lock", &[]);
    assert!(
        notice_of(&r.body).is_some_and(|n| n.starts_with("You cannot change your own role")),
        "{}",
        r.body
    );

    // Lock dave: his cookie is revoked on his next request.
    let r = admin.done("/admin", "/admin/users/2/lock", &[]);
    assert_eq!(notice_of(&r.body).as_deref(), Some("dave is locked."));
    let r = dave.get("/account");
    assert_eq!(r.status, 303);
    assert!(location(&r).starts_with("/login?next="), "{}", location(&r));
    assert_eq!(
        dave.login_outcome("dave", "a password"),
        "Wrong username or password."
    );

    // Deleting asks first, on a page of its own; a reload of the result posts nothing.
    let r = admin.get("/admin/users/2/delete");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Delete dave?"), "{}", r.body);
    let r = admin.done("/admin/users/2/delete", "/admin/users/2/delete", &[]);
    assert_eq!(
        notice_of(&r.body).as_deref(),
        Some("dave (id 2) was deleted.")
    );
    let r = admin.done("/admin", "/admin/users/2/unlock", &[]);
    assert_eq!(
        notice_of(&r.body).as_deref(),
        Some("There is no such user.")
    );
    assert_eq!(admin.get("/admin/users/2/delete").status, 404);
    // The pages about another user: 404 for one that is gone, back to /admin for oneself.
    for page in ["/admin/users/2/password", "/admin/users/2/totp"] {
        assert_eq!(admin.get(page).status, 404, "{page}");
    }
    for (page, own) in [
        (
            "/admin/users/1/password",
            "Change your own password on your account page.",
        ),
        (
            "/admin/users/1/totp",
            "Manage your own second factor on your account page.",
        ),
    ] {
        let r = admin.get(page);
        assert_eq!((r.status, location(&r)), (303, "/admin"), "{page}");
        assert_eq!(notice_of(&admin.follow(&r).body).as_deref(), Some(own));
    }

    // A plain user gets 403 on the admin page.
    create(&mut admin, "erin");
    let mut user = Visitor::new(&app);
    assert_eq!(user.login_outcome("erin", "a password"), "ok");
    assert_eq!(user.get("/admin").status, 403);
}

#[test]
fn a_password_change_revokes_other_sessions_and_keeps_this_one() {
    let app = App::new(&[]);
    let mut here = Visitor::new(&app);
    here.register("frank", "old password");
    let mut there = Visitor::new(&app);
    there.login("frank", "old password");
    let r = here.submit(
        "/account",
        "/account/password",
        &[
            ("current", "old password"),
            ("password", "new password"),
            ("confirm", "new password"),
        ],
    );
    assert_eq!((r.status, location(&r)), (303, "/account"));
    assert_eq!(here.get("/account").status, 200, "this browser stays in");
    let r = there.get("/account");
    assert_eq!(r.status, 303, "the other session is revoked");
    let r = here.done(
        "/account",
        "/account/password",
        &[
            ("current", "wrong"),
            ("password", "x1234567"),
            ("confirm", "x1234567"),
        ],
    );
    assert_eq!(
        notice_of(&r.body).as_deref(),
        Some("The current password is wrong.")
    );
}

#[test]
fn forward_auth_answers_with_identity_headers_or_the_login_redirect() {
    let app = App::new(&[]);
    let mut v = Visitor::new(&app);
    v.register("gina", "gina password");
    let r = v.get("/auth");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Remote-User"), Some("gina"));
    assert_eq!(r.header("Remote-Role"), Some("admin"));
    assert_eq!(r.header("Remote-Id"), Some("1"));
    assert_eq!(v.get("/auth?role=ops").status, 403);

    let anonymous = app
        .handle(&Request::new(Method::Get, "/auth").with_header("X-Original-URL", "/private?x=1"));
    assert_eq!(anonymous.status, 401);
    assert_eq!(location(&anonymous), "/login?next=/private%3Fx%3D1");
    let direct = app.handle(
        &Request::new(Method::Get, "/auth")
            .with_header("X-Forwarded-Host", "evil.example")
            .with_header("X-Forwarded-Uri", "/"),
    );
    assert_eq!(direct.status, 302);
    assert_eq!(
        location(&direct),
        "/login",
        "a foreign host is never a next target"
    );
}

#[test]
fn the_api_logs_in_with_json_and_answers_json_errors() {
    let app = App::new(&[]);
    Visitor::new(&app).register("hank", "hank password");
    let login = |body: &str, content_type: &str| {
        app.handle(
            &Request::new(Method::Post, "/api/login")
                .with_header("Content-Type", content_type)
                .with_body(body.as_bytes()),
        )
    };
    let r = login(
        r#"{"username":"hank","password":"hank password"}"#,
        "application/json",
    );
    assert_eq!(r.status, 200);
    let json: serde_json::Value = serde_json::from_str(&r.body).expect("json");
    let token = json["token"].as_str().expect("token");
    let me = app.handle(
        &Request::new(Method::Get, "/api/me")
            .with_header("Authorization", &format!("Bearer {token}")),
    );
    assert_eq!(me.status, 200);
    assert!(me.body.contains("\"name\":\"hank\""), "{}", me.body);

    let r = login(
        r#"{"username":"hank","password":"nope"}"#,
        "application/json",
    );
    assert_eq!(r.status, 401);
    assert!(r.body.contains("\"error\":\"wrong_credentials\""));
    let r = login("username=hank", "application/x-www-form-urlencoded");
    assert_eq!(r.status, 415);
    let r = login(r#"{"username":"hank"}"#, "application/json");
    assert_eq!(r.status, 400);
    assert!(r.body.contains("\"error\":\"bad_request\""));
    let r = app.handle(&Request::new(Method::Get, "/api/me"));
    assert_eq!(r.status, 401);
    assert!(r.body.contains("\"error\":\"none\""));
}

#[test]
fn logins_beyond_the_throttle_are_refused_with_the_wait() {
    let app = App::new(&[("throttle_max_failures", "2")]);
    Visitor::new(&app).register("ivan", "ivan password");
    let mut v = Visitor::new(&app);
    for _ in 0..2 {
        assert_eq!(
            v.login_outcome("ivan", "wrong"),
            "Wrong username or password."
        );
    }
    let outcome = v.login_outcome("ivan", "ivan password");
    assert_eq!(outcome, "Too many failed logins. Try again in 5 min.");
}

/// The token of a logged-in visitor.
fn token_of(v: &Visitor) -> String {
    v.cookies
        .iter()
        .find(|(n, _)| n == "token")
        .map(|(_, t)| t.clone())
        .expect("logged in")
}

/// `GET /auth` with this `Cookie` header, from the visitor's peer.
fn auth_with_cookie(app: &App, cookie: &str) -> Reply {
    let mut req = Request::new(Method::Get, "/auth").with_header("Cookie", cookie);
    req.peer = Some("192.0.2.10".parse().expect("ip"));
    app.handle(&req)
}

#[test]
fn the_first_token_cookie_that_verifies_identifies_the_visitor() {
    let app = App::new(&[]);
    let mut v = Visitor::new(&app);
    v.register("jane", "jane password");
    let good = token_of(&v);
    // A token the store no longer honours: log "revoked" in on its own.
    let mut old = Visitor::new(&app);
    old.login("jane", "jane password");
    let revoked = token_of(&old);
    let mut revoker = Visitor::new(&app);
    revoker.login("jane", "jane password");
    let csrf = csrf_of(&revoker.get("/account").body).expect("form");
    revoker.post("/account/revoke", &[], &csrf);
    let r = auth_with_cookie(&app, &format!("token={revoked}"));
    assert_eq!(r.status, 401, "revoked on its own");
    // Every fresh login after the revocation:
    let mut v = Visitor::new(&app);
    v.login("jane", "jane password");
    let good_now = token_of(&v);
    assert_ne!(good, good_now);
    for cookie in [
        format!("token=junk; token={good_now}"),
        format!("token=; token={good_now}"),
        format!("token=\"\"; token={good_now}"),
        format!("token={good_now}; token=junk"),
        format!("token={revoked}; token={good_now}"),
        format!("token=\"{good_now}\""),
        format!("a=1; token=x.y.z; b=2; token={good_now}"),
    ] {
        let r = auth_with_cookie(&app, &cookie);
        assert_eq!(r.status, 200, "{cookie}");
        assert_eq!(r.header("Remote-User"), Some("jane"), "{cookie}");
        assert!(
            !r.headers
                .iter()
                .any(|(n, v)| *n == "Set-Cookie" && v.contains("Max-Age=0")),
            "a verified cookie is never cleared: {cookie}"
        );
    }
    // Two Cookie headers count like one.
    let mut req = Request::new(Method::Get, "/auth")
        .with_header("Cookie", "token=junk")
        .with_header("Cookie", &format!("token={good_now}"));
    req.peer = Some("192.0.2.10".parse().expect("ip"));
    assert_eq!(app.handle(&req).status, 200);
    // None verifies: anonymous, and the first refusal says why.
    let r = app.handle(
        &Request::new(Method::Get, "/api/me").with_header("Cookie", "token=junk; token=a.b.c"),
    );
    assert!(r.body.contains("\"error\":\"malformed\""), "{}", r.body);
    let r = app.handle(
        &Request::new(Method::Get, "/api/me")
            .with_header("Cookie", &format!("token={revoked}; token=junk")),
    );
    assert!(r.body.contains("\"error\":\"revoked\""), "{}", r.body);
}

#[test]
fn a_form_passes_when_any_csrf_cookie_matches_its_field() {
    let app = App::new(&[]);
    let mut v = Visitor::new(&app);
    let page = v.get("/register");
    let csrf = csrf_of(&page.body).expect("form");
    // A stale csrf cookie of a parent domain comes first.
    let fresh = v
        .cookies
        .iter()
        .find(|(n, _)| n == "csrf")
        .map(|(_, c)| c.clone())
        .expect("csrf cookie");
    v.cookies.retain(|(n, _)| n != "csrf");
    v.cookies
        .push(("csrf".into(), "AAAAAAAAAAAAAAAAAAAAAA".into()));
    v.cookies.push(("csrf".into(), fresh));
    let r = v.post(
        "/register",
        &[
            ("username", "kate"),
            ("password", "kate password"),
            ("confirm", "kate password"),
        ],
        &csrf,
    );
    assert_eq!(r.status, 303, "{}", r.body);
}

#[test]
fn forwarded_clients_that_are_not_bare_addresses_get_their_own_throttle() {
    let app = App::new(&[
        ("trusted_proxies", "127.0.0.1"),
        ("throttle_max_failures", "2"),
    ]);
    let mut admin = Visitor::new(&app);
    admin.register("leo", "leo password");
    for name in ["mia", "ned", "ola"] {
        admin.submit(
            "/admin",
            "/admin/users",
            &[
                ("username", name),
                ("password", "a password"),
                ("role", "user"),
            ],
        );
    }
    let login = |forwarded: &str, name: &str, password: &str| {
        let mut v = Visitor::new(&app);
        v.peer = "127.0.0.1".parse().expect("ip");
        let page = v.send(Request::new(Method::Get, "/login"));
        let csrf = csrf_of(&page.body).expect("form");
        let body = format!(
            "username={name}&password={}&csrf={csrf}",
            password.replace(' ', "+")
        );
        let req = Request::new(Method::Post, "/login")
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_header("X-Forwarded-For", forwarded)
            .with_body(body.as_bytes());
        let r = v.send(req);
        if !location(&r).starts_with("/login") {
            return 303;
        }
        match notice_of(&v.follow(&r).body) {
            Some(n) if n.starts_with("Too many") => 429,
            _ => 401,
        }
    };
    // Two failures from 203.0.113.7 behind the proxy, written with ports...
    assert_eq!(login("203.0.113.7:4711", "leo", "wrong"), 401);
    assert_eq!(
        login("198.51.100.9, 203.0.113.7:50000", "leo", "wrong"),
        401
    );
    // ...lock out that address, however it is written...
    assert_eq!(login("203.0.113.7", "mia", "a password"), 429);
    assert_eq!(login("[::ffff:203.0.113.7]:1", "mia", "a password"), 429);
    // ...and not everyone else behind the proxy.
    assert_eq!(login("198.51.100.50", "mia", "a password"), 303);
    // `unknown` is a client of its own: its failures lock out neither the proxy nor others.
    assert_eq!(login("unknown", "ned", "wrong"), 401);
    assert_eq!(login("192.0.2.1, unknown", "ola", "wrong"), 401);
    assert_eq!(login("unknown", "ola", "a password"), 429);
    assert_eq!(login("192.0.2.77", "ned", "a password"), 303);
    // /metrics is not loopback for a forwarded client that is not a loopback address.
    let metrics = |forwarded: &str| {
        let mut req =
            Request::new(Method::Get, "/metrics").with_header("X-Forwarded-For", forwarded);
        req.peer = Some("127.0.0.1".parse().expect("ip"));
        app.handle(&req).status
    };
    assert_eq!(metrics("203.0.113.7, unknown"), 404);
    assert_eq!(metrics("[2001:db8::1]:443"), 404);
    assert_eq!(metrics("127.0.0.1"), 200);
}

#[test]
fn identities_that_are_not_header_safe_are_percent_encoded_never_dropped() {
    use latchkey::keys::KeyRing;
    use latchkey::token::{Claims, Signer};
    let dir = std::env::temp_dir().join(format!("latchkey-routes-key-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("issuer.key");
    latchkey::keys::generate(&key).expect("key");
    let app = App::new(&[
        ("verify_only", "true"),
        ("login_url", "https://auth.example.com/login"),
        ("key_files", key.to_str().expect("utf-8")),
    ]);
    let ring = KeyRing::load(std::slice::from_ref(&key)).expect("ring");
    let t = now();
    for (name, role, encoded_name, encoded_role) in [
        ("张三", "user", "%E5%BC%A0%E4%B8%89", "user"),
        ("Jörg", "éditeur", "J%C3%B6rg", "%C3%A9diteur"),
        ("a b%", "user", "a%20b%25", "user"),
    ] {
        let token = Signer::new(&ring).sign(&Claims {
            exp: t + 600,
            ..user(7, name, role, t)
        });
        let r = auth_with_cookie(&app, &format!("token={token}"));
        assert_eq!(r.status, 200, "{name}");
        assert_eq!(r.header("Remote-User"), Some(encoded_name));
        assert_eq!(r.header("Remote-Name"), Some(encoded_name));
        assert_eq!(r.header("Remote-Role"), Some(encoded_role));
        assert_eq!(r.header("Remote-Id"), Some("7"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_first_hour_pages() {
    let app = App::new(&[]);
    let mut v = Visitor::new(&app);
    // An empty store's home page points to the first registration.
    let home = v.get("/");
    assert!(home.body.contains("href=\"/register\""), "{}", home.body);
    assert!(home.body.contains("becomes the administrator"));
    v.register("mona", "mona password");
    let home = v.get("/");
    assert!(!home.body.contains("signed token"), "no developer text");
    assert!(home.body.contains("href=\"/account\""));
    // GET /logout shows a button instead of a 405.
    let page = v.get("/logout");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("action=\"/logout\""), "{}", page.body);
    // "Log out everywhere" asks first.
    let page = v.get("/account/revoke");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Log out everywhere?"));
    // The icon is served, cacheable.
    for path in ["/favicon.svg", "/favicon.ico"] {
        let icon = v.get(path);
        assert_eq!((icon.status, icon.content_type), (200, "image/svg+xml"));
        assert!(
            icon.header("Cache-Control")
                .is_some_and(|c| c.contains("max-age"))
        );
    }
    let r = v.done("/logout", "/logout", &[]);
    assert_eq!(
        notice_of(&r.body).as_deref(),
        Some("You have been logged out.")
    );
}

#[test]
fn a_forged_flash_cookie_shows_nothing() {
    let app = App::new(&[]);
    let mut v = Visitor::new(&app);
    v.cookies.push((
        "flash".into(),
        "ZWNhbGwgNTU1LTAxMDA.AAAAAAAAAAAAAAAAAAAAAA".into(),
    ));
    let page = v.get("/login");
    assert_eq!(notice_of(&page.body), None);
}

#[test]
fn the_account_page_shows_the_expiry_of_the_cookie_it_sends() {
    let app = App::new(&[("ttl", "600")]);
    let mut v = Visitor::new(&app);
    v.register("nora", "nora password");
    let page = v.get("/account");
    assert!(page.body.contains("expires in 10 min"), "{}", page.body);
    // A token just past `exp` but inside the leeway is still good, and this very
    // answer slides it: the page says when the new cookie expires, not "0 s".
    use latchkey::keys::KeyRing;
    use latchkey::token::Signer;
    let ring = KeyRing::load(&[app.dir.join("secret.key")]).expect("ring");
    let t = now();
    let late = Signer::new(&ring).sign(&timed(
        &user(1, "nora", "admin", t - 600),
        t - 600,
        t - 10,
        t - 600,
    ));
    let mut late_visitor = Visitor::new(&app);
    late_visitor.cookies.push(("token".into(), late));
    let page = late_visitor.get("/account");
    assert_eq!(page.status, 200);
    assert!(page.body.contains("expires in 10 min"), "{}", page.body);
}

#[test]
fn a_form_over_plain_http_without_its_secure_cookie_says_why() {
    let app = App::new(&[]);
    let form = |host: &str| {
        let req = Request::new(Method::Post, "/login")
            .with_header("Host", host)
            .with_header("Content-Type", "application/x-www-form-urlencoded")
            .with_body(b"username=a&password=b&csrf=x");
        app.handle(&req)
    };
    let r = form("nas.lan:8080");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("plain HTTP at nas.lan:8080"), "{}", r.body);
    assert!(r.body.contains("cookie_secure = false"));
    // Browsers keep Secure cookies on loopback names: no such hint there.
    for host in ["127.0.0.1:8080", "localhost:8080", "[::1]:8080"] {
        let r = form(host);
        assert_eq!(r.status, 403);
        assert!(r.body.contains("The form had expired"), "{host}");
    }
    let plain = App::new(&[("cookie_secure", "false")]);
    let req = Request::new(Method::Post, "/login")
        .with_header("Host", "nas.lan:8080")
        .with_header("Content-Type", "application/x-www-form-urlencoded")
        .with_body(b"csrf=x");
    assert!(plain.handle(&req).body.contains("The form had expired"));
}

#[test]
fn two_administrators_demoting_each_other_at_once_leave_one() {
    let app = App::new(&[]);
    let mut a = Visitor::new(&app);
    a.register("ada", "ada password");
    a.done(
        "/admin",
        "/admin/users",
        &[
            ("username", "bea"),
            ("password", "bea password"),
            ("role", "admin"),
        ],
    );
    let mut b = Visitor::new(&app);
    assert_eq!(b.login_outcome("bea", "bea password"), "ok");
    // What each one posts: their cookies, their CSRF field, the other's id.
    let form = |v: &mut Visitor, target: u64| {
        let csrf = csrf_of(&v.get("/admin").body).expect("form");
        (v.cookie_header(), format!("role=user&csrf={csrf}"), target)
    };
    let posts = [form(&mut a, 2), form(&mut b, 1)];
    let store = app.prepared.app().auth.store().expect("store");
    for round in 0..20 {
        // Each demotes the other, on two workers at once.
        std::thread::scope(|s| {
            for (cookie, body, target) in &posts {
                let worker = app.prepared.app().clone();
                s.spawn(move || {
                    let path = format!("/admin/users/{target}/role");
                    let mut req = Request::new(Method::Post, &path)
                        .with_header("Cookie", cookie)
                        .with_header("Content-Type", "application/x-www-form-urlencoded")
                        .with_body(body.as_bytes());
                    req.peer = Some("192.0.2.10".parse().expect("ip"));
                    routes::handle(&worker, &req, now())
                });
            }
        });
        let roles: Vec<String> = [1u64, 2]
            .iter()
            .map(|id| store.get(*id).expect("read").expect("user").role)
            .collect();
        assert_eq!(
            roles.iter().filter(|r| *r == "admin").count(),
            1,
            "round {round}: exactly one administrator is left: {roles:?}"
        );
        store.set_role(1, "admin").expect("ada again");
        store.set_role(2, "admin").expect("bea again");
    }
}

#[test]
fn logging_out_revokes_the_presented_token_and_only_that_one() {
    let app = App::new(&[]);
    let mut here = Visitor::new(&app);
    here.register("olga", "olga password");
    // Two logins of one user within one second are two logins (each its own `jti`).
    let mut there = Visitor::new(&app);
    assert_eq!(there.login_outcome("olga", "olga password"), "ok");
    assert_ne!(token_of(&here), token_of(&there));
    let copy = format!("token={}", token_of(&here));
    // A copy of an earlier token of the same login (before it slid) goes with it.
    let earlier = {
        use latchkey::keys::KeyRing;
        use latchkey::token::{Signer, TokenBuf, Verifier};
        let ring = KeyRing::load(&[app.dir.join("secret.key")]).expect("ring");
        let mut buf = TokenBuf::new();
        let verifier = Verifier::new(
            &ring,
            latchkey::token::Validation::new("latchkey", latchkey::token::Clock::System),
        );
        let current = verifier
            .verify(&token_of(&here), &mut buf)
            .expect("valid")
            .into_owned();
        assert!(current.jti.is_some(), "a login has an id");
        let before = latchkey::token::Claims {
            iat: current.iat - 60,
            exp: current.exp - 60,
            ..current
        };
        format!("token={}", Signer::new(&ring).sign(&before))
    };
    assert_eq!(auth_with_cookie(&app, &earlier).status, 200);
    assert_eq!(auth_with_cookie(&app, &copy).status, 200);
    let r = here.done("/", "/logout", &[]);
    assert_eq!(
        notice_of(&r.body).as_deref(),
        Some("You have been logged out.")
    );
    // A copy of the cookie is refused from now on, as revoked, and so is every token
    // of that login...
    assert_eq!(auth_with_cookie(&app, &copy).status, 401);
    assert_eq!(auth_with_cookie(&app, &earlier).status, 401);
    let me = app.handle(&Request::new(Method::Get, "/api/me").with_header("Cookie", &copy));
    assert!(me.body.contains("\"error\":\"revoked\""), "{}", me.body);
    // ...while the other session goes on.
    assert_eq!(there.get("/account").status, 200);
    assert_eq!(
        auth_with_cookie(&app, &format!("token={}", token_of(&there))).status,
        200
    );
}

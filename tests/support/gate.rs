//! The forward-auth gate scenarios, one body for every proxy that runs them
//! (`tests/caddy.rs` with Debian's Caddy 2.6 and PyPI's Caddy 2.11, `tests/traefik.rs`
//! with PyPI's Traefik 3.7): a proxy serves the latchkey portal at `auth.example.com` and
//! gates a stand-in app at `app.example.com`, both on one loopback port, and a
//! browser-like client checks what reaches the browser and what reaches the app.
//!
//! The stand-in app, [`EchoApp`], answers every request with what it received (method,
//! target, every header, body) as JSON, so a header that is absent, empty or repeated
//! tells apart.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::token::timed;

use super::{Client, get, http, now};
use crate::common::{Server, claims_of, jwt_claims, mint};

/// The identity headers latchkey's `/auth` answers 200 with (DESIGN's contract; `Remote-Amr`,
/// how the user logged in, is the newest), each of which a proxy config should copy.
pub const IDENTITY: &[&str] = &[
    "Remote-User",
    "Remote-Name",
    "Remote-Role",
    "Remote-Id",
    "Remote-Amr",
];

/// What the stand-in app received in one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-case names, each with every value in the order received.
    pub headers: BTreeMap<String, Vec<String>>,
    pub body: String,
}

impl Seen {
    /// Every value of header `name`.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default()
    }

    /// The non-empty values of `name`: what an app that reads the header can act on.
    pub fn present(&self, name: &str) -> Vec<String> {
        self.values(name)
            .into_iter()
            .filter(|v| !v.is_empty())
            .collect()
    }

    /// The one value of `name`; panics when there is not exactly one.
    pub fn one(&self, name: &str) -> String {
        let values = self.values(name);
        assert_eq!(values.len(), 1, "{name} at the app: {values:?} ({self:?})");
        values[0].clone()
    }
}

/// The stand-in app: a loopback HTTP/1.1 server (keep-alive, one thread per connection)
/// that answers 200 with what it received as JSON, and sets a cookie of its own
/// (`app=seen`) so a proxy that rewrites `Set-Cookie` shows whether it keeps the app's.
pub struct EchoApp {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl EchoApp {
    pub fn start() -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (seen, stop) = (Arc::clone(&seen), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let seen = Arc::clone(&seen);
                    std::thread::spawn(move || serve_echo(stream, &seen));
                }
            });
        }
        EchoApp { addr, seen, stop }
    }

    /// How many requests reached the app so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The last request that reached the app.
    pub fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request reached the app")
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

/// Answers requests on one connection until the peer closes it or sends garbage.
fn serve_echo(stream: TcpStream, seen: &Mutex<Vec<Seen>>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
            return;
        };
        let (method, target) = (method.to_string(), target.to_string());
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end_matches(['\r', '\n']);
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers
                    .entry(k.trim().to_ascii_lowercase())
                    .or_default()
                    .push(v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.first())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        let answer = serde_json::json!({
            "method": method,
            "target": target,
            "headers": headers,
            "body": body,
        })
        .to_string();
        seen.lock().unwrap().push(Seen {
            method,
            target,
            headers,
            body,
        });
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Set-Cookie: app=seen; Path=/\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// Percent-encodes as latchkey does for `next=` values: all but unreserved and `/`.
pub fn pct_next(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// latchkey set up as the shipped proxy configs assume, for a proxy on `port` serving
/// `auth.example.com` and `app.example.com` in plain HTTP.
pub fn latchkey_behind(port: u16) -> Server {
    Server::start(
        &[],
        &[
            (
                "LATCHKEY_PUBLIC_URL",
                &format!("http://auth.example.com:{port}"),
            ),
            ("LATCHKEY_COOKIE_DOMAIN", "example.com"),
            ("LATCHKEY_COOKIE_SECURE", "false"),
            ("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    )
}

/// Runs `bin version` and checks that its first line starts with `want` (after an
/// optional `v`), so the versions docs/proxies.md names are the ones tested. Returns the
/// version.
pub fn check_version(bin: &Path, want: &str) -> String {
    let out = Command::new(bin)
        .arg("version")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} version: {e}", bin.display()));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Caddy prints `v2.11.7 h1:…`; Traefik prints `Version:      3.7.15` first.
    let version = text
        .split_whitespace()
        .find(|w| {
            w.trim_start_matches('v')
                .starts_with(|c: char| c.is_ascii_digit())
        })
        .unwrap_or("")
        .trim_start_matches('v')
        .to_string();
    assert!(
        version.starts_with(want),
        "{} is version {version:?}, not {want}x ({text}); the suite and docs/proxies.md \
         name the versions they were tested with: update both",
        bin.display()
    );
    version
}

/// Waits until the proxy answers `GET /healthz` for the portal with 200: the proxy is
/// listening and has loaded its routes (Traefik's file provider loads them after the
/// entry points accept connections).
pub fn wait_for_portal(proxy: SocketAddr, portal: &str, mut log: impl FnMut() -> String) {
    let start = Instant::now();
    loop {
        let status = probe_host(proxy, portal, "/healthz");
        if status == Some(200) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the portal is not reachable through the proxy after 30 s ({status:?}):\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status of `GET path` with the given `Host`, or `None` when the connection fails
/// or closes without an answer (a readiness probe that never panics).
fn probe_host(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// One forward-auth proxy in front of latchkey and the stand-in app, and what its config
/// is expected to pass through.
pub struct Gate<'a> {
    /// Where the proxy listens; it serves both hosts on this port.
    pub proxy: SocketAddr,
    pub latchkey: &'a Server,
    pub app: &'a EchoApp,
    /// The identity headers the config copies from the answer of `/auth` onto the
    /// request to the app (each replaces or removes a client's header of that name).
    pub copied: &'a [&'a str],
    /// Whether the config passes the slid cookie of a 200 from `/auth` to the browser.
    pub passes_refresh: bool,
    /// Whether a client's own `X-Original-URL` reaches `/auth` (latchkey then answers
    /// nginx's 401 instead of the 302).
    pub passes_original_url: bool,
    /// Whether headers whose names alias an identity header (`Remote_User`,
    /// `Remote.User`), which CGI-style apps read as `REMOTE_USER`, reach the app.
    pub passes_alias_headers: bool,
    /// The proxy's log, for failure messages.
    pub log: &'a dyn Fn() -> String,
}

impl Gate<'_> {
    fn port(&self) -> u16 {
        self.proxy.port()
    }

    fn portal_origin(&self) -> String {
        format!("http://auth.example.com:{}", self.port())
    }

    fn portal(&self) -> String {
        format!("auth.example.com:{}", self.port())
    }

    fn app_host(&self) -> String {
        format!("app.example.com:{}", self.port())
    }

    /// The login page `/auth` sends a visitor of `url` to.
    fn login_for(&self, url: &str) -> String {
        format!("{}/login?next={}", self.portal_origin(), pct_next(url))
    }

    fn logs(&self) -> String {
        format!(
            "proxy:\n{}\nlatchkey:\n{}",
            (self.log)(),
            self.latchkey.log()
        )
    }

    /// Checks that the app saw exactly the identity latchkey's `/auth` gives `cookie`:
    /// each copied header carries latchkey's one value, and one latchkey does not send
    /// reaches the app empty or not at all, whatever the client sent.
    fn assert_identity(&self, seen: &Seen, cookie: &str) {
        let direct = self.latchkey.get("/auth", &[("Cookie", cookie)]);
        assert_eq!(direct.status, 200, "{}", direct.body);
        for name in self.copied {
            let want: Vec<String> = direct
                .header(name)
                .map(|v| v.to_string())
                .into_iter()
                .collect();
            assert_eq!(
                seen.present(name),
                want,
                "{name} at the app (latchkey answered {:?}); the app saw {seen:?}\n{}",
                direct.headers,
                self.logs()
            );
        }
    }

    /// Every scenario, in order (later ones use the users earlier ones made).
    pub fn run(&self) {
        let (portal, origin, app_host) = (self.portal(), self.portal_origin(), self.app_host());

        // Anonymous: latchkey's 302 to the login page, carrying the original URL as next,
        // reaches the browser as it is; the app never sees the request.
        let mut alice = Client::new(self.proxy);
        let before = self.app.count();
        let r = alice.get(&app_host, "/dashboard?x=1&y=two", &[]);
        assert_eq!(r.status, 302, "{}\n{}", r.body, self.logs());
        assert_eq!(
            r.location(),
            self.login_for(&format!("http://{app_host}/dashboard?x=1&y=two"))
        );
        let r = alice.get(&app_host, "/admin/users", &[]);
        assert_eq!(r.status, 302, "{}", r.body);
        assert_eq!(
            r.location(),
            self.login_for(&format!("http://{app_host}/admin/users"))
        );
        // Forwarded headers the client makes up do not change where the login leads.
        let r = alice.get(
            &app_host,
            "/dashboard",
            &[
                ("X-Forwarded-Host", "evil.example.net"),
                ("X-Forwarded-Uri", "/elsewhere"),
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Method", "DELETE"),
            ],
        );
        assert_eq!(r.status, 302, "{}\n{}", r.body, self.logs());
        assert_eq!(
            r.location(),
            self.login_for(&format!("http://{app_host}/dashboard")),
            "{}",
            self.logs()
        );
        // A client's own X-Original-URL (what nginx sends) either never reaches /auth,
        // or makes latchkey answer the way it answers nginx: 401, never the app.
        let r = alice.get(
            &app_host,
            "/dashboard",
            &[("X-Original-URL", &format!("http://{app_host}/elsewhere"))],
        );
        if self.passes_original_url {
            assert_eq!(r.status, 401, "{}\n{}", r.body, self.logs());
            assert_eq!(
                r.location(),
                self.login_for(&format!("http://{app_host}/elsewhere"))
            );
        } else {
            assert_eq!(r.status, 302, "{}\n{}", r.body, self.logs());
            assert_eq!(
                r.location(),
                self.login_for(&format!("http://{app_host}/dashboard"))
            );
        }
        assert_eq!(self.app.count(), before, "the app saw an anonymous request");

        // Register the first user (an admin) at the portal, through the proxy, with the
        // one-time setup code the server wrote.
        let code = self.latchkey.setup_code().expect("a setup code");
        let r = alice.submit(
            &portal,
            &origin,
            "/register",
            "/register",
            &[
                ("username", "alice"),
                ("password", "alice-password"),
                ("confirm", "alice-password"),
                ("setup_code", &code),
            ],
        );
        assert_eq!(r.status, 303, "{}\n{}", r.body, self.logs());
        let set = r.set_cookies("token");
        assert!(
            set.len() == 1 && set[0].contains("Domain=example.com"),
            "{:?}",
            r.headers
        );
        let token = alice.jar.get("token").expect("token cookie").to_string();
        let id = jwt_claims(&token)["sub"].as_str().unwrap().to_string();
        let cookie = format!("token={token}");

        // The app sees who it is; identity headers the client made up are replaced
        // (or removed, for a name latchkey does not send).
        let mut forged: Vec<(&str, &str)> = IDENTITY.iter().map(|h| (*h, "mallory")).collect();
        forged.extend([("Remote_User", "mallory"), ("Remote.User", "mallory")]);
        let r = alice.get(&app_host, "/dashboard?x=1&y=two", &forged);
        assert_eq!(r.status, 200, "{}\n{}", r.body, self.logs());
        let seen = self.app.last();
        assert_eq!(seen.target, "/dashboard?x=1&y=two");
        assert_eq!(seen.method, "GET");
        assert_eq!(seen.one("Remote-User"), "alice", "{}", self.logs());
        assert_eq!(seen.one("Remote-Name"), "alice");
        assert_eq!(seen.one("Remote-Role"), "admin");
        assert_eq!(seen.one("Remote-Id"), id);
        if self.copied.contains(&"Remote-Amr") {
            assert_eq!(
                seen.one("Remote-Amr"),
                "pwd",
                "a login with the password alone"
            );
        }
        self.assert_identity(&seen, &cookie);
        // An identity header the config does not copy is the client's own at the app
        // (docs/proxies.md says which configs leave which out).
        for name in IDENTITY.iter().filter(|h| !self.copied.contains(h)) {
            assert_eq!(seen.values(name), ["mallory"], "{name}: {seen:?}");
        }
        let aliases = [seen.values("remote_user"), seen.values("remote.user")].concat();
        if self.passes_alias_headers {
            assert_eq!(aliases, ["mallory", "mallory"], "{seen:?}");
        } else {
            assert!(aliases.is_empty(), "{seen:?}");
        }
        // The app's answer reaches the browser, its own cookie too.
        assert!(
            r.body.contains("\"target\":\"/dashboard?x=1&y=two\""),
            "{}",
            r.body
        );
        assert_eq!(r.cookie("app").as_deref(), Some("seen"), "{:?}", r.headers);
        // A gated POST: the body goes to the app only (/auth is asked with a bodiless GET).
        let r = http(
            self.proxy,
            "POST",
            &app_host,
            "/notes",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/x-www-form-urlencoded"),
                ("Remote-User", "mallory"),
            ],
            b"text=hello",
        );
        assert_eq!(r.status, 200, "{}\n{}", r.body, self.logs());
        let seen = self.app.last();
        assert_eq!(
            (
                seen.method.as_str(),
                seen.target.as_str(),
                seen.body.as_str()
            ),
            ("POST", "/notes", "text=hello")
        );
        assert_eq!(seen.one("Remote-User"), "alice");
        // The role-gated part lets the admin through.
        let r = alice.get(&app_host, "/admin/users", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = self.app.last();
        assert_eq!(seen.target, "/admin/users");
        assert_eq!(seen.one("Remote-User"), "alice");

        // The admin creates a plain user on the admin page, through the proxy.
        let r = alice.submit(
            &portal,
            &origin,
            "/admin",
            "/admin/users",
            &[
                ("username", "bob"),
                ("password", "bob-password"),
                ("role", "user"),
            ],
        );
        assert!(
            r.status == 200 || r.status == 303,
            "{} {}",
            r.status,
            r.body
        );

        // bob logs in with the next the gate gave, and lands back on the app.
        let mut bob = Client::new(self.proxy);
        let r = bob.get(&app_host, "/admin/users", &[]);
        assert_eq!(r.status, 302);
        let login_path = r
            .location()
            .strip_prefix(origin.as_str())
            .unwrap_or_else(|| panic!("login page off the portal: {}", r.location()))
            .to_string();
        let bob_next = format!("http://{app_host}/admin/users");
        let r = bob.submit(
            &portal,
            &origin,
            &login_path,
            "/login",
            &[
                ("username", "bob"),
                ("password", "bob-password"),
                ("next", &bob_next),
            ],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.location(), bob_next);
        // Without the admin role: latchkey's 403 for the gated part, whatever role the
        // client claims; the app never sees it.
        let before = self.app.count();
        let r = bob.get(&app_host, "/admin/users", &[("Remote-Role", "admin")]);
        assert_eq!(r.status, 403, "{}\n{}", r.body, self.logs());
        assert_eq!(self.app.count(), before, "the app saw a refused request");
        let r = bob.get(&app_host, "/", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
        let seen = self.app.last();
        assert_eq!(
            (seen.one("Remote-User"), seen.one("Remote-Role")),
            ("bob".to_string(), "user".to_string())
        );

        // A fresh token passes the gate without being re-issued.
        let r = get(self.proxy, &app_host, "/", &[("Cookie", &cookie)]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.set_cookies("token").is_empty(), "{:?}", r.headers);

        // The sliding refresh: a token with less than half its lifetime left passes the
        // gate, and /auth answers with a re-issued one. Whether that reaches the browser
        // is up to the proxy.
        let t = now();
        let key = self.latchkey.key_file();
        let old = timed(&claims_of(&token), t - 3000, t + 600, t - 3000);
        let due = format!("token={}", mint(&key, &old));
        let direct = self.latchkey.get("/auth", &[("Cookie", &due)]);
        assert_eq!(
            direct.set_cookies("token").len(),
            1,
            "latchkey itself slides the token on /auth: {:?}",
            direct.headers
        );
        let r = get(self.proxy, &app_host, "/dashboard", &[("Cookie", &due)]);
        assert_eq!(r.status, 200, "{}\n{}", r.body, self.logs());
        assert_eq!(self.app.last().one("Remote-User"), "alice");
        assert_eq!(r.cookie("app").as_deref(), Some("seen"), "{:?}", r.headers);
        let slid = r.set_cookies("token");
        if self.passes_refresh {
            assert_eq!(slid.len(), 1, "{:?}\n{}", r.headers, self.logs());
            for attribute in ["Domain=example.com", "HttpOnly", "Path=/", "Max-Age=3600"] {
                assert!(slid[0].contains(attribute), "{attribute}: {}", slid[0]);
            }
            let fresh = r.cookie("token").unwrap();
            let claims = claims_of(&fresh);
            assert!(claims.exp >= t + 3000, "not slid: {claims:?}");
            assert_eq!(claims.auth_time, old.auth_time, "sliding keeps auth_time");
            // The slid token opens the gate in turn.
            let r = get(
                self.proxy,
                &app_host,
                "/",
                &[("Cookie", &format!("token={fresh}"))],
            );
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(self.app.last().one("Remote-User"), "alice");
        } else {
            assert!(slid.is_empty(), "{:?}", r.headers);
        }

        // An expired cookie: back to the login page, and latchkey's clearing of the cookie
        // comes along with the 302.
        let expired = timed(&claims_of(&token), t - 7200, t - 3600, t - 7200);
        let cookie = format!("token={}", mint(&key, &expired));
        let r = get(self.proxy, &app_host, "/dashboard", &[("Cookie", &cookie)]);
        assert_eq!(r.status, 302, "{}", r.body);
        assert_eq!(
            r.location(),
            self.login_for(&format!("http://{app_host}/dashboard"))
        );
        assert!(
            r.set_cookies("token")
                .first()
                .is_some_and(|c| c.contains("Max-Age=0")),
            "{:?}",
            r.headers
        );

        // The operator endpoint stays off the net at the portal: the proxy answers, not
        // latchkey (which would serve it, every request coming from loopback).
        for target in ["/metrics", "/metrics?format=text", "/%6Detrics"] {
            let r = get(self.proxy, &portal, target, &[]);
            assert_eq!(r.status, 404, "{target}: {}", r.body);
            assert!(!r.body.contains("latchkey_"), "{target}: {}", r.body);
        }
        assert_eq!(
            self.latchkey.get("/metrics", &[]).status,
            200,
            "latchkey itself serves /metrics to loopback"
        );
        // The rest of the portal is proxied as it is.
        let r = get(self.proxy, &portal, "/healthz", &[]);
        assert_eq!(r.status, 200, "{}", r.body);
    }
}

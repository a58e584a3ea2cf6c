//! Two full latchkey instances on one real PostgreSQL server, behind real nginx running
//! the shipped `contrib/nginx-cluster.conf` (round robin): every request served by
//! both; a revocation, lock, role change or password change made on one instance is
//! applied by the other within a second; 8 clients registering and revoking at once
//! through both (no duplicate names, no lost version bumps); failed logins counted once
//! for both; PostgreSQL killed mid-run (tokens still verified, logins 503, `/healthz`
//! 503, all back without a restart); one instance killed mid-run (nginx fails over, no
//! request fails).
//!
//! Heavy (needs nginx and PostgreSQL's server binaries): `cargo test --features postgres
//! --test postgres_cluster -- --ignored`, run by `.ci/run`.

#![cfg(feature = "postgres")]

mod common;
mod support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use common::pg::PgCluster;
use common::{Response, Server, TempDir, cli};
use serde_json::json;
use support::{Client, Nginx, Port, Shipped};

const ROOT_PASSWORD: &str = "root-password-1";

/// Two instances sharing a database and a key, and nginx in front.
struct Cluster {
    nginx: Nginx,
    a: Option<Server>,
    b: Server,
    url: String,
    host: String,
    origin: String,
    app_host: String,
    app: std::net::SocketAddr,
    _key_dir: TempDir,
    _www: TempDir,
}

fn json(r: &Response) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.body))
}

impl Cluster {
    fn start(pg: &PgCluster, extra_env: &[(&str, &str)]) -> Cluster {
        let url = pg.database();
        let (portal, app) = (Port::reserve(), Port::reserve());
        let origin = format!("http://127.0.0.1:{}", portal.port);
        let key_dir = TempDir::new("cluster-key");
        let key = key_dir.path().join("secret.key");
        let key = key.to_str().expect("utf-8").to_string();
        let (code, _, err) = cli(&["key", "generate", &key], "");
        assert_eq!(code, 0, "{err}");
        let mut env = vec![
            ("LATCHKEY_STORE", url.as_str()),
            ("LATCHKEY_PUBLIC_URL", origin.as_str()),
            ("LATCHKEY_COOKIE_SECURE", "false"),
            ("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1"),
            ("LATCHKEY_SIGNUP", "open"),
        ];
        env.extend_from_slice(extra_env);
        let a = Server::start(&["--key-file", &key], &env);
        let b = Server::start(&["--key-file", &key], &env);
        // One setup code for both: the first to start kept it in the database.
        let code_a = a.setup_code().expect("A has a setup code");
        assert_eq!(
            b.setup_code().as_deref(),
            Some(code_a.as_str()),
            "one code for both"
        );

        let mut conf = Shipped::open("contrib/nginx-cluster.conf");
        conf.replace("listen 443 ssl;", "@@LISTEN@@", 2);
        conf.text = conf
            .text
            .replacen(
                "@@LISTEN@@",
                &format!("listen 127.0.0.1:{};", portal.port),
                1,
            )
            .replacen("@@LISTEN@@", &format!("listen 127.0.0.1:{};", app.port), 1);
        for line in [
            "    ssl_certificate     /etc/ssl/certs/auth.example.com.pem;\n",
            "    ssl_certificate_key /etc/ssl/private/auth.example.com.key;\n",
            "    ssl_certificate     /etc/ssl/certs/app.example.com.pem;\n",
            "    ssl_certificate_key /etc/ssl/private/app.example.com.key;\n",
        ] {
            conf.replace(line, "", 1);
        }
        conf.replace(
            "server 127.0.0.1:8080 max_fails=1 fail_timeout=10s;",
            &format!("server {} max_fails=1 fail_timeout=10s;", a.addr),
            1,
        );
        conf.replace(
            "server 127.0.0.1:8081 max_fails=1 fail_timeout=10s;",
            &format!("server {} max_fails=1 fail_timeout=10s;", b.addr),
            1,
        );
        // Which instance answered, for the test.
        conf.replace(
            "        proxy_pass http://latchkey;\n",
            "        proxy_pass http://latchkey;\n        add_header X-Upstream $upstream_addr always;\n",
            1,
        );
        // The stand-in application: a static page, and who nginx says is asking.
        let www = TempDir::new("cluster-www");
        std::fs::write(www.path().join("index.html"), "the stand-in app\n").expect("page");
        support::world_readable(www.path());
        conf.replace(
            "proxy_pass http://127.0.0.1:9000; # your application",
            &format!(
                "root {}; try_files /index.html =404; add_header X-App-User $latchkey_user always;",
                www.path().display()
            ),
            1,
        );
        let nginx = Nginx::start(&conf.text, vec![portal, app]);
        let host = format!("127.0.0.1:{}", nginx.addr.port());
        let app_port = app_port(&conf.text);
        let app_host = format!("127.0.0.1:{app_port}");
        let app_addr = app_host.parse().expect("app address");
        let cluster = Cluster {
            nginx,
            a: Some(a),
            b,
            url,
            host,
            origin,
            app_host,
            app: app_addr,
            _key_dir: key_dir,
            _www: www,
        };
        // The administrator registers on instance A, with the setup code.
        let mut c = Client::new(cluster.a().addr);
        let r = c.submit(
            &cluster.a().addr.to_string(),
            &cluster.origin,
            "/register",
            "/register",
            &[
                ("username", "root"),
                ("password", ROOT_PASSWORD),
                ("confirm", ROOT_PASSWORD),
                ("setup_code", &code_a),
            ],
        );
        assert_eq!(r.status, 303, "register on A: {}", r.body);
        // The setup code is spent for B too.
        assert!(std::fs::read_to_string(cluster.b.data_dir().join("setup-code")).is_ok());
        cluster
    }

    /// `GET path` on the gated application with `c`'s cookies (no cookie is kept).
    fn app_get(&self, c: &Client, path: &str) -> Response {
        let cookie = c.jar.header();
        support::get(self.app, &self.app_host, path, &[("Cookie", &cookie)])
    }

    fn a(&self) -> &Server {
        self.a.as_ref().expect("A runs")
    }

    /// A browser logged in through nginx.
    fn browser(&self, name: &str, password: &str) -> Client {
        let mut c = Client::new(self.nginx.addr);
        let r = c.submit(
            &self.host,
            &self.origin,
            "/login",
            "/login",
            &[("username", name), ("password", password)],
        );
        assert_eq!(r.status, 303, "login of {name}: {}", r.body);
        assert!(c.jar.get("token").is_some());
        c
    }

    /// `latchkey user …` against the database (no server needed: it is shared).
    fn user(&self, args: &[&str], stdin: &str) -> String {
        let mut full = vec!["user"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--store", &self.url]);
        let (code, out, err) = cli(&full, stdin);
        assert_eq!(code, 0, "user {args:?}: {out}{err}");
        out
    }

    fn users(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.user(&["list", "--json"], "")).expect("JSON")
    }
}

fn app_port(conf: &str) -> String {
    conf.match_indices("listen 127.0.0.1:")
        .nth(1)
        .map(|(i, _)| {
            conf[i + "listen 127.0.0.1:".len()..]
                .split(';')
                .next()
                .expect("port")
                .to_string()
        })
        .expect("the app server listens")
}

fn api_login(addr: std::net::SocketAddr, host: &str, name: &str, password: &str) -> Response {
    let body = serde_json::json!({"username": name, "password": password}).to_string();
    support::http(
        addr,
        "POST",
        host,
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    )
}

fn me(server: &Server, token: &str) -> Response {
    server.get("/api/me", &[("Authorization", &format!("Bearer {token}"))])
}

/// Polls `check` on B every 10 ms until it holds; panics after 1 s. Returns how long.
fn within_a_second(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: not applied by the other instance within 1 s"
        );
        thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

#[test]
#[ignore = "heavy: needs nginx and PostgreSQL's server binaries; run by .ci/run"]
fn two_full_instances_behind_nginx_share_everything() {
    let pg = PgCluster::start();
    let cluster = Cluster::start(&pg, &[("LATCHKEY_THROTTLE_MAX_FAILURES", "3")]);
    let (a, b) = (cluster.a(), &cluster.b);

    // Logged in through nginx; every request is served by both instances in turn.
    let mut root = cluster.browser("root", ROOT_PASSWORD);
    let mut seen = HashSet::new();
    for _ in 0..10 {
        // Two pages and one gated request (whose /auth goes to the pool too) per round,
        // so that the pages land on both instances whatever the order.
        for _ in 0..2 {
            let r = root.get(&cluster.host, "/account", &[]);
            assert_eq!(r.status, 200, "{}", r.body);
            seen.insert(r.header("x-upstream").expect("upstream").to_string());
        }
        let r = cluster.app_get(&root, "/");
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.body, "the stand-in app\n");
        assert_eq!(r.header("x-app-user"), Some("root"));
    }
    let both: HashSet<String> = [a.addr.to_string(), b.addr.to_string()].into();
    assert_eq!(
        seen,
        both,
        "round robin over both instances; nginx's error log:\n{}",
        cluster.nginx.error_log()
    );

    // Bob logs in through the API (through nginx); each change below is made on A and
    // must be applied by B within a second (B's memo of bob is warm before each).
    cluster.user(&["add", "bob", "--role", "user"], "bob-password-1\n");
    let token = |password: &str| {
        let r = api_login(cluster.nginx.addr, &cluster.host, "bob", password);
        assert_eq!(r.status, 200, "{}", r.body);
        json(&r)["token"].as_str().expect("token").to_string()
    };
    let revoked = |t: &str| {
        let r = me(b, t);
        r.status == 401 && json(&r)["error"] == "revoked"
    };
    let control = |args: &[&str], stdin: &str| {
        let data = a.data_dir();
        let mut full = vec!["user"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["--data-dir", data.to_str().expect("utf-8")]);
        let (code, out, err) = cli(&full, stdin);
        assert_eq!(code, 0, "{args:?} on A: {out}{err}");
    };
    // Every worker of B remembers bob's state before each change (each has its own memo),
    // so only a notification can tell them.
    let warm = |t: &str| {
        for _ in 0..16 {
            assert_eq!(me(b, t).status, 200);
        }
    };
    let t = token("bob-password-1");
    warm(&t);
    control(&["revoke", "bob"], "");
    let took = within_a_second("revoke", || revoked(&t));
    eprintln!("revoke on A refused by B after {took:?}");

    let t = token("bob-password-1");
    warm(&t);
    control(&["lock", "bob"], "");
    let took = within_a_second("lock", || revoked(&t));
    eprintln!("lock on A refused by B after {took:?}");
    control(&["unlock", "bob"], "");

    let t = token("bob-password-1");
    warm(&t);
    assert_eq!(json(&me(b, &t))["role"], "user");
    control(&["role", "bob", "editor"], "");
    let took = within_a_second("role", || json(&me(b, &t))["role"] == "editor");
    eprintln!("role change on A applied by B after {took:?}");

    warm(&t);
    control(&["passwd", "bob"], "bob-password-2\n");
    let took = within_a_second("password", || revoked(&t));
    eprintln!("password change on A refused by B after {took:?}");
    let r = api_login(b.addr, &b.addr.to_string(), "bob", "bob-password-1");
    assert_eq!(r.status, 401, "the old password on B: {}", r.body);
    let t = token("bob-password-2");
    assert_eq!(me(b, &t).status, 200);
    assert_eq!(me(a, &t).status, 200);

    // Logging out on A puts the login on the deny list: a copy of the cookie is refused
    // by B within a second.
    let mut on_a = Client::new(a.addr);
    let host_a = a.addr.to_string();
    let r = on_a.submit(
        &host_a,
        &cluster.origin,
        "/login",
        "/login",
        &[("username", "bob"), ("password", "bob-password-2")],
    );
    assert_eq!(r.status, 303, "{}", r.body);
    let copied = format!("token={}", on_a.jar.get("token").expect("cookie"));
    let with_copy = |server: &Server| server.get("/api/me", &[("Cookie", &copied)]);
    for _ in 0..16 {
        assert_eq!(with_copy(b).status, 200);
    }
    let r = on_a.submit(&host_a, &cluster.origin, "/logout", "/logout", &[]);
    assert_eq!(r.status, 303, "{}", r.body);
    let took = within_a_second("logout", || {
        let r = with_copy(b);
        r.status == 401 && json(&r)["error"] == "revoked"
    });
    eprintln!("logout on A refused by B after {took:?}");

    // 8 clients register at once through nginx, racing for the same names.
    const CLIENTS: usize = 8;
    let names: Vec<String> = (0..6).map(|i| format!("Racer{i}")).collect();
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let (barrier, names) = (barrier.clone(), names.clone());
            let (addr, host, origin) = (
                cluster.nginx.addr,
                cluster.host.clone(),
                cluster.origin.clone(),
            );
            thread::spawn(move || {
                let mut won = Vec::new();
                barrier.wait();
                for i in 0..names.len() {
                    // Each client its own order, and its own case.
                    let name = &names[(i + n) % names.len()];
                    let name = if n % 2 == 0 {
                        name.to_lowercase()
                    } else {
                        name.clone()
                    };
                    let mut c = Client::new(addr);
                    let r = c.submit(
                        &host,
                        &origin,
                        "/register",
                        "/register",
                        &[
                            ("username", &name),
                            ("password", "racer-password"),
                            ("confirm", "racer-password"),
                        ],
                    );
                    assert_eq!(r.status, 303, "{}", r.body);
                    if r.location() == "/" {
                        won.push(name.to_lowercase());
                    }
                }
                won
            })
        })
        .collect();
    let mut won: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client"))
        .collect();
    won.sort();
    let expected: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    assert_eq!(won, expected, "each name won exactly once");
    let listed: Vec<String> = cluster
        .users()
        .iter()
        .filter_map(|u| u["name"].as_str().map(str::to_lowercase))
        .collect();
    let unique: HashSet<&String> = listed.iter().collect();
    assert_eq!(unique.len(), listed.len(), "no duplicate names: {listed:?}");

    // 8 administrator sessions revoke one user at once through nginx: no bump is lost.
    let target = cluster
        .users()
        .iter()
        // Whichever client won the name registered it in its own case.
        .find(|u| {
            u["name"]
                .as_str()
                .is_some_and(|n| n.eq_ignore_ascii_case("racer0"))
        })
        .expect("racer0")["id"]
        .as_u64()
        .expect("id");
    const REVOKES: usize = 5;
    let barrier = Arc::new(Barrier::new(CLIENTS));
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut admin = cluster.browser("root", ROOT_PASSWORD);
            let barrier = barrier.clone();
            let (host, origin) = (cluster.host.clone(), cluster.origin.clone());
            thread::spawn(move || {
                barrier.wait();
                let mut upstreams = HashSet::new();
                for _ in 0..REVOKES {
                    let r = admin.submit(
                        &host,
                        &origin,
                        "/admin",
                        &format!("/admin/users/{target}/revoke"),
                        &[],
                    );
                    assert_eq!(r.status, 303, "{}", r.body);
                    upstreams.insert(r.header("x-upstream").unwrap_or("").to_string());
                }
                upstreams
            })
        })
        .collect();
    let mut upstreams = HashSet::new();
    for t in threads {
        upstreams.extend(t.join().expect("admin"));
    }
    assert_eq!(
        upstreams,
        both,
        "revokes went through both instances; nginx's error log:\n{}",
        cluster.nginx.error_log()
    );
    let ver = cluster
        .users()
        .iter()
        .find(|u| u["id"] == target)
        .expect("target")["ver"]
        .as_u64()
        .expect("ver");
    assert_eq!(ver, (CLIENTS * REVOKES) as u64, "no lost version bump");
    assert!(
        !cluster.nginx.error_log().contains("[crit]"),
        "{}",
        cluster.nginx.error_log()
    );

    // The second factor across instances: enrolment started on A and confirmed on B; the
    // code that confirmed it is refused as a replay on A; a recovery code spent on A is
    // refused on B.
    cluster.user(&["add", "dora", "--role", "user"], "dora-password-1\n");
    let json_post = |server: &Server, path: &str, bearer: Option<&str>, body: serde_json::Value| {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("Content-Type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        server.request("POST", path, &headers, body.to_string().as_bytes())
    };
    let login = json!({"username": "dora", "password": "dora-password-1"});
    let r = json_post(a, "/api/login", None, login.clone());
    assert_eq!(r.status, 200, "{}", r.body);
    let t = json(&r)["token"].as_str().expect("token").to_string();
    let r = json_post(a, "/api/account/totp", Some(&t), json!({}));
    assert_eq!(r.status, 200, "{}", r.body);
    let secret = data_encoding::BASE32_NOPAD
        .decode(json(&r)["secret"].as_str().expect("secret").as_bytes())
        .expect("base32");
    let now = support::now();
    let code = format!("{:06}", latchkey::totp::code_at(&secret, now));
    let r = json_post(
        b,
        "/api/account/totp/enable",
        Some(&t),
        json!({"code": code}),
    );
    assert_eq!(r.status, 200, "enabled on B what A began: {}", r.body);
    let recovery = json(&r)["recovery_codes"][0]
        .as_str()
        .expect("codes")
        .to_string();
    let r = json_post(a, "/api/login", None, login.clone());
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(json(&r)["error"], "otp_required");
    let mut with_code = login.clone();
    with_code["otp"] = json!(code);
    let r = json_post(a, "/api/login", None, with_code);
    assert_ne!(
        r.status, 200,
        "the enrolment's code again, on A: {}",
        r.body
    );
    let mut with_recovery = login.clone();
    with_recovery["recovery_code"] = json!(recovery);
    let r = json_post(a, "/api/login", None, with_recovery.clone());
    assert_eq!(r.status, 200, "a recovery code on A: {}", r.body);
    let r = json_post(b, "/api/login", None, with_recovery);
    assert_ne!(r.status, 200, "the same recovery code on B: {}", r.body);

    // Failed logins are counted once for both instances: three wrong passwords through
    // nginx (round robin: two on one instance, one on the other) lock the name, so the
    // right password is refused on both. Counted per instance, neither would have locked.
    cluster.user(&["add", "carol", "--role", "user"], "carol-password-1\n");
    let login_from = |addr, host: &str, password: &str, client: &str| {
        let body = serde_json::json!({"username": "carol", "password": password}).to_string();
        support::http(
            addr,
            "POST",
            host,
            "/api/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", client),
            ],
            body.as_bytes(),
        )
    };
    let mut upstreams = HashSet::new();
    for _ in 0..3 {
        let r = login_from(
            cluster.nginx.addr,
            &cluster.host,
            "wrong-password",
            "203.0.113.9",
        );
        assert_eq!(r.status, 401, "{}", r.body);
        upstreams.insert(r.header("x-upstream").unwrap_or("").to_string());
    }
    assert_eq!(
        upstreams,
        both,
        "the failures went to both instances; nginx's error log:\n{}",
        cluster.nginx.error_log()
    );
    for server in [a, b] {
        let r = login_from(
            server.addr,
            &server.addr.to_string(),
            "carol-password-1",
            "198.51.100.7",
        );
        assert_eq!(r.status, 429, "throttled on both: {}", r.body);
    }
}

#[test]
#[ignore = "heavy: needs nginx and PostgreSQL's server binaries; run by .ci/run"]
fn the_database_or_an_instance_going_away_is_survived() {
    let pg = PgCluster::start();
    let mut cluster = Cluster::start(&pg, &[]);
    let mut root = cluster.browser("root", ROOT_PASSWORD);
    let api = api_login(cluster.nginx.addr, &cluster.host, "root", ROOT_PASSWORD);
    let token = json(&api)["token"].as_str().expect("token").to_string();

    // PostgreSQL dies mid-run.
    pg.kill();
    let started = Instant::now();
    for server in [cluster.a(), &cluster.b] {
        // Tokens are still verified (as a verify-only instance does), at once.
        let r = me(server, &token);
        assert_eq!(
            r.status, 200,
            "token refused while the database is away: {}",
            r.body
        );
        let r = server.get("/auth", &[("Authorization", &format!("Bearer {token}"))]);
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.header("remote-user"), Some("root"));
        // Logins answer 503, as JSON under /api/.
        let r = api_login(server.addr, &server.addr.to_string(), "root", ROOT_PASSWORD);
        assert_eq!(r.status, 503, "{}", r.body);
        assert_eq!(json(&r)["error"], "unavailable");
        // /healthz names the store; the password never shows.
        let r = server.get("/healthz", &[]);
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.body.contains("user store"), "{}", r.body);
        assert!(!r.body.contains(common::pg::PASSWORD), "{}", r.body);
        assert!(
            !server.log().contains(common::pg::PASSWORD),
            "the password was logged"
        );
    }
    for _ in 0..5 {
        // The cookie still works through nginx (pages that need no write), not slid.
        let r = cluster.app_get(&root, "/");
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            r.header("set-cookie").is_none(),
            "slid while the store is away"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answers took {:?}",
        started.elapsed()
    );
    // Nothing crashed.
    assert!(cluster.a().get("/healthz", &[]).status == 503);

    // PostgreSQL comes back: logins work again without restarting latchkey.
    pg.resume();
    for server in [cluster.a(), &cluster.b] {
        let started = Instant::now();
        loop {
            let r = api_login(server.addr, &server.addr.to_string(), "root", ROOT_PASSWORD);
            if r.status == 200 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "no login after the database came back: {} {}\n{}",
                r.status,
                r.body,
                server.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        let started = Instant::now();
        while server.get("/healthz", &[]).status != 200 {
            assert!(
                started.elapsed() < Duration::from_secs(15),
                "health stays bad"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(
        cluster.a().log().contains("reads work again"),
        "{}",
        cluster.a().log()
    );

    // One instance is killed mid-run: nginx fails over and no request fails.
    let mut failures = Vec::new();
    for i in 0..120 {
        if i == 40 {
            cluster.a.take().expect("A").kill();
        }
        let r = root.get(&cluster.host, "/account", &[]);
        if r.status != 200 {
            failures.push(format!("/account {}", r.status));
        }
        let r = cluster.app_get(&root, "/");
        if r.status != 200 {
            failures.push(format!("app {}", r.status));
        }
        let r = support::get(
            cluster.nginx.addr,
            &cluster.host,
            "/api/me",
            &[("Authorization", &format!("Bearer {token}"))],
        );
        if r.status != 200 {
            failures.push(format!("/api/me {}", r.status));
        }
        thread::sleep(Duration::from_millis(10));
    }
    assert!(failures.is_empty(), "requests failed over: {failures:?}");
    // And the survivor still logs people in.
    let r = api_login(cluster.nginx.addr, &cluster.host, "root", ROOT_PASSWORD);
    assert_eq!(r.status, 200, "{}", r.body);
}

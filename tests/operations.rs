//! Running it for real: configuration layers, systemd notify and socket activation,
//! forward auth, verify-only instances, throttling, health, metrics and the logs.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::token::{now, timed, user};
use common::{Browser, Conn, Server, TempDir, bin};
use latchkey::token::Claims;

/// A verify-only instance with `key`, sending logins to the example portal.
fn start_verifier(key: &std::path::Path) -> Server {
    let key = key.to_str().unwrap();
    let args = [
        "--verify-only",
        "--login-url",
        "https://auth.example.com/login",
        "--key-file",
        key,
    ];
    Server::start(&args, &[])
}

/// A token for the first user, `root` (id 1, admin), with the given times and version.
fn root_token(key: &std::path::Path, iat: i64, exp: i64, auth_time: i64, ver: u64) -> String {
    let claims = Claims {
        ver,
        ..timed(&user(1, "root", "admin", iat), iat, exp, auth_time)
    };
    common::mint(key, &claims)
}

fn serve_check(args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let dir = TempDir::new("check");
    let mut cmd = Command::new(bin());
    cmd.arg("serve")
        .arg("--check")
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("LATCHKEY_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn check_validates_the_configuration_and_names_bad_keys() {
    let (code, out) = serve_check(&[], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("secret.key will be generated on first start"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("configuration ok"), "{out}");

    let (code, out) = serve_check(&[], &[("LATCHKEY_TTL", "soon")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("setting \"ttl\" in the environment must be a whole number"),
        "{out}"
    );

    let (code, out) = serve_check(&[], &[("LATCHKEY_TIMEOUT", "5")]);
    assert_eq!(code, 1);
    assert!(
        out.contains("unknown setting \"LATCHKEY_TIMEOUT\""),
        "{out}"
    );

    let dir = TempDir::new("cfg");
    let file = dir.path().join("latchkey.toml");
    std::fs::write(&file, "workers = 2\nsignup = \"sometimes\"\n").unwrap();
    let (code, out) = serve_check(&["--config", file.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("setting \"signup\" in the config file must be \"open\" or \"closed\""),
        "{out}"
    );

    // Flags win over the environment, which wins over the file.
    std::fs::write(&file, "workers = \"x\"\n").unwrap();
    let (code, out) = serve_check(
        &["--config", file.to_str().unwrap(), "--workers", "0"],
        &[("LATCHKEY_WORKERS", "2")],
    );
    assert_eq!(
        code, 1,
        "the file's bad value is refused even when overridden"
    );
    assert!(out.contains("\"workers\" in the config file"), "{out}");
    std::fs::write(&file, "workers = 3\n").unwrap();
    let (code, out) = serve_check(
        &["--config", file.to_str().unwrap(), "--workers", "0"],
        &[("LATCHKEY_WORKERS", "2")],
    );
    assert_eq!(code, 1);
    assert!(
        out.contains("\"workers\" on the command line must be between 1 and 256, not 0"),
        "{out}"
    );

    let (code, out) = serve_check(&["--verify-only"], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("\"login_url\""), "{out}");

    // A group-readable key file is refused with the chmod to run.
    let key = dir.path().join("open.key");
    latchkey::keys::generate(&key).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out) = serve_check(&["--key-file", key.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(out.contains("chmod"), "{out}");
}

#[test]
fn notifies_systemd_ready_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    for abstract_name in [false, true] {
        let (socket, name) = if abstract_name {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("latchkey-test-{}-{}", std::process::id(), now());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            (UnixDatagram::bind_addr(&addr).unwrap(), format!("@{name}"))
        } else {
            let path = dir.path().join("notify.sock");
            let _ = std::fs::remove_file(&path);
            (
                UnixDatagram::bind(&path).unwrap(),
                path.to_str().unwrap().to_string(),
            )
        };
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let server = Server::start(
            &[],
            &[("NOTIFY_SOCKET", &name), ("WATCHDOG_USEC", "200000")],
        );
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while !(got.contains(&"READY=1".to_string()) && got.contains(&"WATCHDOG=1".to_string())) {
            let n = socket.recv(&mut buf).expect("a notification");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(got[0], "READY=1", "READY comes first, once listening");
        assert_eq!(server.get("/healthz", &[]).status, 200);
        let status = server.stop();
        assert!(status.success());
        let mut stopping = false;
        while let Ok(n) = socket.recv(&mut buf) {
            if &buf[..n] == b"STOPPING=1" {
                stopping = true;
                break;
            }
        }
        assert!(
            stopping,
            "STOPPING=1 on SIGTERM (abstract: {abstract_name})"
        );
    }
}

#[test]
fn serves_on_a_socket_passed_by_systemd() {
    let dir = TempDir::new("sockact");
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("sh");
    // LISTEN_PID must be the server's own pid: `exec` keeps the shell's.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" serve --listen 127.0.0.1:1 --data-dir \"$1\"")
        .arg(bin())
        .arg(dir.path().join("data"))
        .env("LATCHKEY_ARGON2_MEMORY_KIB", "64")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe; they only put our listener at
    // fd 3 of the child, without close-on-exec.
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 {
                libc_fcntl(3, 2, 0)
            } else {
                libc_dup2(fd, 3)
            };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(listener);
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut lines = stderr.lines();
    let started = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains("listening on")))
        .unwrap()
        .unwrap();
    assert!(started.contains(&addr.to_string()), "{started}");
    std::thread::spawn(move || for _ in lines {});
    let mut conn = Conn::open(addr);
    let r = conn.send("GET", "/healthz", &[], b"");
    assert_eq!(r.status, 200);
    common::signal(child.id(), 15);
    assert!(common::wait_timeout(&mut child, Duration::from_secs(10)).success());
}

unsafe extern "C" {
    #[link_name = "dup2"]
    fn libc_dup2(old: i32, new: i32) -> i32;
    #[link_name = "fcntl"]
    fn libc_fcntl(fd: i32, cmd: i32, arg: i32) -> i32;
}

#[test]
fn forward_auth_answers() {
    let server = Server::start(
        &[],
        &[
            ("LATCHKEY_PUBLIC_URL", "https://auth.example.com"),
            ("LATCHKEY_COOKIE_DOMAIN", "example.com"),
        ],
    );
    let admin = Browser::registered(&server, "root", "root-password");
    let cookie = admin.jar.header();

    // Logged in: 200 with the identity headers.
    let r = server.get("/auth", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("remote-user"), Some("root"));
    assert_eq!(r.header("remote-name"), Some("root"));
    assert_eq!(r.header("remote-role"), Some("admin"));
    assert_eq!(
        server
            .get("/auth?role=admin", &[("Cookie", &cookie)])
            .status,
        200
    );
    assert_eq!(
        server
            .get("/auth?role=editor,admin", &[("Cookie", &cookie)])
            .status,
        200
    );
    assert_eq!(
        server
            .get("/auth?role=editor", &[("Cookie", &cookie)])
            .status,
        403
    );

    // nginx: 401 with the login page and the original URL as next.
    let r = server.get(
        "/auth",
        &[("X-Original-URL", "https://app.example.com/private?x=1")],
    );
    assert_eq!(r.status, 401);
    assert_eq!(
        r.location(),
        "https://auth.example.com/login?next=https%3A//app.example.com/private%3Fx%3D1"
    );
    // Caddy / Traefik: 302 built from X-Forwarded-*.
    let r = server.get(
        "/auth",
        &[
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "app.example.com"),
            ("X-Forwarded-Uri", "/deep/page"),
        ],
    );
    assert_eq!(r.status, 302);
    assert_eq!(
        r.location(),
        "https://auth.example.com/login?next=https%3A//app.example.com/deep/page"
    );
    // Open-redirect tricks: the target is dropped, the login page stays.
    for evil in [
        "https://evil.example/",
        "https://example.com.evil.example/",
        "https://app.example.com@evil.example/",
        "https://evilexample.com/",
        "javascript://app.example.com/%0aalert(1)",
        "//evil.example/",
        "https://app.example.com\\@evil.example/",
    ] {
        let r = server.get("/auth", &[("X-Original-URL", evil)]);
        assert_eq!(r.status, 401, "{evil}");
        assert_eq!(r.location(), "https://auth.example.com/login", "{evil}");
    }
    // The login form honours an allowed absolute next and refuses the others.
    let mut b = Browser::new(&server);
    let r = b.submit(
        "/login",
        "/login",
        &[
            ("username", "root"),
            ("password", "root-password"),
            ("next", "https://app.example.com/x"),
        ],
    );
    assert_eq!(r.location(), "https://app.example.com/x");

    // A sliding refresh comes back as exactly one Set-Cookie.
    let c = common::claims_of(admin.jar.get("token").unwrap());
    let t = now();
    let due = root_token(&server.key_file(), t - 3500, t + 60, c.auth_time, c.ver);
    let r = server.get("/auth", &[("Cookie", &format!("token={due}"))]);
    assert_eq!(r.status, 200);
    let set: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k == "set-cookie")
        .collect();
    assert_eq!(set.len(), 1, "{set:?}");
    assert!(set[0].1.starts_with("token=") && set[0].1.contains("Domain=example.com"));
}

#[test]
fn verify_only_instances_validate_without_a_store() {
    let issuer = Server::start(&[], &[]);
    let admin = Browser::registered(&issuer, "root", "root-password");
    let key = issuer.key_file();
    let verifier = start_verifier(&key);
    let cookie = admin.jar.header();
    let me = verifier.get("/api/me", &[("Cookie", &cookie)]);
    assert_eq!(me.status, 200);
    assert!(me.body.contains("\"name\":\"root\""));
    assert_eq!(verifier.get("/auth", &[("Cookie", &cookie)]).status, 200);
    assert!(
        verifier
            .get("/", &[("Cookie", &cookie)])
            .body
            .contains("Hello, root!")
    );
    let account = verifier.get("/account", &[("Cookie", &cookie)]);
    assert_eq!(account.status, 200);
    assert!(
        !account.body.contains("Change password"),
        "no store, no password form"
    );
    // Logins go to the issuer.
    let r = verifier.get("/login?next=/account", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(r.location(), "https://auth.example.com/login?next=/account");
    let r = verifier.get("/account", &[]);
    assert_eq!(r.location(), "https://auth.example.com/login?next=/account");
    let r = verifier.request(
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        b"{}",
    );
    assert_eq!(r.status, 404);
    assert_eq!(verifier.get("/healthz", &[]).body, "ok (verify-only)\n");
    // The documented trade-off: a revoked token stays valid here until it expires.
    let mut admin = admin;
    let r = admin.submit("/account", "/account/revoke", &[]);
    assert_eq!(r.status, 303);
    assert_eq!(issuer.get("/api/me", &[("Cookie", &cookie)]).status, 401);
    assert_eq!(verifier.get("/api/me", &[("Cookie", &cookie)]).status, 200);
    // But expiry is honoured everywhere.
    let t = now();
    let old = root_token(&key, t - 7200, t - 60, t - 7200, 0);
    let r = verifier.get("/api/me", &[("Cookie", &format!("token={old}"))]);
    assert_eq!(r.status, 401);
    assert!(r.body.contains("\"error\":\"expired\""));
}

fn login(server: &Server, name: &str, password: &str, xff: Option<&str>) -> common::Response {
    let body = serde_json::json!({ "username": name, "password": password }).to_string();
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(xff) = xff {
        headers.push(("X-Forwarded-For", xff));
    }
    server.request("POST", "/api/login", &headers, body.as_bytes())
}

#[test]
fn logins_beyond_login_concurrency_get_503_while_tokens_keep_answering() {
    // Two workers, one hash at a time, and hashes slow enough (about a second here) for
    // two logins to overlap.
    let server = Server::start(
        &[],
        &[
            ("LATCHKEY_WORKERS", "2"),
            ("LATCHKEY_LOGIN_CONCURRENCY", "1"),
            ("LATCHKEY_ARGON2_MEMORY_KIB", "19456"),
            ("LATCHKEY_ARGON2_ITERATIONS", "6"),
        ],
    );
    let root = Browser::registered(&server, "root", "root-password");
    let cookie = format!("token={}", root.jar.get("token").unwrap());
    std::thread::scope(|s| {
        let first = s.spawn(|| login(&server, "root", "root-password", None));
        std::thread::sleep(Duration::from_millis(150));
        // The first login holds the only hashing place: the second is refused at once
        // instead of taking the other worker.
        let second = login(&server, "root", "root-password", None);
        assert_eq!(second.status, 503, "{}", second.body);
        assert_eq!(second.header("retry-after"), Some("1"));
        assert!(
            second.body.contains("\"error\":\"busy\""),
            "{}",
            second.body
        );
        // A token-only request is answered while the hash still runs.
        let auth = server.get("/auth", &[("Cookie", &cookie)]);
        assert_eq!(auth.status, 200);
        assert!(
            !first.is_finished(),
            "the first login should still be hashing: this test needs overlapping logins"
        );
        assert_eq!(first.join().unwrap().status, 200);
    });
    // The place is free again once the hash is done.
    assert_eq!(login(&server, "root", "root-password", None).status, 200);
}

#[test]
fn failed_logins_are_throttled_per_name_and_address() {
    let server = Server::start(&[], &[("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1")]);
    Browser::registered(&server, "root", "root-password");
    // Per name: four failures, a success resets the count, then five lock it.
    for _ in 0..4 {
        assert_eq!(
            login(&server, "root", "wrong-password", Some("10.0.0.1")).status,
            401
        );
    }
    assert_eq!(
        login(&server, "root", "root-password", Some("10.0.0.2")).status,
        200
    );
    for i in 0..5 {
        assert_eq!(
            login(
                &server,
                "root",
                "wrong-password",
                Some(&format!("10.0.1.{i}"))
            )
            .status,
            401
        );
    }
    let r = login(&server, "root", "root-password", Some("10.0.2.1"));
    assert_eq!(
        r.status, 429,
        "the name is locked even with the right password"
    );
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((290..=300).contains(&retry), "{retry}");
    // The browser form says the same, on the login page it redirects back to.
    let mut b = Browser::new(&server);
    let r = b.submit(
        "/login",
        "/login",
        &[("username", "root"), ("password", "root-password")],
    );
    assert_eq!(r.status, 303);
    let page = b.get(r.location());
    assert!(
        page.body.contains("Too many failed logins"),
        "{}",
        page.body
    );

    // Per address, from a trusted proxy's X-Forwarded-For: random names from one
    // client lock that client only.
    for i in 0..5 {
        assert_eq!(
            login(
                &server,
                &format!("nobody{i}"),
                "whatever-pass",
                Some("192.0.2.9")
            )
            .status,
            401
        );
    }
    assert_eq!(
        login(&server, "someone", "whatever-pass", Some("192.0.2.9")).status,
        429
    );
    assert_eq!(
        login(&server, "someone", "whatever-pass", Some("192.0.2.10")).status,
        401
    );
    // The right-most untrusted hop counts: a spoofed left entry does not help.
    assert_eq!(
        login(
            &server,
            "someone",
            "whatever-pass",
            Some("1.2.3.4, 192.0.2.9")
        )
        .status,
        429
    );

    // Without trusted proxies the header is ignored: everything is the loopback peer.
    let plain = Server::start(&[], &[]);
    Browser::registered(&plain, "root", "root-password");
    for i in 0..5 {
        assert_eq!(
            login(
                &plain,
                &format!("x{i}"),
                "whatever-pass",
                Some(&format!("198.51.100.{i}"))
            )
            .status,
            401
        );
    }
    assert_eq!(
        login(&plain, "root", "root-password", Some("203.0.113.1")).status,
        429
    );
    let metrics = plain.get("/metrics", &[]).body;
    assert!(
        metrics.contains("latchkey_logins_total{outcome=\"failed\"} 5"),
        "{metrics}"
    );
    assert!(
        metrics.contains("latchkey_logins_total{outcome=\"throttled\"} 1"),
        "{metrics}"
    );
}

#[test]
fn health_and_metrics() {
    let server = Server::start(&[], &[]);
    let admin = Browser::registered(&server, "root", "root-password");
    assert_eq!(server.get("/healthz", &[]).body, "ok\n");
    server.get("/auth", &[("Cookie", &admin.jar.header())]);
    server.get("/auth", &[]);
    server.get("/api/me", &[("Cookie", "token=garbage")]);
    let r = server.get("/metrics", &[]);
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    for line in [
        "latchkey_requests_total{route=\"auth\",status=\"200\"} 1",
        "latchkey_requests_total{route=\"auth\",status=\"401\"} 1",
        "latchkey_requests_total{route=\"register\",status=\"303\"} 1",
        "latchkey_token_rejections_total{class=\"malformed\"} 1",
        "latchkey_logins_total{outcome=\"ok\"} 0",
        "latchkey_workers 4",
        "latchkey_build_info{version=\"",
        "latchkey_request_duration_seconds_count ",
    ] {
        assert!(r.body.contains(line), "missing {line} in\n{}", r.body);
    }
    let off = Server::start(&[], &[("LATCHKEY_METRICS", "off")]);
    assert_eq!(off.get("/metrics", &[]).status, 404);
}

#[test]
fn requests_the_connection_layer_refuses_are_counted_and_logged() {
    use std::io::{Read, Write};
    let server = Server::start(&[], &[]);
    let mut s = std::net::TcpStream::connect(server.addr).expect("connect");
    s.write_all(b"GET /api/whatever HTTP/2.0\r\n\r\n")
        .expect("write");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 505 "), "{answer}");
    assert!(answer.contains("\"error\""), "JSON under /api/: {answer}");
    let text = server.get("/metrics", &[]).body;
    for line in [
        "latchkey_connections_total{outcome=\"answered_by_the_connection_layer\"} 1",
        "latchkey_requests_total{route=\"other\",status=\"505\"} 1",
        "latchkey_connections ",
        "latchkey_connections_max ",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
    let started = std::time::Instant::now();
    while !server.log().contains(" access - /api/whatever 505 ") {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "no access line for the refusal in\n{}",
            server.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn logs_never_contain_secrets() {
    let server = Server::start(&[], &[("LATCHKEY_LOG", "debug")]);
    let password = "Secret-Pass-Word-123";
    let mut admin = Browser::registered(&server, "root", password);
    let token = admin.jar.get("token").unwrap().to_string();
    let csrf_cookie = admin.jar.get("csrf").unwrap().to_string();
    let api = login(&server, "root", password, None);
    assert_eq!(api.status, 200);
    admin.submit(
        "/account",
        "/account/password",
        &[
            ("current", password),
            ("password", "Another-Pass-456"),
            ("confirm", "Another-Pass-456"),
        ],
    );
    login(&server, "root", "Wrong-Pass-789", None);
    server.get(
        "/api/me?token=query-secret",
        &[("Authorization", &format!("Bearer {token}"))],
    );
    server.get("/", &[("Cookie", "token=tampered.garbage.value")]);
    std::thread::sleep(Duration::from_millis(200));
    let log = server.log();
    assert!(
        log.lines()
            .any(|l| l.contains(" access POST /account/password 303 ") && l.ends_with(" root")),
        "the access line names the logged-in user: {log}"
    );
    assert!(log.contains("access GET /api/me "), "the path is logged");
    for secret in [
        password,
        "Another-Pass-456",
        "Wrong-Pass-789",
        &token,
        &token[..20],
        &csrf_cookie,
        "query-secret",
        "tampered.garbage.value",
    ] {
        assert!(
            !log.contains(secret),
            "{secret} leaked into the log:\n{log}"
        );
    }
}

#[test]
fn verify_only_instances_never_extend_a_token() {
    let issuer = Server::start(&[], &[]);
    Browser::registered(&issuer, "root", "root-password");
    let key = issuer.key_file();
    let verifier = start_verifier(&key);
    let t = now();
    let cookie = format!("token={}", root_token(&key, t - 3500, t + 60, t - 3500, 0));
    let r = verifier.get("/auth", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200);
    assert!(
        r.set_cookies("token").is_empty(),
        "a verifier cannot know about revocation"
    );
    let r = issuer.get("/auth", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.set_cookies("token").len(), 1, "the issuer slides it");
}

#[test]
fn a_port_in_use_is_reported_before_anything_is_made() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = common::TempDir::new("port");
    let data = dir.path().join("data");
    let out = std::process::Command::new(common::bin())
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("LATCHKEY_KEY_FILE")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen on 127.0.0.1:"), "{err}");
    assert!(
        !data.join("secret.key").exists() && !data.join("users.redb").exists(),
        "no key and no store were made for a server that could not listen"
    );
    drop(taken);
}

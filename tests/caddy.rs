//! latchkey behind a real Caddy (Debian's `caddy`): the `contrib/Caddyfile` portal and
//! `forward_auth` gate in front of a stand-in app.
//!
//! Heavy: run with `cargo test --test caddy -- --ignored` (`.ci/run` does). Without
//! `/usr/bin/caddy` this test fails, it does not skip.

mod common;
mod support;

use common::{Server, claims_of, jwt_claims, mint};
use latchkey::token::Claims;
use support::{Caddy, Client, Port, Shipped, get, now};

/// Percent-encodes as latchkey does for `next=` values: all but unreserved and `/`.
fn pct(s: &str) -> String {
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

/// `contrib/Caddyfile`, rendered for the test: plain-HTTP site addresses on one loopback
/// port instead of the TLS hosts, the test's latchkey instead of 127.0.0.1:8080, and a
/// stand-in app instead of 127.0.0.1:3000. Every directive else stays as shipped; each
/// replacement must find its target, so the file and this test cannot drift apart.
fn render_contrib(port: u16, latchkey: &str, app_port: u16, storage: &str) -> String {
    let mut file = Shipped::open("contrib/Caddyfile");
    file.replace(
        "\nauth.example.com {",
        &format!("\nhttp://auth.example.com:{port} {{"),
        1,
    );
    file.replace(
        "\napp.example.com {",
        &format!("\nhttp://app.example.com:{port} {{"),
        1,
    );
    file.replace(
        "reverse_proxy 127.0.0.1:8080",
        &format!("reverse_proxy {latchkey}"),
        1,
    );
    file.replace(
        "forward_auth 127.0.0.1:8080 {",
        &format!("forward_auth {latchkey} {{"),
        2,
    );
    file.replace(
        "reverse_proxy 127.0.0.1:3000",
        &format!("reverse_proxy 127.0.0.1:{app_port}"),
        2,
    );
    // What the assertions below rely on, left as it is.
    for (directive, count) in [
        ("respond /metrics 404", 1),
        ("handle /admin/* {", 1),
        ("uri /auth?role=admin\n", 1),
        ("uri /auth\n", 1),
        (
            "copy_headers Remote-User Remote-Name Remote-Role Remote-Id\n",
            2,
        ),
    ] {
        file.expect(directive, count);
    }
    // Global options first (comments may precede them), the stand-in app last: it
    // echoes the identity headers it receives. No host in its address: reverse_proxy
    // passes the client's Host on.
    format!(
        "{{\n\tauto_https off\n\tadmin off\n\tdefault_bind 127.0.0.1\n\tstorage file_system {storage}\n}}\n\n\
         {}\n\
         http://:{app_port} {{\n\
         \trespond \"app: user=[{{http.request.header.Remote-User}}] \
         name=[{{http.request.header.Remote-Name}}] \
         role=[{{http.request.header.Remote-Role}}] \
         id=[{{http.request.header.Remote-Id}}] uri=[{{http.request.uri}}]\" 200\n\
         }}\n",
        file.text
    )
}

#[test]
#[ignore = "heavy: needs caddy; run by .ci/run"]
fn contrib_caddyfile_forward_auth_gate_protects_an_app() {
    support::caddy_bin();
    let (listen, app) = (Port::reserve(), Port::reserve());
    let port = listen.port;
    let portal_origin = format!("http://auth.example.com:{port}");
    let portal = format!("auth.example.com:{port}");
    let app_host = format!("app.example.com:{port}");
    let latchkey = Server::start(
        &[],
        &[
            ("LATCHKEY_PUBLIC_URL", &portal_origin),
            ("LATCHKEY_COOKIE_DOMAIN", "example.com"),
            ("LATCHKEY_COOKIE_SECURE", "false"),
            ("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1"),
        ],
    );
    let storage = common::TempDir::new("caddy-storage");
    let conf = render_contrib(
        port,
        &latchkey.addr.to_string(),
        app.port,
        storage.path().to_str().unwrap(),
    );
    let caddy = Caddy::start(&conf, vec![listen, app]);
    let log = || format!("caddy:\n{}\nlatchkey:\n{}", caddy.log(), latchkey.log());

    // Anonymous: latchkey's 302 to the login page, carrying the original URL as next,
    // reaches the browser as it is; the app never sees the request.
    let mut alice = Client::new(caddy.addr);
    let r = alice.get(&app_host, "/dashboard?x=1&y=two", &[]);
    assert_eq!(r.status, 302, "{}\n{}", r.body, log());
    let next = format!("http://{app_host}/dashboard?x=1&y=two");
    assert_eq!(
        r.location(),
        format!("{portal_origin}/login?next={}", pct(&next))
    );
    assert!(!r.body.contains("app:"), "{}", r.body);
    let r = alice.get(&app_host, "/admin/users", &[]);
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.location(),
        format!(
            "{portal_origin}/login?next={}",
            pct(&format!("http://{app_host}/admin/users"))
        )
    );

    // Register the first user (an admin) at the portal, through Caddy.
    let r = alice.submit(
        &portal,
        &portal_origin,
        "/register",
        "/register",
        &[
            ("username", "alice"),
            ("password", "alice-password"),
            ("confirm", "alice-password"),
        ],
    );
    assert_eq!(r.status, 303, "{}\n{}", r.body, log());
    let set = r.set_cookies("token");
    assert!(
        set.len() == 1 && set[0].contains("Domain=example.com"),
        "{:?}",
        r.headers
    );
    let token = alice.jar.get("token").expect("token cookie").to_string();
    let id = jwt_claims(&token)["sub"].as_str().unwrap().to_string();

    // The app sees who it is; forged identity headers from the client are replaced.
    let r = alice.get(
        &app_host,
        "/dashboard?x=1&y=two",
        &[
            ("Remote-User", "mallory"),
            ("Remote-Name", "Mallory"),
            ("Remote-Role", "root"),
            ("Remote-Id", "999"),
        ],
    );
    assert_eq!(r.status, 200, "{}\n{}", r.body, log());
    assert_eq!(
        r.body,
        format!("app: user=[alice] name=[alice] role=[admin] id=[{id}] uri=[/dashboard?x=1&y=two]")
    );
    let r = alice.get(&app_host, "/admin/users", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("user=[alice]") && r.body.contains("uri=[/admin/users]"),
        "{}",
        r.body
    );

    // The admin creates a plain user on the admin page, through Caddy.
    let r = alice.submit(
        &portal,
        &portal_origin,
        "/admin",
        "/admin/users",
        &[
            ("username", "bob"),
            ("password", "bob-password"),
            ("role", "user"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Created bob."), "{}", r.body);

    // bob logs in with the next the gate gave, and lands back on the app.
    let mut bob = Client::new(caddy.addr);
    let r = bob.get(&app_host, "/admin/users", &[]);
    assert_eq!(r.status, 302);
    let login_path = r
        .location()
        .strip_prefix(portal_origin.as_str())
        .unwrap_or_else(|| panic!("login page off the portal: {}", r.location()))
        .to_string();
    let bob_next = format!("http://{app_host}/admin/users");
    let r = bob.submit(
        &portal,
        &portal_origin,
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
    // Without the admin role: latchkey's 403 for the gated part, the app never sees it.
    let r = bob.get(&app_host, "/admin/users", &[("Remote-Role", "admin")]);
    assert_eq!(r.status, 403, "{}\n{}", r.body, log());
    assert!(!r.body.contains("app:"), "{}", r.body);
    let r = bob.get(&app_host, "/", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("user=[bob] name=[bob] role=[user]"),
        "{}",
        r.body
    );

    // The documented limitation: a token due for the sliding refresh passes the gate,
    // but the refreshed cookie does not reach the browser (copy_headers copies into
    // the request to the app only).
    let t = now();
    let key = latchkey.key_file();
    let old = Claims {
        iat: t - 3000,
        exp: t + 600,
        auth_time: t - 3000,
        ..claims_of(&token)
    };
    let cookie = format!("token={}", mint(&key, &old));
    let r = get(caddy.addr, &app_host, "/dashboard", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("user=[alice]"), "{}", r.body);
    assert!(r.set_cookies("token").is_empty(), "{:?}", r.headers);

    // An expired cookie: back to the login page, and latchkey's clearing of the cookie
    // comes along with the 302.
    let expired = Claims {
        iat: t - 7200,
        exp: t - 3600,
        auth_time: t - 7200,
        ..claims_of(&token)
    };
    let cookie = format!("token={}", mint(&key, &expired));
    let r = get(caddy.addr, &app_host, "/dashboard", &[("Cookie", &cookie)]);
    assert_eq!(r.status, 302, "{}", r.body);
    assert_eq!(
        r.location(),
        format!(
            "{portal_origin}/login?next={}",
            pct(&format!("http://{app_host}/dashboard"))
        )
    );
    assert!(
        r.set_cookies("token")
            .first()
            .is_some_and(|c| c.contains("Max-Age=0")),
        "{:?}",
        r.headers
    );

    // The operator endpoint stays off the net at the portal: Caddy answers, not
    // latchkey (which would serve it, every request coming from loopback).
    let r = get(caddy.addr, &portal, "/metrics", &[]);
    assert_eq!(r.status, 404);
    assert!(!r.body.contains("latchkey_"), "{}", r.body);
    assert_eq!(
        latchkey.get("/metrics", &[]).status,
        200,
        "latchkey itself serves /metrics to loopback"
    );
    // The rest of the portal is proxied as it is.
    let r = get(caddy.addr, &portal, "/healthz", &[]);
    assert_eq!(r.status, 200, "{}", r.body);
}

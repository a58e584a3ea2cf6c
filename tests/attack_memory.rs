//! Memory an unauthenticated attacker can drive.
//!
//! A connection that has sent a large head (up to 32 KiB of headers latchkey never reads)
//! and most of a body (up to 16 KiB) and then stalls costs the server about 80 KiB: the
//! connection's input buffer (grown by doubling), a copy of every header in the parsed
//! head, and the body buffer. The README promises "a slow, silent or non-reading client
//! holds a few hundred bytes of state and one descriptor" and a server for "a 512 MB
//! VPS", but the default `max_connections` under the shipped unit is 10,000, and the
//! per-address cap (64) is per IPv4 address or IPv6 /64, so an attacker with ~160
//! addresses (one IPv6 /56) fills every slot: about 800 MB.

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use common::{Server, TempDir, connect_from, release_bin};

fn raise_descriptor_limit() {
    // SAFETY: plain rlimit calls on a local struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
}

/// The `max_connections` the server logged at start.
fn max_connections(server: &Server) -> u64 {
    let log = server.log();
    let at = log.find("(at most ").expect("listening line");
    log[at + 9..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "heavy: release binary, 1024 connections from 16 loopback addresses"]
fn stalled_bodies_cost_about_80_kib_each_so_max_connections_outgrows_a_512_mb_host() {
    raise_descriptor_limit();
    let dir = Arc::new(TempDir::new("attack-mem"));
    // Deadlines long enough to measure; everything else at its default.
    let server = Server::start_bin(
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_HEADER_TIMEOUT", "60"),
            ("LATCHKEY_BODY_TIMEOUT", "60"),
        ],
    );
    let max = max_connections(&server);
    let (_, before) = server.memory_kb();

    let pad = format!("X-Pad: {}\r\n", "a".repeat(8000));
    let mut request = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 16384\r\n{}X-P: {}\r\n\r\n",
        pad.repeat(3),
        "b".repeat(7000)
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'a', 16383));

    let mut conns: Vec<TcpStream> = Vec::new();
    for a in 0..16u8 {
        for _ in 0..64 {
            let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 10 + a), server.addr).unwrap();
            c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(&request).unwrap();
            conns.push(c);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let (_, after) = server.memory_kb();
    let per_conn_kib = (after.saturating_sub(before)) as f64 / conns.len() as f64;
    let at_max_mib = per_conn_kib * max as f64 / 1024.0;
    // A client from another address is still served meanwhile (the layer itself holds).
    let mut probe = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    drop(conns);
    assert!(
        at_max_mib < 256.0,
        "each stalled request costs {per_conn_kib:.1} KiB; at the default max_connections \
         ({max}) that is {at_max_mib:.0} MiB, more than a 512 MB host can give"
    );
}

/// Logging in and out again adds one entry to the deny list per login, kept until that
/// login could no longer be valid (up to `absolute_limit`, 7 days by default). Any
/// account holder could do it as fast as the server hashes passwords: the list grew in
/// memory and on disk without a bound, and every logout rewrote the whole list. Now one
/// user holds at most `MAX_REVOKED_PER_USER` entries (past it, a logout ends all of
/// their sessions instead) and a logout touches only its user's entries.
#[test]
#[ignore = "heavy: release binary, 3,000 logins and logouts"]
fn one_user_logging_in_and_out_keeps_the_deny_list_bounded() {
    use common::{Conn, csrf_of};
    let dir = Arc::new(TempDir::new("attack-deny"));
    // The cheapest hashing, so that the test measures the deny list, not argon2.
    let server = Server::start_bin(
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_ARGON2_MEMORY_KIB", "8"),
            ("LATCHKEY_ARGON2_ITERATIONS", "1"),
            ("LATCHKEY_ARGON2_PARALLELISM", "1"),
        ],
    );
    let data = server.data_dir();
    let (code, _, err) = common::cli(
        &[
            "user",
            "add",
            "mallory",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        "correct horse battery\n",
    );
    assert_eq!(code, 0, "{err}");
    let mut conn = Conn::open(server.addr);
    let body = br#"{"username":"mallory","password":"correct horse battery"}"#;
    let n = 3_000;
    let window = 300;
    let (mut first, mut last) = (Duration::ZERO, Duration::ZERO);
    let (mut before, mut store_before) = (0, 0);
    for i in 0..n {
        if i == window {
            // After the list has reached its bound once.
            before = server.memory_kb().1;
            store_before = std::fs::metadata(data.join("users.redb")).unwrap().len();
        }
        let r = conn.send(
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(r.status, 200, "{}", r.body);
        let token = serde_json::from_str::<serde_json::Value>(&r.body).unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let bearer = format!("Bearer {token}");
        let page = conn.send("GET", "/logout", &[("Authorization", &bearer)], b"");
        let csrf = csrf_of(&page.body).unwrap();
        let cookie = page.cookie("csrf").unwrap();
        let form = format!("csrf={csrf}");
        let started = std::time::Instant::now();
        let r = conn.send(
            "POST",
            "/logout",
            &[
                ("Authorization", &bearer),
                ("Cookie", &format!("csrf={cookie}")),
                ("Content-Type", "application/x-www-form-urlencoded"),
            ],
            form.as_bytes(),
        );
        assert_eq!(r.status, 303, "{}", r.body);
        if (window..2 * window).contains(&i) {
            first += started.elapsed();
        } else if i >= n - window {
            last += started.elapsed();
        }
    }
    let metrics = server.get("/metrics", &[]).body;
    let listed: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("latchkey_store_revoked_tokens "))
        .expect("the deny list gauge")
        .parse()
        .unwrap();
    assert!(
        listed <= latchkey::store::MAX_REVOKED_PER_USER,
        "{listed} entries on the deny list after {n} logouts by one user"
    );
    let after = server.memory_kb().1;
    let store_after = std::fs::metadata(data.join("users.redb")).unwrap().len();
    let grown_kib = after.saturating_sub(before);
    assert!(
        grown_kib < 1024 && store_after <= store_before * 2,
        "{n} logins and logouts by one user grew the server by {grown_kib} KiB and the store \
         file from {store_before} to {store_after} bytes"
    );
    let (first, last) = (first / window, last / window);
    assert!(
        last < first * 3 + Duration::from_millis(2),
        "a logout took {first:?} on average early and {last:?} at the end"
    );
}

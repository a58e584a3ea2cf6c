//! Memory an unauthenticated attacker can drive.
//!
//! A connection that has sent a large head and most of a body and then stalls used to
//! cost about 80 KiB (an input buffer grown by doubling, a copy of every header, a body
//! buffer of the announced length), while the default `max_connections` was 10,000 on
//! any host: about 800 MB on "a 512 MB VPS". Now a connection holds only the header
//! fields the handlers read and the body bytes that arrived, at most
//! `server::connection_cost` (56 KiB at the defaults), and the default
//! `max_connections` is derived from a quarter of the memory budget at that cost.

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
    // The log reader may lag behind the server's start.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut log = server.log();
    while !log.contains("(at most ") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        log = server.log();
    }
    let at = log.find("(at most ").expect("listening line");
    log[at + 9..]
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// One request shape, sent on 1,024 connections from 16 loopback addresses that then
/// stall: the growth of the server's resident memory per connection, KiB. A client from
/// another address is served meanwhile.
fn stalled_cost_kib(request: &[u8]) -> (f64, Server) {
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
    let (_, before) = server.memory_kb();
    let mut conns: Vec<TcpStream> = Vec::new();
    for a in 0..16u8 {
        for _ in 0..64 {
            let mut c = connect_from(Ipv4Addr::new(127, 0, 0, 10 + a), server.addr).unwrap();
            c.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(request).unwrap();
            conns.push(c);
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let (_, after) = server.memory_kb();
    let mut probe = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    probe
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut probe, &mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    drop(conns);
    (after.saturating_sub(before) as f64 / 1024.0, server)
}

/// A POST to `/login` with `fields` (whole header lines) and 16,383 of its 16,384 body
/// bytes.
fn stalled_post(fields: &str) -> Vec<u8> {
    let mut request = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: 16384\r\n{fields}\r\n"
    )
    .into_bytes();
    request.extend(std::iter::repeat_n(b'a', 16383));
    request
}

const KIB: f64 = 1024.0;

#[test]
#[ignore = "heavy: release binary, 2 x 1024 connections from 16 loopback addresses"]
fn a_stalled_connection_costs_at_most_what_max_connections_plans_for() {
    let planned = latchkey::server::connection_cost(&tiny_http::HeadLimits::default(), 16 * 1024)
        as f64
        / KIB;
    // The worst shape: a 31 KiB head of Cookie fields (which the handlers read, so they
    // are kept) and all but one byte of the body.
    let cookies = format!(
        "{}Cookie: d={}\r\n",
        format!("Cookie: c={}\r\n", "b".repeat(8000)).repeat(3),
        "b".repeat(7000)
    );
    let (kept, server) = stalled_cost_kib(&stalled_post(&cookies));
    let max = max_connections(&server) as f64;
    assert!(
        kept <= planned,
        "a stalled request with a head of cookies costs {kept:.1} KiB, more than the \
         {planned:.0} KiB max_connections plans for"
    );
    // The same size of head in fields nobody reads: they are checked and dropped.
    let unread = format!(
        "{}X-P: {}\r\n",
        format!("X-Pad: {}\r\n", "a".repeat(8000)).repeat(3),
        "b".repeat(7000)
    );
    let (dropped, _) = stalled_cost_kib(&stalled_post(&unread));
    assert!(
        dropped < 24.0,
        "a stalled request with 31 KiB of unread fields costs {dropped:.1} KiB: its head is kept"
    );
    // At the default max_connections here, every slot so filled stays within a quarter of
    // the host's memory.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let ram_kib = latchkey::memory::mem_total(&meminfo).unwrap() as f64 / KIB;
    assert!(
        kept * max <= ram_kib / 4.0,
        "{max} connections at {kept:.1} KiB exceed a quarter of {ram_kib} KiB"
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

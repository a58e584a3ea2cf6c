//! Hostile clients against the release binary: idle connections, huge declared bodies,
//! random garbage, a login flood, and one test per attack on the connection layer
//! (slowloris, slow bodies, a pipeliner that never reads, HTTP/2 request lines and a
//! connection flood under a 1024-descriptor limit, failing thread creation, a burst of
//! connections). Each attack comes from 127.0.0.2 while a normal client on 127.0.0.3
//! must get `GET /healthz` within 1 s during the attack and after it. Each test is
//! bounded in time and count, loopback only.
//! Run by `.ci/run` after `cargo build --release`: `cargo test --test hostile -- --ignored`.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Conn, Server, TempDir, connect_from, release_bin, start_wrapped};

fn start(env: &[(&str, &str)]) -> Server {
    Server::start_bin(&release_bin(), Arc::new(TempDir::new("hostile")), &[], env)
}

/// A small deterministic PRNG (xorshift64*), so failures can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    fn token(&mut self, n: usize) -> String {
        const CHARS: &[u8] =
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.=+/%";
        (0..n)
            .map(|_| CHARS[self.below(CHARS.len() as u64) as usize] as char)
            .collect()
    }
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn idle_connections_do_not_block_service() {
    let server = start(&[
        ("LATCHKEY_READ_TIMEOUT", "30"),
        ("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "1000"),
    ]);
    let mut idle = Vec::new();
    for i in 0..300 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        // Half send an unfinished request, half send nothing at all.
        if i % 2 == 0 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
        }
        idle.push(s);
    }
    for _ in 0..5 {
        let started = Instant::now();
        let r = server.get("/healthz", &[]);
        assert_eq!(r.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    let (peak, _) = server.memory_kb();
    assert!(
        peak < 64 * 1024,
        "peak RSS {peak} kB with 300 idle connections"
    );
    drop(idle);
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn idle_connections_are_closed_after_the_read_timeout() {
    // An unfinished head is bounded by header_timeout (answered 408), a silent
    // keep-alive connection by read_timeout.
    let server = start(&[
        ("LATCHKEY_READ_TIMEOUT", "1"),
        ("LATCHKEY_HEADER_TIMEOUT", "1"),
    ]);
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    assert!(
        idle.read_to_end(&mut answer).is_ok(),
        "closed by the server"
    );
    assert!(answer.starts_with(b"HTTP/1.1 200 "));
    assert!(started.elapsed() < Duration::from_secs(4));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    let closed = s.read_to_end(&mut buf);
    assert!(
        closed.is_ok(),
        "the server closed the connection: {closed:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed by the server, not by our timeout"
    );
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn huge_declared_bodies_are_refused_without_reading_them() {
    let server = start(&[]);
    for _ in 0..6 {
        let mut conn = Conn::open(server.addr);
        conn.raw()
            .write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000000000\r\n\r\n")
            .unwrap();
        // Start streaming the body; the server answers 413 without waiting for it.
        let _ = conn.raw().write_all(&vec![b'a'; 256 * 1024]);
        let r = conn.read_response(false);
        assert_eq!(r.status, 413);
    }
    let (peak, _) = server.memory_kb();
    assert!(peak < 64 * 1024, "peak RSS {peak} kB");
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn random_garbage_never_stops_service() {
    let server = start(&[]);
    let addr = server.addr;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            std::thread::spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                for _ in 0..2500 {
                    let Ok(mut s) = TcpStream::connect(addr) else { continue };
                    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                    let _ = s.set_write_timeout(Some(Duration::from_millis(500)));
                    let request = match rng.below(4) {
                        // Raw random bytes.
                        0 => {
                            let n = rng.below(2048) as usize + 1;
                            rng.bytes(n)
                        }
                        // A plausible request line with random headers.
                        1 => {
                            let mut r = format!("GET /{} HTTP/1.1\r\nHost: x\r\n", rng.token(20));
                            for _ in 0..rng.below(20) {
                                r.push_str(&format!("{}: {}\r\n", rng.token(10), rng.token(60)));
                            }
                            r.push_str("\r\n");
                            r.into_bytes()
                        }
                        // Random cookies and bearer tokens on real routes.
                        2 => {
                            let path = ["/", "/account", "/auth", "/api/me", "/admin", "/login"][rng.below(6) as usize];
                            let token = format!("{}.{}.{}", rng.token(30), rng.token(80), rng.token(43));
                            format!(
                                "GET {path} HTTP/1.1\r\nHost: x\r\nCookie: token={token}; csrf={}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
                                rng.token(22),
                                rng.token(100)
                            )
                            .into_bytes()
                        }
                        // Random form posts with lying lengths.
                        _ => {
                            let n = rng.below(300) as usize;
                            let body = rng.bytes(n);
                            let declared = body.len() as u64 + rng.below(3) * rng.below(100);
                            let path = ["/login", "/register", "/logout", "/api/login", "/admin/users/1/role"][rng.below(5) as usize];
                            let mut r = format!(
                                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
                            )
                            .into_bytes();
                            r.extend_from_slice(&body);
                            r
                        }
                    };
                    let _ = s.write_all(&request);
                    // Half-close, so a server waiting for more input sees EOF at once.
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    let mut sink = [0u8; 4096];
                    let _ = s.read(&mut sink);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    // Every worker is still alive and answering.
    let mut conn = Conn::open(server.addr);
    for _ in 0..20 {
        assert_eq!(conn.send("GET", "/healthz", &[], b"").status, 200);
    }
    let metrics = server.get("/metrics", &[]).body;
    assert!(
        !metrics.contains("status=\"500\""),
        "no handler panicked:\n{metrics}"
    );
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn a_login_flood_is_throttled_in_bounded_memory() {
    let server = start(&[("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1")]);
    let mut rng = Rng(42);
    let mut throttled = 0;
    let mut conn = Conn::open(server.addr);
    let started = Instant::now();
    for i in 0..3000 {
        // Random names from random forwarded addresses, plus a steady attacker address.
        let xff = if i % 3 == 0 {
            "203.0.113.7".to_string()
        } else {
            format!(
                "10.{}.{}.{}",
                rng.below(256),
                rng.below(256),
                rng.below(256)
            )
        };
        let body =
            serde_json::json!({ "username": rng.token(16), "password": rng.token(12) }).to_string();
        let r = conn.send(
            "POST",
            "/api/login",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", &xff),
            ],
            body.as_bytes(),
        );
        assert!(
            matches!(r.status, 401 | 429 | 503),
            "{} {}",
            r.status,
            r.body
        );
        if r.status == 429 {
            throttled += 1;
            assert!(r.header("retry-after").is_some());
        }
        if started.elapsed() > Duration::from_secs(120) {
            break;
        }
    }
    assert!(
        throttled >= 900,
        "the steady attacker is throttled: {throttled}"
    );
    let (peak, _) = server.memory_kb();
    assert!(peak < 96 * 1024, "peak RSS {peak} kB after the flood");
    assert_eq!(server.get("/healthz", &[]).status, 200);
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn memory_goes_back_after_a_burst_of_logins() {
    // Default argon2 cost: 19 MiB per hash, two hashes at once.
    let server = start(&[
        ("LATCHKEY_ARGON2_MEMORY_KIB", "19456"),
        ("LATCHKEY_ARGON2_ITERATIONS", "2"),
        ("LATCHKEY_LOGIN_CONCURRENCY", "2"),
    ]);
    common::Browser::registered(&server, "root", "root-password");
    let addr = server.addr;
    let clients: Vec<_> = (0..3)
        .map(|_| {
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr);
                let mut ok = 0;
                for _ in 0..10 {
                    let r = conn.send(
                        "POST",
                        "/api/login",
                        &[("Content-Type", "application/json")],
                        br#"{"username":"root","password":"root-password"}"#,
                    );
                    assert!(matches!(r.status, 200 | 503), "{}", r.status);
                    ok += usize::from(r.status == 200);
                }
                ok
            })
        })
        .collect();
    let ok: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(ok >= 10, "{ok} logins succeeded");
    let (peak, now) = server.memory_kb();
    assert!(peak < 64 * 1024, "peak RSS {peak} kB");
    assert!(now < 24 * 1024, "RSS still held after the burst: {now} kB");
}

const ATTACKER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const CLIENT: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);

/// The attack tests' server: the release binary, 2 workers, short deadlines so each
/// test ends within seconds.
fn start_attacked(env: &[(&str, &str)]) -> Server {
    let mut all = vec![
        ("LATCHKEY_WORKERS", "2"),
        ("LATCHKEY_HEADER_TIMEOUT", "3"),
        ("LATCHKEY_BODY_TIMEOUT", "3"),
        ("LATCHKEY_SEND_TIMEOUT", "3"),
    ];
    all.extend_from_slice(env);
    start(&all)
}

/// The normal client: `GET /healthz` from 127.0.0.3 answered 200 within 1 s.
fn client_is_served(server: &Server, when: &str) {
    let started = Instant::now();
    let mut s = connect_from(CLIENT, server.addr).unwrap_or_else(|e| panic!("{when}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.starts_with("HTTP/1.1 200 "),
        "{when}: {text:?} after {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_secs(1),
        "{when}: answered after {elapsed:?}"
    );
}

/// Runs the normal client every 300 ms for `span`.
fn client_is_served_throughout(server: &Server, span: Duration, when: &str) {
    let until = Instant::now() + span;
    while Instant::now() < until {
        client_is_served(server, when);
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Descriptors the server holds now.
fn descriptors(server: &Server) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Waits up to `limit` for the server's descriptors to fall to `at_most`.
fn descriptors_fall_to(server: &Server, at_most: usize, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let now = descriptors(server);
        if now <= at_most {
            return;
        }
        assert!(
            Instant::now() < until,
            "still {now} descriptors (expected <= {at_most})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Opens `n` attacker connections, each sending `first`.
fn attackers(server: &Server, n: usize, first: &[u8]) -> Vec<TcpStream> {
    (0..n)
        .map(|_| {
            let mut s = connect_from(ATTACKER, server.addr).unwrap();
            let _ = s.write_all(first);
            s
        })
        .collect()
}

/// How many of `streams` the server has closed (EOF or reset), each after whatever answer.
fn closed_by_server(streams: &mut [TcpStream]) -> usize {
    streams
        .iter_mut()
        .filter_map(|s| {
            let _ = s.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 4096];
            let closed = loop {
                match s.read(&mut buf) {
                    Ok(0) => break true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                    Err(_) => break false,
                }
            };
            closed.then_some(())
        })
        .count()
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn slowloris_500_connections() {
    let server = start_attacked(&[("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "1000")]);
    let baseline = descriptors(&server);
    let mut conns = attackers(&server, 500, b"GET / HTTP/1.1\r\nHost: x\r\n");
    let stop = Arc::new(AtomicBool::new(false));
    // One header byte per connection every 500 ms, for as long as the server lets it.
    let trickle = {
        let stop = Arc::clone(&stop);
        let mut writers: Vec<TcpStream> = conns.iter().map(|c| c.try_clone().unwrap()).collect();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for w in &mut writers {
                    let _ = w.write_all(b"X");
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    client_is_served_throughout(&server, Duration::from_secs(4), "during the slowloris");
    // header_timeout (3 s) has passed for every one of them: all answered 408 and closed.
    std::thread::sleep(Duration::from_secs(1));
    let closed = closed_by_server(&mut conns);
    stop.store(true, Ordering::Relaxed);
    trickle.join().unwrap();
    assert_eq!(closed, 500, "slow heads closed by the server");
    client_is_served(&server, "after the slowloris");
    drop(conns);
    descriptors_fall_to(&server, baseline + 2, Duration::from_secs(5));
}

fn slow_bodies(n: usize, head: &[u8]) {
    let server = start_attacked(&[]);
    let mut conns = attackers(&server, n, head);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        for c in &mut conns {
            let _ = c.write_all(b"a");
        }
        client_is_served(&server, &format!("during {n} slow bodies"));
        std::thread::sleep(Duration::from_millis(500));
    }
    // body_timeout (3 s) has passed: each got its 408 and was closed.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(closed_by_server(&mut conns), n);
    client_is_served(&server, &format!("after {n} slow bodies"));
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn slow_bodies_2_and_8_connections() {
    let head = b"POST /login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 16000\r\n\r\n";
    slow_bodies(2, head);
    slow_bodies(8, head);
    // Expect: 100-continue, then the body never comes (the "a" bytes are far too few).
    slow_bodies(
        2,
        b"POST /login HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 16000\r\n\r\n",
    );
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn a_pipeliner_that_never_reads() {
    let server = start_attacked(&[]);
    let baseline = descriptors(&server);
    let burst = "GET /login HTTP/1.1\r\nHost: x\r\n\r\n".repeat(3000);
    // Two of them, each writing 3,000 requests at once and never reading an answer.
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let mut s = connect_from(ATTACKER, server.addr).unwrap();
            let burst = burst.clone();
            std::thread::spawn(move || {
                let _ = s.set_write_timeout(Some(Duration::from_secs(8)));
                let _ = s.write_all(burst.as_bytes());
                // Hold the connection without reading until the server gives up on it.
                std::thread::sleep(Duration::from_secs(8));
                drop(s);
            })
        })
        .collect();
    client_is_served_throughout(&server, Duration::from_secs(5), "during the pipeliners");
    // send_timeout (3 s) ended both: their descriptors are back.
    descriptors_fall_to(&server, baseline, Duration::from_secs(5));
    client_is_served(&server, "after the pipeliners");
    for w in writers {
        w.join().unwrap();
    }
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn http2_request_lines_under_1024_descriptors() {
    let dir = Arc::new(TempDir::new("hostile"));
    let server = start_wrapped(
        &["prlimit", "--nofile=1024:1024", "--"],
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_WORKERS", "2"),
            ("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "100000"),
        ],
    );
    let baseline = descriptors(&server);
    // 600 connections each send an HTTP/2 request line (half of them the preface) and
    // then hold their socket open without reading.
    let mut conns: Vec<TcpStream> = (0..600)
        .map(|i| {
            let mut s = connect_from(ATTACKER, server.addr).unwrap();
            let line: &[u8] = if i % 2 == 0 {
                b"GET / HTTP/2.0\r\n"
            } else {
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            };
            let _ = s.write_all(line);
            if i % 100 == 0 {
                client_is_served(&server, "during the HTTP/2 lines");
            }
            s
        })
        .collect();
    // Each got its 505 and was closed (after a 2 s lingering close at most), leaking nothing.
    descriptors_fall_to(&server, baseline + 2, Duration::from_secs(5));
    let mut answered = 0;
    for s in &mut conns {
        let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        answered += usize::from(buf.starts_with(b"HTTP/1.1 505 "));
    }
    assert!(answered >= 590, "{answered} of 600 got a 505");
    client_is_served(&server, "after the HTTP/2 lines");
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn a_connection_flood_past_max_connections_under_1024_descriptors() {
    let dir = Arc::new(TempDir::new("hostile"));
    let server = start_wrapped(
        &["prlimit", "--nofile=1024:1024", "--"],
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_WORKERS", "2"),
            ("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "100000"),
        ],
    );
    // The default max_connections under 1024 descriptors is 896: open 1,200 that send
    // nothing, and keep them.
    let conns: Vec<TcpStream> = (0..1200)
        .map(|i| {
            let s = connect_from(ATTACKER, server.addr).unwrap();
            if i % 200 == 199 {
                client_is_served(&server, "during the flood");
            }
            s
        })
        .collect();
    client_is_served_throughout(&server, Duration::from_secs(2), "with the flood held");
    assert!(descriptors(&server) < 1024);
    drop(conns);
    client_is_served(&server, "after the flood");
    assert!(!server.log().contains("cannot accept"), "{}", server.log());
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn failing_thread_creation_costs_no_service() {
    // Run as nobody with room for few more threads than the server starts with
    // (main, the connection loop, 2 workers, the monitor); RLIMIT_NPROC counts every
    // task of the user, so those nobody runs already are added.
    let dir = Arc::new(TempDir::new("hostile"));
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let nproc = format!("--nproc={0}:{0}", tasks_of_user(65534) + 8);
    let server = start_wrapped(
        &[
            "prlimit",
            &nproc,
            "--",
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
        ],
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_WORKERS", "2"),
            ("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "1000"),
        ],
    );
    // 300 connections with unfinished requests, then 300 complete ones: with one
    // thread per connection, thread creation would fail after a handful.
    let held = attackers(&server, 300, b"GET / HTTP/1.1\r\nHost: x\r\n");
    client_is_served(&server, "with 300 connections held");
    let mut quick: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut s = connect_from(ATTACKER, server.addr).unwrap();
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s
        })
        .collect();
    for s in &mut quick {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        assert!(
            buf.starts_with(b"HTTP/1.1 200 "),
            "{:?}",
            String::from_utf8_lossy(&buf)
        );
    }
    drop(held);
    client_is_served(&server, "after the burst");
}

/// The tasks (threads) that user `uid` runs now.
fn tasks_of_user(uid: u32) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let status = std::fs::read_to_string(entry.path().join("status")).unwrap_or_default();
        let owner = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok());
        if owner == Some(uid) {
            n += status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(1);
        }
    }
    n
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn three_hundred_connections_back_to_back_are_all_answered_within_a_second() {
    let server = start_attacked(&[]);
    // From ten addresses, so that the per-address cap (64) is not what is tested.
    let mut conns: Vec<(TcpStream, Instant)> = (0..300u32)
        .map(|i| {
            let source = Ipv4Addr::new(127, 0, 1, 10 + (i % 10) as u8);
            let mut s = connect_from(source, server.addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            (s, Instant::now())
        })
        .collect();
    // Every answer is in by 1 s after the last request was sent (each connection stays
    // open, so none may wait for another to end); reading them back takes no time.
    let deadline = conns.last().map(|(_, sent)| *sent).unwrap() + Duration::from_secs(1);
    for (n, (s, _)) in conns.iter_mut().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        let got = s.read(&mut buf).unwrap_or(0);
        assert!(
            buf[..got].starts_with(b"HTTP/1.1 200 "),
            "connection {n}: {:?}",
            String::from_utf8_lossy(&buf[..got])
        );
        assert!(
            Instant::now() < deadline,
            "connection {n} answered {:?} after the last request",
            Instant::now() - (deadline - Duration::from_secs(1))
        );
    }
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn keep_alive_requests_do_not_grow_memory() {
    // The loop's bookkeeping per request (deadlines, eviction order) must not pile up on
    // connections that never close: two rounds of 100,000 requests on the same four
    // keep-alive connections, and the second round adds no memory.
    let server = start(&[]);
    let conns: Vec<_> = (0..4).map(|_| Conn::open(server.addr)).collect();
    let round = |conns: Vec<Conn>| -> Vec<Conn> {
        let clients: Vec<_> = conns
            .into_iter()
            .map(|mut conn| {
                std::thread::spawn(move || {
                    for _ in 0..25_000 {
                        assert_eq!(conn.send("GET", "/healthz", &[], b"").status, 200);
                    }
                    conn
                })
            })
            .collect();
        clients.into_iter().map(|c| c.join().unwrap()).collect()
    };
    let conns = round(conns);
    let (_, first) = server.memory_kb();
    let conns = round(conns);
    let (peak, second) = server.memory_kb();
    drop(conns);
    assert!(
        second < first + 1024,
        "RSS grew from {first} kB to {second} kB over 100,000 more keep-alive requests"
    );
    assert!(peak < 12 * 1024, "peak RSS {peak} kB");
}

#[test]
#[ignore = "heavy: release binary; run by .ci/run"]
fn when_accepting_fails_healthz_says_so_and_the_watchdog_stops() {
    // 64 descriptors, and connections allowed far beyond them: accepting runs out of
    // descriptors while every connection is mid-request (none idle to close), so the
    // shortage lasts. After 5 s it is a fault: /healthz answers 503 and the watchdog is
    // not pinged; once descriptors come back, both recover by themselves.
    let dir = Arc::new(TempDir::new("hostile"));
    let socket_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let server = start_wrapped(
        &["prlimit", "--nofile=64:64", "--"],
        &release_bin(),
        dir,
        &[],
        &[
            ("LATCHKEY_WORKERS", "2"),
            ("LATCHKEY_MAX_CONNECTIONS", "1000"),
            ("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "1000"),
            ("LATCHKEY_HEADER_TIMEOUT", "30"),
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "400000"),
        ],
    );
    // Pings seen within `span`.
    let pings = |span: Duration| {
        let until = Instant::now() + span;
        let mut n = 0;
        let mut buf = [0u8; 256];
        while Instant::now() < until {
            if let Ok(len) = notify.recv(&mut buf) {
                n += usize::from(&buf[..len] == b"WATCHDOG=1");
            }
        }
        n
    };
    assert!(
        pings(Duration::from_secs(1)) > 0,
        "the watchdog is pinged while healthy"
    );
    // A client whose request is under way before the shortage.
    let mut client = connect_from(CLIENT, server.addr).unwrap();
    client
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // A first wave fills the descriptors (the server may close the newest, not yet
    // read, to make room); once every connection has sent bytes none may be closed, and
    // a second wave waits in the listen queue while accepting fails.
    let mut attackers = attackers(&server, 80, b"GET / HTTP/1.1\r\n");
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..40 {
        let mut s = connect_from(ATTACKER, server.addr).unwrap();
        let _ = s.write_all(b"GET / HTTP/1.1\r\n");
        attackers.push(s);
    }
    // The fault is declared 5 s into the shortage; the pings stop then. (Pings sent
    // before are still queued on the socket: read them away first.)
    std::thread::sleep(Duration::from_secs(6));
    notify.set_nonblocking(true).unwrap();
    while notify.recv(&mut [0u8; 256]).is_ok() {}
    notify.set_nonblocking(false).unwrap();
    assert_eq!(
        pings(Duration::from_secs(1)),
        0,
        "no ping while not accepting"
    );
    client.write_all(b"\r\n").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = client.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("not accepting connections"), "{answer}");
    drop(attackers);
    assert!(
        pings(Duration::from_secs(3)) > 0,
        "pings again once accepting"
    );
    client_is_served(&server, "after the shortage");
    let log = server.log();
    // Logged once per episode, not once per failed accept (there were hundreds); the
    // backlog rushing in on recovery may make a second, short one.
    assert!(
        log.matches("cannot accept connections").count() <= 2,
        "{log}"
    );
    assert_eq!(log.matches("is not serving").count(), 1, "{log}");
    assert!(log.contains("accepting connections again"), "{log}");
    assert!(
        log.contains("the connection layer is serving again"),
        "{log}"
    );
}

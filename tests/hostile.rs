//! Hostile clients against the release binary: idle connections, huge declared bodies,
//! random garbage, and a login flood. Each is bounded in time and count, loopback only.
//! Run by `.ci/run` after `cargo build --release`: `cargo test --test hostile -- --ignored`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Conn, Server, TempDir, release_bin};

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
    let server = start(&[("LATCHKEY_READ_TIMEOUT", "30")]);
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
    let server = start(&[("LATCHKEY_READ_TIMEOUT", "1")]);
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

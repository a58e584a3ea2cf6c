//! HTTP/1.1 framing conformance (RFC 9112, RFC 9110) against the real binary, over raw
//! sockets: one case per rule, each asserting the exact status, whether the connection
//! was closed after it, and how many `GET /healthz` requests ran. Every case carries a
//! second request after the first (`GET /healthz`): where the first must close the
//! connection, that second request must never run (no request smuggling); where the
//! connection stays open, it must run exactly once, framed where the rules say the first
//! request ended.
//!
//! Set `LATCHKEY_TEST_BIN` to run the table against another build of latchkey.

mod common;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Server, TempDir, connect_from, metric};

const HEALTHZ: &str = "latchkey_requests_total{route=\"healthz\",status=\"200\"}";
const SMUGGLED: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

fn start(env: &[(&str, &str)]) -> Server {
    let bin = std::env::var("LATCHKEY_TEST_BIN").unwrap_or_else(|_| common::bin().to_string());
    Server::start_bin(&bin, Arc::new(TempDir::new("conformance")), &[], env)
}

/// One raw response: status, head (lower-cased), body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Reads one response (Content-Length framing) from `stream`; `None` on EOF first.
fn read_answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Answer> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            let informational = head.starts_with("http/1.1 1");
            let total = end + 4 + if informational { 0 } else { length };
            if buf.len() >= total {
                let status = head[9..12].parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..total]).into_owned();
                buf.drain(..total);
                return Some(Answer { status, head, body });
            }
        }
        assert!(Instant::now() < deadline, "no whole answer in 5 s: {buf:?}");
        let mut chunk = [0u8; 65536];
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// Whether the server closes the connection within 3 s with nothing more sent.
fn closed(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return buf.is_empty(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return buf.is_empty(),
            Err(_) => return false,
        }
    }
}

fn open(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// One rule: the bytes sent, then [`SMUGGLED`]; the status of the first answer; whether
/// the connection closes after it; how many `/healthz` requests ran in all; a piece of
/// the first answer's body.
struct Case {
    rule: &'static str,
    request: Vec<u8>,
    status: u16,
    closes: bool,
    healthz_runs: u64,
    body_has: &'static str,
}

fn case(rule: &'static str, request: &str, status: u16, closes: bool) -> Case {
    Case {
        rule,
        request: request.as_bytes().to_vec(),
        status,
        closes,
        // A closing case must not run the smuggled request; an open one runs it once.
        healthz_runs: u64::from(!closes),
        body_has: "",
    }
}

fn run_case(server: &Server, case: &Case) {
    let before = metric(server, HEALTHZ);
    let mut stream = open(server);
    let mut bytes = case.request.clone();
    bytes.extend_from_slice(SMUGGLED.as_bytes());
    // The server may close before reading everything: a failed write is fine.
    let _ = stream.write_all(&bytes);
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf)
        .unwrap_or_else(|| panic!("{}: closed without an answer", case.rule));
    assert_eq!(answer.status, case.status, "{}: {}", case.rule, answer.head);
    assert!(
        answer.body.contains(case.body_has),
        "{}: {}",
        case.rule,
        answer.body
    );
    if case.closes {
        assert!(
            answer.head.contains("\r\nconnection: close"),
            "{}: no Connection: close in {}",
            case.rule,
            answer.head
        );
        assert!(
            closed(&mut stream, &mut buf),
            "{}: the connection stayed open or answered again: {:?}",
            case.rule,
            String::from_utf8_lossy(&buf)
        );
    } else {
        let second = read_answer(&mut stream, &mut buf)
            .unwrap_or_else(|| panic!("{}: closed before the second request", case.rule));
        assert_eq!(second.status, 200, "{}: {}", case.rule, second.head);
    }
    let after = metric(server, HEALTHZ);
    assert_eq!(
        after - before,
        case.healthz_runs,
        "{}: /healthz ran {} times",
        case.rule,
        after - before
    );
}

#[test]
fn framing_rules_table() {
    let server = start(&[]);
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let long_field = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let many_fields: String = (0..120).map(|i| format!("X-{i}: v\r\n")).collect();
    let many_fields = format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_fields}\r\n");
    let big_body = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nContent-Length: 20000\r\n\r\n{}",
        "a".repeat(20000)
    );
    let chunk = "a".repeat(4096);
    let big_chunked = format!(
        "POST /login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        format!("1000\r\n{chunk}\r\n").repeat(5)
    );
    let mut obs_text = case(
        "obs-text in a header value is opaque: the token cookie is still found",
        "GET /api/me HTTP/1.1\r\nHost: x\r\nCookie: city=São Paulo; token=not.a.jwt\r\nX-Original-URL: /café\r\n\r\n",
        401,
        false,
    );
    obs_text.body_has = "\"error\":\"malformed\"";
    let mut absolute = case(
        "absolute-form target: its authority is the host",
        "GET http://x/healthz HTTP/1.1\r\nHost: elsewhere\r\n\r\n",
        200,
        false,
    );
    absolute.healthz_runs = 2;
    let mut api_json = case(
        "a refusal under /api/ is JSON",
        "GET /api/me HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        400,
        true,
    );
    api_json.body_has = "{\"error\":\"bad_request\"";
    let mut page = case(
        "a refusal elsewhere is a page in the site's layout",
        "GET /account HTTP/1.1\r\n\r\n",
        400,
        true,
    );
    page.body_has = "<!DOCTYPE html>";
    let mut http10 = case(
        "HTTP/1.0 without keep-alive: answered, then closed",
        "GET /healthz HTTP/1.0\r\n\r\n",
        200,
        true,
    );
    http10.healthz_runs = 1;
    let mut http10_keep = case(
        "HTTP/1.0 with keep-alive stays open",
        "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        200,
        false,
    );
    http10_keep.healthz_runs = 2;
    let cases = vec![
        case(
            "Transfer-Encoding other than chunked (gzip): 501",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n0\r\n\r\n",
            501,
            true,
        ),
        case(
            "Transfer-Encoding: identity: 501",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n",
            501,
            true,
        ),
        case(
            "chunked not the final coding: 501",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
            501,
            true,
        ),
        case(
            "chunked twice: 400",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
            400,
            true,
        ),
        case(
            "Content-Length with Transfer-Encoding: read as chunked, answered, closed",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            405,
            true,
        ),
        case(
            "two differing Content-Length: 400",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            400,
            true,
        ),
        case(
            "Content-Length not digits: 400",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
            400,
            true,
        ),
        case(
            "Content-Length list of differing values: 400",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello!",
            400,
            true,
        ),
        case(
            "Content-Length list of equal values reads as that value",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
            405,
            false,
        ),
        case(
            "obs-fold: 400",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
            400,
            true,
        ),
        case(
            "HTTP/1.1 without Host: 400",
            "GET /healthz HTTP/1.1\r\n\r\n",
            400,
            true,
        ),
        case(
            "two Host headers: 400",
            "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            400,
            true,
        ),
        case(
            "an invalid Host value: 400",
            "GET /healthz HTTP/1.1\r\nHost: a b/c\r\n\r\n",
            400,
            true,
        ),
        absolute,
        case("a request line over 8 KiB: 414", &long_target, 414, true),
        case("a header line over 8 KiB: 431", &long_field, 431, true),
        case("more than 100 header fields: 431", &many_fields, 431, true),
        case(
            "CR inside a field value: 400",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
            400,
            true,
        ),
        case(
            "NUL inside a field value: 400",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n",
            400,
            true,
        ),
        case(
            "a bare LF as a line end: 400",
            "GET /healthz HTTP/1.1\nHost: x\r\n\r\n",
            400,
            true,
        ),
        obs_text,
        case(
            "chunk extensions ignored, trailers read and dropped",
            "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n",
            405,
            false,
        ),
        case("a declared body over the limit: 413", &big_body, 413, true),
        case(
            "a chunked body over the limit: 413",
            &big_chunked,
            413,
            true,
        ),
        case(
            "HTTP/2.0: 505",
            "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n",
            505,
            true,
        ),
        case(
            "the HTTP/2 preface: 505",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            505,
            true,
        ),
        case("HTTP/0.9: 400", "GET /healthz\r\n", 400, true),
        case(
            "version HTTP/0.9 spelled out: 505",
            "GET /healthz HTTP/0.9\r\n\r\n",
            505,
            true,
        ),
        case(
            "NUL in the target: 400",
            "GET /healthz\0 HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            true,
        ),
        case(
            "an expectation other than 100-continue: 417",
            "GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: something\r\n\r\n",
            417,
            true,
        ),
        api_json,
        page,
        http10,
        http10_keep,
    ];
    // Every case runs; the failures are listed together.
    let failed: Vec<&str> = cases
        .iter()
        .filter(|case| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&server, case)))
                .is_err()
        })
        .map(|case| case.rule)
        .collect();
    assert!(failed.is_empty(), "rules broken:\n{}", failed.join("\n"));
    // The connection layer's answers are counted.
    let metrics = server.get("/metrics", &[]).body;
    for status in [400, 413, 414, 431, 501, 505] {
        assert!(
            metrics.contains(&format!("route=\"other\",status=\"{status}\"")),
            "{status} not counted:\n{metrics}"
        );
    }
}

#[test]
fn the_http2_preface_is_answered_without_waiting() {
    let server = start(&[]);
    let mut stream = open(&server);
    // Only the request line: nothing that would end a head.
    stream.write_all(b"PRI * HTTP/2.0\r\n").unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream, &mut Vec::new()).expect("an answer");
    assert_eq!(answer.status, 505);
    assert!(started.elapsed() < Duration::from_secs(1));
}

#[test]
fn expect_100_continue_is_answered_by_the_server() {
    let server = start(&[]);
    let mut stream = open(&server);
    stream
        .write_all(b"POST /healthz HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    let first = read_answer(&mut stream, &mut buf).expect("100 Continue");
    assert_eq!(first.status, 100);
    stream.write_all(b"hello").unwrap();
    assert_eq!(read_answer(&mut stream, &mut buf).unwrap().status, 405);
    // A body over the limit is refused without the 100, then the connection closes.
    let mut stream = open(&server);
    stream
        .write_all(b"POST /login HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 999999\r\n\r\n")
        .unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_answer(&mut stream, &mut buf).unwrap().status, 413);
    assert!(closed(&mut stream, &mut buf));
}

#[test]
fn deadlines_close_slow_and_silent_connections() {
    let server = start(&[
        ("LATCHKEY_HEADER_TIMEOUT", "1"),
        ("LATCHKEY_BODY_TIMEOUT", "1"),
        ("LATCHKEY_READ_TIMEOUT", "1"),
    ]);
    // A head that keeps trickling in: 408 one header_timeout after its first byte.
    let mut stream = open(&server);
    let started = Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\n").unwrap();
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(400));
        let _ = stream.write_all(b"X-Slow: 1\r\n");
    }
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).expect("408");
    assert_eq!(answer.status, 408);
    assert!(started.elapsed() < Duration::from_millis(2500));
    assert!(closed(&mut stream, &mut buf));

    // A body that does not arrive in time: 408.
    let mut stream = open(&server);
    stream
        .write_all(b"POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut stream, &mut buf).expect("408");
    assert_eq!(answer.status, 408);
    assert!(answer.body.contains("\"error\":\"request_timeout\""));

    // A connection that never sends a byte, and a keep-alive connection left idle,
    // are closed without an answer.
    let mut silent = open(&server);
    let started = Instant::now();
    assert!(closed(&mut silent, &mut Vec::new()));
    assert!(started.elapsed() < Duration::from_millis(2500));
    let mut idle = open(&server);
    idle.write_all(SMUGGLED.as_bytes()).unwrap();
    let mut buf = Vec::new();
    assert_eq!(read_answer(&mut idle, &mut buf).unwrap().status, 200);
    assert!(closed(&mut idle, &mut buf));
}

#[test]
fn one_address_is_capped_while_others_are_served() {
    let server = start(&[("LATCHKEY_MAX_CONNECTIONS_PER_ADDRESS", "4")]);
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(attacker, server.addr).unwrap())
        .collect();
    // Let the server accept those four before the fifth arrives.
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = connect_from(attacker, server.addr).unwrap();
    fifth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let answer = read_answer(&mut fifth, &mut buf).expect("a 503");
    assert_eq!(answer.status, 503);
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).unwrap();
    other
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    other.write_all(SMUGGLED.as_bytes()).unwrap();
    assert_eq!(
        read_answer(&mut other, &mut Vec::new()).unwrap().status,
        200
    );
    drop(held);
}

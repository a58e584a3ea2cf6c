//! A bare server on latchkey's patched tiny_http (its connection loop included) with N
//! worker threads, each calling `recv()` on one shared `Arc<tiny_http::Server>`,
//! answering every request with a fixed small HTML page. No routing, no cookies, no
//! store: whatever latchkey costs beyond this is the cost of its own request cycle. The
//! benchmark's floor proper is stock tiny_http 0.12 (`benches/floor`); this one shows
//! what the patched connection layer costs or saves beside it.
//!
//! Two ways to answer, so a ratio against the floor cannot hide in the response writer:
//! - `stock` (default): tiny_http's own `Response`, as any tiny_http server would;
//! - `raw`: the way latchkey answers, the page serialized by `latchkey::wire` into a
//!   reused buffer and written with `Request::respond_raw`.
//!
//! Usage: `bare [ADDR] [WORKERS] [stock|raw]` (defaults `127.0.0.1:8090`, 2, stock).
//! Runs until killed.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use latchkey::http::Reply;
use latchkey::wire::{self, DateCache, FixedHead, Version};

const PAGE: &str = "<!doctype html><html><head><title>bare</title></head>\
<body><h1>Hello</h1><p>A fixed page from a bare tiny_http server.</p></body></html>\n";

const USAGE: &str = "usage: bare [ADDR] [WORKERS] [stock|raw]  (WORKERS a whole number above 0)";

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers: usize = match args.next().map(|w| w.parse()) {
        None => 2,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let raw = match args.next().as_deref() {
        None | Some("stock") => false,
        Some("raw") => true,
        Some(_) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let server = match tiny_http::Server::http(&addr) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("bare: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                if raw {
                    raw_loop(&server)
                } else {
                    stock_loop(&server)
                }
            })
        })
        .collect();
    let how = if raw { "raw" } else { "stock" };
    eprintln!("bare: listening on http://{addr} with {workers} workers ({how} responses)");
    for handle in handles {
        let _ = handle.join();
    }
}

fn stock_loop(server: &tiny_http::Server) {
    let content_type =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/html; charset=utf-8"[..])
            .expect("a valid header");
    while let Ok(request) = server.recv() {
        let response = tiny_http::Response::from_string(PAGE).with_header(content_type.clone());
        let _ = request.respond(response);
    }
}

fn raw_loop(server: &tiny_http::Server) {
    let fixed = FixedHead::new(&[("Server", "bare")]);
    let page = Reply::html(200, PAGE.to_string());
    let mut out = Vec::with_capacity(1024);
    let mut date = DateCache::default();
    while let Ok(request) = server.recv() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let head_only = *request.method() == tiny_http::Method::Head;
        wire::write_reply(
            &mut out,
            &page,
            &fixed,
            date.get(now),
            Version::Http11,
            head_only,
        );
        let _ = request.respond_raw(&out);
    }
}

//! The benchmark floor: **stock** tiny_http 0.12 (from crates.io, unpatched) with N
//! worker threads, each calling `recv()` on one shared `Arc<tiny_http::Server>` and
//! answering every request with the same fixed HTML page through tiny_http's own
//! `Response`, exactly as latchkey's `examples/bare.rs` does in its stock mode.
//!
//! Usage: `floor [ADDR] [WORKERS]` (defaults `127.0.0.1:8090`, 2). Runs until killed.

use std::sync::Arc;

const PAGE: &str = "<!doctype html><html><head><title>bare</title></head>\
<body><h1>Hello</h1><p>A fixed page from a bare tiny_http server.</p></body></html>\n";

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let workers: usize = match args.next().map(|w| w.parse()) {
        None => 2,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: floor [ADDR] [WORKERS]  (WORKERS a whole number above 0)");
            std::process::exit(2);
        }
    };
    let server = match tiny_http::Server::http(&addr) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("floor: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            std::thread::spawn(move || {
                let content_type = tiny_http::Header::from_bytes(
                    &b"Content-Type"[..],
                    &b"text/html; charset=utf-8"[..],
                )
                .expect("a valid header");
                while let Ok(request) = server.recv() {
                    let response =
                        tiny_http::Response::from_string(PAGE).with_header(content_type.clone());
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    eprintln!("floor: listening on http://{addr} with {workers} workers (stock tiny_http 0.12)");
    for handle in handles {
        let _ = handle.join();
    }
}

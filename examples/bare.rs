//! The benchmark floor: a bare tiny_http server (the same patched tiny_http as latchkey)
//! with N worker threads, each calling `recv()` on one shared `Arc<tiny_http::Server>`,
//! answering every request with a fixed small HTML page. No routing, no cookies, no
//! store: whatever latchkey costs beyond this is the cost of its own request cycle.
//!
//! Usage: `bare [ADDR] [WORKERS]` (defaults `127.0.0.1:8090`, 2). Runs until killed.

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
            eprintln!("usage: bare [ADDR] [WORKERS]  (WORKERS a whole number above 0)");
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
    let content_type =
        tiny_http::Header::from_bytes(&b"Content-Type"[..], &b"text/html; charset=utf-8"[..])
            .expect("a valid header");
    let handles: Vec<_> = (0..workers)
        .map(|_| {
            let server = Arc::clone(&server);
            let content_type = content_type.clone();
            std::thread::spawn(move || {
                while let Ok(request) = server.recv() {
                    let response =
                        tiny_http::Response::from_string(PAGE).with_header(content_type.clone());
                    let _ = request.respond(response);
                }
            })
        })
        .collect();
    eprintln!("bare: listening on http://{addr} with {workers} workers");
    for handle in handles {
        let _ = handle.join();
    }
}

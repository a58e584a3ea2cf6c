//! # tiny_http, latchkey's copy
//!
//! latchkey patch (rewritten file): the request/response API is tiny_http 0.12's
//! (`Server::recv`, `try_recv`, `recv_timeout`, `unblock`, `incoming_requests`;
//! `Request::{method, url, headers, http_version, remote_addr, body_length, as_reader,
//! respond, respond_raw}`), but the connection layer under it is new: one thread runs
//! a poll loop (`run.rs`) that owns every connection, reads each request whole (head
//! and body, within size limits and deadlines) before a worker sees it, and writes each
//! answer after the worker made it. **A worker never waits on a client.** The HTTP/1.1
//! framing rules are pure functions in `framing.rs`. See PATCHES.md.
//!
//! ```no_run
//! use std::sync::Arc;
//!
//! let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
//! let workers: Vec<_> = (0..4)
//!     .map(|_| {
//!         let server = Arc::clone(&server);
//!         std::thread::spawn(move || {
//!             while let Ok(request) = server.recv() {
//!                 let _ = request.respond(tiny_http::Response::from_string("hello"));
//!             }
//!         })
//!     })
//!     .collect();
//! # drop(workers);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![warn(missing_docs)]

use std::error::Error;
use std::io::{Error as IoError, Result as IoResult};
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::ListenAddr;
pub use framing::{Fields, HeadLimits, Refusal};
pub use request::Request;
pub use response::{Response, ResponseBox};
pub use test::TestRequest;

mod common;
mod connection;
pub mod framing;
mod request;
mod response;
mod run;
mod test;

use run::{Hub, Popped};

/// Turns a refused request into the complete response bytes to send (status line,
/// headers including `Connection: close`, body). Runs on the connection loop's thread.
pub type RenderRefusal = Arc<dyn Fn(&Refusal) -> Vec<u8> + Send + Sync>;

/// Says whether a client address is exempt from `max_connections_per_address` (a
/// trusted proxy, through which many clients arrive from one address).
pub type ExemptAddress = Arc<dyn Fn(IpAddr) -> bool + Send + Sync>;

/// Says whether the application reads a request header field, given its name as sent
/// (compare without regard to case). Fields it does not read are checked like any other
/// but not kept: a request then holds only the bytes of fields someone will read, while
/// its body is awaited and while a worker has it.
pub type KeepField = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// Receives the loop's notices (accept trouble starting and ending, a panic handled),
/// one line each, once per episode.
pub type Notice = Arc<dyn Fn(NoticeLevel, &str) + Send + Sync>;

/// How serious a notice of the loop is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeLevel {
    /// Something is wrong (accepting fails, a panic was caught).
    Error,
    /// Something went back to normal.
    Info,
}

/// latchkey patch: the limits and deadlines the connection loop enforces, and the
/// application's hooks. Durations are whole-phase deadlines, not per read.
#[derive(Clone)]
pub struct Limits {
    /// The whole request head must arrive within this, from its first byte (from the
    /// accept, for a new connection). Past it: 408, or a silent close when nothing at
    /// all arrived.
    pub header_timeout: Duration,
    /// The whole body must arrive within this, from the end of the head. Past it: 408.
    pub body_timeout: Duration,
    /// The whole answer must be written within this. Past it: the connection closes.
    pub send_timeout: Duration,
    /// A keep-alive connection may wait this long for its next request.
    pub idle_timeout: Duration,
    /// Connections open at once; beyond it the longest-idle connection is closed to
    /// make room, or, when none is idle, the new one is refused (503).
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64); beyond it
    /// the new one is refused (503).
    pub max_connections_per_address: usize,
    /// The largest request body, bytes; a larger one gets 413 and the connection closes.
    pub max_body: usize,
    /// Size limits on the request head.
    pub head: HeadLimits,
    /// Which header fields requests keep (see [`KeepField`]); every field when `None`.
    pub keep_field: Option<KeepField>,
    /// Addresses exempt from `max_connections_per_address`.
    pub exempt: Option<ExemptAddress>,
    /// How refusals are answered; plain text when `None`.
    pub render: Option<RenderRefusal>,
    /// Where the loop's notices go; nowhere when `None`.
    pub notice: Option<Notice>,
}

impl Default for Limits {
    /// 10 s for the head, the body and the answer, 30 s idle, 1,000 connections and 64
    /// per address, 1 MiB bodies, the default head limits, every header field kept, no
    /// hooks.
    fn default() -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 1000,
            max_connections_per_address: 64,
            max_body: 1024 * 1024,
            head: HeadLimits::default(),
            keep_field: None,
            exempt: None,
            render: None,
            notice: None,
        }
    }
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("max_body", &self.max_body)
            .field("head", &self.head)
            .finish_non_exhaustive()
    }
}

/// latchkey patch: what the connection loop has done so far, and what it holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Connections open now (refusals being answered not included).
    pub open: usize,
    /// Connections accepted in all.
    pub accepted: u64,
    /// Connections refused because their address held `max_connections_per_address`.
    pub refused_per_address: u64,
    /// Connections refused at `max_connections` with no idle connection to close.
    pub refused_full: u64,
    /// Idle connections closed to make room at `max_connections`.
    pub evicted: u64,
    /// Connections that missed a deadline (head, body or answer).
    pub timed_out: u64,
    /// Requests the loop answered itself (framing errors, limits, deadlines).
    pub answered_here: u64,
    /// Panics caught while handling a connection (each closed that connection).
    pub panics: u64,
}

/// The main class of this library: a listening server whose requests are taken with
/// `recv` by any number of worker threads.
///
/// Dropping it stops the connection loop gracefully: no new connections or requests,
/// answers in flight still written (bounded by `send_timeout`, at most 10 s).
pub struct Server {
    hub: Arc<Hub>,
    listening_addr: ListenAddr,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// An iterator over the incoming requests; ends when the server stops.
pub struct IncomingRequests<'a> {
    server: &'a Server,
}

impl Server {
    /// Shortcut for a server on a specific address, with the default [`Limits`].
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        let listener = TcpListener::bind(addr)?;
        Ok(Server::from_listener(listener, Limits::default())?)
    }

    /// latchkey patch: builds a server on a bound `listener` (made non-blocking here)
    /// with the given limits, and starts its connection loop thread.
    ///
    /// Errors: the listener's address cannot be read, the poll cannot be created, or
    /// the loop thread cannot be started.
    pub fn from_listener(listener: TcpListener, limits: Limits) -> IoResult<Server> {
        let addr = listener.local_addr()?;
        let (event_loop, hub) = run::Loop::new(listener, limits)?;
        let watch = Arc::clone(&hub);
        let thread = std::thread::Builder::new()
            .name("http-io".into())
            .spawn(move || {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| event_loop.run()));
                if outcome.is_err() {
                    watch.stopped("the connection loop panicked and stopped");
                }
            })?;
        Ok(Server {
            hub,
            listening_addr: ListenAddr::IP(addr),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` when the server stops.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        self.hub.stats.open.load(Ordering::Relaxed)
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    ///
    /// Errors: `unblock()` was called, the server is stopping (after the requests
    /// still queued were handed out), or the connection loop stopped.
    pub fn recv(&self) -> IoResult<Request> {
        match self.hub.pop(None) {
            Popped::Request(rq) => Ok(rq),
            Popped::Error(e) => Err(e),
            Popped::Unblocked | Popped::Empty => Err(IoError::other("thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.hub.pop(Some(Instant::now() + timeout)) {
            Popped::Request(rq) => Ok(Some(rq)),
            Popped::Error(e) => Err(e),
            Popped::Unblocked | Popped::Empty => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        self.recv_timeout(Duration::ZERO)
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    pub fn unblock(&self) {
        self.hub.unblock();
    }

    /// latchkey patch: starts a graceful stop and returns at once. The loop stops
    /// accepting and reading; connections without a request in flight close; the
    /// answers to requests in flight are still written, then their connections close.
    /// `recv` hands out the requests still queued, then fails, so workers can finish
    /// and exit. Dropping the server waits for the loop to end.
    pub fn shutdown(&self) {
        self.hub.begin_drain();
    }

    /// latchkey patch: `Err` with the reason when the connection loop is not serving
    /// as it should: it stopped, it has not turned for 5 s (stuck), or accepting new
    /// connections has failed for more than 5 s (or at once, for an error that is not
    /// a shortage). A watchdog should stop reporting the service alive meanwhile.
    pub fn health(&self) -> Result<(), String> {
        match self.hub.fault() {
            Some(why) => Err(why),
            None => Ok(()),
        }
    }

    /// latchkey patch: the loop's counters.
    pub fn stats(&self) -> Stats {
        let s = &self.hub.stats;
        Stats {
            open: s.open.load(Ordering::Relaxed),
            accepted: s.accepted.load(Ordering::Relaxed),
            refused_per_address: s.refused_per_address.load(Ordering::Relaxed),
            refused_full: s.refused_full.load(Ordering::Relaxed),
            evicted: s.evicted.load(Ordering::Relaxed),
            timed_out: s.timed_out.load(Ordering::Relaxed),
            answered_here: s.answered_here.load(Ordering::Relaxed),
            panics: s.panics.load(Ordering::Relaxed),
        }
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.hub.begin_drain();
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<super::Server>();
    }
}

//! latchkey patch (new file): the connection loop.
//!
//! One thread owns the listener and every connection, and drives them with `mio`
//! (epoll on Linux, edge-triggered). Each connection is a small state machine:
//!
//! ```text
//! Head ──complete head──▶ Body ──complete body──▶ Busy ──answer──▶ Send ──▶ Idle ─▶ Head …
//!   │                      │                     (a worker)        │
//!   └─refused / too slow───┴──▶ Send (the refusal, `Connection: close`) ──▶ Linger ──▶ closed
//! ```
//!
//! - **A worker never waits on a client.** The head is read within `header_timeout` of
//!   its first byte (of the accept, for a new connection), the whole body within
//!   `body_timeout`, both bounded in size, before the request is queued for the workers;
//!   the answer is written from here within `send_timeout`. Between requests a
//!   connection may stay silent for `idle_timeout`.
//! - **One request in flight per connection**: while a worker has it, nothing more is
//!   read or parsed from that connection; pipelined bytes wait in its buffer (bounded)
//!   or in the kernel's.
//! - **Bounded connections**: `max_connections` in all and `max_connections_per_address`
//!   per client address (an IPv6 /64 counts as one address) are enforced when a
//!   connection is accepted; beyond them it is refused at once (a 503 through one of a
//!   few spare slots, or a plain close when those are taken). At the global limit the
//!   connection that has waited longest without sending anything (a fresh one, or a
//!   keep-alive one between requests) is closed to make room, so a new client is served
//!   even while someone holds the maximum.
//! - **No lasting failure**: accept errors back off and are reported once per episode;
//!   a panic while handling one connection closes that connection only.
//! - **Clean closes**: after a refusal the write side is shut and the input drained for
//!   a bounded time and size (lingering close), so the client reads the answer instead
//!   of a reset.
//!
//! The HTTP rules themselves are pure functions in `framing.rs`; this file is the shell
//! that moves bytes between sockets, those functions and the workers.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::framing::{
    self, reserve_within, BodyFraming, ChunkedDecoder, Fields, Head, HeadLimits, Refusal, Scanned,
};
use crate::request::{Parts, ReplyTo, Request};
use crate::{HTTPVersion, Limits, NoticeLevel, StatusCode};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// A connection's input buffer holds at most this many bytes more than have arrived.
const INBUF_STEP: usize = 1024;
/// How long a closing connection's input is drained after its answer.
const LINGER_TIME: Duration = Duration::from_secs(2);
/// How much of a closing connection's input is drained at most, bytes.
const LINGER_BYTES: usize = 64 * 1024;
/// Connections refused at the limits that may still get their 503 written and lingered
/// over; beyond this many at once, a refused connection is closed without an answer.
const REFUSAL_SLOTS: usize = 64;
/// Connections accepted per turn of the loop, so that accepting cannot starve the rest.
const ACCEPT_BATCH: usize = 256;
/// The pause after an accept error that is not the client's doing.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How long accepting may keep failing before the server reports it (a descriptor or
/// memory shortage that lasts is a fault, a burst is not).
const ACCEPT_FAULT_GRACE: Duration = Duration::from_secs(5);
/// The longest the loop sleeps, so its heartbeat shows it is alive.
const HEARTBEAT: Duration = Duration::from_millis(500);
/// The loop has not turned for this long: it is reported stuck.
const STUCK_AFTER: Duration = Duration::from_secs(5);
/// The longest a graceful stop waits for answers in flight to be written.
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What the workers and the loop share: the request queue (loop → workers), the
/// finished answers (workers → loop) with the waker that tells the loop, and the
/// loop's counters.
pub(crate) struct Hub {
    queue: Mutex<Queue>,
    ready: Condvar,
    done: Mutex<Vec<Done>>,
    /// Set while a wake-up is on its way: answers that finish meanwhile need no
    /// system call of their own.
    wake_pending: AtomicBool,
    waker: Waker,
    command: AtomicU8,
    drain_seen: AtomicBool,
    pub(crate) stats: Counters,
    started: Instant,
}

struct Queue {
    items: VecDeque<Message>,
    closed: bool,
}

enum Message {
    Request(Request),
    Unblock,
    Error(io::Error),
}

/// An answer made by a worker, for the connection `token` of `generation`.
struct Done {
    token: usize,
    generation: u64,
    bytes: Vec<u8>,
}

const RUN: u8 = 0;
const DRAIN: u8 = 1;

/// The loop's counters and health, read by `Server::stats` and `Server::health`.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) heartbeat_ms: AtomicU64,
    pub(crate) open: AtomicUsize,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused_per_address: AtomicU64,
    pub(crate) refused_full: AtomicU64,
    pub(crate) evicted: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) answered_here: AtomicU64,
    pub(crate) panics: AtomicU64,
    pub(crate) accept_fault: Mutex<Option<String>>,
    pub(crate) stopped: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What `Hub::pop` found.
pub(crate) enum Popped {
    Request(Request),
    Error(io::Error),
    /// `unblock()` was called, or the server is stopping and the queue is empty.
    Unblocked,
    /// Nothing arrived within the time allowed.
    Empty,
}

impl Hub {
    /// Queues a request for the workers.
    fn push(&self, request: Request) {
        lock(&self.queue).items.push_back(Message::Request(request));
        self.ready.notify_one();
    }

    /// Makes one waiting `pop` return `Unblocked` (tiny_http's `unblock`).
    pub(crate) fn unblock(&self) {
        lock(&self.queue).items.push_back(Message::Unblock);
        self.ready.notify_one();
    }

    fn push_error(&self, error: io::Error) {
        lock(&self.queue).items.push_back(Message::Error(error));
        self.ready.notify_one();
    }

    /// Takes the next request: waits until `deadline` (`None`: for ever). Once the
    /// queue is closed, requests still queued are handed out, then `Unblocked`.
    pub(crate) fn pop(&self, deadline: Option<Instant>) -> Popped {
        let mut queue = lock(&self.queue);
        loop {
            match queue.items.pop_front() {
                Some(Message::Request(r)) => return Popped::Request(r),
                Some(Message::Error(e)) => return Popped::Error(e),
                Some(Message::Unblock) => return Popped::Unblocked,
                None if queue.closed => return Popped::Unblocked,
                None => {}
            }
            queue = match deadline {
                None => self
                    .ready
                    .wait(queue)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Popped::Empty;
                    }
                    self.ready
                        .wait_timeout(queue, deadline - now)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
            };
        }
    }

    /// Hands a worker's answer to the loop.
    pub(crate) fn complete(&self, token: usize, generation: u64, bytes: Vec<u8>) {
        lock(&self.done).push(Done {
            token,
            generation,
            bytes,
        });
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let _ = self.waker.wake();
        }
    }

    fn wake(&self) {
        self.wake_pending.store(true, Ordering::Release);
        let _ = self.waker.wake();
    }

    /// Starts a graceful stop: the loop stops accepting and reading new requests,
    /// writes the answers still to come, then ends; workers get the requests still
    /// queued, then `Unblocked`.
    pub(crate) fn begin_drain(&self) {
        if self.command.swap(DRAIN, Ordering::AcqRel) == DRAIN {
            return;
        }
        self.wake();
        // Give the loop a moment to stop queueing before the queue closes, so that no
        // request lands in it after the workers have left.
        let until = Instant::now() + Duration::from_millis(200);
        while !self.drain_seen.load(Ordering::Acquire) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(1));
        }
        lock(&self.queue).closed = true;
        self.ready.notify_all();
    }

    /// Records that the loop ended for good, and fails one waiting `recv` with it so
    /// that the application learns of it.
    pub(crate) fn stopped(&self, why: &str) {
        *lock(&self.stats.stopped) = Some(why.to_string());
        self.push_error(io::Error::other(why.to_string()));
    }

    /// Why the loop is not serving as it should, if it is not: it stopped, it has not
    /// turned for `STUCK_AFTER`, or accepting has been failing.
    pub(crate) fn fault(&self) -> Option<String> {
        if let Some(why) = lock(&self.stats.stopped).clone() {
            return Some(why);
        }
        let now = self.started.elapsed().as_millis() as u64;
        let beat = self.stats.heartbeat_ms.load(Ordering::Acquire);
        let silent = Duration::from_millis(now.saturating_sub(beat));
        if silent > STUCK_AFTER {
            return Some(format!(
                "the connection loop has not turned for {} s",
                silent.as_secs()
            ));
        }
        lock(&self.stats.accept_fault).clone()
    }
}

/// The client address a per-address limit counts: IPv4 addresses one by one, IPv6 by
/// /64 (one subscriber's prefix), IPv4-mapped IPv6 as IPv4.
pub(crate) fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Inserts `Connection: <value>` after the status line of a serialized response, unless
/// its head already has a `Connection` field.
pub(crate) fn with_connection_header(mut bytes: Vec<u8>, value: &str) -> Vec<u8> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(bytes.len());
    let has = bytes[..head_end]
        .split(|&b| b == b'\n')
        .skip(1)
        .any(|line| line.len() >= 11 && line[..11].eq_ignore_ascii_case(b"connection:"));
    if has {
        return bytes;
    }
    let Some(line_end) = bytes.windows(2).position(|w| w == b"\r\n") else {
        return bytes;
    };
    let field = format!("Connection: {value}\r\n");
    bytes.splice(line_end + 2..line_end + 2, field.into_bytes());
    bytes
}

/// The answer to a refusal when the application gave no renderer: plain text.
pub(crate) fn default_render(refusal: &Refusal) -> Vec<u8> {
    let reason = StatusCode(refusal.status).default_reason_phrase();
    let body = format!("{}\n", refusal.message);
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        refusal.status,
        body.len()
    )
    .into_bytes()
}

/// Bytes received on a connection and not consumed yet.
///
/// The buffer grows to what has arrived (at most `INBUF_STEP` beyond it), never by
/// doubling past that, and is given back as soon as it is empty: a connection that
/// stalls holds the bytes it sent, not the next power of two above them. Reads go through the
/// loop's one scratch buffer, so nothing is reserved for bytes that have not come.
#[derive(Default)]
struct InBuf {
    data: Vec<u8>,
    start: usize,
}

impl InBuf {
    fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start >= self.data.len() {
            // Nothing left: the memory goes back at once.
            *self = InBuf::default();
        } else if self.start > 4096 && self.start * 2 > self.data.len() {
            self.data.drain(..self.start);
            self.start = 0;
        }
    }

    fn extend(&mut self, bytes: &[u8]) {
        if self.data.capacity() - self.data.len() < bytes.len() {
            if self.start > 0 {
                self.data.drain(..self.start);
                self.start = 0;
            }
            // Doubling while small, then steps of `INBUF_STEP`: a head that trickles in
            // a byte at a time is copied a few dozen times, and never held in more
            // than `INBUF_STEP` bytes beyond its own.
            let needed = self.data.len() + bytes.len();
            let want = needed.max(self.data.capacity() + self.data.capacity().min(INBUF_STEP));
            self.data.reserve_exact(want - self.data.len());
        }
        self.data.extend_from_slice(bytes);
    }

    /// Takes out the first `len` bytes waiting (a request head) in the buffer they
    /// arrived in, for [`Fields::compact`]; the bytes after them stay, in a buffer of
    /// their size. Only when no earlier request's bytes precede them (`start` is 0):
    /// otherwise the caller copies the head and consumes it, which moves less.
    fn take_head(&mut self, len: usize) -> Option<Vec<u8>> {
        if self.start != 0 || len > self.data.len() {
            return None;
        }
        let rest = self.data[len..].to_vec();
        let mut head = std::mem::replace(&mut self.data, rest);
        head.truncate(len);
        Some(head)
    }

    /// Gives back the memory not needed for the bytes still waiting (after a head, and
    /// between requests): all of it when there are none.
    fn release(&mut self) {
        if self.is_empty() {
            *self = InBuf::default();
        } else if self.data.capacity() > self.data.len() - self.start + INBUF_STEP {
            self.data = self.bytes().to_vec();
            self.start = 0;
        }
    }
}

enum Phase {
    /// Waiting for or reading a request head.
    Head,
    /// Keep-alive: between requests, nothing received yet.
    Idle,
    /// Reading the body of `head`.
    Body(Box<BodyState>),
    /// A worker has the request.
    Busy,
    /// Writing `out`; then the connection closes or waits for the next request.
    Send { close: bool },
    /// The write side is shut; what the client still sends is read and dropped.
    Linger { drained: usize },
}

struct BodyState {
    head: Head,
    body: Vec<u8>,
    read: BodyRead,
}

enum BodyRead {
    Length(usize),
    Chunked(ChunkedDecoder),
}

impl BodyState {
    /// Takes body bytes from `bytes`, growing the body buffer with what arrives (by
    /// doubling, never past the declared length or `limit`): how many bytes it took,
    /// and whether the body is complete; or the refusal of a bad chunked body.
    fn feed(&mut self, bytes: &[u8], limit: usize) -> Result<(usize, bool), Refusal> {
        match &mut self.read {
            BodyRead::Length(left) => {
                let take = (*left).min(bytes.len());
                let length = self.body.len() + *left;
                reserve_within(&mut self.body, take, length);
                self.body.extend_from_slice(&bytes[..take]);
                *left -= take;
                Ok((take, *left == 0))
            }
            BodyRead::Chunked(decoder) => {
                // The data is no longer than its chunked form: one growth per read.
                reserve_within(&mut self.body, bytes.len(), limit);
                decoder
                    .decode(bytes, &mut self.body, limit)
                    .map_err(|e| e.refusal(limit).with_target(&self.head.target))
            }
        }
    }
}

/// A body is complete: the request goes to the workers.
fn body_complete(conn: &mut Conn) -> Next {
    let Phase::Body(state) = std::mem::replace(&mut conn.phase, Phase::Busy) else {
        return Next::Close;
    };
    let BodyState { head, body, .. } = *state;
    Next::Dispatch(Box::new(head), body)
}

struct Conn {
    stream: TcpStream,
    peer: Option<SocketAddr>,
    /// The address counted against `max_connections_per_address` (`None`: exempt).
    key: Option<IpAddr>,
    /// A refusal at the limits, counted in the spare slots instead of `open`.
    refusal: bool,
    inbuf: InBuf,
    /// The buffer length when the head was last found incomplete, so that it is parsed
    /// again only once a new line has arrived.
    parsed: usize,
    phase: Phase,
    out: Vec<u8>,
    written: usize,
    /// The socket may have input not read yet (edge-triggered readiness).
    readable: bool,
    /// The client has ended its side.
    eof: bool,
    /// Some byte of the current request head has arrived.
    received: bool,
    /// The connection closes after the answer in flight.
    close_after: bool,
    version: HTTPVersion,
    timer: u64,
    idle_mark: u64,
    /// The turn of the loop in which it became idle (accepted, or its last answer
    /// written).
    idle_turn: u64,
}

struct Slot {
    generation: u64,
    conn: Option<Conn>,
}

#[derive(Clone, Copy)]
enum Kind {
    Head = 0,
    Idle = 1,
    Body = 2,
    Send = 3,
    Linger = 4,
}

struct Entry {
    at: Instant,
    token: usize,
    generation: u64,
    seq: u64,
}

/// Deadlines and the order in which idle connections may be evicted. Each deadline
/// kind has one duration, so each queue is already in deadline order; entries made
/// stale by a later deadline are skipped (and compacted away).
struct Clock {
    now: Instant,
    /// Turns of the loop so far.
    turn: u64,
    seq: u64,
    durations: [Duration; 5],
    queues: [VecDeque<Entry>; 5],
    idle: VecDeque<(usize, u64, u64)>,
}

impl Clock {
    fn set(&mut self, conn: &mut Conn, token: usize, generation: u64, kind: Kind) {
        self.seq += 1;
        conn.timer = self.seq;
        self.queues[kind as usize].push_back(Entry {
            at: self.now + self.durations[kind as usize],
            token,
            generation,
            seq: self.seq,
        });
    }

    fn mark_idle(&mut self, conn: &mut Conn, token: usize, generation: u64) {
        self.seq += 1;
        conn.idle_mark = self.seq;
        conn.idle_turn = self.turn;
        self.idle.push_back((token, generation, self.seq));
    }
}

/// Why a connection step stopped.
enum Next {
    /// Waiting for the socket.
    Wait,
    /// State changed; step again.
    Again,
    /// Close now.
    Close,
    /// A whole request: hand it to the workers.
    Dispatch(Box<Head>, Vec<u8>),
    /// Answer this and close.
    Refuse(Refusal),
}

struct Accepting {
    /// The listener may have connections waiting.
    ready: bool,
    paused_until: Option<Instant>,
    /// Since when accepting fails, and why (the first error of the episode).
    failing: Option<(Instant, String)>,
    reported: bool,
}

/// The loop's state; `run` consumes it.
pub(crate) struct Loop {
    poll: Poll,
    listener: Option<TcpListener>,
    hub: Arc<Hub>,
    limits: Limits,
    head_limits: HeadLimits,
    slots: Vec<Slot>,
    free: Vec<usize>,
    open: usize,
    refusals: usize,
    busy: usize,
    per_address: HashMap<IpAddr, u32>,
    clock: Clock,
    accepting: Accepting,
    scratch: Box<[u8]>,
    draining: Option<Instant>,
    /// The generation given to the last connection; unique over the loop's life.
    next_generation: u64,
}

impl Loop {
    /// Sets up the poll, the waker and the listener; nothing runs until `run`.
    pub(crate) fn new(
        listener: std::net::TcpListener,
        limits: Limits,
    ) -> io::Result<(Loop, Arc<Hub>)> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let hub = Arc::new(Hub {
            queue: Mutex::new(Queue {
                items: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            done: Mutex::new(Vec::new()),
            wake_pending: AtomicBool::new(false),
            waker,
            command: AtomicU8::new(RUN),
            drain_seen: AtomicBool::new(false),
            stats: Counters::default(),
            started: Instant::now(),
        });
        let now = Instant::now();
        let durations = [
            limits.header_timeout,
            limits.idle_timeout,
            limits.body_timeout,
            limits.send_timeout,
            LINGER_TIME,
        ];
        let head_limits = limits.head;
        Ok((
            Loop {
                poll,
                listener: Some(listener),
                hub: Arc::clone(&hub),
                limits,
                head_limits,
                slots: Vec::new(),
                free: Vec::new(),
                open: 0,
                refusals: 0,
                busy: 0,
                per_address: HashMap::new(),
                clock: Clock {
                    now,
                    turn: 0,
                    seq: 0,
                    durations,
                    queues: Default::default(),
                    idle: VecDeque::new(),
                },
                accepting: Accepting {
                    ready: true,
                    paused_until: None,
                    failing: None,
                    reported: false,
                },
                scratch: vec![0; READ_CHUNK].into_boxed_slice(),
                draining: None,
                next_generation: 0,
            },
            hub,
        ))
    }

    /// Runs until a graceful stop has finished. A panic that escapes the per-connection
    /// guards ends the loop; the caller reports it.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let beat = self.hub.started.elapsed().as_millis() as u64;
            self.hub.stats.heartbeat_ms.store(beat, Ordering::Release);
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.notice(
                        NoticeLevel::Error,
                        &format!("the connection loop cannot poll: {e}"),
                    );
                    std::thread::sleep(ACCEPT_BACKOFF);
                }
            }
            self.clock.now = Instant::now();
            self.clock.turn += 1;
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accepting.ready = true,
                    WAKER => {}
                    Token(token) => {
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            if let Some(Slot {
                                conn: Some(conn), ..
                            }) = self.slots.get_mut(token)
                            {
                                conn.readable = true;
                            }
                        }
                        self.guarded(token, |lp| lp.advance(token));
                    }
                }
            }
            self.take_answers();
            if self.hub.command.load(Ordering::Acquire) == DRAIN && self.draining.is_none() {
                self.begin_drain();
            }
            if self.draining.is_none() {
                self.accept();
            }
            self.expire();
            if let Some(since) = self.draining {
                if self.busy == 0 && self.sending() == 0 || since.elapsed() > self.drain_limit() {
                    break;
                }
            }
        }
        self.hub.stats.open.store(0, Ordering::Release);
    }

    fn drain_limit(&self) -> Duration {
        self.limits
            .send_timeout
            .min(DRAIN_LIMIT)
            .max(Duration::from_secs(1))
    }

    fn sending(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s.conn.as_ref().map(|c| &c.phase), Some(Phase::Send { .. })))
            .count()
    }

    fn notice(&self, level: NoticeLevel, text: &str) {
        if let Some(notice) = &self.limits.notice {
            notice(level, text);
        }
    }

    /// Runs `f` for one connection; a panic inside closes that connection only.
    fn guarded(&mut self, token: usize, f: impl FnOnce(&mut Loop)) {
        if catch_unwind(AssertUnwindSafe(|| f(self))).is_err() {
            self.hub.stats.panics.fetch_add(1, Ordering::Relaxed);
            self.notice(
                NoticeLevel::Error,
                "a panic while handling a connection; that connection was closed",
            );
            self.close(token);
        }
    }

    fn poll_timeout(&mut self) -> Duration {
        if self.hub.wake_pending.load(Ordering::Acquire)
            || (self.accepting.ready
                && self.accepting.paused_until.is_none()
                && self.draining.is_none())
        {
            return Duration::ZERO;
        }
        let now = Instant::now();
        let mut next = now + HEARTBEAT;
        if let Some(until) = self.accepting.paused_until {
            next = next.min(until);
        }
        for kind in 0..5 {
            while let Some(entry) = self.clock.queues[kind].front() {
                if self.is_live(entry) {
                    next = next.min(entry.at);
                    break;
                }
                self.clock.queues[kind].pop_front();
            }
        }
        next.saturating_duration_since(now)
    }

    fn is_live(&self, entry: &Entry) -> bool {
        matches!(self.slots.get(entry.token), Some(Slot { generation, conn: Some(conn) })
            if *generation == entry.generation && conn.timer == entry.seq)
    }

    /// Fires the deadlines that have passed.
    fn expire(&mut self) {
        self.compact_idle();
        let now = self.clock.now;
        for kind in 0..5 {
            while let Some(entry) = self.clock.queues[kind].front() {
                if !self.is_live(entry) {
                    self.clock.queues[kind].pop_front();
                    continue;
                }
                if entry.at > now {
                    break;
                }
                let token = entry.token;
                self.clock.queues[kind].pop_front();
                self.guarded(token, |lp| lp.deadline_passed(token));
            }
            // Entries left behind by connections that moved on are dropped in bulk.
            let queue = &self.clock.queues[kind];
            if queue.len() > 2 * (self.open + self.refusals) + 1024 {
                let mut queue = std::mem::take(&mut self.clock.queues[kind]);
                queue.retain(|e| self.is_live(e));
                self.clock.queues[kind] = queue;
            }
        }
    }

    fn deadline_passed(&mut self, token: usize) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        conn.timer = 0;
        match &conn.phase {
            Phase::Head if conn.received => {
                let target = framing::partial_target(conn.inbuf.bytes());
                self.hub.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                let mut refusal = Refusal::new(408, "The request head took too long to arrive.");
                refusal.target = target;
                self.refuse(token, refusal);
                self.advance(token);
            }
            Phase::Body(state) => {
                let target = state.head.target.clone();
                self.hub.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                self.refuse(
                    token,
                    Refusal::new(408, "The request body took too long to arrive.")
                        .with_target(&target),
                );
                self.advance(token);
            }
            Phase::Send { .. } => {
                self.hub.stats.timed_out.fetch_add(1, Ordering::Relaxed);
                self.close(token);
            }
            Phase::Head | Phase::Idle | Phase::Linger { .. } => self.close(token),
            Phase::Busy => {}
        }
    }

    fn conn_mut(&mut self, token: usize) -> Option<&mut Conn> {
        self.slots.get_mut(token).and_then(|s| s.conn.as_mut())
    }

    /// Accepts what waits on the listener, a batch per turn.
    fn accept(&mut self) {
        if let Some(until) = self.accepting.paused_until {
            if self.clock.now < until {
                return;
            }
            self.accepting.paused_until = None;
        }
        if !self.accepting.ready {
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listener.as_ref() else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => {
                    self.accept_recovered();
                    self.hub.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    self.admit(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accepting.ready = false;
                    self.accept_recovered();
                    return;
                }
                Err(e) => {
                    if self.accept_failed(&e) {
                        return;
                    }
                }
            }
        }
    }

    /// Handles an accept error; returns whether to stop accepting for now.
    fn accept_failed(&mut self, e: &io::Error) -> bool {
        use io::ErrorKind::*;
        // The client's doing (it gave up, or its packet was bad): go on at once.
        if matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted)
            || matches!(
                e.raw_os_error(),
                Some(libc_errno::EPROTO) | Some(libc_errno::EPERM)
            )
        {
            return false;
        }
        let out_of_descriptors = matches!(
            e.raw_os_error(),
            Some(libc_errno::EMFILE) | Some(libc_errno::ENFILE)
        );
        // Out of descriptors: an idle connection gives one back.
        if out_of_descriptors && self.evict_one() {
            return false;
        }
        let now = self.clock.now;
        match &self.accepting.failing {
            None => {
                self.accepting.failing = Some((now, e.to_string()));
                self.notice(
                    NoticeLevel::Error,
                    &format!(
                        "cannot accept connections ({e}); retrying every {} ms",
                        ACCEPT_BACKOFF.as_millis()
                    ),
                );
            }
            Some((since, first)) => {
                let transient = out_of_descriptors
                    || matches!(e.kind(), OutOfMemory)
                    || matches!(
                        e.raw_os_error(),
                        Some(libc_errno::ENOBUFS) | Some(libc_errno::ENOMEM)
                    );
                if !self.accepting.reported
                    && (!transient || now.duration_since(*since) > ACCEPT_FAULT_GRACE)
                {
                    self.accepting.reported = true;
                    *lock(&self.hub.stats.accept_fault) = Some(format!(
                        "not accepting connections for {} s: {first}",
                        now.duration_since(*since).as_secs()
                    ));
                }
            }
        }
        self.accepting.paused_until = Some(now + ACCEPT_BACKOFF);
        true
    }

    fn accept_recovered(&mut self) {
        if let Some((since, _)) = self.accepting.failing.take() {
            self.accepting.reported = false;
            *lock(&self.hub.stats.accept_fault) = None;
            self.notice(
                NoticeLevel::Info,
                &format!(
                    "accepting connections again after {} ms",
                    self.clock.now.duration_since(since).as_millis()
                ),
            );
        }
    }

    /// Takes a new connection in, or refuses it at the limits.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let exempt = self
            .limits
            .exempt
            .as_ref()
            .is_some_and(|exempt| exempt(peer.ip()));
        let key = (!exempt).then(|| address_key(peer.ip()));
        if let Some(key) = key {
            if self.per_address.get(&key).copied().unwrap_or(0) as usize
                >= self.limits.max_connections_per_address
            {
                self.hub
                    .stats
                    .refused_per_address
                    .fetch_add(1, Ordering::Relaxed);
                self.refuse_at_once(
                    stream,
                    peer,
                    Refusal::new(
                        503,
                        "Too many connections from your address; try again shortly.",
                    ),
                );
                return;
            }
        }
        if self.open >= self.limits.max_connections && !self.evict_one() {
            self.hub.stats.refused_full.fetch_add(1, Ordering::Relaxed);
            self.refuse_at_once(
                stream,
                peer,
                Refusal::new(
                    503,
                    "The server is handling too many connections; try again shortly.",
                ),
            );
            return;
        }
        let _ = stream.set_nodelay(true);
        let Some((token, generation)) = self.insert(stream, peer, key, false) else {
            return;
        };
        self.open += 1;
        self.hub.stats.open.store(self.open, Ordering::Relaxed);
        if let Some(key) = key {
            *self.per_address.entry(key).or_insert(0) += 1;
        }
        if let Some(Slot {
            conn: Some(conn), ..
        }) = self.slots.get_mut(token)
        {
            self.clock.set(conn, token, generation, Kind::Head);
            self.clock.mark_idle(conn, token, generation);
        }
    }

    /// A connection over a limit: a 503 through a spare slot, else closed at once.
    fn refuse_at_once(&mut self, stream: TcpStream, peer: SocketAddr, refusal: Refusal) {
        if self.refusals >= REFUSAL_SLOTS || self.draining.is_some() {
            return;
        }
        let Some((token, _)) = self.insert(stream, peer, None, true) else {
            return;
        };
        self.refusals += 1;
        self.refuse(token, refusal);
        self.guarded(token, |lp| lp.advance(token));
    }

    /// Registers a connection in a free slot.
    fn insert(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        key: Option<IpAddr>,
        refusal: bool,
    ) -> Option<(usize, u64)> {
        let token = match self.free.pop() {
            Some(t) => t,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    conn: None,
                });
                self.slots.len() - 1
            }
        };
        if self
            .poll
            .registry()
            .register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_err()
        {
            self.free.push(token);
            return None;
        }
        self.next_generation += 1;
        let slot = &mut self.slots[token];
        slot.generation = self.next_generation;
        slot.conn = Some(Conn {
            stream,
            peer: Some(peer),
            key,
            refusal,
            inbuf: InBuf::default(),
            parsed: 0,
            phase: Phase::Head,
            out: Vec::new(),
            written: 0,
            readable: true,
            eof: false,
            received: false,
            close_after: false,
            version: HTTPVersion(1, 1),
            timer: 0,
            idle_mark: 0,
            idle_turn: self.clock.turn,
        });
        Some((token, slot.generation))
    }

    /// Closes the connection that has waited longest without sending anything, unless
    /// it became idle in this very turn of the loop: one just accepted has not been read
    /// yet, and may well have sent its request.
    fn evict_one(&mut self) -> bool {
        while let Some(&(token, generation, seq)) = self.clock.idle.front() {
            let idle_turn = match self.slots.get(token) {
                Some(Slot {
                    generation: g,
                    conn: Some(c),
                }) if *g == generation && c.idle_mark == seq && !c.refusal => c.idle_turn,
                _ => {
                    self.clock.idle.pop_front();
                    continue;
                }
            };
            if idle_turn == self.clock.turn {
                return false;
            }
            self.clock.idle.pop_front();
            self.hub.stats.evicted.fetch_add(1, Ordering::Relaxed);
            self.close(token);
            return true;
        }
        false
    }

    /// Closes and forgets a connection.
    fn close(&mut self, token: usize) {
        let Some(slot) = self.slots.get_mut(token) else {
            return;
        };
        let Some(mut conn) = slot.conn.take() else {
            return;
        };
        slot.generation = 0;
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if matches!(conn.phase, Phase::Busy) {
            self.busy -= 1;
        }
        if conn.refusal {
            self.refusals -= 1;
        } else {
            self.open -= 1;
            self.hub.stats.open.store(self.open, Ordering::Relaxed);
        }
        if let Some(key) = conn.key {
            if let Some(n) = self.per_address.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.per_address.remove(&key);
                }
            }
        }
        self.free.push(token);
        if self.open + self.refusals == 0 && self.slots.len() > 256 {
            // After a burst, the tables go back to nothing: their memory is returned.
            // Generations are unique across slots, so a late answer for a connection of
            // before can never match a new one.
            self.slots = Vec::new();
            self.free = Vec::new();
            self.per_address = HashMap::new();
            self.clock.idle = VecDeque::new();
            self.clock.queues = Default::default();
        }
    }

    /// Drops the eviction-order entries of connections that moved on, once they
    /// outnumber the live ones (each keep-alive request adds one).
    fn compact_idle(&mut self) {
        if self.clock.idle.len() > 2 * (self.open + self.refusals) + 1024 {
            let slots = &self.slots;
            self.clock.idle.retain(|(t, g, s)| {
                matches!(slots.get(*t), Some(Slot { generation, conn: Some(c) })
                    if generation == g && c.idle_mark == *s)
            });
        }
    }

    /// Turns a connection into the answer to `refusal`, closing after it.
    fn refuse(&mut self, token: usize, refusal: Refusal) {
        self.hub.stats.answered_here.fetch_add(1, Ordering::Relaxed);
        let bytes = match &self.limits.render {
            Some(render) => render(&refusal),
            None => default_render(&refusal),
        };
        let bytes = with_connection_header(bytes, "close");
        let generation = self.slots.get(token).map_or(0, |s| s.generation);
        let Some(conn) = self.slots.get_mut(token).and_then(|s| s.conn.as_mut()) else {
            return;
        };
        if matches!(conn.phase, Phase::Busy) {
            return;
        }
        conn.out.drain(..conn.written);
        conn.written = 0;
        conn.out.extend_from_slice(&bytes);
        conn.phase = Phase::Send { close: true };
        conn.idle_mark = 0;
        conn.inbuf = InBuf::default();
        self.clock.set(conn, token, generation, Kind::Send);
    }

    /// Steps a connection's state machine as far as its socket allows.
    fn advance(&mut self, token: usize) {
        loop {
            let next = {
                let Some(Slot {
                    generation,
                    conn: Some(conn),
                }) = self.slots.get_mut(token)
                else {
                    return;
                };
                let mut cx = Cx {
                    limits: &self.limits,
                    head_limits: &self.head_limits,
                    scratch: &mut self.scratch,
                    clock: &mut self.clock,
                    token,
                    generation: *generation,
                    draining: self.draining.is_some(),
                };
                step(conn, &mut cx)
            };
            match next {
                Next::Wait => return,
                Next::Again => continue,
                Next::Close => {
                    self.close(token);
                    return;
                }
                Next::Dispatch(head, body) => {
                    self.dispatch(token, *head, body);
                    return;
                }
                Next::Refuse(refusal) => self.refuse(token, refusal),
            }
        }
    }

    /// Hands a whole request to the workers.
    fn dispatch(&mut self, token: usize, head: Head, body: Vec<u8>) {
        let hub = Arc::clone(&self.hub);
        let Some(slot) = self.slots.get_mut(token) else {
            return;
        };
        let generation = slot.generation;
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        conn.phase = Phase::Busy;
        conn.timer = 0;
        conn.idle_mark = 0;
        conn.close_after = head.close;
        conn.version = head.version.clone();
        self.busy += 1;
        let body_length = match head.body {
            BodyFraming::None => None,
            BodyFraming::Length(_) | BodyFraming::Chunked => Some(body.len()),
        };
        let parts = Parts {
            method: head.method,
            path: head.target,
            http_version: head.version,
            fields: head.fields,
            remote_addr: conn.peer,
            body,
            body_length,
        };
        hub.push(Request::new(
            parts,
            Some(ReplyTo {
                hub: Arc::clone(&hub),
                token,
                generation,
            }),
        ));
    }

    /// Takes the workers' answers and starts writing them.
    fn take_answers(&mut self) {
        self.hub.wake_pending.store(false, Ordering::Release);
        let answers = std::mem::take(&mut *lock(&self.hub.done));
        for done in answers {
            let token = done.token;
            self.guarded(token, |lp| lp.answer(done));
        }
    }

    fn answer(&mut self, done: Done) {
        let draining = self.draining.is_some();
        let Some(slot) = self.slots.get_mut(done.token) else {
            return;
        };
        if slot.generation != done.generation {
            return;
        }
        let generation = slot.generation;
        let Some(conn) = slot.conn.as_mut() else {
            return;
        };
        if !matches!(conn.phase, Phase::Busy) {
            return;
        }
        self.busy -= 1;
        let close = conn.close_after || draining;
        let bytes = if close {
            with_connection_header(done.bytes, "close")
        } else if conn.version == HTTPVersion(1, 0) {
            with_connection_header(done.bytes, "keep-alive")
        } else {
            done.bytes
        };
        conn.out.drain(..conn.written);
        conn.written = 0;
        if conn.out.is_empty() {
            conn.out = bytes;
        } else {
            conn.out.extend_from_slice(&bytes);
        }
        conn.phase = Phase::Send { close };
        self.clock.set(conn, done.token, generation, Kind::Send);
        self.advance(done.token);
    }

    /// A graceful stop: no more accepting; connections without a request in flight
    /// close; those with one close after its answer.
    fn begin_drain(&mut self) {
        self.draining = Some(self.clock.now);
        self.hub.drain_seen.store(true, Ordering::Release);
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        for token in 0..self.slots.len() {
            let Some(conn) = self.conn_mut(token) else {
                continue;
            };
            match &mut conn.phase {
                Phase::Busy => conn.close_after = true,
                Phase::Send { close } => *close = true,
                _ => self.close(token),
            }
        }
    }
}

/// What a connection step may touch besides the connection.
struct Cx<'a> {
    limits: &'a Limits,
    head_limits: &'a HeadLimits,
    scratch: &'a mut [u8],
    clock: &'a mut Clock,
    token: usize,
    generation: u64,
    draining: bool,
}

/// Reads once from the socket into the loop's `scratch` buffer, at most `most` bytes:
/// `Ok(n)` when `n` bytes came, else what the connection does next (wait for the socket,
/// read again after an interruption, or close at the end of input or on an error).
fn read_input(conn: &mut Conn, scratch: &mut [u8], most: usize) -> Result<usize, Next> {
    if conn.eof {
        return Err(Next::Close);
    }
    if !conn.readable {
        return Err(Next::Wait);
    }
    let most = most.clamp(1, scratch.len());
    match conn.stream.read(&mut scratch[..most]) {
        Ok(0) => {
            conn.eof = true;
            Err(Next::Close)
        }
        Ok(n) => Ok(n),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            conn.readable = false;
            Err(Next::Wait)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(Next::Again),
        Err(_) => {
            conn.eof = true;
            Err(Next::Close)
        }
    }
}

/// When more input is needed: read into the connection's buffer, or say to wait or
/// close.
fn need_input(conn: &mut Conn, cx: &mut Cx<'_>) -> Next {
    match read_input(conn, cx.scratch, READ_CHUNK) {
        Ok(n) => {
            conn.inbuf.extend(&cx.scratch[..n]);
            Next::Again
        }
        Err(next) => next,
    }
}

/// Writes what is pending in `out`: `Ok(true)` when all of it went out.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    while conn.written < conn.out.len() {
        match conn.stream.write(&conn.out[conn.written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    conn.out = Vec::new();
    conn.written = 0;
    Ok(true)
}

/// One step of a connection's state machine.
fn step(conn: &mut Conn, cx: &mut Cx<'_>) -> Next {
    match &mut conn.phase {
        Phase::Idle | Phase::Head => {
            if cx.draining {
                return Next::Close;
            }
            if conn.inbuf.is_empty() {
                return need_input(conn, cx);
            }
            if matches!(conn.phase, Phase::Idle) {
                conn.phase = Phase::Head;
                cx.clock.set(conn, cx.token, cx.generation, Kind::Head);
            }
            conn.received = true;
            conn.idle_mark = 0;
            // Parse again only when a line may have ended or a limit been passed.
            let bytes = conn.inbuf.bytes();
            let fresh = &bytes[conn.parsed.min(bytes.len())..];
            if conn.parsed > 0
                && !fresh.contains(&b'\n')
                && bytes.len() <= cx.head_limits.max_line.min(cx.head_limits.max_head)
            {
                return need_input(conn, cx);
            }
            let outcome = match &cx.limits.keep_field {
                Some(keep) => framing::scan_head(bytes, cx.head_limits, keep.as_ref()),
                None => framing::scan_head(bytes, cx.head_limits, &|_| true),
            };
            match outcome {
                Scanned::Partial => {
                    conn.parsed = bytes.len();
                    need_input(conn, cx)
                }
                Scanned::Refused(refusal) => Next::Refuse(refusal),
                Scanned::Complete {
                    mut head,
                    fields,
                    len,
                } => {
                    // The kept fields stay in the memory they arrived in, moved together
                    // and cut to size; what follows the head gets a buffer of its own.
                    head.fields = match conn.inbuf.take_head(len) {
                        Some(buffer) => Fields::compact(buffer, &fields),
                        None => {
                            let fields = Fields::gather(conn.inbuf.bytes(), &fields);
                            conn.inbuf.consume(len);
                            conn.inbuf.release();
                            fields
                        }
                    };
                    conn.parsed = 0;
                    conn.received = false;
                    start_body(conn, cx, head)
                }
            }
        }
        Phase::Body(state) => {
            let limit = cx.limits.max_body;
            // First the bytes that came with the head, from the connection's buffer.
            if !conn.inbuf.is_empty() {
                let (used, done) = match state.feed(conn.inbuf.bytes(), limit) {
                    Ok(progress) => progress,
                    Err(refusal) => return Next::Refuse(refusal),
                };
                conn.inbuf.consume(used);
                if done {
                    return body_complete(conn);
                }
            }
            // A declared length is read no further than its end: what a client sends
            // after it (a pipelined request) waits in the kernel, not here, while this
            // request is in a worker's hands.
            let most = match &state.read {
                BodyRead::Length(left) => *left,
                BodyRead::Chunked(_) => READ_CHUNK,
            };
            // A pending `100 Continue` goes out while the body is awaited.
            if conn.written < conn.out.len() && flush(conn).is_err() {
                return Next::Close;
            }
            // Then straight from the socket into the body, without a buffer between.
            let n = match read_input(conn, cx.scratch, most) {
                Ok(n) => n,
                Err(next) => return next,
            };
            let Phase::Body(state) = &mut conn.phase else {
                return Next::Close;
            };
            let (used, done) = match state.feed(&cx.scratch[..n], limit) {
                Ok(progress) => progress,
                Err(refusal) => return Next::Refuse(refusal),
            };
            if used < n {
                // The bytes after a chunked body belong to the next request.
                conn.inbuf.extend(&cx.scratch[used..n]);
            }
            if done {
                return body_complete(conn);
            }
            Next::Again
        }
        Phase::Busy => Next::Wait,
        Phase::Send { close } => {
            let close = *close;
            match flush(conn) {
                Ok(true) => {}
                Ok(false) => return Next::Wait,
                Err(_) => return Next::Close,
            }
            if close || cx.draining {
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.inbuf = InBuf::default();
                conn.phase = Phase::Linger { drained: 0 };
                cx.clock.set(conn, cx.token, cx.generation, Kind::Linger);
            } else {
                conn.inbuf.release();
                conn.phase = Phase::Idle;
                cx.clock.set(conn, cx.token, cx.generation, Kind::Idle);
                if conn.inbuf.is_empty() {
                    cx.clock.mark_idle(conn, cx.token, cx.generation);
                }
            }
            Next::Again
        }
        Phase::Linger { drained } => {
            if conn.eof || *drained > LINGER_BYTES {
                return Next::Close;
            }
            if !conn.readable {
                return Next::Wait;
            }
            match conn.stream.read(cx.scratch) {
                Ok(0) => Next::Close,
                Ok(n) => {
                    *drained += n;
                    Next::Again
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    Next::Wait
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => Next::Again,
                Err(_) => Next::Close,
            }
        }
    }
}

/// After a complete head: refuse an oversized declared body, else read the body (or
/// hand a bodiless request over at once).
fn start_body(conn: &mut Conn, cx: &mut Cx<'_>, head: Head) -> Next {
    let read = match head.body {
        BodyFraming::None | BodyFraming::Length(0) => {
            return Next::Dispatch(Box::new(head), Vec::new());
        }
        BodyFraming::Length(n) => {
            if n > cx.limits.max_body as u64 {
                return Next::Refuse(
                    framing::body_too_large(cx.limits.max_body).with_target(&head.target),
                );
            }
            BodyRead::Length(n as usize)
        }
        BodyFraming::Chunked => BodyRead::Chunked(ChunkedDecoder::default()),
    };
    if head.expect_continue && conn.inbuf.is_empty() {
        conn.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    // The body buffer grows as the body arrives, not to the declared length at once.
    conn.phase = Phase::Body(Box::new(BodyState {
        head,
        body: Vec::new(),
        read,
    }));
    cx.clock.set(conn, cx.token, cx.generation, Kind::Body);
    Next::Again
}

/// The errno values the accept loop tells apart (Linux; std has no names for them).
mod libc_errno {
    pub const EPERM: i32 = 1;
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const EPROTO: i32 = 71;
    pub const ENOBUFS: i32 = 105;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_buffer_holds_what_arrived_not_the_next_power_of_two() {
        let mut buf = InBuf::default();
        // A head trickling in a byte at a time.
        for _ in 0..20_000 {
            buf.extend(b"a");
        }
        assert_eq!(buf.bytes().len(), 20_000);
        assert!(
            buf.data.capacity() <= 20_000 + INBUF_STEP,
            "capacity {}",
            buf.data.capacity()
        );
        // A head taken out leaves what follows it in a buffer of its size.
        let head = buf.take_head(19_000).expect("nothing consumed before it");
        assert_eq!(head.len(), 19_000);
        assert_eq!(buf.bytes().len(), 1000);
        assert_eq!(buf.data.capacity(), 1000);
        // Not after earlier bytes were consumed: the caller copies instead.
        buf.consume(10);
        assert!(buf.take_head(10).is_none());
        buf.release();
        assert!(buf.data.capacity() <= 990 + INBUF_STEP);
        // Emptied, the memory goes back.
        buf.consume(990);
        assert_eq!(buf.data.capacity(), 0);
    }

    #[test]
    fn connection_header_is_added_once() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec();
        assert_eq!(
            with_connection_header(plain, "close"),
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        );
        let has = b"HTTP/1.1 200 OK\r\nconnection: keep-alive\r\n\r\n".to_vec();
        assert_eq!(with_connection_header(has.clone(), "close"), has);
        // A body that merely mentions the header does not count.
        let body = b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nConnection: x".to_vec();
        assert!(with_connection_header(body, "close")
            .starts_with(b"HTTP/1.1 200 OK\r\nConnection: close\r\n"));
    }

    #[test]
    fn addresses_are_counted_by_host_or_ipv6_prefix() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(address_key(v4), v4);
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_key(mapped), v4);
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
    }

    #[test]
    fn the_default_refusal_is_framed_and_closes() {
        let bytes = default_render(&Refusal::new(
            505,
            "Only HTTP/1.0 and HTTP/1.1 are supported.",
        ));
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.contains("\r\nContent-Length: 42\r\n"));
    }
}

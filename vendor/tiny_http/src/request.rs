//! latchkey patch (rewritten file): a `Request` is a complete request, body included,
//! read by the connection loop (`run.rs`) before any worker sees it. Answering it hands
//! the response bytes back to the loop, which writes them; a worker never touches a
//! socket. The public methods workers use are tiny_http's own.

use std::fmt;
use std::io::{Cursor, Error as IoError, Read};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use ascii::AsciiString;

use crate::framing::Fields;
use crate::run::Hub;
use crate::{HTTPVersion, Header, HeaderField, Method, Response, StatusCode};

/// Represents an HTTP request made by a client.
///
/// A `Request` object is what is produced by the server, and is what your code must
/// analyse and answer. It is `Send`, so requests can be dispatched to worker threads.
///
/// latchkey patch: the head and the whole body were read (within the server's size
/// limits and deadlines) before the request was handed out, so nothing here waits on
/// the client. A connection has at most one request in flight: the next pipelined
/// request is parsed only after this one's answer has been written.
///
/// # Automatic cleanup
///
/// If a `Request` object is destroyed without `respond` or `respond_raw` being called,
/// an empty response with a 500 status code (internal server error) is sent back to
/// the client.
///
/// # Testing
///
/// If you want to build fake requests to test your server, use
/// [`TestRequest`](crate::test::TestRequest).
pub struct Request {
    method: Method,
    path: String,
    http_version: HTTPVersion,
    /// The header fields as read, compactly.
    fields: Fields,
    /// [`Request::headers`] and [`Request::opaque_headers`], made from `fields` the
    /// first time either is asked for (an application reading [`Request::fields`]
    /// never pays for them).
    split: OnceLock<Box<SplitHeaders>>,
    remote_addr: Option<SocketAddr>,
    body: Cursor<Vec<u8>>,
    body_length: Option<usize>,
    /// Where the answer goes; `None` once answered (or for a detached test request).
    reply: Option<ReplyTo>,
}

/// The fields as tiny_http's types: those with ASCII values, and the others.
type SplitHeaders = (Vec<Header>, Vec<(HeaderField, Vec<u8>)>);

/// The connection a request came on, as the loop knows it.
pub(crate) struct ReplyTo {
    pub(crate) hub: Arc<Hub>,
    pub(crate) token: usize,
    pub(crate) generation: u64,
}

/// The parts of a request the loop has read.
pub(crate) struct Parts {
    pub(crate) method: Method,
    pub(crate) path: String,
    pub(crate) http_version: HTTPVersion,
    pub(crate) fields: Fields,
    pub(crate) remote_addr: Option<SocketAddr>,
    pub(crate) body: Vec<u8>,
    pub(crate) body_length: Option<usize>,
}

impl Request {
    /// A request read by the loop, answered through `reply` (`None`: answers go nowhere).
    pub(crate) fn new(parts: Parts, reply: Option<ReplyTo>) -> Request {
        Request {
            method: parts.method,
            path: parts.path,
            http_version: parts.http_version,
            fields: parts.fields,
            split: OnceLock::new(),
            remote_addr: parts.remote_addr,
            body: Cursor::new(parts.body),
            body_length: parts.body_length,
            reply,
        }
    }

    /// Returns true if the request was made through HTTPS (never: TLS is not built in).
    #[inline]
    pub fn secure(&self) -> bool {
        false
    }

    /// Returns the method requested by the client (eg. `GET`, `POST`, etc.).
    #[inline]
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Returns the resource requested by the client, in origin form (`/path?query`).
    ///
    /// latchkey patch: an absolute-form target (`http://host/path?query`) is given as
    /// its path and query; its authority is the `Host` header's value (RFC 9112 §3.2.2).
    #[inline]
    pub fn url(&self) -> &str {
        &self.path
    }

    /// Returns the header fields whose values are ASCII, in arrival order.
    ///
    /// latchkey patch: a field whose value holds bytes above 0x7F (obs-text, RFC 9110
    /// §5.5) is not here, since `Header` holds ASCII only; see [`Request::opaque_headers`].
    /// Only the fields the server keeps are here: all of them unless
    /// `Limits::keep_field` says otherwise. Made on the first call from
    /// [`Request::fields`], which needs no allocation.
    pub fn headers(&self) -> &[Header] {
        &self.split().0
    }

    /// latchkey patch: the header fields whose values hold obs-text (bytes 0x80-0xFF),
    /// as opaque bytes, in arrival order. They are valid HTTP and the request is
    /// served; an application decides whether such a value means anything to it.
    pub fn opaque_headers(&self) -> &[(HeaderField, Vec<u8>)] {
        &self.split().1
    }

    /// latchkey patch: every header field kept, as `(name, value)` bytes in arrival
    /// order, ASCII or not, without a copy: the cheap way to read the few fields an
    /// application needs.
    #[inline]
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    fn split(&self) -> &SplitHeaders {
        self.split.get_or_init(|| {
            let mut headers = Vec::with_capacity(self.fields.len());
            let mut opaque = Vec::new();
            for (name, value) in self.fields.iter() {
                // Names are tokens, so ASCII: the conversion cannot fail.
                let Ok(field) = HeaderField::from_bytes(name) else {
                    continue;
                };
                match AsciiString::from_ascii(value) {
                    Ok(value) => headers.push(Header { field, value }),
                    Err(_) => opaque.push((field, value.to_vec())),
                }
            }
            Box::new((headers, opaque))
        })
    }

    /// Returns the HTTP version of the request: 1.0 or 1.1.
    #[inline]
    pub fn http_version(&self) -> &HTTPVersion {
        &self.http_version
    }

    /// Returns the length of the body in bytes: the `Content-Length`, or the decoded
    /// length of a chunked body; `None` when the request had neither.
    #[inline]
    pub fn body_length(&self) -> Option<usize> {
        self.body_length
    }

    /// Returns the address of the client that sent this request (the proxy's, behind
    /// one).
    #[inline]
    pub fn remote_addr(&self) -> Option<&SocketAddr> {
        self.remote_addr.as_ref()
    }

    /// Allows to read the body of the request, which is already in memory.
    ///
    /// latchkey patch: `Expect: 100-continue` is answered by the connection loop
    /// before the body is read, so this sends nothing.
    #[inline]
    pub fn as_reader(&mut self) -> &mut dyn Read {
        &mut self.body
    }

    /// latchkey patch: takes the body (the bytes not yet read through `as_reader`),
    /// leaving it empty; no copy.
    pub fn take_body(&mut self) -> Vec<u8> {
        let position = usize::try_from(self.body.position()).unwrap_or(usize::MAX);
        let mut body = std::mem::take(self.body.get_mut());
        self.body.set_position(0);
        if position > 0 {
            body.drain(..position.min(body.len()));
        }
        body
    }

    /// Sends a response to this request. The response is serialized here (its body
    /// read to the end, `Content-Length` set) and written by the connection loop.
    pub fn respond<R>(mut self, response: Response<R>) -> Result<(), IoError>
    where
        R: Read,
    {
        let mut out = Vec::with_capacity(256);
        response.raw_print(
            &mut out,
            self.http_version.clone(),
            self.method == Method::Head,
        )?;
        self.hand_over(out);
        Ok(())
    }

    /// latchkey patch: sends `bytes`, a complete response (status line, headers with a
    /// correct `Content-Length`, blank line and body; no body for `HEAD`).
    ///
    /// For servers that serialize their own responses into a reused buffer: no
    /// `Response`, no per-header allocation, no `Date` or `Server` header added. The
    /// caller owns the framing; the connection loop decides whether the connection
    /// stays open (and says so with a `Connection` header when it closes).
    pub fn respond_raw(mut self, bytes: &[u8]) -> Result<(), IoError> {
        self.hand_over(bytes.to_vec());
        Ok(())
    }

    fn hand_over(&mut self, bytes: Vec<u8>) {
        if let Some(reply) = self.reply.take() {
            reply.hub.complete(reply.token, reply.generation, bytes);
        }
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> Result<(), fmt::Error> {
        write!(
            formatter,
            "Request({} {} from {:?})",
            self.method, self.path, self.remote_addr
        )
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if self.reply.is_some() {
            let mut out = Vec::new();
            let _ = Response::empty(StatusCode(500)).raw_print(
                &mut out,
                self.http_version.clone(),
                false,
            );
            self.hand_over(out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn must_be_send() {
        fn f<T: Send>() {}
        f::<Request>();
    }

    #[test]
    fn the_body_is_read_or_taken_once() {
        let mut rq: Request = crate::TestRequest::new().with_body("hello").into();
        let mut first = [0u8; 2];
        rq.as_reader().read_exact(&mut first).unwrap();
        assert_eq!(&first, b"he");
        assert_eq!(rq.take_body(), b"llo");
        assert_eq!(rq.take_body(), b"");
    }
}

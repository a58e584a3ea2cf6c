use crate::framing::Fields;
use crate::request::{Parts, Request};
use crate::{HTTPVersion, Header, Method};
use std::net::SocketAddr;

/// A simpler version of [`Request`] that is useful for testing. No data actually goes anywhere.
///
/// By default, `TestRequest` pretends to be a GET request for the server root (`/`)
/// with no headers. To create a `TestRequest` with different parameters, use the builder pattern:
///
/// ```
/// # use tiny_http::{Method, TestRequest};
/// let request = TestRequest::new()
///     .with_method(Method::Post)
///     .with_path("/api/widgets")
///     .with_body("42");
/// ```
///
/// Then convert the `TestRequest` into a real `Request` with `.into()` and pass it to the
/// code under test; its answer goes nowhere.
pub struct TestRequest {
    body: &'static str,
    remote_addr: SocketAddr,
    method: Method,
    path: String,
    http_version: HTTPVersion,
    headers: Vec<Header>,
}

impl From<TestRequest> for Request {
    fn from(mock: TestRequest) -> Request {
        let body_length = (!mock.body.is_empty()).then_some(mock.body.len());
        Request::new(
            Parts {
                method: mock.method,
                path: mock.path,
                http_version: mock.http_version,
                fields: Fields::new(
                    mock.headers
                        .iter()
                        .map(|h| (h.field.as_str().as_bytes(), h.value.as_bytes())),
                )
                .unwrap_or_default(),
                remote_addr: Some(mock.remote_addr),
                body: mock.body.as_bytes().to_vec(),
                body_length,
            },
            None,
        )
    }
}

impl Default for TestRequest {
    fn default() -> Self {
        TestRequest {
            body: "",
            remote_addr: SocketAddr::from(([127, 0, 0, 1], 23456)),
            method: Method::Get,
            path: "/".to_string(),
            http_version: HTTPVersion::from((1, 1)),
            headers: Vec::new(),
        }
    }
}

impl TestRequest {
    /// A GET of `/` over HTTP/1.1 from 127.0.0.1, no headers, no body.
    pub fn new() -> Self {
        TestRequest::default()
    }
    /// Sets the body.
    pub fn with_body(mut self, body: &'static str) -> Self {
        self.body = body;
        self
    }
    /// Sets the client's address.
    pub fn with_remote_addr(mut self, remote_addr: SocketAddr) -> Self {
        self.remote_addr = remote_addr;
        self
    }
    /// Sets the method.
    pub fn with_method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }
    /// Sets the target.
    pub fn with_path(mut self, path: &str) -> Self {
        self.path = path.to_string();
        self
    }
    /// Sets the HTTP version.
    pub fn with_http_version(mut self, version: HTTPVersion) -> Self {
        self.http_version = version;
        self
    }
    /// Adds a header.
    pub fn with_header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }
}

//! Replies as HTTP/1.1 bytes.
//!
//! The headers every response carries are serialized once at start ([`FixedHead`]), the
//! `Date` value once per second per worker ([`DateCache`]), and each reply is written
//! into a buffer the worker reuses ([`write_reply`]), so answering a request allocates
//! nothing here. Pure: no sockets; `server.rs` hands the bytes to tiny_http, whose
//! connection loop writes them.

use crate::http::Reply;

/// The headers sent with every response, serialized once (each line ends in CRLF).
#[derive(Debug, Clone)]
pub struct FixedHead {
    block: Vec<u8>,
}

impl FixedHead {
    /// Serializes `headers`; a pair that is not a valid header is left out.
    pub fn new(headers: &[(&str, &str)]) -> FixedHead {
        let mut block = Vec::new();
        for (name, value) in headers {
            push_header(&mut block, name, value);
        }
        FixedHead { block }
    }

    /// The serialized lines.
    pub fn as_bytes(&self) -> &[u8] {
        &self.block
    }
}

/// The `Date` header value of the current second, remade only when the second changes.
#[derive(Debug, Clone)]
pub struct DateCache {
    second: i64,
    text: [u8; 29],
}

impl Default for DateCache {
    fn default() -> DateCache {
        DateCache {
            second: 0,
            text: http_date(0),
        }
    }
}

impl DateCache {
    /// The IMF-fixdate of Unix second `now`.
    pub fn get(&mut self, now: i64) -> &[u8] {
        if now != self.second {
            self.second = now;
            self.text = http_date(now);
        }
        &self.text
    }
}

/// The HTTP version of the status line: a request's own, 1.0 or 1.1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0.
    Http10,
    /// HTTP/1.1 (and anything newer that reached this server).
    Http11,
}

/// Writes `reply` into `out` (cleared first) as one complete response: status line,
/// `Date`, the fixed headers, `Content-Type`, `Cache-Control: no-store` for private
/// pages, the reply's own headers, `Content-Length` and, unless `head_only`, the body.
///
/// A header value byte that could break the framing (control characters, non-ASCII) is
/// percent-encoded, never sent raw and never left out.
pub fn write_reply(
    out: &mut Vec<u8>,
    reply: &Reply,
    fixed: &FixedHead,
    date: &[u8],
    version: Version,
    head_only: bool,
) {
    out.clear();
    out.extend_from_slice(match version {
        Version::Http10 => b"HTTP/1.0 ",
        Version::Http11 => b"HTTP/1.1 ",
    });
    push_number(out, u64::from(reply.status));
    out.push(b' ');
    out.extend_from_slice(reason(reply.status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(fixed.as_bytes());
    push_header(out, "Content-Type", reply.content_type);
    if reply.private {
        out.extend_from_slice(b"Cache-Control: no-store\r\n");
    }
    for (name, value) in &reply.headers {
        push_header(out, name, value);
    }
    // 1xx, 204 and 304 answers have no body and no length.
    let bodiless = matches!(reply.status, 100..=199 | 204 | 304);
    if !bodiless {
        out.extend_from_slice(b"Content-Length: ");
        push_number(out, reply.body.len() as u64);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && !bodiless {
        out.extend_from_slice(reply.body.as_bytes());
    }
}

/// Appends `name: value\r\n`. A value byte that cannot be sent in a header (a control
/// character other than tab, DEL, or a byte above 0x7F) is written `%XX` rather than
/// sent raw (which could split the response) or left out (which would hide a header
/// from the client). Names are ours, fixed in the code; one that is not a valid token
/// is a bug, caught by a debug assertion and never sent.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let name_ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic() && b != b':');
    debug_assert!(name_ok, "header name {name:?}");
    if !name_ok {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for &b in value.as_bytes() {
        if b == b'\t' || (b' '..=b'~').contains(&b) {
            out.push(b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
    out.extend_from_slice(b"\r\n");
}

fn push_number(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// A Unix time broken into UTC calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year.
    pub year: i64,
    /// Month, 1-12.
    pub month: u32,
    /// Day of the month, 1-31.
    pub day: u32,
    /// Hour, 0-23.
    pub hour: u32,
    /// Minute, 0-59.
    pub minute: u32,
    /// Second, 0-59.
    pub second: u32,
    /// Day of the week, 0 = Sunday.
    pub weekday: u32,
}

impl Civil {
    /// The UTC calendar fields of Unix second `unix` (Howard Hinnant's civil_from_days).
    pub fn from_unix(unix: i64) -> Civil {
        let days = unix.div_euclid(86_400);
        let secs = unix.rem_euclid(86_400) as u32;
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        Civil {
            year: yoe + era * 400 + i64::from(month <= 2),
            month,
            day,
            hour: secs / 3600,
            minute: secs % 3600 / 60,
            second: secs % 60,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

/// The IMF-fixdate of a Unix time (`Sun, 06 Nov 1994 08:49:37 GMT`), years 0-9999.
pub fn http_date(unix: i64) -> [u8; 29] {
    const DAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let c = Civil::from_unix(unix);
    let two = |n: u32| [b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8];
    let year = c.year.clamp(0, 9999) as u32;
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[c.weekday as usize]);
    out[5..7].copy_from_slice(&two(c.day));
    out[8..11].copy_from_slice(MONTHS[c.month as usize - 1]);
    out[12..14].copy_from_slice(&two(year / 100));
    out[14..16].copy_from_slice(&two(year % 100));
    out[17..19].copy_from_slice(&two(c.hour));
    out[20..22].copy_from_slice(&two(c.minute));
    out[23..25].copy_from_slice(&two(c.second));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Login;

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).unwrap()
    }

    #[test]
    fn dates() {
        assert_eq!(text(&http_date(0)), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            text(&http_date(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            text(&http_date(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            text(&http_date(1_795_726_799)),
            "Thu, 26 Nov 2026 20:59:59 GMT"
        );
        let mut cache = DateCache::default();
        assert_eq!(
            text(cache.get(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            text(cache.get(784_111_778)),
            "Sun, 06 Nov 1994 08:49:38 GMT"
        );
    }

    #[test]
    fn a_reply_becomes_one_framed_response() {
        let fixed = FixedHead::new(&[("Server", "latchkey"), ("X-A", "b")]);
        let reply = Reply::html(200, "<p>hi</p>".into())
            .with_header("Set-Cookie", "a=b; HttpOnly".into())
            .with_header("Remote-User", "evil\r\nInjected: yes".into())
            .with_header("Remote-Name", "caf\u{e9}".into())
            .with_login(Login::Keep)
            .private();
        let mut out = b"left over".to_vec();
        write_reply(&mut out, &reply, &fixed, b"DATE", Version::Http11, false);
        assert_eq!(
            text(&out),
            "HTTP/1.1 200 OK\r\nDate: DATE\r\nServer: latchkey\r\nX-A: b\r\n\
             Content-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\n\
             Set-Cookie: a=b; HttpOnly\r\nRemote-User: evil%0D%0AInjected: yes\r\n\
             Remote-Name: caf%C3%A9\r\nContent-Length: 9\r\n\r\n<p>hi</p>"
        );
        write_reply(&mut out, &reply, &fixed, b"DATE", Version::Http10, true);
        assert!(text(&out).starts_with("HTTP/1.0 200 OK\r\n"));
        assert!(
            text(&out).ends_with("Content-Length: 9\r\n\r\n"),
            "HEAD keeps the length"
        );
    }

    #[test]
    fn bodiless_statuses_and_reasons() {
        let fixed = FixedHead::new(&[]);
        let mut out = Vec::new();
        write_reply(
            &mut out,
            &Reply::text(204, "ignored".into()),
            &fixed,
            b"D",
            Version::Http11,
            false,
        );
        assert_eq!(
            text(&out),
            "HTTP/1.1 204 No Content\r\nDate: D\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        );
        write_reply(
            &mut out,
            &Reply::see_other("/login"),
            &fixed,
            b"D",
            Version::Http11,
            false,
        );
        assert!(text(&out).starts_with("HTTP/1.1 303 See Other\r\n"));
        assert!(text(&out).contains("\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n"));
        for status in [
            400, 401, 403, 404, 405, 408, 413, 414, 415, 417, 429, 431, 500, 501, 503, 505,
        ] {
            assert_ne!(reason(status), "Unknown", "{status}");
        }
    }
}

//! latchkey patch (new file): HTTP/1.1 request framing as pure functions (RFC 9112).
//!
//! [`parse_head`] reads a request head (request line and header fields) from the bytes
//! received so far and says whether it is incomplete, complete (with how many bytes it
//! took and how the body is framed), or refused (with the status to answer).
//! [`ChunkedDecoder`] decodes a chunked body a piece at a time. Neither does any I/O, so
//! every rule is tested below on plain byte strings; the event loop in `run.rs` is the
//! thin shell that feeds them what the socket gave.
//!
//! A refused head always closes the connection afterwards: once framing is in doubt,
//! nothing that follows on the connection can be trusted to start a request.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use crate::common::{HTTPVersion, Method};

/// Size limits on a request head, in bytes and fields.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// The longest request line or header line (without its CRLF); a longer request
    /// line is answered 414, a longer header line 431.
    pub max_line: usize,
    /// The largest head (request line, fields and line ends); beyond it, 431.
    pub max_head: usize,
    /// The most header fields; beyond it, 431.
    pub max_fields: usize,
}

impl Default for HeadLimits {
    fn default() -> HeadLimits {
        HeadLimits {
            max_line: 8 * 1024,
            max_head: 32 * 1024,
            max_fields: 100,
        }
    }
}

/// How the body of a request is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No `Content-Length` and no `Transfer-Encoding`: the request has no body.
    None,
    /// `Content-Length`: exactly this many bytes (saturated at `u64::MAX` when the
    /// digits overflow, so that it is refused as too large).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete, valid request head.
#[derive(Debug, Clone)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The target in origin form (`/path?query`), or `*` for `OPTIONS *`. An
    /// absolute-form target (`http://host/path`) is reduced to its path and query, and
    /// its authority becomes the `Host` value (RFC 9112 §3.2.2).
    pub target: String,
    /// HTTP/1.0 or HTTP/1.1 (any other version is refused).
    pub version: HTTPVersion,
    /// The header fields kept (all of them, or those the `keep` test of
    /// [`parse_head_keeping`] accepted), in arrival order; values may hold obs-text.
    pub fields: Fields,
    /// How the body is framed.
    pub body: BodyFraming,
    /// Whether the connection must close after the answer: `Connection: close`,
    /// HTTP/1.0 without `keep-alive`, or `Content-Length` sent with `Transfer-Encoding`
    /// (RFC 9112 §6.1).
    pub close: bool,
    /// Whether the client sent `Expect: 100-continue` and waits for `100 Continue`
    /// before sending the body (ignored for HTTP/1.0, RFC 9110 §10.1.1).
    pub expect_continue: bool,
}

/// The header fields of a request, kept compactly: every name and value in one buffer of
/// exactly their size, in arrival order, and where each ends.
///
/// A field costs its bytes and 8 more. As tiny_http's `Header`s each field cost two
/// allocations and 48 bytes besides (about 100 bytes for a one-byte field), so a head
/// of many small fields held several times its size while its body was awaited.
/// Names are tokens (RFC 9110 §5.6.2, so ASCII), as sent; values are trimmed of
/// surrounding whitespace and may hold obs-text (bytes 0x80-0xFF, RFC 9110 §5.5).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Fields {
    bytes: Box<[u8]>,
    /// For each field, where its name and then its value end in `bytes`.
    ends: Box<[(u32, u32)]>,
}

/// Where one kept field is in the input its head was parsed from: its name's and its
/// value's byte ranges, `(start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldSpan {
    name: (u32, u32),
    value: (u32, u32),
}

/// Where a head's kept fields are in its input, in arrival order (see [`scan_head`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSpans(Vec<FieldSpan>);

impl FieldSpans {
    /// The number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no field was kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes the fields' names and values take.
    fn total(&self) -> usize {
        self.0
            .iter()
            .map(|f| (f.name.1 - f.name.0) as usize + (f.value.1 - f.value.0) as usize)
            .sum()
    }

    /// Whether moving every name and value towards the start of the input, in order,
    /// never writes over bytes still to be moved (true unless a value comes from
    /// before a field already moved: the authority of an absolute-form target).
    fn compact_in_order(&self) -> bool {
        let mut at = 0u32;
        for f in &self.0 {
            for (start, end) in [f.name, f.value] {
                if start < at {
                    return false;
                }
                at += end - start;
            }
        }
        true
    }
}

impl Fields {
    /// The fields `(name, value)` given, in that order. Offsets are 32-bit: `None` when
    /// the names and values come to 4 GiB or more.
    pub fn new<'a, I>(fields: I) -> Option<Fields>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
        I::IntoIter: Clone,
    {
        let fields = fields.into_iter();
        let (mut total, mut count) = (0usize, 0usize);
        for (name, value) in fields.clone() {
            total = total.checked_add(name.len())?.checked_add(value.len())?;
            count += 1;
        }
        u32::try_from(total).ok()?;
        let mut bytes = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(count);
        for (name, value) in fields {
            bytes.extend_from_slice(name);
            let name_end = bytes.len() as u32;
            bytes.extend_from_slice(value);
            ends.push((name_end, bytes.len() as u32));
        }
        Some(Fields {
            bytes: bytes.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
        })
    }

    /// The fields at `spans` of `input`, copied into a buffer of their size.
    pub fn gather(input: &[u8], spans: &FieldSpans) -> Fields {
        let range = |(start, end): (u32, u32)| &input[start as usize..end as usize];
        let mut bytes = Vec::with_capacity(spans.total());
        let mut ends = Vec::with_capacity(spans.len());
        for f in &spans.0 {
            bytes.extend_from_slice(range(f.name));
            let name_end = bytes.len() as u32;
            bytes.extend_from_slice(range(f.value));
            ends.push((name_end, bytes.len() as u32));
        }
        Fields {
            bytes: bytes.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// The fields at `spans` of `buffer` (the input of [`scan_head`], from its first
    /// byte), moved together inside `buffer`, which is then cut to their size: the
    /// memory the head arrived in becomes the fields' (a shrinking reallocation stays
    /// in place), with no second buffer of its size and no hole left behind.
    pub fn compact(mut buffer: Vec<u8>, spans: &FieldSpans) -> Fields {
        if !spans.compact_in_order() {
            return Fields::gather(&buffer, spans);
        }
        let mut at = 0usize;
        let mut ends = Vec::with_capacity(spans.len());
        for f in &spans.0 {
            let mut move_down = |(start, end): (u32, u32)| {
                buffer.copy_within(start as usize..end as usize, at);
                at += (end - start) as usize;
                at as u32
            };
            let name_end = move_down(f.name);
            let value_end = move_down(f.value);
            ends.push((name_end, value_end));
        }
        buffer.truncate(at);
        Fields {
            bytes: buffer.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// The number of fields.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is no field.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every field as `(name, value)`, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        let mut start = 0usize;
        self.ends.iter().map(move |&(name_end, value_end)| {
            let (name_end, value_end) = (name_end as usize, value_end as usize);
            let field = (
                &self.bytes[start..name_end],
                &self.bytes[name_end..value_end],
            );
            start = value_end;
            field
        })
    }

    /// The value of the first field named `name` (compared without regard to case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The bytes held for the fields (names, values and their offsets).
    pub fn heap_bytes(&self) -> usize {
        self.bytes.len() + self.ends.len() * std::mem::size_of::<(u32, u32)>()
    }
}

impl fmt::Debug for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

/// Makes room in `buf` for `additional` more bytes: by doubling, as `Vec` does, so
/// that a body arriving in many reads is copied only a few times, but never past
/// `cap` (a declared length or the body limit) unless the bytes themselves need it,
/// and from at least 1 KiB. A body buffer so ends at its length, and one that stalls
/// holds at most twice what arrived, never what was merely announced.
pub fn reserve_within(buf: &mut Vec<u8>, additional: usize, cap: usize) {
    let needed = buf.len().saturating_add(additional);
    if needed <= buf.capacity() {
        return;
    }
    let target = needed
        .max(buf.capacity().saturating_mul(2))
        .max(1024)
        .min(cap.max(needed));
    buf.reserve_exact(target - buf.len());
}

/// A request the connection layer answers itself, then closes the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status code: 400, 408, 413, 414, 417, 431, 501, 503 or 505.
    pub status: u16,
    /// A sentence for the person who sent it.
    pub message: Cow<'static, str>,
    /// The request target when it is known (or its first bytes, for a target too long
    /// to read whole), so that the answer can take the form the path calls for.
    pub target: Option<String>,
}

impl Refusal {
    /// A refusal with a fixed message.
    pub fn new(status: u16, message: &'static str) -> Refusal {
        Refusal {
            status,
            message: Cow::Borrowed(message),
            target: None,
        }
    }

    /// The same refusal, naming the request target.
    pub fn with_target(mut self, target: &str) -> Refusal {
        self.target = Some(target.to_string());
        self
    }

    fn at(mut self, target: Option<&[u8]>) -> Refusal {
        self.target = target.map(|t| String::from_utf8_lossy(t).into_owned());
        self
    }
}

/// What [`parse_head`] made of the bytes received so far.
#[derive(Debug)]
pub enum HeadOutcome {
    /// More bytes are needed (and the limits are not exceeded yet).
    Partial,
    /// A complete head taking the first `len` bytes (leading empty lines included).
    Complete {
        /// The head.
        head: Head,
        /// Bytes of the input it took.
        len: usize,
    },
    /// The head breaks a rule or a limit: answer with this and close.
    Refused(Refusal),
}

const MALFORMED_LINE: &str = "The request line is malformed.";
const BAD_TARGET: &str = "The request target is not valid.";
const BAD_FIELD: &str = "A header line is malformed.";
const OBS_FOLD: &str = "Folded header lines are not accepted.";
const CONTROL_IN_VALUE: &str = "A header value holds a control character.";
const BARE_LF: &str = "Lines must end with CRLF.";
const BAD_HOST: &str = "The request needs exactly one valid Host header.";
const BAD_LENGTH: &str = "The Content-Length header is not valid.";
const BAD_CODING: &str = "The Transfer-Encoding header is not valid.";
const UNKNOWN_CODING: &str = "Only the chunked transfer coding is supported.";
const BAD_VERSION: &str = "Only HTTP/1.0 and HTTP/1.1 are supported.";
const BAD_EXPECT: &str = "Only the 100-continue expectation is supported.";
const LINE_TOO_LONG: &str = "The request line is too long.";
const HEAD_TOO_LARGE: &str = "The request header block is too large.";

/// The most empty lines skipped before a request line (RFC 9112 §2.2 asks servers to
/// ignore at least one; clients send one after a POST body now and then).
const MAX_LEADING_EMPTY_LINES: usize = 8;

/// Parses a request head from `input`, the bytes received on a connection since the
/// previous request ended.
///
/// Rules (RFC 9112 unless noted): lines end with CRLF (a bare LF or CR is refused, 400);
/// the request line is `method SP target SP HTTP/x.y` with single spaces, a token
/// method and a target of visible ASCII (no NUL, control byte or space), else 400; a
/// version other than 1.0 and 1.1 gets 505 as soon as the request line is complete
/// (`PRI * HTTP/2.0` included); a request line longer than `max_line` gets 414; a header
/// line longer than `max_line`, a head over `max_head` or more than `max_fields` fields
/// gets 431; a folded line (obs-fold, §5.2) or whitespace before a colon gets 400; a
/// field value with a control byte (CR, LF, NUL, DEL, ...; RFC 9110 §5.5) gets 400, while
/// obs-text is kept as opaque bytes; HTTP/1.1 without exactly one `Host`, or a `Host`
/// that is not `host[:port]`, gets 400 (§3.2); an absolute-form target is accepted and
/// its authority becomes the host (§3.2.2); the body framing follows [`BodyFraming`]
/// (see `body_framing` for the Transfer-Encoding and Content-Length rules); `Expect`
/// other than `100-continue` gets 417.
pub fn parse_head(input: &[u8], limits: &HeadLimits) -> HeadOutcome {
    parse_head_keeping(input, limits, &|_| true)
}

/// [`parse_head`], keeping in [`Head::fields`] only the fields whose name `keep`
/// accepts: the others are checked by every rule above (and read for the framing when
/// they frame) but not kept, so that a request does not hold the bytes of fields its
/// application never reads while its body is awaited or a worker has it.
pub fn parse_head_keeping(
    input: &[u8],
    limits: &HeadLimits,
    keep: &dyn Fn(&[u8]) -> bool,
) -> HeadOutcome {
    match scan_head(input, limits, keep) {
        Scanned::Partial => HeadOutcome::Partial,
        Scanned::Refused(refusal) => HeadOutcome::Refused(refusal),
        Scanned::Complete {
            mut head,
            fields,
            len,
        } => {
            head.fields = Fields::gather(input, &fields);
            HeadOutcome::Complete { head, len }
        }
    }
}

/// What [`scan_head`] made of the bytes received so far: [`HeadOutcome`], with the kept
/// fields of a complete head still in the input.
#[derive(Debug)]
pub enum Scanned {
    /// More bytes are needed (and the limits are not exceeded yet).
    Partial,
    /// A complete head taking the first `len` bytes of the input.
    Complete {
        /// The head; its `fields` are empty.
        head: Head,
        /// Where the kept fields are in the input, for [`Fields::gather`] or
        /// [`Fields::compact`].
        fields: FieldSpans,
        /// Bytes of the input it took.
        len: usize,
    },
    /// The head breaks a rule or a limit: answer with this and close.
    Refused(Refusal),
}

/// [`parse_head_keeping`] without gathering the kept fields: the connection loop moves
/// them together inside the buffer they arrived in ([`Fields::compact`]), so that a
/// head costs no second allocation of its size.
pub fn scan_head(input: &[u8], limits: &HeadLimits, keep: &dyn Fn(&[u8]) -> bool) -> Scanned {
    // Leading empty lines.
    let mut start = 0;
    let mut skipped = 0;
    loop {
        match &input[start..] {
            [b'\r', b'\n', ..] if skipped < MAX_LEADING_EMPTY_LINES => {
                start += 2;
                skipped += 1;
            }
            [b'\r'] | [] => return Scanned::Partial,
            _ => break,
        }
    }

    // The request line.
    let Some(lf) = find_lf(&input[start..]) else {
        let line = &input[start..];
        // Its CR may have come without its LF: the line itself is what is measured.
        if line.strip_suffix(b"\r").unwrap_or(line).len() > limits.max_line {
            return Scanned::Refused(
                Refusal::new(414, LINE_TOO_LONG).at(Some(target_prefix(line))),
            );
        }
        // A version that cannot become 1.0 or 1.1 is refused without waiting.
        return match early_refusal(line) {
            Some(r) => Scanned::Refused(r),
            None => Scanned::Partial,
        };
    };
    let line_end = start + lf;
    if line_end == start || input[line_end - 1] != b'\r' {
        return Scanned::Refused(Refusal::new(400, BARE_LF));
    }
    let line = &input[start..line_end - 1];
    if line.len() > limits.max_line {
        return Scanned::Refused(Refusal::new(414, LINE_TOO_LONG).at(Some(target_prefix(line))));
    }
    let (method, raw_target, version) = match parse_request_line(line) {
        Ok(parts) => parts,
        Err(refusal) => return Scanned::Refused(refusal),
    };

    // Header fields.
    let mut fields: Vec<(&[u8], &[u8])> = Vec::new();
    let mut pos = line_end + 1;
    let head_end = loop {
        if pos - start > limits.max_head {
            return Scanned::Refused(Refusal::new(431, HEAD_TOO_LARGE).at(Some(raw_target)));
        }
        let Some(lf) = find_lf(&input[pos..]) else {
            // The head needs at least one more byte (a LF) to end.
            let partial = input.len() - pos;
            if partial > limits.max_line + 1 || input.len() - start >= limits.max_head {
                return Scanned::Refused(Refusal::new(431, HEAD_TOO_LARGE).at(Some(raw_target)));
            }
            return Scanned::Partial;
        };
        let end = pos + lf;
        if end == pos || input[end - 1] != b'\r' {
            return Scanned::Refused(Refusal::new(400, BARE_LF).at(Some(raw_target)));
        }
        let field_line = &input[pos..end - 1];
        pos = end + 1;
        if field_line.is_empty() {
            break pos;
        }
        if field_line.len() > limits.max_line || pos - start > limits.max_head {
            return Scanned::Refused(Refusal::new(431, HEAD_TOO_LARGE).at(Some(raw_target)));
        }
        if fields.len() == limits.max_fields {
            return Scanned::Refused(Refusal::new(431, HEAD_TOO_LARGE).at(Some(raw_target)));
        }
        match parse_field_line(field_line) {
            Ok(field) => fields.push(field),
            Err(message) => {
                return Scanned::Refused(Refusal::new(400, message).at(Some(raw_target)));
            }
        }
    };

    if head_end - start > limits.max_head || u32::try_from(head_end).is_err() {
        return Scanned::Refused(Refusal::new(431, HEAD_TOO_LARGE).at(Some(raw_target)));
    }
    match interpret(method, raw_target, version, &fields) {
        Ok((head, authority)) => {
            // Where each kept field is in the input; the Host value of an
            // absolute-form target is its authority, in the request line.
            let at = |part: &[u8]| {
                let from = part.as_ptr() as usize - input.as_ptr() as usize;
                (from as u32, (from + part.len()) as u32)
            };
            let kept = fields
                .iter()
                .filter(|(name, _)| keep(name))
                .map(|&(name, value)| {
                    let value = match authority {
                        Some(auth) if is_named(name, "host") => auth,
                        _ => value,
                    };
                    FieldSpan {
                        name: at(name),
                        value: at(value),
                    }
                })
                .collect();
            Scanned::Complete {
                head,
                fields: FieldSpans(kept),
                len: head_end,
            }
        }
        Err(refusal) => Scanned::Refused(refusal.at(Some(raw_target))),
    }
}

fn find_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// `tchar` of RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The target (its first 256 bytes at most) of a request line that may be unfinished,
/// when as much has arrived; for answering a head that never completed.
pub fn partial_target(input: &[u8]) -> Option<String> {
    let mut rest = input;
    while let [b'\r', b'\n', tail @ ..] = rest {
        rest = tail;
    }
    let line = &rest[..find_lf(rest).unwrap_or(rest.len())];
    let target = target_prefix(line);
    (!target.is_empty()).then(|| String::from_utf8_lossy(target).into_owned())
}

/// The first bytes of the target of an unfinished or overlong request line.
fn target_prefix(line: &[u8]) -> &[u8] {
    let rest = match line.iter().position(|&b| b == b' ') {
        Some(i) => &line[i + 1..],
        None => return &[],
    };
    let end = rest
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(rest.len())
        .min(256);
    &rest[..end]
}

/// A refusal decided from an unfinished request line: a version field that is
/// complete and not 1.0 or 1.1 (`PRI * HTTP/2.0` followed by nothing yet).
fn early_refusal(line: &[u8]) -> Option<Refusal> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.splitn(3, |&b| b == b' ');
    let (_, _, version) = (parts.next()?, parts.next()?, parts.next()?);
    let v = parse_version(version).ok()?;
    (v != HTTPVersion(1, 0) && v != HTTPVersion(1, 1)).then(|| Refusal::new(505, BAD_VERSION))
}

fn parse_version(v: &[u8]) -> Result<HTTPVersion, ()> {
    match v {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Ok(HTTPVersion(major - b'0', minor - b'0'))
        }
        _ => Err(()),
    }
}

fn parse_request_line(line: &[u8]) -> Result<(Method, &[u8], HTTPVersion), Refusal> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // Two parts is an HTTP/0.9 simple request; anything else is malformed.
        return Err(Refusal::new(400, MALFORMED_LINE));
    };
    let version = parse_version(version).map_err(|()| Refusal::new(400, MALFORMED_LINE))?;
    if version != HTTPVersion(1, 0) && version != HTTPVersion(1, 1) {
        return Err(Refusal::new(505, BAD_VERSION).at(Some(target)));
    }
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Refusal::new(400, MALFORMED_LINE));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7e).contains(&b)) {
        return Err(Refusal::new(400, BAD_TARGET).at(Some(target)));
    }
    // Every byte is a tchar, so this is ASCII and the parse cannot fail.
    let method = std::str::from_utf8(method)
        .ok()
        .and_then(|m| Method::from_str(m).ok())
        .ok_or_else(|| Refusal::new(400, MALFORMED_LINE))?;
    Ok((method, target, version))
}

/// Splits `name: value` and checks both (RFC 9112 §5, RFC 9110 §5.5).
fn parse_field_line(line: &[u8]) -> Result<(&[u8], &[u8]), &'static str> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(OBS_FOLD);
    }
    let colon = line.iter().position(|&b| b == b':').ok_or(BAD_FIELD)?;
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(BAD_FIELD);
    }
    let value = trim_ows(&line[colon + 1..]);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(CONTROL_IN_VALUE);
    }
    Ok((name, value))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

fn is_named(name: &[u8], wanted: &str) -> bool {
    name.eq_ignore_ascii_case(wanted.as_bytes())
}

/// The comma-separated elements of a list field, trimmed, empty ones skipped.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// Builds the [`Head`] from the parsed parts (Host, target form, body framing,
/// connection persistence and expectations), its fields left empty, and gives the
/// authority of an absolute-form target, which replaces the Host value.
fn interpret<'a>(
    method: Method,
    raw_target: &'a [u8],
    version: HTTPVersion,
    fields: &[(&'a [u8], &'a [u8])],
) -> Result<(Head, Option<&'a [u8]>), Refusal> {
    let http11 = version == HTTPVersion(1, 1);

    // Host (RFC 9112 §3.2) and the target's form (§3.2.1-3.2.4).
    let hosts: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| is_named(n, "host"))
        .map(|(_, v)| *v)
        .collect();
    if hosts.len() > 1 || (http11 && hosts.is_empty()) {
        return Err(Refusal::new(400, BAD_HOST));
    }
    if let Some(host) = hosts.first() {
        if !is_valid_host(host) {
            return Err(Refusal::new(400, BAD_HOST));
        }
    }
    let (target, authority) = target_form(&method, raw_target)?;

    let (body, framing_close) = body_framing(&version, fields)?;

    let mut close = !http11;
    let mut expect_continue = false;
    for (name, value) in fields {
        if is_named(name, "connection") {
            for token in list_elements(value) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && !http11 {
                    close = false;
                }
            }
        } else if is_named(name, "expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                expect_continue = http11;
            } else {
                return Err(Refusal::new(417, BAD_EXPECT));
            }
        }
    }
    // A `close` anywhere wins over a `keep-alive` elsewhere.
    if fields.iter().any(|(n, v)| {
        is_named(n, "connection") && list_elements(v).any(|t| t.eq_ignore_ascii_case(b"close"))
    }) {
        close = true;
    }

    let head = Head {
        method,
        target,
        version,
        fields: Fields::default(),
        body,
        close: close || framing_close,
        expect_continue: expect_continue && body != BodyFraming::None,
    };
    Ok((head, authority))
}

/// The target in the form the workers see, and the authority of an absolute-form
/// target (which replaces `Host`).
fn target_form<'a>(
    method: &Method,
    target: &'a [u8],
) -> Result<(String, Option<&'a [u8]>), Refusal> {
    // The target is visible ASCII (checked with the request line).
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if target[0] == b'/' {
        return Ok((text(target), None));
    }
    if target == b"*" {
        return if *method == Method::Options {
            Ok(("*".into(), None))
        } else {
            Err(Refusal::new(400, BAD_TARGET))
        };
    }
    // absolute-form: scheme "://" authority path-abempty [ "?" query ]
    let Some(sep) = target.windows(3).position(|w| w == b"://") else {
        return Err(Refusal::new(400, BAD_TARGET));
    };
    let scheme = &target[..sep];
    if !(scheme.eq_ignore_ascii_case(b"http") || scheme.eq_ignore_ascii_case(b"https")) {
        return Err(Refusal::new(400, BAD_TARGET));
    }
    let rest = &target[sep + 3..];
    let cut = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, path) = rest.split_at(cut);
    if authority.is_empty() || !is_valid_host(authority) {
        return Err(Refusal::new(400, BAD_TARGET));
    }
    let path = match path.first() {
        None => "/".to_string(),
        Some(b'?') => format!("/{}", text(path)),
        Some(_) => text(path),
    };
    Ok((path, Some(authority)))
}

/// `uri-host [ ":" port ]` (RFC 9110 §7.2, RFC 3986 §3.2.2); an empty value is valid.
fn is_valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        let Some(close) = value.iter().position(|&b| b == b']') else {
            return false;
        };
        let literal = &value[1..close];
        if literal.is_empty()
            || !literal
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.' || b == b'v' || b == b'V')
        {
            return false;
        }
        match &value[close + 1..] {
            [] => return true,
            [b':', port @ ..] => (&value[..0], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|&b| b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &value[..0]),
        }
    };
    let reg_name_ok = host
        .iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b));
    reg_name_ok && port.iter().all(u8::is_ascii_digit)
}

/// The body framing of a request and whether it forces a close (RFC 9112 §6.1, §6.3).
///
/// - `Transfer-Encoding` (all its fields, as one list) must be exactly `chunked`: a
///   coding other than `chunked` gets 501 (we decode none), `chunked` twice or an empty
///   list gets 400, and so does any `Transfer-Encoding` in an HTTP/1.0 request.
///   With `Content-Length` beside it, the body is read as chunked and the connection
///   closes after the answer.
/// - Otherwise every `Content-Length` element (all fields, comma lists included) must
///   be plain decimal digits and all must agree, else 400; `42, 42` reads as 42.
fn body_framing(
    version: &HTTPVersion,
    fields: &[(&[u8], &[u8])],
) -> Result<(BodyFraming, bool), Refusal> {
    let codings: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| is_named(n, "transfer-encoding"))
        .map(|(_, v)| *v)
        .collect();
    let has_length = fields.iter().any(|(n, _)| is_named(n, "content-length"));
    if !codings.is_empty() {
        if *version == HTTPVersion(1, 0) {
            return Err(Refusal::new(400, BAD_CODING));
        }
        let mut chunked = 0;
        let mut any = false;
        for value in codings {
            for coding in list_elements(value) {
                any = true;
                let name = trim_ows(coding.split(|&b| b == b';').next().unwrap_or(coding));
                if name.eq_ignore_ascii_case(b"chunked") {
                    chunked += 1;
                } else if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
                    return Err(Refusal::new(400, BAD_CODING));
                } else {
                    return Err(Refusal::new(501, UNKNOWN_CODING));
                }
            }
        }
        if !any || chunked != 1 {
            return Err(Refusal::new(400, BAD_CODING));
        }
        return Ok((BodyFraming::Chunked, has_length));
    }
    let mut length: Option<u64> = None;
    for (_, value) in fields.iter().filter(|(n, _)| is_named(n, "content-length")) {
        let mut elements = 0;
        for element in value.split(|&b| b == b',').map(trim_ows) {
            elements += 1;
            if element.is_empty() || !element.iter().all(u8::is_ascii_digit) {
                return Err(Refusal::new(400, BAD_LENGTH));
            }
            let n = element.iter().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            match length {
                Some(m) if m != n => return Err(Refusal::new(400, BAD_LENGTH)),
                _ => length = Some(n),
            }
        }
        if elements == 0 {
            return Err(Refusal::new(400, BAD_LENGTH));
        }
    }
    Ok((length.map_or(BodyFraming::None, BodyFraming::Length), false))
}

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not the chunked syntax of RFC 9112 §7.1 (bad size, missing CRLF, a chunk line
    /// over 4 KiB): 400.
    Malformed,
    /// The decoded body would exceed the limit: 413.
    TooLarge,
    /// The trailer section is over 8 KiB: 431.
    TrailersTooLarge,
}

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ChunkError::Malformed => "the chunked request body is malformed (RFC 9112 section 7.1)",
            ChunkError::TooLarge => "the chunked request body is larger than the body limit",
            ChunkError::TrailersTooLarge => "the chunked body's trailer fields exceed 8 KiB",
        })
    }
}

impl std::error::Error for ChunkError {}

impl ChunkError {
    /// The refusal to answer with.
    pub fn refusal(self, body_limit: usize) -> Refusal {
        match self {
            ChunkError::Malformed => Refusal::new(400, "The chunked request body is malformed."),
            ChunkError::TooLarge => body_too_large(body_limit),
            ChunkError::TrailersTooLarge => Refusal::new(431, HEAD_TOO_LARGE),
        }
    }
}

/// The 413 refusal of a body over `limit` bytes.
pub fn body_too_large(limit: usize) -> Refusal {
    Refusal {
        status: 413,
        message: Cow::Owned(format!("The request body is larger than {limit} bytes.")),
        target: None,
    }
}

/// The longest chunk-size line (with its extensions), bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The largest trailer section, bytes.
const MAX_TRAILERS: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading the hex size; `digits` so far.
    Size { digits: u8, size: u64 },
    /// After the size: extensions (ignored) up to CR.
    Extension { size: u64 },
    /// CR seen after the size line; LF expected.
    SizeLf { size: u64 },
    /// Chunk data, `left` bytes to go.
    Data { left: u64 },
    /// CR expected after the data.
    DataCr,
    /// LF expected after the data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line (read and dropped).
    Trailer,
    /// CR seen at the end of a trailer line; LF expected.
    TrailerLf,
    /// CR seen on the final empty line; LF expected.
    FinalLf,
    /// The body is complete.
    Done,
}

/// Decodes a chunked body (RFC 9112 §7.1) a piece at a time: chunk extensions are
/// ignored, trailer fields read and dropped, line ends must be CRLF.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: usize,
    trailers: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size { digits: 0, size: 0 },
            line: 0,
            trailers: 0,
        }
    }
}

impl ChunkedDecoder {
    /// Decodes from `input`, appending data to `out`, which may not grow beyond `limit`
    /// bytes. Returns how many bytes of `input` were used and whether the body (with
    /// its trailers) is complete; after completion the rest of `input` belongs to the
    /// next request and is not touched.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(usize, bool), ChunkError> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size { digits, size } => {
                    if let Some(d) = (b as char).to_digit(16) {
                        if digits == 16 {
                            return Err(ChunkError::TooLarge);
                        }
                        self.state = ChunkState::Size {
                            digits: digits + 1,
                            size: size << 4 | u64::from(d),
                        };
                    } else if digits == 0 {
                        return Err(ChunkError::Malformed);
                    } else if b == b'\r' {
                        self.state = ChunkState::SizeLf { size };
                    } else if b == b';' || b == b' ' || b == b'\t' {
                        self.state = ChunkState::Extension { size };
                    } else {
                        return Err(ChunkError::Malformed);
                    }
                    self.count_line()?;
                }
                ChunkState::Extension { size } => {
                    if b == b'\r' {
                        self.state = ChunkState::SizeLf { size };
                    } else if b == b'\n' || b == 0 {
                        return Err(ChunkError::Malformed);
                    }
                    self.count_line()?;
                }
                ChunkState::SizeLf { size } => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.line = 0;
                    if size == 0 {
                        self.state = ChunkState::TrailerStart;
                    } else if (out.len() as u64).saturating_add(size) > limit as u64 {
                        return Err(ChunkError::TooLarge);
                    } else {
                        self.state = ChunkState::Data { left: size };
                    }
                }
                ChunkState::Data { left } => {
                    let take = (input.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    reserve_within(out, take, limit);
                    out.extend_from_slice(&input[i..i + take]);
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataCr
                    } else {
                        ChunkState::Data { left }
                    };
                    i += take;
                    continue;
                }
                ChunkState::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = ChunkState::DataLf;
                }
                ChunkState::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = ChunkState::Size { digits: 0, size: 0 };
                }
                ChunkState::TrailerStart => {
                    if b == b'\r' {
                        self.state = ChunkState::FinalLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::Malformed);
                    } else {
                        self.state = ChunkState::Trailer;
                        self.count_trailer()?;
                    }
                }
                ChunkState::Trailer => {
                    if b == b'\r' {
                        self.state = ChunkState::TrailerLf;
                    } else if b == b'\n' || b == 0 {
                        return Err(ChunkError::Malformed);
                    }
                    self.count_trailer()?;
                }
                ChunkState::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = ChunkState::TrailerStart;
                }
                ChunkState::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = ChunkState::Done;
                    return Ok((i + 1, true));
                }
                ChunkState::Done => return Ok((i, true)),
            }
            i += 1;
        }
        Ok((i, self.state == ChunkState::Done))
    }

    fn count_line(&mut self) -> Result<(), ChunkError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(ChunkError::Malformed);
        }
        Ok(())
    }

    fn count_trailer(&mut self) -> Result<(), ChunkError> {
        self.trailers += 1;
        if self.trailers > MAX_TRAILERS {
            return Err(ChunkError::TrailersTooLarge);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> HeadOutcome {
        parse_head(input.as_bytes(), &HeadLimits::default())
    }

    fn head(input: &str) -> (Head, usize) {
        match parse(input) {
            HeadOutcome::Complete { head, len } => (head, len),
            other => panic!("{input:?}: {other:?}"),
        }
    }

    fn refused(input: &[u8]) -> u16 {
        match parse_head(input, &HeadLimits::default()) {
            HeadOutcome::Refused(r) => r.status,
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    /// The first value of `name`, when it is ASCII (as tiny_http's `Header` holds it).
    fn value<'a>(head: &'a Head, name: &'static str) -> Option<&'a str> {
        head.fields
            .get(name)
            .filter(|v| v.is_ascii())
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The head of `input` scanned keeping the fields `keep` accepts, with the spans.
    fn scanned(input: &[u8], keep: &dyn Fn(&[u8]) -> bool) -> (Head, FieldSpans, usize) {
        match scan_head(input, &HeadLimits::default(), keep) {
            Scanned::Complete { head, fields, len } => (head, fields, len),
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(input)),
        }
    }

    fn pairs(fields: &Fields) -> Vec<(String, String)> {
        fields
            .iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn unkept_fields_are_checked_and_framed_but_not_kept() {
        let cookie_only = |name: &[u8]| name.eq_ignore_ascii_case(b"cookie");
        let input = "POST /login HTTP/1.1\r\nHost: x\r\nX-Pad: aaaa\r\nContent-Length: 3\r\n\
                     COOKIE:  a=1 \r\nUser-Agent: t\r\ncookie: b=2\r\n\r\nabc";
        let (head, fields, len) = scanned(input.as_bytes(), &cookie_only);
        assert_eq!(head.body, BodyFraming::Length(3));
        assert_eq!(&input.as_bytes()[len..], b"abc");
        let kept = Fields::gather(input.as_bytes(), &fields);
        assert_eq!(
            pairs(&kept),
            [
                ("COOKIE".into(), "a=1".into()),
                ("cookie".into(), "b=2".into())
            ]
        );
        assert_eq!(kept.get("Cookie"), Some(&b"a=1"[..]));
        assert_eq!(kept.heap_bytes(), "COOKIEa=1cookieb=2".len() + 2 * 8);
        // The rules still apply to fields nobody keeps.
        let keep_none = |_: &[u8]| false;
        for bad in [
            &b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: a\r\n\r\n",
            b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n",
        ] {
            assert!(
                matches!(
                    scan_head(bad, &HeadLimits::default(), &keep_none),
                    Scanned::Refused(_)
                ),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn fields_compacted_in_their_buffer_equal_a_copy() {
        let inputs: [&[u8]; 4] = [
            b"GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB:\r\nC: caf\xe9 \r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\nGET /next HTTP/1.1\r\n",
            // The authority of an absolute-form target is the Host value: it comes from
            // before the fields, so compacting falls back to a copy.
            b"GET http://a.example/p HTTP/1.1\r\nX-A: 1\r\nHost: a.example\r\n\r\n",
            b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
        ];
        for input in inputs {
            let all = |_: &[u8]| true;
            let short = |n: &[u8]| n.len() == 1;
            for keep in [&all as &dyn Fn(&[u8]) -> bool, &short] {
                let (_, spans, len) = scanned(input, keep);
                let copied = Fields::gather(input, &spans);
                let compacted = Fields::compact(input[..len].to_vec(), &spans);
                assert_eq!(compacted, copied, "{:?}", String::from_utf8_lossy(input));
                assert_eq!(compacted.heap_bytes(), copied.heap_bytes());
            }
        }
        let (_, spans, len) = scanned(inputs[2], &|_| true);
        let fields = Fields::compact(inputs[2][..len].to_vec(), &spans);
        assert_eq!(fields.get("host"), Some(&b"a.example"[..]));
        // Built from pairs, the same.
        let made = Fields::new([(&b"A"[..], &b"1"[..]), (b"B", b"")]).unwrap();
        assert_eq!(
            pairs(&made),
            [("A".into(), "1".into()), ("B".into(), "".into())]
        );
        assert!(Fields::default().is_empty());
    }

    #[test]
    fn a_body_buffer_grows_with_what_arrives_and_never_past_its_cap() {
        let mut body = Vec::new();
        reserve_within(&mut body, 1, 16 * 1024);
        assert_eq!(body.capacity(), 1024, "from 1 KiB");
        body.resize(1024, 0);
        reserve_within(&mut body, 1, 16 * 1024);
        assert_eq!(body.capacity(), 2048, "by doubling");
        body.resize(10_000, 0);
        reserve_within(&mut body, 1, 10_001);
        assert_eq!(body.capacity(), 10_001, "never past the cap");
        // A cap below what the bytes need gives way to the bytes.
        let mut small = Vec::new();
        reserve_within(&mut small, 5000, 100);
        assert_eq!(small.capacity(), 5000);
        // Nothing to do when there is room.
        reserve_within(&mut small, 10, 100);
        assert_eq!(small.capacity(), 5000);
    }

    #[test]
    fn a_plain_request_and_what_follows_it() {
        let text = "GET /a?b=c HTTP/1.1\r\nHost: x\r\nCookie: k=v\r\n\r\nGET /next";
        let (h, len) = head(text);
        assert_eq!(len, text.len() - "GET /next".len());
        assert_eq!(h.method, Method::Get);
        assert_eq!(h.target, "/a?b=c");
        assert_eq!(h.version, HTTPVersion(1, 1));
        assert_eq!(value(&h, "cookie"), Some("k=v"));
        assert_eq!(h.body, BodyFraming::None);
        assert!(!h.close && !h.expect_continue);
    }

    #[test]
    fn the_target_of_an_unfinished_head() {
        assert_eq!(
            partial_target(b"\r\nPOST /api/login HTTP/1.1\r\nHo").as_deref(),
            Some("/api/login")
        );
        assert_eq!(partial_target(b"GET /ap").as_deref(), Some("/ap"));
        assert_eq!(partial_target(b"GET"), None);
    }

    #[test]
    fn incomplete_heads_wait() {
        for partial in [
            "",
            "\r",
            "\r\n",
            "GET / HT",
            "GET / HTTP/1.1\r",
            "GET / HTTP/1.1\r\nHost: x\r\n",
        ] {
            assert!(
                matches!(parse(partial), HeadOutcome::Partial),
                "{partial:?}"
            );
        }
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let (h, len) = head("\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(h.target, "/");
        assert_eq!(len, 4 + 27);
    }

    #[test]
    fn versions_other_than_1_0_and_1_1_get_505_without_waiting() {
        assert_eq!(refused(b"PRI * HTTP/2.0\r\n"), 505);
        assert_eq!(refused(b"PRI * HTTP/2.0"), 505);
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), 505);
        assert_eq!(refused(b"GET / HTTP/0.9\r\n\r\n"), 505);
        assert_eq!(refused(b"GET / HTTP/3.0\r\nHost: x\r\n\r\n"), 505);
        // HTTP/0.9's simple request (no version) and junk versions are malformed.
        assert_eq!(refused(b"GET /\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.10\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / http/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn request_line_rules() {
        assert_eq!(refused(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1 x\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(refused(b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(
            refused("GET /é HTTP/1.1\r\nHost: x\r\n\r\n".as_bytes()),
            400
        );
        assert_eq!(refused(b"GET / HTTP/1.1\nHost: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET x HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"), 400);
        assert_eq!(head("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n").0.target, "*");
    }

    #[test]
    fn size_limits() {
        let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
        match parse(&long_target) {
            HeadOutcome::Refused(r) => {
                assert_eq!(r.status, 414);
                assert!(r.target.unwrap().starts_with("/aaa"));
            }
            other => panic!("{other:?}"),
        }
        // Still arriving, already too long.
        assert_eq!(
            refused(format!("GET /api/{}", "a".repeat(9000)).as_bytes()),
            414
        );
        let long_field = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "a".repeat(9000)
        );
        assert_eq!(refused(long_field.as_bytes()), 431);
        let partial_field = format!("GET / HTTP/1.1\r\nHost: x\r\nX: {}", "a".repeat(9000));
        assert_eq!(refused(partial_field.as_bytes()), 431);
        let many: String = (0..101).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(
            refused(format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()),
            431
        );
        let big: String = (0..5)
            .map(|i| format!("X-{i}: {}\r\n", "v".repeat(8000)))
            .collect();
        assert_eq!(
            refused(format!("GET / HTTP/1.1\r\nHost: x\r\n{big}\r\n").as_bytes()),
            431
        );
    }

    /// A head's outcome does not depend on where the reads split it: a prefix is
    /// refused only when the whole head is refused with the same status.
    #[test]
    fn heads_at_the_limits_are_judged_alike_however_they_arrive() {
        let limits = HeadLimits::default();
        let line = |len: usize| format!("GET /{} HTTP/1.1\r\n", "a".repeat(len - 14));
        // A header block of `total` bytes: fields padded so that the head, final CRLF
        // included, is exactly that long.
        let block = |total: usize| {
            let mut head = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
            while total - head.len() - 2 > 8000 {
                head.push_str(&format!("X: {}\r\n", "v".repeat(7000)));
            }
            let pad = total - head.len() - 2 - "Y: \r\n".len();
            head.push_str(&format!("Y: {}\r\n\r\n", "v".repeat(pad)));
            assert_eq!(head.len(), total);
            head
        };
        let mut heads = Vec::new();
        for len in [limits.max_line - 1, limits.max_line, limits.max_line + 1] {
            heads.push(format!("{}Host: x\r\n\r\n", line(len)));
        }
        for total in [
            limits.max_head - 1,
            limits.max_head,
            limits.max_head + 1,
            limits.max_head + 2,
        ] {
            heads.push(block(total));
        }
        for head in &heads {
            let bytes = head.as_bytes();
            let whole = match parse_head(bytes, &limits) {
                HeadOutcome::Refused(r) => Some(r.status),
                HeadOutcome::Complete { len, .. } => {
                    assert_eq!(len, bytes.len());
                    None
                }
                HeadOutcome::Partial => panic!("a whole head is partial"),
            };
            // Cut where a line's CR has come and its LF not yet, and just before the end.
            let cuts = (1..bytes.len()).filter(|&i| bytes[i - 1] == b'\r' || i + 3 > bytes.len());
            for cut in cuts {
                if let HeadOutcome::Refused(r) = parse_head(&bytes[..cut], &limits) {
                    assert_eq!(
                        Some(r.status),
                        whole,
                        "a head of {} bytes cut at {cut}",
                        bytes.len()
                    );
                }
            }
        }
        // The limits mean what they say: a request line of `max_line` bytes and a head
        // of `max_head` bytes (line ends included) pass, one byte more does not.
        assert!(matches!(
            parse_head(heads[1].as_bytes(), &limits),
            HeadOutcome::Complete { .. }
        ));
        assert_eq!(refused(heads[2].as_bytes()), 414);
        assert!(matches!(
            parse_head(heads[4].as_bytes(), &limits),
            HeadOutcome::Complete { .. }
        ));
        assert_eq!(refused(heads[5].as_bytes()), 431);
        assert_eq!(refused(heads[6].as_bytes()), 431);
    }

    #[test]
    fn field_rules() {
        // obs-fold, whitespace before the colon, no colon, bad name.
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\n Host: x\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nnocolon\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n"), 400);
        // CR, NUL and other controls in a value; bare LF as a line end.
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\nY: b\r\n\r\n"),
            400
        );
        // A tab inside a value and surrounding whitespace are fine.
        let (h, _) = head("GET / HTTP/1.1\r\nHost: x\r\nX:\t a\tb \r\n\r\n");
        assert_eq!(value(&h, "x"), Some("a\tb"));
    }

    #[test]
    fn obs_text_is_kept_as_opaque_bytes() {
        let (h, _) = head("GET / HTTP/1.1\r\nHost: x\r\nCookie: city=São Paulo; token=t\r\n\r\n");
        assert_eq!(value(&h, "cookie"), None);
        assert_eq!(h.fields.len(), 2);
        assert_eq!(
            h.fields.get("cookie"),
            Some("city=São Paulo; token=t".as_bytes())
        );
        let latin1 = b"GET / HTTP/1.1\r\nHost: x\r\nX-Original-URL: /caf\xe9\r\n\r\n";
        match parse_head(latin1, &HeadLimits::default()) {
            HeadOutcome::Complete { head, .. } => {
                assert_eq!(head.fields.get("x-original-url"), Some(&b"/caf\xe9"[..]))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(refused(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(
            refused(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            400
        );
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nHost: a:8x\r\n\r\n"), 400);
        assert_eq!(refused("GET / HTTP/1.1\r\nHost: é\r\n\r\n".as_bytes()), 400);
        for ok in ["x", "a.example:8080", "[::1]:80", "127.0.0.1", ""] {
            head(&format!("GET / HTTP/1.1\r\nHost: {ok}\r\n\r\n"));
        }
        // HTTP/1.0 may leave Host out.
        assert!(head("GET / HTTP/1.0\r\n\r\n").0.close);
    }

    #[test]
    fn absolute_form_takes_its_authority_as_host() {
        let (h, _) =
            head("GET http://Auth.Example:8080/healthz?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(h.target, "/healthz?x=1");
        assert_eq!(value(&h, "host"), Some("Auth.Example:8080"));
        assert_eq!(
            head("GET https://a.example HTTP/1.1\r\nHost: a\r\n\r\n")
                .0
                .target,
            "/"
        );
        assert_eq!(
            head("GET http://a?q HTTP/1.1\r\nHost: a\r\n\r\n").0.target,
            "/?q"
        );
        assert_eq!(refused(b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(refused(b"GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(refused(b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        // Still one Host header required.
        assert_eq!(refused(b"GET http://a/ HTTP/1.1\r\n\r\n"), 400);
    }

    #[test]
    fn transfer_encoding_rules() {
        let te = |v: &str| format!("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: {v}\r\n\r\n");
        assert_eq!(head(&te("chunked")).0.body, BodyFraming::Chunked);
        assert_eq!(head(&te("Chunked")).0.body, BodyFraming::Chunked);
        assert!(!head(&te("chunked")).0.close);
        assert_eq!(refused(te("identity").as_bytes()), 501);
        assert_eq!(refused(te("gzip").as_bytes()), 501);
        assert_eq!(refused(te("chunked, identity").as_bytes()), 501);
        assert_eq!(refused(te("gzip, chunked").as_bytes()), 501);
        assert_eq!(refused(te("chunked, chunked").as_bytes()), 400);
        assert_eq!(refused(te("").as_bytes()), 400);
        assert_eq!(refused(te(",").as_bytes()), 400);
        let two = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(refused(two.as_bytes()), 501);
        let old = "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(old.as_bytes()), 400);
        // Content-Length beside it: read as chunked, then close.
        let both =
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let (h, _) = head(both);
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(h.close);
    }

    #[test]
    fn content_length_rules() {
        let cl = |v: &str| format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {v}\r\n\r\n");
        assert_eq!(head(&cl("42")).0.body, BodyFraming::Length(42));
        assert_eq!(head(&cl("42, 42")).0.body, BodyFraming::Length(42));
        assert_eq!(head(&cl("0")).0.body, BodyFraming::Length(0));
        assert_eq!(
            head(&cl("99999999999999999999999")).0.body,
            BodyFraming::Length(u64::MAX)
        );
        for bad in ["abc", "-1", "+1", "4 2", "42, 43", "0x10", "", ",", "1e3"] {
            assert_eq!(refused(cl(bad).as_bytes()), 400, "{bad:?}");
        }
        let two = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(refused(two.as_bytes()), 400);
        let same = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(head(same).0.body, BodyFraming::Length(4));
    }

    #[test]
    fn connection_and_expect() {
        assert!(
            head("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .0
                .close
        );
        assert!(
            head("GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, Close\r\n\r\n")
                .0
                .close
        );
        assert!(head("GET / HTTP/1.0\r\n\r\n").0.close);
        assert!(
            !head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                .0
                .close
        );
        let expect =
            "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(head(expect).0.expect_continue);
        let no_body = "GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n";
        assert!(!head(no_body).0.expect_continue);
        let old = "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
        assert!(!head(old).0.expect_continue);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n"),
            417
        );
    }

    fn decode_all(input: &[u8], limit: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut out = Vec::new();
        let mut d = ChunkedDecoder::default();
        let (used, done) = d.decode(input, &mut out, limit)?;
        assert!(done, "incomplete: {:?}", String::from_utf8_lossy(input));
        Ok((out, used))
    }

    #[test]
    fn chunked_bodies() {
        let (out, used) = decode_all(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT", 100).unwrap();
        assert_eq!(out, b"hello world");
        assert_eq!(used, 26);
        // Extensions ignored, trailers read and dropped, upper-case hex.
        let (out, _) = decode_all(
            b"A;name=\"v\"\r\n0123456789\r\n0 ; last\r\nX-Sum: 1\r\nY: 2\r\n\r\n",
            100,
        )
        .unwrap();
        assert_eq!(out, b"0123456789");
    }

    #[test]
    fn chunked_bodies_arrive_in_pieces() {
        let input = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\nrest";
        let mut out = Vec::new();
        let mut d = ChunkedDecoder::default();
        let mut total = 0;
        for (n, byte) in input.iter().enumerate() {
            let (used, done) = d.decode(std::slice::from_ref(byte), &mut out, 100).unwrap();
            total += used;
            if done {
                assert_eq!(n + 1, input.len() - 4);
                break;
            }
        }
        assert_eq!(out, b"abcde");
        assert_eq!(total, input.len() - 4);
    }

    #[test]
    fn chunked_refusals() {
        for bad in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloX\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nT: v\n\r\n",
            b"-5\r\n",
        ] {
            let mut d = ChunkedDecoder::default();
            assert_eq!(
                d.decode(bad, &mut Vec::new(), 100),
                Err(ChunkError::Malformed),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(b"65\r\n", &mut Vec::new(), 100),
            Err(ChunkError::TooLarge)
        );
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(b"11111111111111111\r\n", &mut Vec::new(), 100),
            Err(ChunkError::TooLarge)
        );
        let long_ext = format!("1;{}\r\n", "e".repeat(5000));
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(long_ext.as_bytes(), &mut Vec::new(), 100),
            Err(ChunkError::Malformed)
        );
        let trailers = format!("0\r\nX: {}\r\n\r\n", "t".repeat(9000));
        let mut d = ChunkedDecoder::default();
        assert_eq!(
            d.decode(trailers.as_bytes(), &mut Vec::new(), 100),
            Err(ChunkError::TrailersTooLarge)
        );
    }
}

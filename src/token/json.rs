//! The strict JSON reader (RFC 8259) for headers and payloads that are not in our own
//! layout: PyJWT's tokens, the original design's, and anything hand-made.
//!
//! It reads in two passes over a decoded segment and allocates nothing:
//! 1. [`read_object`] checks the whole object (syntax, escapes, numbers, nesting, no
//!    member name twice) and reads the members it knows straight into their types,
//!    leaving string values where they are as [`RawStr`] offsets;
//! 2. [`unescape_strs`] turns the string values wanted into `&str` borrowed from the
//!    segment's buffer, unescaping in place (unescaping never lengthens a string).
//!
//! Its verdicts are serde_json's, classed as the token contract needs them: anything
//! serde_json refuses as syntax is [`TokenError::Json`] (malformed); a known member of the
//! wrong type is [`TokenError::WrongType`] and a member name twice (escapes decoded) is
//! [`TokenError::Duplicate`] (both invalid). The unit tests hold the two readers to the
//! same answers on generated and edited input.

use std::cmp::Ordering;

use super::MAX_DECODED_LEN;
use super::amr::{Amr, LONGEST_METHOD};
use super::error::{Part, TokenError};

/// The most members an object within the size limit can have (`"":0,` takes 5 bytes).
const MAX_MEMBERS: usize = MAX_DECODED_LEN / 5 + 1;

/// A JSON string as found in a segment: the offsets of its body (between the quotes)
/// and whether the body holds escapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawStr {
    start: usize,
    end: usize,
    escaped: bool,
}

/// A JSON number as found: its sign and, when it is an integer of at most 64 bits of
/// magnitude (no fraction, no exponent), that magnitude.
#[derive(Debug, Clone, Copy)]
struct Number {
    negative: bool,
    magnitude: Option<u64>,
}

impl Number {
    /// The number as an i64, as serde_json reads one: `-0` is a float, not an integer.
    fn as_i64(self) -> Option<i64> {
        match (self.negative, self.magnitude?) {
            (false, m) => i64::try_from(m).ok(),
            (true, 0) => None,
            (true, m) => 0i64.checked_sub_unsigned(m),
        }
    }

    /// The number as a u64: no sign, no fraction, no exponent.
    fn as_u64(self) -> Option<u64> {
        if self.negative { None } else { self.magnitude }
    }
}

/// A cursor over one segment, which must be valid UTF-8 (checked before).
pub(super) struct Scanner<'a> {
    text: &'a str,
    pos: usize,
    part: Part,
}

impl<'a> Scanner<'a> {
    fn syntax(&self) -> TokenError {
        TokenError::Json { part: self.part }
    }

    fn wrong_type(&self, name: &'static str) -> TokenError {
        TokenError::WrongType {
            part: self.part,
            name,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    /// Skips JSON whitespace.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> Result<(), TokenError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// The colon between a member name and its value, with the whitespace around it.
    fn colon(&mut self) -> Result<(), TokenError> {
        self.ws();
        self.eat(b':')?;
        self.ws();
        Ok(())
    }

    /// The body of a string value, borrowed from the segment.
    fn body(&self, raw: RawStr) -> &'a str {
        self.text.get(raw.start..raw.end).unwrap_or_default()
    }

    /// A string at the cursor. `strict`: a UTF-16 surrogate escape must be half of a
    /// pair, as for names and values that are read; values that are skipped only need
    /// well-formed escapes (serde_json's rules for both).
    fn string(&mut self, strict: bool) -> Result<RawStr, TokenError> {
        self.eat(b'"')?;
        let start = self.pos;
        let mut escaped = false;
        loop {
            match self.peek() {
                Some(b'"') => {
                    let end = self.pos;
                    self.pos += 1;
                    return Ok(RawStr {
                        start,
                        end,
                        escaped,
                    });
                }
                Some(b'\\') => {
                    escaped = true;
                    self.pos += 1;
                    self.escape(strict)?;
                }
                Some(0x20..) => self.pos += 1,
                // A control character, or the end of the segment inside the string.
                Some(_) | None => return Err(self.syntax()),
            }
        }
    }

    /// The rest of an escape sequence after its backslash.
    fn escape(&mut self, strict: bool) -> Result<(), TokenError> {
        let byte = self.peek().ok_or_else(|| self.syntax())?;
        self.pos += 1;
        match byte {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Ok(()),
            b'u' => {
                let unit = self.hex4()?;
                if !strict {
                    return Ok(());
                }
                match unit {
                    0xD800..=0xDBFF => {
                        self.eat(b'\\')?;
                        self.eat(b'u')?;
                        match self.hex4()? {
                            0xDC00..=0xDFFF => Ok(()),
                            _ => Err(self.syntax()),
                        }
                    }
                    0xDC00..=0xDFFF => Err(self.syntax()),
                    _ => Ok(()),
                }
            }
            _ => Err(self.syntax()),
        }
    }

    /// Four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u16, TokenError> {
        let digits = self
            .text
            .as_bytes()
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.syntax())?;
        let mut unit = 0u16;
        for &d in digits {
            let value = char::from(d).to_digit(16).ok_or_else(|| self.syntax())?;
            unit = unit << 4 | value as u16;
        }
        self.pos += 4;
        Ok(unit)
    }

    /// A number at the cursor, by the RFC 8259 §6 grammar.
    fn number(&mut self) -> Result<Number, TokenError> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let mut magnitude = Some(0u64);
        match self.peek() {
            Some(b'0') => {
                self.pos += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.syntax());
                }
            }
            Some(b'1'..=b'9') => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    magnitude = magnitude
                        .and_then(|m| m.checked_mul(10))
                        .and_then(|m| m.checked_add(u64::from(d - b'0')));
                    self.pos += 1;
                }
            }
            _ => return Err(self.syntax()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
            magnitude = None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            self.digits()?;
            magnitude = None;
        }
        Ok(Number {
            negative,
            magnitude,
        })
    }

    /// One or more digits.
    fn digits(&mut self) -> Result<(), TokenError> {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        if self.pos == start {
            Err(self.syntax())
        } else {
            Ok(())
        }
    }

    /// `true`, `false` or `null`.
    fn literal(&mut self, word: &str) -> Result<(), TokenError> {
        if self.text.as_bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.syntax())
        }
    }

    /// A number whose value is read (not skipped). Like serde_json, one that is not an
    /// integer of 64 bits is read as an f64, and one too large for that (`1e400`) is a
    /// syntax error rather than a wrong type.
    fn number_value(&mut self) -> Result<Number, TokenError> {
        let start = self.pos;
        let number = self.number()?;
        if number.magnitude.is_none() {
            let text = self.text.get(start..self.pos).unwrap_or_default();
            if text.parse::<f64>().map_or(true, f64::is_infinite) {
                return Err(self.syntax());
            }
        }
        Ok(number)
    }

    /// The error for a value of the wrong type at the cursor. Like serde_json, a scalar
    /// is read first, so a broken one is a syntax error; arrays and objects are not.
    fn wrong(&mut self, name: &'static str) -> TokenError {
        let read = match self.peek() {
            Some(b'"') => self.string(true).map(drop),
            Some(b'-' | b'0'..=b'9') => self.number_value().map(drop),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'[' | b'{') => Ok(()),
            _ => Err(self.syntax()),
        };
        match read {
            Ok(()) => self.wrong_type(name),
            Err(err) => err,
        }
    }

    /// A string value of member `name`.
    fn str_value(&mut self, name: &'static str) -> Result<RawStr, TokenError> {
        match self.peek() {
            Some(b'"') => self.string(true),
            _ => Err(self.wrong(name)),
        }
    }

    /// An i64 value of member `name`.
    fn i64_value(&mut self, name: &'static str) -> Result<i64, TokenError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                (self.number_value()?.as_i64()).ok_or_else(|| self.wrong_type(name))
            }
            _ => Err(self.wrong(name)),
        }
    }

    /// A u64 value of member `name`.
    fn u64_value(&mut self, name: &'static str) -> Result<u64, TokenError> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => {
                (self.number_value()?.as_u64()).ok_or_else(|| self.wrong_type(name))
            }
            _ => Err(self.wrong(name)),
        }
    }

    /// The `amr` value: an array of strings, or a wrong type. Whether the strings are
    /// distinct registered method names (see `amr.rs`) is the inner result, judged by
    /// the verifier after the whole payload was read, as other claim values are.
    fn amr_value(&mut self) -> Result<Result<Amr, TokenError>, TokenError> {
        if self.peek() != Some(b'[') {
            return Err(self.wrong("amr"));
        }
        self.pos += 1;
        self.ws();
        let mut read = Some(0);
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                let raw = self.str_value("amr")?;
                let mut name = [0u8; LONGEST_METHOD];
                let value = unescape_short(self.body(raw), raw.escaped, &mut name);
                read = read
                    .zip(value)
                    .and_then(|(read, value)| Amr::add(read, value));
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        self.ws();
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(self.syntax()),
                }
            }
        }
        Ok(read.and_then(Amr::from_read).ok_or(TokenError::AuthMethods))
    }

    /// Skips any value, checking its syntax as serde_json does for a value it ignores
    /// (strings need well-formed escapes only; nesting is unlimited but bounded by the
    /// segment's length).
    fn skip_value(&mut self) -> Result<(), TokenError> {
        // One bit per open container: 1 for an object, 0 for an array.
        let mut open = [0u64; MAX_DECODED_LEN / 64 + 1];
        let mut depth = 0usize;
        loop {
            // At a value.
            self.ws();
            match self.peek() {
                Some(bracket @ (b'[' | b'{')) => {
                    self.pos += 1;
                    let object = bracket == b'{';
                    let word = open.get_mut(depth / 64).ok_or_else(|| self.syntax())?;
                    *word = (*word & !(1 << (depth % 64))) | (u64::from(object) << (depth % 64));
                    depth += 1;
                    self.ws();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() != Some(close) {
                        if object {
                            self.string(false)?;
                            self.colon()?;
                        }
                        continue;
                    }
                    self.pos += 1;
                    depth -= 1;
                }
                Some(b'"') => drop(self.string(false)?),
                Some(b'-' | b'0'..=b'9') => drop(self.number()?),
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                _ => return Err(self.syntax()),
            }
            // After a value: close containers until one continues with a comma.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let object = open[(depth - 1) / 64] >> ((depth - 1) % 64) & 1 == 1;
                self.ws();
                match (self.peek(), object) {
                    (Some(b','), _) => {
                        self.pos += 1;
                        if object {
                            self.ws();
                            self.string(false)?;
                            self.colon()?;
                        }
                        break;
                    }
                    (Some(b']'), false) | (Some(b'}'), true) => {
                        self.pos += 1;
                        depth -= 1;
                    }
                    _ => return Err(self.syntax()),
                }
            }
        }
    }

    /// Reads a known member's value into `slot`: refuses a second occurrence (before its
    /// colon, as serde_json does), then the colon, then the value.
    fn slot<T>(
        &mut self,
        slot: &mut Option<T>,
        read: impl FnOnce(&mut Scanner<'a>) -> Result<T, TokenError>,
    ) -> Result<bool, TokenError> {
        if slot.is_some() {
            return Err(TokenError::Duplicate { part: self.part });
        }
        self.colon()?;
        *slot = Some(read(self)?);
        Ok(true)
    }
}

/// The members of an object that a reader knows.
pub(super) trait Members<'a> {
    /// Reads member `key` (the name with escapes decoded; `None` when too long to be a
    /// known name) with [`Scanner::slot`] and returns true, or returns false for an
    /// unknown member, which is then skipped.
    fn member(&mut self, key: Option<&[u8]>, s: &mut Scanner<'a>) -> Result<bool, TokenError>;
}

/// The payload members the verifier reads; others are skipped.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct PayloadMembers {
    pub sub: Option<RawStr>,
    pub user_id: Option<u64>,
    pub name: Option<RawStr>,
    pub role: Option<RawStr>,
    pub iat: Option<i64>,
    pub exp: Option<i64>,
    pub nbf: Option<i64>,
    pub iss: Option<RawStr>,
    pub auth_time: Option<i64>,
    pub ver: Option<u64>,
    /// Present: the set, or [`TokenError::AuthMethods`] when the values make none.
    pub amr: Option<Result<Amr, TokenError>>,
    pub jti: Option<RawStr>,
}

impl<'a> Members<'a> for PayloadMembers {
    fn member(&mut self, key: Option<&[u8]>, s: &mut Scanner<'a>) -> Result<bool, TokenError> {
        match key {
            Some(b"sub") => s.slot(&mut self.sub, |s| s.str_value("sub")),
            Some(b"user_id") => s.slot(&mut self.user_id, |s| s.u64_value("user_id")),
            Some(b"name") => s.slot(&mut self.name, |s| s.str_value("name")),
            Some(b"role") => s.slot(&mut self.role, |s| s.str_value("role")),
            Some(b"iat") => s.slot(&mut self.iat, |s| s.i64_value("iat")),
            Some(b"exp") => s.slot(&mut self.exp, |s| s.i64_value("exp")),
            Some(b"nbf") => s.slot(&mut self.nbf, |s| s.i64_value("nbf")),
            Some(b"iss") => s.slot(&mut self.iss, |s| s.str_value("iss")),
            Some(b"auth_time") => s.slot(&mut self.auth_time, |s| s.i64_value("auth_time")),
            Some(b"ver") => s.slot(&mut self.ver, |s| s.u64_value("ver")),
            Some(b"amr") => s.slot(&mut self.amr, Scanner::amr_value),
            Some(b"jti") => s.slot(&mut self.jti, |s| s.str_value("jti")),
            _ => Ok(false),
        }
    }
}

/// A string value as found in a segment: its body, and whether that holds escapes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Text<'a> {
    body: &'a str,
    escaped: bool,
}

impl Text<'_> {
    /// Whether the string is `value`, escapes decoded.
    pub(super) fn is(&self, value: &str) -> bool {
        match self.escaped {
            false => self.body == value,
            true => Unescaped::new(self.body).eq(value.chars()),
        }
    }
}

/// The header members the verifier reads; others are ignored (RFC 7515 §4.1: keys come
/// only from the key files, never from `jku`, `x5u` and the like).
#[derive(Debug, Default)]
pub(super) struct HeaderMembers<'a> {
    pub alg: Option<Text<'a>>,
    pub typ: Option<Text<'a>>,
    pub kid: Option<Text<'a>>,
    pub crit: Option<()>,
}

impl<'a> Members<'a> for HeaderMembers<'a> {
    fn member(&mut self, key: Option<&[u8]>, s: &mut Scanner<'a>) -> Result<bool, TokenError> {
        let text = |name| {
            move |s: &mut Scanner<'a>| {
                let raw = s.str_value(name)?;
                Ok(Text {
                    body: s.body(raw),
                    escaped: raw.escaped,
                })
            }
        };
        match key {
            Some(b"alg") => s.slot(&mut self.alg, text("alg")),
            Some(b"typ") => s.slot(&mut self.typ, text("typ")),
            Some(b"kid") => s.slot(&mut self.kid, text("kid")),
            Some(b"crit") => s.slot(&mut self.crit, Scanner::skip_value),
            _ => Ok(false),
        }
    }
}

/// Reads the JSON object that is the whole of `text` (one decoded segment, UTF-8),
/// handing each member to `members` and skipping the unknown ones; refuses a member
/// name that occurs twice, known or not.
pub(super) fn read_object<'a>(
    text: &'a str,
    part: Part,
    members: &mut impl Members<'a>,
) -> Result<(), TokenError> {
    let mut s = Scanner { text, pos: 0, part };
    s.ws();
    s.eat(b'{')?;
    // Unknown member names, each packed as start | end << 12 | escaped << 24 (the
    // segment is shorter than 4096 bytes): checked for duplicates at the end.
    let mut unknown = [0u32; MAX_MEMBERS];
    let mut count = 0;
    s.ws();
    if s.peek() == Some(b'}') {
        s.pos += 1;
    } else {
        loop {
            if s.peek() != Some(b'"') {
                return Err(s.syntax());
            }
            let name = s.string(true)?;
            let mut short = [0u8; 16];
            let key = match name.escaped {
                false => Some(s.body(name).as_bytes()),
                true => unescape_short(s.body(name), true, &mut short).map(str::as_bytes),
            };
            if !members.member(key, &mut s)? {
                s.colon()?;
                s.skip_value()?;
                let packed =
                    name.start as u32 | (name.end as u32) << 12 | u32::from(name.escaped) << 24;
                *unknown.get_mut(count).ok_or_else(|| s.syntax())? = packed;
                count += 1;
            }
            s.ws();
            match s.peek() {
                Some(b',') => {
                    s.pos += 1;
                    s.ws();
                }
                Some(b'}') => {
                    s.pos += 1;
                    break;
                }
                _ => return Err(s.syntax()),
            }
        }
    }
    let names = &mut unknown[..count];
    let raw = |packed: u32| RawStr {
        start: (packed & 0xfff) as usize,
        end: (packed >> 12 & 0xfff) as usize,
        escaped: packed >> 24 != 0,
    };
    let order = |a: &u32, b: &u32| compare(&s, raw(*a), raw(*b));
    names.sort_unstable_by(order);
    if names
        .windows(2)
        .any(|w| order(&w[0], &w[1]) == Ordering::Equal)
    {
        return Err(TokenError::Duplicate { part });
    }
    s.ws();
    if s.pos != text.len() {
        return Err(s.syntax());
    }
    Ok(())
}

/// Orders two strings of a segment by their unescaped contents.
fn compare(s: &Scanner<'_>, a: RawStr, b: RawStr) -> Ordering {
    let (x, y) = (s.body(a), s.body(b));
    if !a.escaped && !b.escaped {
        return x.cmp(y);
    }
    Unescaped::new(x).cmp(Unescaped::new(y))
}

/// The unescaped `body` when it fits `out`, borrowed from `body` when it has no escapes.
fn unescape_short<'o>(body: &'o str, escaped: bool, out: &'o mut [u8]) -> Option<&'o str> {
    if !escaped {
        return (body.len() <= out.len()).then_some(body);
    }
    let mut len = 0;
    for c in Unescaped::new(body) {
        let end = len + c.len_utf8();
        c.encode_utf8(out.get_mut(len..end)?);
        len = end;
    }
    std::str::from_utf8(&out[..len]).ok()
}

/// The characters of a string body that passed [`Scanner::string`] strictly.
struct Unescaped<'a> {
    chars: std::str::Chars<'a>,
}

impl<'a> Unescaped<'a> {
    fn new(body: &'a str) -> Unescaped<'a> {
        Unescaped {
            chars: body.chars(),
        }
    }

    fn hex4(&mut self) -> u32 {
        (0..4).fold(0, |unit, _| {
            unit << 4 | self.chars.next().and_then(|c| c.to_digit(16)).unwrap_or(0)
        })
    }
}

impl Iterator for Unescaped<'_> {
    type Item = char;

    fn next(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c != '\\' {
            return Some(c);
        }
        Some(match self.chars.next()? {
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let unit = self.hex4();
                let code = if (0xD800..0xDC00).contains(&unit) {
                    // The scanner checked that `\uDC00`..`\uDFFF` follows.
                    self.chars.nth(1);
                    0x10000 + ((unit - 0xD800) << 10) + (self.hex4() & 0x3ff)
                } else {
                    unit
                };
                char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
            }
            other => other,
        })
    }
}

/// Turns the string bodies `raws` of `segment` (disjoint, found by [`read_object`] in
/// this same segment) into `&str` borrowed from it, unescaping each in place.
pub(super) fn unescape_strs<const N: usize>(
    segment: &mut [u8],
    raws: [Option<RawStr>; N],
) -> [Option<&str>; N] {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_unstable_by_key(|&i| raws[i].map_or(0, |raw| raw.start));
    let mut out = [None; N];
    let mut rest = segment;
    let mut consumed = 0;
    for i in order {
        let Some(raw) = raws[i] else { continue };
        let tail = std::mem::take(&mut rest);
        let Some((body, after)) = tail
            .get_mut(raw.start - consumed..)
            .and_then(|from| from.split_at_mut_checked(raw.end - raw.start))
        else {
            break;
        };
        rest = after;
        consumed = raw.end;
        let len = match raw.escaped {
            false => body.len(),
            true => unescape_in_place(body),
        };
        out[i] = std::str::from_utf8(&body[..len]).ok();
    }
    out
}

/// Decodes the escapes of a strictly checked string body in place; returns its new
/// length. Each escape takes at least as many bytes as its UTF-8 encoding (`\n` 2 for 1,
/// `\uXXXX` 6 for up to 3, a surrogate pair 12 for 4), so writing never overtakes reading.
fn unescape_in_place(body: &mut [u8]) -> usize {
    let (mut read, mut write) = (0, 0);
    while let Some(&byte) = body.get(read) {
        let (c, end) = if byte == b'\\' {
            let end = match body.get(read + 1..read + 4) {
                Some([b'u', b'd' | b'D', b'8' | b'9' | b'a' | b'b' | b'A' | b'B']) => read + 12,
                Some([b'u', ..]) => read + 6,
                _ => read + 2,
            };
            let escape = body
                .get(read..end)
                .and_then(|e| std::str::from_utf8(e).ok());
            let c = escape.and_then(|e| Unescaped::new(e).next());
            (c.unwrap_or(char::REPLACEMENT_CHARACTER), end)
        } else {
            // Copied byte by byte: the UTF-8 of unescaped characters passes unchanged.
            body[write] = byte;
            read += 1;
            write += 1;
            continue;
        };
        let mut utf8 = [0u8; 4];
        let encoded = c.encode_utf8(&mut utf8).as_bytes();
        let Some(to) = body.get_mut(write..write + encoded.len()) else {
            break;
        };
        to.copy_from_slice(encoded);
        write += encoded.len();
        read = end;
    }
    write
}

/// serde_json with the visitor this reader replaced: the reference the tests hold
/// [`read_object`] to. Kept whole here so that any difference in judgement shows up.
#[cfg(test)]
mod oracle {
    use std::borrow::Cow;
    use std::cell::Cell;
    use std::fmt;
    use std::marker::PhantomData;

    use serde::de::{
        self, Deserialize, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor,
    };

    use super::super::amr::Amr;
    use super::super::error::{Part, TokenError};

    /// Parses a JSON object with [`Fields`] `T`, classing failures: syntax or a
    /// non-object is malformed; a duplicate member or a wrong type is invalid.
    pub fn parse_object<'de, T: Fields<'de>>(json: &'de str, part: Part) -> Result<T, TokenError> {
        let starts_object = json
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{');
        if !starts_object {
            return Err(TokenError::Json { part });
        }
        let flaw = Cell::new(None);
        let mut de = serde_json::Deserializer::from_str(json);
        let parsed = ObjectSeed {
            flaw: &flaw,
            out: PhantomData,
        }
        .deserialize(&mut de)
        .and_then(|fields| de.end().map(|()| fields));
        parsed.map_err(|err| match (err.classify(), flaw.get()) {
            (serde_json::error::Category::Data, Some(Flaw::Duplicate)) => {
                TokenError::Duplicate { part }
            }
            (serde_json::error::Category::Data, Some(Flaw::WrongType(name))) => {
                TokenError::WrongType { part, name }
            }
            _ => TokenError::Json { part },
        })
    }

    #[derive(Debug, Clone, Copy)]
    pub enum Flaw {
        Duplicate,
        WrongType(&'static str),
    }

    pub trait Fields<'de>: Default {
        fn read<A: MapAccess<'de>>(
            &mut self,
            name: &str,
            map: &mut A,
            flaw: &Cell<Option<Flaw>>,
        ) -> Result<bool, A::Error>;
    }

    fn put<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
        slot: &mut Option<T>,
        name: &'static str,
        map: &mut A,
        flaw: &Cell<Option<Flaw>>,
    ) -> Result<bool, A::Error> {
        if slot.is_some() {
            flaw.set(Some(Flaw::Duplicate));
            return Err(de::Error::custom("duplicate member"));
        }
        match map.next_value() {
            Ok(value) => {
                *slot = Some(value);
                Ok(true)
            }
            Err(err) => {
                flaw.set(Some(Flaw::WrongType(name)));
                Err(err)
            }
        }
    }

    #[derive(Default)]
    pub struct RawHeader {
        pub alg: Option<String>,
        pub typ: Option<String>,
        pub kid: Option<String>,
        pub crit: Option<IgnoredAny>,
    }

    impl<'de> Fields<'de> for RawHeader {
        fn read<A: MapAccess<'de>>(
            &mut self,
            name: &str,
            map: &mut A,
            flaw: &Cell<Option<Flaw>>,
        ) -> Result<bool, A::Error> {
            match name {
                "alg" => put(&mut self.alg, "alg", map, flaw),
                "typ" => put(&mut self.typ, "typ", map, flaw),
                "kid" => put(&mut self.kid, "kid", map, flaw),
                "crit" => put(&mut self.crit, "crit", map, flaw),
                _ => Ok(false),
            }
        }
    }

    #[derive(Debug, Default, PartialEq, Eq)]
    pub struct RawClaims {
        pub sub: Option<String>,
        pub user_id: Option<u64>,
        pub name: Option<String>,
        pub role: Option<String>,
        pub iat: Option<i64>,
        pub exp: Option<i64>,
        pub nbf: Option<i64>,
        pub iss: Option<String>,
        pub auth_time: Option<i64>,
        pub ver: Option<u64>,
        pub amr: Option<Vec<String>>,
    }

    impl<'de> Fields<'de> for RawClaims {
        fn read<A: MapAccess<'de>>(
            &mut self,
            name: &str,
            map: &mut A,
            flaw: &Cell<Option<Flaw>>,
        ) -> Result<bool, A::Error> {
            match name {
                "sub" => put(&mut self.sub, "sub", map, flaw),
                "user_id" => put(&mut self.user_id, "user_id", map, flaw),
                "name" => put(&mut self.name, "name", map, flaw),
                "role" => put(&mut self.role, "role", map, flaw),
                "iat" => put(&mut self.iat, "iat", map, flaw),
                "exp" => put(&mut self.exp, "exp", map, flaw),
                "nbf" => put(&mut self.nbf, "nbf", map, flaw),
                "iss" => put(&mut self.iss, "iss", map, flaw),
                "auth_time" => put(&mut self.auth_time, "auth_time", map, flaw),
                "ver" => put(&mut self.ver, "ver", map, flaw),
                "amr" => put(&mut self.amr, "amr", map, flaw),
                _ => Ok(false),
            }
        }
    }

    impl RawClaims {
        /// `amr` under the rule of `amr.rs`, applied after the whole object was read.
        pub fn amr(&self) -> Result<Option<Amr>, TokenError> {
            let Some(values) = &self.amr else {
                return Ok(None);
            };
            let mut read = Some(0);
            for value in values {
                read = read.and_then(|read| Amr::add(read, value));
            }
            read.and_then(Amr::from_read)
                .map(Some)
                .ok_or(TokenError::AuthMethods)
        }
    }

    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Text<'de>(Cow<'de, str>);

    impl<'de> Deserialize<'de> for Text<'de> {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct TextVisitor;
            impl<'de> Visitor<'de> for TextVisitor {
                type Value = Text<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Borrowed(v)))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Text<'de>, E> {
                    Ok(Text(Cow::Owned(v.to_owned())))
                }
            }
            deserializer.deserialize_str(TextVisitor)
        }
    }

    struct ObjectSeed<'f, T> {
        flaw: &'f Cell<Option<Flaw>>,
        out: PhantomData<T>,
    }

    impl<'de, T: Fields<'de>> DeserializeSeed<'de> for ObjectSeed<'_, T> {
        type Value = T;

        fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<T, D::Error> {
            deserializer.deserialize_map(self)
        }
    }

    impl<'de, T: Fields<'de>> Visitor<'de> for ObjectSeed<'_, T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
            let mut fields = T::default();
            let mut others: Vec<Text<'de>> = Vec::new();
            while let Some(name) = map.next_key::<Text<'de>>()? {
                if !fields.read(&name.0, &mut map, self.flaw)? {
                    map.next_value::<IgnoredAny>()?;
                    others.push(name);
                }
            }
            others.sort_unstable();
            if others.windows(2).any(|pair| pair[0] == pair[1]) {
                self.flaw.set(Some(Flaw::Duplicate));
                return Err(de::Error::custom("duplicate member"));
            }
            Ok(fields)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(json: &str) -> Result<PayloadMembers, TokenError> {
        let mut members = PayloadMembers::default();
        read_object(json, Part::Payload, &mut members).map(|()| members)
    }

    /// What a reader made of a payload, in one shape for comparing the two readers.
    #[derive(Debug, PartialEq, Eq)]
    struct Read {
        strings: [Option<String>; 4],
        integers: [Option<i64>; 4],
        ids: [Option<u64>; 2],
        amr: Option<Amr>,
    }

    /// Both readers leave the `amr` rule until the whole object was read.
    fn ours(json: &str) -> Result<Read, TokenError> {
        let m = payload(json)?;
        let mut buf = json.as_bytes().to_vec();
        let strings = unescape_strs(&mut buf, [m.sub, m.name, m.role, m.iss]);
        Ok(Read {
            strings: strings.map(|s| s.map(str::to_owned)),
            integers: [m.iat, m.exp, m.nbf, m.auth_time],
            ids: [m.user_id, m.ver],
            amr: m.amr.transpose()?,
        })
    }

    fn theirs(json: &str) -> Result<Read, TokenError> {
        let m: oracle::RawClaims = oracle::parse_object(json, Part::Payload)?;
        let amr = m.amr()?;
        Ok(Read {
            strings: [m.sub, m.name, m.role, m.iss],
            integers: [m.iat, m.exp, m.nbf, m.auth_time],
            ids: [m.user_id, m.ver],
            amr,
        })
    }

    /// The header as both readers see it: alg, typ, kid compared to fixed values.
    fn header_ours(json: &str) -> Result<[Option<bool>; 4], TokenError> {
        let mut m = HeaderMembers::default();
        read_object(json, Part::Header, &mut m)?;
        let is = |t: Option<Text<'_>>, v: &str| t.map(|t| t.is(v));
        Ok([
            is(m.alg, "HS256"),
            is(m.typ, "JWT"),
            is(m.kid, "k1"),
            m.crit.map(|()| true),
        ])
    }

    fn header_theirs(json: &str) -> Result<[Option<bool>; 4], TokenError> {
        let m: oracle::RawHeader = oracle::parse_object(json, Part::Header)?;
        let is = |t: Option<String>, v: &str| t.map(|t| t == v);
        Ok([
            is(m.alg, "HS256"),
            is(m.typ, "JWT"),
            is(m.kid, "k1"),
            m.crit.map(|_| true),
        ])
    }

    use proptest::prelude::*;

    /// Pieces of string bodies that are valid JSON.
    const GOOD_PIECES: [&str; 11] = [
        "\\n",
        "\\\"",
        "\\\\",
        "\\/",
        "\\u00e9",
        "\\u0065",
        "\\ud83d\\ude00",
        "é张",
        "pwd",
        "otp",
        "\\u5f20",
    ];

    /// String bodies: valid ones, or (`broken`) with bad escapes and control characters.
    fn string_body(broken: bool) -> impl Strategy<Value = String> {
        let mut pieces: Vec<&'static str> = GOOD_PIECES.to_vec();
        if broken {
            pieces.extend([
                "\\ud800",
                "\\udc00",
                "\\ud800\\u0041",
                "\\x",
                "\\u12",
                "\u{1}",
            ]);
        }
        let piece = prop_oneof![
            "[a-z0-9 ]{0,3}",
            proptest::sample::select(pieces).prop_map(str::to_owned),
        ];
        proptest::collection::vec(piece, 0..4).prop_map(|p| p.concat())
    }

    fn name() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "sub",
                "user_id",
                "name",
                "role",
                "iat",
                "exp",
                "nbf",
                "iss",
                "auth_time",
                "ver",
                "amr",
                "alg",
                "typ",
                "kid",
                "crit",
                "\\u0065xp",
                "a\\u0062",
                "ab",
                "x",
                "x",
            ])
            .prop_map(str::to_owned),
            string_body(true),
        ]
    }

    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::sample::select(vec![
                "0",
                "-0",
                "01",
                "-",
                "1.",
                "1.5",
                "-1.5e3",
                "1e5",
                "1E+2",
                "2e-1",
                ".5",
                "+1",
                "9223372036854775807",
                "9223372036854775808",
                "-9223372036854775808",
                "-9223372036854775809",
                "18446744073709551615",
                "18446744073709551616",
                "123456789012345678901234",
            ])
            .prop_map(str::to_owned),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u32>().prop_map(|n| n.to_string()),
        ]
    }

    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            string_body(true).prop_map(|s| format!("\"{s}\"")),
            number(),
            proptest::sample::select(vec!["true", "false", "null", "nul", "tru"])
                .prop_map(str::to_owned),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((name(), inner), 0..3).prop_map(|m| {
                    let members: Vec<String> =
                        m.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    /// A member: mostly a known claim with a value of its type, else anything.
    fn member() -> impl Strategy<Value = String> {
        let strings = proptest::sample::select(vec![
            "sub",
            "name",
            "role",
            "iss",
            "\\u0073ub",
            "alg",
            "typ",
            "kid",
        ]);
        let integers =
            proptest::sample::select(vec!["iat", "exp", "nbf", "auth_time", "user_id", "ver"]);
        let amr = proptest::sample::select(vec![
            r#"["pwd"]"#,
            r#"["otp","pwd"]"#,
            r#"["p\u0077d"]"#,
            "[]",
            r#"["pwd","pwd"]"#,
            r#"["hwk"]"#,
            r#"["nope"]"#,
            r#"[1]"#,
            r#""pwd""#,
        ]);
        prop_oneof![
            3 => (strings, string_body(false)).prop_map(|(k, v)| format!("\"{k}\":\"{v}\"")),
            2 => (integers, number()).prop_map(|(k, v)| format!("\"{k}\":{v}")),
            1 => amr.prop_map(|v| format!("\"amr\":{v}")),
            2 => (name(), value()).prop_map(|(k, v)| format!("\"{k}\":{v}")),
        ]
    }

    fn object() -> impl Strategy<Value = String> {
        let ws = proptest::sample::select(vec!["", "", " ", "\n\t", "\r"]);
        let member = (member(), ws.clone(), ws.clone()).prop_map(|(m, a, b)| {
            // Whitespace around the colon, kept inside the member's text.
            m.replacen("\":", &format!("\"{a}:{b}"), 1)
        });
        (proptest::collection::vec(member, 0..6), ws.clone(), ws)
            .prop_map(|(members, a, b)| format!("{a}{{{}}}{b}", members.join(",")))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn judges_payloads_as_serde_json_does(json in object()) {
            prop_assert_eq!(ours(&json), theirs(&json), "{}", json);
        }

        #[test]
        fn judges_edited_payloads_as_serde_json_does(
            json in object(), at in 0usize..400, cut in 0usize..3,
            insert in "[\\[\\]{}\",:\\\\ u0-9a-z.eE+-]{0,2}",
        ) {
            let mut json = json;
            let at = (0..=at.min(json.len())).rev().find(|&i| json.is_char_boundary(i)).unwrap_or(0);
            let end = (at + cut).min(json.len());
            if json.is_char_boundary(end) {
                json.replace_range(at..end, &insert);
                prop_assert_eq!(ours(&json), theirs(&json), "{}", json);
            }
        }

        #[test]
        fn judges_headers_as_serde_json_does(json in object()) {
            prop_assert_eq!(header_ours(&json), header_theirs(&json), "{}", json);
        }
    }

    #[test]
    fn judges_fixed_cases_as_serde_json_does() {
        let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(200), "]".repeat(200));
        for json in [
            "",
            " ",
            "[]",
            "{",
            "}",
            "{}",
            " {} ",
            "{} x",
            "{,}",
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1 "b":2}"#,
            r#"{1:2}"#,
            r#"{"exp":"1"}"#,
            r#"{"exp":[1}"#,
            r#"{"exp":tru}"#,
            r#"{"exp":"\x"}"#,
            r#"{"exp":1,"exp" x}"#,
            r#"{"sub":"\ud800"}"#,
            r#"{"x":"\ud800"}"#,
            r#"{"\ud800":1}"#,
            r#"{"x":[1,]}"#,
            r#"{"x":{"a":1,}}"#,
            r#"{"x":{"a" 1}}"#,
            r#"{"x":{1:1}}"#,
            r#"{"amr":["pwd"],"amr":["otp"]}"#,
            r#"{"amr":["x",1]}"#,
            r#"{"amr":["x","x"]}"#,
            r#"{"amr":[]}"#,
            r#"{"user_id":-0,"ver":-1}"#,
            r#"{"nbf":1.0}"#,
            r#"{"nbf":1e400}"#,
            r#"{"nbf":-1e400,"x":1e400}"#,
            r#"{"sub":1e400}"#,
            r#"{"x":1e400}"#,
            r#"{"iat":9E223372036854775807}"#,
            r#"{"amr":[],"\ud800":""}"#,
            "{\"name\":\"a\u{7f}\"}",
            &deep,
        ] {
            assert_eq!(ours(json), theirs(json), "{json}");
        }
    }

    #[test]
    fn objects_refuse_duplicates_and_wrong_types() {
        let err = |json: &str| payload(json).err();
        let dup = Some(TokenError::Duplicate {
            part: Part::Payload,
        });
        assert_eq!(err(r#"{"x":1,"y":2,"x":3}"#), dup);
        assert_eq!(err(r#"{"exp":1,"\u0065xp":2}"#), dup);
        assert_eq!(err(r#"{"ab":1,"a\u0062":2}"#), dup);
        assert_eq!(err(r#"{"exp":1,"exp" x}"#), dup, "known: before the colon");
        assert_eq!(
            err(r#"{"exp":"1"}"#),
            Some(TokenError::WrongType {
                part: Part::Payload,
                name: "exp"
            })
        );
        assert_eq!(
            err(r#"{"exp":1} x"#),
            Some(TokenError::Json {
                part: Part::Payload
            })
        );
    }

    #[test]
    fn strings_unescape_in_place() {
        let json =
            r#"{"sub":"7","name":"\u5f20\u4e09","role":"a\"b\\c\n\ud83d\ude00","iss":"x\/y"}"#;
        let members = payload(json).expect("valid");
        let mut buf = json.as_bytes().to_vec();
        let [sub, name, role, iss] = unescape_strs(
            &mut buf,
            [members.sub, members.name, members.role, members.iss],
        );
        assert_eq!(sub, Some("7"));
        assert_eq!(name, Some("张三"));
        assert_eq!(role, Some("a\"b\\c\n😀"));
        assert_eq!(iss, Some("x/y"));
    }

    #[test]
    fn amr_follows_its_rule() {
        let amr =
            |value: &str| payload(&format!(r#"{{"amr":{value}}}"#)).and_then(|m| m.amr.transpose());
        assert_eq!(amr(r#"["pwd"]"#), Ok(Some(Amr::PWD)));
        assert_eq!(amr(r#" [ "otp" , "p\u0077d" ] "#), Ok(Some(Amr::PWD_OTP)));
        for bad in ["[]", r#"["pwd","pwd"]"#, r#"["pwd","x"]"#, r#"["retina1"]"#] {
            assert_eq!(amr(bad), Err(TokenError::AuthMethods), "{bad}");
        }
        let wrong = Err(TokenError::WrongType {
            part: Part::Payload,
            name: "amr",
        });
        for bad in [r#""pwd""#, "null", "{}", r#"["pwd",1]"#, r#"[["pwd"]]"#] {
            assert_eq!(amr(bad), wrong, "{bad}");
        }
        let malformed = Err(TokenError::Json {
            part: Part::Payload,
        });
        for bad in [r#"["pwd",]"#, r#"["pwd""#, "[", "nul"] {
            assert_eq!(amr(bad), malformed, "{bad}");
        }
    }

    #[test]
    fn skipped_values_nest_as_deep_as_the_segment_allows() {
        let deep = format!(r#"{{"x":{}1{}}}"#, "[".repeat(1000), "]".repeat(1000));
        assert!(payload(&deep).is_ok());
        let unclosed = format!(r#"{{"x":{}1{}}}"#, "[".repeat(1000), "]".repeat(999));
        assert!(payload(&unclosed).is_err());
        let objects = r#"{"x":{"a":[{"b":{}},[]],"c":{"d":null}},"y":[true,false,-1.5e3]}"#;
        assert!(payload(objects).is_ok());
    }

    #[test]
    fn header_members_compare_unescaped() {
        let json = r#"{"alg":"HS\u0032\u00356","typ":"JWT","kid":"k"}"#;
        let mut members = HeaderMembers::default();
        read_object(json, Part::Header, &mut members).expect("valid");
        let is = |text: Option<Text<'_>>, value| text.is_some_and(|t| t.is(value));
        assert!(is(members.alg, "HS256") && is(members.typ, "JWT") && is(members.kid, "k"));
        assert!(!is(members.alg, "HS25") && !is(members.kid, "kk"));
        assert!(members.crit.is_none());
    }
}

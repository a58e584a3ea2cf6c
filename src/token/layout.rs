//! Our own payload layout: the fixed-order claim writer and the reader fast path.
//!
//! [`write_claims`] writes the claims in one fixed order, byte for byte as serde_json
//! writes [`Claims`]. [`read`] reads exactly that layout with plain byte comparisons,
//! strings free of escapes and control characters, integers as JSON writes them, and
//! `amr` absent (tokens from before the claim existed), `["pwd"]` or `["pwd","otp"]`;
//! anything else is left to the strict reader in `json.rs`. Whatever this reader
//! accepts, the strict reader reads to the same values (property-tested below).

use std::ops::Range;

use super::Claims;
use super::amr::Amr;

/// Writes `claims` as JSON into `buf`, byte for byte as serde_json would; `None` when
/// the buffer is too small.
pub(super) fn write_claims(claims: &Claims<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut w = JsonWriter { buf, len: 0 };
    w.raw(br#"{"sub":""#)?;
    w.string_body(&claims.sub)?;
    w.raw(br#"","user_id":"#)?;
    w.uint(claims.user_id)?;
    w.raw(br#","name":""#)?;
    w.string_body(&claims.name)?;
    w.raw(br#"","role":""#)?;
    w.string_body(&claims.role)?;
    w.raw(br#"","iat":"#)?;
    w.int(claims.iat)?;
    w.raw(br#","exp":"#)?;
    w.int(claims.exp)?;
    w.raw(br#","iss":""#)?;
    w.string_body(&claims.iss)?;
    w.raw(br#"","auth_time":"#)?;
    w.int(claims.auth_time)?;
    w.raw(br#","ver":"#)?;
    w.uint(claims.ver)?;
    match claims.amr {
        Amr::PWD => w.raw(br#","amr":["pwd"]"#)?,
        Amr::PWD_OTP => w.raw(br#","amr":["pwd","otp"]"#)?,
        other => {
            w.raw(br#","amr":["#)?;
            for (i, value) in other.values().enumerate() {
                if i > 0 {
                    w.raw(b",")?;
                }
                w.raw(b"\"")?;
                w.raw(value.as_bytes())?;
                w.raw(b"\"")?;
            }
            w.raw(b"]")?;
        }
    }
    if let Some(jti) = &claims.jti {
        w.raw(br#","jti":""#)?;
        w.string_body(jti)?;
        w.raw(b"\"")?;
    }
    w.raw(b"}")?;
    Some(w.len)
}

/// The most bytes [`write_claims`] can need for `claims`: every string byte escaped as
/// `\u00XX`, every integer at its longest.
pub(super) fn max_json_len(claims: &Claims<'_>) -> usize {
    let jti = claims.jti.as_ref().map_or(0, |j| j.len());
    let strings = claims.sub.len() + claims.name.len() + claims.role.len() + claims.iss.len() + jti;
    let amr: usize = claims.amr.values().map(|v| v.len() + 3).sum();
    // The fixed text (names, quotes, colons, commas, brackets, braces) is 93 bytes, 9 more
    // with `jti`; six integers take at most 20 characters each.
    93 + 9 + 6 * strings + 6 * 20 + amr
}

/// Appends JSON pieces to a fixed buffer.
struct JsonWriter<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl JsonWriter<'_> {
    #[inline]
    fn raw(&mut self, bytes: &[u8]) -> Option<()> {
        let end = self.len.checked_add(bytes.len())?;
        self.buf.get_mut(self.len..end)?.copy_from_slice(bytes);
        self.len = end;
        Some(())
    }

    /// The inside of a JSON string (the quotes are the caller's), escaped as serde_json
    /// escapes (`\"`, `\\`, short forms, `\u00xx`).
    fn string_body(&mut self, text: &str) -> Option<()> {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut rest = text.as_bytes();
        // Copy runs of plain characters whole; escape the rest one by one.
        while let Some(at) = first_to_escape(rest) {
            self.raw(&rest[..at])?;
            let byte = rest[at];
            match byte {
                b'"' => self.raw(b"\\\"")?,
                b'\\' => self.raw(b"\\\\")?,
                b'\n' => self.raw(b"\\n")?,
                b'\r' => self.raw(b"\\r")?,
                b'\t' => self.raw(b"\\t")?,
                0x08 => self.raw(b"\\b")?,
                0x0c => self.raw(b"\\f")?,
                _ => self.raw(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(byte >> 4)],
                    HEX[usize::from(byte & 0xf)],
                ])?,
            }
            rest = &rest[at + 1..];
        }
        self.raw(rest)
    }

    /// Decimal digits: numbers of 9 digits or more (timestamps have 10) end in a block of
    /// 8 digits made at once ([`eight_ascii`]); what is left before it, and smaller
    /// numbers, are written right to left, two digits per division (the itoa crate's
    /// method, in place).
    fn uint(&mut self, value: u64) -> Option<()> {
        const BLOCK: u64 = 100_000_000;
        if value < BLOCK {
            return self.small_uint(value as u32);
        }
        let (high, low) = (value / BLOCK, (value % BLOCK) as u32);
        if (10..100).contains(&high) {
            // 10 digits, as every timestamp until 2286: written as one piece.
            let mut digits = [0u8; 10];
            digits[..2].copy_from_slice(&[b'0' + high as u8 / 10, b'0' + high as u8 % 10]);
            digits[2..].copy_from_slice(&eight_ascii(low).to_le_bytes());
            return self.raw(&digits);
        }
        self.uint(high)?;
        self.raw(&eight_ascii(low).to_le_bytes())
    }

    /// [`Self::uint`] below 10^8.
    fn small_uint(&mut self, mut value: u32) -> Option<()> {
        const PAIRS: [u8; 200] = {
            let mut pairs = [0u8; 200];
            let mut n = 0;
            while n < 100 {
                pairs[2 * n] = b'0' + (n / 10) as u8;
                pairs[2 * n + 1] = b'0' + (n % 10) as u8;
                n += 1;
            }
            pairs
        };
        let len = value.checked_ilog10().map_or(1, |log| log as usize + 1);
        let end = self.len.checked_add(len)?;
        let digits = self.buf.get_mut(self.len..end)?;
        let mut at = len;
        while at >= 2 {
            let pair = (value % 100) as usize * 2;
            value /= 100;
            digits[at - 2..at].copy_from_slice(&PAIRS[pair..pair + 2]);
            at -= 2;
        }
        if at == 1 {
            digits[0] = b'0' + value as u8;
        }
        self.len = end;
        Some(())
    }

    fn int(&mut self, value: i64) -> Option<()> {
        if value < 0 {
            self.raw(b"-")?;
        }
        self.uint(value.unsigned_abs())
    }
}

/// A payload in our layout: the integers read, the strings as ranges of the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Layout {
    pub sub: Range<usize>,
    pub user_id: u64,
    pub name: Range<usize>,
    pub role: Range<usize>,
    pub iat: i64,
    pub exp: i64,
    pub iss: Range<usize>,
    pub auth_time: i64,
    pub ver: u64,
    pub amr: Option<Amr>,
    pub jti: Option<Range<usize>>,
    /// Every byte is ASCII (so the payload is UTF-8 without checking it again).
    pub ascii: bool,
}

/// Reads a payload laid out exactly as [`write_claims`] writes it (or as it did before
/// `amr`), with strings free of escapes and control characters; `None` for anything
/// else. `sub` must be the canonical decimal `user_id` repeated, digit for digit.
#[inline(always)]
pub(super) fn read(json: &[u8]) -> Option<Layout> {
    let mut r = Reader {
        json,
        at: 0,
        high: 0,
    };
    r.lit(br#"{"sub":""#)?;
    let sub = r.at;
    let id = r.uint()?;
    let sub = sub..r.at;
    r.lit(br#"","user_id":"#)?;
    // The same digits again, and no more.
    r.lit(&json[sub.clone()])?;
    if json.get(r.at).is_none_or(u8::is_ascii_digit) {
        return None;
    }
    let user_id = id;
    r.lit(br#","name":""#)?;
    let name = r.string()?;
    r.lit(br#","role":""#)?;
    let role = r.string()?;
    r.lit(br#","iat":"#)?;
    let iat = r.int()?;
    r.lit(br#","exp":"#)?;
    let exp = r.int()?;
    r.lit(br#","iss":""#)?;
    let iss = r.string()?;
    r.lit(br#","auth_time":"#)?;
    let auth_time = r.int()?;
    r.lit(br#","ver":"#)?;
    let ver = r.uint()?;
    let amr = if r.lit(br#","amr":["pwd"]"#).is_some() {
        Some(Amr::PWD)
    } else if r.lit(br#","amr":["pwd","otp"]"#).is_some() {
        Some(Amr::PWD_OTP)
    } else {
        None
    };
    let jti = match r.lit(br#","jti":""#) {
        Some(()) => Some(r.string()?),
        None => None,
    };
    if &json[r.at..] != b"}" {
        return None;
    }
    Some(Layout {
        sub,
        user_id,
        name,
        role,
        iat,
        exp,
        iss,
        auth_time,
        ver,
        amr,
        jti,
        // The fixed text and the digits are ASCII; the strings were looked at whole.
        ascii: r.high & HIGH == 0,
    })
}

// Eight bytes at a time ("SWAR"): a payload is read as little-endian u64 words, and the
// bit tricks below find the first byte of a kind in a word with a handful of operations.

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The 8 bytes of `json` from `at` as a little-endian word; past the end, zero bytes
/// (neither digits nor string characters).
#[inline(always)]
fn word(json: &[u8], at: usize) -> u64 {
    let mut bytes = [0u8; 8];
    match json.get(at..at + 8) {
        Some(whole) => bytes.copy_from_slice(whole),
        None => {
            let rest = json.get(at..).unwrap_or_default();
            bytes[..rest.len()].copy_from_slice(rest);
        }
    }
    u64::from_le_bytes(bytes)
}

/// The 8 ASCII digits of `value` (below 10^8, leading zeros included) as a little-endian
/// word, the first digit in the lowest byte: split into halves of 4 digits, of 2, of 1,
/// each step on all parts at once inside the word (multiply and shift dividing by 100
/// and by 10 exactly in these ranges).
#[inline]
fn eight_ascii(value: u32) -> u64 {
    let (high, low) = (value / 10_000, value % 10_000);
    let x = u64::from(high) | u64::from(low) << 32;
    // x / 100 for x < 10^4 is (x * 5243) >> 19; the lanes do not reach each other.
    let hundreds = ((x * 5243) >> 19) & 0x0000_007f_0000_007f;
    let x = hundreds | (x - hundreds * 100) << 16;
    // x / 10 for x < 100 is (x * 103) >> 10.
    let tens = ((x * 103) >> 10) & 0x000f_000f_000f_000f;
    let x = tens | (x - tens * 10) << 8;
    x | (0x30 * ONES)
}

/// Bit 7 set in each byte of `w` that is not an ASCII digit.
#[inline]
fn non_digits(w: u64) -> u64 {
    let low = w & !HIGH;
    // 0x30 + 0x50 and 0x3a + 0x46 reach 0x80; no byte carries into the next.
    let below_zero = !(low + 0x50 * ONES);
    let above_nine = low + 0x46 * ONES;
    (below_zero | above_nine | w) & HIGH
}

/// The index of the first byte of `text` that JSON must escape (`"`, `\\` or a control
/// character), looked for a word at a time.
#[inline]
fn first_to_escape(text: &[u8]) -> Option<usize> {
    let mut words = text.chunks_exact(8);
    for (i, chunk) in (&mut words).enumerate() {
        let bytes: [u8; 8] = chunk.try_into().ok()?;
        match string_ends(u64::from_le_bytes(bytes)) {
            0 => {}
            marks => return Some(8 * i + (marks.trailing_zeros() / 8) as usize),
        }
    }
    let rest = words.remainder().len();
    if rest == 0 {
        return None;
    }
    if text.len() < 8 {
        return text
            .iter()
            .position(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    // The last 8 bytes, overlapping bytes already looked at: their marks are dropped.
    let bytes: [u8; 8] = text[text.len() - 8..].try_into().ok()?;
    let marks = string_ends(u64::from_le_bytes(bytes)) >> (8 * (8 - rest));
    (marks != 0).then(|| text.len() - rest + (marks.trailing_zeros() / 8) as usize)
}

/// Bit 7 set in the first byte of `w` that is `"`, `\\` or a control character (bytes
/// after it may be marked falsely; only the lowest mark counts).
#[inline]
fn string_ends(w: u64) -> u64 {
    let zero_at = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let below_space = w.wrapping_sub(0x20 * ONES) & !w & HIGH;
    zero_at(w ^ (u64::from(b'"') * ONES)) | zero_at(w ^ (u64::from(b'\\') * ONES)) | below_space
}

/// The value of the first `n` (0 to 7) bytes of `w`, ASCII digits: they are moved to
/// the top of the word and the bytes before them made '0'.
#[inline(always)]
fn leading_digits(w: u64, n: usize) -> u64 {
    let shift = 8 * (8 - n as u32);
    let moved = w.checked_shl(shift).unwrap_or(0);
    eight_digits(moved | (0x30 * ONES).checked_shr(8 * n as u32).unwrap_or(0))
}

/// 10 to the power of 0 to 7.
const POW10: [u64; 8] = [1, 10, 100, 1000, 10_000, 100_000, 1_000_000, 10_000_000];

/// The value of 8 ASCII digits in a little-endian word, combined pairwise inside the
/// word (three multiplies instead of eight dependent ones).
#[inline(always)]
fn eight_digits(w: u64) -> u64 {
    let v = w - 0x30 * ONES;
    let v = (v * 10 + (v >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = (v * 100 + (v >> 16)) & 0x0000_ffff_0000_ffff;
    (v * 10_000 + (v >> 32)) & 0xffff_ffff
}

/// Consumes the expected pieces of [`read`].
struct Reader<'a> {
    json: &'a [u8],
    at: usize,
    /// The words strings were read in, or-ed together: bit 7 of a byte set when some
    /// string byte was not ASCII.
    high: u64,
}

impl Reader<'_> {
    #[inline(always)]
    fn lit(&mut self, piece: &[u8]) -> Option<()> {
        let end = self.at + piece.len();
        (self.json.get(self.at..end)? == piece).then(|| self.at = end)
    }

    /// The body of a string without escapes or control characters, up to and past its
    /// closing quote.
    #[inline(always)]
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.at;
        let mut at = start;
        let end = loop {
            let w = word(self.json, at);
            self.high |= w;
            match string_ends(w) {
                0 => at += 8,
                marks => break at + (marks.trailing_zeros() / 8) as usize,
            }
        };
        (self.json.get(end) == Some(&b'"')).then(|| {
            self.at = end + 1;
            start..end
        })
    }

    /// Digits as JSON writes them (no leading zero) that fit a u64. The first 16 are
    /// read as two words; longer numbers (over 10^16: ids and versions only, if ever)
    /// digit by digit.
    #[inline(always)]
    fn uint(&mut self) -> Option<u64> {
        let first = word(self.json, self.at);
        let (value, n) = match non_digits(first) {
            0 => {
                let second = word(self.json, self.at + 8);
                match non_digits(second) {
                    0 => return self.long_uint(),
                    marks => {
                        let n = (marks.trailing_zeros() / 8) as usize;
                        let low = leading_digits(second, n);
                        (eight_digits(first) * POW10[n] + low, 8 + n)
                    }
                }
            }
            marks => {
                let n = (marks.trailing_zeros() / 8) as usize;
                (leading_digits(first, n), n)
            }
        };
        // No digits, or a leading zero.
        if n == 0 || (n > 1 && self.json[self.at] == b'0') {
            return None;
        }
        self.at += n;
        Some(value)
    }

    /// [`Self::uint`] for 16 digits or more, with overflow checks.
    #[cold]
    fn long_uint(&mut self) -> Option<u64> {
        let digits = self.json.get(self.at..)?;
        let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits[0] == b'0' {
            return None;
        }
        let value = digits[..n].iter().try_fold(0u64, |value, &d| {
            value.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })?;
        self.at += n;
        Some(value)
    }

    /// An i64; `-0` is left to the strict reader, which refuses it as serde_json does.
    #[inline(always)]
    fn int(&mut self) -> Option<i64> {
        if self.json.get(self.at) != Some(&b'-') {
            return i64::try_from(self.uint()?).ok();
        }
        self.at += 1;
        match self.uint()? {
            0 => None,
            magnitude => 0i64.checked_sub_unsigned(magnitude),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::json::{self, PayloadMembers};
    use super::super::{Claims, Part, TokenError};
    use super::*;

    fn sample() -> Claims<'static> {
        Claims {
            sub: "7".into(),
            user_id: 7,
            name: "ann".into(),
            role: "admin".into(),
            iat: -5,
            exp: 1_800_000_000,
            iss: "latchkey".into(),
            auth_time: i64::MIN,
            ver: u64::MAX,
            amr: Amr::PWD_OTP,
            jti: None,
        }
    }

    fn layout_json(c: &Claims<'_>) -> String {
        let mut buf = vec![0u8; max_json_len(c)];
        let len = write_claims(c, &mut buf).expect("the bound holds");
        String::from_utf8(buf[..len].to_vec()).expect("UTF-8")
    }

    /// The strict reader's view of `json`, in the fast path's terms.
    fn strict(json: &str) -> Result<Option<Layout>, TokenError> {
        let mut m = PayloadMembers::default();
        json::read_object(json, Part::Payload, &mut m)?;
        let mut buf = json.as_bytes().to_vec();
        let [sub, name, role, iss] = json::unescape_strs(&mut buf, [m.sub, m.name, m.role, m.iss]);
        // Where the fast path would find each string: the strings have no escapes, so
        // each is found by its text (the fast path's order makes the first match right).
        let range = |s: Option<&str>, key: &str| {
            let s = s?;
            let at = json.find(&format!("\"{key}\":\"{s}\""))? + key.len() + 4;
            Some(at..at + s.len())
        };
        Ok(Some(Layout {
            sub: match range(sub, "sub") {
                Some(r) => r,
                None => return Ok(None),
            },
            user_id: m.user_id.unwrap_or(u64::MAX),
            name: range(name, "name").unwrap_or(0..0),
            role: range(role, "role").unwrap_or(0..0),
            iat: m.iat.unwrap_or(0),
            exp: m.exp.unwrap_or(0),
            iss: range(iss, "iss").unwrap_or(0..0),
            auth_time: m.auth_time.unwrap_or(0),
            ver: m.ver.unwrap_or(0),
            amr: m.amr.transpose()?,
            ascii: json.is_ascii(),
            jti: None,
        }))
    }

    #[test]
    fn layout_edge_cases_agree_with_the_strict_reader() {
        let base = layout_json(&sample());
        assert_eq!(base, serde_json::to_string(&sample()).expect("json"));
        assert!(read(base.as_bytes()).is_some());
        let variants = [
            base.replace(r#""iat":-5"#, r#""iat":-0"#),
            base.replace(r#""iat":-5"#, r#""iat":05"#),
            base.replace(r#""iat":-5"#, r#""iat":-9223372036854775809"#),
            base.replace(r#""iat":-5"#, r#""iat":9223372036854775808"#),
            base.replace(
                r#""ver":18446744073709551615"#,
                r#""ver":18446744073709551616"#,
            ),
            base.replace(r#""ver":18446744073709551615"#, r#""ver":-1"#),
            base.replace(r#""name":"ann""#, r#""name":"a\nn""#),
            base.replace(r#""name":"ann""#, "\"name\":\"a\u{1}n\""),
            base.replace(r#""name":"ann""#, r#""name":"a\"""#),
            base.replace(r#""iat":-5"#, r#""iat":-5.0"#),
            base.replace(r#""iat":-5"#, r#""iat":"-5""#),
            base.replace(r#""sub":"7""#, r#""sub":"07""#),
            base.replace(r#""user_id":7"#, r#""user_id":70"#),
            base.replace(r#","amr":["pwd","otp"]"#, ""),
            base.replace(r#","amr":["pwd","otp"]"#, r#","amr":["pwd"]"#),
            base.replace(r#","amr":["pwd","otp"]"#, r#","amr":["otp","pwd"]"#),
            base.replace(r#","amr":["pwd","otp"]"#, r#","amr":[]"#),
            format!("{base} "),
            format!(" {base}"),
            base.replace(r#"]}"#, r#"],"ver":1}"#),
        ];
        for json in &variants {
            if let Some(fast) = read(json.as_bytes()) {
                assert_eq!(Ok(Some(fast)), strict(json), "{json}");
            }
        }
        // The fast path leaves these to the strict reader, which refuses or reads them.
        assert!(read(variants[0].as_bytes()).is_none(), "-0");
        assert!(strict(&variants[0]).is_err());
        assert!(read(variants[6].as_bytes()).is_none(), "an escape");
        assert!(strict(&variants[6]).is_ok());
        assert!(read(variants[11].as_bytes()).is_none(), "sub not canonical");
        assert!(
            read(variants[12].as_bytes()).is_none(),
            "sub and user_id differ"
        );
        assert_eq!(read(variants[13].as_bytes()).map(|l| l.amr), Some(None));
        assert_eq!(
            read(variants[14].as_bytes()).map(|l| l.amr),
            Some(Some(Amr::PWD))
        );
        assert!(read(variants[15].as_bytes()).is_none(), "another order");
    }

    proptest::proptest! {
        #[test]
        fn layout_writer_matches_serde_json(
            user_id: u64, name in "\\PC*|[\\x00-\\x7f]*", role: String, iss: String,
            iat: i64, exp: i64, auth_time: i64, ver: u64, otp: bool,
        ) {
            let c = Claims {
                sub: user_id.to_string().into(), user_id, name: name.into(), role: role.into(),
                iat, exp, iss: iss.into(), auth_time, ver,
                amr: if otp { Amr::PWD_OTP } else { Amr::PWD },
                jti: None,
            };
            let json = layout_json(&c);
            proptest::prop_assert_eq!(&json, &serde_json::to_string(&c).expect("json"));
            proptest::prop_assert!(json.len() <= max_json_len(&c));
            let general = strict(&json);
            proptest::prop_assert!(general.is_ok());
            if let Some(fast) = read(json.as_bytes()) {
                proptest::prop_assert_eq!(Ok(Some(fast)), general);
            }
        }

        #[test]
        fn layout_reader_agrees_with_the_strict_reader_on_edits(
            at in 0usize..200, len in 0usize..4, insert in "[-0-9\"\\\\a-z:,{} .eE+\\[\\]]{0,3}",
        ) {
            let base = layout_json(&sample());
            let at = at % base.len();
            let end = (at + len).min(base.len());
            let mut json = base.clone();
            json.replace_range(at..end, &insert);
            if let Some(fast) = read(json.as_bytes()) {
                proptest::prop_assert_eq!(Ok(Some(fast)), strict(&json));
            }
        }

        #[test]
        fn layout_integers_read_like_str_parse(value: u64, digits in 1usize..21) {
            let text = value.to_string();
            let text = &text[text.len().saturating_sub(digits)..];
            let text = text.trim_start_matches('0');
            let text = if text.is_empty() { "0" } else { text };
            let json = format!("{PAD}{text},");
            let mut reader = Reader { json: json.as_bytes(), at: PAD.len(), high: 0 };
            proptest::prop_assert_eq!(reader.uint(), text.parse::<u64>().ok());
            proptest::prop_assert_eq!(reader.at, json.len() - 1);
        }
    }

    #[test]
    fn layout_integers_at_the_edges() {
        for text in [
            "0",
            "9",
            "10",
            "99999999",
            "100000000",
            "1795706622",
            "9999999999999999999",
            "18446744073709551615",
            "18446744073709551616",
            "99999999999999999999",
            "123456789012345678901",
        ] {
            for tail in ["", ",", "}", "\"xxxxxxxx"] {
                let json = format!("{PAD}{text}{tail}");
                let mut reader = Reader {
                    json: json.as_bytes(),
                    at: PAD.len(),
                    high: 0,
                };
                assert_eq!(reader.uint(), text.parse::<u64>().ok(), "{text}{tail}");
            }
        }
    }

    /// What precedes a number in our layout, at least: 8 bytes (`{"sub":"`).
    const PAD: &str = r#"{"sub":""#;

    #[test]
    fn word_marks_find_the_first_byte_of_their_kind() {
        let first = |marks: u64| (marks != 0).then(|| marks.trailing_zeros() as usize / 8);
        for byte in 0..=255u8 {
            for at in 0..8 {
                let mut digits = *b"01234567";
                digits[at] = byte;
                let not_digit = !byte.is_ascii_digit();
                let w = u64::from_le_bytes(digits);
                assert_eq!(first(non_digits(w)), not_digit.then_some(at), "{byte:#x}");
                let mut text = *b"abcdefgh";
                text[at] = byte;
                let ends = byte == b'"' || byte == b'\\' || byte < 0x20;
                let w = u64::from_le_bytes(text);
                assert_eq!(first(string_ends(w)), ends.then_some(at), "{byte:#x}");
            }
        }
        // Several marks: the first counts, whatever follows it.
        let w = u64::from_le_bytes(*b"ab\x01\"\\\x00\xffz");
        assert_eq!(first(string_ends(w)), Some(2));
        assert_eq!(first(non_digits(u64::from_le_bytes(*b"0123456a"))), Some(7));
        assert_eq!(first(non_digits(u64::from_le_bytes(*b"98765432"))), None);
    }

    proptest::proptest! {
        #[test]
        fn the_first_byte_to_escape_is_found(text in "[a-z\"\\\\\\x00-\\x1f\\x7f-\\u{3000}]{0,40}") {
            let want = text.bytes().position(|b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(first_to_escape(text.as_bytes()), want);
            let padded = format!("{text}{}", "a".repeat(text.len() % 9));
            let want = padded.bytes().position(|b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(first_to_escape(padded.as_bytes()), want);
        }
    }

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        let mut values = vec![0, 1, 9, 10, 99, 100, 99_999_999, 100_000_000, 999_999_999];
        values.extend([1_000_000_000, 1_800_000_000, 9_999_999_999, 10_000_000_000]);
        values.extend([i64::MAX, i64::MIN, u32::MAX as i64 + 1]);
        for value in values
            .clone()
            .into_iter()
            .chain(values.iter().map(|v| -v.saturating_abs()))
        {
            let c = Claims {
                iat: value,
                exp: value,
                auth_time: value,
                ..sample()
            };
            assert_eq!(
                layout_json(&c),
                serde_json::to_string(&c).expect("json"),
                "{value}"
            );
        }
    }

    #[test]
    fn eight_ascii_digits() {
        for value in (0..100_000_000u32)
            .step_by(9_973)
            .chain([0, 1, 99_999_999, 10_000_000])
        {
            let text = format!("{value:08}");
            assert_eq!(&eight_ascii(value).to_le_bytes(), text.as_bytes());
        }
    }

    #[test]
    fn strings_end_at_the_first_quote() {
        for (json, expected) in [
            (r#""#, None),
            (r#"abc"x"#, Some(0..3)),
            (r#"abcdefghijklmnop"x"#, Some(0..16)),
            (r#"abcdefghijklmno""#, Some(0..15)),
            (r#"abcdefgh\""#, None),
            ("abcdefghi\u{1}\"", None),
            ("é张三\"", Some(0..8)),
            (r#"abc"#, None),
        ] {
            let mut reader = Reader {
                json: json.as_bytes(),
                at: 0,
                high: 0,
            };
            assert_eq!(reader.string(), expected, "{json}");
            assert_eq!(reader.high & HIGH != 0, !json.is_ascii(), "{json}");
        }
    }

    #[test]
    fn the_length_bound_holds_for_the_worst_strings() {
        let worst = "\u{1}".repeat(40);
        let c = Claims {
            sub: worst.clone().into(),
            name: worst.clone().into(),
            role: worst.clone().into(),
            iss: worst.into(),
            iat: i64::MIN,
            exp: i64::MIN,
            auth_time: i64::MIN,
            user_id: u64::MAX,
            ver: u64::MAX,
            amr: Amr::PWD_OTP,
            jti: None,
        };
        let json = layout_json(&c);
        assert!(json.len() <= max_json_len(&c));
        assert_eq!(json, serde_json::to_string(&c).expect("json"));
    }
}

//! The second factor: time-based one-time passwords (RFC 6238 TOTP on RFC 4226 HOTP,
//! HMAC-SHA-1, 6 digits, 30-second steps), the `otpauth://` key URI authenticator apps
//! read, its QR code as inline SVG, and single-use recovery codes.
//!
//! Pure functions on plain values: the caller supplies the time, the secret and the last
//! step a code was accepted for (replay refusal); the store keeps them. No I/O but the
//! system random source for new secrets and recovery codes.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// Digits of a code (RFC 6238 §5.3 recommends 6 for usability).
pub const DIGITS: u32 = 6;
/// Seconds per time step `X` (RFC 6238 §4.1; 30 s is the default and what apps assume).
pub const PERIOD: i64 = 30;
/// Bytes of a new secret: 160 bits, the HMAC-SHA-1 block output length RFC 4226 §4 asks for.
pub const SECRET_LEN: usize = 20;
/// Time steps accepted on either side of now, for clock drift (RFC 6238 §5.2).
pub const WINDOW: u64 = 1;
/// How many recovery codes an enrolment makes.
pub const RECOVERY_CODES: usize = 10;

/// Why a code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeError {
    /// Not six digits (spaces are allowed between them).
    NotACode,
    /// Six digits, but not the code of any step within the window.
    Wrong,
    /// The code of a step that was already used (or older): a replay.
    Replayed,
}

impl fmt::Display for CodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CodeError::NotACode => "a code is the 6 digits your authenticator app shows",
            CodeError::Wrong => "the code is wrong or too old; enter the one your app shows now",
            CodeError::Replayed => {
                "that code was used already; wait for the next one your app shows"
            }
        })
    }
}

impl std::error::Error for CodeError {}

/// HOTP (RFC 4226 §5.3): HMAC-SHA-1 of the 8-byte big-endian `counter` under `key`,
/// dynamically truncated to 31 bits, modulo 10^`digits` (`digits` at most 9).
pub fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[19] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    binary % 10u32.pow(digits.min(9))
}

/// The time step of Unix second `unix`: floor((unix − T0) / X) with T0 = 0 (RFC 6238 §4.2);
/// 0 before 1970.
pub fn step(unix: i64) -> u64 {
    u64::try_from(unix.div_euclid(PERIOD)).unwrap_or(0)
}

/// The TOTP code of Unix second `unix` (RFC 6238 §4.2), [`DIGITS`] digits.
pub fn code_at(secret: &[u8], unix: i64) -> u32 {
    hotp(secret, step(unix), DIGITS)
}

/// Checks `code` against `secret` at `now`: accepted when it is the code of a step within
/// [`WINDOW`] of now that is later than `last_step` (the step of the last accepted code,
/// so no code works twice). Returns the step to record as the new `last_step`.
pub fn verify(secret: &[u8], code: &str, now: i64, last_step: u64) -> Result<u64, CodeError> {
    let digits: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    if digits.len() != DIGITS as usize || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CodeError::NotACode);
    }
    let wanted: u32 = digits.parse().map_err(|_| CodeError::NotACode)?;
    let current = step(now);
    let mut replayed = false;
    for candidate in current.saturating_sub(WINDOW)..=current.saturating_add(WINDOW) {
        // Every candidate is computed, so the time taken does not say which one matched.
        if constant_time_eq_u32(hotp(secret, candidate, DIGITS), wanted) {
            if candidate > last_step {
                return Ok(candidate);
            }
            replayed = true;
        }
    }
    Err(if replayed {
        CodeError::Replayed
    } else {
        CodeError::Wrong
    })
}

fn constant_time_eq_u32(a: u32, b: u32) -> bool {
    (a ^ b) == 0
}

/// A new random secret of [`SECRET_LEN`] bytes from the system's random source.
pub fn new_secret() -> Result<Vec<u8>, getrandom::Error> {
    let mut secret = vec![0u8; SECRET_LEN];
    getrandom::fill(&mut secret)?;
    Ok(secret)
}

/// The secret as RFC 4648 base32 without padding, as authenticator apps take it typed in.
pub fn base32(secret: &[u8]) -> String {
    data_encoding::BASE32_NOPAD.encode(secret)
}

/// The secret as base32 in groups of four, for reading off a screen.
pub fn base32_grouped(secret: &[u8]) -> String {
    let plain = base32(secret);
    let groups: Vec<&str> = plain
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap_or(""))
        .collect();
    groups.join(" ")
}

/// The key URI authenticator apps read (Google Authenticator's key URI format):
/// `otpauth://totp/ISSUER:ACCOUNT?secret=BASE32&issuer=ISSUER&algorithm=SHA1&digits=6&period=30`,
/// label and issuer percent-encoded.
pub fn key_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let issuer = uri_escape(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={PERIOD}",
        uri_escape(account),
        base32(secret)
    )
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn uri_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `text` as a QR code, an inline `<svg>` element (no XML declaration) that scales to
/// its container, dark modules on a white ground with the quiet zone.
pub fn qr_svg(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::M)?;
    let svg = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    let start = svg.find("<svg").unwrap_or(0);
    Ok(svg[start..].replacen(
        "<svg ",
        "<svg role=\"img\" aria-label=\"QR code of the key\" class=\"qr\" ",
        1,
    ))
}

/// New recovery codes to show once, and the hashes to store: [`RECOVERY_CODES`] codes of
/// 16 Crockford base32 characters (80 bits each), written `XXXX-XXXX-XXXX-XXXX`.
pub fn new_recovery_codes() -> Result<(Vec<String>, Vec<[u8; 32]>), getrandom::Error> {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut codes = Vec::with_capacity(RECOVERY_CODES);
    let mut hashes = Vec::with_capacity(RECOVERY_CODES);
    for _ in 0..RECOVERY_CODES {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)?;
        let mut code = String::with_capacity(19);
        for (i, b) in bytes.iter().enumerate() {
            if i > 0 && i % 4 == 0 {
                code.push('-');
            }
            code.push(ALPHABET[usize::from(b & 31)] as char);
        }
        hashes.push(recovery_hash(&code));
        codes.push(code);
    }
    Ok((codes, hashes))
}

/// The stored form of a recovery code: SHA-256 of its 16 characters, upper case, without
/// dashes or spaces, Crockford's look-alikes read as the digits they stand for. A fast
/// hash suffices: the codes carry 80 random bits each.
pub fn recovery_hash(code: &str) -> [u8; 32] {
    let normal: Vec<u8> = code
        .bytes()
        .filter(|b| !matches!(b, b'-' | b' ' | b'\t'))
        .map(|b| match b.to_ascii_uppercase() {
            b'O' => b'0',
            b'I' | b'L' => b'1',
            other => other,
        })
        .collect();
    Sha256::digest(&normal).into()
}

/// Whether `code` looks like a recovery code (16 code characters, dashes or spaces
/// allowed) rather than a six-digit TOTP code.
pub fn is_recovery_code(code: &str) -> bool {
    let chars = code
        .bytes()
        .filter(|b| !matches!(b, b'-' | b' ' | b'\t'))
        .count();
    chars == 16
}

/// Finds `code` among `hashes` (constant time per entry); the index of the one to remove.
pub fn match_recovery(hashes: &[[u8; 32]], code: &str) -> Option<usize> {
    let wanted = recovery_hash(code);
    let mut found = None;
    for (i, h) in hashes.iter().enumerate() {
        let same = h.iter().zip(&wanted).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same && found.is_none() {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_KEY: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc4226_appendix_d_vectors() {
        let expected = [
            755224, 287082, 359152, 969429, 338314, 254676, 287922, 162583, 399871, 520489,
        ];
        for (counter, want) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6), *want, "counter {counter}");
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        for (time, want) in [
            (59, 94287082),
            (1111111109, 7081804),
            (1111111111, 14050471),
            (1234567890, 89005924),
            (2000000000, 69279037),
            (20000000000, 65353130),
        ] {
            assert_eq!(hotp(RFC_KEY, step(time), 8), want, "T = {time}");
            assert_eq!(
                code_at(RFC_KEY, time),
                want % 1_000_000,
                "6 digits at {time}"
            );
        }
    }

    #[test]
    fn codes_are_accepted_one_step_either_side_and_never_twice() {
        let now = 1_800_000_015;
        let code = |t: i64| format!("{:06}", code_at(RFC_KEY, t));
        let here = step(now);
        assert_eq!(verify(RFC_KEY, &code(now), now, 0), Ok(here));
        assert_eq!(verify(RFC_KEY, &code(now - 30), now, 0), Ok(here - 1));
        assert_eq!(verify(RFC_KEY, &code(now + 30), now, 0), Ok(here + 1));
        assert_eq!(
            verify(RFC_KEY, &code(now - 60), now, 0),
            Err(CodeError::Wrong)
        );
        assert_eq!(
            verify(RFC_KEY, &code(now + 60), now, 0),
            Err(CodeError::Wrong)
        );
        // Replay: the step was used, so its code (and any older one) is refused.
        assert_eq!(
            verify(RFC_KEY, &code(now), now, here),
            Err(CodeError::Replayed)
        );
        assert_eq!(
            verify(RFC_KEY, &code(now - 30), now, here),
            Err(CodeError::Replayed)
        );
        assert_eq!(verify(RFC_KEY, &code(now + 30), now, here), Ok(here + 1));
        let spaced = format!("{} {}", &code(now)[..3], &code(now)[3..]);
        assert_eq!(verify(RFC_KEY, &spaced, now, 0), Ok(here));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６"] {
            assert_eq!(
                verify(RFC_KEY, bad, now, 0),
                Err(CodeError::NotACode),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn the_key_uri_and_its_qr_code() {
        let uri = key_uri("latchkey", "alice@example.com", RFC_KEY);
        assert_eq!(
            uri,
            "otpauth://totp/latchkey:alice%40example.com?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=latchkey&algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(
            key_uri("Acme Auth", "bob", RFC_KEY).split('?').next(),
            Some("otpauth://totp/Acme%20Auth:bob")
        );
        let svg = qr_svg(&uri).expect("fits a QR code");
        assert!(svg.starts_with("<svg role=\"img\""), "{}", &svg[..60]);
        assert!(svg.ends_with("</svg>") && !svg.contains("<?xml") && !svg.contains("<script"));
        assert_eq!(
            base32_grouped(RFC_KEY),
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
        );
    }

    #[test]
    fn recovery_codes_work_once_and_forgive_case_and_look_alikes() {
        let (codes, hashes) = new_recovery_codes().expect("random");
        assert_eq!(
            (codes.len(), hashes.len()),
            (RECOVERY_CODES, RECOVERY_CODES)
        );
        for (i, code) in codes.iter().enumerate() {
            assert_eq!(code.len(), 19, "{code}");
            assert!(is_recovery_code(code));
            assert_eq!(match_recovery(&hashes, code), Some(i));
            assert_eq!(
                match_recovery(&hashes, &code.to_lowercase().replace('-', " ")),
                Some(i)
            );
        }
        assert_eq!(
            recovery_hash("O1IL-0000-0000-0000"),
            recovery_hash("0111000000000000")
        );
        assert_eq!(match_recovery(&hashes, "0000-0000-0000-0000"), None);
        assert!(!is_recovery_code("123456"));
        let distinct: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(distinct.len(), RECOVERY_CODES);
    }

    #[test]
    fn new_secrets_are_160_bits_and_differ() {
        let a = new_secret().expect("random");
        let b = new_secret().expect("random");
        assert_eq!(a.len(), SECRET_LEN);
        assert_ne!(a, b);
        assert_eq!(base32(&a).len(), 32);
    }
}

//! The adversarial suite: hostile or broken tokens, each with the exact class it must get.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::token::{KEY, NOW, claims, key, sign, verifier, verify};
use hmac::{Hmac, KeyInit, Mac};
use latchkey::token::{Amr, Claims, ErrorClass, MAX_TOKEN_LEN, Part, TokenError};
use sha2::Sha256;

const OTHER_KEY: &[u8] = b"a-key-this-verifier-does-not-hold-0123456";

fn kid(secret: &[u8]) -> String {
    key(secret).kid().to_owned()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token over any header and payload bytes, with a correct HS256 signature by `key`.
fn forge(header: &[u8], payload: &[u8], key: &[u8]) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

/// Our usual header naming `KEY`.
fn header() -> String {
    format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, kid(KEY))
}

/// The usual claims as (name, raw JSON value), in our signing order.
fn members() -> Vec<(&'static str, String)> {
    vec![
        ("sub", r#""42""#.into()),
        ("user_id", "42".into()),
        ("name", r#""ann""#.into()),
        ("role", r#""admin""#.into()),
        ("iat", (NOW - 60).to_string()),
        ("exp", (NOW + 3600).to_string()),
        ("iss", r#""latchkey""#.into()),
        ("auth_time", (NOW - 600).to_string()),
        ("ver", "0".into()),
        ("jti", r#""fixtureLoginId00000042""#.into()),
    ]
}

/// The usual payload with members replaced (`Some`), added, or removed (`None`).
fn payload(edits: &[(&'static str, Option<&str>)]) -> String {
    let mut list = members();
    for (name, value) in edits {
        let at = list.iter().position(|(n, _)| n == name);
        match (at, value) {
            (Some(i), Some(v)) => list[i].1 = (*v).to_owned(),
            (None, Some(v)) => list.push((name, (*v).to_owned())),
            (Some(i), None) => {
                list.remove(i);
            }
            (None, None) => {}
        }
    }
    let body: Vec<String> = list.iter().map(|(n, v)| format!("\"{n}\":{v}")).collect();
    format!("{{{}}}", body.join(","))
}

/// A correctly signed token with the usual header and an edited payload.
fn signed(edits: &[(&'static str, Option<&str>)]) -> String {
    forge(header().as_bytes(), payload(edits).as_bytes(), KEY)
}

/// A correctly signed token with the usual payload under another header.
fn with_header(header: &str) -> String {
    forge(header.as_bytes(), payload(&[]).as_bytes(), KEY)
}

fn good() -> String {
    signed(&[])
}

/// A token of exactly `len` bytes, signed correctly, grown through the `name` claim
/// (under the usual header or the kid-less one, since base64 skips one length in four).
fn token_of_len(len: usize) -> String {
    for head in [header(), r#"{"alg":"HS256","typ":"JWT"}"#.to_owned()] {
        for name_len in 0..len {
            let name = format!("\"{}\"", "n".repeat(name_len));
            let token = forge(
                head.as_bytes(),
                payload(&[("name", Some(&name))]).as_bytes(),
                KEY,
            );
            if token.len() == len {
                return token;
            }
            if token.len() > len {
                break;
            }
        }
    }
    unreachable!("no token of {len} bytes")
}

/// `segment` with its last character's unused low bits set: same bytes to a lax decoder.
fn set_trailing_bits(segment: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_ne!(segment.len() % 4, 0, "a full last quad has no unused bits");
    let last = segment.as_bytes()[segment.len() - 1];
    let index = ALPHABET.iter().position(|&c| c == last).expect("base64url");
    let changed = ALPHABET[index | 1] as char;
    format!("{}{changed}", &segment[..segment.len() - 1])
}

fn replace_char(token: &str, at: usize, with: char) -> String {
    let mut out = token.to_owned();
    out.replace_range(at..at + 1, &with.to_string());
    out
}

#[test]
fn the_baseline_and_tolerated_variants_verify() {
    let v = verifier();
    let baseline = verify(&v, &good()).expect("baseline");
    assert_eq!(baseline, claims(), "no amr reads as pwd");
    // The signer's own output, and tokens that differ in harmless ways.
    assert_eq!(verify(&v, &sign(&baseline)), Ok(claims()));
    let ok = [
        ("no typ", with_header(r#"{"alg":"HS256"}"#)),
        (
            "spaced header",
            with_header(r#" { "alg" : "HS256" , "typ" : "JWT" } "#),
        ),
        (
            "escaped alg",
            with_header(r#"{"alg":"HS\u0032\u00356","typ":"JWT"}"#),
        ),
        (
            "unknown header member",
            with_header(r#"{"alg":"HS256","x5u":"ignored"}"#),
        ),
        (
            "extra claims",
            signed(&[("scope", Some(r#"["a",{"b":null}]"#))]),
        ),
        (
            "nbf within leeway",
            signed(&[("nbf", Some(&(NOW + 30).to_string()))]),
        ),
        (
            "iat within leeway",
            signed(&[("iat", Some(&(NOW + 30).to_string()))]),
        ),
        (
            "exp within leeway",
            signed(&[("exp", Some(&(NOW - 29).to_string()))]),
        ),
        (
            "auth_time within leeway",
            signed(&[("auth_time", Some(&(NOW + 30).to_string()))]),
        ),
        ("only user_id", signed(&[("sub", None)])),
        ("only sub", signed(&[("user_id", None)])),
        ("exactly 4096 bytes", token_of_len(MAX_TOKEN_LEN)),
    ];
    for (name, token) in ok {
        assert!(
            verify(&v, &token).is_ok(),
            "{name}: {:?}",
            verify(&v, &token)
        );
    }
}

#[test]
fn amr_reads_as_a_set_of_registered_methods() {
    let v = verifier();
    // A `jti` with escapes takes the strict path and reads the same.
    let escaped = verify(
        &v,
        &signed(&[("jti", Some(r#""fixture\u004coginId00000042""#))]),
    )
    .expect("escaped jti");
    assert_eq!(escaped.jti.as_deref(), Some("fixtureLoginId00000042"));
    let amr = |value: &str| verify(&v, &signed(&[("amr", Some(value))])).map(|c| c.amr);
    let hwk = Amr::from_value("hwk").expect("registered");
    assert_eq!(amr(r#"["pwd"]"#), Ok(Amr::PWD));
    assert_eq!(amr(r#"["pwd","otp"]"#), Ok(Amr::PWD_OTP));
    assert_eq!(amr(r#"["otp","pwd"]"#), Ok(Amr::PWD_OTP), "any order");
    assert_eq!(amr(r#"[ "pwd" ]"#), Ok(Amr::PWD), "escapes decoded");
    assert_eq!(amr(r#"["hwk","pwd"]"#), Ok(hwk.union(Amr::PWD)));
    assert!(amr(r#"["pwd","otp"]"#).is_ok_and(Amr::has_otp));
    // Our own signer's layout, with and without the second factor.
    for set in [Amr::PWD, Amr::PWD_OTP] {
        let signed = Claims {
            amr: set,
            ..claims()
        };
        assert_eq!(verify(&v, &sign(&signed)), Ok(signed));
    }
}

#[test]
fn hostile_tokens_get_their_exact_class() {
    use ErrorClass::{Expired, Invalid, Malformed};
    use TokenError as E;
    let good = good();
    let (head, rest) = good.split_once('.').expect("dot");
    let (body, sig) = rest.split_once('.').expect("dot");
    let std_payload = payload(&[]);
    #[rustfmt::skip]
    let cases: Vec<(&str, String, ErrorClass, TokenError)> = vec![
        // Algorithm and header attacks.
        ("alg none, empty signature", format!("{}.{body}.", b64(br#"{"alg":"none","typ":"JWT"}"#)), Malformed, E::EmptySegment { part: Part::Signature }),
        ("alg none, signed", with_header(r#"{"alg":"none","typ":"JWT"}"#), Invalid, E::Algorithm),
        ("alg HS512", with_header(r#"{"alg":"HS512","typ":"JWT"}"#), Invalid, E::Algorithm),
        ("alg hs256 (case)", with_header(r#"{"alg":"hs256","typ":"JWT"}"#), Invalid, E::Algorithm),
        ("alg RS256 (confusion)", with_header(r#"{"alg":"RS256","typ":"JWT"}"#), Invalid, E::Algorithm),
        ("alg missing", with_header(r#"{"typ":"JWT"}"#), Invalid, E::Algorithm),
        ("alg not a string", with_header(r#"{"alg":256,"typ":"JWT"}"#), Invalid, E::WrongType { part: Part::Header, name: "alg" }),
        ("alg twice", with_header(r#"{"alg":"HS256","alg":"none"}"#), Invalid, E::Duplicate { part: Part::Header }),
        ("crit present", with_header(r#"{"alg":"HS256","crit":["exp"],"exp":1}"#), Invalid, E::Critical),
        ("typ JWS", with_header(r#"{"alg":"HS256","typ":"JWS"}"#), Invalid, E::Type),
        ("typ jwt (case)", with_header(r#"{"alg":"HS256","typ":"jwt"}"#), Invalid, E::Type),
        ("unknown kid", with_header(r#"{"alg":"HS256","typ":"JWT","kid":"AAAAAAAA"}"#), Invalid, E::UnknownKey),
        ("kid not a string", with_header(r#"{"alg":"HS256","kid":7}"#), Invalid, E::WrongType { part: Part::Header, name: "kid" }),
        ("header JSON array", with_header(r#"["alg","HS256"]"#), Malformed, E::Json { part: Part::Header }),
        ("header not JSON", with_header("alg=HS256"), Malformed, E::Json { part: Part::Header }),
        ("header invalid UTF-8", forge(b"{\"alg\":\"HS256\",\"x\":\"\xff\"}", std_payload.as_bytes(), KEY), Malformed, E::Utf8 { part: Part::Header }),
        ("header trailing bits", format!("{}.{body}.{sig}", set_trailing_bits(head)), Malformed, E::Base64 { part: Part::Header }),
        // Signatures.
        ("wrong key", forge(header().as_bytes(), std_payload.as_bytes(), OTHER_KEY), Invalid, E::Signature),
        ("wrong key, no kid", forge(br#"{"alg":"HS256","typ":"JWT"}"#, std_payload.as_bytes(), OTHER_KEY), Invalid, E::Signature),
        ("kid of a key not loaded", forge(format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#, kid(OTHER_KEY) ) .as_bytes(), std_payload.as_bytes(), OTHER_KEY), Invalid, E::UnknownKey),
        ("signature cut to 30 bytes", format!("{head}.{body}.{}", &sig[..40]), Invalid, E::Signature),
        ("signature grown to 35 bytes", format!("{good}AAAA"), Invalid, E::Signature),
        ("signature padded", format!("{good}="), Malformed, E::Base64 { part: Part::Signature }),
        ("signature of 45 chars", format!("{good}AA"), Malformed, E::Base64 { part: Part::Signature }),
        ("signature with +", replace_char(&good, good.len() - 5, '+'), Malformed, E::Base64 { part: Part::Signature }),
        ("signature with /", replace_char(&good, good.len() - 5, '/'), Malformed, E::Base64 { part: Part::Signature }),
        ("payload changed", signed(&[("role", Some(r#""user""#))]) .split('.') .take(2) .collect::<Vec<_>>() .join(".") + "." + sig, Invalid, E::Signature),
        // Structure.
        ("extra segment", format!("{good}.{sig}"), Malformed, E::Segments { count: 4 }),
        ("dot inside the signature", format!("{head}.{body}.{}.{}", &sig[..20], &sig[21..]), Malformed, E::Segments { count: 4 }),
        ("dot inside the signature, unknown header", format!("{}.{body}.{}.{}", b64(br#"{"alg":"HS256"}"#), &sig[..20], &sig[21..]), Malformed, E::Segments { count: 4 }),
        ("extra segment, unknown header", format!("{}.{body}.{sig}.{sig}", b64(br#"{"alg":"HS256"}"#)), Malformed, E::Segments { count: 4 }),
        ("two segments", format!("{head}.{body}"), Malformed, E::Segments { count: 2 }),
        ("one segment", head.to_owned(), Malformed, E::Segments { count: 1 }),
        ("empty string", String::new(), Malformed, E::Segments { count: 1 }),
        ("dots only", "..".into(), Malformed, E::EmptySegment { part: Part::Header }),
        ("empty header", format!(".{body}.{sig}"), Malformed, E::EmptySegment { part: Part::Header }),
        ("empty payload", format!("{head}..{sig}"), Malformed, E::EmptySegment { part: Part::Payload }),
        ("leading space", format!(" {good}"), Malformed, E::Base64 { part: Part::Header }),
        ("trailing newline", format!("{good}\n"), Malformed, E::Base64 { part: Part::Signature }),
        ("space inside payload", format!("{head}.{} {}.{sig}", &body[..10], &body[10..]), Malformed, E::Base64 { part: Part::Payload }),
        ("payload padded", format!("{head}.{body}==.{sig}"), Malformed, E::Base64 { part: Part::Payload }),
        ("Bearer prefix", format!("Bearer {good}"), Malformed, E::Base64 { part: Part::Header }),
        ("oversized, 4097 bytes", token_of_len(MAX_TOKEN_LEN + 1), Malformed, E::TooLong { len: 4097 }),
        ("oversized junk", "a".repeat(100_000), Malformed, E::TooLong { len: 100000 }),
        // Payload syntax (correctly signed).
        ("payload JSON array", forge(header().as_bytes(), b"[1,2]", KEY), Malformed, E::Json { part: Part::Payload }),
        ("payload JSON null", forge(header().as_bytes(), b"null", KEY), Malformed, E::Json { part: Part::Payload }),
        ("payload not JSON", forge(header().as_bytes(), b"hello", KEY), Malformed, E::Json { part: Part::Payload }),
        ("payload trailing garbage", forge(header().as_bytes(), format!("{std_payload}x").as_bytes(), KEY), Malformed, E::Json { part: Part::Payload }),
        ("payload invalid UTF-8", forge(header().as_bytes(), b"{\"name\":\"\xc3\x28\"}", KEY), Malformed, E::Utf8 { part: Part::Payload }),
        ("payload lone surrogate", signed(&[("name", Some(r#""\ud800""#))]), Malformed, E::Json { part: Part::Payload }),
        ("payload byte-order mark", forge(header().as_bytes(), format!("\u{feff}{std_payload}").as_bytes(), KEY), Malformed, E::Json { part: Part::Payload }),
        // Claim types and duplicates.
        ("exp a string", signed(&[("exp", Some(r#""1800003600""#))]), Invalid, E::WrongType { part: Part::Payload, name: "exp" }),
        ("exp a float", signed(&[("exp", Some("1800003600.0"))]), Invalid, E::WrongType { part: Part::Payload, name: "exp" }),
        ("exp in exponent form", signed(&[("exp", Some("1.8e9"))]), Invalid, E::WrongType { part: Part::Payload, name: "exp" }),
        ("exp null", signed(&[("exp", Some("null"))]), Invalid, E::WrongType { part: Part::Payload, name: "exp" }),
        ("role a number", signed(&[("role", Some("1"))]), Invalid, E::WrongType { part: Part::Payload, name: "role" }),
        ("name an array", signed(&[("name", Some(r#"["ann"]"#))]), Invalid, E::WrongType { part: Part::Payload, name: "name" }),
        ("user_id negative", signed(&[("user_id", Some("-42")), ("sub", None)]), Invalid, E::WrongType { part: Part::Payload, name: "user_id" }),
        ("user_id a string", signed(&[("user_id", Some(r#""42""#))]), Invalid, E::WrongType { part: Part::Payload, name: "user_id" }),
        ("ver a bool", signed(&[("ver", Some("true"))]), Invalid, E::WrongType { part: Part::Payload, name: "ver" }),
        ("duplicate exp", forge(header().as_bytes(), std_payload.replacen('{', &format!("{{\"exp\":{},", NOW + 99_999), 1).as_bytes(), KEY), Invalid, E::Duplicate { part: Part::Payload }),
        ("duplicate unknown claim", signed(&[("x", Some(r#"1,"x":2"#))]), Invalid, E::Duplicate { part: Part::Payload }),
        // Required claims and identity.
        ("exp missing", signed(&[("exp", None)]), Invalid, E::Missing { claim: "exp" }),
        ("iss missing", signed(&[("iss", None)]), Invalid, E::Missing { claim: "iss" }),
        ("identity missing", signed(&[("sub", None), ("user_id", None)]), Invalid, E::Missing { claim: "sub" }),
        ("name missing", signed(&[("name", None)]), Invalid, E::Missing { claim: "name" }),
        ("role missing", signed(&[("role", None)]), Invalid, E::Missing { claim: "role" }),
        ("sub and user_id disagree", signed(&[("sub", Some(r#""43""#))]), Invalid, E::Subject),
        ("sub with leading zero", signed(&[("sub", Some(r#""042""#)), ("user_id", None)]), Invalid, E::Subject),
        ("sub not a number", signed(&[("sub", Some(r#""ann""#)), ("user_id", None)]), Invalid, E::Subject),
        // Issuer near-misses.
        ("issuer case", signed(&[("iss", Some(r#""Latchkey""#))]), Invalid, E::Issuer { expected: "latchkey".into() }),
        ("issuer trailing space", signed(&[("iss", Some(r#""latchkey ""#))]), Invalid, E::Issuer { expected: "latchkey".into() }),
        ("issuer prefix", signed(&[("iss", Some(r#""latch""#))]), Invalid, E::Issuer { expected: "latchkey".into() }),
        ("issuer extended", signed(&[("iss", Some(r#""latchkey.example""#))]), Invalid, E::Issuer { expected: "latchkey".into() }),
        ("issuer with NUL", signed(&[("iss", Some(r#""latchkey\u0000""#))]), Invalid, E::Issuer { expected: "latchkey".into() }),
        ("issuer a number", signed(&[("iss", Some("1"))]), Invalid, E::WrongType { part: Part::Payload, name: "iss" }),
        // Time.
        ("nbf in the future", signed(&[("nbf", Some(&(NOW + 31).to_string()))]), Invalid, E::NotYetValid { nbf: NOW + 31, now: NOW }),
        ("iat in the future", signed(&[("iat", Some(&(NOW + 31).to_string()))]), Invalid, E::IssuedInFuture { iat: NOW + 31, now: NOW }),
        ("expired at the leeway edge", signed(&[("exp", Some(&(NOW - 30).to_string()))]), Expired, E::Expired { exp: NOW - 30, now: NOW }),
        ("expired long ago", signed(&[("exp", Some("0"))]), Expired, E::Expired { exp: 0, now: NOW }),
        ("exp at i64::MIN", signed(&[("exp", Some(&i64::MIN.to_string()))]), Expired, E::Expired { exp: i64::MIN, now: NOW }),
        ("auth_time in the future", signed(&[("auth_time", Some(&(NOW + 31).to_string()))]), Invalid, E::AuthenticatedInFuture { auth_time: NOW + 31, now: NOW }),
        ("auth_time far in the future", signed(&[("auth_time", Some(&i64::MAX.to_string()))]), Invalid, E::AuthenticatedInFuture { auth_time: i64::MAX, now: NOW }),
        ("auth_time in the future, expired", signed(&[("auth_time", Some(&(NOW + 31).to_string())), ("exp", Some("0"))]), Invalid, E::AuthenticatedInFuture { auth_time: NOW + 31, now: NOW }),
        // Authentication methods (RFC 8176).
        ("amr empty", signed(&[("amr", Some("[]"))]), Invalid, E::AuthMethods),
        ("amr unregistered", signed(&[("amr", Some(r#"["pwd","password"]"#))]), Invalid, E::AuthMethods),
        ("amr upper case", signed(&[("amr", Some(r#"["PWD"]"#))]), Invalid, E::AuthMethods),
        ("amr twice", signed(&[("amr", Some(r#"["pwd","otp","pwd"]"#))]), Invalid, E::AuthMethods),
        ("amr a string", signed(&[("amr", Some(r#""pwd""#))]), Invalid, E::WrongType { part: Part::Payload, name: "amr" }),
        ("amr null", signed(&[("amr", Some("null"))]), Invalid, E::WrongType { part: Part::Payload, name: "amr" }),
        ("amr with a number", signed(&[("amr", Some(r#"["unknown",1]"#))]), Invalid, E::WrongType { part: Part::Payload, name: "amr" }),
        ("amr nested", signed(&[("amr", Some(r#"[["pwd"]]"#))]), Invalid, E::WrongType { part: Part::Payload, name: "amr" }),
        ("amr twice as a member", signed(&[("amr", Some(r#"["pwd"],"amr":["pwd"]"#))]), Invalid, E::Duplicate { part: Part::Payload }),
        ("jti a number", signed(&[("jti", Some("7"))]), Invalid, E::WrongType { part: Part::Payload, name: "jti" }),
        ("jti null", signed(&[("jti", Some("null"))]), Invalid, E::WrongType { part: Part::Payload, name: "jti" }),
        ("jti twice", signed(&[("jti", Some(r#""a","jti":"b""#))]), Invalid, E::Duplicate { part: Part::Payload }),
        ("amr unregistered, expired", signed(&[("amr", Some(r#"["x"]"#)), ("exp", Some("0"))]), Expired, E::Expired { exp: 0, now: NOW }),
        ("amr unclosed", signed(&[("amr", Some(r#"["pwd""#))]), Malformed, E::Json { part: Part::Payload }),
    ];
    assert!(cases.len() >= 30);
    let v = verifier();
    let mut failures = Vec::new();
    for (name, token, class, expected) in &cases {
        assert_eq!(
            expected.class(),
            *class,
            "{name}: the table disagrees with itself"
        );
        match verify(&v, token) {
            Ok(_) => failures.push(format!("{name}: accepted, expected {class:?}")),
            Err(err) if err.class() != *class || err != *expected => {
                failures.push(format!("{name}: {err:?} ({err}), expected {expected:?}"))
            }
            Err(_) => {}
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

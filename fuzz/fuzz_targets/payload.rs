//! Fuzzes the payload readers: arbitrary bytes become the payload of a token that carries
//! a genuine signature (computed here), so that, unlike the `verify` target, they reach
//! the layout reader and the strict JSON reader. The first byte picks the header (ours,
//! PyJWT's order, the original design's). Besides "never panics": serde_json reads every
//! accepted payload into the same claim values (escapes decoded, `sub` made from
//! `user_id`, `amr` absent reading `["pwd"]`), and every refusal has a class. The
//! decoding buffer is reused from one input to the next, as a server worker reuses it.

#![no_main]

use std::cell::RefCell;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use latchkey::keys::{Key, KeyRing};
use latchkey::token::{Amr, Clock, TokenBuf, Validation, Verifier};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

/// The claims as serde_json reads them (unknown members skipped as the verifier skips
/// them), the reference for accepted payloads.
#[derive(serde::Deserialize)]
struct Reference {
    sub: Option<String>,
    user_id: Option<u64>,
    name: String,
    role: String,
    exp: i64,
    iss: String,
    auth_time: Option<i64>,
    ver: Option<u64>,
    amr: Option<Amr>,
}

/// The key the seed corpus was signed with (fuzz/make_seeds.py).
const SECRET: &[u8] = b"fuzz-corpus-key-0123456789abcdefghij";

static KEY: LazyLock<Key> = LazyLock::new(|| Key::new(SECRET.to_vec()).expect("key"));

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let ring = KeyRing::new(vec![KEY.clone()]).expect("ring");
    Verifier::new(
        &ring,
        Validation::new("latchkey", Clock::Fixed(1_800_000_000)),
    )
});

thread_local! {
    static BUF: RefCell<TokenBuf> = RefCell::new(TokenBuf::new());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, payload)) = data.split_first() else {
        return;
    };
    let kid = KEY.kid();
    let header = match pick % 3 {
        0 => format!(r#"{{"alg":"HS256","typ":"JWT","kid":"{kid}"}}"#),
        1 => format!(r#"{{"alg":"HS256","kid":"{kid}","typ":"JWT"}}"#),
        _ => r#"{"alg":"HS256","typ":"JWT"}"#.to_owned(),
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
    mac.update(input.as_bytes());
    let token = format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );

    BUF.with(|buf| match VERIFIER.verify(&token, &mut buf.borrow_mut()) {
        Ok(claims) => {
            let r: Reference = serde_json::from_slice(payload).expect("serde_json reads it");
            assert_eq!((&*claims.name, &*claims.role), (&*r.name, &*r.role));
            assert_eq!((&*claims.iss, claims.exp), (&*r.iss, r.exp));
            assert_eq!(claims.iss, "latchkey");
            assert_eq!(claims.sub, claims.user_id.to_string());
            assert!(r.sub.is_none_or(|sub| claims.sub == sub));
            assert!(r.user_id.is_none_or(|id| claims.user_id == id));
            assert_eq!(claims.ver, r.ver.unwrap_or(0));
            assert_eq!(claims.amr, r.amr.unwrap_or(Amr::PWD));
            if let Some(auth_time) = r.auth_time {
                assert_eq!(claims.auth_time, auth_time);
                assert!(auth_time <= 1_800_000_000 + 30, "no login from the future");
            }
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            assert!(!err.class().as_str().is_empty());
        }
    });
});

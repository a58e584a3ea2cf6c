//! Fuzzes `Verifier::verify` on arbitrary input. Besides "never panics", it checks that
//! every accepted token really carries an HMAC-SHA256 of its signing input under the key
//! (computed here independently), fits the size limit, and that every refusal has a
//! class and a reason. The decoding buffer is reused from one input to the next, as a
//! server worker reuses it. (A changed payload breaks the signature, so the payload
//! readers are fuzzed by the `payload` target.)

#![no_main]

use std::cell::RefCell;
use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use latchkey::keys::{Key, KeyRing};
use latchkey::token::{Clock, MAX_TOKEN_LEN, TokenBuf, Validation, Verifier};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

/// The key the seed corpus was signed with (fuzz/make_seeds.py).
const SECRET: &[u8] = b"fuzz-corpus-key-0123456789abcdefghij";

static VERIFIER: LazyLock<Verifier> = LazyLock::new(|| {
    let ring = KeyRing::new(vec![Key::new(SECRET.to_vec()).expect("key")]).expect("ring");
    Verifier::new(
        &ring,
        Validation::new("latchkey", Clock::Fixed(1_800_000_000)),
    )
});

thread_local! {
    static BUF: RefCell<TokenBuf> = RefCell::new(TokenBuf::new());
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    BUF.with(|buf| check(token, &mut buf.borrow_mut()));
});

fn check(token: &str, buf: &mut TokenBuf) {
    match VERIFIER.verify(token, buf) {
        Ok(claims) => {
            assert!(token.len() <= MAX_TOKEN_LEN);
            let (input, signature) = token.rsplit_once('.').expect("a dot");
            assert_eq!(input.matches('.').count(), 1, "three segments");
            let tag = URL_SAFE_NO_PAD
                .decode(signature)
                .expect("canonical signature");
            let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
            mac.update(input.as_bytes());
            mac.verify_slice(&tag)
                .expect("accepted only with a genuine signature");
            assert_eq!(claims.sub, claims.user_id.to_string());
            assert_eq!(claims.iss, "latchkey");
        }
        Err(err) => {
            assert!(!err.to_string().is_empty());
            assert!(!err.class().as_str().is_empty());
        }
    }
}

//! RFC 7515 Appendix A.1: the HS256 example signature verifies here, and the example is
//! judged expired by full validation; a non-canonical last character is malformed.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::token::{key, verifier_with, verify};
use latchkey::keys::KeyRing;
use latchkey::token::{Claims, Clock, ErrorClass, TokenError, Verifier};

/// The JWK `k` value of Appendix A.1.
const K: &str =
    "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow";
const TOKEN: &str = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const EXP: i64 = 1_300_819_380;

fn verifier(clock: Clock) -> Verifier {
    let bytes = URL_SAFE_NO_PAD.decode(K).expect("JWK k is base64url");
    assert_eq!(bytes.len(), 64);
    let ring = KeyRing::new(vec![key(&bytes)]).expect("ring");
    verifier_with(&ring, "joe", clock)
}

/// The example judged on `clock`.
fn judge(clock: Clock, token: &str) -> Result<Claims<'static>, TokenError> {
    verify(&verifier(clock), token)
}

#[test]
fn example_signature_verifies_and_the_token_is_expired() {
    // Expiry is judged only after the signature matched, so `Expired` proves it did.
    let err = judge(Clock::System, TOKEN).expect_err("expired in 2011");
    assert_eq!(err.class(), ErrorClass::Expired, "{err}");
    assert!(matches!(err, TokenError::Expired { exp: EXP, .. }));
}

#[test]
fn example_before_expiry_reaches_the_identity_check() {
    // Still within its lifetime, the example passes signature, issuer and expiry, and is
    // refused only because it names no user (no `sub`, no `user_id`).
    let err = judge(Clock::Fixed(EXP - 100), TOKEN).expect_err("no identity");
    assert_eq!(err, TokenError::Missing { claim: "sub" });
}

#[test]
fn last_character_k_to_l_is_malformed() {
    // 'k' and 'l' differ only in the two bits past the 256-bit tag: a lax decoder reads
    // the same bytes, a canonical one refuses the token.
    let changed = format!("{}l", &TOKEN[..TOKEN.len() - 1]);
    assert!(TOKEN.ends_with('k'));
    let err = judge(Clock::System, &changed).expect_err("non-canonical");
    assert_eq!(err.class(), ErrorClass::Malformed, "{err}");
}

#[test]
fn a_changed_signature_byte_is_invalid() {
    // Contrast: a real change of the tag is a bad signature, not an expired token.
    let at = TOKEN.len() - 10;
    let mut changed = TOKEN.to_owned();
    let replacement = if &TOKEN[at..=at] == "A" { "B" } else { "A" };
    changed.replace_range(at..=at, replacement);
    let err = judge(Clock::System, &changed).expect_err("bad signature");
    assert_eq!(err, TokenError::Signature);
}

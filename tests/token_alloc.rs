//! Counts heap allocations on the hot path with a counting global allocator.
//!
//! Verifying makes none, whether the names are ASCII in our layout or escaped in PyJWT's
//! (the claims borrow from the caller's `TokenBuf`); refusing a forged signature makes
//! none; signing makes one, the token.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::token::{KEY, NOW, claims, ring, sign, verifier};
use hmac::{Hmac, KeyInit, Mac};
use latchkey::token::{Amr, Claims, Signer, TokenBuf, TokenError};
use sha2::Sha256;

/// Counts allocations made by the current thread while counting is on.
struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: delegates every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            COUNT.with(|c| c.set(c.get() + 1));
        }
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The number of allocations `f` makes on this thread.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (COUNT.with(Cell::get), out)
}

/// A token as PyJWT writes it for the original design: no `kid`, members in another
/// order, the name `张三` escaped as `\u5f20\u4e09` (Python's `json.dumps` default).
fn pyjwt_style_token() -> String {
    let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let payload = format!(
        r#"{{"name": "\u5f20\u4e09", "role": "user", "user_id": 7, "exp": {}, "iss": "latchkey"}}"#,
        NOW + 3600
    );
    let input = format!(
        "{}.{}",
        b64(br#"{"alg":"HS256","typ":"JWT"}"#),
        b64(payload.as_bytes())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("any key length");
    mac.update(input.as_bytes());
    format!("{input}.{}", b64(&mac.finalize().into_bytes()))
}

#[test]
fn verifying_allocates_nothing() {
    let verifier = verifier();
    let mut buf = TokenBuf::new();
    let ours = sign(&claims());
    let otp = sign(&Claims {
        amr: Amr::PWD_OTP,
        ..claims()
    });
    let pyjwt = pyjwt_style_token();
    // Warm up anything lazily initialised (CPU feature detection and the like).
    assert_eq!(verifier.verify(&ours, &mut buf), Ok(claims()));

    let (count, result) = allocations(|| verifier.verify(&ours, &mut buf).map(|c| c.user_id));
    assert_eq!(result, Ok(42));
    assert_eq!(count, 0, "verify, our layout");

    let (count, result) = allocations(|| verifier.verify(&otp, &mut buf).map(|c| c.amr));
    assert_eq!(result, Ok(Amr::PWD_OTP));
    assert_eq!(count, 0, "verify, our layout with a second factor");

    let (count, result) = allocations(|| {
        verifier
            .verify(&pyjwt, &mut buf)
            .map(|c| c.name == "张三" && c.sub == "7" && c.amr == Amr::PWD)
    });
    assert_eq!(result, Ok(true), "escapes decoded, sub from user_id");
    assert_eq!(count, 0, "verify, PyJWT's layout with escaped names");
}

#[test]
fn refusing_allocates_nothing() {
    let verifier = verifier();
    let mut buf = TokenBuf::new();
    let token = sign(&claims());
    assert!(verifier.verify(&token, &mut buf).is_ok());

    let mut forged = token.clone();
    forged.replace_range(forged.len() - 10..forged.len() - 9, "A");
    forged.replace_range(forged.len() - 11..forged.len() - 10, "B");
    let (count, result) = allocations(|| verifier.verify(&forged, &mut buf).map(drop));
    assert_eq!(result, Err(TokenError::Signature));
    assert_eq!(count, 0, "rejecting a forged signature");

    // Refusals after the signature, including the one that names the issuer.
    let other = sign(&Claims {
        iss: "elsewhere".into(),
        ..claims()
    });
    let expired = sign(&Claims {
        exp: NOW - 3600,
        ..claims()
    });
    for token in [other, expired, "x.y.z".to_owned(), "e30.e30.".to_owned()] {
        let (count, result) = allocations(|| verifier.verify(&token, &mut buf).map(drop));
        assert!(result.is_err(), "{token}");
        assert_eq!(count, 0, "refusing {result:?}");
    }
}

#[test]
fn signing_allocates_the_token_only() {
    let signer = Signer::new(&ring());
    let claims = claims();
    let expected = signer.sign(&claims);
    let (count, signed) = allocations(|| signer.sign(&claims));
    assert_eq!(signed, expected);
    assert_eq!(count, 1, "sign: the token string only");

    // Claims too long for the stack buffer take the other path, still one allocation.
    let long = Claims {
        name: "\"x".repeat(400).into(),
        ..claims
    };
    let (count, signed) = allocations(|| signer.sign(&long));
    let mut buf = TokenBuf::new();
    let verifier =
        common::token::verifier_with(&ring(), "latchkey", latchkey::token::Clock::Fixed(NOW));
    assert_eq!(
        verifier.verify(&signed, &mut buf).map(|c| c.name.len()),
        Ok(800)
    );
    assert_eq!(count, 1, "sign, long claims: the token string only");
}

//! Property tests: any claims round-trip through sign and verify; no single-byte change,
//! deletion or insertion of a valid token is ever accepted.

mod common;

use common::token::{NOW, claims, ring, sign, verifier_with, verify};
use latchkey::token::{Amr, Claims, Clock, Verifier};
use proptest::prelude::*;

fn verifier(issuer: &str) -> Verifier {
    verifier_with(&ring(), issuer, Clock::Fixed(NOW))
}

prop_compose! {
    fn any_claims()(
        user_id in any::<u64>(),
        name in ".{0,64}",
        role in ".{0,16}",
        iss in ".{0,32}",
        iat in -NOW..NOW + 30,
        lifetime in 31i64..100_000_000,
        auth_time in i64::MIN..NOW + 30,
        ver in any::<u64>(),
        otp in any::<bool>(),
    ) -> Claims<'static> {
        Claims {
            sub: user_id.to_string().into(),
            user_id,
            name: name.into(),
            role: role.into(),
            iat,
            exp: NOW + lifetime,
            iss: iss.into(),
            auth_time,
            ver,
            amr: if otp { Amr::PWD_OTP } else { Amr::PWD },
            jti: None,
        }
    }
}

fn standard_token() -> String {
    sign(&Claims { ver: 1, ..claims() })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn sign_then_verify_round_trips(claims in any_claims()) {
        let token = sign(&claims);
        prop_assert_eq!(verify(&verifier(&claims.iss), &token), Ok(claims));
    }

    #[test]
    fn a_changed_byte_is_never_accepted(at in 0usize..1000, byte in any::<u8>()) {
        let token = standard_token();
        let at = at % token.len();
        prop_assume!(token.as_bytes()[at] != byte);
        let mut bytes = token.into_bytes();
        bytes[at] = byte;
        // A change that breaks UTF-8 cannot even be offered as a token.
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert!(verify(&verifier("latchkey"), &changed).is_err());
        }
    }

    #[test]
    fn a_removed_or_inserted_byte_is_never_accepted(at in 0usize..1000, byte in 0x20u8..0x7f) {
        let token = standard_token();
        let at = at % token.len();
        let mut removed = token.clone();
        removed.remove(at);
        prop_assert!(verify(&verifier("latchkey"), &removed).is_err());
        let mut inserted = token;
        inserted.insert(at, char::from(byte));
        prop_assert!(verify(&verifier("latchkey"), &inserted).is_err());
    }
}

#[test]
fn every_single_byte_change_is_refused() {
    // Exhaustive over positions and printable ASCII, on top of the random cases above.
    let token = standard_token();
    let v = verifier("latchkey");
    assert!(verify(&v, &token).is_ok());
    for at in 0..token.len() {
        for byte in 0x20u8..0x7f {
            if token.as_bytes()[at] == byte {
                continue;
            }
            let mut bytes = token.clone().into_bytes();
            bytes[at] = byte;
            let changed = String::from_utf8(bytes).expect("ASCII");
            assert!(
                verify(&v, &changed).is_err(),
                "accepted a change at {at} to {byte:#x}"
            );
        }
    }
}

//! Tokens minted by PyJWT (tests/fixtures/pyjwt/, made by the script beside them) are
//! judged here as PyJWT would, at the instant each case names.

mod common;

use common::token::{key, verifier_with, verify};
use latchkey::keys::KeyRing;
use latchkey::token::{Amr, Claims, Clock};
use serde_json::Value;

const FIXTURES: &str = include_str!("fixtures/pyjwt/tokens.json");

fn claims_from(value: &Value) -> Claims<'static> {
    let text = |k: &str| value[k].as_str().expect("string claim").to_owned().into();
    let int = |k: &str| value[k].as_i64().expect("integer claim");
    Claims {
        sub: text("sub"),
        user_id: value["user_id"].as_u64().expect("user_id"),
        name: text("name"),
        role: text("role"),
        iat: int("iat"),
        exp: int("exp"),
        iss: text("iss"),
        auth_time: int("auth_time"),
        ver: value["ver"].as_u64().expect("ver"),
        amr: match value.get("amr") {
            Some(amr) => serde_json::from_value(amr.clone()).expect("amr"),
            None => Amr::PWD,
        },
        jti: None,
    }
}

#[test]
fn pyjwt_tokens_are_judged_as_expected() {
    let fixtures: Value = serde_json::from_str(FIXTURES).expect("fixture JSON");
    let cases = fixtures["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "fixture cases missing");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let ring =
            KeyRing::new(vec![key(case["key"].as_str().expect("key").as_bytes())]).expect("ring");
        let verifier = verifier_with(
            &ring,
            case["issuer"].as_str().expect("issuer"),
            Clock::Fixed(case["now"].as_i64().expect("now")),
        );
        let result = verify(&verifier, case["token"].as_str().expect("token"));
        match case["expect"].as_str().expect("expect") {
            "valid" => {
                let claims = result.unwrap_or_else(|err| panic!("{name}: refused: {err}"));
                assert_eq!(claims, claims_from(&case["claims"]), "{name}");
            }
            class => {
                let err = result.expect_err(name);
                assert_eq!(err.class().as_str(), class, "{name}: {err}");
            }
        }
    }
}

#[test]
fn legacy_original_design_token_reads_with_defaults() {
    // PyJWT `jwt.encode({"name", "role", "user_id", "exp", "iss"}, key)`, as the original
    // Flask design made them: header {"alg":"HS256","typ":"JWT"}, no kid, no sub/iat/ver.
    let fixtures: Value = serde_json::from_str(FIXTURES).expect("fixture JSON");
    let case = fixtures["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .find(|c| c["name"] == "legacy_original_design")
        .expect("legacy case");
    let token = case["token"].as_str().expect("token");
    assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    let ring = KeyRing::new(vec![key(b"cgy-flask-token-demo-secret-key!")]).expect("ring");
    let verifier = verifier_with(&ring, "cgy", Clock::Fixed(1_800_000_000));
    let claims = verify(&verifier, token).expect("legacy token accepted");
    assert_eq!(claims.sub, "7");
    assert_eq!(claims.user_id, 7);
    assert_eq!((&*claims.name, &*claims.role), ("alice", "admin"));
    assert_eq!(claims.iat, claims.exp - 3600, "iat derives from exp - ttl");
    assert_eq!(claims.auth_time, claims.iat, "auth_time derives from iat");
    assert_eq!(claims.ver, 0);
    assert_eq!(claims.amr, Amr::PWD, "no amr reads as a password login");
}

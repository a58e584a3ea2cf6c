//! Tokens minted by PyJWT (tests/fixtures/pyjwt/, made by the script beside them) are
//! judged here as PyJWT would, at the instant each case names.

use latchkey::keys::{Key, KeyRing};
use latchkey::token::{Claims, Clock, Validation, Verifier};
use serde_json::Value;

const FIXTURES: &str = include_str!("fixtures/pyjwt/tokens.json");

fn claims_from(value: &Value) -> Claims {
    let text = |k: &str| value[k].as_str().expect("string claim").to_owned();
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
    }
}

#[test]
fn pyjwt_tokens_are_judged_as_expected() {
    let fixtures: Value = serde_json::from_str(FIXTURES).expect("fixture JSON");
    let cases = fixtures["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8, "fixture cases missing");
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let key = Key::new(case["key"].as_str().expect("key").as_bytes().to_vec()).expect("key");
        let ring = KeyRing::new(vec![key]).expect("ring");
        let verifier = Verifier::new(
            &ring,
            Validation::new(
                case["issuer"].as_str().expect("issuer"),
                Clock::Fixed(case["now"].as_i64().expect("now")),
            ),
        );
        let result = verifier.verify(case["token"].as_str().expect("token"));
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
    let key = Key::new(b"cgy-flask-token-demo-secret-key!".to_vec()).expect("key");
    let verifier = Verifier::new(
        &KeyRing::new(vec![key]).expect("ring"),
        Validation::new("cgy", Clock::Fixed(1_800_000_000)),
    );
    let claims = verifier.verify(token).expect("legacy token accepted");
    assert_eq!(claims.sub, "7");
    assert_eq!(claims.user_id, 7);
    assert_eq!(
        (claims.name.as_str(), claims.role.as_str()),
        ("alice", "admin")
    );
    assert_eq!(claims.iat, claims.exp - 3600, "iat derives from exp - ttl");
    assert_eq!(claims.auth_time, claims.iat, "auth_time derives from iat");
    assert_eq!(claims.ver, 0);
}

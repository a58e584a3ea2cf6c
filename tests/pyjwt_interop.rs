//! Our tokens read by PyJWT (`jwt.decode(token, key, algorithms=["HS256"], issuer=...)`),
//! as the apps of the original design read them. Needs python3 with PyJWT.

mod common;

use std::process::Command;

use common::token::{key, now, user};
use latchkey::keys::KeyRing;
use latchkey::token::{Amr, Claims, Signer};

const DECODE: &str = r#"
import json, sys, jwt
key, issuer, token = sys.argv[1], sys.argv[2], sys.argv[3]
claims = jwt.decode(token, key, algorithms=["HS256"], issuer=issuer)
header = jwt.get_unverified_header(token)
print(json.dumps({"claims": claims, "header": header}))
"#;

fn pyjwt_decode(key: &str, issuer: &str, token: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .args(["-c", DECODE, key, issuer, token])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "PyJWT refused our token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON from python")
}

fn claims(issuer: &str, name: &str) -> Claims<'static> {
    Claims {
        iss: issuer.to_owned().into(),
        auth_time: now() - 60,
        ver: 2,
        amr: Amr::PWD_OTP,
        ..user(1234, name, "admin", now())
    }
}

#[test]
#[ignore = "heavy: needs python3 with PyJWT; run by .ci/run"]
fn pyjwt_reads_our_tokens() {
    for (key, issuer, name) in [
        ("cgy-flask-token-demo-secret-key!", "cgy", "alice"),
        (
            "another-key-for-interop-0123456789abcdef",
            "latchkey",
            "Zo\u{eb} \"q\" \u{1f511}",
        ),
    ] {
        let ring = KeyRing::new(vec![self::key(key.as_bytes())]).expect("ring");
        let claims = claims(issuer, name);
        let token = Signer::new(&ring).sign(&claims);
        let decoded = pyjwt_decode(key, issuer, &token);
        let c = &decoded["claims"];
        assert_eq!(c["name"], name);
        assert_eq!(c["role"], "admin");
        assert_eq!(c["user_id"], 1234);
        assert_eq!(c["sub"], "1234");
        assert_eq!(c["iss"], issuer);
        assert_eq!(c["exp"], claims.exp);
        assert_eq!(c["ver"], 2);
        assert_eq!(c["amr"], serde_json::json!(["pwd", "otp"]));
        assert_eq!(decoded["header"]["alg"], "HS256");
        assert_eq!(decoded["header"]["typ"], "JWT");
        assert_eq!(decoded["header"]["kid"], ring.primary().kid());
    }
}

#[test]
#[ignore = "heavy: needs python3 with PyJWT; run by .ci/run"]
fn pyjwt_refuses_our_token_for_another_issuer() {
    let key = "cgy-flask-token-demo-secret-key!";
    let ring = KeyRing::new(vec![self::key(key.as_bytes())]).expect("ring");
    let token = Signer::new(&ring).sign(&claims("latchkey", "bob"));
    let out = Command::new("python3")
        .args(["-c", DECODE, key, "cgy", &token])
        .output()
        .expect("python3 runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("InvalidIssuerError"));
}

//! Token hot path: latchkey against jsonwebtoken and against the HMAC floor.
//!
//! Run with `cargo bench --bench token`. One run measures, on the same token (our header
//! with `kid`, all nine claims, realistic values):
//! - latchkey verify, jsonwebtoken decode (`Validation` HS256 + issuer), and the floor:
//!   a pre-keyed HMAC-SHA256 over the same signing input plus a 32-byte constant-time compare;
//! - latchkey sign and jsonwebtoken encode;
//! - latchkey rejecting a forged signature.
//!
//! At the end it prints criterion's medians and the ratios the targets are stated in.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::Criterion;
use hmac::{Hmac, KeyInit, Mac};
use latchkey::keys::{Key, KeyRing};
use latchkey::token::{Claims, Clock, Signer, Validation, Verifier};
use sha2::Sha256;

const SECRET: &[u8] = b"Kq3v9LxP0c7Wm2ZsT8yBn4RfHj6Ue1Ad5Gk0Qw3Ei9O";

/// The same claims as a plain serde struct, for jsonwebtoken.
#[derive(serde::Serialize, serde::Deserialize)]
struct JwtClaims {
    sub: String,
    user_id: u64,
    name: String,
    role: String,
    iat: i64,
    exp: i64,
    iss: String,
    auth_time: i64,
    ver: u64,
}

fn claims() -> Claims {
    let now = Clock::System.now();
    Claims {
        sub: "1042".into(),
        user_id: 1042,
        name: "margaret.hamilton".into(),
        role: "admin".into(),
        iat: now - 120,
        exp: now + 3480,
        iss: "latchkey".into(),
        auth_time: now - 7200,
        ver: 3,
    }
}

fn jwt_claims(c: &Claims) -> JwtClaims {
    JwtClaims {
        sub: c.sub.clone(),
        user_id: c.user_id,
        name: c.name.clone(),
        role: c.role.clone(),
        iat: c.iat,
        exp: c.exp,
        iss: c.iss.clone(),
        auth_time: c.auth_time,
        ver: c.ver,
    }
}

/// Where criterion writes its results: `target/criterion`.
fn output_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("criterion")
}

const GROUP: &str = "token";
const NAMES: [&str; 6] = [
    "latchkey_verify",
    "jsonwebtoken_decode",
    "floor_hmac_compare",
    "latchkey_sign",
    "jsonwebtoken_encode",
    "latchkey_reject_forged",
];

fn benches(c: &mut Criterion) {
    let ring = KeyRing::new(vec![Key::new(SECRET.to_vec()).expect("key")]).expect("ring");
    let signer = Signer::new(&ring);
    let verifier = Verifier::new(
        &ring,
        Validation {
            issuer: "latchkey".into(),
            leeway: 30,
            ttl: 3600,
            clock: Clock::System,
        },
    );
    let claims = claims();
    let token = signer.sign(&claims);
    assert_eq!(verifier.verify(&token), Ok(claims.clone()));

    // jsonwebtoken, with the same header (kid) and the same token bytes.
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(ring.primary().kid().to_owned());
    let enc_key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let dec_key = jsonwebtoken::DecodingKey::from_secret(SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["latchkey"]);
    let jwt_token = jsonwebtoken::encode(&header, &jwt_claims(&claims), &enc_key).expect("encode");
    let decoded = jsonwebtoken::decode::<JwtClaims>(&token, &dec_key, &validation).expect("decode");
    assert_eq!(decoded.claims.name, claims.name);
    assert_eq!(jwt_token.len(), token.len(), "same token shape");

    // The floor: the pre-keyed MAC over the signing input, compared in constant time.
    let (signing_input, signature) = token.rsplit_once('.').expect("three segments");
    let tag = URL_SAFE_NO_PAD.decode(signature).expect("tag");
    let keyed = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");

    let mut forged = token.clone();
    let at = forged.len() - 20;
    let swap = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, swap);
    assert!(verifier.verify(&forged).is_err());

    let mut g = c.benchmark_group(GROUP);
    g.bench_function(NAMES[0], |b| b.iter(|| verifier.verify(black_box(&token))));
    g.bench_function(NAMES[1], |b| {
        b.iter(|| jsonwebtoken::decode::<JwtClaims>(black_box(&token), &dec_key, &validation))
    });
    g.bench_function(NAMES[2], |b| {
        b.iter(|| {
            let mut mac = keyed.clone();
            mac.update(black_box(signing_input).as_bytes());
            mac.verify_slice(black_box(&tag)).is_ok()
        })
    });
    g.bench_function(NAMES[3], |b| b.iter(|| signer.sign(black_box(&claims))));
    let jc = jwt_claims(&claims);
    g.bench_function(NAMES[4], |b| {
        b.iter(|| jsonwebtoken::encode(&header, black_box(&jc), &enc_key))
    });
    g.bench_function(NAMES[5], |b| b.iter(|| verifier.verify(black_box(&forged))));
    g.finish();
}

/// Criterion's median for one benchmark of this run, in nanoseconds.
fn median_ns(name: &str) -> Option<f64> {
    let path = output_dir()
        .join(GROUP)
        .join(name)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

fn summary() {
    let Some(m) = NAMES
        .iter()
        .map(|n| median_ns(n))
        .collect::<Option<Vec<f64>>>()
    else {
        println!("(no criterion estimates found; ratios skipped)");
        return;
    };
    println!("\n| benchmark | median ns/op |\n|---|---:|");
    for (name, ns) in NAMES.iter().zip(&m) {
        println!("| {name} | {ns:.0} |");
    }
    println!("\n| ratio | value | target |\n|---|---:|---|");
    println!(
        "| jsonwebtoken decode / latchkey verify | {:.1}x | >= 4x |",
        m[1] / m[0]
    );
    println!("| latchkey verify / floor | {:.2}x | <= 2x |", m[0] / m[2]);
    println!(
        "| jsonwebtoken encode / latchkey sign | {:.1}x | >= 2x |",
        m[4] / m[3]
    );
    println!("| latchkey reject forged / floor | {:.2}x | |", m[5] / m[2]);
}

fn main() {
    let mut c = Criterion::default()
        .output_directory(&output_dir())
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut c);
    c.final_summary();
    summary();
}

//! Token hot path: latchkey against jsonwebtoken and against the HMAC floor.
//!
//! Run with `cargo bench --bench token`. One run measures, on the same token (our header
//! with `kid`, all nine claims, realistic values):
//! - latchkey verify, jsonwebtoken decode (`Validation` HS256 + issuer), and the floor:
//!   a pre-keyed HMAC-SHA256 over the same signing input plus a 32-byte constant-time compare;
//! - latchkey sign and jsonwebtoken encode;
//! - latchkey rejecting a forged signature.
//!
//! Criterion reports each one; then all six run again interleaved (round after round, one
//! batch of each), and the medians and ratios the targets are stated in are printed. The
//! interleaving keeps the ratios honest on a machine shared with other work.

use std::hint::black_box;
use std::time::{Duration, Instant};

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
    let verifier = Verifier::new(&ring, Validation::new("latchkey", Clock::System));
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

    let jc = jwt_claims(&claims);
    let mut ops: Vec<Op<'_>> = vec![
        (
            NAMES[0],
            Box::new(|| drop(black_box(verifier.verify(black_box(&token))))),
        ),
        (
            NAMES[1],
            Box::new(|| {
                let decoded =
                    jsonwebtoken::decode::<JwtClaims>(black_box(&token), &dec_key, &validation);
                drop(black_box(decoded))
            }),
        ),
        (
            NAMES[2],
            Box::new(|| {
                let mut mac = keyed.clone();
                mac.update(black_box(signing_input).as_bytes());
                black_box(mac.verify_slice(black_box(&tag)).is_ok());
            }),
        ),
        (
            NAMES[3],
            Box::new(|| drop(black_box(signer.sign(black_box(&claims))))),
        ),
        (
            NAMES[4],
            Box::new(|| {
                drop(black_box(jsonwebtoken::encode(
                    &header,
                    black_box(&jc),
                    &enc_key,
                )))
            }),
        ),
        (
            NAMES[5],
            Box::new(|| drop(black_box(verifier.verify(black_box(&forged))))),
        ),
    ];
    let mut g = c.benchmark_group(GROUP);
    for (name, op) in ops.iter_mut() {
        g.bench_function(*name, |b| b.iter(&mut *op));
    }
    g.finish();
    c.final_summary();
    summary(&mut ops);
}

/// One benchmarked operation, for the interleaved summary.
type Op<'a> = (&'a str, Box<dyn FnMut() + 'a>);

/// Times every op in rounds, interleaved, so that a busy machine slows all of them alike;
/// returns each op's median ns/op over the rounds and its fastest round.
fn interleaved(ops: &mut [Op<'_>], rounds: usize, batch: u32) -> Vec<(f64, f64)> {
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for _ in 0..rounds {
        for (op, out) in ops.iter_mut().zip(samples.iter_mut()) {
            let start = Instant::now();
            for _ in 0..batch {
                (op.1)();
            }
            out.push(start.elapsed().as_nanos() as f64 / f64::from(batch));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            (s[s.len() / 2], s[0])
        })
        .collect()
}

fn summary(ops: &mut [Op<'_>]) {
    let m = interleaved(ops, 201, 2000);
    println!("\ninterleaved: 201 rounds of 2000 calls each, ops alternating");
    println!("\n| benchmark | median ns/op | fastest round ns/op |\n|---|---:|---:|");
    for (op, (median, min)) in ops.iter().zip(&m) {
        println!("| {} | {median:.0} | {min:.0} |", op.0);
    }
    let r = |a: usize, b: usize| (m[a].0 / m[b].0, m[a].1 / m[b].1);
    println!("\n| ratio | median | fastest | target |\n|---|---:|---:|---|");
    let rows = [
        ("jsonwebtoken decode / latchkey verify", r(1, 0), ">= 4x"),
        ("latchkey verify / floor", r(0, 2), "<= 2x"),
        ("jsonwebtoken encode / latchkey sign", r(4, 3), ">= 2x"),
        ("latchkey reject forged / floor", r(5, 2), ""),
    ];
    for (name, (median, min), target) in rows {
        println!("| {name} | {median:.2}x | {min:.2}x | {target} |");
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut c);
}

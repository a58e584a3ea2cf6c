//! Token hot path: latchkey against jsonwebtoken and against the HMAC floor.
//!
//! Run with `cargo bench --bench token`. One run measures, on the same token (our header
//! with `kid`, all ten claims, realistic values; `latchkey::token::bench::Workload`):
//! - latchkey verify, jsonwebtoken decode (`Validation` HS256 + issuer), and the floor:
//!   a pre-keyed HMAC-SHA256 over the same signing input plus a 32-byte constant-time compare;
//! - latchkey sign and jsonwebtoken encode;
//! - latchkey rejecting a forged signature.
//!
//! Criterion reports each one; then all six run again interleaved (round after round, one
//! batch of each), and the medians and ratios the targets are stated in are printed. The
//! interleaving keeps the ratios honest on a machine shared with other work.
//! `latchkey token bench` runs the same workload without jsonwebtoken.

use std::hint::black_box;
use std::time::Duration;

use criterion::Criterion;
use latchkey::token::Claims;
use latchkey::token::bench::{Timing, Workload, interleaved};

const SECRET: &[u8] = b"Kq3v9LxP0c7Wm2ZsT8yBn4RfHj6Ue1Ad5Gk0Qw3Ei9O";

/// The same claims as a plain serde struct, as a jsonwebtoken user writes them.
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
    amr: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    jti: Option<String>,
}

fn jwt_claims(c: &Claims<'_>) -> JwtClaims {
    JwtClaims {
        sub: c.sub.to_string(),
        user_id: c.user_id,
        name: c.name.to_string(),
        role: c.role.to_string(),
        iat: c.iat,
        exp: c.exp,
        iss: c.iss.to_string(),
        auth_time: c.auth_time,
        ver: c.ver,
        amr: c.amr.values().map(str::to_owned).collect(),
        jti: c.jti.as_deref().map(str::to_owned),
    }
}

const NAMES: [&str; 6] = [
    "latchkey_verify",
    "jsonwebtoken_decode",
    "floor_hmac_compare",
    "latchkey_sign",
    "jsonwebtoken_encode",
    "latchkey_reject_forged",
];

fn benches(c: &mut Criterion) {
    let w = std::cell::RefCell::new(Workload::with_secret(SECRET).expect("key"));
    assert!(w.borrow_mut().verify() && w.borrow_mut().reject_forged() && w.borrow().floor());
    let claims = w.borrow().claims().clone();
    let token = w.borrow().token().to_owned();

    // jsonwebtoken, with the same header (kid) and the same token bytes.
    let kid = latchkey::keys::Key::new(SECRET.to_vec())
        .expect("key")
        .kid()
        .to_owned();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid);
    let enc_key = jsonwebtoken::EncodingKey::from_secret(SECRET);
    let dec_key = jsonwebtoken::DecodingKey::from_secret(SECRET);
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_issuer(&["latchkey"]);
    let jc = jwt_claims(&claims);
    let jwt_token = jsonwebtoken::encode(&header, &jc, &enc_key).expect("encode");
    let decoded = jsonwebtoken::decode::<JwtClaims>(&token, &dec_key, &validation).expect("decode");
    assert_eq!(decoded.claims.name, claims.name);
    assert_eq!(jwt_token.len(), token.len(), "same token shape");

    let mut verify = || {
        black_box(w.borrow_mut().verify());
    };
    let mut decode = || {
        let decoded = jsonwebtoken::decode::<JwtClaims>(black_box(&token), &dec_key, &validation);
        drop(black_box(decoded))
    };
    let mut floor = || {
        black_box(w.borrow().floor());
    };
    let mut sign = || {
        black_box(w.borrow().sign());
    };
    let mut encode = || {
        drop(black_box(jsonwebtoken::encode(
            &header,
            black_box(&jc),
            &enc_key,
        )))
    };
    let mut forged = || {
        black_box(w.borrow_mut().reject_forged());
    };
    let mut ops: [&mut dyn FnMut(); 6] = [
        &mut verify,
        &mut decode,
        &mut floor,
        &mut sign,
        &mut encode,
        &mut forged,
    ];
    let mut g = c.benchmark_group("token");
    for (name, op) in NAMES.iter().zip(ops.iter_mut()) {
        g.bench_function(*name, |b| b.iter(&mut **op));
    }
    g.finish();
    c.final_summary();
    summary(&interleaved(&mut ops, 201, 2000));
}

fn summary(m: &[Timing]) {
    println!("\ninterleaved: 201 rounds of 2000 calls each, ops alternating");
    println!("\n| benchmark | median ns/op | fastest round ns/op |\n|---|---:|---:|");
    for (name, t) in NAMES.iter().zip(m) {
        println!("| {name} | {:.0} | {:.0} |", t.median_ns, t.fastest_ns);
    }
    let r = |a: usize, b: usize| {
        (
            m[a].median_ns / m[b].median_ns,
            m[a].fastest_ns / m[b].fastest_ns,
        )
    };
    println!("\n| ratio | median | fastest | target |\n|---|---:|---:|---|");
    let rows = [
        ("jsonwebtoken decode / latchkey verify", r(1, 0), ">= 5x"),
        ("latchkey verify / floor", r(0, 2), "<= 1.3x"),
        ("jsonwebtoken encode / latchkey sign", r(4, 3), ">= 2x"),
        ("latchkey reject forged / floor", r(5, 2), ""),
    ];
    for (name, (median, fastest), target) in rows {
        println!("| {name} | {median:.2}x | {fastest:.2}x | {target} |");
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    benches(&mut c);
}

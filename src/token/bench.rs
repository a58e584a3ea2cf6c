//! The token benchmark, one definition for `latchkey token bench` (operators measuring
//! their own host) and `cargo bench --bench token` (which adds jsonwebtoken beside it).
//!
//! [`Workload`] holds a throwaway key, a realistic token (our header with `kid`, every
//! claim, realistic values) and a forgery of it, and runs each operation once:
//! verifying, refusing the forged signature, signing, and the floor: a pre-keyed
//! HMAC-SHA256 over the same signing input plus a 32-byte constant-time compare, the work
//! no HS256 verifier can skip. [`interleaved`] times several operations in alternating
//! rounds, so that a busy machine slows all of them alike, and reports medians.
//!
//! Unlike the rest of `token`, this reads a clock (`Instant`); nothing else uses it.

use std::hint::black_box;
use std::time::Instant;

use hmac::Mac;

use super::{
    Amr, Claims, Clock, HmacSha256, Signer, TokenBuf, Validation, Verifier, base64url, hmac_sha256,
};
use crate::keys::{Key, KeyError, KeyRing};

/// The operations of the token benchmark, ready to run.
pub struct Workload {
    signer: Signer,
    verifier: Verifier,
    claims: Claims<'static>,
    token: String,
    forged: String,
    /// The floor's pre-keyed MAC, and the tag it checks.
    keyed: HmacSha256,
    tag: [u8; 32],
    buf: TokenBuf,
}

impl Workload {
    /// A workload under a fresh random key (kept in memory only), with claims issued now
    /// on the system clock, as a server verifies them.
    pub fn new() -> Result<Workload, KeyError> {
        let secret = crate::keys::try_generate_secret()?;
        Workload::with_secret(secret.as_bytes())
    }

    /// A workload under the key `secret` (at least 32 bytes).
    pub fn with_secret(secret: &[u8]) -> Result<Workload, KeyError> {
        let ring = KeyRing::new(vec![Key::new(secret.to_vec())?])?;
        let now = Clock::System.now();
        let claims = Claims {
            sub: "1042".into(),
            user_id: 1042,
            name: "margaret.hamilton".into(),
            role: "admin".into(),
            iat: now - 120,
            exp: now + 3480,
            iss: "latchkey".into(),
            auth_time: now - 7200,
            ver: 3,
            amr: Amr::PWD,
            jti: Some("q7Xb2LmN9pRt4VwYz0Ac1D".into()),
        };
        let signer = Signer::new(&ring);
        let token = signer.sign(&claims);
        // The same token with one character of its signature changed.
        let mut forged = token.clone();
        let at = forged.len() - 20;
        let swap = if &forged[at..=at] == "A" { "B" } else { "A" };
        forged.replace_range(at..=at, swap);
        let signature = token.rsplit_once('.').map_or("", |(_, s)| s);
        let mut tag = [0u8; 32];
        base64url::decode(signature.as_bytes(), &mut tag);
        Ok(Workload {
            signer,
            verifier: Verifier::new(&ring, Validation::new("latchkey", Clock::System)),
            claims,
            token,
            forged,
            keyed: hmac_sha256(secret),
            tag,
            buf: TokenBuf::new(),
        })
    }

    /// The claims signed.
    pub fn claims(&self) -> &Claims<'static> {
        &self.claims
    }

    /// The token verified.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Verifies the token; true when it verified (it always should).
    pub fn verify(&mut self) -> bool {
        let claims = self.verifier.verify(black_box(&self.token), &mut self.buf);
        black_box(claims).is_ok()
    }

    /// Verifies the forged token; true when it was refused (it always should be).
    pub fn reject_forged(&mut self) -> bool {
        let claims = self.verifier.verify(black_box(&self.forged), &mut self.buf);
        black_box(claims).is_err()
    }

    /// Signs the claims; the token's length.
    pub fn sign(&self) -> usize {
        black_box(self.signer.sign(black_box(&self.claims))).len()
    }

    /// The floor: a clone of the pre-keyed MAC over the token's signing input, and the
    /// constant-time compare with its tag; true when they match (they always should).
    pub fn floor(&self) -> bool {
        let signing_input = self.token.rsplit_once('.').map_or("", |(input, _)| input);
        let mut mac = self.keyed.clone();
        mac.update(black_box(signing_input).as_bytes());
        mac.verify_slice(black_box(&self.tag)).is_ok()
    }
}

/// How long one operation took in [`interleaved`] rounds, nanoseconds per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// The median over the rounds.
    pub median_ns: f64,
    /// The fastest round.
    pub fastest_ns: f64,
}

/// Runs each of `ops` `batch` times in turn, `rounds` times over, and returns each one's
/// median and fastest ns/call. Interleaving makes load from other programs fall on all
/// of them alike, so their ratios hold on a busy machine.
pub fn interleaved(ops: &mut [&mut dyn FnMut()], rounds: usize, batch: u32) -> Vec<Timing> {
    let mut samples = vec![Vec::with_capacity(rounds); ops.len()];
    for _ in 0..rounds {
        for (op, out) in ops.iter_mut().zip(samples.iter_mut()) {
            let start = Instant::now();
            for _ in 0..batch {
                op();
            }
            out.push(start.elapsed().as_nanos() as f64 / f64::from(batch.max(1)));
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            Timing {
                median_ns: s.get(s.len() / 2).copied().unwrap_or(f64::NAN),
                fastest_ns: s.first().copied().unwrap_or(f64::NAN),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_does_what_it_says() {
        let mut w = Workload::new().expect("random key");
        assert!(w.verify() && w.reject_forged() && w.floor());
        assert_eq!(w.sign(), w.token().len());
        let timings = interleaved(
            &mut [&mut || {
                black_box(w.floor());
            }],
            3,
            10,
        );
        assert_eq!(timings.len(), 1);
        assert!(timings[0].fastest_ns > 0.0);
        assert!(timings[0].fastest_ns <= timings[0].median_ns);
    }
}

//! argon2id password hashing: the rules a password must meet, hashing to a PHC
//! string, verification against a stored PHC string, and the parameter change on
//! login (a hash made with other parameters is re-made at the configured ones after a
//! successful check, so a new cost reaches every active user without a reset).
//!
//! Verification of an unknown user does the same amount of work as a real check, so
//! response times do not tell which names exist. While stored hashes were made at
//! different costs (after the cost was changed, until each user logs in again, which
//! a dormant account never does), an unknown name is checked at a cost drawn from how
//! those costs are spread over the users ([`CostMix`]), the same for the same name each
//! time: a name's timing then says nothing about whether it exists.

use argon2::{Algorithm, Argon2, PasswordHash, PasswordHasher, Version};

/// The fewest bytes a password may have.
pub const MIN_LEN: usize = 8;
/// The most bytes a password may have (a bound on the work one login can cause).
pub const MAX_LEN: usize = 1024;

/// The salt of the dummy hash in [`Passwords::verify_unknown`]. It need not be
/// secret: its output is thrown away.
const DUMMY_SALT: &[u8; 16] = b"latchkey-unknown";

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Memory in KiB (at least 8 × `p`).
    pub m_kib: u32,
    /// Iterations (at least 1).
    pub t: u32,
    /// Parallelism (lanes, at least 1).
    pub p: u32,
}

impl Default for Params {
    /// The OWASP baseline: 19 MiB, t=2, p=1.
    fn default() -> Params {
        Params {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
        }
    }
}

impl std::fmt::Display for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m={} KiB, t={}, p={}", self.m_kib, self.t, self.p)
    }
}

/// The outcome of a password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Right password; `rehash` holds a new PHC string when the stored parameters were
    /// not the configured ones.
    Match {
        /// Replacement hash to store, if any.
        rehash: Option<String>,
    },
    /// Wrong password (or unknown user, or an unreadable stored hash).
    Mismatch,
}

/// Hashes and verifies passwords with fixed parameters.
///
/// Cheap to clone and shareable between threads; every call allocates its own
/// `m_kib` of working memory for the duration of the hash.
#[derive(Debug, Clone)]
pub struct Passwords {
    params: Params,
    argon: argon2::Params,
}

impl Passwords {
    /// A hasher with these parameters; fails when argon2 refuses them.
    pub fn new(params: Params) -> Result<Passwords, PasswordError> {
        let argon = argon2::Params::new(params.m_kib, params.t, params.p, None).map_err(|e| {
            PasswordError::Params(format!(
                "argon2 refuses {params}: {e} (m must be at least 8 × p KiB, t and p at least 1)"
            ))
        })?;
        Ok(Passwords { params, argon })
    }

    /// The configured parameters.
    pub fn params(&self) -> Params {
        self.params
    }

    fn argon2(&self) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, self.argon.clone())
    }

    /// Checks the rules, then returns a PHC string (`$argon2id$v=19$m=…`) with a fresh salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        check_rules(password)?;
        let salt = argon2::password_hash::try_generate_salt()
            .map_err(|e| PasswordError::Random(e.to_string()))?;
        let phc = self
            .argon2()
            .hash_password_with_salt(password.as_bytes(), &salt)
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        Ok(phc.to_string())
    }

    /// Verifies against a stored PHC string, using the parameters stored in it.
    ///
    /// On a match, `rehash` is a new hash at the configured parameters when the
    /// stored one differs in m, t or p, or is not argon2id v19; the caller
    /// stores it (see `UserStore::record_login`). An unparseable PHC string is a
    /// `Mismatch`, after the same work as a real check.
    pub fn verify(&self, password: &str, phc: &str) -> Verdict {
        if password.len() > MAX_LEN {
            return self.verify_unknown(password);
        }
        let Ok(parsed) = PasswordHash::new(phc) else {
            return self.verify_unknown(password);
        };
        let matched = argon2::password_hash::PasswordVerifier::verify_password(
            &self.argon2(),
            password.as_bytes(),
            &parsed,
        )
        .is_ok();
        if !matched {
            return Verdict::Mismatch;
        }
        let rehash = if self.differs(&parsed) {
            // A failed re-hash (no randomness) only postpones the upgrade.
            self.hash(password).ok()
        } else {
            None
        };
        Verdict::Match { rehash }
    }

    /// Whether a stored hash was made at other parameters (or of another kind) than the
    /// configured ones. Stronger ones are re-made too: a cost lowered for a small host
    /// is what the operator asked for, and hashes at one cost keep timings uniform.
    fn differs(&self, parsed: &PasswordHash) -> bool {
        parsed.algorithm.as_str() != "argon2id"
            || parsed.version != Some(Version::V0x13.into())
            || params_of(parsed) != Some(self.params)
    }

    /// Burns the same time as `verify` for an unknown user; always `Mismatch`.
    ///
    /// It hashes the password at the configured parameters with a fixed salt
    /// and throws the result away.
    pub fn verify_unknown(&self, password: &str) -> Verdict {
        self.verify_unknown_at(password, self.params)
    }

    /// Like [`verify_unknown`](Self::verify_unknown), at `params` (drawn from a
    /// [`CostMix`]); the configured parameters when argon2 refuses `params`.
    pub fn verify_unknown_at(&self, password: &str, params: Params) -> Verdict {
        let bytes = password.as_bytes();
        let bytes = &bytes[..bytes.len().min(MAX_LEN)];
        let argon = match argon2::Params::new(params.m_kib, params.t, params.p, None) {
            Ok(p) => Argon2::new(Algorithm::Argon2id, Version::V0x13, p),
            Err(_) => self.argon2(),
        };
        let mut out = [0u8; 32];
        let _ = argon.hash_password_into(bytes, DUMMY_SALT, &mut out);
        std::hint::black_box(out);
        Verdict::Mismatch
    }
}

/// The argon2 parameters of a parsed PHC string, if it has them.
fn params_of(parsed: &PasswordHash) -> Option<Params> {
    let stored = argon2::Params::try_from(parsed).ok()?;
    Some(Params {
        m_kib: stored.m_cost(),
        t: stored.t_cost(),
        p: stored.p_cost(),
    })
}

/// The argon2 parameters a stored PHC string was made with; `None` when it is not an
/// argon2 hash that can be read.
pub fn stored_params(phc: &str) -> Option<Params> {
    params_of(&PasswordHash::new(phc).ok()?)
}

/// How the stored hashes' costs are spread over the users: `(parameters, users)`.
/// [`pick`](Self::pick) draws the cost an unknown name is checked at, so that unknown
/// names fall on each cost as often as real ones do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CostMix {
    shares: Vec<(Params, u64)>,
    total: u64,
}

impl CostMix {
    /// Counts one user whose hash was made at `params`.
    pub fn add(&mut self, params: Params) {
        self.total += 1;
        match self.shares.iter_mut().find(|(p, _)| *p == params) {
            Some((_, n)) => *n += 1,
            None => {
                self.shares.push((params, 1));
                self.shares.sort_by_key(|(p, _)| (p.m_kib, p.t, p.p));
            }
        }
    }

    /// The cost for a name whose keyed hash is `position` (uniform over `u64`): each
    /// cost for its share of the users. The map is monotonic in `position`, so a few
    /// users more or less move few names to another cost. `None` while nobody is counted.
    pub fn pick(&self, position: u64) -> Option<Params> {
        if self.total == 0 {
            return None;
        }
        let mut at = ((u128::from(position) * u128::from(self.total)) >> 64) as u64;
        for (params, n) in &self.shares {
            if at < *n {
                return Some(*params);
            }
            at -= n;
        }
        self.shares.last().map(|(p, _)| *p)
    }

    /// Whether every counted hash was made at `params` (or nothing is counted).
    pub fn only(&self, params: Params) -> bool {
        self.shares.iter().all(|(p, _)| *p == params)
    }
}

/// Checks the password rules: 8–1024 bytes (a `&str` is always UTF-8).
pub fn check_rules(password: &str) -> Result<(), PasswordError> {
    if password.len() < MIN_LEN {
        Err(PasswordError::TooShort)
    } else if password.len() > MAX_LEN {
        Err(PasswordError::TooLong)
    } else {
        Ok(())
    }
}

/// Why a password was refused or could not be hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordError {
    /// Fewer than 8 bytes.
    TooShort,
    /// More than 1024 bytes.
    TooLong,
    /// The password bytes are not UTF-8 (from a terminal or stdin).
    NotUtf8,
    /// argon2 refused the configured parameters; the text says which rule.
    Params(String),
    /// The system random source failed while making a salt.
    Random(String),
    /// argon2 failed while hashing.
    Hash(String),
}

impl std::fmt::Display for PasswordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordError::TooShort => write!(
                f,
                "the password is too short: use at least {MIN_LEN} bytes \
                 (characters outside ASCII count 2 to 4 bytes each)"
            ),
            PasswordError::TooLong => write!(
                f,
                "the password is too long: use at most {MAX_LEN} bytes \
                 (characters outside ASCII count 2 to 4 bytes each)"
            ),
            PasswordError::NotUtf8 => write!(f, "the password is not valid UTF-8 text"),
            PasswordError::Params(why) => write!(f, "bad password hashing parameters: {why}"),
            PasswordError::Random(why) => {
                write!(
                    f,
                    "cannot make a salt: the system random source failed: {why}"
                )
            }
            PasswordError::Hash(why) => write!(f, "password hashing failed: {why}"),
        }
    }
}

impl std::error::Error for PasswordError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Low cost so the tests run fast; the real default has its own test.
    fn fast() -> Passwords {
        Passwords::new(Params {
            m_kib: 1024,
            t: 1,
            p: 1,
        })
        .expect("valid params")
    }

    #[test]
    fn rules_say_which_one_failed() {
        assert_eq!(check_rules("short"), Err(PasswordError::TooShort));
        assert_eq!(check_rules(""), Err(PasswordError::TooShort));
        assert_eq!(check_rules("12345678"), Ok(()));
        assert_eq!(check_rules(&"x".repeat(MAX_LEN)), Ok(()));
        assert_eq!(
            check_rules(&"x".repeat(MAX_LEN + 1)),
            Err(PasswordError::TooLong)
        );
        // Bytes, not characters: 4 × 'é' is 8 bytes.
        assert_eq!(check_rules("éééé"), Ok(()));
        assert!(
            PasswordError::TooShort
                .to_string()
                .contains("at least 8 bytes")
        );
        assert!(
            PasswordError::TooLong
                .to_string()
                .contains("at most 1024 bytes")
        );
    }

    #[test]
    fn hash_checks_rules_first() {
        let pw = fast();
        assert_eq!(pw.hash("short"), Err(PasswordError::TooShort));
        assert_eq!(pw.hash(&"y".repeat(2000)), Err(PasswordError::TooLong));
    }

    #[test]
    fn hash_then_verify() {
        let pw = fast();
        let phc = pw.hash("correct horse").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        assert_eq!(
            pw.verify("correct horse", &phc),
            Verdict::Match { rehash: None }
        );
        assert_eq!(pw.verify("correct horsE", &phc), Verdict::Mismatch);
        assert_eq!(pw.verify("", &phc), Verdict::Mismatch);
        // Salts differ between two hashes of one password.
        assert_ne!(pw.hash("correct horse").expect("hash"), phc);
    }

    #[test]
    fn unparseable_phc_is_a_mismatch() {
        let pw = fast();
        for junk in [
            "",
            "plain",
            "$argon2id$",
            "$argon2id$v=19$m=1024,t=1,p=1$",
            "$fake$hash",
        ] {
            assert_eq!(pw.verify("whatever1", junk), Verdict::Mismatch, "{junk}");
        }
    }

    #[test]
    fn over_long_password_never_matches() {
        let pw = fast();
        let phc = pw.hash("correct horse").expect("hash");
        assert_eq!(pw.verify(&"z".repeat(MAX_LEN + 1), &phc), Verdict::Mismatch);
    }

    #[test]
    fn verify_unknown_is_a_mismatch() {
        let pw = fast();
        assert_eq!(pw.verify_unknown("anything at all"), Verdict::Mismatch);
        assert_eq!(pw.verify_unknown(""), Verdict::Mismatch);
        assert_eq!(pw.verify_unknown(&"z".repeat(5000)), Verdict::Mismatch);
    }

    #[test]
    fn stored_params_other_than_the_configured_ones_are_rehashed() {
        let weak = Passwords::new(Params {
            m_kib: 512,
            t: 1,
            p: 1,
        })
        .expect("params");
        let phc = weak.hash("correct horse").expect("hash");
        for stronger in [
            Params {
                m_kib: 1024,
                t: 1,
                p: 1,
            },
            Params {
                m_kib: 512,
                t: 2,
                p: 1,
            },
            Params {
                m_kib: 512,
                t: 1,
                p: 2,
            },
        ] {
            let strong = Passwords::new(stronger).expect("params");
            let Verdict::Match { rehash: Some(new) } = strong.verify("correct horse", &phc) else {
                panic!("expected a rehash at {stronger}");
            };
            let expected = format!("m={},t={},p={}$", stronger.m_kib, stronger.t, stronger.p);
            assert!(new.contains(&expected), "{new}");
            assert_eq!(
                strong.verify("correct horse", &new),
                Verdict::Match { rehash: None }
            );
            // A wrong password never yields a rehash.
            assert_eq!(strong.verify("wrong horse", &phc), Verdict::Mismatch);
        }
        // Stronger stored params than configured: re-made at the configured cost too
        // (what the operator asked for, and uniform timings).
        let strong = Passwords::new(Params {
            m_kib: 2048,
            t: 2,
            p: 1,
        })
        .expect("params");
        let phc = strong.hash("correct horse").expect("hash");
        let Verdict::Match { rehash: Some(new) } = weak.verify("correct horse", &phc) else {
            panic!("a stronger stored hash is re-made at the configured cost");
        };
        assert!(new.contains("m=512,t=1,p=1$"), "{new}");
        assert_eq!(
            weak.verify("correct horse", &new),
            Verdict::Match { rehash: None }
        );
    }

    #[test]
    fn other_argon2_variants_are_upgraded_to_argon2id() {
        let params = argon2::Params::new(1024, 1, 1, None).expect("params");
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params);
        let phc = argon2i
            .hash_password_with_salt(b"correct horse", b"saltsaltsaltsalt")
            .expect("hash")
            .to_string();
        let Verdict::Match { rehash: Some(new) } = fast().verify("correct horse", &phc) else {
            panic!("expected a rehash of an argon2i hash");
        };
        assert!(new.starts_with("$argon2id$"));
    }

    #[test]
    fn params_are_checked() {
        let err = Passwords::new(Params {
            m_kib: 4,
            t: 1,
            p: 1,
        })
        .expect_err("too little memory");
        assert!(matches!(err, PasswordError::Params(_)));
        assert!(err.to_string().contains("m=4 KiB"), "{err}");
        assert!(
            Passwords::new(Params {
                m_kib: 1024,
                t: 0,
                p: 1
            })
            .is_err()
        );
        assert!(
            Passwords::new(Params {
                m_kib: 1024,
                t: 1,
                p: 0
            })
            .is_err()
        );
    }

    #[test]
    fn default_params_are_owasp() {
        let pw = Passwords::new(Params::default()).expect("defaults");
        let phc = pw.hash("correct horse battery").expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_eq!(
            pw.verify("correct horse battery", &phc),
            Verdict::Match { rehash: None }
        );
    }

    #[test]
    fn passwords_is_shareable() {
        fn assert_send_sync_clone<T: Send + Sync + Clone>() {}
        assert_send_sync_clone::<Passwords>();
    }

    #[test]
    fn a_cost_mix_spreads_positions_by_share_and_moves_few_on_a_change() {
        let (a, b) = (
            Params {
                m_kib: 8192,
                t: 1,
                p: 1,
            },
            Params {
                m_kib: 19456,
                t: 2,
                p: 1,
            },
        );
        let mut mix = CostMix::default();
        assert_eq!(mix.pick(42), None);
        assert!(mix.only(a));
        for _ in 0..3 {
            mix.add(a);
        }
        mix.add(b);
        assert!(!mix.only(a));
        // A quarter of positions fall on b, in a whole stretch.
        let picks: Vec<Params> = (0..1000u64)
            .map(|i| mix.pick(i.wrapping_mul(u64::MAX / 1000)).unwrap())
            .collect();
        let on_b = picks.iter().filter(|p| **p == b).count();
        assert!((240..=260).contains(&on_b), "{on_b}");
        // One user more moves few positions.
        let mut more = mix.clone();
        more.add(a);
        let moved = (0..1000u64)
            .filter(|i| {
                let at = i.wrapping_mul(u64::MAX / 1000);
                mix.pick(at) != more.pick(at)
            })
            .count();
        assert!(moved <= 60, "{moved} of 1000 moved");
    }

    #[test]
    fn stored_params_are_read_from_the_phc_string() {
        let pw = Passwords::new(Params {
            m_kib: 512,
            t: 3,
            p: 1,
        })
        .expect("params");
        let phc = pw.hash("correct horse").expect("hash");
        assert_eq!(
            stored_params(&phc),
            Some(Params {
                m_kib: 512,
                t: 3,
                p: 1
            })
        );
        assert_eq!(stored_params("$fake$hash"), None);
    }
}

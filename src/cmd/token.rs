//! `latchkey key generate` and `latchkey token issue|verify|bench`: key files and tokens
//! by hand, for operators and tests, and the token speed of this host.
//!
//! `token verify` exits 0 when the token is valid, 3 when expired, 4 when malformed and
//! 5 when invalid, printing `<class>: <reason>` on stderr; 1 for I/O and key errors.
//! `token issue` refuses what the server would never issue: names and roles the store
//! refuses, lifetimes outside the `ttl` setting's bounds.

use std::io::BufRead;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;

use latchkey::config::{Config, ConfigError, Value};

use latchkey::keys::{self, KeyRing};
use latchkey::store;
use latchkey::token::bench::{Timing, Workload, interleaved};
use latchkey::token::{
    Amr, Claims, Clock, ErrorClass, MAX_TTL, MIN_TTL, Signer, TokenBuf, Validation, Verifier,
};

use super::serve::ConfigArgs;

/// Where the keys and token settings come from: the configuration `latchkey serve`
/// builds (defaults, `--config`, `LATCHKEY_*`, these flags), so the commands use the
/// server's key files, issuer, leeway and lifetime unless told otherwise.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenConfig {
    #[command(flatten)]
    source: ConfigArgs,
    /// The data directory (its secret.key is the key when no key file is named).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Key file; repeat for several keys (the first signs, all verify) [default: the
    /// server's: $CREDENTIALS_DIRECTORY/latchkey.key, else <data_dir>/secret.key].
    #[arg(long = "key-file", value_name = "FILE")]
    key_files: Vec<PathBuf>,
}

impl TokenConfig {
    /// The configuration with these flags and `more` applied.
    fn load(&self, more: &[(&'static str, Value)]) -> Result<Config, ConfigError> {
        let mut flags: Vec<(&str, Value)> = more.to_vec();
        if let Some(dir) = &self.data_dir {
            flags.push(("data_dir", Value::Text(dir.to_string_lossy().into_owned())));
        }
        if !self.key_files.is_empty() {
            let files = self
                .key_files
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            flags.push(("key_files", Value::List(files)));
        }
        self.source.load(&flags)
    }
}

/// The key subcommands.
#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Write a new random key file (256 bits, mode 0600); never overwrites.
    Generate {
        /// Where to write the key [default: secret.key in the data directory, the file
        /// `latchkey serve` reads when no key file is configured].
        path: Option<PathBuf>,
        #[command(flatten)]
        source: ConfigArgs,
        /// The data directory [default: the config file's, else $STATE_DIRECTORY, else
        /// ./latchkey-data].
        #[arg(long, value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

/// The token subcommands.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Verify a token: claims JSON on stdout; exit 0 valid, 3 expired, 4 malformed, 5 invalid.
    Verify {
        #[command(flatten)]
        keys: TokenConfig,
        /// The required issuer (`iss`) [default: the configured issuer].
        #[arg(long, value_name = "I")]
        issuer: Option<String>,
        /// Seconds of clock skew tolerated [default: the configured leeway].
        #[arg(long, value_name = "S")]
        leeway: Option<u64>,
        /// Lifetime assumed for tokens of the original design that carry no `iat`
        /// [default: the configured ttl].
        #[arg(long, value_name = "S")]
        ttl: Option<u64>,
        /// The token, or `-` to read it from one line of stdin (keeps it out of `ps`).
        token: String,
    },
    /// Issue a token signed with the primary key and print it (as a login would:
    /// `iat` = `auth_time` = now, `amr` ["pwd"], a login id of its own).
    Issue {
        #[command(flatten)]
        keys: TokenConfig,
        /// The user id.
        #[arg(long, value_name = "ID")]
        sub: u64,
        /// The user name (the store's rules: ASCII letters, digits, '.', '_', '-', '@').
        #[arg(long, value_name = "N")]
        name: String,
        /// The role (the store's rules, lowercase).
        #[arg(long, value_name = "R")]
        role: String,
        /// The user's token version (`latchkey user list --json` shows it); a token
        /// with an older version is refused as revoked by the server holding the store.
        #[arg(long, value_name = "V", default_value_t = 0)]
        ver: u64,
        /// Lifetime in seconds, within the `ttl` setting's bounds (60 s to 30 days)
        /// [default: the configured ttl].
        #[arg(long, value_name = "S",
              value_parser = clap::value_parser!(u64).range(MIN_TTL..=MAX_TTL))]
        ttl: Option<u64>,
        /// The issuer (`iss`) [default: the configured issuer].
        #[arg(long, value_name = "I")]
        issuer: Option<String>,
    },
    /// Time verification, forged-signature rejection and signing on this host against
    /// the floor (a keyed HMAC-SHA256 and a compare); a throwaway key, no data dir.
    Bench {
        /// Print one JSON object: {"verify_ns","reject_forged_ns","sign_ns","floor_ns"}.
        #[arg(long)]
        json: bool,
        /// Interleaved rounds of 2000 calls of each operation; medians are over rounds.
        #[arg(long, value_name = "N", default_value_t = 501,
              value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        rounds: u32,
    },
}

/// Runs a key subcommand.
pub fn run_key(command: KeyCommand) -> ExitCode {
    match command {
        KeyCommand::Generate {
            path,
            source,
            data_dir,
        } => {
            let path = match path {
                Some(path) => path,
                None => {
                    let mut flags = Vec::new();
                    if let Some(dir) = &data_dir {
                        flags.push(("data_dir", Value::Text(dir.to_string_lossy().into_owned())));
                    }
                    let dir = match source.load(&flags) {
                        Ok(config) => config.data_dir,
                        Err(err) => return super::fail(err),
                    };
                    if let Err(err) = std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(&dir)
                    {
                        return super::fail(format_args!(
                            "cannot create the data directory {}: {err}",
                            dir.display()
                        ));
                    }
                    dir.join("secret.key")
                }
            };
            if let Err(err) = keys::generate(&path) {
                return super::fail(err);
            }
            match keys::load_file(&path) {
                Ok(key) => {
                    println!("wrote {} (kid {})", path.display(), key.kid());
                    ExitCode::SUCCESS
                }
                Err(err) => super::fail(err),
            }
        }
    }
}

/// Runs a token subcommand.
pub fn run_token(command: TokenCommand) -> ExitCode {
    match command {
        TokenCommand::Verify {
            keys,
            issuer,
            leeway,
            ttl,
            token,
        } => {
            let mut more = Vec::new();
            if let Some(issuer) = issuer {
                more.push(("issuer", Value::Text(issuer)));
            }
            if let Some(leeway) = leeway {
                more.push(("leeway", Value::Text(leeway.to_string())));
            }
            if let Some(ttl) = ttl {
                more.push(("ttl", Value::Text(ttl.to_string())));
            }
            match keys.load(&more) {
                Ok(config) => verify(&config, token),
                Err(err) => super::fail(err),
            }
        }
        TokenCommand::Issue {
            keys,
            sub,
            name,
            role,
            ver,
            ttl,
            issuer,
        } => {
            let name = match store::validate_name(&name) {
                Ok(name) => name,
                Err(err) => return super::fail(err),
            };
            if let Err(err) = store::validate_role(&role) {
                return super::fail(err);
            }
            let mut more = Vec::new();
            if let Some(issuer) = issuer {
                more.push(("issuer", Value::Text(issuer)));
            }
            let config = match keys.load(&more) {
                Ok(config) => config,
                Err(err) => return super::fail(err),
            };
            let ring = match KeyRing::load(&config.effective_key_files()) {
                Ok(ring) => ring,
                Err(err) => return super::fail(err),
            };
            let now = Clock::System.now();
            let ttl = ttl.unwrap_or(config.ttl);
            let claims = Claims {
                sub: sub.to_string().into(),
                user_id: sub,
                name: name.into(),
                role: role.into(),
                iat: now,
                exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
                iss: config.issuer.into(),
                auth_time: now,
                ver,
                amr: Amr::PWD,
                jti: Some(latchkey::auth::new_login_id().into()),
            };
            println!("{}", Signer::new(&ring).sign(&claims));
            ExitCode::SUCCESS
        }
        TokenCommand::Bench { json, rounds } => bench(json, rounds),
    }
}

/// Calls of each operation per round of `token bench`.
const BENCH_BATCH: u32 = 2000;

/// `token bench`: the four operations in interleaved rounds, medians printed.
fn bench(json: bool, rounds: u32) -> ExitCode {
    let mut workload = match Workload::new() {
        Ok(workload) => workload,
        Err(err) => return super::fail(err),
    };
    if !(workload.verify() && workload.reject_forged() && workload.floor()) {
        return super::fail("the benchmark's own token did not verify; this is a bug");
    }
    let w = std::cell::RefCell::new(workload);
    let mut verify = || {
        std::hint::black_box(w.borrow_mut().verify());
    };
    let mut reject = || {
        std::hint::black_box(w.borrow_mut().reject_forged());
    };
    let mut sign = || {
        std::hint::black_box(w.borrow().sign());
    };
    let mut floor = || {
        std::hint::black_box(w.borrow().floor());
    };
    let mut ops: [&mut dyn FnMut(); 4] = [&mut verify, &mut reject, &mut sign, &mut floor];
    // A few rounds first, unrecorded, for the caches and the clock speed to settle.
    interleaved(&mut ops, rounds.min(20) as usize, BENCH_BATCH);
    let t = interleaved(&mut ops, rounds as usize, BENCH_BATCH);
    let [verify, reject, sign, floor] = [t[0], t[1], t[2], t[3]].map(|t: Timing| t.median_ns);
    if json {
        println!(
            r#"{{"verify_ns":{verify:.1},"reject_forged_ns":{reject:.1},"sign_ns":{sign:.1},"floor_ns":{floor:.1}}}"#
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "latchkey token bench: {rounds} interleaved rounds of {BENCH_BATCH} calls each \
         (medians, one core)\n"
    );
    println!(
        "{:<30} {:>8} {:>15} {:>9}",
        "operation", "ns/op", "ops/s per core", "vs floor"
    );
    for (name, ns) in [
        ("verify", verify),
        ("reject a forged signature", reject),
        ("sign", sign),
        ("floor: HMAC-SHA256 + compare", floor),
    ] {
        let per_second = thousands((1e9 / ns).round() as u64);
        println!("{name:<30} {ns:>8.0} {per_second:>15} {:>8.2}x", ns / floor);
    }
    println!(
        "\nThe floor is the least any HS256 verifier must do: the keyed HMAC-SHA256 of the \
         same\ntoken's signing input and a constant-time compare of the 32-byte tag."
    );
    ExitCode::SUCCESS
}

fn verify(config: &Config, token: String) -> ExitCode {
    let ring = match KeyRing::load(&config.effective_key_files()) {
        Ok(ring) => ring,
        Err(err) => return super::fail(err),
    };
    let token = if token == "-" {
        let mut line = String::new();
        if let Err(err) = std::io::stdin().lock().read_line(&mut line) {
            return super::fail(format_args!("cannot read the token from stdin: {err}"));
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    } else {
        token
    };
    let validation = Validation {
        issuer: config.issuer.clone(),
        leeway: config.leeway,
        ttl: config.ttl,
        clock: Clock::System,
    };
    let mut buf = TokenBuf::new();
    match Verifier::new(&ring, validation).verify(&token, &mut buf) {
        Ok(claims) => match serde_json::to_string(&claims) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(err) => super::fail(err),
        },
        Err(err) => {
            let class = err.class();
            eprintln!("{class}: {err}");
            ExitCode::from(match class {
                ErrorClass::Expired => 3,
                ErrorClass::Malformed => 4,
                ErrorClass::Invalid | ErrorClass::Revoked => 5,
            })
        }
    }
}

/// `n` with a comma between thousands: 3,299,051.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn thousands_are_separated() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(3_299_051), "3,299,051");
        assert_eq!(thousands(u64::MAX), "18,446,744,073,709,551,615");
    }
}

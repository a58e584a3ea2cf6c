//! `latchkey key generate` and `latchkey token issue|verify`: key files and tokens by hand,
//! for operators and tests.
//!
//! `token verify` exits 0 when the token is valid, 3 when expired, 4 when malformed and
//! 5 when invalid, printing `<class>: <reason>` on stderr; 1 for I/O and key errors.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use latchkey::keys::{self, KeyRing};
use latchkey::token::{
    Amr, Claims, Clock, DEFAULT_ISSUER, DEFAULT_LEEWAY, DEFAULT_TTL, ErrorClass, Signer, TokenBuf,
    Validation, Verifier,
};

/// The key file used when none is given and `LATCHKEY_KEY_FILE` is unset.
const DEFAULT_KEY_FILE: &str = "latchkey-data/secret.key";

/// The key subcommands.
#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Write a new random key file (256 bits, mode 0600); never overwrites.
    Generate {
        /// Where to write the key.
        #[arg(default_value = "latchkey.key")]
        path: PathBuf,
    },
}

/// The token subcommands.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Verify a token: claims JSON on stdout; exit 0 valid, 3 expired, 4 malformed, 5 invalid.
    Verify {
        /// Key file; repeat for several keys (all verify).
        #[arg(long = "key-file", value_name = "F", env = "LATCHKEY_KEY_FILE",
              default_value = DEFAULT_KEY_FILE)]
        key_files: Vec<PathBuf>,
        /// The required issuer (`iss`).
        #[arg(long, value_name = "I", default_value = DEFAULT_ISSUER)]
        issuer: String,
        /// Seconds of clock skew tolerated.
        #[arg(long, value_name = "S", default_value_t = DEFAULT_LEEWAY)]
        leeway: u64,
        /// Lifetime assumed for tokens of the original design that carry no `iat`.
        #[arg(long, value_name = "S", default_value_t = DEFAULT_TTL)]
        ttl: u64,
        /// The token, or `-` to read it from one line of stdin (keeps it out of `ps`).
        token: String,
    },
    /// Issue a token signed with the key file's key and print it.
    Issue {
        /// The signing key file.
        #[arg(long = "key-file", value_name = "F", env = "LATCHKEY_KEY_FILE",
              default_value = DEFAULT_KEY_FILE)]
        key_file: PathBuf,
        /// The user id.
        #[arg(long, value_name = "ID")]
        sub: u64,
        /// The user name.
        #[arg(long, value_name = "N")]
        name: String,
        /// The role.
        #[arg(long, value_name = "R")]
        role: String,
        /// Lifetime in seconds.
        #[arg(long, value_name = "S", default_value_t = DEFAULT_TTL)]
        ttl: u64,
        /// The issuer (`iss`).
        #[arg(long, value_name = "I", default_value = DEFAULT_ISSUER)]
        issuer: String,
    },
}

/// Runs a key subcommand.
pub fn run_key(command: KeyCommand) -> ExitCode {
    match command {
        KeyCommand::Generate { path } => {
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
            key_files,
            issuer,
            leeway,
            ttl,
            token,
        } => verify(&key_files, issuer, leeway, ttl, token),
        TokenCommand::Issue {
            key_file,
            sub,
            name,
            role,
            ttl,
            issuer,
        } => {
            let ring = match KeyRing::load(&[key_file]) {
                Ok(ring) => ring,
                Err(err) => return super::fail(err),
            };
            let now = Clock::System.now();
            let claims = Claims {
                sub: sub.to_string().into(),
                user_id: sub,
                name: name.into(),
                role: role.into(),
                iat: now,
                exp: now.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)),
                iss: issuer.into(),
                auth_time: now,
                ver: 0,
                amr: Amr::PWD,
            };
            println!("{}", Signer::new(&ring).sign(&claims));
            ExitCode::SUCCESS
        }
    }
}

fn verify(key_files: &[PathBuf], issuer: String, leeway: u64, ttl: u64, token: String) -> ExitCode {
    let ring = match KeyRing::load(key_files) {
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
        issuer,
        leeway,
        ttl,
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

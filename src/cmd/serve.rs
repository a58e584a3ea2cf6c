//! `latchkey serve`: build the configuration from its layers, then run the server.

use std::path::PathBuf;
use std::process::ExitCode;

use latchkey::config::{Config, Env, Value};
use latchkey::server;

/// Flags of `latchkey serve`; each overrides the config file and the environment.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Directory holding users.redb and the generated secret.key [default: ./latchkey-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Signing key file; repeat for rotation (the first signs, all verify).
    #[arg(long = "key-file", value_name = "FILE")]
    key_files: Vec<PathBuf>,
    /// Worker threads [default: the number of cores].
    #[arg(long, value_name = "N")]
    workers: Option<u64>,
    /// Validate the configuration, keys and store (every record), then exit; writes nothing.
    #[arg(long)]
    check: bool,
    /// Switch the user store to the configured primary key although it was last served
    /// with another one (generating secret.key when the default key file is missing):
    /// every session ends. Needed only once; see docs/store.md, "Keys".
    #[arg(long)]
    replace_key: bool,
    /// Run without a user store: verify tokens only, send logins to --login-url.
    #[arg(long)]
    verify_only: bool,
    /// Where a verify-only instance sends visitors to log in.
    #[arg(long, value_name = "URL")]
    login_url: Option<String>,
}

impl ServeArgs {
    fn flags(&self) -> Vec<(&'static str, Value)> {
        let mut flags = Vec::new();
        let text = |p: &PathBuf| Value::Text(p.to_string_lossy().into_owned());
        if let Some(v) = &self.listen {
            flags.push(("listen", Value::Text(v.clone())));
        }
        if let Some(v) = &self.data_dir {
            flags.push(("data_dir", text(v)));
        }
        if !self.key_files.is_empty() {
            let files = self
                .key_files
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect();
            flags.push(("key_files", Value::List(files)));
        }
        if let Some(v) = self.workers {
            flags.push(("workers", Value::Text(v.to_string())));
        }
        if self.verify_only {
            flags.push(("verify_only", Value::Bool(true)));
        }
        if let Some(v) = &self.login_url {
            flags.push(("login_url", Value::Text(v.clone())));
        }
        flags
    }
}

/// Runs (or with `--check`, validates) the server.
pub fn run(args: ServeArgs) -> ExitCode {
    let config = match Config::load(args.config.as_deref(), &Env::from_process(), &args.flags()) {
        Ok(c) => c,
        Err(e) => return super::fail(e),
    };
    if args.check {
        return match server::check(&config, args.replace_key) {
            Ok(notes) => {
                for note in notes {
                    println!("note: {note}");
                }
                println!("configuration ok");
                ExitCode::SUCCESS
            }
            Err(e) => super::fail(e),
        };
    }
    let prepared = match server::prepare(config, args.replace_key) {
        Ok(p) => p,
        Err(e) => return super::fail(e),
    };
    match server::run(prepared) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}

//! `latchkey store copy --from PATH_OR_URL --to PATH_OR_URL [--force]`: every user from
//! one store to another (redb file or PostgreSQL URL, either way), for moving to a shared
//! database or back, and for putting a backup file into a database.
//!
//! A URL's password comes from the URL or from `store_password_file` (the config file's
//! or `$LATCHKEY_STORE_PASSWORD_FILE`); messages show URLs with the password as `***`.

use std::process::ExitCode;

use latchkey::store::{self, Location};

use super::serve::ConfigArgs;

/// The store subcommands.
#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Copy every user (hashes, versions, roles, locks, second factors) from one store
    /// to another: a users.redb file (or a backup) or a postgres:// URL, either way.
    Copy {
        /// The store to read (never written): a redb file or a postgres:// URL.
        #[arg(long, value_name = "PATH_OR_URL")]
        from: String,
        /// The store to write: a redb file (created, or replaced with --force) or a
        /// postgres:// URL (its tables made when missing).
        #[arg(long, value_name = "PATH_OR_URL")]
        to: String,
        /// Replace the users of a target that has some (a replaced redb file is kept
        /// beside it).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        source: ConfigArgs,
    },
}

/// Runs a store subcommand: 0 when done, 1 (with the reason) otherwise.
pub fn run(command: StoreCommand) -> ExitCode {
    match command {
        StoreCommand::Copy {
            from,
            to,
            force,
            source,
        } => {
            let config = match source.load(&[]) {
                Ok(c) => c,
                Err(e) => return super::fail(e),
            };
            let password_file = config.store_password_file.as_deref();
            let (from, to) = (
                Location::parse(&from, password_file),
                Location::parse(&to, password_file),
            );
            if let Location::File(path) = &to
                && let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
                && !dir.is_dir()
            {
                return super::fail(format!(
                    "the directory {} does not exist; create it first (mode 0700)",
                    dir.display()
                ));
            }
            if let Location::File(path) = &from
                && !path.exists()
            {
                return super::fail(format!("there is no store at {}", path.display()));
            }
            match store::copy(&from, &to, force) {
                Ok(done) => {
                    println!(
                        "copied {} users from {} to {}",
                        done.users,
                        from.display(),
                        to.display()
                    );
                    if let Some(kept) = done.kept {
                        println!("the replaced store was kept as {}", kept.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => super::fail(e),
            }
        }
    }
}

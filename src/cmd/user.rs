//! `latchkey user ...`: manage the users in the store from the command line.
//!
//! When a server holds the store (redb locks the file while it is open), every
//! subcommand goes through its control socket (`control.sock` in the data directory)
//! and the server runs it; otherwise the subcommand opens `users.redb` itself. Either
//! way the same code (`latchkey::ops`) runs, so the output and exit codes are the same.
//! A file that is not a sound store is refused untouched (exit 1, "the user store is
//! damaged: …"); `list` only inspects the store and never writes to it, and names every
//! damaged record (exit 1).
//! Passwords come from a terminal prompt without echo (asked twice), or as one
//! line of stdin when stdin is not a terminal. Passwords and hashes are never
//! printed.

use std::error::Error;
use std::io::{BufRead, IsTerminal, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use latchkey::accounts::{Accounts, Rules, SetupCode, TotpPolicy};
use latchkey::config::{Config, Value};
use latchkey::control;
use latchkey::ops::{self, Command, Output};
use latchkey::password::{self, MAX_LEN, PasswordError, Passwords};
use latchkey::store::{self, Location, OpenError, UserStore};
use latchkey::throttle::Limits;
use latchkey::trust;

use super::serve::ConfigArgs;

/// Where the store is: shared by every user subcommand, `backup` and `restore`. The
/// configuration is built as
/// `latchkey serve` builds it (defaults, `--config`, `LATCHKEY_*`, these flags), so the
/// commands find the server's data directory and use its password hashing cost.
#[derive(clap::Args)]
pub struct StoreArgs {
    #[command(flatten)]
    source: ConfigArgs,
    /// The data directory holding users.redb [default: the config file's, else
    /// $STATE_DIRECTORY, else ./latchkey-data]
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The user store: a postgres:// URL [default: the config file's `store`, else
    /// $LATCHKEY_STORE, else users.redb in the data directory]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
}

/// The data directory of the shipped systemd unit (`StateDirectory=latchkey`).
const SYSTEMD_DATA_DIR: &str = "/var/lib/latchkey";

impl StoreArgs {
    /// The server's configuration with these flags applied. When nothing names a data
    /// directory and `./latchkey-data` does not exist but the shipped unit's
    /// `/var/lib/latchkey` does, that one is meant: `sudo latchkey user add bob` on a
    /// host running the service just works. An existing data directory is judged by
    /// [`trust::resolve`] and given with its symlinks resolved, so that the store file a
    /// command opens by itself is in the directory judged, not wherever a symlink on
    /// the way points by then.
    fn config(&self) -> Result<Config> {
        let mut flags = Vec::new();
        if let Some(dir) = &self.data_dir {
            flags.push(("data_dir", Value::Text(dir.to_string_lossy().into_owned())));
        }
        if let Some(url) = &self.store {
            flags.push(("store", Value::Text(url.clone())));
        }
        let mut config = self.source.load(&flags)?;
        let default = Path::new(latchkey::config::DEFAULT_DATA_DIR);
        if config.data_dir == default && !default.exists() && Path::new(SYSTEMD_DATA_DIR).is_dir() {
            config.data_dir = PathBuf::from(SYSTEMD_DATA_DIR);
        }
        if let Some(judged) = trust::resolve(&config.data_dir)? {
            config.data_dir = judged;
        }
        Ok(config)
    }

    /// The store file: `users.redb` in the configured data directory.
    pub fn store_file(&self) -> Result<PathBuf> {
        Ok(self.config()?.store_path())
    }

    /// Where the store is: the configured `store` URL, else the store file.
    pub fn location(&self) -> Result<Location> {
        Ok(self.config()?.store_location())
    }

    /// The configured data directory.
    pub fn dir(&self) -> Result<PathBuf> {
        Ok(self.config()?.data_dir)
    }
}

/// The user subcommands.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// Add a user; asks for the password (or reads one line of stdin).
    Add {
        /// The user name: 1-64 ASCII letters, digits, '.', '_', '-', '@'.
        name: String,
        /// The role: `user`, `admin`, or another lowercase name.
        #[arg(long, value_name = "R", default_value = store::ROLE_USER)]
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List the users as a table, or as a JSON array with --json.
    List {
        /// Print a JSON array for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's password; ends all their sessions.
    Passwd {
        /// The user name.
        name: String,
        /// The user must choose a new password at the next login.
        #[arg(long)]
        must_change: bool,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Set a user's role.
    Role {
        /// The user name.
        name: String,
        /// The new role.
        role: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Lock a user out; ends all their sessions.
    Lock {
        /// The user name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Let a locked user log in again.
    Unlock {
        /// The user name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// End all sessions of a user ("log out everywhere").
    Revoke {
        /// The user name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a user.
    Remove {
        /// The user name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Remove a user's second factor; ends all their sessions.
    TotpReset {
        /// The user name.
        name: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

type Result<T> = std::result::Result<T, Box<dyn Error>>;

impl UserCommand {
    /// The operator command and where the store is.
    fn into_parts(self) -> (Command, StoreArgs) {
        match self {
            UserCommand::Add { name, role, store } => (
                Command::Add {
                    name,
                    role,
                    password: None,
                },
                store,
            ),
            UserCommand::List { json, store } => (Command::List { json }, store),
            UserCommand::Passwd {
                name,
                must_change,
                store,
            } => (
                Command::Passwd {
                    name,
                    password: None,
                    must_change,
                },
                store,
            ),
            UserCommand::Role { name, role, store } => (Command::Role { name, role }, store),
            UserCommand::Lock { name, store } => (Command::Lock { name }, store),
            UserCommand::Unlock { name, store } => (Command::Unlock { name }, store),
            UserCommand::Revoke { name, store } => (Command::Revoke { name }, store),
            UserCommand::Remove { name, store } => (Command::Remove { name }, store),
            UserCommand::TotpReset { name, store } => (Command::TotpReset { name }, store),
        }
    }
}

/// Runs a user subcommand: through the running server's control socket when one holds
/// the store, else on the store opened here; the same output and exit code either way
/// (0 on success, 1 with `latchkey: <message>` on failure).
pub fn run(command: UserCommand) -> ExitCode {
    let (command, args) = command.into_parts();
    let output = match execute(command, &args) {
        Ok(output) => output,
        Err(e) => Output::fail(e),
    };
    print!("{}", output.stdout);
    eprint!("{}", output.stderr);
    ExitCode::from(output.code)
}

fn execute(command: Command, args: &StoreArgs) -> Result<Output> {
    let config = args.config()?;
    if let Some(mut server) = control::connect(&config.data_dir)? {
        // The checks first, then the password, as offline.
        let checked = server.user(&command)?;
        if checked.code != 0 || !command.wants_password() {
            return Ok(checked);
        }
        let name = command_name(&command);
        let password = read_new_password(&name)?;
        let mut server = control::connect(&config.data_dir)?
            .ok_or("the server stopped while the password was asked for; run the command again")?;
        return Ok(server.user(&command.with_password(password))?);
    }
    let accounts = offline_accounts(&config)?;
    let db = open_for(&command, &config)?;
    let checked = ops::execute(&command, &db, &accounts);
    if checked.code != 0 || !command.wants_password() {
        return Ok(checked);
    }
    let password = read_new_password(&command_name(&command))?;
    Ok(ops::execute(
        &command.with_password(password),
        &db,
        &accounts,
    ))
}

/// The user a password is asked for.
fn command_name(command: &Command) -> String {
    match command {
        Command::Add { name, .. } | Command::Passwd { name, .. } => name.trim().to_string(),
        _ => String::new(),
    }
}

/// The account rules as the server applies them (its hashing cost), for a command run
/// without a server.
fn offline_accounts(config: &Config) -> Result<Accounts> {
    Ok(Accounts::new(Rules {
        passwords: Passwords::new(config.argon2)?,
        throttle: Limits {
            max_failures: 0,
            window: 1,
            lockout: 1,
            capacity: 1,
        },
        login_concurrency: 1,
        signup_open: config.signup_open,
        setup: SetupCode::none(),
        totp: TotpPolicy {
            mode: config.totp,
            required_roles: config.totp_required_roles.clone(),
        },
    }))
}

/// The store opened the way `command` needs it: created by `add` when there is none
/// (with its data directory, mode 0700), only inspected by `list`, else opened as it is.
/// A PostgreSQL store (`--store`, `store`) is opened the same way.
fn open_for(command: &Command, config: &Config) -> Result<UserStore> {
    let location = config.store_location();
    let shown = PathBuf::from(location.display());
    let pool = 2;
    match command {
        Command::Add { name, role, .. } => {
            // A bad name or role is reported before anything is created.
            store::validate_name(name)?;
            store::validate_role(role)?;
            if !location.is_postgres() {
                let dir = &config.data_dir;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| {
                        format!("cannot create the data directory {}: {e}", dir.display())
                    })?;
                // Judged again now that it exists: another user may have made it (or a
                // link in its place) first, in a shared directory, or removed theirs
                // just now to make it again once this command goes on.
                if trust::resolve(dir)?.is_none() {
                    return Err(format!(
                        "the data directory {} vanished as it was made; run the command again",
                        dir.display()
                    )
                    .into());
                }
            }
            Ok(location.open(pool)?)
        }
        Command::List { .. } => location.inspect().map_err(|e| missing_store(&shown, e)),
        _ => location
            .open_existing(pool)
            .map_err(|e| missing_store(&shown, e)),
    }
}

/// An open error, with the hint for a missing store.
pub fn missing_store(file: &Path, e: OpenError) -> Box<dyn Error> {
    match e {
        OpenError::Missing(_) => no_store(file).into(),
        other => other.into(),
    }
}

fn no_store(file: &Path) -> String {
    format!(
        "there is no user store at {}: add the first user with `latchkey user add NAME`, \
         or point --data-dir (or LATCHKEY_DATA_DIR) at the right directory",
        file.display()
    )
}

/// A new password: from the terminal, asked twice without echo, or one line of stdin.
fn read_new_password(name: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {name}: "))
            .map_err(|e| format!("cannot read the password from the terminal: {e}"))?;
        password::check_rules(&first)?;
        let again = rpassword::prompt_password("Repeat the password: ")
            .map_err(|e| format!("cannot read the password from the terminal: {e}"))?;
        if first != again {
            return Err("the two passwords differ; nothing was changed".into());
        }
        return Ok(first);
    }
    // One line, at most MAX_LEN bytes plus the line end; more is reported as too long.
    let mut line = Vec::new();
    let limit = u64::try_from(MAX_LEN + 3).unwrap_or(u64::MAX);
    let read = stdin
        .lock()
        .take(limit)
        .read_until(b'\n', &mut line)
        .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
    if read == 0 {
        return Err("no password on stdin: pipe one line, or run in a terminal to be asked".into());
    }
    if line.ends_with(b"\n") {
        line.pop();
        if line.ends_with(b"\r") {
            line.pop();
        }
    }
    let password = String::from_utf8(line).map_err(|_| PasswordError::NotUtf8)?;
    password::check_rules(&password)?;
    Ok(password)
}

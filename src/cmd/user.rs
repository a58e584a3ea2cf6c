//! `latchkey user ...`: manage the users in the store from the command line.
//!
//! Every subcommand opens `users.redb` in the data directory itself. redb
//! locks the file while it is open, so these commands cannot run while a
//! server holds the store; they then say so plainly (`OpenError::Busy`). A
//! file that is not a sound store is refused untouched (exit 1, "the user store
//! is damaged: …"); `list` only inspects the store and never writes to it, and
//! names every damaged record (exit 1).
//! Passwords come from a terminal prompt without echo (asked twice), or as one
//! line of stdin when stdin is not a terminal. Passwords and hashes are never
//! printed.

use std::error::Error;
use std::io::{BufRead, IsTerminal, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use latchkey::config::{Config, Value};
use latchkey::password::{self, MAX_LEN, PasswordError, Passwords};
use latchkey::store::{
    self, CreateError, DamagedRecord, Entry, OpenError, ReadError, User, UserStore,
};

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
}

impl StoreArgs {
    /// The server's configuration with these flags applied.
    fn config(&self) -> Result<Config> {
        let mut flags = Vec::new();
        if let Some(dir) = &self.data_dir {
            flags.push(("data_dir", Value::Text(dir.to_string_lossy().into_owned())));
        }
        Ok(self.source.load(&flags)?)
    }

    /// The store file: `users.redb` in the configured data directory.
    pub fn store_file(&self) -> Result<PathBuf> {
        Ok(self.config()?.store_path())
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
}

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Runs a user subcommand: 0 on success, 1 (with `latchkey: <message>`) on failure.
pub fn run(command: UserCommand) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => super::fail(e),
    }
}

fn execute(command: UserCommand) -> Result<()> {
    match command {
        UserCommand::Add { name, role, store } => add(&store, &name, &role),
        UserCommand::List { json, store } => list(&store, json),
        UserCommand::Passwd { name, store } => {
            let db = open_existing(&store)?;
            let user = find(&db, &name)?;
            let hash = passwords(&store)?.hash(&read_new_password(&user.name)?)?;
            db.set_password(user.id, &hash)?;
            println!(
                "changed the password of {}; their sessions are revoked",
                user.name
            );
            Ok(())
        }
        UserCommand::Role { name, role, store } => {
            store::validate_role(&role)?;
            let db = open_existing(&store)?;
            let user = db.set_role(find(&db, &name)?.id, &role)?;
            println!("{} now has the role {}", user.name, user.role);
            Ok(())
        }
        UserCommand::Lock { name, store } => {
            let db = open_existing(&store)?;
            let user = db.set_locked(find(&db, &name)?.id, true)?;
            println!("locked {}; their sessions are revoked", user.name);
            Ok(())
        }
        UserCommand::Unlock { name, store } => {
            let db = open_existing(&store)?;
            let user = db.set_locked(find(&db, &name)?.id, false)?;
            println!("unlocked {}", user.name);
            Ok(())
        }
        UserCommand::Revoke { name, store } => {
            let db = open_existing(&store)?;
            let user = db.revoke(find(&db, &name)?.id)?;
            println!("revoked every session of {}", user.name);
            Ok(())
        }
        UserCommand::Remove { name, store } => {
            let db = open_existing(&store)?;
            match db.get_by_name(&name) {
                Ok(Some(user)) => {
                    db.delete(user.id)?;
                    println!("removed {} (id {})", user.name, user.id);
                }
                Ok(None) => return Err(format!("there is no user named {}", name.trim()).into()),
                // A damaged record cannot be read, but it can go.
                Err(ReadError::DamagedRecord(d)) => {
                    db.delete(d.id)?;
                    println!(
                        "removed {} (id {}; its record was damaged)",
                        name.trim(),
                        d.id
                    );
                }
                Err(e) => return Err(e.into()),
            }
            Ok(())
        }
    }
}

fn add(args: &StoreArgs, name: &str, role: &str) -> Result<()> {
    // Check everything that can fail before asking for a password.
    let name = store::validate_name(name)?;
    store::validate_role(role)?;
    let config = args.config()?;
    let dir = &config.data_dir;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let db = UserStore::open(&config.store_path())?;
    if db.id_by_name(&name)?.is_some() {
        return Err(CreateError::NameTaken(name).into());
    }
    let hash = passwords(args)?.hash(&read_new_password(&name)?)?;
    let user = db.create(&name, role, &hash)?;
    println!(
        "added user {} (id {}, role {})",
        user.name, user.id, user.role
    );
    Ok(())
}

/// Lists every user, marking damaged records; exits 1 naming them when the full scan
/// finds damage (the same verdict as `serve --check` and `/healthz`).
fn list(args: &StoreArgs, json: bool) -> Result<()> {
    let file = args.store_file()?;
    let db = UserStore::inspect(&file).map_err(|e| missing_store(&file, e))?;
    let mut rows: Vec<Entry> = Vec::new();
    loop {
        let page = db.list(rows.last().map_or(0, Entry::id), 500)?;
        if page.is_empty() {
            break;
        }
        rows.extend(page);
    }
    if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| match row {
                Entry::User(u) => serde_json::to_value(JsonRow::from(u)),
                Entry::Damaged(d) => serde_json::to_value(JsonDamaged::from(d)),
            })
            .collect::<std::result::Result<_, _>>()?;
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&rows));
    }
    db.scan()?.verdict()?;
    Ok(())
}

/// A damaged record in `list --json`: its id and what is wrong.
#[derive(serde::Serialize)]
struct JsonDamaged<'a> {
    id: u64,
    damaged: &'a str,
}

impl<'a> From<&'a DamagedRecord> for JsonDamaged<'a> {
    fn from(d: &'a DamagedRecord) -> JsonDamaged<'a> {
        JsonDamaged {
            id: d.id,
            damaged: &d.why,
        }
    }
}

/// One user in `list --json`: everything but the password hash.
#[derive(serde::Serialize)]
struct JsonRow<'a> {
    id: u64,
    name: &'a str,
    role: &'a str,
    locked: bool,
    ver: u64,
    created: i64,
    updated: i64,
    last_login: Option<i64>,
}

impl<'a> From<&'a User> for JsonRow<'a> {
    fn from(u: &'a User) -> JsonRow<'a> {
        JsonRow {
            id: u.id,
            name: &u.name,
            role: &u.role,
            locked: u.locked,
            ver: u.ver,
            created: u.created,
            updated: u.updated,
            last_login: u.last_login,
        }
    }
}

/// The readable listing: one row per user, times in UTC; a damaged record gets a row
/// saying so (what is wrong goes to stderr with the exit status).
fn table(entries: &[Entry]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "NAME".into(),
        "ROLE".into(),
        "LOCKED".into(),
        "CREATED".into(),
        "LAST LOGIN".into(),
    ]];
    for entry in entries {
        let u = match entry {
            Entry::User(u) => u,
            Entry::Damaged(d) => {
                let unknown = || "?".to_string();
                rows.push([
                    d.id.to_string(),
                    "(damaged)".into(),
                    unknown(),
                    unknown(),
                    unknown(),
                    unknown(),
                ]);
                continue;
            }
        };
        rows.push([
            u.id.to_string(),
            u.name.clone(),
            u.role.clone(),
            if u.locked { "yes" } else { "no" }.into(),
            latchkey::log::timestamp(u.created),
            u.last_login
                .map_or_else(|| "never".into(), latchkey::log::timestamp),
        ]);
    }
    let mut widths = [0; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Opens the store, refusing to create one: only `add` does that.
fn open_existing(args: &StoreArgs) -> Result<UserStore> {
    let file = args.store_file()?;
    UserStore::open_existing(&file).map_err(|e| missing_store(&file, e))
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

/// The user with this name (ignoring case), or a message naming it.
fn find(db: &UserStore, name: &str) -> Result<User> {
    db.get_by_name(name)?
        .ok_or_else(|| format!("there is no user named {}", name.trim()).into())
}

/// The hasher at the configured parameters, as the server hashes.
fn passwords(args: &StoreArgs) -> Result<Passwords> {
    Ok(Passwords::new(args.config()?.argon2)?)
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

//! The operator's commands on the store (`latchkey user …`): one implementation that the
//! command line runs against a store it opened itself, and that a running server runs
//! for it through the control socket (`control`), so both ways print the same lines and
//! exit with the same codes.
//!
//! A command is plain data ([`Command`], serializable for the socket); [`execute`] runs
//! it with the store and the account rules and answers with what to print ([`Output`]).
//! Commands that take a password are run twice: first without it, so that a bad name or
//! a missing user is reported before anyone is asked for a password, then with it.

use serde::{Deserialize, Serialize};

use crate::accounts::{Accounts, AdminAction, AdminError, CreateError, NewUser};
use crate::store::{Entry, ReadError, StoreError, User, UserStore};

/// One operator command, as the command line gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// Add a user; without a password only the checks run.
    Add {
        /// The name.
        name: String,
        /// The role.
        role: String,
        /// The password, once asked for.
        password: Option<String>,
    },
    /// List the users, as a table or as JSON.
    List {
        /// JSON instead of the table.
        json: bool,
    },
    /// Set a user's password (every session ends); without a password only the checks run.
    Passwd {
        /// The name.
        name: String,
        /// The password, once asked for.
        password: Option<String>,
        /// Whether the user must choose another one at the next login.
        must_change: bool,
    },
    /// Set a user's role.
    Role {
        /// The name.
        name: String,
        /// The new role.
        role: String,
    },
    /// Lock a user out (every session ends).
    Lock {
        /// The name.
        name: String,
    },
    /// Let a locked user log in again.
    Unlock {
        /// The name.
        name: String,
    },
    /// End every session of a user.
    Revoke {
        /// The name.
        name: String,
    },
    /// Delete a user.
    Remove {
        /// The name.
        name: String,
    },
    /// Remove a user's second factor (every session ends).
    TotpReset {
        /// The name.
        name: String,
    },
}

impl Command {
    /// Whether the command needs a password it does not carry yet.
    pub fn wants_password(&self) -> bool {
        matches!(
            self,
            Command::Add { password: None, .. } | Command::Passwd { password: None, .. }
        )
    }

    /// The command with the password filled in.
    pub fn with_password(self, new: String) -> Command {
        match self {
            Command::Add { name, role, .. } => Command::Add {
                name,
                role,
                password: Some(new),
            },
            Command::Passwd {
                name, must_change, ..
            } => Command::Passwd {
                name,
                password: Some(new),
                must_change,
            },
            other => other,
        }
    }

    /// Whether running it changes the store (a read-only `list` can inspect a store
    /// without opening it for writing).
    pub fn writes(&self) -> bool {
        !matches!(self, Command::List { .. })
    }
}

/// What a command prints and how it exits: the same whichever way it ran.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Output {
    /// The exit code: 0 success, 1 failure.
    pub code: u8,
    /// What goes to stdout.
    pub stdout: String,
    /// What goes to stderr (the `latchkey: <message>` line of a failure).
    pub stderr: String,
}

impl Output {
    /// Success, printing `stdout`.
    pub fn ok(stdout: impl Into<String>) -> Output {
        Output {
            code: 0,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// Failure with `message` (printed as `latchkey: <message>`).
    pub fn fail(message: impl std::fmt::Display) -> Output {
        Output {
            code: 1,
            stdout: String::new(),
            stderr: format!("latchkey: {message}\n"),
        }
    }

    /// This output with `message` as a failure after what it printed.
    fn and_fail(mut self, message: impl std::fmt::Display) -> Output {
        self.code = 1;
        self.stderr.push_str(&format!("latchkey: {message}\n"));
        self
    }
}

/// Runs `command` on `store` with the account rules (naming rules, the last
/// administrator, the setup code retired by a first user).
pub fn execute(command: &Command, store: &UserStore, accounts: &Accounts) -> Output {
    match run(command, store, accounts) {
        Ok(out) => out,
        Err(message) => Output::fail(message),
    }
}

fn run(command: &Command, store: &UserStore, accounts: &Accounts) -> Result<Output, String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    match command {
        Command::Add {
            name,
            role,
            password,
        } => {
            let name = crate::store::validate_name(name).map_err(|e| fail(&e))?;
            crate::store::validate_role(role).map_err(|e| fail(&e))?;
            if store.id_by_name(&name).map_err(|e| fail(&e))?.is_some() {
                return Err(StoreError::NameTaken(name).to_string());
            }
            let Some(password) = password else {
                return Ok(Output::default());
            };
            let new = NewUser {
                name: &name,
                password,
                confirm: None,
                role,
            };
            match accounts.create(store, &new) {
                Ok(user) => Ok(Output::ok(format!(
                    "added user {} (id {}, role {})\n",
                    user.name, user.id, user.role
                ))),
                Err(CreateError::Taken) => Err(StoreError::NameTaken(name).to_string()),
                Err(CreateError::Name(e) | CreateError::Role(e) | CreateError::Store(e)) => {
                    Err(e.to_string())
                }
                Err(CreateError::Password(e)) => Err(e.to_string()),
                Err(e) => Err(lower(&e.to_string())),
            }
        }
        Command::List { json } => list(store, *json),
        Command::Passwd {
            name,
            password,
            must_change,
        } => {
            let user = find(store, name)?;
            let Some(password) = password else {
                return Ok(Output::default());
            };
            let action = AdminAction::SetPassword {
                password,
                must_change: *must_change,
            };
            administer(store, accounts, &user, action)?;
            let then = if *must_change {
                "; they must choose a new one at the next login"
            } else {
                ""
            };
            Ok(Output::ok(format!(
                "changed the password of {}; their sessions are revoked{then}\n",
                user.name
            )))
        }
        Command::Role { name, role } => {
            crate::store::validate_role(role).map_err(|e| fail(&e))?;
            let user = find(store, name)?;
            let done = administer(store, accounts, &user, AdminAction::SetRole(role))?;
            Ok(Output::ok(format!(
                "{} now has the role {}\n",
                done.name, done.role
            )))
        }
        Command::Lock { name } => {
            let user = find(store, name)?;
            administer(store, accounts, &user, AdminAction::Lock)?;
            Ok(Output::ok(format!(
                "locked {}; their sessions are revoked\n",
                user.name
            )))
        }
        Command::Unlock { name } => {
            let user = find(store, name)?;
            administer(store, accounts, &user, AdminAction::Unlock)?;
            Ok(Output::ok(format!("unlocked {}\n", user.name)))
        }
        Command::Revoke { name } => {
            let user = find(store, name)?;
            administer(store, accounts, &user, AdminAction::Revoke)?;
            Ok(Output::ok(format!(
                "revoked every session of {}\n",
                user.name
            )))
        }
        Command::TotpReset { name } => {
            let user = find(store, name)?;
            administer(store, accounts, &user, AdminAction::ResetTotp)?;
            Ok(Output::ok(format!(
                "removed the second factor of {}; their sessions are revoked\n",
                user.name
            )))
        }
        Command::Remove { name } => match store.get_by_name(name) {
            Ok(Some(user)) => {
                administer(store, accounts, &user, AdminAction::Delete)?;
                Ok(Output::ok(format!(
                    "removed {} (id {})\n",
                    user.name, user.id
                )))
            }
            Ok(None) => Err(no_user(name)),
            // A damaged record cannot be read, but it can go.
            Err(ReadError::DamagedRecord(d)) => {
                store.delete(d.id).map_err(|e| fail(&e))?;
                Ok(Output::ok(format!(
                    "removed {} (id {}; its record was damaged)\n",
                    name.trim(),
                    d.id
                )))
            }
            Err(e) => Err(e.to_string()),
        },
    }
}

/// The command line acts for the operator, who is no user: any account may be acted on
/// (the store's own rules, such as the last administrator, still hold).
const OPERATOR: u64 = 0;

fn administer(
    store: &UserStore,
    accounts: &Accounts,
    user: &User,
    action: AdminAction<'_>,
) -> Result<User, String> {
    match accounts.administer(store, OPERATOR, user.id, action) {
        Ok(done) => Ok(done.user),
        Err(AdminError::Store(e)) => Err(e.to_string()),
        Err(AdminError::NotFound) => Err(no_user(&user.name)),
        Err(AdminError::Role(e)) => Err(e.to_string()),
        Err(AdminError::Password(e)) => Err(e.to_string()),
        Err(e) => Err(lower(&e.to_string())),
    }
}

/// A sentence for a page as a command-line message: lower-case start, no full stop.
fn lower(sentence: &str) -> String {
    let text = sentence.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn no_user(name: &str) -> String {
    format!("there is no user named {}", name.trim())
}

/// The user with this name (ignoring case), or a message naming it.
fn find(store: &UserStore, name: &str) -> Result<User, String> {
    store
        .get_by_name(name)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| no_user(name))
}

/// Lists every user, marking damaged records; fails naming them when the full scan
/// finds damage (the same verdict as `serve --check` and `/healthz`).
fn list(store: &UserStore, json: bool) -> Result<Output, String> {
    let mut rows: Vec<Entry> = Vec::new();
    loop {
        let page = store
            .list(rows.last().map_or(0, Entry::id), 500)
            .map_err(|e| e.to_string())?;
        if page.is_empty() {
            break;
        }
        rows.extend(page);
    }
    let stdout = if json {
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|row| match row {
                Entry::User(u) => json_row(u),
                Entry::Damaged(d) => serde_json::json!({ "id": d.id, "damaged": d.why }),
            })
            .collect();
        let mut text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        text.push('\n');
        text
    } else {
        table(&rows)
    };
    let out = Output::ok(stdout);
    match store.scan().map_err(|e| e.to_string())?.verdict() {
        Ok(_) => Ok(out),
        Err(e) => Ok(out.and_fail(e)),
    }
}

/// One user in `list --json`: everything but the password hash and secrets.
fn json_row(u: &User) -> serde_json::Value {
    serde_json::json!({
        "id": u.id,
        "name": u.name,
        "role": u.role,
        "locked": u.locked,
        "ver": u.ver,
        "created": u.created,
        "updated": u.updated,
        "last_login": u.last_login,
        "must_change_password": u.must_change_password,
        "totp": u.totp.is_some(),
    })
}

/// The readable listing: one row per user, times in UTC; a damaged record gets a row
/// saying so (what is wrong goes to stderr with the exit status).
fn table(entries: &[Entry]) -> String {
    let mut rows = vec![[
        "ID".to_string(),
        "NAME".into(),
        "ROLE".into(),
        "LOCKED".into(),
        "2FA".into(),
        "CREATED".into(),
        "LAST LOGIN".into(),
    ]];
    for entry in entries {
        let u = match entry {
            Entry::User(u) => u,
            Entry::Damaged(d) => {
                let mut row: [String; 7] = Default::default();
                row[0] = d.id.to_string();
                row[1] = "(damaged)".into();
                for cell in &mut row[2..] {
                    *cell = "?".into();
                }
                rows.push(row);
                continue;
            }
        };
        let yes_no = |b: bool| if b { "yes" } else { "no" }.to_string();
        rows.push([
            u.id.to_string(),
            u.name.clone(),
            u.role.clone(),
            yes_no(u.locked),
            yes_no(u.totp.is_some()),
            crate::log::timestamp(u.created),
            u.last_login
                .map_or_else(|| "never".into(), crate::log::timestamp),
        ]);
    }
    let mut widths = [0; 7];
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

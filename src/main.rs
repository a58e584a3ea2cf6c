//! The `latchkey` command: parse the command line and dispatch; nothing else.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 usage error; `token verify` adds
//! 3 (expired), 4 (malformed) and 5 (invalid).

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A small, fast login server: stateless HS256 token cookies, users in redb or PostgreSQL.
#[derive(Parser)]
#[command(name = "latchkey", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the web server.
    Serve(cmd::serve::ServeArgs),
    /// Manage users in the store (the server must not hold the store open).
    #[command(subcommand)]
    User(cmd::user::UserCommand),
    /// Write a consistent copy of the user store to FILE (the server must be stopped).
    Backup(cmd::backup::BackupArgs),
    /// Check a copy and put it in place as the user store (the server must be stopped).
    Restore(cmd::backup::RestoreArgs),
    /// Copy every user between stores (redb file or PostgreSQL URL).
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// Manage signing keys.
    #[command(subcommand)]
    Key(cmd::token::KeyCommand),
    /// Issue and verify tokens by hand.
    #[command(subcommand)]
    Token(cmd::token::TokenCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => cmd::serve::run(args),
        Command::User(command) => cmd::user::run(command),
        Command::Backup(args) => cmd::backup::backup(args),
        Command::Restore(args) => cmd::backup::restore(args),
        Command::Store(command) => cmd::store::run(command),
        Command::Key(command) => cmd::token::run_key(command),
        Command::Token(command) => cmd::token::run_token(command),
    }
}

//! `latchkey user ...`. STUB.

use std::process::ExitCode;

/// The user subcommands.
#[derive(clap::Subcommand)]
pub enum UserCommand {
    /// List users.
    List,
}

/// Runs a user subcommand.
pub fn run(_command: UserCommand) -> ExitCode {
    super::fail("not implemented yet")
}

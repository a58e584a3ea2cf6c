//! `latchkey key ...` and `latchkey token ...`. STUB.

use std::process::ExitCode;

/// The key subcommands.
#[derive(clap::Subcommand)]
pub enum KeyCommand {
    /// Generate a key file.
    Generate,
}

/// The token subcommands.
#[derive(clap::Subcommand)]
pub enum TokenCommand {
    /// Verify a token.
    Verify,
}

/// Runs a key subcommand.
pub fn run_key(_command: KeyCommand) -> ExitCode {
    super::fail("not implemented yet")
}

/// Runs a token subcommand.
pub fn run_token(_command: TokenCommand) -> ExitCode {
    super::fail("not implemented yet")
}

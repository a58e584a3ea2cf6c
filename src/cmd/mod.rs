//! Implementations of the subcommands; each returns the process exit code.

pub mod backup;
pub mod serve;
pub mod store;
pub mod token;
pub mod user;

use std::process::ExitCode;

/// Prints `latchkey: <message>` on stderr and returns exit code 1.
pub fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("latchkey: {message}");
    ExitCode::from(1)
}

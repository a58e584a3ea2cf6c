//! `latchkey serve`. STUB.

use std::process::ExitCode;

/// Flags of `latchkey serve`.
#[derive(clap::Args)]
pub struct ServeArgs {}

/// Runs the server.
pub fn run(_args: ServeArgs) -> ExitCode {
    super::fail("not implemented yet")
}

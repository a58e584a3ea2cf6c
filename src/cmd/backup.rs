//! `latchkey backup FILE` and `latchkey restore FILE`: a consistent copy of the user
//! store, and putting one back.
//!
//! `backup` inspects the store (its file is never written) and writes a fresh copy made
//! from one read snapshot: mode 0600, never over an existing file. For now the server
//! must be stopped, since it holds the store's lock; the copy is made by
//! `UserStore::backup_to`, which a running server can call itself.
//!
//! `restore` checks the copy in full (every record), then puts it in place atomically,
//! with the server stopped; it replaces a sound store only with `--force`, and keeps the
//! file it replaces beside it (`users.redb.replaced-<unix time>`).

use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;

use latchkey::store::{self, OpenError, UserStore};

use super::user::{StoreArgs, missing_store};

/// Flags of `latchkey backup`.
#[derive(clap::Args)]
pub struct BackupArgs {
    /// Where to write the copy (a new file; never overwritten).
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
}

/// Flags of `latchkey restore`.
#[derive(clap::Args)]
pub struct RestoreArgs {
    /// The copy to restore (made by `latchkey backup`).
    file: PathBuf,
    /// Replace the store even when it is sound (it is kept beside as
    /// users.redb.replaced-<time>).
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    store: StoreArgs,
}

/// `latchkey backup FILE`: 0 when the copy is written, 1 (with the reason) otherwise.
pub fn backup(args: BackupArgs) -> ExitCode {
    let file = match args.store.store_file() {
        Ok(file) => file,
        Err(e) => return super::fail(e),
    };
    let db = match UserStore::inspect(&file) {
        Ok(db) => db,
        Err(OpenError::Busy(path)) => {
            return super::fail(format!(
                "the user store {} is in use by a running server; stop it for the backup \
                 (`systemctl stop latchkey`, a moment), then start it again",
                path.display()
            ));
        }
        Err(e) => return super::fail(missing_store(&file, e)),
    };
    match db.backup_to(&args.file) {
        Ok(info) => {
            println!(
                "backed up {} users to {} ({} bytes)",
                info.users,
                args.file.display(),
                info.bytes
            );
            if info.damaged > 0 {
                eprintln!(
                    "latchkey: warning: {} damaged records were copied as they are; `latchkey \
                     user list` names them",
                    info.damaged
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

/// `latchkey restore FILE`: 0 when the copy is in place, 1 (with the reason) otherwise.
pub fn restore(args: RestoreArgs) -> ExitCode {
    let (dir, target) = match (args.store.dir(), args.store.store_file()) {
        (Ok(dir), Ok(target)) => (dir, target),
        (Err(e), _) | (_, Err(e)) => return super::fail(e),
    };
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        return super::fail(format!(
            "cannot create the data directory {}: {e}",
            dir.display()
        ));
    }
    match store::restore(&args.file, &target, args.force) {
        Ok(done) => {
            println!(
                "restored {} users from {} into {}",
                done.users,
                args.file.display(),
                target.display()
            );
            if let Some(what) = done.damaged_target {
                println!("the replaced store was damaged: {what}");
            }
            if let Some(kept) = done.kept {
                println!("the replaced store was kept as {}", kept.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => super::fail(e),
    }
}

//! `latchkey backup FILE` and `latchkey restore FILE`: a consistent copy of the user
//! store, and putting one back.
//!
//! `backup` writes a fresh copy made from one read snapshot: mode 0600, never over an
//! existing file. While a server runs it makes the copy (`UserStore::backup_to`) and
//! sends it through its control socket; otherwise the store is inspected here (its file
//! is never written).
//!
//! `restore` checks the copy in full (every record), then puts it in place atomically,
//! with the server stopped; it replaces a sound store only with `--force`, and keeps the
//! file it replaces beside it (`users.redb.replaced-<unix time>`).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use latchkey::control;
use latchkey::store::{self, OpenError};

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
/// A running server makes the copy itself, from one read snapshot, and sends it through
/// its control socket; otherwise the store is inspected here.
pub fn backup(args: BackupArgs) -> ExitCode {
    let (dir, location) = match (args.store.dir(), args.store.location()) {
        (Ok(dir), Ok(location)) => (dir, location),
        (Err(e), _) | (_, Err(e)) => return super::fail(e),
    };
    match control::connect(&dir) {
        Ok(Some(server)) => return backup_from_server(server, &args.file),
        Ok(None) => {}
        Err(e) => return super::fail(e),
    }
    // A PostgreSQL store is read in one snapshot beside the running servers; the copy is
    // a redb file in the embedded format.
    let file = PathBuf::from(location.display());
    let db = match location.inspect() {
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
        Ok(info) => report(&args.file, info.users, info.damaged, info.bytes),
        Err(e) => super::fail(e),
    }
}

/// What `backup` prints, whichever way the copy was made.
fn report(file: &Path, users: u64, damaged: u64, bytes: u64) -> ExitCode {
    println!(
        "backed up {users} users to {} ({bytes} bytes)",
        file.display()
    );
    if damaged > 0 {
        eprintln!(
            "latchkey: warning: {damaged} damaged records were copied as they are; `latchkey \
             user list` names them"
        );
    }
    ExitCode::SUCCESS
}

/// Asks the running server for a copy and writes it to `dest` (mode 0600, never over an
/// existing file, never half-written under its name).
fn backup_from_server(mut server: control::Client, dest: &Path) -> ExitCode {
    if std::fs::symlink_metadata(dest).is_ok() {
        return super::fail(store::BackupError::Exists(dest.to_path_buf()));
    }
    let answer = match server.call(&control::Request::Backup) {
        Ok(answer) => answer,
        Err(e) => return super::fail(e),
    };
    let Some(summary) = answer.backup.filter(|_| answer.output.code == 0) else {
        eprint!("{}", answer.output.stderr);
        return ExitCode::from(answer.output.code.max(1));
    };
    let written = store::write_new_file(dest, |out| {
        server
            .attachment(answer.attachment, out)
            .map_err(std::io::Error::other)
    });
    match written {
        Ok(()) => report(dest, summary.users, summary.damaged, answer.attachment),
        Err(e) => super::fail(format!("cannot write {}: {e}", dest.display())),
    }
}

/// `latchkey restore FILE`: 0 when the copy is in place, 1 (with the reason) otherwise.
pub fn restore(args: RestoreArgs) -> ExitCode {
    let (dir, target) = match (args.store.dir(), args.store.store_file()) {
        (Ok(dir), Ok(target)) => (dir, target),
        (Err(e), _) | (_, Err(e)) => return super::fail(e),
    };
    if let Ok(location) = args.store.location()
        && location.is_postgres()
    {
        return super::fail(format!(
            "the store is {}: restore a backup into it with `latchkey store copy --from {} \
             --to URL --force` (the servers may keep running)",
            location.display(),
            args.file.display()
        ));
    }
    match control::connect(&dir) {
        Ok(None) => {}
        Ok(Some(_)) => {
            return super::fail(format!(
                "a server is running on {}: stop it first (`systemctl stop latchkey`), \
                 restore, then start it again",
                dir.display()
            ));
        }
        // Never a store put where another local user could reach or replace it.
        Err(e @ control::ControlError::Untrusted(_)) => return super::fail(e),
        // A socket that cannot be reached (or answers oddly) is no proof a server runs:
        // the store's own lock is, when the copy is put in place.
        Err(_) => {}
    }
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

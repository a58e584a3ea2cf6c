//! `latchkey store copy`: every user from one store to another, redb or PostgreSQL
//! either way, refusing to write into a store that holds users unless asked to.

use std::path::PathBuf;

use super::{Location, RestoreError, StoreError, embedded, files};

/// What [`copy`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Users written into the target.
    pub users: u64,
    /// Where a replaced redb file was kept (beside it, `…replaced-<unix time>`).
    pub kept: Option<PathBuf>,
}

/// Copies every user of `from` (hashes, versions, roles, locks, forced password changes,
/// second factors), the id counter and the remembered key into `to`, read from one
/// snapshot of the source (which is only inspected, never written).
///
/// Refuses a source with damaged records ([`StoreError::SourceDamaged`]), and a target
/// holding users unless `force` ([`StoreError::NotEmpty`]). A redb target is written as
/// a fresh file and put in place as `latchkey restore` does (atomically, refusing while
/// a server holds it, keeping a replaced file beside it); a PostgreSQL target is written
/// in one transaction that notifies every instance.
pub fn copy(from: &Location, to: &Location, force: bool) -> Result<Copied, StoreError> {
    if from == to {
        return Err(StoreError::Damaged(format!(
            "the source and the target are the same store ({})",
            from.display()
        )));
    }
    let snapshot = {
        let source = from.inspect()?;
        source.snapshot()?
    };
    if !snapshot.damaged.is_empty() {
        let what: Vec<String> = snapshot
            .damaged
            .iter()
            .map(|d| format!("user {}: {}", d.id, d.why))
            .collect();
        return Err(StoreError::SourceDamaged(what.join("; ")));
    }
    match to {
        Location::File(path) => {
            let mut replace = force;
            if std::fs::symlink_metadata(path).is_ok() {
                match Location::File(path.clone()).inspect() {
                    Ok(existing) => {
                        let users = existing.count()?;
                        if users > 0 && !force {
                            return Err(StoreError::NotEmpty(users));
                        }
                        replace = true;
                    }
                    Err(e) if !force => return Err(e.into()),
                    Err(_) => {}
                }
            }
            let temp = files::temp_beside(path, "copy");
            let _ = std::fs::remove_file(&temp);
            let written = embedded::write_snapshot(&temp, &snapshot);
            let result = written.map_err(StoreError::from).and_then(|_| {
                embedded::restore(&temp, path, replace).map_err(|e| match e {
                    RestoreError::TargetSound { users, .. } => StoreError::NotEmpty(users),
                    other => StoreError::from(other),
                })
            });
            let _ = std::fs::remove_file(&temp);
            let restored = result?;
            Ok(Copied {
                users: restored.users,
                kept: restored.kept,
            })
        }
        Location::Postgres { .. } => {
            let target = to.open(2)?;
            let users = target.import(&snapshot, force)?;
            Ok(Copied { users, kept: None })
        }
    }
}

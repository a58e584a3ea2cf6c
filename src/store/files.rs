//! Files the store makes: created private (mode 0600) and exclusively, written under a
//! temporary name, then put in place atomically, so that a store or backup file that
//! exists under its real name is always complete, and nothing is ever overwritten by
//! accident.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Creates `path` for reading and writing with mode 0600; fails with `AlreadyExists`
/// when anything is there (no overwrite, no following a planted symlink).
pub(crate) fn create_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// A temporary name beside `dest`: same directory (so a rename or link stays on one
/// file system), hidden, tagged with `what` and this process's id.
pub(crate) fn temp_beside(dest: &Path, what: &str) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "users.redb".into());
    dest.with_file_name(format!(".{name}.{what}-{}", std::process::id()))
}

/// The directory holding `path` (`.` for a bare file name).
pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a directory's entries (a new or renamed file) durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Puts the complete file `temp` at `dest` without ever replacing something there:
/// a hard link (which fails when `dest` exists), then the temporary name goes away.
/// On a file system without hard links, a rename when nothing is at `dest` (which leaves
/// a moment in which another process could put a file there that the rename replaces).
/// The directory is synced, so the new name survives a crash.
pub(crate) fn place_new(temp: &Path, dest: &Path) -> io::Result<()> {
    File::open(temp)?.sync_all()?;
    match std::fs::hard_link(temp, dest) {
        Ok(()) => std::fs::remove_file(temp)?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
        Err(_) if std::fs::symlink_metadata(dest).is_err() => std::fs::rename(temp, dest)?,
        Err(e) => return Err(e),
    }
    sync_dir(parent(dest))
}

/// Keeps `file` under the new name `aside` too: a hard link, or a copy (mode 0600) on a
/// file system without hard links.
pub(crate) fn keep_aside(file: &Path, aside: &Path) -> io::Result<()> {
    match std::fs::hard_link(file, aside) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            let mut out = create_private(aside)?;
            io::copy(&mut File::open(file)?, &mut out)?;
            out.sync_all()
        }
    }
}

/// Puts the complete file `temp` at `dest`, replacing what is there in one atomic step
/// (a rename), then syncs the directory.
pub(crate) fn replace(temp: &Path, dest: &Path) -> io::Result<()> {
    File::open(temp)?.sync_all()?;
    std::fs::rename(temp, dest)?;
    sync_dir(parent(dest))
}

/// Gives `file` the owner and group of `like` when they differ and this process may
/// change them (it runs as root): a store restored by root for a service that runs as
/// its own user must stay readable by that user.
pub(crate) fn own_like(file: &Path, like: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let want = std::fs::metadata(like)?;
    let have = std::fs::metadata(file)?;
    if (have.uid(), have.gid()) == (want.uid(), want.gid()) {
        return Ok(());
    }
    std::os::unix::fs::chown(file, Some(want.uid()), Some(want.gid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn new_files_are_private_and_never_replace_anything() {
        let dir = std::env::temp_dir().join(format!("latchkey-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("users.redb");
        let temp = temp_beside(&dest, "new");
        assert!(
            temp.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(".users.redb.new-")
        );
        drop(create_private(&temp).unwrap());
        let mode = std::fs::metadata(&temp).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            create_private(&temp).unwrap_err().kind(),
            io::ErrorKind::AlreadyExists
        );
        std::fs::write(&dest, b"already here").unwrap();
        assert!(place_new(&temp, &dest).is_err(), "never replaces");
        assert_eq!(std::fs::read(&dest).unwrap(), b"already here");
        replace(&temp, &dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"");
        assert!(!temp.exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

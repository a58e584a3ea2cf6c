//! Whether the invoking user may trust a data directory before speaking to the control
//! socket in it (or the store beside it).
//!
//! `sudo latchkey user passwd root` sends a password to whatever listens on
//! `<data dir>/control.sock`. If another local user could have made that directory (one
//! in `/tmp`, a shared checkout, another user's home where the operator happens to be),
//! they would receive it, or hand `latchkey backup` a file of their choosing. The rule,
//! after OpenSSH's `safe_path`: a directory is trusted when nobody but root, the
//! invoking user and the directory's owner (the user the server runs as) could have
//! created, replaced or written it:
//!
//! - the data directory is not writable by group or others;
//! - every directory above it belongs to root, the invoking user or the data
//!   directory's owner, and is not writable by group or others, unless it is sticky
//!   (like `/tmp`) and what lies in it on the way belongs to root or the invoking user.
//!
//! - every symbolic link followed on the way belongs to root or the invoking user and
//!   lies in a directory of theirs that others cannot write (or a sticky one): a link
//!   that another user made, say `/tmp/shared/latchkey-data` pointing into their own
//!   home, would otherwise lead to a directory that passes the rules above as the
//!   server's.
//!
//! [`judge`] and [`judge_link`] are the rules on plain values; [`check`] and [`resolve`]
//! read the file system.

use std::fmt;
use std::path::{Path, PathBuf};

/// One directory on the way from the data directory up to `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The directory.
    pub path: PathBuf,
    /// Its owner's user id.
    pub uid: u32,
    /// Its mode bits (`st_mode & 0o7777`: permissions with the sticky bit).
    pub mode: u32,
}

/// Why a data directory is not trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Untrusted {
    /// A directory on the way may be written by group or others (and is not sticky, or
    /// is the sticky parent of something that belongs to another user).
    Writable {
        /// The data directory.
        dir: PathBuf,
        /// The directory others may write.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// A directory on the way belongs to a user who is neither root, the invoking user
    /// nor the data directory's owner.
    Owner {
        /// The data directory.
        dir: PathBuf,
        /// The directory with that owner.
        path: PathBuf,
        /// Its owner's user id.
        uid: u32,
    },
    /// The directory's details could not be read.
    Unreadable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        why: String,
    },
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Untrusted::Writable { dir, path, mode } => write!(
                f,
                "refusing the data directory {}: {} (mode {mode:04o}) may be written by other \
                 users, who could have made the server's control socket or store there; use a \
                 data directory that only root, you and the server's user can change \
                 (--data-dir), or `chmod go-w` that directory",
                dir.display(),
                path.display()
            ),
            Untrusted::Owner { dir, path, uid } => write!(
                f,
                "refusing the data directory {}: {} belongs to user id {uid}, who is neither \
                 root, you, nor the owner of the data directory, and could have made the \
                 server's control socket or store there; use a data directory under \
                 directories that only root and you control (--data-dir)",
                dir.display(),
                path.display()
            ),
            Untrusted::Unreadable { path, why } => {
                write!(
                    f,
                    "cannot check the data directory {}: {why}",
                    path.display()
                )
            }
        }
    }
}

impl std::error::Error for Untrusted {}

/// Group- or other-writable bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
/// The sticky bit: only an entry's owner (or the directory's, or root) may remove it.
const STICKY: u32 = 0o1000;

/// The rule: `chain` runs from the data directory (first) up to `/` (last); `invoker`
/// is the effective user id of the command.
pub fn judge(chain: &[Entry], invoker: u32) -> Result<(), Untrusted> {
    let Some(dir) = chain.first() else {
        return Ok(());
    };
    let mine = |uid: u32| uid == 0 || uid == invoker;
    let trusted = |uid: u32| mine(uid) || uid == dir.uid;
    if dir.mode & WRITABLE_BY_OTHERS != 0 {
        return Err(Untrusted::Writable {
            dir: dir.path.clone(),
            path: dir.path.clone(),
            mode: dir.mode,
        });
    }
    for pair in chain.windows(2) {
        let (child, above) = (&pair[0], &pair[1]);
        if !trusted(above.uid) {
            return Err(Untrusted::Owner {
                dir: dir.path.clone(),
                path: above.path.clone(),
                uid: above.uid,
            });
        }
        let shared = above.mode & WRITABLE_BY_OTHERS != 0;
        if shared && !(above.mode & STICKY != 0 && mine(child.uid)) {
            return Err(Untrusted::Writable {
                dir: dir.path.clone(),
                path: above.path.clone(),
                mode: above.mode,
            });
        }
    }
    Ok(())
}

/// The rule for a symbolic link followed on the way: `link` belongs to `link_uid` and
/// lies in the directory `parent` (owner `parent_uid`, mode bits `parent_mode`); the
/// data directory is `dir`. The link and its directory must belong to root or the
/// invoking user, and the directory must not be writable by others, unless it is sticky
/// (then nobody else can replace the link).
pub fn judge_link(
    dir: &Path,
    link: &Path,
    link_uid: u32,
    parent: &Entry,
    invoker: u32,
) -> Result<(), Untrusted> {
    let mine = |uid: u32| uid == 0 || uid == invoker;
    for (path, uid) in [(link, link_uid), (parent.path.as_path(), parent.uid)] {
        if !mine(uid) {
            return Err(Untrusted::Owner {
                dir: dir.to_path_buf(),
                path: path.to_path_buf(),
                uid,
            });
        }
    }
    if parent.mode & WRITABLE_BY_OTHERS != 0 && parent.mode & STICKY == 0 {
        return Err(Untrusted::Writable {
            dir: dir.to_path_buf(),
            path: parent.path.clone(),
            mode: parent.mode,
        });
    }
    Ok(())
}

/// How many symbolic links [`resolve`] follows before it gives up (as Linux's
/// `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// The rule applied to `dir` as it is on disk (symlinks resolved), for the effective
/// user. A directory that does not exist is trusted: nothing can be in it.
pub fn check(dir: &Path) -> Result<(), Untrusted> {
    resolve(dir).map(|_| ())
}

/// [`check`], giving the directory that was judged: `dir` with its symlinks resolved
/// (`None` when it does not exist). Whoever goes on into the directory uses this path,
/// not `dir`: a symlink on the way to `dir` may be re-pointed by another user between
/// the check and the use, and the path judged may not.
pub fn resolve(dir: &Path) -> Result<Option<PathBuf>, Untrusted> {
    use std::os::unix::fs::MetadataExt;
    let unreadable = |path: &Path, e: std::io::Error| Untrusted::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let invoker = unsafe { libc::geteuid() };
    let Some(real) = follow(dir, invoker)? else {
        return Ok(None);
    };
    let mut chain = Vec::new();
    for path in real.ancestors() {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        chain.push(Entry {
            path: path.to_path_buf(),
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        });
    }
    judge(&chain, invoker).map(|()| Some(real))
}

/// `dir` with its symbolic links resolved, one component at a time as the kernel would,
/// each link judged by [`judge_link`] before it is followed; `None` when a component
/// does not exist.
fn follow(dir: &Path, invoker: u32) -> Result<Option<PathBuf>, Untrusted> {
    use std::collections::VecDeque;
    use std::ffi::OsString;
    use std::os::unix::fs::MetadataExt;
    use std::path::Component;
    let unreadable = |path: &Path, e: std::io::Error| Untrusted::Unreadable {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let absolute = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| unreadable(dir, e))?
            .join(dir)
    };
    // What is left to walk, a component at a time; `..` is kept to be taken after the
    // links before it are resolved.
    let parts = |path: &Path| -> Vec<OsString> {
        path.components()
            .filter_map(|c| match c {
                Component::Normal(name) => Some(name.to_os_string()),
                Component::ParentDir => Some(OsString::from("..")),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
            })
            .collect()
    };
    let mut todo: VecDeque<OsString> = parts(&absolute).into();
    let mut done = PathBuf::from("/");
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        let next = done.join(&name);
        let meta = match std::fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(unreadable(&next, e)),
        };
        if !meta.file_type().is_symlink() {
            done = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(unreadable(
                dir,
                std::io::Error::other("too many levels of symbolic links"),
            ));
        }
        let parent_meta = std::fs::metadata(&done).map_err(|e| unreadable(&done, e))?;
        let parent = Entry {
            path: done.clone(),
            uid: parent_meta.uid(),
            mode: parent_meta.mode() & 0o7777,
        };
        judge_link(dir, &next, meta.uid(), &parent, invoker)?;
        let target = std::fs::read_link(&next).map_err(|e| unreadable(&next, e))?;
        if target.is_absolute() {
            done = PathBuf::from("/");
        }
        for part in parts(&target).into_iter().rev() {
            todo.push_front(part);
        }
    }
    Ok(Some(done))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u32 = 0;
    const OPERATOR: u32 = 1000;
    const SERVICE: u32 = 990;
    const ATTACKER: u32 = 65534;

    fn chain(entries: &[(&str, u32, u32)]) -> Vec<Entry> {
        entries
            .iter()
            .map(|&(path, uid, mode)| Entry {
                path: PathBuf::from(path),
                uid,
                mode,
            })
            .collect()
    }

    #[test]
    fn the_systemd_state_directory_is_trusted_by_root() {
        let c = chain(&[
            ("/var/lib/latchkey", SERVICE, 0o700),
            ("/var/lib", ROOT, 0o755),
            ("/var", ROOT, 0o755),
            ("/", ROOT, 0o755),
        ]);
        assert_eq!(judge(&c, ROOT), Ok(()));
    }

    #[test]
    fn a_directory_in_the_operators_home_or_a_private_temp_dir_is_trusted() {
        let home = chain(&[
            ("/home/op/app/latchkey-data", OPERATOR, 0o700),
            ("/home/op/app", OPERATOR, 0o755),
            ("/home/op", OPERATOR, 0o750),
            ("/home", ROOT, 0o755),
            ("/", ROOT, 0o755),
        ]);
        assert_eq!(judge(&home, OPERATOR), Ok(()));
        assert_eq!(
            judge(&home, ROOT),
            Ok(()),
            "sudo in the service user's home"
        );
        let temp = chain(&[
            ("/tmp/work/latchkey-data", ROOT, 0o700),
            ("/tmp/work", ROOT, 0o755),
            ("/tmp", ROOT, 0o1777),
            ("/", ROOT, 0o755),
        ]);
        assert_eq!(judge(&temp, ROOT), Ok(()));
    }

    #[test]
    fn a_data_directory_another_user_made_in_a_shared_directory_is_refused() {
        // `cd /tmp/shared && sudo latchkey user passwd root`, with nobody's directory.
        let c = chain(&[
            ("/tmp/shared/latchkey-data", ATTACKER, 0o700),
            ("/tmp/shared", ROOT, 0o1777),
            ("/tmp", ROOT, 0o1777),
            ("/", ROOT, 0o755),
        ]);
        assert!(matches!(
            judge(&c, ROOT),
            Err(Untrusted::Writable { path, .. }) if path == Path::new("/tmp/shared")
        ));
        // The same under a directory of their own in /tmp.
        let c = chain(&[
            ("/tmp/evil/latchkey-data", ATTACKER, 0o700),
            ("/tmp/evil", ATTACKER, 0o755),
            ("/tmp", ROOT, 0o1777),
            ("/", ROOT, 0o755),
        ]);
        assert!(matches!(judge(&c, ROOT), Err(Untrusted::Writable { .. })));
    }

    #[test]
    fn writable_or_foreign_directories_on_the_way_are_refused() {
        let writable = chain(&[
            ("/srv/app/data", SERVICE, 0o700),
            ("/srv/app", ROOT, 0o777),
            ("/srv", ROOT, 0o755),
            ("/", ROOT, 0o755),
        ]);
        assert!(matches!(
            judge(&writable, ROOT),
            Err(Untrusted::Writable { mode: 0o777, .. })
        ));
        let group = chain(&[("/srv/data", SERVICE, 0o770), ("/", ROOT, 0o755)]);
        assert!(matches!(
            judge(&group, ROOT),
            Err(Untrusted::Writable { .. })
        ));
        // Another user's directory above: they could rename the data directory away.
        let foreign = chain(&[
            ("/home/eve/data", SERVICE, 0o700),
            ("/home/eve", ATTACKER, 0o755),
            ("/home", ROOT, 0o755),
            ("/", ROOT, 0o755),
        ]);
        assert!(matches!(
            judge(&foreign, ROOT),
            Err(Untrusted::Owner { uid: ATTACKER, .. })
        ));
    }

    #[test]
    fn check_reads_the_file_system() {
        use std::os::unix::fs::PermissionsExt;
        let base = std::env::temp_dir().join(format!("latchkey-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let data = base.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(check(&data), Ok(()));
        assert_eq!(check(&base.join("absent")), Ok(()));
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(check(&data), Err(Untrusted::Writable { .. })));
        let _ = std::fs::remove_dir_all(&base);
    }

    #[test]
    fn links_on_the_way_must_be_made_by_root_or_the_invoker_where_others_cannot() {
        let dir = Path::new("/tmp/shared/latchkey-data");
        let entry = |path: &str, uid, mode| Entry {
            path: PathBuf::from(path),
            uid,
            mode,
        };
        let shared = entry("/tmp/shared", ROOT, 0o1777);
        // Another user's link in a shared directory, pointing into their own home.
        assert!(matches!(
            judge_link(
                dir,
                Path::new("/tmp/shared/latchkey-data"),
                ATTACKER,
                &shared,
                ROOT
            ),
            Err(Untrusted::Owner { uid: ATTACKER, .. })
        ));
        // The operator's own link in a sticky directory: nobody else can replace it.
        assert_eq!(
            judge_link(
                dir,
                Path::new("/tmp/shared/latchkey-data"),
                OPERATOR,
                &shared,
                OPERATOR
            ),
            Ok(())
        );
        // systemd's /var/lib/latchkey -> private/latchkey, root's in root's directory.
        let var_lib = entry("/var/lib", ROOT, 0o755);
        assert_eq!(
            judge_link(dir, Path::new("/var/lib/latchkey"), ROOT, &var_lib, ROOT),
            Ok(())
        );
        // A directory others may write without the sticky bit: the link can be replaced.
        let open = entry("/srv/open", ROOT, 0o777);
        assert!(matches!(
            judge_link(dir, Path::new("/srv/open/data"), ROOT, &open, ROOT),
            Err(Untrusted::Writable { .. })
        ));
        // A link of root's inside another user's directory: they can replace it.
        let eve = entry("/home/eve", ATTACKER, 0o755);
        assert!(matches!(
            judge_link(dir, Path::new("/home/eve/data"), ROOT, &eve, ROOT),
            Err(Untrusted::Owner { uid: ATTACKER, .. })
        ));
    }

    #[test]
    fn resolve_follows_links_as_the_kernel_does() {
        let base = std::env::temp_dir().join(format!("latchkey-follow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let data = base.join("a/b/data");
        std::fs::create_dir_all(&data).unwrap();
        std::os::unix::fs::symlink("a/b", base.join("rel")).unwrap();
        std::os::unix::fs::symlink(base.join("rel/data"), base.join("abs")).unwrap();
        std::os::unix::fs::symlink("loop", base.join("loop")).unwrap();
        let real = std::fs::canonicalize(&data).unwrap();
        // The links are the invoking user's own (root in CI, anyone else on a laptop).
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        for path in [
            data.clone(),
            base.join("rel/data"),
            base.join("abs"),
            base.join("a/b/../b/data"),
            base.join("rel/../b/data"),
        ] {
            assert_eq!(
                follow(&path, me),
                Ok(Some(real.clone())),
                "{}",
                path.display()
            );
        }
        assert_eq!(follow(&base.join("rel/absent"), me), Ok(None));
        assert!(matches!(
            follow(&base.join("loop"), me),
            Err(Untrusted::Unreadable { .. })
        ));
        let _ = std::fs::remove_dir_all(&base);
    }
}

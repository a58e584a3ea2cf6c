//! Signing keys: key files, the key ring (first key signs, all verify) and key generation.
//!
//! A key file holds the secret as one line of text; the key is that line's bytes without
//! the line end. It must be at least 32 bytes long and must not be readable or writable
//! by group or others. Each key is named by its `kid`: the first 8 characters of the
//! base64url SHA-256 of its bytes, so a token says which key signed it without revealing it.
//!
//! The user store remembers the kid of the primary key it was last served with;
//! [`continuity`] decides whether a configured ring may take over (the same key, a first
//! serve, a rotation keeping the old key verifying, or a deliberate `--replace-key`), so
//! a lost key file never turns silently into a new key.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The shortest secret accepted, in bytes (RFC 7518 §3.2: a key as long as the hash output).
pub const MIN_KEY_LEN: usize = 32;

/// One HMAC secret and its `kid`.
#[derive(Clone)]
pub struct Key {
    bytes: Vec<u8>,
    kid: String,
}

impl Key {
    /// Builds a key from secret bytes; refuses fewer than [`MIN_KEY_LEN`] bytes.
    pub fn new(bytes: Vec<u8>) -> Result<Key, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort {
                path: None,
                len: bytes.len(),
            });
        }
        let digest = Sha256::digest(&bytes);
        let mut kid = URL_SAFE_NO_PAD.encode(digest);
        kid.truncate(8);
        Ok(Key { bytes, kid })
    }

    /// The secret.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// First 8 chars of base64url(SHA-256(bytes)); names the key in token headers.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

impl fmt::Debug for Key {
    /// Shows the kid only, never the secret.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Keys in order: the first signs, all verify (rotation).
#[derive(Clone, Debug)]
pub struct KeyRing {
    keys: Vec<Key>,
}

impl KeyRing {
    /// A ring from keys, primary first; fails when empty.
    pub fn new(keys: Vec<Key>) -> Result<KeyRing, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(KeyRing { keys })
    }

    /// Loads key files in order (the first becomes the signing key).
    pub fn load(paths: &[PathBuf]) -> Result<KeyRing, KeyError> {
        let keys = paths
            .iter()
            .map(|path| load_file(path))
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::new(keys)
    }

    /// The signing key.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// All keys, primary first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// Reads one key file: checks its permissions, strips one line end, checks the length.
pub fn load_file(path: &Path) -> Result<Key, KeyError> {
    let io_err = |source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io_err)?;
    check_private(path, &file)?;
    let mut text = Vec::new();
    file.read_to_end(&mut text).map_err(io_err)?;
    let line = strip_line_end(&text);
    if line.contains(&b'\n') {
        return Err(KeyError::NotOneLine {
            path: path.to_path_buf(),
        });
    }
    Key::new(line.to_vec()).map_err(|err| match err {
        KeyError::TooShort { len, .. } => KeyError::TooShort {
            path: Some(path.to_path_buf()),
            len,
        },
        other => other,
    })
}

/// The line without one trailing `\n` or `\r\n`.
fn strip_line_end(text: &[u8]) -> &[u8] {
    text.strip_suffix(b"\r\n")
        .or_else(|| text.strip_suffix(b"\n"))
        .unwrap_or(text)
}

#[cfg(unix)]
fn check_private(path: &Path, file: &File) -> Result<(), KeyError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = file.metadata().map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _file: &File) -> Result<(), KeyError> {
    Ok(())
}

/// A new secret: 256 random bits as base64url text without padding (43 characters).
///
/// # Panics
/// When the operating system cannot supply random bytes; use [`try_generate_secret`]
/// to handle that case.
pub fn generate_secret() -> String {
    match try_generate_secret() {
        Ok(secret) => secret,
        Err(err) => panic!("{err}"),
    }
}

/// Like [`generate_secret`], but reports a failing random source as an error.
pub fn try_generate_secret() -> Result<String, KeyError> {
    let mut bits = [0u8; 32];
    getrandom::fill(&mut bits).map_err(KeyError::Random)?;
    Ok(URL_SAFE_NO_PAD.encode(bits))
}

/// Writes a new random key file with mode 0600; refuses to overwrite an existing file.
///
/// The key is written and synced under a temporary name beside `path`, then linked into
/// place: a crash or a full disk never leaves a short key file at `path` that would
/// refuse every later start (and that `key generate` would then refuse to replace).
pub fn generate(path: &Path) -> Result<(), KeyError> {
    write_new(path, try_generate_secret()?.as_bytes())
}

/// Writes `secret` as a new key file at `path` the way [`generate`] does (mode 0600,
/// synced, linked into place, never over an existing file): how the server puts back
/// its own key file when it was deleted while serving.
pub fn write_new(path: &Path, secret: &[u8]) -> Result<(), KeyError> {
    let write_err = |source| KeyError::Write {
        path: path.to_path_buf(),
        source,
    };
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(KeyError::Exists {
            path: path.to_path_buf(),
        });
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "key".into());
    let temp = path.with_file_name(format!(".{name}.new-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(secret)?;
        file.write_all(b"\n")?;
        file.sync_all()
    });
    let placed = written.and_then(|()| std::fs::hard_link(&temp, path));
    let _ = std::fs::remove_file(&temp);
    match placed {
        Ok(()) => {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write_err)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(KeyError::Exists {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(write_err(e)),
    }
}

/// How the configured primary key relates to the key the user store was last served
/// with (its `kid`, remembered in the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Continuity {
    /// The store has never been served: this key becomes its key.
    FirstServe,
    /// The same primary key as last time.
    Same,
    /// A new primary key, with the remembered one still among the verifying keys: a
    /// rotation. Holds the remembered kid.
    Rotated(String),
    /// A new primary key without the remembered one, allowed by `--replace-key`: every
    /// session ends. Holds the remembered kid.
    Replaced(String),
}

impl Continuity {
    /// Whether the store must remember the new primary kid.
    pub fn changes(&self) -> bool {
        !matches!(self, Continuity::Same)
    }
}

/// Decides whether `ring` may sign for a store last served with `remembered`: the same
/// key, a first serve, or a rotation are fine; anything else is refused with
/// [`KeyError::Changed`] (naming `primary_path`) unless `replace` says it is deliberate.
pub fn continuity(
    remembered: Option<&str>,
    ring: &KeyRing,
    replace: bool,
    primary_path: &Path,
) -> Result<Continuity, KeyError> {
    let primary = ring.primary().kid();
    let Some(old) = remembered else {
        return Ok(Continuity::FirstServe);
    };
    if old == primary {
        Ok(Continuity::Same)
    } else if ring.keys().iter().any(|k| k.kid() == old) {
        Ok(Continuity::Rotated(old.to_string()))
    } else if replace {
        Ok(Continuity::Replaced(old.to_string()))
    } else {
        Err(KeyError::Changed {
            path: primary_path.to_path_buf(),
            kid: primary.to_string(),
            remembered: old.to_string(),
        })
    }
}

/// Why a key could not be loaded or made.
#[derive(Debug)]
#[non_exhaustive]
pub enum KeyError {
    /// No key given.
    Empty,
    /// The secret is shorter than [`MIN_KEY_LEN`] bytes.
    TooShort {
        /// The key file, when the key came from one.
        path: Option<PathBuf>,
        /// The secret's length in bytes.
        len: usize,
    },
    /// The key file holds more than one line.
    NotOneLine {
        /// The key file.
        path: PathBuf,
    },
    /// The key file may be read or written by group or others.
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file could not be opened or read.
    Read {
        /// The key file.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// `generate` found a file already at the path.
    Exists {
        /// The path given.
        path: PathBuf,
    },
    /// The new key file could not be created or written.
    Write {
        /// The path given.
        path: PathBuf,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The operating system's random source failed.
    Random(getrandom::Error),
    /// The key file is missing, but the user store was served with a key before: a new
    /// key would end every session and every open form, silently.
    Missing {
        /// The key file.
        path: PathBuf,
        /// The kid of the key the store was last served with.
        kid: String,
    },
    /// The primary key is not the one the user store was last served with, and that one
    /// is not among the verifying keys.
    Changed {
        /// The primary key file.
        path: PathBuf,
        /// The kid of that file's key.
        kid: String,
        /// The kid of the key the store was last served with.
        remembered: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "no key given; pass a key file (--key-file)"),
            KeyError::TooShort { path, len } => {
                match path {
                    Some(path) => write!(f, "key file {} holds {len} bytes", path.display())?,
                    None => write!(f, "the key is {len} bytes")?,
                }
                write!(
                    f,
                    "; at least {MIN_KEY_LEN} are needed (make one with `latchkey key generate`)"
                )
            }
            KeyError::NotOneLine { path } => write!(
                f,
                "key file {} holds more than one line; put the secret alone on one line",
                path.display()
            ),
            KeyError::Permissions { path, mode } => write!(
                f,
                "key file {} is open to group or others (mode {mode:04o}); run `chmod 600 {}`",
                path.display(),
                path.display()
            ),
            KeyError::Read { path, source } => {
                write!(f, "cannot read key file {}: {source}", path.display())
            }
            KeyError::Exists { path } => write!(
                f,
                "{} already exists; refusing to overwrite a key (remove it or choose another path)",
                path.display()
            ),
            KeyError::Write { path, source } => {
                write!(f, "cannot write key file {}: {source}", path.display())
            }
            KeyError::Random(err) => {
                write!(f, "the operating system gave no random bytes: {err}")
            }
            KeyError::Missing { path, kid } => write!(
                f,
                "the signing key {} is missing, but the user store was last served with key \
                 {kid}; every session, open form and verify-only instance depends on it. \
                 Restore that key file from a backup (mode 0600), or, to switch to a new key \
                 deliberately (everyone is logged out; give verify-only instances the new \
                 key), start once with `latchkey serve --replace-key`",
                path.display()
            ),
            KeyError::Changed {
                path,
                kid,
                remembered,
            } => write!(
                f,
                "the signing key {} (kid {kid}) is not the key the user store was last served \
                 with (kid {remembered}), and that key is not among the verifying keys. Put \
                 the old key file back; or rotate by naming the new key first and the old one \
                 after it (--key-file NEW --key-file OLD); or, to switch deliberately \
                 (everyone is logged out), start once with `latchkey serve --replace-key`",
                path.display()
            ),
        }
    }
}

impl std::error::Error for KeyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KeyError::Read { source, .. } | KeyError::Write { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_one_line_end() {
        assert_eq!(strip_line_end(b"abc\n"), b"abc");
        assert_eq!(strip_line_end(b"abc\r\n"), b"abc");
        assert_eq!(strip_line_end(b"abc"), b"abc");
        assert_eq!(strip_line_end(b"abc\n\n"), b"abc\n");
        assert_eq!(strip_line_end(b"abc\r"), b"abc\r");
    }

    #[test]
    fn kid_is_eight_chars_of_the_hash() {
        let key = Key::new(vec![7; 32]).expect("32 bytes");
        let full = URL_SAFE_NO_PAD.encode(Sha256::digest([7u8; 32]));
        assert_eq!(key.kid(), &full[..8]);
    }

    #[test]
    fn continuity_allows_first_serve_same_key_and_rotation_only() {
        let a = Key::new(vec![1; 32]).expect("key");
        let b = Key::new(vec![2; 32]).expect("key");
        let path = Path::new("/etc/latchkey/latchkey.key");
        let only_b = KeyRing::new(vec![b.clone()]).expect("ring");
        let b_then_a = KeyRing::new(vec![b.clone(), a.clone()]).expect("ring");
        assert_eq!(
            continuity(None, &only_b, false, path).expect("first"),
            Continuity::FirstServe
        );
        assert_eq!(
            continuity(Some(b.kid()), &only_b, false, path).expect("same"),
            Continuity::Same
        );
        assert_eq!(
            continuity(Some(a.kid()), &b_then_a, false, path).expect("rotation"),
            Continuity::Rotated(a.kid().to_string())
        );
        let err = continuity(Some(a.kid()), &only_b, false, path).expect_err("changed");
        let text = err.to_string();
        assert!(text.contains("/etc/latchkey/latchkey.key") && text.contains(a.kid()));
        assert!(text.contains("--replace-key"), "{text}");
        assert_eq!(
            continuity(Some(a.kid()), &only_b, true, path).expect("deliberate"),
            Continuity::Replaced(a.kid().to_string())
        );
        assert!(!Continuity::Same.changes() && Continuity::FirstServe.changes());
    }

    #[test]
    fn debug_hides_the_secret() {
        let key = Key::new(b"0123456789abcdef0123456789abcdef".to_vec()).expect("32 bytes");
        assert!(!format!("{key:?}").contains("0123"));
    }
}

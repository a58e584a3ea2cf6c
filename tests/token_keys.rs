//! Key files and the key ring: permissions, length, line ends, kid, generation, rotation.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::token::{claims, key, verifier_of, verify, without_kid};
use latchkey::keys::{self, Key, KeyError, KeyRing};
use latchkey::token::{Signer, TokenError};
use sha2::{Digest, Sha256};

const SECRET: &str = "0123456789abcdef0123456789abcdef-key";

/// A fresh directory for one test under cargo's per-target temporary directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("token_keys")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn write_key(path: &Path, contents: &[u8], mode: u32) {
    fs::write(path, contents).expect("write key");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn group_or_world_readable_files_are_refused_naming_the_chmod() {
    let dir = scratch("perms");
    let path = dir.join("secret.key");
    for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
        write_key(&path, SECRET.as_bytes(), mode);
        let err = keys::load_file(&path).expect_err("open key file refused");
        assert!(
            matches!(err, KeyError::Permissions { .. }),
            "{mode:o}: {err}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
    }
    for mode in [0o600, 0o400] {
        write_key(&path, SECRET.as_bytes(), mode);
        assert!(keys::load_file(&path).is_ok(), "{mode:o}");
    }
}

#[test]
fn short_keys_are_refused() {
    let dir = scratch("short");
    let path = dir.join("short.key");
    write_key(&path, &[b'k'; 31], 0o600);
    let err = keys::load_file(&path).expect_err("31 bytes refused");
    assert!(matches!(err, KeyError::TooShort { len: 31, .. }), "{err}");
    assert!(err.to_string().contains("latchkey key generate"), "{err}");
    // 31 bytes plus a line end is still 31 bytes of key.
    write_key(&path, b"0123456789012345678901234567890\n", 0o600);
    assert!(matches!(
        keys::load_file(&path),
        Err(KeyError::TooShort { len: 31, .. })
    ));
    write_key(&path, &[b'k'; 32], 0o600);
    assert!(keys::load_file(&path).is_ok());
    assert!(matches!(
        Key::new(vec![0; 31]),
        Err(KeyError::TooShort {
            len: 31,
            path: None
        })
    ));
    assert!(matches!(KeyRing::new(Vec::new()), Err(KeyError::Empty)));
}

#[test]
fn one_line_end_is_stripped() {
    let dir = scratch("line-ends");
    let path = dir.join("k");
    for contents in [
        SECRET.to_owned(),
        format!("{SECRET}\n"),
        format!("{SECRET}\r\n"),
    ] {
        write_key(&path, contents.as_bytes(), 0o600);
        let loaded = keys::load_file(&path).expect("loads");
        assert_eq!(loaded.bytes(), SECRET.as_bytes(), "{contents:?}");
        assert_eq!(loaded.kid(), key(SECRET.as_bytes()).kid());
    }
    // Only one: a second line end, or a second line, is not part of a one-line file.
    for contents in [format!("{SECRET}\n\n"), format!("{SECRET}\nmore")] {
        write_key(&path, contents.as_bytes(), 0o600);
        let err = keys::load_file(&path).expect_err("two lines refused");
        assert!(matches!(err, KeyError::NotOneLine { .. }), "{err}");
    }
    // Spaces are key bytes like any other.
    write_key(&path, format!(" {SECRET} \n").as_bytes(), 0o600);
    assert_eq!(
        keys::load_file(&path).expect("loads").bytes().len(),
        SECRET.len() + 2
    );
}

#[test]
fn a_missing_file_names_the_path() {
    let path = scratch("missing").join("nope.key");
    let err = keys::load_file(&path).expect_err("missing");
    assert!(matches!(err, KeyError::Read { .. }));
    assert!(err.to_string().contains("nope.key"), "{err}");
}

#[test]
fn kid_is_the_first_8_chars_of_base64url_sha256() {
    let k = key(SECRET.as_bytes());
    let full = URL_SAFE_NO_PAD.encode(Sha256::digest(SECRET.as_bytes()));
    assert_eq!(k.kid(), &full[..8]);
    assert_eq!(k.kid().len(), 8);
    assert_ne!(k.kid(), key(b"another-secret-of-at-least-32-bytes!").kid());
}

#[test]
fn generate_writes_a_private_random_key_and_never_overwrites() {
    let dir = scratch("generate");
    let path = dir.join("new.key");
    keys::generate(&path).expect("generate");
    let mode = fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = fs::read_to_string(&path).expect("read");
    assert_eq!(text.len(), 44, "43 base64url chars and a newline");
    assert!(text.ends_with('\n'));
    assert_eq!(
        URL_SAFE_NO_PAD
            .decode(text.trim_end())
            .expect("base64url")
            .len(),
        32
    );
    assert!(keys::load_file(&path).is_ok());

    let err = keys::generate(&path).expect_err("refuses to overwrite");
    assert!(matches!(err, KeyError::Exists { .. }), "{err}");
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        text,
        "left unchanged"
    );

    let other = dir.join("other.key");
    keys::generate(&other).expect("generate");
    assert_ne!(fs::read_to_string(&other).expect("read"), text, "random");
    assert_ne!(keys::generate_secret(), keys::generate_secret());
}

#[test]
fn rotation_old_tokens_verify_with_new_then_old() {
    let old = key(b"the-old-key-retired-soon-0123456789");
    let new = key(b"the-new-key-signing-from-now-0123456");
    let old_token = Signer::new(&KeyRing::new(vec![old.clone()]).expect("ring")).sign(&claims());
    let rotated = KeyRing::new(vec![new.clone(), old.clone()]).expect("ring");
    assert_eq!(rotated.primary().kid(), new.kid());
    assert_eq!(verify(&verifier_of(&rotated), &old_token), Ok(claims()));
    let new_token = Signer::new(&rotated).sign(&claims());
    let header = new_token.split('.').next().expect("header");
    let header = String::from_utf8(URL_SAFE_NO_PAD.decode(header).expect("b64")).expect("utf8");
    assert!(
        header.contains(&format!(r#""kid":"{}""#, new.kid())),
        "{header}"
    );
    assert_eq!(verify(&verifier_of(&rotated), &new_token), Ok(claims()));
    // Once the old key is dropped, its tokens name an unknown key.
    let only_old = KeyRing::new(vec![old]).expect("ring");
    assert_eq!(
        verify(&verifier_of(&only_old), &new_token),
        Err(TokenError::UnknownKey)
    );
}

#[test]
fn tokens_without_kid_use_the_primary_key_only() {
    let old = "the-old-key-retired-soon-0123456789";
    let new = "the-new-key-signing-from-now-0123456";
    let payload = serde_json::to_value(claims()).expect("json");
    let legacy = |secret: &str| without_kid(secret.as_bytes(), &payload);
    let ring = KeyRing::new(vec![key(new.as_bytes()), key(old.as_bytes())]).expect("ring");
    assert_eq!(verify(&verifier_of(&ring), &legacy(new)), Ok(claims()));
    assert_eq!(
        verify(&verifier_of(&ring), &legacy(old)),
        Err(TokenError::Signature)
    );
}

#[test]
fn ring_loads_files_in_order() {
    let dir = scratch("ring");
    let (a, b) = (dir.join("a.key"), dir.join("b.key"));
    write_key(&a, b"first-key-0123456789abcdefghijklmnop\n", 0o600);
    write_key(&b, b"second-key-0123456789abcdefghijklmno\n", 0o600);
    let ring = KeyRing::load(&[b.clone(), a.clone()]).expect("ring");
    assert_eq!(
        ring.primary().bytes(),
        b"second-key-0123456789abcdefghijklmno"
    );
    assert_eq!(ring.keys().len(), 2);
    fs::set_permissions(&a, fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(matches!(
        KeyRing::load(&[b, a]),
        Err(KeyError::Permissions { .. })
    ));
    assert!(matches!(KeyRing::load(&[]), Err(KeyError::Empty)));
}

//! A bad disk at the wrong moment. The key file was created before its bytes were
//! written, so a full disk at the first start left an empty `secret.key` behind; once
//! there was room again, every later start (and `latchkey key generate`, which its own
//! error message recommends) refused to run until someone deleted the file by hand: a
//! lasting outage from a passing fault. The key is now written under a temporary name,
//! synced, and linked into place.
//!
//! Mounts a tmpfs: needs root.

mod common;

use std::process::Command;

use common::{TempDir, Tmpfs, bin, fill};

/// `latchkey ARGS` with a bounded run time; (exit code, stderr).
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new("timeout")
        .arg("10")
        .arg(bin())
        .args(args)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("LATCHKEY_KEY_FILE")
        .env_remove("LATCHKEY_KEY_FILES")
        .env("LATCHKEY_ARGON2_MEMORY_KIB", "64")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "needs root: mounts a small tmpfs"]
fn a_full_disk_at_the_first_start_leaves_no_key_that_blocks_later_starts() {
    let dir = TempDir::new("attack-key-disk");
    let _mount = Tmpfs::mount(dir.path(), "1m");
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let d = data.to_str().unwrap();
    let filler = fill(dir.path());

    // First start on a full disk: refused, as it must be.
    let (code, err) = run(&["serve", "--listen", "127.0.0.1:0", "--data-dir", d]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("No space left"), "{err}");

    // The disk has room again. A start must now succeed (or at least not be blocked by
    // what the failed start left behind).
    std::fs::remove_file(&filler).unwrap();
    let key = data.join("secret.key");
    let left = std::fs::metadata(&key).map(|m| m.len());
    let (code, err) = run(&["serve", "--check", "--data-dir", d]);
    let (gen_code, gen_err) = run(&["key", "generate", "--data-dir", d]);
    assert!(
        code == 0 && left.is_err(),
        "after a failed first start on a full disk, secret.key is left with {left:?} bytes and \
         every later start is refused once there is room again (check exit {code}: {err}); \
         the remedy the message names fails too (key generate exit {gen_code}: {gen_err})"
    );
}

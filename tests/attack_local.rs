//! A hostile local user on the same host.
//!
//! The `user`, `backup` and `restore` commands use `./latchkey-data` when nothing names a
//! data directory (falling back to `/var/lib/latchkey` only when there is no
//! `./latchkey-data`), and talked to whatever answered on `control.sock` there. A local
//! user who can create `latchkey-data` in a directory where the operator runs
//! `sudo latchkey user …` (`/tmp`, a shared checkout) listened on a socket of their own
//! and received the passwords the operator typed, and handed `latchkey backup` a copy of
//! their choosing. The commands now refuse a data directory others could have made, and
//! a socket answered by a process of another user.
//!
//! Needs root (to run the fake server as `nobody` with `runuser`) and python3.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{TempDir, bin};

/// Starts `command` in a process group of its own, so that [`kill_group`] stops the
/// fake server behind `runuser` too.
fn spawn_group(command: &mut Command) -> std::process::Child {
    use std::os::unix::process::CommandExt;
    command
        .process_group(0)
        .spawn()
        .expect("runuser and python3 (needs root)")
}

/// Kills the group [`spawn_group`] made and reaps its leader.
fn kill_group(child: &mut std::process::Child) {
    // SAFETY: kill(2) on a process group this test started.
    unsafe {
        libc::kill(-(child.id() as i32), libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Starts `command` (a fake control socket) in its own process group and waits for its
/// first output line, `ready`; the rest of its output is what it heard.
fn start_ready(
    command: &mut Command,
) -> (
    std::process::Child,
    std::io::BufReader<std::process::ChildStdout>,
) {
    use std::io::BufRead;
    let mut child = spawn_group(command.stdout(Stdio::piped()));
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    (child, out)
}

/// Runs `latchkey user add` (cheap hashing) as `command` sets it up, with a password on
/// stdin; whether it succeeded.
fn quick_user_add(command: &mut Command) -> bool {
    let mut child = command
        .env("LATCHKEY_ARGON2_MEMORY_KIB", "8")
        .env("LATCHKEY_ARGON2_ITERATIONS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough password\n");
    child.wait().is_ok_and(|status| status.success())
}

/// A fake control socket: answers every request with success and prints each request
/// line it receives.
const FAKE_SERVER: &str = r#"
import os, socket, sys
path = 'latchkey-data/control.sock'
os.makedirs('latchkey-data', exist_ok=True)
s = socket.socket(socket.AF_UNIX); s.bind(path); os.chmod(path, 0o777); s.listen(4)
print('ready', flush=True)
for _ in range(2):
    c, _ = s.accept(); f = c.makefile('rb')
    print(f.readline().decode().strip(), flush=True)
    c.sendall(b'{"output":{"code":0,"stdout":"","stderr":""},"attachment":0,"backup":null}\n')
    c.close()
"#;

/// A fake control socket that answers a backup request with bytes of its choosing.
const FAKE_BACKUP: &str = r#"
import os, socket
path = 'latchkey-data/control.sock'
os.makedirs('latchkey-data', exist_ok=True)
s = socket.socket(socket.AF_UNIX); s.bind(path); os.chmod(path, 0o777); s.listen(4)
print('ready', flush=True)
c, _ = s.accept(); c.makefile('rb').readline()
c.sendall(b'{"output":{"code":0,"stdout":"","stderr":""},"attachment":14,"backup":{"users":3,"damaged":0}}\n')
c.sendall(b'not your store')
c.close()
"#;

#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn backup_refuses_a_data_directory_another_local_user_made() {
    let dir = TempDir::new("attack-local-backup");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (mut fake, _heard) = start_ready(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", FAKE_BACKUP])
            .current_dir(&shared),
    );
    let dest = dir.path().join("users-backup.redb");
    let out = Command::new("timeout")
        .args(["20", bin(), "backup", dest.to_str().unwrap()])
        .current_dir(&shared)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    kill_group(&mut fake);
    let written = std::fs::read(&dest).unwrap_or_default();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("refusing the data directory"),
        "{said}"
    );
    assert_ne!(
        written,
        b"not your store",
        "the operator's backup holds what nobody's socket sent, reported as: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn the_user_command_refuses_a_data_directory_another_local_user_made() {
    let dir = TempDir::new("attack-local");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();

    // The local attacker, as nobody.
    let (mut fake, mut out) = start_ready(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", FAKE_SERVER])
            .current_dir(&shared)
            .stderr(Stdio::inherit()),
    );

    // The operator, as root, in that directory: sets the administrator's password.
    let mut op = Command::new("timeout")
        .args(["20", bin(), "user", "passwd", "root"])
        .current_dir(&shared)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _ = op
        .stdin
        .take()
        .unwrap()
        .write_all(b"The new admin password 42\n");
    let started = Instant::now();
    while op.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(25) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = op.kill();
    kill_group(&mut fake);
    let mut captured = String::new();
    std::io::Read::read_to_string(&mut out, &mut captured).unwrap();
    assert!(
        !captured.contains("The new admin password 42"),
        "a control socket made by nobody received the operator's command and password: {captured}"
    );
}

/// Another user's symbolic link in a shared directory, pointing at a data directory in
/// a home of their own: the directory it leads to passes the rules for directories (its
/// owner counts as the server's user), so the command used to follow the link and send
/// the operator's password to their socket. Links on the way are now judged too.
#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn the_user_command_refuses_another_users_link_to_a_directory_of_theirs() {
    let dir = TempDir::new("attack-local-link");
    let shared = dir.path().join("shared");
    let home = dir.path().join("home-of-nobody");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let status = Command::new("runuser")
            .args(["-u", "nobody", "--"])
            .args(args)
            .status()
            .expect("runuser (needs root)");
        assert!(status.success(), "{args:?}");
    };
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        Command::new("chown")
            .arg("nobody")
            .arg(&home)
            .status()
            .unwrap()
            .success()
    );
    let target = home.join("latchkey-data");
    as_nobody(&[
        "ln".as_ref(),
        "-s".as_ref(),
        target.as_os_str(),
        shared.join("latchkey-data").as_os_str(),
    ]);

    let (mut fake, mut out) = start_ready(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", FAKE_SERVER])
            .current_dir(&home)
            .stderr(Stdio::inherit()),
    );

    let op = Command::new("timeout")
        .args(["20", bin(), "user", "list"])
        .current_dir(&shared)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("STATE_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    kill_group(&mut fake);
    let mut captured = String::new();
    std::io::Read::read_to_string(&mut out, &mut captured).unwrap();
    assert!(
        captured.trim().is_empty(),
        "a control socket reached through nobody's link received: {captured}"
    );
    let err = String::from_utf8_lossy(&op.stderr);
    assert!(
        !op.status.success() && err.contains("refusing the data directory"),
        "{err}"
    );
}

/// A socket in a data directory only root could have made, but answered by a process
/// of another user (bound as root, then listening as `nobody`): the command refuses it
/// before sending anything.
#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn the_user_command_refuses_a_socket_answered_by_another_user() {
    const IMPOSTOR: &str = r#"
import os, socket
os.makedirs('latchkey-data', mode=0o700, exist_ok=True)
s = socket.socket(socket.AF_UNIX); s.bind('latchkey-data/control.sock')
os.chmod('latchkey-data/control.sock', 0o777)
os.setgid(65534); os.setuid(65534)
s.listen(4)
print('ready', flush=True)
c, _ = s.accept()
print(c.makefile('rb').readline().decode().strip(), flush=True)
"#;
    let dir = TempDir::new("attack-local-impostor");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut fake, mut out) = start_ready(
        Command::new("python3")
            .args(["-c", IMPOSTOR])
            .current_dir(dir.path()),
    );
    let op = Command::new("timeout")
        .args(["20", bin(), "user", "list"])
        .current_dir(dir.path())
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("STATE_DIRECTORY")
        .output()
        .unwrap();
    kill_group(&mut fake);
    let mut captured = String::new();
    std::io::Read::read_to_string(&mut out, &mut captured).unwrap();
    let said = String::from_utf8_lossy(&op.stderr);
    assert!(
        !op.status.success() && said.contains("runs as user id 65534"),
        "{said}"
    );
    assert!(
        captured.trim().is_empty(),
        "the impostor received: {captured}"
    );
}

/// Access lines escape control characters in the path "so a request cannot forge
/// lines", but not the user name. On a verify-only instance the name comes from the
/// token as signed, and tokens of the original design (another app holding the same
/// key, whose names were free text such as `张三`) are accepted: a name with a line
/// break writes a forged access line of the attacker's choosing.
#[test]
fn a_user_name_from_a_token_cannot_forge_access_lines() {
    let dir = common::TempDir::new("attack-log");
    let key = dir.path().join("shared.key");
    let (code, _, err) = common::cli(&["key", "generate", key.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    let server = common::Server::start(
        &[
            "--verify-only",
            "--login-url",
            "https://auth.example.com/login",
            "--key-file",
            key.to_str().unwrap(),
        ],
        &[],
    );
    let now = common::token::now();
    let forged = "eve\n1970-01-01T00:00:00Z access POST /admin/users/1/delete 303 9us root";
    let claims = latchkey::token::Claims {
        name: forged.into(),
        ..common::token::user(7, "eve", "user", now)
    };
    let token = common::mint(&key, &claims);
    let r = server.get("/api/me", &[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(r.status, 200, "{}", r.body);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = server.log();
    assert!(
        !log.lines()
            .any(|l| l.starts_with("1970-01-01T00:00:00Z access POST /admin/users/1/delete")),
        "a forged access line: {log}"
    );
}

/// A control socket that answers every request with success, for ever, and prints
/// each request line it receives; run in the data directory.
const FAKE_LOOP: &str = r#"
import os, socket
s = socket.socket(socket.AF_UNIX); s.bind('control.sock'); os.chmod('control.sock', 0o777)
s.listen(64)
print('ready', flush=True)
while True:
    c, _ = s.accept(); line = c.makefile('rb').readline().decode().strip()
    print(line, flush=True)
    c.sendall(b'{"output":{"code":0,"stdout":"","stderr":""},"attachment":0,"backup":null}\n')
    c.close()
"#;

/// A sticky shared directory holding `evil` (nobody's) beside a `trusted` directory of
/// root's, and a link `shared/latchkey-data` that a thread re-points between the two as
/// fast as it can once [`FlippingLink::start`] is called.
struct FlippingLink {
    _dir: TempDir,
    trusted: std::path::PathBuf,
    evil: std::path::PathBuf,
    link: std::path::PathBuf,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    flipper: Option<std::thread::JoinHandle<()>>,
}

impl FlippingLink {
    fn new(tag: &str) -> FlippingLink {
        let dir = TempDir::new(tag);
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let shared = dir.path().join("shared");
        let trusted = dir.path().join("trusted");
        let evil = shared.join("evil");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        std::fs::create_dir(&trusted).unwrap();
        std::fs::set_permissions(&trusted, std::fs::Permissions::from_mode(0o700)).unwrap();
        let status = Command::new("runuser")
            .args(["-u", "nobody", "--", "mkdir", "-m", "0700"])
            .arg(&evil)
            .status()
            .expect("runuser (needs root)");
        assert!(status.success());
        let link = shared.join("latchkey-data");
        std::os::unix::fs::symlink(&trusted, &link).unwrap();
        FlippingLink {
            _dir: dir,
            trusted,
            evil,
            link,
            done: Default::default(),
            flipper: None,
        }
    }

    fn start(&mut self) {
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::clone(&self.done);
        let (trusted, evil, link) = (self.trusted.clone(), self.evil.clone(), self.link.clone());
        self.flipper = Some(std::thread::spawn(move || {
            let temp = link.with_file_name("next");
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let target = if n.is_multiple_of(2) { &evil } else { &trusted };
                let _ = std::fs::remove_file(&temp);
                if std::os::unix::fs::symlink(target, &temp).is_ok() {
                    let _ = std::fs::rename(&temp, &link);
                }
                n += 1;
            }
        }));
    }

    fn stop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(flipper) = self.flipper.take() {
            flipper.join().unwrap();
        }
    }
}

/// A data directory named through a symlink in a shared directory: the trust check
/// judged the directory the symlink pointed to, then the command connected through the
/// symlink again, so another user re-pointing it in between (at their own directory,
/// which they own: the impostor check read the owner through the symlink too) received
/// the command. The command now speaks to the directory it judged.
#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn a_symlink_re_pointed_after_the_check_does_not_redirect_the_command() {
    let mut flipping = FlippingLink::new("attack-local-symlink");
    let start = start_ready;
    let (mut real, _real_out) = start(
        Command::new("python3")
            .args(["-c", FAKE_LOOP])
            .current_dir(&flipping.trusted),
    );
    let (mut fake, mut heard) = start(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", FAKE_LOOP])
            .current_dir(&flipping.evil),
    );

    // The link flips between the two, as fast as it can.
    flipping.start();
    // Each command is judged against the directory the symlink points to at that
    // moment (refused when it is theirs); of 500 tries, some meet a flip in between.
    for _ in 0..500 {
        let _ = Command::new("timeout")
            .args(["10", bin(), "user", "list", "--data-dir"])
            .arg(&flipping.link)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    flipping.stop();
    kill_group(&mut fake);
    kill_group(&mut real);
    let mut captured = String::new();
    std::io::Read::read_to_string(&mut heard, &mut captured).unwrap();
    assert!(
        captured.trim().is_empty(),
        "the other user's socket received: {captured}"
    );
}

/// The same race with no server running: the command found no socket in the directory it
/// judged, then opened the store through the symlink again, so another user re-pointing
/// it in between received the new user's password hash in a store of their own (and a
/// backup would have copied their store). The command now opens the store in the
/// directory it judged.
#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn a_symlink_re_pointed_after_the_check_does_not_redirect_an_offline_command() {
    let mut flipping = FlippingLink::new("attack-local-offline");
    flipping.start();
    let evil = flipping.evil.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut added = 0;
    for n in 0..300 {
        if Instant::now() > deadline || evil.join("users.redb").exists() {
            break;
        }
        if quick_user_add(
            Command::new(bin())
                .args(["user", "add", &format!("user{n}"), "--data-dir"])
                .arg(&flipping.link),
        ) {
            added += 1;
        }
    }
    flipping.stop();
    assert!(
        !evil.join("users.redb").exists(),
        "a store was made in the other user's directory"
    );
    assert!(added > 0, "no command got through at all");
}

/// A data directory that does not exist yet, in a shared directory: `user add` makes it,
/// but another user can make it first, between the check and the `mkdir` (which accepts
/// a directory that is there), and so receive the new store. The command now judges the
/// directory again once it exists.
#[test]
#[ignore = "needs root: runs the other user as nobody with runuser (and python3)"]
fn a_data_directory_made_first_by_another_user_does_not_receive_the_store() {
    let dir = TempDir::new("attack-local-mkdir");
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
    // nobody makes and removes the directory as fast as they can.
    const RACER: &str = r#"
import os, time
end = time.time() + 60
while time.time() < end and not os.path.exists('stop'):
    try:
        os.mkdir('latchkey-data', 0o777)
        os.rmdir('latchkey-data')
    except OSError:
        pass
"#;
    let mut racer = spawn_group(
        Command::new("runuser")
            .args(["-u", "nobody", "--", "python3", "-c", RACER])
            .current_dir(&shared),
    );
    let data = shared.join("latchkey-data");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut stolen = false;
    for n in 0..200 {
        if Instant::now() > deadline {
            break;
        }
        quick_user_add(
            Command::new(bin())
                .args(["user", "add", &format!("user{n}")])
                .current_dir(&shared)
                .env_remove("LATCHKEY_DATA_DIR")
                .env_remove("STATE_DIRECTORY"),
        );
        // A store in a directory nobody made: nobody's rmdir now fails, so it stays.
        if let Ok(meta) = std::fs::metadata(&data) {
            use std::os::unix::fs::MetadataExt;
            if meta.uid() != 0 && data.join("users.redb").exists() {
                stolen = true;
                break;
            }
            if meta.uid() == 0 {
                // Ours (made between two of theirs): start again without it.
                let _ = std::fs::remove_dir_all(&data);
            }
        }
    }
    std::fs::write(shared.join("stop"), b"").unwrap();
    kill_group(&mut racer);
    assert!(
        !stolen,
        "the store was made in a data directory another user made"
    );
}

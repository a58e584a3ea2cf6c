//! Crash safety, by crashing: a child process writes to the store in a loop and
//! acknowledges each write on stdout after `commit` returned; the parent kills
//! it with SIGKILL at a random moment, over several rounds on the same file,
//! then reopens the store and checks that every acknowledged write is there and
//! that the store is consistent.
//!
//! The child is this test binary run again with `--exact crash_child`; it does
//! nothing unless the environment variable below names a directory.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use latchkey::store::UserStore;

const CHILD_DIR: &str = "LATCHKEY_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "LATCHKEY_CRASH_CHILD_ROUND";
const ROUNDS: u32 = 12;

fn random_below(n: u64) -> u64 {
    let mut buf = [0u8; 8];
    getrandom::fill(&mut buf).expect("random");
    u64::from_le_bytes(buf) % n
}

/// The child: create users in a loop (with some revokes and deletes mixed in)
/// and print an acknowledgement after each commit returns. Cheap fake hashes
/// keep it write-bound.
#[test]
#[ignore = "a child process of acknowledged_writes_survive_sigkill"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round = std::env::var(CHILD_ROUND).expect("round");
    let store = UserStore::open(&PathBuf::from(dir).join("users.redb")).expect("open");
    let mut out = std::io::stdout().lock();
    // libtest may have printed "test crash_child ... " without a line end.
    writeln!(out).expect("stdout");
    let mut created = Vec::new();
    for i in 0u64.. {
        let name = format!("r{round}-u{i}");
        let user = store.create(&name, "user", "$fake$hash").expect("create");
        writeln!(out, "ack create {} {name}", user.id).expect("stdout");
        created.push(user.id);
        if i % 3 == 0 {
            let ver = store.revoke(user.id).expect("revoke").ver;
            writeln!(out, "ack ver {} {ver}", user.id).expect("stdout");
        }
        if i % 5 == 4 {
            let id = created.remove(0);
            writeln!(out, "intent delete {id}").expect("stdout");
            store.delete(id).expect("delete");
            writeln!(out, "ack delete {id}").expect("stdout");
        }
        out.flush().expect("stdout");
    }
}

/// What the parent learned from the children.
#[derive(Default)]
struct Acks {
    created: HashMap<u64, String>,
    ver: HashMap<u64, u64>,
    deleting: HashSet<u64>,
    deleted: HashSet<u64>,
}

impl Acks {
    /// Reads one complete line (a line cut by the kill is not an acknowledgement).
    fn take(&mut self, line: &str) {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(what), Some(id)) = (words.next(), words.next(), words.next()) else {
            return;
        };
        let Ok(id) = id.parse::<u64>() else { return };
        let arg = words.next();
        match (kind, what) {
            ("ack", "create") => {
                let name = arg.expect("name").to_string();
                assert!(
                    self.created.insert(id, name).is_none(),
                    "id {id} handed out twice"
                );
            }
            ("ack", "ver") => {
                self.ver.insert(id, arg.expect("ver").parse().expect("ver"));
            }
            ("intent", "delete") => {
                self.deleting.insert(id);
            }
            ("ack", "delete") => {
                self.deleted.insert(id);
            }
            _ => {}
        }
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = std::env::temp_dir().join(format!("latchkey-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let exe = std::env::current_exe().expect("test binary");
    let mut acks = Acks::default();

    for round in 0..ROUNDS {
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--include-ignored"])
            .args(["--test-threads", "1"])
            .env(CHILD_DIR, &dir)
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the child");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel::<String>();
        let reader = thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = String::new();
            while stdout.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
                if line.ends_with('\n') && tx.send(line.clone()).is_err() {
                    break;
                }
                line.clear();
            }
        });
        // Most rounds kill mid-loop; every fourth kills early, maybe while opening.
        if round % 4 != 3 {
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the child never acknowledged");
            thread::sleep(Duration::from_millis(random_below(300)));
        } else {
            thread::sleep(Duration::from_millis(random_below(20)));
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("the child exited by itself with {status}");
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("wait");
        reader.join().expect("reader");
        let before = acks.created.len();
        for line in rx.try_iter() {
            acks.take(&line);
        }
        eprintln!(
            "round {round}: {} writes acknowledged",
            acks.created.len() - before
        );
    }
    assert!(
        acks.created.len() > 20,
        "too few acknowledged writes to prove much"
    );

    let store = UserStore::open(&dir.join("users.redb")).expect("reopen after SIGKILL");
    let count = store
        .check_consistency()
        .expect("index, table and counter agree");
    let mut max_id = 0;
    for (&id, name) in &acks.created {
        max_id = max_id.max(id);
        let user = store.get(id).expect("readable");
        if acks.deleted.contains(&id) {
            assert_eq!(user, None, "acknowledged delete of {id} lost");
            continue;
        }
        if acks.deleting.contains(&id) && user.is_none() {
            continue; // killed between the delete's commit and its acknowledgement
        }
        let user = user.unwrap_or_else(|| panic!("acknowledged user {id} ({name}) lost"));
        assert_eq!(&user.name, name);
        let by_name = store.get_by_name(name).expect("readable").expect("indexed");
        assert_eq!(by_name.id, id);
        let acked_ver = acks.ver.get(&id).copied().unwrap_or(0);
        assert!(
            user.ver >= acked_ver,
            "user {id}: ver {} < acknowledged {acked_ver}",
            user.ver
        );
    }
    let surely_live = acks
        .created
        .keys()
        .filter(|id| !acks.deleting.contains(id))
        .count();
    assert!(
        count as usize >= surely_live,
        "{count} users, {surely_live} acknowledged"
    );
    // The counter is above every id ever handed out, deleted ones included.
    let next = store
        .create("after-the-crashes", "user", "$fake$hash")
        .expect("create");
    assert!(
        next.id > max_id,
        "id {} reused (max acknowledged {max_id})",
        next.id
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
}

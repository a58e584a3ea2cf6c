//! The control socket is served by one thread, one connection at a time, with a 30 s
//! timeout per read or write (not per request). A client that connects and sends
//! nothing (a forgotten `socat`, a stuck script, a backup written to a slow disk) holds
//! it: every other `latchkey user …` and `latchkey backup` waits behind it, and a
//! SIGTERM waits for it too, so the server takes 30 s to stop instead of "at once",
//! past the unit's `TimeoutStopSec=15` (systemd then SIGKILLs it). A client that sends
//! one byte every 29 s holds it for as long as it likes.

mod common;

use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Server;

#[test]
#[ignore = "slow: about a minute"]
fn one_idle_control_client_blocks_every_command_and_the_shutdown() {
    let server = Server::start(&[], &[]);
    let data = server.data_dir();
    let _idle = UnixStream::connect(data.join("control.sock")).unwrap();

    // Another operator command meanwhile.
    let started = Instant::now();
    let (code, _, err) = common::cli(&["user", "list", "--data-dir", data.to_str().unwrap()], "");
    let waited = started.elapsed();
    // SIGTERM with an idle client connected (the first one has timed out by now).
    let _idle_again = UnixStream::connect(data.join("control.sock")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let pid = server.pid();
    let started = Instant::now();
    common::signal(pid, 15);
    // Bounded wait for the process to go (it is our child: reap-free check via /proc).
    let status = loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let gone = state.is_empty() || state.split_whitespace().nth(2) == Some("Z");
        if gone || started.elapsed() > Duration::from_secs(40) {
            break if gone {
                "exited"
            } else {
                "still running after 40 s"
            };
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopping = started.elapsed();
    drop(server);
    assert!(
        waited < Duration::from_secs(5) && stopping < Duration::from_secs(15),
        "with one idle control connection open, `user list` took {waited:?} (exit {code}: \
         {err}) and stopping server {pid} took {stopping:?} ({status}); the unit gives 15 s"
    );
}

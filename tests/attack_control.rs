//! The control socket against clients that stall.
//!
//! It was served by one thread, one connection at a time, with a 30 s timeout per read
//! (not per request): a client that connected and sent nothing (a forgotten `socat`, a
//! stuck script) held it, every other `latchkey user …` waited behind it, a SIGTERM
//! waited too (past the unit's `TimeoutStopSec=15`), and a client sending one byte
//! every 29 s held it for ever. Now each connection has its own thread and the whole
//! request line must arrive within 10 s.

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::Server;

/// Waits (bounded) for process `pid` to exit; returns how long it took.
fn wait_gone(pid: u32, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.is_empty() || state.split_whitespace().nth(2) == Some("Z") {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "server {pid} still runs after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn idle_control_clients_delay_neither_the_other_commands_nor_the_stop() {
    let server = Server::start(&[], &[]);
    let data = server.data_dir();
    let _idle = UnixStream::connect(data.join("control.sock")).unwrap();
    let _idle_too = UnixStream::connect(data.join("control.sock")).unwrap();

    let started = Instant::now();
    let (code, _, err) = common::cli(&["user", "list", "--data-dir", data.to_str().unwrap()], "");
    assert_eq!(code, 0, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "`user list` waited {:?} behind idle clients",
        started.elapsed()
    );

    let pid = server.pid();
    common::signal(pid, 15);
    let stopping = wait_gone(pid, Duration::from_secs(20));
    drop(server);
    assert!(
        stopping < Duration::from_secs(3),
        "stopping took {stopping:?} with idle control clients connected"
    );
}

#[test]
fn a_trickling_control_client_is_dropped_at_the_request_deadline() {
    let server = Server::start(&[], &[]);
    let mut slow = UnixStream::connect(server.data_dir().join("control.sock")).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(900)))
        .unwrap();
    let started = Instant::now();
    let mut byte = [0u8; 1];
    // One byte of a request every 900 ms: each read is short, the whole is not.
    let dropped = loop {
        if slow.write_all(b" ").is_err() {
            break started.elapsed();
        }
        match slow.read(&mut byte) {
            Ok(0) => break started.elapsed(),
            Ok(_) => panic!("an answer to a request that never ended"),
            Err(_) if started.elapsed() > Duration::from_secs(20) => {
                panic!("the trickling client is still connected after 20 s")
            }
            Err(_) => {}
        }
    };
    assert!(
        dropped >= Duration::from_secs(9) && dropped < Duration::from_secs(13),
        "dropped after {dropped:?}, not at the 10 s request deadline"
    );
}

#[test]
fn past_eight_connections_a_command_is_told_at_once_to_try_again() {
    let server = Server::start(&[], &[]);
    let data = server.data_dir();
    let d = data.to_str().unwrap();
    let idle: Vec<UnixStream> = (0..8)
        .map(|_| UnixStream::connect(data.join("control.sock")).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let (code, _, err) = common::cli(&["user", "list", "--data-dir", d], "");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(code, 1);
    assert!(err.contains("try again"), "{err}");
    drop(idle);
    std::thread::sleep(Duration::from_millis(200));
    let (code, _, err) = common::cli(&["user", "list", "--data-dir", d], "");
    assert_eq!(code, 0, "{err}");
}

/// The socket file removed while serving (a clean-up of the data directory): a stop
/// woke the control thread by connecting to that file, which was gone, so the stop
/// waited for ever on a thread blocked in `accept` (systemd killed it after
/// `TimeoutStopSec`). The stop now wakes it through the listening socket itself.
#[test]
fn a_removed_control_socket_file_does_not_hold_up_the_stop() {
    let server = Server::start(&[], &[]);
    std::fs::remove_file(server.data_dir().join("control.sock")).unwrap();
    let pid = server.pid();
    common::signal(pid, 15);
    let stopping = wait_gone(pid, Duration::from_secs(20));
    drop(server);
    assert!(
        stopping < Duration::from_secs(3),
        "stopping took {stopping:?} once the socket file was gone"
    );
}

/// The socket file removed while serving (or the whole data directory, which the keeper
/// makes again): the commands found no socket, tried the store themselves and were
/// refused by the running server's lock ("in use by a running server") until a
/// restart. The server now listens again within the keeper's interval.
#[test]
fn a_removed_control_socket_listens_again() {
    let server = Server::start(&[], &[]);
    let data = server.data_dir();
    let d = data.to_str().unwrap();
    let (code, _, err) = common::cli(
        &["user", "add", "carol", "--data-dir", d],
        "a long enough password\n",
    );
    assert_eq!(code, 0, "{err}");
    std::fs::remove_file(data.join("control.sock")).unwrap();
    let started = Instant::now();
    let (code, out, err) = loop {
        let (code, out, err) = common::cli(&["user", "list", "--data-dir", d], "");
        if code == 0 || started.elapsed() > Duration::from_secs(6) {
            break (code, out, err);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(code, 0, "the commands cannot reach the server again: {err}");
    assert!(out.contains("carol"), "{out}");
    assert!(
        server.log().contains("it listens again"),
        "{}",
        server.log()
    );
}

//! The control socket: `control.sock` in the data directory, through which `latchkey
//! user …` and `latchkey backup` reach a running server that holds the store (redb lets
//! one process open the file, so the commands cannot open it beside a server).
//!
//! The socket is a Unix stream socket, mode 0600 in a 0700 directory; every connection
//! is also checked by the peer's credentials (`SO_PEERCRED`): only root and the user the
//! server runs as may use it. One request per connection: the client sends one JSON
//! line ([`Request`]) within 10 s, the server answers one JSON line ([`Answer`]) and,
//! for a backup, the copy's bytes after it, then closes. Each connection is answered on
//! a thread of its own (at most 8 at once; one more is told to try again), so a stuck
//! or forgotten client delays neither the other commands nor a stop, which waits only
//! for commands already running, up to 5 s. The server runs the very code the command
//! line runs on a store it opened itself (`ops::execute`, `UserStore::backup_to`), so
//! the output, messages and exit codes are the same either way, and a write takes
//! effect at once in the running server.
//!
//! The socket is made under a temporary name and renamed into place, replacing one left
//! by a server that crashed (one that still answers is another server: the start is
//! refused); it is removed when the server stops cleanly.

use std::fmt;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::accounts::Accounts;
use crate::ops::{self, Command, Output};
use crate::store::{BackupInfo, UserStore};
use crate::trust::{self, Untrusted};

/// The socket's file name in the data directory.
pub const SOCKET_FILE: &str = "control.sock";

/// The longest request line accepted, bytes (a command with a password is far shorter).
const MAX_REQUEST: u64 = 64 * 1024;

/// How long the client waits for an answer, and the server for a reader to take each
/// part of one (a backup may be long: this bounds each write, not the whole).
const TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client has to send its whole request line, from the accept on: an idle
/// or trickling client is dropped after it, whatever it sends meanwhile.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How many connections are answered at once; one more is told to try again at once,
/// so a stuck client never makes the others wait.
const MAX_CLIENTS: usize = 8;

/// How long a stopping server waits for commands that are running (not for clients
/// still sending) to finish and answer.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// What a client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Run a `latchkey user …` command.
    User {
        /// The command.
        command: Command,
    },
    /// Make a backup of the store and send it.
    Backup,
}

/// The server's answer: what to print, and how many bytes of attachment follow (the
/// backup copy).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// What the command prints and its exit code.
    pub output: Output,
    /// Bytes that follow the answer's line.
    pub attachment: u64,
    /// For a backup: what the copy holds.
    pub backup: Option<BackupSummary>,
}

/// What a backup copy holds, as `latchkey backup` reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupSummary {
    /// Readable users.
    pub users: u64,
    /// Damaged records copied as they are.
    pub damaged: u64,
}

impl From<&BackupInfo> for BackupSummary {
    fn from(info: &BackupInfo) -> BackupSummary {
        BackupSummary {
            users: info.users,
            damaged: info.damaged,
        }
    }
}

/// Why the control socket could not be used.
#[derive(Debug)]
pub enum ControlError {
    /// The socket exists but this user may not connect to it.
    Denied(PathBuf),
    /// Another server answers on the socket (at start).
    InUse(PathBuf),
    /// The socket could not be made, reached or spoken to.
    Io(PathBuf, io::Error),
    /// The other side sent something that is not the protocol.
    Protocol(String),
    /// The data directory could have been made by another local user (see
    /// [`crate::trust`]): nothing is sent there.
    Untrusted(Untrusted),
    /// The process answering on the socket runs as a user who is neither root, the
    /// invoking user nor the data directory's owner.
    Impostor {
        /// The socket.
        path: PathBuf,
        /// The answering process's user id.
        uid: u32,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Denied(path) => write!(
                f,
                "permission denied on {}: only root and the user the server runs as may \
                 manage its users while it runs (try sudo)",
                path.display()
            ),
            ControlError::InUse(path) => write!(
                f,
                "another latchkey server answers on {}: one data directory serves one server",
                path.display()
            ),
            ControlError::Io(path, e) => write!(f, "control socket {}: {e}", path.display()),
            ControlError::Protocol(what) => {
                write!(f, "the server's control socket answered oddly: {what}")
            }
            ControlError::Untrusted(why) => write!(f, "{why}"),
            ControlError::Impostor { path, uid } => write!(
                f,
                "refusing {}: the process answering there runs as user id {uid}, who is \
                 neither root, you, nor the owner of the data directory",
                path.display()
            ),
        }
    }
}

impl std::error::Error for ControlError {}

/// The running control socket; stops and removes the socket file when dropped.
pub struct ControlSocket {
    path: PathBuf,
    inode: u64,
    stop: Arc<AtomicBool>,
    /// The listening socket (a second handle to it), shut down to wake the thread
    /// blocked in `accept`: connecting to the file would not, once it is removed.
    waker: UnixListener,
    thread: Option<JoinHandle<()>>,
    clients: Arc<Clients>,
    /// What the socket answers with, kept to listen again ([`ControlSocket::keep`]).
    context: Arc<Context>,
}

/// The connections being answered: how many, and how many of them run a command.
#[derive(Default)]
struct Clients {
    counts: Mutex<(usize, usize)>,
    idle: Condvar,
}

impl Clients {
    /// Takes a place for a new connection, unless [`MAX_CLIENTS`] are being answered.
    fn enter(&self) -> bool {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if counts.0 >= MAX_CLIENTS {
            return false;
        }
        counts.0 += 1;
        true
    }

    fn leave(&self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        counts.0 -= 1;
    }

    /// Runs `work` counted as a running command (what a stop waits for); it stops
    /// counting when `work` ends, by a panic too.
    fn running<T>(&self, work: impl FnOnce() -> T) -> T {
        /// Ends the count when dropped, however `work` ends.
        struct Running<'a>(&'a Clients);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                let mut counts = self.0.counts.lock().unwrap_or_else(PoisonError::into_inner);
                counts.1 -= 1;
                self.0.idle.notify_all();
            }
        }
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).1 += 1;
        let _running = Running(self);
        work()
    }

    /// Waits up to `limit` for the running commands to finish.
    fn wait_for_running(&self, limit: Duration) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .idle
            .wait_timeout_while(counts, limit, |c| c.1 > 0)
            .map_err(|_| ());
    }
}

/// What the server needs to answer requests.
struct Context {
    store: Arc<UserStore>,
    accounts: Arc<Accounts>,
    data_dir: PathBuf,
    owner: u32,
}

impl ControlSocket {
    /// Listens on `control.sock` in `data_dir` and answers requests on a thread of its
    /// own, with the server's store and account rules.
    pub fn start(
        data_dir: &Path,
        store: Arc<UserStore>,
        accounts: Arc<Accounts>,
    ) -> Result<ControlSocket, ControlError> {
        let path = data_dir.join(SOCKET_FILE);
        let io_err = |e| ControlError::Io(path.clone(), e);
        if UnixStream::connect(&path).is_ok() {
            return Err(ControlError::InUse(path));
        }
        let temp = data_dir.join(format!(".{SOCKET_FILE}.{}", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        let listener = UnixListener::bind(&temp).map_err(io_err)?;
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(0o600))
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| {
                let _ = std::fs::remove_file(&temp);
                io_err(e)
            })?;
        let inode = std::fs::metadata(&path).map_err(io_err)?.ino();
        let stop = Arc::new(AtomicBool::new(false));
        let context = Context {
            store,
            accounts,
            data_dir: data_dir.to_path_buf(),
            // SAFETY: geteuid has no preconditions and cannot fail.
            owner: unsafe { libc::geteuid() },
        };
        let clients = Arc::new(Clients::default());
        let waker = listener.try_clone().map_err(io_err)?;
        let context = Arc::new(context);
        let thread = {
            let (stop, clients) = (Arc::clone(&stop), Arc::clone(&clients));
            let context = Arc::clone(&context);
            std::thread::Builder::new()
                .name("control".into())
                .spawn(move || serve(&listener, &context, &stop, &clients))
                .map_err(io_err)?
        };
        Ok(ControlSocket {
            path,
            inode,
            stop,
            waker,
            thread: Some(thread),
            clients,
            context,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Listens again when the socket file is gone or replaced (a clean-up of the data
    /// directory, or the directory removed and made again by the keeper), so the
    /// commands still reach this server instead of being refused by the store's lock:
    /// `Ok(true)` when it did. Another server answering there is left alone
    /// ([`ControlError::InUse`]).
    pub fn keep(&mut self) -> Result<bool, ControlError> {
        let in_place = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| m.ino() == self.inode && m.file_type().is_socket());
        if in_place {
            return Ok(false);
        }
        let context = Arc::clone(&self.context);
        let fresh = ControlSocket::start(
            &context.data_dir,
            Arc::clone(&context.store),
            Arc::clone(&context.accounts),
        )?;
        // The old one stops (commands under way finish); its file is not ours to remove.
        drop(std::mem::replace(self, fresh));
        Ok(true)
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept call (it fails at once on a shut socket); the thread sees the
        // flag and ends.
        // SAFETY: shutdown on the listener's own open descriptor; no memory is involved.
        unsafe {
            libc::shutdown(self.waker.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // Commands under way finish and answer; clients still sending are left behind.
        self.clients.wait_for_running(STOP_GRACE);
        // Only our own socket goes: a newer server may have replaced it meanwhile.
        if std::fs::metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Accepts connections and answers each on a thread of its own, at most
/// [`MAX_CLIENTS`] at once.
fn serve(
    listener: &UnixListener,
    context: &Arc<Context>,
    stop: &AtomicBool,
    clients: &Arc<Clients>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if !clients.enter() {
            busy(stream);
            continue;
        }
        let (context, mine) = (Arc::clone(context), Arc::clone(clients));
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    answer(stream, &context, &mine)
                }));
                mine.leave();
                match outcome {
                    Ok(Err(e)) => crate::log::debug(&format!("control socket: {e}")),
                    Err(_) => crate::log::error("control socket: a request failed unexpectedly"),
                    Ok(Ok(())) => {}
                }
            });
        if let Err(e) = spawned {
            clients.leave();
            crate::log::error(&format!("control socket: cannot answer a connection: {e}"));
        }
    }
}

/// Tells a connection over [`MAX_CLIENTS`] to try again, without waiting on it.
fn busy(mut stream: UnixStream) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let output = Output::fail(format!(
        "the server is answering {MAX_CLIENTS} other commands; try again in a moment"
    ));
    let _ = send(
        &mut stream,
        &Answer {
            output,
            ..Answer::default()
        },
    );
}

/// Reads one request line within [`REQUEST_DEADLINE`] of now, at most [`MAX_REQUEST`]
/// bytes: a client that trickles bytes cannot stretch it.
fn read_request(stream: &mut UnixStream) -> io::Result<String> {
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the request did not arrive in time",
            ));
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|&b| b == b'\n') {
            line.truncate(end);
            break;
        }
        if line.len() as u64 > MAX_REQUEST {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "the request line is too long",
            ));
        }
    }
    String::from_utf8(line).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Answers one connection: checks who is asking, reads the request, runs it, replies.
fn answer(mut stream: UnixStream, context: &Context, clients: &Clients) -> io::Result<()> {
    stream.set_write_timeout(Some(TIMEOUT))?;
    let uid = peer_uid(&stream)?;
    let line = read_request(&mut stream)?;
    if uid != 0 && uid != context.owner {
        let refusal = Output::fail(format!(
            "permission denied: only root and the user the server runs as (uid {}) may \
             manage its users; you are uid {uid}",
            context.owner
        ));
        crate::log::info(&format!("control socket: refused a request from uid {uid}"));
        return send(
            &mut stream,
            &Answer {
                output: refusal,
                ..Answer::default()
            },
        );
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            let output = Output::fail(format!("the request could not be read: {e}"));
            return send(
                &mut stream,
                &Answer {
                    output,
                    ..Answer::default()
                },
            );
        }
    };
    match request {
        Request::User { command } => {
            let output =
                clients.running(|| ops::execute(&command, &context.store, &context.accounts));
            send(
                &mut stream,
                &Answer {
                    output,
                    ..Answer::default()
                },
            )
        }
        Request::Backup => backup(&mut stream, context, clients),
    }
}

/// Makes a backup in the data directory (never half-written, mode 0600), sends it and
/// removes it.
fn backup(stream: &mut UnixStream, context: &Context, clients: &Clients) -> io::Result<()> {
    static SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let temp = context.data_dir.join(format!(
        ".control-backup-{}-{}.redb",
        std::process::id(),
        SERIAL.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_file(&temp);
    let made = clients.running(|| context.store.backup_to(&temp));
    let result = match made {
        Ok(info) => match std::fs::File::open(&temp) {
            Ok(mut file) => {
                let answer = Answer {
                    output: Output::ok(""),
                    attachment: info.bytes,
                    backup: Some(BackupSummary::from(&info)),
                };
                send(stream, &answer)
                    .and_then(|()| io::copy(&mut (&mut file).take(info.bytes), stream).map(|_| ()))
            }
            Err(e) => send(
                stream,
                &Answer {
                    output: Output::fail(format!("cannot read the backup copy: {e}")),
                    ..Answer::default()
                },
            ),
        },
        Err(e) => send(
            stream,
            &Answer {
                output: Output::fail(e),
                ..Answer::default()
            },
        ),
    };
    let _ = std::fs::remove_file(&temp);
    result
}

fn send(stream: &mut UnixStream, answer: &Answer) -> io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// The user id of the process at the other end of `stream` (`SO_PEERCRED`).
fn peer_uid(stream: &UnixStream) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt on a valid socket fd, writing at most `len` bytes into `cred`,
    // which is a live ucred of that size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// A connection to a running server's control socket.
pub struct Client {
    path: PathBuf,
    stream: UnixStream,
}

/// Connects to the control socket in `data_dir`: `Ok(None)` when no server listens
/// there (no socket, or one left by a server that is gone), so the caller opens the
/// store itself. Refuses a data directory another local user could have made
/// ([`trust::check`]) and a socket answered by a process of such a user: the command
/// would send them passwords, or take a backup from them.
pub fn connect(data_dir: &Path) -> Result<Option<Client>, ControlError> {
    // The directory judged, symlinks resolved, is the one spoken to: a symlink on the
    // way could be re-pointed meanwhile.
    let Some(data_dir) = trust::resolve(data_dir).map_err(ControlError::Untrusted)? else {
        return Ok(None);
    };
    let data_dir = data_dir.as_path();
    let path = data_dir.join(SOCKET_FILE);
    let stream = match UnixStream::connect(&path) {
        Ok(stream) => stream,
        Err(e) => {
            return match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Ok(None),
                io::ErrorKind::PermissionDenied => Err(ControlError::Denied(path)),
                _ => Err(ControlError::Io(path, e)),
            };
        }
    };
    let uid = peer_uid(&stream).map_err(|e| ControlError::Io(path.clone(), e))?;
    let owner = std::fs::metadata(data_dir)
        .map(|m| m.uid())
        .map_err(|e| ControlError::Io(path.clone(), e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if uid != 0 && uid != me && uid != owner {
        return Err(ControlError::Impostor { path, uid });
    }
    Ok(Some(Client { path, stream }))
}

impl Client {
    /// Sends `request` and reads the answer; an attachment is left to read with
    /// [`attachment`](Self::attachment).
    pub fn call(&mut self, request: &Request) -> Result<Answer, ControlError> {
        let io_err = |e| ControlError::Io(self.path.clone(), e);
        self.stream
            .set_read_timeout(Some(TIMEOUT * 4))
            .map_err(io_err)?;
        let mut line =
            serde_json::to_vec(request).map_err(|e| ControlError::Protocol(e.to_string()))?;
        line.push(b'\n');
        // A server that refuses the request may answer and close before reading it all:
        // its answer is still there to read, so a failed write is not the end.
        let written = self.stream.write_all(&line);
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte up to the newline, so the attachment stays unread on the socket.
        loop {
            match self.stream.read(&mut byte).map_err(io_err)? {
                0 => break,
                _ if byte[0] == b'\n' => break,
                _ => reply.push(byte[0]),
            }
            if reply.len() as u64 > MAX_REQUEST * 16 {
                return Err(ControlError::Protocol("an answer line too long".into()));
            }
        }
        if reply.is_empty() {
            return Err(match written {
                Err(e) => io_err(e),
                Ok(()) => ControlError::Protocol(
                    "the server closed the connection without answering".into(),
                ),
            });
        }
        serde_json::from_slice(&reply).map_err(|e| ControlError::Protocol(e.to_string()))
    }

    /// Runs a `latchkey user …` command on the server.
    pub fn user(&mut self, command: &Command) -> Result<Output, ControlError> {
        Ok(self
            .call(&Request::User {
                command: command.clone(),
            })?
            .output)
    }

    /// Copies the `len` attachment bytes that follow an answer into `out`.
    pub fn attachment(&mut self, len: u64, out: &mut impl Write) -> Result<(), ControlError> {
        let copied = io::copy(&mut (&mut self.stream).take(len), out)
            .map_err(|e| ControlError::Io(self.path.clone(), e))?;
        if copied != len {
            return Err(ControlError::Protocol(format!(
                "the backup ended after {copied} of {len} bytes"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_reads_as_one_plain_sentence() {
        let path = PathBuf::from("/srv/latchkey/control.sock");
        for error in [
            ControlError::Denied(path.clone()),
            ControlError::InUse(path.clone()),
            ControlError::Protocol("an answer line too long".into()),
            ControlError::Impostor {
                path: path.clone(),
                uid: 1001,
            },
        ] {
            let text = error.to_string();
            assert!(!text.contains("  ") && !text.contains('\n'), "{text:?}");
        }
    }

    #[test]
    fn a_command_that_panics_is_no_longer_waited_for() {
        let clients = Clients::default();
        assert!(clients.enter());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            clients.running(|| panic!("a command failed unexpectedly"))
        }));
        assert!(panicked.is_err());
        let started = std::time::Instant::now();
        clients.wait_for_running(Duration::from_secs(5));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "the stop waited for it"
        );
        assert_eq!(clients.running(|| 7), 7);
    }
}

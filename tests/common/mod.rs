//! Test support: start the real `latchkey` binary on a loopback port with a temporary
//! data directory, and talk raw HTTP/1.1 to it (raw, so hostile requests are possible).

#![allow(dead_code)]

#[cfg(feature = "postgres")]
pub mod pg;
pub mod stores;
pub mod token;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_latchkey")
}

/// The optimised binary, for tests that measure memory or face hostile load:
/// `$LATCHKEY_RELEASE_BIN`, or `target/release/latchkey` (built by `cargo build --release`).
pub fn release_bin() -> String {
    let path = std::env::var("LATCHKEY_RELEASE_BIN")
        .unwrap_or_else(|_| format!("{}/target/release/latchkey", env!("CARGO_MANIFEST_DIR")));
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: run `cargo build --release` first (or set LATCHKEY_RELEASE_BIN)"
    );
    path
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "latchkey-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// `users.redb` in this directory.
    pub fn store_file(&self) -> PathBuf {
        self.0.join("users.redb")
    }

    /// `data/` in this directory (a data dir the CLI creates).
    pub fn data(&self) -> PathBuf {
        self.0.join("data")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Environment that keeps tests fast: cheap argon2, plain-HTTP cookies off by default.
pub const FAST_ENV: &[(&str, &str)] = &[
    ("LATCHKEY_ARGON2_MEMORY_KIB", "64"),
    ("LATCHKEY_ARGON2_ITERATIONS", "1"),
    ("LATCHKEY_WORKERS", "4"),
];

/// A running server.
pub struct Server {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: Arc<TempDir>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `latchkey serve` with a fresh data directory and the fast environment.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_in(Arc::new(TempDir::new("srv")), args, env)
    }

    /// Starts `latchkey serve` in an existing directory.
    pub fn start_in(dir: Arc<TempDir>, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_bin(bin(), dir, args, env)
    }

    /// Starts `latchkey serve` from the given binary.
    pub fn start_bin(bin: &str, dir: Arc<TempDir>, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("LATCHKEY_") || k.starts_with("LISTEN_") || k == "NOTIFY_SOCKET" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in FAST_ENV.iter().chain(env) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn latchkey");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(Ok(addr));
                        }
                    } else if (line.contains(" error ") || line.starts_with("latchkey:"))
                        && let Some(tx) = tx.as_ref()
                    {
                        let _ = tx.send(Err(line.clone()));
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(addr)) => addr.parse().unwrap(),
            Ok(Err(line)) => panic!("server failed to start: {line}"),
            Err(_) => panic!("server did not start; log: {:?}", log.lock().unwrap()),
        };
        Server {
            child: Some(child),
            addr,
            dir,
            log,
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The one-time setup code the server wrote for the first registration, if any.
    pub fn setup_code(&self) -> Option<String> {
        std::fs::read_to_string(self.data_dir().join("setup-code"))
            .ok()
            .map(|c| c.trim().to_string())
    }

    pub fn key_file(&self) -> PathBuf {
        self.data_dir().join("secret.key")
    }

    /// Everything the server wrote on stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut conn = Conn::open(self.addr);
        conn.send(method, path, headers, body)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        self.request("GET", path, headers, b"")
    }

    /// A form POST.
    pub fn post_form(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        form: &[(&str, &str)],
    ) -> Response {
        let body = encode_form(form);
        let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.request("POST", path, &all, body.as_bytes())
    }

    /// Sends SIGTERM and waits.
    pub fn stop(mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        unsafe {
            libc_kill(child.id() as i32, 15);
        }
        wait_timeout(&mut child, Duration::from_secs(15))
    }

    /// SIGKILL (for "kill one instance mid-run").
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Peak and current resident memory of the server, kB (from /proc).
    pub fn memory_kb(&self) -> (u64, u64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        (field("VmHWM:"), field("VmRSS:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: i32) {
    unsafe {
        libc_kill(pid as i32, sig);
    }
}

pub fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn encode_form(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", pct(k), pct(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes a form or query value (everything but unreserved characters).
pub fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A keep-alive connection.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Conn {
            stream: BufReader::new(stream),
        }
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.stream.get_mut().write_all(&bytes).unwrap();
        self.read_response(method == "HEAD")
    }

    pub fn raw(&mut self) -> &mut TcpStream {
        self.stream.get_mut()
    }

    pub fn read_response(&mut self, head: bool) -> Response {
        let mut line = String::new();
        self.stream.read_line(&mut line).expect("status line");
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {line:?}"));
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.stream.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let find = |n: &str| headers.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
        let mut body = Vec::new();
        if !head {
            if let Some(len) = find("content-length") {
                body.resize(len.parse().unwrap(), 0);
                self.stream.read_exact(&mut body).unwrap();
            } else if find("transfer-encoding").is_some() {
                loop {
                    let mut size = String::new();
                    self.stream.read_line(&mut size).unwrap();
                    let n = usize::from_str_radix(size.trim(), 16).unwrap();
                    let mut chunk = vec![0; n + 2];
                    self.stream.read_exact(&mut chunk).unwrap();
                    if n == 0 {
                        break;
                    }
                    body.extend_from_slice(&chunk[..n]);
                }
            }
        }
        Response {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every `Set-Cookie` for `name`.
    pub fn set_cookies(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, v)| k == "set-cookie" && v.starts_with(&format!("{name}=")))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value a `Set-Cookie` gives `name` (empty when it deletes it).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let set = self.set_cookies(name);
        assert!(
            set.len() <= 1,
            "more than one Set-Cookie for {name}: {set:?}"
        );
        set.first().map(|c| {
            c[name.len() + 1..]
                .split(';')
                .next()
                .unwrap_or("")
                .to_string()
        })
    }

    pub fn location(&self) -> &str {
        self.header("location").unwrap_or("")
    }
}

/// A minimal cookie jar for one browser-like client.
#[derive(Debug, Default, Clone)]
pub struct Jar {
    pub cookies: Vec<(String, String)>,
}

impl Jar {
    /// Takes in every Set-Cookie of a response.
    pub fn absorb(&mut self, resp: &Response) {
        for (k, v) in &resp.headers {
            if k != "set-cookie" {
                continue;
            }
            let pair = v.split(';').next().unwrap_or("");
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            let deleted = v.contains("Max-Age=0") || value.is_empty();
            self.cookies.retain(|(n, _)| n != name);
            if !deleted {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, name: &str, value: &str) {
        self.cookies.retain(|(n, _)| n != name);
        self.cookies.push((name.to_string(), value.to_string()));
    }

    pub fn header(&self) -> String {
        self.cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// A browser-like client: a jar, CSRF fields scraped from pages.
pub struct Browser<'s> {
    pub server: &'s Server,
    pub jar: Jar,
}

impl<'s> Browser<'s> {
    /// A browser that has just registered `name` through the form (the first account of
    /// a store becomes its admin) and holds the login cookie.
    pub fn registered(server: &'s Server, name: &str, password: &str) -> Browser<'s> {
        let mut b = Browser::new(server);
        let code = server.setup_code().unwrap_or_default();
        let r = b.submit(
            "/register",
            "/register",
            &[
                ("username", name),
                ("password", password),
                ("confirm", password),
                ("setup_code", &code),
            ],
        );
        assert_eq!(r.status, 303, "{}", r.body);
        b
    }

    pub fn new(server: &'s Server) -> Browser<'s> {
        Browser {
            server,
            jar: Jar::default(),
        }
    }

    pub fn get(&mut self, path: &str) -> Response {
        let cookie = self.jar.header();
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("Cookie", &cookie)]
        };
        let resp = self.server.get(path, &headers);
        self.jar.absorb(&resp);
        resp
    }

    /// GETs `form_page`, scrapes its CSRF field, then POSTs `form` to `action`.
    pub fn submit(&mut self, form_page: &str, action: &str, form: &[(&str, &str)]) -> Response {
        let page = self.get(form_page);
        let csrf = csrf_of(&page.body)
            .unwrap_or_else(|| panic!("no csrf field on {form_page}: {}", page.body));
        self.post(action, form, &csrf)
    }

    /// Follows a redirect: GETs its `Location`.
    pub fn follow(&mut self, resp: &Response) -> Response {
        assert_eq!(resp.status, 303, "{}", resp.body);
        let location = resp.location().to_string();
        self.get(&location)
    }

    /// Submits a form through [`submit`](Self::submit) and follows the redirect that
    /// answers it (forms answer with one: Post/Redirect/Get); the page it leads to.
    pub fn done(&mut self, form_page: &str, action: &str, form: &[(&str, &str)]) -> Response {
        let r = self.submit(form_page, action, form);
        self.follow(&r)
    }

    /// POSTs a form with the given CSRF value.
    pub fn post(&mut self, action: &str, form: &[(&str, &str)], csrf: &str) -> Response {
        let mut fields = form.to_vec();
        fields.push(("csrf", csrf));
        let cookie = self.jar.header();
        let resp = self
            .server
            .post_form(action, &[("Cookie", &cookie)], &fields);
        self.jar.absorb(&resp);
        resp
    }
}

/// The text of the notice a page shows, if any.
pub fn notice_of(page: &str) -> Option<String> {
    let at = page.find("class=\"notice ")?;
    let rest = &page[at..];
    let start = rest.find('>')? + 1;
    let end = rest.find("</div>")?;
    Some(rest[start..end].to_string())
}

/// The CSRF field of the first form in a page.
pub fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")?;
    let rest = &page[at + 19..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The claims part of a JWT, decoded (no verification).
pub fn jwt_claims(token: &str) -> serde_json::Value {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The claims of a token latchkey issued (unverified), for minting variants of it.
pub fn claims_of(token: &str) -> latchkey::token::Claims<'static> {
    serde_json::from_value(jwt_claims(token)).expect("latchkey's claims")
}

/// Signs `claims` with the key in `key_file`, as the server holding it would.
pub fn mint(key_file: &Path, claims: &latchkey::token::Claims<'_>) -> String {
    let ring = latchkey::keys::KeyRing::load(&[key_file.to_path_buf()]).expect("key file");
    latchkey::token::Signer::new(&ring).sign(claims)
}

/// Runs the CLI with stdin text; returns (exit code, stdout, stderr).
pub fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("LATCHKEY_DATA_DIR")
        .env_remove("LATCHKEY_KEY_FILE")
        .env("LATCHKEY_ARGON2_MEMORY_KIB", "64")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit before reading its input.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A TCP connection to `addr` from the local address `source` (any of 127.0.0.0/8 on
/// Linux), so that tests can tell an attacker's connections from a normal client's.
pub fn connect_from(source: std::net::Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(target) = addr else {
        return Err(std::io::Error::other("IPv4 only"));
    };
    let sockaddr = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: plain socket calls on a descriptor this function owns until it is handed
    // to `TcpStream`, with sockaddr_in values of the size given.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*target.ip(), target.port());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// The value of one `/metrics` sample (`0` when absent), e.g.
/// `latchkey_requests_total{route="healthz",status="200"}`.
pub fn metric(server: &Server, sample: &str) -> u64 {
    let text = server.get("/metrics", &[]).body;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts `latchkey serve` from `bin` under a wrapper command (`prlimit …`, `runuser …`),
/// which is given first, then the binary and its arguments.
pub fn start_wrapped(
    wrapper: &[&str],
    bin: &str,
    dir: Arc<TempDir>,
    args: &[&str],
    env: &[(&str, &str)],
) -> Server {
    let script = dir.path().join("wrapped.sh");
    let mut text = String::from("#!/bin/sh\nexec");
    for word in wrapper.iter().chain([&bin]) {
        text.push_str(&format!(" '{word}'"));
    }
    text.push_str(" \"$@\"\n");
    std::fs::write(&script, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Server::start_bin(script.to_str().unwrap(), dir, args, env)
}

impl Server {
    /// Starts `latchkey serve` in `dir` like [`Server::start_in`], for a server expected to
    /// log errors while it starts (a damaged user record is logged, then served around):
    /// it waits for the listening line only, and fails if the process exits first.
    pub fn start_in_logging_errors(
        dir: Arc<TempDir>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut cmd = Command::new(bin());
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, _) in std::env::vars() {
            if k.starts_with("LATCHKEY_") || k.starts_with("LISTEN_") || k == "NOTIFY_SOCKET" {
                cmd.env_remove(k);
            }
        }
        for (k, v) in FAST_ENV.iter().chain(env) {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn latchkey");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(rest) = line.split("listening on http://").nth(1)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                    }
                    log.lock().unwrap().push(line);
                }
            });
        }
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr.parse().unwrap(),
            Err(_) => panic!("server did not start; log: {:?}", log.lock().unwrap()),
        };
        Server {
            child: Some(child),
            addr,
            dir,
            log,
        }
    }
}

/// A tmpfs mounted for the life of the value; unmounted on drop.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(at: &Path, size: &str) -> Tmpfs {
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a tmpfs and needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Fills the file system holding `dir` to the last byte; returns the filler file (a new
/// one on each call).
pub fn fill(dir: &Path) -> PathBuf {
    let taken = std::fs::read_dir(dir).map_or(0, |entries| entries.count());
    let path = dir.join(format!("filler-{taken}"));
    let mut f = std::fs::File::create(&path).expect("filler");
    for chunk in [65536usize, 4096, 512, 1] {
        let block = vec![0x55u8; chunk];
        while f.write_all(&block).is_ok() {}
    }
    let _ = f.sync_all();
    path
}

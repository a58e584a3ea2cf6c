//! A real PostgreSQL server for the tests: Debian's server binaries
//! (`/usr/lib/postgresql/<major>/bin`), run as the `postgres` user on a temporary data
//! directory, listening on a loopback port with a private socket directory, password
//! authentication (scram) over TCP. A suite that cannot start it fails with the install
//! line; it never skips.
//!
//! [`shared`] is one server for the whole test binary (each test makes its own database
//! with [`PgCluster::database`]); it is stopped when the test process exits. A test that
//! stops and starts the server makes its own with [`PgCluster::start`], stopped on drop.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The password of the `postgres` role in every test server.
pub const PASSWORD: &str = "test-pw-7Qx";

/// A PostgreSQL server started by a test.
pub struct PgCluster {
    root: PathBuf,
    bin: PathBuf,
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/*/bin` with `initdb`; panics with the install line.
fn server_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server binaries are missing (no /usr/lib/postgresql/*/bin/initdb); \
             this suite needs them: apt-get install -y --no-install-recommends postgresql"
        )
    })
}

fn as_postgres(bin: &Path, program: &str) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", "postgres", "--"]).arg(bin.join(program));
    cmd
}

fn run(mut cmd: Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("addr").port()
}

impl PgCluster {
    /// Makes a fresh server (initdb) and starts it.
    pub fn start() -> PgCluster {
        static N: AtomicUsize = AtomicUsize::new(0);
        let bin = server_bin();
        let root = std::env::temp_dir().join(format!(
            "latchkey-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).expect("pg dir");
        let pw = root.join("pw");
        std::fs::write(&pw, format!("{PASSWORD}\n")).expect("pw file");
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&root);
                c
            },
            "chown",
        );
        let mut init = as_postgres(&bin, "initdb");
        init.arg("-D")
            .arg(root.join("data"))
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .args(["--no-sync", "-E", "UTF8", "--locale=C"])
            .arg(format!("--pwfile={}", pw.display()));
        run(init, "initdb");
        let cluster = PgCluster {
            root,
            bin,
            port: free_port(),
        };
        cluster.resume();
        cluster
    }

    /// A server that accepts TCP connections only over TLS (`hostssl` in pg_hba.conf),
    /// with a self-signed certificate for `localhost` made by the `openssl` command; its
    /// PEM file is [`certificate`](Self::certificate).
    pub fn start_tls() -> PgCluster {
        let cluster = PgCluster::start();
        cluster.kill();
        let (crt, key) = (
            cluster.root.join("server.crt"),
            cluster.root.join("server.key"),
        );
        let mut req = Command::new("openssl");
        req.args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt);
        run(req, "openssl req");
        let mut own = Command::new("chown");
        own.arg("postgres:postgres").arg(&crt).arg(&key);
        run(own, "chown");
        let mut mode = Command::new("chmod");
        mode.arg("600").arg(&key);
        run(mode, "chmod");
        let data = cluster.root.join("data");
        let conf = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).expect("postgresql.conf");
        text.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            crt.display(),
            key.display()
        ));
        std::fs::write(&conf, text).expect("write postgresql.conf");
        let hba = data.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("host ") {
                    format!("hostssl{}\n", &l[4..])
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        std::fs::write(&hba, text).expect("write pg_hba.conf");
        cluster.resume();
        cluster
    }

    /// The certificate of a [`start_tls`](Self::start_tls) server (PEM).
    pub fn certificate(&self) -> PathBuf {
        self.root.join("server.crt")
    }

    /// Starts the (stopped) server again on the same port and data.
    pub fn resume(&self) {
        let mut start = as_postgres(&self.bin, "pg_ctl");
        start
            .arg("-D")
            .arg(self.root.join("data"))
            .arg("-l")
            .arg(self.root.join("log"))
            .args(["-w", "-t", "60", "-o"])
            .arg(format!(
                "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off \
                 -c max_connections=300",
                self.port,
                self.root.display()
            ))
            .arg("start");
        run(start, "pg_ctl start");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "PostgreSQL does not accept connections; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server the hard way (`pg_ctl stop -m immediate`: every backend dies at
    /// once, as in a crash); its data stays for [`resume`](Self::resume).
    pub fn kill(&self) {
        let mut stop = as_postgres(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        run(stop, "pg_ctl stop");
    }

    /// The server's log (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("log")).unwrap_or_default()
    }

    /// The URL of database `db` as the `postgres` role, password included.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// The URL of `db` without the password (for `store_password_file`).
    pub fn url_without_password(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A file holding the password (mode 0600), for `store_password_file`.
    pub fn password_file(&self) -> PathBuf {
        let file = self.root.join("client-pw");
        std::fs::write(&file, format!("{PASSWORD}\n")).expect("write");
        file
    }

    /// A client connection to `db`.
    pub fn client(&self, db: &str) -> postgres::Client {
        postgres::Client::connect(&self.url(db), postgres::NoTls)
            .unwrap_or_else(|e| panic!("cannot connect to the test server: {e}"))
    }

    /// A new, empty database; returns its URL.
    pub fn database(&self) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "t{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        // Over the private socket directory: works whatever pg_hba.conf asks of TCP.
        let mut psql = as_postgres(&self.bin, "psql");
        psql.arg("-h")
            .arg(&self.root)
            .args(["-p", &self.port.to_string(), "-U", "postgres", "-qc"])
            .arg(format!("CREATE DATABASE {name}"));
        run(psql, "psql CREATE DATABASE");
        self.url(&name)
    }

    fn stop_and_remove(&self) {
        let mut stop = as_postgres(&self.bin, "pg_ctl");
        stop.arg("-D")
            .arg(self.root.join("data"))
            .args(["-m", "immediate", "-w", "stop"]);
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop_and_remove();
    }
}

unsafe extern "C" {
    fn atexit(callback: extern "C" fn()) -> i32;
}

static SHARED: OnceLock<Mutex<Option<PgCluster>>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(cell) = SHARED.get()
        && let Ok(mut held) = cell.lock()
        && let Some(cluster) = held.take()
    {
        drop(cluster);
    }
}

/// The test binary's shared server, started on first use and stopped when the process
/// exits. Returns a URL to a fresh database of it.
pub fn fresh_database() -> String {
    let cell = SHARED.get_or_init(|| {
        let cluster = PgCluster::start();
        // SAFETY: registers a plain function to run at exit; it only stops the server.
        unsafe {
            atexit(stop_shared);
        }
        Mutex::new(Some(cluster))
    });
    let held = cell.lock().unwrap_or_else(|p| p.into_inner());
    held.as_ref().expect("the shared server runs").database()
}

//! Operating a running server, through the real binary: the safe first start (the
//! one-time setup code), and the user commands and backups that go through the running
//! server's control socket.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{Browser, Server, csrf_of};

/// Posts the first registration with `code` as the setup code; the response.
fn first_registration(server: &Server, name: &str, code: &str) -> common::Response {
    let mut b = Browser::new(server);
    let page = b.get("/register");
    assert!(page.body.contains("name=\"setup_code\""), "{}", page.body);
    let csrf = csrf_of(&page.body).expect("form");
    b.post(
        "/register",
        &[
            ("username", name),
            ("password", "a long password"),
            ("confirm", "a long password"),
            ("setup_code", code),
        ],
        &csrf,
    )
}

#[test]
fn the_first_administrator_needs_the_one_time_setup_code() {
    let server = Server::start(&[], &[]);
    let file = server.data_dir().join("setup-code");
    let code = server.setup_code().expect("the server wrote a setup code");
    let mode = std::fs::metadata(&file)
        .expect("setup-code")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the code is readable by the server's user only"
    );
    assert!(
        server.log().contains(&format!("setup code {code}")),
        "the log at start shows it: {}",
        server.log()
    );
    for wrong in ["", "0000-0000", &code.replace(&code[..1], "Z")] {
        let r = first_registration(&server, "mallory", wrong);
        assert_eq!(r.status, 303);
        assert!(r.location().starts_with("/register"), "{wrong:?} refused");
        assert!(r.cookie("token").is_none(), "{wrong:?} logs nobody in");
    }
    let r = first_registration(&server, "root", &code);
    assert_eq!((r.status, r.location()), (303, "/"), "the right code works");
    assert!(r.cookie("token").is_some());
    assert!(!file.exists(), "the file is gone after use");
    // The used code opens nothing: registration is closed now.
    let r = server.get("/register", &[]);
    assert_eq!(r.status, 403);
}

#[test]
fn an_administrator_made_with_the_cli_needs_no_setup_code() {
    let dir = std::sync::Arc::new(common::TempDir::new("setup"));
    let data = dir.data();
    let (code, _, err) = common::cli(
        &[
            "user",
            "add",
            "ops",
            "--role",
            "admin",
            "--data-dir",
            data.to_str().expect("utf-8"),
        ],
        "a long password\n",
    );
    assert_eq!(code, 0, "{err}");
    let server = Server::start_in(dir, &[], &[]);
    assert_eq!(
        server.setup_code(),
        None,
        "no code for a store with an admin"
    );
    assert!(!server.data_dir().join("setup-code").exists());
    assert!(!server.log().contains("setup code"));
    let mut b = Browser::new(&server);
    let r = b.submit(
        "/login",
        "/login",
        &[("username", "ops"), ("password", "a long password")],
    );
    assert_eq!((r.status, r.location()), (303, "/"));
}

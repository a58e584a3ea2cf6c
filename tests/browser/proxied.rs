//! latchkey behind the real nginx (Debian `nginx-light`), as `contrib/nginx.conf` sets it
//! up, seen from Chromium: the portal at `auth.example.com` and the gated app at
//! `app.example.com`, both on one loopback port that is not 80 (Chromium maps the names to
//! 127.0.0.1 with `--host-resolver-rules`). The portal is an issuing instance; `/auth` is
//! answered by a `--verify-only` instance sharing its key, as the shipped file suggests
//! for scaling out. The app is nginx's echo server ([`support::NGINX_ECHO_APP`]), which
//! shows the identity headers as they reached it.
//!
//! - [`forms_pass_the_content_security_policy_behind_nginx_on_its_own_port`]: the login,
//!   password, logout and "log out everywhere" forms all work in the browser, although
//!   browsers apply the CSP `form-action` to the redirect that answers a form and a
//!   source without a port matches only the default one; the login's redirect back to the
//!   app (another host, this port) is the one that needs the port variants.
//! - [`a_non_ascii_name_reaches_the_app_percent_encoded`]: a token of the original design
//!   naming `Zoë Ångström 张三` (its names were free text; latchkey's own are ASCII) opens
//!   the gate, and the app receives `Remote-User`, `Remote-Name` and `Remote-Role`
//!   percent-encoded as `http::identity_header` documents, decoding to the very text;
//!   the verify-only instance's own home page greets the name as it is.

use crate::common::token::{now, without_kid};
use crate::common::{Server, notice_of};
use crate::support::{
    Nginx, Port, add_users, echo_field, gate::latchkey_behind, get, percent_decode,
    render_nginx_contrib,
};
use crate::webdriver::Driver;
use serde_json::json;

/// The portal, the gate's `/auth` and the app behind nginx on one port. Fields drop in
/// order: nginx stops before the instances behind it.
struct Deployment {
    nginx: Nginx,
    issuer: Server,
    verifier: Server,
    port: u16,
}

impl Deployment {
    /// Starts the issuer (holding `users`: name, role, password), a verify-only instance
    /// sharing its key, and nginx with the shipped config in front of both.
    fn start(users: &[(&str, &str, &str)]) -> Deployment {
        let (listen, app) = (Port::reserve(), Port::reserve());
        let port = listen.port;
        // The issuer as the shipped configs assume: public URL, cookie domain, plain
        // HTTP, nginx trusted.
        let issuer = latchkey_behind(port);
        add_users(&issuer.data_dir(), users);
        let key = issuer.key_file();
        let login_url = format!("http://auth.example.com:{port}/login");
        let verifier = Server::start(
            &[
                "--verify-only",
                "--key-file",
                key.to_str().unwrap(),
                "--login-url",
                &login_url,
            ],
            &[
                ("LATCHKEY_COOKIE_DOMAIN", "example.com"),
                ("LATCHKEY_COOKIE_SECURE", "false"),
                ("LATCHKEY_TRUSTED_PROXIES", "127.0.0.1"),
            ],
        );
        let conf = render_nginx_contrib(port, issuer.addr, verifier.addr, app.port, |_| {});
        let nginx = Nginx::start(&conf, vec![listen, app]);
        Deployment {
            nginx,
            issuer,
            verifier,
            port,
        }
    }

    /// A URL of the portal.
    fn portal(&self, target: &str) -> String {
        format!("http://auth.example.com:{}{target}", self.port)
    }

    /// A URL of the gated app.
    fn app(&self, target: &str) -> String {
        format!("http://app.example.com:{}{target}", self.port)
    }

    /// nginx's error log and both logs of latchkey's, for failure messages.
    fn logs(&self) -> String {
        format!(
            "nginx:\n{}\nissuer:\n{}",
            self.nginx.error_log(),
            self.issuer.log()
        )
    }
}

/// Chromium resolving every `*.example.com` name to loopback.
fn browser() -> Driver {
    Driver::start_with(&["--host-resolver-rules=MAP *.example.com 127.0.0.1"])
}

/// Waits until the browser shows the page at `url` whose text contains `text`; on a
/// timeout the message names where the browser is instead (a form that the CSP blocked
/// leaves it on Chromium's error page or on the form).
fn arrive(d: &Driver, url: &str, text: &str, site: &Deployment) {
    let start = std::time::Instant::now();
    loop {
        let here = d.url();
        if here == url && d.body_text().contains(text) {
            return;
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the browser did not reach {url} showing {text:?}; it is at {here}, showing:\n{}\n{}",
            d.body_text(),
            site.logs()
        );
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}

/// The notice the page shows, read from its source as the browser has it.
fn notice(d: &Driver) -> Option<String> {
    let source = d.execute("return document.documentElement.outerHTML;");
    notice_of(source.as_str().unwrap_or_default())
}

#[test]
#[ignore = "heavy: needs chromium, chromedriver and nginx; run by .ci/run"]
fn forms_pass_the_content_security_policy_behind_nginx_on_its_own_port() {
    let site = Deployment::start(&[("alice", "user", "alice password")]);
    // The pages carry a form-action policy, so the browser has one to enforce.
    let host = format!("auth.example.com:{}", site.port);
    let page = get(site.nginx.addr, &host, "/login", &[]);
    let csp = page
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("no CSP on the login page: {:?}", page.headers))
        .to_string();
    assert!(csp.contains("form-action 'self' "), "{csp}");
    let driver = browser();
    let d = &driver;

    // The app sends a visitor to the portal's login page, which sends her back after the
    // login: the form posts to its own origin, the redirect goes to the app's.
    let dashboard = site.app("/dashboard?x=1");
    d.goto(&dashboard);
    d.wait_for_h1("Log in");
    let login = d.url();
    assert!(
        login.starts_with(&site.portal("/login?next=http%3A//app.example.com%3A")),
        "{login}"
    );
    d.type_into("#username", "alice");
    d.type_into("#password", "alice password");
    d.click("form[action='/login'] button[type=submit]");
    arrive(d, &dashboard, "app: user=[alice]", &site);

    // The account page's password form, back to the account page.
    d.goto(&site.portal("/account"));
    d.wait_for_h1("Your account");
    d.type_into("#current", "alice password");
    d.type_into("#password", "alice new password");
    d.type_into("#confirm", "alice new password");
    d.click("form[action='/account/password'] button[type=submit]");
    arrive(
        d,
        &site.portal("/account"),
        "Your password was changed.",
        &site,
    );
    assert_eq!(notice(d).as_deref(), Some("Your password was changed."));

    // The nav's logout form, to the home page.
    d.click("nav form[action='/logout'] button");
    arrive(d, &site.portal("/"), "You have been logged out.", &site);
    d.goto(&dashboard);
    d.wait_for_h1("Log in");

    // A login at the portal itself (a local next), then "log out everywhere".
    d.goto(&site.portal("/account"));
    d.wait_for_h1("Log in");
    d.type_into("#username", "alice");
    d.type_into("#password", "alice new password");
    d.click("form[action='/login'] button[type=submit]");
    arrive(d, &site.portal("/account"), "Your account", &site);
    d.goto(&site.portal("/account/revoke"));
    d.wait_for_h1("Log out everywhere?");
    d.click("form[action='/account/revoke'] button[type=submit]");
    arrive(
        d,
        &site.portal("/"),
        "You have been logged out on every device.",
        &site,
    );
    d.goto(&dashboard);
    d.wait_for_h1("Log in");
}

#[test]
#[ignore = "heavy: needs chromium, chromedriver and nginx; run by .ci/run"]
fn a_non_ascii_name_reaches_the_app_percent_encoded() {
    const NAME: &str = "Zoë Ångström 张三";
    const ROLE: &str = "rédactrice";
    let site = Deployment::start(&[]);
    // The token as the original design's create_token makes it, with the shared key.
    let key = std::fs::read_to_string(site.issuer.key_file()).unwrap();
    let token = without_kid(
        key.trim_end_matches(['\r', '\n']).as_bytes(),
        &json!({
            "name": NAME,
            "role": ROLE,
            "user_id": 7,
            "exp": now() + 3600,
            "iss": "latchkey",
        }),
    );
    let driver = browser();
    let d = &driver;
    // Without it, the gate sends the browser to log in.
    let whoami = site.app("/whoami");
    d.goto(&whoami);
    d.wait_for_h1("Log in");
    // With it (a cookie for every example.com host, as latchkey sets it), the app answers.
    d.add_cookie(json!({
        "name": "token",
        "value": token,
        "domain": "example.com",
        "path": "/",
        "httpOnly": true,
        "secure": false,
        "sameSite": "Lax",
    }));
    d.goto(&whoami);
    arrive(d, &whoami, "app: user=[", &site);
    let seen = d.body_text();
    // Every byte outside printable ASCII (and the space) as %XX of its UTF-8.
    let encoded_name = "Zo%C3%AB%20%C3%85ngstr%C3%B6m%20%E5%BC%A0%E4%B8%89";
    assert_eq!(echo_field(&seen, "user"), encoded_name, "{seen}");
    assert_eq!(echo_field(&seen, "name"), encoded_name, "{seen}");
    assert_eq!(echo_field(&seen, "role"), "r%C3%A9dactrice", "{seen}");
    assert_eq!(percent_decode(echo_field(&seen, "user")), NAME);
    assert_eq!(percent_decode(echo_field(&seen, "name")), NAME);
    assert_eq!(percent_decode(echo_field(&seen, "role")), ROLE);
    assert_eq!(echo_field(&seen, "id"), "7", "{seen}");
    assert_eq!(echo_field(&seen, "amr"), "pwd", "{seen}");
    assert_eq!(echo_field(&seen, "uri"), "/whoami", "{seen}");

    // The instance that judged it greets the name as it is, on its own page.
    let home = format!("http://{}/", site.verifier.addr);
    d.goto(&home);
    d.add_cookie(json!({"name": "token", "value": token, "path": "/", "httpOnly": true}));
    d.goto(&home);
    d.wait_for_h1(&format!("Hello, {NAME}!"));
    assert_eq!(d.text_of("span.badge"), ROLE);
}

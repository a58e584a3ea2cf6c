//! The HTML pages, rendered with maud: one layout, one small inline stylesheet (light
//! and dark), no JavaScript. maud escapes every spliced string; user-supplied text is
//! only ever placed in element content or in `value` attributes, never in an attribute
//! that can hold a URL (the `next` field is a hidden input, checked again on submit). The
//! links that do carry user data are built by latchkey with a fixed start: the enrolment
//! page's `otpauth://totp/…` key URI (every part percent-encoded by `totp::key_uri`) and
//! the recovery-code page's `/login?next=…` (percent-encoded, checked again there).

use maud::{DOCTYPE, Escaper, Markup, PreEscaped, Render, html};

use crate::store::{DamagedRecord, ROLE_ADMIN, User};
use crate::token::{Claims, ErrorClass};

/// The stylesheet, inlined in every page and allowed by its hash in the CSP. Colours
/// meet WCAG 2.1 contrast: text 4.5:1, input borders 3:1 (1.4.11), in both schemes.
pub const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d2330;--muted:#5b6475;--bg:#f4f6fa;--card:#fff;--line:#dfe3ea;--input:#7a8497;--accent:#3056d3;--on-accent:#fff;--bad:#b42318;--ok:#067647;--bad-bg:#fef3f2;--bad-line:#fecdca;--ok-bg:#ecfdf3;--ok-line:#abefc6;--badge:#eef2ff}\
@media (prefers-color-scheme:dark){:root{--fg:#e6e9ef;--muted:#a3acbb;--bg:#11151c;--card:#1a2029;--line:#303846;--input:#7b8599;--accent:#8fa8ff;--on-accent:#0b1020;--bad:#ff8a80;--ok:#6ee7a7;--bad-bg:#2a1614;--bad-line:#6b2b26;--ok-bg:#10261b;--ok-line:#1f5a3a;--badge:#232c45}}\
*{box-sizing:border-box}\
body{margin:0;font:16px/1.5 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:var(--fg);background:var(--bg)}\
a{color:var(--accent)}a:visited{color:var(--accent)}\
header{background:var(--card);border-bottom:1px solid var(--line)}\
nav{max-width:60rem;margin:0 auto;padding:.75rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}\
nav .brand{font-weight:700;margin-right:auto;color:var(--fg);text-decoration:none}\
nav a{text-decoration:none}\
main{max-width:60rem;margin:2rem auto;padding:0 1rem}\
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:1.5rem;margin-bottom:1.5rem}\
.narrow{max-width:26rem;margin-left:auto;margin-right:auto}\
h1{font-size:1.5rem;margin:0 0 1rem}h2{font-size:1.15rem;margin:0 0 .75rem}\
label{display:block;font-weight:600;margin:.75rem 0 .25rem}label.check{font-weight:400}\
input[type=text],input[type=password],select{width:100%;padding:.55rem .7rem;border:1px solid var(--input);border-radius:6px;font:inherit;color:var(--fg);background:var(--card)}\
button,.button{display:inline-block;font:inherit;padding:.5rem 1rem;border:0;border-radius:6px;background:var(--accent);color:var(--on-accent);cursor:pointer;margin-top:1rem;text-decoration:none;line-height:1.5}\
a.button:visited{color:var(--on-accent)}\
button.link{background:none;color:var(--accent);padding:0;margin:0}\
nav .inline button.link{font-size:inherit;padding:0;margin:0;line-height:inherit}\
.danger{background:var(--bad)!important;color:var(--on-accent)!important}\
.secondary{background:none;color:var(--accent);border:1px solid var(--input)}\
.inline{display:inline;margin:0}.inline button,.actions .button{margin:.15rem .25rem .15rem 0;padding:.25rem .6rem;font-size:.85rem}\
.inline input,.inline select{width:7rem;padding:.25rem;font-size:.85rem}\
.notice{padding:.75rem 1rem;border-radius:6px;margin-bottom:1rem;border:1px solid var(--line)}\
.notice.error{background:var(--bad-bg);border-color:var(--bad-line);color:var(--bad)}\
.notice.info{background:var(--ok-bg);border-color:var(--ok-line);color:var(--ok)}\
table{width:100%;border-collapse:collapse;font-size:.95rem}th,td{text-align:left;padding:.5rem;border-bottom:1px solid var(--line);vertical-align:top}\
.muted{color:var(--muted)}.badge{display:inline-block;padding:0 .5rem;border-radius:99px;background:var(--badge);color:var(--accent);font-size:.85rem}\
@media (max-width:44rem){.users thead{display:none}.users,.users tbody,.users tr,.users td{display:block;width:100%}\
.users tr{border-bottom:1px solid var(--line);padding:.5rem 0}.users td{border:0;padding:.2rem 0}\
.users td[data-label]::before{content:attr(data-label) ': ';font-weight:600}.card{padding:1rem}}\
.qr{display:block;width:15rem;max-width:100%;height:auto;margin:1rem 0;border:1px solid var(--line)}\
code.key{font-size:1.05rem;word-spacing:.2rem;overflow-wrap:anywhere}\
ol.codes{font:1.05rem/1.8 ui-monospace,Menlo,Consolas,monospace;columns:2}\
input.code{font:1.25rem ui-monospace,Menlo,Consolas,monospace;letter-spacing:.1rem}\
";

/// The site's icon: a key, as SVG (served at `/favicon.svg` and `/favicon.ico`).
pub const FAVICON: &str = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 32 32\">\
<rect width=\"32\" height=\"32\" rx=\"7\" fill=\"#3056d3\"/>\
<circle cx=\"12\" cy=\"16\" r=\"6\" fill=\"none\" stroke=\"#fff\" stroke-width=\"3\"/>\
<path d=\"M18 16h9v4M23 16v3\" fill=\"none\" stroke=\"#fff\" stroke-width=\"3\" stroke-linecap=\"round\"/></svg>";

/// The `Content-Security-Policy` of every answer: no script at all, the one stylesheet
/// by its hash, images from this site, forms only to `form_action` (the sources the
/// redirect rules allow), no framing, no `<base>`.
pub fn content_security_policy(form_action: &str) -> String {
    use base64::Engine;
    use sha2::Digest;
    let hash =
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(STYLE.as_bytes()));
    format!(
        "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self'; form-action {form_action}; frame-ancestors 'none'; base-uri 'none'"
    )
}

/// A one-line notice shown above a page's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something went well.
    Info(String),
    /// Something went wrong.
    Error(String),
}

impl Notice {
    /// The notice for a visitor whose token was just refused, by the refusal's class.
    pub fn for_rejection(class: ErrorClass) -> Notice {
        Notice::Error(
            match class {
                ErrorClass::Expired => "Your session has expired, please log in again.",
                ErrorClass::Malformed => "Your login cookie was damaged, please log in again.",
                ErrorClass::Invalid => "Your login could not be verified, please log in again.",
                ErrorClass::Revoked => {
                    "Your session was ended (password changed, account locked or logged out everywhere), please log in again."
                }
            }
            .to_string(),
        )
    }

    /// The text.
    pub fn text(&self) -> &str {
        match self {
            Notice::Info(t) | Notice::Error(t) => t,
        }
    }

    /// Whether it reports a failure.
    pub fn is_error(&self) -> bool {
        matches!(self, Notice::Error(_))
    }
}

/// What every page needs besides its own content.
#[derive(Debug, Clone, Copy)]
pub struct Chrome<'a> {
    /// The logged-in user, if any.
    pub user: Option<&'a Claims<'a>>,
    /// The CSRF field value for this visitor's forms.
    pub csrf: &'a str,
    /// A notice to show.
    pub notice: Option<&'a Notice>,
    /// Whether this instance can log people in (false on verify-only instances).
    pub has_store: bool,
    /// Where the "log in" link points.
    pub login_url: &'a str,
}

/// The hidden CSRF input of a form, written straight into the page being rendered (an
/// `html!` block would allocate a string of its own for every form on the page).
struct CsrfField<'a>(&'a str);

impl Render for CsrfField<'_> {
    fn render_to(&self, buffer: &mut String) {
        use std::fmt::Write as _;
        buffer.push_str(r#"<input type="hidden" name="csrf" value=""#);
        let _ = Escaper::new(buffer).write_str(self.0);
        buffer.push_str(r#"">"#);
    }
}

fn csrf_field<'a>(chrome: &Chrome<'a>) -> CsrfField<'a> {
    CsrfField(chrome.csrf)
}

/// Page width: `Narrow` for the small single-form pages, so notices line up with the form.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Width {
    Wide,
    Narrow,
}

fn layout(title: &str, chrome: &Chrome, width: Width, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                title { (title) " · latchkey" }
                link rel="icon" href="/favicon.svg" type="image/svg+xml";
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    nav {
                        a.brand href="/" { "latchkey" }
                        @if let Some(user) = chrome.user {
                            a href="/account" { "Account" }
                            @if user.role == ROLE_ADMIN && chrome.has_store {
                                a href="/admin" { "Admin" }
                            }
                            form.inline method="post" action="/logout" {
                                (csrf_field(chrome))
                                button.link type="submit" { "Log out" }
                            }
                        } @else {
                            a href=(chrome.login_url) { "Log in" }
                        }
                    }
                }
                main {
                    @if let Some(notice) = chrome.notice {
                        div.narrow[width == Width::Narrow] {
                            @match notice {
                                Notice::Info(text) => div.notice.info role="status" { (text) },
                                Notice::Error(text) => div.notice.error role="alert" { (text) },
                            }
                        }
                    }
                    (content)
                }
            }
        }
    }
}

/// What the home page says to a visitor who is not logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Welcome {
    /// The usual: a link to log in.
    LogIn,
    /// The store has no user yet: the first registration makes the administrator.
    FirstRun,
}

/// `GET /`: greets a user by name and role with where to go next; tells anyone else how
/// to log in (or, on an empty store, how to create the administrator).
pub fn home(chrome: &Chrome, welcome: Welcome) -> String {
    let content = html! {
        div.card {
            @if let Some(user) = chrome.user {
                h1 { "Hello, " (user.name) "!" }
                p { "You are logged in with the role " span.badge { (user.role) } "." }
                ul {
                    li { a href="/account" { "Your account" } ": password, sessions" }
                    @if user.role == ROLE_ADMIN && chrome.has_store {
                        li { a href="/admin" { "Users" } ": create, lock, reset, delete" }
                    }
                }
            } @else if welcome == Welcome::FirstRun {
                h1 { "Welcome to latchkey" }
                p { "No account exists yet. The first account you register becomes the administrator; it needs the one-time setup code the server wrote to the file " code { "setup-code" } " in its data directory and to its log. Or create the administrator on the server with " code { "latchkey user add NAME --role admin" } "." }
                p { a.button href="/register" { "Register the administrator" } }
            } @else {
                h1 { "Welcome" }
                p { "You are not logged in." }
                p { a.button href=(chrome.login_url) { "Log in" } }
            }
        }
    };
    layout("Home", chrome, Width::Wide, content).into_string()
}

/// `GET /login`; after a failed attempt `username` is filled in and the password field
/// takes the focus.
pub fn login(chrome: &Chrome, next: &str, username: &str, signup_open: bool) -> String {
    let retry = !username.is_empty();
    let content = html! {
        div.card.narrow {
            h1 { "Log in" }
            form method="post" action="/login" {
                (csrf_field(chrome))
                input type="hidden" name="next" value=(next);
                label for="username" { "User name" }
                input #username type="text" name="username" value=(username) autocomplete="username" required autofocus[!retry];
                label for="password" { "Password" }
                input #password type="password" name="password" autocomplete="current-password" required autofocus[retry];
                button type="submit" { "Log in" }
            }
            @if signup_open {
                p.muted { "No account yet? " a href="/register" { "Register" } }
            }
        }
    };
    layout("Log in", chrome, Width::Narrow, content).into_string()
}

/// `GET /register`; `first` says the account will be the first, an admin.
pub fn register(chrome: &Chrome, username: &str, first: bool) -> String {
    let content = html! {
        div.card.narrow {
            h1 { "Register" }
            @if first {
                p.muted { "This is the first account: it becomes the administrator. It needs the one-time setup code the server wrote to the file " code { "setup-code" } " in its data directory (and to its log at start)." }
            }
            form method="post" action="/register" {
                (csrf_field(chrome))
                @if first {
                    label for="setup_code" { "Setup code" }
                    input #setup_code type="text" name="setup_code" autocomplete="off" spellcheck="false" required;
                }
                label for="username" { "User name" }
                input #username type="text" name="username" value=(username) autocomplete="username" required autofocus;
                label for="password" { "Password (at least 8 characters)" }
                input #password type="password" name="password" autocomplete="new-password" required;
                label for="confirm" { "Password again" }
                input #confirm type="password" name="confirm" autocomplete="new-password" required;
                button type="submit" { "Create account" }
            }
        }
    };
    layout("Register", chrome, Width::Narrow, content).into_string()
}

/// `GET /login/totp`: the second step of a login, after the password.
pub fn login_totp(chrome: &Chrome, next: &str) -> String {
    let content = html! {
        div.card.narrow {
            h1 { "Enter your code" }
            p.muted { "Open your authenticator app and enter the 6-digit code it shows for this site. Lost your phone? Enter one of your recovery codes instead." }
            form method="post" action="/login/totp" {
                (csrf_field(chrome))
                input type="hidden" name="next" value=(next);
                label for="code" { "Code" }
                input #code.code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" spellcheck="false" maxlength="32" required autofocus;
                button type="submit" { "Log in" }
            }
            p.muted { a href="/login" { "Start again with your password" } }
        }
    };
    layout("Enter your code", chrome, Width::Narrow, content).into_string()
}

/// What `/account/totp` shows.
#[derive(Debug, Clone, Copy)]
pub enum TotpSetup<'a> {
    /// Second factors are switched off on this server.
    Off,
    /// No factor and no enrolment in progress: a button to show a new key.
    Start,
    /// An enrolment in progress: the key as a QR code and as text, and the form for a
    /// code from the app.
    Pending {
        /// The QR code of `uri`, an inline `<svg>` made by `totp::qr_svg`.
        qr_svg: &'a str,
        /// The secret in base32, in groups of four.
        key: &'a str,
        /// The `otpauth://` key URI.
        uri: &'a str,
    },
    /// The factor is on: how many recovery codes are left, and the form to switch it off.
    On {
        /// Unused recovery codes.
        recovery_left: usize,
    },
}

/// `GET /account/totp`: set up, confirm or switch off the second factor. `required`
/// says the user must have one before going on; `next` is carried through the forms.
pub fn totp_setup(chrome: &Chrome, setup: TotpSetup, required: bool, next: &str) -> String {
    let content = html! {
        div.card.narrow {
            h1 { "Two-factor authentication" }
            @match setup {
                TotpSetup::Off => {
                    p { "Two-factor authentication is switched off on this server." }
                    p { a href="/account" { "Back to your account" } }
                }
                TotpSetup::Start => {
                    @if required {
                        p { strong { "Your account must have a second factor before you go on." } }
                    }
                    p { "After your password, you will also enter a 6-digit code from an authenticator app on your phone (any app for one-time codes, RFC 6238), so a stolen password alone is not enough." }
                    form method="post" action="/account/totp" {
                        (csrf_field(chrome))
                        input type="hidden" name="action" value="start";
                        input type="hidden" name="next" value=(next);
                        button type="submit" { "Set up two-factor authentication" }
                    }
                }
                TotpSetup::Pending { qr_svg, key, uri } => {
                    @if required {
                        p { strong { "Your account must have a second factor before you go on." } }
                    }
                    p { "1. Scan this code with your authenticator app:" }
                    (PreEscaped(qr_svg))
                    p { "Or enter this key by hand (time-based, 6 digits, 30 seconds):" }
                    p { code.key #key { (key) } }
                    p.muted { "On this phone? " a href=(uri) { "Open the key in your app" } "." }
                    form method="post" action="/account/totp" {
                        (csrf_field(chrome))
                        input type="hidden" name="action" value="enable";
                        input type="hidden" name="next" value=(next);
                        label for="code" { "2. Enter the code the app shows" }
                        input #code.code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" spellcheck="false" maxlength="32" required autofocus;
                        button type="submit" { "Turn on" }
                    }
                    form method="post" action="/account/totp" {
                        (csrf_field(chrome))
                        input type="hidden" name="action" value="start";
                        input type="hidden" name="next" value=(next);
                        button.secondary type="submit" { "Show a new key instead" }
                    }
                }
                TotpSetup::On { recovery_left } => {
                    p { "Two-factor authentication is " strong { "on" } ": every login asks for a code from your app after the password." }
                    p.muted { (recovery_left) " unused recovery code" (if recovery_left == 1 { "" } else { "s" }) " left." }
                    h2 { "Turn it off" }
                    p.muted { "Needs your password and a current code (or a recovery code). Every session of your account ends." }
                    form method="post" action="/account/totp" {
                        (csrf_field(chrome))
                        input type="hidden" name="action" value="disable";
                        label for="password" { "Password" }
                        input #password type="password" name="password" autocomplete="current-password" required;
                        label for="code" { "Code" }
                        input #code.code type="text" name="code" inputmode="numeric" autocomplete="one-time-code" spellcheck="false" maxlength="32" required;
                        button.danger type="submit" { "Turn off" }
                    }
                }
            }
        }
    };
    layout("Two-factor authentication", chrome, Width::Narrow, content).into_string()
}

/// The answer to switching the second factor on: the recovery codes, shown this once
/// (only their hashes are kept), and a link on to `continue_to`, a local URL of this
/// site (`/login?next=…` carries a `next` target, which that page checks again).
pub fn recovery_codes(chrome: &Chrome, codes: &[String], continue_to: &str) -> String {
    let content = html! {
        div.card.narrow {
            h1 { "Two-factor authentication is on" }
            p { "Keep these recovery codes somewhere safe, apart from your phone. Each one logs you in once instead of a code from the app, if you lose it. " strong { "They are shown only this once." } }
            ol.codes {
                @for code in codes { li { code { (code) } } }
            }
            p { a.button href=(continue_to) { "Continue" } }
        }
    };
    layout("Recovery codes", chrome, Width::Narrow, content).into_string()
}

/// What the account page says about the second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpStatus {
    /// Not offered (switched off, or no store here to manage it).
    Unavailable,
    /// Offered, not set up.
    Off,
    /// Set up.
    On,
}

/// `GET /account`: name, role, session expiry, second factor, password change, log out
/// everywhere.
pub fn account(chrome: &Chrome, expires_in: i64, totp: TotpStatus) -> String {
    let Some(user) = chrome.user else {
        return String::new();
    };
    let content = html! {
        div.card {
            h1 { "Your account" }
            table {
                tr { th { "Name" } td { (user.name) } }
                tr { th { "Role" } td { span.badge { (user.role) } } }
                tr { th { "Session" } td { "expires in " (human_duration(expires_in)) " unless you stay active" } }
                tr { th { "Logged in with" } td { (if user.amr.has_otp() { "password and one-time code" } else { "password" }) } }
            }
        }
        @if totp != TotpStatus::Unavailable {
            div.card {
                h2 { "Two-factor authentication" }
                @if totp == TotpStatus::On {
                    p { "On: every login asks for a code from your authenticator app." }
                    a.button.secondary href="/account/totp" { "Manage…" }
                } @else {
                    p { "Off: your password alone logs you in." }
                    a.button href="/account/totp" { "Set up…" }
                }
            }
        }
        @if chrome.has_store {
            div.card {
                h2 { "Change password" }
                form method="post" action="/account/password" {
                    (csrf_field(chrome))
                    label for="current" { "Current password" }
                    input #current type="password" name="current" autocomplete="current-password" required;
                    label for="password" { "New password (at least 8 characters)" }
                    input #password type="password" name="password" autocomplete="new-password" required;
                    label for="confirm" { "New password again" }
                    input #confirm type="password" name="confirm" autocomplete="new-password" required;
                    button type="submit" { "Change password" }
                }
            }
            div.card {
                h2 { "Log out everywhere" }
                p.muted { "Ends every session of this account, on every device, including this one." }
                a.button.danger href="/account/revoke" { "Log out everywhere…" }
            }
        }
    };
    layout("Account", chrome, Width::Wide, content).into_string()
}

/// A question before a drastic action: `question` as the heading, `detail` below it, a
/// form posting to `action` with the button `confirm`, and a way back to `back`.
pub fn confirm(
    chrome: &Chrome,
    question: &str,
    detail: &str,
    action: &str,
    confirm: &str,
    back: &str,
) -> String {
    let content = html! {
        div.card.narrow {
            h1 { (question) }
            p { (detail) }
            form method="post" action=(action) {
                (csrf_field(chrome))
                button.danger type="submit" { (confirm) }
                " "
                a.button.secondary href=(back) { "Cancel" }
            }
        }
    };
    layout(question, chrome, Width::Narrow, content).into_string()
}

/// `GET /logout`: a button that logs out (logging out changes state, so it is a POST).
pub fn logout(chrome: &Chrome) -> String {
    let content = html! {
        div.card.narrow {
            h1 { "Log out" }
            @if let Some(user) = chrome.user {
                p { "You are logged in as " strong { (user.name) } "." }
                form method="post" action="/logout" {
                    (csrf_field(chrome))
                    button type="submit" { "Log out" }
                }
            } @else {
                p { "You are not logged in." }
                p { a href="/" { "Home" } }
            }
        }
    };
    layout("Log out", chrome, Width::Narrow, content).into_string()
}

/// `GET /admin`: every user with the actions on them, a marked row for each damaged
/// record (it can only be deleted), and a form to create one. The administrator's own
/// row has no role, lock or delete controls (those need another administrator).
pub fn admin(chrome: &Chrome, users: &[User], damaged: &[DamagedRecord]) -> String {
    let me = chrome.user.map_or(0, |u| u.user_id);
    let content = html! {
        div.card {
            h1 { "Users" }
            table.users {
                thead {
                    tr { th { "Id" } th { "Name" } th { "Role" } th { "State" } th { "2FA" } th { "Created" } th { "Last login" } th { "Actions" } }
                }
                tbody {
                    @for user in users {
                        tr {
                            td data-label="Id" { (user.id) }
                            td data-label="Name" { (user.name) @if user.id == me { " " span.muted { "(you)" } } }
                            td data-label="Role" {
                                @if user.id == me {
                                    span.badge { (user.role) }
                                } @else {
                                    form.inline method="post" action={ "/admin/users/" (user.id) "/role" } {
                                        (csrf_field(chrome))
                                        input type="text" name="role" value=(user.role) size="8" aria-label={ "role of " (user.name) };
                                        button type="submit" { "Set" }
                                    }
                                }
                            }
                            td data-label="State" { @if user.locked { "locked" } @else { "active" } }
                            td data-label="2FA" {
                                @if user.totp.is_some() { "on" } @else if user.totp_pending.is_some() { span.muted { "setting up" } } @else { span.muted { "off" } }
                            }
                            td data-label="Created" { (date(user.created)) }
                            td data-label="Last login" {
                                @match user.last_login { Some(t) => (date(t)), None => span.muted { "never" } }
                            }
                            td.actions data-label="Actions" {
                                @if user.id != me {
                                    form.inline method="post" action={ "/admin/users/" (user.id) (if user.locked { "/unlock" } else { "/lock" }) } {
                                        (csrf_field(chrome))
                                        button type="submit" { (if user.locked { "Unlock" } else { "Lock" }) }
                                    }
                                }
                                form.inline method="post" action={ "/admin/users/" (user.id) "/revoke" } {
                                    (csrf_field(chrome))
                                    button type="submit" { "End sessions" }
                                }
                                @if user.id != me {
                                    a.button href={ "/admin/users/" (user.id) "/password" } { "Password…" }
                                    @if user.totp.is_some() || user.totp_pending.is_some() {
                                        a.button href={ "/admin/users/" (user.id) "/totp" } { "Reset 2FA…" }
                                    }
                                    a.button.danger href={ "/admin/users/" (user.id) "/delete" } { "Delete…" }
                                }
                            }
                        }
                    }
                    @for record in damaged {
                        tr.damaged {
                            td data-label="Id" { (record.id) }
                            td colspan="6" data-label="Damaged" {
                                "damaged record: " (record.why) "; restore a backup, or delete it"
                            }
                            td.actions data-label="Actions" {
                                a.button.danger href={ "/admin/users/" (record.id) "/delete" } { "Delete…" }
                            }
                        }
                    }
                }
            }
        }
        div.card {
            h2 { "Create a user" }
            form method="post" action="/admin/users" {
                (csrf_field(chrome))
                label for="username" { "User name" }
                input #username type="text" name="username" required;
                label for="password" { "Password (at least 8 characters)" }
                input #password type="password" name="password" autocomplete="new-password" required;
                label for="role" { "Role" }
                input #role type="text" name="role" value="user" required;
                button type="submit" { "Create" }
            }
        }
    };
    layout("Admin", chrome, Width::Wide, content).into_string()
}

/// `GET /admin/users/ID/password`: an administrator sets a user's password; every
/// session of the user ends, and by default the user must choose another at the next
/// login.
pub fn admin_password(chrome: &Chrome, user: &User) -> String {
    let content = html! {
        div.card.narrow {
            h1 { "New password for " (user.name) }
            p.muted { "Every session of " (user.name) " ends. Tell them the new password another way." }
            form method="post" action={ "/admin/users/" (user.id) "/password" } {
                (csrf_field(chrome))
                label for="password" { "New password (at least 8 characters)" }
                input #password type="password" name="password" autocomplete="new-password" required autofocus;
                label for="confirm" { "New password again" }
                input #confirm type="password" name="confirm" autocomplete="new-password" required;
                label.check {
                    input type="checkbox" name="must_change" value="1" checked;
                    " Must choose a new password at the next login"
                }
                button type="submit" { "Set password" }
                " "
                a.button.secondary href="/admin" { "Cancel" }
            }
        }
    };
    layout("New password", chrome, Width::Narrow, content).into_string()
}

/// An error page in the site's layout.
pub fn error(chrome: &Chrome, status: u16, message: &str) -> String {
    let title = reason(status);
    let content = html! {
        div.card.narrow {
            h1 { (status) " " (title) }
            p { (message) }
            p { a href="/" { "Back to the home page" } }
        }
    };
    layout(title, chrome, Width::Narrow, content).into_string()
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A Unix time as `YYYY-MM-DD HH:MM` UTC, for tables.
fn date(unix: i64) -> String {
    let stamp = crate::log::timestamp(unix);
    format!("{} {}", &stamp[..10], &stamp[11..16])
}

fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims<'a>(name: &'a str, role: &'a str) -> Claims<'a> {
        Claims {
            sub: "1".into(),
            user_id: 1,
            name: name.into(),
            role: role.into(),
            iat: 0,
            exp: 3600,
            iss: "latchkey".into(),
            auth_time: 0,
            ver: 0,
            amr: crate::token::Amr::PWD,
            jti: None,
        }
    }

    fn chrome<'a>(user: Option<&'a Claims<'a>>, notice: Option<&'a Notice>) -> Chrome<'a> {
        Chrome {
            user,
            csrf: "tok",
            notice,
            has_store: true,
            login_url: "/login",
        }
    }

    fn user(id: u64, name: &str, role: &str) -> User {
        User::new(id, name.into(), role.into(), "x".into(), 1_795_000_000)
    }

    #[test]
    fn home_greets_by_name_and_role_escaped() {
        let c = claims("<b>al&ice</b>", "admin");
        let page = home(&chrome(Some(&c), None), Welcome::LogIn);
        assert!(
            page.contains("Hello, &lt;b&gt;al&amp;ice&lt;/b&gt;!"),
            "{page}"
        );
        assert!(page.contains(">admin<"));
        assert!(page.contains("href=\"/admin\""));
        assert!(!page.contains("<script"));
        assert!(
            !page.contains("signed token"),
            "no developer text for users"
        );
        let first = home(&chrome(None, None), Welcome::FirstRun);
        assert!(first.contains("href=\"/register\""), "{first}");
    }

    #[test]
    fn forms_carry_the_csrf_field() {
        let c = claims("bob", "user");
        for page in [
            login(&chrome(None, None), "/next", "bob", false),
            register(&chrome(None, None), "", true),
            account(&chrome(Some(&c), None), 100, TotpStatus::Off),
            admin(&chrome(Some(&c), None), &[], &[]),
            login_totp(&chrome(None, None), "/next"),
            totp_setup(&chrome(Some(&c), None), TotpSetup::Start, false, "/"),
            totp_setup(
                &chrome(Some(&c), None),
                TotpSetup::On { recovery_left: 3 },
                false,
                "/",
            ),
            logout(&chrome(Some(&c), None)),
            confirm(
                &chrome(Some(&c), None),
                "Sure?",
                "Really.",
                "/x",
                "Yes",
                "/",
            ),
        ] {
            assert!(page.contains("<input type=\"hidden\" name=\"csrf\" value=\"tok\">"));
        }
        let mut hostile = chrome(Some(&c), None);
        hostile.csrf = "\"><script>";
        let page = account(&hostile, 100, TotpStatus::Unavailable);
        assert!(
            page.contains("value=\"&quot;&gt;&lt;script&gt;\">"),
            "{page}"
        );
        let page = home(&chrome(Some(&c), None), Welcome::LogIn);
        assert!(
            !page.contains("href=\"/admin\""),
            "plain users see no admin link"
        );
    }

    #[test]
    fn after_a_failed_login_the_password_takes_the_focus() {
        let fresh = login(&chrome(None, None), "/", "", false);
        assert!(
            fresh.contains(
                "name=\"username\" value=\"\" autocomplete=\"username\" required autofocus"
            )
        );
        let retry = login(&chrome(None, None), "/", "bob", false);
        assert!(
            retry
                .contains("name=\"password\" autocomplete=\"current-password\" required autofocus")
        );
        assert!(!retry.contains("autocomplete=\"username\" required autofocus"));
    }

    #[test]
    fn the_admins_own_row_has_no_role_lock_or_delete_controls() {
        let me = claims("root", "admin");
        let page = admin(
            &chrome(Some(&me), None),
            &[user(1, "root", "admin"), user(2, "bob", "user")],
            &[],
        );
        assert!(!page.contains("/admin/users/1/role"));
        assert!(!page.contains("/admin/users/1/lock"));
        assert!(!page.contains("/admin/users/1/delete"));
        assert!(page.contains("/admin/users/1/revoke"));
        assert!(page.contains("/admin/users/2/role"));
        assert!(
            page.contains("href=\"/admin/users/2/delete\""),
            "delete asks first"
        );
        assert!(
            page.contains("2026-11-18 ") && page.contains(">never<"),
            "{page}"
        );
    }

    #[test]
    fn next_is_escaped_in_a_value_attribute() {
        let page = login(&chrome(None, None), "/\"><script>x</script>", "", false);
        assert!(
            page.contains("value=\"/&quot;&gt;&lt;script&gt;x&lt;/script&gt;\""),
            "{page}"
        );
    }

    #[test]
    fn notices_show() {
        let n = Notice::for_rejection(ErrorClass::Expired);
        let page = login(&chrome(None, Some(&n)), "/", "", false);
        assert!(page.contains("Your session has expired, please log in again."));
    }

    #[test]
    fn error_pages_use_the_layout() {
        let page = error(&chrome(None, None), 404, "No page here.");
        assert!(
            page.contains("404 Not Found")
                && page.contains("No page here.")
                && page.contains("<nav>")
        );
    }
}

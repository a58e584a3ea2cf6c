//! The route table and the handlers: HTTP in, account rules and pages out.
//!
//! A handler is a plain function from a request context to a `Reply`. The before step
//! (`Auth::identify`) has already identified the visitor; the after step (in
//! [`handle`]) takes care of the token cookie, so handlers only say "log this user in"
//! or "log out". The rules themselves (passwords, throttling, who may do what) live in
//! `accounts`; handlers read forms, call them, and turn their outcomes into pages and
//! status codes. One table, [`ROUTES`], drives dispatch, the `Allow` header of a 405 and
//! the `route` label of `/metrics`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::OnceLock;

use serde_json::json;

use crate::accounts::{
    self, Accounts, AdminAction, AdminError, Attempt, CodeAttempt, CodeLoginError, CreateError,
    LoginError, NewUser, PasswordChangeError, PasswordLogin, Registration, TotpError,
};
use crate::auth::{self, Auth, CSRF_COOKIE, CSRF_FIELD, Flash, Source, StepCookie, Visitor};
use crate::config::{Config, MetricsAccess, origin_of};
use crate::http::{self, Client, Form, Login, Method, Reply, Request, percent_encode};
use crate::metrics::{LoginOutcome, Metrics};
use crate::pages::{self, Chrome, Notice, TotpSetup, TotpStatus, Welcome};
use crate::store::{
    Entry, ROLE_ADMIN, ROLE_USER, ReadError, Revocation, StoreError, User, UserStore,
};
use crate::token::{Amr, Claims, ErrorClass};
use crate::totp;

/// State shared by every worker.
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// The account rules with their hashing, throttling and sign-up settings (shared
    /// with the control socket).
    pub accounts: Arc<Accounts>,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Whether access lines are written: only then does `handle` copy the user's name
    /// into its [`Outcome`].
    pub access_log: bool,
    /// The connection layer as the handlers see it, set by the server once it listens:
    /// its faults for `/healthz` and its counters for `/metrics`.
    pub connections: std::sync::OnceLock<Connections>,
    /// The watch over the store's file and the key files: its warning is in `/healthz`.
    pub keeper: Arc<crate::keeper::Keeper>,
}

/// What the handlers may ask the connection layer.
pub struct Connections {
    /// `Some(reason)` while it is not serving as it should (not accepting, or its loop
    /// stuck): `/healthz` answers 503 with the reason meanwhile.
    pub fault: Box<dyn Fn() -> Option<String> + Send + Sync>,
    /// Its counters in the Prometheus text format, appended to `/metrics`.
    pub metrics: Box<dyn Fn() -> String + Send + Sync>,
}

/// One worker's application: its own `Auth` (keyed verifier and signer) and the shared state.
#[derive(Clone)]
pub struct App {
    /// The login machinery of this worker.
    pub auth: Auth,
    /// What all workers share.
    pub shared: Arc<Shared>,
}

/// What `handle` reports besides the reply, for the access log and metrics.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The index of the route's label in [`labels`].
    pub route: usize,
    /// The user name, when the visitor was logged in and the access log is on.
    pub user: Option<String>,
}

impl Outcome {
    /// The outcome of a request no route answered (refused before routing).
    pub fn unrouted() -> Outcome {
        Outcome {
            route: other_label(),
            user: None,
        }
    }
}

/// What a route answers with; `Err` stops early with a reply or a store failure.
type Answer = Result<Reply, Halt>;

/// A handler: the context of one request in, its answer out.
type Handler = fn(&Ctx) -> Answer;

/// Which paths a route serves.
#[derive(Debug, Clone, Copy)]
enum Paths {
    /// Exactly this path.
    Exact(&'static str),
    /// Every path that starts with this prefix (the handler reads the rest).
    Under(&'static str),
    /// Every path that starts with the first part and ends with the second, with
    /// something between them (`/admin/users/` … `/delete`).
    Around(&'static str, &'static str),
}

impl Paths {
    fn matches(self, path: &str) -> bool {
        match self {
            Paths::Exact(p) => path == p,
            Paths::Under(prefix) => path.starts_with(prefix),
            Paths::Around(prefix, suffix) => {
                path.len() > prefix.len() + suffix.len()
                    && path.starts_with(prefix)
                    && path.ends_with(suffix)
            }
        }
    }
}

/// One row of the route table.
struct Route {
    method: Method,
    paths: Paths,
    /// The `route` label of `/metrics`.
    label: &'static str,
    handler: Handler,
}

const fn route(method: Method, paths: Paths, label: &'static str, handler: Handler) -> Route {
    Route {
        method,
        paths,
        label,
        handler,
    }
}

/// Every route: dispatch, `Allow` and the metrics labels all come from here. `GET` rows
/// also answer `HEAD` (without a body). The first matching row wins.
#[rustfmt::skip]
const ROUTES: &[Route] = {
    use Method::{Get, Post};
    use Paths::{Around, Exact, Under};
    &[
        route(Get, Exact("/"), "home", home),
        route(Get, Exact("/login"), "login", login_page),
        route(Post, Exact("/login"), "login", login_submit),
        route(Get, Exact("/login/totp"), "login", login_totp_page),
        route(Post, Exact("/login/totp"), "login", login_totp_submit),
        route(Get, Exact("/logout"), "logout", logout_page),
        route(Post, Exact("/logout"), "logout", logout),
        route(Get, Exact("/register"), "register", register_page),
        route(Post, Exact("/register"), "register", register_submit),
        route(Get, Exact("/account"), "account", account),
        route(Post, Exact("/account/password"), "account", change_password),
        route(Get, Exact("/account/revoke"), "account", revoke_own_confirm),
        route(Post, Exact("/account/revoke"), "account", revoke_own),
        route(Get, Exact("/account/totp"), "account", totp_page),
        route(Post, Exact("/account/totp"), "account", totp_submit),
        route(Get, Exact("/admin"), "admin", admin_page),
        route(Post, Exact("/admin/users"), "admin", admin_create),
        route(Get, Around("/admin/users/", "/delete"), "admin", admin_delete_confirm),
        route(Get, Around("/admin/users/", "/password"), "admin", admin_password_page),
        route(Get, Around("/admin/users/", "/totp"), "admin", admin_totp_confirm),
        route(Post, Under("/admin/users/"), "admin", admin_action),
        route(Get, Exact("/auth"), "auth", forward_auth),
        route(Post, Exact("/api/login"), "api_login", api_login),
        route(Post, Exact("/api/account/totp"), "api_account", api_totp_begin),
        route(Post, Exact("/api/account/totp/enable"), "api_account", api_totp_enable),
        route(Get, Exact("/api/me"), "api_me", api_me),
        route(Get, Exact("/healthz"), "healthz", healthz),
        route(Get, Exact("/metrics"), "metrics", metrics),
        route(Get, Exact("/favicon.svg"), "static", favicon),
        route(Get, Exact("/favicon.ico"), "static", favicon),
    ]
};

/// The label of requests no route answered.
const OTHER: &str = "other";

/// The `route` labels of `/metrics`: each label of [`ROUTES`] once, in table order,
/// then `other`. [`Outcome::route`] indexes this list.
pub fn labels() -> &'static [&'static str] {
    static LABELS: OnceLock<Vec<&'static str>> = OnceLock::new();
    LABELS.get_or_init(|| {
        let mut labels: Vec<&'static str> = Vec::new();
        for route in ROUTES {
            if !labels.contains(&route.label) {
                labels.push(route.label);
            }
        }
        labels.push(OTHER);
        labels
    })
}

/// The index in [`labels`] of each row of [`ROUTES`], computed once.
fn label_of(row: usize) -> usize {
    static INDEX: OnceLock<Vec<usize>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        ROUTES
            .iter()
            .map(|r| labels().iter().position(|l| *l == r.label).unwrap_or(0))
            .collect()
    });
    index.get(row).copied().unwrap_or_else(other_label)
}

fn other_label() -> usize {
    labels().len() - 1
}

/// The methods a path accepts, for a 405's `Allow` (`GET` implies `HEAD`); `None` when
/// no route serves the path at all.
fn allowed(path: &str) -> Option<String> {
    let mut methods = Vec::new();
    for route in ROUTES.iter().filter(|r| r.paths.matches(path)) {
        let names: &[&str] = match route.method {
            Method::Get => &["GET", "HEAD"],
            Method::Post => &["POST"],
            Method::Other => &[],
        };
        for name in names {
            if !methods.contains(name) {
                methods.push(*name);
            }
        }
    }
    (!methods.is_empty()).then(|| methods.join(", "))
}

/// Answers one request: before, route, after.
pub fn handle(app: &App, req: &Request, now: i64) -> (Reply, Outcome) {
    // The token is decoded into this worker's buffer; the visitor's claims borrow from it.
    let mut token_buf = app.auth.token_buf();
    let visitor = match app.auth.identify(req, now, &mut token_buf) {
        Ok(v) => v,
        Err(e) => {
            log_store_failure(&e);
            let reply = unavailable(req.path);
            return (reply, Outcome::unrouted());
        }
    };
    if let Some(class) = visitor.rejected() {
        app.shared.metrics.rejection(class);
    }
    let ctx = Ctx {
        app,
        req,
        visitor: &visitor,
        now,
    };
    let row = ROUTES
        .iter()
        .position(|r| r.method == req.method && r.paths.matches(req.path));
    let (route, result) = match row {
        Some(_) if visitor.must_change_password() && !open_before_password_change(req.path) => {
            (label_of(row.unwrap_or(0)), Ok(ctx.to_password_change()))
        }
        Some(_) if ctx.must_enrol() && !open_before_enrolment(req.path) => {
            (label_of(row.unwrap_or(0)), Ok(ctx.to_enrolment()))
        }
        Some(row) => (label_of(row), (ROUTES[row].handler)(&ctx)),
        None => (other_label(), Ok(not_routed(&ctx))),
    };
    let mut reply = match result {
        Ok(reply) | Err(Halt::Reply(reply)) => reply,
        Err(Halt::Store(e)) => ctx.store_failed(&e),
    };
    app.auth.finish(&visitor, &mut reply, now);
    let user = match (&reply.login, visitor.claims()) {
        _ if !app.shared.access_log => None,
        (Login::Start(c), _) => Some(c.name.to_string()),
        (_, Some(c)) => Some(c.name.to_string()),
        _ => None,
    };
    (reply, Outcome { route, user })
}

/// Logs a store failure answered to a request: the store's own condition (unavailable:
/// a full disk, an I/O error) is logged by the store once per change, so only at debug
/// level here; anything else as an error.
fn log_store_failure(e: &StoreError) {
    if e.is_unavailable() || matches!(e, StoreError::DamagedRecord(_)) {
        crate::log::debug(&format!("user store: {e}"));
    } else {
        crate::log::error(&format!("user store: {e}"));
    }
}

/// The paths a user whose password was reset by an administrator may still use before
/// choosing a new one: the password form and what it needs, logging out, and the
/// endpoints that only report (`/auth` answers for such a user on its own terms).
fn open_before_password_change(path: &str) -> bool {
    matches!(
        path,
        "/account"
            | "/account/password"
            | "/logout"
            | "/auth"
            | "/api/me"
            | "/healthz"
            | "/metrics"
            | "/favicon.svg"
            | "/favicon.ico"
    )
}

/// The paths a user who must have a second factor and has none may still use before
/// enrolling: the enrolment page and its API, logging out, and the endpoints that only
/// report (`/auth` answers for such a user on its own terms).
fn open_before_enrolment(path: &str) -> bool {
    matches!(
        path,
        "/account/totp"
            | "/api/account/totp"
            | "/api/account/totp/enable"
            | "/logout"
            | "/auth"
            | "/api/me"
            | "/healthz"
            | "/metrics"
            | "/favicon.svg"
            | "/favicon.ico"
    )
}

/// The notice of a user sent to set up a second factor.
const MUST_ENROL: &str =
    "Your account must have two-factor authentication: set it up before you go on.";

/// The notice of a user whose half-done login (password, then code) no longer stands.
const STEP_GONE: &str =
    "Your login took too long or no longer stands: please enter your password again.";

/// The notice of a user sent to choose a new password.
const MUST_CHANGE: &str =
    "An administrator set a new password for you: choose your own before you go on.";

/// The 503 for a store that cannot be used, before a visitor could be identified.
fn unavailable(path: &str) -> Reply {
    const MESSAGE: &str = "The user store cannot be used right now. Please try again shortly.";
    if path.starts_with("/api/") {
        Reply::api_error(503, "unavailable", MESSAGE)
    } else {
        Reply::text(503, format!("{MESSAGE}\n"))
    }
}

/// Why a handler stopped early: an answer to give at once, or a store failure (503).
enum Halt {
    Reply(Reply),
    Store(StoreError),
}

impl From<Reply> for Halt {
    fn from(reply: Reply) -> Halt {
        Halt::Reply(reply)
    }
}

impl From<StoreError> for Halt {
    fn from(e: StoreError) -> Halt {
        Halt::Store(e)
    }
}

impl From<ReadError> for Halt {
    fn from(e: ReadError) -> Halt {
        Halt::Store(e.into())
    }
}

/// Everything a handler sees: the app, the request, the visitor, the time.
struct Ctx<'a> {
    app: &'a App,
    req: &'a Request<'a>,
    visitor: &'a Visitor<'a>,
    now: i64,
}

impl Ctx<'_> {
    fn config(&self) -> &Config {
        &self.app.shared.config
    }

    fn accounts(&self) -> &Accounts {
        &self.app.shared.accounts
    }

    fn store(&self) -> Option<&UserStore> {
        self.app.auth.store()
    }

    fn user(&self) -> Option<&Claims<'_>> {
        self.visitor.claims()
    }

    fn is_api(&self) -> bool {
        self.req.path.starts_with("/api/")
    }

    /// Where visitors log in: this instance, or the issuer of a verify-only one.
    fn login_url(&self) -> &str {
        self.config()
            .login_url
            .as_deref()
            .filter(|_| self.store().is_none())
            .unwrap_or("/login")
    }

    /// `login_url` with `next` attached.
    fn login_redirect(&self, next: &str) -> String {
        with_next(self.login_url(), next)
    }

    /// The URL of this request, as a `next` target: absolute when the login page
    /// lives elsewhere and this server knows its public origin.
    fn here(&self) -> String {
        let mut target = self.req.path.to_string();
        if !self.req.query.is_empty() {
            target.push('?');
            target.push_str(self.req.query);
        }
        match (&self.config().public_url, self.store()) {
            (Some(origin), None) => format!("{origin}{target}"),
            _ => target,
        }
    }

    /// Whether `target` may be redirected to: a local path, this server's own origin,
    /// or a host within the cookie domain.
    fn may_redirect_to(&self, target: &str) -> bool {
        let config = self.config();
        auth::safe_redirect(
            target,
            config.public_url.as_deref(),
            config.cookie_domain.as_deref(),
        )
    }

    fn safe_next(&self, next: Option<&str>) -> String {
        match next {
            Some(n) if self.may_redirect_to(n) => n.to_string(),
            _ => "/".to_string(),
        }
    }

    /// The client: the peer, or what a trusted proxy forwarded for (see `http::client`).
    fn client(&self) -> Option<Client> {
        let peer = self.req.peer?;
        let trusted = |ip: IpAddr| self.config().trusted_proxies.iter().any(|n| n.contains(ip));
        Some(http::client(
            peer,
            self.req.headers_named("x-forwarded-for"),
            trusted,
        ))
    }

    /// A login attempt by `client`, now.
    fn attempt<'p>(
        &self,
        name: &'p str,
        password: &'p str,
        client: &'p Option<Client>,
    ) -> Attempt<'p> {
        Attempt {
            name,
            password,
            client: client.as_ref(),
            now: self.now,
        }
    }

    /// Checks a name and password through the account rules and counts the outcome.
    fn login(
        &self,
        store: &UserStore,
        name: &str,
        password: &str,
    ) -> Result<PasswordLogin, LoginError> {
        let client = self.client();
        let result = self
            .accounts()
            .login(store, &self.attempt(name, password, &client));
        self.count_login(result.as_ref().map(|_| ()));
        result
    }

    /// Whether the visitor must set up a second factor before anything else: the policy
    /// requires one for their role and the store says they have none.
    fn must_enrol(&self) -> bool {
        match (self.user(), self.visitor.second_factor()) {
            (Some(claims), Some(has)) => {
                self.accounts().totp_policy().must_enrol(&claims.role, has)
            }
            _ => false,
        }
    }

    /// Where a user who must set up a second factor goes instead of the page asked for:
    /// the enrolment page, back here afterwards (JSON `totp_enrolment_required` under
    /// `/api/`).
    fn to_enrolment(&self) -> Reply {
        if self.is_api() {
            return Reply::api_error(
                403,
                "totp_enrolment_required",
                "Set up two-factor authentication first: POST /api/account/totp, then \
                 /api/account/totp/enable with a code.",
            );
        }
        let target = if self.req.method == Method::Get {
            with_next("/account/totp", &self.here())
        } else {
            "/account/totp".to_string()
        };
        self.redirect_with_flash(&target, Flash::error(MUST_ENROL))
    }

    /// The logged-in user and the store for `/api/account/…`: a Bearer token only
    /// (cookies are refused there, as JSON carries no CSRF field).
    fn require_bearer(&self) -> Result<(&Claims<'_>, &UserStore), Reply> {
        let Some(store) = self.store() else {
            return Err(Reply::api_error(
                404,
                "not_found",
                "This instance has no user store; use the issuing instance.",
            ));
        };
        match self.visitor {
            Visitor::User {
                claims,
                source: Source::Bearer,
                ..
            } => Ok((claims, store)),
            Visitor::User { .. } => Err(Reply::api_error(
                401,
                "bearer_required",
                "Send the token as Authorization: Bearer <token>; the login cookie is not accepted here.",
            )),
            Visitor::Anonymous { rejected, .. } => Err(match rejected {
                Some(class) => Reply::api_error(401, class.as_str(), rejection_message(*class)),
                None => Reply::api_error(401, "none", "No token: log in first."),
            }),
        }
    }

    /// Counts a password check in `latchkey_logins_total` (store failures are not
    /// login outcomes and are not counted).
    fn count_login(&self, result: Result<(), &LoginError>) {
        let outcome = match result {
            Ok(()) => LoginOutcome::Ok,
            Err(LoginError::Wrong) => LoginOutcome::Failed,
            Err(LoginError::Throttled(_) | LoginError::Busy) => LoginOutcome::Throttled,
            Err(LoginError::Store(_)) => return,
        };
        self.app.shared.metrics.login(outcome);
    }

    /// A page in the layout, with the one-shot notice handled; CSRF values are made
    /// only when the page has a form (every page of a logged-in user has the logout form).
    fn page(
        &self,
        status: u16,
        notice: Option<Notice>,
        render: impl FnOnce(&Chrome) -> String,
    ) -> Reply {
        self.page_with_forms(self.user().is_some(), status, notice, render)
    }

    /// A page with a form, for visitors who may not be logged in yet.
    fn form_page(
        &self,
        status: u16,
        notice: Option<Notice>,
        render: impl FnOnce(&Chrome) -> String,
    ) -> Reply {
        self.page_with_forms(true, status, notice, render)
    }

    fn page_with_forms(
        &self,
        forms: bool,
        status: u16,
        notice: Option<Notice>,
        render: impl FnOnce(&Chrome) -> String,
    ) -> Reply {
        let (csrf, csrf_cookie) = if forms {
            self.app.auth.csrf_for(self.req, self.visitor)
        } else {
            (String::new(), None)
        };
        let flash = self.app.auth.read_flash(self.req);
        let notice = notice.or_else(|| {
            flash.as_ref().map(|f| {
                if f.error {
                    Notice::Error(f.text.clone())
                } else {
                    Notice::Info(f.text.clone())
                }
            })
        });
        let chrome = Chrome {
            user: self.user(),
            csrf: &csrf,
            notice: notice.as_ref(),
            has_store: self.store().is_some(),
            login_url: self.login_url(),
        };
        let mut reply = Reply::html(status, render(&chrome));
        if let Some(cookie) = csrf_cookie {
            reply.headers.push(("Set-Cookie", cookie));
        }
        if self.req.cookie(auth::FLASH_COOKIE).is_some() {
            reply
                .headers
                .push(("Set-Cookie", self.app.auth.clear_flash_cookie()));
        }
        if self.user().is_some() {
            reply.private = true;
        }
        reply
    }

    /// An error answer: a page in the layout, or JSON `{"error","message"}` under `/api/`.
    fn error(&self, status: u16, error: &str, message: &str) -> Reply {
        if self.is_api() {
            Reply::api_error(status, error, message)
        } else {
            self.page(status, None, |c| pages::error(c, status, message))
        }
    }

    /// The 503 for a store that cannot be used right now.
    fn store_unavailable(&self) -> Reply {
        self.error(
            503,
            "unavailable",
            "The user store cannot be used right now. Please try again shortly.",
        )
        .with_header("Retry-After", "5".into())
    }

    /// The answer to a store failure: a damaged record is that user's problem (500, said
    /// plainly; everyone else is served), anything else the 503 above.
    fn store_failed(&self, e: &StoreError) -> Reply {
        log_store_failure(e);
        match e {
            StoreError::DamagedRecord(_) => self.error(
                500,
                "account_damaged",
                "This account's record in the user store is damaged and cannot be read. \
                 An administrator must restore it from a backup or remove the account.",
            ),
            _ => self.store_unavailable(),
        }
    }

    /// A redirect carrying a one-shot notice (Post/Redirect/Get: a reload of the page
    /// it leads to never submits the form again).
    fn redirect_with_flash(&self, location: &str, flash: Flash) -> Reply {
        Reply::see_other(location)
            .with_header("Set-Cookie", self.app.auth.flash_cookie(self.req, &flash))
    }

    /// What the last redirect's flash asks to put back into the form, or "".
    fn prefill(&self) -> String {
        self.app
            .auth
            .read_flash(self.req)
            .map(|f| f.prefill)
            .unwrap_or_default()
    }

    /// The form of a POST, after the media type, encoding, origin and CSRF checks.
    fn form(&self) -> Result<Form, Reply> {
        if !self.origin_ok() {
            return Err(self.error(403, "forbidden", "This form was sent from another site."));
        }
        if !self.req.is_form() {
            return Err(self.error(
                415,
                "unsupported_media_type",
                "Forms must be sent as application/x-www-form-urlencoded.",
            ));
        }
        let form = Form::parse(&self.req.body)
            .map_err(|e| self.error(400, "bad_request", &accounts::sentence(&e)))?;
        if !self
            .app
            .auth
            .csrf_ok(self.req, self.visitor, form.get(CSRF_FIELD))
        {
            if let Some(host) = self.secure_cookie_lost() {
                log_once_plain_http(host);
                return Err(self.error(
                    403,
                    "forbidden",
                    &format!(
                        "Your browser did not send back this site's security cookie. The server marks \
                         its cookies Secure, and browsers keep Secure cookies only over HTTPS, but \
                         this page was reached over plain HTTP at {host}. Reloading will not help: \
                         the operator must serve it over HTTPS, or set cookie_secure = false for a \
                         plain-HTTP deployment."
                    ),
                ));
            }
            return Err(self.error(
                403,
                "forbidden",
                "The form had expired or did not come from this site. Go back, reload the page and try again.",
            ));
        }
        Ok(form)
    }

    /// The host, when a form came without any CSRF cookie over plain HTTP while cookies
    /// are `Secure`: the browser dropped the cookie (except on `localhost` and loopback
    /// addresses, which browsers treat as secure). Unknown behind a trusted proxy that
    /// does not say the scheme.
    fn secure_cookie_lost(&self) -> Option<&str> {
        if !self.config().cookie_secure || self.req.cookie(CSRF_COOKIE).is_some() {
            return None;
        }
        let behind_proxy = self
            .req
            .peer
            .is_some_and(|ip| self.config().trusted_proxies.iter().any(|n| n.contains(ip)));
        let scheme = match self.req.header("x-forwarded-proto") {
            Some(proto) if behind_proxy => proto,
            None if behind_proxy => return None,
            _ => "http",
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return None;
        }
        let host = self.req.header("host")?;
        let name = host
            .rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(name, _)| name);
        let secure_context = name.eq_ignore_ascii_case("localhost")
            || name.to_ascii_lowercase().ends_with(".localhost")
            || name == "[::1]"
            || name
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.is_loopback());
        (!secure_context).then_some(host)
    }

    /// `Origin`, when sent, must be this site.
    fn origin_ok(&self) -> bool {
        let Some(origin) = self.req.header("origin") else {
            return true;
        };
        let Some(origin) = origin_of(origin) else {
            return false;
        };
        if let Some(own) = &self.config().public_url {
            return origin == *own;
        }
        match self.req.header("host") {
            Some(host) => auth::host_port(&origin).eq_ignore_ascii_case(host),
            None => false,
        }
    }

    /// Logged-in visitors only: otherwise the redirect to the login page (with a
    /// notice when their cookie was just refused).
    fn require_user(&self) -> Result<&Claims<'_>, Reply> {
        if let Some(reply) = self.bounce_rejected() {
            return Err(reply);
        }
        match self.user() {
            Some(claims) => Ok(claims),
            None => Err(Reply::see_other(&self.login_redirect(&self.here()))),
        }
    }

    /// The store; a verify-only instance sends visitors to its issuer instead.
    fn require_store(&self) -> Result<&UserStore, Reply> {
        self.store()
            .ok_or_else(|| Reply::see_other(self.login_url()))
    }

    /// Administrators only: the claims and the store, or the reply for everyone else.
    fn require_admin(&self) -> Result<(&Claims<'_>, &UserStore), Reply> {
        let claims = self.require_user()?;
        let store = self.require_store()?;
        if claims.role != ROLE_ADMIN {
            return Err(self.error(403, "forbidden", "This page is for administrators."));
        }
        Ok((claims, store))
    }

    /// Where a user who must change the password goes instead of the page asked for: the
    /// password form (JSON `password_change_required` under `/api/`).
    fn to_password_change(&self) -> Reply {
        if self.is_api() {
            return Reply::api_error(
                403,
                "password_change_required",
                "Choose a new password first (an administrator reset it).",
            );
        }
        self.redirect_with_flash("/account", Flash::error(MUST_CHANGE))
    }

    /// The JSON answer carrying a new token for `claims` (`{token, token_type,
    /// expires_in}`), with the recovery codes just made when there are some.
    fn token_answer(&self, claims: &Claims, recovery_codes: Option<Vec<String>>) -> Reply {
        let token = self.app.auth.sign(claims);
        let mut body = json!({
            "token": token,
            "token_type": "Bearer",
            "expires_in": self.config().ttl,
        });
        if let Some(codes) = recovery_codes {
            body["recovery_codes"] = json!(codes);
        }
        Reply::json(200, &body).private()
    }

    /// Back to the password, when the half-done login the browser holds is gone (too
    /// old, or the account changed): the notice says so and the value is cleared.
    fn step_gone(&self, next: &str) -> Reply {
        self.redirect_with_flash(&with_next("/login", next), Flash::error(STEP_GONE))
            .with_header("Set-Cookie", self.app.auth.clear_login_step_cookie())
    }

    /// When a browser's token cookie was refused, a page request goes to the login page
    /// with a notice saying why; the after step clears the cookie.
    fn bounce_rejected(&self) -> Option<Reply> {
        let class = self.visitor.rejected()?;
        if !matches!(
            self.visitor,
            Visitor::Anonymous {
                source: Some(Source::Cookie),
                ..
            }
        ) {
            return None;
        }
        let notice = Notice::for_rejection(class);
        Some(self.redirect_with_flash(
            &self.login_redirect(&self.here()),
            Flash::error(notice.text()),
        ))
    }
}

/// Logs, once per run, that a browser dropped the Secure CSRF cookie over plain HTTP:
/// the operator must act, and one line says so without filling the log.
fn log_once_plain_http(host: &str) {
    static LOGGED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !LOGGED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        crate::log::info(&format!(
            "a form reached this server over plain HTTP at {} without its CSRF cookie: \
             browsers drop Secure cookies on plain HTTP; serve latchkey over HTTPS or set \
             cookie_secure = false",
            host.escape_default()
        ));
    }
}

/// `base` with `next=<target>` attached.
fn with_next(base: &str, next: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}next={}", percent_encode(next))
}

/// `reply` with `Retry-After` when the refused login says when to retry.
fn with_retry(reply: Reply, error: &LoginError) -> Reply {
    match error.retry_after() {
        Some(seconds) => reply.with_header("Retry-After", seconds.to_string()),
        None => reply,
    }
}

/// The status a refused login answers with.
fn login_status(error: &LoginError) -> u16 {
    match error {
        LoginError::Wrong => 401,
        LoginError::Throttled(_) => 429,
        LoginError::Busy | LoginError::Store(_) => 503,
    }
}

/// 405 for known paths with another method, 404 for the rest (JSON under `/api/`).
fn not_routed(ctx: &Ctx) -> Reply {
    match allowed(ctx.req.path) {
        Some(allow) => {
            let message = if ctx.is_api() {
                "This method is not allowed here."
            } else {
                "This page does not accept that method."
            };
            ctx.error(405, "method_not_allowed", message)
                .with_header("Allow", allow)
        }
        None if ctx.is_api() => Reply::api_error(404, "not_found", "No such API endpoint."),
        None => ctx.error(404, "not_found", "There is no page at this address."),
    }
}

fn home(ctx: &Ctx) -> Answer {
    if let Some(reply) = ctx.bounce_rejected() {
        return Ok(reply);
    }
    let welcome = match ctx.store() {
        Some(store) if ctx.user().is_none() && store.count()? == 0 => Welcome::FirstRun,
        _ => Welcome::LogIn,
    };
    Ok(ctx.page(200, None, |c| pages::home(c, welcome)))
}

/// `GET /favicon.svg` (and `/favicon.ico`): the site's icon, cacheable for a day.
fn favicon(_: &Ctx) -> Answer {
    let mut reply = Reply::html(200, pages::FAVICON.to_string());
    reply.content_type = "image/svg+xml";
    Ok(reply.with_header("Cache-Control", "public, max-age=86400".into()))
}

fn login_page(ctx: &Ctx) -> Answer {
    let query = ctx.req.query_params().unwrap_or_default();
    let next = ctx.safe_next(query.get("next"));
    let Some(store) = ctx.store() else {
        return Ok(Reply::see_other(&ctx.login_redirect(&next)));
    };
    // `?totp=1`: the page `next` leads to needs a login with the second factor (`/auth`
    // sends a session without one here).
    let step_up = wants_second_factor(&query);
    let mut notice = ctx.visitor.rejected().map(Notice::for_rejection);
    if let Some(claims) = ctx.user() {
        if !step_up || claims.amr.has_otp() {
            return Ok(Reply::see_other(&next));
        }
        if !ctx.accounts().totp_policy().enabled() {
            return Ok(ctx.error(
                403,
                "forbidden",
                "This page needs two-factor authentication, which is switched off on this server.",
            ));
        }
        if ctx.visitor.second_factor() == Some(false) {
            return Ok(ctx.redirect_with_flash(
                &with_next("/account/totp", &next),
                Flash::error("This page needs two-factor authentication: set it up to go on."),
            ));
        }
        notice = Some(Notice::Error(
            "This page needs your second factor: log in again with your password and a code."
                .into(),
        ));
    }
    let signup = ctx.accounts().signup_open(store).unwrap_or(false);
    let name = ctx.prefill();
    Ok(ctx.form_page(200, notice, |c| pages::login(c, &next, &name, signup)))
}

fn login_submit(ctx: &Ctx) -> Answer {
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let next = ctx.safe_next(form.get("next"));
    let name = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    let again = |message: &str| {
        ctx.redirect_with_flash(
            &with_next("/login", &next),
            Flash::error(message).prefill(name),
        )
    };
    if name.is_empty() || password.is_empty() {
        return Ok(again("Please enter your user name and password."));
    }
    let start = |user| Login::Start(Box::new(ctx.app.auth.claims_for(user, ctx.now, Amr::PWD)));
    match ctx.login(store, name, password) {
        Ok(PasswordLogin::NeedsCode(user)) => {
            // The form passed the CSRF check, so a cookie matched; the half-done login
            // is bound to it.
            let Some(nonce) = ctx
                .app
                .auth
                .csrf_nonce(ctx.req, ctx.visitor, form.get(CSRF_FIELD))
            else {
                return Ok(again("The form had expired. Please try again."));
            };
            Ok(
                Reply::see_other(&with_next("/login/totp", &next)).with_header(
                    "Set-Cookie",
                    ctx.app.auth.login_step_cookie(&user, nonce, ctx.now),
                ),
            )
        }
        Ok(PasswordLogin::Done(user)) if user.must_change_password => Ok(ctx
            .redirect_with_flash("/account", Flash::error(MUST_CHANGE))
            .with_login(start(&user))),
        Ok(PasswordLogin::Done(user))
            if ctx.accounts().totp_policy().must_enrol(&user.role, false) =>
        {
            Ok(ctx
                .redirect_with_flash(&with_next("/account/totp", &next), Flash::error(MUST_ENROL))
                .with_login(start(&user)))
        }
        Ok(PasswordLogin::Done(user)) => Ok(Reply::see_other(&next).with_login(start(&user))),
        Err(LoginError::Store(e)) => Err(e.into()),
        Err(e) => Ok(again(&e.to_string())),
    }
}

/// `GET /login/totp`: the code form, while the browser holds a valid `login_step`
/// value; otherwise back to the password.
fn login_totp_page(ctx: &Ctx) -> Answer {
    ctx.require_store()?;
    let query = ctx.req.query_params().unwrap_or_default();
    let next = ctx.safe_next(query.get("next"));
    match ctx.app.auth.login_step(ctx.req, ctx.now) {
        StepCookie::Valid(_) => Ok(ctx
            .form_page(200, None, |c| pages::login_totp(c, &next))
            .private()),
        StepCookie::Refused => Ok(ctx.step_gone(&next)),
        StepCookie::Absent => Ok(Reply::see_other(&with_next("/login", &next))),
    }
}

/// `POST /login/totp`: completes the login with a code (`amr` `["pwd","otp"]`).
fn login_totp_submit(ctx: &Ctx) -> Answer {
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let next = ctx.safe_next(form.get("next"));
    let StepCookie::Valid(step) = ctx.app.auth.login_step(ctx.req, ctx.now) else {
        return Ok(ctx.step_gone(&next));
    };
    let client = ctx.client();
    let attempt = CodeAttempt {
        user_id: step.user_id,
        ver: step.ver,
        code: form.get("code").unwrap_or(""),
        client: client.as_ref(),
        now: ctx.now,
    };
    match ctx.accounts().second_factor(store, &attempt) {
        Ok(done) => {
            let claims = ctx.app.auth.claims_for(&done.user, ctx.now, Amr::PWD_OTP);
            let reply = if done.user.must_change_password {
                ctx.redirect_with_flash("/account", Flash::error(MUST_CHANGE))
            } else if let Some(left) = done.recovery_left {
                ctx.redirect_with_flash(
                    &next,
                    Flash::info(format!(
                        "You logged in with a recovery code; {left} left. If you lost your \
                         phone, set up two-factor authentication again on your account page."
                    )),
                )
            } else {
                Reply::see_other(&next)
            };
            Ok(reply
                .with_header("Set-Cookie", ctx.app.auth.clear_login_step_cookie())
                .with_login(Login::Start(Box::new(claims))))
        }
        Err(CodeLoginError::Stale) => Ok(ctx.step_gone(&next)),
        Err(CodeLoginError::Store(e)) => Err(e.into()),
        Err(e) => {
            let reply = ctx.redirect_with_flash(
                &with_next("/login/totp", &next),
                Flash::error(e.to_string()),
            );
            Ok(match e.retry_after() {
                Some(seconds) => reply.with_header("Retry-After", seconds.to_string()),
                None => reply,
            })
        }
    }
}

/// `GET /logout`: a page with the log-out button (logging out is a POST).
fn logout_page(ctx: &Ctx) -> Answer {
    Ok(ctx.form_page(200, None, pages::logout))
}

/// `POST /logout`: clears the cookie and, where the store is, revokes the token that
/// was presented, so a copy of the cookie is refused from now on (until it would have
/// expired). A store that cannot record it does not keep anyone logged in: the cookie
/// is cleared all the same, and the failure logged.
fn logout(ctx: &Ctx) -> Answer {
    let Some(claims) = ctx.user() else {
        // Nothing to protect: just make sure no cookie is left behind.
        return Ok(Reply::see_other("/").with_login(Login::End));
    };
    ctx.form()?;
    // Until the login itself can no longer be valid: its tokens slide up to the
    // absolute limit, and are accepted until the leeway after that.
    let until = claims
        .auth_time
        .saturating_add(ctx.config().absolute_limit as i64)
        .saturating_add(ctx.config().leeway as i64);
    if let (Some(store), Some(login)) = (ctx.store(), ctx.visitor.login()) {
        match store.revoke_token(claims.user_id, login.as_str(), until) {
            Ok(Revocation::Listed) => {}
            Ok(Revocation::AllSessionsEnded) => {
                return Ok(ctx
                    .redirect_with_flash(
                        "/",
                        Flash::info(
                            "You have been logged out, on every device: you had logged out \
                             too often lately for each one to be remembered.",
                        ),
                    )
                    .with_login(Login::End));
            }
            Err(e) => log_store_failure(&e.into()),
        }
    }
    Ok(ctx
        .redirect_with_flash("/", Flash::info("You have been logged out."))
        .with_login(Login::End))
}

fn register_page(ctx: &Ctx) -> Answer {
    let Some(store) = ctx.store() else {
        return Ok(Reply::see_other(ctx.login_url()));
    };
    if !ctx.accounts().signup_open(store)? {
        return Ok(ctx.error(403, "forbidden", &CreateError::Closed.to_string()));
    }
    let first = store.count()? == 0;
    let name = ctx.prefill();
    Ok(ctx.form_page(200, None, |c| pages::register(c, &name, first)))
}

fn register_submit(ctx: &Ctx) -> Answer {
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let name = form.get("username").unwrap_or("");
    let password = form.get("password").unwrap_or("");
    let registration = Registration {
        name,
        password,
        confirm: form.get("confirm").unwrap_or(""),
        setup_code: form.get("setup_code").unwrap_or(""),
    };
    match ctx.accounts().register(store, &registration) {
        Ok(user) => Ok(ctx
            .redirect_with_flash("/", Flash::info("Your account was created. Welcome!"))
            .with_login(Login::Start(Box::new(ctx.app.auth.claims_for(
                &user,
                ctx.now,
                Amr::PWD,
            ))))),
        Err(CreateError::Store(e)) => Err(e.into()),
        Err(e @ CreateError::Closed) => Ok(ctx.error(403, "forbidden", &e.to_string())),
        Err(e) => Ok(ctx.redirect_with_flash(
            "/register",
            Flash::error(e.to_string()).prefill(name.trim()),
        )),
    }
}

fn account(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    // The cookie this answer slides forward, if it does, is the one that counts.
    let exp = match ctx.visitor {
        Visitor::User {
            stale,
            checked: true,
            ..
        } => ctx
            .app
            .auth
            .slide(claims, *stale, ctx.now)
            .map_or(claims.exp, |fresh| fresh.exp),
        _ => claims.exp,
    };
    let totp = match ctx.store() {
        Some(_) if ctx.accounts().totp_policy().enabled() => {
            if ctx.visitor.second_factor() == Some(true) {
                TotpStatus::On
            } else {
                TotpStatus::Off
            }
        }
        _ => TotpStatus::Unavailable,
    };
    Ok(ctx
        .page(200, None, |c| pages::account(c, exp - ctx.now, totp))
        .private())
}

fn change_password(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let client = ctx.client();
    let current = ctx.attempt(&claims.name, form.get("current").unwrap_or(""), &client);
    let result = ctx.accounts().change_password(
        store,
        &current,
        form.get("password").unwrap_or(""),
        form.get("confirm").unwrap_or(""),
    );
    match &result {
        Ok(_) => ctx.count_login(Ok(())),
        Err(PasswordChangeError::Current(e)) => ctx.count_login(Err(e)),
        Err(_) => {}
    }
    match result {
        // The session goes on as it was logged in (with or without the second factor).
        Ok(user) => Ok(ctx
            .redirect_with_flash("/account", Flash::info("Your password was changed."))
            .with_login(Login::Start(Box::new(
                ctx.app.auth.claims_for(&user, ctx.now, claims.amr),
            )))),
        Err(PasswordChangeError::Store(e) | PasswordChangeError::Current(LoginError::Store(e))) => {
            Err(e.into())
        }
        Err(e) => Ok(ctx.redirect_with_flash("/account", Flash::error(e.to_string()))),
    }
}

/// `GET /account/revoke`: asks before ending every session.
fn revoke_own_confirm(ctx: &Ctx) -> Answer {
    ctx.require_user()?;
    ctx.require_store()?;
    Ok(ctx
        .page(200, None, |c| {
            pages::confirm(
                c,
                "Log out everywhere?",
                "This ends every session of your account, on every device, including this one. You will need your password to log in again.",
                "/account/revoke",
                "Log out everywhere",
                "/account",
            )
        })
        .private())
}

fn revoke_own(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    ctx.form()?;
    ctx.accounts().revoke_all(store, claims.user_id)?;
    Ok(ctx
        .redirect_with_flash(
            "/",
            Flash::info("You have been logged out on every device."),
        )
        .with_login(Login::End))
}

/// `GET /account/totp`: set up, confirm or switch off the second factor.
fn totp_page(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    let query = ctx.req.query_params().unwrap_or_default();
    let next = ctx.safe_next(query.get("next").or(Some("/account")));
    let policy = ctx.accounts().totp_policy();
    if !policy.enabled() {
        return Ok(ctx
            .page(200, None, |c| {
                pages::totp_setup(c, TotpSetup::Off, false, &next)
            })
            .private());
    }
    let Some(user) = store.get(claims.user_id)? else {
        return Ok(ctx.error(404, "not_found", "There is no such user."));
    };
    let required = policy.must_enrol(&user.role, user.totp.is_some());
    let issuer = &ctx.config().issuer;
    let enrolment = ctx.accounts().pending_enrolment(&user, issuer);
    let qr = match &enrolment {
        Some(e) => match totp::qr_svg(&e.uri) {
            Ok(svg) => Some(svg),
            Err(e) => {
                crate::log::error(&format!("the key's QR code could not be made: {e}"));
                return Ok(ctx.error(
                    500,
                    "internal",
                    "The QR code of the key could not be made; enter the key by hand.",
                ));
            }
        },
        None => None,
    };
    let key = enrolment
        .as_ref()
        .map(|e| totp::base32_grouped(&e.secret))
        .unwrap_or_default();
    let setup = match (&user.totp, &enrolment, &qr) {
        (Some(factor), _, _) => TotpSetup::On {
            recovery_left: factor.recovery.len(),
        },
        (None, Some(e), Some(qr)) => TotpSetup::Pending {
            qr_svg: qr,
            key: &key,
            uri: &e.uri,
        },
        _ => TotpSetup::Start,
    };
    Ok(ctx
        .page(200, None, |c| pages::totp_setup(c, setup, required, &next))
        .private())
}

/// `POST /account/totp`, field `action`: `start` (show a new key), `enable` (with
/// `code`: switch on and show the recovery codes, the one form answered with a page:
/// the codes exist nowhere else to redirect to), `disable` (with `password` and `code`).
fn totp_submit(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let next = ctx.safe_next(form.get("next").or(Some("/account")));
    let back = with_next("/account/totp", &next);
    let client = ctx.client();
    let failed = |e: TotpError| -> Answer {
        match e {
            TotpError::Store(e) | TotpError::Password(LoginError::Store(e)) => Err(e.into()),
            e => {
                let reply = ctx.redirect_with_flash(&back, Flash::error(e.to_string()));
                Ok(match e.retry_after() {
                    Some(seconds) => reply.with_header("Retry-After", seconds.to_string()),
                    None => reply,
                })
            }
        }
    };
    match form.get("action") {
        Some("start") => {
            match ctx
                .accounts()
                .begin_totp(store, claims.user_id, &ctx.config().issuer)
            {
                Ok(_) => Ok(Reply::see_other(&back)),
                Err(e) => failed(e),
            }
        }
        Some("enable") => {
            let code = form.get("code").unwrap_or("");
            match ctx
                .accounts()
                .enable_totp(store, claims.user_id, code, client.as_ref(), ctx.now)
            {
                Ok((user, codes)) => {
                    let fresh = ctx.app.auth.claims_for(&user, ctx.now, Amr::PWD_OTP);
                    let onward = with_next("/login", &next);
                    Ok(ctx
                        .page(200, None, |c| pages::recovery_codes(c, &codes, &onward))
                        .private()
                        .with_login(Login::Start(Box::new(fresh))))
                }
                Err(e) => failed(e),
            }
        }
        Some("disable") => {
            let current = ctx.attempt(&claims.name, form.get("password").unwrap_or(""), &client);
            let code = form.get("code").unwrap_or("");
            match ctx.accounts().disable_totp(store, &current, code) {
                Ok(user) => Ok(ctx
                    .redirect_with_flash(
                        "/account",
                        Flash::info(
                            "Two-factor authentication is off; your other sessions were ended.",
                        ),
                    )
                    .with_login(Login::Start(Box::new(ctx.app.auth.claims_for(
                        &user,
                        ctx.now,
                        Amr::PWD,
                    ))))),
                Err(e) => failed(e),
            }
        }
        _ => Ok(ctx.error(
            400,
            "bad_request",
            "The form field \"action\" must be start, enable or disable.",
        )),
    }
}

fn admin_page(ctx: &Ctx) -> Answer {
    let (_, store) = ctx.require_admin()?;
    let mut users = Vec::new();
    let mut damaged = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list(after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.id();
        for entry in page {
            match entry {
                Entry::User(u) => users.push(u),
                Entry::Damaged(d) => damaged.push(d),
            }
        }
        if users.len() + damaged.len() >= 10_000 {
            break;
        }
    }
    Ok(ctx
        .page(200, None, |c| pages::admin(c, &users, &damaged))
        .private())
}

fn admin_create(ctx: &Ctx) -> Answer {
    let (_, store) = ctx.require_admin()?;
    let form = ctx.form()?;
    let new = NewUser {
        name: form.get("username").unwrap_or(""),
        password: form.get("password").unwrap_or(""),
        confirm: None,
        role: form.get("role").unwrap_or(ROLE_USER).trim(),
    };
    let flash = match ctx.accounts().create(store, &new) {
        Ok(user) => Flash::info(format!("Created {}.", user.name)),
        Err(CreateError::Store(e)) => return Err(e.into()),
        Err(e) => Flash::error(e.to_string()),
    };
    Ok(ctx.redirect_with_flash("/admin", flash))
}

/// The user id and action of `/admin/users/ID/ACTION`, or the 404 for anything else.
fn admin_target<'p>(ctx: &Ctx, path: &'p str) -> Result<(u64, &'p str), Reply> {
    let not_found = |what: &str| ctx.error(404, "not_found", what);
    let rest = path.trim_start_matches("/admin/users/");
    let (id, action) = rest
        .split_once('/')
        .ok_or_else(|| not_found("There is no page at this address."))?;
    let id = id
        .parse::<u64>()
        .map_err(|_| not_found("There is no such user."))?;
    if !matches!(
        action,
        "role" | "lock" | "unlock" | "revoke" | "delete" | "password" | "totp"
    ) {
        return Err(not_found("There is no page at this address."));
    }
    Ok((id, action))
}

/// `GET /admin/users/ID/password`: the form to set a user's password.
fn admin_password_page(ctx: &Ctx) -> Answer {
    on_other_user(
        ctx,
        "Change your own password on your account page.",
        |user| {
            Ok(ctx
                .page(200, None, |c| pages::admin_password(c, &user))
                .private())
        },
    )
}

/// Answers an administrator's page about the user its path names with `page`: 404 when
/// there is no such user, and back to `/admin` with `own` when it is the administrator
/// themself (their own account has its own pages).
fn on_other_user(ctx: &Ctx, own: &str, page: impl FnOnce(User) -> Answer) -> Answer {
    let (me, store) = ctx.require_admin()?;
    let (id, _) = admin_target(ctx, ctx.req.path)?;
    let Some(user) = store.get(id)? else {
        return Ok(ctx.error(404, "not_found", "There is no such user."));
    };
    if user.id == me.user_id {
        return Ok(ctx.redirect_with_flash("/admin", Flash::error(own)));
    }
    page(user)
}

/// `GET /admin/users/ID/totp`: asks before removing a user's second factor.
fn admin_totp_confirm(ctx: &Ctx) -> Answer {
    on_other_user(
        ctx,
        "Manage your own second factor on your account page.",
        |user| {
            let question = format!("Reset the second factor of {}?", user.name);
            let detail = format!(
                "{} can then log in with the password alone, until they set up two-factor \
             authentication again (at once, where the policy requires it). Their recovery codes \
             stop working and every session of theirs ends. Do this when they lost their phone \
             and their recovery codes, after making sure it is them who asks.",
                user.name
            );
            let action = format!("/admin/users/{}/totp", user.id);
            Ok(ctx
                .page(200, None, |c| {
                    pages::confirm(c, &question, &detail, &action, "Reset", "/admin")
                })
                .private())
        },
    )
}

/// `GET /admin/users/ID/delete`: asks before deleting.
fn admin_delete_confirm(ctx: &Ctx) -> Answer {
    let (me, store) = ctx.require_admin()?;
    let (id, _) = admin_target(ctx, ctx.req.path)?;
    let user = match store.get(id) {
        Ok(Some(user)) => user,
        Ok(None) => return Ok(ctx.error(404, "not_found", "There is no such user.")),
        // A damaged record cannot be read, but it can be deleted.
        Err(ReadError::DamagedRecord(d)) => {
            let action = format!("/admin/users/{}/delete", d.id);
            let detail = format!(
                "The record of user {} is damaged ({}). Deleting it frees its name; restoring \
                 a backup would bring the account back instead. This cannot be undone.",
                d.id, d.why
            );
            return Ok(ctx
                .page(200, None, |c| {
                    pages::confirm(
                        c,
                        &format!("Delete the damaged user {}?", d.id),
                        &detail,
                        &action,
                        "Delete",
                        "/admin",
                    )
                })
                .private());
        }
        Err(e) => return Err(e.into()),
    };
    if user.id == me.user_id {
        return Ok(
            ctx.redirect_with_flash("/admin", Flash::error(AdminError::OwnAccount.to_string()))
        );
    }
    let question = format!("Delete {}?", user.name);
    let detail = format!(
        "The account {} (id {}) and every session of it end for good; the name becomes free again. This cannot be undone.",
        user.name, user.id
    );
    let action = format!("/admin/users/{}/delete", user.id);
    Ok(ctx
        .page(200, None, |c| {
            pages::confirm(c, &question, &detail, &action, "Delete", "/admin")
        })
        .private())
}

fn admin_action(ctx: &Ctx) -> Answer {
    let (me, store) = ctx.require_admin()?;
    let (id, action) = admin_target(ctx, ctx.req.path)?;
    let form = ctx.form()?;
    let action = match action {
        "role" => match form.get("role").map(str::trim) {
            Some(role) => AdminAction::SetRole(role),
            None => {
                return Ok(ctx.error(400, "bad_request", "The form field \"role\" is missing."));
            }
        },
        "lock" => AdminAction::Lock,
        "unlock" => AdminAction::Unlock,
        "revoke" => AdminAction::Revoke,
        "totp" => AdminAction::ResetTotp,
        "password" => {
            let password = form.get("password").unwrap_or("");
            if form.get("confirm") != Some(password) {
                let back = format!("/admin/users/{id}/password");
                return Ok(
                    ctx.redirect_with_flash(&back, Flash::error("The two passwords differ."))
                );
            }
            AdminAction::SetPassword {
                password,
                must_change: form.get("must_change").is_some(),
            }
        }
        _ => AdminAction::Delete,
    };
    let flash = match ctx.accounts().administer(store, me.user_id, id, action) {
        Ok(done) => Flash::info(done.to_string()),
        Err(AdminError::Store(e)) => return Err(e.into()),
        Err(e) => Flash::error(e.to_string()),
    };
    Ok(ctx.redirect_with_flash("/admin", flash))
}

/// `GET /auth`, the forward-auth check for nginx `auth_request`, Caddy and Traefik.
/// `?role=R1,R2` needs one of the roles (else 403); `?totp=1` needs a session logged in
/// with the second factor (else the answer for a visitor who must log in, to the login
/// page with `totp=1`, which asks for the code or sends the user to set one up).
fn forward_auth(ctx: &Ctx) -> Answer {
    // A requirement (`role=`, `totp=1`) that cannot be read must not fall away: a query
    // that does not parse is refused, never read as empty.
    let query = match ctx.req.query_params() {
        Ok(query) => query,
        Err(e) => {
            return Ok(Reply::text(
                400,
                format!("The query of /auth cannot be read: {e}.\n"),
            ));
        }
    };
    let must_change = ctx.visitor.must_change_password();
    let must_enrol = ctx.must_enrol();
    let mut step_up = false;
    if let Some(claims) = ctx.user().filter(|_| !must_change && !must_enrol) {
        if let Some(wanted) = query.get("role")
            && !wanted.split(',').any(|r| r.trim() == claims.role)
        {
            return Ok(Reply::text(403, "Your role does not allow this.\n".into()).private());
        }
        if !wants_second_factor(&query) || claims.amr.has_otp() {
            // Every identity header, always, each percent-encoded where it must be: a
            // proxy that copies only the headers present would otherwise pass a client's
            // own forged `Remote-User` on to the app.
            let name = http::identity_header(&claims.name);
            return Ok(Reply::text(200, String::new())
                .with_header("Remote-User", name.clone())
                .with_header("Remote-Name", name)
                .with_header("Remote-Role", http::identity_header(&claims.role))
                .with_header("Remote-Id", http::identity_header(&claims.sub))
                .with_header("Remote-Amr", remote_amr(claims.amr))
                .private());
        }
        step_up = true;
    }
    // nginx passes the original URL in X-Original-URL and wants 401 + Location;
    // Caddy and Traefik pass X-Forwarded-* and forward a 302 to the browser as is.
    let (original, direct) = match ctx.req.header("x-original-url") {
        Some(url) => (Some(url.to_string()), false),
        None => match (
            ctx.req.header("x-forwarded-host"),
            ctx.req.header("x-forwarded-uri"),
        ) {
            (Some(host), uri) => {
                let proto = ctx.req.header("x-forwarded-proto").unwrap_or("https");
                (
                    Some(format!("{proto}://{host}{}", uri.unwrap_or("/"))),
                    true,
                )
            }
            (None, _) => (None, false),
        },
    };
    let next = original.filter(|u| ctx.may_redirect_to(u));
    // A user who must change the password is sent to the form, one who must set up a
    // second factor to the enrolment page, not to log in again.
    let page = if must_change {
        "/account"
    } else if must_enrol {
        "/account/totp"
    } else if step_up {
        "/login?totp=1"
    } else {
        "/login"
    };
    let mut base = match (&ctx.config().public_url, ctx.store()) {
        (_, None) => ctx.login_url().to_string(),
        (Some(origin), Some(_)) => format!("{origin}{page}"),
        (None, Some(_)) => page.to_string(),
    };
    if step_up && ctx.store().is_none() {
        base.push(if base.contains('?') { '&' } else { '?' });
        base.push_str("totp=1");
    }
    let location = match next {
        Some(next) if !must_change => with_next(&base, &next),
        _ => base,
    };
    let why = if must_change {
        "password change required"
    } else if must_enrol {
        "second factor enrolment required"
    } else if step_up {
        "second factor required"
    } else {
        ctx.visitor.rejected().map_or("none", ErrorClass::as_str)
    };
    Ok(Reply::text(
        if direct { 302 } else { 401 },
        format!("Not logged in ({why}).\n"),
    )
    .with_header("Location", location))
}

/// Whether a query asks for the second factor: `totp` with any value but `0`.
fn wants_second_factor(query: &Form) -> bool {
    query.get("totp").is_some_and(|v| v != "0")
}

/// The `Remote-Amr` value: the token's RFC 8176 methods in their one order, separated
/// by commas (an HTTP list, RFC 9110 §5.6.1): `pwd` or `pwd,otp`. Registered values are
/// lowercase letters only, so the identity-header encoding never changes them.
fn remote_amr(amr: Amr) -> String {
    let mut list = String::with_capacity(16);
    for value in amr.values() {
        if !list.is_empty() {
            list.push(',');
        }
        list.push_str(value);
    }
    http::identity_header(&list)
}

fn api_login(ctx: &Ctx) -> Answer {
    let Some(store) = ctx.store() else {
        return Ok(Reply::api_error(
            404,
            "not_found",
            "This instance does not log people in; use the issuing instance.",
        ));
    };
    if !ctx.req.is_json() {
        return Ok(Reply::api_error(
            415,
            "unsupported_media_type",
            "Send the credentials as application/json.",
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Credentials {
        username: String,
        password: String,
        #[serde(default)]
        otp: Option<String>,
        #[serde(default)]
        recovery_code: Option<String>,
    }
    let creds: Credentials = match serde_json::from_slice(&ctx.req.body) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Reply::api_error(
                400,
                "bad_request",
                &format!(
                    "Expected {{\"username\": ..., \"password\": ...}} and, for an account \
                     with two-factor authentication, \"otp\" or \"recovery_code\": {e}"
                ),
            ));
        }
    };
    if creds.username.len() > 256 || creds.password.len() > 4096 {
        return Ok(Reply::api_error(
            400,
            "bad_request",
            "The user name or password is too long.",
        ));
    }
    let code = match (&creds.otp, &creds.recovery_code) {
        (Some(_), Some(_)) => {
            return Ok(Reply::api_error(
                400,
                "bad_request",
                "Send either \"otp\" or \"recovery_code\", not both.",
            ));
        }
        (Some(c), None) | (None, Some(c)) if c.len() > 64 => {
            return Ok(Reply::api_error(
                400,
                "bad_request",
                "The code is too long.",
            ));
        }
        // Each field takes its own kind of code.
        (Some(c), None) if totp::is_recovery_code(c) => {
            return Ok(Reply::api_error(
                400,
                "bad_request",
                "\"otp\" takes the 6-digit code of the app; send a recovery code as \"recovery_code\".",
            ));
        }
        (None, Some(c)) if !totp::is_recovery_code(c) => {
            return Ok(Reply::api_error(
                400,
                "bad_request",
                "\"recovery_code\" takes a recovery code (16 characters); send the app's code as \"otp\".",
            ));
        }
        (otp, recovery) => otp.as_deref().or(recovery.as_deref()),
    };
    let (user, amr) = match ctx.login(store, &creds.username, &creds.password) {
        Ok(PasswordLogin::Done(user)) => (user, Amr::PWD),
        Ok(PasswordLogin::NeedsCode(user)) => {
            let Some(code) = code else {
                return Ok(Reply::api_error(
                    401,
                    "otp_required",
                    "This account has two-factor authentication: send the app's current code \
                     as \"otp\" (or a recovery code as \"recovery_code\") with the password.",
                ));
            };
            let client = ctx.client();
            let attempt = CodeAttempt {
                user_id: user.id,
                ver: user.ver,
                code,
                client: client.as_ref(),
                now: ctx.now,
            };
            match ctx.accounts().second_factor(store, &attempt) {
                Ok(done) => (done.user, Amr::PWD_OTP),
                Err(CodeLoginError::Store(e)) => return Err(e.into()),
                Err(e @ CodeLoginError::Throttled(_)) => {
                    return Ok(Reply::api_error(
                        429,
                        "throttled",
                        "Too many failed logins; try again later.",
                    )
                    .with_header("Retry-After", e.retry_after().unwrap_or(1).to_string()));
                }
                Err(CodeLoginError::Stale) => {
                    return Ok(Reply::api_error(
                        409,
                        "conflict",
                        "The account changed during the login; try again.",
                    ));
                }
                Err(e) => return Ok(Reply::api_error(401, "wrong_otp", &e.to_string())),
            }
        }
        Err(LoginError::Store(e)) => return Err(e.into()),
        Err(e) => {
            let (error, message) = match e {
                LoginError::Wrong => ("wrong_credentials", "Wrong username or password."),
                LoginError::Throttled(_) => {
                    ("throttled", "Too many failed logins; try again later.")
                }
                _ => ("busy", "Too many logins at once; try again in a moment."),
            };
            return Ok(with_retry(
                Reply::api_error(login_status(&e), error, message),
                &e,
            ));
        }
    };
    if user.must_change_password {
        return Ok(Reply::api_error(
            403,
            "password_change_required",
            "An administrator reset this password: log in with a browser and choose a new one first.",
        ));
    }
    Ok(ctx.token_answer(&ctx.app.auth.claims_for(&user, ctx.now, amr), None))
}

/// `POST /api/account/totp` (Bearer): starts an enrolment (or starts over) and answers
/// `{"secret": <base32>, "uri": <otpauth URI>}`.
fn api_totp_begin(ctx: &Ctx) -> Answer {
    let (claims, store) = ctx.require_bearer()?;
    match ctx
        .accounts()
        .begin_totp(store, claims.user_id, &ctx.config().issuer)
    {
        Ok(enrolment) => Ok(Reply::json(
            200,
            &json!({ "secret": totp::base32(&enrolment.secret), "uri": enrolment.uri }),
        )
        .private()),
        Err(e) => api_totp_error(e),
    }
}

/// `POST /api/account/totp/enable` (Bearer) with `{"code"}`: switches the factor on and
/// answers the recovery codes (shown this once) and a new token: switching it on ends
/// every earlier session, the token used for this request included.
fn api_totp_enable(ctx: &Ctx) -> Answer {
    let (claims, store) = ctx.require_bearer()?;
    if !ctx.req.is_json() {
        return Ok(Reply::api_error(
            415,
            "unsupported_media_type",
            "Send {\"code\": \"123456\"} as application/json.",
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Enable {
        code: String,
    }
    let body: Enable = match serde_json::from_slice(&ctx.req.body) {
        Ok(b) => b,
        Err(e) => {
            return Ok(Reply::api_error(
                400,
                "bad_request",
                &format!("Expected {{\"code\": \"123456\"}}: {e}"),
            ));
        }
    };
    let client = ctx.client();
    match ctx
        .accounts()
        .enable_totp(store, claims.user_id, &body.code, client.as_ref(), ctx.now)
    {
        Ok((user, codes)) => {
            let fresh = ctx.app.auth.claims_for(&user, ctx.now, Amr::PWD_OTP);
            Ok(ctx.token_answer(&fresh, Some(codes)))
        }
        Err(e) => api_totp_error(e),
    }
}

/// The JSON answer to a refused second-factor change.
fn api_totp_error(e: TotpError) -> Answer {
    let (status, error) = match e {
        TotpError::Store(e) | TotpError::Password(LoginError::Store(e)) => return Err(e.into()),
        TotpError::Off => (403, "totp_off"),
        TotpError::AlreadyOn => (409, "totp_already_enabled"),
        TotpError::NotStarted => (409, "totp_not_started"),
        TotpError::Changed => (409, "totp_changed"),
        TotpError::NotOn => (409, "totp_not_enabled"),
        TotpError::Code(_) | TotpError::WrongRecovery => (400, "wrong_otp"),
        TotpError::Password(_) => (401, "wrong_credentials"),
        TotpError::Throttled(_) => (429, "throttled"),
        TotpError::NotFound => (401, "revoked"),
        TotpError::Random(_) => (503, "unavailable"),
    };
    let reply = Reply::api_error(status, error, &e.to_string());
    Ok(match e.retry_after() {
        Some(seconds) => reply.with_header("Retry-After", seconds.to_string()),
        None => reply,
    })
}

fn api_me(ctx: &Ctx) -> Answer {
    Ok(match ctx.user() {
        Some(claims) => match serde_json::to_value(claims) {
            Ok(value) => Reply::json(200, &value).private(),
            Err(_) => Reply::api_error(500, "internal", "The claims could not be encoded."),
        },
        None => {
            let (class, message) = match ctx.visitor.rejected() {
                Some(class) => (class.as_str(), rejection_message(class)),
                None => ("none", "No token: log in first."),
            };
            Reply::api_error(401, class, message)
        }
    })
}

fn rejection_message(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Expired => "The token has expired; log in again.",
        ErrorClass::Malformed => "The token is not a well-formed JWT.",
        ErrorClass::Invalid => {
            "The token is not valid for this server (signature, key, issuer or time window)."
        }
        ErrorClass::Revoked => "The token was revoked; log in again.",
    }
}

/// 200 while the store can be read and written (damaged records are named, but every
/// other user is served); 503 naming the cause otherwise. See `store::Health`.
fn healthz(ctx: &Ctx) -> Answer {
    if let Some(fault) = ctx
        .app
        .shared
        .connections
        .get()
        .and_then(|layer| (layer.fault)())
    {
        return Ok(Reply::text(503, format!("{fault}\n")));
    }
    Ok(match ctx.store() {
        Some(store) => {
            let health = store.health();
            let status = if health.serving() { 200 } else { 503 };
            Reply::text(status, with_warning(health.describe(), ctx))
        }
        None => Reply::text(200, with_warning("ok (verify-only)".into(), ctx)),
    })
}

/// `line` with the keeper's warning (a key file the next start would refuse) appended.
fn with_warning(mut line: String, ctx: &Ctx) -> String {
    if let Some(warning) = ctx.app.shared.keeper.warning() {
        line.push_str("; warning: ");
        line.push_str(&warning);
    }
    line.push('\n');
    line
}

fn metrics(ctx: &Ctx) -> Answer {
    let allowed = match ctx.config().metrics {
        MetricsAccess::On => true,
        MetricsAccess::Off => false,
        // Behind a trusted proxy on the same host every peer is loopback: judge the
        // client the proxy forwarded for.
        MetricsAccess::Loopback => ctx.client().is_some_and(|c| c.is_loopback()),
    };
    if !allowed {
        return Ok(ctx.error(404, "not_found", "There is no page at this address."));
    }
    let mut text = ctx.app.shared.metrics.render();
    if let Some(layer) = ctx.app.shared.connections.get() {
        text.push_str(&(layer.metrics)());
    }
    if let Some(store) = ctx.store() {
        crate::metrics::render_store(&mut text, &store.health());
    }
    let mut reply = Reply::text(200, text);
    reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_is_listed_once_and_other_is_last() {
        let labels = labels();
        assert_eq!(labels.last(), Some(&OTHER));
        for (i, label) in labels.iter().enumerate() {
            assert!(!labels[i + 1..].contains(label), "{label} twice");
        }
        for (row, route) in ROUTES.iter().enumerate() {
            assert_eq!(labels[label_of(row)], route.label);
        }
    }

    #[test]
    fn allow_lists_the_methods_of_every_row_for_a_path() {
        assert_eq!(allowed("/login").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(allowed("/").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed("/logout").as_deref(), Some("GET, HEAD, POST"));
        assert_eq!(allowed("/account/password").as_deref(), Some("POST"));
        assert_eq!(allowed("/admin/users/7/lock").as_deref(), Some("POST"));
        assert_eq!(
            allowed("/admin/users/7/delete").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(allowed("/admin/users//delete").as_deref(), Some("POST"));
        assert_eq!(allowed("/nowhere"), None);
    }
}

//! The handlers, and the one `match` that maps paths to them.
//!
//! A handler is a plain function from a request context to a `Reply`. The before
//! step has already identified the visitor; the after step (in `handle`) takes care
//! of the token cookie, so handlers only say "log this user in" or "log out".

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;

use crate::auth::{self, Auth, CSRF_FIELD, FLASH_COOKIE, Visitor};
use crate::config::{Config, MetricsAccess, origin_of};
use crate::http::{Form, FormError, Login, Method, Reply, Request, percent_encode};
use crate::metrics::{LoginOutcome, Metrics};
use crate::pages::{self, Chrome, Notice};
use crate::password::{Passwords, Verdict};
use crate::store::{StoreError, User, UserStore};
use crate::throttle::{Key, Throttle};

/// State shared by every worker.
pub struct Shared {
    /// The configuration in force.
    pub config: Config,
    /// Password hashing at the configured cost.
    pub passwords: Passwords,
    /// Failed-login throttling.
    pub throttle: Throttle,
    /// Counters for `/metrics`.
    pub metrics: Metrics,
    /// Bounds how many password hashes run at once.
    pub hashing: Gate,
    /// Whether access lines are written: only then does `handle` copy the user's name
    /// into its [`Outcome`].
    pub access_log: bool,
    /// Says why the connection layer is not serving as it should (not accepting, or its
    /// loop stuck), when it is not; set by the server once it listens. `/healthz`
    /// answers 503 with the reason meanwhile.
    pub connection_fault: std::sync::OnceLock<ConnectionFault>,
}

/// A check of the connection layer: `Some(reason)` while it is at fault.
pub type ConnectionFault = Box<dyn Fn() -> Option<String> + Send + Sync>;

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
    /// The route label.
    pub route: &'static str,
    /// The user name, when the visitor was logged in and the access log is on.
    pub user: Option<String>,
}

/// A counting semaphore that never blocks: beyond `max` holders, `try_enter` fails.
#[derive(Debug)]
pub struct Gate {
    max: usize,
    used: AtomicUsize,
}

/// Held while a password hash runs.
#[derive(Debug)]
pub struct GatePass<'a>(&'a Gate);

impl Gate {
    /// A gate letting `max` holders in at once.
    pub fn new(max: usize) -> Gate {
        Gate {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Enters when a place is free.
    pub fn try_enter(&self) -> Option<GatePass<'_>> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| GatePass(self))
    }
}

impl Drop for GatePass<'_> {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Ctx<'a> {
    app: &'a App,
    req: &'a Request<'a>,
    visitor: &'a Visitor,
    now: i64,
}

impl Ctx<'_> {
    fn config(&self) -> &Config {
        &self.app.shared.config
    }

    fn store(&self) -> Option<&UserStore> {
        self.app.auth.store()
    }

    fn user(&self) -> Option<&crate::token::Claims> {
        self.visitor.claims()
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
        let base = self.login_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}next={}", percent_encode(next))
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

    /// The client address: the peer, or the forwarded address when the peer is a
    /// trusted proxy (the right-most untrusted entry of `X-Forwarded-For`).
    fn client_addr(&self) -> Option<IpAddr> {
        let peer = self.req.peer?;
        let trusted = |ip: IpAddr| self.config().trusted_proxies.iter().any(|n| n.contains(ip));
        if !trusted(peer) {
            return Some(peer);
        }
        let Some(forwarded) = self.req.header("x-forwarded-for") else {
            return Some(peer);
        };
        let mut client = peer;
        for hop in forwarded.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        Some(client)
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
        let flash = self.req.cookie(FLASH_COOKIE).filter(|c| !c.is_empty());
        let notice = notice.or_else(|| flash.and_then(Notice::from_flash));
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
        if flash.is_some() {
            reply
                .headers
                .push(("Set-Cookie", self.app.auth.flash_cookie("")));
        }
        if self.user().is_some() {
            reply.private = true;
        }
        reply
    }

    fn error_page(&self, status: u16, message: &str) -> Reply {
        self.page(status, None, |c| pages::error(c, status, message))
    }

    /// A redirect carrying a one-shot notice.
    fn redirect_with_flash(&self, location: &str, flash: &str) -> Reply {
        Reply::see_other(location).with_header("Set-Cookie", self.app.auth.flash_cookie(flash))
    }

    /// The form of a POST, after the media type, encoding, origin and CSRF checks.
    fn form(&self) -> Result<Form, Reply> {
        if !self.origin_ok() {
            return Err(self.error_page(403, "This form was sent from another site."));
        }
        if !self.req.is_form() {
            return Err(self.error_page(
                415,
                "Forms must be sent as application/x-www-form-urlencoded.",
            ));
        }
        let form = Form::parse(&self.req.body)
            .map_err(|e| self.error_page(400, &capitalize(&e.to_string())))?;
        if !self
            .app
            .auth
            .csrf_ok(self.req, self.visitor, form.get(CSRF_FIELD))
        {
            return Err(self.error_page(
                403,
                "The form had expired or did not come from this site. Go back, reload the page and try again.",
            ));
        }
        Ok(form)
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

    /// Logged-in visitors only: otherwise the redirect to the login page.
    fn require_user(&self) -> Result<&crate::token::Claims, Reply> {
        match self.user() {
            Some(claims) => Ok(claims),
            None => Err(Reply::see_other(&self.login_redirect(&self.here()))),
        }
    }

    fn require_store(&self) -> Result<&UserStore, Reply> {
        self.store()
            .ok_or_else(|| Reply::see_other(self.login_url()))
    }

    fn throttle_keys(&self, name: &str) -> Vec<Key> {
        let mut keys = vec![Key::Name(name.trim().to_lowercase())];
        if let Some(addr) = self.client_addr() {
            keys.push(Key::Addr(addr));
        }
        keys
    }
}

/// How a password check ended.
enum Check {
    /// Right name and password, account usable.
    Ok(User),
    /// Wrong name, wrong password, or locked: indistinguishable to the visitor.
    Wrong,
    /// Too many failures: retry after this many seconds.
    Throttled(u64),
    /// Every hashing slot is busy.
    Busy,
}

/// Checks a name and password with throttling and the hashing limit; records the
/// outcome in the throttle, the store (last login, re-hash) and the metrics.
fn check_password(
    ctx: &Ctx,
    store: &UserStore,
    name: &str,
    password: &str,
) -> Result<Check, StoreError> {
    let shared = &ctx.app.shared;
    let keys = ctx.throttle_keys(name);
    if let Some(retry) = shared.throttle.retry_after(&keys, ctx.now) {
        shared.metrics.login(LoginOutcome::Throttled);
        return Ok(Check::Throttled(retry));
    }
    let Some(_pass) = shared.hashing.try_enter() else {
        shared.metrics.login(LoginOutcome::Throttled);
        return Ok(Check::Busy);
    };
    let user = store.get_by_name(name)?;
    let verdict = match &user {
        Some(user) => shared.passwords.verify(password, &user.password_hash),
        None => shared.passwords.verify_unknown(password),
    };
    match (user, verdict) {
        (Some(user), Verdict::Match { rehash }) if !user.locked => {
            shared.throttle.reset(&keys[0]);
            shared.metrics.login(LoginOutcome::Ok);
            Ok(Check::Ok(store.record_login(user.id, rehash.as_deref())?))
        }
        _ => {
            shared.throttle.failure(&keys, ctx.now);
            shared.metrics.login(LoginOutcome::Failed);
            Ok(Check::Wrong)
        }
    }
}

/// Answers one request: before, route, after.
pub fn handle(app: &App, req: &Request, now: i64) -> (Reply, Outcome) {
    let visitor = match app.auth.identify(req, now) {
        Ok(v) => v,
        Err(e) => {
            crate::log::error(&format!("user store: {e}"));
            let reply = Reply::text(503, "The user store cannot be read right now.\n".into());
            return (
                reply,
                Outcome {
                    route: "other",
                    user: None,
                },
            );
        }
    };
    if let Some(class) = visitor.rejected() {
        app.shared.metrics.rejection(class.as_str());
    }
    let ctx = Ctx {
        app,
        req,
        visitor: &visitor,
        now,
    };
    let (route, result) = route(&ctx);
    let mut reply = match result {
        Ok(reply) | Err(Halt::Reply(reply)) => reply,
        Err(Halt::Store(e)) => {
            crate::log::error(&format!("user store: {e}"));
            ctx.error_page(
                503,
                "The user store cannot be used right now. Please try again shortly.",
            )
        }
    };
    app.auth.finish(&visitor, &mut reply, now);
    let user = match (&reply.login, visitor.claims()) {
        _ if !app.shared.access_log => None,
        (Login::Start(c), _) => Some(c.name.clone()),
        (_, Some(c)) => Some(c.name.clone()),
        _ => None,
    };
    (reply, Outcome { route, user })
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

type Answer = Result<Reply, Halt>;

fn route(ctx: &Ctx) -> (&'static str, Answer) {
    use Method::{Get, Post};
    let path = ctx.req.path;
    let method = ctx.req.method;
    let (name, answer) = match (method, path) {
        (Get, "/") => ("home", Ok(home(ctx))),
        (Get, "/login") => ("login", Ok(login_page(ctx))),
        (Post, "/login") => ("login", login_submit(ctx)),
        (Post, "/logout") => ("logout", Ok(logout(ctx))),
        (Get, "/register") => ("register", register_page(ctx)),
        (Post, "/register") => ("register", register_submit(ctx)),
        (Get, "/account") => ("account", Ok(account(ctx))),
        (Post, "/account/password") => ("account", change_password(ctx)),
        (Post, "/account/revoke") => ("account", revoke_own(ctx)),
        (Get, "/admin") => ("admin", admin_page(ctx)),
        (Post, "/admin/users") => ("admin", admin_create(ctx)),
        (Post, p) if p.starts_with("/admin/users/") => ("admin", admin_action(ctx)),
        (Get, "/auth") => ("auth", Ok(forward_auth(ctx))),
        (Post, "/api/login") => ("api_login", api_login(ctx)),
        (Get, "/api/me") => ("api_me", Ok(api_me(ctx))),
        (Get, "/healthz") => ("healthz", Ok(healthz(ctx))),
        (Get, "/metrics") => ("metrics", Ok(metrics(ctx))),
        _ => ("other", Ok(not_routed(ctx))),
    };
    (name, answer)
}

/// 405 for known paths with another method, 404 for the rest (JSON under `/api/`).
fn not_routed(ctx: &Ctx) -> Reply {
    let allow = match ctx.req.path {
        "/" | "/account" | "/admin" | "/auth" | "/api/me" | "/healthz" | "/metrics" => {
            Some("GET, HEAD")
        }
        "/login" | "/register" => Some("GET, HEAD, POST"),
        "/logout" | "/account/password" | "/account/revoke" | "/admin/users" | "/api/login" => {
            Some("POST")
        }
        p if p.starts_with("/admin/users/") => Some("POST"),
        _ => None,
    };
    let api = ctx.req.path.starts_with("/api/");
    match (allow, api) {
        (Some(allow), true) => api_error(
            405,
            "method_not_allowed",
            "This method is not allowed here.",
        )
        .with_header("Allow", allow.into()),
        (Some(allow), false) => ctx
            .error_page(405, "This page does not accept that method.")
            .with_header("Allow", allow.into()),
        (None, true) => api_error(404, "not_found", "No such API endpoint."),
        (None, false) => ctx.error_page(404, "There is no page at this address."),
    }
}

/// When a browser's token cookie was refused, a page request goes to the login page
/// with a notice saying why; the after step clears the cookie.
fn bounce_rejected(ctx: &Ctx) -> Option<Reply> {
    let class = ctx.visitor.rejected()?;
    if !matches!(
        ctx.visitor,
        Visitor::Anonymous {
            source: Some(auth::Source::Cookie),
            ..
        }
    ) {
        return None;
    }
    Some(ctx.redirect_with_flash(&ctx.login_redirect(&ctx.here()), class.as_str()))
}

fn home(ctx: &Ctx) -> Reply {
    if let Some(reply) = bounce_rejected(ctx) {
        return reply;
    }
    ctx.page(200, None, pages::home)
}

fn login_page(ctx: &Ctx) -> Reply {
    let query = ctx.req.query_params().unwrap_or_default();
    let next = ctx.safe_next(query.get("next"));
    if ctx.store().is_none() {
        return Reply::see_other(&ctx.login_redirect(&next));
    }
    if ctx.user().is_some() {
        return Reply::see_other(&next);
    }
    let notice = ctx
        .visitor
        .rejected()
        .and_then(|c| Notice::from_flash(c.as_str()));
    let signup = signup_open(ctx).unwrap_or(false);
    ctx.form_page(200, notice, |c| pages::login(c, &next, "", signup))
}

fn signup_open(ctx: &Ctx) -> Result<bool, StoreError> {
    match ctx.store() {
        Some(store) => Ok(ctx.config().signup_open || store.count()? == 0),
        None => Ok(false),
    }
}

fn login_submit(ctx: &Ctx) -> Answer {
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let next = ctx.safe_next(form.get("next"));
    let name = form.get("username").unwrap_or("").trim();
    let password = form.get("password").unwrap_or("");
    let signup = ctx.config().signup_open;
    let again = |status: u16, message: &str| {
        ctx.form_page(status, Some(Notice::Error(message.into())), |c| {
            pages::login(c, &next, name, signup)
        })
    };
    if name.is_empty() || password.is_empty() {
        return Ok(again(400, "Please enter your user name and password."));
    }
    Ok(match check_password(ctx, store, name, password)? {
        Check::Ok(user) => Reply::see_other(&next).with_login(Login::Start(Box::new(
            ctx.app.auth.claims_for(&user, ctx.now),
        ))),
        Check::Wrong => again(401, "Wrong username or password."),
        Check::Throttled(retry) => again(
            429,
            &format!(
                "Too many failed logins. Try again in {} min.",
                retry.div_ceil(60)
            ),
        )
        .with_header("Retry-After", retry.to_string()),
        Check::Busy => again(
            503,
            "The server is busy logging other people in. Please try again in a moment.",
        )
        .with_header("Retry-After", "1".into()),
    })
}

fn logout(ctx: &Ctx) -> Reply {
    if ctx.user().is_none() {
        // Nothing to protect: just make sure no cookie is left behind.
        return Reply::see_other("/").with_login(Login::End);
    }
    match ctx.form() {
        Ok(_) => ctx
            .redirect_with_flash("/", "logged_out")
            .with_login(Login::End),
        Err(reply) => reply,
    }
}

fn register_page(ctx: &Ctx) -> Answer {
    if ctx.require_store().is_err() {
        return Ok(Reply::see_other(ctx.login_url()));
    }
    if !signup_open(ctx)? {
        return Ok(ctx.error_page(
            403,
            "Registration is closed. Ask an administrator for an account.",
        ));
    }
    let first = ctx.store().map(|s| s.count()).transpose()? == Some(0);
    Ok(ctx.form_page(200, None, |c| pages::register(c, "", first)))
}

fn register_submit(ctx: &Ctx) -> Answer {
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let first = store.count()? == 0;
    if !first && !ctx.config().signup_open {
        return Ok(ctx.error_page(
            403,
            "Registration is closed. Ask an administrator for an account.",
        ));
    }
    let raw_name = form.get("username").unwrap_or("");
    let again = |message: String| {
        ctx.form_page(400, Some(Notice::Error(message)), |c| {
            pages::register(c, raw_name, first)
        })
    };
    let password = form.get("password").unwrap_or("");
    if form.get("confirm") != Some(password) {
        return Ok(again("The two passwords differ.".into()));
    }
    let role = if first { "admin" } else { "user" };
    let user = match create_user(ctx, store, raw_name, password, role)? {
        Ok(user) => user,
        Err(message) => return Ok(again(message)),
    };
    Ok(ctx
        .redirect_with_flash("/", "welcome")
        .with_login(Login::Start(Box::new(
            ctx.app.auth.claims_for(&user, ctx.now),
        ))))
}

/// Validates and creates a user; `Ok(Err(message))` is a refusal to show on the form.
fn create_user(
    ctx: &Ctx,
    store: &UserStore,
    name: &str,
    password: &str,
    role: &str,
) -> Result<Result<User, String>, Halt> {
    let refuse = |e: &dyn std::fmt::Display| Ok(Err(capitalize(&e.to_string())));
    let name = match crate::store::validate_name(name) {
        Ok(n) => n,
        Err(e) => return refuse(&e),
    };
    if let Err(e) = crate::store::validate_role(role) {
        return refuse(&e);
    }
    let Some(_pass) = ctx.app.shared.hashing.try_enter() else {
        return Err(busy(ctx).into());
    };
    let hash = match ctx.app.shared.passwords.hash(password) {
        Ok(h) => h,
        Err(e) => return refuse(&e),
    };
    match store.create(&name, role, &hash) {
        Ok(user) => Ok(Ok(user)),
        Err(StoreError::NameTaken(_)) => Ok(Err("That user name is taken.".into())),
        Err(e @ (StoreError::BadName(_) | StoreError::BadRole(_))) => refuse(&e),
        Err(e) => Err(e.into()),
    }
}

/// 503 while every hashing slot is taken.
fn busy(ctx: &Ctx) -> Reply {
    ctx.error_page(503, "The server is busy. Please try again in a moment.")
        .with_header("Retry-After", "1".into())
}

fn account(ctx: &Ctx) -> Reply {
    if let Some(reply) = bounce_rejected(ctx) {
        return reply;
    }
    let claims = match ctx.require_user() {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let expires_in = claims.exp - ctx.now;
    ctx.page(200, None, |c| pages::account(c, expires_in))
        .private()
}

fn change_password(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    let form = ctx.form()?;
    let expires_in = claims.exp - ctx.now;
    let again = |status: u16, message: String| {
        ctx.page(status, Some(Notice::Error(message)), |c| {
            pages::account(c, expires_in)
        })
        .private()
    };
    let new = form.get("password").unwrap_or("");
    if form.get("confirm") != Some(new) {
        return Ok(again(400, "The two new passwords differ.".into()));
    }
    if let Err(e) = crate::password::check_rules(new) {
        return Ok(again(400, capitalize(&e.to_string())));
    }
    match check_password(ctx, store, &claims.name, form.get("current").unwrap_or(""))? {
        Check::Ok(user) => {
            let Some(_pass) = ctx.app.shared.hashing.try_enter() else {
                return Ok(again(
                    503,
                    "The server is busy. Please try again in a moment.".into(),
                ));
            };
            let hash = match ctx.app.shared.passwords.hash(new) {
                Ok(h) => h,
                Err(e) => return Ok(again(400, capitalize(&e.to_string()))),
            };
            let user = store.set_password(user.id, &hash)?;
            Ok(ctx
                .redirect_with_flash("/account", "password_changed")
                .with_login(Login::Start(Box::new(
                    ctx.app.auth.claims_for(&user, ctx.now),
                ))))
        }
        Check::Wrong => Ok(again(401, "The current password is wrong.".into())),
        Check::Throttled(retry) => Ok(again(
            429,
            "Too many failed attempts. Try again later.".into(),
        )
        .with_header("Retry-After", retry.to_string())),
        Check::Busy => Ok(again(
            503,
            "The server is busy. Please try again in a moment.".into(),
        )
        .with_header("Retry-After", "1".into())),
    }
}

fn revoke_own(ctx: &Ctx) -> Answer {
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    ctx.form()?;
    store.revoke(claims.user_id)?;
    Ok(ctx
        .redirect_with_flash("/", "logged_out_everywhere")
        .with_login(Login::End))
}

/// Admins only: the claims, or the reply for everyone else.
fn require_admin<'c>(ctx: &'c Ctx) -> Result<(&'c crate::token::Claims, &'c UserStore), Reply> {
    if let Some(reply) = bounce_rejected(ctx) {
        return Err(reply);
    }
    let claims = ctx.require_user()?;
    let store = ctx.require_store()?;
    if claims.role != "admin" {
        return Err(ctx.error_page(403, "This page is for administrators."));
    }
    Ok((claims, store))
}

fn admin_page(ctx: &Ctx) -> Answer {
    let (_, store) = require_admin(ctx)?;
    admin_listing(ctx, store, 200, None)
}

fn admin_listing(ctx: &Ctx, store: &UserStore, status: u16, notice: Option<Notice>) -> Answer {
    let mut users = Vec::new();
    let mut after = 0;
    loop {
        let page = store.list(after, 500)?;
        let Some(last) = page.last() else { break };
        after = last.id;
        users.extend(page);
        if users.len() >= 10_000 {
            break;
        }
    }
    Ok(ctx
        .page(status, notice, |c| pages::admin(c, &users))
        .private())
}

fn admin_create(ctx: &Ctx) -> Answer {
    let (_, store) = require_admin(ctx)?;
    let form = ctx.form()?;
    let name = form.get("username").unwrap_or("");
    let role = form.get("role").unwrap_or("user").trim();
    match create_user(ctx, store, name, form.get("password").unwrap_or(""), role)? {
        Ok(user) => admin_listing(
            ctx,
            store,
            200,
            Some(Notice::Info(format!("Created {}.", user.name))),
        ),
        Err(m) => admin_listing(ctx, store, 400, Some(Notice::Error(m))),
    }
}

fn admin_action(ctx: &Ctx) -> Answer {
    let (me, store) = require_admin(ctx)?;
    let rest = ctx.req.path.trim_start_matches("/admin/users/");
    let Some((id, action)) = rest.split_once('/') else {
        return Ok(ctx.error_page(404, "There is no page at this address."));
    };
    let Ok(id) = id.parse::<u64>() else {
        return Ok(ctx.error_page(404, "There is no such user."));
    };
    if !matches!(action, "role" | "lock" | "unlock" | "revoke" | "delete") {
        return Ok(ctx.error_page(404, "There is no page at this address."));
    }
    let form = ctx.form()?;
    if id == me.user_id && action != "revoke" {
        let notice = Notice::Error(
            "You cannot change your own role, lock or delete yourself; ask another administrator."
                .into(),
        );
        return admin_listing(ctx, store, 400, Some(notice));
    }
    let result = match action {
        "role" => match form.get("role").map(str::trim) {
            Some(role) => store
                .set_role(id, role)
                .map(|u| format!("{} now has the role {}.", u.name, u.role)),
            None => {
                return Ok(
                    ctx.error_page(400, &capitalize(&FormError::Missing("role").to_string()))
                );
            }
        },
        "lock" => store
            .set_locked(id, true)
            .map(|u| format!("{} is locked.", u.name)),
        "unlock" => store
            .set_locked(id, false)
            .map(|u| format!("{} is unlocked.", u.name)),
        "revoke" => store
            .revoke(id)
            .map(|u| format!("Every session of {} was ended.", u.name)),
        _ => store.delete(id).map(|()| format!("User {id} was deleted.")),
    };
    match result {
        Ok(message) => admin_listing(ctx, store, 200, Some(Notice::Info(message))),
        Err(StoreError::NotFound) => admin_listing(
            ctx,
            store,
            404,
            Some(Notice::Error("There is no such user.".into())),
        ),
        Err(e @ StoreError::BadRole(_)) => admin_listing(
            ctx,
            store,
            400,
            Some(Notice::Error(capitalize(&e.to_string()))),
        ),
        Err(e) => Err(e.into()),
    }
}

/// `GET /auth`, the forward-auth check for nginx `auth_request`, Caddy and Traefik.
fn forward_auth(ctx: &Ctx) -> Reply {
    let query = ctx.req.query_params().unwrap_or_default();
    if let Some(claims) = ctx.user() {
        if let Some(wanted) = query.get("role")
            && !wanted.split(',').any(|r| r.trim() == claims.role)
        {
            return Reply::text(403, "Your role does not allow this.\n".into()).private();
        }
        return Reply::text(200, String::new())
            .with_header("Remote-User", claims.name.clone())
            .with_header("Remote-Name", claims.name.clone())
            .with_header("Remote-Role", claims.role.clone())
            .with_header("Remote-Id", claims.sub.clone())
            .private();
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
    let config = ctx.config();
    let next = original.filter(|u| ctx.may_redirect_to(u));
    let base = match (&config.public_url, ctx.store()) {
        (_, None) => ctx.login_url().to_string(),
        (Some(origin), Some(_)) => format!("{origin}/login"),
        (None, Some(_)) => "/login".to_string(),
    };
    let location = match next {
        Some(next) => format!(
            "{base}{}next={}",
            if base.contains('?') { '&' } else { '?' },
            percent_encode(&next)
        ),
        None => base,
    };
    let why = ctx.visitor.rejected().map_or("none", |c| c.as_str());
    Reply::text(
        if direct { 302 } else { 401 },
        format!("Not logged in ({why}).\n"),
    )
    .with_header("Location", location)
}

fn api_error(status: u16, error: &str, message: &str) -> Reply {
    Reply::json(status, &json!({ "error": error, "message": message }))
}

fn api_login(ctx: &Ctx) -> Answer {
    let Some(store) = ctx.store() else {
        return Ok(api_error(
            404,
            "not_found",
            "This instance does not log people in; use the issuing instance.",
        ));
    };
    if !ctx.req.is_json() {
        return Ok(api_error(
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
    }
    let creds: Credentials = match serde_json::from_slice(&ctx.req.body) {
        Ok(c) => c,
        Err(e) => {
            return Ok(api_error(
                400,
                "bad_request",
                &format!("Expected {{\"username\": ..., \"password\": ...}}: {e}"),
            ));
        }
    };
    if creds.username.len() > 256 || creds.password.len() > 4096 {
        return Ok(api_error(
            400,
            "bad_request",
            "The user name or password is too long.",
        ));
    }
    Ok(
        match check_password(ctx, store, &creds.username, &creds.password)? {
            Check::Ok(user) => {
                let claims = ctx.app.auth.claims_for(&user, ctx.now);
                let token = ctx.app.auth.sign(&claims);
                Reply::json(
                200,
                &json!({ "token": token, "token_type": "Bearer", "expires_in": ctx.config().ttl }),
            )
            .private()
            }
            Check::Wrong => api_error(401, "wrong_credentials", "Wrong username or password."),
            Check::Throttled(retry) => {
                api_error(429, "throttled", "Too many failed logins; try again later.")
                    .with_header("Retry-After", retry.to_string())
            }
            Check::Busy => api_error(
                503,
                "busy",
                "Too many logins at once; try again in a moment.",
            )
            .with_header("Retry-After", "1".into()),
        },
    )
}

fn api_me(ctx: &Ctx) -> Reply {
    match ctx.user() {
        Some(claims) => match serde_json::to_value(claims) {
            Ok(value) => Reply::json(200, &value).private(),
            Err(_) => api_error(500, "internal", "The claims could not be encoded."),
        },
        None => {
            let (class, message) = match ctx.visitor.rejected() {
                Some(class) => (class.as_str(), rejection_message(class.as_str())),
                None => ("none", "No token: log in first."),
            };
            api_error(401, class, message)
        }
    }
}

fn rejection_message(class: &str) -> &'static str {
    match class {
        "expired" => "The token has expired; log in again.",
        "malformed" => "The token is not a well-formed JWT.",
        "invalid" => {
            "The token is not valid for this server (signature, key, issuer or time window)."
        }
        _ => "The token was revoked; log in again.",
    }
}

fn healthz(ctx: &Ctx) -> Reply {
    if let Some(fault) = ctx
        .app
        .shared
        .connection_fault
        .get()
        .and_then(|check| check())
    {
        return Reply::text(503, format!("{fault}\n"));
    }
    match ctx.store() {
        Some(store) => match store.count() {
            Ok(_) => Reply::text(200, "ok\n".into()),
            Err(e) => Reply::text(503, format!("user store unreadable: {e}\n")),
        },
        None => Reply::text(200, "ok (verify-only)\n".into()),
    }
}

fn metrics(ctx: &Ctx) -> Reply {
    let allowed = match ctx.config().metrics {
        MetricsAccess::On => true,
        MetricsAccess::Off => false,
        // Behind a trusted proxy on the same host every peer is loopback: judge the
        // client the proxy forwarded for.
        MetricsAccess::Loopback => ctx.client_addr().is_some_and(crate::http::is_loopback),
    };
    if !allowed {
        return ctx.error_page(404, "There is no page at this address.");
    }
    let mut reply = Reply::text(200, ctx.app.shared.metrics.render());
    reply.content_type = "text/plain; version=0.0.4; charset=utf-8";
    reply
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => {
            first.to_uppercase().chain(chars).collect::<String>()
                + if s.ends_with('.') { "" } else { "." }
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::Gate;

    #[test]
    fn the_gate_lets_max_holders_in_and_frees_a_place_on_drop() {
        let gate = Gate::new(2);
        let a = gate.try_enter().expect("first place");
        let b = gate.try_enter().expect("second place");
        assert!(gate.try_enter().is_none(), "a third holder is refused");
        drop(a);
        let c = gate.try_enter().expect("a freed place is taken again");
        assert!(gate.try_enter().is_none());
        drop((b, c));
        assert!(gate.try_enter().is_some());
    }
}

//! latchkey: a small, synchronous login server that keeps the login state in a
//! signed HS256 token inside an HttpOnly cookie, so any instance holding the key can
//! validate any request without a shared session store.
//!
//! Leaves (pure, no HTTP): `token`, `keys`, `password`, `store`, `throttle`,
//! `metrics`, `config`, `log`. `accounts` holds the account rules on the store and
//! passwords; `auth` builds the login cycle on tokens, keys and the store; `http` and
//! `pages` are the request/response vocabulary and the HTML; `routes` maps paths to
//! handlers that call `accounts` and `auth`; `wire` writes replies as bytes; and
//! `server` runs it all on tiny_http. docs/design.md describes the whole.

pub mod accounts;
pub mod auth;
pub mod config;
pub mod control;
pub mod http;
pub mod keeper;
pub mod keys;
pub mod log;
pub mod metrics;
pub mod ops;
pub mod pages;
pub mod password;
pub mod routes;
pub mod server;
pub mod store;
pub mod throttle;
pub mod token;
pub mod totp;
pub mod trust;
pub mod wire;

pub use auth::{Auth, Visitor};
pub use token::{Claims, ErrorClass, Signer, TokenBuf, TokenError, Validation, Verifier};

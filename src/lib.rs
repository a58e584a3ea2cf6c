//! latchkey: a small, synchronous login server that keeps the login state in a
//! signed HS256 token inside an HttpOnly cookie, so any instance holding the key
//! can validate any request without a shared session store.
//!
//! The library exposes the pure parts (token, keys, password, store) for embedding
//! and testing; the binary wires them to HTTP.

pub mod keys;
pub mod password;
pub mod store;
pub mod token;

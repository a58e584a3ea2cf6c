//! latchkey patch (rewritten file): the listening address. Only TCP listeners remain:
//! the Unix-socket and TLS variants had no user and no place in the connection loop.

use std::net::SocketAddr;

/// The address a server listens on.
#[derive(Debug, Clone)]
pub enum ListenAddr {
    /// A TCP address.
    IP(SocketAddr),
}

impl ListenAddr {
    /// The TCP address.
    pub fn to_ip(self) -> Option<SocketAddr> {
        match self {
            Self::IP(s) => Some(s),
        }
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(s: SocketAddr) -> Self {
        Self::IP(s)
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::IP(s) => s.fmt(f),
        }
    }
}

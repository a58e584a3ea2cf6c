//! The server's log: one line per event on stderr, `<RFC 3339 time> <level> <message>`,
//! filtered by `LATCHKEY_LOG`. Messages never carry tokens, passwords or keys.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::wire::Civil;

/// Log verbosity, from `LATCHKEY_LOG` (`off`, `error`, `info`, `debug`; default `info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    Off,
    /// Failures only.
    Error,
    /// Failures, start/stop and one access line per request.
    Info,
    /// Everything, including client disconnects.
    Debug,
}

/// The log level in force (read once).
pub fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| match std::env::var("LATCHKEY_LOG").as_deref() {
        Ok("off") => Level::Off,
        Ok("error") => Level::Error,
        Ok("debug") => Level::Debug,
        _ => Level::Info,
    })
}

/// Logs a failure.
pub fn error(message: &str) {
    write(Level::Error, "error", message);
}

/// Logs a start/stop or other notable event.
pub fn info(message: &str) {
    write(Level::Info, "info", message);
}

/// Logs a detail (client disconnects and the like).
pub fn debug(message: &str) {
    write(Level::Debug, "debug", message);
}

fn write(at: Level, word: &str, message: &str) {
    if level() >= at {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        eprintln!("{} {word} {message}", timestamp(now));
    }
}

/// RFC 3339 UTC time of a Unix timestamp.
pub fn timestamp(unix: i64) -> String {
    let c = Civil::from_unix(unix);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp(1_795_694_096), "2026-11-26T11:54:56Z");
        assert_eq!(timestamp(-1), "1969-12-31T23:59:59Z");
        assert_eq!(timestamp(4_102_444_800), "2100-01-01T00:00:00Z");
    }
}

//! Failed-login throttling per user name and per client address, in bounded memory.
//!
//! Each key (a lowercased name, or an address) counts failures in a fixed window;
//! reaching the limit locks the key out for a while. The table never holds more than
//! `capacity` keys: when full, expired entries are dropped first, then the entry whose
//! window started longest ago, so a flood of random names or addresses costs a fixed
//! amount of memory and cannot evict an active lockout younger than every other entry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

/// Throttling limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failures within `window` that trigger a lockout; 0 turns throttling off.
    pub max_failures: u32,
    /// Seconds over which failures are counted.
    pub window: u64,
    /// Seconds a key stays locked out.
    pub lockout: u64,
    /// Most keys remembered per table.
    pub capacity: usize,
}

/// One key's failures: the window they are counted in and the lockout, if any. The
/// same rule ([`Counter::fail`]) counts in memory here and in a shared store (the
/// PostgreSQL store keeps one row per key, so N instances do not give N times the
/// attempts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Unix seconds when the current counting window started.
    pub window_start: i64,
    /// Failures in the current window.
    pub failures: u32,
    /// Unix seconds until which the key is locked out (0: not locked).
    pub locked_until: i64,
}

impl Counter {
    /// The counter after one more failure at `now` (`None`: the key had none): a window
    /// older than `limits.window` starts over; reaching `limits.max_failures` locks the
    /// key for `limits.lockout` seconds and starts a new window.
    pub fn fail(previous: Option<Counter>, now: i64, limits: &Limits) -> Counter {
        let mut entry = previous.unwrap_or(Counter {
            window_start: now,
            failures: 0,
            locked_until: 0,
        });
        if now - entry.window_start >= limits.window as i64 {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        if entry.failures >= limits.max_failures {
            entry.locked_until = now + limits.lockout as i64;
            entry.failures = 0;
            entry.window_start = now;
        }
        entry
    }
}

type Entry = Counter;

impl Key {
    /// The key as one string (`name:alice`, `addr:192.0.2.1`, `client:unknown`), as a
    /// shared store keeps it.
    pub fn as_text(&self) -> String {
        match self {
            Key::Name(name) => format!("name:{name}"),
            Key::Addr(addr) => format!("addr:{addr}"),
            Key::Client(client) => format!("client:{client}"),
        }
    }
}

/// What is being throttled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A user name, lowercased and trimmed.
    Name(String),
    /// A client address.
    Addr(IpAddr),
    /// A forwarded client that is not an address (`unknown` and the like).
    Client(String),
}

/// The shared throttle state (one lock, taken only on login attempts).
#[derive(Debug)]
pub struct Throttle {
    limits: Limits,
    table: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    /// An empty throttle.
    pub fn new(limits: Limits) -> Throttle {
        Throttle {
            limits,
            table: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until any of `keys` may try again, or `None` when all may try now.
    pub fn retry_after(&self, keys: &[Key], now: i64) -> Option<u64> {
        if self.limits.max_failures == 0 {
            return None;
        }
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|k| table.get(k))
            .filter(|e| e.locked_until > now)
            .map(|e| (e.locked_until - now) as u64)
            .max()
    }

    /// Counts a failed attempt against every key.
    pub fn failure(&self, keys: &[Key], now: i64) {
        if self.limits.max_failures == 0 {
            return;
        }
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        for key in keys {
            if !table.contains_key(key) && table.len() >= self.limits.capacity {
                self.make_room(&mut table, now);
            }
            let next = Counter::fail(table.get(key).copied(), now, &self.limits);
            table.insert(key.clone(), next);
        }
    }

    /// Forgets the failures of `key` (after a successful login).
    pub fn reset(&self, key: &Key) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(key);
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of keys remembered.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn make_room(&self, table: &mut HashMap<Key, Entry>, now: i64) {
        let window = self.limits.window as i64;
        table.retain(|_, e| e.locked_until > now || now - e.window_start < window);
        if table.len() >= self.limits.capacity {
            let oldest = table
                .iter()
                .min_by_key(|(_, e)| (e.locked_until > now, e.window_start))
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                table.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            max_failures: 3,
            window: 60,
            lockout: 300,
            capacity: 100,
        }
    }

    #[test]
    fn locks_out_after_the_limit_and_releases_after_the_lockout() {
        let t = Throttle::new(limits());
        let k = [Key::Name("alice".into())];
        t.failure(&k, 0);
        t.failure(&k, 1);
        assert_eq!(t.retry_after(&k, 2), None);
        t.failure(&k, 2);
        assert_eq!(t.retry_after(&k, 2), Some(300));
        assert_eq!(t.retry_after(&k, 301), Some(1));
        assert_eq!(t.retry_after(&k, 302), None);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let t = Throttle::new(limits());
        let k = [Key::Name("bob".into())];
        t.failure(&k, 0);
        t.failure(&k, 1);
        t.failure(&k, 61);
        assert_eq!(t.retry_after(&k, 61), None);
    }

    #[test]
    fn reset_forgets_a_name() {
        let t = Throttle::new(limits());
        let k = [Key::Name("carol".into())];
        t.failure(&k, 0);
        t.failure(&k, 0);
        t.reset(&k[0]);
        t.failure(&k, 0);
        assert_eq!(t.retry_after(&k, 0), None);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_and_lockouts_survive() {
        let t = Throttle::new(limits());
        let victim = [Key::Addr("10.0.0.1".parse().unwrap())];
        for now in 0..3 {
            t.failure(&victim, now);
        }
        for i in 0..10_000u32 {
            t.failure(&[Key::Name(format!("random{i}"))], 10);
        }
        assert!(t.len() <= 100);
        assert_eq!(t.retry_after(&victim, 10), Some(292));
    }

    #[test]
    fn zero_turns_it_off() {
        let t = Throttle::new(Limits {
            max_failures: 0,
            ..limits()
        });
        let k = [Key::Name("x".into())];
        for _ in 0..10 {
            t.failure(&k, 0);
        }
        assert_eq!(t.retry_after(&k, 0), None);
        assert!(t.is_empty());
    }
}

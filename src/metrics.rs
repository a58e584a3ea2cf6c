//! Counters for `/metrics`, in the Prometheus text format.
//!
//! Lock-free: fixed arrays of atomics indexed by route and status, so recording a
//! request costs a few relaxed increments on the hot path. The route labels come from
//! the route table (`routes::labels`); this module only counts under them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::token::ErrorClass;

/// The status codes counted one by one; anything else is counted as `other`.
const STATUSES: &[u16] = &[
    200, 204, 302, 303, 400, 401, 403, 404, 405, 408, 413, 414, 415, 417, 429, 431, 500, 501, 503,
    505,
];

/// Upper bounds of the latency histogram buckets, microseconds.
const BUCKETS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 50_000, 250_000, 1_000_000,
];

/// Token rejection classes, each counted under its own word.
const CLASSES: [ErrorClass; 4] = [
    ErrorClass::Expired,
    ErrorClass::Malformed,
    ErrorClass::Invalid,
    ErrorClass::Revoked,
];

/// Login outcomes.
#[derive(Debug, Clone, Copy)]
pub enum LoginOutcome {
    /// Right password.
    Ok = 0,
    /// Wrong name or password.
    Failed = 1,
    /// Refused by the throttle or the hashing limit.
    Throttled = 2,
}

const OUTCOMES: &[&str] = &["ok", "failed", "throttled"];

/// All counters of one server.
#[derive(Debug)]
pub struct Metrics {
    routes: Vec<&'static str>,
    requests: Vec<AtomicU64>,
    rejections: [AtomicU64; 4],
    logins: [AtomicU64; 3],
    buckets: Vec<AtomicU64>,
    latency_sum_us: AtomicU64,
    latency_count: AtomicU64,
    workers: usize,
    verify_only: bool,
}

impl Metrics {
    /// Zeroed counters for a server with `workers` workers, counting requests under
    /// the route labels `routes` (the last one takes every index beyond the list).
    pub fn new(routes: Vec<&'static str>, workers: usize, verify_only: bool) -> Metrics {
        let zeros = |n: usize| (0..n).map(|_| AtomicU64::new(0)).collect::<Vec<_>>();
        Metrics {
            requests: zeros(routes.len() * (STATUSES.len() + 1)),
            routes,
            rejections: Default::default(),
            logins: Default::default(),
            buckets: zeros(BUCKETS_US.len() + 1),
            latency_sum_us: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            workers,
            verify_only,
        }
    }

    /// Counts one answered request under the route label at index `route`.
    pub fn request(&self, route: usize, status: u16, micros: u64) {
        let r = route.min(self.routes.len().saturating_sub(1));
        let s = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len());
        self.requests[r * (STATUSES.len() + 1) + s].fetch_add(1, Relaxed);
        let b = BUCKETS_US
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[b].fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(micros, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    /// Counts a refused token of this class.
    pub fn rejection(&self, class: ErrorClass) {
        if let Some(i) = CLASSES.iter().position(|c| *c == class) {
            self.rejections[i].fetch_add(1, Relaxed);
        }
    }

    /// Counts a login outcome.
    pub fn login(&self, outcome: LoginOutcome) {
        self.logins[outcome as usize].fetch_add(1, Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let _ = writeln!(
            out,
            "# HELP latchkey_requests_total Requests answered, by route and status."
        );
        let _ = writeln!(out, "# TYPE latchkey_requests_total counter");
        for (r, route) in self.routes.iter().enumerate() {
            for s in 0..=STATUSES.len() {
                let n = self.requests[r * (STATUSES.len() + 1) + s].load(Relaxed);
                if n > 0 {
                    let status = STATUSES.get(s).map_or("other".to_string(), u16::to_string);
                    let _ = writeln!(
                        out,
                        "latchkey_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP latchkey_token_rejections_total Tokens refused, by class."
        );
        let _ = writeln!(out, "# TYPE latchkey_token_rejections_total counter");
        for (i, class) in CLASSES.iter().enumerate() {
            let n = self.rejections[i].load(Relaxed);
            let _ = writeln!(
                out,
                "latchkey_token_rejections_total{{class=\"{}\"}} {n}",
                class.as_str()
            );
        }
        let _ = writeln!(
            out,
            "# HELP latchkey_logins_total Login attempts, by outcome."
        );
        let _ = writeln!(out, "# TYPE latchkey_logins_total counter");
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let n = self.logins[i].load(Relaxed);
            let _ = writeln!(out, "latchkey_logins_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP latchkey_request_duration_seconds Time to answer a request."
        );
        let _ = writeln!(out, "# TYPE latchkey_request_duration_seconds histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(
                out,
                "latchkey_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
            );
        }
        cumulative += self.buckets[BUCKETS_US.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "latchkey_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_us.load(Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "latchkey_request_duration_seconds_sum {sum}");
        let _ = writeln!(
            out,
            "latchkey_request_duration_seconds_count {}",
            self.latency_count.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP latchkey_workers Worker threads serving requests."
        );
        let _ = writeln!(out, "# TYPE latchkey_workers gauge");
        let _ = writeln!(out, "latchkey_workers {}", self.workers);
        let _ = writeln!(
            out,
            "# HELP latchkey_build_info Build and mode of this server."
        );
        let _ = writeln!(out, "# TYPE latchkey_build_info gauge");
        let mode = if self.verify_only {
            "verify-only"
        } else {
            "issuer"
        };
        let _ = writeln!(
            out,
            "latchkey_build_info{{version=\"{}\",mode=\"{mode}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }
}

/// Appends the user store's health gauges to a rendering: whether it can be read and
/// written, how many damaged records it knows of (the same `Health` value `/healthz`
/// reports), and the size of the logout deny list.
pub fn render_store(out: &mut String, health: &crate::store::Health) {
    let gauges: [(&str, &str, usize); 4] = [
        (
            "latchkey_store_readable",
            "Whether the user store can be read (1) or not (0).",
            usize::from(health.read_failure.is_none()),
        ),
        (
            "latchkey_store_writable",
            "Whether the user store can be written (1) or writes fail (0).",
            usize::from(health.write_failure.is_none()),
        ),
        (
            "latchkey_store_damaged_records",
            "Findings of damage in the user store (damaged records, broken indexes).",
            health.damage.len(),
        ),
        (
            "latchkey_store_revoked_tokens",
            "Logged-out logins on the deny list (bounded per user).",
            health.revoked_tokens,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_counted() {
        let m = Metrics::new(vec!["home", "auth", "other"], 2, false);
        m.request(1, 200, 40);
        m.request(1, 200, 400);
        m.request(1, 401, 40);
        m.request(99, 418, 2_000_000);
        m.rejection(ErrorClass::Expired);
        m.login(LoginOutcome::Throttled);
        let text = m.render();
        assert!(text.contains("latchkey_requests_total{route=\"auth\",status=\"200\"} 2\n"));
        assert!(text.contains("latchkey_requests_total{route=\"auth\",status=\"401\"} 1\n"));
        assert!(text.contains("latchkey_requests_total{route=\"other\",status=\"other\"} 1\n"));
        assert!(text.contains("latchkey_token_rejections_total{class=\"expired\"} 1\n"));
        assert!(text.contains("latchkey_logins_total{outcome=\"throttled\"} 1\n"));
        assert!(text.contains("latchkey_request_duration_seconds_bucket{le=\"0.00005\"} 2\n"));
        assert!(text.contains("latchkey_request_duration_seconds_bucket{le=\"+Inf\"} 4\n"));
        assert!(text.contains("latchkey_request_duration_seconds_count 4\n"));
        assert!(text.contains("latchkey_workers 2\n"));
        assert!(text.contains("mode=\"issuer\""));
    }
}

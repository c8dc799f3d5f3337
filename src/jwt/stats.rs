//! Local validation's counters and their Prometheus series: tokens by result, key fetches by
//! result, the keys held and the key set's age.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Defer, Validator};

/// Process-wide: they outlive a reload that replaces the validator.
pub struct JwtStats {
    pub accepted: AtomicU64,
    /// By `Defer::ALL` order.
    pub deferred: [AtomicU64; Defer::ALL.len()],
    /// By `FETCH_RESULTS` order.
    pub fetches: [AtomicU64; FETCH_RESULTS.len()],
}

/// Every label of `authgate_jwt_key_fetches_total`.
pub const FETCH_RESULTS: [&str; 5] = ["ok", "unreachable", "timeout", "bad_answer", "not_jwks"];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);

pub static STATS: JwtStats = JwtStats {
    accepted: ZERO,
    deferred: [ZERO; Defer::ALL.len()],
    fetches: [ZERO; FETCH_RESULTS.len()],
};

impl JwtStats {
    pub(super) fn fetched(&self, result: &str) {
        if let Some(i) = FETCH_RESULTS.iter().position(|r| *r == result) {
            self.fetches[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub fn deferred(&self, why: Defer) {
        self.deferred[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The `authgate_jwt_*` series (shown when local validation is configured).
    pub fn render(&self, validator: &Validator, text: &mut String) {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(text, "# HELP authgate_jwt_tokens_total Bearer JWTs by result: accepted locally, or deferred to the resolver and why\n# TYPE authgate_jwt_tokens_total counter");
        let _ = writeln!(
            text,
            "authgate_jwt_tokens_total{{result=\"accepted\"}} {}",
            g(&self.accepted)
        );
        for why in Defer::ALL {
            let _ = writeln!(
                text,
                "authgate_jwt_tokens_total{{result=\"deferred\",reason=\"{}\"}} {}",
                why.as_str(),
                g(&self.deferred[why as usize])
            );
        }
        let _ = writeln!(text, "# HELP authgate_jwt_key_fetches_total JWKS fetches by result\n# TYPE authgate_jwt_key_fetches_total counter");
        for (i, result) in FETCH_RESULTS.iter().enumerate() {
            let _ = writeln!(
                text,
                "authgate_jwt_key_fetches_total{{result=\"{result}\"}} {}",
                g(&self.fetches[i])
            );
        }
        let keys = validator.keys();
        let _ = writeln!(text, "# HELP authgate_jwt_keys Signing keys held from the last good JWKS answer\n# TYPE authgate_jwt_keys gauge\nauthgate_jwt_keys {}", keys.len());
        if let Some(at) = keys.fetched {
            let _ = writeln!(text, "# HELP authgate_jwt_key_set_age_seconds Time since the last good JWKS answer\n# TYPE authgate_jwt_key_set_age_seconds gauge\nauthgate_jwt_key_set_age_seconds {:.3}", at.elapsed().as_secs_f64());
        }
    }
}

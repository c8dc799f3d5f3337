//! The answer cache's counters, for the admin's stats and the metrics page, and their
//! Prometheus series.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::PurgeCause;

/// Counters, for the admin's stats and the metrics page.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub coalesced: AtomicU64,
    pub stale: AtomicU64,
    pub inserts: AtomicU64,
    pub evictions: AtomicU64,
    /// Purge requests by cause (`PurgeCause::ALL` order), whether or not they found an answer.
    pub purges: [AtomicU64; 7],
    /// Refresh-ahead resolves started, those whose answer differed from the cached one, and
    /// those that failed (the cached answer stays).
    pub refreshes: AtomicU64,
    pub refresh_changed: AtomicU64,
    pub refresh_failed: AtomicU64,
    pub size: AtomicI64,
}

impl CacheStats {
    pub(super) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// A `name value` list of the current counters (purges apart: `purges`).
    pub fn snapshot(&self) -> [(&'static str, i64); 10] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed) as i64;
        [
            ("hits", g(&self.hits)),
            ("misses", g(&self.misses)),
            ("coalesced", g(&self.coalesced)),
            ("stale", g(&self.stale)),
            ("inserts", g(&self.inserts)),
            ("evictions", g(&self.evictions)),
            ("refreshes", g(&self.refreshes)),
            ("refresh_changed", g(&self.refresh_changed)),
            ("refresh_failed", g(&self.refresh_failed)),
            ("size", self.size.load(Ordering::Relaxed).max(0)),
        ]
    }

    /// Purge requests by cause.
    pub fn purges(&self) -> [(&'static str, u64); 7] {
        PurgeCause::ALL.map(|c| (c.as_str(), self.purges[c as usize].load(Ordering::Relaxed)))
    }

    pub(super) fn purged(&self, cause: PurgeCause) {
        CacheStats::bump(&self.purges[cause as usize]);
    }

    /// The `authgate_cache_*` series, as the metrics page shows them.
    pub fn render(&self, text: &mut String) {
        for (name, value) in self.snapshot() {
            let (metric, kind) = if name == "size" {
                ("authgate_cache_size".to_string(), "gauge")
            } else {
                (format!("authgate_cache_{name}_total"), "counter")
            };
            let _ = writeln!(text, "# HELP {metric} Resolver-answer cache: {name}\n# TYPE {metric} {kind}\n{metric} {value}");
        }
        let _ = writeln!(text, "# HELP authgate_cache_purges_total Purge requests, by cause\n# TYPE authgate_cache_purges_total counter");
        for (cause, value) in self.purges() {
            let _ = writeln!(
                text,
                "authgate_cache_purges_total{{cause=\"{cause}\"}} {value}"
            );
        }
    }
}

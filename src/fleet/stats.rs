//! The fleet's counters and their Prometheus series: the admin's metrics page asks this
//! module for their text, so the page's composer needs to know nothing of what they count.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Process-wide counters: they outlive a reload that replaces the fleet.
#[derive(Debug, Default)]
pub struct FleetStats {
    pub up: AtomicI64,
    pub sent: AtomicU64,
    pub send_failed: AtomicU64,
    pub applied: AtomicU64,
    pub rejected: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub entries_rejected: AtomicU64,
    pub errors: AtomicU64,
    pub writes: AtomicU64,
    pub resyncs: AtomicU64,
}

pub static STATS: FleetStats = FleetStats {
    up: AtomicI64::new(0),
    sent: AtomicU64::new(0),
    send_failed: AtomicU64::new(0),
    applied: AtomicU64::new(0),
    rejected: AtomicU64::new(0),
    hits: AtomicU64::new(0),
    misses: AtomicU64::new(0),
    entries_rejected: AtomicU64::new(0),
    errors: AtomicU64::new(0),
    writes: AtomicU64::new(0),
    resyncs: AtomicU64::new(0),
};

pub(super) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl FleetStats {
    /// Bus messages by result.
    pub fn bus(&self) -> [(&'static str, u64); 4] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("sent", g(&self.sent)),
            ("send_failed", g(&self.send_failed)),
            ("applied", g(&self.applied)),
            ("rejected", g(&self.rejected)),
        ]
    }

    /// Shared-cache lookups by result.
    pub fn lookups(&self) -> [(&'static str, u64); 4] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("hit", g(&self.hits)),
            ("miss", g(&self.misses)),
            ("rejected", g(&self.entries_rejected)),
            ("error", g(&self.errors)),
        ]
    }

    /// The `authgate_fleet_*` series, as the metrics page shows them.
    pub fn render(&self, text: &mut String) {
        let _ = writeln!(text, "# HELP authgate_fleet_up Whether Redis is connected and the bus subscribed\n# TYPE authgate_fleet_up gauge\nauthgate_fleet_up {}", self.up.load(Ordering::Relaxed));
        let _ = writeln!(text, "# HELP authgate_fleet_bus_messages_total Purge messages on the fleet's bus, by result\n# TYPE authgate_fleet_bus_messages_total counter");
        for (result, value) in self.bus() {
            let _ = writeln!(
                text,
                "authgate_fleet_bus_messages_total{{result=\"{result}\"}} {value}"
            );
        }
        let _ = writeln!(text, "# HELP authgate_fleet_shared_cache_total Shared-cache lookups in Redis, by result\n# TYPE authgate_fleet_shared_cache_total counter");
        for (result, value) in self.lookups() {
            let _ = writeln!(
                text,
                "authgate_fleet_shared_cache_total{{result=\"{result}\"}} {value}"
            );
        }
        let _ = writeln!(text, "# HELP authgate_fleet_shared_cache_writes_total Resolver answers written to Redis\n# TYPE authgate_fleet_shared_cache_writes_total counter\nauthgate_fleet_shared_cache_writes_total {}", self.writes.load(Ordering::Relaxed));
        let _ = writeln!(text, "# HELP authgate_fleet_resyncs_total Times the bus came back and local answers were dropped\n# TYPE authgate_fleet_resyncs_total counter\nauthgate_fleet_resyncs_total {}", self.resyncs.load(Ordering::Relaxed));
    }
}

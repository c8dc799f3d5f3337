//! The fleet's counters: process-wide, so they outlive a reload that replaces the fleet.

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
}

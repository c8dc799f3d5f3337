//! Log lines about something that can repeat many times a second (a peer's bad messages,
//! clients leaving): at most one per period, not one per event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Says yes at most once per `every_ms`, to whichever caller asks first.
pub struct Throttle {
    every_ms: u64,
    last_ms: AtomicU64,
}

impl Throttle {
    pub const fn every_ms(every_ms: u64) -> Throttle {
        Throttle {
            every_ms,
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn ready(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= self.every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_period() {
        let t = Throttle::every_ms(60_000);
        assert!(t.ready());
        assert!(!t.ready());
        assert!(!t.ready());
        let t = Throttle::every_ms(0);
        assert!(t.ready() && t.ready());
    }
}

//! Resolver answers by credential key: TTLs by kind, one resolver call per key at a time,
//! a bounded size (TinyUFO), purge and flush.
//!
//! This file owns the `Cache` type and its public face; one concern a file beside it:
//! `flight` (single-flight and refresh-ahead), `store` (the bounded store, its TTLs and the
//! user index), `purge` (purges here and across the fleet), `local` (answers vouched for by a
//! locally validated token, and the purges they must postdate), `stats`. The cache sits above the
//! fleet: its misses and purges call down into it, and a peer's purge comes back through
//! `runtime`'s `fleet::Host`, which calls `apply`.

mod flight;
mod local;
mod purge;
mod stats;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock is the system's, except in tests that pause it to step through TTLs.
use tokio::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use tinyufo::TinyUfo;

use crate::fleet::{Fleet, Tombstones};
use crate::identity::Answer;
use crate::resolver::ResolveError;
use flight::Flight;
use store::{new_store, Entry, UserKeys};

pub use flight::MAX_REFRESHES;
pub use local::Vouched;
pub use purge::PurgeCause;
pub use stats::CacheStats;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// How many answers are kept at most.
    pub capacity: usize,
    /// Lifetime of an answer with a valid session; zero: not cached.
    pub ttl: Duration,
    /// Lifetime of an answer without one (`false` or absent); zero: not cached.
    pub negative_ttl: Duration,
    /// How long a request waits for another request's resolve of the same key before it
    /// calls the resolver itself.
    pub lock_timeout: Duration,
    /// How long after expiry a valid answer may still be served when the resolver fails;
    /// zero: fail closed.
    pub stale_if_error: Duration,
    /// A hit on a valid answer older than this is served and starts one background resolve
    /// that replaces it (refresh-ahead); zero: off.
    pub refresh_after: Duration,
}

/// How a request's answer was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// A fresh cached answer.
    Hit,
    /// This request called the resolver.
    Miss,
    /// Another request's resolve of the same key answered this one.
    Coalesced,
    /// The resolver failed and an expired valid answer was served (`stale_if_error`).
    Stale,
    /// Another instance of the fleet had the answer (Redis).
    Shared,
    /// A JWT access token validated here, without the resolver (`Vouched`).
    Local,
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Coalesced => "coalesced",
            Lookup::Stale => "stale",
            Lookup::Shared => "shared",
            Lookup::Local => "jwt",
        }
    }
}

pub type Outcome = Result<Answer, Arc<ResolveError>>;

pub struct Cache {
    /// Swapped by a reload that keeps the entries (TTLs and timeouts may change live).
    settings: ArcSwap<CacheSettings>,
    /// Entry times are milliseconds since this instant.
    epoch: Instant,
    /// Keyed by the 128-bit check: TinyUFO keeps only a 64-bit hash of it, the entry the check.
    store: ArcSwap<TinyUfo<[u8; 16], Arc<Entry>>>,
    flights: Mutex<HashMap<[u8; 32], Flight>>,
    stats: CacheStats,
    /// Refresh-ahead resolves running now (at most `MAX_REFRESHES`).
    refreshing: AtomicUsize,
    warned_uncredentialed: AtomicBool,
    /// Hash of a user id -> keys of that user's valid answers held in the store. Kept in step
    /// with inserts, replacements, evictions and purges, so it never outgrows the store; a
    /// hash rather than the id, and one key inline, keep it near 50 bytes a session.
    users: Mutex<HashMap<u64, UserKeys>>,
    /// The fleet this cache's misses and purges go through, when one is configured.
    fleet: ArcSwapOption<Fleet>,
    /// Purges remembered against vouched answers (`local`); handed to a cache replacing this one.
    purges: ArcSwap<Mutex<Tombstones>>,
}

impl Cache {
    pub fn new(settings: CacheSettings) -> Arc<Cache> {
        Arc::new(Cache {
            epoch: Instant::now(),
            store: ArcSwap::from_pointee(new_store(settings.capacity)),
            settings: ArcSwap::from_pointee(settings),
            flights: Mutex::new(HashMap::new()),
            stats: CacheStats::default(),
            refreshing: AtomicUsize::new(0),
            warned_uncredentialed: AtomicBool::new(false),
            users: Mutex::new(HashMap::new()),
            fleet: ArcSwapOption::empty(),
            purges: ArcSwap::from_pointee(local::new_purges()),
        })
    }

    /// Sends this cache's misses and purges through `fleet` (none: local only).
    pub fn attach_fleet(&self, fleet: Option<Arc<Fleet>>) {
        self.fleet.store(fleet);
    }

    /// How long a purge must be remembered to refuse shared answers resolved before it.
    pub fn horizon(&self) -> Duration {
        let s = self.settings.load();
        s.ttl.max(s.negative_ttl)
    }

    pub fn settings(&self) -> Arc<CacheSettings> {
        self.settings.load_full()
    }

    /// New TTLs and timeouts for the entries already held; the capacity cannot change live.
    pub fn update_settings(&self, settings: CacheSettings) {
        self.settings.store(Arc::new(settings));
    }

    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests;

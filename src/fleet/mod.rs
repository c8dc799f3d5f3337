//! Fleet mode: instances that share one Redis forget together (an authenticated pub/sub bus)
//! and share resolver answers (sealed keys with TTLs). Redis down, slow or restarted never
//! delays a request past `fleet.timeout`: the local cache and the resolver carry on alone.
//!
//! This file owns the `Fleet` type, its public face, and `Host`, what the fleet asks of the
//! process it serves. The fleet sits below the answer cache and the response cache, and owns
//! what passes between them and Redis (`Target`, `Fetched`, `Rules`). Why this way round: they
//! call the fleet on the request path, with values of their own (a miss through
//! `fetch_through`, a purge through `publish`), while the fleet needs them only from the bus's
//! background task, for a few narrow things (apply a peer's purge, resync, the horizon). The
//! narrow side is the one that goes up, through `Host`, implemented in `runtime` over the
//! live snapshot: reloads are followed without this module knowing the snapshot's type, the
//! cache or the response cache.
//!
//! One concern a file: `settings` (the section, URL checks), `link` (connections, health,
//! backoff, the supervisor), `bus` (purges across instances), `shared` (the answers in
//! Redis), `tombstones`, `stats`, `seal` (what crosses Redis, sealed).

mod bus;
mod link;
pub mod seal;
mod settings;
mod shared;
mod stats;
mod tombstones;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use redis::aio::MultiplexedConnection;

use crate::identity::Namespace;
use crate::throttle::Throttle;

pub use bus::{Target, REPLAY_WINDOW};
pub use link::Supervisor;
pub use seal::Purge;
pub use settings::{check_url, FleetSettings};
pub use shared::{Fetched, Rules};
pub use stats::{FleetStats, STATS};
pub use tombstones::{Tombstones, MAX_TOMBS};

/// What the fleet needs of the process it serves, asked afresh each time so that it follows
/// reloads. Implemented in `runtime` for the live snapshot; a fake in the unit tests.
pub trait Host: Send + Sync {
    /// The fleet the current configuration names: any other one stops serving the bus.
    fn fleet(&self) -> Option<Arc<Fleet>>;
    /// Applies another instance's purge of resolver answers to the local answer cache.
    fn apply(&self, target: &Target);
    /// Drops every local answer (purges sent while the bus was away were lost to this
    /// instance); how many were held.
    fn resync(&self) -> i64;
    /// How long a purge must be remembered to refuse shared answers resolved before it.
    fn horizon(&self) -> Duration;
    /// Applies another instance's purge of stored responses (a URL, or a prefix); why not,
    /// when it does not apply here.
    fn purge_responses(&self, url: &str, prefix: bool) -> Result<(), String>;
}

pub struct Fleet {
    settings: FleetSettings,
    client: redis::Client,
    keys: seal::Keys,
    namespace: Namespace,
    channel: String,
    /// This process on the bus: its own messages come back and are skipped.
    instance: String,
    seq: AtomicU64,
    /// The command connection while connected and subscribed.
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Redis answered a request or a check later than `timeout`: requests leave it alone
    /// until a check is in time again.
    slow: AtomicBool,
    seen: Mutex<HashMap<(String, u64), u64>>,
    tombs: Mutex<Tombstones>,
    warn_refused: Throttle,
    warn_forged: Throttle,
    warn_publish: Throttle,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Warnings about what peers send come at most once in this long, not once per message.
const WARN_EVERY_MS: u64 = 10_000;

fn instance_id() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u64(unix_ms());
    format!("{:016x}", h.finish())
}

impl Fleet {
    pub fn new(settings: FleetSettings, namespace: Namespace) -> Result<Fleet, String> {
        let client = link::client(&settings)?;
        Ok(Fleet {
            keys: seal::Keys::derive(&settings.secret),
            channel: format!("{}bus", settings.prefix),
            settings,
            client,
            namespace,
            instance: instance_id(),
            seq: AtomicU64::new(0),
            conn: ArcSwapOption::empty(),
            slow: AtomicBool::new(false),
            seen: Mutex::new(HashMap::new()),
            tombs: Mutex::new(Tombstones::default()),
            warn_refused: Throttle::every_ms(WARN_EVERY_MS),
            warn_forged: Throttle::every_ms(WARN_EVERY_MS),
            warn_publish: Throttle::every_ms(WARN_EVERY_MS),
        })
    }

    pub fn settings(&self) -> &FleetSettings {
        &self.settings
    }

    pub fn namespace(&self) -> &Namespace {
        &self.namespace
    }

    /// Whether local misses look in Redis first.
    pub fn shares_answers(&self) -> bool {
        self.settings.shared_cache
    }
}

#[cfg(test)]
mod tests;

//! Resolver answers by credential key: TTLs by kind, one resolver call per key at a time,
//! a bounded size (TinyUFO), purge and flush.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock is the system's, except in tests that pause it to step through TTLs.
use tokio::time::Instant;

use arc_swap::{ArcSwap, ArcSwapOption};
use futures_util::future::{BoxFuture, FutureExt, Shared};
use tinyufo::TinyUfo;

use crate::credentials::CacheKey;
use crate::fleet::{Fetched, Fleet, Rules, Target};
use crate::identity::{Answer, Identity, SessionState};
use crate::resolver::ResolveError;

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

/// At most this many refresh-ahead resolves run at once; a due hit beyond it is served without
/// one, and that answer's next chance comes one `refresh_after` later.
pub const MAX_REFRESHES: usize = 1024;

/// Why answers were dropped, counted apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PurgeCause {
    /// Admin `POST /cache/purge` naming credentials.
    AdminCredential,
    /// Admin `POST /cache/purge` naming a user id.
    AdminUser,
    /// Admin `POST /cache/flush`.
    AdminFlush,
    /// An Authgear webhook event about a user.
    Webhook,
    /// A 2xx answer on a logout route.
    Logout,
    /// A purge another instance of the fleet made.
    Fleet,
    /// The fleet's bus was (re)subscribed: purges sent meanwhile may have been missed.
    Resync,
}

impl PurgeCause {
    pub const ALL: [PurgeCause; 7] = [
        PurgeCause::AdminCredential,
        PurgeCause::AdminUser,
        PurgeCause::AdminFlush,
        PurgeCause::Webhook,
        PurgeCause::Logout,
        PurgeCause::Fleet,
        PurgeCause::Resync,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PurgeCause::AdminCredential => "admin_credential",
            PurgeCause::AdminUser => "admin_user",
            PurgeCause::AdminFlush => "admin_flush",
            PurgeCause::Webhook => "webhook",
            PurgeCause::Logout => "logout",
            PurgeCause::Fleet => "fleet",
            PurgeCause::Resync => "fleet_resync",
        }
    }
}

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
    fn bump(c: &AtomicU64) {
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

    fn purged(&self, cause: PurgeCause) {
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
}

impl Lookup {
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Miss => "miss",
            Lookup::Coalesced => "coalesced",
            Lookup::Stale => "stale",
            Lookup::Shared => "shared",
        }
    }
}

pub type Outcome = Result<Answer, Arc<ResolveError>>;

/// Kept small: a million of these must fit in well under 512 MB with their answers.
struct Entry {
    /// 128 bits of the key: the store indexes by a 64-bit hash only, so a hit is checked here.
    check: [u8; 16],
    identity: Arc<Identity>,
    /// Milliseconds since the cache's epoch.
    fresh_until: u64,
    /// When a hit should start a refresh (ms since the epoch; `u64::MAX`: never). Moved on by
    /// the hit that claims the refresh, so one per `refresh_after` at most, even if it fails.
    refresh_at: AtomicU64,
}

fn check_of(digest: &[u8; 32]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c.copy_from_slice(&digest[16..]);
    c
}

/// A flight's result, and whether the fleet's shared cache answered it.
type Flown = (Outcome, bool);

struct Flight {
    result: Shared<BoxFuture<'static, Flown>>,
    /// Set by a purge while the resolve runs: its answer must not be stored.
    purged: Arc<AtomicBool>,
    /// The user of the answer a refresh replaces, so purging the user stops the refresh too.
    user: Option<u64>,
}

/// A refresh-ahead flight: the answer it replaces, to count changes.
struct Refresh {
    previous: Arc<Identity>,
}

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
}

type UserKeys = smallvec::SmallVec<[[u8; 16]; 1]>;

fn user_hash(user: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    user.hash(&mut h);
    h.finish()
}

/// Forgets one held entry in the user index.
fn unindex(users: &mut HashMap<u64, UserKeys>, entry: &Entry) {
    let Some(user) = entry.identity.user_id() else {
        return;
    };
    let hash = user_hash(user);
    if let Some(keys) = users.get_mut(&hash) {
        keys.retain(|c| *c != entry.check);
        if keys.is_empty() {
            users.remove(&hash);
        }
    }
}

fn new_store(capacity: usize) -> TinyUfo<[u8; 16], Arc<Entry>> {
    let capacity = capacity.max(1);
    TinyUfo::new_compact(capacity, capacity)
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

    /// The answer for `key`: from the cache, from a resolve already running for the same
    /// key, or from `fetch`, whose answer is then stored by its kind's TTL.
    pub async fn resolve<F, Fut>(self: &Arc<Self>, key: &CacheKey, fetch: F) -> (Outcome, Lookup)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, ResolveError>> + Send + 'static,
    {
        let now = self.now_ms();
        let stale = match self.lookup(&key.digest, now) {
            Some((entry, true)) => {
                CacheStats::bump(&self.stats.hits);
                self.refresh_if_due(key, &entry, now, fetch);
                return (Ok(Answer::Identity(entry.identity.clone())), Lookup::Hit);
            }
            Some((entry, false)) => Some(entry),
            None => None,
        };

        // One lock for the check and the insert, so two requests cannot both lead.
        let (flight, leader, fetch) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            let joined = flights.get(&key.digest).map(|f| f.result.clone());
            match joined {
                Some(result) => (result, false, Some(fetch)),
                None => {
                    let f = self.start_flight(*key, fetch, None);
                    let result = f.result.clone();
                    flights.insert(key.digest, f);
                    (result, true, None)
                }
            }
        };
        let (outcome, lookup) = if leader {
            CacheStats::bump(&self.stats.misses);
            match flight.await {
                (outcome, true) => (outcome, Lookup::Shared),
                (outcome, false) => (outcome, Lookup::Miss),
            }
        } else {
            match tokio::time::timeout(self.settings.load().lock_timeout, flight).await {
                Ok((outcome, _)) => {
                    CacheStats::bump(&self.stats.coalesced);
                    (outcome, Lookup::Coalesced)
                }
                // The first resolve is stuck: this request asks on its own. The flight stays,
                // so later requests still join it rather than piling onto the resolver.
                Err(_) => {
                    CacheStats::bump(&self.stats.misses);
                    log::debug!(
                        "{key:?}: waited {:?} for a resolve; calling the resolver",
                        self.settings.load().lock_timeout
                    );
                    // Boxed: inline, the resolve's state (about 11 KiB) would be part of
                    // every request's future, hits included, and copied with it each time.
                    let outcome = match fetch {
                        Some(fetch) => Box::pin(fetch()).await.map_err(Arc::new),
                        None => Err(Arc::new(ResolveError::Timeout(
                            "waiting for another resolve".into(),
                        ))),
                    };
                    if let Ok(answer) = &outcome {
                        self.settle(key, answer, None);
                    }
                    (outcome, Lookup::Miss)
                }
            }
        };
        match (outcome, stale) {
            (Err(e), Some(entry)) if self.settings.load().stale_if_error > Duration::ZERO => {
                CacheStats::bump(&self.stats.stale);
                log::warn!("{key:?}: resolver failed ({e}); serving an answer that expired less than {:?} ago", self.settings.load().stale_if_error);
                (Ok(Answer::Identity(entry.identity.clone())), Lookup::Stale)
            }
            (outcome, _) => (outcome, lookup),
        }
    }

    /// Starts a background resolve for a hit on an answer due for refresh: at most one per
    /// entry per `refresh_after`, none while another resolve of the key runs, and at most
    /// `MAX_REFRESHES` at once. The hit itself never waits for it.
    fn refresh_if_due<F, Fut>(self: &Arc<Self>, key: &CacheKey, entry: &Entry, now: u64, fetch: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, ResolveError>> + Send + 'static,
    {
        let due = entry.refresh_at.load(Ordering::Relaxed);
        if now < due {
            return;
        }
        let every = self.settings.load().refresh_after.as_millis() as u64;
        if every == 0 {
            return;
        }
        // Claimed by one hit only; the next chance comes one period later, success or not.
        if entry
            .refresh_at
            .compare_exchange(
                due,
                now.saturating_add(every),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return;
        }
        if self.refreshing.fetch_add(1, Ordering::AcqRel) >= MAX_REFRESHES {
            self.refreshing.fetch_sub(1, Ordering::AcqRel);
            log::debug!("{key:?}: {MAX_REFRESHES} refreshes already running; this one skipped");
            return;
        }
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.contains_key(&key.digest) {
            self.refreshing.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        CacheStats::bump(&self.stats.refreshes);
        let refresh = Refresh {
            previous: entry.identity.clone(),
        };
        let flight = self.start_flight(*key, fetch, Some(refresh));
        flights.insert(key.digest, flight);
    }

    fn start_flight<F, Fut>(
        self: &Arc<Self>,
        key: CacheKey,
        fetch: F,
        refresh: Option<Refresh>,
    ) -> Flight
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, ResolveError>> + Send + 'static,
    {
        let purged = Arc::new(AtomicBool::new(false));
        let user = refresh
            .as_ref()
            .and_then(|r| r.previous.user_id())
            .map(user_hash);
        let this = self.clone();
        let mine = purged.clone();
        // A task of its own, so the resolve finishes (and is stored) even if the request
        // that started it goes away; the waiters hold a shared handle to its result.
        let task = tokio::spawn(async move {
            let fleet = this.fleet.load_full().filter(|f| f.shares_answers());
            let fetched = match fleet {
                Some(f) => {
                    let rules = {
                        let s = this.settings.load();
                        Rules {
                            lock_timeout: s.lock_timeout,
                            refresh_within: refresh.is_some().then_some(s.refresh_after),
                        }
                    };
                    let ttl = |identity: &Identity| this.ttl_for(&key, identity);
                    f.fetch_through(&key.digest, rules, ttl, fetch, &mine).await
                }
                None => Fetched {
                    result: fetch().await,
                    left: None,
                },
            };
            let shared = fetched.left.is_some();
            let outcome = fetched.result.map_err(Arc::new);
            if let Ok(answer) = &outcome {
                if !mine.load(Ordering::Acquire) {
                    this.settle(&key, answer, fetched.left);
                }
            }
            let mut flights = this.flights.lock().unwrap_or_else(|p| p.into_inner());
            if flights
                .get(&key.digest)
                .is_some_and(|f| Arc::ptr_eq(&f.purged, &mine))
            {
                flights.remove(&key.digest);
            }
            drop(flights);
            // Counted once the flight is gone, so whoever sees the count sees the new answer.
            if let Some(r) = refresh {
                this.refreshing.fetch_sub(1, Ordering::AcqRel);
                match &outcome {
                    Err(e) => {
                        CacheStats::bump(&this.stats.refresh_failed);
                        log::debug!("{key:?}: refresh failed ({e}); the cached answer stays");
                    }
                    Ok(Answer::Identity(i)) if **i == *r.previous => {}
                    Ok(_) => CacheStats::bump(&this.stats.refresh_changed),
                }
            }
            (outcome, shared)
        });
        let result = async move {
            task.await.unwrap_or_else(|e| {
                let failed = Err(Arc::new(ResolveError::Broken(pingora::Error::explain(
                    pingora::ErrorType::InternalError,
                    format!("resolve task failed: {e}"),
                ))));
                (failed, false)
            })
        }
        .boxed()
        .shared();
        Flight {
            result,
            purged,
            user,
        }
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A checked entry that is fresh, or expired but still servable if the resolver fails
    /// (valid answers within `stale_if_error`); and whether it is fresh.
    fn lookup(&self, digest: &[u8; 32], now: u64) -> Option<(Arc<Entry>, bool)> {
        let entry = self.store.load().get(&check_of(digest))?;
        if entry.check != check_of(digest) {
            return None;
        }
        if now < entry.fresh_until {
            return Some((entry, true));
        }
        let window = self.settings.load().stale_if_error.as_millis() as u64;
        let stale_ok = entry.identity.session() == SessionState::Valid
            && now < entry.fresh_until.saturating_add(window);
        stale_ok.then_some((entry, false))
    }

    /// Makes the resolver's latest answer the key's: stored by its kind's TTL, or, when it
    /// cannot be stored (a denial, a TTL of zero), the key's older answer is dropped, so
    /// neither a hit nor `stale_if_error` can serve an identity the resolver no longer gives.
    /// `left`: the freshness left of an answer another instance resolved.
    fn settle(&self, key: &CacheKey, answer: &Answer, left: Option<Duration>) {
        let stored = match answer {
            Answer::Identity(identity) => self.store(key, identity, left),
            Answer::Denied { .. } => false,
        };
        if !stored {
            self.remove(&check_of(&key.digest));
        }
    }

    /// How long an answer may be kept, by its kind; `None`: not at all. The fleet's shared
    /// cache keeps answers by the same rule.
    pub fn ttl_for(&self, key: &CacheKey, identity: &Identity) -> Option<Duration> {
        let session = identity.session();
        let settings = self.settings.load();
        let ttl = match session {
            SessionState::Valid => settings.ttl,
            SessionState::Invalid | SessionState::Anonymous => settings.negative_ttl,
        };
        if ttl.is_zero() || settings.capacity == 0 {
            return None;
        }
        if session == SessionState::Valid && !key.has_credentials {
            // The resolver read a credential the key does not cover (a cookie name or prefix
            // missing from resolver.credential_cookies / cookie_prefix): caching it would
            // hand this identity to every request without credentials.
            if !self.warned_uncredentialed.swap(true, Ordering::Relaxed) {
                log::warn!("the resolver found a valid session in a request without any configured credential; not caching it. Check resolver.credential_cookies and resolver.cookie_prefix");
            }
            return None;
        }
        Some(ttl)
    }

    /// Stores an answer by its kind's TTL (no longer than `left`); whether it was stored.
    fn store(&self, key: &CacheKey, identity: &Arc<Identity>, left: Option<Duration>) -> bool {
        let Some(ttl) = self.ttl_for(key, identity) else {
            return false;
        };
        let ttl = left.map_or(ttl, |l| l.min(ttl));
        let session = identity.session();
        let settings = self.settings.load();
        let now = self.now_ms();
        let refresh_at = match settings.refresh_after.as_millis() as u64 {
            0 => u64::MAX,
            _ if session != SessionState::Valid => u64::MAX,
            every => now.saturating_add(every),
        };
        let entry = Arc::new(Entry {
            check: check_of(&key.digest),
            identity: identity.clone(),
            fresh_until: now.saturating_add(ttl.as_millis() as u64),
            refresh_at: AtomicU64::new(refresh_at),
        });
        let store = self.store.load();
        let check = check_of(&key.digest);
        let replaced = store.get(&check);
        let evicted = store.put(check, entry, 1);
        {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = &replaced {
                unindex(&mut users, old);
            }
            if let Some(user) = identity
                .user_id()
                .filter(|_| session == SessionState::Valid)
            {
                let keys = users.entry(user_hash(user)).or_default();
                if !keys.contains(&check) {
                    keys.push(check);
                }
            }
            for kv in &evicted {
                unindex(&mut users, &kv.data);
            }
        }
        CacheStats::bump(&self.stats.inserts);
        self.stats
            .evictions
            .fetch_add(evicted.len() as u64, Ordering::Relaxed);
        self.stats.size.fetch_add(
            i64::from(replaced.is_none()) - evicted.len() as i64,
            Ordering::Relaxed,
        );
        true
    }

    /// Drops one held answer, keeping the size and the user index in step; whether it was held.
    fn remove(&self, check: &[u8; 16]) -> bool {
        let removed = self.store.load().remove(check);
        if let Some(entry) = &removed {
            self.stats.size.fetch_sub(1, Ordering::Relaxed);
            unindex(
                &mut self.users.lock().unwrap_or_else(|p| p.into_inner()),
                entry,
            );
        }
        removed.is_some()
    }

    /// Drops the answer for `key`, here and across the fleet, and keeps a resolve running
    /// for it from storing its answer. Returns whether there was anything to drop here.
    pub fn purge(&self, key: &CacheKey, cause: PurgeCause) -> bool {
        let dropped = self.forget_key(&key.digest);
        self.stats.purged(cause);
        self.tell_fleet(Target::Key(key.digest));
        dropped
    }

    /// Drops every answer of a user (a disabled or deleted account), here and across the
    /// fleet. Returns how many were held here.
    pub fn purge_user(&self, user_id: &str, cause: PurgeCause) -> usize {
        let dropped = self.forget_user(user_id);
        self.stats.purged(cause);
        self.tell_fleet(Target::User(user_id.to_string()));
        dropped
    }

    /// Drops every answer, here and across the fleet. Returns how many were held here.
    pub fn flush(&self) -> i64 {
        let dropped = self.forget_all();
        self.stats.purged(PurgeCause::AdminFlush);
        self.tell_fleet(Target::Flush);
        dropped
    }

    /// Applies a purge another instance made (here only).
    pub fn apply(&self, target: &Target, cause: PurgeCause) {
        match target {
            Target::Key(digest) => {
                self.forget_key(digest);
            }
            Target::User(user) => {
                self.forget_user(user);
            }
            Target::Flush => {
                self.forget_all();
            }
            // The response cache's, applied by the fleet's receiver; nothing here.
            Target::Responses { .. } => return,
        }
        self.stats.purged(cause);
    }

    /// Drops every answer held here, when the fleet's bus comes back: purges sent while it
    /// was away were lost. Returns how many.
    pub fn resync(&self) -> i64 {
        let dropped = self.forget_all();
        self.stats.purged(PurgeCause::Resync);
        dropped
    }

    fn tell_fleet(&self, target: Target) {
        if let Some(fleet) = self.fleet.load_full() {
            fleet.publish(target, self.horizon());
        }
    }

    fn forget_key(&self, digest: &[u8; 32]) -> bool {
        let removed = self.remove(&check_of(digest));
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.remove(digest)
        };
        if let Some(f) = &flight {
            f.purged.store(true, Ordering::Release);
        }
        removed || flight.is_some()
    }

    fn forget_user(&self, user_id: &str) -> usize {
        let hash = user_hash(user_id);
        let mut dropped = 0;
        {
            let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(keys) = users.get_mut(&hash) {
                let store = self.store.load();
                // Another user whose id shares the hash keeps their entries.
                keys.retain(|check| match store.get(check) {
                    Some(e) if e.identity.user_id() == Some(user_id) => {
                        store.remove(check);
                        dropped += 1;
                        false
                    }
                    Some(_) => true,
                    None => false,
                });
                if keys.is_empty() {
                    users.remove(&hash);
                }
            }
        }
        // A refresh of one of them must not store it again.
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, f| {
                let theirs = f.user == Some(hash);
                if theirs {
                    f.purged.store(true, Ordering::Release);
                }
                !theirs
            });
        self.stats.size.fetch_sub(dropped as i64, Ordering::Relaxed);
        dropped
    }

    fn forget_all(&self) -> i64 {
        self.users.lock().unwrap_or_else(|p| p.into_inner()).clear();
        self.store
            .store(Arc::new(new_store(self.settings.load().capacity)));
        let flights: Vec<Flight> = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.drain().map(|(_, f)| f).collect()
        };
        for f in flights {
            f.purged.store(true, Ordering::Release);
        }
        self.stats.size.swap(0, Ordering::Relaxed).max(0)
    }
}

#[cfg(test)]
#[path = "cache/tests.rs"]
mod tests;

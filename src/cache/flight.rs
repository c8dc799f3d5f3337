//! One resolver call per key at a time (single-flight): a miss starts a flight that later
//! requests for the key join, through the fleet's shared answers when it has them; and
//! refresh-ahead, a due hit starting one background flight that replaces the answer.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::store::{user_hash, Entry};
use super::{Cache, CacheStats, Lookup, Outcome};
use crate::credentials::CacheKey;
use crate::fleet::{Fetched, Rules};
use crate::identity::{Answer, Identity};
use crate::resolver::ResolveError;

/// At most this many refresh-ahead resolves run at once; a due hit beyond it is served without
/// one, and that answer's next chance comes one `refresh_after` later.
pub const MAX_REFRESHES: usize = 1024;

/// A flight's result, and whether the fleet's shared cache answered it.
type Flown = (Outcome, bool);

pub(super) struct Flight {
    result: Shared<BoxFuture<'static, Flown>>,
    /// Set by a purge while the resolve runs: its answer must not be stored.
    pub(super) purged: Arc<AtomicBool>,
    /// The user of the answer a refresh replaces, so purging the user stops the refresh too.
    pub(super) user: Option<u64>,
}

/// A refresh-ahead flight: the answer it replaces, to count changes.
struct Refresh {
    previous: Arc<Identity>,
}

impl Cache {
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
    pub(super) fn refresh_if_due<F, Fut>(
        self: &Arc<Self>,
        key: &CacheKey,
        entry: &Entry,
        now: u64,
        fetch: F,
    ) where
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
}

//! Answers vouched for without the resolver (a locally validated JWT access token): kept under
//! the request's key by the cache's TTL rules, capped by the token's expiry, and refreshed
//! ahead by the resolver like any other answer, so the resolver stays the judge of revocation.
//! A purge that covers the token's key or user after it was issued (here, from the fleet, or
//! a resolver's refusal of a key that held a valid answer) refuses it from then on: the purges
//! are remembered as tombstones, by the rules the fleet keeps its own by.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Cache, Lookup, Outcome};
use crate::credentials::CacheKey;
use crate::fleet::{unix_ms, Target, Tombstones};
use crate::identity::{Answer, Identity};
use crate::resolver::ResolveError;

/// Longer than any token lives: a tombstone goes only when they overflow, and then every
/// older token is refused instead (it costs resolver calls, never a wrong answer).
const TOKEN_HORIZON: Duration = Duration::from_secs(u32::MAX as u64);

/// An identity vouched for by a token: when it was issued and when it expires (Unix ms).
#[derive(Debug, Clone)]
pub struct Vouched {
    pub identity: Arc<Identity>,
    pub issued_ms: u64,
    pub expires_ms: u64,
}

/// The purges of a new cache: every token issued before it is left to the resolver, since
/// the purges made before this process started (a webhook to an instance that has since
/// restarted, or to the fleet before this one joined) are not known here.
pub(super) fn new_purges() -> Mutex<Tombstones> {
    let mut purges = Tombstones::default();
    purges.bury(&Target::Flush, unix_ms(), TOKEN_HORIZON);
    Mutex::new(purges)
}

impl Cache {
    /// The answer for `key`: a fresh cached one; else `vouch`'s, when it has one that no
    /// purge covers; else the resolver's, as `resolve`. A vouched answer older than
    /// `refresh_after` starts a refresh at once: the resolver sees it in the background.
    pub async fn resolve_vouched<V, F, Fut>(
        self: &Arc<Self>,
        key: &CacheKey,
        vouch: V,
        fetch: F,
    ) -> (Outcome, Lookup)
    where
        V: FnOnce() -> Option<Vouched>,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<Answer, ResolveError>> + Send + 'static,
    {
        let now = self.now_ms();
        if matches!(self.lookup(&key.digest, now), Some((_, true))) {
            return self.resolve(key, fetch).await;
        }
        let Some(v) = vouch() else {
            return self.resolve(key, fetch).await;
        };
        if !self.take_vouched(key, &v) {
            return self.resolve(key, fetch).await;
        }
        // Read after the store: an old token's refresh is due at once, not a moment later.
        let now = self.now_ms();
        if let Some((entry, true)) = self.lookup(&key.digest, now) {
            self.refresh_if_due(key, &entry, now, fetch);
        }
        (Ok(Answer::Identity(v.identity)), Lookup::Local)
    }

    /// Whether no purge covers `v`; if so it is stored (when the cache keeps valid answers).
    fn take_vouched(&self, key: &CacheKey, v: &Vouched) -> bool {
        let user = v.identity.user_id();
        if !self.with_purges(|p| p.allows(&key.digest, user, v.issued_ms)) {
            return false;
        }
        let now = unix_ms();
        let left = Duration::from_millis(v.expires_ms.saturating_sub(now));
        let age = Duration::from_millis(now.saturating_sub(v.issued_ms));
        self.store_aged(key, &v.identity, Some(left), age);
        // A purge between the check and the store buried first, then dropped: either it
        // dropped this entry, or its tombstone is seen here.
        if !self.with_purges(|p| p.allows(&key.digest, user, v.issued_ms)) {
            self.remove(&super::store::check_of(&key.digest));
            return false;
        }
        true
    }

    /// Whether a token of this key and user issued at `issued_ms` is covered by no purge.
    pub fn vouchable(&self, key: &CacheKey, user: Option<&str>, issued_ms: u64) -> bool {
        self.with_purges(|p| p.allows(&key.digest, user, issued_ms))
    }

    /// Keeps remembering the purges `previous` saw (a reload that replaces the cache).
    pub fn adopt_purges(&self, previous: &Cache) {
        self.purges.store(previous.purges.load_full());
    }

    pub(super) fn bury(&self, target: &Target) {
        self.with_purges(|p| p.bury(target, unix_ms(), TOKEN_HORIZON));
    }

    fn with_purges<R>(&self, f: impl FnOnce(&mut Tombstones) -> R) -> R {
        let purges = self.purges.load();
        let mut held = purges.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut held)
    }
}

//! The bounded store (TinyUFO) and what it holds: entries checked by 128 bits of their key,
//! TTLs by the answer's kind, and the index of each user's answers that a user purge reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tinyufo::TinyUfo;

use super::{Cache, CacheStats};
use crate::credentials::CacheKey;
use crate::identity::{Answer, Identity, SessionState};

/// Kept small: a million of these must fit in well under 512 MB with their answers.
pub(super) struct Entry {
    /// 128 bits of the key: the store indexes by a 64-bit hash only, so a hit is checked here.
    pub(super) check: [u8; 16],
    pub(super) identity: Arc<Identity>,
    /// Milliseconds since the cache's epoch.
    pub(super) fresh_until: u64,
    /// When a hit should start a refresh (ms since the epoch; `u64::MAX`: never). Moved on by
    /// the hit that claims the refresh, so one per `refresh_after` at most, even if it fails.
    pub(super) refresh_at: AtomicU64,
}

pub(super) fn check_of(digest: &[u8; 32]) -> [u8; 16] {
    let mut c = [0u8; 16];
    c.copy_from_slice(&digest[16..]);
    c
}

pub(super) type UserKeys = smallvec::SmallVec<[[u8; 16]; 1]>;

pub(super) fn user_hash(user: &str) -> u64 {
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

pub(super) fn new_store(capacity: usize) -> TinyUfo<[u8; 16], Arc<Entry>> {
    let capacity = capacity.max(1);
    TinyUfo::new_compact(capacity, capacity)
}

impl Cache {
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// A checked entry that is fresh, or expired but still servable if the resolver fails
    /// (valid answers within `stale_if_error`); and whether it is fresh.
    pub(super) fn lookup(&self, digest: &[u8; 32], now: u64) -> Option<(Arc<Entry>, bool)> {
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
    /// A key that held a valid answer and now gets none is a revoked credential: a token
    /// of it is not vouched for again (`local`).
    pub(super) fn settle(&self, key: &CacheKey, answer: &Answer, left: Option<Duration>) {
        let valid = matches!(answer, Answer::Identity(i) if i.session() == SessionState::Valid);
        if !valid && self.holds_valid(&key.digest) {
            self.bury(&crate::fleet::Target::Key(key.digest));
        }
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

    fn holds_valid(&self, digest: &[u8; 32]) -> bool {
        let check = check_of(digest);
        self.store
            .load()
            .get(&check)
            .is_some_and(|e| e.check == check && e.identity.session() == SessionState::Valid)
    }

    /// Stores an answer by its kind's TTL (no longer than `left`); whether it was stored.
    pub(super) fn store(
        &self,
        key: &CacheKey,
        identity: &Arc<Identity>,
        left: Option<Duration>,
    ) -> bool {
        self.store_aged(key, identity, left, Duration::ZERO)
    }

    /// `store`, for an answer already `age` old: its refresh comes `age` sooner.
    pub(super) fn store_aged(
        &self,
        key: &CacheKey,
        identity: &Arc<Identity>,
        left: Option<Duration>,
        age: Duration,
    ) -> bool {
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
            every => now.saturating_add(every.saturating_sub(age.as_millis() as u64)),
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
    pub(super) fn remove(&self, check: &[u8; 16]) -> bool {
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
}

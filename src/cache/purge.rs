//! Purges: a key, a user's answers or all of them dropped here, a resolve in flight kept from
//! storing what it brings, and the same purge sent to the fleet; and the purges the fleet
//! brings from the other instances, applied here only. Each counted by its cause.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::flight::Flight;
use super::store::{check_of, new_store, user_hash};
use super::Cache;
use crate::credentials::CacheKey;
use crate::fleet::Target;

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

impl Cache {
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

    /// Each `forget_*` buries its purge before it drops anything: a token vouched for
    /// meanwhile either is dropped or sees the tombstone (`local::take_vouched`).
    fn forget_key(&self, digest: &[u8; 32]) -> bool {
        self.bury(&Target::Key(*digest));
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
        self.bury(&Target::User(user_id.to_string()));
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
        self.bury(&Target::Flush);
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

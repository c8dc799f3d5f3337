//! Tombstones: purges remembered for as long as an answer resolved before them could still
//! be fresh, so that a shared answer such a purge covers is refused whoever wrote it when.
//! The answer cache keeps a set of its own by the same rules for locally validated tokens
//! (`cache::Vouched`): a token issued before a purge that covers it is not vouched for.

use std::collections::HashMap;
use std::time::Duration;

use super::{Fleet, Target};

/// Tombstones (purges remembered to refuse older shared answers) kept at most.
pub const MAX_TOMBS: usize = 100_000;

/// The purges remembered: by key, by user, and as a floor under every answer.
#[derive(Default)]
pub struct Tombstones {
    keys: HashMap<[u8; 32], u64>,
    users: HashMap<String, u64>,
    /// Every answer resolved at or before this instant is refused (a flush, or tombstones
    /// overflowing).
    floor: u64,
}

impl Tombstones {
    /// Keys and users remembered, for the tests of the bound.
    #[cfg(test)]
    pub(super) fn held(&self) -> usize {
        self.keys.len() + self.users.len()
    }

    pub fn allows(&self, digest: &[u8; 32], user: Option<&str>, resolved_at: u64) -> bool {
        resolved_at > self.floor
            && self.keys.get(digest).is_none_or(|&t| resolved_at > t)
            && user.is_none_or(|u| self.users.get(u).is_none_or(|&t| resolved_at > t))
    }

    pub fn bury(&mut self, purge: &Target, at: u64, horizon: Duration) {
        match purge {
            Target::Key(d) => {
                let t = self.keys.entry(*d).or_default();
                *t = (*t).max(at);
            }
            Target::User(u) => {
                let t = self.users.entry(u.clone()).or_default();
                *t = (*t).max(at);
            }
            Target::Flush => {
                self.floor = self.floor.max(at);
                self.keys.clear();
                self.users.clear();
            }
            // Not a resolver answer: nothing shared in Redis to refuse.
            Target::Responses { .. } => return,
        }
        if self.keys.len() + self.users.len() > MAX_TOMBS {
            // Older than any fresh answer: nothing they refuse could be served anyway.
            let cut = at.saturating_sub(horizon.as_millis() as u64);
            self.keys.retain(|_, t| *t > cut);
            self.users.retain(|_, t| *t > cut);
            if self.keys.len() + self.users.len() > MAX_TOMBS {
                // Refusing every older shared answer is safe: it costs resolver calls only.
                self.floor = self.floor.max(at);
                self.keys.clear();
                self.users.clear();
            }
        }
    }
}

impl Fleet {
    pub(super) fn tombs(&self) -> std::sync::MutexGuard<'_, Tombstones> {
        self.tombs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

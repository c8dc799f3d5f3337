//! One request's tries at its pool's backends: which backend next, when a retry must open a
//! new connection, and whether a failure may be tried again at all.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType};
use smallvec::SmallVec;

use super::Pool;

/// Group keys no pooled connection is filed under.
static FRESH_GROUP: AtomicU64 = AtomicU64::new(1 << 63);

/// A group key of its own: a peer given it finds no idle connection in Pingora's pool (they
/// are filed by the peer's hash, group key included), so a new connection is opened.
pub fn fresh_group_key() -> u64 {
    FRESH_GROUP.fetch_add(1, Ordering::Relaxed)
}

/// The backends a request has been sent to, and whether its next try needs a new connection.
#[derive(Debug, Default)]
pub struct Attempts {
    /// Backends tried, the first attempt included (a failed connect tries another). Nearly
    /// every request tries one: kept inline, not in an allocation of its own.
    tried: SmallVec<[SocketAddr; 2]>,
    /// The last try failed on a reused connection before any response byte: the next goes to
    /// a new connection, and may go to the same backend (the failure says nothing of it).
    fresh: bool,
}

impl Attempts {
    /// The backend for the next try, or why there is none (the client gets 502).
    pub fn next(&mut self, pool: &Pool, key: &[u8]) -> Result<Box<HttpPeer>, String> {
        let fresh = std::mem::take(&mut self.fresh);
        let stale = if fresh { self.tried.pop() } else { None };
        match pool.select(key, &self.tried) {
            Some(mut peer) => {
                if let Some(addr) = peer._address.as_inet() {
                    self.tried.push(*addr);
                }
                if fresh {
                    peer.group_key = fresh_group_key();
                }
                Ok(peer)
            }
            None => {
                let why = if self.tried.is_empty() {
                    format!("no healthy backend in upstream `{}`", pool.name())
                } else {
                    format!("every backend tried in upstream `{}` failed", pool.name())
                };
                self.tried.extend(stale);
                Err(why)
            }
        }
    }

    /// Whether a failed connect may try another backend, with `retries` of them allowed.
    pub fn may_retry_connect(&self, retries: usize) -> bool {
        // `tried` counts the first attempt too.
        self.tried.len() <= retries
    }

    /// Decides whether an exchange that failed may be tried again, and marks `e` so: only the
    /// backend's side of it (a client that went away would only have its request sent again
    /// for nobody), only a request that can be sent again whole (`replayable`: idempotent, its
    /// body still buffered, no answer started), and on a `reused` connection a failure before
    /// any response byte, write included (Pingora's rule, plus writes: the same stale
    /// connection). Such a retry goes to a new connection.
    pub fn after_failure(&mut self, e: &mut Error, replayable: bool, reused: bool) {
        if e.esource() != &ErrorSource::Upstream || !replayable {
            e.set_retry(false);
            return;
        }
        if reused
            && matches!(
                e.etype(),
                ErrorType::WriteError | ErrorType::ConnectionClosed | ErrorType::ReadError
            )
        {
            e.set_retry(true);
        } else {
            e.retry.decide_reuse(reused);
        }
        if reused && e.retry() {
            self.fresh = true;
        }
    }

    /// The backend of the last try.
    pub fn last(&self) -> Option<SocketAddr> {
        self.tried.last().copied()
    }
}

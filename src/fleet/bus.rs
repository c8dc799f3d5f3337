//! The purge bus: what a purge names (`Target`, owned here because the answer cache and the
//! response cache both send it down), publishing a purge made here, and accepting one made
//! elsewhere: sealed with the fleet secret, within the replay window, once; warnings about
//! refused messages throttled, since a peer can send them at any rate.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::link::{BACKOFF_MAX, OFF_PATH_TIMEOUT};
use super::seal::{self, Purge};
use super::stats::{bump, STATS};
use super::{unix_ms, Fleet, Host};

/// How long a bus message is accepted after it was sent (and before, for clock skew); a
/// message is applied once within it, so a replay is refused.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(30);

/// Bus message ids remembered to refuse replays, at most.
const MAX_SEEN: usize = 100_000;

/// A purge with its key decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Key([u8; 32]),
    User(String),
    Flush,
    /// The response cache's objects for a URL or a prefix (not resolver answers).
    Responses {
        url: String,
        prefix: bool,
    },
}

impl Target {
    pub(super) fn from_purge(p: &Purge) -> Option<Target> {
        Some(match p {
            Purge::Key { key } => Target::Key(hex::decode(key).ok()?.try_into().ok()?),
            Purge::User { user } => Target::User(user.clone()),
            Purge::Flush => Target::Flush,
            Purge::Responses { url, prefix } => Target::Responses {
                url: url.clone(),
                prefix: *prefix,
            },
        })
    }

    pub(super) fn to_purge(&self) -> Purge {
        match self {
            Target::Key(d) => Purge::Key {
                key: hex::encode(d),
            },
            Target::User(u) => Purge::User { user: u.clone() },
            Target::Flush => Purge::Flush,
            Target::Responses { url, prefix } => Purge::Responses {
                url: url.clone(),
                prefix: *prefix,
            },
        }
    }
}

impl Fleet {
    /// A purge made here: remembered (so older shared answers are refused), published to the
    /// others, and its shared answers deleted; off the request path.
    pub fn publish(self: &Arc<Self>, target: Target, horizon: Duration) {
        let at = unix_ms();
        self.tombs().bury(&target, at, horizon);
        let msg = seal::Message {
            v: 1,
            from: self.instance.clone(),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            at,
            purge: target.to_purge(),
        };
        let wire = seal::seal_message(&self.keys, &self.settings.prefix, &msg);
        let Some(mut conn) = self.conn() else {
            bump(&STATS.send_failed);
            log::debug!("fleet: not connected; purge applied here only");
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let published = tokio::time::timeout(
                OFF_PATH_TIMEOUT,
                redis::cmd("PUBLISH")
                    .arg(&this.channel)
                    .arg(&wire)
                    .query_async::<i64>(&mut conn),
            )
            .await;
            match published {
                Ok(Ok(_)) => bump(&STATS.sent),
                Ok(Err(e)) => {
                    bump(&STATS.send_failed);
                    if this.warn_publish.ready() {
                        log::warn!("fleet: a purge was not published: {e} (counted in authgate_fleet_bus_messages_total{{result=\"send_failed\"}})");
                    }
                }
                Err(_) => {
                    bump(&STATS.send_failed);
                    if this.warn_publish.ready() {
                        log::warn!("fleet: a purge was not published in {OFF_PATH_TIMEOUT:?} (counted in authgate_fleet_bus_messages_total{{result=\"send_failed\"}})");
                    }
                }
            }
            if this.settings.shared_cache {
                let _ =
                    tokio::time::timeout(BACKOFF_MAX, this.delete_shared(&mut conn, &target)).await;
            }
        });
    }

    /// A bus message: checked (MAC, window, replay), then applied through the host.
    pub(super) fn receive(&self, host: &dyn Host, wire: &[u8]) {
        let msg = match self.accept(wire) {
            Ok(Some(m)) => m,
            Ok(None) => return,
            Err(why) => {
                bump(&STATS.rejected);
                if self.warn_refused.ready() {
                    log::warn!(
                        "fleet: refused a bus message on {} ({}); whoever sent it lacks the fleet secret or replays old messages",
                        self.channel,
                        why.as_str()
                    );
                }
                return;
            }
        };
        let Some(target) = Target::from_purge(&msg.purge) else {
            bump(&STATS.rejected);
            return;
        };
        if let Target::Responses { url, prefix } = &target {
            if let Err(why) = host.purge_responses(url, *prefix) {
                log::debug!("fleet: a response purge for `{url}` does not apply: {why}");
            }
            bump(&STATS.applied);
            return;
        }
        let at = msg.at.max(unix_ms());
        self.tombs().bury(&target, at, host.horizon());
        host.apply(&target);
        bump(&STATS.applied);
    }

    /// The message if it is to be applied; `None` for this instance's own.
    pub(super) fn accept(&self, wire: &[u8]) -> Result<Option<seal::Message>, seal::Refused> {
        let msg = seal::open_message(&self.keys, &self.settings.prefix, wire)?;
        if msg.from == self.instance {
            return Ok(None);
        }
        let now = unix_ms();
        let window = REPLAY_WINDOW.as_millis() as u64;
        if msg.at.abs_diff(now) > window {
            return Err(seal::Refused::Stale);
        }
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_SEEN / 2 {
            seen.retain(|_, at| at.abs_diff(now) <= window);
        }
        if seen.len() >= MAX_SEEN {
            return Err(seal::Refused::Replayed);
        }
        if seen.insert((msg.from.clone(), msg.seq), msg.at).is_some() {
            return Err(seal::Refused::Replayed);
        }
        Ok(Some(msg))
    }
}

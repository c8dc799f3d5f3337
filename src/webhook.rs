//! Authgear's webhook events on the admin listener (`POST /hooks/authgear`): signature,
//! freshness and replay checks, and purging the users an event disables or deletes.
//!
//! Authgear signs each delivery with `x-authgear-body-signature`, the lower-case hex
//! HMAC-SHA256 of the raw body keyed with the webhook secret. It delivers at most once, with
//! no retry, and sends no event on logout or session revocation: the webhook is the fast path
//! for account changes, refresh-ahead the safety net for everything else.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::cache::{Cache, PurgeCause};

/// Event types after which a user's cached identities must go.
pub const PURGING_EVENTS: [&str; 5] = [
    "user.disabled",
    "user.deleted",
    "user.deletion_scheduled",
    "user.anonymized",
    "user.anonymous.promoted",
];

/// Event ids remembered for replay detection, at most; the oldest are forgotten first.
pub const MAX_SEEN: usize = 100_000;

/// The receiver's settings, from `admin.webhook`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// The raw webhook secret Authgear signs with.
    pub secret: Vec<u8>,
    /// Events whose `context.timestamp` is further than this from now are refused.
    pub max_age: Duration,
}

/// Why a delivery was refused; each is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// No `x-authgear-body-signature` header.
    MissingSignature,
    /// A signature that does not match the body.
    BadSignature,
    /// Not an event: not JSON, or without `id`, `type` or `context.timestamp`.
    Malformed,
    /// `context.timestamp` outside `max_age`.
    Stale,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "missing_signature",
            Rejection::BadSignature => "bad_signature",
            Rejection::Malformed => "malformed",
            Rejection::Stale => "stale",
        }
    }

    /// What was wrong, for the answer and the log.
    pub fn explain(self) -> &'static str {
        match self {
            Rejection::MissingSignature => "x-authgear-body-signature is missing",
            Rejection::BadSignature => "x-authgear-body-signature does not match the body",
            Rejection::Malformed => {
                "not an Authgear event (id, type, context.timestamp, the user's id)"
            }
            Rejection::Stale => "context.timestamp is outside admin.webhook.max_age",
        }
    }

    /// The status Authgear is answered with.
    pub fn status(self) -> u16 {
        match self {
            Rejection::MissingSignature | Rejection::BadSignature => 401,
            Rejection::Malformed | Rejection::Stale => 400,
        }
    }
}

/// What a well-signed, fresh event led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// A user event: these users' answers were dropped (how many answers in all).
    Purged { users: usize, answers: usize },
    /// An id seen before: nothing done.
    Replayed,
    /// Any other event type: nothing to do.
    Ignored,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    payload: Payload,
    context: Context,
}

#[derive(Deserialize, Default)]
struct Payload {
    #[serde(default)]
    user: Option<UserRef>,
    /// `user.anonymous.promoted`: the anonymous account that became `user`.
    #[serde(default)]
    anonymous_user: Option<UserRef>,
}

#[derive(Deserialize)]
struct UserRef {
    id: String,
}

#[derive(Deserialize)]
struct Context {
    /// Unix seconds.
    timestamp: i64,
}

/// The receiver: its replay memory lives as long as the process, across reloads.
#[derive(Default)]
pub struct Receiver {
    seen: Mutex<Seen>,
}

/// Event ids with the time (unix seconds) after which a replay would be refused as stale
/// anyway, oldest first.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    order: VecDeque<(i64, String)>,
}

impl Seen {
    /// Remembers `id` until `until`; false if it was already remembered.
    fn first_time(&mut self, id: &str, until: i64, now: i64) -> bool {
        while let Some((t, _)) = self.order.front() {
            if *t >= now && self.order.len() < MAX_SEEN {
                break;
            }
            if let Some((_, old)) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        if self.ids.contains(id) {
            return false;
        }
        self.ids.insert(id.to_string());
        self.order.push_back((until, id.to_string()));
        true
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `signature` (hex) is the HMAC-SHA256 of `body` under `secret`, compared in
/// constant time.
pub fn verify(secret: &[u8], body: &[u8], signature: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    let expected = hex::encode(mac.finalize().into_bytes());
    // Authgear sends lower case; upper case hex is the same signature.
    let given = signature.trim_ascii().to_ascii_lowercase();
    expected.as_bytes().ct_eq(&given).into()
}

impl Receiver {
    /// Checks one delivery and acts on it.
    pub fn receive(
        &self,
        settings: &WebhookSettings,
        cache: &Cache,
        signature: Option<&[u8]>,
        body: &[u8],
    ) -> Result<Accepted, Rejection> {
        let signature = signature.ok_or(Rejection::MissingSignature)?;
        if !verify(&settings.secret, body, signature) {
            return Err(Rejection::BadSignature);
        }
        let event: Event = serde_json::from_slice(body).map_err(|_| Rejection::Malformed)?;
        let now = unix_now();
        let window = settings.max_age.as_secs() as i64;
        if event.context.timestamp.abs_diff(now) > window.unsigned_abs() {
            return Err(Rejection::Stale);
        }
        let users: Vec<&str> = [&event.payload.user, &event.payload.anonymous_user]
            .into_iter()
            .flatten()
            .map(|u| u.id.as_str())
            .filter(|id| !id.is_empty())
            .collect();
        let purging = PURGING_EVENTS.contains(&event.kind.as_str());
        if purging && users.is_empty() {
            return Err(Rejection::Malformed);
        }
        let first = self
            .seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_time(
                &event.id,
                event.context.timestamp.saturating_add(window),
                now,
            );
        if !first {
            return Ok(Accepted::Replayed);
        }
        if !purging {
            return Ok(Accepted::Ignored);
        }
        let answers = users
            .iter()
            .map(|u| cache.purge_user(u, PurgeCause::Webhook))
            .sum();
        log::info!(
            "webhook: {} {}: purged {answers} cached answers of {} user(s)",
            event.kind,
            event.id,
            users.len()
        );
        Ok(Accepted::Purged {
            users: users.len(),
            answers,
        })
    }
}

#[cfg(test)]
#[path = "webhook/tests.rs"]
mod tests;

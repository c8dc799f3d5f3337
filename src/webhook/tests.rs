//! Unit tests of `webhook`.

use super::*;
use crate::cache::CacheSettings;
use crate::credentials::CacheKey;
use crate::identity::{Answer, Identity, Namespace};
use futures_util::FutureExt;
use std::sync::Arc;

const SECRET: &[u8] = b"authgear-webhook-secret";

fn settings() -> WebhookSettings {
    WebhookSettings {
        secret: SECRET.to_vec(),
        max_age: Duration::from_secs(300),
    }
}

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn event(id: &str, kind: &str, user: &str, timestamp: i64) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "seq": 1,
        "type": kind,
        "payload": { "user": { "id": user, "is_disabled": true } },
        "context": { "timestamp": timestamp, "user_id": user }
    })
    .to_string()
    .into_bytes()
}

/// A cache holding one valid answer for each of `users` (key n for the n-th).
async fn cache_of(users: &[&str]) -> Arc<Cache> {
    let cache = Cache::new(CacheSettings {
        capacity: 100,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(10),
        lock_timeout: Duration::from_secs(5),
        stale_if_error: Duration::ZERO,
        refresh_after: Duration::ZERO,
    });
    for (n, user) in users.iter().enumerate() {
        let mut h = http::HeaderMap::new();
        h.insert("x-authgear-session-valid", "true".parse().unwrap());
        h.insert("x-authgear-user-id", user.parse().unwrap());
        let answer = Answer::Identity(Arc::new(
            Identity::from_headers(&h, &Namespace::new("x-authgear-")).unwrap(),
        ));
        let key = CacheKey {
            digest: [n as u8 + 1; 32],
            has_credentials: true,
        };
        let (outcome, _) = cache
            .resolve(&key, move || async move { Ok(answer) }.boxed())
            .await;
        assert!(outcome.is_ok());
    }
    cache
}

fn held(cache: &Cache) -> i64 {
    cache.stats().size.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn signatures_are_checked_against_the_raw_body() {
    let body = br#"{"id":"1"}"#;
    let good = sign(body);
    assert!(verify(SECRET, body, good.as_bytes()));
    assert!(verify(SECRET, body, good.to_uppercase().as_bytes()));
    assert!(
        !verify(SECRET, br#"{"id": "1"}"#, good.as_bytes()),
        "re-encoded body"
    );
    assert!(!verify(b"another secret", body, good.as_bytes()));
    assert!(!verify(SECRET, body, &good.as_bytes()[..63]), "truncated");
    assert!(!verify(SECRET, body, b""));
    assert!(!verify(SECRET, body, "é".repeat(32).as_bytes()));
}

#[tokio::test]
async fn a_signed_user_event_purges_that_user_only() {
    let cache = cache_of(&["alice", "bob", "alice"]).await;
    let r = Receiver::default();
    let body = event("ev1", "user.disabled", "alice", unix_now());
    let got = r.receive(&settings(), &cache, Some(sign(&body).as_bytes()), &body);
    assert_eq!(
        got,
        Ok(Accepted::Purged {
            users: 1,
            answers: 2
        })
    );
    assert_eq!(held(&cache), 1, "bob's answer stays");
}

#[tokio::test]
async fn every_purging_event_type_purges_and_others_do_not() {
    // Spelled out, not read from PURGING_EVENTS: the issue names these five.
    for kind in [
        "user.disabled",
        "user.deleted",
        "user.deletion_scheduled",
        "user.anonymized",
        "user.anonymous.promoted",
    ] {
        let cache = cache_of(&["alice"]).await;
        let body = event(kind, kind, "alice", unix_now());
        let got =
            Receiver::default().receive(&settings(), &cache, Some(sign(&body).as_bytes()), &body);
        assert!(
            matches!(got, Ok(Accepted::Purged { answers: 1, .. })),
            "{kind}: {got:?}"
        );
    }
    for kind in [
        "user.created",
        "user.profile.updated",
        "session.created",
        "user.disabled.extra",
    ] {
        let cache = cache_of(&["alice"]).await;
        let body = event(kind, kind, "alice", unix_now());
        let got =
            Receiver::default().receive(&settings(), &cache, Some(sign(&body).as_bytes()), &body);
        assert_eq!(got, Ok(Accepted::Ignored), "{kind}");
        assert_eq!(held(&cache), 1, "{kind}");
    }
}

#[tokio::test]
async fn a_promoted_anonymous_user_purges_both_ids() {
    let cache = cache_of(&["anon", "real", "other"]).await;
    let body = serde_json::json!({
        "id": "ev-p", "type": "user.anonymous.promoted",
        "payload": { "anonymous_user": { "id": "anon" }, "user": { "id": "real" }, "identities": [] },
        "context": { "timestamp": unix_now() }
    })
    .to_string();
    let got = Receiver::default().receive(
        &settings(),
        &cache,
        Some(sign(body.as_bytes()).as_bytes()),
        body.as_bytes(),
    );
    assert_eq!(
        got,
        Ok(Accepted::Purged {
            users: 2,
            answers: 2
        })
    );
    assert_eq!(held(&cache), 1);
}

#[tokio::test]
async fn hostile_deliveries_are_refused_and_purge_nothing() {
    let cache = cache_of(&["alice"]).await;
    let r = Receiver::default();
    let s = settings();
    let body = event("ev2", "user.deleted", "alice", unix_now());
    assert_eq!(
        r.receive(&s, &cache, None, &body),
        Err(Rejection::MissingSignature)
    );
    assert_eq!(
        r.receive(&s, &cache, Some(b"00".repeat(32).as_slice()), &body),
        Err(Rejection::BadSignature)
    );
    // Signed, but altered after signing.
    let mut altered = body.clone();
    altered.extend_from_slice(b" ");
    assert_eq!(
        r.receive(&s, &cache, Some(sign(&body).as_bytes()), &altered),
        Err(Rejection::BadSignature)
    );
    for bad in [
        b"not json".to_vec(),
        br#"{"id":"x","type":"user.deleted"}"#.to_vec(),
        br#"{"id":"x","type":"user.deleted","context":{"timestamp":"soon"}}"#.to_vec(),
        format!(r#"{{"id":"x","type":"user.deleted","payload":{{}},"context":{{"timestamp":{}}}}}"#, unix_now()).into_bytes(),
        format!(r#"{{"id":"x","type":"user.deleted","payload":{{"user":{{"id":""}}}},"context":{{"timestamp":{}}}}}"#, unix_now()).into_bytes(),
    ] {
        assert_eq!(
            r.receive(&s, &cache, Some(sign(&bad).as_bytes()), &bad),
            Err(Rejection::Malformed),
            "{}",
            String::from_utf8_lossy(&bad)
        );
    }
    for ts in [unix_now() - 301, unix_now() + 301, i64::MIN, i64::MAX] {
        let old = event("ev3", "user.deleted", "alice", ts);
        assert_eq!(
            r.receive(&s, &cache, Some(sign(&old).as_bytes()), &old),
            Err(Rejection::Stale),
            "{ts}"
        );
    }
    assert_eq!(held(&cache), 1);
}

#[tokio::test]
async fn a_replayed_event_is_ignored() {
    let cache = cache_of(&["alice"]).await;
    let r = Receiver::default();
    let body = event("ev4", "user.disabled", "alice", unix_now());
    let sig = sign(&body);
    assert!(matches!(
        r.receive(&settings(), &cache, Some(sig.as_bytes()), &body),
        Ok(Accepted::Purged { .. })
    ));
    // Alice signs in again; the old delivery replayed must not log her out.
    let cache = cache_of(&["alice"]).await;
    assert_eq!(
        r.receive(&settings(), &cache, Some(sig.as_bytes()), &body),
        Ok(Accepted::Replayed)
    );
    assert_eq!(held(&cache), 1);
}

#[test]
fn the_replay_memory_forgets_expired_ids_and_stays_bounded() {
    let mut seen = Seen::default();
    assert!(seen.first_time("a", 100, 0));
    assert!(!seen.first_time("a", 100, 50));
    // Past its window, an id is forgotten (a replay would be refused as stale anyway).
    assert!(seen.first_time("b", 300, 200));
    assert_eq!(seen.ids.len(), 1);
    assert!(seen.first_time("a", 300, 200));
    for n in 0..MAX_SEEN + 10 {
        seen.first_time(&n.to_string(), 1000, 200);
    }
    assert!(seen.ids.len() <= MAX_SEEN);
    assert_eq!(seen.ids.len(), seen.order.len());
}

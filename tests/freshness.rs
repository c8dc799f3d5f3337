//! Identity freshness, end to end: refresh-ahead, Authgear webhooks, purges by cause.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;

const VALID: &[u8] = b"HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: true\r\nX-Authgear-User-Id: u-r\r\nContent-Length: 0\r\n\r\n";
const REVOKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: false\r\nContent-Length: 0\r\n\r\n";

/// The cache counters from the admin endpoint.
async fn stats(admin: std::net::SocketAddr) -> serde_json::Value {
    admin_get(admin, "/cache/stats").await
}

/// Polls the cache counters until `field` reaches `want` (at most 10 s).
async fn stat_reaches(admin: std::net::SocketAddr, field: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = stats(admin).await;
        if s[field] == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{field} never reached {want}: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A canned resolver answering `VALID`, and a stack in front of it with an admin listener and
/// `refresh_after`.
async fn refreshing(refresh_after: &str) -> (Canned, Stack) {
    let resolver = serve_canned(VALID, Duration::ZERO, true).await;
    let stack = Stack::builder()
        .resolver(resolver.addr)
        .admin()
        .yaml(&format!(
            r#"
            cache:
              ttl: 10m
              refresh_after: {refresh_after}
            "#
        ))
        .start()
        .await;
    (resolver, stack)
}

/// A session revoked at the resolver is seen within `refresh_after` plus one request, while
/// every request in between is a cache hit and the resolver sees one call per period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_ahead_sees_a_revocation_with_only_hits() {
    let (resolver, s) = refreshing("1s").await;
    let (proxy, admin) = (&s.proxy, s.admin());
    let calls = || resolver.calls.load(Ordering::SeqCst);
    let started = Instant::now();
    assert_eq!(user_of(proxy, "session=s1").await, ["u-r"]);
    // An active session for 2.5 s: served throughout, refreshed about once a second.
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(user_of(proxy, "session=s1").await, ["u-r"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let active = started.elapsed().as_secs_f64();
    let n = calls() as f64;
    assert!(n >= 2.0, "the answer was refreshed ({n} calls)");
    assert!(
        n <= 1.0 + active,
        "{n} resolver calls in {active:.1} s: more than one per refresh_after"
    );

    *resolver.reply.lock().unwrap() = REVOKED;
    let revoked = Instant::now();
    let mut requests = 0;
    loop {
        requests += 1;
        let e = get_as(proxy, "/", "session=s1").await;
        if e.header_values("x-authgear-user-id").is_empty() {
            assert_eq!(e.header_values("x-authgear-session-valid"), ["false"]);
            break;
        }
        assert!(
            revoked.elapsed() < Duration::from_secs(5),
            "the revocation was never seen"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = revoked.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "the revocation took {took:?} ({requests} requests) with refresh_after: 1s"
    );
    let s = stats(admin).await;
    assert_eq!(
        s["misses"], 1,
        "every request after the first was a hit: {s}"
    );
    assert!(s["refresh_changed"].as_u64() >= Some(1), "{s}");
}

/// A hit never waits for a refresh: with the resolver hanging, hits are served while the
/// refresh is still running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hits_do_not_wait_for_a_slow_refresh() {
    // The resolver's timeout (2 s) ends a hanging refresh.
    let (resolver, s) = refreshing("300ms").await;
    let (proxy, admin) = (&s.proxy, s.admin());
    let calls = || resolver.calls.load(Ordering::SeqCst);
    assert_eq!(user_of(proxy, "session=s2").await, ["u-r"]);
    resolver.delay_ms.store(30_000, Ordering::SeqCst);
    // Due for refresh once 300 ms have passed: the first hit after that starts it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while calls() < 2 {
        assert_eq!(user_of(proxy, "session=s2").await, ["u-r"]);
        assert!(Instant::now() < deadline, "no refresh started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..10 {
        assert_eq!(user_of(proxy, "session=s2").await, ["u-r"]);
    }
    let s = stats(admin).await;
    assert_eq!(
        (s["refreshes"].as_u64(), s["refresh_failed"].as_u64()),
        (Some(1), Some(0)),
        "ten hits were served while the refresh was still running: {s}"
    );
    // The refresh times out; the cached answer stays.
    stat_reaches(admin, "refresh_failed", 1).await;
    assert_eq!(user_of(proxy, "session=s2").await, ["u-r"]);
    assert_eq!(stats(admin).await["misses"], 1);
}

const SECRET: &str = "whsec-0123456789abcdef-authgate-test";

fn sign(body: &[u8]) -> String {
    webhook_signature(SECRET, body)
}

fn event(id: &str, kind: &str, user: &str, timestamp: i64) -> Vec<u8> {
    serde_json::json!({
        "id": id,
        "seq": 7,
        "type": kind,
        "payload": { "user": { "id": user, "is_disabled": true } },
        "context": { "timestamp": timestamp, "user_id": user, "preferred_languages": [] }
    })
    .to_string()
    .into_bytes()
}

/// Posts to the webhook as Authgear does: no bearer token, a signature header.
async fn deliver(
    admin: std::net::SocketAddr,
    body: Vec<u8>,
    signature: Option<&str>,
) -> (u16, String) {
    let mut req = client()
        .post(format!("http://{admin}/hooks/authgear"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(s) = signature {
        req = req.header("x-authgear-body-signature", s);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authgear_webhooks_purge_users_and_refuse_the_rest() {
    let stack = Stack::builder();
    let secret_file = stack.file("webhook-secret", &format!("{SECRET}\n"));
    let s = stack
        .admin_keys(&format!(
            r#"
            webhook:
              secret_file: {}
              max_age: 5m
            "#,
            secret_file.display()
        ))
        .start()
        .await;
    let (proxy, admin) = (&s.proxy, s.admin());
    let calls = || s.resolver_calls();
    let bearer_user = || async {
        send_echo(client().get(proxy.url("/")).bearer_auth("tok-alice"))
            .await
            .header_values("x-authgear-user-id")
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    // Alice by cookie and by bearer token, and Bob: three cached answers.
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(bearer_user().await, ["user-alice"]);
    assert_eq!(user_of(proxy, "session=sess-bob").await, ["user-bob"]);
    assert_eq!(calls(), 3);

    let disable = event("ev-1", "user.disabled", "user-alice", unix_now());
    let good = sign(&disable);
    // Refused, and nothing purged.
    let refused = [
        (deliver(admin, disable.clone(), None).await, 401),
        (
            deliver(admin, disable.clone(), Some(&"0".repeat(64))).await,
            401,
        ),
        (
            deliver(admin, disable.clone(), Some("not hex at all")).await,
            401,
        ),
        // Signed with the right secret, but over another body.
        (
            deliver(
                admin,
                event("ev-1", "user.disabled", "user-bob", unix_now()),
                Some(&good),
            )
            .await,
            401,
        ),
        {
            let old = event("ev-old", "user.disabled", "user-alice", unix_now() - 600);
            (deliver(admin, old.clone(), Some(&sign(&old))).await, 400)
        },
        {
            let junk = b"{\"id\": \"ev-junk\", \"type\": ".to_vec();
            (deliver(admin, junk.clone(), Some(&sign(&junk))).await, 400)
        },
        {
            let big = vec![b' '; 65 * 1024];
            (deliver(admin, big.clone(), Some(&sign(&big))).await, 413)
        },
    ];
    for ((status, body), want) in refused {
        assert_eq!(status, want, "{body}");
    }
    // A well-signed event of another type: accepted, nothing purged.
    let other = event("ev-2", "user.profile.updated", "user-alice", unix_now());
    let (status, body) = deliver(admin, other.clone(), Some(&sign(&other))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(bearer_user().await, ["user-alice"]);
    assert_eq!(calls(), 3, "nothing was purged");

    // The real thing: both of Alice's answers go, Bob's stays.
    let (status, body) = deliver(admin, disable.clone(), Some(&good)).await;
    assert_eq!((status, body.trim()), (200, r#"{"purged":2,"users":1}"#));
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(calls(), 4, "the cookie session was resolved afresh");
    assert_eq!(bearer_user().await, ["user-alice"]);
    assert_eq!(calls(), 5, "the bearer token was resolved afresh");
    assert_eq!(user_of(proxy, "session=sess-bob").await, ["user-bob"]);
    assert_eq!(calls(), 5, "Bob's answer stayed");

    // The same delivery replayed: ignored.
    let (status, body) = deliver(admin, disable, Some(&good)).await;
    assert_eq!((status, body.trim()), (200, r#"{"ignored":"replay"}"#));
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(calls(), 5);

    let text = scrape(admin).await;
    for (series, want) in [
        (
            "authgate_webhook_rejections_total{reason=\"missing_signature\"}",
            1.0,
        ),
        (
            "authgate_webhook_rejections_total{reason=\"bad_signature\"}",
            3.0,
        ),
        ("authgate_webhook_rejections_total{reason=\"stale\"}", 1.0),
        (
            "authgate_webhook_rejections_total{reason=\"malformed\"}",
            1.0,
        ),
        (
            "authgate_webhook_rejections_total{reason=\"too_large\"}",
            1.0,
        ),
        ("authgate_webhook_events_total{result=\"purged\"}", 1.0),
        ("authgate_webhook_events_total{result=\"replayed\"}", 1.0),
        ("authgate_webhook_events_total{result=\"ignored\"}", 1.0),
        ("authgate_cache_purges_total{cause=\"webhook\"}", 1.0),
        ("authgate_cache_purges_total{cause=\"admin_user\"}", 0.0),
    ] {
        assert_eq!(metric(&text, series), want, "{series}");
    }
    for cause in [
        "admin_credential",
        "admin_user",
        "admin_flush",
        "webhook",
        "logout",
    ] {
        assert!(
            text.contains(&format!("authgate_cache_purges_total{{cause=\"{cause}\"}}")),
            "purges by {cause} are exposed"
        );
    }

    // Only POST; and the admin token is not what authenticates it.
    let r = client()
        .get(format!("http://{admin}/hooks/authgear"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = client()
        .post(format!("http://{admin}/hooks/authgear"))
        .bearer_auth(ADMIN_TOKEN)
        .body(event("ev-3", "user.deleted", "user-bob", unix_now()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(user_of(proxy, "session=sess-bob").await, ["user-bob"]);
    assert_eq!(calls(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_secret_the_webhook_is_off() {
    let s = Stack::builder().admin().start().await;
    let admin = s.admin();
    let body = event("ev-x", "user.deleted", "user-bob", unix_now());
    let (status, text) = deliver(admin, body.clone(), Some(&sign(&body))).await;
    assert_eq!(status, 404, "{text}");
}

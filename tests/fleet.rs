//! Fleet mode, end to end: several authgate processes, one real redis-server, one stand-in
//! resolver counting calls across all of them. Purges travel on the bus, answers are shared
//! through Redis, and nothing forged in Redis is ever served; Redis down or slow never fails
//! or stalls a request.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::devserver::echo;
use common::redis::*;
use common::*;

const ALICE: &str = "session=sess-alice";
const BOB: &str = "session=sess-bob";

/// Waits (at most `limit`) until `cond` holds.
async fn until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The keys matching `pattern` in the test's Redis.
fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    let mut keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis.connection())
        .expect("KEYS");
    keys.sort();
    keys
}

/// The one shared answer entry (`<prefix>a:<64 hex>`) in Redis.
fn only_entry(redis: &RedisServer, prefix: &str) -> String {
    let keys = keys(redis, &format!("{prefix}a:*"));
    assert_eq!(keys.len(), 1, "one cached session, one entry: {keys:?}");
    let hex = &keys[0][prefix.len() + 2..];
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "entry key {}",
        keys[0]
    );
    keys[0].clone()
}

/// Sets `key` to `value`, keeping the time to live it has (or `ttl_of`'s when it has none).
fn overwrite(redis: &RedisServer, key: &str, value: &[u8], ttl_of: &str) {
    let mut con = redis.connection();
    let mut pttl: i64 = ::redis::cmd("PTTL").arg(key).query(&mut con).expect("PTTL");
    if pttl <= 0 {
        pttl = ::redis::cmd("PTTL")
            .arg(ttl_of)
            .query(&mut con)
            .expect("PTTL");
    }
    assert!(pttl > 0, "shared entries expire ({key}: PTTL {pttl})");
    let () = ::redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(pttl)
        .query(&mut con)
        .expect("SET");
}

fn get(redis: &RedisServer, key: &str) -> Vec<u8> {
    ::redis::cmd("GET")
        .arg(key)
        .query(&mut redis.connection())
        .expect("GET")
}

/// Publishes `message` on the bus; how many subscribers received it.
fn publish(redis: &RedisServer, channel: &str, message: &[u8]) -> i64 {
    ::redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query(&mut redis.connection())
        .expect("PUBLISH")
}

fn replace(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = hay.to_vec();
    let mut at = 0;
    while let Some(i) = find(&out[at..], from) {
        out[at + i..at + i + to.len()].copy_from_slice(to);
        at += i + to.len();
    }
    out
}

/// Purges and flushes travel: a purge by cookie on A, by user on B, a flush on A; each reaches
/// the other instance, and what it dropped is not served from Redis either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_on_one_instance_reaches_the_others() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url()).start().await;
    let (a, b) = (0, 1);
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Shared);
    fleet.resolve(b, BOB, "user-bob").await;
    assert_eq!(fleet.lookup(a, BOB, "user-bob").await, Lookup::Shared);
    for i in [a, b] {
        assert_eq!(fleet.lookup(i, ALICE, "user-alice").await, Lookup::Local);
        assert_eq!(fleet.lookup(i, BOB, "user-bob").await, Lookup::Local);
    }
    assert_eq!(fleet.resolver_calls(), 2);

    // By cookie, on A.
    let (status, body) = fleet
        .admin_post(a, "/cache/purge", r#"{"cookie":"session=sess-alice"}"#)
        .await;
    assert_eq!((status, body.trim()), (200, r#"{"purged":true}"#));
    fleet.reaches(a, BUS_SENT, 1.0).await;
    fleet.reaches(b, BUS_APPLIED, 1.0).await;
    fleet.resolve(b, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, BOB, "user-bob").await, Lookup::Local);
    // A dropped its own answer too.
    assert_ne!(fleet.lookup(a, ALICE, "user-alice").await, Lookup::Local);
    assert_eq!(fleet.lookup(a, BOB, "user-bob").await, Lookup::Local);
    assert_eq!(fleet.metric(a, BUS_APPLIED).await, 0.0, "A's own message");

    // By user, on B.
    let (status, body) = fleet
        .admin_post(b, "/cache/purge", r#"{"user_id":"user-alice"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    fleet.reaches(a, BUS_APPLIED, 1.0).await;
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(a, BOB, "user-bob").await, Lookup::Local);

    // A flush, on A: B drops everything it holds.
    let (status, body) = fleet.admin_post(a, "/cache/flush", "").await;
    assert_eq!(status, 200, "{body}");
    fleet.reaches(b, BUS_APPLIED, 2.0).await;
    assert_ne!(fleet.lookup(b, BOB, "user-bob").await, Lookup::Local);
    assert_ne!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Local);
}

const WEBHOOK_SECRET: &str = "whsec-0123456789abcdef-authgate-fleet";

fn sign(body: &[u8]) -> String {
    webhook_signature(WEBHOOK_SECRET, body)
}

/// An Authgear webhook delivered to A: B and C drop the user's answers too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_one_instance_reaches_all() {
    let redis = RedisServer::start();
    let builder = Fleet::builder(&redis.url()).nodes(3);
    let secret = builder.file("webhook-secret", &format!("{WEBHOOK_SECRET}\n"));
    let fleet = builder
        .admin_keys(&format!(
            "webhook:\n  secret_file: {}\n  max_age: 5m\n",
            secret.display()
        ))
        .start()
        .await;
    fleet.resolve(0, ALICE, "user-alice").await;
    fleet.resolve(1, BOB, "user-bob").await;
    for i in 0..3 {
        assert_ne!(fleet.lookup(i, ALICE, "user-alice").await, Lookup::Resolved);
        assert_ne!(fleet.lookup(i, BOB, "user-bob").await, Lookup::Resolved);
        assert_eq!(fleet.lookup(i, ALICE, "user-alice").await, Lookup::Local);
    }
    assert_eq!(fleet.resolver_calls(), 2);

    let body = user_disabled("ev-fleet-1", "user-alice");
    let r = client()
        .post(format!("http://{}/hooks/authgear", fleet.admin(0)))
        .header("content-type", "application/json")
        .header("x-authgear-body-signature", sign(&body))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    assert_eq!(status, 200, "{}", r.text().await.unwrap());
    fleet.reaches(1, BUS_APPLIED, 1.0).await;
    fleet.reaches(2, BUS_APPLIED, 1.0).await;
    // Alice's answer in Redis went with the purge: the first to ask calls the resolver, and no
    // instance serves its own copy any more.
    fleet.resolve(2, ALICE, "user-alice").await;
    for i in 0..2 {
        assert_ne!(fleet.lookup(i, ALICE, "user-alice").await, Lookup::Local);
    }
    for i in 0..3 {
        assert_eq!(fleet.lookup(i, BOB, "user-bob").await, Lookup::Local);
    }
}

/// A logout route on B: A drops the session's answer and does not find it in Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_on_one_instance_reaches_the_others() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .routes(
            r#"
            - path: /
              upstream: app
            - path: /logout
              upstream: app
              logout: true
            "#,
        )
        .start()
        .await;
    let (a, b) = (0, 1);
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Shared);
    fleet.resolve(b, BOB, "user-bob").await;
    assert_eq!(fleet.lookup(a, BOB, "user-bob").await, Lookup::Shared);
    assert_eq!(fleet.lookup(a, ALICE, "user-alice").await, Lookup::Local);

    let r = client()
        .post(fleet.node(b).proxy.url("/logout"))
        .header("cookie", ALICE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    fleet.reaches(b, BUS_SENT, 1.0).await;
    fleet.reaches(a, BUS_APPLIED, 1.0).await;
    assert_eq!(
        fleet
            .metric(b, r#"authgate_cache_purges_total{cause="logout"}"#)
            .await,
        1.0
    );
    assert_eq!(fleet.lookup(a, ALICE, "user-alice").await, Lookup::Resolved);
    assert_eq!(fleet.lookup(a, BOB, "user-bob").await, Lookup::Local);
}

/// A session resolved on A is a shared hit on B, then a local hit: one resolver call in all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_resolved_on_one_instance_is_a_hit_on_another() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url()).access_log().start().await;
    let (a, b) = (0, 1);
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Shared);
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Local);
    assert_eq!(fleet.lookup(a, ALICE, "user-alice").await, Lookup::Local);
    assert_eq!(fleet.resolver_calls(), 1);
    for (i, series, want) in [
        (a, SHARED_MISS, 1.0),
        (a, SHARED_HIT, 0.0),
        (a, SHARED_WRITES, 1.0),
        (b, SHARED_HIT, 1.0),
        (b, SHARED_WRITES, 0.0),
        (b, SHARED_REJECTED, 0.0),
        (b, SHARED_ERROR, 0.0),
    ] {
        assert_eq!(fleet.metric(i, series).await, want, "{series} on {i}");
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let lines = fleet.access_log(b);
        if lines.len() >= 2 {
            break lines;
        }
        assert!(Instant::now() < deadline, "B's access log: {lines:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(lines[0]["cache"], "shared", "{}", lines[0]);
    assert_eq!(lines[0]["user_id"], "user-alice", "{}", lines[0]);
    assert_eq!(lines[1]["cache"], "hit", "{}", lines[1]);
    // The admin's cache stats carry the fleet's state too.
    let stats = admin_get(fleet.admin(b), "/cache/stats").await;
    assert_eq!(stats["fleet"]["up"], true, "{stats}");
    assert_eq!(stats["fleet"]["prefix"], "authgate:", "{stats}");
    assert_eq!(stats["fleet"]["lookups"]["hit"], 1, "{stats}");
}

/// A herd for one never-seen session, split over two instances: one resolver call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_over_two_instances_makes_one_call() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .resolver_latency(Duration::from_millis(100))
        .timeout("1s")
        .start()
        .await;
    let urls = (0..20).map(|n| fleet.node(n % 2).proxy.url("/")).collect();
    herd_as(urls, ALICE, "user-alice").await;
    assert_eq!(fleet.resolver_calls(), 1, "one call for the whole fleet");
}

/// What arrives on the bus unsigned, wrongly signed, altered or replayed changes nothing and
/// is counted as rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_or_replayed_bus_messages_change_nothing() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .prefix("fleet-six:")
        .start()
        .await;
    let (a, b) = (0, 1);
    let channel = fleet.channel();

    // A real message, as A sends it: a flush, caught on the bus.
    let mut con = redis.connection();
    let mut bus = con.as_pubsub();
    bus.subscribe(&channel).expect("SUBSCRIBE");
    bus.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let (status, body) = fleet.admin_post(a, "/cache/flush", "").await;
    assert_eq!(status, 200, "{body}");
    let flush = bus
        .get_message()
        .expect("A's flush on the bus")
        .get_payload_bytes()
        .to_vec();
    drop(bus);
    drop(con);
    fleet.reaches(b, BUS_APPLIED, 1.0).await;
    let text = String::from_utf8(flush.clone()).expect("a text message");
    let (mac, json) = text.split_once('.').expect("<hmac>.<json>");
    assert!(
        !mac.is_empty() && mac.bytes().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    serde_json::from_str::<serde_json::Value>(json).expect("JSON after the dot");

    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Shared);
    let flipped = {
        let mut m = mac.as_bytes().to_vec();
        m[0] = if m[0] == b'0' { b'1' } else { b'0' };
        format!("{}.{json}", String::from_utf8(m).unwrap())
    };
    let forged: Vec<Vec<u8>> = vec![
        b"garbage".to_vec(),
        br#"deadbeef.{"op":"flush"}"#.to_vec(),
        // The real message with a wrong MAC, and with its JSON altered under the real MAC.
        flipped.into_bytes(),
        format!("{mac}.{json} ").into_bytes(),
        // The real message again.
        flush,
    ];
    for m in &forged {
        let listeners = publish(&redis, &channel, m);
        assert!(listeners >= 2, "both instances listen ({listeners})");
    }
    fleet.reaches(b, BUS_REJECTED, forged.len() as f64).await;
    // A ignores its own message, or counts it as a replay.
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.metric(a, BUS_REJECTED).await < 4.0 {
        assert!(Instant::now() < deadline, "A rejected the forged messages");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in [a, b] {
        assert_eq!(fleet.lookup(i, ALICE, "user-alice").await, Lookup::Local);
    }
    assert_eq!(fleet.metric(b, BUS_APPLIED).await, 1.0);
    assert_eq!(fleet.metric(a, BUS_APPLIED).await, 0.0);
    assert!(fleet.metric(a, BUS_REJECTED).await <= 5.0);
    assert_eq!(fleet.resolver_calls(), 1);
}

/// An entry altered in Redis, or another session's entry under this session's key, is never
/// served: the instance asks the resolver and gets the real identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_shared_entry_is_never_served() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url()).nodes(3).start().await;
    let prefix = fleet.prefix.clone();
    fleet.resolve(0, ALICE, "user-alice").await;
    let alice_key = only_entry(&redis, &prefix);
    let value = get(&redis, &alice_key);
    assert!(
        find(&value, b"user-alice").is_some(),
        "the identity is in the entry as plain bytes"
    );
    overwrite(
        &redis,
        &alice_key,
        &replace(&value, b"user-alice", b"user-mallo"),
        &alice_key,
    );
    assert_eq!(fleet.lookup(1, ALICE, "user-alice").await, Lookup::Resolved);
    assert_eq!(fleet.metric(1, SHARED_REJECTED).await, 1.0);

    // Bob's entry, copied under Alice's key.
    fleet.resolve(0, BOB, "user-bob").await;
    let entries = keys(&redis, &format!("{prefix}a:*"));
    assert_eq!(entries.len(), 2, "{entries:?}");
    let bob_key = entries.iter().find(|k| **k != alice_key).unwrap().clone();
    overwrite(&redis, &alice_key, &get(&redis, &bob_key), &bob_key);
    assert_eq!(fleet.lookup(2, ALICE, "user-alice").await, Lookup::Resolved);
    assert_eq!(fleet.metric(2, SHARED_REJECTED).await, 1.0);
    // Bob's own entry is fine where it belongs.
    assert_eq!(fleet.lookup(2, BOB, "user-bob").await, Lookup::Shared);
}

const SESSIONS: [(&str, &str); 4] = [
    ("session=sess-alice", "user-alice"),
    ("session=sess-bob", "user-bob"),
    ("app_session=tok-alice", "user-alice"),
    ("app_session=tok-bob", "user-bob"),
];

/// Traffic against every instance: known sessions and, every fifth request, a new unknown
/// one (a resolver call); every answer must be the backend's with the right identity.
struct Load {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Load {
    fn start(fleet: &Fleet, per_instance: usize) -> Load {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for t in 0..fleet.nodes.len() * per_instance {
            let url = fleet.node(t % fleet.nodes.len()).proxy.url("/");
            let (done, stop) = (done.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let c = client();
                let mut failed = Vec::new();
                let end = Instant::now() + Duration::from_secs(30);
                let mut n = 0;
                while !stop.load(Ordering::SeqCst) && Instant::now() < end {
                    let (cookie, user) = if n % 5 == 4 {
                        (format!("session=unknown-{t}-{n}"), "")
                    } else {
                        let (k, u) = SESSIONS[(n + t) % SESSIONS.len()];
                        (k.to_string(), u)
                    };
                    n += 1;
                    let answer = match c.get(&url).header("cookie", &cookie).send().await {
                        Ok(r) => (r.status(), r.text().await.unwrap_or_default()),
                        Err(e) => {
                            failed.push(format!("{cookie}: {e:?}"));
                            done.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                    };
                    done.fetch_add(1, Ordering::SeqCst);
                    if answer.0 != 200 {
                        failed.push(format!("{cookie}: {} {}", answer.0, answer.1));
                        continue;
                    }
                    let Ok(e) = serde_json::from_str::<echo::Echo>(&answer.1) else {
                        failed.push(format!("{cookie}: not an echo: {}", answer.1));
                        continue;
                    };
                    let want: Vec<&str> = if user.is_empty() { vec![] } else { vec![user] };
                    if e.header_values("x-authgear-user-id") != want {
                        failed.push(format!(
                            "{cookie}: identity {:?}",
                            e.header_values("x-authgear-user-id")
                        ));
                    }
                }
                failed
            }));
        }
        Load { done, stop, tasks }
    }

    /// Waits until `more` further requests have completed.
    async fn runs(&self, more: u64) {
        let done = self.done.clone();
        let target = done.load(Ordering::SeqCst) + more;
        until(
            &format!("{more} more requests"),
            Duration::from_secs(10),
            || done.load(Ordering::SeqCst) >= target,
        )
        .await;
    }

    async fn no_failures(self) -> u64 {
        self.stop.store(true, Ordering::SeqCst);
        let mut failed = Vec::new();
        for t in self.tasks {
            failed.extend(t.await.expect("load task"));
        }
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        self.done.load(Ordering::SeqCst)
    }
}

/// Redis killed under traffic, then back on the same port: no request fails, the instances
/// reconnect, and the bus works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_traffic_fails_no_request() {
    let mut redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url()).start().await;
    let (a, b) = (0, 1);
    let load = Load::start(&fleet, 2);
    load.runs(100).await;
    redis.kill();
    for i in [a, b] {
        fleet.reaches(i, FLEET_UP, 0.0).await;
    }
    load.runs(100).await;
    redis.restart();
    for i in [a, b] {
        fleet.reaches(i, FLEET_UP, 1.0).await;
    }
    load.runs(100).await;
    let total = load.no_failures().await;
    for i in [a, b] {
        // Purges sent while it was away may have been missed: it dropped what it held.
        assert!(fleet.metric(i, "authgate_fleet_resyncs_total").await >= 1.0);
    }
    assert!(total >= 300, "{total} requests");
    // One line per state change, whatever the number of requests or reconnection attempts.
    for i in [a, b] {
        let log = fleet.node(i).proxy.log();
        assert_eq!(log.matches("fleet: lost Redis").count(), 1, "{log}");
        assert!(
            log.matches("fleet: cannot reach Redis").count() <= 1,
            "{log}"
        );
        assert!(!log.contains("fleet: Redis error"), "{log}");
    }

    let applied = fleet.metric(b, BUS_APPLIED).await;
    let (status, body) = fleet
        .admin_post(a, "/cache/purge", r#"{"cookie":"session=sess-alice"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    fleet.reaches(b, BUS_APPLIED, applied + 1.0).await;
    assert_ne!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Local);
}

/// Redis made very slow after start: requests with new sessions do not wait for it beyond
/// `fleet.timeout`, and are answered correctly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_does_not_hold_requests() {
    let redis = RedisServer::start();
    let slow = DelayProxy::start(redis.addr()).await;
    let fleet = Fleet::builder(&slow.url()).timeout("50ms").start().await;
    let (a, b) = (0, 1);
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Shared);

    slow.set_delay(Duration::from_millis(2000));
    for (i, cookie, user) in [
        (a, BOB, "user-bob"),
        (b, BOB, "user-bob"),
        (a, "app_session=tok-alice", "user-alice"),
        (b, "app_access_token=tok-bob", "user-bob"),
        (a, "session=nobody-1", ""),
        (b, "session=nobody-2", ""),
        (a, ALICE, "user-alice"),
        (b, ALICE, "user-alice"),
    ] {
        let started = Instant::now();
        let e = get_as(&fleet.node(i).proxy, "/", cookie).await;
        let took = started.elapsed();
        let want: Vec<&str> = if user.is_empty() { vec![] } else { vec![user] };
        assert_eq!(
            e.header_values("x-authgear-user-id"),
            want,
            "{cookie} on {i}"
        );
        assert!(
            took < Duration::from_secs(1),
            "{cookie} on instance {i} took {took:?} with Redis 2 s slow and fleet.timeout 50ms"
        );
    }
}

/// Redis down when the instance starts: it serves from its resolver and cache, reports the
/// fleet down, and joins once Redis appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_serves_normally() {
    let port = closed_port();
    let fleet = Fleet::builder(&format!("redis://{port}/0"))
        .nodes(1)
        .without_waiting_for_redis()
        .start()
        .await;
    let proxy = &fleet.node(0).proxy;
    for (cookie, user) in [
        (ALICE, "user-alice"),
        (ALICE, "user-alice"),
        (BOB, "user-bob"),
    ] {
        let started = Instant::now();
        assert_eq!(user_of(proxy, cookie).await, [user]);
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_eq!(fleet.resolver_calls(), 2, "the second request was a hit");
    let text = scrape(fleet.admin(0)).await;
    assert!(
        text.lines().any(|l| l == "authgate_fleet_up 0"),
        "authgate_fleet_up is exposed as 0:\n{text}"
    );

    let _redis = RedisServer::start_on(port.port());
    fleet.reaches(0, FLEET_UP, 1.0).await;
    assert_eq!(user_of(proxy, ALICE).await, ["user-alice"]);
}

/// A reload that moves an instance to another prefix moves it to another fleet: it
/// subscribes to the other channel and no longer takes the first fleet's answers; moved back,
/// it takes them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_an_instance_between_fleets() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url()).start().await;
    let (a, b) = (0, 1);
    let subscribers = |channel: &str| -> i64 {
        let (_, n): (String, i64) = ::redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query(&mut redis.connection())
            .expect("PUBSUB NUMSUB");
        n
    };
    let original = fleet.node(b).config.render();
    let moved = original.replace("prefix: \"authgate:\"", "prefix: \"elsewhere:\"");
    assert_ne!(moved, original, "the test's config names its prefix");

    fleet.node(b).proxy.rewrite(&moved);
    fleet.node(b).proxy.signal("HUP");
    until(
        "B subscribed to elsewhere:bus",
        Duration::from_secs(10),
        || subscribers("elsewhere:bus") == 1 && subscribers("authgate:bus") == 1,
    )
    .await;
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(
        fleet.lookup(b, ALICE, "user-alice").await,
        Lookup::Resolved,
        "another fleet's answers are not B's"
    );

    fleet.node(b).proxy.rewrite(&original);
    fleet.node(b).proxy.signal("HUP");
    until("B back on authgate:bus", Duration::from_secs(10), || {
        subscribers("elsewhere:bus") == 0 && subscribers("authgate:bus") == 2
    })
    .await;
    // Set once the new subscription has its connection (after the old fleet's went).
    fleet.reaches(b, FLEET_UP, 1.0).await;
    fleet.resolve(a, BOB, "user-bob").await;
    assert_eq!(fleet.lookup(b, BOB, "user-bob").await, Lookup::Shared);
}

/// Refresh-ahead across a fleet: an instance due to refresh takes an answer another instance
/// resolved within `refresh_after` from Redis, instead of asking the resolver again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_refreshes_a_session_once_a_period() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .cache("cache:\n  ttl: 10m\n  refresh_after: 1s\n")
        .start()
        .await;
    let (a, b) = (0, 1);
    fleet.resolve(a, ALICE, "user-alice").await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Shared);
    // Both answers become due for a refresh: the period itself is what is tested.
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    // A's hit is served from its cache and refreshes through the resolver, writing through.
    let writes = fleet.metric(a, SHARED_WRITES).await;
    let e = get_as(&fleet.node(a).proxy, "/", ALICE).await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-alice"]);
    fleet.reaches(a, SHARED_WRITES, writes + 1.0).await;
    assert_eq!(fleet.resolver_calls(), 2);

    // B's hit refreshes from A's fresh answer in Redis.
    let hits = fleet.metric(b, SHARED_HIT).await;
    let e = get_as(&fleet.node(b).proxy, "/", ALICE).await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-alice"]);
    fleet.reaches(b, SHARED_HIT, hits + 1.0).await;
    fleet
        .reaches(b, "authgate_cache_refreshes_total", 1.0)
        .await;
    assert_eq!(
        fleet.resolver_calls(),
        2,
        "B's refresh asked nobody but Redis"
    );
}

/// `shared_cache: false`: the bus only. Each instance resolves for itself and Redis holds no
/// answer, but purges still reach every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_shared_cache_purges_still_travel() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .fleet_keys("shared_cache: false")
        .start()
        .await;
    let (a, b) = (0, 1);
    assert_eq!(fleet.lookup(a, ALICE, "user-alice").await, Lookup::Resolved);
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Resolved);
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Local);
    assert!(
        keys(&redis, "authgate:*").is_empty(),
        "no answer is written to Redis"
    );
    let (status, body) = fleet
        .admin_post(a, "/cache/purge", r#"{"cookie":"session=sess-alice"}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    fleet.reaches(b, BUS_APPLIED, 1.0).await;
    assert_eq!(fleet.lookup(b, ALICE, "user-alice").await, Lookup::Resolved);
    for i in [a, b] {
        assert_eq!(fleet.metric(i, SHARED_HIT).await, 0.0);
        assert_eq!(fleet.metric(i, SHARED_WRITES).await, 0.0);
    }
}

/// A response-cache purge on one instance drops the object on the others too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_purge_on_one_instance_reaches_the_others() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .routes(CACHED_STATIC)
        .start()
        .await;
    let target = "/static/x?h-cache-control=public%2C%20max-age%3D60";
    let seq = |i: usize| {
        let url = fleet.node(i).proxy.url(target);
        async move { send_echo(client().get(url)).await.seq }
    };
    let (a, b) = (seq(0).await, seq(1).await);
    assert_eq!((seq(0).await, seq(1).await), (a, b), "not stored on both");
    let body = format!(r#"{{"url":"http://127.0.0.1{target}"}}"#);
    let (status, answer) = fleet.admin_post(0, "/cache/purge", &body).await;
    assert_eq!((status, answer.trim()), (200, r#"{"purged":1}"#));
    fleet.reaches(1, BUS_APPLIED, 1.0).await;
    assert!(seq(1).await > b, "B still serves the purged object");
    assert!(seq(0).await > a, "A still serves the purged object");
}

/// RFC 9111 §4.4 in a fleet: a successful write through one instance invalidates the URL's
/// stored response on the others too (through the bus, like an admin purge), so a client
/// whose next read lands on another instance does not read what it just replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_invalidates_the_others() {
    let redis = RedisServer::start();
    let fleet = Fleet::builder(&redis.url())
        .routes(CACHED_STATIC)
        .start()
        .await;
    let target = "/static/w?h-cache-control=public%2C%20max-age%3D60";
    let seq = |i: usize| {
        let url = fleet.node(i).proxy.url(target);
        async move { send_echo(client().get(url)).await.seq }
    };
    let (a, b) = (seq(0).await, seq(1).await);
    assert_eq!((seq(0).await, seq(1).await), (a, b), "not stored on both");
    let write = send_echo(client().post(fleet.node(0).proxy.url(target))).await;
    assert!(write.seq > b);
    fleet.reaches(1, BUS_APPLIED, 1.0).await;
    assert!(
        seq(1).await > write.seq,
        "B still serves the replaced object"
    );
    assert!(
        seq(0).await > write.seq,
        "A still serves the replaced object"
    );
}

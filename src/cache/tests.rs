//! Unit tests of `cache`.

use super::*;
use crate::credentials::CacheKey;
use crate::identity::{Identity, Namespace, SessionState};
use futures_util::future::{BoxFuture, FutureExt};
use std::sync::atomic::{AtomicUsize, Ordering};

fn settings() -> CacheSettings {
    CacheSettings {
        capacity: 1000,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(10),
        lock_timeout: Duration::from_secs(5),
        stale_if_error: Duration::ZERO,
        refresh_after: Duration::ZERO,
    }
}

fn key(n: u8, has_credentials: bool) -> CacheKey {
    CacheKey {
        digest: [n; 32],
        has_credentials,
    }
}

fn identity(valid: Option<bool>) -> Answer {
    let mut h = http::HeaderMap::new();
    if let Some(v) = valid {
        h.insert(
            "x-authgear-session-valid",
            http::HeaderValue::from_static(if v { "true" } else { "false" }),
        );
        h.insert("x-authgear-user-id", http::HeaderValue::from_static("u1"));
    }
    Answer::Identity(Arc::new(
        Identity::from_headers(&h, &Namespace::new("x-authgear-")).unwrap(),
    ))
}

/// A fetch that counts its calls and answers `answer` after `delay`.
fn counting(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    answer: Result<Answer, ()>,
) -> impl FnOnce() -> BoxFuture<'static, Result<Answer, ResolveError>> + Send + 'static {
    let calls = calls.clone();
    move || {
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            answer.map_err(|()| ResolveError::Timeout("test".into()))
        }
        .boxed()
    }
}

/// Resolves `k` with a fetch that answers `valid` at once (counted in `calls`); the outcome must
/// be an answer. How it was obtained.
async fn resolve_ok(
    cache: &Arc<Cache>,
    calls: &Arc<AtomicUsize>,
    k: &CacheKey,
    valid: Option<bool>,
) -> Lookup {
    let (outcome, lookup) = cache
        .resolve(k, counting(calls, Duration::ZERO, Ok(identity(valid))))
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    lookup
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_call() {
    let cache = Cache::new(settings());
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (cache, f) = (
                cache.clone(),
                counting(&calls, Duration::from_millis(50), Ok(identity(Some(true)))),
            );
            tokio::spawn(async move { cache.resolve(&key(1, true), f).await })
        })
        .collect();
    let mut lookups = HashMap::new();
    for t in tasks {
        let (outcome, lookup) = t.await.unwrap();
        assert!(matches!(outcome, Ok(Answer::Identity(_))));
        *lookups.entry(lookup).or_insert(0) += 1;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(lookups.get(&Lookup::Miss), Some(&1));
    assert_eq!(cache.stats().size.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_shared_and_never_cached() {
    let cache = Cache::new(settings());
    let calls = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let (cache, f) = (
                cache.clone(),
                counting(&calls, Duration::from_millis(50), Err(())),
            );
            tokio::spawn(async move { cache.resolve(&key(2, true), f).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().0.is_err());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "waiters share the failure");
    let lookup = resolve_ok(&cache, &calls, &key(2, true), Some(true)).await;
    assert_eq!(
        (lookup, calls.load(Ordering::SeqCst)),
        (Lookup::Miss, 2),
        "the failure was not cached"
    );
}

#[tokio::test]
async fn ttl_by_kind() {
    let cache = Cache::new(CacheSettings {
        negative_ttl: Duration::ZERO,
        ..settings()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        resolve_ok(&cache, &calls, &key(3, true), Some(false)).await;
        resolve_ok(&cache, &calls, &key(4, false), None).await;
        resolve_ok(&cache, &calls, &key(5, true), Some(true)).await;
    }
    // Negative answers are not cached (negative_ttl 0); the valid one is.
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn valid_answer_for_a_key_without_credentials_is_not_cached() {
    let cache = Cache::new(settings());
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        resolve_ok(&cache, &calls, &key(6, false), Some(true)).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_during_a_resolve_keeps_its_answer_out() {
    let cache = Cache::new(settings());
    let (release, wait) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let cache = cache.clone();
        tokio::spawn(async move {
            cache
                .resolve(&key(7, true), move || async move {
                    let _ = wait.await;
                    Ok(identity(Some(true)))
                })
                .await
        })
    };
    // The resolve is registered once the flight exists.
    while cache.flights.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    assert!(cache.purge(&key(7, true), PurgeCause::AdminCredential));
    release.send(()).unwrap();
    assert!(first.await.unwrap().0.is_ok());
    let calls = Arc::new(AtomicUsize::new(0));
    resolve_ok(&cache, &calls, &key(7, true), Some(true)).await;
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the purged resolve's answer was not stored"
    );
}

#[tokio::test]
async fn purge_and_flush() {
    let cache = Cache::new(settings());
    let calls = Arc::new(AtomicUsize::new(0));
    for n in [8, 9] {
        resolve_ok(&cache, &calls, &key(n, true), Some(true)).await;
    }
    assert!(cache.purge(&key(8, true), PurgeCause::AdminCredential));
    assert!(!cache.purge(&key(8, true), PurgeCause::AdminCredential));
    assert_eq!(
        cache
            .resolve(&key(9, true), counting(&calls, Duration::ZERO, Err(())))
            .await
            .1,
        Lookup::Hit
    );
    assert_eq!(cache.flush(), 1);
    assert_eq!(
        resolve_ok(&cache, &calls, &key(9, true), Some(true)).await,
        Lookup::Miss
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn purge_by_user_drops_all_their_sessions_and_only_theirs() {
    let cache = Cache::new(settings());
    let calls = Arc::new(AtomicUsize::new(0));
    let with_user = |user: &'static str| {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-authgear-session-valid",
            http::HeaderValue::from_static("true"),
        );
        h.insert("x-authgear-user-id", http::HeaderValue::from_static(user));
        Answer::Identity(Arc::new(
            Identity::from_headers(&h, &Namespace::new("x-authgear-")).unwrap(),
        ))
    };
    for (n, user) in [(20, "u1"), (21, "u1"), (22, "u2")] {
        let a = with_user(user);
        let c = calls.clone();
        let (outcome, _) = cache
            .resolve(&key(n, true), move || async move {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(a)
            })
            .await;
        assert!(outcome.is_ok());
    }
    // Replacing u1's second session with u2's answer moves it in the index.
    cache.purge(&key(21, true), PurgeCause::AdminCredential);
    let a = with_user("u2");
    assert!(cache
        .resolve(&key(21, true), move || async move { Ok(a) })
        .await
        .0
        .is_ok());
    assert_eq!(cache.purge_user("u1", PurgeCause::AdminUser), 1);
    assert_eq!(cache.purge_user("u1", PurgeCause::AdminUser), 0);
    assert_eq!(
        cache.resolve(&key(22, true), std::future::pending).await.1,
        Lookup::Hit
    );
    assert_eq!(
        cache.resolve(&key(21, true), std::future::pending).await.1,
        Lookup::Hit
    );
    assert_eq!(cache.purge_user("u2", PurgeCause::AdminUser), 2);
    assert_eq!(cache.stats().size.load(Ordering::SeqCst), 0);
    assert!(cache.users.lock().unwrap().is_empty());
}

#[tokio::test]
async fn evictions_leave_the_user_index() {
    let cache = Cache::new(CacheSettings {
        capacity: 10,
        ..settings()
    });
    for n in 0..200u8 {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-authgear-session-valid",
            http::HeaderValue::from_static("true"),
        );
        h.insert(
            "x-authgear-user-id",
            http::HeaderValue::from_str(&format!("user-{n}")).unwrap(),
        );
        let a = Answer::Identity(Arc::new(
            Identity::from_headers(&h, &Namespace::new("x-authgear-")).unwrap(),
        ));
        assert!(cache
            .resolve(&key(n, true), move || async move { Ok(a) })
            .await
            .0
            .is_ok());
    }
    let indexed: usize = cache.users.lock().unwrap().values().map(|k| k.len()).sum();
    let size = cache.stats().size.load(Ordering::SeqCst) as usize;
    assert!(
        (1..=10).contains(&size),
        "the store holds at most its capacity: {size}"
    );
    assert_eq!(
        indexed, size,
        "the index holds exactly what the store holds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_resolve_holds_waiters_only_for_lock_timeout() {
    let cache = Cache::new(CacheSettings {
        lock_timeout: Duration::from_millis(100),
        ..settings()
    });
    let stuck = {
        let cache = cache.clone();
        tokio::spawn(async move { cache.resolve(&key(10, true), std::future::pending).await })
    };
    while cache.flights.lock().unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    let calls = Arc::new(AtomicUsize::new(0));
    let lookup = resolve_ok(&cache, &calls, &key(10, true), Some(true)).await;
    assert_eq!((lookup, calls.load(Ordering::SeqCst)), (Lookup::Miss, 1));
    stuck.abort();
}

#[tokio::test]
async fn stale_if_error_serves_an_expired_valid_answer() {
    for (window, expect_stale) in [(Duration::from_secs(10), true), (Duration::ZERO, false)] {
        let cache = Cache::new(CacheSettings {
            ttl: Duration::from_millis(20),
            stale_if_error: window,
            ..settings()
        });
        let calls = Arc::new(AtomicUsize::new(0));
        resolve_ok(&cache, &calls, &key(11, true), Some(true)).await;
        // Let the 20 ms TTL pass: the entry is expired, not gone.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (outcome, lookup) = cache
            .resolve(&key(11, true), counting(&calls, Duration::ZERO, Err(())))
            .await;
        assert_eq!(outcome.is_ok(), expect_stale);
        assert_eq!(lookup == Lookup::Stale, expect_stale);
    }
}

/// A fetch that counts its calls and answers `answer` once `gate` gives it a permit.
fn gated(
    calls: &Arc<AtomicUsize>,
    gate: &Arc<tokio::sync::Semaphore>,
    answer: Result<Answer, ()>,
) -> impl FnOnce() -> BoxFuture<'static, Result<Answer, ResolveError>> + Send + 'static {
    let (calls, gate) = (calls.clone(), gate.clone());
    move || {
        async move {
            calls.fetch_add(1, Ordering::SeqCst);
            if let Ok(permit) = gate.acquire().await {
                permit.forget();
            }
            answer.map_err(|()| ResolveError::Timeout("test".into()))
        }
        .boxed()
    }
}

fn refreshing(refresh_after: Duration) -> Arc<Cache> {
    Cache::new(CacheSettings {
        refresh_after,
        ..settings()
    })
}

/// Waits (bounded) until `done` holds; the background refresh runs on its own task.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Caches a valid answer for `k` (one call counted in `calls`), then waits until it is due for
/// refresh (these tests refresh after 30 ms).
async fn cached_and_due(cache: &Arc<Cache>, calls: &Arc<AtomicUsize>, k: &CacheKey) {
    assert_eq!(resolve_ok(cache, calls, k, Some(true)).await, Lookup::Miss);
    tokio::time::sleep(Duration::from_millis(40)).await;
}

fn session_of(outcome: &Outcome) -> Option<SessionState> {
    match outcome {
        Ok(Answer::Identity(i)) => Some(i.session()),
        _ => None,
    }
}

// The clock is paused: "not due yet" and "within the next period" hold however slow
// the machine is.
#[tokio::test(start_paused = true)]
async fn refresh_ahead_serves_at_once_and_replaces_in_the_background() {
    let cache = refreshing(Duration::from_millis(30));
    let calls = Arc::new(AtomicUsize::new(0));
    let k = key(30, true);
    let open = Arc::new(tokio::sync::Semaphore::new(100));
    let (first, lookup) = cache
        .resolve(&k, gated(&calls, &open, Ok(identity(Some(true)))))
        .await;
    assert_eq!(
        (session_of(&first), lookup),
        (Some(SessionState::Valid), Lookup::Miss)
    );
    // Not due yet: a hit, no call.
    let (_, lookup) = cache
        .resolve(&k, gated(&calls, &open, Ok(identity(Some(false)))))
        .await;
    assert_eq!((lookup, calls.load(Ordering::SeqCst)), (Lookup::Hit, 1));

    tokio::time::sleep(Duration::from_millis(40)).await;
    // Due: the session was revoked meanwhile, and the resolver is stuck until the gate opens.
    // Every hit is served at once from the cache; only one of them starts a refresh.
    let shut = Arc::new(tokio::sync::Semaphore::new(0));
    for _ in 0..20 {
        let hit = tokio::time::timeout(
            Duration::from_secs(2),
            cache.resolve(&k, gated(&calls, &shut, Ok(identity(Some(false))))),
        )
        .await
        .expect("a hit waited for the refresh");
        assert_eq!(
            (session_of(&hit.0), hit.1),
            (Some(SessionState::Valid), Lookup::Hit)
        );
    }
    until("the refresh call", || calls.load(Ordering::SeqCst) == 2).await;
    assert_eq!(cache.stats().refreshes.load(Ordering::SeqCst), 1);
    shut.add_permits(1);
    until("the refresh to land", || {
        cache.stats().refresh_changed.load(Ordering::SeqCst) == 1
    })
    .await;
    // The next request sees the revocation, from the cache.
    let (after, lookup) = cache
        .resolve(&k, gated(&calls, &open, Ok(identity(Some(true)))))
        .await;
    assert_eq!(
        (session_of(&after), lookup),
        (Some(SessionState::Invalid), Lookup::Hit)
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

// The clock is paused: "not due yet" and "within the next period" hold however slow
// the machine is.
#[tokio::test(start_paused = true)]
async fn a_failed_refresh_keeps_the_answer_and_waits_a_period() {
    let cache = refreshing(Duration::from_millis(30));
    let calls = Arc::new(AtomicUsize::new(0));
    let k = key(31, true);
    cached_and_due(&cache, &calls, &k).await;
    let (hit, lookup) = cache
        .resolve(&k, counting(&calls, Duration::ZERO, Err(())))
        .await;
    assert_eq!(
        (session_of(&hit), lookup),
        (Some(SessionState::Valid), Lookup::Hit)
    );
    until("the refresh to fail", || {
        cache.stats().refresh_failed.load(Ordering::SeqCst) == 1
    })
    .await;
    // Within the next period, hits do not call a failing resolver again.
    for _ in 0..10 {
        let (hit, lookup) = cache
            .resolve(&k, counting(&calls, Duration::ZERO, Err(())))
            .await;
        assert_eq!(
            (session_of(&hit), lookup),
            (Some(SessionState::Valid), Lookup::Hit)
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_that_cannot_be_stored_drops_the_answer() {
    // A denial, and an invalid answer with negative answers not cached: either way the valid
    // answer must go, or it would be served until its TTL (and then as stale).
    let denied = Answer::Denied {
        status: 403,
        headers: Vec::new(),
    };
    for (answer, negative_ttl) in [
        (denied, Duration::from_secs(10)),
        (identity(Some(false)), Duration::ZERO),
    ] {
        let cache = Cache::new(CacheSettings {
            refresh_after: Duration::from_millis(30),
            negative_ttl,
            stale_if_error: Duration::from_secs(60),
            ..settings()
        });
        let calls = Arc::new(AtomicUsize::new(0));
        let k = key(32, true);
        cached_and_due(&cache, &calls, &k).await;
        let (outcome, _) = cache
            .resolve(&k, counting(&calls, Duration::ZERO, Ok(answer)))
            .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        until("the refresh to land", || {
            cache.stats().refresh_changed.load(Ordering::SeqCst) == 1
        })
        .await;
        assert_eq!(cache.stats().size.load(Ordering::SeqCst), 0);
        let (outcome, lookup) = cache
            .resolve(&k, counting(&calls, Duration::ZERO, Err(())))
            .await;
        assert_eq!(lookup, Lookup::Miss, "resolved afresh");
        assert!(outcome.is_err(), "and not served stale: {outcome:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_a_user_stops_their_running_refresh() {
    let cache = refreshing(Duration::from_millis(30));
    let calls = Arc::new(AtomicUsize::new(0));
    let k = key(33, true);
    cached_and_due(&cache, &calls, &k).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    // The resolver has not caught up with the account change yet: it still says valid.
    let (outcome, _) = cache
        .resolve(&k, gated(&calls, &gate, Ok(identity(Some(true)))))
        .await;
    assert!(outcome.is_ok(), "{outcome:?}");
    until("the refresh call", || calls.load(Ordering::SeqCst) == 2).await;
    assert_eq!(cache.purge_user("u1", PurgeCause::Webhook), 1);
    gate.add_permits(1);
    until("the refresh to end", || {
        cache.refreshing.load(Ordering::SeqCst) == 0
    })
    .await;
    assert_eq!(
        cache.stats().size.load(Ordering::SeqCst),
        0,
        "not stored again"
    );
    assert_eq!(cache.stats().purges()[3], ("webhook", 1));
}

#[tokio::test]
async fn refresh_is_off_at_zero_and_for_negative_answers() {
    for (refresh_after, valid) in [(Duration::ZERO, true), (Duration::from_millis(10), false)] {
        let cache = refreshing(refresh_after);
        let calls = Arc::new(AtomicUsize::new(0));
        let k = key(34, true);
        resolve_ok(&cache, &calls, &k, Some(valid)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        for _ in 0..5 {
            assert_eq!(
                resolve_ok(&cache, &calls, &k, Some(valid)).await,
                Lookup::Hit
            );
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().refreshes.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn the_user_index_stays_bounded_under_churn() {
    // Many users, answers expiring almost at once and resolved again (replacements), users
    // moving between keys, and evictions: the index never holds more than the store.
    let cache = Cache::new(CacheSettings {
        capacity: 50,
        ttl: Duration::from_millis(1),
        ..settings()
    });
    for round in 0..4u32 {
        for n in 0..250u8 {
            let mut h = http::HeaderMap::new();
            h.insert("x-authgear-session-valid", "true".parse().unwrap());
            let user = format!("user-{}", (u32::from(n) + round * 7) % 300);
            h.insert("x-authgear-user-id", user.parse().unwrap());
            let a = Answer::Identity(Arc::new(
                Identity::from_headers(&h, &Namespace::new("x-authgear-")).unwrap(),
            ));
            let (outcome, _) = cache
                .resolve(&key(n, true), move || async move { Ok(a) })
                .await;
            assert!(outcome.is_ok());
        }
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let indexed: usize = cache.users.lock().unwrap().values().map(|k| k.len()).sum();
    let size = cache.stats().size.load(Ordering::SeqCst) as usize;
    assert!(
        (1..=50).contains(&size),
        "the store holds at most its capacity: {size}"
    );
    assert_eq!(
        indexed, size,
        "the index holds exactly what the store holds"
    );
}

#[tokio::test]
async fn refreshes_are_bounded_overall() {
    let cache = refreshing(Duration::from_millis(30));
    let calls = Arc::new(AtomicUsize::new(0));
    let k = key(35, true);
    cached_and_due(&cache, &calls, &k).await;
    // As many refreshes as allowed are running: a due hit is served and starts none.
    cache.refreshing.store(MAX_REFRESHES, Ordering::SeqCst);
    assert_eq!(
        resolve_ok(&cache, &calls, &k, Some(true)).await,
        Lookup::Hit
    );
    assert_eq!(cache.stats().refreshes.load(Ordering::SeqCst), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(cache.refreshing.load(Ordering::SeqCst), MAX_REFRESHES);
}

/// Every request's future holds `Cache::resolve`'s, and async_trait copies that whole into a box
/// per request: a resolve whose own future is large (the resolver call's is about 11 KiB) must
/// not make the cache's future large, hits included.
#[test]
fn a_large_fetch_does_not_make_the_lookup_future_large() {
    let cache = Cache::new(settings());
    let fetch = || async {
        let state = [7u8; 16 * 1024];
        tokio::task::yield_now().await;
        Ok::<_, ResolveError>(identity(Some(state[100] == 7)))
    };
    let k = key(1, true);
    let future = cache.resolve(&k, fetch);
    let size = std::mem::size_of_val(&future);
    assert!(size < 2048, "Cache::resolve's future is {size} bytes");
}

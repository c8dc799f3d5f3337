//! Unit tests of `cache`.

use super::*;
use crate::identity::Namespace;
use std::sync::atomic::AtomicUsize;

fn settings() -> CacheSettings {
    CacheSettings {
        capacity: 1000,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(10),
        lock_timeout: Duration::from_secs(5),
        stale_if_error: Duration::ZERO,
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
    let (outcome, lookup) = cache
        .resolve(
            &key(2, true),
            counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
        )
        .await;
    assert!(outcome.is_ok());
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
        assert!(cache
            .resolve(
                &key(3, true),
                counting(&calls, Duration::ZERO, Ok(identity(Some(false)))),
            )
            .await
            .0
            .is_ok());
        assert!(cache
            .resolve(
                &key(4, false),
                counting(&calls, Duration::ZERO, Ok(identity(None))),
            )
            .await
            .0
            .is_ok());
        assert!(cache
            .resolve(
                &key(5, true),
                counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
            )
            .await
            .0
            .is_ok());
    }
    // Negative answers are not cached (negative_ttl 0); the valid one is.
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn valid_answer_for_a_key_without_credentials_is_not_cached() {
    let cache = Cache::new(settings());
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..2 {
        assert!(cache
            .resolve(
                &key(6, false),
                counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
            )
            .await
            .0
            .is_ok());
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
    assert!(cache.purge(&key(7, true)));
    release.send(()).unwrap();
    assert!(first.await.unwrap().0.is_ok());
    let calls = Arc::new(AtomicUsize::new(0));
    assert!(cache
        .resolve(
            &key(7, true),
            counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
        )
        .await
        .0
        .is_ok());
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
        assert!(cache
            .resolve(
                &key(n, true),
                counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
            )
            .await
            .0
            .is_ok());
    }
    assert!(cache.purge(&key(8, true)));
    assert!(!cache.purge(&key(8, true)));
    assert_eq!(
        cache
            .resolve(&key(9, true), counting(&calls, Duration::ZERO, Err(())))
            .await
            .1,
        Lookup::Hit
    );
    assert_eq!(cache.flush(), 1);
    assert_eq!(
        cache
            .resolve(
                &key(9, true),
                counting(&calls, Duration::ZERO, Ok(identity(Some(true))))
            )
            .await
            .1,
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
    cache.purge(&key(21, true));
    let a = with_user("u2");
    assert!(cache
        .resolve(&key(21, true), move || async move { Ok(a) })
        .await
        .0
        .is_ok());
    assert_eq!(cache.purge_user("u1"), 1);
    assert_eq!(cache.purge_user("u1"), 0);
    assert_eq!(
        cache.resolve(&key(22, true), std::future::pending).await.1,
        Lookup::Hit
    );
    assert_eq!(
        cache.resolve(&key(21, true), std::future::pending).await.1,
        Lookup::Hit
    );
    assert_eq!(cache.purge_user("u2"), 2);
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
    assert!(size <= 20, "the store is bounded: {size}");
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
    let (outcome, lookup) = cache
        .resolve(
            &key(10, true),
            counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
        )
        .await;
    assert!(outcome.is_ok());
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
        assert!(cache
            .resolve(
                &key(11, true),
                counting(&calls, Duration::ZERO, Ok(identity(Some(true)))),
            )
            .await
            .0
            .is_ok());
        // Let the 20 ms TTL pass: the entry is expired, not gone.
        tokio::time::sleep(Duration::from_millis(40)).await;
        let (outcome, lookup) = cache
            .resolve(&key(11, true), counting(&calls, Duration::ZERO, Err(())))
            .await;
        assert_eq!(outcome.is_ok(), expect_stale);
        assert_eq!(lookup == Lookup::Stale, expect_stale);
    }
}

//! Per-request work authgate adds: settling the canonical request, stripping the identity
//! namespace, reading credentials,
//! deriving the cache key, a cache hit, and injecting an answer. Each is measured next to a
//! baseline from the same run (cloning the request header, which Pingora itself does for
//! every proxied request), so results can be read as ratios on a noisy machine.

use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::http::RequestHeader;

use authgate::cache::{Cache, CacheSettings};
use authgate::credentials::{Credentials, KeyRules};
use authgate::identity::{Answer, Identity, Namespace};
use authgate::request;

// The allocator the authgate binary runs with (src/main.rs), so the figures are its figures.
#[global_allocator]
static GLOBAL: authgate::allocator::MiMalloc = authgate::allocator::MiMalloc;

/// A browser request as it reaches an edge proxy, with two forged identity headers.
fn browser_request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/api/v1/orders?page=2", None).expect("request");
    for (n, v) in [
        ("host", "app.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("referer", "https://app.example.com/orders"),
        ("cookie", "_ga=GA1.1.123456789.1700000000; _ga_X=GS1.1.1700000000.1.1.1700000100.0.0.0; theme=dark; session=7f3a9c2e1b5d4f60.Zk3vQ9pL2mX8rT1yW6nB4cH7jD0sA5eF"),
        ("sec-fetch-site", "same-origin"),
        ("sec-fetch-mode", "cors"),
        ("x-request-id", "3f2b8c1e-9d4a-4e7f-b6a5-1c0d2e3f4a5b"),
        ("x-authgear-user-id", "forged"),
        ("X_Authgear_User_Roles", "admin"),
    ] {
        r.append_header(n.to_string(), v).expect("header");
    }
    r
}

fn valid_identity() -> Arc<Identity> {
    let mut h = http::HeaderMap::new();
    for (n, v) in [
        ("x-authgear-session-valid", "true"),
        ("x-authgear-user-id", "0b9e3c2a-6f41-4d8e-9a7b-5c3d2e1f0a9b"),
        ("x-authgear-user-anonymous", "false"),
        ("x-authgear-user-verified", "true"),
        ("x-authgear-user-can-reauthenticate", "true"),
        ("x-authgear-user-roles", "admin,staff"),
        ("x-authgear-session-amr", "pwd otp"),
        ("x-authgear-session-authenticated-at", "1764300000"),
    ] {
        h.append(n, http::HeaderValue::from_static(v));
    }
    match Answer::from_reply(200, &h, &Namespace::new("x-authgear-")) {
        Ok(Answer::Identity(i)) => i,
        other => panic!("unexpected {other:?}"),
    }
}

fn benches(c: &mut Criterion) {
    let ns = Namespace::new("x-authgear-");
    let req = browser_request();
    let names: Vec<String> = ["session", "app_session", "app_access_token"]
        .map(String::from)
        .to_vec();
    let rules = KeyRules::new(b"myapp.authgearapps.com", "", &names);
    let creds = Credentials::from_request(&req).expect("credentials");
    let key = rules.key(&creds);
    let identity = valid_identity();

    let mut g = c.benchmark_group("hot_path");
    g.bench_function("baseline_request_header_clone", |b| {
        b.iter(|| black_box(req.clone()))
    });
    g.bench_function("canonical_request", |b| {
        b.iter(|| {
            let r = black_box(&req);
            let c = request::settle(r).expect("canonical");
            black_box(request::method_overrides(r, c.query).count());
            black_box(c)
        })
    });
    g.bench_function("strip_identity", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| black_box(ns.strip(r)),
            criterion::BatchSize::SmallInput,
        )
    });
    // A request without forged headers: what the second strip (now skipped for it) cost.
    let clean = {
        let mut r = req.clone();
        ns.strip(&mut r);
        r
    };
    g.bench_function("strip_identity_clean", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |r| black_box(ns.strip(r)),
            criterion::BatchSize::SmallInput,
        )
    });
    g.bench_function("count_request_by_label", |b| {
        b.iter(|| {
            authgate::metrics::METRICS
                .requests
                .with_label_values(&[black_box("app.example.com/api"), "2xx"])
                .inc()
        })
    });
    let counters = authgate::metrics::request_counters("app.example.com/api");
    g.bench_function("count_request_preresolved", |b| {
        b.iter(|| {
            authgate::metrics::count_request(
                Some(black_box(&counters)),
                200,
                black_box(std::time::Duration::from_micros(180)),
            )
        })
    });
    g.bench_function("credentials_from_request", |b| {
        b.iter(|| black_box(Credentials::from_request(black_box(&req))))
    });
    g.bench_function("cache_key", |b| {
        b.iter(|| black_box(rules.key(black_box(&creds))))
    });
    g.bench_function("inject_answer", |b| {
        b.iter_batched_ref(
            || req.clone(),
            |r| {
                r.reserve_headers(identity.header_count());
                for (n, v) in identity.wire_headers() {
                    let _ = n.append_to(r, v);
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cache = Cache::new(CacheSettings {
        capacity: 100_000,
        ttl: Duration::from_secs(600),
        negative_ttl: Duration::from_secs(10),
        lock_timeout: Duration::from_secs(3),
        stale_if_error: Duration::ZERO,
        refresh_after: Duration::from_secs(60),
    });
    let warm = identity.clone();
    let _ = rt.block_on(cache.resolve(&key, move || async move { Ok(Answer::Identity(warm)) }));
    g.bench_function("cache_hit", |b| {
        b.to_async(&rt).iter(|| async {
            let (outcome, lookup) = cache
                .resolve(&key, || async { unreachable!("a hit never fetches") })
                .await;
            black_box((outcome.is_ok(), lookup))
        })
    });
    g.finish();
}

criterion_group!(hot, benches);
criterion_main!(hot);

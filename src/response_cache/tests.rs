//! Unit tests of `response_cache`: the storability rules, the bypass list, the key.

use super::*;

fn route() -> RouteCache {
    RouteCache {
        ttl: Duration::from_secs(60),
        max_ttl: Duration::from_secs(3600),
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
    }
}

fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
    let mut r = ResponseHeader::build(status, None).unwrap();
    for (n, v) in headers {
        r.append_header(n.to_string(), *v).unwrap();
    }
    r
}

/// A request answered at once, now.
fn now() -> Exchange {
    let t = SystemTime::now();
    Exchange {
        request_time: t,
        response_time: t,
    }
}

fn ns() -> Namespace {
    Namespace::new("x-authgear-")
}

/// Seconds of freshness, or `None` when not storable.
fn fresh(policy: Policy, credentials: bool, r: &ResponseHeader) -> Option<u64> {
    match storable(&route(), policy, credentials, &ns(), r, now()) {
        RespCacheable::Cacheable(meta) => Some(meta.fresh_sec()),
        RespCacheable::Uncacheable(_) => None,
    }
}

#[test]
fn public_routes_store_what_the_backend_allows() {
    let p = Policy::Public;
    assert_eq!(
        fresh(p, false, &resp(200, &[("cache-control", "max-age=30")])),
        Some(30)
    );
    // s-maxage wins for a shared cache; the route's max_ttl caps everything.
    assert_eq!(
        fresh(
            p,
            false,
            &resp(200, &[("cache-control", "max-age=30, s-maxage=90")])
        ),
        Some(90)
    );
    assert_eq!(
        fresh(p, false, &resp(200, &[("cache-control", "max-age=99999")])),
        Some(3600)
    );
    // Nothing stated: the route's TTL, for heuristically cacheable statuses only.
    assert_eq!(fresh(p, false, &resp(200, &[])), Some(60));
    assert_eq!(fresh(p, false, &resp(404, &[])), Some(60));
    assert_eq!(fresh(p, false, &resp(302, &[])), None);
    assert_eq!(fresh(p, false, &resp(500, &[])), None);
    for refused in [
        &[("cache-control", "no-store")][..],
        &[("cache-control", "private")],
        &[("cache-control", "private=\"x\", max-age=60")],
        &[
            ("cache-control", "public, max-age=60"),
            ("set-cookie", "a=b"),
        ],
        &[
            ("cache-control", "public, max-age=60"),
            ("vary", "Accept, Cookie"),
        ],
        &[
            ("cache-control", "public, max-age=60"),
            ("vary", "authorization"),
        ],
        &[
            ("cache-control", "public, max-age=60"),
            ("vary", "X-Authgear-User-Id"),
        ],
        &[("cache-control", "public, max-age=60"), ("vary", "*")],
    ] {
        assert_eq!(fresh(p, false, &resp(200, refused)), None, "{refused:?}");
    }
    assert_eq!(
        fresh(p, false, &resp(206, &[("cache-control", "max-age=60")])),
        None
    );
}

#[test]
fn expires_gives_freshness_when_cache_control_does_not() {
    let at = |secs: i64| {
        let t = if secs >= 0 {
            SystemTime::now() + Duration::from_secs(secs as u64)
        } else {
            SystemTime::now() - Duration::from_secs((-secs) as u64)
        };
        httpdate::fmt_http_date(t)
    };
    let p = Policy::Public;
    let in_two_minutes = at(120);
    let fresh_for = fresh(p, false, &resp(200, &[("expires", &in_two_minutes)]));
    assert!(matches!(fresh_for, Some(118..=120)), "{fresh_for:?}");
    // Already past: stored stale, so each use is revalidated.
    let past = at(-60);
    assert_eq!(fresh(p, false, &resp(200, &[("expires", &past)])), Some(0));
    // max-age wins over Expires.
    let both = [
        ("expires", in_two_minutes.as_str()),
        ("cache-control", "max-age=5"),
    ];
    assert_eq!(fresh(p, false, &resp(200, &both)), Some(5));
}

#[test]
fn identity_routes_and_credentials_need_an_explicit_shareable_mark() {
    for (policy, credentials) in [
        (Policy::Identify, false),
        (Policy::Require, true),
        (Policy::Public, true),
    ] {
        let f = |h: &[(&str, &str)]| fresh(policy, credentials, &resp(200, h));
        assert_eq!(f(&[]), None, "{policy:?}: default TTL applied");
        assert_eq!(f(&[("cache-control", "max-age=60")]), None, "{policy:?}");
        assert_eq!(f(&[("cache-control", "public, max-age=60")]), Some(60));
        assert_eq!(f(&[("cache-control", "s-maxage=20")]), Some(20));
        assert_eq!(
            f(&[("cache-control", "public")]),
            Some(60),
            "public, no age: route TTL"
        );
    }
}

#[test]
fn no_cache_and_max_age_zero_are_stored_stale() {
    let r = resp(
        200,
        &[("cache-control", "public, max-age=0"), ("etag", "\"v\"")],
    );
    match storable(&route(), Policy::Public, false, &ns(), &r, now()) {
        RespCacheable::Cacheable(meta) => assert!(!meta.is_fresh(SystemTime::now())),
        RespCacheable::Uncacheable(why) => panic!("not stored: {why:?}"),
    }
}

/// RFC 9111 §4.2.3: the origin's `Age` sets the object's epoch back (Pingora's `age()` is
/// then the current age, and the stored copy keeps no `Age`); §4.2.1: `Expires` minus `Date`;
/// RFC 9213: a valid `CDN-Cache-Control` decides instead of `Cache-Control` and `Expires`,
/// but a refusal in either field holds.
#[test]
fn age_expires_and_targeted_fields_decide_freshness() {
    let stored = |policy: Policy, h: &[(&str, &str)]| match storable(
        &route(),
        policy,
        false,
        &ns(),
        &resp(200, h),
        now(),
    ) {
        RespCacheable::Cacheable(meta) => Some(meta),
        RespCacheable::Uncacheable(_) => None,
    };
    let public = |h: &[(&str, &str)]| stored(Policy::Public, h);
    let old = public(&[("cache-control", "max-age=3600"), ("age", "7200")]).unwrap();
    assert!(!old.is_fresh(SystemTime::now()));
    assert!(old.age() >= Duration::from_secs(7200));
    assert!(old.response_header().headers.get("age").is_none());
    let young = public(&[("cache-control", "max-age=3600"), ("age", "100")]).unwrap();
    assert!(young.is_fresh(SystemTime::now() + Duration::from_secs(3400)));
    assert!(!young.is_fresh(SystemTime::now() + Duration::from_secs(3600)));
    assert!((100..110).contains(&young.age().as_secs()));
    let dated = public(&[
        ("date", "Sun, 06 Nov 1994 08:49:37 GMT"),
        ("expires", "sunday, 06-nov-94 08:50:37 gmt"),
    ])
    .unwrap();
    assert_eq!(dated.fresh_sec(), 60);
    let fresh = |h: &[(&str, &str)]| public(h).map(|m| m.fresh_sec());
    assert_eq!(
        fresh(&[("expires", "0")]),
        Some(0),
        "an invalid Expires has expired"
    );
    let cc0 = ("cache-control", "public, max-age=0");
    assert_eq!(fresh(&[cc0, ("cdn-cache-control", "max-age=60")]), Some(60));
    assert_eq!(fresh(&[cc0, ("cdn-cache-control", "Max-Age=60")]), Some(0));
    assert_eq!(
        fresh(&[("cdn-cache-control", "max-age=60"), ("expires", "0")]),
        Some(60)
    );
    // A valid targeted field without freshness: Expires is ignored too, the route's TTL.
    assert_eq!(
        fresh(&[("cdn-cache-control", "must-revalidate"), ("expires", "0")]),
        Some(60)
    );
    assert_eq!(
        fresh(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "no-store")
        ]),
        None
    );
    assert_eq!(
        fresh(&[
            ("cache-control", "max-age=60"),
            ("cdn-cache-control", "private")
        ]),
        None
    );
    assert_eq!(
        fresh(&[
            ("cache-control", "private"),
            ("cdn-cache-control", "max-age=60")
        ]),
        None
    );
    // must-revalidate in the field that decides: no stale windows.
    let strict = public(&[(
        "cdn-cache-control",
        "max-age=60, must-revalidate, stale-if-error=60",
    )])
    .unwrap();
    assert_eq!(strict.stale_if_error_sec(), 0);
    // Fields a targeted field names in no-cache="..." are not stored, like Cache-Control's.
    let named = public(&[
        ("cdn-cache-control", "max-age=60, no-cache=\"x-secret\""),
        ("x-secret", "s"),
        ("x-kept", "k"),
    ])
    .unwrap();
    assert!(named.response_header().headers.get("x-secret").is_none());
    assert!(named.response_header().headers.get("x-kept").is_some());
    // An identity route shares what either field marks shareable.
    assert!(stored(
        Policy::Identify,
        &[("cdn-cache-control", "public, max-age=60")]
    )
    .is_some());
    assert!(stored(Policy::Identify, &[("cdn-cache-control", "max-age=60")]).is_none());
}

#[test]
fn unkeyed_overrides_and_other_methods_bypass() {
    let req = |method: &str, uri: &str, h: &[(&str, &str)]| {
        let mut r = RequestHeader::build(method, uri.as_bytes(), None).unwrap();
        for (n, v) in h {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    };
    assert_eq!(bypass(&req("GET", "/a", &[])), None);
    assert_eq!(bypass(&req("HEAD", "/a", &[])), None);
    assert_eq!(bypass(&req("POST", "/a", &[])), Some("method"));
    // A body the key does not cover, in any framing; an empty one is none.
    for body in [
        [("Content-Length", "6")].as_slice(),
        &[("Content-Length", "6, 6")],
        &[("Content-Length", "0"), ("Content-Length", "1")],
        &[("Content-Length", "x")],
        &[("Transfer-Encoding", "chunked")],
        &[("Transfer-Encoding", "gzip, chunked")],
    ] {
        for method in ["GET", "HEAD"] {
            assert_eq!(
                bypass(&req(method, "/a", body)),
                Some("request body"),
                "{body:?}"
            );
        }
    }
    assert_eq!(bypass(&req("GET", "/a", &[("Content-Length", "0")])), None);
    assert_eq!(
        bypass(&req("GET", "/a", &[("Content-Length", "0, 0")])),
        None
    );
    assert_eq!(
        bypass(&req("GET", "/a", &[("X-HTTP-Method-Override", "PUT")])),
        Some("method override")
    );
    assert_eq!(
        bypass(&req("GET", "/a", &[("X-Original-URL", "/b")])),
        Some("x-original-url")
    );
    assert_eq!(
        bypass(&req("GET", "/a?x=1&_METHOD=put", &[])),
        Some("method override")
    );
    // As frameworks decode it: escaped, or with spaces around the name.
    assert_eq!(
        bypass(&req("GET", "/a?%5Fmethod=put", &[])),
        Some("method override")
    );
    assert_eq!(
        bypass(&req("GET", "/a?%20_method=put", &[])),
        Some("method override")
    );
    assert_eq!(bypass(&req("GET", "/a?my_method=1", &[])), None);
}

#[test]
fn the_key_separates_policies_schemes_and_forwarded_hosts_unambiguously() {
    let a = primary(Policy::Public, b"http", b"h", "h/x");
    assert_ne!(a, primary(Policy::Identify, b"http", b"h", "h/x"));
    assert_ne!(a, primary(Policy::Public, b"https", b"h", "h/x"));
    // A `|` in a forwarded host cannot shift the parts into the URL.
    assert_ne!(
        primary(Policy::Public, b"http", b"a|b", "c/x"),
        primary(Policy::Public, b"http", b"a", "b|c/x")
    );
    assert!(primary(Policy::Public, b"http", b"a|b", "c/x").ends_with("|c/x"));
}

#[test]
fn variance_follows_the_stored_vary_and_the_request_values() {
    let r = resp(200, &[("vary", "Accept-Encoding, accept-language")]);
    let meta = CacheMeta::new(SystemTime::now(), SystemTime::now(), 0, 0, r);
    let req = |enc: &str| {
        let mut q = RequestHeader::build("GET", b"/", None).unwrap();
        q.append_header("accept-encoding", enc).unwrap();
        q
    };
    assert_eq!(variance(&meta, &req("gzip")), variance(&meta, &req("gzip")));
    assert_ne!(variance(&meta, &req("gzip")), variance(&meta, &req("br")));
    let plain = CacheMeta::new(SystemTime::now(), SystemTime::now(), 0, 0, resp(200, &[]));
    assert_eq!(variance(&plain, &req("gzip")), None);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Whatever a backend sends in its caching headers, the decision neither panics nor stores
    /// a response that sets a cookie or varies on the caller.
    #[test]
    fn any_caching_headers_are_decided_without_a_panic(
        cc in "[ -~]{0,60}",
        vary in "[ -~]{0,30}",
        expires in "[ -~]{0,40}",
        status in 100u16..600,
        set_cookie in proptest::prelude::any::<bool>(),
    ) {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (n, v) in [("cache-control", &cc), ("vary", &vary), ("expires", &expires)] {
            if let Ok(v) = http::HeaderValue::from_str(v) {
                r.append_header(n, v).unwrap();
            }
        }
        if set_cookie {
            r.append_header("set-cookie", "a=b").unwrap();
        }
        for policy in [Policy::Public, Policy::Identify] {
            let decided = storable(&route(), policy, false, &ns(), &r, now());
            if let RespCacheable::Cacheable(meta) = decided {
                proptest::prop_assert!(!set_cookie);
                let v = vary.to_ascii_lowercase();
                for name in v.split(',').map(str::trim) {
                    proptest::prop_assert!(
                        !matches!(name, "*" | "cookie" | "authorization")
                            && !name.starts_with("x-authgear-"),
                        "stored with Vary: {vary}"
                    );
                }
                proptest::prop_assert!(meta.fresh_sec() <= 3600);
            }
        }
    }
}

/// The bytes a stored object counts are the ones it is removed with, even after a
/// revalidation replaced its header with a larger one (the gauge drifted, and could wrap).
#[tokio::test]
async fn bytes_held_return_to_zero_after_a_revalidated_object_is_purged() {
    use pingora::cache::storage::{PurgeTarget, PurgeType, Storage};
    let store: &'static Store = Box::leak(Box::new(Store::new(1 << 20, Duration::from_secs(1))));
    let trace = pingora::cache::trace::Span::inactive().handle();
    let key = pingora::cache::CacheKey::new("Public|http||h/x", "");
    let now = SystemTime::now();
    let small = CacheMeta::new(now, now, 0, 0, resp(200, &[("etag", "\"v\"")]));
    let mut miss = store.get_miss_handler(&key, &small, &trace).await.unwrap();
    miss.write_body(bytes::Bytes::from_static(b"body"), true)
        .await
        .unwrap();
    miss.finish().await.unwrap();
    assert!(store.bytes() > 0);
    let big = CacheMeta::new(now, now, 0, 0, resp(200, &[("x-long", &"y".repeat(5000))]));
    assert!(store.update_meta(&key, &big, &trace).await.unwrap());
    let compact = key.to_compact();
    store
        .purge(
            PurgeTarget::Active(&compact),
            PurgeType::Invalidation,
            &trace,
        )
        .await
        .unwrap();
    assert_eq!(store.bytes(), 0);
}

//! The response cache end to end: a real echo backend (whose `seq` counts the requests that
//! reached it), authgate in front, a real HTTP client. What is stored and served on public
//! routes, what is never shared on identity routes, poisoning and deception attempts, the
//! cache lock, revalidation, purges, eviction and the metrics.

mod common;

use std::time::{Duration, Instant};

use common::*;

const ALICE: &str = "session=sess-alice";
const BOB: &str = "session=sess-bob";
/// `Cache-Control: public, max-age=60`, as the echo backend's query asks for it.
const PUBLIC_60: &str = "h-cache-control=public%2C%20max-age%3D60";

/// A stack with an admin listener, `routes`, and a response cache of `max_bytes`.
async fn stack(routes: &str, max_bytes: usize) -> Stack {
    Stack::builder()
        .admin()
        .routes(routes)
        .yaml(&format!(
            r#"
            response_cache:
              max_bytes: {max_bytes}
              max_object_bytes: 4096
            "#
        ))
        .start()
        .await
}

/// Public `/static` (default TTL 60 s), identify `/id`, require `/members`, all cached.
const ROUTES: &str = r#"
- path: /static
  upstream: app
  auth: public
  cache:
    ttl: 60s
- path: /id
  upstream: app
  auth: identify
  cache:
    ttl: 60s
- path: /members
  upstream: app
  auth: require
  cache:
    ttl: 60s
- path: /
  upstream: app
"#;

/// What one request got: status, the backend's `seq` (0 when the body is not an echo), the
/// response headers.
struct Got {
    status: u16,
    seq: u64,
    headers: reqwest::header::HeaderMap,
    echo: Option<authgate::devserver::echo::Echo>,
}

async fn send(req: reqwest::RequestBuilder) -> Got {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let echo: Option<authgate::devserver::echo::Echo> = serde_json::from_str(&text).ok();
    Got {
        status,
        seq: echo.as_ref().map_or(0, |e| e.seq),
        headers,
        echo,
    }
}

async fn get(s: &Stack, path: &str) -> Got {
    send(client().get(s.proxy.url(path))).await
}

async fn get_as(s: &Stack, path: &str, cookie: &str) -> Got {
    send(client().get(s.proxy.url(path)).header("cookie", cookie)).await
}

/// The admin's `/metrics` text.
async fn metrics(s: &Stack) -> String {
    client()
        .get(format!("http://{}/metrics", s.admin()))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Polls `/metrics` until `series` is at least `want` (at most 5 s).
async fn reaches(s: &Stack, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = metrics(s).await;
        if metric(&m, series) >= want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_route_stores_what_the_backend_allows_and_nothing_else() {
    let s = stack(ROUTES, 1 << 20).await;
    // Allowed by the backend: one backend request, then hits (HEAD included).
    let first = get(&s, &format!("/static/a?{PUBLIC_60}")).await;
    assert_eq!(first.status, 200);
    let again = get(&s, &format!("/static/a?{PUBLIC_60}")).await;
    assert_eq!(again.seq, first.seq, "the second GET was not a hit");
    assert!(again.headers.contains_key("age"), "a hit carries Age");
    let head = send(client().head(s.proxy.url(&format!("/static/a?{PUBLIC_60}")))).await;
    assert_eq!(head.status, 200);
    let after_head = get(&s, &format!("/static/a?{PUBLIC_60}")).await;
    assert_eq!(after_head.seq, first.seq, "HEAD went to the backend");

    // No freshness stated: the route's default TTL.
    let plain = get(&s, "/static/plain").await;
    assert_eq!(get(&s, "/static/plain").await.seq, plain.seq);

    // Refused by the backend, or the caller's: every request reaches the backend.
    for query in [
        "h-cache-control=no-store",
        "h-cache-control=private%2C%20max-age%3D60",
        "h-cache-control=public%2C%20max-age%3D60&h-set-cookie=sid%3D1",
        "h-cache-control=public%2C%20max-age%3D60&h-vary=Cookie",
        "h-cache-control=public%2C%20max-age%3D60&h-vary=Authorization",
        "h-cache-control=public%2C%20max-age%3D60&h-vary=X-Authgear-User-Id",
        "h-cache-control=public%2C%20max-age%3D60&h-vary=*",
        "status=206&h-cache-control=public%2C%20max-age%3D60",
        "status=500",
    ] {
        let path = format!("/static/never?{query}");
        let a = get(&s, &path).await;
        let b = get(&s, &path).await;
        assert!(b.seq > a.seq, "{query}: stored ({} then {})", a.seq, b.seq);
    }
    // A request with credentials on a public route: only what is marked shareable.
    let path = "/static/personal";
    let a = get_as(&s, path, ALICE).await;
    let b = get_as(&s, path, ALICE).await;
    assert!(
        b.seq > a.seq,
        "a response to a request with credentials was stored"
    );
    // Counted when each request's log line is made, just after its answer: polled.
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"hit\"}",
        4,
    )
    .await;
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"miss\"}",
        2,
    )
    .await;
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"uncacheable\"}",
        20,
    )
    .await;
    assert!(metric(&metrics(&s).await, "authgate_response_cache_bytes") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_routes_never_share_what_depends_on_the_caller() {
    let s = stack(ROUTES, 1 << 20).await;
    // Web-cache deception: a page of Alice's under a static-looking path, the backend saying
    // nothing about caching. Bob must get his own page.
    let alice = get_as(&s, "/id/account/x.css", ALICE).await;
    let bob = get_as(&s, "/id/account/x.css", BOB).await;
    assert!(bob.seq > alice.seq, "Bob was served Alice's stored page");
    let bob_echo = bob.echo.clone().expect("echo");
    let bob_user = bob_echo
        .header_values("x-authgear-user-id")
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>();
    assert_eq!(bob_user, ["user-bob"], "{:?}", bob_echo.headers);
    // Marked public, but varying on the cookie: still never shared.
    let path = format!("/id/v?{PUBLIC_60}&h-vary=Cookie");
    let a = get_as(&s, &path, ALICE).await;
    let b = get_as(&s, &path, BOB).await;
    assert!(b.seq > a.seq, "a response varying on Cookie was shared");
    // Marked public by the backend: shared, and still only behind the route's policy.
    let path = format!("/members/news?{PUBLIC_60}");
    let a = get_as(&s, &path, ALICE).await;
    assert_eq!(a.status, 200);
    assert_eq!(get_as(&s, &path, BOB).await.seq, a.seq, "public not shared");
    let anonymous = get(&s, &path).await;
    assert_eq!(
        anonymous.status, 401,
        "a stored page skipped the require check"
    );
    let forged = send(
        client()
            .get(s.proxy.url(&path))
            .header("x-authgear-session-valid", "true")
            .header("x-authgear-user-id", "user-alice"),
    )
    .await;
    assert_eq!(
        forged.status, 401,
        "forged identity headers passed the policy"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_headers_and_other_hosts_cannot_poison_the_cache() {
    let s = stack(ROUTES, 1 << 20).await;
    let path = format!("/static/p?{PUBLIC_60}");
    // A forged X-Forwarded-Host from an untrusted client is replaced, and forged identity
    // headers are stripped, before the backend sees the request: the stored copy holds
    // neither.
    let poisoned = send(
        client()
            .get(s.proxy.url(&path))
            .header("x-forwarded-host", "evil.test")
            .header("x-forwarded-proto", "javascript")
            .header("x-authgear-user-id", "mallory"),
    )
    .await;
    let clean = get(&s, &path).await;
    assert_eq!(clean.seq, poisoned.seq, "expected the same stored object");
    let seen = clean.echo.expect("echo");
    assert!(seen.header_values("x-authgear-user-id").is_empty());
    assert!(!seen
        .header_values("x-forwarded-host")
        .contains(&"evil.test"));
    assert!(!seen
        .header_values("x-forwarded-proto")
        .contains(&"javascript"));

    // Headers some frameworks act on but that are not in the key: such a request neither
    // reads nor writes the cache.
    for (name, value) in [
        ("x-http-method-override", "DELETE"),
        ("x-original-url", "/admin"),
        ("x-rewrite-url", "/admin"),
        ("x-forwarded-scheme", "http"),
        ("x-host", "evil.test"),
        ("forwarded", "host=evil.test"),
    ] {
        let path = format!("/static/o-{name}?{PUBLIC_60}");
        let tainted = send(client().get(s.proxy.url(&path)).header(name, value)).await;
        let next = get(&s, &path).await;
        assert!(
            next.seq > tainted.seq,
            "{name}: the tainted answer was stored"
        );
        let served = send(client().get(s.proxy.url(&path)).header(name, value)).await;
        assert!(
            served.seq > next.seq,
            "{name}: a tainted request was served a stored copy"
        );
    }
    let path = format!("/static/m?{PUBLIC_60}&_method=DELETE");
    let a = get(&s, &path).await;
    assert!(get(&s, &path).await.seq > a.seq, "_method was cached");
    // Counted: 6 headers x 2 tainted requests, and the 2 with `_method`.
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"bypass\"}",
        14,
    )
    .await;

    // Two hosts never share an object.
    let on = |host: &'static str| {
        client()
            .get(s.proxy.url(&path.replace("&_method=DELETE", "")))
            .header("host", host)
    };
    let a = send(on("a.test")).await;
    let b = send(on("b.test")).await;
    assert!(b.seq > a.seq, "b.test was served a.test's object");
    assert_eq!(send(on("a.test")).await.seq, a.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_of_misses_makes_one_backend_request() {
    let s = stack(ROUTES, 1 << 20).await;
    let before = get(&s, "/count").await.seq;
    let path = format!("/static/herd?{PUBLIC_60}");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = s.proxy.url(&path);
        tasks.push(tokio::spawn(
            async move { send(client().get(url)).await.seq },
        ));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("task"));
    }
    assert!(
        seqs.iter().all(|&q| q == seqs[0]),
        "answers from several backend requests: {seqs:?}"
    );
    // The backend served one request for the herd (its count moved by one, plus this probe's).
    let after = get(&s, "/count").await.seq;
    assert_eq!(
        after,
        before + 2,
        "backend requests: {}",
        after - before - 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_object_is_revalidated_with_its_validators() {
    let s = stack(ROUTES, 1 << 20).await;
    // Stored stale at once (max-age=0) with an ETag: each use asks the backend, which answers
    // 304 to the validator; the stored body is served.
    let path = "/static/r?h-cache-control=public%2C%20max-age%3D0&h-etag=%22v1%22";
    let first = get(&s, path).await;
    let second = get(&s, path).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.seq, first.seq, "not served from the stored body");
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"revalidated\"}",
        1,
    )
    .await;
    // A client's own validator gets a 304 from the stored object.
    let cond = send(
        client().get(
            s.proxy
                .url(&format!("/static/c?{PUBLIC_60}&h-etag=%22v2%22")),
        ),
    )
    .await;
    let not_modified = send(
        client()
            .get(
                s.proxy
                    .url(&format!("/static/c?{PUBLIC_60}&h-etag=%22v2%22")),
            )
            .header("if-none-match", "\"v2\""),
    )
    .await;
    assert_eq!(cond.status, 200);
    assert_eq!(not_modified.status, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ttl_caps_what_the_backend_states() {
    let routes = r#"
- path: /static
  upstream: app
  auth: public
  cache:
    max_ttl: 1s
"#;
    let s = stack(routes, 1 << 20).await;
    let path = "/static/long?h-cache-control=public%2C%20max-age%3D86400";
    let first = get(&s, path).await;
    assert_eq!(get(&s, path).await.seq, first.seq);
    // Fresh for at most 1 s: within 5 s the backend is asked again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if get(&s, path).await.seq > first.seq {
            break;
        }
        assert!(Instant::now() < deadline, "still served after max_ttl");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /cache/purge` with `body`: the status and the JSON answer.
async fn purge(s: &Stack, body: serde_json::Value) -> (u16, serde_json::Value) {
    let resp = client()
        .post(format!("http://{}/cache/purge", s.admin()))
        .bearer_auth(ADMIN_TOKEN)
        .json(&body)
        .send()
        .await
        .expect("purge");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_and_by_prefix_are_counted() {
    let s = stack(ROUTES, 1 << 20).await;
    let a = get(&s, "/static/x/1").await;
    let b = get(&s, "/static/x/2").await;
    let c = get(&s, "/static/y").await;
    for (p, first) in [("/static/x/1", &a), ("/static/x/2", &b), ("/static/y", &c)] {
        assert_eq!(get(&s, p).await.seq, first.seq, "{p} not stored");
    }
    let host = s.proxy.addr.to_string();
    let (status, r) = purge(
        &s,
        serde_json::json!({ "url": format!("http://{host}/static/y") }),
    )
    .await;
    assert_eq!((status, &r["purged"]), (200, &serde_json::json!(1)), "{r}");
    assert!(
        get(&s, "/static/y").await.seq > c.seq,
        "purged URL still served"
    );
    assert_eq!(
        get(&s, "/static/x/1").await.seq,
        a.seq,
        "a purge by URL dropped another"
    );
    let prefix = serde_json::json!({ "prefix": format!("http://{host}/static/x/") });
    let (status, r) = purge(&s, prefix).await;
    assert_eq!((status, &r["purged"]), (200, &serde_json::json!(2)), "{r}");
    assert!(get(&s, "/static/x/1").await.seq > a.seq);
    assert!(get(&s, "/static/x/2").await.seq > b.seq);
    // Hostile bodies: both targets, a target with credentials, no host.
    for body in [
        serde_json::json!({ "url": "http://h/a", "prefix": "http://h/" }),
        serde_json::json!({ "url": "http://h/a", "user_id": "u" }),
        serde_json::json!({ "url": "/just/a/path" }),
    ] {
        assert_eq!(purge(&s, body.clone()).await.0, 400, "{body}");
    }
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "authgate_response_cache_purged_total"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_is_bounded_by_evicting_and_large_objects_are_not_stored() {
    // 64 KiB for objects counted at about 5 KiB each (echo body, headers and bookkeeping).
    let s = stack(ROUTES, 64 * 1024).await;
    for i in 0..64 {
        get(&s, &format!("/static/e/{i}?{PUBLIC_60}")).await;
    }
    // Evictions are purged just after each store: the held bytes settle within the bound.
    reaches(&s, "authgate_response_cache_evicted_total", 1).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let bytes = metric(&metrics(&s).await, "authgate_response_cache_bytes");
        if bytes <= 64 * 1024 {
            break;
        }
        assert!(Instant::now() < deadline, "holding {bytes} bytes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Over max_object_bytes (4 KiB): served, never stored.
    let pad = "x".repeat(5000);
    let path = format!("/static/big?{PUBLIC_60}&pad={pad}");
    let a = get(&s, &path).await;
    assert_eq!(a.status, 200);
    assert!(
        get(&s, &path).await.seq > a.seq,
        "an object over max_object_bytes was stored"
    );
}

/// `stale-if-error`: a stored object past its freshness is served while the backend is down,
/// within the window the response (or the route) allows, and not after it; `must-revalidate`
/// forbids it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_objects_are_served_on_backend_errors_only_where_allowed() {
    let mut backend = EchoProcess::start(closed_port());
    let s = Stack::builder()
        .admin()
        .pool("app", Pool::at(&[backend.addr]))
        .routes(CACHED_STATIC)
        .start()
        .await;
    let allowed = "/static/sie?h-cache-control=public%2C%20max-age%3D1%2C%20stale-if-error%3D600";
    let strict =
        "/static/mr?h-cache-control=public%2C%20max-age%3D1%2C%20must-revalidate%2C%20stale-if-error%3D600";
    let a = get(&s, allowed).await;
    let m = get(&s, strict).await;
    assert_eq!(get(&s, allowed).await.seq, a.seq, "not stored");
    backend.kill();
    // Past max-age=1: the next use must ask the (dead) backend.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = get(&s, allowed).await;
        assert_eq!(r.status, 200, "stale-if-error was not honoured");
        assert_eq!(r.seq, a.seq);
        if metric(
            &metrics(&s).await,
            "authgate_response_cache_requests_total{result=\"stale\"}",
        ) > 0
        {
            break;
        }
        assert!(Instant::now() < deadline, "never served stale");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(m.status, 200);
    // RFC 9111 §5.2.2.2: an error, 504 (Gateway Timeout), not the stale response. Stored a
    // moment after the other, it may still be fresh (a hit, the stored seq) for that moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    let r = loop {
        let r = get(&s, strict).await;
        if !(r.status == 200 && r.seq == m.seq) {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "must-revalidate was served stale on an error"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        r.status, 504,
        "must-revalidate was served stale on an error"
    );
}

/// `stale-while-revalidate`: past max-age, the stored object is served at once and refreshed
/// in the background; the refreshed copy follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_serves_at_once_and_refreshes() {
    let s = stack(ROUTES, 1 << 20).await;
    let path =
        "/static/swr?h-cache-control=public%2C%20max-age%3D1%2C%20stale-while-revalidate%3D600";
    let first = get(&s, path).await;
    // Once stale, answers stay the stored one until the background refresh lands.
    let deadline = Instant::now() + Duration::from_secs(6);
    let refreshed = loop {
        let r = get(&s, path).await;
        assert_eq!(r.status, 200);
        if r.seq > first.seq {
            break r;
        }
        assert!(Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refreshed.seq, first.seq + 1, "refreshed more than once");
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"stale\"}",
        1,
    )
    .await;
}

/// The access log tells the two caches apart: `cache` is the resolver answer's, and
/// `response_cache` the stored response's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_tells_response_cache_hits_from_answer_hits() {
    let (stack, log_path) = Stack::builder().routes(ROUTES).access_log_file();
    let s = stack.start().await;
    // A line is written after its answer has gone out, so a request on another connection
    // can be logged first: the lines are told apart by path and outcome, not by order.
    let c = client();
    let url = s.proxy.url(&format!("/id/shared?{PUBLIC_60}"));
    send(c.get(&url).header("cookie", ALICE)).await;
    send(c.get(&url).header("cookie", ALICE)).await;
    send(c.get(s.proxy.url("/static/plain"))).await;
    let lines: Vec<serde_json::Value> = access_log_lines(&log_path, 3)
        .await
        .iter()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let mut seen: Vec<(String, String, String)> = lines
        .iter()
        .map(|v| {
            let field = |k: &str| v[k].as_str().unwrap_or("?").to_string();
            (field("path"), field("cache"), field("response_cache"))
        })
        .collect();
    seen.sort();
    let want = |p: &str, a: &str, b: &str| (p.to_string(), a.to_string(), b.to_string());
    assert_eq!(
        seen,
        vec![
            want("/id/shared", "hit", "hit"),
            want("/id/shared", "miss", "miss"),
            want("/static/plain", "-", "miss"),
        ],
        "{lines:?}"
    );
}

/// `Vary` on a request header: one stored variant per value, each served only to its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn variants_follow_vary() {
    let s = stack(ROUTES, 1 << 20).await;
    let path = format!("/static/v?{PUBLIC_60}&h-vary=Accept-Language");
    let lang = |l: &'static str| {
        client()
            .get(s.proxy.url(&path))
            .header("accept-language", l)
    };
    let en = send(lang("en")).await;
    let fr = send(lang("fr")).await;
    assert!(fr.seq > en.seq, "fr was served the en variant");
    assert_eq!(send(lang("en")).await.seq, en.seq);
    assert_eq!(send(lang("fr")).await.seq, fr.seq);
    let none = get(&s, &path).await;
    assert!(
        none.seq > fr.seq,
        "a request without the header got a variant"
    );
}

/// A reload turns a route's cache on, then off; what was stored is not served once it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turns_a_routes_cache_on_and_off() {
    let s = Stack::builder().start().await;
    let path = format!("/static/r?{PUBLIC_60}");
    let a = get(&s, &path).await;
    assert!(
        get(&s, &path).await.seq > a.seq,
        "cached before any route asked"
    );
    let cached = s.config.with_routes(ROUTES);
    s.rewrite(&cached);
    s.proxy.signal("HUP");
    // Until the reload lands, every request reaches the backend; then the second is a hit.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stored = loop {
        let first = get(&s, &path).await;
        if get(&s, &path).await.seq == first.seq {
            break first;
        }
        assert!(
            Instant::now() < deadline,
            "the reload never turned the cache on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    s.rewrite(&s.config);
    s.proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&s, &path).await.seq == stored.seq {
        assert!(
            Instant::now() < deadline,
            "still served from the cache after it was turned off"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let x = get(&s, &path).await;
    assert!(get(&s, &path).await.seq > x.seq, "the route still caches");
}

/// The resolver's `Set-Cookie` (passed on with `forward_set_cookie`) is added for each client
/// after the backend's response is stored: a stored page never carries one client's cookie
/// to another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_page_never_carries_the_resolvers_set_cookie_to_others() {
    let s = Stack::builder()
        .routes(ROUTES)
        .resolver_keys("forward_set_cookie: true")
        .start()
        .await;
    let path = format!("/id/page?{PUBLIC_60}");
    // An unknown session: the resolver clears it with a Set-Cookie, passed on to this client.
    let gone = get_as(&s, &path, "session=gone").await;
    let cleared = gone
        .headers
        .get("set-cookie")
        .map(|v| v.to_str().unwrap_or(""));
    assert!(
        cleared.is_some_and(|c| c.starts_with("session=;")),
        "{cleared:?}"
    );
    // Alice is served the stored page, without that cookie.
    let alice = get_as(&s, &path, ALICE).await;
    assert_eq!(alice.seq, gone.seq, "expected the stored page");
    assert!(
        alice.headers.get("set-cookie").is_none(),
        "{:?}",
        alice.headers
    );
}

/// A body without a length that outgrows `max_object_bytes` midway is served whole and not
/// stored. The backend sends its chunks apart, so the proxy reads them one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_over_the_object_limit_is_served_whole_and_not_stored() {
    use tokio::io::AsyncWriteExt;
    let (l, backend) = listener().await;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_head(&mut conn, &mut buf).await.is_some() {
                    counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let head = "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n";
                    if conn.write_all(head.as_bytes()).await.is_err() {
                        return;
                    }
                    for _ in 0..4 {
                        let chunk = format!("bb8\r\n{}\r\n", "x".repeat(3_000));
                        if conn.write_all(chunk.as_bytes()).await.is_err() {
                            return;
                        }
                        // Apart, so that the limit is crossed between two reads.
                        tokio::time::sleep(Duration::from_millis(30)).await;
                    }
                    if conn.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let s = Stack::builder()
        .admin()
        .pool("app", Pool::at(&[backend]))
        .routes(ROUTES)
        .yaml("response_cache:\n  max_object_bytes: 4096\n")
        .start()
        .await;
    for _ in 0..2 {
        let resp = client()
            .get(s.proxy.url("/static/big"))
            .send()
            .await
            .expect("request");
        assert_eq!(resp.status(), 200);
        let got = resp.text().await.map(|t| t.len());
        assert_eq!(got.ok(), Some(12_000), "not served whole");
    }
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2, "stored");
}

/// HTTP/2 over TLS: stored and served the same way, and apart from the plain listener's
/// objects (the scheme is part of the key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_over_tls_is_served_from_the_cache_apart_from_plain_http() {
    let (stack, ca) = Stack::builder().routes(ROUTES).tls(&["authgate.test"]);
    let plain = closed_port();
    let s = stack.listener(&format!("addr: {plain}\n")).start().await;
    wait_for(plain);
    let tls = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("CA"))
        .resolve("authgate.test", s.proxy.addr)
        .build()
        .expect("client");
    let path = format!("/static/h2?{PUBLIC_60}");
    let https = format!("https://authgate.test:{}{path}", s.proxy.addr.port());
    let http = format!("http://{plain}{path}");
    let a = send(tls.get(&https)).await;
    let again = tls.get(&https).send().await.expect("request");
    assert_eq!(again.version(), reqwest::Version::HTTP_2);
    let again = send(tls.get(&https)).await;
    assert_eq!(again.seq, a.seq, "not a hit over HTTP/2");
    let over_http = send(client().get(&http).header("host", "authgate.test")).await;
    assert!(
        over_http.seq > a.seq,
        "plain HTTP was served the HTTPS object"
    );
}

/// A `GET` with a body, sent as written (`chunked`: in two chunks), and the backend's echo.
async fn fat_get(s: &Stack, path: &str, chunked: bool) -> authgate::devserver::echo::Echo {
    use tokio::io::AsyncWriteExt;
    let addr = s.proxy.addr;
    let body = if chunked {
        "Transfer-Encoding: chunked\r\n\r\n3\r\npoi\r\n3\r\nson\r\n0\r\n\r\n"
    } else {
        "Content-Length: 6\r\n\r\npoison"
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{body}");
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("send");
    let answer = read_response(&mut conn).await;
    let (head, json) = answer.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{answer}");
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

/// A request with a body (a "fat GET": some frameworks read a GET's body) could make the
/// backend answer from it, and that answer would be stored for everyone: a request with a body
/// is neither served from the cache nor stored, whether the body is sized or chunked; an empty
/// `Content-Length: 0` body is no body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_with_a_body_neither_uses_nor_fills_the_cache() {
    let s = stack(ROUTES, 1 << 20).await;
    for (name, chunked) in [("sized", false), ("chunked", true)] {
        let path = format!("/static/{name}?{PUBLIC_60}");
        // Sent first, the fat GET's answer is not stored: the next plain GET reaches the
        // backend.
        let fat = fat_get(&s, &path, chunked).await;
        assert_eq!(fat.body_len, 6, "{name}: the body reaches the backend");
        let plain = get(&s, &path).await;
        assert_ne!(
            plain.seq, fat.seq,
            "{name}: the fat GET's answer was stored"
        );
        assert_eq!(plain.echo.expect("echo").body_len, 0);
        // Now stored, the object is not served to a fat GET either.
        let again = fat_get(&s, &path, chunked).await;
        assert!(
            again.seq > plain.seq,
            "{name}: a fat GET was served from the cache"
        );
        let stored = get(&s, &path).await;
        assert_eq!(
            stored.seq, plain.seq,
            "{name}: the clean object stays stored"
        );
    }
    // An empty body is no body: stored and served as usual.
    let url = s.proxy.url(&format!("/static/empty?{PUBLIC_60}"));
    let empty = send(client().get(&url).header("content-length", "0")).await;
    let hit = send(client().get(&url).header("content-length", "0")).await;
    assert_eq!(hit.seq, empty.seq, "an empty body bypassed the cache");
    reaches(
        &s,
        "authgate_response_cache_requests_total{result=\"bypass\"}",
        4,
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// RFC 9111 (HTTP caching) and RFC 9213 (targeted cache control), rule by rule (issue 24).
// ---------------------------------------------------------------------------------------------

/// `s`, percent-encoded for the echo backend's `h-<name>=<value>` query pairs.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The echo path `/static/<name>` answering with `headers` (name, value).
fn shaped(name: &str, headers: &[(&str, &str)]) -> String {
    let query: Vec<String> = headers
        .iter()
        .map(|(n, v)| format!("h-{n}={}", enc(v)))
        .collect();
    format!("/static/{name}?{}", query.join("&"))
}

/// RFC 9110 §7.6.1, RFC 9111 §3.1: the fields a backend names in `Connection`, and the
/// standard hop-by-hop fields, are removed before the response is forwarded or stored.
/// Hostile nominations: `Content-Length` (framing stays whole), `Set-Cookie` and
/// `Cache-Control` (removed; the response is then not stored, since what it said of caching
/// and identity was cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_fields_of_a_response_are_neither_forwarded_nor_stored() {
    let s = stack(ROUTES, 1 << 20).await;
    let path = shaped(
        "hop",
        &[
            ("cache-control", "public, max-age=60"),
            ("connection", "X-Hop, x-other"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic"),
            ("x-kept", "3"),
        ],
    );
    let a = get(&s, &path).await;
    let b = get(&s, &path).await;
    assert_eq!(b.seq, a.seq, "not stored");
    for got in [&a, &b] {
        for gone in ["x-hop", "x-other", "keep-alive", "proxy-authenticate"] {
            assert!(!got.headers.contains_key(gone), "{gone}: {:?}", got.headers);
        }
        assert_eq!(
            got.headers.get("x-kept").map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
    // Connection: Content-Length: the body still arrives whole, and is stored.
    let path = shaped(
        "hop-length",
        &[
            ("cache-control", "public, max-age=60"),
            ("connection", "Content-Length"),
        ],
    );
    let a = get(&s, &path).await;
    assert!(a.echo.is_some(), "the body did not arrive whole");
    assert_eq!(get(&s, &path).await.seq, a.seq);
    // Nominated identity and caching fields: removed, and the response is not stored.
    for (name, cut, headers) in [
        (
            "hop-cookie",
            "set-cookie",
            vec![
                ("cache-control", "public, max-age=60"),
                ("set-cookie", "sid=1"),
                ("connection", "Set-Cookie"),
            ],
        ),
        (
            "hop-cc",
            "cache-control",
            vec![
                ("cache-control", "private"),
                ("connection", "Cache-Control"),
            ],
        ),
    ] {
        let path = shaped(name, &headers);
        let a = get(&s, &path).await;
        assert!(!a.headers.contains_key(cut), "{name}: {:?}", a.headers);
        assert!(get(&s, &path).await.seq > a.seq, "{name}: stored");
    }
    // A Connection header Pingora refuses in a request (too many names, a protected one): the
    // backend's answer is not passed on half-stripped, the client gets a 502.
    let many: Vec<String> = (0..10).map(|i| format!("x-{i}")).collect();
    for connection in [many.join(", "), "Host".to_string(), ":status".to_string()] {
        let path = shaped(
            &format!("hop-bad-{}", connection.len()),
            &[
                ("cache-control", "public, max-age=60"),
                ("connection", &connection),
            ],
        );
        assert_eq!(get(&s, &path).await.status, 502, "Connection: {connection}");
    }
}

/// The `Age` a response carries, in seconds (`None` without one).
fn age_of(got: &Got) -> Option<u64> {
    got.headers.get("age")?.to_str().ok()?.parse().ok()
}

/// RFC 9111 §4.2.3 and §5.1: the origin's `Age` counts. A response already older than its
/// freshness lifetime is stale on arrival (asked for again); one that is not is served with
/// the origin's age plus the time it has been stored. Hostile `Age` values: an invalid one
/// (negative, garbage, a fraction, a suffix) is ignored; the first of several (or of a list)
/// is used; one too large to represent counts as 2^31 seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_age_counts_toward_freshness_and_the_age_served() {
    let s = stack(ROUTES, 1 << 20).await;
    let cc = ("cache-control", "public, max-age=3600");
    // Stale on arrival: every request reaches the backend.
    for (name, ages) in [
        ("old", &["7200"][..]),
        ("huge", &["99999999999999999999999"][..]),
        ("max", &["2147483648"][..]),
        ("first-of-two", &["7200", "10"][..]),
        ("first-of-list", &["7200, 10"][..]),
    ] {
        let mut headers = vec![cc];
        headers.extend(ages.iter().map(|a| ("age", *a)));
        let path = shaped(&format!("age-{name}"), &headers);
        let a = get(&s, &path).await;
        let b = get(&s, &path).await;
        assert!(b.seq > a.seq, "Age {ages:?}: served as fresh");
    }
    // Young enough: a hit, whose Age is the origin's plus its time in the cache.
    let path = shaped("age-young", &[cc, ("age", "100")]);
    let a = get(&s, &path).await;
    let b = get(&s, &path).await;
    assert_eq!(b.seq, a.seq, "not stored");
    let age = age_of(&b).expect("a hit carries Age");
    assert!((100..200).contains(&age), "Age {age}, expected 100 and up");
    // Invalid: ignored (a hit, with an Age of its own time in the cache only).
    for bad in ["-7200", "abc", "7200a", "72.5", "0x1C20", ""] {
        let path = shaped(&format!("age-bad-{}", enc(bad)), &[cc, ("age", bad)]);
        let a = get(&s, &path).await;
        let b = get(&s, &path).await;
        assert_eq!(b.seq, a.seq, "Age {bad:?}: not stored");
        let age = age_of(&b).expect("a hit carries Age");
        assert!(age < 100, "Age {bad:?} was read as {age}");
    }
}

/// An HTTP date `offset` seconds from now, in `form`: 0 IMF-fixdate, 1 RFC 850, 2 asctime
/// (RFC 9110 §5.6.7).
fn http_date(offset: i64, form: u8) -> String {
    let now = std::time::SystemTime::now();
    let t = if offset >= 0 {
        now + Duration::from_secs(offset as u64)
    } else {
        now - Duration::from_secs(offset.unsigned_abs())
    };
    let imf = httpdate::fmt_http_date(t); // "Sun, 06 Nov 1994 08:49:37 GMT"
    let parts: Vec<&str> = imf.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    let (wday, day, mon, year, time) = (parts[0], parts[1], parts[2], parts[3], parts[4]);
    let long = match wday {
        "Mon" => "Monday",
        "Tue" => "Tuesday",
        "Wed" => "Wednesday",
        "Thu" => "Thursday",
        "Fri" => "Friday",
        "Sat" => "Saturday",
        _ => "Sunday",
    };
    match form {
        0 => imf.clone(),
        1 => format!("{long}, {day}-{mon}-{} {time} GMT", &year[2..]),
        _ => format!(
            "{wday} {mon} {:>2} {time} {year}",
            day.trim_start_matches('0')
        ),
    }
}

/// RFC 9111 §4.2.1: an `Expires` lifetime is `Expires` minus `Date`, not minus the local
/// clock, so an origin whose clock is an hour behind still gets its minute of freshness; the
/// obsolete date forms of RFC 9110 §5.6.7 (RFC 850, asctime) and any letter case are read; an
/// invalid `Expires` (`0`, garbage, two different values) means already expired, whatever the
/// route's default TTL; a shared cache takes `s-maxage` before `max-age` before `Expires`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_counts_from_the_responses_date_in_every_date_form() {
    let s = stack(ROUTES, 1 << 20).await;
    let pb = ("cache-control", "public");
    // The origin's clock an hour behind: Date and Expires both an hour ago, a minute apart.
    for form in 0..3u8 {
        let (date, expires) = (http_date(-3600, form), http_date(-3540, form));
        for (case, expires) in [
            ("as-sent", expires.clone()),
            ("upper", expires.to_ascii_uppercase()),
            ("lower", expires.to_ascii_lowercase()),
        ] {
            let path = shaped(
                &format!("exp-{form}-{case}"),
                &[pb, ("date", &date), ("expires", &expires)],
            );
            let a = get(&s, &path).await;
            let b = get(&s, &path).await;
            assert_eq!(b.seq, a.seq, "form {form} {case}: {expires:?} not fresh");
        }
    }
    // Already expired: stale at once, though the route's ttl would make it fresh.
    let date = http_date(0, 0);
    for (name, expires) in [
        ("zero", vec!["0".to_string()]),
        ("garbage", vec!["tomorrow".to_string()]),
        ("past", vec![http_date(-60, 0)]),
        ("two", vec![http_date(600, 0), http_date(-600, 0)]),
    ] {
        let mut headers = vec![pb, ("date", date.as_str())];
        headers.extend(expires.iter().map(|e| ("expires", e.as_str())));
        let path = shaped(&format!("exp-bad-{name}"), &headers);
        let a = get(&s, &path).await;
        let b = get(&s, &path).await;
        assert!(b.seq > a.seq, "Expires {expires:?}: served as fresh");
    }
    // Two different Dates: neither is believed, the time of arrival stands in.
    let path = shaped(
        "exp-two-dates",
        &[
            pb,
            ("date", &http_date(-7200, 0)),
            ("date", &http_date(0, 0)),
            ("expires", &http_date(600, 0)),
        ],
    );
    let a = get(&s, &path).await;
    assert_eq!(get(&s, &path).await.seq, a.seq, "two Dates: not fresh");
    // Precedence for a shared cache: s-maxage, then max-age, then Expires.
    let past = http_date(-600, 0);
    for (name, headers) in [
        (
            "s-maxage",
            vec![("cache-control", "public, s-maxage=60, max-age=0")],
        ),
        (
            "max-age",
            vec![("cache-control", "public, max-age=60"), ("expires", &past)],
        ),
    ] {
        let path = shaped(&format!("prec-{name}"), &headers);
        let a = get(&s, &path).await;
        assert_eq!(get(&s, &path).await.seq, a.seq, "{name} did not win");
    }
    let path = shaped(
        "prec-s-maxage-zero",
        &[("cache-control", "public, s-maxage=0, max-age=60")],
    );
    let a = get(&s, &path).await;
    assert!(
        get(&s, &path).await.seq > a.seq,
        "s-maxage=0 lost to max-age"
    );
}

/// A canned backend whose replies the test switches: `replies[0]` first.
async fn switching(first: &'static [u8]) -> Canned {
    serve_canned(first, Duration::ZERO, true).await
}

fn switch(canned: &Canned, reply: &'static [u8]) {
    *canned.reply.lock().expect("reply lock") = reply;
}

/// The status, headers and body of one request (status 0: the connection was dropped).
async fn fetch(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let headers = resp.headers().clone();
            match resp.text().await {
                Ok(body) => (status, headers, body),
                Err(_) => (0, headers, String::new()),
            }
        }
        Err(_) => (0, reqwest::header::HeaderMap::new(), String::new()),
    }
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> Vec<&'a str> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or("?"))
        .collect()
}

/// RFC 9111 §4.3.4 and §3.2: a `304` on revalidation updates the stored header fields with
/// the ones it carries; the stored body is served with the new values from then on, except
/// the fields that must not be updated (`Content-Length`, the hop-by-hop ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_updates_the_stored_header_fields() {
    let backend = switching(b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=0\r\nETag: \"v1\"\r\nX-Version: 1\r\nX-Kept: yes\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello").await;
    let s = Stack::builder()
        .admin()
        .pool("app", Pool::at(&[backend.addr]))
        .routes(ROUTES)
        .start()
        .await;
    let url = s.proxy.url("/static/updated");
    let (status, first, body) = fetch(client().get(&url)).await;
    assert_eq!((status, body.as_str()), (200, "hello"));
    assert_eq!(header(&first, "x-version"), ["1"]);
    // Stale at once (max-age=0): the next use revalidates, and the origin's 304 brings new
    // values, a Content-Length it must not change, and a field it marks hop-by-hop.
    switch(&backend, b"HTTP/1.1 304 Not Modified\r\nCache-Control: public, max-age=0\r\nETag: \"v1\"\r\nX-Version: 2\r\nX-New: added\r\nContent-Length: 99\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n");
    let (status, second, body) = fetch(client().get(&url)).await;
    assert_eq!((status, body.as_str()), (200, "hello"), "{second:?}");
    assert_eq!(header(&second, "x-version"), ["2"], "{second:?}");
    assert_eq!(header(&second, "x-new"), ["added"], "{second:?}");
    assert_eq!(header(&second, "x-kept"), ["yes"], "{second:?}");
    assert!(header(&second, "x-hop").is_empty(), "{second:?}");
    assert_eq!(header(&second, "content-length"), ["5"], "{second:?}");
    // Stored so: a 304 saying nothing new still serves the updated fields.
    switch(
        &backend,
        b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n",
    );
    let (status, third, body) = fetch(client().get(&url)).await;
    assert_eq!((status, body.as_str()), (200, "hello"), "{third:?}");
    assert_eq!(header(&third, "x-version"), ["2"], "{third:?}");
    assert_eq!(header(&third, "x-new"), ["added"], "{third:?}");
    assert!(header(&third, "x-hop").is_empty(), "{third:?}");
    assert_eq!(backend.calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// RFC 9111 §4.4: a non-error answer (2xx, 3xx) to an unsafe method (`POST`, `PUT`,
/// `DELETE`, `PATCH`, or any method not known to be safe) invalidates the stored responses of
/// its URL, every variant of it; a safe method (`OPTIONS`) or an error answer does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_every_variant_of_their_url() {
    let s = stack(ROUTES, 1 << 20).await;
    let path = format!("/static/inv?{PUBLIC_60}&h-vary=Accept-Language");
    let lang = |method: reqwest::Method, l: &'static str| {
        client()
            .request(method, s.proxy.url(&path))
            .header("accept-language", l)
    };
    let methods = ["POST", "PUT", "DELETE", "PATCH", "FROB"];
    for m in methods {
        let en = send(lang(reqwest::Method::GET, "en")).await;
        let fr = send(lang(reqwest::Method::GET, "fr")).await;
        assert_eq!(send(lang(reqwest::Method::GET, "en")).await.seq, en.seq);
        assert_eq!(send(lang(reqwest::Method::GET, "fr")).await.seq, fr.seq);
        let method = reqwest::Method::from_bytes(m.as_bytes()).expect("method");
        let write = send(lang(method, "en")).await;
        assert_eq!(write.status, 200, "{m}");
        assert!(
            send(lang(reqwest::Method::GET, "en")).await.seq > write.seq,
            "{m}: en kept"
        );
        assert!(
            send(lang(reqwest::Method::GET, "fr")).await.seq > write.seq,
            "{m}: fr kept"
        );
    }
    // A safe method changes nothing.
    let en = send(lang(reqwest::Method::GET, "en")).await;
    send(lang(reqwest::Method::OPTIONS, "en")).await;
    assert_eq!(
        send(lang(reqwest::Method::GET, "en")).await.seq,
        en.seq,
        "OPTIONS invalidated"
    );
    // A GET whose method override a framework obeys wrote too (client-controlled: the
    // override decides, not the request line).
    let en = send(lang(reqwest::Method::GET, "en")).await;
    let overridden =
        send(lang(reqwest::Method::GET, "en").header("x-http-method-override", "DELETE")).await;
    assert!(
        overridden.seq > en.seq,
        "the override was served from the cache"
    );
    assert!(
        send(lang(reqwest::Method::GET, "en")).await.seq > overridden.seq,
        "a GET overridden to DELETE invalidated nothing"
    );
    // Another URL's object stays.
    let other = format!("/static/inv-other?{PUBLIC_60}");
    let o = get(&s, &other).await;
    send(client().post(s.proxy.url(&path))).await;
    assert_eq!(
        get(&s, &other).await.seq,
        o.seq,
        "a write dropped another URL"
    );
}

/// RFC 9111 §4.4: an error answer to a write invalidates nothing; `Location` and
/// `Content-Location` of a successful one name more URLs to invalidate, on the same host only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_invalidates_its_location_and_not_after_an_error() {
    const V1: &[u8] =
        b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: 2\r\n\r\nv1";
    const V2: &[u8] =
        b"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=60\r\nContent-Length: 2\r\n\r\nv2";
    let backend = switching(V1).await;
    let s = Stack::builder()
        .pool("app", Pool::at(&[backend.addr]))
        .routes(ROUTES)
        .start()
        .await;
    let body = |p: &'static str| {
        let url = s.proxy.url(p);
        async move { fetch(client().get(url)).await.2 }
    };
    // Redirects are the answers under test, not followed.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let post = |p: &'static str| {
        let req = no_redirects.post(s.proxy.url(p));
        async move { fetch(req).await.0 }
    };
    for p in ["/static/w", "/static/b", "/static/c", "/static/d"] {
        assert_eq!(body(p).await, "v1", "{p}");
    }
    switch(&backend, V2);
    for p in ["/static/w", "/static/b", "/static/c", "/static/d"] {
        assert_eq!(body(p).await, "v1", "{p}: not stored");
    }
    // A 500 and a 404 to the write: nothing is invalidated.
    switch(
        &backend,
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post("/static/w").await, 500);
    switch(
        &backend,
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(post("/static/w").await, 404);
    switch(&backend, V2);
    assert_eq!(body("/static/w").await, "v1", "invalidated after an error");
    // A 201 naming /static/b (relative) and /static/c (absolute, same host but another
    // port: the key has no port), and one naming /static/d on another host.
    switch(&backend, b"HTTP/1.1 201 Created\r\nLocation: /static/b\r\nContent-Location: http://127.0.0.1:1/static/c\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post("/static/w").await, 201);
    switch(&backend, b"HTTP/1.1 303 See Other\r\nLocation: http://elsewhere.test/static/d\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(post("/static/x").await, 303);
    switch(&backend, V2);
    assert_eq!(body("/static/w").await, "v2", "the target stayed");
    assert_eq!(body("/static/b").await, "v2", "Location stayed");
    assert_eq!(body("/static/c").await, "v2", "Content-Location stayed");
    assert_eq!(
        body("/static/d").await,
        "v1",
        "another host's Location invalidated"
    );
}

/// A backend that answers its first `answers` requests with `reply`, then closes each
/// connection as soon as a request's head arrives (no answer at all).
async fn answering_then_hanging_up(reply: &'static [u8], answers: u64) -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let (l, addr) = listener().await;
    let served = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = l.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                while read_head(&mut conn, &mut buf).await.is_some() {
                    if served.fetch_add(1, std::sync::atomic::Ordering::SeqCst) >= answers {
                        return;
                    }
                    if conn.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// RFC 9111 §5.2.2.2, §5.2.2.8, §5.2.2.10: a stale response under `must-revalidate` (or,
/// for a shared cache, `proxy-revalidate` or `s-maxage`) whose origin cannot be reached for
/// revalidation gets an error answer, 504, never the stale response (its `stale-if-error`
/// notwithstanding) and never a dropped connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_answers_504_when_the_origin_hangs_up() {
    for cc in [
        "public, max-age=1, must-revalidate, stale-if-error=600",
        "public, max-age=1, proxy-revalidate, stale-if-error=600",
        "s-maxage=1, stale-if-error=600",
    ] {
        let reply: &'static [u8] = Box::leak(
            format!("HTTP/1.1 200 OK\r\nCache-Control: {cc}\r\nETag: \"e\"\r\nContent-Length: 5\r\n\r\nstale")
                .into_bytes()
                .into_boxed_slice(),
        );
        let backend = answering_then_hanging_up(reply, 1).await;
        let s = Stack::builder()
            .pool("app", Pool::at(&[backend]))
            .routes(ROUTES)
            .start()
            .await;
        let url = s.proxy.url("/static/mr");
        assert_eq!(fetch(client().get(&url)).await.0, 200, "{cc}");
        // Fresh for a second: hits; then each use must revalidate with an origin that hangs up.
        let deadline = Instant::now() + Duration::from_secs(6);
        let (status, _, body) = loop {
            let got = fetch(client().get(&url)).await;
            if got.0 != 200 {
                break got;
            }
            assert!(
                Instant::now() < deadline,
                "{cc}: the stale response was served"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(status, 504, "{cc}: {body:?}");
    }
}

/// RFC 9213: a valid `CDN-Cache-Control` decides authgate's freshness instead of
/// `Cache-Control` and `Expires` (which the browser still gets); an empty or invalid one
/// (not a Structured Fields dictionary) is ignored. It is forwarded unchanged, for caches
/// further down. authgate's identity rules still hold: `Cache-Control: private` is never
/// stored, whatever the CDN field says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cdn_cache_control_takes_precedence_for_authgate() {
    let s = &stack(ROUTES, 1 << 20).await;
    let past = http_date(-600, 0);
    let stored = |name: &str, headers: &[(&str, &str)]| {
        let path = shaped(name, headers);
        async move {
            let a = get(s, &path).await;
            (a.headers.clone(), get(s, &path).await.seq == a.seq)
        }
    };
    let (headers, hit) = stored(
        "cdn-longer",
        &[
            ("cache-control", "public, max-age=0"),
            ("cdn-cache-control", "max-age=60"),
        ],
    )
    .await;
    assert!(hit, "CDN-Cache-Control max-age=60 lost to Cache-Control");
    assert_eq!(header(&headers, "cdn-cache-control"), ["max-age=60"]);
    assert_eq!(header(&headers, "cache-control"), ["public, max-age=0"]);
    let (_, hit) = stored(
        "cdn-over-expires",
        &[("expires", &past), ("cdn-cache-control", "max-age=60")],
    )
    .await;
    assert!(hit, "CDN-Cache-Control lost to Expires");
    for (name, cdn) in [
        ("cdn-no-store", "no-store"),
        ("cdn-zero", "max-age=0"),
        ("cdn-private", "private"),
    ] {
        let (_, hit) = stored(
            name,
            &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", cdn),
            ],
        )
        .await;
        assert!(!hit, "{name}: Cache-Control won over CDN-Cache-Control");
    }
    // Invalid or empty: ignored, Cache-Control decides (stored for 60 s).
    for (i, cdn) in [
        "",
        "max-age=60,",
        "Max-Age=0",
        "max-age=0;;",
        "no-store, \"x\"",
        "max-age=(0",
    ]
    .iter()
    .enumerate()
    {
        let (_, hit) = stored(
            &format!("cdn-invalid-{i}"),
            &[
                ("cache-control", "public, max-age=60"),
                ("cdn-cache-control", cdn),
            ],
        )
        .await;
        assert!(hit, "{cdn:?}: an invalid CDN-Cache-Control was obeyed");
    }
    let (_, hit) = stored(
        "cdn-but-private",
        &[
            ("cache-control", "private"),
            ("cdn-cache-control", "max-age=60"),
        ],
    )
    .await;
    assert!(!hit, "a private response was stored");
}

//! The resolver-answer cache, end to end: calls counted at the resolver.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_kept_for_their_ttl() {
    let s = Stack::builder()
        .yaml(
            r#"
            cache:
              ttl: 1500ms
              negative_ttl: 10m
              refresh_after: 0s
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(
        s.resolver_calls(),
        1,
        "the second request within the TTL is a hit"
    );
    // An unrelated cookie does not change the key.
    assert_eq!(
        user_of(proxy, "_ga=GA1.1; session=sess-alice; theme=dark").await,
        ["user-alice"]
    );
    assert_eq!(s.resolver_calls(), 1);
    // Let the 1.5 s TTL pass.
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(
        s.resolver_calls(),
        2,
        "after the TTL the resolver is asked again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn negative_answers_have_their_own_ttl() {
    let s = Stack::builder()
        .yaml(
            r#"
            cache:
              ttl: 10m
              negative_ttl: 1500ms
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;
    for _ in 0..3 {
        assert!(user_of(proxy, "session=unknown").await.is_empty());
        let e = send_echo(client().get(proxy.url("/"))).await;
        assert!(identity_headers(&e).is_empty());
    }
    assert_eq!(
        s.resolver_calls(),
        2,
        "one call for the invalid session, one for no credentials"
    );
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert!(user_of(proxy, "session=unknown").await.is_empty());
    assert_eq!(s.resolver_calls(), 3);
}

/// The seed's key ($cookie_session|$http_authorization) gives these two users one entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_session_users_never_share_an_answer() {
    let s = Stack::start().await;
    let proxy = &s.proxy;
    assert_eq!(
        user_of(proxy, "app_session=tok-alice").await,
        ["user-alice"]
    );
    assert_eq!(user_of(proxy, "app_session=tok-bob").await, ["user-bob"]);
    assert_eq!(
        user_of(proxy, "app_access_token=tok-bob").await,
        ["user-bob"]
    );
    assert_eq!(
        user_of(proxy, "app_session=tok-alice").await,
        ["user-alice"]
    );
    let e = send_echo(client().get(proxy.url("/")).bearer_auth("tok-bob")).await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-bob"]);
    assert_eq!(s.resolver_calls(), 4);
}

/// No client-controlled header makes authgate skip the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_cache_headers_do_not_bypass_the_cache() {
    let s = Stack::start().await;
    let proxy = &s.proxy;
    for h in [
        ("cache-control", "no-cache"),
        ("pragma", "no-cache"),
        ("cache-control", "max-age=0"),
    ] {
        let e = send_echo(
            client()
                .get(proxy.url("/"))
                .header("cookie", "session=sess-bob")
                .header(h.0, h.1),
        )
        .await;
        assert_eq!(e.header_values("x-authgear-user-id"), ["user-bob"]);
    }
    assert_eq!(s.resolver_calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_for_one_new_session_makes_one_call() {
    let s = Stack::builder()
        .resolver_latency(Duration::from_millis(300))
        .start()
        .await;
    let urls = (0..100).map(|_| s.proxy.url("/")).collect();
    herd_as(urls, "session=sess-alice", "user-alice").await;
    assert_eq!(s.resolver_calls(), 1);
}

/// A failing resolver is not hit by every waiter: they share the failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_herd_shares_the_resolver_failure() {
    let c = client();
    let herd = |proxy: &Proxy| -> Vec<tokio::task::JoinHandle<u16>> {
        (0..100)
            .map(|_| {
                let req = c
                    .get(proxy.url("/"))
                    .header("cookie", "session=sess-alice")
                    .send();
                tokio::spawn(async move { req.await.unwrap().status().as_u16() })
            })
            .collect()
    };

    // Answers 500 after 300 ms: all get 502, the resolver sees a handful of calls at most.
    let (raddr, count) = start_canned(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        Duration::from_millis(300),
    )
    .await;
    let s = Stack::builder().resolver(raddr).start().await;
    for r in herd(&s.proxy) {
        assert_eq!(r.await.unwrap(), 502);
    }
    let n = count.load(Ordering::SeqCst);
    assert!(
        (1..=5).contains(&n),
        "{n} resolver calls for 100 concurrent requests"
    );

    // Down: every waiter gets 503.
    let s = Stack::builder().resolver(closed_port()).start().await;
    for r in herd(&s.proxy) {
        assert_eq!(r.await.unwrap(), 503);
    }

    // Too slow: every waiter gets 504. Errors are not cached, so requests that arrive after
    // a failure was delivered start a new attempt: the bound is the number of timeout windows
    // the herd spans, not the number of requests.
    let (raddr, count) = start_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        Duration::from_secs(3),
    )
    .await;
    let s = Stack::builder()
        .resolver(raddr)
        .resolver_body(&format!(
            r#"
            url: http://{raddr}/
            timeout: 500ms
            "#
        ))
        .start()
        .await;
    for r in herd(&s.proxy) {
        assert_eq!(r.await.unwrap(), 504);
    }
    let n = count.load(Ordering::SeqCst);
    assert!(
        (1..=5).contains(&n),
        "{n} resolver calls for 100 concurrent requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_never_cached() {
    let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: true\r\nX-Authgear-User-Id: u-7\r\nContent-Length: 0\r\n\r\n";
    let (raddr, count, reply) =
        start_switchable(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n").await;
    let s = Stack::builder().resolver(raddr).start().await;
    let proxy = &s.proxy;
    for _ in 0..3 {
        assert_eq!(fetch_as(proxy, "/", "session=s").await.status(), 502);
    }
    *reply.lock().unwrap() = ok;
    assert_eq!(user_of(proxy, "session=s").await, ["u-7"]);
    assert_eq!(user_of(proxy, "session=s").await, ["u-7"]);
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "three failures, one success, one hit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_on_and_off() {
    let ok: &'static [u8] = b"HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: true\r\nX-Authgear-User-Id: u-9\r\nContent-Length: 0\r\n\r\n";
    let failing: &'static [u8] = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n";
    for (stale, expect) in [("1m", 200), ("0s", 502)] {
        let (raddr, _, reply) = start_switchable(ok).await;
        let s = Stack::builder()
            .resolver(raddr)
            .yaml(&format!(
                r#"
                cache:
                  ttl: 300ms
                  stale_if_error: {stale}
                "#
            ))
            .start()
            .await;
        let proxy = &s.proxy;
        assert_eq!(user_of(proxy, "session=s").await, ["u-9"]);
        *reply.lock().unwrap() = failing;
        // Let the 300 ms TTL pass; the resolver now fails.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = fetch_as(proxy, "/", "session=s").await;
        assert_eq!(r.status(), expect, "stale_if_error: {stale}");
        if expect == 200 {
            assert_eq!(echoed(r).await.header_values("x-authgear-user-id"), ["u-9"]);
        }
    }
}

const TOKEN: &str = ADMIN_TOKEN;

/// A stack with the admin listener on; returns it and the admin base URL.
async fn with_admin() -> (Stack, String) {
    let s = Stack::builder().admin().start().await;
    let admin = format!("http://{}", s.admin());
    (s, admin)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_on_logout() {
    let (s, admin) = with_admin().await;
    let proxy = &s.proxy;
    let c = client();
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(user_of(proxy, "app_session=tok-bob").await, ["user-bob"]);
    assert_eq!(s.resolver_calls(), 2);

    // Without the token, or with a wrong one: 401, nothing changes.
    for auth in [
        None,
        Some("Bearer wrong-token-wrong-token"),
        Some("Basic dGVzdA=="),
    ] {
        let mut req = c
            .post(format!("{admin}/cache/purge"))
            .body(r#"{"cookie":"session=sess-alice"}"#);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        assert_eq!(req.send().await.unwrap().status(), 401);
    }
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(
        s.resolver_calls(),
        2,
        "an unauthorised purge changed nothing"
    );

    // The backend's logout handler passes on what the client sent.
    let r = c
        .post(format!("{admin}/cache/purge"))
        .bearer_auth(TOKEN)
        .body(r#"{"cookie":"theme=dark; session=sess-alice"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap().trim(), r#"{"purged":true}"#);
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(
        s.resolver_calls(),
        3,
        "the purged session is resolved afresh"
    );
    assert_eq!(user_of(proxy, "app_session=tok-bob").await, ["user-bob"]);
    assert_eq!(s.resolver_calls(), 3, "other sessions stay cached");

    let r = c
        .post(format!("{admin}/cache/purge"))
        .bearer_auth(TOKEN)
        .body(r#"{"cookies":{"app_session":"tok-bob"}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), r#"{"purged":true}"#);
    let e = get_as(proxy, "/", "app_session=tok-bob").await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-bob"]);
    assert_eq!(s.resolver_calls(), 4);

    // A disabled account: every cached answer of that user goes, others stay.
    let r = c
        .post(format!("{admin}/cache/purge"))
        .bearer_auth(TOKEN)
        .body(r#"{"user_id":"user-bob"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap().trim(), r#"{"purged":1}"#);
    let before = s.resolver_calls();
    assert_eq!(user_of(proxy, "app_session=tok-bob").await, ["user-bob"]);
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(
        s.resolver_calls(),
        before + 1,
        "only bob's answer was dropped"
    );

    // Flush drops everything.
    let r = c
        .post(format!("{admin}/cache/flush"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(s.resolver_calls(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_refuses_bad_input() {
    let (_s, admin) = with_admin().await;
    let c = client();
    let post = |path: &str, body: Vec<u8>| {
        c.post(format!("{admin}{path}"))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
    };
    assert_eq!(
        post("/cache/purge", b"not json".to_vec())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post("/cache/purge", b"{}".to_vec()).await.unwrap().status(),
        400
    );
    assert_eq!(
        post("/cache/purge", br#"{"cookie":"a\nb"}"#.to_vec())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post("/cache/purge", br#"{"sessions":"x"}"#.to_vec())
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post("/cache/purge", vec![b' '; 100 * 1024])
            .await
            .unwrap()
            .status(),
        413
    );
    assert_eq!(post("/nope", vec![]).await.unwrap().status(), 404);
    let r = c
        .get(format!("{admin}/cache/purge"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c.get(format!("{admin}/cache/stats")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{admin}/cache/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let stats: serde_json::Value = r.json().await.unwrap();
    assert!(
        stats.get("hits").is_some() && stats.get("evictions").is_some(),
        "{stats}"
    );
    assert_eq!(
        c.get(format!("{admin}/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_counters_follow_traffic() {
    let (s, admin) = with_admin().await;
    let proxy = &s.proxy;
    for _ in 0..3 {
        user_of(proxy, "session=sess-alice").await;
    }
    let stats: serde_json::Value = client()
        .get(format!("{admin}/cache/stats"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["misses"], 1, "{stats}");
    assert_eq!(stats["hits"], 2, "{stats}");
    assert_eq!(stats["size"], 1, "{stats}");
}

/// A logout route: the backend's 2xx or 3xx drops the cached answer for the request's
/// credentials; a failed logout keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_route_drops_the_session_answer() {
    let (failing, _) = start_canned(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
        Duration::ZERO,
    )
    .await;
    let s = Stack::builder()
        .pool("app", Pool::echoes(1))
        .pool("broken", Pool::at(&[failing]))
        .routes(
            r#"
            - path: /
              upstream: app
            - path: /logout
              upstream: app
              logout: true
            - path: /logout-broken
              upstream: broken
              logout: true
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;
    let calls = || s.resolver_calls();
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(user_of(proxy, "session=sess-bob").await, ["user-bob"]);
    assert_eq!(calls(), 2);
    let alice_logs_out = |path: &str| {
        client()
            .post(proxy.url(path))
            .header("cookie", "session=sess-alice")
            .send()
    };
    // A logout the backend refuses changes nothing.
    let r = alice_logs_out("/logout-broken").await.unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(calls(), 2, "still cached after a failed logout");
    // The app's logout answers 200: alice's answer is dropped, bob's stays.
    let r = alice_logs_out("/logout").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(user_of(proxy, "session=sess-alice").await, ["user-alice"]);
    assert_eq!(calls(), 3, "resolved afresh after the logout");
    assert_eq!(user_of(proxy, "session=sess-bob").await, ["user-bob"]);
    assert_eq!(calls(), 3, "other sessions stay cached");
    // A sign-out that redirects to the identity provider's (the echo answers 303 here).
    let r = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(proxy.url("/logout?status=303&h-location=/"))
        .header("cookie", "session=sess-bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(user_of(proxy, "session=sess-bob").await, ["user-bob"]);
    assert_eq!(calls(), 4, "resolved afresh after a logout that redirects");
}

//! CORS per route, end to end: authgate answers a real preflight from the route's policy
//! without asking the resolver or the backend; other requests are judged as before and carry
//! the grant for an allowed origin only.

mod common;

use common::*;

const APP: &str = "http://app.example:5173";

async fn stack() -> Stack {
    Stack::builder()
        .routes(&format!(
            r#"
            - path: /
              upstream: app
            - path: /api
              upstream: app
              auth: require
              cors:
                allow_origins: ["{APP}"]
                allow_methods: [GET, POST, DELETE]
                allow_headers: [content-type]
                expose_headers: [x-request-id]
                allow_credentials: true
                max_age: 10m
            - path: /plain
              upstream: app
              auth: require
            "#
        ))
        .start()
        .await
}

fn preflight(s: &Stack, path: &str, origin: &str, method: &str) -> reqwest::RequestBuilder {
    client()
        .request(reqwest::Method::OPTIONS, s.proxy.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
}

fn header<'r>(r: &'r reqwest::Response, name: &str) -> Option<&'r str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_by_authgate_from_the_policy() {
    let s = stack().await;
    let r = preflight(&s, "/api/items", APP, "DELETE")
        .header("access-control-request-headers", "Content-Type")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        Some("GET, POST, DELETE")
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        Some("content-type")
    );
    assert_eq!(header(&r, "access-control-max-age"), Some("600"));
    assert!(header(&r, "vary").is_some_and(|v| v.starts_with("Origin")));
    assert_eq!(
        s.resolver_calls(),
        0,
        "a preflight never reaches the resolver"
    );

    // Another origin, method or header: refused, and nothing that grants anything.
    for r in [
        preflight(&s, "/api/items", "http://evil.example", "GET"),
        preflight(&s, "/api/items", "http://app.example:5174", "GET"),
        preflight(&s, "/api/items", "https://app.example:5173", "GET"),
        preflight(&s, "/api/items", APP, "PUT"),
        preflight(&s, "/api/items", APP, "GET").header("access-control-request-headers", "x-other"),
    ] {
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 403);
        assert!(
            r.headers()
                .keys()
                .all(|n| !n.as_str().starts_with("access-control-")),
            "{:?}",
            r.headers()
        );
    }
    assert_eq!(s.resolver_calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_are_not_preflights_are_judged_by_the_route() {
    let s = stack().await;
    // An OPTIONS without Access-Control-Request-Method is no free pass.
    let r = client()
        .request(reqwest::Method::OPTIONS, s.proxy.url("/api/items"))
        .header("origin", APP)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The 401 carries the grant, so the SPA can read it and send its user to log in.
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    // A route without a policy judges a preflight as before.
    let r = preflight(&s, "/plain", APP, "GET").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(&r, "access-control-allow-origin"), None);

    // The real request: the backend answers, authgate adds the grant for an allowed origin.
    let r = client()
        .get(s.proxy.url("/api/items"))
        .header("origin", APP)
        .header("cookie", "session=sess-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&r, "access-control-allow-credentials"), Some("true"));
    assert_eq!(
        header(&r, "access-control-expose-headers"),
        Some("x-request-id")
    );
    assert_eq!(header(&r, "vary"), Some("Origin"));
    let echo = echoed(r).await;
    assert_eq!(echo.header_values("x-authgear-user-id"), ["user-alice"]);

    // Another origin gets the backend's answer, with no CORS headers (even ones the backend
    // sent itself: the route's policy owns them).
    let r = client()
        .get(
            s.proxy
                .url("/api/items?h-access-control-allow-origin=http%3A%2F%2Fevil.example"),
        )
        .header("origin", "http://evil.example")
        .header("cookie", "session=sess-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .keys()
            .all(|n| !n.as_str().starts_with("access-control-")),
        "{:?}",
        r.headers()
    );
    assert_eq!(header(&r, "vary"), Some("Origin"));
}

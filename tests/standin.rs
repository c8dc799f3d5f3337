//! The resolver stand-in follows the resolver contract (docs/resolver-contract.md).

mod common;

use std::time::Duration;

use common::*;

async fn ask(
    addr: std::net::SocketAddr,
    build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
) -> reqwest::Response {
    build(client().get(format!("http://{addr}/_resolver/resolve")))
        .send()
        .await
        .unwrap()
}

fn h(r: &reqwest::Response, n: &str) -> Option<String> {
    r.headers().get(n).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test]
async fn credentials_in_authgear_order() {
    let (_s, a) = start_standin(Duration::ZERO).await;
    // Bearer first, whatever the cookies say.
    let r = ask(a, |b| {
        b.header("authorization", "bearer tok-bob")
            .header("cookie", "session=sess-alice")
    })
    .await;
    assert_eq!(h(&r, "x-authgear-user-id").as_deref(), Some("user-bob"));
    // app_session before app_access_token before session.
    let r = ask(a, |b| {
        b.header(
            "cookie",
            "session=sess-bob; app_access_token=tok-bob; app_session=tok-alice",
        )
    })
    .await;
    assert_eq!(h(&r, "x-authgear-user-id").as_deref(), Some("user-alice"));
    let r = ask(a, |b| {
        b.header("cookie", "session=sess-alice; app_access_token=tok-bob")
    })
    .await;
    assert_eq!(h(&r, "x-authgear-user-id").as_deref(), Some("user-bob"));
    let r = ask(a, |b| b.header("cookie", "other=1; session=sess-alice")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-authgear-session-valid").as_deref(), Some("true"));
    assert_eq!(h(&r, "x-authgear-user-roles").as_deref(), Some("admin"));
    assert_eq!(h(&r, "x-authgear-session-amr").as_deref(), Some("pwd"));
    assert!(r.text().await.unwrap().is_empty(), "answers carry no body");
}

#[tokio::test]
async fn invalid_and_missing_credentials() {
    let (_s, a) = start_standin(Duration::ZERO).await;
    let r = ask(a, |b| b).await;
    assert_eq!(r.status(), 200);
    assert!(r
        .headers()
        .keys()
        .all(|k| !k.as_str().starts_with("x-authgear-")));
    let r = ask(a, |b| b.bearer_auth("unknown")).await;
    assert!(h(&r, "x-authgear-session-valid").is_none());
    let r = ask(a, |b| b.header("cookie", "session=unknown")).await;
    assert_eq!(h(&r, "x-authgear-session-valid").as_deref(), Some("false"));
    let sc = h(&r, "set-cookie").unwrap();
    assert!(sc.starts_with("session=;") && sc.contains("1970"), "{sc}");
    let r = ask(a, |b| b.header("cookie", "session=sess-carol")).await;
    assert_eq!(h(&r, "x-authgear-session-valid").as_deref(), Some("false"));
    assert!(h(&r, "x-authgear-user-id").is_none());
}

#[tokio::test]
async fn methods_and_paths() {
    let (_s, a) = start_standin(Duration::ZERO).await;
    let c = client();
    let r = c
        .post(format!("http://{a}/_resolver/resolve"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    let r = c
        .head(format!("http://{a}/resolve"))
        .header("cookie", "session=sess-bob")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h(&r, "x-authgear-user-id").as_deref(), Some("user-bob"));
    let r = c.get(format!("http://{a}/elsewhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn latency_is_applied() {
    let (_s, a) = start_standin(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let r = ask(a, |b| b).await;
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// The benchmark mode: unknown sessions with the prefix are valid users of their own; other
/// unknown sessions are still invalid, and known ones unchanged.
#[tokio::test]
async fn any_session_prefix_makes_synthetic_users() {
    use authgate::devserver::{self, standin};
    use std::sync::Arc;
    let (l, a) = listener().await;
    let dir = standin::Directory::from_yaml(USERS).unwrap();
    let s = Arc::new(standin::Standin::new(dir, Duration::ZERO).with_any_session_prefix("bench-"));
    let handler = s.clone();
    tokio::spawn(devserver::serve(
        l,
        None,
        s.stats.connections.clone(),
        move |req| handler.clone().handle(req),
    ));
    let r = ask(a, |b| b.header("cookie", "session=bench-42")).await;
    assert_eq!(h(&r, "x-authgear-session-valid").as_deref(), Some("true"));
    assert_eq!(
        h(&r, "x-authgear-user-id").as_deref(),
        Some("bench-user-42")
    );
    let r = ask(a, |b| b.header("cookie", "session=other-42")).await;
    assert_eq!(h(&r, "x-authgear-session-valid").as_deref(), Some("false"));
    let r = ask(a, |b| b.header("cookie", "session=sess-alice")).await;
    assert_eq!(h(&r, "x-authgear-user-id").as_deref(), Some("user-alice"));
}

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

/// The login pages send a browser back only to the app's origin: hostile `return_to` values
/// are refused on the page and on the form, and no session is started for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_page_is_no_open_redirect() {
    let dir = authgate::devserver::standin::Directory::from_yaml(USERS).unwrap();
    let standin = std::sync::Arc::new(
        authgate::devserver::standin::Standin::new(dir, std::time::Duration::ZERO)
            .with_login(&["http://localhost:8080".to_string()])
            .unwrap(),
    );
    let (l, addr) = listener().await;
    let s = standin.clone();
    tokio::spawn(authgate::devserver::serve(
        l,
        None,
        standin.stats.connections.clone(),
        move |req| s.clone().handle(req),
    ));
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let enc = |v: &str| {
        percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
    };
    let login = |return_to: &str| {
        http.post(format!("http://{addr}/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("user=user-alice&return_to={}", enc(return_to)))
            .send()
    };
    let r = login("http://localhost:8080/account?x=1").await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "http://localhost:8080/account?x=1");
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("session=login-"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && cookie.contains("Path=/;")
    );
    for hostile in [
        "https://evil.example/",
        "//evil.example",
        "https:evil.example",
        "/\\evil.example",
        "http://localhost:8080\\@evil.example",
        "http://localhost:8080@evil.example",
        "http://localhost:8080.evil.example/",
        "http%3A%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "javascript:alert(1)",
    ] {
        let r = login(hostile).await.unwrap();
        assert_eq!(r.status(), 400, "{hostile}");
        assert!(r.headers().get("location").is_none(), "{hostile}");
        assert!(r.headers().get("set-cookie").is_none(), "{hostile}");
        let r = http
            .get(format!("http://{addr}/login?return_to={}", enc(hostile)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{hostile}");
        let page = r.text().await.unwrap();
        assert!(!page.contains("<script"), "{page}");
        let r = http
            .get(format!("http://{addr}/logout?return_to={}", enc(hostile)))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{hostile}");
    }
    // Markup in a refused return_to is shown as text.
    let r = http
        .get(format!(
            "http://{addr}/login?return_to={}",
            enc("\"><script>x</script>")
        ))
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("&quot;&gt;&lt;script&gt;"));
}

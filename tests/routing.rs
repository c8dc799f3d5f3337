//! Routes, auth policies, upstream pools, health checks and the resolver pool, end to end.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;

/// The status line of a raw `GET path` (sent as is: HTTP clients would normalise the path).
async fn raw_status(addr: SocketAddr, path: &str) -> String {
    let out = raw(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(),
        b"\r\n\r\n",
    )
    .await;
    String::from_utf8_lossy(&out[..12.min(out.len())]).to_string()
}

async fn served_by(resp: reqwest::Response) -> String {
    echoed(resp).await.served_by
}

/// The stack's backends, one a pool.
fn backends<const N: usize>(s: &Stack) -> [SocketAddr; N] {
    s.backends[..].try_into().expect("one backend a pool")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_most_specific_route_wins() {
    let s = Stack::builder()
        .pool("a", Pool::echoes(1))
        .pool("b", Pool::echoes(1))
        .pool("c", Pool::echoes(1))
        .pool("d", Pool::echoes(1))
        .routes(
            r#"
            - path: /
              upstream: a
            - path: /api
              upstream: b
            - host: api.example.test
              upstream: c
            - path: /api
              methods: [POST]
              upstream: d
            - host: "*.example.test"
              path: /wild
              upstream: d
            "#,
        )
        .start()
        .await;
    let (proxy, [a, b, c, d]) = (&s.proxy, backends(&s));
    let c_ = client();
    let get = |path: &str, host: &str| c_.get(proxy.url(path)).header("host", host).send();
    assert_eq!(
        served_by(get("/x", "h").await.unwrap()).await,
        a.to_string()
    );
    assert_eq!(
        served_by(get("/api", "h").await.unwrap()).await,
        b.to_string()
    );
    assert_eq!(
        served_by(get("/api/x", "h").await.unwrap()).await,
        b.to_string()
    );
    assert_eq!(
        served_by(get("/apix", "h").await.unwrap()).await,
        a.to_string(),
        "segment-aware"
    );
    assert_eq!(
        served_by(get("/api/x", "api.example.test").await.unwrap()).await,
        c.to_string(),
        "host beats path"
    );
    assert_eq!(
        served_by(get("/wild/1", "www.example.test:8080").await.unwrap()).await,
        d.to_string()
    );
    let post = c_
        .post(proxy.url("/api/x"))
        .header("host", "h")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        served_by(post).await,
        d.to_string(),
        "a route naming the method wins"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_without_a_resolve() {
    let s = Stack::builder()
        .routes(
            r#"
            - path: /api
              upstream: app
            "#,
        )
        .start()
        .await;
    // Prefixes are segment-aware: /apix is not under /api.
    for path in ["/other", "/apix"] {
        let r = fetch(&s.proxy, path).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.text().await.unwrap().contains("no route"), "{path}");
    }
    assert_eq!(s.resolver_calls(), 0);
    let e = get_as(&s.proxy, "/api/v1", "").await;
    assert_eq!(e.uri, "/api/v1");
}

/// Routing decides on the path the backend will act on. Sent raw: HTTP clients would
/// normalise these paths themselves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_tricks_cannot_reach_a_protected_route() {
    let s = Stack::builder()
        .pool("open", Pool::echoes(1))
        .pool("private", Pool::echoes(1))
        .routes(
            r#"
            - path: /
              upstream: open
              auth: public
            - path: /private
              upstream: private
              auth: require
            "#,
        )
        .start()
        .await;
    let (proxy, [open, private]) = (&s.proxy, backends(&s));
    for path in [
        "/private",
        "/public/../private",
        "/public/%2e%2e/private",
        "/public/%2E%2e/private/x",
        "//private",
        "/./private",
        "/public/..;/private",
        "/%70rivate",
        "/private;jsessionid=1",
    ] {
        assert_eq!(raw_status(proxy.addr, path).await, "HTTP/1.1 401", "{path}");
    }
    for path in [
        "/public%2F..%2Fprivate",
        "/public%5C..%5Cprivate",
        "/a%zz",
        "/a%00",
    ] {
        assert_eq!(raw_status(proxy.addr, path).await, "HTTP/1.1 400", "{path}");
    }
    // With a session, the backend receives the normalised path it was routed on.
    let out = raw(
        proxy.addr,
        b"GET /public/%2e%2e/private/./x?q=%2e%2e HTTP/1.1\r\nHost: h\r\nCookie: session=sess-alice\r\nConnection: close\r\n\r\n",
        b"}",
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains(r#""uri":"/private/x?q=%2e%2e""#), "{text}");
    assert!(
        text.contains(&format!(r#""served_by":"{private}""#)),
        "{text}"
    );
    // The query string never decides a route.
    let out = raw(
        proxy.addr,
        b"GET /?/private HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"}",
    )
    .await;
    assert!(String::from_utf8_lossy(&out).contains(&format!(r#""served_by":"{open}""#)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_public_identify_require_and_roles() {
    let s = Stack::builder()
        .routes(
            r#"
            - path: /open
              upstream: app
              auth: public
            - path: /app
              upstream: app
              auth: require
            - path: /admin
              upstream: app
              auth: require
              roles: [admin, owner]
            - path: /
              upstream: app
            "#,
        )
        .yaml(
            r#"
            login:
              url: https://login.example.test/signin
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;
    let c = client();

    // public: no resolver call, and forged identity is still stripped.
    let e = send_echo(
        c.get(proxy.url("/open"))
            .header("cookie", "session=sess-alice")
            .header("x-authgear-user-id", "forged")
            .header("x_authgear_session_valid", "true"),
    )
    .await;
    assert!(identity_headers(&e).is_empty(), "{:?}", e.headers);
    assert_eq!(s.resolver_calls(), 0);

    // identify (the default): anonymous requests pass, with no identity.
    let e = send_echo(c.get(proxy.url("/home"))).await;
    assert!(identity_headers(&e).is_empty());

    // require, API client: 401 with a small JSON body.
    for cookie in [None, Some("session=unknown"), Some("session=sess-carol")] {
        let mut req = c
            .get(proxy.url("/app/data"))
            .header("accept", "application/json");
        if let Some(ck) = cookie {
            req = req.header("cookie", ck);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{cookie:?}");
        assert_eq!(r.headers()["content-type"], "application/json");
        assert!(r.text().await.unwrap().contains("authentication_required"));
    }

    // require, browser: a redirect to the login page, carrying the way back.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_redirects
        .get(proxy.url("/app/page?tab=2"))
        .header("host", "app.example.test")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://login.example.test/signin?return_to=http%3A%2F%2Fapp.example.test%2Fapp%2Fpage%3Ftab%3D2"
    );

    // require with a valid session passes.
    let e = get_as(proxy, "/app/data", "session=sess-bob").await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-bob"]);

    // roles: alice is an admin, bob has no role.
    let e = get_as(proxy, "/admin", "session=sess-alice").await;
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-alice"]);
    let r = fetch_as(proxy, "/admin", "session=sess-bob").await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_alternates_and_consistent_hashing_sticks() {
    let s = Stack::builder()
        .pool("rr", Pool::echoes(2).keys("lb: round_robin"))
        .pool(
            "sticky",
            Pool::echoes(2).keys(
                r#"
                lb: consistent
                hash_key: header:x-tenant
                "#,
            ),
        )
        .routes(
            r#"
            - path: /rr
              upstream: rr
            - path: /sticky
              upstream: sticky
            "#,
        )
        .start()
        .await;
    let proxy = &s.proxy;
    let cl = client();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(served_by(cl.get(proxy.url("/rr")).send().await.unwrap()).await);
    }
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "round robin alternates: {seen:?}");
    }
    let mut by_tenant: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for round in 0..3 {
        for t in 0..20 {
            let tenant = format!("tenant-{t}");
            let who = served_by(
                cl.get(proxy.url("/sticky"))
                    .header("x-tenant", &tenant)
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            by_tenant.entry(tenant).or_default().insert(who);
            let _ = round;
        }
    }
    assert!(
        by_tenant.values().all(|s| s.len() == 1),
        "one backend per tenant: {by_tenant:?}"
    );
    let used: BTreeSet<_> = by_tenant.values().flatten().collect();
    assert_eq!(used.len(), 2, "20 tenants spread over both backends");
}

/// A backend dies under a steady stream of requests: no client sees an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_causes_no_client_errors() {
    let mut doomed = EchoProcess::start(closed_port());
    let survivor = EchoProcess::start(closed_port());
    let s = Stack::builder()
        .pool(
            "app",
            Pool::at(&[doomed.addr, survivor.addr]).keys("retries: 2"),
        )
        .start()
        .await;
    let proxy = &s.proxy;
    let clients = (0..4).map(|_| client()).collect();
    let streams = Streams::start(
        clients,
        &proxy.url("/"),
        "session=sess-bob",
        Duration::from_millis(2500),
    );
    tokio::time::sleep(Duration::from_millis(800)).await;
    doomed.kill();
    let total: usize = streams
        .no_failures("after a backend died")
        .await
        .iter()
        .sum();
    assert!(total > 20, "only {total} requests ran");
}

/// A stack whose pool `app` is `backends`, health-checked every 200 ms, with the admin.
async fn health_checked(backends: &[SocketAddr]) -> Stack {
    Stack::builder()
        .pool(
            "app",
            Pool::at(backends).keys(
                r#"
                health_check:
                  path: /healthz
                  interval: 200ms
                  timeout: 200ms
                "#,
            ),
        )
        .admin()
        .start()
        .await
}

/// The state (`up`, `down`) the admin's `/upstreams` gives `who` of pool `app`.
fn health_state(v: &serde_json::Value, who: SocketAddr) -> String {
    v["app"][who.to_string()]
        .as_str()
        .unwrap_or("?")
        .to_string()
}

/// Waits (10 s at most) for `who` to be `want`; the `/upstreams` answer that said so.
async fn until_health(admin: SocketAddr, who: SocketAddr, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = admin_get(admin, "/upstreams").await;
        if health_state(&v, who) == want {
            return v;
        }
        assert!(Instant::now() < deadline, "{who} never became {want}: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_mark_backends_down_and_up() {
    let port = closed_port();
    let mut flaky = EchoProcess::start(port);
    let steady = EchoProcess::start(closed_port());
    let (f, st) = (flaky.addr, steady.addr);
    let s = health_checked(&[f, st]).await;
    let (proxy, admin) = (&s.proxy, s.admin());
    let until = |want: &'static str, who: SocketAddr| until_health(admin, who, want);
    let v = until("up", f).await;
    assert_eq!(health_state(&v, st), "up");

    flaky.kill();
    until("down", f).await;
    // While it is down, every request goes to the healthy backend without trying the dead one:
    // a try would count as an upstream error.
    let errors = "authgate_upstream_errors_total{upstream=\"app\"}";
    let before = metric(&scrape(admin).await, errors);
    for _ in 0..6 {
        assert_eq!(served_by(fetch(proxy, "/").await).await, st.to_string());
    }
    assert_eq!(
        metric(&scrape(admin).await, errors),
        before,
        "the dead one was tried"
    );
    let _back = EchoProcess::start(port);
    until("up", f).await;
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        seen.insert(served_by(fetch(proxy, "/").await).await);
    }
    assert_eq!(
        seen.len(),
        2,
        "the recovered backend serves again: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_backend_taken_down_by_health_checks_is_not_tried() {
    // A pool of one backend skips the balancer; its health still decides.
    let port = closed_port();
    let mut only = EchoProcess::start(port);
    let a = only.addr;
    let s = health_checked(&[a]).await;
    let (proxy, admin) = (&s.proxy, s.admin());
    let until = |want: &'static str| until_health(admin, a, want);
    until("up").await;
    assert_eq!(served_by(fetch(proxy, "/").await).await, a.to_string());

    only.kill();
    until("down").await;
    let errors = "authgate_upstream_errors_total{upstream=\"app\"}";
    let before = metric(&scrape(admin).await, errors);
    for _ in 0..3 {
        assert_eq!(fetch(proxy, "/").await.status(), 502);
    }
    assert_eq!(
        metric(&scrape(admin).await, errors),
        before,
        "the backend that is down was tried"
    );
    let _back = EchoProcess::start(port);
    until("up").await;
    assert_eq!(served_by(fetch(proxy, "/").await).await, a.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_down_is_502_with_a_reason() {
    let (x, y) = (closed_port(), closed_port());
    let s = Stack::builder()
        .pool("app", Pool::at(&[x, y]))
        .start()
        .await;
    let proxy = &s.proxy;
    let r = fetch(proxy, "/").await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(
        text.starts_with("authgate: ") && text.contains("`app`"),
        "{text}"
    );
    // Both were tried, and refused the connection (not a TLS or a timeout failure).
    for b in [x, y] {
        proxy.log_line(&["ConnectRefused", &b.to_string()]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_instance_down_causes_no_failures() {
    let (standin, raddr) = start_standin(Duration::ZERO).await;
    let down = closed_port();
    let s = Stack::builder()
        .resolver(raddr)
        .resolver_body(&format!(
            r#"
            url: http://{raddr}/_resolver/resolve
            backends: [{down}, {raddr}]
            health_check:
              interval: 200ms
              timeout: 200ms
            "#
        ))
        .start()
        .await;
    let proxy = &s.proxy;
    // Distinct sessions: every request is a cache miss that reaches a resolver instance.
    for i in 0..20 {
        let r = client()
            .get(proxy.url("/"))
            .header("cookie", format!("session=unknown-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "request {i}");
    }
    // Each request reached the live instance once (health probes carry no cookie).
    let resolves = standin
        .stats
        .recent()
        .iter()
        .filter(|r| r.header("cookie").is_some())
        .count();
    assert_eq!(resolves, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_backends_with_sni_private_ca_and_verify_off() {
    let (ca, cert, key) = test_pki(&["backend.internal"]);
    let tls = authgate::devserver::tls_config(cert.as_bytes(), key.as_bytes()).unwrap();
    let (l, backend) = listener().await;
    tokio::spawn(authgate::devserver::serve(
        l,
        Some(tls),
        Default::default(),
        authgate::devserver::echo::handler("tls-backend"),
    ));
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, ca).unwrap();
    let ca_path = ca_path.display();
    let start = |tls_yaml: String| async move {
        Stack::builder()
            .pool("secure", Pool::at(&[backend]).keys(&tls_yaml))
            .routes(&all_to("secure"))
            .start()
            .await
            .proxy
    };
    let trusted = start(format!(
        r#"
        tls:
          sni: backend.internal
          ca_file: {ca_path}
        "#
    ))
    .await;
    let e = send_echo(
        client()
            .get(trusted.url("/"))
            .header("cookie", "session=sess-alice"),
    )
    .await;
    assert_eq!(e.served_by, "tls-backend");
    assert_eq!(e.header_values("x-authgear-user-id"), ["user-alice"]);

    // The system roots do not know the test CA: refused, 502, and the log says it was the
    // certificate (not a backend that is down).
    let untrusted = start(
        r#"
        tls:
          sni: backend.internal
        "#
        .into(),
    )
    .await;
    assert_eq!(fetch(&untrusted, "/").await.status(), 502);
    untrusted.log_line(&[
        "TLSHandshakeFailure",
        "UnknownIssuer",
        "SNI: backend.internal",
    ]);
    // A name the certificate does not carry: refused.
    let wrong_name = start(format!(
        r#"
        tls:
          sni: other.internal
          ca_file: {ca_path}
        "#
    ))
    .await;
    assert_eq!(fetch(&wrong_name, "/").await.status(), 502);
    wrong_name.log_line(&[
        "TLSHandshakeFailure",
        "not valid for name",
        "SNI: other.internal",
    ]);
    // Verification off (a lab): accepted.
    let lab = start(
        r#"
        tls:
          sni: backend.internal
          verify: false
        "#
        .into(),
    )
    .await;
    assert_eq!(served_by(fetch(&lab, "/").await).await, "tls-backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_times_out_with_504() {
    let (slow, _) = start_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_secs(3),
    )
    .await;
    let s = Stack::builder()
        .pool("slow", Pool::at(&[slow]).keys("read_timeout: 300ms"))
        .routes(&all_to("slow"))
        .start()
        .await;
    let started = Instant::now();
    let r = fetch(&s.proxy, "/").await;
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(r.text().await.unwrap().contains("timed out"));
}

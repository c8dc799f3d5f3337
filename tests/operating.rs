//! Operating authgate: metrics and the access log.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_requests_flow() {
    let s = Stack::builder().admin().start().await;
    let (proxy, admin, backend) = (&s.proxy, s.admin(), s.backend());
    let before = scrape(admin).await;
    for series in [
        "authgate_inflight_requests",
        "authgate_cache_hits_total",
        "authgate_cache_size",
        "authgate_backend_up{upstream=\"app\"",
    ] {
        assert!(before.contains(series), "{series} missing:\n{before}");
    }
    for _ in 0..3 {
        get_as(proxy, "/", "session=sess-alice").await;
    }
    fetch_as(proxy, "/", "session=nope").await;
    // A request is counted in its logging phase, after the client has its answer: wait for
    // the last one to be counted before reading the rest.
    metric_reaches(
        admin,
        "authgate_requests_total{route=\"*/\",status=\"2xx\"}",
        4.0,
    )
    .await;
    metric_reaches(admin, "authgate_inflight_requests", 0.0).await;
    let after = scrape(admin).await;
    assert_eq!(
        metric(
            &after,
            "authgate_requests_total{route=\"*/\",status=\"2xx\"}"
        ),
        4.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "authgate_resolver_calls_total{outcome=\"valid\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "authgate_resolver_calls_total{outcome=\"invalid\"}"),
        1.0,
        "{after}"
    );
    assert_eq!(
        metric(&after, "authgate_resolver_latency_seconds_count"),
        2.0,
        "{after}"
    );
    assert_eq!(metric(&after, "authgate_cache_hits_total"), 2.0, "{after}");
    assert_eq!(metric(&after, "authgate_cache_size"), 2.0, "{after}");
    assert_eq!(
        metric(
            &after,
            &format!("authgate_backend_up{{upstream=\"app\",backend=\"{backend}\"}}")
        ),
        1.0,
        "{after}"
    );
    assert_eq!(metric(&after, "authgate_inflight_requests"), 0.0, "{after}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_names_the_user_never_the_credentials() {
    let (stack, log_path) = Stack::builder().access_log_file();
    let s = stack.start().await;
    let (proxy, backend) = (&s.proxy, s.backend());
    send_echo(
        client()
            .get(proxy.url("/orders?token=secret-in-query"))
            .header("cookie", "session=sess-alice; other=cookie-value")
            .header("authorization", "Bearer tok-alice"),
    )
    .await;
    let line = access_log_lines(&log_path, 1).await.remove(0);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["user_id"], "user-alice", "{line}");
    assert_eq!(v["status"], 200);
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/orders");
    assert_eq!(v["route"], "*/");
    assert_eq!(v["backend"], backend.to_string());
    assert_eq!(v["resolver"], "valid");
    assert_eq!(v["cache"], "miss");
    assert_eq!(v["client_ip"], "127.0.0.1");
    assert!(
        v["total_ms"].as_f64().is_some() && v["resolver_ms"].as_f64().is_some(),
        "{line}"
    );
    assert!(v["bytes"].as_u64().unwrap_or(0) > 0, "{line}");
    for secret in ["sess-alice", "tok-alice", "cookie-value", "secret-in-query"] {
        assert!(
            !line.contains(secret),
            "{secret} leaked into the access log: {line}"
        );
    }
}

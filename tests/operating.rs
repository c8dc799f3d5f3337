//! Operating authgate: metrics and the access log.

mod common;

use std::time::{Duration, Instant};

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

/// A client that goes away while its request waits on the backend: the request is not sent
/// to the backend again (it was, as a retry of a "failed" reused backend connection), the
/// access log says 499 (nginx's code), a metric counts it, and the log has no error line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_is_neither_retried_nor_an_error() {
    use std::sync::atomic::Ordering;
    use tokio::io::AsyncWriteExt;
    let backend = serve_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::ZERO,
        true,
    )
    .await;
    let (stack, log_path) = Stack::builder()
        .pool("app", Pool::at(&[backend.addr]))
        .routes(ALL_PUBLIC)
        .admin()
        .access_log_file();
    let s = stack.start().await;
    // A first request leaves a pooled backend connection, which the next one reuses.
    let r = client().get(s.proxy.url("/first")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    backend.delay_ms.store(3_000, Ordering::SeqCst);
    let mut conn = tokio::net::TcpStream::connect(s.proxy.addr).await.unwrap();
    let request = format!("GET /left HTTP/1.1\r\nHost: {}\r\n\r\n", s.proxy.addr);
    conn.write_all(request.as_bytes()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while backend.calls.load(Ordering::SeqCst) < 2 {
        assert!(
            Instant::now() < deadline,
            "the backend never got the request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(conn);
    // The request's log line is written once authgate is done with it, retries included.
    let lines = access_log_lines(&log_path, 2).await;
    let v: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(v["path"], "/left", "{}", lines[1]);
    assert_eq!(v["status"], 499, "{}", lines[1]);
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        2,
        "sent to the backend again"
    );
    metric_reaches(s.admin(), "authgate_client_disconnects_total", 1.0).await;
    let log = s.proxy.log();
    assert!(
        !log.lines()
            .any(|l| l.contains("ERROR") || l.contains("WARN  pingora")),
        "{log}"
    );
}

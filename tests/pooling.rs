//! Pooled backend connections under steady keep-alive load with several worker threads: a
//! connection released on one thread is reused by another, not replaced by a new one; and
//! taking one from the pool does not carry a new connection's state in its future.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::devserver::{self, echo};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pooled_connections_are_reused_across_threads() {
    let (l, backend) = listener().await;
    let opened = Arc::new(AtomicU64::new(0));
    tokio::spawn(devserver::serve(
        l,
        None,
        opened.clone(),
        echo::handler("pooled"),
    ));
    // Two worker threads, each its own runtime, as shipped (work_stealing: false).
    let s = Stack::builder()
        .pool("app", Pool::at(&[backend]))
        .routes(ALL_PUBLIC)
        .pingora_keys("work_stealing: false")
        .start()
        .await;
    let proxy = &s.proxy;
    const CLIENTS: u64 = 8;
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (url, done) = (proxy.url("/"), done.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < until {
                let r = c.get(&url).send().await.expect("request");
                assert_eq!(r.status(), 200);
                r.bytes().await.expect("body");
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    let requests = done.load(Ordering::SeqCst);
    let connections = opened.load(Ordering::SeqCst);
    assert!(requests > 2_000, "too few requests to judge: {requests}");
    // At most one connection per concurrent request (and a few for the threads' first
    // moments), however many requests: none opened because a pooled one was not acquired.
    assert!(
        connections <= CLIENTS + 2,
        "{connections} backend connections for {requests} requests from {CLIENTS} clients"
    );
    assert!(
        !proxy.log().contains("failed to acquire reusable stream"),
        "{}",
        proxy.log()
    );
}

/// Pingora's proxy copies each request's whole future into a box (async_trait), and checking out
/// an upstream connection is part of it. The state of opening one (TCP connect, TLS handshake)
/// is boxed apart (vendor/pingora-core patch), so a request on a pooled connection does not
/// copy it: without the patch this future is 8,840 bytes in a release build.
#[test]
fn checking_out_a_pooled_connection_carries_no_connect_state() {
    let connector = pingora::connectors::http::Connector::new(None);
    let peer = pingora::upstreams::peer::HttpPeer::new("127.0.0.1:9", true, "backend.test".into());
    let checkout = connector.get_http_session(&peer);
    let size = std::mem::size_of_val(&checkout);
    assert!(size < 2048, "get_http_session's future is {size} bytes");
}

/// A peer that closes each kept-alive connection when it is reused (the request is read, no
/// answer byte is sent), with many such connections pooled: what a graceful reload of the
/// peer, or a load balancer's idle timeout, does to every idle connection at once. The pool
/// is filled by `FILL` concurrent requests the peer answers slowly (each needs a connection
/// of its own), then `SEQUENTIAL` requests each take a pooled connection that fails.
const FILL: usize = 16;
const SEQUENTIAL: usize = 20;

/// Fills the pool, sends the sequential requests, and checks that none failed and that the
/// peer answered each request once (the dropped attempts went unanswered).
async fn fill_then_reuse(proxy: &Proxy, canned: &Canned, path: &str) {
    canned.delay_ms.store(300, Ordering::SeqCst);
    let c = client();
    let fill = (0..FILL).map(|i| {
        let r = c
            .get(proxy.url(path))
            .header("cookie", format!("session=fill-{i}"))
            .send();
        async move { r.await.expect("fill request").status().as_u16() }
    });
    let statuses = futures_util::future::join_all(fill).await;
    assert!(statuses.iter().all(|&s| s == 200), "fill: {statuses:?}");
    let opened = canned.connections.load(Ordering::SeqCst);
    assert!(
        opened >= 8,
        "only {opened} connections pooled by {FILL} concurrent requests"
    );
    canned.delay_ms.store(0, Ordering::SeqCst);
    let mut statuses = Vec::new();
    for i in 0..SEQUENTIAL {
        let r = c
            .get(proxy.url(path))
            .header("cookie", format!("session=next-{i}"))
            .send()
            .await
            .expect("request");
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [200; SEQUENTIAL], "{}", proxy.log());
    assert_eq!(
        canned.calls.load(Ordering::SeqCst) as usize,
        FILL + SEQUENTIAL
    );
}

/// The resolver's retry goes to a new connection: another pooled one would be as stale (the
/// old client took the next pooled connection and failed 6 to 8 of these 20 with 502).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_closing_every_reused_connection_costs_no_request() {
    let reply = b"HTTP/1.1 200 OK\r\nX-Authgear-Session-Valid: true\r\nX-Authgear-User-Id: u-1\r\nContent-Length: 0\r\n\r\n";
    let canned = serve_canned(reply, Duration::ZERO, false).await;
    let s = Stack::builder()
        .resolver(canned.addr)
        .yaml("cache:\n  ttl: 0s\n  negative_ttl: 0s\n  refresh_after: 0s\n")
        .admin()
        .start()
        .await;
    fill_then_reuse(&s.proxy, &canned, "/").await;
    // Each of them found a stale connection, failed on it, and was answered on a new one.
    let retries = metric(&scrape(s.admin()).await, "authgate_resolver_retries_total");
    assert!(retries >= SEQUENTIAL as f64, "{retries} retries");
}

/// The same for a pool of backends: the retry of a request whose reused connection failed
/// before any response byte goes to a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_every_reused_connection_costs_no_request() {
    let canned = serve_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::ZERO,
        false,
    )
    .await;
    let s = Stack::builder()
        .pool("app", Pool::at(&[canned.addr]))
        .routes(ALL_PUBLIC)
        .start()
        .await;
    fill_then_reuse(&s.proxy, &canned, "/").await;
}

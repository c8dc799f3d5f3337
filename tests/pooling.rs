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

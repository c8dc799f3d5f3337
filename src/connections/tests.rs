//! Unit tests of `connections`.

use super::*;

#[test]
fn keepalive_is_whole_seconds_rounded_up() {
    let with = |ms| ClientLimits {
        keepalive_timeout: Duration::from_millis(ms),
        ..ClientLimits::default()
    };
    assert_eq!(with(0).keepalive_secs(), None);
    assert_eq!(with(1).keepalive_secs(), Some(1));
    assert_eq!(with(1000).keepalive_secs(), Some(1));
    assert_eq!(with(1500).keepalive_secs(), Some(2));
}

/// A connection just accepted: a 10 s header timeout running, 60 s of keep-alive.
fn accepted() -> Conn {
    Conn::accepted(Duration::from_secs(10), Duration::from_secs(60))
}

#[tokio::test(start_paused = true)]
async fn the_deadline_moves_with_the_requests() {
    let conn = Arc::new(accepted());
    let started = tokio::time::Instant::now();
    // A header arrives after 5 s: nothing expires while the request is served (30 s).
    let serve = async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        header_received();
        tokio::time::sleep(Duration::from_secs(30)).await;
        request_done();
        std::future::pending::<()>().await
    };
    assert!(conn.watch(serve).await.is_none());
    // 5 s + 30 s, then the keep-alive timeout and the header timeout.
    assert_eq!(started.elapsed().as_secs(), 5 + 30 + 60 + 10);
}

#[tokio::test(start_paused = true)]
async fn a_header_that_never_completes_expires() {
    let conn = Arc::new(accepted());
    let started = tokio::time::Instant::now();
    assert!(conn.watch(std::future::pending::<()>()).await.is_none());
    assert_eq!(started.elapsed().as_secs(), 10);
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_ends_in_time_is_served_to_its_end() {
    let conn = Arc::new(accepted());
    let started = tokio::time::Instant::now();
    // Two requests, each header within its deadline; then the client leaves.
    let serve = async move {
        tokio::time::sleep(Duration::from_secs(9)).await;
        header_received();
        tokio::time::sleep(Duration::from_secs(100)).await;
        request_done();
        tokio::time::sleep(Duration::from_secs(69)).await;
        header_received();
        request_done();
        "served"
    };
    assert_eq!(conn.watch(serve).await, Some("served"));
    assert_eq!(started.elapsed().as_secs(), 9 + 100 + 69);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_reached_between_requests_ends_the_connection() {
    let conn = Arc::new(accepted());
    let started = tokio::time::Instant::now();
    let serve = async move {
        header_received();
        request_done();
        // The next header is not complete within keep-alive + header timeout (70 s).
        tokio::time::sleep(Duration::from_secs(71)).await;
        header_received();
    };
    assert!(conn.watch(serve).await.is_none());
    assert_eq!(started.elapsed().as_secs(), 70);
}

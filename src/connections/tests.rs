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
    let c = conn.clone();
    // A header arrives after 5 s: nothing expires while the request is served (30 s).
    let serve = CONN.scope(conn.clone(), async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        header_received();
        tokio::time::sleep(Duration::from_secs(30)).await;
        request_done();
        std::future::pending::<()>().await
    });
    tokio::select! {
        _ = serve => unreachable!(),
        _ = c.expired() => {}
    }
    // 5 s + 30 s, then the keep-alive timeout and the header timeout.
    assert_eq!(started.elapsed().as_secs(), 5 + 30 + 60 + 10);
}

#[tokio::test(start_paused = true)]
async fn a_header_that_never_completes_expires() {
    let conn = accepted();
    let started = tokio::time::Instant::now();
    conn.expired().await;
    assert_eq!(started.elapsed().as_secs(), 10);
}

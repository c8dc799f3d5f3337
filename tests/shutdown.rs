//! Stopping under load (`SIGTERM` with `shutdown.drain_delay`): readiness fails at once while
//! the listeners keep accepting and serving for the delay, answers ask clients to close their
//! connections, then the listeners close, in-flight requests finish, and the process exits 0
//! as soon as they have (not at the end of the grace period).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const DRAIN: Duration = Duration::from_secs(2);
/// Far longer than the test: the process must not wait it out.
const GRACE_SECONDS: u32 = 60;

/// What the load's clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// Answered requests sent once readiness failed, and how many of them asked to close.
    after_term: AtomicU64,
    closing_after_term: AtomicU64,
    /// Connections opened once readiness failed.
    opened_after_term: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

/// A client of the load: requests over a kept-alive connection (or a new connection each time,
/// with `fresh`); a new connection only while `open_new` holds, as a client does until the
/// load balancer stops sending it to this instance. Ends when it may open no more.
async fn client_loop(
    addr: SocketAddr,
    fresh: bool,
    open_new: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
    tally: Arc<Tally>,
) {
    let request = format!("GET /x HTTP/1.1\r\nHost: {addr}\r\nCookie: session=sess-bob\r\n\r\n");
    let mut conn: Option<TcpStream> = None;
    loop {
        if conn.is_none() {
            if !open_new.load(Ordering::SeqCst) {
                return;
            }
            let after_term = term.load(Ordering::SeqCst);
            match TcpStream::connect(addr).await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tally.failed.fetch_add(1, Ordering::SeqCst);
                    tally.errors.lock().unwrap().push(format!("connect: {e}"));
                    return;
                }
            }
            if after_term {
                tally.opened_after_term.fetch_add(1, Ordering::SeqCst);
            }
        }
        let Some(c) = conn.as_mut() else { return };
        let after_term = term.load(Ordering::SeqCst);
        let answer = match c.write_all(request.as_bytes()).await {
            Ok(()) => read_response(c).await,
            Err(e) => format!("write: {e}"),
        };
        if !answer.starts_with("HTTP/1.1 200") || !answer.contains("user-bob") {
            tally.failed.fetch_add(1, Ordering::SeqCst);
            tally.errors.lock().unwrap().push(answer);
            return;
        }
        tally.ok.fetch_add(1, Ordering::SeqCst);
        let closing = answer.to_ascii_lowercase().contains("connection: close");
        if after_term {
            tally.after_term.fetch_add(1, Ordering::SeqCst);
            if closing {
                tally.closing_after_term.fetch_add(1, Ordering::SeqCst);
            }
        }
        if fresh || closing {
            conn = None;
        }
    }
}

/// Until `addr` refuses connections, at most `limit`.
async fn listener_closes(addr: SocketAddr, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "the listener never closed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn status_of(url: String) -> u16 {
    client()
        .get(url)
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_without_failing_a_request() {
    let slow = serve_canned(
        b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow",
        Duration::from_millis(2_500),
        true,
    )
    .await;
    let mut s = Stack::builder()
        .pool("app", Pool::echoes(1))
        .pool("slow", Pool::at(&[slow.addr]))
        .routes(
            r#"
            - path: /slow
              upstream: slow
              auth: public
            - path: /
              upstream: app
            "#,
        )
        .admin()
        .grace_period_seconds(GRACE_SECONDS)
        .yaml(&format!("shutdown:\n  drain_delay: {}s\n", DRAIN.as_secs()))
        .start()
        .await;
    let (addr, admin) = (s.proxy.addr, s.admin());
    assert_eq!(status_of(format!("http://{admin}/ready")).await, 200);

    let open_new = Arc::new(AtomicBool::new(true));
    let term = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = [false, false, true, true]
        .into_iter()
        .map(|fresh| {
            tokio::spawn(client_loop(
                addr,
                fresh,
                open_new.clone(),
                term.clone(),
                tally.clone(),
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while tally.ok.load(Ordering::SeqCst) < 20 {
        assert!(Instant::now() < deadline, "the load never got going");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let termed = Instant::now();
    s.proxy.signal("TERM");
    // Readiness fails at once; liveness does not.
    let deadline = Instant::now() + Duration::from_secs(1);
    while status_of(format!("http://{admin}/ready")).await != 503 {
        assert!(Instant::now() < deadline, "/ready never turned 503");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // From here on the proxy knows it is draining.
    term.store(true, Ordering::SeqCst);
    assert_eq!(status_of(format!("http://{admin}/health")).await, 200);
    metric_reaches(admin, "authgate_draining", 1.0).await;

    // Half-way through the delay a slow request arrives on a new connection; it is still
    // running when the listeners close (and after the drain window that follows), and
    // finishes within the grace period.
    tokio::time::sleep(DRAIN / 2).await;
    let slow_request = tokio::spawn(async move {
        let mut c = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!("GET /slow HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        c.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(read_response(&mut c).await)
    });
    // The load balancer has caught up: the clients open no more connections.
    tokio::time::sleep(Duration::from_millis(200)).await;
    open_new.store(false, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let failed = tally.failed.load(Ordering::SeqCst);
    assert_eq!(
        failed,
        0,
        "{:?}\n{}",
        tally.errors.lock().unwrap(),
        s.proxy.log()
    );
    let (after, closing) = (
        tally.after_term.load(Ordering::SeqCst),
        tally.closing_after_term.load(Ordering::SeqCst),
    );
    assert!(after > 0, "no request was served after SIGTERM");
    assert_eq!(closing, after, "every answer while draining asks to close");
    assert!(
        tally.opened_after_term.load(Ordering::SeqCst) > 0,
        "no connection accepted while draining"
    );

    // The listener closes once the delay is over, not before.
    listener_closes(addr, Duration::from_secs(5)).await;
    assert!(
        termed.elapsed() >= DRAIN,
        "closed after {:?}",
        termed.elapsed()
    );
    let slow_answer = slow_request
        .await
        .expect("slow task")
        .expect("slow request");
    assert!(slow_answer.starts_with("HTTP/1.1 200"), "{slow_answer}");
    assert!(slow_answer.ends_with("slow"), "{slow_answer}");

    // Nothing left to serve: it exits then, not when the 60 s grace period ends.
    let exited = tokio::task::block_in_place(|| s.proxy.wait_exit(Duration::from_secs(10)));
    let status = exited.expect("the process did not exit once idle");
    assert!(status.success(), "exit status {status}: {}", s.proxy.log());
}

/// Without a drain delay (the default), `SIGTERM` closes the listeners at once, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_drain_delay_sigterm_closes_the_listeners_at_once() {
    let mut s = Stack::builder()
        .admin()
        .grace_period_seconds(1)
        .start()
        .await;
    let addr = s.proxy.addr;
    s.proxy.signal("TERM");
    listener_closes(addr, Duration::from_secs(2)).await;
    let exited = tokio::task::block_in_place(|| s.proxy.wait_exit(Duration::from_secs(10)));
    assert!(exited.expect("the process did not exit").success());
}

/// A client connection that never sends a byte does not keep a stopping process alive until
/// `client.header_timeout`: once the listener stops it gets the drain window to send its
/// request, like a parked keep-alive connection, and is closed after it. A connection that
/// sends its request within that window is still answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_does_not_hold_a_stopping_process() {
    let mut s = Stack::builder()
        .admin()
        .grace_period_seconds(GRACE_SECONDS)
        .yaml("client:\n  header_timeout: 300s\n")
        .start()
        .await;
    let addr = s.proxy.addr;
    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut late = TcpStream::connect(addr).await.expect("connect");
    // Both are accepted and their tasks running before the stop.
    metric_reaches(s.admin(), "authgate_client_connections", 2.0).await;

    s.proxy.signal("TERM");
    listener_closes(addr, Duration::from_secs(2)).await;
    // Within the window, the late one sends its request and is answered.
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    late.write_all(req.as_bytes()).await.expect("write");
    let answer = read_response(&mut late).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The silent one is closed by the proxy, and the process exits: neither waits out the
    // header timeout (300 s) nor the grace period (60 s).
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::io::AsyncReadExt::read(&mut silent, &mut buf),
    )
    .await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the silent connection was not closed: {read:?}"
    );
    let exited = tokio::task::block_in_place(|| s.proxy.wait_exit(Duration::from_secs(20)));
    let status = exited.expect("the process did not exit once idle");
    assert!(status.success(), "exit status {status}: {}", s.proxy.log());
}
